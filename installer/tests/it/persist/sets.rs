//! ipsets at boot, on every fixture root: `install` of a blocklist policy writes
//! the sets where the mechanism's ipset loader reads them (path, mode, content),
//! lists them before the rules, enables the ipset loader with `--enable`, and the
//! loader's own way of restoring them, then the rules, in a fresh network
//! namespace, loads the blocklist rule. A root without the ipset loader, or with
//! one not ordered before the rules, is refused (exit 2) with the package to
//! install, and nothing is written.

use std::path::Path;

use libtest_mimic::{Failed, Trial};
use portcullis_harness::Backend;

use super::*;
use crate::support::ensure;
use portcullis_harness::trial::privileged;

/// How the fixture's ipset loader restores the sets.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// `ipset restore` of one file (every mechanism but Alpine).
    Restore,
    /// Alpine's init script: per file, `create NAME <first line>`, then
    /// `add NAME <line>` for each further line (`#` lines skipped).
    AlpineDir,
}

struct SetsFixture {
    fixture: &'static str,
    /// The sets files, in the root.
    sets: &'static [&'static str],
    mode: u32,
    /// The IPv4 rules file.
    v4: &'static str,
    load: Load,
    /// The ipset loader's enable link `--enable` must create, if any.
    enabled: Option<&'static str>,
}

const SETS: &[SetsFixture] = &[
    SetsFixture {
        fixture: "debian",
        sets: &["/etc/iptables/ipsets"],
        mode: 0o640,
        v4: "/etc/iptables/rules.v4",
        load: Load::Restore,
        enabled: None,
    },
    SetsFixture {
        fixture: "rocky",
        sets: &["/etc/sysconfig/ipset"],
        mode: 0o600,
        v4: "/etc/sysconfig/iptables",
        load: Load::Restore,
        enabled: Some("/etc/systemd/system/basic.target.wants/ipset.service"),
    },
    SetsFixture {
        fixture: "arch",
        sets: &["/etc/ipset.conf"],
        mode: 0o600,
        v4: "/etc/iptables/iptables.rules",
        load: Load::Restore,
        enabled: Some("/etc/systemd/system/multi-user.target.wants/ipset.service"),
    },
    SetsFixture {
        fixture: "gentoo",
        sets: &["/var/lib/ipset/rules-save"],
        mode: 0o600,
        v4: "/var/lib/iptables/rules-save",
        load: Load::Restore,
        enabled: Some("/etc/systemd/system/multi-user.target.wants/ipset.service"),
    },
    SetsFixture {
        fixture: "alpine",
        sets: &["/etc/ipset.d/pc-bl0-4", "/etc/ipset.d/pc-bl0-6"],
        mode: 0o600,
        v4: "/etc/iptables/rules-save",
        load: Load::AlpineDir,
        enabled: Some("/etc/runlevels/default/ipset"),
    },
    SetsFixture {
        fixture: "unknown",
        sets: &["/etc/iptables/ipsets"],
        mode: 0o600,
        v4: "/etc/iptables/rules.v4",
        load: Load::Restore,
        enabled: None,
    },
];

fn write(root: &Path, p: &str, text: &str, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let host = root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(host.parent().unwrap()).map_err(|e| e.to_string())?;
    std::fs::write(&host, text).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(mode))
        .map_err(|e| e.to_string())
}

