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

impl Persistence for Alpine {
    fn mechanism(&self) -> Mechanism {
        Mechanism::Alpine
    }

    fn loader(&self) -> &'static str {
        "OpenRC /etc/init.d/iptables and /etc/init.d/ip6tables (iptables-restore < FILE)"
    }

    fn plan(&self, _root: &Path, rendered: &Rendered) -> Result<Vec<PlannedFile>, PersistError> {
        Ok(ruleset_files(rendered, V4, V6, 0o600))
    }

    fn files(&self, _root: &Path) -> Vec<PathBuf> {
        vec![V4.into(), V6.into()]
    }
}
