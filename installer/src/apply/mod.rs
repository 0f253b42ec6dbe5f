//! Safe apply: snapshot, a detached rollback guard, confirmation from a new session.
//!
//! `start` does, in order: render; preflight (every SSH session found in the
//! environment and the process tree must survive the policy, and a terminal
//! with none is refused unless on the console; no conflicting firewall manager
//! or backend unless forced); resolve the restore and save binaries (trusted,
//! recorded for the guard), and `ipset` when the policy renders sets or it is
//! installed and works; `--test`
//! both families with the chosen backend (after preflight, because a legacy
//! `--test` instantiates empty tables, and a refusal must leave no trace;
//! rules that match sets are tested with their sets in a private namespace);
//! refuse state files others could write unless forced;
//! snapshot the live rules (and with `ipset`, the `pc-*` sets) into the
//! state directory; start the guard and wait until it is armed; swap the sets
//! in ([`sets::load`]), apply each family with one `*-restore -w` call, then
//! destroy the sets nothing references ([`sets::cleanup`]). Any rollback puts
//! the snapshot's sets back before its rules. `Started::wait` then waits for the guard to end
//! the apply, one way or the other. `confirm`, `rollback` and `status` talk to the
//! guard through the state directory.
//!
//! It refuses to change a rule before the guard is armed, to persist anything
//! before a confirmation, to accept a confirmation from the session that ran
//! the apply (an old session proves nothing about new connections), and to
//! accept one after the deadline.
//!
//! Three processes can end an apply, and whichever survives does: the guard at
//! the deadline; its watchdog (see [`watchdog`]) when the guard dies, or has not
//! ended the apply in time after the deadline ([`watchdog::overdue`]: stopped,
//! or stuck); and the foreground `apply` under the same two conditions. They meet in
//! [`take_over`], under the state lock, so the snapshot is restored once.

pub mod guard;
pub mod persistence;
pub mod preflight;
pub mod session;
pub mod sets;
pub mod snapshot;
pub mod state;
pub mod watchdog;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_netfilter::{Backend, BackendError, Family};
use serde::Serialize;

pub use session::SshConnection;
pub use state::{Record, StateDir, StateError, Status};

use crate::policy::Policy;

/// Why an apply, confirm or rollback did not happen (or ended badly).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Preflight (or a confirm from the wrong session) refused; nothing changed.
    #[error("refused, nothing changed:\n  - {}", .0.join("\n  - "))]
    Refused(Vec<String>),
    #[error(
        "refused, nothing changed: apply {id} is pending until {deadline} ({remaining} s left); confirm it from a new session with `portcullis confirm`, undo it with `portcullis rollback`, or wait"
    )]
    AlreadyPending {
        id: String,
        deadline: String,
        remaining: i64,
    },
    #[error(
        "refused, nothing changed: apply {id} was left {status} and its guard is gone; inspect `portcullis status`, then `portcullis rollback` (restores its snapshot) or `portcullis confirm`"
    )]
    Orphaned { id: String, status: Status },
    #[error(
        "refused, nothing changed: the rollback of apply {id} failed ({reason}); fix the cause, then run `portcullis rollback` again"
    )]
    RollbackPending { id: String, reason: String },
    #[error(
        "the rendered {family} rules do not pass {backend} restore --test, nothing changed: {source}"
    )]
    Test {
        family: Family,
        backend: Backend,
        #[source]
        source: BackendError,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error("cannot start the rollback guard, nothing applied: {0}")]
    Guard(String),
    #[error("applying the {what} failed ({source}); then: {outcome}")]
    ApplyFailed {
        /// `ipv4 rules`, `ipv6 rules`, or `ipsets`.
        what: String,
        #[source]
        source: BackendError,
        outcome: String,
        /// Whether the snapshot is back (false: the host is in an unknown state).
        rolled_back: bool,
    },
    #[error("no apply is pending in {0}")]
    NothingPending(PathBuf),
    #[error("too late: apply {id} ended {status} ({reason})")]
    TooLate {
        id: String,
        status: Status,
        reason: String,
    },
    #[error(
        "the guard of apply {0} did not answer; check `portcullis status` and the guard.log in the state dir"
    )]
    NoAnswer(String),
    #[error(
        "the guard (pid {pid}) of apply {id} is stopped, so nothing can be confirmed: continue it with `kill -CONT {pid}` and confirm again, or run `portcullis rollback`"
    )]
    GuardStopped { id: String, pid: i32 },
    #[error(
        "confirmed, but NOT persisted: {0}; the rules are live until the next reboot; write them with `portcullis install`"
    )]
    Persist(String),
    #[error("{0}")]
    Session(String),
}

