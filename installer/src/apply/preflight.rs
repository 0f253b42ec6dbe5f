//! Preflight: may this policy be applied to this host now?
//!
//! `check` is a pure function of the policy and of `Facts` gathered beforehand
//! (`gather` reads the host: files, processes, the `*-save` output of the current
//! network namespace), so every refusal is unit-tested without touching a host.
//! It refuses a policy that would cut the SSH session running it, and, unless
//! `--force`, a host where another firewall manager or the other iptables backend
//! would fight the ruleset. It changes nothing.

use std::net::IpAddr;
use std::path::Path;

use portcullis_netfilter::{Backend, Family};

use super::session::SshConnection;
use crate::policy::{Ipv6Mode, Policy};

/// What preflight looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The SSH session running the command, if any.
    pub ssh: Option<SshConnection>,
    /// Further sessions found up the process tree (`SshConnection::all_current`);
    /// each must survive the policy too.
    pub other_sessions: Vec<SshConnection>,
    /// The backend the rules will be loaded with.
    pub backend: Option<Backend>,
    pub firewalld_active: bool,
    pub ufw_enabled: bool,
    pub nftables_service_enabled: bool,
    /// Docker's service, enabled or installed (its evidence).
    pub docker_service: Option<String>,
    /// Docker's chains (DOCKER, DOCKER-USER, ...) found in a live table.
    pub docker_chains: Vec<String>,
    /// Live rules (`-A` lines) counted per backend, both families together.
    pub nft_rules: usize,
    pub legacy_rules: usize,
}

/// Why preflight refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The policy would drop the SSH session that runs the command. Never forced.
    LockOut { message: String },
    /// Another manager or backend would fight the ruleset; `--force` overrides.
    Conflict { message: String },
}

impl Finding {
    pub fn message(&self) -> &str {
        match self {
            Finding::LockOut { message } | Finding::Conflict { message } => message,
        }
    }
}

/// Every reason to refuse, lock-outs first. Empty: go ahead.
pub fn check(policy: &Policy, facts: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    if policy.ssh.allow_from.is_empty() {
        out.push(Finding::LockOut {
            message:
                "`ssh.allow_from` is empty: nobody could open an ssh session; add your admin subnet"
                    .into(),
        });
    }
    for ssh in facts.ssh.iter().chain(&facts.other_sessions) {
        if let Some(m) = ssh_lockout(policy, ssh) {
            out.push(Finding::LockOut { message: m });
        }
    }
    out.extend(
        conflicts(facts)
            .into_iter()
            .map(|message| Finding::Conflict { message }),
    );
    out
}

/// Why the policy would not accept `ssh`'s client on its server port, or `None`.
pub fn ssh_lockout(policy: &Policy, ssh: &SshConnection) -> Option<String> {
    let family = match ssh.client {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    };
    let here = format!(
        "this ssh session comes from {} to port {} ({})",
        ssh.client, ssh.server_port, ssh.source
    );
    if family == Family::V6 {
        match policy.ipv6.mode {
            // The IPv6 rules stay as they are: the session lives or dies as before.
            Ipv6Mode::Untouched => return None,
            Ipv6Mode::Deny => {
                return Some(format!(
                    "{here}, but `ipv6.mode = \"deny\"` drops all IPv6: set `ipv6.mode` to \"mirror\" (and add {} to `ssh.allow_from`), or connect over IPv4",
                    ssh.client
                ));
            }
            Ipv6Mode::Mirror => {}
        }
    }
    if ssh.server_port != policy.ssh.port {
        return Some(format!(
            "{here}, but `ssh.port` is {}: set `ssh.port = {}` or reconnect on port {}",
            policy.ssh.port, ssh.server_port, policy.ssh.port
        ));
    }
    if !policy
        .ssh
        .allow_from
        .iter()
        .any(|n| n.contains(&ssh.client))
    {
        let listed: Vec<String> = policy
            .ssh
            .allow_from
            .iter()
            .map(|n| n.to_string())
            .collect();
        return Some(format!(
            "{here}, which `ssh.allow_from` ({}) does not include: add {} (or its subnet) to `ssh.allow_from`",
            if listed.is_empty() {
                "empty".to_owned()
            } else {
                listed.join(", ")
            },
            ssh.client
        ));
    }
    None
}

