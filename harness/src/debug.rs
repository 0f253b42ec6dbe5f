//! Debug mode: every lab namespace also bind-mounted under /run/netns
//! (`pc-<pid>-<seq>-<host>`), so `ip netns exec` reaches a paused lab, and the
//! sweep that removes mounts left by dead processes.
//!
//! A host adds its mount when it starts ([`crate::Host::with_debug`],
//! [`crate::LabOptions::debug`]) and removes it on teardown; a SIGKILLed run
//! cannot, so [`sweep`] removes the mounts whose pid is dead.
//!
//! Refuses: mounting over anything it did not make (the mount point is created
//! with `create_new`, which refuses an existing path or symlink), and sweeping a
//! mount of a live process or a name it does not make.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::LabError;
use crate::sys;

/// Where debug mounts live: the directory `ip netns` reads.
pub const NETNS_DIR: &str = "/run/netns";
/// The prefix of every debug mount this harness makes (`pc-<pid>-<seq>-<host>`).
pub const MOUNT_PREFIX: &str = "pc-";
/// Set to `1` to bind-mount every lab namespace under /run/netns.
pub const DEBUG_ENV: &str = "PORTCULLIS_LAB_DEBUG";

/// Whether [`DEBUG_ENV`] asks for debug mounts.
pub fn debug_from_env() -> bool {
    std::env::var(DEBUG_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

static MOUNT_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh `<pid>-<seq>` tag for a lab's debug mounts.
pub(crate) fn next_mount_tag() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        MOUNT_SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Where the debug mount of host `host` of the lab tagged `tag` lives.
pub(crate) fn mount_path(tag: &str, host: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(format!("{MOUNT_PREFIX}{tag}-{host}"))
}

/// Bind-mount the namespace held by `fd` on `path` (created here, never reused).
pub(crate) fn add_mount(fd: BorrowedFd<'_>, path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_DIR)?;
    // create_new refuses an existing path, a symlink included: never mount over
    // something we did not make.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    if let Err(e) = sys::bind_netns(fd, path) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

/// Unmount and remove a debug mount; one already gone is not an error.
pub(crate) fn remove_mount(path: &Path) -> std::io::Result<()> {
    sys::unmount(path)?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Remove leftover debug mounts (`/run/netns/pc-<pid>-...`) whose process is dead.
/// Mounts of live processes (this one included) stay. Returns the paths removed;
/// every failure is reported and the sweep goes on.
pub fn sweep() -> Result<Vec<PathBuf>, Vec<LabError>> {
    let mut removed = Vec::new();
    let mut errors = Vec::new();
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => {
            return Err(vec![LabError::Sys {
                host: "sweep".into(),
                what: format!("read {NETNS_DIR}"),
                source: e,
            }]);
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = mount_owner(&name) else {
            continue;
        };
        if pid == std::process::id() || sys::alive(pid) {
            continue;
        }
        let path = entry.path();
        match remove_mount(&path) {
            Ok(()) => removed.push(path),
            Err(e) => errors.push(LabError::Sys {
                host: "sweep".into(),
                what: format!("remove {}", path.display()),
                source: e,
            }),
        }
    }
    if errors.is_empty() {
        Ok(removed)
    } else {
        Err(errors)
    }
}

/// The pid in a debug mount's name (`pc-<pid>-<seq>-<host>`); `None` for names
/// this harness does not make (`pc-bench-...`, anything else).
pub fn mount_owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(MOUNT_PREFIX)?;
    let (pid, rest) = rest.split_once('-')?;
    let (seq, host) = rest.split_once('-')?;
    if host.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) || seq.is_empty() {
        return None;
    }
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_names_name_their_owner() {
        assert_eq!(mount_owner("pc-1234-0-target"), Some(1234));
        assert_eq!(mount_owner("pc-1234-7-web"), Some(1234));
        assert_eq!(mount_owner("pc-bench-1-target"), None);
        assert_eq!(mount_owner("pc-1234-x-target"), None);
        assert_eq!(mount_owner("pc-1234-0-"), None);
        assert_eq!(mount_owner("other"), None);
    }
}