impl ApplyError {
    /// Bad input (a policy or a session that fails preflight): exit 2.
    pub fn is_refusal(&self) -> bool {
        matches!(self, ApplyError::Refused(_) | ApplyError::Session(_))
    }
}

/// Everything `portcullis apply` was asked.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub policy: Policy,
    /// The policy's source text, kept with the snapshot so confirm persists what
    /// was applied.
    pub policy_text: String,
    /// The policy's origin, for the record.
    pub config: String,
    pub timeout: Duration,
    pub state_dir: PathBuf,
    pub backend: Backend,
    pub persist: bool,
    pub root: PathBuf,
    pub force: bool,
    /// The portcullis binary to run as the guard (`std::env::current_exe()`).
    pub guard_exe: PathBuf,
    /// `--i-am-on-the-console`: no ssh session is expected, so a terminal
    /// without one is not refused.
    pub on_console: bool,
}

/// An apply whose rules are live and whose guard is armed.
#[derive(Debug)]
pub struct Started {
    pub state: StateDir,
    pub record: Record,
    /// The ipsets loaded, with how many entries each holds.
    pub sets: Vec<(String, usize)>,
    /// Set by [`Started::wait`] when the guard failed and apply itself ended
    /// the apply (the record's reason says why).
    pub took_over: bool,
    guard: Child,
}

