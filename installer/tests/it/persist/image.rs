//! `verify --root` on the real Debian root (an overlay of ci/debian-root): after
//! `install --root`, the root's own loader (netfilter-persistent, or rc.local once
//! iptables-persistent is purged) runs chrooted in the lab's target and the probes
//! hold (exit 0, the matrix); each broken image exits 1 naming its cause: rules
//! the loader refuses (the drop-in fails the unit), a broken file netfilter-persistent
//! skips (fails open), the loader removed, the unit not enabled, no rules files,
//! rules that differ from the policy.

use std::path::Path;

use libtest_mimic::{Failed, Trial};

use super::debian::{debian_trial, overlay_run, section};
use super::*;
use crate::support::ensure;

/// Install `POLICY`, run `mutate` (a fixed script line; `$M` is the root), then
/// `verify --root` (with `verify_args`); the install's stderr and verify's stdout
/// and exit status.
fn install_then_verify(
    deb: &Path,
    before: &str,
    install_args: &str,
    mutate: &str,
    verify_args: &str,
) -> Result<(String, String), Failed> {
    install_then_verify_policy(deb, POLICY, before, install_args, mutate, verify_args)
}

/// [`install_then_verify`] of the policy `text`.
fn install_then_verify_policy(
    deb: &Path,
    text: &str,
    before: &str,
    install_args: &str,
    mutate: &str,
    verify_args: &str,
) -> Result<(String, String), Failed> {
    let dir = scratch();
    let policy = policy_file(dir.path(), text);
    let other = dir.path().join("other.toml");
    std::fs::write(&other, POLICY.replace("port = 22", "port = 2222"))?;
    let body = format!(
        r#"
        {before}
        echo '#== install'
        "$BIN" install --config "$1" --root "$M" {install_args} 2>&1 >/dev/null
        {mutate}
        echo '#== verify'
        if "$BIN" verify --root "$M" {verify_args} 2>/dev/null; then echo "exit=0"; else echo "exit=$?"; fi
        "#
    );
    let s = overlay_run(
        dir.path(),
        &deb.to_string_lossy(),
        &body,
        &[
            policy.as_os_str(),
            other.as_os_str(),
            roots_dir().join("templates/debian-rc.local").as_os_str(),
        ],
    )?;
    Ok((
        section(&s, "install")?.to_owned(),
        section(&s, "verify")?.to_owned(),
    ))
}

fn expect_pass(out: &str, mechanism: &str) -> Result<(), Failed> {
    let ok = out.contains("exit=0")
        && out.contains(&format!("mechanism: {mechanism} "))
        && out.contains("verify --root: PASS")
        && out.contains("loaded:    ipv4 from /etc/iptables/rules.v4: yes")
        && out.contains("loaded:    ipv6 from /etc/iptables/rules.v6: yes")
        && out
            .lines()
            .any(|l| l.contains(" probes: ") && l.contains("0 mismatched"));
    if !ok {
        return Err(
            format!("verify --root must pass with the matrix ({mechanism}):\n{out}").into(),
        );
    }
    Ok(())
}

/// Install, break the image with the script lines `mutate` (as in
/// [`install_then_verify`]), verify: it must fail naming each of `needles`
/// ([`expect_fail`]); verify's output.
fn broken_image(deb: &Path, mutate: &[&str], needles: &[&str]) -> Result<String, Failed> {
    let (_, out) = install_then_verify(deb, "", "", &mutate.join("\n"), "")?;
    expect_fail(&out, needles)?;
    Ok(out)
}

/// A rules.v4 iptables-restore refuses (`$M` is the root).
const CORRUPT_V4: &str =
    r#"printf '*filter\n-A INPUT --no-such-option\nCOMMIT\n' >> "$M/etc/iptables/rules.v4""#;

