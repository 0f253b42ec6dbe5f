//! Rendered rulesets are accepted by the real `*-restore --test` of both backends,
//! run inside a fresh network namespace (`unshare -n`) so the host is never read.

use libtest_mimic::Trial;
use portcullis_harness::{Backend, Family};

use portcullis_harness::trial::privileged;

/// Run `BACKEND-restore -w --test` on `text` in a throwaway namespace.
pub fn restore_test_in_netns(backend: Backend, family: Family, text: &str) -> Result<(), String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let bin = backend.restore_binary(family);
    let mut child = Command::new("unshare")
        .args(["-n", &bin, "-w", "--test"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run unshare -n {bin}: {e}"))?;
    // A restore that refuses a line stops reading: ignore the broken pipe and let
    // its exit status and stderr say why.
    let _ = child.stdin.take().unwrap().write_all(text.as_bytes());
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{bin} --test refused the ruleset: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
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
