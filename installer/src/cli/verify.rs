//! `portcullis verify`: prove a policy with real packets in a namespace lab.
//!
//! Exit codes: 0 every promise held under every backend; 1 a promise did not hold
//! (or the lab broke); 2 it cannot run here (not root, no usable backend) or the
//! input is bad (an invalid policy, an unreadable rules file).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use portcullis_netfilter::Backend;

use super::UsageError;
use crate::verify::{self, VerifyError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendArg {
    Nft,
    Legacy,
    /// Every backend whose binaries are installed
    All,
}

impl BackendArg {
    /// The backends to run under. `all` skips (with a note on stderr, prefixed
    /// `verb`) a backend whose binaries are missing and is bad input when none is
    /// installed; a named backend is checked when its lab starts.
    pub fn resolve(self, verb: &str) -> Result<Vec<Backend>, UsageError> {
        match self {
            BackendArg::Nft => Ok(vec![Backend::Nft]),
            BackendArg::Legacy => Ok(vec![Backend::Legacy]),
            BackendArg::All => {
                let present: Vec<Backend> =
                    Backend::ALL.into_iter().filter(|b| b.available()).collect();
                for b in Backend::ALL.iter().filter(|b| !present.contains(b)) {
                    if let Some(reason) = b.unavailable_reason() {
                        eprintln!("{verb}: skipping backend {b}: {reason}");
                    }
                }
                if present.is_empty() {
                    return Err(UsageError(
                        "no iptables backend is installed (neither iptables-nft nor iptables-legacy): install iptables"
                            .into(),
                    ));
                }
                Ok(present)
            }
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Builds a lab of network namespaces (target, admin, outsider, resolver, web, a router),
loads the rules into the target, probes every promise of the policy with real packets and
prints a matrix: expected and observed outcome, and the rule or chain policy that counted it.
The policy's CIDRs are mapped onto the lab's documentation subnets; the mapping is printed.

Exit status: 0 every promise held under every backend; 1 one did not (or the lab failed);
2 it cannot run here (not root, no iptables) or the input is bad.")]
pub struct Args {
    /// The policy file (default: the embedded default policy)
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The iptables backend(s) to prove the rules under
    #[arg(long, value_enum, default_value = "all")]
    pub backend: BackendArg,
    /// Load this hand-written IPv4 restore file instead of the policy's rendering,
    /// and judge it against the policy's intent
    #[arg(long, value_name = "FILE")]
    pub rules_v4: Option<PathBuf>,
    /// The same for IPv6
    #[arg(long, value_name = "FILE")]
    pub rules_v6: Option<PathBuf>,
    /// Prove an image: run this root's own boot loader (chrooted, in the lab's
    /// target) and probe the rules it loads; the policy is --config or the copy
    /// install left at ROOT/etc/portcullis/policy.toml
    #[arg(long, value_name = "DIR", conflicts_with_all = ["rules_v4", "rules_v6", "backend"])]
    pub root: Option<PathBuf>,
    /// Print the report as JSON on stdout instead of the matrix
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print only the mismatches and the summary line; no progress, no matrix
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Print the matrix as a Markdown table (for $GITHUB_STEP_SUMMARY)
    #[arg(long)]
    pub markdown: bool,
}

fn read_rules(path: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    path.map(|p| {
        crate::input::read_capped(p, crate::input::RULES_MAX_BYTES)
            .map(|i| i.text)
            .map_err(|e| {
                anyhow::Error::new(UsageError(format!(
                    "cannot read rules file {}: {e}",
                    p.display()
                )))
            })
    })
    .transpose()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(root) = &args.root {
        return run_root(root, &args);
    }
    let policy = crate::cli::load_policy_or_default(args.config.as_deref())?;
    let backends = args.backend.resolve("verify")?;
    let opts = verify::Options {
        policy,
        backends,
        rules_v4: read_rules(args.rules_v4.as_ref())?,
        rules_v6: read_rules(args.rules_v6.as_ref())?,
    };
    let quiet = args.quiet;
    let mut progress = |line: &str| {
        if !quiet {
            eprintln!("verify: {line}");
        }
    };
    let report = match verify::verify(&opts, &mut progress) {
        Ok(r) => r,
        Err(e @ (VerifyError::NotRoot | VerifyError::BackendMissing { .. })) => {
            return Err(UsageError(e.to_string()).into());
        }
        Err(e) => return Err(e).context("verify could not finish"),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", super::json(&report)?).context("cannot write the report")?;
    } else if args.quiet {
        verify::matrix::print_quiet(&report.rows, &mut out)?;
    } else if args.markdown {
        let backends: Vec<&str> = report.backends.iter().map(|b| b.name()).collect();
        let policy = args
            .config
            .as_ref()
            .map_or("the embedded default policy".to_owned(), |p| {
                format!("`{}`", p.display())
            });
        let verdict = if report.passed() {
            "every promise held"
        } else {
            "a promise did not hold"
        };
        writeln!(
            out,
            "### portcullis verify: {policy}, under {}: {verdict}\n",
            backends.join(" and ")
        )?;
        for m in &report.mappings {
            writeln!(
                out,
                "- lab mapping: {} `{}` -> `{}` ({} host)",
                m.key, m.from, m.to, m.host
            )?;
        }
        for n in &report.notes {
            writeln!(out, "- note: {n}")?;
        }
        if !report.mappings.is_empty() || !report.notes.is_empty() {
            writeln!(out)?;
        }
        verify::matrix::markdown(&report.rows, &mut out)?;
    } else {
        let policy = args
            .config
            .as_ref()
            .map_or("the embedded default policy".to_owned(), |p| {
                format!("policy {}", p.display())
            });
        let what = match (&args.rules_v4, &args.rules_v6) {
            (None, None) => format!("{policy}, as portcullis renders it"),
            (v4, v6) => format!(
                "hand-written rules ({}) against the intent of {policy}",
                [("ipv4", v4), ("ipv6", v6)]
                    .iter()
                    .filter_map(|(f, p)| p.as_ref().map(|p| format!("{f}: {}", p.display())))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let backends: Vec<&str> = report.backends.iter().map(|b| b.name()).collect();
        writeln!(out, "verify: {what}, under {}\n", backends.join(" and "))?;
        if !report.mappings.is_empty() {
            let how = if report.hand_written {
                "replaced textually, exact CIDR strings only, in the given rules files"
            } else {
                "the policy's own CIDRs cannot exist in the lab"
            };
            writeln!(out, "lab mapping ({how}):")?;
            for m in &report.mappings {
                writeln!(out, "  {}", verify::boot::describe(m))?;
            }
            writeln!(out)?;
        }
        for n in &report.notes {
            writeln!(out, "note: {n}")?;
        }
        if !report.notes.is_empty() {
            writeln!(out)?;
        }
        verify::matrix::print(&report.rows, &mut out)?;
    }
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `verify --root DIR`: the image's own boot loader in the lab, then the probes.
fn run_root(root: &std::path::Path, args: &Args) -> anyhow::Result<ExitCode> {
    use crate::verify::boot::{self, RootError};
    let (policy, origin) = match &args.config {
        Some(p) => (
            crate::cli::load_policy(p, None)?.policy,
            format!("policy {}", p.display()),
        ),
        None => (
            boot::policy_in_root(root).map_err(|e| UsageError(e.to_string()))?,
            format!("policy {}{}", root.display(), boot::POLICY_COPY),
        ),
    };
    let mut progress = |line: &str| eprintln!("verify: {line}");
    let r = match boot::verify_root(root, &policy, &mut progress) {
        Ok(r) => r,
        Err(RootError::Input(m)) => return Err(UsageError(m).into()),
        Err(RootError::Verify(e @ (VerifyError::NotRoot | VerifyError::BackendMissing { .. }))) => {
            return Err(UsageError(e.to_string()).into());
        }
        Err(RootError::Verify(e)) => return Err(e).context("verify could not finish"),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        writeln!(out, "{}", crate::cli::json(&r)?).context("cannot write the report")?;
    } else {
        writeln!(
            out,
            "verify: the image {} booted by its own loader, against {origin}, under {}\n",
            root.display(),
            r.backend
        )?;
        writeln!(out, "mechanism: {} ({})", r.mechanism, r.reason)?;
        for l in &r.loaders {
            let mark = if l.enabled { "enabled" } else { "NOT ENABLED" };
            writeln!(out, "loader:    {} [{mark}: {}]", l.loader, l.evidence)?;
            for s in &l.steps {
                let how = match (&s.error, s.status) {
                    (Some(e), _) => e.clone(),
                    (None, Some(n)) => format!("exit {n}"),
                    (None, None) => "killed".into(),
                };
                writeln!(
                    out,
                    "  ran {} ({}): {how}",
                    s.exec.argv.join(" "),
                    s.exec.origin
                )?;
                for line in s.output.lines().filter(|l| !l.trim().is_empty()) {
                    writeln!(out, "    | {line}")?;
                }
            }
        }
        for l in &r.loaded {
            writeln!(
                out,
                "loaded:    {} from {}: {}",
                l.family,
                l.file.display(),
                if l.loaded { "yes" } else { "NO" }
            )?;
        }
        writeln!(out)?;
        if !r.report.mappings.is_empty() {
            writeln!(
                out,
                "lab mapping (replaced textually in the overlay's rules files; the root is not written):"
            )?;
            for m in &r.report.mappings {
                writeln!(out, "  {}", boot::describe(m))?;
            }
            writeln!(out)?;
        }
        for n in &r.report.notes {
            writeln!(out, "note: {n}")?;
        }
        verify::matrix::print(&r.report.rows, &mut out)?;
        writeln!(out)?;
        if r.passed {
            writeln!(
                out,
                "verify --root: PASS: the image loads rules that keep every promise"
            )?;
        } else {
            for f in &r.failures {
                writeln!(out, "verify --root: FAIL: {f}")?;
            }
        }
    }
    Ok(if r.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The hidden `__boot` child of `verify --root` (see `verify::boot`).
pub fn run_boot() -> anyhow::Result<ExitCode> {
    let outcome = crate::verify::boot::child_main();
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &outcome).context("cannot write the boot outcome")?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}
