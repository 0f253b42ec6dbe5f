//! `portcullis install`: write the rendered rules where the distro's boot loader
//! reads them, into a root filesystem (`--root`). Each file is tested with the
//! target backend's `*-restore --test` in a throwaway network namespace, then
//! replaced atomically with a backup kept next to it; `--check` prints the diff and
//! writes nothing. A policy that renders ipsets also installs the sets where
//! the mechanism's ipset loader reads them before the rules (see
//! `persist::sets`), and is refused when that loader is missing.
//!
//! It refuses to run without `--config` (the embedded default is for `render`,
//! `check` and `verify` only), refuses a policy without `ssh.allow_from` (exit 2),
//! and refuses to run without `--root`: on a live host, rules are persisted by
//! `portcullis apply` once you confirm from a new session (`--root /` persists
//! without applying). On this host's own root (`--root /`, however named) it
//! refuses, as apply does, a policy that would shut out an ssh session found in
//! the environment or the process tree, and a terminal with no session unless
//! `--i-am-on-the-console`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cli::UsageError;
use crate::persist::{self, FileStatus, InstallOptions, Mechanism, TestMode};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (required: install never uses the embedded default)
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The root filesystem to write into (`/` for this host)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The mechanism to install for, instead of the detected one: netfilter-persistent,
    /// iptables-services, arch, alpine, gentoo, rc-local
    #[arg(long, value_name = "KIND")]
    pub persistence: Option<Mechanism>,
    /// The backend whose *-restore --test validates the files (default: the root's)
    #[arg(long, value_name = "BACKEND")]
    pub backend: Option<portcullis_netfilter::Backend>,
    /// Print a unified diff of what would change and write nothing
    #[arg(long)]
    pub check: bool,
    /// Install without testing the files with *-restore --test (not recommended)
    #[arg(long)]
    pub no_test: bool,
    /// Enable the root's loader offline when it is not (systemctl --root, else the
    /// link systemctl makes; OpenRC: the default runlevel link)
    #[arg(long)]
    pub enable: bool,
    /// Install even though another firewall manager (firewalld, ufw, nftables.service)
    /// is enabled in the root, or the policy file is writable by other users
    #[arg(long)]
    pub force: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// With `--root /`: you are at the machine's console, not in an ssh session;
    /// do not refuse a terminal in which no ssh session can be found
    #[arg(long)]
    pub i_am_on_the_console: bool,
}

