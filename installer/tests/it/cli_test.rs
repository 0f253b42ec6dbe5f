//! Snapshot tests of real `portcullis` invocations (snapbox): render, check, init,
//! completions, and the error output and exit codes of bad input. `check` runs a
//! fake `iptables-restore` put first on PATH, so its report is exact; it is run
//! inside `unshare -n`, which needs root.

use std::path::{Path, PathBuf};

use libtest_mimic::{Failed, Trial};
use snapbox::cmd::Command;
use snapbox::str;

use crate::golden::golden_path;
use crate::policy_test::installer_dir;
use crate::support::trial;
use portcullis_harness::Family;
use portcullis_harness::trial::privileged;

fn portcullis() -> Command {
    Command::new(snapbox::cmd::cargo_bin!("portcullis"))
        .env_remove("SSH_CONNECTION")
        .current_dir(installer_dir())
}

fn example(name: &str) -> PathBuf {
    installer_dir().join(format!("../examples/{name}.toml"))
}

fn golden(name: &str, family: Family) -> snapbox::Data {
    snapbox::Data::read_from(&golden_path(name, family), None)
}

fn read(p: &Path) -> Result<String, Failed> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()).into())
}

fn render_prints_ipv4_by_default() -> Result<(), Failed> {
    portcullis()
        .arg("render")
        .assert()
        .success()
        .stdout_eq(golden("default", Family::V4))
        .stderr_eq(str![[r#"
portcullis: printed the ipv4 ruleset; `--family ipv6` prints the ipv6 one, `--out-dir DIR` writes both

"#]]);
    portcullis()
        .args(["render", "--family", "ipv6", "--config"])
        .arg(example("web-server"))
        .assert()
        .success()
        .stdout_eq(golden("web-server", Family::V6))
        .stderr_eq(str![""]);
    portcullis()
        .args(["render", "--family", "ipv6", "--config"])
        .arg(example("ipv6-untouched"))
        .assert()
        .success()
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: ipv6.mode is "untouched": no ipv6 ruleset

"#]]);
    Ok(())
}

fn render_out_dir_writes_both_families() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("rules");
    portcullis()
        .args(["render", "--config"])
        .arg(example("mail-relay"))
        .arg("--out-dir")
        .arg(&dir)
        .assert()
        .success()
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: wrote [..]/rules/rules.v4
portcullis: wrote [..]/rules/rules.v6

"#]]);
    for (f, file) in [(Family::V4, "rules.v4"), (Family::V6, "rules.v6")] {
        if read(&dir.join(file))? != read(&golden_path("mail-relay", f))? {
            return Err(format!("{file} differs from the golden file").into());
        }
    }
    // Untouched IPv6 writes no rules.v6 and says so; the stale one stays.
    portcullis()
        .args(["render", "--config"])
        .arg(example("ipv6-untouched"))
        .arg("--out-dir")
        .arg(&dir)
        .assert()
        .success()
        .stderr_eq(str![[r#"
portcullis: wrote [..]/rules/rules.v4
portcullis: ipv6.mode is "untouched": wrote no [..]/rules/rules.v6 (the existing one was left as it was)

"#]]);
    if read(&dir.join("rules.v4"))? != read(&golden_path("ipv6-untouched", Family::V4))? {
        return Err("rules.v4 was not replaced".into());
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    if !leftovers.is_empty() {
        return Err(format!("temp files left behind: {leftovers:?}").into());
    }
    Ok(())
}

fn bad_input_exits_2_with_one_line() -> Result<(), Failed> {
    for verb in ["render", "check"] {
        portcullis()
            .args([verb, "--config", "tests/bad/range-reversed.toml"])
            .assert()
            .code(2)
            .stdout_eq(str![""])
            .stderr_eq(str![[r#"
portcullis: error: tests/bad/range-reversed.toml:7: outbound.allow[1].port: expected a port 1-65535 or a range "a:b" with a <= b, found "90:80"

"#]]);
    }
    portcullis()
        .args(["render", "--config", "tests/bad/unknown-key-nested.toml"])
        .assert()
        .code(2)
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: error: tests/bad/unknown-key-nested.toml:3: ssh.alow_from: unknown key, expected one of port, allow_from, rate_limit

"#]]);
    portcullis()
        .args(["render", "--config", "tests/bad/does-not-exist.toml"])
        .assert()
        .code(2)
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: error: cannot read policy tests/bad/does-not-exist.toml: No such file or directory (os error 2)

"#]]);
    portcullis()
        .args(["render", "--family", "ipv5"])
        .assert()
        .code(2)
        .stdout_eq(str![""]);
    Ok(())
}

/// `apply` and `install` change real hosts: without `--config` they refuse (exit
/// 2, before any privilege check or write) instead of using the embedded default.
fn apply_and_install_need_a_config() -> Result<(), Failed> {
    portcullis()
        .args(["apply", "--state-dir", "/nonexistent/portcullis-state"])
        .assert()
        .code(2)
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: error: apply needs --config FILE: the embedded default allows ssh only from 10.137.0.0/24; write yours with portcullis init

"#]]);
    let dir = tempfile::tempdir()?;
    portcullis()
        .args(["install", "--root"])
        .arg(dir.path())
        .assert()
        .code(2)
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: error: install needs --config FILE: the embedded default allows ssh only from 10.137.0.0/24; write yours with portcullis init

"#]]);
    if std::fs::read_dir(dir.path())?.next().is_some() {
        return Err("install without --config wrote into its root".into());
    }
    Ok(())
}

/// A fake `iptables-restore`/`ip6tables-restore` that insists on `-w --test`,
/// keeps what it read, and fails when `fail` is set.
fn fake_restore(dir: &Path, fail: bool) -> Result<(), Failed> {
    use std::os::unix::fs::PermissionsExt as _;
    for name in ["iptables-restore", "ip6tables-restore"] {
        let body = if fail {
            "echo \"$0: line 7 failed\" >&2; exit 1".to_owned()
        } else {
            format!("cat > {}/{name}.in; exit 0", dir.display())
        };
        let script = format!(
            "#!/bin/sh\n\
             if [ \"$1\" = --version ]; then echo \"{name} v0.0 (fake)\"; exit 0; fi\n\
             if [ \"$*\" != \"-w --test\" ]; then echo \"unexpected arguments: $*\" >&2; exit 3; fi\n\
             {body}\n"
        );
        let path = dir.join(name);
        std::fs::write(&path, script)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

fn path_with(dir: &Path) -> std::ffi::OsString {
    let mut paths = vec![dir.to_path_buf()];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).unwrap()
}

fn check_reports_what_it_tested() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    fake_restore(tmp.path(), false)?;
    portcullis()
        .env("PATH", path_with(tmp.path()))
        .args(["check", "--config"])
        .arg(example("web-server"))
        .assert()
        .success()
        .stderr_eq(str![""])
        .stdout_eq(str![[r#"
policy [..]/examples/web-server.toml: valid
ipv4: 18 rules rendered; accepted by `unshare -n [..]/iptables-restore -w --test` (iptables-restore v0.0 (fake))
ipv6: 44 rules rendered; accepted by `unshare -n [..]/ip6tables-restore -w --test` (ip6tables-restore v0.0 (fake))
check passed

"#]]);
    // The fake saw exactly the rendered text.
    if read(&tmp.path().join("iptables-restore.in"))?
        != read(&golden_path("web-server", Family::V4))?
    {
        return Err("iptables-restore was not fed the rendered ipv4 ruleset".into());
    }
    // snapbox normalizes `\` to `/` (paths), so the JSON escapes read `/"` here.
    portcullis()
        .env("PATH", path_with(tmp.path()))
        .args(["check", "--json", "--config"])
        .arg(example("ipv6-untouched"))
        .assert()
        .success()
        .stdout_eq(str![[r#"
{
  "policy": "[..]/examples/ipv6-untouched.toml",
  "valid": true,
  "families": [
    {
      "family": "ipv4",
      "rules": 11,
      "test": {
        "status": "passed",
        "command": "unshare -n [..]/iptables-restore -w --test",
        "version": "iptables-restore v0.0 (fake)"
      }
    },
    {
      "family": "ipv6",
      "rules": null,
      "test": {
        "status": "skipped",
        "reason": "ipv6.mode is /"untouched/": nothing to test"
      }
    }
  ],
  "ok": true
}

"#]]);
    let failing = tempfile::tempdir()?;
    fake_restore(failing.path(), true)?;
    portcullis()
        .env("PATH", path_with(failing.path()))
        .args(["check", "--config"])
        .arg(example("ipv6-deny"))
        .assert()
        .code(1)
        .stdout_eq(str![[r#"
policy [..]/examples/ipv6-deny.toml: valid
ipv4: 12 rules rendered; REFUSED by `unshare -n [..]/iptables-restore -w --test` (iptables-restore v0.0 (fake)): [..]/iptables-restore: line 7 failed
ipv6: 2 rules rendered; REFUSED by `unshare -n [..]/ip6tables-restore -w --test` (ip6tables-restore v0.0 (fake)): [..]/ip6tables-restore: line 7 failed
check failed: a ruleset was refused (report it: portcullis rendered it)

"#]]);
    Ok(())
}

/// The host's real `iptables-restore`, in a namespace `check` makes itself.
fn check_with_the_real_binaries() -> Result<(), Failed> {
    portcullis()
        .args(["check", "--config"])
        .arg(example("mail-relay"))
        .assert()
        .success()
        .stdout_eq(str![[r#"
policy [..]/examples/mail-relay.toml: valid
ipv4: 15 rules rendered; accepted by `unshare -n [..]/iptables-restore -w --test` (iptables-restore v[..])
ipv6: 42 rules rendered; accepted by `unshare -n [..]/ip6tables-restore -w --test` (ip6tables-restore v[..])
check passed

"#]]);
    Ok(())
}

fn check_without_root_says_what_was_not_tested() -> Result<(), Failed> {
    portcullis()
        .arg("check")
        .assert()
        .success()
        .stdout_eq(str![[r#"
policy <embedded default>: valid
ipv4: 16 rules rendered; not tested: [..]
ipv6: 40 rules rendered; not tested: [..]
check passed in part: the policy is valid and renders; see above for what was not tested

"#]]);
    Ok(())
}

fn init_writes_a_starter_policy() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let cmd = || portcullis().current_dir(tmp.path());
    cmd()
        .arg("init")
        .assert()
        .success()
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: wrote portcullis.toml; ssh.allow_from is a PLACEHOLDER (192.0.2.0/24): change it to your admin subnet, then run `portcullis check --config portcullis.toml`

"#]]);
    let placeholder = read(&tmp.path().join("portcullis.toml"))?;
    if !placeholder.contains("allow_from = [\"192.0.2.0/24\"]\n# ^ PLACEHOLDER") {
        return Err(format!("no marked placeholder:\n{placeholder}").into());
    }
    cmd()
        .arg("init")
        .env("SSH_CONNECTION", "203.0.113.9 50022 192.0.2.1 22")
        .assert()
        .code(2)
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: error: portcullis.toml already exists: pass --force to replace it, or --out another file

"#]]);
    if read(&tmp.path().join("portcullis.toml"))? != placeholder {
        return Err("a refused init changed the file".into());
    }
    cmd()
        .args(["init", "--force"])
        .env("SSH_CONNECTION", "2001:db8::9 50022 2001:db8::1 2222")
        .assert()
        .success()
        .stderr_eq(str![[r#"
portcullis: wrote portcullis.toml; ssh.allow_from holds your SSH client 2001:db8::9 (port 2222); review it, then run `portcullis check --config portcullis.toml`

"#]]);
    let p = portcullis::Policy::load(&tmp.path().join("portcullis.toml"))?;
    if p.ssh.allow_from != vec!["2001:db8::9/128".parse::<ipnet::IpNet>().unwrap()]
        || p.ssh.port != 2222
    {
        return Err(format!("wrong ssh section: {:?}", p.ssh).into());
    }
    cmd()
        .args(["init", "--out", "-"])
        .env("SSH_CONNECTION", "203.0.113.9 50022 192.0.2.1 22")
        .assert()
        .success()
        .stdout_eq(str![[r#"
...
[ssh]
# Who may open SSH sessions to this host. Sessions already open keep working.
port = 22
allow_from = ["203.0.113.9/32"]
# ^ your current SSH client (from SSH_CONNECTION). Add your admin subnet
#   before you rely on it: a new address elsewhere would be locked out.
...
"#]]);
    // Symlinks are not followed: with --force the link itself is replaced.
    let target = tmp.path().join("target.txt");
    std::fs::write(&target, "keep")?;
    std::os::unix::fs::symlink(&target, tmp.path().join("link.toml"))?;
    cmd().args(["init", "--out", "link.toml"]).assert().code(2);
    cmd()
        .args(["init", "--force", "--out", "link.toml"])
        .assert()
        .success();
    if read(&target)? != "keep"
        || tmp
            .path()
            .join("link.toml")
            .symlink_metadata()?
            .is_symlink()
    {
        return Err("init wrote through a symlink".into());
    }
    Ok(())
}

fn completions_exist() -> Result<(), Failed> {
    for (shell, marker) in [
        ("bash", "_portcullis()"),
        ("zsh", "#compdef portcullis"),
        ("fish", "complete -c portcullis"),
        ("man", ".TH portcullis"),
    ] {
        let out = portcullis().args(["completions", shell]).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains(marker) || !stdout.contains("render") {
            return Err(
                format!("completions {shell}: no {marker:?} or no `render` in the output").into(),
            );
        }
    }
    portcullis()
        .args(["completions", "tcsh"])
        .assert()
        .code(2)
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: error: [..]tcsh[..]; or `man`

"#]]);
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let root = portcullis_harness::trial::root_missing().is_none();
    let mut v = vec![
        trial(
            "cli::render_prints_ipv4_by_default",
            render_prints_ipv4_by_default,
        ),
        trial(
            "cli::render_out_dir_writes_both_families",
            render_out_dir_writes_both_families,
        ),
        trial(
            "cli::bad_input_exits_2_with_one_line",
            bad_input_exits_2_with_one_line,
        ),
        trial(
            "cli::init_writes_a_starter_policy",
            init_writes_a_starter_policy,
        ),
        trial("cli::completions_exist", completions_exist),
        trial(
            "cli::apply_and_install_need_a_config",
            apply_and_install_need_a_config,
        ),
        privileged(
            "cli::check_reports_what_it_tested",
            None,
            check_reports_what_it_tested,
        ),
        privileged(
            "cli::check_with_the_real_binaries",
            ["iptables-restore", "ip6tables-restore"]
                .into_iter()
                .find(|b| portcullis_harness::backend::find_in_path(b).is_none())
                .map(|b| format!("{b} not found (install iptables)")),
            check_with_the_real_binaries,
        ),
    ];
    // The mirror image of a root trial: as root, `check` really tests, so this
    // one is ignored with the reason (also under `--ignored`).
    let reason = "runs only as non-root (as root, check really tests)";
    v.push(
        Trial::ignorable_test(
            "cli::check_without_root_says_what_was_not_tested",
            move || {
                if root {
                    Ok(libtest_mimic::Completion::ignored_with(reason))
                } else {
                    check_without_root_says_what_was_not_tested()
                        .map(|()| libtest_mimic::Completion::Completed)
                }
            },
        )
        .with_ignored_flag(root)
        .with_kind(if root { reason } else { "" }),
    );
    v
}