/// Format a unix time in milliseconds as `HH:MM:SS UTC`.
pub fn clock(unix_ms: u64) -> String {
    let s = unix_ms / 1000;
    format!(
        "{:02}:{:02}:{:02} UTC",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

/// Check the state directory for a pending apply; retire a finished record.
fn refuse_if_pending(state: &StateDir) -> Result<state::Lock, ApplyError> {
    // `status`, `confirm` and a finishing `apply` hold the lock for moments; only
    // a guard holds it while a record is pending.
    let mut lock = state.try_lock()?;
    let until = Instant::now() + Duration::from_secs(1);
    while lock.is_none()
        && Instant::now() < until
        && !matches!(state.record(), Ok(Some(r)) if !r.status.is_final())
    {
        std::thread::sleep(Duration::from_millis(10));
        lock = state.try_lock()?;
    }
    let Some(lock) = lock else {
        let rec = state.record()?;
        return Err(match rec {
            Some(r) => ApplyError::AlreadyPending {
                deadline: clock(r.deadline_unix_ms),
                remaining: r.remaining_ms().max(0) / 1000,
                id: r.id,
            },
            None => ApplyError::AlreadyPending {
                id: "(unknown)".into(),
                deadline: "unknown".into(),
                remaining: 0,
            },
        });
    };
    if let Some(r) = state.record()? {
        if r.status == Status::RollbackFailed {
            return Err(ApplyError::RollbackPending {
                id: r.id,
                reason: r.reason.unwrap_or_default(),
            });
        } else if r.status.is_final() {
            state.retire_record()?;
        } else {
            return Err(ApplyError::Orphaned {
                id: r.id,
                status: r.status,
            });
        }
    }
    Ok(lock)
}

/// Render, test, preflight, snapshot, arm the guard, apply. See the module doc.
pub fn start(opts: &ApplyOptions) -> Result<Started, ApplyError> {
    let rendered = crate::render(&opts.policy);
    let families: Vec<(Family, String)> = Family::ALL
        .iter()
        .filter_map(|&f| rendered.text(f).map(|t| (f, t)))
        .collect();
    let sessions = SshConnection::all_current().map_err(|e| ApplyError::Refused(vec![e]))?;
    let ssh = sessions.first().cloned();
    let mut facts = preflight::gather(opts.backend, ssh.clone(), &opts.root);
    facts.other_sessions = sessions.iter().skip(1).cloned().collect();
    let mut refusals = Vec::new();
    if sessions.is_empty() && !opts.on_console {
        refusals.extend(session::unverifiable_terminal());
    }
    for finding in preflight::check(&opts.policy, &facts) {
        match finding {
            preflight::Finding::LockOut { message } => refusals.push(message),
            preflight::Finding::Conflict { message } if !opts.force => refusals.push(message),
            preflight::Finding::Conflict { .. } => {}
        }
    }
    if opts.persist {
        match persistence::detect(&opts.root) {
            Err(e) => refusals.push(e),
            // A confirm would persist rules that name sets the boot would not
            // load, and the host would boot open.
            Ok(m) => refusals.extend(
                persistence::sets_refusals(&opts.root, &m, &rendered)
                    .into_iter()
                    .map(|why| format!("{why}; or apply with --no-persist")),
            ),
        }
    }
    if !refusals.is_empty() {
        return Err(ApplyError::Refused(refusals));
    }

    // The binaries the guard will run to roll back, resolved now (and refused
    // now if unsafe), and recorded so it runs exactly these.
    let mut binaries = std::collections::BTreeMap::new();
    for family in Family::ALL {
        for name in [
            opts.backend.restore_binary(family),
            opts.backend.save_binary(family),
        ] {
            let path = portcullis_netfilter::bins::resolve(&name)
                .map_err(|e| ApplyError::Refused(vec![e.to_string()]))?;
            binaries.insert(name, path.display().to_string());
        }
    }
    // ipset: needed when the policy renders sets; otherwise used (to snapshot
    // and restore the pc-* sets an earlier apply left) when it is installed
    // and works here.
    let set_defs = sets::of_rendered(&rendered);
    let sets_text = rendered.sets_text();
    let with_sets = match portcullis_netfilter::bins::resolve(sets::BINARY) {
        Ok(path) if sets_text.is_some() || sets::list().is_ok() => {
            binaries.insert(sets::BINARY.to_owned(), path.display().to_string());
            true
        }
        Ok(_) => false,
        Err(_) if sets_text.is_none() => false,
        Err(e) => {
            return Err(ApplyError::Refused(vec![format!(
                "the policy renders ipsets ({}), and {e}",
                set_defs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )]));
        }
    };

    // Rules that match sets are tested with their sets, in a private network
    // namespace (`unshare -n`, as `check` does): the live host is not touched.
    let unshare = match &sets_text {
        Some(_) => Some(
            portcullis_netfilter::bins::resolve("unshare")
                .map_err(|e| ApplyError::Refused(vec![e.to_string()]))?,
        ),
        None => None,
    };
    for (family, text) in &families {
        let tested = match (&sets_text, &unshare) {
            (Some(sets_text), Some(unshare)) => {
                let restore =
                    portcullis_netfilter::bins::resolve(&opts.backend.restore_binary(*family))
                        .map_err(|e| ApplyError::Refused(vec![e.to_string()]))?;
                let ipset = &binaries[sets::BINARY];
                portcullis_netfilter::backend::test_with_sets(
                    &unshare.display().to_string(),
                    ipset,
                    &restore.display().to_string(),
                    sets_text,
                    text,
                )
                .map(drop)
            }
            _ => portcullis_netfilter::backend::restore(opts.backend, *family, text, true),
        };
        tested.map_err(|source| ApplyError::Test {
            family: *family,
            backend: opts.backend,
            source,
        })?;
    }

    let state = StateDir::open(&opts.state_dir)?;
    let unsafe_files = state.writable_by_others()?;
    if !unsafe_files.is_empty() && !opts.force {
        return Err(ApplyError::Refused(vec![format!(
            "state files writable by other users: {}; whoever wrote them decides what a rollback restores: remove them or `chmod go-w` them, or pass --force",
            unsafe_files.join(", ")
        )]));
    }
    let lock = refuse_if_pending(&state)?;
    snapshot::take(&state, opts.backend, with_sets)?;
    for family in Family::ALL {
        state.remove(state::applied_name(family))?;
    }
    for (family, text) in &families {
        state.write_atomic(state::applied_name(*family), text.as_bytes())?;
    }
    state.write_atomic(state::POLICY, opts.policy_text.as_bytes())?;
    let now = state::now_unix_ms();
    let record = Record {
        id: format!("{now}-{}", std::process::id()),
        status: Status::Starting,
        started_unix_ms: now,
        deadline_unix_ms: now + opts.timeout.as_millis() as u64,
        timeout_secs: opts.timeout.as_secs(),
        backend: opts.backend.name().into(),
        families: families.iter().map(|(f, _)| f.name().to_owned()).collect(),
        config: opts.config.clone(),
        ssh_connection: ssh.as_ref().map(|s| s.raw.clone()),
        session_id: nix::unistd::getsid(None).map(|p| p.as_raw()).unwrap_or(0),
        guard_pid: None,
        persist: opts.persist,
        persist_root: opts.root.display().to_string(),
        ended_unix_ms: None,
        reason: None,
        persisted: None,
        binaries,
        deadline_boot_ms: Some(state::boottime_ms() + opts.timeout.as_millis() as u64),
        watchdog_pid: None,
    };
    state.write_record(&record)?;

    let guard = spawn_guard(&state, &record, &opts.guard_exe);
    // The guard takes the lock itself: hand it over. A second apply arriving in
    // between finds a record that is not final and refuses.
    drop(lock);
    let (guard, record) = match guard.and_then(|g| wait_armed(&state, &record.id, g)) {
        Ok(x) => x,
        Err(e) => {
            // Nothing was applied: forget this attempt.
            if let Ok(Some(_l)) = state.try_lock() {
                let _ = state.remove(state::PENDING);
            }
            return Err(ApplyError::Guard(e));
        }
    };

    let mut started = Started {
        state,
        record,
        sets: set_defs
            .iter()
            .map(|s| (s.name.clone(), s.members.len()))
            .collect(),
        took_over: false,
        guard,
    };
    // The sets first, swapped in under their names (the rules about to load
    // match them), then the rules, then the sets nothing references any more.
    // Each step: `None` loads the sets, `Some((family, text))` a ruleset.
    let load_sets = (with_sets && !set_defs.is_empty()).then_some(None);
    let steps = load_sets
        .into_iter()
        .chain(families.iter().map(|(f, text)| Some((*f, text.as_str()))));
    for step in steps {
        let (what, done) = match step {
            None => ("ipsets".to_owned(), sets::load(&set_defs)),
            Some((family, text)) => (
                format!("{family} rules"),
                portcullis_netfilter::backend::restore(opts.backend, family, text, false),
            ),
        };
        if let Err(source) = done {
            let line = format!("rollback {} applying the {what} failed", started.record.id);
            let _ = guard::send(&started.state, &line);
            let (outcome, rolled_back) = match started.wait(|_| {}) {
                Ok(r) if r.status == Status::RolledBack => {
                    ("the snapshot was restored".to_owned(), true)
                }
                Ok(r) => (
                    format!("{}: {}", r.status, r.reason.unwrap_or_default()),
                    false,
                ),
                Err(e) => (format!("{e:#}"), false),
            };
            return Err(ApplyError::ApplyFailed {
                what,
                source,
                outcome,
                rolled_back,
            });
        }
    }
    // Past the deadline the guard is rolling back (and cleans up after its own
    // restore): destroying sets now could take one it has just put back.
    if with_sets && started.record.remaining_ms() > 0 {
        let keep: Vec<&str> = set_defs.iter().map(|s| s.name.as_str()).collect();
        // The apply stands without it: a set left over matches nothing.
        if let Err(e) = sets::cleanup(&keep) {
            eprintln!(
                "portcullis: warning: the rules are applied, but the pc-* ipsets they no longer use were not destroyed: {e}"
            );
        }
    }
    Ok(started)
}

fn spawn_guard(state: &StateDir, record: &Record, exe: &Path) -> Result<Child, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let log_path = state.file(state::GUARD_LOG);
    let log = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&log_path)
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let log2 = log
        .try_clone()
        .map_err(|e| format!("cannot dup {}: {e}", log_path.display()))?;
    Command::new(exe)
        .arg("__guard")
        .arg("--state-dir")
        .arg(state.path())
        .arg("--id")
        .arg(&record.id)
        .current_dir("/")
        // The guard runs the binaries the record names; anything else it finds
        // in the system directories, never on the caller's PATH.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("cannot run {} __guard: {e}", exe.display()))
}

