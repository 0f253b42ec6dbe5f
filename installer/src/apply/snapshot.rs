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
//!
//! When apply recorded an `ipset` binary, the snapshot also holds portcullis's
//! own sets: `ipset save` of every `pc-*` set (`snapshot.ipset`, with
//! `snapshot.ipset.sha256`, checked the same way; other sets are never saved).
//! `restore` puts them back BEFORE the rules (the snapshot's rules may match
//! them), by temporary names and swaps ([`super::sets::load`]), then, once the
//! rules are back, destroys the `pc-*` sets the snapshot did not have and no
//! live rule references, and checks each set's members against the snapshot.

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
    #[error("cannot snapshot the live pc-* ipsets: {source}")]
    SetsSave {
        #[source]
        source: BackendError,
    },
    #[error(
        "the ipset snapshot is missing from the state dir; restore the pc-* sets by hand, then run `portcullis rollback` again"
    )]
    SetsMissing,
    #[error(
        "the ipset snapshot is unusable ({why}); its sets were not restored: put the right file back and run `portcullis rollback` again"
    )]
    SetsCorrupt { why: String },
    #[error(
        "cannot restore the ipsets of the snapshot: {why}; run `portcullis rollback` again, or restore them by hand"
    )]
    SetsRestore { why: String },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The snapshot of the `pc-*` ipsets, and its SHA-256.
pub const SETS: &str = "snapshot.ipset";
pub const SETS_SUM: &str = "snapshot.ipset.sha256";

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

/// Write `text` as `name` (0600, fsynced), read it back, and write its SHA-256
/// as `sum`; `corrupt` says what a bad read-back is.
fn write_checked(
    state: &StateDir,
    name: &str,
    sum: &str,
    text: &str,
    corrupt: impl FnOnce(String) -> SnapshotError,
) -> Result<(), SnapshotError> {
    state.remove(sum)?;
    state.write_atomic(name, text.as_bytes())?;
    if state.read(name)?.as_deref() != Some(text) {
        return Err(corrupt("it did not read back as written".into()));
    }
    let line = format!("{}  {name}\n", sha256_hex(text.as_bytes()));
    state.write_atomic(sum, line.as_bytes())?;
    Ok(())
}

/// `name`'s text, checked against the SHA-256 in `sum` (`corrupt` says what a
/// mismatch is); `Ok(None)` when `name` is missing.
fn read_checked(
    state: &StateDir,
    name: &str,
    sum: &str,
    corrupt: impl Fn(String) -> SnapshotError,
) -> Result<Option<String>, SnapshotError> {
    let Some(text) = state.read(name)? else {
        return Ok(None);
    };
    let sums = state
        .read(sum)?
        .ok_or_else(|| corrupt(format!("its checksum {sum} is missing")))?;
    let want = sums.split_whitespace().next().unwrap_or("");
    let got = sha256_hex(text.as_bytes());
    if want != got {
        return Err(corrupt(format!(
            "{} bytes with SHA-256 {got}, but {sum} says {want}",
            text.len()
        )));
    }
    Ok(Some(text))
}

/// Save both families' live rules into the state directory (0600, fsynced), read
/// each back, and write its SHA-256 next to it. With `sets`, the `pc-*` ipsets
/// too (`snapshot.ipset`); without, a sets snapshot left by an older apply is
/// removed.
pub fn take(state: &StateDir, backend: Backend, sets: bool) -> Result<(), SnapshotError> {
    state.remove(SETS_SUM)?;
    state.remove(SETS)?;
    if sets {
        let mut text =
            super::sets::save_ours().map_err(|source| SnapshotError::SetsSave { source })?;
        text.insert_str(
            0,
            "# portcullis: the pc-* ipsets before the apply (`ipset save` of each)\n",
        );
        write_checked(state, SETS, SETS_SUM, &text, |why| {
            SnapshotError::SetsCorrupt { why }
        })?;
    }
    for family in Family::ALL {
        let text = portcullis_netfilter::backend::save(backend, family, false)
            .map_err(|source| SnapshotError::Save { family, source })?;
        let text = normalize(&text);
        write_checked(
            state,
            snapshot_name(family),
            sum_name(family),
            &text,
            |why| SnapshotError::Corrupt { family, why },
        )?;
    }
    Ok(())
}

/// The sets snapshot, checked against its SHA-256 and parsed: only `pc-*`
/// sets, each created once.
pub fn load_sets(state: &StateDir) -> Result<Vec<super::sets::SetDef>, SnapshotError> {
    let corrupt = |why: String| SnapshotError::SetsCorrupt { why };
    let text = read_checked(state, SETS, SETS_SUM, corrupt)?.ok_or(SnapshotError::SetsMissing)?;
    let sets = super::sets::parse(&text).map_err(corrupt)?;
    if let Some(s) = sets.iter().find(|s| !super::sets::ours(&s.name)) {
        return Err(corrupt(format!(
            "it holds set {:?}, not one of portcullis's pc-* sets",
            s.name
        )));
    }
    Ok(sets)
}

/// A family's snapshot, checked against its SHA-256 and parsed.
pub fn load(state: &StateDir, family: Family) -> Result<String, SnapshotError> {
    let corrupt = |why: String| SnapshotError::Corrupt { family, why };
    let text = read_checked(state, snapshot_name(family), sum_name(family), corrupt)?
        .ok_or(SnapshotError::Missing { family })?;
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
/// `fallback()` instead (and an error all the same). With `sets`, the snapshot's
/// `pc-*` ipsets are put back first and the sets it did not have destroyed
/// after (see the module doc). Keeps going after a failure and reports every
/// one: an empty result means every family (and every set) is verified back.
pub fn restore(
    state: &StateDir,
    backend: Backend,
    families: &[Family],
    sets: bool,
    fallback: impl Fn() -> Fallback,
) -> Vec<SnapshotError> {
    let mut errors = Vec::new();
    // The snapshot's rules may match its sets: they go back first.
    let restored_sets = if sets {
        match load_sets(state) {
            Ok(defs) => match super::sets::load(&defs) {
                Ok(()) => Some(defs),
                Err(e) => {
                    errors.push(SnapshotError::SetsRestore { why: e.to_string() });
                    None
                }
            },
            Err(e) => {
                errors.push(e);
                None
            }
        }
    } else {
        None
    };
    errors.extend(restore_rules(state, backend, families, fallback));
    if let Some(defs) = restored_sets {
        let keep: Vec<&str> = defs.iter().map(|s| s.name.as_str()).collect();
        if let Err(e) = super::sets::cleanup(&keep) {
            errors.push(SnapshotError::SetsRestore {
                why: format!("the sets the snapshot did not have were not destroyed: {e}"),
            });
        }
        for def in &defs {
            let want: std::collections::BTreeSet<String> = def.members.iter().cloned().collect();
            match super::sets::members(&def.name) {
                Ok(got) if got == want => {}
                Ok(got) => errors.push(SnapshotError::SetsRestore {
                    why: format!(
                        "set {} holds {} members, {} of them not in the snapshot; the snapshot has {}",
                        def.name,
                        got.len(),
                        got.difference(&want).count(),
                        want.len()
                    ),
                }),
                Err(why) => errors.push(SnapshotError::SetsRestore {
                    why: format!("cannot read set {} back: {why}", def.name),
                }),
            }
        }
    }
    errors
}

/// The rules half of [`restore`].
fn restore_rules(
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
