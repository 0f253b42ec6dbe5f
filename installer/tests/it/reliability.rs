//! Faults of the apply machinery itself (docs/reliability.md, "Apply, guard and
//! rollback"): the guard killed or stopped, the guard and the session killed
//! together, a late confirm, a snapshot truncated on disk, a restore that
//! restores nothing. Each trial runs the real binary on the shared
//! `support::Fixture` (a harness `Host`, its own network namespace; the guard
//! and the watchdog inherit it), with the state directory in a private
//! root-only directory under /run, under both backends. The guard and the
//! watchdog are signalled as `support::ApplyProc`s, by pid checked by command
//! line; stopped ones are continued, and killed if they do not answer, when the
//! fixture drops.
//!
//! Every outcome is read from the kernel (`*-save`) and the state directory,
//! never from what a process printed alone.

use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use nix::sys::signal::Signal;
use portcullis::apply::{Record, Status};
use portcullis_harness::{Backend, Family};

use crate::support::{
    ApplyProc, ApplyRun, BEFORE_MARKER, Fixture, SESSION, ensure, lateness_ms, per_backend,
    sleep_past_deadline,
};

/// The trial's namespace, with the policy written and the "before" rules loaded.
fn fixture(backend: Backend) -> Result<Fixture, Failed> {
    Fixture::with_policy("reliability", backend)
}

/// Where most trials start: the [`fixture`], its rules before, and an apply
/// from [`SESSION`] with `timeout` that is pending (its rules live), its run and
/// record. Bound in this order, the run drops before the fixture.
type Pending = (Fixture, (String, String), ApplyRun, Record);

fn pending(backend: Backend, timeout: u64) -> Result<Pending, Failed> {
    let f = fixture(backend)?;
    let before = f.save_both()?;
    let (run, rec) = f.start_apply(timeout, Some(SESSION))?;
    Ok((f, before, run, rec))
}

/// The rules of before are back in `f`.
fn snapshot_back(f: &Fixture, before: &(String, String)) -> Result<(), Failed> {
    f.ensure_rules(before, "the snapshot is not back")
}

/// SIGKILL of the guard while the apply is pending: the foreground apply (or
/// the watchdog) restores the snapshot at once, and apply says so.
fn guard_sigkill_rolls_back(backend: Backend) -> Result<(), Failed> {
    let (f, before, run, rec) = pending(backend, 30)?;
    let killed = portcullis::apply::state::now_unix_ms();
    ApplyProc::guard(&rec)?.signal(Signal::SIGKILL)?;
    let done = f.wait_rolled_back(&rec.id, Duration::from_secs(10))?;
    snapshot_back(&f, &before)?;
    // When the rollback ended, by the record's own clock (now, 10 s or more
    // are always left: the wait above gives up after 10).
    let ended = done.ended_unix_ms.unwrap_or(u64::MAX);
    ensure(ended + 10_000 < done.deadline_unix_ms, || {
        format!("the rollback waited for the deadline: {done:?}")
    })?;
    eprintln!(
        "measured: reliability::guard_sigkill::{backend}: rolled back {} ms after the kill",
        done.ended_unix_ms.unwrap_or(0) as i64 - killed as i64
    );
    run.finish_with(1, "ROLLED BACK")?;
    Ok(())
}

/// SIGKILL of the guard and of the session's apply together (what an OOM kill
/// or a careless `pkill portcullis` does): the watchdog restores the snapshot.
fn guard_and_session_sigkill_rolls_back(backend: Backend) -> Result<(), Failed> {
    let (f, before, run, rec) = pending(backend, 30)?;
    let killed = portcullis::apply::state::now_unix_ms();
    run.signal(Signal::SIGKILL)?;
    ApplyProc::guard(&rec)?.signal(Signal::SIGKILL)?;
    let done = f.wait_rolled_back(&rec.id, Duration::from_secs(10))?;
    snapshot_back(&f, &before)?;
    eprintln!(
        "measured: reliability::guard_and_session_sigkill::{backend}: rolled back {} ms after the kill",
        done.ended_unix_ms.unwrap_or(0) as i64 - killed as i64
    );
    let log = f.guard_log();
    ensure(
        log.contains("watchdog") && log.contains("restoring"),
        || format!("the watchdog did not restore: {log}"),
    )?;
    Ok(())
}

