//! `portcullis apply`: apply a policy to this host behind a rollback guard, then
//! wait, with a countdown, for `portcullis confirm` from a new session. Refuses
//! to run without `--config`: the embedded default is never applied by accident.
//!
//! Also the hidden `portcullis __guard`, the detached process that rolls back.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use portcullis_netfilter::Backend;

use crate::apply::{self, ApplyError, ApplyOptions, Status, clock};
use crate::cli::UsageError;
use crate::cli::outcome::Outcome;

/// Which iptables backend to load the rules with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// What `iptables -V` says
    Auto,
    Nft,
    Legacy,
}

impl BackendChoice {
    pub fn resolve(self) -> anyhow::Result<Backend> {
        Ok(match self {
            BackendChoice::Auto => Backend::detect().context(
                "cannot detect the iptables backend; pass --backend nft or --backend legacy",
            )?,
            BackendChoice::Nft => Backend::Nft,
            BackendChoice::Legacy => Backend::Legacy,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (required: apply never uses the embedded default)
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seconds to wait for `portcullis confirm` before the guard rolls back
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub timeout: u64,
    /// The root-only directory for the snapshot, the lock and the guard's record
    #[arg(long, value_name = "DIR", default_value = apply::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The iptables backend
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// Do not persist the rules when confirmed (they last until the next reboot)
    #[arg(long)]
    pub no_persist: bool,
    /// Persist into this root filesystem when confirmed
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Apply despite conflicting firewall managers, the other backend's rules, or a
    /// policy file other users can write (never despite a policy that would cut
    /// this ssh session)
    #[arg(long)]
    pub force: bool,
    /// You are at the machine's console, not in an ssh session: do not refuse a
    /// terminal in which no ssh session can be found
    #[arg(long)]
    pub i_am_on_the_console: bool,
    /// When the apply ends, print its outcome as one JSON object on stdout
    /// (docs/json.md); the countdown still goes to stderr
    #[arg(long)]
    pub json: bool,
    /// Return once the rules are live and the guard is armed, without waiting for
    /// confirm: the guard still rolls back at the deadline unless a NEW session
    /// confirms (for automation such as the Ansible role, docs/fleet.md)
    #[arg(long)]
    pub no_wait: bool,
}

/// Write to stderr, ignoring a terminal that has gone away: the guard is in
/// charge then, and a panic here would only add noise.
fn say(msg: std::fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(msg);
    let _ = err.flush();
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let result = run_checked(args);
    // `--json` prints its one object whatever the exit (docs/json.md): a
    // refusal or failure before anything was started prints it here.
    if let (true, Err(e)) = (json, &result)
        && !e.is::<Reported>()
    {
        let word = if crate::cli::is_usage(e) {
            "refused"
        } else {
            "failed"
        };
        Outcome::new("apply", word, false).with_error(e).print()?;
    }
    result.map_err(|e| match e.downcast::<Reported>() {
        Ok(Reported(inner)) => inner,
        Err(e) => e,
    })
}

/// An error whose `--json` object is already printed.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct Reported(anyhow::Error);

fn run_checked(args: Args) -> anyhow::Result<ExitCode> {
    // Bad input before privilege: exit 2 for anyone, nothing touched.
    let config = crate::cli::require_config("apply", args.config.as_deref())?.to_owned();
    if !nix::unistd::geteuid().is_root() {
        return Err(UsageError(
            "`portcullis apply` changes the host's firewall and needs root: run it with sudo"
                .into(),
        )
        .into());
    }
    // Read once, parse that text, and keep it: confirm persists exactly this.
    let loaded = crate::cli::load_policy(&config, Some(args.force))?;
    crate::cli::lint_for_apply("apply", &loaded.policy)?;
    if !args.no_persist {
        crate::cli::warn_persistence(&args.root);
    }
    let backend = args.backend.resolve()?;
    let opts = ApplyOptions {
        config: loaded.origin,
        policy: loaded.policy,
        policy_text: loaded.text,
        timeout: Duration::from_secs(args.timeout),
        state_dir: args.state_dir,
        backend,
        persist: !args.no_persist,
        root: args.root,
        force: args.force,
        guard_exe: std::env::current_exe()
            .context("cannot find the portcullis binary to run as the guard")?,
        on_console: args.i_am_on_the_console,
    };
    let json = args.json;
    let mut started = match apply::start(&opts) {
        Ok(s) => s,
        Err(e) if e.is_refusal() => {
            if json {
                // One error per reason (the caller's object would hold one).
                Outcome::refused("apply", &e).print()?;
                return Err(Reported(UsageError(e.to_string()).into()).into());
            }
            return Err(UsageError(e.to_string()).into());
        }
        Err(e @ ApplyError::ApplyFailed { rolled_back, .. }) => {
            let what = if rolled_back {
                "ROLLED BACK"
            } else {
                "ROLLBACK FAILED, check the rules by hand"
            };
            say(format_args!("portcullis: {what}: {e}\n"));
            if json {
                let word = if rolled_back {
                    "rolled_back"
                } else {
                    "rollback_failed"
                };
                Outcome::new("apply", word, !rolled_back)
                    .with_error(&e)
                    .print()?;
            }
            return Ok(ExitCode::FAILURE);
        }
        // `run` prints the failed object.
        Err(e) => return Err(e.into()),
    };
    let rec = started.record.clone();
    // What the sets add to the "applied" line (names and entries), if any.
    let sets_said = if started.sets.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = started.sets.iter().map(|(n, _)| n.as_str()).collect();
        let entries: usize = started.sets.iter().map(|(_, n)| n).sum();
        let noun = if entries == 1 { "entry" } else { "entries" };
        format!(" and ipsets {} ({entries} {noun})", names.join(", "))
    };
    say(format_args!(
        "portcullis: applied {}{sets_said} ({}) with the {backend} backend; snapshot and guard (pid {}) in {}\n\
         portcullis: from a NEW ssh session run `portcullis confirm{}` before {} or the old rules come back\n",
        rec.families.join(" and "),
        rec.config,
        rec.guard_pid.unwrap_or(0),
        started.state.path().display(),
        if started.state.path() == std::path::Path::new(apply::state::DEFAULT_STATE_DIR) {
            String::new()
        } else {
            format!(" --state-dir {}", started.state.path().display())
        },
        clock(rec.deadline_unix_ms),
    ));
    if args.no_wait {
        if json {
            Outcome::new("apply", &rec.status.to_string(), true)
                .with_record(&rec)
                .print()?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    // One line a second: over a non-interactive `ssh host portcullis apply` this
    // output is the only traffic, and it is what keeps the session visibly alive.
    let tty = std::io::stderr().is_terminal();
    let result = started.wait(|ms| {
        let secs = (ms.max(0) + 999) / 1000;
        if tty {
            say(format_args!(
                "\rportcullis: waiting for confirm: {secs:>4} s left "
            ));
        } else {
            say(format_args!(
                "portcullis: waiting for confirm: {secs} s left\n"
            ));
        }
    });
    if tty {
        say(format_args!("\n"));
    }
    let done = result?;
    if started.took_over {
        let why = done.reason.as_deref().unwrap_or("");
        say(format_args!("portcullis: the guard failed: {why}\n"));
    }
    if json {
        // Confirmed: the new rules stay (changed). Rolled back: the snapshot is
        // live again (unchanged). Anything else leaves the host unknown.
        let changed = done.status != Status::RolledBack;
        Outcome::new("apply", &done.status.to_string(), changed)
            .with_record(&done)
            .print()?;
    }
    match done.status {
        Status::Confirmed => {
            say(format_args!("portcullis: confirmed: the new rules stay\n"));
            Ok(ExitCode::SUCCESS)
        }
        Status::RolledBack => {
            say(format_args!(
                "portcullis: ROLLED BACK: {}; the previous rules are live again\n",
                done.reason.unwrap_or_default()
            ));
            Ok(ExitCode::FAILURE)
        }
        Status::RollbackFailed => {
            say(format_args!(
                "portcullis: ROLLBACK FAILED, the previous rules are NOT back: {}\n\
                 portcullis: fix the cause, then run `portcullis rollback` again\n",
                done.reason.unwrap_or_default()
            ));
            Ok(ExitCode::FAILURE)
        }
        s => {
            say(format_args!(
                "portcullis: {s}: {}\n",
                done.reason.unwrap_or_default()
            ));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The hidden guard subcommand; never run it by hand.
#[derive(Debug, clap::Args)]
pub struct GuardArgs {
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    #[arg(long)]
    pub id: String,
}

/// The hidden watchdog subcommand the guard starts; never run it by hand.
#[derive(Debug, clap::Args)]
pub struct WatchdogArgs {
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    #[arg(long)]
    pub id: String,
    /// The guard's pid (the watchdog's parent)
    #[arg(long)]
    pub guard: i32,
}

pub fn run_watchdog(args: WatchdogArgs) -> anyhow::Result<ExitCode> {
    apply::watchdog::run(&args.state_dir, &args.id, args.guard)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_guard(args: GuardArgs) -> anyhow::Result<ExitCode> {
    match apply::guard::run(&args.state_dir, &args.id)? {
        Status::Confirmed | Status::RolledBack => Ok(ExitCode::SUCCESS),
        _ => Ok(ExitCode::FAILURE),
    }
}
