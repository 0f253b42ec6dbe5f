//! The real Debian root from ci/debian-root (debootstrap minbase + iptables +
//! iptables-persistent), used through an overlay mount so each trial gets a
//! throwaway writable copy: `install --root`, then the root's own
//! `netfilter-persistent start` (or its `/etc/rc.local`) in a fresh network
//! namespace, and `iptables-save` of that namespace. Trials are ignored, with the
//! reason, when the root cannot be built here (no network to the mirror).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use libtest_mimic::{Completion, Failed, Trial};

use super::*;
use portcullis_harness::trial::privileged;

/// The cached root, built once per process (ci/debian-root locks across processes).
pub(super) fn debian_root() -> Result<PathBuf, String> {
    static ROOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/debian-root");
        let out = Command::new(&script)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let stdout = text(&out.stdout);
        match stdout.lines().last() {
            Some(p) if out.status.success() => Ok(PathBuf::from(p.trim())),
            _ => {
                let err = text(&out.stderr);
                let tail: Vec<&str> = err.lines().rev().take(3).collect();
                Err(format!(
                    "no Debian root: ci/debian-root could not build it (debootstrap needs the network to a Debian mirror): {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                ))
            }
        }
    })
    .clone()
}

/// A trial that needs root and the Debian root; ignored with the reason otherwise
/// (the root is built, or found cached, when the trial runs).
pub(super) fn debian_trial(
    name: &str,
    f: impl FnOnce(&Path) -> Result<(), Failed> + Send + 'static,
) -> Trial {
    privileged(name, None, move || match debian_root() {
        Err(r) => Ok(Completion::ignored_with(r)),
        Ok(root) => f(&root).map(|()| Completion::Completed),
    })
}

/// Mount an overlay of `lower` (`a:b`, leftmost on top) with a private upper layer
/// in `dir`, inside a private mount namespace and a fresh network namespace that
/// both die with the command, and run the fixed script `body` there with `$M` the
/// merged root, `$BIN` portcullis, and `extra` as "$1"... Its output is split into
/// sections by lines `#== NAME`.
pub(super) fn overlay_run(
    dir: &Path,
    lower: &str,
    body: &str,
    extra: &[&OsStr],
) -> Result<BTreeMap<String, String>, String> {
    // setpriv: the script dies with this test process, even on SIGKILL.
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--pdeathsig",
        "KILL",
        "--",
        "unshare",
        "-m",
        "-n",
        "--propagation",
        "private",
    ]);
    overlay_exec(cmd, dir, lower, body, extra)
}

/// `overlay_run` with the caller's `unshare` command (which must make a private
/// mount namespace), e.g. one that runs in a lab host's network namespace.
pub(super) fn overlay_exec(
    mut cmd: Command,
    dir: &Path,
    lower: &str,
    body: &str,
    extra: &[&OsStr],
) -> Result<BTreeMap<String, String>, String> {
    const PREFIX: &str = r#"
        mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4"
        M=$4 BIN=$5
        shift 5
        # A booted Debian has /proc: without it 25-ip6tables skips IPv6 silently
        # (`test -e /proc/sys/net/ipv6 || exit 0`). This proc belongs to the private
        # mount namespace and shows this network namespace.
        mount -t proc proc "$M/proc"
    "#;
    let (upper, work, merged) = (dir.join("upper"), dir.join("work"), dir.join("merged"));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    let script = format!("{PREFIX}{body}");
    let out = cmd
        .args(["--", "sh", "-ec", &script, "sh"])
        .arg(lower)
        .args([&upper, &work, &merged])
        .arg(env!("CARGO_BIN_EXE_portcullis"))
        .args(extra)
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    let stdout = text(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "the overlay script failed ({}): {}\nstdout:\n{stdout}",
            out.status,
            text(&out.stderr)
        ));
    }
    let mut sections = BTreeMap::new();
    let mut name = String::from("-");
    for line in stdout.lines() {
        if let Some(n) = line.strip_prefix("#== ") {
            name = n.trim().to_owned();
            sections.entry(name.clone()).or_default();
            continue;
        }
        let s: &mut String = sections.entry(name.clone()).or_default();
        s.push_str(line);
        s.push('\n');
    }
    Ok(sections)
}

