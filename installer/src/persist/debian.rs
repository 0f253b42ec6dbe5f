//! Debian and Ubuntu: netfilter-persistent loads `/etc/iptables/rules.v4` and
//! `rules.v6` (mode 0640, as its own `save` leaves them) before network-pre.target.
//!
//! netfilter-persistent fails open: with `IPTABLES_TEST_RULESET=yes` (the default)
//! a broken file prints "New rules NOT loaded" and the unit still succeeds, so the
//! host boots with no firewall and systemd reports success. Where the root has the
//! systemd unit, this driver also installs a drop-in whose `ExecStartPre` runs
//! `iptables-restore --test` on each file: a broken file then fails the unit
//! (`systemctl --failed`, a red FAILED at boot) instead of passing silently.
//!
//! A policy with ipsets adds `/etc/iptables/ipsets` (0640). The rules that match
//! a set do not load (nor pass `--test`) before the set exists, so the drop-in's
//! first `ExecStartPre` loads the sets (`ipset -exist -file … restore`), and
//! netfilter-persistent's own start loads them again, idempotently, through the
//! `10-ipset` plugin of ipset-persistent, or where that package is not installed
//! through portcullis's `10-portcullis-ipset` (run-parts runs both before
//! `15-ip4tables`). The plugin is what a boot without systemd, or a
//! `netfilter-persistent reload`, relies on.

use std::path::{Path, PathBuf};

use super::{Mechanism, PersistError, Persistence, PlannedFile, ruleset_files};
use crate::render::{Family, Rendered};

pub struct NetfilterPersistent;

pub const V4: &str = "/etc/iptables/rules.v4";
pub const V6: &str = "/etc/iptables/rules.v6";
pub const DROP_IN: &str =
    "/etc/systemd/system/netfilter-persistent.service.d/portcullis-fail-loudly.conf";

/// The drop-in's text: the sets loaded with `ipset` (the binary's path in the
/// root) when the policy has any, then one test per rendered family.
pub fn drop_in(rendered: &Rendered, ipset: &str) -> String {
    let mut s = String::from(
        "# Installed by portcullis. netfilter-persistent prints \"New rules NOT loaded\"\n\
         # and exits 0 when a rules file is broken, so the host would boot with no\n\
         # firewall and systemd would report success. Testing each file first makes a\n\
         # broken file fail this unit loudly instead.\n\
         [Service]\n",
    );
    if !rendered.sets.is_empty() {
        s.push_str(&format!(
            "# The rules match ipsets: load them first, or no rule loads (nor passes --test).\n\
             ExecStartPre={ipset} -exist -file {} restore\n",
            super::sets::DEBIAN
        ));
    }
    for f in Family::ALL {
        if rendered.get(f).is_some() {
            let (bin, path) = match f {
                Family::V4 => ("/usr/sbin/iptables-restore", V4),
                Family::V6 => ("/usr/sbin/ip6tables-restore", V6),
            };
            s.push_str(&format!("ExecStartPre={bin} -w 10 --test {path}\n"));
        }
    }
    s
}

impl Persistence for NetfilterPersistent {
    fn mechanism(&self) -> Mechanism {
        Mechanism::NetfilterPersistent
    }

    fn loader(&self) -> &'static str {
        "netfilter-persistent.service (/usr/sbin/netfilter-persistent start), before network-pre.target"
    }

    fn plan(&self, root: &Path, rendered: &Rendered) -> Result<Vec<PlannedFile>, PersistError> {
        let mut files = ruleset_files(rendered, V4, V6, 0o640);
        if super::detect::unit(root, "netfilter-persistent.service")?
            != super::detect::Unit::Missing
        {
            files.push(PlannedFile {
                path: PathBuf::from(DROP_IN),
                contents: drop_in(
                    rendered,
                    super::sets::ipset_binary(root).unwrap_or("/usr/sbin/ipset"),
                ),
                mode: 0o644,
                ruleset: None,
            });
        }
        // Without ipset-persistent, portcullis's own plugin loads the sets.
        if !rendered.sets.is_empty()
            && super::detect::resolve(root, Path::new(super::sets::DEBIAN_PLUGIN)).is_none()
        {
            files.push(PlannedFile {
                path: PathBuf::from(super::sets::OWN_PLUGIN),
                contents: super::sets::OWN_PLUGIN_TEXT.to_owned(),
                mode: 0o755,
                ruleset: None,
            });
        }
        Ok(files)
    }

    fn files(&self, _root: &Path) -> Vec<PathBuf> {
        vec![V4.into(), V6.into()]
    }
}