/// SIGKILL of the watchdog alone: the guard notices, logs it, and still rolls
/// back at the deadline.
fn watchdog_sigkill_guard_still_rolls_back(backend: Backend) -> Result<(), Failed> {
    let (f, before, run, rec) = pending(backend, 2)?;
    let w = ApplyProc::watchdog(&rec).ok_or("no watchdog pid in the record")?;
    w.signal(Signal::SIGKILL)?;
    let done = f.wait_finished(&rec.id, Duration::from_secs(10))?;
    ensure(
        done.status == Status::RolledBack
            && done
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("deadline reached"),
        || format!("{done:?}"),
    )?;
    snapshot_back(&f, &before)?;
    let log = f.guard_log();
    ensure(log.contains("the watchdog exited"), || {
        format!("the guard did not notice: {log}")
    })?;
    run.finish_with(1, "ROLLED BACK")?;
    Ok(())
}

/// SIGSTOP of the guard: `status` says it is stopped, and the snapshot is
/// restored by the deadline (plus the grace) all the same.
fn guard_sigstop_rolls_back_by_deadline(backend: Backend) -> Result<(), Failed> {
    let (f, before, run, rec) = pending(backend, 3)?;
    let guard = ApplyProc::guard(&rec)?;
    guard.stop()?;
    let s = f.status_json()?;
    ensure(s["guard"] == "stopped" && s["guard_alive"] == false, || {
        format!("status does not show a stopped guard: {s}")
    })?;
    let (_, out, _) = f.run(f.portcullis("status", &[], None))?;
    ensure(out.contains("STOPPED"), || format!("status: {out}"))?;
    let done = f.wait_rolled_back(&rec.id, Duration::from_secs(15))?;
    snapshot_back(&f, &before)?;
    eprintln!(
        "measured: reliability::guard_sigstop::{backend}: rollback done {} ms after the deadline",
        lateness_ms(&done)
    );
    run.finish_with(1, "ROLLED BACK")?;
    Ok(())
}

/// The guard and the watchdog stopped, the session's apply killed: a confirm
/// waiting in the guard's FIFO when it is continued past the deadline is refused,
/// and the snapshot restored.
fn resumed_guard_refuses_a_late_confirm(backend: Backend) -> Result<(), Failed> {
    let (f, before, run, rec) = pending(backend, 2)?;
    let guard = ApplyProc::guard(&rec)?;
    let watchdog = ApplyProc::watchdog(&rec);
    if let Some(w) = &watchdog {
        w.stop()?;
    }
    guard.stop()?;
    run.signal(Signal::SIGKILL)?;
    run.finish()?;
    sleep_past_deadline(&rec, 1000);
    // What `confirm` writes to a guard it believes is watching.
    let state = portcullis::apply::StateDir::open(&f.state_dir)?;
    let sent = portcullis::apply::guard::send(&state, &format!("confirm {}", rec.id))?;
    ensure(sent, || "the stopped guard's FIFO is gone".into())?;
    guard.signal(Signal::SIGCONT)?;
    let done = f.wait_finished(&rec.id, Duration::from_secs(10))?;
    if let Some(w) = &watchdog {
        w.signal(Signal::SIGCONT)?;
    }
    ensure(done.status == Status::RolledBack, || {
        format!("a late confirm was accepted: {done:?}")
    })?;
    snapshot_back(&f, &before)?;
    Ok(())
}

/// Everything killed (watchdog, session, guard), then `confirm` after the
/// deadline: refused with exit 1, and it restores the snapshot itself.
fn late_confirm_with_no_guard_refused(backend: Backend) -> Result<(), Failed> {
    let (f, before, run, rec) = pending(backend, 2)?;
    if let Some(w) = ApplyProc::watchdog(&rec) {
        w.signal(Signal::SIGKILL)?;
        w.wait_gone()?;
    }
    run.signal(Signal::SIGKILL)?;
    run.finish()?;
    ApplyProc::guard(&rec)?.signal(Signal::SIGKILL)?;
    sleep_past_deadline(&rec, 500);
    let (st, _, err) = f.run(f.portcullis("confirm", &["--no-persist"], None))?;
    ensure(st.code() == Some(1), || {
        format!("a late confirm exited {st}: {err}")
    })?;
    ensure(err.contains("too late"), || format!("confirm said: {err}"))?;
    snapshot_back(&f, &before)?;
    f.wait_rolled_back(&rec.id, Duration::from_secs(1))?;
    Ok(())
}