pub(super) fn section<'a>(s: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, String> {
    s.get(name)
        .map(String::as_str)
        .ok_or_else(|| format!("no `{name}` section in the output: {s:?}"))
}

/// Section `name`, which must contain every one of `wants`; else `why` and the text.
fn section_has(
    s: &BTreeMap<String, String>,
    name: &str,
    wants: &[&str],
    why: &str,
) -> Result<(), Failed> {
    let text = section(s, name)?;
    if wants.iter().all(|w| text.contains(w)) {
        return Ok(());
    }
    Err(format!("{why}:\n{text}").into())
}

/// The packet counter of the first rule in `save` (from `-c`) containing `needle`.
fn counter(save: &str, needle: &str) -> Option<u64> {
    save.lines().find(|l| l.contains(needle)).and_then(|l| {
        let l = l.strip_prefix('[')?;
        l.split(':').next()?.parse().ok()
    })
}

const SAVE_BOTH: &str = r#"
    echo '#== v4'
    chroot "$M" iptables-save -c
    echo '#== v6'
    chroot "$M" ip6tables-save -c
"#;

fn netfilter_persistent_start(deb: &Path) -> Result<(), Failed> {
    let dir = scratch();
    let policy = policy_file(dir.path(), POLICY);
    let body = format!(
        r#"
        echo '#== install'
        "$BIN" install --config "$1" --root "$M"
        echo '#== start'
        chroot "$M" /usr/sbin/netfilter-persistent start 2>&1
        # Traffic over loopback, so the loopback rules must count it.
        ip link set lo up
        bash -c 'exec 3<>/dev/tcp/127.0.0.1/9' 2>/dev/null || true
        bash -c 'exec 3<>/dev/tcp/::1/9' 2>/dev/null || true
        {SAVE_BOTH}
        echo '#== drop-in'
        grep '^ExecStartPre=' "$M/etc/systemd/system/netfilter-persistent.service.d/portcullis-fail-loudly.conf" | cut -d= -f2- |
        while read -r cmd; do
            if chroot "$M" $cmd; then echo "ok $cmd"; else echo "FAILED $cmd"; fi
        done
        echo '#== modes'
        stat -c '%a %n' "$M/etc/iptables/rules.v4" "$M/etc/iptables/rules.v6"
        "#
    );
    let s = overlay_run(
        dir.path(),
        &deb.to_string_lossy(),
        &body,
        &[policy.as_os_str()],
    )?;
    let v4 = section(&s, "v4")?;
    let v6 = section(&s, "v6")?;
    assert_default_deny(v4, SSH_V4, "debian netfilter-persistent ipv4")?;
    assert_default_deny(v6, SSH_V6, "debian netfilter-persistent ipv6")?;
    for (save, fam) in [(v4, "ipv4"), (v6, "ipv6")] {
        for needle in ["-A INPUT -i lo", "-A OUTPUT -o lo"] {
            match counter(save, needle) {
                Some(n) if n > 0 => {}
                other => {
                    return Err(format!(
                        "{fam}: `{needle}` counted {other:?} packets, expected some:\n{save}"
                    )
                    .into());
                }
            }
        }
    }
    let drop_in = section(&s, "drop-in")?;
    if drop_in.lines().count() != 2 || drop_in.contains("FAILED") {
        return Err(format!("the drop-in's tests must pass on good files:\n{drop_in}").into());
    }
    let modes = section(&s, "modes")?;
    if modes.lines().any(|l| !l.starts_with("640 ")) {
        return Err(format!("rules files must be 0640:\n{modes}").into());
    }
    Ok(())
}