/// Give the fixture root the ipset package's files (an excerpt): the binary, and
/// its unit or init script, ordered before the rules as the distros ship them.
pub(crate) fn add_ipset(root: &Path, fixture: &str, ordered: bool) -> Result<(), String> {
    write(root, "/usr/sbin/ipset", "#!/bin/sh\nexit 0\n", 0o755)?;
    let before = |units: &str, wanted: &str, exec: &str| {
        format!(
            "[Unit]\nDescription=fixture excerpt of ipset.service\n{}Wants=network-pre.target\n\n\
             [Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart={exec}\n\n[Install]\nWantedBy={wanted}\n",
            if ordered {
                format!("Before=network-pre.target {units}\n")
            } else {
                String::new()
            }
        )
    };
    let unit = match fixture {
        "rocky" => Some(before(
            "iptables.service ip6tables.service firewalld.service",
            "basic.target",
            "/usr/libexec/ipset/ipset.start-stop start",
        )),
        "arch" => Some(before(
            "iptables.service ip6tables.service",
            "multi-user.target",
            "/usr/bin/ipset -f /etc/ipset.conf restore",
        )),
        "gentoo" => Some(before(
            "iptables-restore.service ip6tables-restore.service firewalld.service",
            "multi-user.target",
            "/usr/sbin/ipset -exist -file /var/lib/ipset/rules-save restore",
        )),
        _ => None,
    };
    if let Some(u) = unit {
        write(root, "/usr/lib/systemd/system/ipset.service", &u, 0o644)?;
    }
    if fixture == "alpine" {
        write(
            root,
            "/etc/init.d/ipset",
            "#!/sbin/openrc-run\n# fixture excerpt of Alpine's /etc/init.d/ipset\ndepend() {\n\tbefore iptables ip6tables\n}\n",
            0o755,
        )?;
    }
    Ok(())
}

