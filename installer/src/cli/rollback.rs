//! `portcullis rollback`: restore the snapshot of the pending apply now.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apply::{self, Status};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state directory apply used
    #[arg(long, value_name = "DIR", default_value = apply::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let r = apply::rollback(&args.state_dir)?;
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
                "portcullis: apply {} ended {s}: {}",
                r.id,
                r.reason.unwrap_or_default()
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
