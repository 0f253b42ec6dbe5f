//! Every benchmark, one section each, in one run (timing goals live here, never
//! in tests). Record the numbers in docs/performance.md.
//!
//! - `lab`: N cycles of the standard lab up and down with the harness
//!   (rtnetlink, anonymous namespaces) against the same topology built with
//!   ip(8) (ci/ip-baseline.sh), side by side. Target: ours <= 1/4 of ip's.
//! - `apply`: installer/examples/apply-bench.rs, 5,000 allow entries loaded
//!   with one *-restore call against one iptables call per rule, both backends
//!   (about a minute). Target: one restore far ahead (ratio printed).
//! - `rollback`: installer/examples/rollback-bench.rs, how long
//!   after the deadline an unconfirmed apply has been rolled back, both
//!   backends. Target: within 1000 ms.
//! - `probe`: harness/examples/probe-bench.rs, median of 21 negative TCP probes
//!   from outsider to target, each counted by the target's INPUT DROP policy.
//!   Each is decided as soon as that policy counted it (`Lab::probe_dropped`);
//!   a probe not counted fails the benchmark. Target: p50 <= 5 ms.
//! - `verify`: `portcullis verify` of the embedded default (both backends),
//!   median of 5 runs; then one run under `strace -f -e trace=execve` (when
//!   strace is installed) counting its execs, failed ones included. Targets:
//!   <= 0.5 s; <= 22 execs (a tenth of the 223 before issue 12).
//! - `suite`: the scenario suite (`cargo test -p portcullis-scenarios`, both
//!   backends), its run alone (built first).
//! - `scale`: installer/examples/scale-bench.rs, both backends: render, check
//!   and load time of a policy with 1k/10k/50k-entry lists (as ipsets), and the
//!   median new-connection time through a 10,000-entry allow list as one set vs
//!   10,000 plain rules vs no list. Target: `set_ratio` (sets / no list) <= 1.2
//!   under both backends.
//!
//! `cargo xtask bench [CYCLES]` (or `ci/bench`) builds as the caller and runs the
//! timings as root (through sudo when the caller is not root);
//! `BENCH=lab,probe` runs only those sections. Beside the human output it
//! writes `target/bench/summary.json`, one number per key, for the sections
//! that ran ([`Summary`] lists the keys).

use std::path::Path;

use anyhow::{Context, Result, bail};
use xshell::{Cmd, Shell, cmd};

use crate::{clean_cargo_env, is_root, non_empty_var, project_root, target_dir};

