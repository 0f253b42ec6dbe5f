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
    /// Print the report as JSON on stdout instead of the matrix
    #[arg(long, conflicts_with = "markdown")]
    pub json: bool,
    /// Print the matrix as a Markdown table (for $GITHUB_STEP_SUMMARY)
    #[arg(long)]
    pub markdown: bool,
}

fn read_rules(path: Option<&PathBuf>) -> anyhow::Result<Option<String>> {
    path.map(|p| {
        std::fs::read_to_string(p).map_err(|e| {
            anyhow::Error::new(UsageError(format!(
                "cannot read rules file {}: {e}",
                p.display()
            )))
        })
    })
    .transpose()
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = crate::Policy::load_or_default(args.config.as_deref())?;
    let backends = args.backend.resolve("verify")?;
    let opts = verify::Options {
        policy,
        backends,
        rules_v4: read_rules(args.rules_v4.as_ref())?,
        rules_v6: read_rules(args.rules_v6.as_ref())?,
    };
    let mut progress = |line: &str| eprintln!("verify: {line}");
    let report = match verify::verify(&opts, &mut progress) {
        Ok(r) => r,
        Err(e @ (VerifyError::NotRoot | VerifyError::BackendMissing { .. })) => {
            return Err(UsageError(e.to_string()).into());
        }
        Err(e) => return Err(e).context("verify could not finish"),
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).context("cannot write the report")?;
        writeln!(out)?;
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
                writeln!(out, "  {} {} -> {} ({} host)", m.key, m.from, m.to, m.host)?;
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
