//! `portcullis check`: validate a policy, render it, and have the host's own
//! `iptables-restore --test` / `ip6tables-restore --test` parse the result.
//!
//! The test runs inside a fresh network namespace (`unshare -n`), so the host's
//! tables are never read or changed. It needs root for that; without root, or
//! without the binaries, it says what it did not check instead of pretending.

use std::path::PathBuf;
use std::process::ExitCode;

use portcullis_netfilter::backend;

use crate::render::Family;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (default: the embedded default policy)
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the report as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

/// What happened to one family's ruleset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FamilyReport {
    pub family: String,
    /// `None` when the family is not rendered (`ipv6.mode = "untouched"`).
    pub rules: Option<usize>,
    pub test: Test,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Test {
    /// `*-restore --test` accepted the ruleset.
    Passed { command: String, version: String },
    /// It refused it (a bug in portcullis or an old iptables): `stderr` says why.
    Failed {
        command: String,
        version: String,
        stderr: String,
    },
    /// Not tested, and why.
    Skipped { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub policy: String,
    pub valid: bool,
    pub families: Vec<FamilyReport>,
    /// False when a test failed; skipped tests do not make it false.
    pub ok: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let origin = match &args.config {
        Some(p) => p.display().to_string(),
        None => "<embedded default>".to_owned(),
    };
    let policy = crate::cli::load_policy_or_default(args.config.as_deref())?;
    let rendered = crate::render(&policy);
    let root = nix::unistd::geteuid().is_root();
    let families = Family::ALL
        .into_iter()
        .map(|family| match rendered.get(family) {
            None => FamilyReport {
                family: family.to_string(),
                rules: None,
                test: Test::Skipped {
                    reason: "ipv6.mode is \"untouched\": nothing to test".to_owned(),
                },
            },
            Some(rs) => FamilyReport {
                family: family.to_string(),
                rules: Some(rs.rules.len()),
                test: test(family, &rs.to_string(), root),
            },
        })
        .collect::<Vec<_>>();
    let ok = !families
        .iter()
        .any(|f| matches!(f.test, Test::Failed { .. }));
    let report = Report {
        policy: origin,
        valid: true,
        families,
        ok,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Run the host's `*-restore --test` on `text` in a private network namespace.
fn test(family: Family, text: &str, root: bool) -> Test {
    let name = format!("{}-restore", family.tool_prefix());
    let bin = match portcullis_netfilter::bins::resolve(&name) {
        Ok(b) => b,
        Err(portcullis_netfilter::bins::BinError::NotFound { .. }) => {
            return Test::Skipped {
                reason: format!("{name} not found on PATH (install iptables)"),
            };
        }
        Err(e) => {
            return Test::Skipped {
                reason: e.to_string(),
            };
        }
    };
    let unshare = match portcullis_netfilter::bins::resolve("unshare") {
        Ok(u) => u.display().to_string(),
        Err(e) => {
            return Test::Skipped {
                reason: e.to_string(),
            };
        }
    };
    if !root {
        return Test::Skipped {
            reason: format!(
                "{name} --test needs root (it runs in a private network namespace; \
                 the host's rules are not touched): run `sudo portcullis check`"
            ),
        };
    }
    let bin = bin.display().to_string();
    // `--version` only prints; it tells nft from legacy for the report.
    let version = backend::run(&[&bin, "--version"], None)
        .map(|v| v.lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"));
    let command = ["unshare", "-n", &bin, "-w", "--test"].join(" ");
    let argv = [unshare.as_str(), "-n", &bin, "-w", "--test"];
    // `backend::run` reports the child's stderr even when it stops reading its
    // input at the first bad line.
    match backend::run(&argv, Some(text)) {
        Ok(_) => Test::Passed { command, version },
        Err(e) => {
            let stderr = match e {
                backend::BackendError::Failed { stderr, .. } => stderr,
                other => other.to_string(),
            };
            Test::Failed {
                command,
                version,
                stderr: stderr.split_whitespace().collect::<Vec<_>>().join(" "),
            }
        }
    }
}

/// The report as lines a person reads.
pub fn human(r: &Report) -> String {
    let mut s = format!("policy {}: valid\n", r.policy);
    let mut skipped = false;
    for f in &r.families {
        let rendered = match f.rules {
            Some(n) => format!("{n} rules rendered"),
            None => "not rendered".to_owned(),
        };
        let test = match &f.test {
            Test::Passed { command, version } => {
                format!("accepted by `{command}` ({version})")
            }
            Test::Failed {
                command,
                version,
                stderr,
            } => format!("REFUSED by `{command}` ({version}): {stderr}"),
            Test::Skipped { reason } => {
                skipped |= f.rules.is_some();
                format!("not tested: {reason}")
            }
        };
        s.push_str(&format!("{}: {rendered}; {test}\n", f.family));
    }
    s.push_str(match (r.ok, skipped) {
        (false, _) => "check failed: a ruleset was refused (report it: portcullis rendered it)\n",
        (true, true) => "check passed in part: the policy is valid and renders; see above for what was not tested\n",
        (true, false) => "check passed\n",
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_tests_are_named_in_the_summary() {
        let r = Report {
            policy: "p.toml".into(),
            valid: true,
            families: vec![
                FamilyReport {
                    family: "ipv4".into(),
                    rules: Some(3),
                    test: Test::Skipped {
                        reason: "iptables-restore not found on PATH (install iptables)".into(),
                    },
                },
                FamilyReport {
                    family: "ipv6".into(),
                    rules: None,
                    test: Test::Skipped {
                        reason: "ipv6.mode is \"untouched\": nothing to test".into(),
                    },
                },
            ],
            ok: true,
        };
        assert_eq!(
            human(&r),
            "policy p.toml: valid\n\
             ipv4: 3 rules rendered; not tested: iptables-restore not found on PATH (install iptables)\n\
             ipv6: not rendered; not tested: ipv6.mode is \"untouched\": nothing to test\n\
             check passed in part: the policy is valid and renders; see above for what was not tested\n"
        );
    }
}