/// The JSON of `install --json`: the report, what conflicts, and what to know.
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    #[serde(flatten)]
    report: &'a persist::InstallReport,
    conflicts: &'a [persist::Conflict],
    notes: &'a [String],
    enabled: &'a [String],
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Some(root) = args.root.clone() else {
        return Err(UsageError(
            "install writes into a root filesystem: pass --root DIR (on this host, `portcullis apply` persists once you confirm from a new session; `--root /` persists without applying)".into(),
        )
        .into());
    };
    let config = crate::cli::require_config("install", args.config.as_deref())?;
    let loaded = crate::cli::load_policy(config, Some(args.force))?;
    let (policy, text) = (loaded.policy, loaded.text);
    persist::require_ssh_access(&policy).map_err(|e| UsageError(e.to_string()))?;
    crate::cli::lint_for_apply("install", &policy)?;
    if persist::is_live_root(&root) {
        refuse_lockout(&policy, &root, args.i_am_on_the_console)?;
    }
    let rendered = crate::render(&policy);

    let (mechanism, why) = match args.persistence {
        Some(m) => (m, "chosen with --persistence".to_owned()),
        None => {
            let d = persist::detect(&root).with_context(|| {
                format!(
                    "cannot detect the persistence mechanism of {}: pass --persistence",
                    root.display()
                )
            })?;
            if let Some(w) = crate::lint::lint_persistence(&d) {
                crate::cli::warn(&[w]);
            }
            (d.mechanism, d.reason)
        }
    };
    let opts = InstallOptions {
        check_only: args.check,
        test: if args.no_test {
            TestMode::Skip
        } else {
            TestMode::Namespace
        },
    };
    let conflicts = persist::conflicts(&root);
    let v6 = rendered.text(portcullis_netfilter::Family::V6).is_some();
    let check = persist::loader::check_boot(
        &root,
        mechanism,
        v6,
        !rendered.sets.is_empty(),
        &conflicts,
        persist::loader::BootFlags {
            enable: args.enable,
            force: args.force,
            chosen: args.persistence.is_some(),
        },
    )
    .with_context(|| format!("cannot check the boot loader of {}", root.display()))?;
    let (refused, notes, to_enable) = (check.refusals, check.notes, check.to_enable);
    if !refused.is_empty() {
        return Err(UsageError(format!(
            "refusing to install {mechanism} rules into {}: {}",
            root.display(),
            refused.join("; ")
        ))
        .into());
    }
    let report = persist::install_with(
        &root,
        mechanism,
        &rendered,
        args.backend,
        opts,
        persist::policy_copy(&text, &policy)?,
    )
    .with_context(|| format!("cannot install {mechanism} rules into {}", root.display()))?;
    let mut enabled = Vec::new();
    for l in &to_enable {
        if args.check {
            enabled.push(format!("would enable {l}"));
            continue;
        }
        let done = persist::loader::enable(&root, l)
            .with_context(|| format!("the rules are written, but enabling {l} failed"))?;
        enabled.extend(done.into_iter().map(|d| format!("enabled {l}: {d}")));
    }

    if args.json {
        let j = JsonReport {
            report: &report,
            conflicts: &conflicts,
            notes: &notes,
            enabled: &enabled,
        };
        println!("{}", crate::cli::json(&j)?);
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("portcullis: {mechanism} into {} ({why})", root.display());
    for n in &notes {
        eprintln!("portcullis: note: {n}");
    }
    for e in &enabled {
        println!("{e}");
    }
    for f in &report.files {
        let path = f.path.display();
        match &f.status {
            FileStatus::Unchanged => println!("unchanged {path}"),
            FileStatus::Written { backup: Some(b) } => {
                println!(
                    "written   {path} (mode {:04o}, previous kept as {})",
                    f.mode,
                    b.display()
                )
            }
            FileStatus::Written { backup: None } => {
                println!("written   {path} (mode {:04o}, new)", f.mode)
            }
            FileStatus::WouldChange { diff } => {
                println!("would change {path} (mode {:04o})", f.mode);
                print!("{diff}");
            }
        }
    }
    if !args.check && report.changed() {
        match &report.tested_with {
            Some(b) => eprintln!(
                "portcullis: every ruleset passed {b}'s *-restore --test before it replaced the old file"
            ),
            None if args.no_test => {
                eprintln!("portcullis: warning: the ruleset files were NOT tested (--no-test)")
            }
            None => {}
        }
    }
    if !report.changed() {
        eprintln!("portcullis: unchanged: the root already has this ruleset");
    }
    Ok(ExitCode::SUCCESS)
}

/// `install --root /` writes what this host boots with: the same lockout check
/// as apply, on every ssh session found in the environment and the process tree.
fn refuse_lockout(
    policy: &crate::Policy,
    root: &std::path::Path,
    on_console: bool,
) -> Result<(), UsageError> {
    use crate::apply::{SshConnection, preflight, session};
    let sessions = SshConnection::all_current().map_err(UsageError)?;
    let mut refusals: Vec<String> = sessions
        .iter()
        .filter_map(|s| preflight::ssh_lockout(policy, s))
        .collect();
    if sessions.is_empty() && !on_console {
        refusals.extend(session::unverifiable_terminal());
    }
    if refusals.is_empty() {
        return Ok(());
    }
    Err(UsageError(format!(
        "refused, nothing written: {} is this host's own root, and at the next boot:\n  - {}",
        root.display(),
        refusals.join("\n  - ")
    )))
}
