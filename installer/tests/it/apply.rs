//! `portcullis apply`, `confirm`, `rollback` and `status`, run as the real binary
//! inside a throwaway network namespace (never the host's), with the state
//! directory in a private root-only directory under /run.
//!
//! The namespace is a harness `Host` (the `support::Fixture`): an anonymous
//! namespace held by a thread of this process, so it dies with it, even by
//! SIGKILL; portcullis runs in it as a direct child. Guards a test started are
//! rolled back when it ends.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use portcullis::apply::{Record, Status};
use portcullis_harness::trial::privileged;
use portcullis_harness::{Backend, Family};

use crate::support::{BIN, Fixture, ensure, lateness_ms, sleep_past_deadline};

/// The policy the trials apply: ssh from 192.0.2.0/24 and 2001:db8:1::/64.
pub const POLICY: &str = r#"
[ssh]
port = 22
allow_from = ["192.0.2.0/24", "2001:db8:1::/64"]

[ipv6]
mode = "mirror"
"#;

/// Rules loaded before each apply, so "rolled back" means "these are back".
fn before_rules(family: Family) -> String {
    let src = match family {
        Family::V4 => "203.0.113.99/32",
        Family::V6 => "2001:db8:ffff::99/128",
    };
    format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -s {src} -m comment --comment \"portcullis-test before\" -j DROP\nCOMMIT\n"
    )
}

/// The trial's namespace with the policy written and the "before" rules loaded.
fn fixture(backend: Backend) -> Result<Fixture, Failed> {
    let fx = Fixture::new("apply-it", backend)?;
    fx.write("policy.toml", POLICY)?;
    fx.load_before(before_rules)?;
    Ok(fx)
}

fn policy(fx: &Fixture) -> PathBuf {
    fx.dir.path().join("policy.toml")
}

