//! Alpine: OpenRC's `/etc/init.d/iptables` (and its `ip6tables` link) restore
//! `IPTABLES_SAVE` from `/etc/conf.d/iptables`, by default `/etc/iptables/rules-save`
//! and `/etc/ip6tables/rules-save`, with `iptables-restore < FILE`. The service must
//! be in a runlevel (`rc-update add iptables default`); a broken file fails it.

use std::path::{Path, PathBuf};

use super::openrc::RulesSave;
use super::{Mechanism, PersistError, Persistence, PlannedFile};
use crate::render::Rendered;

pub struct Alpine;

pub const V4: &str = "/etc/iptables/rules-save";
pub const V6: &str = "/etc/ip6tables/rules-save";

const SAVE: RulesSave = RulesSave { v4: V4, v6: V6 };

impl Persistence for Alpine {
    fn mechanism(&self) -> Mechanism {
        Mechanism::Alpine
    }

    fn loader(&self) -> &'static str {
        "OpenRC /etc/init.d/iptables and /etc/init.d/ip6tables (iptables-restore < FILE)"
    }

    fn plan(&self, root: &Path, rendered: &Rendered) -> Result<Vec<PlannedFile>, PersistError> {
        Ok(SAVE.plan(&SAVE.paths_in(root)?, rendered))
    }

    fn files(&self, root: &Path) -> Vec<PathBuf> {
        SAVE.files(SAVE.paths_in(root))
    }
}
