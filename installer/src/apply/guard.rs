//! The rollback guard: a detached process that restores the snapshot at the
//! deadline unless the apply is confirmed first.
//!
//! `apply` re-executes its own binary as `portcullis __guard --state-dir D --id ID`.
//! The guard blocks SIGHUP, SIGINT, SIGTERM and SIGQUIT before anything else (a
//! blocked signal is never delivered; it reads them from a signalfd instead), then
//! calls setsid() so no terminal and no session leader can reach it, and takes the
//! state directory's lock, which it holds until it exits: "the lock is held" means
//! "a guard is watching". Its stdio is the log file in the state directory.
//!
//! It then sleeps in poll(2) on two descriptors with the time left as the timeout:
//! a FIFO in the state directory (`confirm ID`, `rollback ID REASON`) and the
//! signalfd. The deadline is wall-clock in the record and monotonic inside the
//! guard, so a clock step during the window neither shortens nor extends it.
//! SIGHUP is logged and ignored; SIGTERM or SIGINT (a shutdown) rolls back at once.
//! It refuses to act on a record whose id is not the one it was started for.

use std::io::Read as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use portcullis_netfilter::{Backend, Family};

use super::snapshot;
use super::state::{GUARD_FIFO, Record, StateDir, Status, now_unix_ms};

fn log(msg: &str) {
    use std::io::Write as _;
    let secs = now_unix_ms() as f64 / 1000.0;
    let _ = writeln!(
        std::io::stderr(),
        "[{secs:.3}] guard {}: {msg}",
        std::process::id()
    );
}

/// What ended the wait.
enum Event {
    Confirm,
    Rollback(String),
}

/// The guard's whole life. Returns the final status it recorded.
pub fn run(state_dir: &std::path::Path, id: &str) -> anyhow::Result<Status> {
    use anyhow::Context as _;
    // First thing: from here on a hang-up is a line in the log, not a death.
    let mask: SigSet = [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGQUIT,
    ]
    .into_iter()
    .collect();
    mask.thread_block().context("cannot block SIGHUP")?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("cannot open a signalfd")?;
    // Fails only when already a session leader, which is detached enough.
    if let Err(e) = nix::unistd::setsid() {
        log(&format!("setsid: {e} (already a session leader)"));
    }

    let state = StateDir::open(state_dir)?;
    let _lock = state.lock()?;
    let mut record = state.record()?.filter(|r| r.id == id).with_context(|| {
        format!(
            "no pending apply with id {id} in {}",
            state.path().display()
        )
    })?;
    if record.status != Status::Starting {
        anyhow::bail!(
            "apply {id} is {:?}, not starting; the guard leaves it",
            record.status
        );
    }
    // Before arming: a recorded binary that is no longer safe stops the apply
    // here, before any rule changes.
    record.pin_binaries()?;
    let backend: Backend = record
        .backend
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    let families: Vec<Family> = record
        .families
        .iter()
        .map(|f| f.parse().map_err(|e: String| anyhow::anyhow!(e)))
        .collect::<anyhow::Result<_>>()?;

    let fifo_path = state.file(GUARD_FIFO);
    state.remove(GUARD_FIFO)?;
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .with_context(|| format!("cannot make the fifo {}", fifo_path.display()))?;
    // Read-write: the guard is its own writer, so the FIFO never reads as EOF
    // between two clients.
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&fifo_path)
        .with_context(|| format!("cannot open {}", fifo_path.display()))?;

    let left_ms = record.deadline_unix_ms.saturating_sub(now_unix_ms());
    let deadline = Instant::now() + Duration::from_millis(left_ms);
    record.status = Status::Pending;
    record.guard_pid = Some(std::process::id() as i32);
    state.write_record(&record)?;
    log(&format!(
        "armed for apply {id}: rollback of {} ({backend}) in {left_ms} ms",
        record.families.join(", ")
    ));

    let event = wait(&mut fifo, &sigfd, deadline, id);
    let event = match event {
        Ok(e) => e,
        // Whatever broke the wait, the safe side is the snapshot.
        Err(e) => Event::Rollback(format!("the guard's wait failed ({e}); rolling back")),
    };
    let (status, reason) = match event {
        Event::Confirm => (Status::Confirmed, "confirmed from a new session".to_owned()),
        Event::Rollback(reason) => {
            let errors = snapshot::restore(&state, backend, &families);
            if errors.is_empty() {
                (Status::RolledBack, reason)
            } else {
                let all: Vec<String> = errors.iter().map(|e| format!("{e:#}")).collect();
                (
                    Status::RollbackFailed,
                    format!("{reason}; the rollback failed: {}", all.join("; ")),
                )
            }
        }
    };
    let ended = now_unix_ms();
    let late_ms = ended as i64 - record.deadline_unix_ms as i64;
    record.status = status;
    record.ended_unix_ms = Some(ended);
    record.reason = Some(reason.clone());
    state.write_record(&record)?;
    state.retire_record()?;
    state.remove(GUARD_FIFO)?;
    log(&format!(
        "{status:?}: {reason} ({late_ms:+} ms relative to the deadline)"
    ));
    Ok(status)
}

