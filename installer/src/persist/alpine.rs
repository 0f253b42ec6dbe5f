//! Alpine: OpenRC's `/etc/init.d/iptables` (and its `ip6tables` link) restore
//! `IPTABLES_SAVE` from `/etc/conf.d/iptables`, by default `/etc/iptables/rules-save`
//! and `/etc/ip6tables/rules-save`, with `iptables-restore < FILE`. The service must
//! be in a runlevel (`rc-update add iptables default`); a broken file fails it.

use std::path::{Path, PathBuf};

use super::{Mechanism, PersistError, Persistence, PlannedFile, ruleset_files};
use crate::render::Rendered;

pub struct Alpine;

pub const V4: &str = "/etc/iptables/rules-save";
pub const V6: &str = "/etc/ip6tables/rules-save";

/// OpenRC reads the paths from `/etc/conf.d/iptables` and `ip6tables`
/// (`IPTABLES_SAVE`); honour them so the files land where the script looks.
fn paths(root: &Path) -> Result<(String, String), PersistError> {
    Ok((
        super::detect::openrc_save_path(root, "/etc/conf.d/iptables", V4)?,
        super::detect::openrc_save_path(root, "/etc/conf.d/ip6tables", V6)?,
    ))
}

impl Persistence for Alpine {
    fn mechanism(&self) -> Mechanism {
        Mechanism::Alpine
    }

    fn loader(&self) -> &'static str {
        "OpenRC /etc/init.d/iptables and /etc/init.d/ip6tables (iptables-restore < FILE)"
    }

    fn plan(&self, root: &Path, rendered: &Rendered) -> Result<Vec<PlannedFile>, PersistError> {
        let (v4, v6) = paths(root)?;
        Ok(ruleset_files(rendered, &v4, &v6, 0o600))
    }

    fn files(&self, root: &Path) -> Vec<PathBuf> {
        let (v4, v6) = paths(root).unwrap_or_else(|_| (V4.into(), V6.into()));
        vec![v4.into(), v6.into()]
    }
}
