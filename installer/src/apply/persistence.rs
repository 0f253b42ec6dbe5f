//! The boundary between confirmation and persistence: `apply` and `confirm` call
//! these two functions and nothing else of `crate::persist`.
//!
//! Confirm persists the exact text that was applied: it re-renders the policy
//! saved with the apply and refuses to persist when that differs from what is
//! live (a different portcullis binary in between), rather than write rules
//! nobody tested.

use std::path::Path;

use portcullis_netfilter::{Backend, Family};

use crate::persist::{self, InstallOptions, TestMode};
use crate::render::Rendered;

/// The mechanism that would load the rules at boot, with the reason it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanism {
    pub kind: persist::Mechanism,
    pub name: String,
    pub reason: String,
}

/// The persistence mechanism of `root` (`/` for this host).
pub fn detect(root: &Path) -> Result<Mechanism, String> {
    persist::detect(root)
        .map(|d| Mechanism {
            kind: d.mechanism,
            name: d.mechanism.name().to_owned(),
            reason: d.reason,
        })
        .map_err(|e| {
            format!(
                "cannot find how {} loads rules at boot: {e}; pass --no-persist, or --root DIR",
                root.display()
            )
        })
}

/// Why `root` could not load `rendered`'s ipsets before its rules at boot (no
/// ipset, the sets' loader missing, not enabled, not ordered first); empty when
/// the policy has no sets or the root can.
pub fn sets_refusals(root: &Path, mechanism: &Mechanism, rendered: &Rendered) -> Vec<String> {
    if rendered.sets.is_empty() {
        return Vec::new();
    }
    let v6 = rendered.text(Family::V6).is_some();
    match persist::loader::sets_refusals(root, mechanism.kind, v6) {
        Ok(r) => r,
        Err(e) => vec![format!(
            "cannot check how {} would load the ipsets at boot: {e}",
            root.display()
        )],
    }
}

/// Write `rendered` where `mechanism` loads it at boot, under `root`. `rendered`
/// must be the text that was applied (`applied_v4`, `applied_v6`): checked again
/// here, since nothing else may reach the boot files. Returns what was written.
pub fn install(
    root: &Path,
    mechanism: &Mechanism,
    rendered: &Rendered,
    applied_v4: &str,
    applied_v6: Option<&str>,
    backend: Backend,
) -> Result<String, String> {
    for (family, applied) in [(Family::V4, Some(applied_v4)), (Family::V6, applied_v6)] {
        if rendered.text(family).as_deref() != applied {
            return Err(format!(
                "the rendered {family} rules differ from those applied; run `portcullis install` once you have checked them"
            ));
        }
    }
    // The exact text passed `--test` and is live: no second test.
    let opts = InstallOptions {
        check_only: false,
        test: TestMode::Skip,
    };
    let report = persist::install(root, mechanism.kind, rendered, Some(backend), opts)
        .map_err(|e| format!("{e:#}"))?;
    let files: Vec<String> = report
        .files
        .iter()
        .map(|f| {
            let what = match &f.status {
                persist::FileStatus::Written { .. } => "written",
                persist::FileStatus::Unchanged => "unchanged",
                persist::FileStatus::WouldChange { .. } => "not written",
            };
            format!("{} {what}", f.path.display())
        })
        .collect();
    Ok(format!(
        "{} into {}: {}",
        mechanism.name,
        root.display(),
        files.join(", ")
    ))
}
