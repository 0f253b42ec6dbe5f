//! The command line. One file per verb: it parses, calls the library, prints.
//!
//! Exit codes: 0 success; 1 the work failed (a check did not pass, an apply was
//! rolled back); 2 bad input (usage, an invalid policy), with nothing changed.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod apply;
pub mod check;
pub mod completions;
pub mod confirm;
pub mod detect;
pub mod init;
pub mod install;
pub mod outcome;
pub mod render;
pub mod rollback;
pub mod status;
pub mod verify;

/// Default-deny iptables for Linux hosts, applied without locking the admin out.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render the ruleset of a policy as iptables-restore text
    Render(render::Args),
    /// Validate a policy, render it, and test it with iptables-restore --test
    Check(check::Args),
    /// Write a commented starter policy
    Init(init::Args),
    /// Prove a policy with real packets in a namespace lab (needs root)
    Verify(verify::Args),
    /// Apply a policy to this host with a rollback guard (needs root)
    Apply(apply::Args),
    /// Confirm a pending apply from a new session, then persist it
    Confirm(confirm::Args),
    /// Restore the snapshot of a pending apply now
    Rollback(rollback::Args),
    /// Show a pending apply, the backend, the persistence mechanism and conflicts
    Status(status::Args),
    /// Name the persistence mechanism of this host or of a root filesystem
    Detect(detect::Args),
    /// Write the rendered rules where the distro's boot loader reads them
    Install(install::Args),
    /// Print shell completions or the man page
    Completions(completions::Args),
    /// The detached rollback guard that `apply` starts (internal)
    #[command(name = "__guard", hide = true)]
    Guard(apply::GuardArgs),
    /// A rendering put through restore and save in a namespace of its own (internal)
    #[command(name = "__canonical", hide = true)]
    Canonical(status::CanonicalArgs),
}

/// An error that is the user's input, not the host: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The policy file a verb that changes a real host must be given: `apply` and
/// `install` never fall back to the embedded default (only `render`, `check`
/// and `verify` do), because its ssh source is a guess about someone else's
/// network and installing it on a live host would lock most admins out.
pub fn require_config<'a>(
    verb: &str,
    config: Option<&'a std::path::Path>,
) -> Result<&'a std::path::Path, UsageError> {
    config.ok_or_else(|| {
        let from: Vec<String> = crate::Policy::embedded_default()
            .ssh
            .allow_from
            .iter()
            .map(|n| n.to_string())
            .collect();
        UsageError(format!(
            "{verb} needs --config FILE: the embedded default allows ssh only from {}; write yours with portcullis init",
            from.join(", ")
        ))
    })
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = match cli.command {
        Command::Render(a) => render::run(a),
        Command::Check(a) => check::run(a),
        Command::Init(a) => init::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Apply(a) => apply::run(a),
        Command::Confirm(a) => confirm::run(a),
        Command::Rollback(a) => rollback::run(a),
        Command::Status(a) => status::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Install(a) => install::run(a),
        Command::Completions(a) => completions::run(a),
        Command::Guard(a) => apply::run_guard(a),
        Command::Canonical(a) => status::run_canonical(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: error: {e:#}");
            if is_usage(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Bad input (an invalid policy, a usage mistake) exits 2; anything else exits 1.
fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<crate::PolicyError>().is_some() || c.downcast_ref::<UsageError>().is_some()
    })
}
