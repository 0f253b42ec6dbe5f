//! The libtest-mimic runner: one trial per scenario file x backend.

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    libtest_mimic::run(&args, Vec::new()).exit();
}
