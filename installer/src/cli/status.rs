//! `portcullis status`: a pending apply, its deadline, the backend, the persistence
//! mechanism and conflicts; with `--config`, drift: the live rules of both
//! families and the persisted files compared with the policy (`--check` exits 1
//! when they differ).
//!
//! Also the hidden `portcullis __canonical`, which drift runs to have the policy's
//! rendering spelled by `*-save` (in a network namespace of its own).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::apply::{self, clock};
use crate::cli::apply::BackendChoice;
use crate::drift::{self, Drift, PersistedState, State};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The state directory apply used
    #[arg(long, value_name = "DIR", default_value = apply::state::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The root filesystem whose persistence mechanism to name
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
    /// Compare the live rules and the persisted files with this policy (drift)
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// With --config: exit 1 when anything differs from the policy
    #[arg(long, requires = "config")]
    pub check: bool,
    /// With --config: the iptables backend whose rules to read
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
}

/// `status --json` with `--config`: the status fields and the drift.
#[derive(serde::Serialize)]
struct WithDrift<'a> {
    #[serde(flatten)]
    status: &'a apply::StatusReport,
    drift: &'a Drift,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let s = apply::status(&args.state_dir, &args.root)?;
    let drift = match &args.config {
        Some(config) => {
            let policy = crate::cli::load_policy(config, None)?.policy;
            let exe = std::env::current_exe()
                .context("cannot find the portcullis binary to canonicalise the rendering")?;
            let d = drift::gather::gather(
                &policy,
                &config.display().to_string(),
                args.backend.resolve()?,
                &args.root,
                &exe,
            )
            .map_err(anyhow::Error::msg)?;
            Some(d)
        }
        None => None,
    };
    let code = match &drift {
        Some(d) if args.check && !d.in_sync => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    };
    if args.json {
        match &drift {
            Some(d) => println!(
                "{}",
                super::json(&WithDrift {
                    status: &s,
                    drift: d
                })?
            ),
            None => println!("{}", super::json(&s)?),
        }
        return Ok(code);
    }
    match (&s.pending, s.remaining_secs) {
        (Some(r), Some(left)) => {
            println!(
                "pending:     apply {} of {} ({}), {} until {} ({left} s left)",
                r.id,
                r.config,
                r.families.join(", "),
                r.status,
                clock(r.deadline_unix_ms)
            );
            println!(
                "guard:       pid {} {}",
                r.guard_pid.unwrap_or(0),
                match s.guard.as_deref() {
                    Some("watching") => "watching",
                    Some("stopped") => {
                        "STOPPED (SIGSTOP?): it cannot roll back; `kill -CONT` it, or run `portcullis rollback` (kills it and restores)"
                    }
                    _ => "GONE: run `portcullis rollback` or `portcullis confirm`",
                }
            );
            println!(
                "watchdog:    pid {} {}",
                r.watchdog_pid.unwrap_or(0),
                if s.watchdog_alive == Some(true) {
                    "watching"
                } else {
                    "gone"
                }
            );
            if let Some(c) = &r.ssh_connection {
                println!("applied from: ssh {c}");
            }
        }
        (Some(r), None) if r.status == apply::Status::RollbackFailed => {
            println!(
                "pending:     apply {} ROLLBACK FAILED: {}",
                r.id,
                r.reason.clone().unwrap_or_default()
            );
            println!("             fix the cause, then run `portcullis rollback` again");
        }
        _ => println!("pending:     none"),
    }
    if let Some(r) = &s.last {
        println!(
            "last:        apply {} {} at {}: {}{}",
            r.id,
            r.status,
            clock(r.ended_unix_ms.unwrap_or(0)),
            r.reason.clone().unwrap_or_default(),
            r.persisted
                .as_ref()
                .map(|p| format!("; persisted: {p}"))
                .unwrap_or_default()
        );
    }
    println!(
        "backend:     {}",
        s.backend
            .as_deref()
            .unwrap_or("unknown (iptables -V failed)")
    );
    match (&s.persistence, &s.persistence_error) {
        (Some(m), _) => println!("persistence: {m}"),
        (None, e) => println!("persistence: unknown: {}", e.as_deref().unwrap_or("")),
    }
    if s.conflicts.is_empty() {
        println!("conflicts:   none");
    } else {
        for c in &s.conflicts {
            println!("conflict:    {c}");
        }
    }
    if let Some(d) = &drift {
        print_drift(d);
    }
    Ok(code)
}

fn print_drift(d: &Drift) {
    println!(
        "drift:       {} ({} with the {} backend)",
        if d.in_sync { "in-sync" } else { "DIFFERS" },
        d.config,
        d.backend
    );
    for f in &d.families {
        let state = match f.state {
            State::InSync => "in-sync",
            State::Differs => "differs",
            State::Missing => "MISSING",
            State::NotManaged => "not managed by the policy",
        };
        println!("  {}:       {state}", f.family);
        for line in &f.differences {
            println!("    {line}");
        }
        for note in &f.notes {
            println!("    note: {note}");
        }
    }
    let p = &d.persisted;
    match p.state {
        PersistedState::InSync => println!(
            "  persisted:  in-sync ({} in {})",
            p.mechanism.as_deref().unwrap_or(""),
            p.root
        ),
        PersistedState::Differs => {
            println!(
                "  persisted:  differs ({} in {})",
                p.mechanism.as_deref().unwrap_or(""),
                p.root
            );
            for f in &p.files {
                if let crate::persist::FileStatus::WouldChange { diff } = &f.status {
                    print!("{diff}");
                }
            }
        }
        PersistedState::Unknown => println!(
            "  persisted:  unknown: {}",
            p.reason.as_deref().unwrap_or("")
        ),
    }
}

/// The hidden canonicaliser drift runs; never run it by hand (harmless if
/// one does: it loads nothing outside the namespace it makes).
#[derive(Debug, clap::Args)]
pub struct CanonicalArgs {
    #[arg(long)]
    pub backend: portcullis_netfilter::Backend,
    #[arg(long)]
    pub family: portcullis_netfilter::Family,
    /// Stdin is the sets' `ipset restore` text, a NUL, then the rules.
    #[arg(long)]
    pub with_sets: bool,
}

pub fn run_canonical(args: CanonicalArgs) -> anyhow::Result<ExitCode> {
    use std::io::Read as _;
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let (sets, rules) = match (args.with_sets, text.split_once('\0')) {
        (true, Some((sets, rules))) => (Some(sets), rules),
        (true, None) => anyhow::bail!("--with-sets: no NUL between the sets and the rules"),
        (false, _) => (None, text.as_str()),
    };
    let saved = drift::gather::canonical_here(args.backend, args.family, rules, sets)
        .map_err(anyhow::Error::msg)?;
    print!("{saved}");
    Ok(ExitCode::SUCCESS)
}
