//! Shared helpers for the installer's trials.

use libtest_mimic::{Completion, Failed, Trial};

/// Why a privileged trial cannot run here, or `None` when it can.
pub fn root_missing() -> Option<String> {
    if nix::unistd::geteuid().is_root() {
        None
    } else {
        Some("needs root (network namespaces, iptables): run ci/test, which uses sudo".into())
    }
}

/// A trial that runs anywhere.
pub fn trial(
    name: impl Into<String>,
    f: impl FnOnce() -> Result<(), Failed> + Send + 'static,
) -> Trial {
    Trial::test(name, f)
}

/// A trial that needs root; ignored with the reason when not root. `extra`
/// names any further reason it cannot run (a missing binary).
pub fn root_trial(
    name: impl Into<String>,
    extra: Option<String>,
    f: impl FnOnce() -> Result<(), Failed> + Send + 'static,
) -> Trial {
    let reason = root_missing().or(extra);
    let ignored = reason.is_some();
    // The static flag makes cargo test and nextest report the trial ignored; the kind
    // (printed in brackets before the name) carries the reason; a run with
    // `--ignored` still refuses at run time, with the reason, instead of failing.
    let kind = reason.clone();
    let t = Trial::ignorable_test(name, move || match reason {
        Some(r) => Ok(Completion::ignored_with(r)),
        None => f().map(|()| Completion::Completed),
    })
    .with_ignored_flag(ignored);
    match kind {
        Some(r) => t.with_kind(r),
        None => t,
    }
}

pub fn trials() -> Vec<Trial> {
    vec![trial("support::root_detection_is_consistent", || {
        let euid_root = nix::unistd::geteuid().is_root();
        if euid_root != root_missing().is_none() {
            return Err("root_missing disagrees with geteuid".into());
        }
        Ok(())
    })]
}
