//! The policy's ipsets at boot: where each mechanism keeps them and what loads
//! them BEFORE the rules that match them (a rule naming a missing set does not
//! load, so a boot that loads the rules first loads no firewall at all).
//!
//! | mechanism | sets file | loaded by, before the rules |
//! |---|---|---|
//! | netfilter-persistent | `/etc/iptables/ipsets` (0640) | the portcullis drop-in's first `ExecStartPre=` (`ipset -exist -file … restore`), then netfilter-persistent's plugin `10-ipset` (ipset-persistent) or, without that package, portcullis's own `10-portcullis-ipset`, both ahead of `15-ip4tables` |
//! | iptables-services | `/etc/sysconfig/ipset` (0600) | `ipset.service` (ipset-service), `Before=iptables.service ip6tables.service` |
//! | arch | `/etc/ipset.conf` (0600) | `ipset.service`, `Before=iptables.service ip6tables.service` |
//! | alpine | `/etc/ipset.d/NAME` (0600), one file per set | OpenRC `ipset` (`before iptables ip6tables`) |
//! | gentoo | `/var/lib/ipset/rules-save` (0600; OpenRC: `IPSET_SAVE` of `/etc/conf.d/ipset`) | `ipset.service` (`Before=iptables-restore.service`) or OpenRC `ipset` |
//! | rc-local | `/etc/iptables/ipsets` (0600) | `ipset restore` at the top of the portcullis block |
//!
//! `install` refuses a root whose ipset loader is missing, not enabled (unless
//! `--enable`), or not ordered before the rules' unit; `verify --root` runs it
//! first and fails naming a missing sets file or ipset binary.

use std::path::{Path, PathBuf};

use super::detect::{self, Unit, read_in_root, resolve};
use super::loader::Loader;
use super::{Mechanism, PersistError, PlannedFile};
use crate::render::Rendered;

/// Debian's sets file: where ipset-persistent's plugin reads and saves them.
pub const DEBIAN: &str = "/etc/iptables/ipsets";
/// RHEL's: ipset-service's `/usr/libexec/ipset/ipset.start-stop` restores it.
pub const RHEL: &str = "/etc/sysconfig/ipset";
/// Arch's: `ipset.service` runs `ipset -f /etc/ipset.conf restore`.
pub const ARCH: &str = "/etc/ipset.conf";
/// Alpine's directory: one file per set, named as the set; its first line the
/// `create` options, then one member per line (`#` lines skipped).
pub const ALPINE_DIR: &str = "/etc/ipset.d";
/// Gentoo's: `ipset.service` and OpenRC's `ipset` (`IPSET_SAVE`) restore it.
pub const GENTOO: &str = "/var/lib/ipset/rules-save";
/// ipset-persistent's netfilter-persistent plugin.
pub const DEBIAN_PLUGIN: &str = "/usr/share/netfilter-persistent/plugins.d/10-ipset";
/// portcullis's own plugin, installed where ipset-persistent is not.
pub const OWN_PLUGIN: &str = "/usr/share/netfilter-persistent/plugins.d/10-portcullis-ipset";

/// The plugin netfilter-persistent runs (run-parts, by name: before
/// `15-ip4tables` and `25-ip6tables`) where ipset-persistent is not installed.
/// A constant: nothing in it comes from the policy or the user.
pub const OWN_PLUGIN_TEXT: &str = "#!/bin/sh
# Installed by portcullis: a netfilter-persistent plugin that loads the ipsets
# of /etc/iptables/ipsets before 15-ip4tables and 25-ip6tables load the rules
# that match them (ipset-persistent's 10-ipset does the same where installed).
# `save` and `flush` do nothing: the file is portcullis's, and a set cannot be
# destroyed while rules still match it.
set -e
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
case \"$1\" in
start|restart|reload|force-reload)
\tif [ ! -f /etc/iptables/ipsets ]; then
\t\techo \"portcullis: /etc/iptables/ipsets is missing: the rules that match ipsets will NOT load\" >&2
\t\texit 1
\tfi
\tipset -exist -file /etc/iptables/ipsets restore
\t;;
esac
exit 0
";

