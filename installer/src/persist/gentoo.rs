//! Gentoo: systemd's `iptables-restore.service` (or OpenRC's `/etc/init.d/iptables`)
//! restores `/var/lib/iptables/rules-save` and `/var/lib/ip6tables/rules-save`.
//! A broken file fails the service.

use std::path::{Path, PathBuf};

use super::openrc::RulesSave;
use super::{Mechanism, PersistError, Persistence, PlannedFile};
use crate::render::Rendered;

pub struct Gentoo;

pub const V4: &str = "/var/lib/iptables/rules-save";
pub const V6: &str = "/var/lib/ip6tables/rules-save";

const SAVE: RulesSave = RulesSave { v4: V4, v6: V6 };

/// systemd's units name the default paths; OpenRC reads them from
/// `/etc/conf.d/iptables` and `ip6tables` (`IPTABLES_SAVE`), which are honoured
/// when the root has no `iptables-restore.service`.
fn paths(root: &Path) -> Result<(String, String), PersistError> {
    if super::detect::unit(root, "iptables-restore.service")? != super::detect::Unit::Missing {
        return Ok(SAVE.defaults());
    }
    SAVE.paths_in(root)
}

impl Persistence for Gentoo {
    fn mechanism(&self) -> Mechanism {
        Mechanism::Gentoo
    }

    fn loader(&self) -> &'static str {
        "iptables-restore.service and ip6tables-restore.service (systemd), or OpenRC /etc/init.d/iptables"
    }

    fn plan(&self, root: &Path, rendered: &Rendered) -> Result<Vec<PlannedFile>, PersistError> {
        Ok(SAVE.plan(&paths(root)?, rendered))
    }

    fn files(&self, root: &Path) -> Vec<PathBuf> {
        SAVE.files(paths(root))
    }
}
