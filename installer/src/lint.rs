//! Lints: valid policies that are almost certainly a mistake. Pure.
//!
//! A lint never stops `check` or `render` (`check --strict` makes any warning a
//! failure), but one kind is a refusal where it matters: an `[[inbound.allow]]`
//! that opens the SSH port wider than `ssh.allow_from` silently undoes the SSH
//! restriction, so `apply` and `install` refuse it unless the entry says
//! `override_ssh = true` (`Warning::refuses_apply`). Each warning names the key
//! to change and how, the way ufw and firewalld name the rule they would skip.

use std::fmt;

use ipnet::IpNet;

use crate::persist::{Detection, Mechanism};
use crate::policy::{Policy, Proto};

/// One thing a policy (or a host) most likely did not mean.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// The dotted key to change (`ssh.allow_from`, `inbound.allow[2]`), or the
    /// thing outside the policy (`persistence`).
    pub key: String,
    /// What is wrong, lowercase, one line.
    pub message: String,
    /// What to do about it, one line.
    pub fix: String,
    /// `apply` and `install` refuse the policy (exit 2) while this stands.
    pub refuses_apply: bool,
}

impl Warning {
    fn new(key: impl Into<String>, message: String, fix: String) -> Warning {
        Warning {
            key: key.into(),
            message,
            fix,
            refuses_apply: false,
        }
    }
}

/// `warning: KEY: MESSAGE` and, indented on the next line, `fix: FIX`.
impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "warning: {}: {}\n  fix: {}",
            self.key, self.message, self.fix
        )
    }
}

/// Every lint of `policy`, in key order of the file (ssh, outbound, inbound,
/// blocklist).
pub fn lint(policy: &Policy) -> Vec<Warning> {
    let mut w = Vec::new();
    let ssh = &policy.ssh;
    let out = &policy.outbound;
    let inb = &policy.inbound;
    let ssh_open_inbound = inb
        .allow
        .iter()
        .any(|a| a.proto == Proto::Tcp && a.ports.covers(ssh.port));

    if ssh.allow_from.is_empty() {
        let message = if ssh_open_inbound {
            "is empty, so only an [[inbound.allow]] on the ssh port admits ssh (see below)"
        } else {
            "is empty: nobody can open an ssh session, so nobody can reach this host to fix it"
        };
        w.push(Warning::new(
            "ssh.allow_from",
            message.to_owned(),
            "list your admin subnet, e.g. allow_from = [\"192.0.2.0/24\"] \
             (`portcullis init` writes your current ssh client)"
                .to_owned(),
        ));
    }

    // All off because nothing was written is the mistake; `[outbound]` written
    // with every switch off (examples/minimal-ssh.toml) is a choice.
    let out_off = !(out.dns || out.http || out.https || out.icmp) && out.allow.is_empty();
    let in_off = !inb.icmp && inb.allow.is_empty();
    let written = |k: &str| policy.written.iter().any(|s| s == k);
    if out_off && in_off && !written("outbound") && !written("inbound") {
        w.push(Warning::new(
            "outbound",
            "every section is off: nothing in or out but ssh (no dns, no updates, no ping), \
             because a missing section means off"
                .to_owned(),
            "turn on what the host needs, e.g. [outbound] dns = true, https = true; \
             or write [outbound] with every switch false if you mean it"
                .to_owned(),
        ));
    }

    if !out.dns && (out.http || out.https) && !out.allow.iter().any(|a| a.ports.covers(53)) {
        let on: Vec<&str> = [("http", out.http), ("https", out.https)]
            .into_iter()
            .filter_map(|(k, on)| on.then_some(k))
            .collect();
        w.push(Warning::new(
            "outbound.dns",
            format!(
                "is off while outbound.{} {} on: names will not resolve, so web requests by name fail",
                on.join(" and outbound."),
                if on.len() == 1 { "is" } else { "are" }
            ),
            "set outbound.dns = true, or allow your resolver with an [[outbound.allow]] on port 53"
                .to_owned(),
        ));
    }

    for (i, a) in inb.allow.iter().enumerate() {
        let key = format!("inbound.allow[{i}]");
        let on_ssh = a.proto == Proto::Tcp && a.ports.covers(ssh.port);
        if !on_ssh {
            if a.override_ssh {
                w.push(Warning::new(
                    format!("{key}.override_ssh"),
                    format!(
                        "has no effect: the entry does not open tcp {}, the ssh port",
                        ssh.port
                    ),
                    "remove override_ssh".to_owned(),
                ));
            }
            continue;
        }
        if a.override_ssh {
            continue;
        }
        let wider: Vec<String> = if a.peers.is_empty() {
            vec!["anywhere".to_owned()]
        } else {
            a.peers
                .iter()
                .filter(|p| !ssh.allow_from.iter().any(|s| s.contains(*p)))
                .map(IpNet::to_string)
                .collect()
        };
        if wider.is_empty() {
            continue;
        }
        w.push(Warning {
            key,
            message: format!(
                "opens tcp {}, the ssh port, to {}, wider than ssh.allow_from: \
                 it undoes the ssh restriction (apply and install refuse it)",
                ssh.port,
                wider.join(", ")
            ),
            fix: "put those sources in ssh.allow_from and remove the entry, \
                  or add override_ssh = true to it if you mean it"
                .to_owned(),
            refuses_apply: true,
        });
    }
    for (i, b) in policy.blocklists.iter().enumerate() {
        if !b.direction.inbound() {
            continue;
        }
        let ranges = |v4: bool| -> Vec<(u128, u128)> {
            b.nets
                .iter()
                .filter(|n| n.addr().is_ipv4() == v4)
                .map(bounds)
                .collect()
        };
        let (v4, v6) = (ranges(true), ranges(false));
        if let Some((j, admin)) = ssh
            .allow_from
            .iter()
            .enumerate()
            .find(|(_, a)| overlaps_any(a, if a.addr().is_ipv4() { &v4 } else { &v6 }))
        {
            w.push(Warning::new(
                format!("blocklist[{i}]"),
                format!(
                    "drops ssh.allow_from[{j}] ({admin}), in part or whole: the blocklist comes \
                     before the ssh rule, so those admins cannot reach ssh"
                ),
                "take the admin addresses out of the blocklist, or set direction = \"out\""
                    .to_owned(),
            ));
        }
    }

    w
}

