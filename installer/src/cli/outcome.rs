//! The `--json` result of `apply`, `confirm` and `rollback`: one object on stdout
//! when the verb ends, so a caller (the Ansible role in `ansible/`) reads a field
//! instead of scraping the text on stderr. Documented in docs/json.md.

use serde::Serialize;

use crate::apply::{ApplyError, Record};

/// The version of every portcullis JSON output (one constant for all of them).
pub use super::JSON_SCHEMA_VERSION as SCHEMA_VERSION;

/// How one `apply`, `confirm` or `rollback` ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub schema_version: u32,
    /// `apply`, `confirm` or `rollback`.
    pub verb: &'static str,
    /// `confirmed`, `rolled_back`, `rollback_failed`, `pending`, `refused`
    /// (bad input or a policy that would cut this session: nothing changed),
    /// `too_late` (confirm after the guard rolled back), `not_pending`
    /// (`rollback --if-pending ID` when ID is not pending) or `failed`.
    pub result: String,
    /// Whether the host's live rules are different from before the verb ran.
    pub changed: bool,
    /// The apply's record (id, deadline, backend, persisted, reason), when one exists.
    pub record: Option<Record>,
    /// Why the verb refused or failed, one message each.
    pub errors: Vec<String>,
}

impl Outcome {
    pub fn new(verb: &'static str, result: &str, changed: bool) -> Outcome {
        Outcome {
            schema_version: SCHEMA_VERSION,
            verb,
            result: result.to_owned(),
            changed,
            record: None,
            errors: Vec::new(),
        }
    }

    pub fn with_record(mut self, r: &Record) -> Outcome {
        self.record = Some(r.clone());
        self
    }

    pub fn with_error(mut self, e: impl std::fmt::Display) -> Outcome {
        self.errors.push(format!("{e:#}"));
        self
    }

    /// A refusal (exit 2, nothing changed): one error per reason.
    pub fn refused(verb: &'static str, e: &ApplyError) -> Outcome {
        let mut out = Outcome::new(verb, "refused", false);
        match e {
            ApplyError::Refused(reasons) => out.errors.extend(reasons.iter().cloned()),
            other => out = out.with_error(other),
        }
        out
    }

    /// Print on stdout, one line.
    pub fn print(&self) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(self)?);
        Ok(())
    }
}