/// A running `portcullis apply`: the child, and its stderr read by a thread.
pub struct ApplyRun {
    pub child: Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ApplyRun {
    pub fn spawn(mut c: Command) -> Result<ApplyRun, Failed> {
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| format!("cannot run apply: {e}"))?;
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let buf = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 1024];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk[..n]));
            }
        });
        Ok(ApplyRun {
            child,
            stderr,
            reader: Some(reader),
        })
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Wait until apply says the rules are live (its "applied" line).
    pub fn wait_applied(&mut self) -> Result<(), Failed> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if self.stderr().contains("portcullis: applied ") {
                return Ok(());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(
                    format!("apply exited ({st}) before applying: {}", self.stderr()).into(),
                );
            }
            if Instant::now() > until {
                return Err(format!("apply did not apply within 20 s: {}", self.stderr()).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The pending record, once the guard has armed it and apply has applied.
    pub fn wait_pending(&mut self, fx: &Fixture) -> Result<Record, Failed> {
        self.wait_applied()?;
        fx.pending()
    }

    /// Wait for the exit; the status and everything it wrote to stderr.
    pub fn finish(mut self) -> Result<(ExitStatus, String), Failed> {
        let st = self.child.wait()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok((st, self.stderr()))
    }
}

impl Drop for ApplyRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawn `portcullis apply` in the namespace with the trial policy.
pub fn spawn_apply(
    ns: &Fixture,
    backend: Backend,
    timeout: u64,
    ssh: Option<&str>,
) -> Result<ApplyRun, Failed> {
    let policy = policy(ns);
    let c = ns.portcullis(
        "apply",
        &[
            "--config",
            policy.to_str().unwrap(),
            "--backend",
            backend.name(),
            "--timeout",
            &timeout.to_string(),
            "--no-persist",
        ],
        ssh,
    );
    ApplyRun::spawn(c)
}

fn output_of(run: ApplyRun) -> Result<(ExitStatus, String), Failed> {
    run.finish()
}

/// The rules after an apply carry the policy: INPUT drops, ssh from the admin
/// subnet is accepted, and the "before" marker is gone.
fn assert_applied(v4: &str) -> Result<(), Failed> {
    ensure(
        v4.contains(":INPUT DROP")
            && v4.contains("-s 192.0.2.0/24")
            && !v4.contains("portcullis-test before"),
        || format!("the applied rules are not live:\n{v4}"),
    )
}

fn confirm_keeps_rules(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let mut apply = spawn_apply(&ns, backend, 5, None)?;
    let rec = apply.wait_pending(&ns)?;
    // While pending: status names it, the guard watches, the rules are live.
    let (st, out, err) = ns.run(ns.portcullis("status", &["--json"], None))?;
    ensure(st.success(), || format!("status failed: {err}"))?;
    let s: serde_json::Value = serde_json::from_str(&out)?;
    ensure(
        s["pending"]["id"] == rec.id.as_str() && s["guard_alive"] == true,
        || format!("status does not show the pending apply: {out}"),
    )?;
    ensure(s["backend"] == backend.name(), || {
        format!("status backend: {out}")
    })?;
    assert_applied(&ns.save(Family::V4)?)?;

    let (st, _, err) = ns.run(ns.portcullis("confirm", &["--no-persist"], None))?;
    ensure(st.success(), || format!("confirm failed: {err}"))?;
    let (st, err) = output_of(apply)?;
    ensure(st.code() == Some(0), || {
        format!("apply exited {st} after confirm: {err}")
    })?;
    ensure(err.contains("confirmed"), || format!("apply said: {err}"))?;
    let done = ns.wait_finished(&rec.id, Duration::from_secs(1))?;
    ensure(done.status == Status::Confirmed, || format!("{done:?}"))?;
    // Past the deadline, the rules stay.
    sleep_past_deadline(&rec);
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
    let mut apply = spawn_apply(&ns, backend, 2, None)?;
    let rec = apply.wait_pending(&ns)?;
    assert_applied(&ns.save(Family::V4)?)?;
    let (st, err) = output_of(apply)?;
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
    ensure(ns.save_both()? == before, || {
        "the rules were not restored".into()
    })?;
    let done = ns.wait_finished(&rec.id, Duration::from_secs(1))?;
    ensure(done.status == Status::RolledBack, || format!("{done:?}"))?;
    eprintln!(
        "measured: apply::no_confirm_rolls_back::{backend}: rollback done {} ms after the deadline",
        lateness_ms(&done)
    );
    Ok(())
}

fn killed_foreground_still_rolls_back(
    backend: Backend,
    sig: nix::sys::signal::Signal,
) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    let mut apply = spawn_apply(&ns, backend, 3, None)?;
    let rec = apply.wait_pending(&ns)?;
    assert_applied(&ns.save(Family::V4)?)?;
    let pid = nix::unistd::Pid::from_raw(apply.child.id() as i32);
    nix::sys::signal::kill(pid, sig)?;
    let st = apply.child.wait()?;
    ensure(!st.success(), || format!("apply survived {sig}: {st}"))?;
    // The guard is hung up too, as a session loss would: it must ignore that.
    let guard = nix::unistd::Pid::from_raw(rec.guard_pid.ok_or("no guard pid")?);
    nix::sys::signal::kill(guard, nix::sys::signal::Signal::SIGHUP)?;
    assert_applied(&ns.save(Family::V4)?)?;
    let done = ns.wait_finished(&rec.id, Duration::from_secs(15))?;
    ensure(done.status == Status::RolledBack, || format!("{done:?}"))?;
    ensure(ns.save_both()? == before, || {
        "the rules were not restored".into()
    })?;
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
    let mut first = spawn_apply(&ns, backend, 60, None)?;
    let rec = first.wait_pending(&ns)?;
    let second = spawn_apply(&ns, backend, 60, None)?;
    let (st, err) = output_of(second)?;
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
    let (st, err) = output_of(first)?;
    ensure(st.code() == Some(1) && err.contains("ROLLED BACK"), || {
        format!("first apply exited {st}: {err}")
    })?;
    ensure(ns.save_both()? == before, || {
        "rollback did not restore".into()
    })?;
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
    let scratch = tempfile::Builder::new()
        .prefix("apply-fakebin")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let fake = scratch.path().join("fakebin");
    std::fs::create_dir(&fake)?;
    let bin = backend.restore_binary(Family::V6);
    let real = portcullis_harness::backend::find_in_path(&bin).ok_or("no ip6tables restore")?;
    // It fails only the rendered ruleset (portcullis's header line), so the rollback
    // of the ipv6 snapshot, had it been needed, would still go through.
    let script = format!(
        "#!/bin/sh\ninput=$(cat)\ncase \" $* \" in *\" --test \"*) ;; *) case \"$input\" in *'portcullis ipv6 ruleset'*) echo 'injected failure' >&2; exit 1;; esac;; esac\nprintf '%s\\n' \"$input\" | exec {} \"$@\"\n",
        real.display()
    );
    let path = fake.join(&bin);
    std::fs::write(&path, script)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    ns.path_prefix = Some(fake);
    ns.scratch = Some(scratch);
    let apply = spawn_apply(&ns, backend, 30, None)?;
    let (st, err) = output_of(apply)?;
    ensure(st.code() == Some(1), || format!("apply exited {st}: {err}"))?;
    ensure(
        err.contains("ROLLED BACK") && err.contains("ipv6") && err.contains("injected failure"),
        || format!("apply did not report the ipv6 failure and rollback: {err}"),
    )?;
    ensure(ns.save_both()? == before, || {
        format!(
            "ipv4 was not rolled back:\n{}",
            ns.save(Family::V4).unwrap_or_default()
        )
    })?;
    Ok(())
}