fn wait(
    fifo: &mut std::fs::File,
    sigfd: &SignalFd,
    deadline: Instant,
    id: &str,
) -> anyhow::Result<Event> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut pending = String::new();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Ok(Event::Rollback(
                "deadline reached without confirmation".into(),
            ));
        }
        // Round up, so the guard never wakes a millisecond early and spins.
        let left = deadline - now + Duration::from_micros(999);
        let timeout =
            PollTimeout::try_from(left.min(Duration::from_secs(3600))).unwrap_or(PollTimeout::MAX);
        let (fifo_ready, sig_ready) = {
            let mut fds = [
                PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
                PollFd::new(sigfd.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false))
        };
        if sig_ready {
            while let Some(info) = sigfd.read_signal()? {
                let sig = Signal::try_from(info.ssi_signo as i32).ok();
                match sig {
                    Some(Signal::SIGHUP) => log("SIGHUP ignored: the guard outlives the session"),
                    Some(s) => {
                        return Ok(Event::Rollback(format!("the guard received {s}")));
                    }
                    None => {}
                }
            }
        }
        if fifo_ready {
            let mut buf = [0u8; 512];
            match fifo.read(&mut buf) {
                Ok(n) => pending.push_str(&String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
            while let Some(nl) = pending.find('\n') {
                let line: String = pending.drain(..=nl).collect();
                let mut words = line.trim().splitn(3, ' ');
                let (verb, who, rest) = (words.next(), words.next(), words.next());
                if who != Some(id) {
                    log(&format!("ignoring {:?}: not for apply {id}", line.trim()));
                    continue;
                }
                match verb {
                    Some("confirm") => return Ok(Event::Confirm),
                    Some("rollback") => {
                        return Ok(Event::Rollback(
                            rest.unwrap_or("rollback requested").to_owned(),
                        ));
                    }
                    _ => log(&format!("ignoring {:?}", line.trim())),
                }
            }
        }
    }
}

/// Send one line to the guard of `record`. `Ok(false)` when no guard listens.
pub fn send(state: &StateDir, line: &str) -> std::io::Result<bool> {
    use std::io::Write as _;
    let path = state.file(GUARD_FIFO);
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e)
            if e.raw_os_error() == Some(libc::ENXIO)
                || e.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    // Under PIPE_BUF bytes: one atomic write.
    f.write_all(format!("{line}\n").as_bytes())?;
    Ok(true)
}

/// Wait (up to `limit`) for the guard to exit, seen as its lock being released.
pub fn wait_for_exit(state: &StateDir, limit: Duration) -> Result<bool, super::StateError> {
    let until = Instant::now() + limit;
    loop {
        if !state.lock_held()? {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `record`'s guard is still watching (its lock is held).
pub fn alive(state: &StateDir, record: &Record) -> bool {
    record.guard_pid.is_some() && state.lock_held().unwrap_or(false)
}