/// `rollback` with a stopped guard: it kills that guard and restores at once
/// (and `confirm`, before it, is refused).
fn rollback_kills_a_stopped_guard(backend: Backend) -> Result<(), Failed> {
    let (f, before, run, rec) = pending(backend, 60)?;
    let guard = ApplyProc::guard(&rec)?;
    guard.stop()?;
    // A confirm cannot reach a stopped guard: refused, and it says what to do.
    let (st, _, err) = f.run(f.portcullis("confirm", &["--no-persist"], None))?;
    ensure(st.code() == Some(1) && err.contains("is stopped"), || {
        format!("confirm to a stopped guard: {st}: {err}")
    })?;
    let started = Instant::now();
    let (st, _, err) = f.run(f.portcullis("rollback", &[], None))?;
    let took = started.elapsed();
    ensure(st.success(), || format!("rollback: {st}: {err}"))?;
    snapshot_back(&f, &before)?;
    ensure(!guard.runs(), || "the stopped guard still runs".into())?;
    eprintln!(
        "measured: reliability::rollback_stopped_guard::{backend}: rollback took {} ms",
        took.as_millis()
    );
    run.finish_with(1, "ROLLED BACK")?;
    Ok(())
}

/// The IPv4 snapshot truncated to 0 bytes: `rollback` fails loudly (exit 1),
/// loads the fallback (ssh from the client that ran apply), keeps the record
/// pending and refuses a new apply; with the file put back, `rollback` again
/// restores the snapshot.
fn truncated_snapshot_fails_loudly_and_retries(backend: Backend) -> Result<(), Failed> {
    let (f, before, run, rec) = pending(backend, 60)?;
    let snap = f.state_dir.join("snapshot.v4");
    let good = std::fs::read(&snap)?;
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&snap)?;
    let (st, _, err) = f.run(f.portcullis("rollback", &[], None))?;
    ensure(st.code() == Some(1), || format!("rollback: {st}: {err}"))?;
    ensure(err.contains("FAILED") && err.contains("unusable"), || {
        format!("rollback was not loud: {err}")
    })?;
    let (v4, v6) = f.save_both()?;
    ensure(
        v4.contains("-s 192.0.2.10/32") && v4.contains("--dport 22") && v4.contains(":INPUT DROP"),
        || format!("the fallback is not live:\n{v4}"),
    )?;
    // IPv6's snapshot was fine: it is back.
    ensure(v6 == before.1, || {
        format!("ipv6 is not the snapshot:\n{v6}")
    })?;
    let pending = f.record("pending.json").ok_or("the record was retired")?;
    ensure(pending.status == Status::RollbackFailed, || {
        format!("{pending:?}")
    })?;
    let (_, out, _) = f.run(f.portcullis("status", &[], None))?;
    ensure(out.contains("ROLLBACK FAILED"), || format!("status: {out}"))?;
    run.finish_with(1, "ROLLBACK FAILED")?;
    // A new apply is refused while the failure stands.
    let (st, _, err) = f.run(f.apply_cmd(60, Some(SESSION)))?;
    ensure(
        st.code() == Some(1) && err.contains(&rec.id) && err.contains("the rollback of apply"),
        || format!("a new apply over a failed rollback: {st}: {err}"),
    )?;
    // The file put back: the retry restores it.
    std::fs::write(&snap, &good)?;
    let (st, _, err) = f.run(f.portcullis("rollback", &[], None))?;
    ensure(st.success(), || format!("retried rollback: {st}: {err}"))?;
    snapshot_back(&f, &before)?;
    ensure(!f.state_dir.join("pending.json").exists(), || {
        "the record is still pending".into()
    })?;
    Ok(())
}

/// A `*-restore` that reports success having loaded nothing: the rollback reads
/// the rules back, sees they are not the snapshot, and fails loudly.
fn restore_that_restores_nothing_is_caught(backend: Backend) -> Result<(), Failed> {
    let mut f = fixture(backend)?;
    // A real load of the snapshot swallowed and reported as a success.
    f.fake_restore(Family::V4, BEFORE_MARKER, "exit 0")?;
    let (run, rec) = f.start_apply(60, Some(SESSION))?;
    let (st, _, err) = f.run(f.portcullis("rollback", &[], None))?;
    ensure(st.code() == Some(1), || format!("rollback: {st}: {err}"))?;
    ensure(err.contains("did not bring back the snapshot"), || {
        format!("rollback: {err}")
    })?;
    let pending = f.record("pending.json").ok_or("the record was retired")?;
    ensure(
        pending.id == rec.id && pending.status == Status::RollbackFailed,
        || format!("{pending:?}"),
    )?;
    run.finish_with(1, "")?;
    Ok(())
}

