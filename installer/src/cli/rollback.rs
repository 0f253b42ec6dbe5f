//! `portcullis rollback`: restore the snapshot of the pending apply now, or retry
//! a rollback that failed. Works with a stopped guard (it kills it) or a dead one.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apply::{self, Status};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state directory apply used
    #[arg(long, value_name = "DIR", default_value = apply::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Only if apply ID is still pending (exit 0 quietly otherwise): for a timer
    /// set when the apply started
    #[arg(long, value_name = "ID")]
    pub if_pending: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(r) = apply::rollback(&args.state_dir, args.if_pending.as_deref())? else {
        return Ok(ExitCode::SUCCESS);
    };
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
