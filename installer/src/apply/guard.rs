//! The rollback guard: a detached process that restores the snapshot at the
//! deadline unless the apply is confirmed first, and its watchdog.
//!
//! `apply` re-executes its own binary as `portcullis __guard --state-dir D --id ID`.
//! The guard blocks SIGHUP, SIGINT, SIGTERM, SIGQUIT and SIGCHLD before anything
//! else (a blocked signal is never delivered; it reads them from a signalfd
//! instead), then calls setsid() so no terminal and no session leader can reach
//! it, and takes the state directory's lock, which it holds until it exits: "the
//! lock is held" means "a guard is watching". Its stdio is the log file in the
//! state directory. Before it arms, it starts the watchdog (see
//! [`super::watchdog`]), the second line of defence, and refuses to arm without it.
//!
//! It then sleeps in poll(2) on three descriptors: a FIFO in the state directory
//! (`confirm ID`, `rollback ID REASON`), the signalfd, and a timerfd on
//! CLOCK_BOOTTIME set to the record's deadline (absolute). CLOCK_BOOTTIME keeps
//! counting while the machine is suspended (CLOCK_MONOTONIC, which poll's own
//! timeout uses, does not), and no one can step it, so a wall-clock step during
//! the window neither shortens nor extends it; only the `HH:MM:SS UTC` printed
//! for the deadline is then off by the step.
//! A confirm read at or after the deadline (a guard that was stopped and
//! continued, with the confirm waiting in its FIFO) rolls back instead.
//! SIGHUP is logged and ignored; SIGTERM or SIGINT (a shutdown) rolls back at once.
//! It refuses to act on a record whose id is not the one it was started for.

use std::io::Read as _;
use std::os::fd::AsFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use portcullis_netfilter::Family;

use super::state::{GUARD_FIFO, Record, StateDir, Status, boottime_ms, now_unix_ms};

pub(crate) fn log_as(who: &str, msg: &str) {
    use std::io::Write as _;
    let secs = now_unix_ms() as f64 / 1000.0;
    let _ = writeln!(
        std::io::stderr(),
        "[{secs:.3}] {who} {}: {msg}",
        std::process::id()
    );
}

fn log(msg: &str) {
    log_as("guard", msg);
}

/// The detached process's first steps, the guard's and the watchdog's: block
/// SIGHUP, SIGINT, SIGTERM, SIGQUIT and `also` (from here on they are lines read
/// from the returned signalfd, not deaths), then leave the session. `who` names
/// the process in the log.
pub(crate) fn detach(who: &str, also: Signal) -> anyhow::Result<SignalFd> {
    use anyhow::Context as _;
    let mask: SigSet = [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGQUIT,
        also,
    ]
    .into_iter()
    .collect();
    mask.thread_block().context("cannot block signals")?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .context("cannot open a signalfd")?;
    // Fails only when already a session leader, which is detached enough.
    if let Err(e) = nix::unistd::setsid() {
        log_as(who, &format!("setsid: {e} (already a session leader)"));
    }
    Ok(sigfd)
}

