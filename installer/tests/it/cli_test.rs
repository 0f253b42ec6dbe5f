//! Snapshot tests of real `portcullis` invocations (snapbox): render, check, init,
//! completions, and the error output and exit codes of bad input. `check` runs a
//! fake `iptables-restore` put first on PATH, so its report is exact; it is run
//! inside `unshare -n`, which needs root.

use std::path::{Path, PathBuf};

use libtest_mimic::{Failed, Trial};
use snapbox::str;

use crate::golden::golden_path;
use crate::policy_test::installer_dir;
use crate::support::portcullis_cmd as portcullis;
use crate::support::trial;
use portcullis_harness::Family;
use portcullis_harness::trial::privileged;

fn example(name: &str) -> PathBuf {
    installer_dir().join(format!("../examples/{name}.toml"))
}

/// `check --config examples/<name>.toml`, run on the host's real binaries.
fn check_example(name: &str) -> snapbox::cmd::OutputAssert {
    portcullis()
        .args(["check", "--config"])
        .arg(example(name))
        .assert()
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
    // `--json` prints its object for a refusal before anything started too.
    portcullis()
        .args(["apply", "--json", "--state-dir", "/nonexistent/portcullis-state"])
        .assert()
        .code(2)
        .stdout_eq(str![[r#"
{"schema_version":1,"verb":"apply","result":"refused","changed":false,"record":null,"errors":["apply needs --config FILE: the embedded default allows ssh only from 10.137.0.0/24; write yours with portcullis init"]}

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
    // A policy with ipsets into a root with no ipset: the sets could not load
    // at boot, nor the rules that match them (the host would boot open).
    portcullis()
        .args(["install", "--root"])
        .arg(dir.path())
        .arg("--config")
        .arg(example("blocklist"))
        .assert()
        .code(2)
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: error: refusing to install rc-local rules into [..]: the policy renders ipsets and the root has no ipset (/usr/sbin/ipset, /sbin/ipset): the sets would not load at boot and neither would the rules that match them; fix: install your distribution's ipset package
...
"#]]);
    if std::fs::read_dir(dir.path())?.next().is_some() {
        return Err("install of a policy with sets wrote into its root".into());
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
  "schema_version": 1,
  "policy": "[..]/examples/ipv6-untouched.toml",
  "valid": true,
  "errors": [],
  "warnings": [],
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
  "strict": false,
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
    check_example("mail-relay").success()
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
check passed in part: the policy is valid and renders; see above for what was not tested (--strict fails on that)

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
    // Under sudo (which drops SSH_CONNECTION) the client comes from the nearest
    // ancestor that has it, as for apply: here the shell between us and init.
    let out = std::process::Command::new("sh")
        .args([
            "-c",
            "env -u SSH_CONNECTION SUDO_USER=admin \"$0\" init --out -; echo \"rc=$?\"",
        ])
        .arg(snapbox::cmd::cargo_bin!("portcullis"))
        .env("SSH_CONNECTION", "198.51.100.7 40022 192.0.2.1 2200")
        .current_dir(tmp.path())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("port = 2200\nallow_from = [\"198.51.100.7/32\"]")
        || !stdout.contains("rc=0")
    {
        return Err(format!(
            "init under sudo did not find the ancestor's client:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
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
        // The internal guard is never offered.
        if stdout.contains("__guard") {
            return Err(format!("completions {shell} offer __guard").into());
        }
    }
    // The man page covers every verb, with its options, and the exit status.
    let out = portcullis().args(["completions", "man"]).output()?;
    let man = String::from_utf8_lossy(&out.stdout);
    use clap::CommandFactory as _;
    let cli = portcullis::cli::Cli::command();
    for verb in cli.get_subcommands() {
        let name = verb.get_name();
        if !man.contains(&format!(".SS \"portcullis {name}\"")) {
            return Err(format!("the man page has no section for {name}").into());
        }
        for arg in verb.get_arguments().filter_map(|a| a.get_long()) {
            if !man.contains(&format!("\\-\\-{}", arg.replace('-', "\\-"))) {
                return Err(format!("the man page lacks {name} --{arg}").into());
            }
        }
    }
    for code in ["EXIT STATUS", ".TP\n0\n", ".TP\n1\n", ".TP\n2\n"] {
        if !man.contains(code) {
            return Err(format!("the man page lacks {code:?}").into());
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

/// `--config -` reads the policy from stdin (the Ansible role's way), capped like
/// a file: a policy piped in is checked, an endless stream is refused at the cap,
/// and a FIFO named by path is still refused (it could hang).
fn config_from_stdin() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    fake_restore(tmp.path(), false)?;
    let text = std::fs::read_to_string(example("web-server"))?;
    portcullis()
        .env("PATH", path_with(tmp.path()))
        .args(["check", "--config", "-"])
        .stdin(text)
        .assert()
        .success()
        .stdout_eq(snapbox::str![[r#"
policy -: valid
ipv4: 18 rules rendered; accepted by [..]
ipv6: 44 rules rendered; accepted by [..]
check passed

"#]]);
    let huge = "# padding\n".repeat((5 << 20) / 10);
    portcullis()
        .args(["render", "--config", "-"])
        .stdin(huge)
        .assert()
        .code(2)
        .stderr_eq(snapbox::str![[r#"
portcullis: error: cannot read policy -: larger than 4 MiB: this is not the file you meant

"#]]);
    let fifo = tmp.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    portcullis()
        .args(["render", "--config"])
        .arg(&fifo)
        .assert()
        .code(2)
        .stderr_eq(snapbox::str![[r#"
portcullis: error: cannot read policy [..]/fifo: not a regular file (a FIFO): name a regular file

"#]]);
    Ok(())
}

/// The three silent mistakes of issue 11 each give a warning naming the key,
/// `check` still passes, and `check --strict` fails on them (exit 1). The fake
/// restore binaries make the test exact; PATH without `unshare` makes a ruleset
/// untested, which `--strict` fails too.
fn check_warns_and_strict_fails() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    fake_restore(tmp.path(), false)?;
    let policies = [
        ("empty", ""),
        (
            "ssh-anywhere",
            "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n[outbound]\ndns = true\n\
             [[inbound.allow]]\nproto = \"tcp\"\nport = \"20:25\"\n",
        ),
        (
            "dns-off",
            "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n[outbound]\nhttps = true\n",
        ),
        (
            "sound",
            "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n[outbound]\ndns = true\nhttps = true\n",
        ),
    ];
    for (name, text) in policies {
        std::fs::write(tmp.path().join(format!("{name}.toml")), text)?;
    }
    let check = |name: &str, strict: bool| {
        let mut c = portcullis()
            .current_dir(tmp.path())
            .env("PATH", path_with(tmp.path()))
            .args(["check", "--config", &format!("{name}.toml")]);
        if strict {
            c = c.arg("--strict");
        }
        c.assert()
    };
    check("empty", false).success().stdout_eq(str![[r#"
policy empty.toml: valid
warning: ssh.allow_from: is empty: nobody can open an ssh session, so nobody can reach this host to fix it
  fix: list your admin subnet, e.g. allow_from = ["192.0.2.0/24"] (`portcullis init` writes your current ssh client)
warning: outbound: every section is off: nothing in or out but ssh (no dns, no updates, no ping), because a missing section means off
  fix: turn on what the host needs, e.g. [outbound] dns = true, https = true; or write [outbound] with every switch false if you mean it
ipv4: 7 rules rendered; accepted by `unshare -n [..]/iptables-restore -w --test` (iptables-restore v0.0 (fake))
ipv6: 35 rules rendered; accepted by `unshare -n [..]/ip6tables-restore -w --test` (ip6tables-restore v0.0 (fake))
check passed with 2 warnings

"#]]);
    check("empty", true).code(1).stdout_eq(str![[r#"
...
check failed (--strict): 2 warning(s)

"#]]);
    check("ssh-anywhere", true).code(1).stdout_eq(str![[r#"
policy ssh-anywhere.toml: valid
warning: inbound.allow[0]: opens tcp 22, the ssh port, to anywhere, wider than ssh.allow_from: it undoes the ssh restriction (apply and install refuse it)
  fix: put those sources in ssh.allow_from and remove the entry, or add override_ssh = true to it if you mean it
...
check failed (--strict): 1 warning(s)

"#]]);
    check("dns-off", true).code(1).stdout_eq(str![[r#"
policy dns-off.toml: valid
warning: outbound.dns: is off while outbound.https is on: names will not resolve, so web requests by name fail
  fix: set outbound.dns = true, or allow your resolver with an [[outbound.allow]] on port 53
...
check failed (--strict): 1 warning(s)

"#]]);
    check("sound", true).success().stdout_eq(str![[r#"
...
check passed

"#]]);
    // Untested is a failure under --strict only.
    let untested = |strict: bool| {
        let mut c = portcullis()
            .current_dir(tmp.path())
            .env("PATH", tmp.path())
            .args(["check", "--config", "sound.toml"]);
        if strict {
            c = c.arg("--strict");
        }
        c.assert()
    };
    untested(false).success().stdout_eq(str![[r#"
...
check passed in part: the policy is valid and renders; see above for what was not tested (--strict fails on that)

"#]]);
    untested(true).code(1).stdout_eq(str![[r#"
policy sound.toml: valid
ipv4: 12 rules rendered; not tested: unshare not found on PATH (install util-linux): the test runs in a private network namespace
ipv6: 38 rules rendered; not tested: unshare not found on PATH (install util-linux): the test runs in a private network namespace
check failed (--strict): a ruleset was not tested

"#]]);
    // install refuses the ssh-widening entry (exit 2) before it writes anything.
    let root = tempfile::tempdir()?;
    portcullis()
        .current_dir(tmp.path())
        .args(["install", "--config", "ssh-anywhere.toml", "--persistence", "netfilter-persistent", "--root"])
        .arg(root.path())
        .assert()
        .code(2)
        .stdout_eq(str![""])
        .stderr_eq(str![[r#"
portcullis: warning: inbound.allow[0]: opens tcp 22, the ssh port, to anywhere, wider than ssh.allow_from: it undoes the ssh restriction (apply and install refuse it)
  fix: put those sources in ssh.allow_from and remove the entry, or add override_ssh = true to it if you mean it
portcullis: error: install refuses this policy: inbound.allow[0] opens the ssh port wider than ssh.allow_from (see the warning above; add override_ssh = true to the entry if you mean it)

"#]]);
    if std::fs::read_dir(root.path())?.next().is_some() {
        return Err("a refused install wrote into its root".into());
    }
    Ok(())
}

/// `check --json` on an invalid policy: every error as JSON on stdout, exit 2.
fn check_json_lists_every_error() -> Result<(), Failed> {
    let out = portcullis()
        .args(["check", "--json", "--config", "tests/bad/many-errors.toml"])
        .output()?;
    if out.status.code() != Some(2) {
        return Err(format!("exit {:?}, expected 2", out.status.code()).into());
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    let expected = read(&installer_dir().join("tests/bad/many-errors.err"))?;
    let got: Vec<String> = v["errors"]
        .as_array()
        .ok_or("no errors array")?
        .iter()
        .map(|e| {
            format!(
                "many-errors.toml:{}: {}: {}",
                e["line"],
                e["key"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect();
    // Without --json the same errors go to stderr, one line each, exit 2.
    let plain = portcullis()
        .args(["render", "--config", "tests/bad/many-errors.toml"])
        .output()?;
    let stderr = String::from_utf8_lossy(&plain.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    if plain.status.code() != Some(2)
        || lines.len() != expected.lines().count()
        || !lines
            .iter()
            .all(|l| l.starts_with("portcullis: error: tests/bad/many-errors.toml:"))
    {
        return Err(format!("render of many errors: {:?}\n{stderr}", plain.status.code()).into());
    }
    if got.join("\n") != expected.trim_end() || v["valid"] != false || v["schema_version"] != 1 {
        return Err(format!("errors as JSON:\n{}\nexpected:\n{expected}", got.join("\n")).into());
    }
    // An unreadable file is one error, in the same shape.
    portcullis()
        .args(["check", "--json", "--config", "tests/bad/does-not-exist.toml"])
        .assert()
        .code(2)
        .stdout_eq(str![[r#"
{
  "schema_version": 1,
  "policy": "tests/bad/does-not-exist.toml",
  "valid": false,
  "errors": [
    {
      "origin": "tests/bad/does-not-exist.toml",
      "line": null,
      "key": null,
      "message": "cannot read policy tests/bad/does-not-exist.toml: No such file or directory (os error 2)"
    }
  ],
  "warnings": [],
  "families": [],
  "strict": false,
  "ok": false
}

"#]]);
    Ok(())
}

/// Every key of every object in `v`, as dotted paths with `[]` for array
/// elements (`families[].test.status`), the way docs/json.md names them.
pub fn json_paths(
    v: &serde_json::Value,
    prefix: &str,
    out: &mut std::collections::BTreeSet<String>,
) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                out.insert(p.clone());
                json_paths(v, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                json_paths(v, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

/// The paths of `json` that the section of docs/json.md headed `## \`heading\``
/// does not name as `` `path` ``.
pub fn undocumented(heading: &str, json: &[u8], strip: &[&str]) -> Result<Vec<String>, Failed> {
    let doc = read(&installer_dir().join("../docs/json.md"))?;
    let start = doc
        .find(&format!("## `{heading}`"))
        .ok_or_else(|| format!("docs/json.md has no section `{heading}`"))?;
    let section = &doc[start + 3..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| {
        format!(
            "{heading}: not JSON ({e}): {}",
            String::from_utf8_lossy(json)
        )
    })?;
    if v["schema_version"] != 1 {
        return Err(format!("{heading}: no schema_version 1").into());
    }
    let mut paths = std::collections::BTreeSet::new();
    json_paths(&v, "", &mut paths);
    Ok(paths
        .into_iter()
        .map(|p| {
            strip
                .iter()
                .find_map(|s| p.strip_prefix(s).map(str::to_owned))
                .unwrap_or(p)
        })
        .filter(|p| !section.contains(&format!("`{p}`")))
        .collect())
}

/// The JSON of check (valid, invalid, warned, refused by the fake), detect,
/// install (check and write) and status (with a record) carries schema_version,
/// and docs/json.md names every field it prints.
fn json_outputs_are_documented() -> Result<(), Failed> {
    let tmp = tempfile::tempdir()?;
    let fakes = tmp.path().join("pass");
    let failing = tmp.path().join("fail");
    std::fs::create_dir(&fakes)?;
    std::fs::create_dir(&failing)?;
    fake_restore(&fakes, false)?;
    fake_restore(&failing, true)?;
    std::fs::write(tmp.path().join("empty.toml"), "")?;
    let run = |path: &Path, args: &[&str]| -> Result<Vec<u8>, Failed> {
        let out = portcullis()
            .env("PATH", path_with(path))
            .args(args)
            .output()?;
        Ok(out.stdout)
    };
    let mut missing = Vec::new();
    let empty = tmp.path().join("empty.toml").display().to_string();
    for (path, args) in [
        (&fakes, vec!["check", "--json", "--config", &empty]),
        (&failing, vec!["check", "--json"]),
        (
            &fakes,
            vec![
                "check",
                "--json",
                "--strict",
                "--config",
                "tests/bad/many-errors.toml",
            ],
        ),
        (
            &fakes,
            vec![
                "check",
                "--json",
                "--config",
                "tests/bad/does-not-exist.toml",
            ],
        ),
        (
            &fakes,
            vec![
                "check",
                "--json",
                "--config",
                "../examples/ipv6-untouched.toml",
            ],
        ),
    ] {
        missing.extend(undocumented("check --json", &run(path, &args)?, &[])?);
    }
    // A Debian root without iptables-persistent: rc.local, and its warning.
    let bare = tmp.path().join("bare");
    std::fs::create_dir_all(bare.join("etc"))?;
    std::fs::write(
        bare.join("etc/os-release"),
        "ID=debian\nPRETTY_NAME=\"Debian\"\n",
    )?;
    // The loader's unit, so `install --enable` can enable it offline.
    let units = bare.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units)?;
    std::fs::copy(
        "tests/roots/debian/usr/lib/systemd/system/netfilter-persistent.service",
        units.join("netfilter-persistent.service"),
    )?;
    for root in [
        "tests/roots/ubuntu",
        "tests/roots/debian-alias",
        bare.to_str().unwrap(),
    ] {
        let json = run(&fakes, &["detect", "--json", "--root", root])?;
        missing.extend(undocumented("detect --json", &json, &[])?);
    }
    missing.extend(undocumented(
        "detect --json",
        &run(&fakes, &["detect", "--json"])?,
        &[],
    )?);
    let policy = example("web-server").display().to_string();
    let bare = bare.display().to_string();
    for extra in [&["--check"][..], &[][..], &[][..]] {
        // The second write finds the files unchanged... the first writes them.
        let mut args = vec![
            "install",
            "--json",
            "--no-test",
            "--persistence",
            "netfilter-persistent",
            "--enable",
        ];
        args.extend(["--config", &policy, "--root", &bare]);
        args.extend(extra);
        missing.extend(undocumented("install --json", &run(&fakes, &args)?, &[])?);
    }
    let state = tmp.path().join("state");
    let json = run(
        &fakes,
        &["status", "--json", "--state-dir", state.to_str().unwrap()],
    )?;
    missing.extend(undocumented("status --json", &json, &[])?);
    // A record as `pending` and `last` carry it.
    // Read from JSON rather than built field by field, so a field added to the
    // record later is a clear failure here, not a compile error.
    let record: portcullis::apply::Record = serde_json::from_value(serde_json::json!({
        "id": "1",
        "status": "rolled_back",
        "started_unix_ms": 1,
        "deadline_unix_ms": 2,
        "timeout_secs": 1,
        "backend": "nft",
        "families": ["ipv4"],
        "config": "p.toml",
        "ssh_connection": "192.0.2.1 1 192.0.2.2 22",
        "session_id": 1,
        "guard_pid": 1,
        "persist": true,
        "persist_root": "/",
        "ended_unix_ms": 3,
        "reason": "deadline",
        "persisted": "netfilter-persistent",
    }))
    .map_err(|e| {
        format!("a record no longer reads from this JSON ({e}): update the test and docs/json.md")
    })?;
    if record.status.to_string() != "rolled_back" {
        return Err("the status word differs between text and JSON".into());
    }
    let json = serde_json::to_vec(&serde_json::json!({ "schema_version": 1, "last": record }))?;
    missing.extend(undocumented("status --json", &json, &["last."])?);
    missing.sort();
    missing.dedup();
    if !missing.is_empty() {
        return Err(format!("docs/json.md does not name {missing:?}").into());
    }
    Ok(())
}

/// A policy with sets: `check` loads them with `ipset restore` in its namespace
/// before `--test` (without them the rules that match a set are refused), and
/// `render --out-dir` writes them to `ipsets`, the golden text. A blocklist file
/// with a bad line is refused with that file and line, exit 2.
fn sets_are_checked_written_and_blocklist_lines_judged() -> Result<(), Failed> {
    check_example("blocklist").success()
        .stdout_eq(str![[r#"
policy [..]/examples/blocklist.toml: valid
ipv4: 15 rules rendered; accepted by `unshare -n sh -c 'ipset restore -f SETS && [..]/iptables-restore -w --test'` (iptables-restore v[..])
ipv6: 41 rules rendered; accepted by `unshare -n sh -c 'ipset restore -f SETS && [..]/ip6tables-restore -w --test'` (ip6tables-restore v[..])
check passed

"#]]);
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("rules");
    portcullis()
        .args(["render", "--config"])
        .arg(example("blocklist"))
        .arg("--out-dir")
        .arg(&dir)
        .assert()
        .success()
        .stderr_eq(str![[r#"
portcullis: wrote [..]/rules/ipsets
portcullis: wrote [..]/rules/rules.v4
portcullis: wrote [..]/rules/rules.v6

"#]]);
    let golden = installer_dir().join("tests/golden/blocklist.ipset");
    if read(&dir.join("ipsets"))? != read(&golden)? {
        return Err("ipsets differs from the golden file".into());
    }
    // A FireHOL-style file, relative to the policy, with one bad line.
    std::fs::write(
        tmp.path().join("drop.netset"),
        "# firehol_level1\n203.0.113.0/24\n198.51.100.300\n",
    )?;
    let policy = tmp.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n[[blocklist]]\nfile = \"drop.netset\"\n",
    )?;
    portcullis()
        .args(["check", "--config"])
        .arg(&policy)
        .assert()
        .code(2)
        .stderr_eq(str![[r#"
portcullis: error: [..]/drop.netset:3: blocklist[0].file: expected an IPv4 or IPv6 address or CIDR such as 192.0.2.0/24 or 2001:db8::/32, found "198.51.100.300"

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
            "cli::check_json_lists_every_error",
            check_json_lists_every_error,
        ),
        privileged(
            "cli::json_outputs_are_documented",
            None,
            json_outputs_are_documented,
        ),
        trial("cli::config_from_stdin", config_from_stdin),
        privileged(
            "cli::check_warns_and_strict_fails",
            None,
            check_warns_and_strict_fails,
        ),
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
            "cli::sets_are_checked_written_and_blocklist_lines_judged",
            ["iptables-restore", "ip6tables-restore", "ipset"]
                .into_iter()
                .find(|b| portcullis_harness::backend::find_in_path(b).is_none())
                .map(|b| format!("{b} not found (install iptables and ipset)")),
            sets_are_checked_written_and_blocklist_lines_judged,
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
