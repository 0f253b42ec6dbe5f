//! The libtest-mimic runner: one trial per scenario file x backend (plus a
//! `parse` trial per file), and the Rust flows. Works under `cargo test` and
//! `cargo nextest` (`--list --format terse`, `--exact`, `--ignored`).

fn main() {
    let mut args = libtest_mimic::Arguments::from_args();
    // A lab trial spends its time waiting for packets (negative windows, ssh
    // logins), not on a CPU: run more of them at once than there are cores.
    // `--test-threads N` (or RUST_TEST_THREADS) still decides when given.
    if args.test_threads.is_none() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        args.test_threads = Some(
            std::env::var("RUST_TEST_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(cores.max(4)),
        );
    }
    // The flows (whole verify runs) are the longest trials: start them first.
    let mut trials = portcullis_scenarios::flows::trials();
    trials.extend(portcullis_scenarios::trials(
        &portcullis_scenarios::scenarios_dir(),
    ));
    libtest_mimic::run(&args, trials).exit();
}