/// A timerfd on CLOCK_BOOTTIME that becomes readable at `at_boot_ms`
/// (milliseconds since boot, absolute): fires at once when that has passed.
pub(crate) fn boot_timer(at_boot_ms: u64) -> nix::Result<TimerFd> {
    let t = TimerFd::new(
        ClockId::CLOCK_BOOTTIME,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    // A zero expiry disarms a timerfd; the boot clock is never at zero.
    let at = Duration::from_millis(at_boot_ms.max(1));
    t.set(
        Expiration::OneShot(TimeSpec::from_duration(at)),
        TimerSetTimeFlags::TFD_TIMER_ABSTIME,
    )?;
    Ok(t)
}

/// The deadline of `record` on CLOCK_BOOTTIME; a record written before it had
/// one gets the wall-clock time left, converted once.
pub(crate) fn boot_deadline(record: &Record) -> u64 {
    record
        .deadline_boot_ms
        .unwrap_or_else(|| boottime_ms() + record.deadline_unix_ms.saturating_sub(now_unix_ms()))
}

/// Wait, without a timeout, until one of `fds` can be read; which ones can.
/// An interrupted wait is `EINTR`, for the caller to look around and wait again.
pub(crate) fn poll_in<const N: usize>(
    fds: [std::os::fd::BorrowedFd<'_>; N],
) -> nix::Result<[bool; N]> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = fds.map(|fd| PollFd::new(fd, PollFlags::POLLIN));
    poll(&mut fds, PollTimeout::NONE)?;
    Ok(fds.map(|fd| fd.any().unwrap_or(false)))
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
    let sigfd = detach("guard", Signal::SIGCHLD)?;

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
    let backend: portcullis_netfilter::Backend = record
        .backend
        .parse()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    record
        .families
        .iter()
        .map(|f| f.parse::<Family>().map_err(|e: String| anyhow::anyhow!(e)))
        .collect::<anyhow::Result<Vec<_>>>()?;

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

    let deadline = boot_deadline(&record);
    let timer = boot_timer(deadline).context("cannot set a CLOCK_BOOTTIME timer")?;
    // The second line of defence runs before any rule changes: no watchdog, no apply.
    let exe = std::env::current_exe().context("cannot find the portcullis binary")?;
    let mut watchdog = std::process::Command::new(&exe)
        .arg("__watchdog")
        .arg("--state-dir")
        .arg(state.path())
        .arg("--id")
        .arg(id)
        .arg("--guard")
        .arg(std::process::id().to_string())
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start the watchdog {} __watchdog", exe.display()))?;
    if super::watchdog::systemd_timer_possible() {
        let in_ms = deadline.saturating_sub(boottime_ms()) + 1000;
        let argv = super::watchdog::systemd_timer_argv(&exe, state.path(), id, in_ms);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        match portcullis_netfilter::backend::run(&argv, None) {
            Ok(_) => log(&format!("systemd timer set: {}", argv.join(" "))),
            Err(e) => log(&format!(
                "no systemd timer ({e}); the watchdog and apply remain"
            )),
        }
    }
    record.status = Status::Pending;
    record.guard_pid = Some(std::process::id() as i32);
    record.watchdog_pid = Some(watchdog.id() as i32);
    record.deadline_boot_ms = Some(deadline);
    state.write_record(&record)?;
    log(&format!(
        "armed for apply {id}: rollback of {} ({backend}) in {} ms (CLOCK_BOOTTIME); watchdog pid {}",
        record.families.join(", "),
        deadline.saturating_sub(boottime_ms()),
        watchdog.id()
    ));

    let event = wait(&mut fifo, &sigfd, &timer, deadline, id, &mut watchdog);
    let event = match event {
        Ok(e) => e,
        // Whatever broke the wait, the safe side is the snapshot.
        Err(e) => Event::Rollback(format!("the guard's wait failed ({e}); rolling back")),
    };
    let status = match event {
        Event::Confirm => {
            record.status = Status::Confirmed;
            record.ended_unix_ms = Some(now_unix_ms());
            record.reason = Some("confirmed from a new session".to_owned());
            state.write_record(&record)?;
            state.retire_record()?;
            Status::Confirmed
        }
        Event::Rollback(reason) => super::roll_back_locked(&state, &mut record, &reason)?,
    };
    state.remove(GUARD_FIFO)?;
    let late_ms = boottime_ms() as i64 - deadline as i64;
    log(&format!(
        "{status:?}: {} ({late_ms:+} ms relative to the deadline)",
        record.reason.as_deref().unwrap_or("")
    ));
    Ok(status)
}

fn wait(
    fifo: &mut std::fs::File,
    sigfd: &SignalFd,
    timer: &TimerFd,
    deadline_boot_ms: u64,
    id: &str,
    watchdog: &mut std::process::Child,
) -> anyhow::Result<Event> {
    let mut pending = String::new();
    let past = || boottime_ms() >= deadline_boot_ms;
    loop {
        if past() {
            return Ok(Event::Rollback(
                "deadline reached without confirmation".into(),
            ));
        }
        let [fifo_ready, sig_ready, timer_ready] =
            match poll_in([fifo.as_fd(), sigfd.as_fd(), timer.as_fd()]) {
                Ok(ready) => ready,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            };
        if timer_ready {
            return Ok(Event::Rollback(
                "deadline reached without confirmation".into(),
            ));
        }
        if sig_ready {
            while let Some(info) = sigfd.read_signal()? {
                let sig = Signal::try_from(info.ssi_signo as i32).ok();
                match sig {
                    Some(Signal::SIGHUP) => log("SIGHUP ignored: the guard outlives the session"),
                    Some(Signal::SIGCHLD) => {
                        if let Ok(Some(st)) = watchdog.try_wait() {
                            log(&format!(
                                "the watchdog exited ({st}); the guard and apply still watch"
                            ));
                        }
                    }
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
                    // Checked when read, not when written: a guard stopped past the
                    // deadline finds the confirm waiting in its FIFO when continued.
                    Some("confirm") if past() => {
                        return Ok(Event::Rollback(
                            "a confirm arrived after the deadline; refused".into(),
                        ));
                    }
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

/// Whether `record`'s guard is still watching (its lock is held, and it is not
/// stopped).
pub fn alive(state: &StateDir, record: &Record) -> bool {
    guard_state(state, record) == GuardState::Watching
}

/// What the guard of a pending apply is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardState {
    /// Holds the lock and runs.
    Watching,
    /// Holds the lock but is stopped (SIGSTOP, SIGTSTP, a tracer): it cannot
    /// act at the deadline until continued.
    Stopped,
    /// The lock is free: no guard lives.
    Gone,
}

impl GuardState {
    pub fn name(self) -> &'static str {
        match self {
            GuardState::Watching => "watching",
            GuardState::Stopped => "stopped",
            GuardState::Gone => "gone",
        }
    }
}

/// Whether `pid` runs `portcullis VERB ... --id ID` (so a recycled pid is never
/// signalled), and if so whether it is stopped.
pub fn process_of(pid: i32, verb: &str, id: &str) -> Option<GuardState> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let ours = args.contains(&verb.as_bytes())
        && args
            .windows(2)
            .any(|w| w[0] == b"--id" && w[1] == id.as_bytes());
    if !ours {
        return None;
    }
    let fields = super::session::stat_fields(pid)?;
    Some(match fields.first()?.as_str() {
        "T" | "t" => GuardState::Stopped,
        "Z" | "X" => GuardState::Gone,
        _ => GuardState::Watching,
    })
}

/// The state of `record`'s guard: gone when the lock is free, stopped when its
/// process is, watching otherwise.
pub fn guard_state(state: &StateDir, record: &Record) -> GuardState {
    if !state.lock_held().unwrap_or(false) {
        return GuardState::Gone;
    }
    match record
        .guard_pid
        .and_then(|pid| process_of(pid, "__guard", &record.id))
    {
        Some(GuardState::Stopped) => GuardState::Stopped,
        _ => GuardState::Watching,
    }
}

/// SIGKILL the guard of `record` if `pid` is still that guard (a stopped one
/// dies too: SIGKILL needs no SIGCONT). Returns whether it sent the signal.
pub fn kill_guard(record: &Record) -> bool {
    let Some(pid) = record.guard_pid else {
        return false;
    };
    match process_of(pid, "__guard", &record.id) {
        Some(GuardState::Watching | GuardState::Stopped) => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .is_ok(),
        _ => false,
    }
}
