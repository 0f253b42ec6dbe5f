//! `portcullis status`: a pending apply, its deadline, the backend, the persistence
//! mechanism and conflicts.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::apply::{self, clock};

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
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let s = apply::status(&args.state_dir, &args.root)?;
    if args.json {
        println!("{}", super::json(&s)?);
        return Ok(ExitCode::SUCCESS);
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
    Ok(ExitCode::SUCCESS)
}
