//! Shared helpers for the installer's trials, and [`Fixture`], the one namespace
//! fixture of the apply and lockout trials.
//!
//! A fixture is a target network namespace (a lone harness [`Host`], or the
//! standard [`Lab`]'s target) with the rules loaded before the trial, a private
//! root-only directory for the state dir, policy and keys, and `portcullis` run
//! inside the namespace (children enter it between fork and exec and carry a
//! parent-death signal, so nothing outlives a killed run). A trial starts
//! `apply` in the background as an [`ApplyRun`], and reaches the guard and the
//! watchdog it left as [`ApplyProc`]s (signalled by pid, checked by command
//! line). When the fixture drops, a guard the trial started is asked to roll
//! back and waited for; a stopped one is continued first, and one that does not
//! answer is killed.
//! Privileged trials are built by `portcullis_harness::trial::privileged`, a
//! module's per-backend ones by [`per_backend`].

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use portcullis::apply::{Record, Status};
use portcullis_harness::services::ssh::{Client, LabDir, Sshd};
use portcullis_harness::trial::privileged;
use portcullis_harness::{Backend, Counters, Family, Host, HostId, Lab};

/// The portcullis binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// A trial that runs anywhere.
pub fn trial(
    name: impl Into<String>,
    f: impl FnOnce() -> Result<(), Failed> + Send + 'static,
) -> Trial {
    Trial::test(name, f)
}

/// A trial run once per backend.
pub type BackendTrial = fn(Backend) -> Result<(), Failed>;

/// `MODULE::NAME::BACKEND` for each backend and each `(NAME, trial)`, backend by
/// backend, privileged: ignored with `why(backend)` where that says something.
pub fn per_backend(
    module: &str,
    why: impl Fn(Backend) -> Option<String>,
    trials: &[(&str, BackendTrial)],
) -> Vec<Trial> {
    let mut out = Vec::new();
    for backend in Backend::ALL {
        let why = why(backend);
        for &(name, f) in trials {
            out.push(privileged(
                format!("{module}::{name}::{backend}"),
                why.clone(),
                move || f(backend),
            ));
        }
    }
    out
}

/// Why a trial that runs real OpenSSH cannot run here: sshd, ssh or
/// ssh-keygen is not installed.
pub fn openssh_missing() -> Option<String> {
    ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"]
        .iter()
        .find(|p| !Path::new(p).exists())
        .map(|p| format!("{p} not installed (apt-get install openssh-server openssh-client)"))
}

pub fn ensure(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(msg().into()) }
}

/// A `*-save` line with its chain counters (`:INPUT ACCEPT [12:345]`, printed
/// even without `-c`) zeroed, so traffic does not read as a change of rules.
pub fn without_chain_counters(line: &str) -> String {
    match (line.starts_with(':'), line.rfind(" [")) {
        (true, Some(i)) => format!("{} [0:0]\n", &line[..i]),
        _ => format!("{line}\n"),
    }
}

/// How late the rollback was, from the guard's record.
pub fn lateness_ms(r: &Record) -> i64 {
    r.ended_unix_ms.unwrap_or(0) as i64 - r.deadline_unix_ms as i64
}

/// Sleep until `past_ms` past `r`'s deadline: a wall-clock condition (what
/// stays after the deadline), not a readiness wait.
pub fn sleep_past_deadline(r: &Record, past_ms: i64) {
    let left = r.remaining_ms() + past_ms;
    if left > 0 {
        std::thread::sleep(Duration::from_millis(left as u64));
    }
}

/// The policy the apply-family trials apply: ssh from 192.0.2.0/24 and
/// 2001:db8:1::/64.
pub const POLICY: &str = r#"
[ssh]
port = 22
allow_from = ["192.0.2.0/24", "2001:db8:1::/64"]

[ipv6]
mode = "mirror"
"#;

/// A session inside [`POLICY`]'s admin subnet.
pub const SESSION: &str = "192.0.2.10 40022 192.0.2.1 22";

/// The comment on [`before_rules`]: where it is, the rules before are.
pub const BEFORE_MARKER: &str = "portcullis-test before";

/// Rules loaded before each apply, so "rolled back" means "these are back".
pub fn before_rules(family: Family) -> String {
    let src = match family {
        Family::V4 => "203.0.113.99/32",
        Family::V6 => "2001:db8:ffff::99/128",
    };
    format!(
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -s {src} -m comment --comment \"{BEFORE_MARKER}\" -j DROP\nCOMMIT\n"
    )
}