/// Where the ipset binary is in the root, if anywhere.
pub fn ipset_binary(root: &Path) -> Option<&'static str> {
    [
        "/usr/sbin/ipset",
        "/sbin/ipset",
        "/usr/bin/ipset",
        "/bin/ipset",
    ]
    .into_iter()
    .find(|p| resolve(root, Path::new(p)).is_some())
}

/// Gentoo's sets file: systemd's `ipset.service` names the default; OpenRC's
/// script reads `IPSET_SAVE` from `/etc/conf.d/ipset`.
fn gentoo_path(root: &Path) -> Result<String, PersistError> {
    if detect::unit(root, "ipset.service")? != Unit::Missing {
        return Ok(GENTOO.into());
    }
    let text = read_in_root(root, "/etc/conf.d/ipset")?.unwrap_or_default();
    Ok(match detect::conf_value(&text, "IPSET_SAVE") {
        Some(p) if p.starts_with('/') && !p.contains("..") && !p.contains('$') => p,
        _ => GENTOO.into(),
    })
}

/// The set files of `mechanism` for `rendered` (none without sets): the
/// `ipset restore` text at the mechanism's path, or on Alpine one file per set.
pub fn files(
    root: &Path,
    mechanism: Mechanism,
    rendered: &Rendered,
) -> Result<Vec<PlannedFile>, PersistError> {
    let Some(text) = rendered.sets_text() else {
        return Ok(Vec::new());
    };
    let one = |path: &str, mode: u32| {
        vec![PlannedFile {
            path: PathBuf::from(path),
            contents: text.clone(),
            mode,
            ruleset: None,
        }]
    };
    Ok(match mechanism {
        // As ipset-persistent's `save` leaves it (and rules.v4 beside it).
        Mechanism::NetfilterPersistent => one(DEBIAN, 0o640),
        Mechanism::RcLocal => one(DEBIAN, 0o600),
        Mechanism::IptablesServices => one(RHEL, 0o600),
        Mechanism::Arch => one(ARCH, 0o600),
        Mechanism::Gentoo => one(&gentoo_path(root)?, 0o600),
        Mechanism::Alpine => rendered
            .sets
            .iter()
            .map(|set| {
                let options = set.options();
                let mut s = format!(
                    "# portcullis ipset {}, rendered from a policy: edit the policy, not this file.\n\
                     # Alpine's /etc/init.d/ipset creates the set with the first line's options\n\
                     # and adds one member per line after it, before iptables starts.\n{options}\n",
                    set.name
                );
                for net in &set.nets {
                    s.push_str(&net.to_string());
                    s.push('\n');
                }
                PlannedFile {
                    path: Path::new(ALPINE_DIR).join(&set.name),
                    contents: s,
                    mode: 0o600,
                    ruleset: None,
                }
            })
            .collect(),
    })
}

/// The loader of the sets, where it is a service of its own (it must run before
/// the rules' loaders); `None` where the rules' loader loads them itself
/// (netfilter-persistent's plugin and drop-in, the rc.local block).
pub fn loader(root: &Path, mechanism: Mechanism) -> Result<Option<Loader>, PersistError> {
    let sd = || Loader::Systemd {
        unit: "ipset.service".into(),
    };
    Ok(match mechanism {
        Mechanism::NetfilterPersistent | Mechanism::RcLocal => None,
        Mechanism::IptablesServices | Mechanism::Arch => Some(sd()),
        Mechanism::Gentoo if detect::unit(root, "iptables-restore.service")? != Unit::Missing => {
            Some(sd())
        }
        Mechanism::Gentoo | Mechanism::Alpine => Some(Loader::OpenRc {
            service: "ipset".into(),
        }),
    })
}

/// The package that brings the ipset loader of `mechanism`, for a fix.
pub fn package_hint(mechanism: Mechanism) -> &'static str {
    match mechanism {
        Mechanism::NetfilterPersistent => {
            "apt-get install ipset-persistent (it brings ipset and netfilter-persistent's ipset plugin)"
        }
        Mechanism::IptablesServices => {
            "dnf install ipset-service (ipset.service, /etc/sysconfig/ipset)"
        }
        Mechanism::Arch => "pacman -S ipset (ipset.service, /etc/ipset.conf)",
        Mechanism::Alpine => "apk add ipset (/etc/init.d/ipset, /etc/ipset.d)",
        Mechanism::Gentoo => "emerge net-firewall/ipset (ipset.service or /etc/init.d/ipset)",
        Mechanism::RcLocal => "install your distribution's ipset package",
    }
}

