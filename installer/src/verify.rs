//! `verify`: build the standard lab, load a policy's rendering (or hand-written
//! restore files) into its target, derive what the POLICY promises, probe every
//! promise with real packets, and report a reachability matrix.
//!
//! The promises come from the policy alone ([`expect::expectations`]), never from
//! the rules under test, so a hand-written file is judged against the intent.
//! It refuses to run without root and never touches the host's own namespace:
//! the lab is made of anonymous namespaces that die with the process.

pub mod boot;
pub mod counters;
pub mod exec;
pub mod expect;
pub mod matrix;
pub mod model;

use portcullis_harness::{Backend, Family};

pub use counters::{answers, check, counted, counted_anywhere, selector};
pub use expect::{Derived, Mapping, Topology, apply_mappings, expectations, map_policy, map_text};
pub use matrix::Row;
pub use model::{CountedBy, Expect, Expectation, HOSTS, HostId, ProbeKind, ProbeSpec, parse_host};

use crate::Policy;

/// What to verify.
#[derive(Debug, Clone)]
pub struct Options {
    pub policy: Policy,
    pub backends: Vec<Backend>,
    /// Hand-written restore text to load instead of the policy's rendering.
    pub rules_v4: Option<String>,
    pub rules_v6: Option<String>,
}

/// Everything `verify` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    #[serde(serialize_with = "ser_backends")]
    pub backends: Vec<Backend>,
    /// The policy CIDRs replaced by lab subnets.
    pub mappings: Vec<Mapping>,
    /// Whether the mappings were applied textually to hand-written files.
    pub hand_written: bool,
    /// What could not be probed, and why.
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
    /// Every row held (the exit status of `portcullis verify`).
    pub passed: bool,
}

fn ser_backends<S: serde::Serializer>(b: &[Backend], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(b.iter().map(|b| b.name()))
}

impl Report {
    pub fn passed(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(Row::pass)
    }
}

/// The restore text to load into the lab's target, per family (`None`: that family
/// is left without rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabRules {
    pub v4: Option<String>,
    pub v6: Option<String>,
    /// The `ipset restore` text of the sets the rules match, loaded first.
    pub sets: Option<String>,
}

impl LabRules {
    pub fn get(&self, family: Family) -> Option<&str> {
        match family {
            Family::V4 => self.v4.as_deref(),
            Family::V6 => self.v6.as_deref(),
        }
    }
}

/// The rules and promises for one lab: the policy mapped onto `topo`, rendered
/// (or the hand-written files, mapped textually), and its expectations.
pub fn plan(opts: &Options, topo: &Topology) -> (LabRules, Derived, Vec<Mapping>) {
    let (lab_policy, mappings) = map_policy(&opts.policy, topo);
    let mut derived = expectations(&lab_policy, topo);
    let hand_written = opts.rules_v4.is_some() || opts.rules_v6.is_some();
    let rules = if hand_written {
        expect::relax_for_hand_written(&mut derived.expectations);
        if opts.rules_v6.is_none() {
            derived.notes.push(
                "no --rules-v6 given: IPv6 is probed with no rules loaded (a host's IPv6 is wide open then)"
                    .into(),
            );
        }
        if opts.rules_v4.is_none() {
            derived
                .notes
                .push("no --rules-v4 given: IPv4 is probed with no rules loaded".into());
        }
        LabRules {
            v4: opts.rules_v4.as_deref().map(|t| map_text(t, &mappings)),
            v6: opts.rules_v6.as_deref().map(|t| map_text(t, &mappings)),
            sets: None,
        }
    } else {
        let r = crate::render(&lab_policy);
        LabRules {
            v4: r.text(Family::V4),
            v6: r.text(Family::V6),
            sets: r.sets_text(),
        }
    };
    (rules, derived, mappings)
}

/// Why `verify` could not run at all (as opposed to a promise not holding).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "verify needs root: it builds network namespaces and loads rules into them; run it with sudo"
    )]
    NotRoot,
    #[error("backend {backend} is not usable here: {reason}")]
    BackendMissing { backend: Backend, reason: String },
    #[error("the lab failed under backend {backend}: {message}")]
    Lab { backend: Backend, message: String },
}

/// Run the whole verification, reporting progress through `progress` (one line
/// per event). Mismatches are in the report, not errors.
pub fn verify(opts: &Options, progress: &mut dyn FnMut(&str)) -> Result<Report, VerifyError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(VerifyError::NotRoot);
    }
    for &backend in &opts.backends {
        if let Some(reason) = backend.unavailable_reason() {
            return Err(VerifyError::BackendMissing { backend, reason });
        }
    }
    let (rules, derived, mappings) = plan(opts, &exec::topology());
    let mut report = Report {
        backends: opts.backends.clone(),
        mappings,
        hand_written: opts.rules_v4.is_some() || opts.rules_v6.is_some(),
        notes: derived.notes,
        rows: Vec::new(),
        passed: false,
    };
    // One lab per backend, all at once: each lab is its own set of namespaces and
    // threads, so they cannot see each other. Progress lines come back here.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = opts
            .backends
            .iter()
            .map(|&backend| {
                let tx = tx.clone();
                let (rules, exps) = (&rules, derived.expectations.clone());
                scope.spawn(move || {
                    exec::run_backend(backend, rules, exps, &mut |line| {
                        let _ = tx.send(line.to_owned());
                    })
                })
            })
            .collect();
        drop(tx);
        for line in rx {
            progress(&line);
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Vec<_>>()
    });
    for rows in results {
        report.rows.extend(rows?);
    }
    report.passed = report.passed();
    Ok(report)
}