/// A guard whose restore is slow (2 s: a large ruleset on nft, with the
/// read-back) is still restoring when the grace after the deadline ends: it
/// runs, so neither the watchdog nor `apply` kill it; the guard's own rollback
/// stands.
fn slow_restore_is_left_to_the_guard(backend: Backend) -> Result<(), Failed> {
    let mut f = fixture(backend)?;
    let before = f.save_both()?;
    f.fake_restore(Family::V4, BEFORE_MARKER, "sleep 2")?;
    let (run, rec) = f.start_apply(2, Some(SESSION))?;
    let done = f.wait_finished(&rec.id, Duration::from_secs(20))?;
    ensure(
        done.status == Status::RolledBack
            && done.reason.as_deref() == Some("deadline reached without confirmation"),
        || format!("not the guard's rollback: {done:?}\n{}", f.guard_log()),
    )?;
    ensure(lateness_ms(&done) >= 2000, || {
        format!("the restore was not slow: {done:?}")
    })?;
    snapshot_back(&f, &before)?;
    run.finish_with(1, "ROLLED BACK")?;
    Ok(())
}

/// The deadline lives on CLOCK_BOOTTIME in the record, the guard waits on it, and
/// `status` counts the time left from it.
fn deadline_is_on_the_boot_clock(backend: Backend) -> Result<(), Failed> {
    let f = fixture(backend)?;
    let (run, _) = f.start_apply(30, Some(SESSION))?;
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)?;
    let boot_ms = boot.tv_sec() as i64 * 1000 + boot.tv_nsec() as i64 / 1_000_000;
    let pending = f.record("pending.json").ok_or("no record")?;
    let deadline = pending
        .deadline_boot_ms
        .ok_or_else(|| format!("no deadline_boot_ms in the record: {pending:?}"))?
        as i64;
    let left = deadline - boot_ms;
    ensure((25_000..=30_000).contains(&left), || {
        format!("the boot-clock deadline is {left} ms away")
    })?;
    let s = f.status_json()?;
    let secs = s["remaining_secs"].as_i64().unwrap_or(-1);
    ensure((secs - left / 1000).abs() <= 2, || {
        format!("status says {secs} s left, the boot clock {left} ms")
    })?;
    let log = f.guard_log();
    ensure(log.contains("CLOCK_BOOTTIME"), || {
        format!("guard log: {log}")
    })?;
    let (st, _, err) = f.run(f.portcullis("rollback", &[], None))?;
    ensure(st.success(), || format!("rollback: {err}"))?;
    run.finish()?;
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    per_backend(
        "reliability",
        |b| b.unavailable_reason(),
        &[
            ("guard_sigkill_rolls_back", guard_sigkill_rolls_back),
            (
                "guard_and_session_sigkill_rolls_back",
                guard_and_session_sigkill_rolls_back,
            ),
            (
                "watchdog_sigkill_guard_still_rolls_back",
                watchdog_sigkill_guard_still_rolls_back,
            ),
            (
                "guard_sigstop_rolls_back_by_deadline",
                guard_sigstop_rolls_back_by_deadline,
            ),
            (
                "resumed_guard_refuses_a_late_confirm",
                resumed_guard_refuses_a_late_confirm,
            ),
            (
                "late_confirm_with_no_guard_refused",
                late_confirm_with_no_guard_refused,
            ),
            (
                "rollback_kills_a_stopped_guard",
                rollback_kills_a_stopped_guard,
            ),
            (
                "truncated_snapshot_fails_loudly_and_retries",
                truncated_snapshot_fails_loudly_and_retries,
            ),
            (
                "restore_that_restores_nothing_is_caught",
                restore_that_restores_nothing_is_caught,
            ),
            (
                "slow_restore_is_left_to_the_guard",
                slow_restore_is_left_to_the_guard,
            ),
            (
                "deadline_is_on_the_boot_clock",
                deadline_is_on_the_boot_clock,
            ),
        ],
    )
}
