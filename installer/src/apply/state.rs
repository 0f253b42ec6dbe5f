//! The state directory of a pending apply: the root-only directory, its lock, the
//! pending-apply record (JSON) and the files written next to it.
//!
//! Layout of `D` (default `/var/lib/portcullis`), every file 0600, the directory 0700:
//!
//! ```text
//! D/lock            flock'd by the guard for as long as it lives
//! D/pending.json    the record of the apply in progress (or just finished)
//! D/last.json       the record of the previous apply, once it has ended
//! D/snapshot.v4     iptables-save of the live rules before the apply
//! D/snapshot.v6     ip6tables-save of the same
//! D/snapshot.v4.sha256, D/snapshot.v6.sha256   their SHA-256 (`sha256sum` format)
//! D/applied.v4      the rendered rules that were applied (what confirm persists)
//! D/applied.v6      (absent when ipv6 is `untouched`)
//! D/policy.toml     the policy applied, re-rendered and persisted by confirm
//! D/guard.fifo      how confirm and rollback wake the guard at once
//! D/guard.log       the guard's and the watchdog's stdout and stderr
//! ```
//!
//! It refuses a state directory that is a symlink, not owned by the caller (root),
//! group- or world-writable, or that lies under a world-writable directory (such
//! as /tmp): a snapshot there could be swapped by another user before a rollback.
//! Files are written atomically (temp in the same directory, fsync, rename, fsync
//! of the directory) and never through a symlink.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/portcullis";

/// What went wrong with the state directory or a file in it.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "state dir {path} is unsafe: {why}; use a root-owned 0700 directory outside /tmp (default {DEFAULT_STATE_DIR})"
    )]
    Unsafe { path: PathBuf, why: String },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A failed atomic write; the persist error names the file.
    #[error(transparent)]
    Write(Box<crate::persist::PersistError>),
    #[error(
        "cannot read the record {path}: {source}; inspect it, or remove it if no apply is pending"
    )]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StateError + 'a {
    move |source| StateError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Where a pending apply stands. The guard is the only writer of the final states
/// while it lives; whoever holds the lock after it writes the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Snapshot taken, guard starting, rules not applied yet.
    Starting,
    /// Rules applied (or being applied), guard armed, waiting for confirm.
    Pending,
    /// Confirmed from a new session; the rules stay.
    Confirmed,
    /// The snapshot was restored (deadline, `portcullis rollback`, a failed apply).
    RolledBack,
    /// The rollback itself failed (or restored something other than the
    /// snapshot): loud, and retryable, since the record stays in `pending.json`
    /// until a `portcullis rollback` succeeds.
    RollbackFailed,
}

/// The same word as the JSON (`rolled_back`), so text and JSON agree.
impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Starting => "starting",
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::RolledBack => "rolled_back",
            Status::RollbackFailed => "rollback_failed",
        })
    }
}

impl Status {
    /// Whether the apply is over, one way or the other.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Status::Confirmed | Status::RolledBack | Status::RollbackFailed
        )
    }
}

