//! Every benchmark, one section each, in one run (timing goals live here, never
//! in tests). Record the numbers in docs/performance.md.
//!
//! - `lab`: N cycles of the standard lab up and down with the harness
//!   (rtnetlink, anonymous namespaces) against the same topology built with
//!   ip(8) (ci/ip-baseline.sh), side by side. Target: ours <= 1/4 of ip's.
//! - `apply`: installer/examples/apply-bench.rs, 5,000 allow entries loaded
//!   with one *-restore call against one iptables call per rule, both backends
//!   (about a minute). Target: one restore far ahead (ratio printed).
//! - `rollback`: installer/examples/rollback-bench.rs (when present), how long
//!   after the deadline an unconfirmed apply has been rolled back, both
//!   backends. Target: within 1000 ms.
//! - `probe`: harness/examples/probe-bench.rs, median of 21 negative TCP probes
//!   from outsider to target, each counted by the target's INPUT DROP policy.
//!   Target: the 45 ms window plus a few ms.
//! - `scale`: installer/examples/scale-bench.rs, both backends: render, check
//!   and load time of a policy with 1k/10k/50k-entry lists (as ipsets), and the
//!   median new-connection time through a 10,000-entry allow list as one set vs
//!   10,000 plain rules vs no list. Target: `set_ratio` (sets / no list) <= 1.2
//!   under both backends.
//!
//! `cargo xtask bench [CYCLES]` (or `ci/bench`) builds as the caller and runs the
//! timings as root (through sudo when the caller is not root);
//! `BENCH=lab,probe` runs only those sections.

use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell, cmd};

use crate::{clean_cargo_env, is_root, non_empty_var, project_root, target_dir};

const SECTIONS: [&str; 5] = ["lab", "apply", "rollback", "probe", "scale"];

pub(crate) fn run(sh: &Shell, args: &[String]) -> Result<()> {
    let cycles = match args {
        [] => "20",
        [c] if c.is_empty() => "20",
        [c] => c.as_str(),
        _ => bail!("usage: cargo xtask bench [CYCLES]"),
    };
    if !cycles.parse::<u32>().is_ok_and(|n| n > 0) {
        bail!("CYCLES must be a positive whole number, not {cycles:?}");
    }
    let sections = non_empty_var(sh, "BENCH").unwrap_or_else(|| SECTIONS.join(","));
    let selected: Vec<&str> = sections.split(',').collect();
    if let Some(unknown) = selected.iter().find(|s| !SECTIONS.contains(s)) {
        bail!(
            "unknown BENCH section {unknown:?}: expected some of {}",
            SECTIONS.join(",")
        );
    }
    let want = |s: &str| selected.contains(&s);

    let root = project_root();
    let _cwd = sh.push_dir(&root);
    let examples = target_dir(sh).join("release/examples");
    let have_rollback = root.join("installer/examples/rollback-bench.rs").is_file();
    let runner = AsRoot::new(sh)?;

    // Build everything first, so no section's time includes a compile.
    let harness = cmd!(
        sh,
        "cargo build --release --locked -p portcullis-harness --example lab-bench --example probe-bench"
    );
    clean_cargo_env(harness).run()?;
    if want("apply") || want("rollback") {
        let rollback: &[&str] = if have_rollback {
            &["--example", "rollback-bench"]
        } else {
            &[]
        };
        let installer = cmd!(
            sh,
            "cargo build --release --locked -p portcullis --bin portcullis --example apply-bench {rollback...}"
        );
        clean_cargo_env(installer).run()?;
    }
    if want("scale") {
        let scale = cmd!(
            sh,
            "cargo build --release --locked -p portcullis --example scale-bench"
        );
        clean_cargo_env(scale).run()?;
    }

    if want("lab") {
        section(&format!(
            "lab: standard lab up and down, harness vs ip(8), {cycles} cycles"
        ));
        let bin = examples.join("lab-bench");
        let ip = root.join("ci/ip-baseline.sh");
        // One warm-up cycle each, so neither side pays for loading modules or page cache.
        runner.cmd(&bin, &["1"]).ignore_stdout().run()?;
        runner.cmd(&ip, &["1"]).ignore_stdout().run()?;

        let ours = runner.cmd(&bin, &[cycles]).read()?;
        let theirs = runner.cmd(&ip, &[cycles]).read()?;
        let settled = runner.cmd(&bin, &[cycles, "--settle"]).read()?;
        println!("{ours}");
        println!("{theirs}");
        // For information: what a lab costs when its first probe waits for the
        // target's MLD reports (Lab::settle); the ip(8) script does not wait for
        // them either.
        println!("{settled}");

        let r = total_ms(&ours)? / total_ms(&theirs)?;
        let verdict = if r <= 0.25 { "met" } else { "NOT met" };
        println!("ratio harness/ip = {r:.3} (target <= 0.25): {verdict}");
    }

    if want("apply") {
        section("apply: 5,000 allow entries, one restore vs one iptables call per rule");
        runner.cmd(&examples.join("apply-bench"), &["5000"]).run()?;
    }

    if want("rollback") {
        section("rollback: latency after the deadline (target 1000 ms)");
        if have_rollback {
            runner.cmd(&examples.join("rollback-bench"), &[]).run()?;
        } else {
            println!("skipped: installer/examples/rollback-bench.rs is not in this tree");
        }
    }

    if want("probe") {
        section("probe: median negative TCP probe, outsider -> target, counted by INPUT DROP");
        runner.cmd(&examples.join("probe-bench"), &["21"]).run()?;
    }

    if want("scale") {
        section("scale: ipsets at 1k/10k/50k entries; connect through a 10k allow list");
        let out = runner.cmd(&examples.join("scale-bench"), &["301"]).read()?;
        println!("{out}");
        for (backend, ratio) in set_ratios(&out) {
            let verdict = if ratio <= 1.2 { "met" } else { "NOT met" };
            println!("set_ratio {backend} = {ratio:.2} (target <= 1.2): {verdict}");
        }
    }
    Ok(())
}

