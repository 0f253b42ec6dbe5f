//! Persistence: `detect` names the right mechanism on every fixture root, `install`
//! writes what that distro's loader reads (modes, backups, idempotence, `--check`),
//! and the loader's own restore command, run in a fresh network namespace, brings
//! up a default-deny firewall. Bad roots get a clear error and nothing half-written.
//! `debian` does the same against a real debootstrap root (ci/debian-root).
//!
//! Fixture roots live in `installer/tests/roots/`; every trial works on a copy in a
//! private temp dir under the target directory, never on the host's /etc.

mod debian;
mod fixtures;
mod image;
mod lab;
mod package;
mod refuse;
pub(crate) mod sets;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use libtest_mimic::Trial;
use portcullis_harness::Backend;

pub fn trials() -> Vec<Trial> {
    let mut t = fixtures::trials();
    t.extend(debian::trials());
    t.extend(lab::trials());
    t.extend(image::trials());
    t.extend(refuse::trials());
    t.extend(package::trials());
    t.extend(sets::trials());
    t
}

/// The text of [`POLICY`], as a macro so [`BLOCKLIST_POLICY`] can extend it.
macro_rules! policy_text {
    () => {
        r#"
[ssh]
port = 22
allow_from = ["192.0.2.0/24", "2001:db8:1::/64"]

[inbound]
icmp = true

[ipv6]
mode = "mirror"
"#
    };
}

/// The policy every trial installs: documentation addresses only.
pub const POLICY: &str = policy_text!();

/// [`POLICY`] with a blocklist in both families: it renders two ipsets
/// (`pc-bl0-4`, `pc-bl0-6`) that must load before the rules.
pub const BLOCKLIST_POLICY: &str = concat!(
    policy_text!(),
    "\n[[blocklist]]\ncidrs = [\"203.0.113.0/24\", \"198.51.100.128/25\", \"2001:db8:bad::/48\"]\n"
);

/// The ssh rules `iptables-save` must show once the policy is loaded.
pub const SSH_V4: &str = "-A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22";
pub const SSH_V6: &str = "-A INPUT -s 2001:db8:1::/64 -p tcp -m tcp --dport 22";

/// A private scratch directory (0700, under the target dir, not /tmp).
pub fn scratch() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&base).unwrap();
    tempfile::Builder::new()
        .prefix("persist-")
        .tempdir_in(base)
        .unwrap()
}

pub fn roots_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/roots")
}

/// A scratch directory holding a copy of fixture root `name` (at `DIR/root`).
pub fn scratch_copy(name: &str) -> Result<(tempfile::TempDir, PathBuf), String> {
    let dir = scratch();
    let root = copy_fixture(name, dir.path())?;
    Ok((dir, root))
}

/// A copy of fixture root `name` in `dir/root` (symlinks kept as symlinks).
pub fn copy_fixture(name: &str, dir: &Path) -> Result<PathBuf, String> {
    let dst = dir.join("root");
    let src = roots_dir().join(name);
    let out = Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&dst)
        .output()
        .map_err(|e| format!("cp: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cp -a {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(dst)
}

/// The policy file in `dir`.
pub fn policy_file(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("policy.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// Run the portcullis binary.
pub fn portcullis(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis")
}

pub use crate::support::text;

/// `portcullis install --config P --root R --enable --force [extra]`, whatever it
/// exits with. The fixture roots are minimal: their loaders are not enabled and
/// some have a conflicting manager, so the file trials pass `--enable --force`;
/// the refusals have trials of their own (`install_strict`).
pub fn install(policy: &Path, root: &Path, extra: &[&str]) -> Output {
    let mut all = vec!["--enable", "--force"];
    all.extend(extra);
    install_strict(policy, root, &all)
}

/// `portcullis install --config P --root R [extra]`, whatever it exits with.
pub fn install_strict(policy: &Path, root: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "install".as_ref(),
        "--config".as_ref(),
        policy.as_os_str(),
        "--root".as_ref(),
        root.as_os_str(),
    ];
    args.extend(extra.iter().map(|s| std::ffi::OsStr::new(*s)));
    portcullis(&args)
}

/// `out` exited with `code` and its stderr holds every one of `needles`; the
/// stderr, or an error saying what was expected (`what`) and what came.
pub fn expect_exit(
    out: &Output,
    code: i32,
    needles: &[&str],
    what: &str,
) -> Result<String, String> {
    let err = text(&out.stderr);
    if out.status.code() != Some(code) || !needles.iter().all(|n| err.contains(n)) {
        return Err(format!(
            "expected exit {code} {what}, got {}: {err}",
            out.status
        ));
    }
    Ok(err)
}

/// `portcullis install --config P --root R [extra]`, which must succeed.
pub fn install_ok(policy: &Path, root: &Path, extra: &[&str]) -> Result<String, String> {
    let out = install(policy, root, extra);
    if !out.status.success() {
        return Err(format!(
            "install --root {} {extra:?} failed ({}): {}",
            root.display(),
            out.status,
            text(&out.stderr)
        ));
    }
    Ok(text(&out.stdout))
}

/// Run a fixed sh script (never built from input; values travel as "$1"...) in a
/// fresh network namespace; stdout on success.
pub fn in_netns(script: &str, args: &[&std::ffi::OsStr]) -> Result<String, String> {
    // setpriv: the script dies with this test process, even on SIGKILL.
    let out = Command::new("setpriv")
        .args([
            "--pdeathsig",
            "KILL",
            "--",
            "unshare",
            "-n",
            "--",
            "sh",
            "-ec",
            script,
            "sh",
        ])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("unshare: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "script failed ({}): {}\nstdout: {}",
            out.status,
            text(&out.stderr),
            text(&out.stdout)
        ));
    }
    Ok(text(&out.stdout))
}

/// `iptables-save` output shows a default-deny firewall with the ssh rule.
pub fn assert_default_deny(save: &str, ssh_rule: &str, what: &str) -> Result<(), String> {
    for chain in ["INPUT", "FORWARD", "OUTPUT"] {
        if !save
            .lines()
            .any(|l| l.starts_with(&format!(":{chain} DROP")))
        {
            return Err(format!("{what}: {chain} policy is not DROP:\n{save}"));
        }
    }
    if !save.lines().any(|l| l.contains(ssh_rule)) {
        return Err(format!(
            "{what}: the ssh rule `{ssh_rule}` is missing:\n{save}"
        ));
    }
    Ok(())
}

pub fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Temp files of ours left anywhere under `dir`.
pub fn leftover_temps(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().ends_with(".portcullis-tmp") {
                out.push(e.path());
            }
        }
    }
    out
}

pub fn backend_missing(b: Backend) -> Option<String> {
    b.unavailable_reason()
}

/// Every file and symlink under `dir`, with its contents (a link: its target),
/// to compare a tree before and after.
pub fn walk(
    dir: &Path,
    out: &mut std::collections::BTreeMap<PathBuf, Vec<u8>>,
) -> Result<(), libtest_mimic::Failed> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            walk(&e.path(), out)?;
        } else if t.is_file() {
            out.insert(e.path(), std::fs::read(e.path())?);
        } else if t.is_symlink() {
            out.insert(
                e.path(),
                std::fs::read_link(e.path())?
                    .into_os_string()
                    .into_encoded_bytes(),
            );
        }
    }
    Ok(())
}
