//! Shared helpers for the installer's trials, and [`Fixture`], the one namespace
//! fixture of the apply and lockout trials.
//!
//! A fixture is a target network namespace (a lone harness [`Host`], or the
//! standard [`Lab`]'s target) with the rules loaded before the trial, a private
//! root-only directory for the state dir, policy and keys, and `portcullis` run
//! inside the namespace (children enter it between fork and exec and carry a
//! parent-death signal, so nothing outlives a killed run). A guard a trial
//! started is asked to roll back and waited for when the fixture drops.
//! Privileged trials are built by `portcullis_harness::trial::privileged`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use portcullis::apply::{Record, Status};
use portcullis_harness::services::ssh::{Client, LabDir, Sshd};
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

/// Sleep until half a second past `r`'s deadline: a wall-clock condition (what
/// stays after the deadline), not a readiness wait.
pub fn sleep_past_deadline(r: &Record) {
    let left = r.remaining_ms();
    if left > -500 {
        std::thread::sleep(Duration::from_millis((left + 500) as u64));
    }
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
                return Err(format!("apply {id} did not end within {limit:?}").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn guard_log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("guard.log")).unwrap_or_default()
    }
}

impl<N: Target> Drop for Fixture<N> {
    fn drop(&mut self) {
        // A guard this trial started must not outlive it: ask it to roll back and
        // exit through its FIFO (never by pid: the guard is not our child), then
        // wait until it has let go of the lock (its last act is moving the record
        // to last.json: removing the directory before that would race it). Only
        // then sshd (a guard started over ssh lives in sshd's PID namespace), and
        // after this the namespace and the directory.
        if self.state_dir.exists() {
            if let Ok(state) = portcullis::apply::StateDir::open(&self.state_dir) {
                if let Some(r) = self.record("pending.json").filter(|r| !r.status.is_final()) {
                    let line = format!("rollback {} the trial ended", r.id);
                    let _ = portcullis::apply::guard::send(&state, &line);
                }
                let _ = portcullis::apply::guard::wait_for_exit(&state, Duration::from_secs(5));
            }
        }
        drop(self.sshd.take());
    }
}