fn broken_file_fails_open_but_the_drop_in_fails(deb: &Path) -> Result<(), Failed> {
    let dir = scratch();
    let policy = policy_file(dir.path(), POLICY);
    let body = format!(
        r#"
        "$BIN" install --config "$1" --root "$M" >/dev/null
        printf '*filter\n-A INPUT --no-such-option\nCOMMIT\n' >> "$M/etc/iptables/rules.v4"
        echo '#== start'
        if chroot "$M" /usr/sbin/netfilter-persistent start 2>&1; then echo "exit=0"; else echo "exit=$?"; fi
        {SAVE_BOTH}
        echo '#== drop-in'
        grep '^ExecStartPre=' "$M/etc/systemd/system/netfilter-persistent.service.d/portcullis-fail-loudly.conf" | cut -d= -f2- |
        while read -r cmd; do
            if chroot "$M" $cmd 2>/dev/null; then echo "ok $cmd"; else echo "FAILED $cmd"; fi
        done
        "#
    );
    let s = overlay_run(
        dir.path(),
        &deb.to_string_lossy(),
        &body,
        &[policy.as_os_str()],
    )?;
    let start = section(&s, "start")?;
    // Pin Debian's fail-open behaviour: if this changes, docs/distros.md must too.
    if !start.contains("New rules NOT loaded") || !start.contains("exit=0") {
        return Err(format!(
            "netfilter-persistent no longer fails open the way docs/distros.md says:\n{start}"
        )
        .into());
    }
    if section(&s, "v4")?.contains(":INPUT DROP") {
        return Err("a broken rules.v4 was loaded anyway?".into());
    }
    let drop_in = section(&s, "drop-in")?;
    let failed: Vec<&str> = drop_in
        .lines()
        .filter(|l| l.starts_with("FAILED"))
        .collect();
    if failed.len() != 1 || !failed[0].contains("rules.v4") {
        return Err(format!(
            "the drop-in must fail the unit on the broken rules.v4 only:\n{drop_in}"
        )
        .into());
    }
    Ok(())
}

fn rc_local_without_netfilter_persistent(deb: &Path) -> Result<(), Failed> {
    let dir = scratch();
    let policy = policy_file(dir.path(), POLICY);
    let template = roots_dir().join("templates/debian-rc.local");
    let body = format!(
        r#"
        "$BIN" install --config "$1" --root "$M" >/dev/null
        chroot "$M" env DEBIAN_FRONTEND=noninteractive dpkg --purge ipset-persistent iptables-persistent netfilter-persistent >/dev/null 2>&1
        echo '#== after-purge'
        if [ -e "$M/etc/iptables/rules.v4" ]; then echo present; else echo gone; fi
        install -m 0644 "$2" "$M/etc/rc.local"
        echo '#== detect'
        "$BIN" detect --root "$M" --json
        echo '#== refused'
        if "$BIN" install --config "$1" --root "$M" 2>&1; then echo "exit=0"; else echo "exit=$?"; fi
        echo '#== install1'
        "$BIN" install --config "$1" --root "$M" --persistence rc-local
        echo '#== install2'
        "$BIN" install --config "$1" --root "$M" --persistence rc-local
        echo '#== rc.local'
        cat "$M/etc/rc.local"
        echo '#== mode'
        stat -c '%a' "$M/etc/rc.local"
        echo '#== run'
        if chroot "$M" /etc/rc.local 2>&1; then echo "exit=0"; else echo "exit=$?"; fi
        {SAVE_BOTH}
        # Without iptables the block must not abort the rest of a `sh -e` script.
        sed -i 's|^exit 0$|touch /portcullis-after-block\nexit 0|' "$M/etc/rc.local"
        rm -f "$M/usr/sbin/iptables-restore" "$M/usr/sbin/ip6tables-restore"
        echo '#== run-without-iptables'
        if chroot "$M" /etc/rc.local 2>&1; then echo "exit=0"; else echo "exit=$?"; fi
        if [ -e "$M/portcullis-after-block" ]; then echo "rest-ran"; fi
        "#
    );
    let s = overlay_run(
        dir.path(),
        &deb.to_string_lossy(),
        &body,
        &[policy.as_os_str(), template.as_os_str()],
    )?;
    // Caveat pinned for docs/distros.md: purging iptables-persistent deletes the rules.
    if section(&s, "after-purge")?.trim() != "gone" {
        return Err(
            "purging iptables-persistent no longer deletes rules.v4; update docs/distros.md".into(),
        );
    }
    let detect: serde_json::Value = serde_json::from_str(section(&s, "detect")?)?;
    if detect["mechanism"] != "rc-local" {
        return Err(format!(
            "without netfilter-persistent, detect must fall back to rc-local: {detect}"
        )
        .into());
    }
    // Without --persistence, a Debian root lacking iptables-persistent is refused
    // with the fix (rc.local runs late, and only where something runs it).
    section_has(
        &s,
        "refused",
        &[
            "exit=2",
            "apt-get install iptables-persistent",
            "--persistence rc-local",
        ],
        "install must refuse the rc.local fallback on Debian with the fix",
    )?;
    let second = section(&s, "install2")?;
    if second.lines().any(|l| !l.starts_with("unchanged")) {
        return Err(format!("the second install changed something:\n{second}").into());
    }
    let rc = section(&s, "rc.local")?;
    if rc.matches(portcullis::persist::BLOCK_BEGIN).count() != 1
        || !rc.starts_with("#!/bin/sh -e\n")
    {
        return Err(format!("rc.local must keep its shebang and have one block:\n{rc}").into());
    }
    let block_at = rc.find(portcullis::persist::BLOCK_END).unwrap();
    if rc.find("\nexit 0").is_none_or(|e| e < block_at) {
        return Err(format!("the block must sit above exit 0:\n{rc}").into());
    }
    if section(&s, "mode")?.trim() != "755" {
        return Err("rc.local must be made executable (0755)".into());
    }
    if !section(&s, "run")?.contains("exit=0") {
        return Err(format!("rc.local failed: {}", section(&s, "run")?).into());
    }
    assert_default_deny(section(&s, "v4")?, SSH_V4, "rc.local ipv4")?;
    assert_default_deny(section(&s, "v6")?, SSH_V6, "rc.local ipv6")?;
    section_has(
        &s,
        "run-without-iptables",
        &["exit=0", "rest-ran", "NOT loaded"],
        "without iptables the block must say so and let the rest run",
    )
}

