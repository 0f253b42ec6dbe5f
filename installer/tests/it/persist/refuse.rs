//! `install` tells the whole truth about a root: a loader that is not enabled, or a
//! firewall manager that replaces the rules at boot (firewalld, ufw,
//! nftables.service), is refused with the reason and the fix (exit 2, nothing
//! written), unless `--enable` (the loader enabled offline: `systemctl --root`, or
//! the link systemctl makes when the host has none; OpenRC's runlevel link) or
//! `--force`; `--json` carries `conflicts` and `notes`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use libtest_mimic::{Failed, Trial};
use portcullis_harness::trial::privileged;

use super::*;

fn nothing_written(root: &Path, files: &[&str]) -> Result<(), Failed> {
    for f in files {
        if root.join(f).exists() {
            return Err(format!("{f} was written by a refused install").into());
        }
    }
    Ok(())
}

/// The symlink `link` (in the root) points at `target`.
fn link_to(root: &Path, link: &str, target: &str) -> Result<(), Failed> {
    let t = std::fs::read_link(root.join(link)).map_err(|e| format!("{link}: {e}"))?;
    if t != Path::new(target) {
        return Err(format!("{link} points at {}, expected {target}", t.display()).into());
    }
    Ok(())
}

/// A copy of fixture root `name` whose loader is not enabled: install without
/// `--enable` is refused (exit 2) naming `why` and `--enable` (`what` says which
/// refusal). The scratch dir, the root and the policy.
fn refused_until_enabled(
    name: &str,
    why: &str,
    what: &str,
) -> Result<(tempfile::TempDir, PathBuf, PathBuf), Failed> {
    let (dir, root) = scratch_copy(name)?;
    let policy = policy_file(dir.path(), POLICY);
    let out = install_strict(&policy, &root, &["--no-test"]);
    expect_exit(&out, 2, &[why, "--enable"], what)?;
    Ok((dir, root, policy))
}

/// `out` is an install with `--enable` that succeeded; its stdout.
fn enabled(out: &Output) -> Result<String, Failed> {
    if !out.status.success() {
        return Err(format!("--enable must install: {}", text(&out.stderr)).into());
    }
    Ok(text(&out.stdout))
}

/// iptables.service and ip6tables.service are enabled in the RHEL-family `root`
/// (linked from multi-user.target.wants).
fn rhel_units_enabled(root: &Path) -> Result<(), Failed> {
    for unit in ["iptables.service", "ip6tables.service"] {
        link_to(
            root,
            &format!("etc/systemd/system/multi-user.target.wants/{unit}"),
            &format!("/usr/lib/systemd/system/{unit}"),
        )?;
    }
    Ok(())
}

fn fedora_firewalld() -> Result<(), Failed> {
    let (dir, root) = scratch_copy("fedora")?;
    let policy = policy_file(dir.path(), POLICY);
    let out = install_strict(&policy, &root, &[]);
    expect_exit(
        &out,
        2,
        &[
            "firewalld.service is enabled",
            "pass --force",
            "iptables.service is installed but not enabled",
            "pass --enable",
        ],
        "refusing firewalld and the disabled iptables.service",
    )?;
    nothing_written(
        &root,
        &["etc/sysconfig/iptables", "etc/portcullis/policy.toml"],
    )?;

    let out = install_strict(&policy, &root, &["--enable", "--force", "--json"]);
    if !out.status.success() {
        return Err(format!("--enable --force must install: {}", text(&out.stderr)).into());
    }
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if j["conflicts"][0]["manager"] != "firewalld"
        || !j["notes"].as_array().is_some_and(|n| {
            n.iter()
                .any(|n| n.as_str().is_some_and(|s| s.contains("--force")))
        })
    {
        return Err(format!("--json must carry the conflict and the notes: {j}").into());
    }
    rhel_units_enabled(&root)?;
    if mode_of(&root.join("etc/portcullis/policy.toml")) != 0o600 {
        return Err("the policy copy must be 0600".into());
    }
    // Enabled now: only firewalld is left to refuse.
    let out = install_strict(&policy, &root, &[]);
    let err = expect_exit(&out, 2, &["firewalld"], "refusing firewalld alone")?;
    if err.contains("not enabled") {
        return Err(format!("the loader is enabled now: {err}").into());
    }
    Ok(())
}

fn ubuntu_ufw() -> Result<(), Failed> {
    let (dir, root) = scratch_copy("ubuntu")?;
    let policy = policy_file(dir.path(), POLICY);
    let out = install_strict(&policy, &root, &["--enable"]);
    expect_exit(&out, 2, &["ufw", "ENABLED=no", "--force"], "refusing ufw")?;
    nothing_written(&root, &["etc/iptables/rules.v4"])?;
    Ok(())
}

/// `--enable` on a RHEL root, with the host's systemctl (when it has one) and
/// without (PATH empty: the link is made by portcullis itself).
fn rocky_enable(with_systemctl: bool) -> Result<(), Failed> {
    let (_dir, root, policy) = refused_until_enabled(
        "rocky",
        "iptables.service is installed but not enabled",
        "refusing a disabled loader",
    )?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.arg("install")
        .arg("--config")
        .arg(&policy)
        .arg("--root")
        .arg(&root)
        .args(["--no-test", "--enable"])
        .stdin(Stdio::null());
    if !with_systemctl {
        cmd.env("PATH", "");
    }
    let stdout = enabled(&cmd.output()?)?;
    let expect = if with_systemctl
        && portcullis_netfilter::backend::find_in_path("systemctl").is_some()
        && portcullis_netfilter::bins::resolve("systemctl").is_ok()
    {
        "systemctl --root"
    } else {
        "/etc/systemd/system/multi-user.target.wants/iptables.service -> /usr/lib/systemd/system/iptables.service"
    };
    if !stdout.contains(expect) {
        return Err(
            format!("install --enable must say how it enabled (`{expect}`):\n{stdout}").into(),
        );
    }
    rhel_units_enabled(&root)?;
    let again = install_strict(&policy, &root, &["--no-test"]);
    if !again.status.success()
        || text(&again.stdout)
            .lines()
            .any(|l| !l.starts_with("unchanged"))
    {
        return Err(format!(
            "once enabled, install must pass and change nothing: {}{}",
            text(&again.stdout),
            text(&again.stderr)
        )
        .into());
    }
    Ok(())
}

fn alpine_runlevel() -> Result<(), Failed> {
    let (_dir, root, policy) = refused_until_enabled(
        "alpine",
        "/etc/init.d/iptables is in no runlevel",
        "refusing a service in no runlevel",
    )?;
    enabled(&install_strict(&policy, &root, &["--no-test", "--enable"]))?;
    link_to(
        &root,
        "etc/runlevels/default/iptables",
        "/etc/init.d/iptables",
    )?;
    link_to(
        &root,
        "etc/runlevels/default/ip6tables",
        "/etc/init.d/ip6tables",
    )?;
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    vec![
        privileged(
            "persist::refuse::fedora_firewalld_and_disabled_loader",
            None,
            fedora_firewalld,
        ),
        privileged("persist::refuse::ubuntu_ufw", None, ubuntu_ufw),
        privileged("persist::refuse::rocky_enable_with_systemctl", None, || {
            rocky_enable(true)
        }),
        privileged(
            "persist::refuse::rocky_enable_without_systemctl",
            None,
            || rocky_enable(false),
        ),
        privileged(
            "persist::refuse::alpine_enable_runlevel",
            None,
            alpine_runlevel,
        ),
    ]
}