/// Whether `loader` is the sets' loader (so a refusal names the ipset package).
pub fn is_sets_loader(loader: &Loader) -> bool {
    match loader {
        Loader::Systemd { unit } => unit == "ipset.service",
        Loader::OpenRc { service } => service == "ipset",
        _ => false,
    }
}

/// Why the root would not load the sets before the rules, each with its fix:
/// no ipset binary, or a systemd `ipset.service` that is not ordered before a
/// rules unit (neither its `Before=` nor the rules unit's `After=` says so), or
/// an OpenRC `ipset` script whose `depend()` lacks `before iptables`.
/// `rules` are the rules' loaders.
pub fn refusals(root: &Path, mechanism: Mechanism, rules: &[Loader]) -> Vec<String> {
    let mut out = Vec::new();
    if ipset_binary(root).is_none() {
        out.push(format!(
            "the policy renders ipsets and the root has no ipset (/usr/sbin/ipset, /sbin/ipset): the sets would not load at boot and neither would the rules that match them; fix: {}",
            package_hint(mechanism)
        ));
    }
    let unit = match loader(root, mechanism) {
        Ok(Some(Loader::Systemd { unit })) => unit,
        Ok(Some(Loader::OpenRc { service })) => {
            // OpenRC orders by the script's depend(): `before iptables`.
            let script = format!("/etc/init.d/{service}");
            if let Ok(Some(text)) = read_in_root(root, &script) {
                let ordered = text.lines().any(|l| {
                    let mut w = l.split_whitespace();
                    w.next() == Some("before") && w.any(|x| x == "iptables" || x == "*")
                });
                if !ordered {
                    out.push(format!(
                        "{script} does not declare `before iptables` in its depend(): OpenRC could load the rules before their sets; fix: install the distribution's ipset package, whose script does"
                    ));
                }
            }
            return out;
        }
        _ => return out,
    };
    // The unit file and its drop-ins, as systemd orders them (the fix below
    // is a drop-in).
    let Ok(sources) = super::loader::unit_sources(root, &unit) else {
        // Missing: said by the loader check.
        return out;
    };
    let before = super::loader::unit_list(&sources, "Before");
    for l in rules {
        let Loader::Systemd { unit: rules_unit } = l else {
            continue;
        };
        let after = super::loader::unit_list(
            &super::loader::unit_sources(root, rules_unit).unwrap_or_default(),
            "After",
        );
        if !before.iter().any(|u| u == rules_unit) && !after.contains(&unit) {
            out.push(format!(
                "{unit} is not ordered before {rules_unit} (no Before={rules_unit} in {unit}, no After={unit} in {rules_unit}): the rules could load before their sets; fix: add a drop-in /etc/systemd/system/{rules_unit}.d/ipset.conf with [Unit] After={unit}"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered() -> Rendered {
        let p = crate::Policy::parse(
            "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n[[blocklist]]\ncidrs = [\"203.0.113.0/24\", \"2001:db8:bad::/48\"]\n",
            "t",
        )
        .unwrap();
        crate::render(&p)
    }

    #[test]
    fn each_mechanism_has_its_sets_file() {
        let root = tempfile::tempdir().unwrap();
        let r = rendered();
        let text = r.sets_text().unwrap();
        for (m, path, mode) in [
            (Mechanism::NetfilterPersistent, DEBIAN, 0o640),
            (Mechanism::RcLocal, DEBIAN, 0o600),
            (Mechanism::IptablesServices, RHEL, 0o600),
            (Mechanism::Arch, ARCH, 0o600),
            (Mechanism::Gentoo, GENTOO, 0o600),
        ] {
            let f = files(root.path(), m, &r).unwrap();
            assert_eq!(f.len(), 1, "{m}");
            assert_eq!(f[0].path, Path::new(path), "{m}");
            assert_eq!(f[0].mode, mode, "{m}");
            assert_eq!(f[0].contents, text, "{m}");
            assert!(f[0].ruleset.is_none());
        }
        assert!(text.contains("create pc-bl0-4 hash:net family inet "));
        assert!(text.contains("add pc-bl0-4 203.0.113.0/24\n"));
        assert!(text.contains("add pc-bl0-6 2001:db8:bad::/48\n"));
    }

    #[test]
    fn alpine_writes_one_file_per_set_in_its_init_scripts_format() {
        let root = tempfile::tempdir().unwrap();
        let f = files(root.path(), Mechanism::Alpine, &rendered()).unwrap();
        let names: Vec<_> = f.iter().map(|p| p.path.display().to_string()).collect();
        assert_eq!(names, ["/etc/ipset.d/pc-bl0-4", "/etc/ipset.d/pc-bl0-6"]);
        // What the init script reads: `grep -v ^#`, the first line the create
        // options, each further line a member.
        let lines: Vec<&str> = f[0]
            .contents
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert_eq!(
            lines,
            [
                "hash:net family inet hashsize 64 maxelem 65536",
                "203.0.113.0/24"
            ]
        );
    }

    #[test]
    fn gentoo_openrc_honours_ipset_save() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/conf.d")).unwrap();
        std::fs::write(
            root.path().join("etc/conf.d/ipset"),
            "IPSET_SAVE=\"/etc/ipset-rules\"\n",
        )
        .unwrap();
        let f = files(root.path(), Mechanism::Gentoo, &rendered()).unwrap();
        assert_eq!(f[0].path, Path::new("/etc/ipset-rules"));
    }

    #[test]
    fn no_sets_no_files() {
        let root = tempfile::tempdir().unwrap();
        let p = crate::Policy::parse("[ssh]\nallow_from = [\"192.0.2.0/24\"]\n", "t").unwrap();
        for m in Mechanism::ALL {
            assert!(
                files(root.path(), m, &crate::render(&p))
                    .unwrap()
                    .is_empty()
            );
        }
    }

    #[test]
    fn ordering_is_read_from_the_units() {
        let root = tempfile::tempdir().unwrap();
        let sys = root.path().join("usr/lib/systemd/system");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::create_dir_all(root.path().join("usr/sbin")).unwrap();
        std::fs::write(root.path().join("usr/sbin/ipset"), "").unwrap();
        std::fs::write(
            sys.join("iptables.service"),
            "[Service]\nExecStart=/x\n[Install]\nWantedBy=basic.target\n",
        )
        .unwrap();
        let rules = [Loader::Systemd {
            unit: "iptables.service".into(),
        }];
        let m = Mechanism::IptablesServices;
        std::fs::write(
            sys.join("ipset.service"),
            "[Unit]\nBefore=network-pre.target iptables.service ip6tables.service\n[Service]\nExecStart=/x\n",
        )
        .unwrap();
        assert!(refusals(root.path(), m, &rules).is_empty());
        std::fs::write(
            sys.join("ipset.service"),
            "[Unit]\n[Service]\nExecStart=/x\n",
        )
        .unwrap();
        let r = refusals(root.path(), m, &rules);
        assert!(
            r.len() == 1 && r[0].contains("not ordered before iptables.service"),
            "{r:?}"
        );
        // The fix the refusal names, a drop-in of the rules unit, is read.
        let dropin = root.path().join("etc/systemd/system/iptables.service.d");
        std::fs::create_dir_all(&dropin).unwrap();
        std::fs::write(dropin.join("ipset.conf"), "[Unit]\nAfter=ipset.service\n").unwrap();
        assert!(refusals(root.path(), m, &rules).is_empty());
        std::fs::remove_dir_all(&dropin).unwrap();
        std::fs::remove_file(root.path().join("usr/sbin/ipset")).unwrap();
        let r = refusals(root.path(), m, &rules);
        assert!(r[0].contains("has no ipset"), "{r:?}");
        // OpenRC: the script's depend().
        std::fs::write(root.path().join("usr/sbin/ipset"), "").unwrap();
        std::fs::create_dir_all(root.path().join("etc/init.d")).unwrap();
        let script = root.path().join("etc/init.d/ipset");
        std::fs::write(&script, "depend() {\n\tbefore iptables ip6tables\n}\n").unwrap();
        assert!(refusals(root.path(), Mechanism::Alpine, &[]).is_empty());
        std::fs::write(&script, "depend() {\n\tneed localmount\n}\n").unwrap();
        let r = refusals(root.path(), Mechanism::Alpine, &[]);
        assert!(r.len() == 1 && r[0].contains("before iptables"), "{r:?}");
    }
}
