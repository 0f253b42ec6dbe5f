//! `portcullis apply`, `confirm`, `rollback` and `status`, run as the real binary
//! inside a throwaway network namespace (never the host's), with the state
//! directory in a private root-only directory under /run.
//!
//! The namespace is a harness `Host` (the `support::Fixture`): an anonymous
//! namespace held by a thread of this process, so it dies with it, even by
//! SIGKILL; portcullis runs in it as a direct child. Guards a test started are
//! rolled back when it ends.

use std::path::{Path, PathBuf};
use std::time::Duration;

use libtest_mimic::{Failed, Trial};
use nix::sys::signal::Signal;
use portcullis::apply::Status;
use portcullis_harness::{Backend, Family};

use crate::support::{
    ApplyProc, BIN, Fixture, SESSION, assert_applied, ensure, lateness_ms, per_backend,
    sleep_past_deadline,
};

/// The trial's namespace with the policy written and the "before" rules loaded.
fn fixture(backend: Backend) -> Result<Fixture, Failed> {
    Fixture::with_policy("apply-it", backend)
}

fn confirm_keeps_rules(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    // Once pending, the rules are live (`start_apply` checks them), and: status
    // names it, the guard watches.
    let (apply, rec) = ns.start_apply(5, None)?;
    let s = ns.status_json()?;
    ensure(
        s["pending"]["id"] == rec.id.as_str() && s["guard_alive"] == true,
        || format!("status does not show the pending apply: {s}"),
    )?;
    ensure(s["backend"] == backend.name(), || {
        format!("status backend: {s}")
    })?;

    let (st, _, err) = ns.run(ns.portcullis("confirm", &["--no-persist"], None))?;
    ensure(st.success(), || format!("confirm failed: {err}"))?;
    let (st, err) = apply.finish()?;
    ensure(st.code() == Some(0), || {
        format!("apply exited {st} after confirm: {err}")
    })?;
    ensure(err.contains("confirmed"), || format!("apply said: {err}"))?;
    let done = ns.wait_finished(&rec.id, Duration::from_secs(1))?;
    ensure(done.status == Status::Confirmed, || format!("{done:?}"))?;
    // Past the deadline, the rules stay.
    sleep_past_deadline(&rec, 500);
    assert_applied(&ns.save(Family::V4)?)?;
    ensure(ns.save(Family::V6)?.contains(":INPUT DROP"), || {
        "v6 not applied".into()
    })?;
    ensure(!ns.state_dir.join("pending.json").exists(), || {
        "pending.json left behind".into()
    })?;
    Ok(())
}

fn no_confirm_rolls_back(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    let (apply, rec) = ns.start_apply(2, None)?;
    let (st, err) = apply.finish()?;
    ensure(st.code() == Some(1), || format!("apply exited {st}: {err}"))?;
    ensure(
        err.contains("ROLLED BACK") && err.contains("deadline reached"),
        || format!("apply did not say it rolled back: {err}"),
    )?;
    // The countdown was printed, one line a second (stderr is not a tty here).
    let ticks = err
        .lines()
        .filter(|l| l.contains("waiting for confirm"))
        .count();
    ensure(ticks >= 2, || format!("{ticks} countdown lines: {err}"))?;
    ns.ensure_rules(&before, "the rules were not restored")?;
    let done = ns.wait_rolled_back(&rec.id, Duration::from_secs(1))?;
    eprintln!(
        "measured: apply::no_confirm_rolls_back::{backend}: rollback done {} ms after the deadline",
        lateness_ms(&done)
    );
    Ok(())
}

fn killed_foreground_still_rolls_back(backend: Backend, sig: Signal) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    let (mut apply, rec) = ns.start_apply(3, None)?;
    apply.signal(sig)?;
    let st = apply.child.wait()?;
    ensure(!st.success(), || format!("apply survived {sig}: {st}"))?;
    // The guard is hung up too, as a session loss would: it must ignore that.
    ApplyProc::guard(&rec)?.signal(Signal::SIGHUP)?;
    assert_applied(&ns.save(Family::V4)?)?;
    let done = ns.wait_rolled_back(&rec.id, Duration::from_secs(15))?;
    ns.ensure_rules(&before, "the rules were not restored")?;
    let log = ns.guard_log();
    ensure(log.contains("SIGHUP ignored"), || {
        format!("guard log: {log}")
    })?;
    eprintln!(
        "measured: apply::{sig}_foreground::{backend}: rollback done {} ms after the deadline",
        lateness_ms(&done)
    );
    Ok(())
}

