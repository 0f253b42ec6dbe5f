//! The watchdog: the second line of defence behind the guard.
//!
//! The guard starts `portcullis __watchdog --state-dir D --id ID --guard PID`
//! before it arms. The watchdog blocks the same signals as the guard, calls
//! setsid() (its own session: what kills the admin's session does not reach it),
//! and asks the kernel for SIGUSR1 when its parent, the guard, dies
//! (`PR_SET_PDEATHSIG`). It holds no lock and touches nothing while the guard
//! lives; it sleeps in poll(2) on its signalfd and a CLOCK_BOOTTIME timerfd set
//! to [`GRACE_MS`] after the deadline. Then:
//!
//! - the guard died (SIGUSR1, or it was already gone when the watchdog started)
//!   and the apply is not over: it restores the snapshot at once;
//! - the deadline plus the grace passed and the apply is not over: if the guard
//!   is stopped, it kills the guard of this id (SIGKILL reaches a stopped
//!   process) and restores the snapshot; a guard that runs is restoring (with
//!   the read-back, seconds on a large nft ruleset) and gets until
//!   [`STUCK_MS`] after the deadline before it is treated the same
//!   ([`overdue`]); the watchdog looks again every 100 ms;
//! - the apply is over (confirmed or rolled back): it exits.
//!
//! Restoring goes through [`super::take_over`], under the state lock, so the
//! watchdog, the foreground `apply` and `portcullis rollback` may all try at once
//! and the snapshot is restored once. SIGHUP, SIGINT, SIGTERM and SIGQUIT are
//! logged and ignored: the guard answers a shutdown.
//!
//! Where systemd runs and portcullis shares its network and mount namespaces,
//! the guard also sets a transient timer ([`systemd_timer_argv`]) that runs
//! `portcullis rollback --if-pending ID` a second after the deadline: a third
//! line, outside every process portcullis started. It is never the only one
//! (CI has no systemd), and in another namespace it would restore the wrong
//! rules, so there it is not set.

use std::os::fd::AsFd as _;

use anyhow::Context as _;
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{Expiration, TimerFd, TimerSetTimeFlags};

use super::guard::{GuardState, boot_deadline, boot_timer, detach, guard_state, log_as, poll_in};
use super::state::StateDir;

/// How long after the deadline the watchdog (and the foreground `apply`) give
/// the guard to end the apply before they end it themselves. A guard restores in
/// tens of milliseconds (docs/safety.md); a stopped one never does.
pub const GRACE_MS: u64 = 500;

/// How long after the deadline a guard that runs (is not stopped) may take to
/// end the apply before it counts as stuck.
pub const STUCK_MS: u64 = 15_000;

/// Whether the apply should be taken from its guard `late_ms` after the
/// deadline: a gone guard at once, a stopped one after [`GRACE_MS`], one that
/// runs after [`STUCK_MS`].
pub fn overdue(guard: GuardState, late_ms: i64) -> bool {
    match guard {
        GuardState::Gone => true,
        GuardState::Stopped => late_ms >= GRACE_MS as i64,
        GuardState::Watching => late_ms >= STUCK_MS as i64,
    }
}

fn log(msg: &str) {
    log_as("watchdog", msg);
}

/// The watchdog's whole life.
pub fn run(state_dir: &std::path::Path, id: &str, guard: i32) -> anyhow::Result<()> {
    let sigfd = detach("watchdog", Signal::SIGUSR1)?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGUSR1).context("cannot set PR_SET_PDEATHSIG")?;
    let state = StateDir::open(state_dir)?;
    let Some(record) = state.record()?.filter(|r| r.id == id) else {
        log(&format!("apply {id} is not pending; nothing to watch"));
        return Ok(());
    };
    let timer = boot_timer(boot_deadline(&record) + GRACE_MS)
        .context("cannot set a CLOCK_BOOTTIME timer")?;
    // The guard may have died before the parent-death signal was set up.
    let mut woke = if nix::unistd::getppid().as_raw() != guard {
        Woke::GuardDied("the guard was gone when the watchdog started".to_owned())
    } else {
        log(&format!("watching guard {guard} of apply {id}"));
        wait(&sigfd, &timer, guard)?
    };
    loop {
        if let Some(r) = super::finished(&state, id)? {
            log(&format!("apply {id} ended {:?}; nothing to do", r.status));
            return Ok(());
        }
        let reason = match woke {
            Woke::GuardDied(reason) => reason,
            Woke::Timer => {
                let what = guard_state(&state, &record);
                let late = -record.remaining_ms();
                if !overdue(what, late) {
                    // A guard that runs is restoring: look again shortly.
                    let again = TimeSpec::from_duration(Duration::from_millis(100));
                    timer
                        .set(Expiration::OneShot(again), TimerSetTimeFlags::empty())
                        .context("cannot re-arm the timer")?;
                    woke = wait(&sigfd, &timer, guard)?;
                    continue;
                }
                format!(
                    "the guard {guard} ({}) had not ended the apply {late} ms after the deadline",
                    what.name()
                )
            }
        };
        log(&format!("{reason}: restoring the snapshot"));
        let r = super::take_over(&state, id, &reason, true, false)?;
        log(&format!(
            "apply {id} ended {:?}: {}",
            r.status,
            r.reason.unwrap_or_default()
        ));
        return Ok(());
    }
}

