//! The Debian loader inside the standard lab: the real root's own
//! `netfilter-persistent start` runs in the lab's `target` namespace (through an
//! overlay of the cached Debian root), then real TCP probes from `admin` (inside
//! ssh.allow_from) and `outsider` (outside it) to the target's port 22, both
//! families, with the counters of the rule or policy that decided each: once with
//! a listener there (the admin connects), once with nothing listening (the admin's
//! SYN passes the ssh rule and the target answers with a RST).

use std::net::SocketAddr;
use std::path::Path;

use libtest_mimic::{Failed, Trial};
use portcullis_harness::probe::{self, NEGATIVE_WINDOW};
use portcullis_harness::{
    Backend, CounterKind, Counters, Family, HostId, Lab, Outcome, Selector, services,
};

use super::debian::{debian_trial, overlay_exec, section};
use super::*;

/// How long a probe that must connect may take (the lab is local).
const PATIENT: std::time::Duration = std::time::Duration::from_secs(2);

fn loader_in_lab_target(deb: &Path, listening: bool) -> Result<(), Failed> {
    let lab = Lab::standard().map_err(|e| format!("cannot build the lab: {e}"))?;
    let dir = scratch();
    let policy = policy_file(
        dir.path(),
        &format!(
            "[ssh]\nport = 22\nallow_from = [\"{}\", \"{}\"]\n[ipv6]\nmode = \"mirror\"\n",
            lab.subnet(HostId::Admin, Family::V4),
            lab.subnet(HostId::Admin, Family::V6)
        ),
    );

    // The boot: install into the overlay, then the root's own loader, in the
    // target's network namespace (and a private mount namespace).
    let mut cmd = lab.host(HostId::Target).command("unshare");
    cmd.args(["-m", "--propagation", "private"]);
    let body = r#"
        "$BIN" install --config "$1" --root "$M" >/dev/null
        echo '#== start'
        chroot "$M" /usr/sbin/netfilter-persistent start 2>&1
    "#;
    let s = overlay_exec(
        cmd,
        dir.path(),
        &deb.to_string_lossy(),
        body,
        &[policy.as_os_str()],
    )?;
    section(&s, "start")?;
    // The loader loaded the rules; Debian bookworm's alternatives point iptables
    // at the nft backend, so the probes read the target's counters with it.
    lab.adopt_backend(Backend::Nft).map_err(|e| e.to_string())?;

    // A listener on the target's port 22, both families, when asked for.
    let addrs: Vec<SocketAddr> = Family::ALL
        .iter()
        .map(|&f| SocketAddr::new(lab.addr(HostId::Target, f), 22))
        .collect();
    let listen = addrs.clone();
    let _svc = if listening {
        let svc = lab
            .host(HostId::Target)
            .try_run(move || async move { services::tcp::echo(&listen).await })?
            .map_err(|e| format!("cannot listen on the target's port 22: {e}"))?;
        Some(svc)
    } else {
        None
    };

    for (addr, family) in addrs.into_iter().zip(Family::ALL) {
        let admin = lab.probe(HostId::Admin, Some(family), move || async move {
            probe::tcp::connect(addr, PATIENT).await
        })?;
        let outsider = lab.probe(HostId::Outsider, Some(family), move || async move {
            probe::tcp::connect(addr, NEGATIVE_WINDOW).await
        })?;
        // With nothing listening, the target's RST proves the SYN got in.
        let reached = matches!(
            (&admin.outcome, listening),
            (Outcome::Ok(_), true) | (Outcome::Refused(_), false)
        );
        if !reached {
            return Err(format!(
                "{family}: admin could not reach ssh at {addr} (listening: {listening}): {:?}",
                admin.outcome
            )
            .into());
        }
        if admin_rule(&admin.counters) == 0 {
            return Err(format!(
                "{family}: the admin's SYN was not counted by the ssh rule: {}",
                admin.summary()
            )
            .into());
        }
        if outsider.outcome != Outcome::NoAnswer {
            return Err(format!(
                "{family}: the outsider got {:?} from {addr}, expected no answer",
                outsider.outcome
            )
            .into());
        }
        if outsider.counters.packets(&Selector::policy("INPUT")) == 0
            || admin_rule(&outsider.counters) != 0
        {
            return Err(format!(
                "{family}: the outsider's SYN must be counted by the INPUT policy alone: {}",
                outsider.summary()
            )
            .into());
        }
    }
    lab.shutdown().map_err(|e| format!("lab teardown: {e:?}"))?;
    Ok(())
}

/// Packets of the INPUT rule accepting ssh from the admin subnet, found by its
/// matches rather than its comment (comments are the renderer's to reword).
fn admin_rule(c: &Counters) -> u64 {
    c.entries
        .iter()
        .filter(|e| e.chain == "INPUT")
        .filter(|e| match &e.kind {
            CounterKind::Rule { text, .. } => text.contains("--dport 22") && text.contains("-s "),
            CounterKind::Policy { .. } => false,
        })
        .map(|e| e.packets)
        .sum()
}

pub fn trials() -> Vec<Trial> {
    vec![
        debian_trial("persist::lab::debian_loader_in_target", |deb| {
            loader_in_lab_target(deb, true)
        }),
        // Its name from the days it built its own veth pairs in shell.
        debian_trial("persist::debian::packets_after_boot_load", |deb| {
            loader_in_lab_target(deb, false)
        }),
    ]
}
