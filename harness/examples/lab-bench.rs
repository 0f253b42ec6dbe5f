//! Times N cycles of the standard lab up and down, for `ci/bench` (which runs the
//! same topology with ip(8) in `ci/ip-baseline.sh` side by side).
//!
//! Usage: `lab-bench [CYCLES]`; prints `lab-bench cycles=N total_ms=T per_cycle_ms=P`.

use std::time::Instant;

use portcullis_harness::{Lab, LabOptions};

fn main() {
    let cycles: u32 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("CYCLES must be a number"))
        .unwrap_or(20);
    if !portcullis_harness::can_build_labs() {
        eprintln!("lab-bench: {}", portcullis_harness::NOT_ROOT);
        std::process::exit(2);
    }
    let start = Instant::now();
    for _ in 0..cycles {
        let lab = Lab::standard_with(LabOptions::default()).expect("lab up");
        if let Err(errors) = lab.shutdown() {
            for e in errors {
                eprintln!("lab-bench: teardown: {e}");
            }
            std::process::exit(1);
        }
    }
    let total = start.elapsed().as_secs_f64() * 1000.0;
    println!(
        "lab-bench cycles={cycles} total_ms={total:.1} per_cycle_ms={:.2}",
        total / f64::from(cycles)
    );
}