/// What woke the watchdog.
enum Woke {
    GuardDied(String),
    Timer,
}

/// Sleep until the guard dies or the timer fires.
fn wait(sigfd: &SignalFd, timer: &TimerFd, guard: i32) -> anyhow::Result<Woke> {
    loop {
        let [sig_ready, timer_ready] = match poll_in([sigfd.as_fd(), timer.as_fd()]) {
            Ok(ready) => ready,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        if sig_ready {
            while let Some(info) = sigfd.read_signal()? {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGUSR1) => {
                        return Ok(Woke::GuardDied(format!("the guard {guard} exited")));
                    }
                    Ok(s) => log(&format!("{s} ignored: the guard answers a shutdown")),
                    Err(_) => {}
                }
            }
        }
        if timer_ready {
            return Ok(Woke::Timer);
        }
    }
}

/// Whether a systemd timer may back up this apply: systemd is the init, and
/// this process shares PID 1's network and mount namespaces (a unit runs in
/// those, and must restore the rules and read the state dir this apply uses).
pub fn systemd_timer_possible() -> bool {
    let same = |ns: &str| {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}"));
        let init = std::fs::read_link(format!("/proc/1/ns/{ns}"));
        matches!((mine, init), (Ok(a), Ok(b)) if a == b)
    };
    std::path::Path::new("/run/systemd/system").is_dir()
        && same("net")
        && same("mnt")
        && portcullis_netfilter::backend::find_in_path("systemd-run").is_some()
}

/// The `systemd-run` call that sets a transient timer running `EXE rollback
/// --state-dir D --if-pending ID` `in_ms` from now (one second after the
/// deadline); the unit is named after the apply, which is digits and a dash.
pub fn systemd_timer_argv(
    exe: &std::path::Path,
    state_dir: &std::path::Path,
    id: &str,
    in_ms: u64,
) -> Vec<String> {
    vec![
        "systemd-run".into(),
        "--quiet".into(),
        "--collect".into(),
        format!("--unit=portcullis-rollback-{id}"),
        format!("--on-active={in_ms}ms"),
        "--timer-property=AccuracySec=100ms".into(),
        exe.display().to_string(),
        "rollback".into(),
        "--state-dir".into(),
        state_dir.display().to_string(),
        "--if-pending".into(),
        id.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_guard_is_overdue_sooner_than_a_running_one() {
        assert!(overdue(GuardState::Gone, -10_000));
        assert!(!overdue(GuardState::Stopped, 499));
        assert!(overdue(GuardState::Stopped, 500));
        assert!(!overdue(GuardState::Watching, 500));
        assert!(overdue(GuardState::Watching, STUCK_MS as i64));
    }

    #[test]
    fn the_systemd_timer_runs_rollback_if_pending_after_the_deadline() {
        let argv = systemd_timer_argv(
            std::path::Path::new("/usr/sbin/portcullis"),
            std::path::Path::new("/var/lib/portcullis"),
            "17-42",
            31_000,
        );
        assert_eq!(
            argv.join(" "),
            "systemd-run --quiet --collect --unit=portcullis-rollback-17-42 --on-active=31000ms \
             --timer-property=AccuracySec=100ms /usr/sbin/portcullis rollback \
             --state-dir /var/lib/portcullis --if-pending 17-42"
        );
    }
}
