//! `portcullis test PATH...`: run the user's own scenario files (docs/scenarios.md)
//! in the lab, under each backend, libtest-style: a progress line per trial, the
//! failures with their matrices, one summary line, and optionally JUnit XML.
//!
//! Exit codes: 0 every trial passed; 1 a trial failed (or its lab broke); 2 bad
//! input (a path, a scenario or a policy it names) or it cannot run here (not
//! root, a backend, conntrack or OpenSSH missing), with nothing run.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use portcullis_netfilter::Backend;

use super::UsageError;
use super::verify::BackendArg;
use crate::persist::atomic::{Existing, write_file};
use crate::scenario::{self, Scenario, junit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorArg {
    /// Colour when stdout is a terminal and NO_COLOR is unset or empty
    Auto,
    Always,
    Never,
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Each scenario file (the format of docs/scenarios.md: the rules under test, the steps, and what
each probe must observe with the rule that must count it) runs in a fresh namespace lab under
each backend: one trial per file and backend, named AREA::FILE::BACKEND after its path below
the directory given. Directories are searched recursively for *.toml; a TOML file there with
neither `description` nor [[step]] (a policy a scenario names) is skipped. Relative `policy`
paths are read relative to the scenario file.

Exit status: 0 every trial passed; 1 one failed; 2 bad input or it cannot run here (not root,
no iptables, conntrack or OpenSSH missing), with nothing run.")]
pub struct Args {
    /// Scenario files, or directories to search for them
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// The iptables backend(s) to run every scenario under
    #[arg(long, value_enum, default_value = "all")]
    pub backend: BackendArg,
    /// Run only the trials whose name contains TEXT (repeatable: any of them)
    #[arg(long, value_name = "TEXT")]
    pub filter: Vec<String>,
    /// With --filter: the whole trial name must equal TEXT
    #[arg(long, requires = "filter")]
    pub exact: bool,
    /// Leave out the trials whose name contains TEXT (repeatable)
    #[arg(long, value_name = "TEXT")]
    pub skip: Vec<String>,
    /// List the trials (`NAME: test`, as libtest does) and run nothing
    #[arg(long)]
    pub list: bool,
    /// Write a JUnit XML report (one testcase per trial) to FILE
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Trials run at once (default: the number of cores, at least 4; a trial mostly
    /// waits for packets)
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub jobs: Option<u16>,
    /// Colour the verdicts
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorArg,
}

/// One scenario under one backend.
struct Trial<'a> {
    name: String,
    scenario: &'a (String, Scenario),
    backend: Backend,
}

fn selected(args: &Args, name: &str) -> bool {
    let wanted = args.filter.is_empty()
        || args.filter.iter().any(|f| {
            if args.exact {
                name == f
            } else {
                name.contains(f.as_str())
            }
        });
    wanted && !args.skip.iter().any(|s| name.contains(s.as_str()))
}

fn use_color(arg: ColorArg) -> bool {
    color_wanted(
        arg,
        std::env::var_os("NO_COLOR").as_deref(),
        std::io::stdout().is_terminal(),
    )
}

/// `auto` colours a terminal unless `NO_COLOR` is set and non-empty
/// (no-color.org); `always` and `never` decide alone.
fn color_wanted(arg: ColorArg, no_color: Option<&std::ffi::OsStr>, terminal: bool) -> bool {
    match arg {
        ColorArg::Always => true,
        ColorArg::Never => false,
        ColorArg::Auto => terminal && no_color.is_none_or(|v| v.is_empty()),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let found = scenario::discover(&args.paths).map_err(|e| UsageError(e.to_string()))?;
    for s in &found.skipped {
        eprintln!(
            "test: skipping {}: not a scenario (no `description`, no [[step]])",
            s.display()
        );
    }
    // Every file and the policies it names are read before any lab is built: a
    // bad file is bad input, and nothing runs.
    let mut scenarios = Vec::new();
    let mut bad = Vec::new();
    for f in &found.scenarios {
        match Scenario::load(&f.path) {
            Ok(s) => match scenario::check(&s) {
                Ok(()) => scenarios.push((f.name.clone(), s)),
                Err(e) => bad.push(format!("{}: {e}", f.path.display())),
            },
            Err(e) => bad.push(e.to_string()),
        }
    }
    if !bad.is_empty() {
        return Err(UsageError(format!(
            "{} scenario file(s) cannot be used:\n  {}",
            bad.len(),
            bad.join("\n  ")
        ))
        .into());
    }

    let backends = if args.list {
        // Listing needs no backend installed: name what a run would run.
        match args.backend {
            BackendArg::Nft => vec![Backend::Nft],
            BackendArg::Legacy => vec![Backend::Legacy],
            BackendArg::All => Backend::ALL.to_vec(),
        }
    } else {
        args.backend.resolve("test")?
    };
    let trials: Vec<Trial<'_>> = scenarios
        .iter()
        .flat_map(|s| {
            backends.iter().map(move |&backend| Trial {
                name: format!("{}::{backend}", s.0),
                scenario: s,
                backend,
            })
        })
        .filter(|t| selected(&args, &t.name))
        .collect();

    let mut out = std::io::stdout().lock();
    if args.list {
        for t in &trials {
            writeln!(out, "{}: test", t.name)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if trials.is_empty() {
        return Err(UsageError("no trial matches the --filter and --skip given".into()).into());
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(UsageError(
            "test needs root: it builds network namespaces and loads rules into them (run it with sudo)"
                .into(),
        )
        .into());
    }
    let cannot: Vec<String> = trials
        .iter()
        .filter_map(|t| {
            scenario::cannot_run(t.backend, scenario::needs_ssh(&t.scenario.1))
                .map(|r| format!("{}: {r}", t.name))
        })
        .collect();
    if !cannot.is_empty() {
        return Err(UsageError(format!("cannot run here:\n  {}", cannot.join("\n  "))).into());
    }
    drop(out);
    run_trials(&args, &trials)
}

/// A finished trial: its time and, when it failed, the failure text.
struct Done {
    seconds: f64,
    failure: Option<String>,
}

fn run_trials(args: &Args, trials: &[Trial<'_>]) -> anyhow::Result<ExitCode> {
    let color = use_color(args.color);
    let paint = |text: &str, code: &str| {
        if color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    };
    let jobs = args.jobs.map_or_else(
        || {
            std::thread::available_parallelism()
                .map_or(1, usize::from)
                .max(4)
        },
        usize::from,
    );
    let started = Instant::now();
    println!(
        "\nrunning {} test{}",
        trials.len(),
        if trials.len() == 1 { "" } else { "s" }
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Done>>> = Mutex::new(trials.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(trials.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(t) = trials.get(i) else { break };
                    let t0 = Instant::now();
                    let failure = scenario::run_trial(&t.scenario.1, t.backend)
                        .err()
                        .map(|f| f.message);
                    let seconds = t0.elapsed().as_secs_f64();
                    let verdict = match failure {
                        None => paint("ok", "32"),
                        Some(_) => paint("FAILED", "31"),
                    };
                    // One line per trial, whole, as each one ends.
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "test {} ... {verdict}", t.name);
                    let _ = out.flush();
                    drop(out);
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(Done { seconds, failure });
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a trial thread panicked"))?;
    let done: Vec<Done> = results
        .into_iter()
        .map(|d| {
            d.unwrap_or(Done {
                seconds: 0.0,
                failure: Some("the trial did not finish (its thread panicked)".into()),
            })
        })
        .collect();

    let mut out = std::io::stdout().lock();
    let failed: Vec<(&Trial<'_>, &str)> = trials
        .iter()
        .zip(&done)
        .filter_map(|(t, d)| d.failure.as_deref().map(|f| (t, f)))
        .collect();
    if !failed.is_empty() {
        writeln!(out, "\nfailures:")?;
        for (t, f) in &failed {
            writeln!(out, "\n---- {} ----\n{}", t.name, f.trim_end())?;
        }
        writeln!(out, "\nfailures:")?;
        for (t, _) in &failed {
            writeln!(out, "    {}", t.name)?;
        }
    }
    let verdict = if failed.is_empty() {
        paint("ok", "32")
    } else {
        paint("FAILED", "31")
    };
    writeln!(
        out,
        "\ntest result: {verdict}. {} passed, {} failed; finished in {:.2}s",
        trials.len() - failed.len(),
        failed.len(),
        elapsed.as_secs_f64()
    )?;
    out.flush()?;
    if let Some(path) = &args.junit {
        write_junit(path, trials, &done, elapsed)?;
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn write_junit(
    path: &std::path::Path,
    trials: &[Trial<'_>],
    done: &[Done],
    elapsed: Duration,
) -> anyhow::Result<()> {
    let cases: Vec<junit::Case<'_>> = trials
        .iter()
        .zip(done)
        .map(|(t, d)| junit::Case {
            name: &t.name,
            classname: &t.scenario.0,
            file: &t.scenario.1.path,
            seconds: d.seconds,
            result: match &d.failure {
                None => junit::CaseResult::Passed,
                Some(f) => junit::CaseResult::Failed(f),
            },
        })
        .collect();
    let mut xml = Vec::new();
    junit::write("portcullis test", elapsed.as_secs_f64(), &cases, &mut xml)?;
    write_file(path, &xml, 0o644, Existing::Replace)
        .with_context(|| format!("cannot write the JUnit report {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn no_color_turns_auto_off_on_a_terminal() {
        use std::ffi::OsStr;
        assert!(color_wanted(ColorArg::Auto, None, true));
        assert!(color_wanted(ColorArg::Auto, Some(OsStr::new("")), true));
        assert!(!color_wanted(ColorArg::Auto, Some(OsStr::new("1")), true));
        assert!(!color_wanted(ColorArg::Auto, None, false));
        assert!(color_wanted(ColorArg::Always, Some(OsStr::new("1")), false));
        assert!(!color_wanted(ColorArg::Never, None, true));
    }

    #[test]
    fn filters_select_by_substring_or_exactly_and_skip_wins() {
        let args = |extra: &[&str]| {
            let mut v = vec!["portcullis", "test", "dir"];
            v.extend_from_slice(extra);
            match crate::cli::Cli::parse_from(v).command {
                crate::cli::Command::Test(a) => a,
                other => panic!("{other:?}"),
            }
        };
        let a = args(&[]);
        assert!(selected(&a, "web::open::nft"));
        let a = args(&["--filter", "open", "--filter", "ssh::legacy"]);
        assert!(selected(&a, "web::open::nft") && selected(&a, "web::ssh::legacy"));
        assert!(!selected(&a, "web::ssh::nft"));
        let a = args(&["--filter", "web::open", "--exact"]);
        assert!(!selected(&a, "web::open::nft"));
        let a = args(&["--filter", "web::open::nft", "--exact"]);
        assert!(selected(&a, "web::open::nft"));
        let a = args(&["--filter", "open", "--skip", "legacy"]);
        assert!(selected(&a, "web::open::nft") && !selected(&a, "web::open::legacy"));
    }
}
