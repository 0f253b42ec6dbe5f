//! Fixture roots: detection, install, and each loader's restore command.

use std::ffi::OsStr;
use std::path::Path;

use libtest_mimic::{Failed, Trial};
use portcullis_harness::{Backend, Family};

use super::*;
use crate::support::trial;
use portcullis_harness::trial::privileged;

/// How a loader hands the file to `*-restore`.
#[derive(Clone, Copy)]
enum Feed {
    /// `iptables-restore < FILE` (netfilter-persistent's plugin, Alpine's OpenRC).
    Stdin,
    /// `iptables-restore FILE` (iptables.init, Arch's and Gentoo's units, our rc.local block).
    Arg,
}

struct Fixture {
    name: &'static str,
    mechanism: &'static str,
    v4: &'static str,
    v6: &'static str,
    mode: u32,
    feed: Feed,
    /// The rc.local script, for the fallback.
    script: Option<&'static str>,
    conflicts: &'static [&'static str],
}

const FIXTURES: &[Fixture] = &[
    Fixture {
        name: "debian",
        mechanism: "netfilter-persistent",
        v4: "/etc/iptables/rules.v4",
        v6: "/etc/iptables/rules.v6",
        mode: 0o640,
        feed: Feed::Stdin,
        script: None,
        conflicts: &[],
    },
    Fixture {
        name: "debian-alias",
        mechanism: "netfilter-persistent",
        v4: "/etc/iptables/rules.v4",
        v6: "/etc/iptables/rules.v6",
        mode: 0o640,
        feed: Feed::Stdin,
        script: None,
        conflicts: &[],
    },
    Fixture {
        name: "ubuntu",
        mechanism: "netfilter-persistent",
        v4: "/etc/iptables/rules.v4",
        v6: "/etc/iptables/rules.v6",
        mode: 0o640,
        feed: Feed::Stdin,
        script: None,
        conflicts: &["ufw"],
    },
    Fixture {
        name: "rocky",
        mechanism: "iptables-services",
        v4: "/etc/sysconfig/iptables",
        v6: "/etc/sysconfig/ip6tables",
        mode: 0o600,
        feed: Feed::Arg,
        script: None,
        conflicts: &[],
    },
    Fixture {
        name: "fedora",
        mechanism: "iptables-services",
        v4: "/etc/sysconfig/iptables",
        v6: "/etc/sysconfig/ip6tables",
        mode: 0o600,
        feed: Feed::Arg,
        script: None,
        conflicts: &["firewalld"],
    },
    Fixture {
        name: "arch",
        mechanism: "arch",
        v4: "/etc/iptables/iptables.rules",
        v6: "/etc/iptables/ip6tables.rules",
        mode: 0o600,
        feed: Feed::Arg,
        script: None,
        conflicts: &[],
    },
    Fixture {
        name: "alpine",
        mechanism: "alpine",
        v4: "/etc/iptables/rules-save",
        v6: "/etc/ip6tables/rules-save",
        mode: 0o600,
        feed: Feed::Stdin,
        script: None,
        conflicts: &[],
    },
    Fixture {
        name: "gentoo",
        mechanism: "gentoo",
        v4: "/var/lib/iptables/rules-save",
        v6: "/var/lib/ip6tables/rules-save",
        mode: 0o600,
        feed: Feed::Arg,
        script: None,
        conflicts: &[],
    },
    Fixture {
        name: "unknown",
        mechanism: "rc-local",
        v4: "/etc/iptables/rules.v4",
        v6: "/etc/iptables/rules.v6",
        mode: 0o600,
        feed: Feed::Arg,
        script: Some("/etc/rc.local"),
        conflicts: &[],
    },
    Fixture {
        name: "rhel-rclocal",
        mechanism: "rc-local",
        v4: "/etc/iptables/rules.v4",
        v6: "/etc/iptables/rules.v6",
        mode: 0o600,
        feed: Feed::Arg,
        script: Some("/etc/rc.d/rc.local"),
        conflicts: &[],
    },
];