/// The rules after an apply of [`POLICY`] carry it: INPUT drops, ssh from the
/// admin subnet is accepted, and the "before" marker is gone.
pub fn assert_applied(v4: &str) -> Result<(), Failed> {
    ensure(
        v4.contains(":INPUT DROP") && v4.contains("-s 192.0.2.0/24") && !v4.contains(BEFORE_MARKER),
        || format!("the applied rules are not live:\n{v4}"),
    )
}

/// A private 0700 directory for a trial's state dir, policy and keys, under
/// /run. Not under the target dir: `apply` refuses a state dir with an ancestor
/// owned by anyone but root, and CI builds as a user (tests run through sudo),
/// so the target dir is the user's. /run is root's and not world-writable; only
/// this trial's files go there, removed when it ends. The name carries our pid,
/// so a run killed before it could clean up (SIGKILL skips `Drop`) leaves a dir
/// the next run recognises as dead and removes.
pub fn private_dir(prefix: &str) -> Result<tempfile::TempDir, Failed> {
    sweep_dead_private_dirs(prefix);
    tempfile::Builder::new()
        .prefix(&format!("portcullis-{prefix}-{}-", std::process::id()))
        .tempdir_in("/run")
        .map_err(|e| format!("cannot make a private dir under /run: {e}").into())
}

/// Remove `/run/portcullis-PREFIX-PID-*` left by runs whose PID is gone.
fn sweep_dead_private_dirs(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/run") else {
        return;
    };
    let start = format!("portcullis-{prefix}-");
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(&start))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// What holds a fixture's target namespace.
pub trait Target: Send {
    fn target(&self) -> &Host;
}

impl Target for Host {
    fn target(&self) -> &Host {
        self
    }
}

impl Target for Lab {
    fn target(&self) -> &Host {
        self.host(HostId::Target)
    }
}

/// A target namespace, its rules and a private state dir. See the module docs.
pub struct Fixture<N: Target = Host> {
    /// The lone host, or the lab whose target it is.
    pub ns: N,
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub state_dir: PathBuf,
    /// Extra directory put first on PATH (fake binaries).
    pub path_prefix: Option<PathBuf>,
    /// Where fake binaries live: the target dir (/run may be noexec).
    pub scratch: Option<tempfile::TempDir>,
    sshd: Option<Sshd>,
}

impl Fixture<Host> {
    /// A fresh namespace of its own (`prefix` names the host and the dir).
    pub fn new(prefix: &str, backend: Backend) -> Result<Self, Failed> {
        Fixture::on(Host::new(prefix)?, prefix, backend)
    }

    /// A fresh namespace with [`POLICY`] written and [`before_rules`] loaded.
    pub fn with_policy(prefix: &str, backend: Backend) -> Result<Self, Failed> {
        let fx = Fixture::new(prefix, backend)?;
        fx.write("policy.toml", POLICY)?;
        fx.load_before(before_rules)?;
        Ok(fx)
    }
}

impl Fixture<Lab> {
    /// The standard lab; the fixture's namespace is its target.
    pub fn in_lab(prefix: &str, backend: Backend) -> Result<Self, Failed> {
        Fixture::on(Lab::standard()?, prefix, backend)
    }

    /// Real OpenSSH in the target, on port 22 of both its addresses, as PID 1 of
    /// its own PID namespace (`Sshd::start`): when it goes, every session process
    /// goes with it, even those of a client the ruleset locked out. Stopped when
    /// the fixture drops, after the guard. Returns a client holding its key.
    pub fn start_sshd(&mut self) -> Result<Client, Failed> {
        let dir = Arc::new(LabDir::new()?);
        let listen: Vec<_> = Family::ALL
            .iter()
            .map(|&f| self.ns.addr(HostId::Target, f))
            .collect();
        let sshd = self
            .ns
            .target()
            .try_run(move || async move { Sshd::start(dir, &listen, 22).await })??;
        let client = sshd.client();
        self.sshd = Some(sshd);
        Ok(client)
    }

    /// sshd's log so far, for diagnostics.
    pub fn sshd_log(&self) -> String {
        self.sshd
            .as_ref()
            .map(|s| s.log().join("\n"))
            .unwrap_or_default()
    }
}

impl<N: Target> Fixture<N> {
    fn on(ns: N, prefix: &str, backend: Backend) -> Result<Self, Failed> {
        let dir = private_dir(prefix)?;
        let state_dir = dir.path().join("state");
        Ok(Fixture {
            ns,
            backend,
            dir,
            state_dir,
            path_prefix: None,
            scratch: None,
            sshd: None,
        })
    }

