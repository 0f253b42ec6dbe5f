//! The libtest-mimic runner: one trial per scenario file x backend (plus a
//! `parse` trial per file), and the Rust flows. Works under `cargo test` and
//! `cargo nextest` (`--list --format terse`, `--exact`, `--ignored`).

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = portcullis_scenarios::trials(&portcullis_scenarios::scenarios_dir());
    trials.extend(portcullis_scenarios::flows::trials());
    libtest_mimic::run(&args, trials).exit();
}