/// The pending-apply record, `D/pending.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// A unique id of this apply (time and pid), checked by the guard.
    pub id: String,
    pub status: Status,
    /// Wall-clock times in milliseconds since the epoch (CLOCK_REALTIME); the guard
    /// turns the deadline into a monotonic one when it starts.
    pub started_unix_ms: u64,
    pub deadline_unix_ms: u64,
    pub timeout_secs: u64,
    /// `nft` or `legacy`.
    pub backend: String,
    /// The families applied (`ipv4`, and `ipv6` unless it is `untouched`).
    pub families: Vec<String>,
    /// The policy file applied, or `<embedded default>`.
    pub config: String,
    /// `SSH_CONNECTION` of the session that ran apply, if any: confirm must come
    /// from another one.
    pub ssh_connection: Option<String>,
    /// The session id (getsid) of the process that ran apply.
    pub session_id: i32,
    /// The guard's pid, once it runs.
    pub guard_pid: Option<i32>,
    /// Persist on confirm (false with `--no-persist`), and into which root.
    pub persist: bool,
    pub persist_root: String,
    /// What ended the apply and when, once it has ended.
    pub ended_unix_ms: Option<u64>,
    pub reason: Option<String>,
    /// What confirm persisted (mechanism and files), once it has.
    pub persisted: Option<String>,
    /// The deadline on CLOCK_BOOTTIME (milliseconds since boot, suspend
    /// included): what the guard, the watchdog, `confirm` and `status` measure
    /// the window with. Absent in records written before it existed.
    #[serde(default)]
    pub deadline_boot_ms: Option<u64>,
    /// The pid of the guard's watchdog (the second line of defence), once it runs.
    #[serde(default)]
    pub watchdog_pid: Option<i32>,
    /// The iptables binaries apply resolved (name -> path); the guard runs these
    /// and no others (`portcullis_netfilter::bins::pin`).
    #[serde(default)]
    pub binaries: std::collections::BTreeMap<String, String>,
}

impl Record {
    /// Pin the recorded binaries, so a rollback runs what applied.
    pub fn pin_binaries(&self) -> Result<(), portcullis_netfilter::bins::BinError> {
        for (name, path) in &self.binaries {
            portcullis_netfilter::bins::pin(name, Path::new(path))?;
        }
        Ok(())
    }
}

impl Record {
    /// Milliseconds until the deadline (negative once it has passed), on
    /// CLOCK_BOOTTIME when the record has that deadline, so every reader agrees
    /// with the guard whatever the wall clock does.
    pub fn remaining_ms(&self) -> i64 {
        match self.deadline_boot_ms {
            Some(d) => d as i64 - boottime_ms() as i64,
            None => self.deadline_unix_ms as i64 - now_unix_ms() as i64,
        }
    }
}

/// Milliseconds since boot, suspend included (CLOCK_BOOTTIME). Unlike
/// CLOCK_MONOTONIC it keeps counting while a VM or laptop is suspended, and
/// unlike CLOCK_REALTIME no one can step it.
pub fn boottime_ms() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1000 + t.tv_nsec() as u64 / 1_000_000)
        .unwrap_or(0)
}