/// The drop-in that makes netfilter-persistent fail on a broken file, removed.
const NO_DROP_IN: &str =
    r#"rm "$M/etc/systemd/system/netfilter-persistent.service.d/portcullis-fail-loudly.conf""#;

/// Broken images whose FAIL lines are the whole check: the trial's name, the
/// script lines that break the image, what the FAIL lines must name.
type Broken = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
);
const BROKEN: &[Broken] = &[
    (
        "corrupt_rules_fail_the_unit",
        &[CORRUPT_V4],
        &[
            "loader failed: netfilter-persistent.service",
            "--test /etc/iptables/rules.v4",
            "behave otherwise",
        ],
    ),
    (
        "loader_removed",
        &[r#"rm "$M/usr/sbin/netfilter-persistent""#],
        &[
            "loader failed: netfilter-persistent.service",
            "`/usr/sbin/netfilter-persistent start` cannot run",
        ],
    ),
    (
        "loader_not_enabled",
        &[r#"rm "$M/etc/systemd/system/multi-user.target.wants/netfilter-persistent.service""#],
        &["loader not enabled: netfilter-persistent.service is installed but not enabled"],
    ),
    (
        "loads_nothing",
        &[
            r#"rm "$M/etc/iptables/rules.v4" "$M/etc/iptables/rules.v6""#,
            NO_DROP_IN,
        ],
        &["loads nothing: netfilter-persistent.service exited 0 and loaded no rules"],
    ),
];

fn expect_fail(out: &str, needles: &[&str]) -> Result<(), Failed> {
    let fails: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("verify --root: FAIL: "))
        .collect();
    let named = needles.iter().all(|n| fails.iter().any(|l| l.contains(n)));
    if !out.contains("exit=1") || !named || out.contains("verify --root: PASS") {
        return Err(format!(
            "verify --root must exit 1 with a FAIL line naming {needles:?}:\n{out}"
        )
        .into());
    }
    Ok(())
}

/// The matrix of a passing verify of [`BLOCKLIST_POLICY`]: the blocklisted
/// inner host dropped in both families, counted by the blocklist rule, and the
/// admin let in over ssh, counted by its rule.
fn expect_sets_counted(out: &str) -> Result<(), Failed> {
    for family in ["ipv4", "ipv6"] {
        for (from, counted) in [
            ("inner ", "INPUT: blocklist[0] (+"),
            ("admin ", "INPUT: ssh from the admin subnet (+"),
        ] {
            ensure(
                out.lines().any(|l| {
                    l.contains(from)
                        && l.contains(family)
                        && l.contains(counted)
                        && l.trim_end().ends_with("ok")
                }),
                || format!("no `{from}` {family} probe counted by `{counted}`:\n{out}"),
            )?;
        }
    }
    Ok(())
}

/// Install [`BLOCKLIST_POLICY`] into the Debian root (after `before`), break or
/// trim it with `mutate`, verify: it must pass with the sets counted; verify's
/// output and the install's stderr.
fn sets_pass(deb: &Path, before: &str, mutate: &str) -> Result<(String, String), Failed> {
    let (install, out) = install_then_verify_policy(deb, BLOCKLIST_POLICY, before, "", mutate, "")?;
    ensure(!install.contains("refus"), || {
        format!("install must accept the blocklist policy:\n{install}")
    })?;
    expect_pass(&out, "netfilter-persistent")?;
    expect_sets_counted(&out)?;
    Ok((install, out))
}

/// The position of `needle` in `out`, or an error showing `out`.
fn at(out: &str, needle: &str) -> Result<usize, Failed> {
    out.find(needle)
        .ok_or_else(|| format!("missing `{needle}`:\n{out}").into())
}

/// The ipsets of [`BLOCKLIST_POLICY`] on the Debian root: netfilter-persistent's
/// unit loads the sets (the drop-in's first ExecStartPre, then ipset-persistent's
/// 10-ipset plugin) before the rules, and the packets prove it.
fn sets_then_rules(deb: &Path) -> Result<(), Failed> {
    let (_, out) = sets_pass(deb, "", "")?;
    let sets = at(
        &out,
        "ran /usr/sbin/ipset -exist -file /etc/iptables/ipsets restore",
    )?;
    let test = at(
        &out,
        "ran /usr/sbin/iptables-restore -w 10 --test /etc/iptables/rules.v4",
    )?;
    let start = at(&out, "ran /usr/sbin/netfilter-persistent start")?;
    let plugin = at(&out, "plugins.d/10-ipset start")?;
    let rules = at(&out, "plugins.d/15-ip4tables start")?;
    ensure(sets < test && test < start && plugin < rules, || {
        format!("the sets must load before the rules are tested and loaded:\n{out}")
    })
}

pub fn trials() -> Vec<Trial> {
    let broken = BROKEN.iter().map(|&(name, mutate, needles)| {
        debian_trial(&format!("persist::image::{name}"), move |deb| {
            broken_image(deb, mutate, needles).map(drop)
        })
    });
    broken.chain([
        debian_trial("persist::image::sets_load_before_rules", sets_then_rules),
        debian_trial("persist::image::sets_by_ipset_persistent_alone", |deb| {
            // Without the drop-in, only netfilter-persistent's own plugins load:
            // ipset-persistent's 10-ipset must load the sets before 15-ip4tables.
            let (_, out) = sets_pass(deb, "", NO_DROP_IN)?;
            ensure(!out.contains("ran /usr/sbin/ipset"), || {
                format!("the drop-in is gone: nothing but the plugins loads the sets:\n{out}")
            })?;
            ensure(at(&out, "10-ipset start")? < at(&out, "15-ip4tables start")?, || {
                format!("10-ipset must run before 15-ip4tables:\n{out}")
            })
        }),
        debian_trial("persist::image::sets_by_own_plugin", |deb| {
            // ipset-persistent purged (ipset stays): install adds portcullis's own
            // plugin, and without the drop-in it alone loads the sets.
            let (install, out) = sets_pass(
                deb,
                r#"chroot "$M" env DEBIAN_FRONTEND=noninteractive dpkg --purge ipset-persistent >/dev/null 2>&1"#,
                NO_DROP_IN,
            )?;
            ensure(install.contains("ipset-persistent is not installed"), || {
                format!("install must say it installs its own plugin:\n{install}")
            })?;
            ensure(
                at(&out, "10-portcullis-ipset start")? < at(&out, "15-ip4tables start")?,
                || format!("10-portcullis-ipset must run before 15-ip4tables:\n{out}"),
            )
        }),
        debian_trial("persist::image::sets_file_missing", |deb| {
            let (_, out) = install_then_verify_policy(
                deb,
                BLOCKLIST_POLICY,
                "",
                "",
                r#"rm "$M/etc/iptables/ipsets""#,
                "",
            )?;
            expect_fail(
                &out,
                &["sets file missing: /etc/iptables/ipsets is missing or empty"],
            )
        }),
        debian_trial("persist::image::ipset_loader_absent", |deb| {
            let (_, out) = install_then_verify_policy(
                deb,
                BLOCKLIST_POLICY,
                "",
                "",
                r#"rm "$M/usr/sbin/ipset""#,
                "",
            )?;
            expect_fail(
                &out,
                &[
                    "ipset loader missing: the rules match ipsets (pc-bl0-4, pc-bl0-6)",
                    "loader failed: netfilter-persistent.service",
                ],
            )
        }),
        debian_trial("persist::image::netfilter_persistent_passes", |deb| {
            let (_, out) = install_then_verify(deb, "", "", "", "")?;
            expect_pass(&out, "netfilter-persistent")?;
            // The unit's own commands ran: the drop-in's tests, then the loader.
            for needle in [
                "ran /usr/sbin/iptables-restore -w 10 --test /etc/iptables/rules.v4",
                "ran /usr/sbin/netfilter-persistent start (ExecStart= of",
                "[enabled: netfilter-persistent.service is enabled",
            ] {
                if !out.contains(needle) {
                    return Err(format!("missing `{needle}`:\n{out}").into());
                }
            }
            Ok(())
        }),
        debian_trial("persist::image::rc_local_passes", |deb| {
            let (install, out) = install_then_verify(
                deb,
                r#"chroot "$M" env DEBIAN_FRONTEND=noninteractive dpkg --purge ipset-persistent iptables-persistent netfilter-persistent >/dev/null 2>&1
                install -m 0644 "$3" "$M/etc/rc.local""#,
                "--persistence rc-local",
                "",
                "",
            )?;
            if !install.contains("iptables-persistent") {
                return Err(format!("install must suggest iptables-persistent on Debian's rc.local fallback:\n{install}").into());
            }
            expect_pass(&out, "rc-local")?;
            if !out.contains("ran /etc/rc.local start (rc-local.service): exit 0") {
                return Err(format!("rc.local must have run:\n{out}").into());
            }
            Ok(())
        }),
        debian_trial("persist::image::corrupt_rules_fail_open", |deb| {
            let out = broken_image(
                deb,
                &[CORRUPT_V4, NO_DROP_IN],
                &[
                    "fails open: netfilter-persistent.service exited 0 but did not load the ipv4 rules of /etc/iptables/rules.v4",
                ],
            )?;
            ensure(
                out.contains("loaded:    ipv4 from /etc/iptables/rules.v4: NO"),
                || format!("the IPv4 rules must show as not loaded:\n{out}"),
            )
        }),
        debian_trial("persist::image::loader_package_purged", |deb| {
            // Purged, detection falls back to rc.local, which this root lacks.
            let out = broken_image(
                deb,
                &[
                    r#"chroot "$M" env DEBIAN_FRONTEND=noninteractive dpkg --purge ipset-persistent iptables-persistent netfilter-persistent >/dev/null 2>&1"#,
                ],
                &["loader missing: /etc/rc.local does not exist"],
            )?;
            ensure(!out.contains("FAIL: loader not enabled"), || {
                format!("a missing loader is said once:\n{out}")
            })
        }),
        debian_trial("persist::image::json_report", |deb| {
            let (_, out) = install_then_verify(deb, "", "", "", "--json")?;
            let json = out
                .strip_suffix("exit=0\n")
                .ok_or_else(|| format!("verify --root --json must exit 0:\n{out}"))?;
            let j: serde_json::Value = serde_json::from_str(json)?;
            let ok = j["passed"] == true
                && j["mechanism"] == "netfilter-persistent"
                && j["backend"] == "nft"
                && j["failures"].as_array().is_some_and(|f| f.is_empty())
                && j["loaders"][0]["enabled"] == true
                && j["loaders"][0]["steps"]
                    .as_array()
                    .is_some_and(|s| s.len() == 3)
                && j["loaded"]
                    .as_array()
                    .is_some_and(|l| l.len() == 2 && l.iter().all(|x| x["loaded"] == true))
                && j["report"]["rows"]
                    .as_array()
                    .is_some_and(|r| !r.is_empty());
            if !ok {
                return Err(format!("unexpected verify --root --json:\n{j:#}").into());
            }
            Ok(())
        }),
        debian_trial("persist::image::rules_differ_from_the_policy", |deb| {
            // The image holds the port-22 policy; verify it against port 2222.
            let (_, out) = install_then_verify(deb, "", "", "", r#"--config "$2""#)?;
            expect_fail(&out, &["the rules behave otherwise than the policy"])?;
            if !out
                .lines()
                .any(|l| l.starts_with("MISMATCH ") && l.contains("ssh"))
            {
                return Err(format!("the matrix must show the mismatch:\n{out}").into());
            }
            Ok(())
        }),
    ])
    .collect()
}
