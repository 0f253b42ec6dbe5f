//! Scenarios: the user's own promises, written as files (the format of
//! docs/scenarios.md), proved with real packets in the lab. [`discover`] finds the
//! files and names their trials, [`format`] parses and validates one, [`run`] runs
//! one under one backend, [`junit`] writes the results for CI test reporters.
//!
//! `portcullis test` and the repository's own scenario suite
//! (`portcullis-scenarios`, libtest-mimic) both call [`check`] and [`run_trial`],
//! so the two cannot judge a file differently. Nothing here enters a namespace:
//! the lab's hosts run on their own threads.

pub mod discover;
pub mod format;
pub mod junit;
pub mod run;

use portcullis_harness::Backend;

pub use discover::{DiscoverError, Discovery, Found, discover, trial_name};
pub use format::{FormatError, ProbeStep, RulesetSource, Scenario, Step};

use crate::verify::Row;

/// Without a lab: every `counted_by` names a rule of the ruleset loaded at that
/// step (a renamed comment fails here, before any lab is built).
pub fn check(scn: &Scenario) -> Result<(), String> {
    run::check_counters_exist(scn)
}

/// Why a trial of a scenario cannot run here even as root (its backend,
/// conntrack or OpenSSH missing), or `None`. Root itself is the caller's to check.
pub fn cannot_run(backend: Backend, needs_ssh: bool) -> Option<String> {
    if let Some(r) = backend.unavailable_reason() {
        return Some(r);
    }
    // Links, routes and neighbour flushes go over rtnetlink (no `ip`); conntrack
    // is flushed over ctnetlink, and the binary is the fallback some kernels need.
    if portcullis_harness::backend::find_in_path("conntrack").is_none() {
        return Some("conntrack not found (install conntrack)".into());
    }
    if needs_ssh {
        // The lab makes its keys in-process: ssh-keygen is not needed.
        for bin in ["sshd", "ssh"] {
            if portcullis_harness::backend::find_in_path(bin).is_none() {
                return Some(format!(
                    "{bin} not found (install openssh-server and openssh-client)"
                ));
            }
        }
    }
    None
}

/// Whether the scenario needs OpenSSH (for [`cannot_run`]).
pub fn needs_ssh(scn: &Scenario) -> bool {
    run::uses_ssh(scn)
}

/// One trial: `scn` under `backend`, judged. `Ok` with every row when each held;
/// otherwise `Err` with the failure text (the file, its description and the
/// matrix with every mismatch) and the rows judged so far (none when the lab
/// itself failed).
pub fn run_trial(scn: &Scenario, backend: Backend) -> Result<Vec<Row>, TrialFailure> {
    let head = format!("{}: {}", scn.path.display(), scn.description);
    match run::run(scn, backend) {
        Ok(rows) if rows.iter().all(Row::pass) => Ok(rows),
        Ok(rows) => Err(TrialFailure {
            message: format!("{head}\n{}", run::matrix_text(&rows)),
            rows,
        }),
        Err(e) => Err(TrialFailure {
            message: format!("{head}\n{e}"),
            rows: Vec::new(),
        }),
    }
}

/// A trial that did not hold: what to print, and the rows behind it.
#[derive(Debug, Clone)]
pub struct TrialFailure {
    pub message: String,
    pub rows: Vec<Row>,
}

impl std::fmt::Display for TrialFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for TrialFailure {}
