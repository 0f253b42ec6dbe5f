//! The snapshot: the live rules of both families as `*-save` prints them, kept in
//! the state directory, and the one restore per family that puts them back.
//!
//! A fresh host (or namespace) may have no `*filter` table at all: `*-save` then
//! prints nothing for it, and restoring nothing would leave the applied rules in
//! place. A snapshot without a filter table therefore gets an explicit one with
//! ACCEPT policies and no rules, which is what "no table" means to the kernel.
//!
//! A snapshot is trusted only when it proves itself: `take` reads each file back
//! and compares it with what it wrote, then writes its SHA-256 next to it
//! (`snapshot.v4.sha256`, in `sha256sum` format); `restore` refuses a file whose
//! sum does not match (a truncated or altered snapshot), and after each restore
//! reads the live rules back and compares their chains, policies and rules with
//! the snapshot's. Any refusal or mismatch is an error, never "restored". When a
//! family's snapshot is unusable, `restore` loads the [`Fallback`] instead (ssh
//! from the client that ran apply, nothing else in) and still reports the error.

use portcullis_netfilter::counters::{CounterKind, Counters};
use portcullis_netfilter::{Backend, BackendError, Family};

use super::state::{Record, StateDir, StateError, snapshot_name};

/// What went wrong taking or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot snapshot the live {family} rules: {source}")]
    Save {
        family: Family,
        #[source]
        source: BackendError,
    },
    #[error("cannot restore the {family} snapshot: {source}")]
    Restore {
        family: Family,
        #[source]
        source: BackendError,
    },
    #[error("the {family} snapshot is missing from the state dir; restore by hand from a backup")]
    Missing { family: Family },
    #[error(
        "the {family} snapshot is unusable ({why}); it was not restored: put the right file back (or write the rules by hand) and run `portcullis rollback` again"
    )]
    Corrupt { family: Family, why: String },
    #[error(
        "the {family} restore did not bring back the snapshot: {why}; run `portcullis rollback` again, or restore by hand"
    )]
    Mismatch { family: Family, why: String },
    #[error("loaded the fallback {family} ruleset instead: {what}")]
    FellBack { family: Family, what: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The filter table the kernel behaves as when there is none.
const EMPTY_FILTER: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

/// Make a `*-save` text restorable as "the rules before": add an empty ACCEPT
/// filter table when the text has none.
pub fn normalize(save: &str) -> String {
    if save.lines().any(|l| l.trim() == "*filter") {
        save.to_owned()
    } else {
        let mut s = save.to_owned();
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("# portcullis: no filter table was loaded; this is its empty equivalent\n");
        s.push_str(EMPTY_FILTER);
        s
    }
}

/// The file holding the SHA-256 of a family's snapshot (`snapshot.v4.sha256`).
pub fn sum_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "snapshot.v4.sha256",
        Family::V6 => "snapshot.v6.sha256",
    }
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Save both families' live rules into the state directory (0600, fsynced), read
/// each back, and write its SHA-256 next to it.
pub fn take(state: &StateDir, backend: Backend) -> Result<(), SnapshotError> {
    for family in Family::ALL {
        let text = portcullis_netfilter::backend::save(backend, family, false)
            .map_err(|source| SnapshotError::Save { family, source })?;
        let text = normalize(&text);
        state.remove(sum_name(family))?;
        state.write_atomic(snapshot_name(family), text.as_bytes())?;
        if state.read(snapshot_name(family))?.as_deref() != Some(text.as_str()) {
            return Err(SnapshotError::Corrupt {
                family,
                why: "it did not read back as written".into(),
            });
        }
        let sum = format!(
            "{}  {}\n",
            sha256_hex(text.as_bytes()),
            snapshot_name(family)
        );
        state.write_atomic(sum_name(family), sum.as_bytes())?;
    }
    Ok(())
}

