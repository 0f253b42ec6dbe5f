//! `portcullis confirm`: from a NEW session, keep the pending apply and persist it.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apply::{self, ApplyError, ConfirmOptions, SshConnection};
use crate::cli::UsageError;
use crate::cli::outcome::Outcome;

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
    /// Print the outcome as one JSON object on stdout (docs/json.md)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let ssh = match SshConnection::current() {
        Ok(s) => s,
        Err(e) => {
            if json {
                Outcome::new("confirm", "refused", false)
                    .with_error(&e)
                    .print()?;
            }
            return Err(UsageError(e).into());
        }
    };
    let opts = ConfirmOptions {
        state_dir: args.state_dir,
        persist: args.no_persist.then_some(false),
        root: args.root,
        ssh,
    };
    match apply::confirm(&opts) {
        Ok(r) => {
            if json {
                Outcome::new("confirm", "confirmed", true)
                    .with_record(&r)
                    .print()?;
            }
            eprintln!("portcullis: confirmed apply {}: the new rules stay", r.id);
            match r.persisted {
                Some(p) => eprintln!("portcullis: persisted: {p}"),
                None => eprintln!(
                    "portcullis: not persisted (--no-persist): the rules last until the next reboot"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_refusal() => {
            if json {
                Outcome::refused("confirm", &e).print()?;
            }
            Err(UsageError(e.to_string()).into())
        }
        Err(e @ ApplyError::TooLate { .. }) => {
            if json {
                Outcome::new("confirm", "too_late", false)
                    .with_error(&e)
                    .print()?;
            }
            eprintln!("portcullis: {e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            if json {
                // Confirmed but not persisted: the guard stopped, the rules stay.
                let changed = matches!(e, ApplyError::Persist(_));
                Outcome::new("confirm", "failed", changed)
                    .with_error(&e)
                    .print()?;
            }
            Err(e.into())
        }
    }
}