/// Conflicting managers and backends, each a sentence saying what to do.
pub fn conflicts(facts: &Facts) -> Vec<String> {
    let mut out = Vec::new();
    if facts.firewalld_active {
        out.push("firewalld is active: its rules override iptables; stop and disable it (systemctl disable --now firewalld) or pass --force".into());
    }
    if facts.ufw_enabled {
        out.push(
            "ufw is enabled: it rewrites the same tables; run `ufw disable` or pass --force".into(),
        );
    }
    if facts.nftables_service_enabled {
        out.push("nftables.service is enabled: it starts with `flush ruleset` and wipes these rules at boot; disable it or pass --force".into());
    }
    if let Some(evidence) = &facts.docker_service {
        out.push(format!(
            "{evidence}: a filter table loaded over Docker's breaks container networking; pass --force if you know this host"
        ));
    }
    if !facts.docker_chains.is_empty() {
        out.push(format!(
            "Docker's chains are present ({}): loading a filter table replaces them and breaks container networking; pass --force if you know this host",
            facts.docker_chains.join(", ")
        ));
    }
    let other = match facts.backend {
        Some(Backend::Nft) => Some((Backend::Legacy, facts.legacy_rules)),
        Some(Backend::Legacy) => Some((Backend::Nft, facts.nft_rules)),
        None => None,
    };
    if let (Some(b), Some((o, n))) = (facts.backend, other) {
        if n > 0 {
            out.push(format!(
                "the {o} backend holds {n} rule(s) while iptables uses {b}: a packet must pass both, so a {o} DROP beats a {b} ACCEPT; flush the {o} tables, or pass --backend {o}, or --force"
            ));
        }
    }
    out
}

/// Read the facts from this host and the current network namespace. The files
/// (enabled units, ufw.conf) are read under `root`, through the persistence
/// module's own conflict detection.
pub fn gather(backend: Backend, ssh: Option<SshConnection>, root: &Path) -> Facts {
    let found = crate::persist::conflicts(root);
    let has = |m: &str| {
        found
            .iter()
            .find(|c| c.manager == m)
            .map(|c| c.evidence.clone())
    };
    let mut facts = Facts {
        ssh,
        backend: Some(backend),
        firewalld_active: has("firewalld").is_some() || process_running("firewalld"),
        ufw_enabled: has("ufw").is_some(),
        nftables_service_enabled: has("nftables").is_some(),
        docker_service: has("docker"),
        ..Facts::default()
    };
    let mut docker = std::collections::BTreeSet::new();
    for b in Backend::ALL {
        if b.unavailable_reason().is_some() {
            continue;
        }
        let mut n = 0;
        for f in Family::ALL {
            // Reading an empty backend is harmless; an error reads as "no rules".
            let text = portcullis_netfilter::backend::save(b, f, false).unwrap_or_default();
            n += count_rules(&text);
            docker.extend(docker_chains(&text));
        }
        match b {
            Backend::Nft => facts.nft_rules = n,
            Backend::Legacy => facts.legacy_rules = n,
        }
    }
    facts.docker_chains = docker.into_iter().collect();
    facts
}

/// `-A` lines in a `*-save` text.
pub fn count_rules(save: &str) -> usize {
    save.lines().filter(|l| l.starts_with("-A ")).count()
}

/// Docker's chain names declared in a `*-save` text.
pub fn docker_chains(save: &str) -> Vec<String> {
    save.lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with("DOCKER"))
        .map(str::to_owned)
        .collect()
}

