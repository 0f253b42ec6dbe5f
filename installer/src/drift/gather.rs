//! The I/O half of drift: the live `*-save` of both families, the policy's
//! rendering put through the same backend's restore and save in a throwaway
//! network namespace (so both sides are spelled by one `*-save`), and
//! `install --check` of the persisted files. Reads the host; changes nothing.

use std::path::Path;

use portcullis_netfilter::{Backend, BackendError, Family, backend};

use super::{Drift, Persisted, PersistedState, compare};
use crate::persist::{self, FileStatus, InstallOptions, TestMode};

/// Compare this host's live rules, and the persisted files in `root`, with
/// `policy`. `exe` is the portcullis binary that canonicalises the rendering
/// (`portcullis __canonical`, in a network namespace of its own).
pub fn gather(
    policy: &crate::Policy,
    config: &str,
    backend: Backend,
    root: &Path,
    exe: &Path,
) -> Result<Drift, String> {
    let rendered = crate::render(policy);
    let sets = rendered.sets_text();
    let mut families = Vec::new();
    for family in Family::ALL {
        // A family whose tools fail to print anything has nothing loaded.
        let live = backend::save(backend, family, false).unwrap_or_default();
        let wanted = match rendered.text(family) {
            Some(text) => Some(
                canonical(exe, backend, family, &text, sets.as_deref()).map_err(|e| {
                    format!("cannot put the policy's {family} rules through {backend}: {e}")
                })?,
            ),
            None => None,
        };
        families.push(compare(family.name(), &live, wanted.as_deref()));
    }
    let persisted = match persist::detect(root) {
        Ok(d) => {
            let opts = InstallOptions {
                check_only: true,
                test: TestMode::Skip,
            };
            match persist::install(root, d.mechanism, &rendered, Some(backend), opts) {
                Ok(report) => {
                    let files: Vec<_> = report
                        .files
                        .into_iter()
                        .filter(|f| !matches!(f.status, FileStatus::Unchanged))
                        .collect();
                    Persisted {
                        state: if files.is_empty() {
                            PersistedState::InSync
                        } else {
                            PersistedState::Differs
                        },
                        root: root.display().to_string(),
                        mechanism: Some(d.mechanism.to_string()),
                        files,
                        reason: None,
                    }
                }
                Err(e) => unknown(root, Some(d.mechanism.to_string()), e.to_string()),
            }
        }
        Err(e) => unknown(root, None, e.to_string()),
    };
    Ok(Drift::new(
        config.to_owned(),
        backend.name().to_owned(),
        families,
        persisted,
    ))
}

fn unknown(root: &Path, mechanism: Option<String>, reason: String) -> Persisted {
    Persisted {
        state: PersistedState::Unknown,
        root: root.display().to_string(),
        mechanism,
        files: Vec::new(),
        reason: Some(reason),
    }
}

/// `text` as `backend`'s `*-save` prints it once loaded, from a child
/// (`exe __canonical`) that loads it in a network namespace of its own. With
/// `sets` (the `ipset restore` text of the sets the rules match), the child
/// loads them there first: its stdin is then the sets, a NUL, the rules.
pub fn canonical(
    exe: &Path,
    backend: Backend,
    family: Family,
    text: &str,
    sets: Option<&str>,
) -> Result<String, BackendError> {
    let exe = exe.to_string_lossy();
    let mut argv = vec![
        &*exe,
        "__canonical",
        "--backend",
        backend.name(),
        "--family",
        family.name(),
    ];
    let input = match sets {
        Some(sets) => {
            argv.push("--with-sets");
            format!("{sets}\0{text}")
        }
        None => text.to_owned(),
    };
    portcullis_netfilter::backend::run(&argv, Some(&input))
}

/// The child's side: leave this process's network namespace for a fresh one
/// (never loading anything into the one it was started in), load `sets` (with
/// `ipset restore`) and `text`, save.
pub fn canonical_here(
    backend: Backend,
    family: Family,
    text: &str,
    sets: Option<&str>,
) -> Result<String, String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot make a network namespace: {e}"))?;
    if let Some(sets) = sets {
        crate::apply::sets::ipset(&["restore"], Some(sets)).map_err(|e| e.to_string())?;
    }
    backend::restore(backend, family, text, false).map_err(|e| e.to_string())?;
    backend::save(backend, family, false).map_err(|e| e.to_string())
}