/// A family's snapshot, checked against its SHA-256 and parsed.
pub fn load(state: &StateDir, family: Family) -> Result<String, SnapshotError> {
    let text = state
        .read(snapshot_name(family))?
        .ok_or(SnapshotError::Missing { family })?;
    let corrupt = |why: String| SnapshotError::Corrupt { family, why };
    let sum = state
        .read(sum_name(family))?
        .ok_or_else(|| corrupt(format!("its checksum {} is missing", sum_name(family))))?;
    let want = sum.split_whitespace().next().unwrap_or("");
    let got = sha256_hex(text.as_bytes());
    if want != got {
        return Err(corrupt(format!(
            "{} bytes with SHA-256 {got}, but {} says {want}",
            text.len(),
            sum_name(family)
        )));
    }
    let shape = Counters::parse_ruleset(family, &text)
        .map_err(|e| corrupt(format!("line {}: {}", e.line, e.reason)))?;
    if !shape.tables().contains("filter") {
        return Err(corrupt("it has no filter table".into()));
    }
    Ok(text)
}

/// What a table holds, for comparing a restore with its snapshot: each chain's
/// policy and each rule's text, in order; counters and comments left out.
fn shape(family: Family, text: &str, tables: &std::collections::BTreeSet<String>) -> Vec<String> {
    let Ok(c) = Counters::parse_ruleset(family, text) else {
        return vec!["(unparsable)".into()];
    };
    let mut out: Vec<String> = c
        .entries
        .iter()
        .filter(|e| tables.contains(&e.table))
        .map(|e| match &e.kind {
            CounterKind::Policy { policy } => format!("{} :{} {policy}", e.table, e.chain),
            CounterKind::Rule { index, text, .. } => {
                format!("{} -A {} #{index} {text}", e.table, e.chain)
            }
        })
        .collect();
    out.sort();
    out
}

/// Compare the live rules of `family` with `expected`, table by table (only the
/// tables `expected` names: the restore touched no other).
fn verify(backend: Backend, family: Family, expected: &str) -> Result<(), SnapshotError> {
    let live = portcullis_netfilter::backend::save(backend, family, false)
        .map_err(|source| SnapshotError::Save { family, source })?;
    let tables = Counters::parse_ruleset(family, expected)
        .map(|c| c.tables())
        .unwrap_or_default();
    let (want, got) = (
        shape(family, expected, &tables),
        shape(family, &live, &tables),
    );
    if want == got {
        return Ok(());
    }
    let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
    Err(SnapshotError::Mismatch {
        family,
        why: format!(
            "{} line(s) of the snapshot are not live (first: {:?}), {} live line(s) are not in it (first: {:?})",
            missing.len(),
            missing.first().map(|s| s.as_str()).unwrap_or(""),
            extra.len(),
            extra.first().map(|s| s.as_str()).unwrap_or("")
        ),
    })
}

/// The ruleset loaded when a family's snapshot is unusable: the rendering of a
/// minimal policy that lets ssh in from the client that ran apply (on the port
/// it used; from anywhere when apply ran without ssh), established traffic,
/// loopback, ICMP and the RFC 4890 ICMPv6 baseline, and nothing else in. It is
/// never "success": whoever loads it still reports the unusable snapshot.
#[derive(Debug, Clone)]
pub struct Fallback {
    pub what: String,
    pub rendered: crate::Rendered,
}

impl Fallback {
    pub fn for_record(record: &Record) -> Fallback {
        // The recorded text, parsed as apply parsed it (zones dropped, mapped
        // IPv6 made IPv4).
        let ssh = record
            .ssh_connection
            .as_deref()
            .and_then(|c| super::session::SshConnection::parse(c, "the record").ok());
        let client = ssh.as_ref().map(|c| c.client);
        let port = ssh.as_ref().map_or(22, |c| c.server_port);
        let (allow, what) = match client {
            Some(std::net::IpAddr::V4(a)) => (
                format!("\"{a}/32\""),
                format!("ssh (tcp {port}) from {a} only"),
            ),
            Some(std::net::IpAddr::V6(a)) => (
                format!("\"{a}/128\""),
                format!("ssh (tcp {port}) from {a} only"),
            ),
            None => (
                "\"0.0.0.0/0\", \"::/0\"".to_owned(),
                format!("ssh (tcp {port}) from anywhere (apply ran without ssh)"),
            ),
        };
        // The values are a parsed address and a number: nothing of the record's
        // text reaches the policy unparsed.
        let text = format!(
            "[ssh]\nport = {port}\nallow_from = [{allow}]\n\n[inbound]\nicmp = true\n\n\
             [outbound]\ndns = true\nhttp = true\nhttps = true\nicmp = true\n\n\
             [ipv6]\nmode = \"mirror\"\n"
        );
        let policy = crate::Policy::parse(&text, "<fallback>")
            .expect("the fallback policy is valid for any address and port");
        Fallback {
            what: format!(
                "the portcullis fallback ruleset: {what}, established traffic, loopback and ICMP"
            ),
            rendered: crate::render(&policy),
        }
    }
}

