//! `portcullis check`: validate a policy, render it, and have the host's own
//! `iptables-restore --test` / `ip6tables-restore --test` parse the result.
//!
//! The test runs inside a fresh network namespace (`unshare -n`), so the host's
//! tables are never read or changed. It needs root for that; without root, or
//! without the binaries, it says what it did not check instead of pretending
//! ("passed in part", exit 0). It prints the lints (`crate::lint`) with their fix.
//! `--strict` fails (exit 1) on any warning and on any test not run, so CI cannot
//! go green untested. An invalid policy exits 2 with every error; with `--json`
//! the errors are JSON on stdout too.

use std::path::PathBuf;
use std::process::ExitCode;

use portcullis_netfilter::backend;

use crate::render::Family;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (default: the embedded default policy)
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the report as JSON on stdout (errors of an invalid policy too)
    #[arg(long)]
    pub json: bool,
    /// Fail (exit 1) on any warning, and when a ruleset could not be tested
    #[arg(long)]
    pub strict: bool,
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
    /// Every validation error (`valid` is false); empty for a valid policy.
    pub errors: Vec<crate::policy::Invalid>,
    /// The lints of a valid policy, each with its key and fix.
    pub warnings: Vec<crate::Warning>,
    pub families: Vec<FamilyReport>,
    /// Whether `--strict` was given.
    pub strict: bool,
    /// False when a test failed; with `--strict`, also on a warning or a test
    /// that was skipped for a rendered family.
    pub ok: bool,
}

impl Report {
    /// No ruleset refused; under `--strict`, also no warning and nothing untested.
    pub fn passes(&self) -> bool {
        let refused = self
            .families
            .iter()
            .any(|f| matches!(f.test, Test::Failed { .. }));
        let strict_fail = self.strict && (!self.warnings.is_empty() || self.untested());
        self.valid && !refused && !strict_fail
    }

    /// A rendered family whose test did not run (not root, no binary).
    pub fn untested(&self) -> bool {
        self.families
            .iter()
            .any(|f| f.rules.is_some() && matches!(f.test, Test::Skipped { .. }))
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let origin = match &args.config {
        Some(p) => p.display().to_string(),
        None => "<embedded default>".to_owned(),
    };
    let policy = match crate::cli::load_policy_or_default(args.config.as_deref()) {
        Ok(p) => p,
        Err(e) if args.json => {
            let errors = match e.downcast_ref::<crate::PolicyError>() {
                Some(crate::PolicyError::Invalid(v)) => v.clone(),
                _ => vec![crate::policy::Invalid {
                    origin: origin.clone(),
                    line: None,
                    key: None,
                    message: format!("{e:#}"),
                }],
            };
            let report = Report {
                policy: origin,
                valid: false,
                errors,
                warnings: Vec::new(),
                families: Vec::new(),
                strict: args.strict,
                ok: false,
            };
            println!("{}", super::json(&report)?);
            // The same errors on stderr, for a person watching the CI log.
            for e in &report.errors {
                eprintln!("portcullis: error: {e}");
            }
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e),
    };
    let warnings = crate::lint(&policy);
    let rendered = crate::render(&policy);
    let root = nix::unistd::geteuid().is_root();
    let sets = rendered.sets_text();
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
                test: test(family, &rs.to_string(), sets.as_deref(), root),
            },
        })
        .collect::<Vec<_>>();
    let mut report = Report {
        policy: origin,
        valid: true,
        errors: Vec::new(),
        warnings,
        families,
        strict: args.strict,
        ok: true,
    };
    report.ok = report.passes();
    let ok = report.ok;
    if args.json {
        println!("{}", super::json(&report)?);
    } else {
        print!("{}", human(&report));
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Run the host's `*-restore --test` on `text` in a private network namespace;
/// with `sets` (the policy's `ipset restore` text), `ipset restore` loads them
/// in that namespace first, so the rules that match them can be tested and the
/// set text is tested too.
fn test(family: Family, text: &str, sets: Option<&str>, root: bool) -> Test {
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
    if backend::find_in_path("unshare").is_none() {
        return Test::Skipped {
            reason: "unshare not found on PATH (install util-linux): the test runs in a \
                     private network namespace"
                .to_owned(),
        };
    }
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
    let result = match sets {
        None => {
            let command = ["unshare", "-n", &bin, "-w", "--test"].join(" ");
            let argv = [unshare.as_str(), "-n", &bin, "-w", "--test"];
            // `backend::run` reports the child's stderr even when it stops reading
            // its input at the first bad line.
            (command, backend::run(&argv, Some(text)))
        }
        Some(sets) => {
            let ipset = match portcullis_netfilter::bins::resolve("ipset") {
                Ok(b) => b.display().to_string(),
                Err(portcullis_netfilter::bins::BinError::NotFound { .. }) => {
                    return Test::Skipped {
                        reason: "the policy has ipsets and ipset is not found on PATH \
                                 (install ipset)"
                            .to_owned(),
                    };
                }
                Err(e) => {
                    return Test::Skipped {
                        reason: e.to_string(),
                    };
                }
            };
            let command = format!("unshare -n sh -c 'ipset restore -f SETS && {bin} -w --test'");
            (
                command,
                backend::test_with_sets(&unshare, &ipset, &bin, sets, text),
            )
        }
    };
    let (command, result) = result;
    match result {
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
    for w in &r.warnings {
        s.push_str(&format!("{w}\n"));
    }
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
    let refused = r
        .families
        .iter()
        .any(|f| matches!(f.test, Test::Failed { .. }));
    let warned = match r.warnings.len() {
        0 => String::new(),
        1 => " with 1 warning".to_owned(),
        n => format!(" with {n} warnings"),
    };
    s.push_str(&if refused {
        "check failed: a ruleset was refused (report it: portcullis rendered it)\n".to_owned()
    } else if r.strict && (skipped || !r.warnings.is_empty()) {
        let mut why = Vec::new();
        if !r.warnings.is_empty() {
            why.push(format!("{} warning(s)", r.warnings.len()));
        }
        if skipped {
            why.push("a ruleset was not tested".to_owned());
        }
        format!("check failed (--strict): {}\n", why.join(" and "))
    } else if skipped {
        format!(
            "check passed in part{warned}: the policy is valid and renders; see above for what was not tested (--strict fails on that)\n"
        )
    } else {
        format!("check passed{warned}\n")
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skipped_tests_are_named_in_the_summary() {
        let mut r = Report {
            policy: "p.toml".into(),
            valid: true,
            errors: vec![],
            warnings: vec![],
            strict: false,
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
             check passed in part: the policy is valid and renders; see above for what was not tested (--strict fails on that)\n"
        );
        assert!(r.passes());
        r.strict = true;
        assert!(!r.passes(), "--strict fails a skipped test");
        r.families[0].test = Test::Passed {
            command: "c".into(),
            version: "v".into(),
        };
        assert!(r.passes(), "a family not rendered is not untested");
        r.families[0].test = Test::Skipped { reason: "r".into() };
        r.warnings = crate::lint(&crate::Policy::parse("", "p.toml").unwrap());
        let h = human(&r);
        assert!(h.contains("\nwarning: ssh.allow_from: is empty"), "{h}");
        assert!(
            h.ends_with("check failed (--strict): 2 warning(s) and a ruleset was not tested\n"),
            "{h}"
        );
    }
}
