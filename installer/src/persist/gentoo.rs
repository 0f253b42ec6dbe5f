//! Gentoo: systemd's `iptables-restore.service` (or OpenRC's `/etc/init.d/iptables`)
//! restores `/var/lib/iptables/rules-save` and `/var/lib/ip6tables/rules-save`.
//! A broken file fails the service.

use std::path::{Path, PathBuf};

use super::{Mechanism, PersistError, Persistence, PlannedFile, ruleset_files};
use crate::render::Rendered;

pub struct Gentoo;

pub const V4: &str = "/var/lib/iptables/rules-save";
pub const V6: &str = "/var/lib/ip6tables/rules-save";

impl Persistence for Gentoo {
    fn mechanism(&self) -> Mechanism {
        Mechanism::Gentoo
    }

    fn loader(&self) -> &'static str {
        "iptables-restore.service and ip6tables-restore.service (systemd), or OpenRC /etc/init.d/iptables"
    }

    fn plan(&self, _root: &Path, rendered: &Rendered) -> Result<Vec<PlannedFile>, PersistError> {
        Ok(ruleset_files(rendered, V4, V6, 0o600))
    }

    fn files(&self, _root: &Path) -> Vec<PathBuf> {
        vec![V4.into(), V6.into()]
    }
}
