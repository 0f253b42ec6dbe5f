//! RHEL, Fedora, Rocky, Alma, CentOS: iptables-services. `iptables.service` and
//! `ip6tables.service` (real unit files running `/usr/libexec/iptables/iptables.init`)
//! restore `/etc/sysconfig/iptables` and `/etc/sysconfig/ip6tables`, mode 0600 as
//! the init script's own `save` writes them. A broken file fails the unit (the init
//! script returns 1), which is loud but leaves the host open.

use std::path::{Path, PathBuf};

use super::{Mechanism, PersistError, Persistence, PlannedFile, ruleset_files};
use crate::render::Rendered;

pub struct IptablesServices;

pub const V4: &str = "/etc/sysconfig/iptables";
pub const V6: &str = "/etc/sysconfig/ip6tables";

impl Persistence for IptablesServices {
    fn mechanism(&self) -> Mechanism {
        Mechanism::IptablesServices
    }

    fn loader(&self) -> &'static str {
        "iptables.service and ip6tables.service (/usr/libexec/iptables/iptables.init start)"
    }

    fn plan(&self, _root: &Path, rendered: &Rendered) -> Result<Vec<PlannedFile>, PersistError> {
        Ok(ruleset_files(rendered, V4, V6, 0o600))
    }

    fn files(&self, _root: &Path) -> Vec<PathBuf> {
        vec![V4.into(), V6.into()]
    }
}
