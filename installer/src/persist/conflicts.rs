//! Firewall managers that fight portcullis over the same tables: firewalld, ufw,
//! nftables.service (it starts with `flush ruleset`), Docker (it inserts its own
//! chains). `conflicts` reads files only and works on any root; `conflicts_live`
//! adds what only the running host can show (processes, Docker's chains via
//! `iptables-save`). Tests call only `conflicts`, on fixture roots.

use std::path::Path;

use super::detect::{Unit, read_in_root, resolve, unit};

/// One conflicting manager and the evidence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Conflict {
    /// `firewalld`, `ufw`, `nftables`, `docker`.
    pub manager: String,
    pub evidence: String,
}

/// Whether systemd would start `name` at boot: a link in a `*.wants` directory
/// under /etc/systemd/system.
fn enabled(root: &Path, name: &str) -> Option<String> {
    let dir = resolve(root, Path::new("/etc/systemd/system"))?;
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let wants = e.file_name();
        let wants = wants.to_string_lossy();
        if wants.ends_with(".wants") || wants.ends_with(".requires") {
            let link = e.path().join(name);
            if link.symlink_metadata().is_ok() {
                return Some(format!("/etc/systemd/system/{wants}/{name}"));
            }
        }
    }
    None
}

/// The managers whose files say they are enabled in `root`.
pub fn conflicts(root: &Path) -> Vec<Conflict> {
    let mut out = Vec::new();
    let mut push = |manager: &str, evidence: String| {
        out.push(Conflict {
            manager: manager.to_owned(),
            evidence,
        })
    };
    if let Some(l) = enabled(root, "firewalld.service") {
        push(
            "firewalld",
            format!(
                "firewalld.service is enabled ({l}); it conflicts with iptables.service and overrides iptables ACCEPTs"
            ),
        );
    }
    if let Ok(Some(conf)) = read_in_root(root, "/etc/ufw/ufw.conf")
        && conf.lines().any(|l| {
            let l = l.trim().replace(['"', '\''], "");
            l.eq_ignore_ascii_case("ENABLED=yes")
        })
    {
        push(
            "ufw",
            "/etc/ufw/ufw.conf has ENABLED=yes; ufw loads its own rules at boot".into(),
        );
    }
    if let Some(l) = enabled(root, "nftables.service") {
        push(
            "nftables",
            format!(
                "nftables.service is enabled ({l}); it starts with `flush ruleset`, wiping iptables-nft rules"
            ),
        );
    }
    if let Some(l) = enabled(root, "docker.service") {
        push(
            "docker",
            format!(
                "docker.service is enabled ({l}); Docker inserts its own chains and FORWARD rules"
            ),
        );
    } else if !matches!(unit(root, "docker.service"), Ok(Unit::Missing) | Err(_)) {
        push(
            "docker",
            "docker.service is installed; Docker inserts its own chains when it runs".into(),
        );
    }
    out
}

/// `conflicts("/")` plus the running host: firewalld or dockerd processes, and
/// Docker's chains in the live IPv4 ruleset. Runs `iptables-save`: never call it
/// from a test on the host.
pub fn conflicts_live() -> Vec<Conflict> {
    let mut out = conflicts(Path::new("/"));
    let running = running_commands();
    for (manager, comm) in [("firewalld", "firewalld"), ("docker", "dockerd")] {
        if running.iter().any(|c| c == comm) && !out.iter().any(|c| c.manager == manager) {
            out.push(Conflict {
                manager: manager.into(),
                evidence: format!("{comm} is running"),
            });
        }
    }
    if let Ok(save) = portcullis_netfilter::backend::run(&["iptables-save"], None)
        && save.lines().any(|l| l.starts_with(":DOCKER"))
    {
        out.push(Conflict {
            manager: "docker".into(),
            evidence: "the live ruleset has DOCKER chains (iptables-save)".into(),
        });
    }
    out
}

/// The `comm` of every process in /proc.
fn running_commands() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect()
}