fn second_apply_refused(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    let (first, rec) = ns.start_apply(60, None)?;
    let second = ns.spawn_apply(60, None)?;
    let (st, err) = second.finish()?;
    ensure(st.code() == Some(1), || {
        format!("second apply exited {st}: {err}")
    })?;
    ensure(
        err.contains("is pending until") && err.contains(&rec.id),
        || format!("second apply did not name the pending one: {err}"),
    )?;
    // `rollback` ends the first at once, well before its 60 s deadline.
    let (st, _, err) = ns.run(ns.portcullis("rollback", &[], None))?;
    ensure(st.success(), || format!("rollback failed: {err}"))?;
    first.finish_with(1, "ROLLED BACK")?;
    ns.ensure_rules(&before, "rollback did not restore")?;
    // With nothing pending, rollback says so and fails.
    let (st, _, err) = ns.run(ns.portcullis("rollback", &[], None))?;
    ensure(!st.success() && err.contains("no apply is pending"), || {
        format!("{st}: {err}")
    })?;
    Ok(())
}

fn ipv6_failure_rolls_back_ipv4(backend: Backend) -> Result<(), Failed> {
    let mut ns = fixture(backend)?;
    let before = ns.save_both()?;
    // An ip6tables-restore that passes --test and fails the real load: the kind
    // of failure (a module missing, a race) that --test cannot catch.
    // It fails only the rendered ruleset (portcullis's header line), so the rollback
    // of the ipv6 snapshot, had it been needed, would still go through.
    ns.fake_restore(
        Family::V6,
        "portcullis ipv6 ruleset",
        "echo 'injected failure' >&2; exit 1",
    )?;
    let apply = ns.spawn_apply(30, None)?;
    let (st, err) = apply.finish()?;
    ensure(st.code() == Some(1), || format!("apply exited {st}: {err}"))?;
    ensure(
        err.contains("ROLLED BACK") && err.contains("ipv6") && err.contains("injected failure"),
        || format!("apply did not report the ipv6 failure and rollback: {err}"),
    )?;
    ns.ensure_rules(&before, "ipv4 was not rolled back")?;
    Ok(())
}

fn preflight_refuses_outside_client(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    for ssh in [
        "198.51.100.7 40022 192.0.2.1 22",
        "2001:db8:9::7 40022 2001:db8:1::1 22",
    ] {
        let apply = ns.spawn_apply(30, Some(ssh))?;
        let (st, err) = apply.finish()?;
        let client = ssh.split(' ').next().unwrap();
        ensure(st.code() == Some(2), || format!("apply exited {st}: {err}"))?;
        ensure(
            err.contains(client) && err.contains("`ssh.allow_from`"),
            || format!("refusal does not name {client} and ssh.allow_from: {err}"),
        )?;
        ensure(err.contains("nothing changed"), || err.clone())?;
    }
    let apply = ns.spawn_apply(30, Some("192.0.2.10 40022 192.0.2.1 2222"))?;
    let (st, err) = apply.finish()?;
    ensure(st.code() == Some(2) && err.contains("`ssh.port`"), || {
        format!("{st}: {err}")
    })?;
    ns.ensure_rules(&before, "preflight changed the rules")?;
    ensure(!ns.state_dir.exists(), || {
        "preflight created the state dir".into()
    })?;
    Ok(())
}

/// `sudo` drops SSH_CONNECTION (env_reset): under sudo, preflight takes it from
/// the nearest ancestor that has it. Here a shell holding an outside client's
/// SSH_CONNECTION runs apply with the variable removed and SUDO_USER set, as
/// sudo would: still refused, naming the ancestor.
fn sudo_session_found_in_ancestor(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    let policy = ns.policy();
    let apply = format!(
        "env -u SSH_CONNECTION SUDO_USER=admin {BIN} apply --state-dir {} --config {} --backend {} --no-persist --timeout 5; echo \"rc=$?\"",
        ns.state_dir.display(),
        policy.display(),
        backend.name()
    );
    let mut c = ns.cmd("sh", Some("198.51.100.7 40022 192.0.2.1 22"));
    c.args(["-c", &apply]);
    let (_, out, err) = ns.run(c)?;
    ensure(out.contains("rc=2"), || {
        format!("apply under fake sudo: {out}{err}")
    })?;
    ensure(
        err.contains("198.51.100.7") && err.contains("ancestor pid"),
        || format!("the refusal does not name the ancestor's client: {err}"),
    )?;
    ns.ensure_rules(&before, "the rules changed")?;
    Ok(())
}

