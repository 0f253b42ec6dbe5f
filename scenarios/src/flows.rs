//! Flows that need code rather than a file, registered in the same runner: one
//! trial per flow x backend.

use libtest_mimic::{Failed, Trial};
use portcullis::Policy;
use portcullis::verify::{self, Options};
use portcullis_harness::Backend;

use crate::{cannot_run, privileged_trial};

/// `portcullis verify`'s core on the embedded default: every promise the default
/// policy makes holds in the lab.
fn verify_default(backend: Backend) -> Result<(), Failed> {
    let opts = Options {
        policy: Policy::embedded_default(),
        backends: vec![backend],
        rules_v4: None,
        rules_v6: None,
    };
    let report = verify::verify(&opts, &mut |_| {}).map_err(|e| e.to_string())?;
    if report.passed() {
        Ok(())
    } else {
        let mut out = Vec::new();
        let _ = verify::matrix::print(&report.rows, &mut out);
        Err(String::from_utf8_lossy(&out).into_owned().into())
    }
}

pub fn trials() -> Vec<Trial> {
    let mut out = Vec::new();
    for backend in Backend::ALL {
        out.push(privileged_trial(
            format!("flows::verify_default::{backend}"),
            cannot_run(backend, true),
            move || verify_default(backend),
        ));
    }
    out
}
