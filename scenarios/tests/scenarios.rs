//! The libtest-mimic runner: one trial per scenario file x backend (plus a
//! `parse` trial per file), and the Rust flows. Works under `cargo test` and
//! `cargo nextest` (`--list --format terse`, `--exact`, `--ignored`).

fn main() {
    let mut args = libtest_mimic::Arguments::from_args();
    // A lab trial spends its time waiting for packets, not on a CPU.
    portcullis_harness::trial::wait_bound_threads(&mut args);
    // The flows (whole verify runs) are the longest trials: start them first.
    let mut trials = portcullis_scenarios::flows::trials();
    trials.extend(portcullis_scenarios::trials(
        &portcullis_scenarios::scenarios_dir(),
    ));
    libtest_mimic::run(&args, trials).exit();
}