/// Restore the sets the way the fixture's loader does, then the IPv4 rules as
/// the rules' loader does, in a fresh network namespace: `iptables-save`.
fn load(fx: &SetsFixture, root: &Path, backend: Backend) -> Result<String, String> {
    const SCRIPT: &str = r#"
        b4=$1 rules=$2 kind=$3
        shift 3
        for f in "$@"; do
            if [ "$kind" = restore ]; then
                ipset -exist -file "$f" restore
            else
                name=$(basename "$f")
                { echo "create $name $(grep -v '^#' "$f" | head -n 1)"
                  grep -v '^#' "$f" | sed "1d;s/^/add $name /"; } | ipset restore
            fi
        done
        "$b4-restore" -w 10 "$rules"
        "$b4-save"
    "#;
    let b4 = backend.binary(portcullis_harness::Family::V4);
    let rules = root.join(fx.v4.trim_start_matches('/'));
    let kind = if fx.load == Load::Restore {
        "restore"
    } else {
        "alpine"
    };
    let files: Vec<std::path::PathBuf> = fx
        .sets
        .iter()
        .map(|p| root.join(p.trim_start_matches('/')))
        .collect();
    let mut args: Vec<&std::ffi::OsStr> = vec![b4.as_ref(), rules.as_os_str(), kind.as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    in_netns(SCRIPT, &args)
}

fn install_sets(fx: &'static SetsFixture, backend: Backend) -> Result<(), Failed> {
    let (dir, root) = scratch_copy(fx.fixture)?;
    add_ipset(&root, fx.fixture, true)?;
    let policy = policy_file(dir.path(), BLOCKLIST_POLICY);
    let out = install_ok(&policy, &root, &["--backend", backend.name()])?;
    // The sets are listed (and loaded) before the rules.
    let line = |p: &str| {
        out.lines()
            .position(|l| l.starts_with("written") && l.contains(&format!(" {p} ")))
            .ok_or_else(|| format!("install did not report writing {p}:\n{out}"))
    };
    let rules = line(fx.v4)?;
    for p in fx.sets {
        ensure(line(p)? < rules, || {
            format!("{p} must come before {}:\n{out}", fx.v4)
        })?;
        let host = root.join(p.trim_start_matches('/'));
        ensure(mode_of(&host) == fx.mode, || {
            format!(
                "{p} has mode {:04o}, expected {:04o}",
                mode_of(&host),
                fx.mode
            )
        })?;
    }
    let first = std::fs::read_to_string(root.join(fx.sets[0].trim_start_matches('/')))?;
    let expect = match fx.load {
        Load::Restore => "create pc-bl0-4 hash:net family inet",
        Load::AlpineDir => "\nhash:net family inet hashsize 64 maxelem 65536\n",
    };
    ensure(first.contains(expect), || {
        format!("{} lacks `{expect}`:\n{first}", fx.sets[0])
    })?;
    if let Some(link) = fx.enabled {
        ensure(
            root.join(link.trim_start_matches('/'))
                .symlink_metadata()
                .is_ok(),
            || format!("--enable did not enable the ipset loader ({link}):\n{out}"),
        )?;
    }
    match fx.fixture {
        "debian" => {
            let drop_in = std::fs::read_to_string(root.join(
                "etc/systemd/system/netfilter-persistent.service.d/portcullis-fail-loudly.conf",
            ))?;
            let sets = drop_in
                .find("ExecStartPre=/usr/sbin/ipset -exist -file /etc/iptables/ipsets restore")
                .ok_or_else(|| format!("the drop-in does not load the sets:\n{drop_in}"))?;
            let test = drop_in.find("--test /etc/iptables/rules.v4").unwrap_or(0);
            ensure(sets < test, || {
                format!("the drop-in must load the sets before testing the rules:\n{drop_in}")
            })?;
            let plugin = root.join("usr/share/netfilter-persistent/plugins.d/10-portcullis-ipset");
            ensure(mode_of(&plugin) == 0o755, || {
                "no executable 10-portcullis-ipset plugin without ipset-persistent".into()
            })?;
        }
        "unknown" => {
            let rc = std::fs::read_to_string(root.join("etc/rc.local"))?;
            let sets = rc
                .find("ipset -exist -file /etc/iptables/ipsets restore")
                .ok_or_else(|| format!("the rc.local block does not load the sets:\n{rc}"))?;
            let rules = rc
                .find("iptables-restore -w 10 /etc/iptables/rules.v4")
                .unwrap_or(0);
            ensure(sets < rules, || {
                format!("rc.local must restore the sets before the rules:\n{rc}")
            })?;
        }
        _ => {}
    }
    let save = load(fx, &root, backend)?;
    ensure(
        save.lines()
            .any(|l| l.contains("--match-set pc-bl0-4 src") && l.contains("-j DROP")),
        || format!("{}: the blocklist rule did not load:\n{save}", fx.fixture),
    )?;
    // Idempotent, and --check sees a changed set.
    let again = install_ok(&policy, &root, &["--backend", backend.name()])?;
    ensure(again.lines().all(|l| l.starts_with("unchanged")), || {
        format!("second install changed something:\n{again}")
    })?;
    let b = dir.path().join("b.toml");
    std::fs::write(
        &b,
        BLOCKLIST_POLICY.replace("203.0.113.0/24", "203.0.113.0/25"),
    )?;
    let check = install_ok(&b, &root, &["--check"])?;
    ensure(
        check.contains(&format!("would change {}", fx.sets[0])),
        || format!("--check must show the changed sets file:\n{check}"),
    )
}

pub fn trials() -> Vec<Trial> {
    let mut t = Vec::new();
    for fx in SETS {
        for backend in Backend::ALL {
            t.push(privileged(
                format!("persist::sets::{}::{backend}", fx.fixture),
                backend_missing(backend),
                move || install_sets(fx, backend),
            ));
        }
    }
    t.push(privileged(
        "persist::sets::blocklist_file_copied_into_the_root",
        None,
        blocklist_file_copied,
    ));
    t.push(privileged(
        "persist::sets::json_reports_the_sets_file",
        None,
        || {
            let (dir, root) = scratch_copy("arch")?;
            add_ipset(&root, "arch", true)?;
            let policy = policy_file(dir.path(), BLOCKLIST_POLICY);
            let out = install_ok(&policy, &root, &["--json"])?;
            let j: serde_json::Value = serde_json::from_str(&out)?;
            let files: Vec<&str> = j["files"]
                .as_array()
                .ok_or("no files")?
                .iter()
                .filter_map(|f| f["path"].as_str())
                .collect();
            ensure(files.first() == Some(&"/etc/ipset.conf"), || {
                format!("--json must report the sets file first: {j:#}")
            })?;
            ensure(j["enabled"].to_string().contains("ipset.service"), || {
                format!("--json must report enabling ipset.service: {j:#}")
            })
        },
    ));
    // Refusals: exit 2, the package named, nothing written.
    type Refusal = (
        &'static str,
        &'static str,
        bool,
        bool,
        &'static [&'static str],
    );
    const REFUSALS: &[Refusal] = &[
        (
            "no_ipset_service",
            "arch",
            false,
            true,
            &["ipset.service is not installed", "pacman -S ipset"],
        ),
        (
            "ipset_service_not_ordered",
            "rocky",
            true,
            false,
            &["ipset.service is not ordered before iptables.service"],
        ),
        (
            "no_openrc_ipset",
            "alpine",
            false,
            true,
            &["OpenRC service ipset is not installed", "apk add ipset"],
        ),
        (
            "debian_without_ipset",
            "debian",
            false,
            true,
            &["has no ipset", "apt-get install ipset-persistent"],
        ),
    ];
    for &(name, fixture, with_ipset, ordered, needles) in REFUSALS {
        t.push(privileged(
            format!("persist::sets::refused::{name}"),
            None,
            move || {
                let (dir, root) = scratch_copy(fixture)?;
                if with_ipset {
                    add_ipset(&root, fixture, ordered)?;
                }
                let policy = policy_file(dir.path(), BLOCKLIST_POLICY);
                let tree = || -> Result<_, Failed> {
                    let mut t = std::collections::BTreeMap::new();
                    super::walk(&root, &mut t)?;
                    Ok(t)
                };
                let before = tree()?;
                let out = install(&policy, &root, &[]);
                expect_exit(&out, 2, needles, "naming the ipset loader")?;
                // Nothing at all changed in the root (sets files, rules, the
                // policy copy, links).
                let after = tree()?;
                let changed: Vec<_> = after
                    .iter()
                    .filter(|(p, c)| before.get(*p) != Some(c))
                    .map(|(p, _)| p.strip_prefix(&root).unwrap_or(p).to_path_buf())
                    .collect();
                ensure(changed.is_empty() && before.len() == after.len(), || {
                    format!("a refused install wrote {changed:?}")
                })
            },
        ));
    }
    t
}

