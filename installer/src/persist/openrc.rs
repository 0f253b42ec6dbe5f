//! What the OpenRC-style drivers share (Alpine, and Gentoo without systemd): the
//! `rules-save` pair, at the paths `IPTABLES_SAVE` names in `/etc/conf.d/iptables`
//! and `/etc/conf.d/ip6tables` (the distro's defaults otherwise), written 0600.
//! It reads only those conf.d files, never the init scripts, and writes nothing.

use std::path::{Path, PathBuf};

use super::{PersistError, PlannedFile, ruleset_files};
use crate::render::Rendered;

/// A distro's default `rules-save` paths for IPv4 and IPv6.
pub(super) struct RulesSave {
    pub v4: &'static str,
    pub v6: &'static str,
}

impl RulesSave {
    /// The defaults, unless `IPTABLES_SAVE` in the root's conf.d names others: the
    /// init script restores from there, so that is where the files must land.
    pub fn paths_in(&self, root: &Path) -> Result<(String, String), PersistError> {
        Ok((
            super::detect::openrc_save_path(root, "/etc/conf.d/iptables", self.v4)?,
            super::detect::openrc_save_path(root, "/etc/conf.d/ip6tables", self.v6)?,
        ))
    }

    pub fn defaults(&self) -> (String, String) {
        (self.v4.into(), self.v6.into())
    }

    /// The ruleset files at `paths`, 0600.
    pub fn plan(&self, paths: &(String, String), rendered: &Rendered) -> Vec<PlannedFile> {
        ruleset_files(rendered, &paths.0, &paths.1, 0o600)
    }

    /// The files the loader reads; the defaults when the conf.d files are unreadable
    /// (`files` only names, it does not fail).
    pub fn files(&self, paths: Result<(String, String), PersistError>) -> Vec<PathBuf> {
        let (v4, v6) = paths.unwrap_or_else(|_| self.defaults());
        vec![v4.into(), v6.into()]
    }
}
