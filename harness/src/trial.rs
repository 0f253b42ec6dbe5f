//! The one privileged-trial helper of the workspace: every libtest-mimic trial
//! that needs root (network namespaces, netlink, iptables) is built by
//! [`privileged`], so it is reported ignored, with one reason ([`NEEDS_ROOT`]),
//! when not root, and never silently passed.

use libtest_mimic::{Completion, Failed, Trial};

/// The reason a privileged trial (or a benchmark) gives when not root.
pub const NEEDS_ROOT: &str =
    "needs root (network namespaces, netlink, iptables): run ci/test, which uses sudo";

/// [`NEEDS_ROOT`] when this process is not root, `None` when it is.
pub fn root_missing() -> Option<String> {
    (!crate::sys::is_root()).then(|| NEEDS_ROOT.to_owned())
}

/// What a trial body returns: `()` for "ran", or a [`Completion`] when only the
/// body can tell that it cannot run here (a root image that failed to build).
pub trait Finished {
    fn completion(self) -> Completion;
}

impl Finished for () {
    fn completion(self) -> Completion {
        Completion::Completed
    }
}

impl Finished for Completion {
    fn completion(self) -> Completion {
        self
    }
}

/// A trial that needs root, ignored with the reason when not root or when
/// `extra` names another reason it cannot run (a backend or binary missing).
/// The static flag makes `cargo test` and nextest list it ignored; the kind
/// (printed in brackets before the name) carries the reason; under `--ignored`
/// it still refuses at run time, with the reason, instead of failing.
pub fn privileged<T: Finished>(
    name: impl Into<String>,
    extra: Option<String>,
    f: impl FnOnce() -> Result<T, Failed> + Send + 'static,
) -> Trial {
    let reason = root_missing().or(extra);
    let kind = reason.clone();
    let t = Trial::ignorable_test(name, move || match reason {
        Some(r) => Ok(Completion::ignored_with(r)),
        None => f().map(Finished::completion),
    })
    .with_ignored_flag(kind.is_some());
    match kind {
        Some(k) => t.with_kind(k),
        None => t,
    }
}

/// Give `args` four test threads (or as many as there are cores, if more)
/// unless `--test-threads N` or RUST_TEST_THREADS says otherwise: a lab trial
/// spends its time waiting (packets, deadlines, sshd logins, child processes),
/// not computing, so more run at once than there are cores.
pub fn wait_bound_threads(args: &mut libtest_mimic::Arguments) {
    if args.test_threads.is_none() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        args.test_threads = Some(
            std::env::var("RUST_TEST_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(cores.max(4)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignored_exactly_when_a_reason_exists() {
        let root = crate::sys::is_root();
        let plain = privileged("plain", None, || Ok::<(), Failed>(()));
        assert_eq!(plain.has_ignored_flag(), !root);
        assert_eq!(plain.kind(), if root { "" } else { NEEDS_ROOT });
        let extra = privileged("extra", Some("no backend".into()), || Ok::<(), Failed>(()));
        assert!(extra.has_ignored_flag());
        assert_eq!(extra.kind(), if root { "no backend" } else { NEEDS_ROOT });
    }
}
