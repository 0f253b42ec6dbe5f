//! Running probes in the lab: the one place `verify` and the scenario suite touch
//! namespaces, through the harness's lab (every probe runs on its host's own
//! thread; nothing here calls setns).

use portcullis_harness::{Backend, Family};

use super::counters::Observation;
use super::expect::Topology;
use super::model::{Host, ProbeSpec};
use super::{LabRules, Options, Report, Row, VerifyError};

/// What went wrong driving the lab (not a probe's outcome: that is data).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

/// A long-lived interactive SSH session opened by [`LabSession::open_ssh_session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshSessionId(pub usize);

/// The standard lab under one backend, with its target's rules.
pub struct LabSession {
    backend: Backend,
    topology: Topology,
}

impl LabSession {
    /// Build the standard lab.
    pub fn start(backend: Backend) -> Result<LabSession, ExecError> {
        let _ = backend;
        Err(ExecError("the lab is not built yet".into()))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Load `rules` into the target with one restore per family; a family without
    /// text is left with no rules at all.
    pub fn load(&mut self, _rules: &LabRules) -> Result<(), ExecError> {
        Err(ExecError("not built yet".into()))
    }

    /// Zero the target's counters and forget its conntrack entries.
    pub fn reset_counters(&mut self) -> Result<(), ExecError> {
        Err(ExecError("not built yet".into()))
    }

    /// Send one probe; its outcome and the counter deltas of its family.
    pub fn probe(&mut self, _spec: &ProbeSpec) -> Result<Observation, ExecError> {
        Err(ExecError("not built yet".into()))
    }

    /// Forget `host`'s neighbour cache of `family` (and its peers' entries for it).
    pub fn flush_neighbours(&mut self, _host: Host, _family: Family) -> Result<(), ExecError> {
        Err(ExecError("not built yet".into()))
    }

    /// Open an interactive SSH session from `from` to the target whose server side
    /// prints periodically without any client input.
    pub fn open_ssh_session(
        &mut self,
        _from: Host,
        _family: Family,
    ) -> Result<SshSessionId, ExecError> {
        Err(ExecError("not built yet".into()))
    }

    /// Whether the session's server output still arrives, with no client keystroke
    /// since the last check; the counter deltas over the wait.
    pub fn check_ssh_session(&mut self, _id: SshSessionId) -> Result<Observation, ExecError> {
        Err(ExecError("not built yet".into()))
    }
}

/// Build the standard lab for `backend`, load the rules, probe every expectation.
pub fn run_backend(
    opts: &Options,
    backend: Backend,
    report: &mut Report,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, VerifyError> {
    let lab_err = |e: ExecError| VerifyError::Lab {
        backend,
        message: e.0,
    };
    progress(&format!("{backend}: building the lab"));
    let mut lab = LabSession::start(backend).map_err(lab_err)?;
    let (rules, derived, mappings) = super::plan(opts, lab.topology());
    if report.mappings.is_empty() {
        report.mappings = mappings;
    }
    for n in derived.notes {
        if !report.notes.contains(&n) {
            report.notes.push(n);
        }
    }
    progress(&format!("{backend}: loading the rules"));
    lab.load(&rules).map_err(lab_err)?;
    let total = derived.expectations.len();
    let mut rows = Vec::with_capacity(total);
    for (i, exp) in derived.expectations.into_iter().enumerate() {
        let p = &exp.probe;
        let row = match lab.probe(p) {
            Ok(obs) => Row::judge(backend, exp, &obs),
            Err(e) => Row::error(backend, exp, e.0),
        };
        let p = &row.expectation.probe;
        progress(&format!(
            "{backend}: [{}/{total}] {} -> {} {} {}: {} ({})",
            i + 1,
            p.from,
            p.to,
            p.service(),
            p.family,
            row.observed.word(),
            if row.pass() {
                "as promised"
            } else {
                "MISMATCH"
            }
        ));
        rows.push(row);
    }
    Ok(rows)
}
