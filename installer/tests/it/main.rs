//! The installer's one integration-test binary, run by libtest-mimic so a trial
//! that needs root (a namespace, the real iptables) is reported ignored, with the
//! reason, when it cannot run here, and never silently passed.
//!
//! Each module exposes `trials() -> Vec<Trial>`; add a module and one line below.

mod action;
mod apply;
mod apply_sets;
mod cli_test;
mod fleet;
mod golden;
mod layering;
mod lockout;
mod persist;
mod policy_test;
mod reliability;
mod reliability_install;
mod render_prop;
mod restore_test;
mod scenario_cli;
mod support;
mod verify_cli;
mod verify_expect;
mod verify_logging;

fn main() {
    let mut args = libtest_mimic::Arguments::from_args();
    // Most trials wait (apply deadlines, sshd logins, ansible, packets).
    portcullis_harness::trial::wait_bound_threads(&mut args);
    // The fleet rollout (several ansible-playbook runs, ~40 s) is the longest
    // trial: start it first so the rest runs beside it.
    let mut trials = fleet::trials();
    trials.extend(restore_test::trials());
    trials.extend(policy_test::trials());
    trials.extend(golden::trials());
    trials.extend(layering::trials());
    trials.extend(render_prop::trials());
    trials.extend(cli_test::trials());
    trials.extend(persist::trials());
    trials.extend(apply::trials());
    trials.extend(apply_sets::trials());
    trials.extend(lockout::trials());
    trials.extend(reliability::trials());
    trials.extend(verify_cli::trials());
    trials.extend(verify_expect::trials());
    trials.extend(verify_logging::trials());
    trials.extend(reliability_install::trials());
    trials.extend(scenario_cli::trials());
    trials.extend(action::trials());
    libtest_mimic::run(&args, trials).exit();
}
