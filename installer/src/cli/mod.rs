//! The command line. One file per verb: it parses, calls the library, prints.
//!
//! Exit codes: 0 success; 1 the work failed (a check did not pass, an apply was
//! rolled back); 2 bad input (usage, an invalid policy, a policy `apply` and
//! `install` refuse, an unsafe state directory), with nothing changed.
//!
//! Every JSON output goes through `json`, which adds `schema_version`
//! (`JSON_SCHEMA_VERSION`, documented with the fields in docs/json.md).

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
pub mod test;
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
    /// Run your own scenario files in a namespace lab, under each backend (needs root)
    Test(test::Args),
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
}

// The processes `apply` starts for itself (`portcullis __guard`, `__watchdog`).
// They are not subcommands of `Cli`, so completions and the man page never offer
// them; `main` sends an argv whose verb starts with `__` here.
#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    about = "Internal processes of `portcullis apply` (never run them by hand)"
)]
enum Internal {
    /// The detached rollback guard that `apply` starts
    #[command(name = "__guard")]
    Guard(apply::GuardArgs),
    /// The guard's watchdog, the second line of defence
    #[command(name = "__watchdog")]
    Watchdog(apply::WatchdogArgs),
    /// The chrooted boot of `verify --root`, in a private mount namespace
    #[command(name = "__boot")]
    Boot,
    /// A rendering put through restore and save in a namespace of its own
    #[command(name = "__canonical")]
    Canonical(status::CanonicalArgs),
}

/// What the exit status means, for every verb (the man page and README say it).
pub const EXIT_STATUS: &[(u8, &str)] = &[
    (
        0,
        "success: the policy is valid (check), the rules were written (render, init, install), \
         every promise held (verify), the apply was confirmed (apply, confirm), the snapshot \
         is back (rollback)",
    ),
    (
        1,
        "the work failed: iptables-restore refused a ruleset, or --strict found a warning or \
         an untested ruleset (check); a probe mismatched or the lab failed (verify); the apply \
         was rolled back (apply) or came too late (confirm); the snapshot could not be \
         restored (rollback); a command or a write failed (any verb)",
    ),
    (
        2,
        "bad input, nothing changed: a usage error; an invalid policy (every error is \
         printed); a policy apply and install refuse (nobody in ssh.allow_from, an inbound \
         allow wider than it on the ssh port, a session the rules would cut); an unsafe \
         state directory; not root, or no iptables, where root and iptables are needed \
         (apply, verify)",
    ),
];

/// The version of every JSON output's shape; raised when a field changes meaning
/// or goes away (adding a field does not raise it). See docs/json.md.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// `value` as pretty JSON with `schema_version` first.
pub fn json<T: serde::Serialize>(value: &T) -> serde_json::Result<String> {
    #[derive(serde::Serialize)]
    struct Versioned<'a, T> {
        schema_version: u32,
        #[serde(flatten)]
        value: &'a T,
    }
    serde_json::to_string_pretty(&Versioned {
        schema_version: JSON_SCHEMA_VERSION,
        value,
    })
}

/// Print lints on stderr, each as `portcullis: warning: KEY: ...` and its fix.
pub fn warn(warnings: &[crate::Warning]) {
    for w in warnings {
        eprintln!("portcullis: {w}");
    }
}

/// The persistence lint of `root` (rc.local on Debian or Ubuntu), printed, for a
/// verb that will persist rules there. Detection errors are the verb's to report.
pub fn warn_persistence(root: &std::path::Path) {
    if let Ok(d) = crate::persist::detect(root) {
        warn(crate::lint::lint_persistence(&d).as_slice());
    }
}