fn in_root(root: &Path, p: &str) -> std::path::PathBuf {
    root.join(p.trim_start_matches('/'))
}

fn detect_json(root: &Path) -> Result<serde_json::Value, String> {
    let out = portcullis(&[
        "detect".as_ref(),
        "--root".as_ref(),
        root.as_os_str(),
        "--json".as_ref(),
    ]);
    if !out.status.success() {
        return Err(format!(
            "detect --root {} failed: {}",
            root.display(),
            text(&out.stderr)
        ));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("detect --json is not JSON: {e}"))
}

/// Restore both files the way the loader does, in a fresh namespace, and return
/// `iptables-save` then `ip6tables-save` of that namespace.
fn load_like_the_loader(
    backend: Backend,
    feed: Feed,
    f4: &Path,
    f6: &Path,
) -> Result<(String, String), String> {
    const SCRIPT: &str = r#"
        b4=$1 b6=$2 f4=$3 f6=$4
        if [ "$5" = stdin ]; then
            "$b4-restore" -w < "$f4"
            "$b6-restore" -w < "$f6"
        else
            "$b4-restore" -w 10 "$f4"
            "$b6-restore" -w 10 "$f6"
        fi
        "$b4-save"
        echo '#-- ipv6 --'
        "$b6-save"
    "#;
    let b4 = backend.binary(Family::V4);
    let b6 = backend.binary(Family::V6);
    let feed = match feed {
        Feed::Stdin => "stdin",
        Feed::Arg => "arg",
    };
    let out = in_netns(
        SCRIPT,
        &[
            b4.as_ref(),
            b6.as_ref(),
            f4.as_os_str(),
            f6.as_os_str(),
            feed.as_ref(),
        ],
    )?;
    let (v4, v6) = out
        .split_once("#-- ipv6 --")
        .ok_or("no separator in the saved output")?;
    Ok((v4.to_owned(), v6.to_owned()))
}

