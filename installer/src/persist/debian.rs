//! Debian and Ubuntu: netfilter-persistent loads `/etc/iptables/rules.v4` and
//! `rules.v6` (mode 0640, as its own `save` leaves them) before network-pre.target.
//!
//! netfilter-persistent fails open: with `IPTABLES_TEST_RULESET=yes` (the default)
//! a broken file prints "New rules NOT loaded" and the unit still succeeds, so the
//! host boots with no firewall and systemd reports success. Where the root has the
//! systemd unit, this driver also installs a drop-in whose `ExecStartPre` runs
//! `iptables-restore --test` on each file: a broken file then fails the unit
//! (`systemctl --failed`, a red FAILED at boot) instead of passing silently.

use std::path::{Path, PathBuf};

use super::{Mechanism, PersistError, Persistence, PlannedFile, ruleset_files};
use crate::render::{Family, Rendered};

pub struct NetfilterPersistent;

pub const V4: &str = "/etc/iptables/rules.v4";
pub const V6: &str = "/etc/iptables/rules.v6";
pub const DROP_IN: &str =
    "/etc/systemd/system/netfilter-persistent.service.d/portcullis-fail-loudly.conf";

/// The drop-in's text: one test per rendered family.
pub fn drop_in(rendered: &Rendered) -> String {
    let mut s = String::from(
        "# Installed by portcullis. netfilter-persistent prints \"New rules NOT loaded\"\n\
         # and exits 0 when a rules file is broken, so the host would boot with no\n\
         # firewall and systemd would report success. Testing each file first makes a\n\
         # broken file fail this unit loudly instead.\n\
         [Service]\n",
    );
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
                contents: drop_in(rendered),
                mode: 0o644,
                ruleset: None,
            });
        }
        Ok(files)
    }

    fn files(&self, _root: &Path) -> Vec<PathBuf> {
        vec![V4.into(), V6.into()]
    }
}
