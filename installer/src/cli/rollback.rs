//! `portcullis rollback`: restore the snapshot of the pending apply now, or retry
//! a rollback that failed. Works with a stopped guard (it kills it) or a dead one.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apply::{self, Status};
use crate::cli::outcome::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state directory apply used
    #[arg(long, value_name = "DIR", default_value = apply::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Only if apply ID is still pending (exit 0 quietly otherwise): for a timer
    /// set when the apply started
    #[arg(long, value_name = "ID")]
    pub if_pending: Option<String>,
    /// Print the outcome as one JSON object on stdout (docs/json.md)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let r = match apply::rollback(&args.state_dir, args.if_pending.as_deref()) {
        Ok(Some(r)) => r,
        Ok(None) => {
            // `--if-pending ID` and apply ID is not the pending one: nothing to do.
            if args.json {
                Outcome::new("rollback", "not_pending", false).print()?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => {
            if args.json {
                Outcome::new("rollback", "failed", false)
                    .with_error(&e)
                    .print()?;
            }
            return Err(e.into());
        }
    };
    if args.json {
        // Rolled back: the snapshot replaced the applied rules.
        let changed = r.status == Status::RolledBack;
        Outcome::new("rollback", &r.status.to_string(), changed)
            .with_record(&r)
            .print()?;
    }
    match r.status {
        Status::RolledBack => {
            eprintln!(
                "portcullis: rolled back apply {}: {}",
                r.id,
                r.reason.unwrap_or_default()
            );
            Ok(ExitCode::SUCCESS)
        }
        Status::RollbackFailed => {
            eprintln!(
                "portcullis: ROLLBACK FAILED for apply {}, the previous rules are NOT back: {}",
                r.id,
                r.reason.unwrap_or_default()
            );
            eprintln!(
                "portcullis: the apply stays pending: fix the cause and run `portcullis rollback` again"
            );
            Ok(ExitCode::FAILURE)
        }
        s => {
            eprintln!(
                "portcullis: apply {} ended {s}: {}",
                r.id,
                r.reason.unwrap_or_default()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