/// The rc.local fallback fixtures, installed into a copy, then run by a real shell:
/// the copy is laid over the Debian root so its `/etc/rc.local` (or
/// `/etc/rc.d/rc.local`) runs with Debian's sh, bash and iptables.
fn rc_local_fixture(deb: &Path, fixture: &str, script: &str) -> Result<(), Failed> {
    let dir = scratch();
    let root = copy_fixture(fixture, dir.path())?;
    let policy = policy_file(dir.path(), POLICY);
    let out = install_ok(&policy, &root, &[])?;
    if !out.contains(script) {
        return Err(format!("install did not write {script}:\n{out}").into());
    }
    let lower = format!("{}:{}", root.display(), deb.display());
    let body = format!(
        r#"
        echo '#== run'
        if chroot "$M" "$1" 2>&1; then echo "exit=0"; else echo "exit=$?"; fi
        {SAVE_BOTH}
        "#
    );
    let s = overlay_run(&dir.path().join("ov"), &lower, &body, &[OsStr::new(script)])?;
    assert_default_deny(section(&s, "v4")?, SSH_V4, &format!("{fixture} ipv4"))?;
    assert_default_deny(section(&s, "v6")?, SSH_V6, &format!("{fixture} ipv6"))?;
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        debian_trial(
            "persist::debian::netfilter_persistent_start_loads_both_families",
            netfilter_persistent_start,
        ),
        debian_trial(
            "persist::debian::broken_file_fails_open_but_the_drop_in_fails",
            broken_file_fails_open_but_the_drop_in_fails,
        ),
        debian_trial(
            "persist::debian::rc_local_without_netfilter_persistent",
            rc_local_without_netfilter_persistent,
        ),
        debian_trial("persist::debian::rc_local_fixture::unknown", |d| {
            rc_local_fixture(d, "unknown", "/etc/rc.local")
        }),
        debian_trial("persist::debian::rc_local_fixture::rhel-rclocal", |d| {
            rc_local_fixture(d, "rhel-rclocal", "/etc/rc.d/rc.local")
        }),
    ]
}