fn preflight_refuses_outside_client(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    for ssh in [
        "198.51.100.7 40022 192.0.2.1 22",
        "2001:db8:9::7 40022 2001:db8:1::1 22",
    ] {
        let apply = spawn_apply(&ns, backend, 30, Some(ssh))?;
        let (st, err) = output_of(apply)?;
        let client = ssh.split(' ').next().unwrap();
        ensure(st.code() == Some(2), || format!("apply exited {st}: {err}"))?;
        ensure(
            err.contains(client) && err.contains("`ssh.allow_from`"),
            || format!("refusal does not name {client} and ssh.allow_from: {err}"),
        )?;
        ensure(err.contains("nothing changed"), || err.clone())?;
    }
    let apply = spawn_apply(&ns, backend, 30, Some("192.0.2.10 40022 192.0.2.1 2222"))?;
    let (st, err) = output_of(apply)?;
    ensure(st.code() == Some(2) && err.contains("`ssh.port`"), || {
        format!("{st}: {err}")
    })?;
    ensure(ns.save_both()? == before, || {
        "preflight changed the rules".into()
    })?;
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
    let policy = policy(&ns);
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
    ensure(ns.save_both()? == before, || "the rules changed".into())?;
    Ok(())
}

fn same_session_confirm_refused(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let session = "192.0.2.10 40022 192.0.2.1 22";
    let mut apply = spawn_apply(&ns, backend, 30, Some(session))?;
    let rec = apply.wait_pending(&ns)?;
    ensure(rec.ssh_connection.as_deref() == Some(session), || {
        format!("{rec:?}")
    })?;
    let (st, _, err) = ns.run(ns.portcullis("confirm", &["--no-persist"], Some(session)))?;
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
    let (st, err) = output_of(apply)?;
    ensure(st.code() == Some(0), || format!("apply: {st}: {err}"))?;
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
    let policy = policy(&ns);
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
    let mut run = ApplyRun::spawn(apply_with_root(&root, "2"))?;
    run.wait_pending(&ns)?;
    ensure(read(&rules_v4) == boot_before, || {
        "persisted before confirmation".into()
    })?;
    let (st, err) = run.finish()?;
    ensure(st.code() == Some(1), || format!("apply: {st}: {err}"))?;
    ensure(read(&rules_v4) == boot_before, || {
        "a rolled-back apply persisted".into()
    })?;

    // Confirmed: the applied text is what the boot loader will read.
    let mut run = ApplyRun::spawn(apply_with_root(&root, "30"))?;
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
    let (st, err) = run.finish()?;
    ensure(st.code() == Some(0), || format!("apply: {st}: {err}"))?;

    // A root with no loader to find: refused before anything changes.
    let before = ns.save_both()?;
    let nowhere = ns.dir.path().join("no-such-root");
    let (st, _, err) = ns.run(apply_with_root(&nowhere, "5"))?;
    ensure(st.code() == Some(2) && err.contains("--no-persist"), || {
        format!("{st}: {err}")
    })?;
    ensure(ns.save_both()? == before, || {
        "a refused apply changed the rules".into()
    })?;
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
    let policy = policy(&ns);
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
        ensure(!st.success() && err.contains(why), || {
            format!("{}: {st}: {err}", dir.display())
        })?;
    }
    ensure(!Path::new("/tmp/portcullis-state").exists(), || {
        "created a state dir under /tmp".into()
    })?;
    ensure(ns.save_both()? == before, || {
        "an unsafe state dir changed the rules".into()
    })?;
    Ok(())
}

