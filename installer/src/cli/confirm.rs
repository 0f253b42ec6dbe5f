//! `portcullis confirm`: from a NEW session, keep the pending apply and persist it.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apply::{self, ApplyError, ConfirmOptions, SshConnection};
use crate::cli::UsageError;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state directory apply used
    #[arg(long, value_name = "DIR", default_value = apply::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Keep the rules live but do not persist them
    #[arg(long)]
    pub no_persist: bool,
    /// Persist into this root filesystem (default: what apply was given)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let ssh = SshConnection::current().map_err(UsageError)?;
    let opts = ConfirmOptions {
        state_dir: args.state_dir,
        persist: args.no_persist.then_some(false),
        root: args.root,
        ssh,
    };
    match apply::confirm(&opts) {
        Ok(r) => {
            eprintln!("portcullis: confirmed apply {}: the new rules stay", r.id);
            match r.persisted {
                Some(p) => eprintln!("portcullis: persisted: {p}"),
                None => eprintln!(
                    "portcullis: not persisted (--no-persist): the rules last until the next reboot"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_refusal() => Err(UsageError(e.to_string()).into()),
        Err(e @ ApplyError::TooLate { .. }) => {
            eprintln!("portcullis: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
