//! `portcullis rollback`: restore the snapshot of the pending apply now.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apply::{self, Status};
use crate::cli::outcome::Outcome;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state directory apply used
    #[arg(long, value_name = "DIR", default_value = apply::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Print the outcome as one JSON object on stdout (docs/json.md)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let r = match apply::rollback(&args.state_dir) {
        Ok(r) => r,
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
        Outcome::new("rollback", &Outcome::word(r.status), changed)
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
        s => {
            eprintln!(
                "portcullis: apply {} ended {s:?}: {}",
                r.id,
                r.reason.unwrap_or_default()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
