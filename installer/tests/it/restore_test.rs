//! Rendered rulesets are accepted by the real `*-restore --test` of both backends,
//! run inside a fresh network namespace (`unshare -n`) so the host is never read.

use libtest_mimic::Trial;
use portcullis_harness::{Backend, Family};

use portcullis_harness::trial::privileged;

/// Run `BACKEND-restore -w --test` on `text` in a throwaway namespace, through the
/// one runner (a restore that refuses a line stops reading; its stderr says why).
pub fn restore_test_in_netns(backend: Backend, family: Family, text: &str) -> Result<(), String> {
    let bin = backend.restore_binary(family);
    portcullis_harness::backend::run(&["unshare", "-n", &bin, "-w", "--test"], Some(text))
        .map(drop)
        .map_err(|e| format!("{bin} --test refused the ruleset: {e}"))
}

/// As `restore_test_in_netns`, after `ipset restore` of `sets` (when given) in the
/// same namespace, so rules that match the sets can be tested. The set text is
/// read from a file the script names (a constant script; paths are arguments).
pub fn restore_test_with_sets(
    backend: Backend,
    family: Family,
    sets: Option<&str>,
    text: &str,
) -> Result<(), String> {
    let Some(sets) = sets else {
        return restore_test_in_netns(backend, family, text);
    };
    let bin = backend.restore_binary(family);
    portcullis_harness::backend::test_with_sets("unshare", "ipset", &bin, sets, text)
        .map(drop)
        .map_err(|e| format!("ipset restore then {bin} --test refused the ruleset: {e}"))
}

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for backend in Backend::ALL {
        for family in Family::ALL {
            let name = format!("restore_test::embedded_default::{family}::{backend}");
            trials.push(privileged(name, backend.unavailable_reason(), move || {
                let rendered = portcullis::render(&portcullis::Policy::embedded_default());
                let text = rendered.text(family).ok_or("family not rendered")?;
                Ok(restore_test_in_netns(backend, family, &text)?)
            }));
        }
    }
    trials
}