fn same_session_confirm_refused(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let (apply, rec) = ns.start_apply(30, Some(SESSION))?;
    ensure(rec.ssh_connection.as_deref() == Some(SESSION), || {
        format!("{rec:?}")
    })?;
    let (st, _, err) = ns.run(ns.portcullis("confirm", &["--no-persist"], Some(SESSION)))?;
    ensure(
        st.code() == Some(2) && err.contains("proves nothing about new connections"),
        || format!("same-session confirm: {st}: {err}"),
    )?;
    // Still pending, then confirmed from a new connection (another client port).
    ensure(
        ns.record("pending.json").map(|r| r.status) == Some(Status::Pending),
        || "a refused confirm changed the record".into(),
    )?;
    let (st, _, err) = ns.run(ns.portcullis(
        "confirm",
        &["--no-persist"],
        Some("192.0.2.10 40023 192.0.2.1 22"),
    ))?;
    ensure(st.success(), || format!("new-session confirm: {st}: {err}"))?;
    apply.finish_with(0, "")?;
    Ok(())
}

/// Apply with persistence into a Debian fixture root: nothing is written there
/// while the apply is pending, the applied text after confirm; a rollback
/// leaves the root as it was; a root whose loader cannot be found is refused
/// up front, with nothing changed.
fn confirm_persists_into_root(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let root = crate::persist::copy_fixture("debian", ns.dir.path())?;
    let rules_v4 = root.join("etc/iptables/rules.v4");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let boot_before = read(&rules_v4);
    let policy = ns.policy();
    let apply_with_root = |root: &Path, timeout: &str| {
        ns.portcullis(
            "apply",
            &[
                "--config",
                policy.to_str().unwrap(),
                "--backend",
                backend.name(),
                "--timeout",
                timeout,
                "--root",
                root.to_str().unwrap(),
            ],
            None,
        )
    };

    // Not confirmed: rolled back, and the boot files never changed.
    let mut run = ns.spawn(apply_with_root(&root, "2"))?;
    run.wait_pending(&ns)?;
    ensure(read(&rules_v4) == boot_before, || {
        "persisted before confirmation".into()
    })?;
    run.finish_with(1, "")?;
    ensure(read(&rules_v4) == boot_before, || {
        "a rolled-back apply persisted".into()
    })?;

    // Confirmed: the applied text is what the boot loader will read.
    let mut run = ns.spawn(apply_with_root(&root, "30"))?;
    let rec = run.wait_pending(&ns)?;
    ensure(rec.persist && read(&rules_v4) == boot_before, || {
        "persisted before confirmation".into()
    })?;
    let (st, _, err) = ns.run(ns.portcullis("confirm", &[], None))?;
    ensure(st.success(), || format!("confirm: {st}: {err}"))?;
    ensure(err.contains("persisted: netfilter-persistent"), || {
        format!("confirm said: {err}")
    })?;
    let applied = std::fs::read_to_string(ns.state_dir.join("applied.v4"))?;
    ensure(read(&rules_v4) == applied, || {
        "rules.v4 is not the applied text".into()
    })?;
    run.finish_with(0, "")?;

    // A root with no loader to find: refused before anything changes.
    let before = ns.save_both()?;
    let nowhere = ns.dir.path().join("no-such-root");
    let (st, _, err) = ns.run(apply_with_root(&nowhere, "5"))?;
    ensure(st.code() == Some(2) && err.contains("--no-persist"), || {
        format!("{st}: {err}")
    })?;
    ns.ensure_rules(&before, "a refused apply changed the rules")?;
    Ok(())
}

fn unsafe_state_dir_refused(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    let target = ns.dir.path().join("real");
    std::fs::create_dir(&target)?;
    let link = ns.dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link)?;
    let wide = ns.dir.path().join("wide");
    std::fs::create_dir(&wide)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o777))?;
    let policy = ns.policy();
    for (dir, why) in [
        (&link, "symlink"),
        (&wide, "world-writable"),
        (
            &PathBuf::from("/tmp/portcullis-state"),
            "world-writable /tmp",
        ),
    ] {
        let mut c = ns.cmd(BIN, None);
        c.args([
            "apply",
            "--no-persist",
            "--timeout",
            "5",
            "--backend",
            backend.name(),
            "--config",
        ])
        .arg(&policy)
        .arg("--state-dir")
        .arg(dir);
        let (st, _, err) = ns.run(c)?;
        // Bad input, nothing changed: exit 2, as the README says.
        ensure(st.code() == Some(2) && err.contains(why), || {
            format!("{}: {st}: {err}", dir.display())
        })?;
    }
    ensure(!Path::new("/tmp/portcullis-state").exists(), || {
        "created a state dir under /tmp".into()
    })?;
    ns.ensure_rules(&before, "an unsafe state dir changed the rules")?;
    Ok(())
}

