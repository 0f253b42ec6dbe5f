//! Faults of the apply machinery itself (docs/reliability.md, "Apply, guard and
//! rollback"): the guard killed or stopped, the guard and the session killed
//! together, a late confirm, a snapshot truncated on disk, a restore that
//! restores nothing. Each trial runs the real binary in a harness `Host` (its own
//! network namespace; the guard and the watchdog inherit it), with the state
//! directory in a private root-only directory under /run, under both backends.
//!
//! Every outcome is read from the kernel (`*-save`) and the state directory,
//! never from what a process printed alone.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use portcullis::apply::{Record, Status};
use portcullis_harness::{Backend, Family, Host};

use portcullis_harness::trial::privileged;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// ssh from 192.0.2.0/24 and 2001:db8:1::/64.
const POLICY: &str = "[ssh]\nport = 22\nallow_from = [\"192.0.2.0/24\", \"2001:db8:1::/64\"]\n\n[ipv6]\nmode = \"mirror\"\n";

/// The session apply runs from, inside the policy's admin subnet.
const SESSION: &str = "192.0.2.10 40022 192.0.2.1 22";

fn e(x: impl std::fmt::Display) -> Failed {
    x.to_string().into()
}

fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(msg().into()) }
}

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

fn signal(pid: i32, sig: Signal) -> Result<(), Failed> {
    kill(Pid::from_raw(pid), sig).map_err(|err| e(format!("kill -{sig} {pid}: {err}")))
}

/// Whether `pid` runs portcullis with `arg` (`__guard`, `__watchdog`) for `id`.
fn runs(pid: i32, arg: &str, id: &str) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    args.contains(&arg.as_bytes()) && args.contains(&id.as_bytes())
}