fn process_running(name: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("comm"))
            .map(|c| c.trim() == name)
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: &str) -> Policy {
        let text = format!(
            "[ssh]\nport = 22\nallow_from = [\"192.0.2.0/24\", \"2001:db8:1::/64\"]\n{extra}"
        );
        Policy::parse(&text, "test").unwrap()
    }

    fn ssh(s: &str) -> Facts {
        Facts {
            ssh: Some(SshConnection::parse(s, "SSH_CONNECTION").unwrap()),
            backend: Some(Backend::Nft),
            ..Facts::default()
        }
    }

    #[test]
    fn accepts_a_client_inside_allow_from() {
        assert_eq!(
            check(&policy(""), &ssh("192.0.2.10 5000 192.0.2.1 22")),
            vec![]
        );
        assert_eq!(
            check(&policy(""), &ssh("2001:db8:1::10 5000 2001:db8:1::1 22")),
            vec![]
        );
        assert_eq!(check(&policy(""), &Facts::default()), vec![]);
    }

    #[test]
    fn refuses_a_client_outside_allow_from_naming_address_and_key() {
        let f = check(&policy(""), &ssh("198.51.100.7 5000 192.0.2.1 22"));
        assert_eq!(f.len(), 1);
        let Finding::LockOut { message } = &f[0] else {
            panic!("{f:?}")
        };
        assert!(message.contains("198.51.100.7"), "{message}");
        assert!(message.contains("`ssh.allow_from`"), "{message}");
    }

    #[test]
    fn every_session_in_the_process_tree_is_checked() {
        let mut facts = ssh("192.0.2.10 5000 192.0.2.1 22");
        facts.other_sessions =
            vec![SshConnection::parse("198.51.100.7 5000 192.0.2.1 22", "ancestor").unwrap()];
        let f = check(&policy(""), &facts);
        assert!(
            matches!(&f[..], [Finding::LockOut { message }] if message.contains("198.51.100.7")),
            "{f:?}"
        );
    }

    #[test]
    fn refuses_another_port_naming_ssh_port() {
        let f = check(&policy(""), &ssh("192.0.2.10 5000 192.0.2.1 2222"));
        assert!(matches!(&f[..], [Finding::LockOut { message }] if message.contains("`ssh.port`")));
    }

    #[test]
    fn ipv6_client_follows_the_ipv6_mode() {
        let outside = "2001:db8:9::10 5000 2001:db8:1::1 22";
        assert_eq!(check(&policy(""), &ssh(outside)).len(), 1);
        // The validator refuses IPv6 CIDRs under `deny`, so this policy lists IPv4 only.
        let deny = Policy::parse(
            "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n[ipv6]\nmode = \"deny\"\n",
            "test",
        )
        .unwrap();
        let f = check(&deny, &ssh("2001:db8:1::10 5000 2001:db8:1::1 22"));
        assert!(matches!(&f[..], [Finding::LockOut { message }] if message.contains("`ipv6.mode")));
        let untouched = policy("[ipv6]\nmode = \"untouched\"\n");
        assert_eq!(check(&untouched, &ssh(outside)), vec![]);
        // A v4 session under an IPv4-mapped address is judged as IPv4.
        assert_eq!(
            check(&deny, &ssh("::ffff:192.0.2.10 5000 ::ffff:192.0.2.1 22")),
            vec![]
        );
    }

    #[test]
    fn conflicts_are_named() {
        let facts = Facts {
            backend: Some(Backend::Nft),
            firewalld_active: true,
            ufw_enabled: true,
            nftables_service_enabled: true,
            docker_chains: vec!["DOCKER-USER".into()],
            docker_service: Some("docker.service is enabled".into()),
            nft_rules: 3,
            legacy_rules: 2,
            ..Facts::default()
        };
        let f = check(&policy(""), &facts);
        let all: Vec<&str> = f.iter().map(Finding::message).collect();
        assert_eq!(f.len(), 6, "{all:?}");
        assert!(f.iter().all(|x| matches!(x, Finding::Conflict { .. })));
        for word in [
            "firewalld",
            "ufw",
            "nftables.service",
            "DOCKER-USER",
            "legacy backend holds 2",
        ] {
            assert!(all.iter().any(|m| m.contains(word)), "{word}: {all:?}");
        }
    }

    #[test]
    fn rules_in_the_chosen_backend_alone_are_fine() {
        let facts = Facts {
            backend: Some(Backend::Legacy),
            legacy_rules: 10,
            ..Facts::default()
        };
        assert_eq!(conflicts(&facts), Vec::<String>::new());
    }

    #[test]
    fn reads_save_output() {
        let save = "*filter\n:INPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n:DOCKER-USER - [0:0]\n-A INPUT -j DOCKER-USER\nCOMMIT\n";
        assert_eq!(count_rules(save), 1);
        assert_eq!(docker_chains(save), vec!["DOCKER", "DOCKER-USER"]);
    }
}