/// The lints of a policy a verb is about to put on a host (`apply`, `install`):
/// printed, and a refusal (exit 2) when one of them refuses.
pub fn lint_for_apply(verb: &str, policy: &crate::Policy) -> Result<(), UsageError> {
    let warnings = crate::lint(policy);
    warn(&warnings);
    let refused: Vec<&str> = warnings
        .iter()
        .filter(|w| w.refuses_apply)
        .map(|w| w.key.as_str())
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(UsageError(format!(
            "{verb} refuses this policy: {} opens the ssh port wider than ssh.allow_from \
             (see the warning above; add override_ssh = true to the entry if you mean it)",
            refused.join(", ")
        )))
    }
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

/// Read the policy at `path`. A file other users could write is a warning; with
/// `refuse = Some(force)` (apply, install) it is refused unless `force`.
pub fn load_policy(
    path: &std::path::Path,
    refuse: Option<bool>,
) -> anyhow::Result<crate::policy::Loaded> {
    let loaded = crate::Policy::read(path)?;
    if let Some(why) = &loaded.writable_by_others {
        let msg = format!(
            "policy {} is writable by other users ({why}): whoever can write it decides this host's firewall; `chown root` and `chmod go-w` it",
            loaded.origin
        );
        match refuse {
            Some(false) => return Err(UsageError(format!("{msg}, or pass --force")).into()),
            _ => eprintln!("portcullis: warning: {msg}"),
        }
    }
    Ok(loaded)
}

/// The policy at `path` (warning when others could write it), or the embedded
/// default.
pub fn load_policy_or_default(path: Option<&std::path::Path>) -> anyhow::Result<crate::Policy> {
    match path {
        Some(p) => Ok(load_policy(p, None)?.policy),
        None => Ok(crate::Policy::embedded_default()),
    }
}

pub fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| a.starts_with("__"))
    {
        return match Internal::try_parse_from(argv) {
            Ok(Internal::Guard(a)) => finish(apply::run_guard(a)),
            Ok(Internal::Watchdog(a)) => finish(apply::run_watchdog(a)),
            Ok(Internal::Boot) => finish(verify::run_boot()),
            Ok(Internal::Canonical(a)) => finish(status::run_canonical(a)),
            Err(e) => usage_exit(&e),
        };
    }
    let cli = match Cli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => return usage_exit(&e),
    };
    let result = match cli.command {
        Command::Render(a) => render::run(a),
        Command::Check(a) => check::run(a),
        Command::Init(a) => init::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Test(a) => test::run(a),
        Command::Apply(a) => apply::run(a),
        Command::Confirm(a) => confirm::run(a),
        Command::Rollback(a) => rollback::run(a),
        Command::Status(a) => status::run(a),
        Command::Detect(a) => detect::run(a),
        Command::Install(a) => install::run(a),
        Command::Completions(a) => completions::run(a),
    };
    finish(result)
}

/// A clap error is a usage error (exit 2), unless it is `--help` or `--version`.
fn usage_exit(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    if e.use_stderr() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

/// Print an error the way every verb does and turn it into the exit status.
fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            // An invalid policy is every error of the file, one line each.
            match e.downcast_ref::<crate::PolicyError>() {
                Some(crate::PolicyError::Invalid(errors)) => {
                    for line in errors {
                        eprintln!("portcullis: error: {line}");
                    }
                }
                _ => eprintln!("portcullis: error: {e:#}"),
            }
            if is_usage(&e) {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Bad input (an invalid policy, a usage mistake, a state directory that is not
/// safe to use) exits 2; anything else exits 1.
pub(crate) fn is_usage(e: &anyhow::Error) -> bool {
    use crate::apply::ApplyError;
    use crate::apply::state::StateError;
    let unsafe_dir = |s: &StateError| matches!(s, StateError::Unsafe { .. });
    e.chain().any(|c| {
        c.downcast_ref::<crate::PolicyError>().is_some()
            || c.downcast_ref::<UsageError>().is_some()
            || c.downcast_ref::<StateError>().is_some_and(unsafe_dir)
            || c.downcast_ref::<ApplyError>().is_some_and(|a| match a {
                ApplyError::State(s) => unsafe_dir(s),
                a => a.is_refusal(),
            })
    })
}