fn install_fixture(fx: &'static Fixture, backend: Backend) -> Result<(), Failed> {
    let (dir, root) = scratch_copy(fx.name)?;
    let policy = policy_file(dir.path(), POLICY);
    let out = install_ok(&policy, &root, &["--backend", backend.name()])?;
    for p in [fx.v4, fx.v6] {
        if !out
            .lines()
            .any(|l| l.starts_with("written") && l.contains(p))
        {
            return Err(format!("install did not report writing {p}:\n{out}").into());
        }
        let host = in_root(&root, p);
        let mode = mode_of(&host);
        if mode != fx.mode {
            return Err(format!("{p} has mode {mode:04o}, expected {:04o}", fx.mode).into());
        }
        if mode & 0o004 != 0 {
            return Err(format!("{p} is world-readable").into());
        }
    }
    if let Some(script) = fx.script {
        let host = in_root(&root, script);
        let body = std::fs::read_to_string(&host)?;
        if !body.starts_with("#!") {
            return Err(format!("{script} has no shebang:\n{body}").into());
        }
        if body.matches(portcullis::persist::BLOCK_BEGIN).count() != 1 {
            return Err(format!("{script} does not have exactly one block:\n{body}").into());
        }
        if mode_of(&host) & 0o111 == 0 {
            return Err(format!("{script} is not executable").into());
        }
    }

    let (v4, v6) = load_like_the_loader(
        backend,
        fx.feed,
        &in_root(&root, fx.v4),
        &in_root(&root, fx.v6),
    )?;
    assert_default_deny(&v4, SSH_V4, &format!("{} ipv4", fx.name))?;
    assert_default_deny(&v6, SSH_V6, &format!("{} ipv6", fx.name))?;

    // Idempotent: the same policy again rewrites nothing.
    let again = install_ok(&policy, &root, &["--backend", backend.name()])?;
    if again.lines().any(|l| !l.starts_with("unchanged")) {
        return Err(format!("second install changed something:\n{again}").into());
    }
    let temps = leftover_temps(&root);
    if !temps.is_empty() {
        return Err(format!("temp files left behind: {temps:?}").into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    for fx in FIXTURES {
        t.push(trial(format!("persist::detect::{}", fx.name), move || {
            let v = detect_json(&roots_dir().join(fx.name))?;
            if v["mechanism"] != fx.mechanism {
                return Err(format!(
                    "{}: detected {} ({}), expected {}",
                    fx.name, v["mechanism"], v["reason"], fx.mechanism
                )
                .into());
            }
            let got: Vec<&str> = v["conflicts"]
                .as_array()
                .ok_or("no conflicts array")?
                .iter()
                .filter_map(|c| c["manager"].as_str())
                .collect();
            if got != fx.conflicts {
                return Err(format!(
                    "{}: conflicts {got:?}, expected {:?}",
                    fx.name, fx.conflicts
                )
                .into());
            }
            Ok(())
        }));
        for backend in Backend::ALL {
            t.push(privileged(
                format!("persist::install::{}::{backend}", fx.name),
                backend_missing(backend),
                move || install_fixture(fx, backend),
            ));
        }
    }

    t.push(trial(
        "persist::detect::alias_is_not_iptables_services",
        || {
            let v = detect_json(&roots_dir().join("debian-alias"))?;
            let notes = v["notes"].to_string();
            if v["mechanism"] != "netfilter-persistent" || !notes.contains("alias") {
                return Err(format!("the iptables.service alias was not recognised: {v}").into());
            }
            Ok(())
        },
    ));

    t.push(trial("persist::install::alpine_honours_conf_d", || {
        let (dir, root) = scratch_copy("alpine")?;
        std::fs::write(
            root.join("etc/conf.d/iptables"),
            "IPTABLES_SAVE=\"/etc/iptables/custom-save\"\n",
        )?;
        let policy = policy_file(dir.path(), POLICY);
        let out = install_ok(&policy, &root, &["--no-test"])?;
        if !root.join("etc/iptables/custom-save").exists()
            || root.join("etc/iptables/rules-save").exists()
            || !root.join("etc/ip6tables/rules-save").exists()
        {
            return Err(format!(
                "IPTABLES_SAVE from /etc/conf.d/iptables was not honoured:\n{out}"
            )
            .into());
        }
        Ok(())
    }));

    t.push(trial("persist::bad::missing_os_release", || {
        let dir = scratch();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty)?;
        let v = detect_json(&empty)?;
        if v["mechanism"] != "rc-local" || v["os"] != serde_json::Value::Null {
            return Err(format!("an empty root should fall back to rc-local: {v}").into());
        }
        // The loader alone still decides when os-release is gone.
        let root = copy_fixture("debian", dir.path())?;
        std::fs::remove_file(root.join("etc/os-release"))?;
        let v = detect_json(&root)?;
        if v["mechanism"] != "netfilter-persistent"
            || !v["notes"].to_string().contains("os-release")
        {
            return Err(format!(
                "without os-release, netfilter-persistent should still win, with a note: {v}"
            )
            .into());
        }
        Ok(())
    }));

    t.push(trial("persist::bad::unreadable_os_release", || {
        let (_dir, root) = scratch_copy("rocky")?;
        std::fs::remove_file(root.join("etc/os-release"))?;
        std::fs::create_dir(root.join("etc/os-release"))?;
        let out = portcullis(&["detect".as_ref(), "--root".as_ref(), root.as_os_str()]);
        expect_exit(&out, 1, &["/etc/os-release"], "naming /etc/os-release")?;
        Ok(())
    }));

    t.push(trial("persist::bad::policy_without_allow_from", || {
        let (dir, root) = scratch_copy("rocky")?;
        let policy = policy_file(dir.path(), "[ssh]\nport = 22\n");
        let out = install(&policy, &root, &[]);
        expect_exit(&out, 2, &["ssh.allow_from"], "naming ssh.allow_from")?;
        if root.join("etc/sysconfig/iptables").exists() {
            return Err("a refused policy was written".into());
        }
        Ok(())
    }));

    t.push(trial("persist::bad::install_without_root_flag", || {
        let out = portcullis(&["install".as_ref()]);
        expect_exit(&out, 2, &["--root"], "asking for --root")?;
        Ok(())
    }));

    t.push(trial("persist::bad::unbalanced_rc_local_markers", || {
        let (dir, root) = scratch_copy("unknown")?;
        let rc = root.join("etc/rc.local");
        let body = "#!/bin/sh\n# BEGIN portcullis\nexit 0\n";
        std::fs::write(&rc, body)?;
        let policy = policy_file(dir.path(), POLICY);
        let out = install(&policy, &root, &["--no-test"]);
        expect_exit(&out, 1, &["markers"], "about the markers")?;
        if std::fs::read_to_string(&rc)? != body || root.join("etc/iptables").exists() {
            return Err("a refused rc.local edit changed the root".into());
        }
        Ok(())
    }));

    t.push(privileged(
        "persist::bad::rules_path_is_a_symlink",
        None,
        || {
            let (dir, root) = scratch_copy("debian")?;
            let outside = dir.path().join("outside");
            std::fs::create_dir_all(root.join("etc/iptables"))?;
            std::os::unix::fs::symlink(&outside, root.join("etc/iptables/rules.v4"))?;
            let policy = policy_file(dir.path(), POLICY);
            let out = install(&policy, &root, &[]);
            expect_exit(
                &out,
                1,
                &["symlink", "/etc/iptables/rules.v4"],
                "refusing the symlink",
            )?;
            if outside.exists() || root.join("etc/iptables/rules.v6").exists() {
                return Err("something was written despite the symlink".into());
            }
            // A symlinked directory that leads out of the root is refused the same way.
            let root2 = dir.path().join("root2");
            std::fs::rename(&root, &root2)?;
            let root = copy_fixture("rocky", dir.path())?;
            let out_dir = dir.path().join("outside-dir");
            std::fs::create_dir(&out_dir)?;
            std::fs::remove_dir_all(root.join("etc/sysconfig"))?;
            std::os::unix::fs::symlink(&out_dir, root.join("etc/sysconfig"))?;
            let out = install(&policy, &root, &[]);
            expect_exit(&out, 1, &["symlink"], "refusing a symlinked /etc/sysconfig")?;
            if std::fs::read_dir(&out_dir)?.count() != 0 {
                return Err("a symlinked /etc/sysconfig was followed".into());
            }
            Ok(())
        },
    ));

    t.push(privileged("persist::bad::read_only_root", None, || {
        let (dir, root) = scratch_copy("gentoo")?;
        let policy = policy_file(dir.path(), POLICY);
        // A read-only bind mount of the root, in a private mount namespace that dies
        // with the command.
        const SCRIPT: &str = r#"mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; exec "$2" install --config "$3" --root "$1" --enable"#;
        let out = std::process::Command::new("unshare")
            .args(["-m", "--propagation", "private", "--", "sh", "-ec", SCRIPT, "sh"])
            .arg(&root)
            .arg(env!("CARGO_BIN_EXE_portcullis"))
            .arg(&policy)
            .output()?;
        expect_exit(&out, 1, &["Read-only file system"], "saying read-only")?;
        if root.join("var").exists() || !leftover_temps(&root).is_empty() {
            return Err("something was written into the read-only root".into());
        }
        Ok(())
    }));

    t.push(privileged("persist::install::check_diff_and_backup", None, || {
        let (dir, root) = scratch_copy("rocky")?;
        let a = policy_file(dir.path(), POLICY);
        install_ok(&a, &root, &[])?;
        let v4 = root.join("etc/sysconfig/iptables");
        let first = std::fs::read_to_string(&v4)?;
        let b = dir.path().join("b.toml");
        std::fs::write(&b, format!("{POLICY}\n[[inbound.allow]]\nproto = \"tcp\"\nport = 8443\ncomment = \"webui\"\n"))?;
        let check = install_ok(&b, &root, &["--check"])?;
        if !check.contains("would change /etc/sysconfig/iptables") || !check.lines().any(|l| l.starts_with('+') && l.contains("--dport 8443")) {
            return Err(format!("--check did not print the diff:\n{check}").into());
        }
        if std::fs::read_to_string(&v4)? != first || root.join("etc/sysconfig/iptables.portcullis.bak").exists() {
            return Err("--check wrote something".into());
        }
        let out = install_ok(&b, &root, &[])?;
        if !out.contains("previous kept as /etc/sysconfig/iptables.portcullis.bak") {
            return Err(format!("no backup reported:\n{out}").into());
        }
        let bak = root.join("etc/sysconfig/iptables.portcullis.bak");
        if std::fs::read_to_string(&bak)? != first || mode_of(&bak) != 0o600 {
            return Err("the backup does not hold the previous file with mode 0600".into());
        }
        if !std::fs::read_to_string(&v4)?.contains("--dport 8443") {
            return Err("the new rules were not written".into());
        }
        Ok(())
    }));

    t.push(privileged(
        "persist::install::ipv6_untouched_writes_v4_only",
        None,
        || {
            let (dir, root) = scratch_copy("gentoo")?;
            let policy = policy_file(
                dir.path(),
                &POLICY.replace("mode = \"mirror\"", "mode = \"untouched\""),
            );
            install_ok(&policy, &root, &[])?;
            if !root.join("var/lib/iptables/rules-save").exists()
                || root.join("var/lib/ip6tables").exists()
            {
                return Err("ipv6 untouched must write the IPv4 file only".into());
            }
            Ok(())
        },
    ));

    t.push(privileged(
        "persist::install::refused_by_restore_test_writes_nothing",
        None,
        || {
            // A stand-in iptables-nft-restore that refuses every ruleset, first on PATH:
            // install must stop before replacing anything, and say which command refused.
            use std::os::unix::fs::PermissionsExt as _;
            let (dir, root) = scratch_copy("arch")?;
            let a = policy_file(dir.path(), POLICY);
            install_ok(&a, &root, &["--backend", "nft"])?;
            let v4 = root.join("etc/iptables/iptables.rules");
            let before = std::fs::read_to_string(&v4)?;
            let bin = dir.path().join("bin");
            std::fs::create_dir(&bin)?;
            for name in ["iptables-nft-restore", "ip6tables-nft-restore"] {
                let p = bin.join(name);
                std::fs::write(&p, "#!/bin/sh\necho \"line 2 failed\" >&2\nexit 1\n")?;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
            }
            let b = dir.path().join("b.toml");
            std::fs::write(&b, POLICY.replace("icmp = true", "icmp = false"))?;
            let path = format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            );
            let run = |extra: &[&str]| {
                let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"));
                c.env("PATH", &path).args([
                    OsStr::new("install"),
                    OsStr::new("--backend"),
                    OsStr::new("nft"),
                    OsStr::new("--config"),
                    b.as_os_str(),
                    OsStr::new("--root"),
                    root.as_os_str(),
                ]);
                c.args(extra);
                c.output()
            };
            let out = run(&[])?;
            expect_exit(&out, 1, &["--test", "line 2 failed"], "naming the test")?;
            if std::fs::read_to_string(&v4)? != before
                || root
                    .join("etc/iptables/iptables.rules.portcullis.bak")
                    .exists()
                || !leftover_temps(&root).is_empty()
            {
                return Err("a ruleset that failed its test replaced the old file".into());
            }
            let out = run(&["--no-test"])?;
            if !out.status.success() || !text(&out.stderr).contains("NOT tested") {
                return Err(
                    format!("--no-test should install and warn: {}", text(&out.stderr)).into(),
                );
            }
            Ok(())
        },
    ));
    t
}