/// Wait until `pid` no longer runs `arg` for `id` (dead, or a zombie).
fn wait_gone(pid: i32, arg: &str, id: &str) -> Result<(), Failed> {
    let until = Instant::now() + Duration::from_secs(5);
    while runs(pid, arg, id) {
        if Instant::now() > until {
            return Err(format!("{arg} {pid} is still running").into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// SIGSTOP `pid` and wait until the kernel shows it stopped (the signal is
/// delivered when the process is next scheduled, not by `kill` itself).
fn stop(pid: i32) -> Result<(), Failed> {
    signal(pid, Signal::SIGSTOP)?;
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if state == Some("T") {
            return Ok(());
        }
        if Instant::now() > until {
            return Err(format!("{pid} did not stop: {stat}").into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One namespace, its state dir, and the apply processes a trial started (killed
/// when it ends, stopped ones included).
struct Fixture {
    backend: Backend,
    dir: tempfile::TempDir,
    state_dir: PathBuf,
    path_prefix: Option<PathBuf>,
    _scratch: Option<tempfile::TempDir>,
    ids: Mutex<Vec<String>>,
    host: Host,
}

impl Fixture {
    fn new(backend: Backend) -> Result<Fixture, Failed> {
        let host = Host::new("reliability").map_err(e)?;
        // Root-only and not world-writable: the state dir's ancestors must be
        // root's (CI builds as a user, so not the target dir).
        let dir = tempfile::Builder::new()
            .prefix(&format!("portcullis-reliability-{}-", std::process::id()))
            .tempdir_in("/run")
            .map_err(e)?;
        std::fs::write(dir.path().join("policy.toml"), POLICY).map_err(e)?;
        let state_dir = dir.path().join("state");
        let f = Fixture {
            backend,
            dir,
            state_dir,
            path_prefix: None,
            _scratch: None,
            ids: Mutex::new(Vec::new()),
            host,
        };
        for family in Family::ALL {
            f.host
                .load(backend, family, &before_rules(family))
                .map_err(e)?;
        }
        Ok(f)
    }

    /// `portcullis VERB --state-dir D ARGS` in the namespace, clean environment.
    fn portcullis(&self, verb: &str, args: &[&str], ssh: Option<&str>) -> Command {
        let mut c = self.host.command(BIN);
        c.env_clear();
        let mut path = String::new();
        if let Some(p) = &self.path_prefix {
            path.push_str(&p.display().to_string());
            path.push(':');
        }
        path.push_str("/usr/sbin:/usr/bin:/sbin:/bin");
        c.env("PATH", path);
        if let Some(s) = ssh {
            c.env("SSH_CONNECTION", s);
        }
        c.arg(verb)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args);
        c
    }

    fn run(&self, mut c: Command) -> Result<(ExitStatus, String, String), Failed> {
        let out = c.output().map_err(|err| e(format!("{c:?}: {err}")))?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Both families' rules, comments and chain counters left out.
    fn rules(&self) -> Result<(String, String), Failed> {
        let save = |family: Family| -> Result<String, Failed> {
            let text = self
                .host
                .exec(&[&self.backend.save_binary(family)], None)
                .map_err(e)?;
            Ok(text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
                    (true, Some(i)) => format!("{} [0:0]\n", &l[..i]),
                    _ => format!("{l}\n"),
                })
                .collect())
        };
        Ok((save(Family::V4)?, save(Family::V6)?))
    }

    fn json(&self, name: &str) -> Option<serde_json::Value> {
        let text = std::fs::read_to_string(self.state_dir.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn record(&self, name: &str) -> Option<Record> {
        serde_json::from_value(self.json(name)?).ok()
    }

    /// Start `portcullis apply` and wait until its rules are live and the guard
    /// armed; the record then.
    fn apply(&self, timeout: u64) -> Result<(Apply, Record), Failed> {
        let policy = self.dir.path().join("policy.toml");
        let mut c = self.portcullis(
            "apply",
            &[
                "--config",
                policy.to_str().unwrap(),
                "--backend",
                self.backend.name(),
                "--timeout",
                &timeout.to_string(),
                "--no-persist",
            ],
            Some(SESSION),
        );
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = self.host.spawn_child(c).map_err(e)?;
        let mut pipe = child.inner().stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
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
        let mut run = Apply {
            child,
            stderr,
            reader: Some(reader),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while !run.stderr().contains("portcullis: applied ") {
            if let Ok(Some(st)) = run.child.inner().try_wait() {
                return Err(
                    format!("apply exited ({st}) before applying: {}", run.stderr()).into(),
                );
            }
            if Instant::now() > until {
                return Err(format!("apply did not apply within 20 s: {}", run.stderr()).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let rec = self
            .record("pending.json")
            .filter(|r| r.status == Status::Pending)
            .ok_or("applied, but no pending record")?;
        self.ids.lock().unwrap().push(rec.id.clone());
        let (v4, _) = self.rules()?;
        ensure(
            v4.contains(":INPUT DROP") && !v4.contains("portcullis-test before"),
            || format!("the applied rules are not live:\n{v4}"),
        )?;
        Ok((run, rec))
    }

    /// The watchdog's pid, when this portcullis runs one.
    fn watchdog_pid(&self) -> Option<i32> {
        self.json("pending.json")?["watchdog_pid"]
            .as_i64()
            .map(|p| p as i32)
    }

    /// The final record of `id`, waiting up to `limit` for whoever ends it.
    fn finished(&self, id: &str, limit: Duration) -> Result<Record, Failed> {
        let until = Instant::now() + limit;
        loop {
            for name in ["last.json", "pending.json"] {
                if let Some(r) = self.record(name) {
                    if r.id == id && r.status.is_final() {
                        return Ok(r);
                    }
                }
            }
            if Instant::now() > until {
                return Err(format!(
                    "apply {id} did not end within {limit:?}; guard.log:\n{}",
                    self.log()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("guard.log")).unwrap_or_default()
    }

    /// `status --json`.
    fn status(&self) -> Result<serde_json::Value, Failed> {
        let (st, out, err) = self.run(self.portcullis("status", &["--json"], None))?;
        ensure(st.success(), || format!("status: {st}: {err}"))?;
        serde_json::from_str(&out).map_err(e)
    }

    /// Sleep until `rec`'s deadline is `past_ms` behind (a condition on the clock
    /// itself, not a stand-in for a readiness check).
    fn until_past_deadline(&self, rec: &Record, past_ms: i64) {
        let left = rec.remaining_ms() + past_ms;
        if left > 0 {
            std::thread::sleep(Duration::from_millis(left as u64));
        }
    }

    /// A fake `*-restore` for `family`, first on PATH: it passes everything to the
    /// real one except a real (not `--test`) load of the "before" rules, which it
    /// swallows and reports as success: a restore that restores nothing.
    fn fake_restore_swallowing_the_snapshot(&mut self, family: Family) -> Result<(), Failed> {
        self.fake_restore(family, "exit 0")
    }

    /// A fake `*-restore` for `family` that runs `on_snapshot` (shell) when it is
    /// asked to really load the "before" rules, and passes everything else on.
    fn fake_restore(&mut self, family: Family, on_snapshot: &str) -> Result<(), Failed> {
        let scratch = tempfile::Builder::new()
            .prefix("reliability-fakebin")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .map_err(e)?;
        let bin = self.backend.restore_binary(family);
        let real = portcullis_harness::backend::find_in_path(&bin).ok_or("no restore binary")?;
        let script = format!(
            "#!/bin/sh\ninput=$(cat)\ncase \" $* \" in *\" --test \"*) ;; *) case \"$input\" in *'portcullis-test before'*) {on_snapshot};; esac;; esac\nprintf '%s\\n' \"$input\" | exec {} \"$@\"\n",
            real.display()
        );
        let path = scratch.path().join(&bin);
        std::fs::write(&path, script).map_err(e)?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(e)?;
        self.path_prefix = Some(scratch.path().to_owned());
        self._scratch = Some(scratch);
        Ok(())
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        // Guards and watchdogs this trial started hold the namespace and may be
        // stopped: kill them (SIGKILL needs no SIGCONT), checked by cmdline so a
        // recycled pid is left alone.
        let recs: Vec<serde_json::Value> = ["pending.json", "last.json"]
            .iter()
            .filter_map(|n| self.json(n))
            .collect();
        for id in self.ids.lock().unwrap().iter() {
            for r in recs.iter().filter(|r| r["id"] == id.as_str()) {
                for (key, arg) in [("watchdog_pid", "__watchdog"), ("guard_pid", "__guard")] {
                    if let Some(pid) = r[key].as_i64().map(|p| p as i32) {
                        if runs(pid, arg, id) {
                            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                            let _ = wait_gone(pid, arg, id);
                        }
                    }
                }
            }
        }
    }
}

/// A running `portcullis apply` (killed with the trial) and its stderr.
struct Apply {
    child: portcullis_harness::Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Apply {
    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait for the exit; the status and all of stderr.
    fn finish(mut self) -> Result<(ExitStatus, String), Failed> {
        let st = self.child.inner().wait().map_err(e)?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok((st, self.stderr()))
    }
}

fn late_ms(r: &Record) -> i64 {
    r.ended_unix_ms.unwrap_or(0) as i64 - r.deadline_unix_ms as i64
}

/// SIGKILL of the guard while the apply is pending: the foreground apply (or
/// the watchdog) restores the snapshot at once, and apply says so.
fn guard_sigkill_rolls_back(backend: Backend) -> Result<(), Failed> {
    let f = Fixture::new(backend)?;
    let before = f.rules()?;
    let (run, rec) = f.apply(30)?;
    let killed = portcullis::apply::state::now_unix_ms();
    signal(rec.guard_pid.ok_or("no guard pid")?, Signal::SIGKILL)?;
    let done = f.finished(&rec.id, Duration::from_secs(10))?;
    ensure(done.status == Status::RolledBack, || format!("{done:?}"))?;
    ensure(f.rules()? == before, || "the snapshot is not back".into())?;
    ensure(done.remaining_ms() > 10_000, || {
        "the rollback waited for the deadline".into()
    })?;
    eprintln!(
        "measured: reliability::guard_sigkill::{backend}: rolled back {} ms after the kill",
        done.ended_unix_ms.unwrap_or(0) as i64 - killed as i64
    );
    let (st, err) = run.finish()?;
    ensure(st.code() == Some(1) && err.contains("ROLLED BACK"), || {
        format!("apply: {st}: {err}")
    })?;
    Ok(())
}

/// SIGKILL of the guard and of the session's apply together (what an OOM kill
/// or a careless `pkill portcullis` does): the watchdog restores the snapshot.
fn guard_and_session_sigkill_rolls_back(backend: Backend) -> Result<(), Failed> {
    let f = Fixture::new(backend)?;
    let before = f.rules()?;
    let (run, rec) = f.apply(30)?;
    let killed = portcullis::apply::state::now_unix_ms();
    signal(run.pid(), Signal::SIGKILL)?;
    signal(rec.guard_pid.ok_or("no guard pid")?, Signal::SIGKILL)?;
    let done = f.finished(&rec.id, Duration::from_secs(10))?;
    ensure(done.status == Status::RolledBack, || format!("{done:?}"))?;
    ensure(f.rules()? == before, || "the snapshot is not back".into())?;
    eprintln!(
        "measured: reliability::guard_and_session_sigkill::{backend}: rolled back {} ms after the kill",
        done.ended_unix_ms.unwrap_or(0) as i64 - killed as i64
    );
    let log = f.log();
    ensure(
        log.contains("watchdog") && log.contains("restoring"),
        || format!("the watchdog did not restore: {log}"),
    )?;
    Ok(())
}

/// SIGKILL of the watchdog alone: the guard notices, logs it, and still rolls
/// back at the deadline.
fn watchdog_sigkill_guard_still_rolls_back(backend: Backend) -> Result<(), Failed> {
    let f = Fixture::new(backend)?;
    let before = f.rules()?;
    let (run, rec) = f.apply(2)?;
    let w = f.watchdog_pid().ok_or("no watchdog pid in the record")?;
    signal(w, Signal::SIGKILL)?;
    let done = f.finished(&rec.id, Duration::from_secs(10))?;
    ensure(
        done.status == Status::RolledBack
            && done
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("deadline reached"),
        || format!("{done:?}"),
    )?;
    ensure(f.rules()? == before, || "the snapshot is not back".into())?;
    let log = f.log();
    ensure(log.contains("the watchdog exited"), || {
        format!("the guard did not notice: {log}")
    })?;
    let (st, err) = run.finish()?;
    ensure(st.code() == Some(1) && err.contains("ROLLED BACK"), || {
        format!("apply: {st}: {err}")
    })?;
    Ok(())
}

/// SIGSTOP of the guard: `status` says it is stopped, and the snapshot is
/// restored by the deadline (plus the grace) all the same.
fn guard_sigstop_rolls_back_by_deadline(backend: Backend) -> Result<(), Failed> {
    let f = Fixture::new(backend)?;
    let before = f.rules()?;
    let (run, rec) = f.apply(3)?;
    let guard = rec.guard_pid.ok_or("no guard pid")?;
    stop(guard)?;
    let s = f.status()?;
    ensure(s["guard"] == "stopped" && s["guard_alive"] == false, || {
        format!("status does not show a stopped guard: {s}")
    })?;
    let (_, out, _) = f.run(f.portcullis("status", &[], None))?;
    ensure(out.contains("STOPPED"), || format!("status: {out}"))?;
    let done = f.finished(&rec.id, Duration::from_secs(15))?;
    ensure(done.status == Status::RolledBack, || format!("{done:?}"))?;
    ensure(f.rules()? == before, || "the snapshot is not back".into())?;
    eprintln!(
        "measured: reliability::guard_sigstop::{backend}: rollback done {} ms after the deadline",
        late_ms(&done)
    );
    let (st, err) = run.finish()?;
    ensure(st.code() == Some(1) && err.contains("ROLLED BACK"), || {
        format!("apply: {st}: {err}")
    })?;
    Ok(())
}

/// The guard and the watchdog stopped, the session's apply killed: a confirm
/// waiting in the guard's FIFO when it is continued past the deadline is refused,
/// and the snapshot restored.
fn resumed_guard_refuses_a_late_confirm(backend: Backend) -> Result<(), Failed> {
    let f = Fixture::new(backend)?;
    let before = f.rules()?;
    let (run, rec) = f.apply(2)?;
    let guard = rec.guard_pid.ok_or("no guard pid")?;
    let watchdog = f.watchdog_pid();
    if let Some(w) = watchdog {
        stop(w)?;
    }
    stop(guard)?;
    signal(run.pid(), Signal::SIGKILL)?;
    run.finish()?;
    f.until_past_deadline(&rec, 1000);
    // What `confirm` writes to a guard it believes is watching.
    let state = portcullis::apply::StateDir::open(&f.state_dir).map_err(e)?;
    let sent = portcullis::apply::guard::send(&state, &format!("confirm {}", rec.id)).map_err(e)?;
    ensure(sent, || "the stopped guard's FIFO is gone".into())?;
    signal(guard, Signal::SIGCONT)?;
    let done = f.finished(&rec.id, Duration::from_secs(10))?;
    if let Some(w) = watchdog {
        signal(w, Signal::SIGCONT)?;
    }
    ensure(done.status == Status::RolledBack, || {
        format!("a late confirm was accepted: {done:?}")
    })?;
    ensure(f.rules()? == before, || "the snapshot is not back".into())?;
    Ok(())
}

/// Everything killed (watchdog, session, guard), then `confirm` after the
/// deadline: refused with exit 1, and it restores the snapshot itself.
fn late_confirm_with_no_guard_refused(backend: Backend) -> Result<(), Failed> {
    let f = Fixture::new(backend)?;
    let before = f.rules()?;
    let (run, rec) = f.apply(2)?;
    if let Some(w) = f.watchdog_pid() {
        signal(w, Signal::SIGKILL)?;
        wait_gone(w, "__watchdog", &rec.id)?;
    }
    signal(run.pid(), Signal::SIGKILL)?;
    run.finish()?;
    signal(rec.guard_pid.ok_or("no guard pid")?, Signal::SIGKILL)?;
    f.until_past_deadline(&rec, 500);
    let (st, _, err) = f.run(f.portcullis("confirm", &["--no-persist"], None))?;
    ensure(st.code() == Some(1), || {
        format!("a late confirm exited {st}: {err}")
    })?;
    ensure(err.contains("too late"), || format!("confirm said: {err}"))?;
    ensure(f.rules()? == before, || "the snapshot is not back".into())?;
    let done = f.finished(&rec.id, Duration::from_secs(1))?;
    ensure(done.status == Status::RolledBack, || format!("{done:?}"))?;
    Ok(())
}

/// `rollback` with a stopped guard: it kills that guard and restores at once
/// (and `confirm`, before it, is refused).
fn rollback_kills_a_stopped_guard(backend: Backend) -> Result<(), Failed> {
    let f = Fixture::new(backend)?;
    let before = f.rules()?;
    let (run, rec) = f.apply(60)?;
    let guard = rec.guard_pid.ok_or("no guard pid")?;
    stop(guard)?;
    // A confirm cannot reach a stopped guard: refused, and it says what to do.
    let (st, _, err) = f.run(f.portcullis("confirm", &["--no-persist"], None))?;
    ensure(st.code() == Some(1) && err.contains("is stopped"), || {
        format!("confirm to a stopped guard: {st}: {err}")
    })?;
    let started = Instant::now();
    let (st, _, err) = f.run(f.portcullis("rollback", &[], None))?;
    let took = started.elapsed();
    ensure(st.success(), || format!("rollback: {st}: {err}"))?;
    ensure(f.rules()? == before, || "the snapshot is not back".into())?;
    ensure(!runs(guard, "__guard", &rec.id), || {
        "the stopped guard still runs".into()
    })?;
    eprintln!(
        "measured: reliability::rollback_stopped_guard::{backend}: rollback took {} ms",
        took.as_millis()
    );
    let (st, err) = run.finish()?;
    ensure(st.code() == Some(1) && err.contains("ROLLED BACK"), || {
        format!("apply: {st}: {err}")
    })?;
    Ok(())
}

/// The IPv4 snapshot truncated to 0 bytes: `rollback` fails loudly (exit 1),
/// loads the fallback (ssh from the client that ran apply), keeps the record
/// pending and refuses a new apply; with the file put back, `rollback` again
/// restores the snapshot.
fn truncated_snapshot_fails_loudly_and_retries(backend: Backend) -> Result<(), Failed> {
    let f = Fixture::new(backend)?;
    let before = f.rules()?;
    let (run, rec) = f.apply(60)?;
    let snap = f.state_dir.join("snapshot.v4");
    let good = std::fs::read(&snap).map_err(e)?;
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&snap)
        .map_err(e)?;
    let (st, _, err) = f.run(f.portcullis("rollback", &[], None))?;
    ensure(st.code() == Some(1), || format!("rollback: {st}: {err}"))?;
    ensure(err.contains("FAILED") && err.contains("unusable"), || {
        format!("rollback was not loud: {err}")
    })?;
    let (v4, v6) = f.rules()?;
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
    let (st, err) = run.finish()?;
    ensure(
        st.code() == Some(1) && err.contains("ROLLBACK FAILED"),
        || format!("apply: {st}: {err}"),
    )?;
    // A new apply is refused while the failure stands.
    let policy = f.dir.path().join("policy.toml");
    let (st, _, err) = f.run(f.portcullis(
        "apply",
        &[
            "--config",
            policy.to_str().unwrap(),
            "--backend",
            backend.name(),
            "--no-persist",
        ],
        Some(SESSION),
    ))?;
    ensure(
        st.code() == Some(1) && err.contains(&rec.id) && err.contains("the rollback of apply"),
        || format!("a new apply over a failed rollback: {st}: {err}"),
    )?;
    // The file put back: the retry restores it.
    std::fs::write(&snap, &good).map_err(e)?;
    let (st, _, err) = f.run(f.portcullis("rollback", &[], None))?;
    ensure(st.success(), || format!("retried rollback: {st}: {err}"))?;
    ensure(f.rules()? == before, || "the snapshot is not back".into())?;
    ensure(!f.state_dir.join("pending.json").exists(), || {
        "the record is still pending".into()
    })?;
    Ok(())
}

/// A `*-restore` that reports success having loaded nothing: the rollback reads
/// the rules back, sees they are not the snapshot, and fails loudly.
fn restore_that_restores_nothing_is_caught(backend: Backend) -> Result<(), Failed> {
    let mut f = Fixture::new(backend)?;
    f.fake_restore_swallowing_the_snapshot(Family::V4)?;
    let (run, rec) = f.apply(60)?;
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
    let (st, err) = run.finish()?;
    ensure(st.code() == Some(1), || format!("apply: {st}: {err}"))?;
    Ok(())
}

/// A guard whose restore is slow (2 s: a large ruleset on nft, with the
/// read-back) is still restoring when the grace after the deadline ends: it
/// runs, so neither the watchdog nor `apply` kill it; the guard's own rollback
/// stands.
fn slow_restore_is_left_to_the_guard(backend: Backend) -> Result<(), Failed> {
    let mut f = Fixture::new(backend)?;
    let before = f.rules()?;
    f.fake_restore(Family::V4, "sleep 2")?;
    let (run, rec) = f.apply(2)?;
    let done = f.finished(&rec.id, Duration::from_secs(20))?;
    ensure(
        done.status == Status::RolledBack
            && done.reason.as_deref() == Some("deadline reached without confirmation"),
        || format!("not the guard's rollback: {done:?}\n{}", f.log()),
    )?;
    ensure(late_ms(&done) >= 2000, || {
        format!("the restore was not slow: {done:?}")
    })?;
    ensure(f.rules()? == before, || "the snapshot is not back".into())?;
    let (st, err) = run.finish()?;
    ensure(st.code() == Some(1) && err.contains("ROLLED BACK"), || {
        format!("apply: {st}: {err}")
    })?;
    Ok(())
}

/// The deadline lives on CLOCK_BOOTTIME in the record, the guard waits on it, and
/// `status` counts the time left from it.
fn deadline_is_on_the_boot_clock(backend: Backend) -> Result<(), Failed> {
    let f = Fixture::new(backend)?;
    let (run, rec) = f.apply(30)?;
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).map_err(e)?;
    let boot_ms = boot.tv_sec() as i64 * 1000 + boot.tv_nsec() as i64 / 1_000_000;
    let json = f.json("pending.json").ok_or("no record")?;
    let deadline = json["deadline_boot_ms"]
        .as_i64()
        .ok_or_else(|| format!("no deadline_boot_ms in the record: {json}"))?;
    let left = deadline - boot_ms;
    ensure((25_000..=30_000).contains(&left), || {
        format!("the boot-clock deadline is {left} ms away")
    })?;
    let s = f.status()?;
    let secs = s["remaining_secs"].as_i64().unwrap_or(-1);
    ensure((secs - left / 1000).abs() <= 2, || {
        format!("status says {secs} s left, the boot clock {left} ms")
    })?;
    let log = f.log();
    ensure(log.contains("CLOCK_BOOTTIME"), || {
        format!("guard log: {log}")
    })?;
    let (st, _, err) = f.run(f.portcullis("rollback", &[], None))?;
    ensure(st.success(), || format!("rollback: {err}"))?;
    let _ = rec;
    run.finish()?;
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for backend in Backend::ALL {
        let why = backend.unavailable_reason();
        let mut add = |name: &str, f: fn(Backend) -> Result<(), Failed>| {
            trials.push(privileged(
                format!("reliability::{name}::{backend}"),
                why.clone(),
                move || f(backend),
            ));
        };
        add("guard_sigkill_rolls_back", guard_sigkill_rolls_back);
        add(
            "guard_and_session_sigkill_rolls_back",
            guard_and_session_sigkill_rolls_back,
        );
        add(
            "watchdog_sigkill_guard_still_rolls_back",
            watchdog_sigkill_guard_still_rolls_back,
        );
        add(
            "guard_sigstop_rolls_back_by_deadline",
            guard_sigstop_rolls_back_by_deadline,
        );
        add(
            "resumed_guard_refuses_a_late_confirm",
            resumed_guard_refuses_a_late_confirm,
        );
        add(
            "late_confirm_with_no_guard_refused",
            late_confirm_with_no_guard_refused,
        );
        add(
            "rollback_kills_a_stopped_guard",
            rollback_kills_a_stopped_guard,
        );
        add(
            "truncated_snapshot_fails_loudly_and_retries",
            truncated_snapshot_fails_loudly_and_retries,
        );
        add(
            "restore_that_restores_nothing_is_caught",
            restore_that_restores_nothing_is_caught,
        );
        add(
            "slow_restore_is_left_to_the_guard",
            slow_restore_is_left_to_the_guard,
        );
        add(
            "deadline_is_on_the_boot_clock",
            deadline_is_on_the_boot_clock,
        );
    }
    trials
}
