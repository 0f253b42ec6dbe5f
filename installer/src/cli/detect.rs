//! `portcullis detect`: name the persistence mechanism of this host or of a root
//! filesystem, and why; list conflicting firewall managers. Live (no `--root`) it
//! also names the iptables backend and probes the running host for conflicts.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::persist;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Inspect this root filesystem instead of the running host (files only)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(serde::Serialize)]
struct Report {
    root: PathBuf,
    #[serde(flatten)]
    detection: persist::Detection,
    /// The live host's iptables backend; absent for `--root`.
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    conflicts: Vec<persist::Conflict>,
    /// The persistence lint (rc.local on Debian or Ubuntu), with its fix.
    warnings: Vec<crate::Warning>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let live = args.root.is_none();
    let root = args.root.unwrap_or_else(|| PathBuf::from("/"));
    let detection = persist::detect(&root).with_context(|| {
        format!(
            "cannot detect the persistence mechanism of {}",
            root.display()
        )
    })?;
    let (backend, conflicts) = if live {
        let backend = match portcullis_netfilter::Backend::detect() {
            Ok(b) => b.name().to_owned(),
            Err(e) => format!("unknown ({e})"),
        };
        (Some(backend), persist::conflicts_live())
    } else {
        (None, persist::conflicts(&root))
    };
    let warnings = crate::lint::lint_persistence(&detection)
        .into_iter()
        .collect();
    let report = Report {
        root,
        detection,
        backend,
        conflicts,
        warnings,
    };
    if args.json {
        println!("{}", super::json(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let d = &report.detection;
    super::warn(&report.warnings);
    println!("mechanism: {}", d.mechanism);
    println!("reason:    {}", d.reason);
    let files: Vec<String> = d.files.iter().map(|f| f.display().to_string()).collect();
    println!("files:     {}", files.join(", "));
    println!("loaded by: {}", d.loader);
    if let Some(b) = &report.backend {
        println!("backend:   {b}");
    }
    for n in &d.notes {
        println!("note:      {n}");
    }
    for c in &report.conflicts {
        println!("conflict:  {}: {}", c.manager, c.evidence);
    }
    Ok(ExitCode::SUCCESS)
}
