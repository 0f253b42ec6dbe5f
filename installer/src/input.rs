//! Reading a file a user names (a policy, a rules file) or a state file: regular
//! files only, and no more than a cap.
//!
//! It opens with `O_NONBLOCK | O_NOCTTY`, so a FIFO cannot block the open, then
//! refuses anything fstat does not call a regular file (a FIFO, `/dev/zero`, a
//! directory) before reading a byte, and reads at most the cap plus one byte, so
//! an endless or huge input is an error instead of a hang or the OOM killer. It
//! also says whether users other than root (or the caller) could have written
//! the file.

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

/// The largest policy read: a policy is a page of TOML, so 4 MiB is generous.
pub const POLICY_MAX_BYTES: u64 = 4 << 20;
/// The largest restore file read (`verify --rules-v4`): hand-written rulesets
/// carry blocklists of many thousand lines.
pub const RULES_MAX_BYTES: u64 = 64 << 20;
/// The largest blocklist file read (`[[blocklist]] file`): FireHOL's and Spamhaus's
/// lists are a few MiB; a list of every routed prefix of a few countries fits.
pub const BLOCKLIST_MAX_BYTES: u64 = 128 << 20;
/// The largest state file read (a snapshot of a host's rules, with blocklists).
pub const STATE_MAX_BYTES: u64 = 64 << 20;

/// A file read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    pub text: String,
    /// Why users other than root or the caller could have written it, if they could.
    pub writable_by_others: Option<String>,
}

/// Read the regular file at `path`, at most `cap` bytes, as UTF-8. Errors are
/// `io::Error`s whose message says what to do. The path `-` is standard input:
/// asked for by name, so a pipe there is meant (the Ansible role feeds the
/// controller's policy that way), and still capped.
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Input> {
    if path == Path::new(STDIN) {
        return read_stream(std::io::stdin().lock(), cap);
    }
    read_opened(path, cap, 0)
}

/// The path that means standard input.
pub const STDIN: &str = "-";

/// At most `cap` bytes of `r`, as UTF-8; more is an error, not a hang on memory.
fn read_stream(r: impl std::io::Read, cap: u64) -> std::io::Result<Input> {
    let mut bytes = Vec::new();
    r.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(too_large(cap));
    }
    let text = String::from_utf8(bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(Input {
        text,
        writable_by_others: None,
    })
}

fn too_large(cap: u64) -> std::io::Error {
    std::io::Error::other(format!(
        "larger than {} MiB: this is not the file you meant",
        cap >> 20
    ))
}

/// As `read_capped`, never following a symlink at `path` itself.
pub fn read_capped_nofollow(path: &Path, cap: u64) -> std::io::Result<Input> {
    read_opened(path, cap, libc::O_NOFOLLOW)
}

fn read_opened(path: &Path, cap: u64, extra: libc::c_int) -> std::io::Result<Input> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | extra)
        .open(path)?;
    let meta = f.metadata()?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else if ft.is_dir() {
            "a directory"
        } else {
            "not a file"
        };
        return Err(std::io::Error::other(format!(
            "not a regular file ({kind}): name a regular file"
        )));
    }
    if meta.len() > cap {
        return Err(too_large(cap));
    }
    // The size can change under us: read_stream reads one byte past the cap at most.
    Ok(Input {
        writable_by_others: writable_by_others(&meta),
        ..read_stream(f, cap)?
    })
}

/// Why users other than root or the caller could write a file with `meta`.
pub fn writable_by_others(meta: &std::fs::Metadata) -> Option<String> {
    let euid = nix::unistd::geteuid().as_raw();
    let mode = meta.mode() & 0o7777;
    if meta.uid() != 0 && meta.uid() != euid {
        Some(format!("it is owned by uid {}", meta.uid()))
    } else if mode & 0o022 != 0 {
        Some(format!("its mode {mode:04o} lets other users write it"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn refuses_devices_fifos_and_oversized_files() {
        let err = read_capped(Path::new("/dev/zero"), 1024).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("f");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = read_capped(&fifo, 1024).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; 3 << 20]).unwrap();
        let err = read_capped(&big, 2 << 20).unwrap_err();
        assert!(err.to_string().contains("larger than 2 MiB"), "{err}");
        assert_eq!(read_capped(&big, 3 << 20).unwrap().text.len(), 3 << 20);
        let err = read_capped(dir.path(), 1024).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    #[test]
    fn names_a_file_others_could_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("p");
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(read_capped(&p, 10).unwrap().writable_by_others, None);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o664)).unwrap();
        let why = read_capped(&p, 10).unwrap().writable_by_others.unwrap();
        assert!(why.contains("0664"), "{why}");
    }
}
