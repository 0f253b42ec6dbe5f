//! Times N cycles of the standard lab up and down, for `ci/bench` (which runs the
//! same topology with ip(8) in `ci/ip-baseline.sh` side by side).
//!
//! Usage: `lab-bench [CYCLES] [--settle]`; prints
//! `lab-bench cycles=N total_ms=T per_cycle_ms=P`. With `--settle` each cycle
//! also waits for `Lab::settle` (the target's MLD reports), what the first probe
//! of a lab pays.

use std::time::Instant;

use portcullis_harness::{Lab, LabOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settle = args.iter().any(|a| a == "--settle");
    let cycles: u32 = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(|s| s.parse().expect("CYCLES must be a number"))
        .unwrap_or(20);
    if let Some(why) = portcullis_harness::trial::root_missing() {
        eprintln!("lab-bench: {why}");
        std::process::exit(2);
    }
    let start = Instant::now();
    for _ in 0..cycles {
        let lab = Lab::standard_with(LabOptions::default()).expect("lab up");
        if settle {
            lab.settle().expect("settle");
        }
        if let Err(errors) = lab.shutdown() {
            for e in errors {
                eprintln!("lab-bench: teardown: {e}");
            }
            std::process::exit(1);
        }
    }
    let total = start.elapsed().as_secs_f64() * 1000.0;
    println!(
        "lab-bench{} cycles={cycles} total_ms={total:.1} per_cycle_ms={:.2}",
        if settle { "+settle" } else { "" },
        total / f64::from(cycles)
    );
}
