//! The Debian package: ci/build-deb packages the binary this test run built
//! (`--dev` for a debug build, `--prebuilt` for a release one), dpkg installs it into an overlay of the real Debian root, the
//! installed `portcullis detect` and `install` run inside the chroot, and
//! `verify --root` from outside proves what they wrote. Installing the package
//! alone must change no firewall file (it has no maintainer script).
//!
//! Ignored, with the reason, when cargo-deb is missing, except under CI (`CI=true`),
//! where ci/setup installs it: there a missing cargo-deb fails the trial instead of
//! skipping it silently.

use std::path::Path;
use std::process::Command;

use libtest_mimic::{Completion, Failed, Trial};
use portcullis_harness::trial::privileged;

use super::debian::{debian_root, overlay_run, section};
use super::*;

fn cargo_deb_missing() -> Option<String> {
    let ok = Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| {
        "cargo-deb is not installed (ci/setup installs it: cargo install cargo-deb --locked --version 3.8.0)".to_owned()
    })
}

fn deb_in_the_debian_root(deb_root: &Path) -> Result<(), Failed> {
    let dir = scratch();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/build-deb");
    let out_dir = dir.path().join("deb");
    // Package exactly the binary under test: its profile directory and target dir.
    let bin = Path::new(env!("CARGO_BIN_EXE_portcullis"));
    let profile_dir = bin.parent().ok_or("the binary has no directory")?;
    let mode = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "--dev",
        Some("release") => "--prebuilt",
        other => return Err(format!("cannot package a binary built in {other:?}").into()),
    };
    let target_dir = profile_dir.parent().ok_or("no target dir")?;
    let out = Command::new(&script)
        .arg(mode)
        .arg("--output")
        .arg(&out_dir)
        .env("CARGO_TARGET_DIR", target_dir)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "ci/build-deb failed ({}): {}",
            out.status,
            text(&out.stderr)
        )
        .into());
    }
    let deb = std::fs::read_dir(&out_dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("no .deb in {}", out_dir.display()))?;
    let body = r#"
        cp "$1" "$M/tmp/portcullis.deb"
        echo '#== dpkg'
        chroot "$M" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg -i /tmp/portcullis.deb >/dev/null 2>&1 && echo installed
        echo '#== scripts'
        ls "$M/var/lib/dpkg/info/" | grep '^portcullis\.' || true
        echo '#== rules-after-dpkg'
        ls "$M/etc/iptables/" 2>/dev/null || true
        echo '#== files'
        chroot "$M" dpkg -L portcullis
        echo '#== detect'
        chroot "$M" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin portcullis detect --root / --json
        echo '#== install'
        chroot "$M" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin portcullis install --config /usr/share/doc/portcullis/examples/minimal-ssh.toml --root / 2>&1
        echo '#== verify'
        if "$BIN" verify --root "$M" 2>/dev/null; then echo "exit=0"; else echo "exit=$?"; fi
    "#;
    let s = overlay_run(
        &dir.path().join("ov"),
        &deb_root.to_string_lossy(),
        body,
        &[deb.as_os_str()],
    )?;
    if section(&s, "dpkg")?.trim() != "installed" {
        return Err(format!("dpkg -i failed: {s:?}").into());
    }
    let scripts = section(&s, "scripts")?;
    if scripts
        .lines()
        .any(|l| !(l.ends_with(".list") || l.ends_with(".md5sums")))
    {
        return Err(format!("the package must ship no maintainer script:\n{scripts}").into());
    }
    let rules = section(&s, "rules-after-dpkg")?;
    if rules.contains("rules.v") {
        return Err(format!("installing the package wrote rules:\n{rules}").into());
    }
    let files = section(&s, "files")?;
    for f in [
        "/usr/bin/portcullis",
        "/usr/share/man/man1/portcullis.1.gz",
        "/usr/share/bash-completion/completions/portcullis",
        "/usr/share/zsh/vendor-completions/_portcullis",
        "/usr/share/fish/vendor_completions.d/portcullis.fish",
        "/usr/share/doc/portcullis/examples/minimal-ssh.toml",
        "/usr/share/doc/portcullis/packaging.md",
    ] {
        if !files.lines().any(|l| l == f) {
            return Err(format!("the package lacks {f}:\n{files}").into());
        }
    }
    let detect: serde_json::Value = serde_json::from_str(section(&s, "detect")?)?;
    if detect["mechanism"] != "netfilter-persistent" {
        return Err(
            format!("the installed detect must find netfilter-persistent: {detect}").into(),
        );
    }
    let install = section(&s, "install")?;
    if !install.contains("written   /etc/iptables/rules.v4")
        || !install.contains("written   /etc/portcullis/policy.toml")
    {
        return Err(format!(
            "the installed install must write the rules and the policy copy:\n{install}"
        )
        .into());
    }
    let verify = section(&s, "verify")?;
    if !verify.contains("exit=0") || !verify.contains("verify --root: PASS") {
        return Err(
            format!("verify --root must prove what the package installed:\n{verify}").into(),
        );
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let missing = cargo_deb_missing();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let (ignore, fail) = match (missing, ci) {
        (Some(m), true) => (None, Some(m)),
        (m, _) => (m, None),
    };
    vec![privileged(
        "persist::package::deb_installs_and_runs_in_the_debian_root",
        ignore,
        move || {
            if let Some(m) = fail {
                return Err(format!("under CI the .deb must be built: {m}").into());
            }
            match debian_root() {
                Err(r) => Ok(Completion::ignored_with(r)),
                Ok(root) => deb_in_the_debian_root(&root).map(|()| Completion::Completed),
            }
        },
    )]
}
