//! Arch: `iptables.service` and `ip6tables.service` run
//! `iptables-restore /etc/iptables/iptables.rules` (and `ip6tables.rules`). The
//! package ships them world-readable; portcullis writes them 0600. A broken file
//! fails the unit.

use std::path::{Path, PathBuf};

use super::{Mechanism, PersistError, Persistence, PlannedFile, ruleset_files};
use crate::render::Rendered;

pub struct Arch;

pub const V4: &str = "/etc/iptables/iptables.rules";
pub const V6: &str = "/etc/iptables/ip6tables.rules";

impl Persistence for Arch {
    fn mechanism(&self) -> Mechanism {
        Mechanism::Arch
    }

    fn loader(&self) -> &'static str {
        "iptables.service and ip6tables.service (iptables-restore FILE)"
    }

    fn plan(&self, _root: &Path, rendered: &Rendered) -> Result<Vec<PlannedFile>, PersistError> {
        Ok(ruleset_files(rendered, V4, V6, 0o600))
    }

    fn files(&self, _root: &Path) -> Vec<PathBuf> {
        vec![V4.into(), V6.into()]
    }
}