/// The lint of a detected persistence mechanism: Debian and Ubuntu fall back to
/// rc.local only when iptables-persistent is missing, and rc.local runs after the
/// network is up (an exposure window at every boot), so say how to get the loader.
pub fn lint_persistence(d: &Detection) -> Option<Warning> {
    let debian = d.os.as_ref().is_some_and(|o| o.debian_like());
    (d.mechanism == Mechanism::RcLocal && debian).then(|| {
        Warning::new(
            "persistence",
            "falling back to rc.local, which runs after the network is up: the host boots \
             open for a moment"
                .to_owned(),
            "install the loader that runs before the network: \
             apt-get install iptables-persistent (then run portcullis again)"
                .to_owned(),
        )
    })
}

/// The first and last address of `n`, as numbers (compared within a family).
fn bounds(n: &IpNet) -> (u128, u128) {
    match n {
        IpNet::V4(v) => (
            u32::from(v.network()).into(),
            u32::from(v.broadcast()).into(),
        ),
        IpNet::V6(v) => (v.network().into(), v.broadcast().into()),
    }
}

/// Whether `a` overlaps any of `sorted`, the bounds of a folded list of `a`'s
/// family (`IpNet::aggregate`: sorted, disjoint): only the last range starting
/// at or before `a`'s end can.
fn overlaps_any(a: &IpNet, sorted: &[(u128, u128)]) -> bool {
    let (start, end) = bounds(a);
    let k = sorted.partition_point(|r| r.0 <= end);
    k > 0 && sorted[k - 1].1 >= start
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str) -> Vec<String> {
        let p = Policy::parse(text, "t").unwrap();
        lint(&p).into_iter().map(|w| w.key).collect()
    }

    const SSH: &str = "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n";
    const OUT: &str = "[outbound]\ndns = true\nhttps = true\n";

    #[test]
    fn a_blocklist_that_drops_an_admin_is_flagged_when_it_blocks_inbound() {
        let bl = |cidrs: &str, dir: &str| {
            keys(&format!(
                "{SSH}{OUT}[[blocklist]]\ncidrs = [{cidrs}]\ndirection = \"{dir}\"\n"
            ))
        };
        // Inside the admin subnet, around it, and beside it.
        assert_eq!(bl("\"192.0.2.7\"", "in"), ["blocklist[0]"]);
        assert_eq!(
            bl("\"192.0.0.0/16\", \"2001:db8::/32\"", "both"),
            ["blocklist[0]"]
        );
        assert_eq!(
            bl("\"192.0.3.0/24\", \"192.0.1.0/24\"", "in"),
            Vec::<String>::new()
        );
        assert_eq!(bl("\"192.0.2.7\"", "out"), Vec::<String>::new());
        let p = Policy::parse(
            &format!("{SSH}{OUT}[[blocklist]]\ncidrs = [\"192.0.2.128/25\"]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            lint(&p)[0].message,
            "drops ssh.allow_from[0] (192.0.2.0/24), in part or whole: the blocklist comes \
             before the ssh rule, so those admins cannot reach ssh"
        );
    }

    #[test]
    fn a_sound_policy_has_no_warnings() {
        assert_eq!(keys(&format!("{SSH}{OUT}")), Vec::<String>::new());
        let p = Policy::embedded_default();
        assert_eq!(lint(&p), vec![]);
    }

    #[test]
    fn an_empty_policy_is_unreachable_and_all_off() {
        assert_eq!(keys(""), ["ssh.allow_from", "outbound"]);
        assert_eq!(keys(SSH), ["outbound"]);
        // Written off on purpose: no warning.
        assert_eq!(
            keys(&format!("{SSH}[outbound]\ndns = false\n")),
            Vec::<String>::new()
        );
        assert_eq!(
            keys(&format!("[ssh]\nallow_from = []\n{OUT}")),
            ["ssh.allow_from"]
        );
    }

    #[test]
    fn dns_off_with_web_on() {
        let k = keys(&format!("{SSH}[outbound]\nhttp = true\n"));
        assert_eq!(k, ["outbound.dns"]);
        let w = lint(
            &Policy::parse(
                &format!("{SSH}[outbound]\nhttps = true\nhttp = true\n"),
                "t",
            )
            .unwrap(),
        );
        assert!(
            w[0].message.contains("outbound.http and outbound.https"),
            "{}",
            w[0]
        );
        // A resolver of one's own is dns enough.
        let own = format!(
            "{SSH}[outbound]\nhttps = true\n[[outbound.allow]]\nproto = \"udp\"\nport = 53\nto = [\"198.51.100.53\"]\n"
        );
        assert_eq!(keys(&own), Vec::<String>::new());
    }

    #[test]
    fn inbound_on_the_ssh_port_wider_than_allow_from() {
        let entry = |port: &str, extra: &str| {
            format!("{SSH}{OUT}[[inbound.allow]]\nproto = \"tcp\"\nport = {port}\n{extra}")
        };
        let w = lint(&Policy::parse(&entry("22", ""), "t").unwrap());
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].key, "inbound.allow[0]");
        assert!(w[0].refuses_apply);
        assert!(w[0].message.contains("to anywhere"), "{}", w[0]);
        // A range covering 22, and a source outside allow_from.
        assert_eq!(keys(&entry("\"20:30\"", "")), ["inbound.allow[0]"]);
        assert_eq!(
            keys(&entry(
                "22",
                "from = [\"192.0.2.0/25\", \"198.51.100.0/24\"]\n"
            )),
            ["inbound.allow[0]"]
        );
        // Inside allow_from, udp, another port, or said on purpose: fine.
        assert_eq!(
            keys(&entry("22", "from = [\"192.0.2.128/25\"]\n")),
            Vec::<String>::new()
        );
        assert_eq!(
            keys(&format!(
                "{SSH}{OUT}[[inbound.allow]]\nproto = \"udp\"\nport = 22\n"
            )),
            Vec::<String>::new()
        );
        assert_eq!(keys(&entry("2222", "")), Vec::<String>::new());
        assert_eq!(
            keys(&entry("22", "override_ssh = true\n")),
            Vec::<String>::new()
        );
        // The ssh port is the one the policy names.
        let moved = format!(
            "[ssh]\nport = 2222\nallow_from = [\"192.0.2.0/24\"]\n{OUT}[[inbound.allow]]\nproto = \"tcp\"\nport = 2222\n"
        );
        assert_eq!(keys(&moved), ["inbound.allow[0]"]);
        // An override that overrides nothing is said.
        assert_eq!(
            keys(&entry("443", "override_ssh = true\n")),
            ["inbound.allow[0].override_ssh"]
        );
    }

    #[test]
    fn rc_local_on_debian_points_at_iptables_persistent() {
        use crate::persist::OsRelease;
        let d = |mechanism, os: &str| Detection {
            mechanism,
            reason: String::new(),
            os: Some(OsRelease::parse(os)),
            files: vec![],
            loader: String::new(),
            notes: vec![],
        };
        let w = lint_persistence(&d(Mechanism::RcLocal, "ID=ubuntu\nID_LIKE=debian\n")).unwrap();
        assert_eq!(w.key, "persistence");
        assert!(w.fix.contains("apt-get install iptables-persistent"), "{w}");
        assert_eq!(lint_persistence(&d(Mechanism::RcLocal, "ID=rocky\n")), None);
        assert_eq!(
            lint_persistence(&d(Mechanism::NetfilterPersistent, "ID=debian\n")),
            None
        );
    }
}