const SECTIONS: [&str; 7] = [
    "lab", "apply", "rollback", "probe", "verify", "suite", "scale",
];

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
    let runner = AsRoot::new(sh)?;
    let mut summary = Summary::default();

    // Build everything first, so no section's time includes a compile.
    let harness = cmd!(
        sh,
        "cargo build --release --locked -p portcullis-harness --example lab-bench --example probe-bench"
    );
    clean_cargo_env(harness).run()?;
    if want("apply") || want("rollback") || want("verify") {
        let installer = cmd!(
            sh,
            "cargo build --release --locked -p portcullis --bin portcullis --example apply-bench --example rollback-bench"
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
        let n: f64 = cycles.parse()?;
        summary.set("lab_up_down_ms", total_ms(&ours)? / n);
        summary.set("lab_up_down_ip_ms", total_ms(&theirs)? / n);
        summary.set("lab_ratio", r);
    }

    if want("apply") {
        section("apply: 5,000 allow entries, one restore vs one iptables call per rule");
        let out = runner
            .cmd(&examples.join("apply-bench"), &["5000"])
            .read()?;
        println!("{out}");
        if let Some(ms) = number_after(&out, "render_ms=") {
            summary.set("render_ms_5000", ms);
        }
        // nft, the default backend: one number per key.
        if let Some(line) = out.lines().find(|l| l.starts_with("nft: one restore")) {
            let restore = number_after(line, "one restore ");
            let sequential = number_after(line, "iptables calls ");
            if let (Some(r), Some(s)) = (restore, sequential) {
                summary.set("bulk_apply_restore_ms", r * 1000.0);
                summary.set("bulk_apply_sequential_ms", s * 1000.0);
                summary.set("bulk_ratio", s / r);
            }
        }
    }

    if want("rollback") {
        section("rollback: latency after the deadline (target 1000 ms)");
        let out = runner.cmd(&examples.join("rollback-bench"), &[]).read()?;
        println!("{out}");
        let worst = out
            .lines()
            .filter_map(|l| number_after(l, "max "))
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
        if let Some(ms) = worst {
            summary.set("rollback_late_ms_max", ms);
        }
    }

    if want("probe") {
        section(
            "probe: negative TCP probes, outsider -> target, decided by the INPUT DROP policy's counter",
        );
        let out = runner.cmd(&examples.join("probe-bench"), &["21"]).read()?;
        println!("{out}");
        let all = out
            .lines()
            .find(|l| l.starts_with("probe-bench all "))
            .context("probe-bench printed no `all` line")?;
        let p50 = number_after(all, "p50_ms=").context("no p50_ms")?;
        let p95 = number_after(all, "p95_ms=").context("no p95_ms")?;
        println!("p50 {p50:.2} ms (target <= 5): {}", met(p50 <= 5.0));
        summary.set("negative_probe_ms_p50", p50);
        summary.set("negative_probe_ms_p95", p95);
    }

    if want("verify") {
        section("verify: `portcullis verify` of the embedded default, both backends, median of 5");
        let bin = target_dir(sh).join("release/portcullis");
        runner
            .cmd(&bin, &["verify"])
            .ignore_stdout()
            .ignore_stderr()
            .run()?; // warm-up
        let mut runs = Vec::new();
        for _ in 0..5 {
            let start = std::time::Instant::now();
            runner
                .cmd(&bin, &["verify"])
                .ignore_stdout()
                .ignore_stderr()
                .run()?;
            runs.push(start.elapsed().as_secs_f64());
        }
        runs.sort_by(f64::total_cmp);
        let median = runs[runs.len() / 2];
        let shown: Vec<String> = runs.iter().map(|s| format!("{s:.3}")).collect();
        println!(
            "verify runs (s): {}; median {median:.3} s (target <= 0.5): {}",
            shown.join(" "),
            met(median <= 0.5)
        );
        summary.set("verify_default_s", median);
        if cmd!(sh, "which strace")
            .quiet()
            .ignore_stdout()
            .run()
            .is_ok()
        {
            let dir = target_dir(sh).join("bench");
            sh.create_dir(&dir)?;
            let log = dir.join("verify-execve.txt");
            let log_arg = log.to_str().context("target dir is not UTF-8")?.to_owned();
            let strace = sh.cmd("strace");
            let strace = if runner.root {
                strace
            } else {
                cmd!(sh, "sudo --preserve-env=PATH strace")
            };
            strace
                .args(["-f", "-qq", "-e", "trace=execve", "-o", &log_arg])
                .arg(&bin)
                .arg("verify")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()?;
            let text = sh.read_file(&log)?;
            let execs: Vec<&str> = text.lines().filter(|l| l.contains("execve(")).collect();
            let failed = execs.iter().filter(|l| l.contains("= -1 ")).count();
            // The portcullis process itself is not a spawn.
            let spawns = execs.len().saturating_sub(1);
            println!(
                "verify spawns: {spawns} execs ({failed} failed) (target <= 22): {}",
                met(spawns <= 22)
            );
            summary.set("verify_spawns", spawns as f64);
        } else {
            println!("verify spawns: skipped (strace is not installed)");
        }
    }

    if want("suite") {
        section("suite: the scenario suite, both backends (built first, the run timed)");
        let build = cmd!(sh, "cargo test --locked -p portcullis-scenarios --no-run");
        clean_cargo_env(build).quiet().ignore_stderr().run()?;
        let start = std::time::Instant::now();
        let suite = cmd!(sh, "cargo test --locked -p portcullis-scenarios");
        clean_cargo_env(suite)
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()?;
        let secs = start.elapsed().as_secs_f64();
        println!("scenario suite: {secs:.1} s");
        summary.set("suite_seconds", secs);
    }

    if want("scale") {
        section("scale: ipsets at 1k/10k/50k entries; connect through a 10k allow list");
        let out = runner.cmd(&examples.join("scale-bench"), &["301"]).read()?;
        println!("{out}");
        let ratios = set_ratios(&out);
        for (backend, ratio) in &ratios {
            println!(
                "set_ratio {backend} = {ratio:.2} (target <= 1.2): {}",
                met(*ratio <= 1.2)
            );
            match backend.as_str() {
                "nft" => summary.set("set_ratio_nft", *ratio),
                "legacy" => summary.set("set_ratio_legacy", *ratio),
                _ => {}
            }
        }
        // The headline key: the worse backend.
        if let Some(worst) = ratios.iter().map(|(_, r)| *r).reduce(f64::max) {
            summary.set("set_ratio", worst);
        }
    }

    let path = target_dir(sh).join("bench/summary.json");
    sh.create_dir(target_dir(sh).join("bench"))?;
    sh.write_file(&path, summary.json())?;
    section(&format!("summary ({})", path.display()));
    print!("{}", summary.table());
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// The numbers of one bench run, one per key, in the order they were set:
/// `lab_up_down_ms`, `lab_up_down_ip_ms`, `lab_ratio`, `render_ms_5000`,
/// `bulk_apply_restore_ms`, `bulk_apply_sequential_ms`, `bulk_ratio` (nft),
/// `rollback_late_ms_max` (worst backend), `negative_probe_ms_p50`,
/// `negative_probe_ms_p95`, `verify_default_s`, `verify_spawns`,
/// `suite_seconds`.
#[derive(Default)]
struct Summary(Vec<(&'static str, f64)>);

impl Summary {
    fn set(&mut self, key: &'static str, value: f64) {
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, value));
    }

    /// A flat JSON object (keys are fixed identifiers; values finite numbers).
    fn json(&self) -> String {
        let body: Vec<String> = self
            .0
            .iter()
            .map(|(k, v)| {
                let v = if v.is_finite() { *v } else { -1.0 };
                format!("  \"{k}\": {}", (v * 1000.0).round() / 1000.0)
            })
            .collect();
        format!("{{\n{}\n}}\n", body.join(",\n"))
    }

    fn table(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k:<26} {v:.3}\n"))
            .collect()
    }
}

/// The number that follows `marker` in `text` (digits and a point).
fn number_after(text: &str, marker: &str) -> Option<f64> {
    let (_, rest) = text.split_once(marker)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
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
    use super::{Summary, number_after, set_ratios, total_ms};

    #[test]
    fn summary_is_one_number_per_key() {
        let mut s = Summary::default();
        s.set("verify_default_s", 0.5);
        s.set("lab_ratio", 0.0571);
        s.set("verify_default_s", 0.4);
        assert_eq!(
            s.json(),
            "{\n  \"lab_ratio\": 0.057,\n  \"verify_default_s\": 0.4\n}\n"
        );
        let line = "nft: one restore 0.137 s; 5014 iptables calls 11.252 s; ratio 82x";
        assert_eq!(number_after(line, "one restore "), Some(0.137));
        assert_eq!(number_after(line, "iptables calls "), Some(11.252));
        assert_eq!(number_after(line, "max "), None);
    }

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
