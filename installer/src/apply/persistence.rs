//! The boundary between confirmation and persistence: `confirm` calls these two
//! functions and nothing else of `crate::persist`.
//!
//! Until the persistence module can detect and install, both answer with an error,
//! so a confirm that should persist fails loudly (and before it stops the guard)
//! instead of pretending the rules survive a reboot.

use std::path::Path;

use portcullis_harness::Backend;

/// The mechanism that would load the rules at boot, with the reason it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanism {
    pub name: String,
    pub reason: String,
}

/// The persistence mechanism of `root` (`/` for this host).
pub fn detect(root: &Path) -> Result<Mechanism, String> {
    let _ = root;
    Err("persistence is not built into this portcullis yet: rerun with --no-persist and write the rules with `portcullis install` later".into())
}

/// Write the applied rules where `mechanism` loads them at boot, under `root`.
/// Returns what was written, for the record.
pub fn install(
    root: &Path,
    mechanism: &Mechanism,
    v4: &str,
    v6: Option<&str>,
    backend: Backend,
) -> Result<String, String> {
    let _ = (root, v4, v6, backend);
    Err(format!(
        "cannot persist through {}: persistence is not built into this portcullis yet",
        mechanism.name
    ))
}