/// Restore `families` from the snapshot, one `*-restore -w` call each, and check
/// each result against the snapshot. A family whose snapshot is unusable gets
/// `fallback()` instead (and an error all the same). Keeps going after a failure
/// and reports every one: an empty result means every family is verified back.
pub fn restore(
    state: &StateDir,
    backend: Backend,
    families: &[Family],
    fallback: impl Fn() -> Fallback,
) -> Vec<SnapshotError> {
    let mut errors = Vec::new();
    for &family in families {
        let text = match load(state, family) {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                // Built only when needed: parsing and rendering cost milliseconds.
                let fallback = fallback();
                if let Some(rules) = fallback.rendered.text(family) {
                    match portcullis_netfilter::backend::restore(backend, family, &rules, false) {
                        Ok(()) => errors.push(SnapshotError::FellBack {
                            family,
                            what: fallback.what.clone(),
                        }),
                        Err(source) => errors.push(SnapshotError::Restore { family, source }),
                    }
                }
                continue;
            }
        };
        if let Err(source) = portcullis_netfilter::backend::restore(backend, family, &text, false) {
            errors.push(SnapshotError::Restore { family, source });
            continue;
        }
        if let Err(e) = verify(backend, family, &text) {
            errors.push(e);
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_save_becomes_an_accepting_filter_table() {
        assert_eq!(
            normalize(""),
            format!(
                "# portcullis: no filter table was loaded; this is its empty equivalent\n{EMPTY_FILTER}"
            )
        );
        let nat = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT";
        assert!(normalize(nat).starts_with("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n# portcullis"));
        let filter = "*filter\n:INPUT DROP [0:0]\nCOMMIT\n";
        assert_eq!(normalize(filter), filter);
    }

    #[test]
    fn shape_ignores_counters_and_comments_but_not_rules_or_policies() {
        let tables = ["filter".to_owned()].into_iter().collect();
        let a = "# x\n*filter\n:INPUT DROP [1:2]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n";
        let b = "*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [9:9]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -i lo -j ACCEPT\nCOMMIT\n# y\n";
        assert_eq!(shape(Family::V4, a, &tables), shape(Family::V4, b, &tables));
        let c = b.replace(":INPUT DROP", ":INPUT ACCEPT");
        assert_ne!(
            shape(Family::V4, a, &tables),
            shape(Family::V4, &c, &tables)
        );
        let d = b.replace("-A INPUT -i lo -j ACCEPT\n", "");
        assert_ne!(
            shape(Family::V4, a, &tables),
            shape(Family::V4, &d, &tables)
        );
    }

    #[test]
    fn the_fallback_lets_in_ssh_from_the_recorded_client_only() {
        let mut r: Record = serde_json::from_str(
            r#"{"id":"1","status":"pending","started_unix_ms":0,"deadline_unix_ms":0,
            "timeout_secs":1,"backend":"nft","families":["ipv4"],"config":"x",
            "ssh_connection":"192.0.2.10 40022 192.0.2.1 2222","session_id":0,
            "guard_pid":null,"persist":false,"persist_root":"/","ended_unix_ms":null,
            "reason":null,"persisted":null}"#,
        )
        .unwrap();
        let f = Fallback::for_record(&r);
        let v4 = f.rendered.text(Family::V4).unwrap();
        assert!(
            v4.contains("-s 192.0.2.10/32") && v4.contains("--dport 2222"),
            "{v4}"
        );
        assert!(f.what.contains("192.0.2.10"), "{}", f.what);
        r.ssh_connection = None;
        let v4 = Fallback::for_record(&r).rendered.text(Family::V4).unwrap();
        assert!(v4.contains("--dport 22 "), "{v4}");
    }
}