    pub fn host(&self) -> &Host {
        self.ns.target()
    }

    /// Write `text` to `name` in the private dir.
    pub fn write(&self, name: &str, text: &str) -> Result<PathBuf, Failed> {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    }

    /// Load the rules the host had before, `text(family)`, into both families.
    pub fn load_before(&self, text: impl Fn(Family) -> String) -> Result<(), Failed> {
        for f in Family::ALL {
            self.host().load(self.backend, f, &text(f))?;
        }
        Ok(())
    }

    /// `*-save` of `family`, comments dropped (they carry a timestamp) and chain
    /// counters zeroed.
    pub fn save(&self, family: Family) -> Result<String, Failed> {
        let out = self
            .host()
            .exec(&[&self.backend.save_binary(family)], None)?;
        Ok(out
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(without_chain_counters)
            .collect())
    }

    pub fn save_both(&self) -> Result<(String, String), Failed> {
        Ok((self.save(Family::V4)?, self.save(Family::V6)?))
    }

    pub fn counters(&self, family: Family) -> Result<Counters, Failed> {
        Ok(self.host().counters(self.backend, family)?)
    }

    /// A command run inside the namespace with a clean environment: PATH (with
    /// `path_prefix` first) and, when given, `SSH_CONNECTION`.
    pub fn cmd(&self, program: &str, ssh: Option<&str>) -> Command {
        let mut c = self.host().command(program);
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
        c
    }

    /// `portcullis VERB --state-dir STATE ARGS` in the namespace.
    pub fn portcullis(&self, verb: &str, args: &[&str], ssh: Option<&str>) -> Command {
        let mut c = self.cmd(BIN, ssh);
        c.arg(verb)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(args);
        c
    }