/// SIGTERM to the guard (a shutdown) rolls back at once, well before a 60 s
/// deadline; SIGHUP before it changes nothing.
fn guard_sigterm_rolls_back_at_once(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    let (run, rec) = ns.start_apply(60, None)?;
    let guard = ApplyProc::guard(&rec)?;
    guard.signal(Signal::SIGHUP)?;
    guard.signal(Signal::SIGTERM)?;
    let done = ns.wait_finished(&rec.id, Duration::from_secs(10))?;
    ensure(
        done.status == Status::RolledBack
            && done.reason.as_deref().unwrap_or("").contains("SIGTERM"),
        || format!("{done:?}"),
    )?;
    // When the rollback ended, by the record's own clock (now, at least 30 s
    // are always left: the wait above gives up after 10).
    let ended = done.ended_unix_ms.unwrap_or(u64::MAX);
    ensure(ended + 30_000 < done.deadline_unix_ms, || {
        format!("the rollback waited for the deadline: {done:?}")
    })?;
    ns.ensure_rules(&before, "not rolled back")?;
    run.finish_with(1, "ROLLED BACK")?;
    Ok(())
}

/// An apply whose process died before its guard armed leaves a `starting` record
/// and no guard: a new apply and a confirm are refused (its rules were never
/// applied, so there is nothing to confirm), and `rollback` clears it.
fn orphaned_record_refused_then_cleared(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    // A real apply, rolled back, leaves a snapshot and last.json to start from.
    let (run, _) = ns.start_apply(30, None)?;
    let (st, _, err) = ns.run(ns.portcullis("rollback", &[], None))?;
    ensure(st.success(), || format!("rollback: {err}"))?;
    run.finish()?;
    let mut orphan = ns.record("last.json").ok_or("no last.json")?;
    orphan.id = "orphan".into();
    orphan.status = Status::Starting;
    orphan.guard_pid = None;
    orphan.ended_unix_ms = None;
    orphan.reason = None;
    let state = portcullis::apply::StateDir::open(&ns.state_dir)?;
    state.write_record(&orphan)?;

    ns.spawn_apply(30, None)?.finish_with(1, "guard is gone")?;
    let (st, _, err) = ns.run(ns.portcullis("confirm", &["--no-persist"], None))?;
    ensure(st.code() == Some(1) && err.contains("orphan"), || {
        format!("confirm: {st}: {err}")
    })?;
    let (st, _, err) = ns.run(ns.portcullis("rollback", &[], None))?;
    ensure(st.success(), || {
        format!("rollback of the orphan: {st}: {err}")
    })?;
    ns.ensure_rules(&before, "the rules are not the snapshot")?;
    ensure(!ns.state_dir.join("pending.json").exists(), || {
        "the orphan is still pending".into()
    })?;
    // And the next apply goes ahead.
    let (run, _) = ns.start_apply(30, None)?;
    let (st, _, err) = ns.run(ns.portcullis("rollback", &[], None))?;
    ensure(st.success(), || format!("rollback: {err}"))?;
    run.finish_with(1, "")?;
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    per_backend(
        "apply",
        |b| b.unavailable_reason(),
        &[
            ("confirm_keeps_rules", confirm_keeps_rules),
            ("no_confirm_rolls_back", no_confirm_rolls_back),
            ("sigkill_foreground_still_rolls_back", |b| {
                killed_foreground_still_rolls_back(b, Signal::SIGKILL)
            }),
            ("sighup_foreground_still_rolls_back", |b| {
                killed_foreground_still_rolls_back(b, Signal::SIGHUP)
            }),
            ("second_apply_refused", second_apply_refused),
            ("ipv6_failure_rolls_back_ipv4", ipv6_failure_rolls_back_ipv4),
            (
                "preflight_refuses_outside_client",
                preflight_refuses_outside_client,
            ),
            ("same_session_confirm_refused", same_session_confirm_refused),
            ("confirm_persists_into_root", confirm_persists_into_root),
            (
                "sudo_session_found_in_ancestor",
                sudo_session_found_in_ancestor,
            ),
            (
                "guard_sigterm_rolls_back_at_once",
                guard_sigterm_rolls_back_at_once,
            ),
            (
                "orphaned_record_refused_then_cleared",
                orphaned_record_refused_then_cleared,
            ),
            ("unsafe_state_dir_refused", unsafe_state_dir_refused),
        ],
    )
}