/// SIGTERM to the guard (a shutdown) rolls back at once, well before a 60 s
/// deadline; SIGHUP before it changes nothing.
fn guard_sigterm_rolls_back_at_once(backend: Backend) -> Result<(), Failed> {
    use nix::sys::signal::{Signal, kill};
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    let mut run = spawn_apply(&ns, backend, 60, None)?;
    let rec = run.wait_pending(&ns)?;
    let guard = nix::unistd::Pid::from_raw(rec.guard_pid.ok_or("no guard pid")?);
    kill(guard, Signal::SIGHUP)?;
    kill(guard, Signal::SIGTERM)?;
    let done = ns.wait_finished(&rec.id, Duration::from_secs(10))?;
    ensure(
        done.status == Status::RolledBack
            && done.reason.as_deref().unwrap_or("").contains("SIGTERM"),
        || format!("{done:?}"),
    )?;
    ensure(done.remaining_ms() > 30_000, || {
        "the rollback waited for the deadline".into()
    })?;
    ensure(ns.save_both()? == before, || "not rolled back".into())?;
    let (st, err) = run.finish()?;
    ensure(st.code() == Some(1) && err.contains("ROLLED BACK"), || {
        format!("apply: {st}: {err}")
    })?;
    Ok(())
}

/// An apply whose process died before its guard armed leaves a `starting` record
/// and no guard: a new apply and a confirm are refused (its rules were never
/// applied, so there is nothing to confirm), and `rollback` clears it.
fn orphaned_record_refused_then_cleared(backend: Backend) -> Result<(), Failed> {
    let ns = fixture(backend)?;
    let before = ns.save_both()?;
    // A real apply, rolled back, leaves a snapshot and last.json to start from.
    let mut run = spawn_apply(&ns, backend, 30, None)?;
    run.wait_pending(&ns)?;
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

    let (st, err) = spawn_apply(&ns, backend, 30, None)?.finish()?;
    ensure(
        st.code() == Some(1) && err.contains("guard is gone"),
        || format!("apply: {st}: {err}"),
    )?;
    let (st, _, err) = ns.run(ns.portcullis("confirm", &["--no-persist"], None))?;
    ensure(st.code() == Some(1) && err.contains("orphan"), || {
        format!("confirm: {st}: {err}")
    })?;
    let (st, _, err) = ns.run(ns.portcullis("rollback", &[], None))?;
    ensure(st.success(), || {
        format!("rollback of the orphan: {st}: {err}")
    })?;
    ensure(ns.save_both()? == before, || {
        "the rules are not the snapshot".into()
    })?;
    ensure(!ns.state_dir.join("pending.json").exists(), || {
        "the orphan is still pending".into()
    })?;
    // And the next apply goes ahead.
    let mut run = spawn_apply(&ns, backend, 30, None)?;
    run.wait_pending(&ns)?;
    let (st, _, err) = ns.run(ns.portcullis("rollback", &[], None))?;
    ensure(st.success(), || format!("rollback: {err}"))?;
    let (st, err) = run.finish()?;
    ensure(st.code() == Some(1), || format!("apply: {st}: {err}"))?;
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    use nix::sys::signal::Signal;
    let mut trials = Vec::new();
    for backend in Backend::ALL {
        let why = backend.unavailable_reason();
        let mut add = |name: &str, f: fn(Backend) -> Result<(), Failed>| {
            trials.push(privileged(
                format!("apply::{name}::{backend}"),
                why.clone(),
                move || f(backend),
            ));
        };
        add("confirm_keeps_rules", confirm_keeps_rules);
        add("no_confirm_rolls_back", no_confirm_rolls_back);
        add("sigkill_foreground_still_rolls_back", |b| {
            killed_foreground_still_rolls_back(b, Signal::SIGKILL)
        });
        add("sighup_foreground_still_rolls_back", |b| {
            killed_foreground_still_rolls_back(b, Signal::SIGHUP)
        });
        add("second_apply_refused", second_apply_refused);
        add("ipv6_failure_rolls_back_ipv4", ipv6_failure_rolls_back_ipv4);
        add(
            "preflight_refuses_outside_client",
            preflight_refuses_outside_client,
        );
        add("same_session_confirm_refused", same_session_confirm_refused);
        add("confirm_persists_into_root", confirm_persists_into_root);
        add(
            "sudo_session_found_in_ancestor",
            sudo_session_found_in_ancestor,
        );
        add(
            "guard_sigterm_rolls_back_at_once",
            guard_sigterm_rolls_back_at_once,
        );
        add(
            "orphaned_record_refused_then_cleared",
            orphaned_record_refused_then_cleared,
        );
        add("unsafe_state_dir_refused", unsafe_state_dir_refused);
    }
    trials
}