/// Milliseconds since the epoch, from CLOCK_REALTIME.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A checked state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Open (creating it 0700 if missing) and check the state directory.
    pub fn open(path: &Path) -> Result<StateDir, StateError> {
        let unsafe_ = |why: String| StateError::Unsafe {
            path: path.to_owned(),
            why,
        };
        if !path.is_absolute() {
            return Err(unsafe_("not an absolute path".into()));
        }
        // Check the ancestors before creating anything, so a refused path leaves
        // no trace.
        let existing = path
            .ancestors()
            .skip(1)
            .find(|a| a.exists())
            .unwrap_or(Path::new("/"));
        check_ancestors(existing, &unsafe_)?;
        match std::fs::symlink_metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let parent = path.parent().unwrap_or(Path::new("/"));
                std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(path)
                    .map_err(io("cannot create", path))?;
            }
            Err(e) => return Err(io("cannot inspect", path)(e)),
        }
        let meta = std::fs::symlink_metadata(path).map_err(io("cannot inspect", path))?;
        if meta.file_type().is_symlink() {
            return Err(unsafe_("it is a symlink".into()));
        }
        if !meta.is_dir() {
            return Err(unsafe_("it is not a directory".into()));
        }
        let euid = nix::unistd::geteuid().as_raw();
        if meta.uid() != euid {
            return Err(unsafe_(format!(
                "owned by uid {}, not by uid {euid} (root)",
                meta.uid()
            )));
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o022 != 0 {
            return Err(unsafe_(format!(
                "mode {mode:04o} is group- or world-writable"
            )));
        }
        let canonical = path.canonicalize().map_err(io("cannot resolve", path))?;
        check_ancestors(canonical.parent().unwrap_or(Path::new("/")), &unsafe_)?;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
                .map_err(io("cannot chmod 0700", path))?;
        }
        Ok(StateDir { path: canonical })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Write `name` atomically, 0600, with the one atomic writer
    /// ([`crate::persist::atomic::write_file`]): temp file in this directory,
    /// fsync, rename, fsync of the directory. Never follows a symlink.
    pub fn write_atomic(&self, name: &str, data: &[u8]) -> Result<(), StateError> {
        use crate::persist::atomic::{Existing, write_file};
        write_file(&self.file(name), data, 0o600, Existing::Replace)
            .map_err(|e| StateError::Write(Box::new(e)))
    }

    fn sync_dir(&self) -> Result<(), StateError> {
        File::open(&self.path)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot fsync", &self.path))
    }

    /// Read `name`, refusing a symlink, anything but a regular file and a file
    /// over [`crate::input::STATE_MAX_BYTES`], warning when other users could
    /// have written it; `None` when it does not exist.
    pub fn read(&self, name: &str) -> Result<Option<String>, StateError> {
        let path = self.file(name);
        let input = match crate::input::read_capped_nofollow(&path, crate::input::STATE_MAX_BYTES) {
            Ok(i) => i,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("cannot read", &path)(e)),
        };
        if let Some(why) = input.writable_by_others {
            // Refusing here could stop a guard from restoring its snapshot:
            // say so (once per file: apply's wait reads the records every 20
            // ms), and let apply refuse up front (`writable_by_others`).
            static WARNED: std::sync::Mutex<BTreeSet<PathBuf>> =
                std::sync::Mutex::new(BTreeSet::new());
            let first = WARNED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(path.clone());
            if first {
                eprintln!(
                    "portcullis: warning: state file {} is writable by other users ({why})",
                    path.display()
                );
            }
        }
        Ok(Some(input.text))
    }

    /// The files in this directory other users could have written (mode or
    /// owner), each with why; apply refuses them unless `--force`.
    pub fn writable_by_others(&self) -> Result<Vec<String>, StateError> {
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&self.path).map_err(io("cannot list", &self.path))?;
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            if let Some(why) = crate::input::writable_by_others(&meta) {
                out.push(format!("{} ({why})", e.path().display()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Remove `name` if it exists.
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let path = self.file(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot remove", &path)(e)),
        }
    }

    /// The pending-apply record, if any.
    pub fn record(&self) -> Result<Option<Record>, StateError> {
        self.read_record(PENDING)
    }

    /// The record of the previous, finished apply, if any.
    pub fn last_record(&self) -> Result<Option<Record>, StateError> {
        self.read_record(LAST)
    }

    fn read_record(&self, name: &str) -> Result<Option<Record>, StateError> {
        match self.read(name)? {
            None => Ok(None),
            Some(text) => {
                serde_json::from_str(&text)
                    .map(Some)
                    .map_err(|source| StateError::Corrupt {
                        path: self.file(name),
                        source,
                    })
            }
        }
    }

    /// Write the pending-apply record.
    pub fn write_record(&self, record: &Record) -> Result<(), StateError> {
        let mut text = serde_json::to_string_pretty(record).expect("a record serializes");
        text.push('\n');
        self.write_atomic(PENDING, text.as_bytes())
    }

    /// Move a finished record to `last.json`, so a new apply may start.
    pub fn retire_record(&self) -> Result<(), StateError> {
        let from = self.file(PENDING);
        let to = self.file(LAST);
        match std::fs::rename(&from, &to) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot rename", &from)(e)),
        }
    }

    /// Open the lock file (0600, no symlink), unlocked.
    pub fn lock_file(&self) -> Result<File, StateError> {
        let path = self.file(LOCK);
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io("cannot open", &path))
    }

    /// Take the lock without waiting; `None` when someone (the guard) holds it.
    pub fn try_lock(&self) -> Result<Option<Lock>, StateError> {
        use nix::fcntl::{Flock, FlockArg};
        let file = self.lock_file()?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(Lock(l))),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(io("cannot flock", &self.file(LOCK))(e.into())),
        }
    }

    /// Take the lock, waiting for it.
    pub fn lock(&self) -> Result<Lock, StateError> {
        use nix::fcntl::{Flock, FlockArg};
        let file = self.lock_file()?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map(Lock)
            .map_err(|(_, e)| io("cannot flock", &self.file(LOCK))(e.into()))
    }

    /// Whether the lock is held by someone else right now (the guard lives).
    pub fn lock_held(&self) -> Result<bool, StateError> {
        Ok(self.try_lock()?.is_none())
    }
}