/// Wait until the guard has marked the record pending (it holds the lock then).
fn wait_armed(state: &StateDir, id: &str, mut child: Child) -> Result<(Child, Record), String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the guard exited at once ({status}); see {}",
                state.file(state::GUARD_LOG).display()
            ));
        }
        if let Ok(Some(r)) = state.record() {
            if r.id == id && r.status == Status::Pending {
                return Ok((child, r));
            }
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the guard did not arm within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The record of apply `id` once it has ended, if it has.
pub fn finished(state: &StateDir, id: &str) -> Result<Option<Record>, StateError> {
    for r in [state.last_record()?, state.record()?]
        .into_iter()
        .flatten()
    {
        if r.id == id && r.status.is_final() {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

impl Started {
    /// Wait for the guard to end the apply; `tick` gets the milliseconds left,
    /// about once a second (and once at the start). When the guard dies first,
    /// or has not ended the apply in time ([`watchdog::overdue`]), end it here:
    /// see [`take_over`].
    pub fn wait(&mut self, mut tick: impl FnMut(i64)) -> Result<Record, ApplyError> {
        let mut next_tick = Instant::now();
        let pid = self.record.guard_pid.unwrap_or(0);
        loop {
            let _ = self.guard.try_wait();
            if let Some(r) = finished(&self.state, &self.record.id)? {
                return Ok(r);
            }
            if !self.state.lock_held()? {
                let reason = format!(
                    "the guard {pid} died before it ended the apply; rolled back by `portcullis apply`"
                );
                self.took_over = true;
                return take_over(&self.state, &self.record.id, &reason, false, false);
            }
            let late = -self.record.remaining_ms();
            if late >= watchdog::GRACE_MS as i64 {
                let what = guard::guard_state(&self.state, &self.record);
                if watchdog::overdue(what, late) {
                    let reason = format!(
                        "the guard {pid} ({}) had not ended the apply {late} ms after the deadline; rolled back by `portcullis apply`",
                        what.name()
                    );
                    self.took_over = true;
                    return take_over(&self.state, &self.record.id, &reason, true, false);
                }
            }
            if Instant::now() >= next_tick {
                tick(self.record.remaining_ms());
                // Tick on the wall-clock second boundary of the deadline.
                let ms = self.record.remaining_ms().rem_euclid(1000) as u64;
                next_tick = Instant::now() + Duration::from_millis(if ms == 0 { 1000 } else { ms });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What `confirm` was asked.
#[derive(Debug, Clone)]
pub struct ConfirmOptions {
    pub state_dir: PathBuf,
    /// `Some(false)` for `--no-persist`; `None` follows what apply recorded.
    pub persist: Option<bool>,
    pub root: Option<PathBuf>,
    /// The session confirm runs in.
    pub ssh: Option<SshConnection>,
}

/// Whether a confirm from `ssh` may confirm `record`.
pub fn check_session(record: &Record, ssh: Option<&SshConnection>) -> Result<(), String> {
    let same = |applied: &str, now: &SshConnection| {
        applied == now.raw
            || SshConnection::parse(applied, "the record").is_ok_and(|a| a.same_connection(now))
    };
    match (&record.ssh_connection, ssh) {
        (Some(applied), Some(now)) if same(applied, now) => Err(format!(
            "this is the ssh connection that ran apply ({applied}): it proves nothing about new connections; open a NEW ssh session (no ControlMaster reuse) and run `portcullis confirm` there"
        )),
        _ => Ok(()),
    }
}

/// Confirm the pending apply: stop the guard, then persist. Returns the final record.
pub fn confirm(opts: &ConfirmOptions) -> Result<Record, ApplyError> {
    let state = StateDir::open(&opts.state_dir)?;
    let record = match state.record()? {
        Some(r) if r.status == Status::RollbackFailed => {
            return Err(ApplyError::TooLate {
                id: r.id,
                status: r.status,
                reason: r.reason.unwrap_or_default(),
            });
        }
        _ => pending(&state)?,
    };
    if record.status == Status::Starting {
        // Its guard never armed, so its rules were never applied: nothing to keep.
        return Err(ApplyError::Orphaned {
            id: record.id,
            status: record.status,
        });
    }
    check_session(&record, opts.ssh.as_ref()).map_err(ApplyError::Session)?;
    if record.remaining_ms() <= 0 {
        return Err(too_late(&state, &record)?);
    }
    let persist = opts.persist.unwrap_or(record.persist);
    let root = opts
        .root
        .clone()
        .unwrap_or_else(|| PathBuf::from(&record.persist_root));
    // Find out before confirming whether persistence can work at all: a confirm
    // that cannot persist must not stop the guard behind the admin's back.
    let mechanism = if persist {
        Some(persistence::detect(&root).map_err(|e| {
            ApplyError::Refused(vec![format!(
                "{e} (the apply stays pending; the guard still rolls back at {})",
                clock(record.deadline_unix_ms)
            )])
        })?)
    } else {
        None
    };
    // Everything persistence needs is read and checked before the guard stops.
    let plan = match mechanism {
        None => None,
        Some(m) => Some(persist_plan(&state, &record, &root, m)?),
    };
    let mut done = match guard::guard_state(&state, &record) {
        guard::GuardState::Stopped => {
            return Err(ApplyError::GuardStopped {
                id: record.id,
                pid: record.guard_pid.unwrap_or(0),
            });
        }
        guard::GuardState::Watching
            if guard::send(&state, &format!("confirm {}", record.id)).unwrap_or(false) =>
        {
            if !guard::wait_for_exit(&state, Duration::from_millis(watchdog::STUCK_MS))? {
                return Err(ApplyError::NoAnswer(record.id.clone()));
            }
            finished(&state, &record.id)?.ok_or_else(|| ApplyError::NoAnswer(record.id.clone()))?
        }
        _ => confirm_without_guard(&state, &record)?,
    };
    if done.status != Status::Confirmed {
        return Err(ApplyError::TooLate {
            id: done.id,
            status: done.status,
            reason: done.reason.unwrap_or_default(),
        });
    }
    if let Some((m, rendered, v4, v6)) = plan {
        let backend: Backend = done.backend.parse().map_err(ApplyError::Session)?;
        let what = persistence::install(&root, &m, &rendered, &v4, v6.as_deref(), backend)
            .map_err(ApplyError::Persist)?;
        done.persisted = Some(what);
        let _lock = state.lock()?;
        let mut text = serde_json::to_string_pretty(&done).expect("a record serializes");
        text.push('\n');
        state.write_atomic(state::LAST, text.as_bytes())?;
    }
    Ok(done)
}

type Plan = (
    persistence::Mechanism,
    crate::Rendered,
    String,
    Option<String>,
);

/// The applied texts and the re-rendered policy, checked equal.
fn persist_plan(
    state: &StateDir,
    record: &Record,
    root: &Path,
    m: persistence::Mechanism,
) -> Result<Plan, ApplyError> {
    let refuse = |why: String| {
        ApplyError::Refused(vec![format!(
            "{why}; confirm with --no-persist (the apply stays pending until {})",
            clock(record.deadline_unix_ms)
        )])
    };
    let v4 = state
        .read(state::applied_name(Family::V4))?
        .ok_or_else(|| refuse("the applied ipv4 rules are missing from the state dir".into()))?;
    let v6 = state.read(state::applied_name(Family::V6))?;
    let text = state
        .read(state::POLICY)?
        .ok_or_else(|| refuse("the applied policy is missing from the state dir".into()))?;
    let policy = Policy::parse(&text, &record.config)
        .map_err(|e| refuse(format!("the applied policy no longer parses: {e}")))?;
    let rendered = crate::render(&policy);
    if let Some(why) = persistence::sets_refusals(root, &m, &rendered)
        .into_iter()
        .next()
    {
        return Err(refuse(why));
    }
    for (family, applied) in [(Family::V4, Some(&v4)), (Family::V6, v6.as_ref())] {
        if rendered.text(family).as_ref() != applied {
            return Err(refuse(format!(
                "this portcullis renders different {family} rules from those applied"
            )));
        }
    }
    Ok((m, rendered, v4, v6))
}

/// Restore the snapshot of the pending apply now (or retry a rollback that
/// failed). A stopped guard of this apply is killed first; a dead one is not
/// needed. With `only_id`, do nothing (`Ok(None)`) unless that apply is the
/// pending one: what a timer set at apply time runs.
pub fn rollback(state_dir: &Path, only_id: Option<&str>) -> Result<Option<Record>, ApplyError> {
    let state = StateDir::open(state_dir)?;
    let record = match state.record()? {
        Some(r) if !r.status.is_final() || r.status == Status::RollbackFailed => r,
        _ if only_id.is_some() => return Ok(None),
        _ => return Err(ApplyError::NothingPending(state.path().to_owned())),
    };
    if only_id.is_some_and(|id| id != record.id) {
        return Ok(None);
    }
    let what = guard::guard_state(&state, &record);
    if what == guard::GuardState::Watching {
        let line = format!("rollback {} requested by `portcullis rollback`", record.id);
        // A running guard gets as long as anywhere else before it counts as
        // stuck (a 50,000-entry sets restore takes seconds on a slow host).
        if guard::send(&state, &line).unwrap_or(false)
            && guard::wait_for_exit(&state, Duration::from_millis(watchdog::STUCK_MS))?
        {
            if let Some(r) = finished(&state, &record.id)? {
                return Ok(Some(r));
            }
        }
    }
    let reason = format!(
        "rolled back by `portcullis rollback` (the guard was {})",
        what.name()
    );
    take_over(&state, &record.id, &reason, true, true).map(Some)
}

fn pending(state: &StateDir) -> Result<Record, ApplyError> {
    match state.record()? {
        Some(r) if !r.status.is_final() => Ok(r),
        _ => Err(ApplyError::NothingPending(state.path().to_owned())),
    }
}

/// A confirm that came at or after the deadline: make sure the apply ends rolled
/// back (by its guard if it watches, here otherwise), and say so.
fn too_late(state: &StateDir, record: &Record) -> Result<ApplyError, ApplyError> {
    let watching = guard::alive(state, record);
    let reason = "a confirm came after the deadline; rolled back by `portcullis confirm`";
    let r = take_over(state, &record.id, reason, !watching, false)?;
    Ok(ApplyError::TooLate {
        id: r.id,
        status: r.status,
        reason: format!(
            "the deadline passed before the confirm; {}",
            r.reason.unwrap_or_default()
        ),
    })
}

/// Confirm under the lock when no guard (nor watchdog) is left, before the
/// deadline: the rules are live and the promise still holds.
fn confirm_without_guard(state: &StateDir, record: &Record) -> Result<Record, ApplyError> {
    let Some(_lock) = state.try_lock()? else {
        return Err(ApplyError::NoAnswer(record.id.clone()));
    };
    if let Some(r) = finished(state, &record.id)? {
        return Ok(r);
    }
    let mut r = state.record()?.unwrap_or_else(|| record.clone());
    if r.remaining_ms() <= 0 {
        drop(_lock);
        return Err(too_late(state, record)?);
    }
    r.status = Status::Confirmed;
    r.ended_unix_ms = Some(state::now_unix_ms());
    r.reason = Some("confirmed (the guard was gone)".to_owned());
    state.write_record(&r)?;
    state.retire_record()?;
    Ok(r)
}

/// Restore the snapshot of `record` and record the outcome; the caller holds the
/// lock. Every family verified back: `RolledBack`, moved to `last.json`.
/// Otherwise `RollbackFailed` with every error, left in `pending.json` so
/// `portcullis rollback` can retry and no new apply starts over it.
pub(crate) fn roll_back_locked(
    state: &StateDir,
    record: &mut Record,
    reason: &str,
) -> Result<Status, StateError> {
    // The binaries apply recorded, and no others, restore the snapshot.
    let backend = record.backend.parse::<Backend>().and_then(|b| {
        record.pin_binaries().map_err(|e| e.to_string())?;
        Ok(b)
    });
    let errors: Vec<String> = match backend {
        Err(e) => vec![e],
        Ok(backend) => {
            let families: Vec<Family> = record
                .families
                .iter()
                .filter_map(|f| f.parse().ok())
                .collect();
            let fallback = || snapshot::Fallback::for_record(record);
            // An apply that could see ipsets recorded the binary, and snapshotted them.
            let sets = record.binaries.contains_key(sets::BINARY);
            snapshot::restore(state, backend, &families, sets, fallback)
                .iter()
                .map(|e| format!("{e:#}"))
                .collect()
        }
    };
    record.ended_unix_ms = Some(state::now_unix_ms());
    if errors.is_empty() {
        record.status = Status::RolledBack;
        record.reason = Some(reason.to_owned());
        state.write_record(record)?;
        state.retire_record()?;
    } else {
        record.status = Status::RollbackFailed;
        record.reason = Some(format!(
            "{reason}; the rollback FAILED: {}",
            errors.join("; ")
        ));
        state.write_record(record)?;
    }
    Ok(record.status)
}

/// End apply `id` rolled back because its guard cannot: wait for the state lock
/// (killing the guard of this id when it is stopped, or when `kill_guard` says
/// so), then restore under it with `roll_back_locked`. Whoever comes second
/// finds the apply over and returns its record; with `retry`, a
/// `RollbackFailed` record is tried again.
pub fn take_over(
    state: &StateDir,
    id: &str,
    reason: &str,
    kill_guard: bool,
    retry: bool,
) -> Result<Record, ApplyError> {
    let over = |r: &Record| !(retry && r.status == Status::RollbackFailed);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(r) = finished(state, id)?.filter(over) {
            return Ok(r);
        }
        if let Some(_lock) = state.try_lock()? {
            if let Some(r) = finished(state, id)?.filter(over) {
                return Ok(r);
            }
            let Some(mut r) = state.record()?.filter(|r| r.id == id) else {
                return Err(ApplyError::NothingPending(state.path().to_owned()));
            };
            roll_back_locked(state, &mut r, reason)?;
            return Ok(r);
        }
        // The lock is held: by the guard, or by another process taking over.
        if let Some(r) = state.record()?.filter(|r| r.id == id) {
            if kill_guard || guard::guard_state(state, &r) == guard::GuardState::Stopped {
                guard::kill_guard(&r);
            }
        }
        if Instant::now() >= until {
            return Err(ApplyError::NoAnswer(id.to_owned()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What `portcullis status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub state_dir: String,
    pub pending: Option<Record>,
    pub remaining_secs: Option<i64>,
    /// Whether the guard watches (holds the lock and is not stopped).
    pub guard_alive: Option<bool>,
    /// `watching`, `stopped` or `gone`.
    pub guard: Option<String>,
    /// Whether the watchdog process of the pending apply runs.
    pub watchdog_alive: Option<bool>,
    pub last: Option<Record>,
    pub backend: Option<String>,
    /// The mechanism and why, or `None` with `persistence_error` saying why not.
    pub persistence: Option<String>,
    pub persistence_error: Option<String>,
    pub conflicts: Vec<String>,
}

/// Gather the status of `state_dir` and of this host.
pub fn status(state_dir: &Path, root: &Path) -> Result<StatusReport, ApplyError> {
    // Reading status must not create the state directory.
    let (pending, last, alive, dir) = if state_dir.exists() {
        let state = StateDir::open(state_dir)?;
        let pending = state.record()?;
        let alive = pending.as_ref().map(|r| {
            let watchdog = r.watchdog_pid.is_some_and(|pid| {
                matches!(
                    guard::process_of(pid, "__watchdog", &r.id),
                    Some(guard::GuardState::Watching | guard::GuardState::Stopped)
                )
            });
            (guard::guard_state(&state, r), watchdog)
        });
        (
            pending,
            state.last_record()?,
            alive,
            state.path().display().to_string(),
        )
    } else {
        (None, None, None, state_dir.display().to_string())
    };
    let backend = pending
        .as_ref()
        .map(|r| r.backend.parse::<Backend>().ok())
        .unwrap_or_else(|| Backend::detect().ok());
    let conflicts = match backend {
        Some(b) => preflight::conflicts(&preflight::gather(b, None, root)),
        None => vec![],
    };
    let detected = persistence::detect(root).map(|m| format!("{} ({})", m.name, m.reason));
    Ok(StatusReport {
        state_dir: dir,
        remaining_secs: pending
            .as_ref()
            .filter(|r| !r.status.is_final())
            .map(|r| r.remaining_ms().max(0) / 1000),
        guard_alive: alive.map(|(g, _)| g == guard::GuardState::Watching),
        guard: alive.map(|(g, _)| g.name().to_owned()),
        watchdog_alive: alive.map(|(_, w)| w),
        pending,
        last,
        backend: backend.map(|b| b.name().to_owned()),
        persistence: detected.as_ref().ok().cloned(),
        persistence_error: detected.err(),
        conflicts,
    })
}