/// A `[[blocklist]]` read from a file beside the policy (on the machine that
/// runs install, not in the root): the root's policy copy reads back inside the
/// root alone (its list copied to /etc/portcullis/blocklists/0/NAME, the copy's
/// `file =` pointing there, its trailing comment kept) and renders exactly the
/// installed rules; a second install finds everything unchanged.
fn blocklist_file_copied() -> Result<(), Failed> {
    let (dir, root) = scratch_copy("debian")?;
    add_ipset(&root, "debian", true)?;
    let cfg = dir.path().join("cfg");
    std::fs::create_dir(&cfg)?;
    std::fs::write(
        cfg.join("drop.netset"),
        "; spamhaus-style\n203.0.113.0/25\n203.0.113.0/26\n2001:db8:bad::/48\n",
    )?;
    let text = POLICY.to_owned() + "\n[[blocklist]]\nfile = \"drop.netset\" # nightly\n";
    let policy = policy_file(&cfg, &text);
    install_ok(&policy, &root, &[])?;
    // The original is gone: only the root's files may be read from now on.
    std::fs::remove_dir_all(&cfg)?;
    let copy = root.join("etc/portcullis/policy.toml");
    let copied = std::fs::read_to_string(&copy)?;
    ensure(
        copied.contains("file = \"blocklists/0/drop.netset\" # nightly"),
        || format!("the copy's file = is not relocated (comment kept):\n{copied}"),
    )?;
    let list = root.join("etc/portcullis/blocklists/0/drop.netset");
    ensure(mode_of(&list) == 0o600, || {
        format!("{} has mode {:04o}", list.display(), mode_of(&list))
    })?;
    let reread = portcullis::Policy::load(&copy).map_err(|e| e.to_string())?;
    let rendered = portcullis::render(&reread);
    let installed = std::fs::read_to_string(root.join("etc/iptables/rules.v4"))?;
    let v4 = rendered
        .text(portcullis_harness::Family::V4)
        .unwrap_or_default();
    ensure(installed.contains(&v4), || {
        format!("the copy renders other rules than installed:\n{v4}\nvs\n{installed}")
    })?;
    ensure(v4.contains("blocklist[0] (from drop.netset)"), || {
        format!("the blocklist rule's comment names more than the file:\n{v4}")
    })?;
    ensure(
        std::fs::read_to_string(root.join("etc/iptables/ipsets"))?
            .contains("add pc-bl0-4 203.0.113.0/25"),
        || "the sets file lacks the list".into(),
    )?;
    // Installing the copy itself (as an image rebuild would) changes nothing.
    let again = install_ok(&copy, &root, &[])?;
    ensure(!again.contains("written"), || {
        format!("a reinstall from the copy wrote files:\n{again}")
    })
}