    /// The policy file in the private dir (written by [`Fixture::with_policy`]).
    pub fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }

    /// `portcullis apply` of [`Fixture::policy`] with `--timeout` and
    /// `--no-persist`, from the session `ssh`.
    pub fn apply_cmd(&self, timeout: u64, ssh: Option<&str>) -> Command {
        let policy = self.policy();
        self.portcullis(
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
            ssh,
        )
    }

    /// Start `c` (an apply) in the background, its stderr read as it comes. A
    /// std child of the trial's thread, which outlives the run: killed and
    /// reaped when the run drops, and never signalled once reaped.
    pub fn spawn(&self, mut c: Command) -> Result<ApplyRun, Failed> {
        c.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = c.spawn().map_err(|e| format!("cannot run {c:?}: {e}"))?;
        let mut pipe = child.stderr.take().ok_or("no stderr")?;
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
        Ok(ApplyRun {
            child,
            stderr,
            reader: Some(reader),
        })
    }

    /// [`Fixture::apply_cmd`] started in the background.
    pub fn spawn_apply(&self, timeout: u64, ssh: Option<&str>) -> Result<ApplyRun, Failed> {
        self.spawn(self.apply_cmd(timeout, ssh))
    }

    /// Start an apply of [`POLICY`] and wait until the guard has armed and its
    /// rules are live: the run and the pending record.
    pub fn start_apply(
        &self,
        timeout: u64,
        ssh: Option<&str>,
    ) -> Result<(ApplyRun, Record), Failed> {
        let mut run = self.spawn_apply(timeout, ssh)?;
        let rec = run.wait_pending(self)?;
        assert_applied(&self.save(Family::V4)?)?;
        Ok((run, rec))
    }

    /// Put a fake `*-restore` for `family` first on PATH: a real load (not
    /// `--test`) whose input contains `marker` runs `action` (shell, a trial's
    /// constant); everything else goes on to the real binary. The fake lives in
    /// the target dir (/run may be noexec).
    pub fn fake_restore(
        &mut self,
        family: Family,
        marker: &str,
        action: &str,
    ) -> Result<(), Failed> {
        let bin = self.backend.restore_binary(family);
        self.fake_bin(&bin, |real| {
            format!(
                "#!/bin/sh\ninput=$(cat)\ncase \" $* \" in *\" --test \"*) ;; *) case \"$input\" in *'{marker}'*) {action};; esac;; esac\nprintf '%s\\n' \"$input\" | exec {real} \"$@\"\n"
            )
        })
    }

    /// Put a fake `name` first on PATH for what this fixture runs: the shell
    /// script `script(the real binary's path)`, in the target dir (/run may be
    /// noexec).
    pub fn fake_bin(
        &mut self,
        name: &str,
        script: impl FnOnce(&str) -> String,
    ) -> Result<(), Failed> {
        let scratch = tempfile::Builder::new()
            .prefix("portcullis-fakebin")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        let real = portcullis_harness::backend::find_in_path(name)
            .ok_or_else(|| format!("no {name} on PATH"))?;
        let path = scratch.path().join(name);
        std::fs::write(&path, script(&real.display().to_string()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        self.path_prefix = Some(scratch.path().to_owned());
        self.scratch = Some(scratch);
        Ok(())
    }

    /// Run to completion: status, stdout, stderr.
    pub fn run(&self, mut c: Command) -> Result<(ExitStatus, String, String), Failed> {
        let out = c.output().map_err(|e| format!("cannot run {c:?}: {e}"))?;
        Ok((
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// The record in `name` (`pending.json`, `last.json`), if readable.
    pub fn record(&self, name: &str) -> Option<Record> {
        let text = std::fs::read_to_string(self.state_dir.join(name)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The pending-apply record; call it once apply has said "applied" (the
    /// guard armed the record before that line).
    pub fn pending(&self) -> Result<Record, Failed> {
        match self.record("pending.json") {
            Some(r) if r.status == Status::Pending => Ok(r),
            other => Err(format!("applied, but the pending record is {other:?}").into()),
        }
    }

    /// The finished record of `id`, waiting up to `limit` for the guard.
    pub fn wait_finished(&self, id: &str, limit: Duration) -> Result<Record, Failed> {
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
                    self.guard_log()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The finished record of `id`, which must be a rollback.
    pub fn wait_rolled_back(&self, id: &str, limit: Duration) -> Result<Record, Failed> {
        let done = self.wait_finished(id, limit)?;
        ensure(done.status == Status::RolledBack, || format!("{done:?}"))?;
        Ok(done)
    }

    /// Both families' rules are `expected` (a [`Fixture::save_both`]); else
    /// `what`, with the rules now.
    pub fn ensure_rules(&self, expected: &(String, String), what: &str) -> Result<(), Failed> {
        let now = self.save_both()?;
        ensure(&now == expected, || format!("{what}:\n{}{}", now.0, now.1))
    }

    pub fn guard_log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("guard.log")).unwrap_or_default()
    }

    /// `status --json`, which must succeed.
    pub fn status_json(&self) -> Result<serde_json::Value, Failed> {
        let (st, out, err) = self.run(self.portcullis("status", &["--json"], None))?;
        ensure(st.success(), || format!("status: {st}: {err}"))?;
        Ok(serde_json::from_str(&out)?)
    }

    /// The guards and watchdogs of the records here that still run.
    fn apply_procs(&self) -> Vec<ApplyProc> {
        ["pending.json", "last.json"]
            .iter()
            .filter_map(|name| self.record(name))
            .flat_map(|r| [ApplyProc::guard(&r).ok(), ApplyProc::watchdog(&r)])
            .flatten()
            .filter(ApplyProc::runs)
            .collect()
    }
}

/// A `portcullis apply` started in the background, and its stderr.
pub struct ApplyRun {
    pub child: std::process::Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ApplyRun {
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Signal it (our child, not reaped until `finish`: its pid is its own).
    pub fn signal(&self, sig: Signal) -> Result<(), Failed> {
        let pid = self.child.id();
        kill(Pid::from_raw(pid as i32), sig).map_err(|e| format!("kill -{sig} {pid}: {e}").into())
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
    pub fn wait_pending<N: Target>(&mut self, fx: &Fixture<N>) -> Result<Record, Failed> {
        self.wait_applied()?;
        fx.pending()
    }

    /// Wait for the exit, which must be `code` with `says` on stderr; the stderr.
    pub fn finish_with(self, code: i32, says: &str) -> Result<String, Failed> {
        let (st, err) = self.finish()?;
        ensure(st.code() == Some(code) && err.contains(says), || {
            format!("apply: {st}: {err}")
        })?;
        Ok(err)
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
        // A reaped child is not signalled again (std knows its status).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The guard or the watchdog of one apply: not our child (the guard is
/// detached), so its pid may be another process's by now. Every signal is sent
/// only while the pid runs `portcullis ROLE ... ID` (checked on its command
/// line); the gap between the check and the signal is a few microseconds, and
/// the pid could only be reused in it after wrapping all the way round.
#[derive(Debug, Clone)]
pub struct ApplyProc {
    pub pid: i32,
    /// `__guard` or `__watchdog`.
    role: &'static str,
    id: String,
}

impl ApplyProc {
    /// The guard of `rec`.
    pub fn guard(rec: &Record) -> Result<ApplyProc, Failed> {
        Ok(ApplyProc {
            pid: rec.guard_pid.ok_or("no guard pid in the record")?,
            role: "__guard",
            id: rec.id.clone(),
        })
    }

    /// The watchdog of `rec`, when this portcullis runs one.
    pub fn watchdog(rec: &Record) -> Option<ApplyProc> {
        Some(ApplyProc {
            pid: rec.watchdog_pid?,
            role: "__watchdog",
            id: rec.id.clone(),
        })
    }

    /// Whether the pid runs this role for this apply (a zombie's command line is
    /// empty: it does not).
    pub fn runs(&self) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", self.pid)) else {
            return false;
        };
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        args.contains(&self.role.as_bytes()) && args.contains(&self.id.as_bytes())
    }

    /// Send `sig`, if it still runs; an error if it does not.
    pub fn signal(&self, sig: Signal) -> Result<(), Failed> {
        let (pid, role) = (self.pid, self.role);
        ensure(self.runs(), || {
            format!("{role} {pid} no longer runs: not sent {sig}")
        })?;
        kill(Pid::from_raw(pid), sig).map_err(|e| format!("kill -{sig} {role} {pid}: {e}").into())
    }

    /// Whether the kernel shows it stopped.
    pub fn stopped(&self) -> bool {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        state == Some("T") && self.runs()
    }

    /// SIGSTOP it and wait until the kernel shows it stopped (the signal is
    /// delivered when the process is next scheduled, not by `kill` itself).
    pub fn stop(&self) -> Result<(), Failed> {
        self.signal(Signal::SIGSTOP)?;
        let until = Instant::now() + Duration::from_secs(5);
        while !self.stopped() {
            if Instant::now() > until {
                return Err(format!("{} {} did not stop", self.role, self.pid).into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Wait until it no longer runs (dead, or a zombie).
    pub fn wait_gone(&self) -> Result<(), Failed> {
        let until = Instant::now() + Duration::from_secs(5);
        while self.runs() {
            if Instant::now() > until {
                return Err(format!("{} {} is still running", self.role, self.pid).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }
}

impl<N: Target> Drop for Fixture<N> {
    fn drop(&mut self) {
        // A guard this trial started must not outlive it: ask it to roll back and
        // exit through its FIFO, then wait until it has let go of the lock (its
        // last act is moving the record to last.json: removing the directory
        // before that would race it). A stopped guard or watchdog cannot answer:
        // continue it first. One that still runs after that is killed, checked by
        // its command line (`ApplyProc`). A guard started over ssh lives in sshd's
        // PID namespace: its recorded pid names another process or none here, so
        // the check leaves it to the FIFO. Then sshd, and after this the namespace and the directory.
        if self.state_dir.exists() {
            let procs = self.apply_procs();
            for p in procs.iter().filter(|p| p.stopped()) {
                let _ = p.signal(Signal::SIGCONT);
            }
            if let Ok(state) = portcullis::apply::StateDir::open(&self.state_dir) {
                if let Some(r) = self.record("pending.json").filter(|r| !r.status.is_final()) {
                    let line = format!("rollback {} the trial ended", r.id);
                    let _ = portcullis::apply::guard::send(&state, &line);
                }
                let _ = portcullis::apply::guard::wait_for_exit(&state, Duration::from_secs(5));
            }
            for p in procs.iter().filter(|p| p.runs()) {
                let _ = p.signal(Signal::SIGKILL);
                let _ = p.wait_gone();
            }
        }
        drop(self.sshd.take());
    }
}

/// A policy letting `allow` in over ssh (IPv6 mirrored), nothing else.
pub fn ssh_policy<S: AsRef<str>>(allow: &[S]) -> String {
    let list: Vec<String> = allow
        .iter()
        .map(|a| format!("\"{}\"", a.as_ref()))
        .collect();
    format!(
        "[ssh]\nport = 22\nallow_from = [{}]\n\n[ipv6]\nmode = \"mirror\"\n",
        list.join(", ")
    )
}

/// Rules a host may have before: accept everything, but tracked, so sessions
/// are known to conntrack (the usual case on a host that already has a firewall).
pub const TRACKED_BEFORE: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"before: tracked\" -j ACCEPT\nCOMMIT\n";

/// Output bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The portcullis binary as snapbox runs it: from the installer's directory,
/// with no SSH session in its environment.
pub fn portcullis_cmd() -> snapbox::cmd::Command {
    snapbox::cmd::Command::new(snapbox::cmd::cargo_bin!("portcullis"))
        .env_remove("SSH_CONNECTION")
        .current_dir(crate::policy_test::installer_dir())
}