/// Refuse `dir` or any of its ancestors being world-writable (/tmp, /var/tmp,
/// /dev/shm: another user could rename the state dir away and plant their own
/// snapshot) or owned by someone other than root or the caller.
fn check_ancestors(dir: &Path, unsafe_: &dyn Fn(String) -> StateError) -> Result<(), StateError> {
    let euid = nix::unistd::geteuid().as_raw();
    let canonical = dir.canonicalize().map_err(io("cannot resolve", dir))?;
    for ancestor in canonical.ancestors() {
        let m = std::fs::metadata(ancestor).map_err(io("cannot inspect", ancestor))?;
        if m.mode() & 0o002 != 0 {
            return Err(unsafe_(format!(
                "it lies under the world-writable {}",
                ancestor.display()
            )));
        }
        if m.uid() != 0 && m.uid() != euid {
            return Err(unsafe_(format!(
                "it lies under {}, owned by uid {}",
                ancestor.display(),
                m.uid()
            )));
        }
    }
    Ok(())
}

/// The held lock of the state directory; released on drop.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<File>);

pub const LOCK: &str = "lock";
pub const PENDING: &str = "pending.json";
pub const LAST: &str = "last.json";
pub const GUARD_FIFO: &str = "guard.fifo";
pub const POLICY: &str = "policy.toml";
pub const GUARD_LOG: &str = "guard.log";

/// The snapshot file of a family (`snapshot.v4`).
pub fn snapshot_name(family: portcullis_netfilter::Family) -> &'static str {
    match family {
        portcullis_netfilter::Family::V4 => "snapshot.v4",
        portcullis_netfilter::Family::V6 => "snapshot.v6",
    }
}

/// The applied-rules file of a family (`applied.v4`).
pub fn applied_name(family: portcullis_netfilter::Family) -> &'static str {
    match family {
        portcullis_netfilter::Family::V4 => "applied.v4",
        portcullis_netfilter::Family::V6 => "applied.v6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_state_dir_under_tmp() {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-state-test")
            .tempdir_in("/tmp")
            .unwrap();
        let err = StateDir::open(&dir.path().join("state")).unwrap_err();
        assert!(
            err.to_string().contains("world-writable /tmp"),
            "unexpected: {err}"
        );
    }

    #[test]
    fn refuses_a_relative_state_dir() {
        let err = StateDir::open(Path::new("state")).unwrap_err();
        assert!(err.to_string().contains("absolute"), "unexpected: {err}");
    }

    #[test]
    fn record_round_trips() {
        let r = Record {
            id: "1-2".into(),
            status: Status::Pending,
            started_unix_ms: 1,
            deadline_unix_ms: 2,
            timeout_secs: 30,
            backend: "nft".into(),
            families: vec!["ipv4".into()],
            config: "x".into(),
            ssh_connection: Some("192.0.2.10 5 192.0.2.1 22".into()),
            session_id: 7,
            guard_pid: None,
            persist: true,
            persist_root: "/".into(),
            ended_unix_ms: None,
            reason: None,
            persisted: None,
            binaries: Default::default(),
            deadline_boot_ms: Some(3),
            watchdog_pid: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
        assert!(text.contains("\"status\":\"pending\""));
    }
}