/// `(backend, set_ratio)` of each `scale-bench connect` line.
fn set_ratios(out: &str) -> Vec<(String, f64)> {
    out.lines()
        .filter(|l| l.starts_with("scale-bench connect "))
        .filter_map(|l| {
            let field = |k: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            };
            Some((
                field("backend")?.to_owned(),
                field("set_ratio")?.parse().ok()?,
            ))
        })
        .collect()
}

fn section(title: &str) {
    println!("\n== {title} ==");
}

/// Runs the timed programs as root: directly when we are root, through
/// `sudo --preserve-env=PATH` otherwise (what ci/as-root does).
struct AsRoot<'a> {
    sh: &'a Shell,
    root: bool,
}

impl<'a> AsRoot<'a> {
    fn new(sh: &'a Shell) -> Result<Self> {
        Ok(AsRoot {
            sh,
            root: is_root(sh)?,
        })
    }

    fn cmd(&self, program: &Path, args: &[&str]) -> Cmd<'a> {
        let sh = self.sh;
        let cmd = if self.root {
            sh.cmd(program)
        } else {
            cmd!(sh, "sudo --preserve-env=PATH {program}")
        };
        cmd.args(args).quiet()
    }
}

/// The `total_ms=T` of a `lab-bench` or `ip-baseline` line.
fn total_ms(line: &str) -> Result<f64> {
    line.lines()
        .find_map(|l| {
            let (_, rest) = l.rsplit_once("total_ms=")?;
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            rest[..end].parse().ok()
        })
        .with_context(|| format!("no total_ms= in {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::{set_ratios, total_ms};

    #[test]
    fn set_ratios_are_read_per_backend() {
        let out = "scale-bench render backend=nft entries=1000 sets=2 render_ms=9.6\n\
                   scale-bench connect backend=nft entries=10000 runs=101 none_us=35.3 plain_us=402.7 sets_us=31.2 plain_ratio=11.41 set_ratio=0.88\n\
                   scale-bench connect backend=legacy entries=10000 runs=101 none_us=30.3 plain_us=110.7 sets_us=29.8 plain_ratio=3.65 set_ratio=0.98\n";
        assert_eq!(
            set_ratios(out),
            [("nft".to_owned(), 0.88), ("legacy".to_owned(), 0.98)]
        );
    }

    #[test]
    fn total_ms_reads_both_benchmark_lines() {
        let ours = "lab-bench cycles=20 total_ms=164.4 per_cycle_ms=8.22";
        let theirs = "ip-baseline cycles=20 total_ms=1203.0 per_cycle_ms=60.15";
        assert_eq!(total_ms(ours).unwrap(), 164.4);
        assert_eq!(total_ms(theirs).unwrap(), 1203.0);
        assert!(total_ms("lab-bench cycles=20").is_err());
    }
}
