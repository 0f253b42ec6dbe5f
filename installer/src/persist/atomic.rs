//! Atomic file replacement inside a root directory, openat-style.
//!
//! Every path is walked from a file descriptor of the root one component at a time
//! with `O_NOFOLLOW`, so a symlink anywhere below the root (a directory or the file
//! itself) is refused instead of followed, and nothing can lead a write out of the
//! root. A write is staged as a temp file in the target's own directory (created
//! `O_EXCL | O_NOFOLLOW`, mode set, fsynced), the previous contents are staged as a
//! backup the same way, and only `commit` renames them into place and fsyncs the
//! directory. A staged file that is dropped uncommitted is unlinked.
//!
//! `write_file` is the same machinery for one file in a plain directory (render
//! `--out-dir`, init, and any caller that writes root-only state): the directory the
//! caller named is opened once, the file is staged in it and renamed (or, with
//! `Existing::Refuse`, hard-linked, which never replaces) into place.
//!
//! It refuses `..` in paths, symlinks, and anything but regular files.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, fsync, linkat, unlinkat};

use super::PersistError;

/// The suffix of the backup kept next to a replaced file.
pub const BACKUP_SUFFIX: &str = ".portcullis.bak";

/// A root directory held open by a descriptor.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

/// A regular file's contents and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub contents: String,
    pub mode: u32,
}

fn io(e: Errno) -> std::io::Error {
    std::io::Error::from(e)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

/// The normal components of an absolute in-root path; `..` is refused.
fn components(path: &Path) -> Result<Vec<OsString>, PersistError> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n.to_owned()),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(PersistError::Edit {
                    path: path.to_owned(),
                    message: "`..` is not allowed in an installed path".into(),
                });
            }
        }
    }
    if out.is_empty() {
        return Err(PersistError::NotAFile {
            path: path.to_owned(),
        });
    }
    Ok(out)
}

impl Root {
    /// Open `path` as the root. The root itself may be reached through a symlink
    /// (the caller named it); nothing below it may.
    pub fn open(path: &Path) -> Result<Root, PersistError> {
        let fd = openat(
            nix::fcntl::AT_FDCWD,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| PersistError::Root {
            path: path.to_owned(),
            source: io(e),
        })?;
        Ok(Root {
            fd,
            path: path.to_owned(),
        })
    }

    /// Walk to the directory holding `path`. `create` makes missing directories
    /// (0755, as distros ship them); otherwise a missing one gives `None`.
    fn parent(
        &self,
        path: &Path,
        create: bool,
    ) -> Result<Option<(OwnedFd, OsString)>, PersistError> {
        let parts = components(path)?;
        let (name, dirs) = parts.split_last().expect("components is never empty");
        let mut dir = self.fd.try_clone().map_err(|source| PersistError::Root {
            path: self.path.clone(),
            source,
        })?;
        let mut so_far = PathBuf::from("/");
        for d in dirs {
            so_far.push(d);
            let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
            let next = match openat(dir.as_fd(), d.as_os_str(), flags, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    mkdirat(dir.as_fd(), d.as_os_str(), Mode::from_bits_truncate(0o755)).map_err(
                        |e| PersistError::Write {
                            path: so_far.clone(),
                            source: io(e),
                        },
                    )?;
                    openat(dir.as_fd(), d.as_os_str(), flags, Mode::empty()).map_err(|e| {
                        PersistError::Write {
                            path: so_far.clone(),
                            source: io(e),
                        }
                    })?
                }
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    return Err(self.not_followed(dir.as_fd(), d, &so_far));
                }
                Err(e) => {
                    return Err(PersistError::Read {
                        path: so_far,
                        source: io(e),
                    });
                }
            };
            dir = next;
        }
        Ok(Some((dir, name.clone())))
    }

    /// Why a component could not be walked: a symlink, or not a directory.
    fn not_followed(&self, dir: impl AsFd, name: &OsString, path: &Path) -> PersistError {
        match fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if kind(&st) == SFlag::S_IFLNK => PersistError::Symlink {
                path: path.to_owned(),
            },
            _ => PersistError::NotAFile {
                path: path.to_owned(),
            },
        }
    }

    /// The regular file at `path` (inside the root), or `None` when it (or its
    /// directory) does not exist. A symlink is an error, never followed.
    pub fn read(&self, path: &Path) -> Result<Option<Current>, PersistError> {
        let Some((dir, name)) = self.parent(path, false)? else {
            return Ok(None);
        };
        let st = match fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => {
                return Err(PersistError::Read {
                    path: path.to_owned(),
                    source: io(e),
                });
            }
        };
        match kind(&st) {
            SFlag::S_IFREG => {}
            SFlag::S_IFLNK => {
                return Err(PersistError::Symlink {
                    path: path.to_owned(),
                });
            }
            _ => {
                return Err(PersistError::NotAFile {
                    path: path.to_owned(),
                });
            }
        }
        let read_err = |source: std::io::Error| PersistError::Read {
            path: path.to_owned(),
            source,
        };
        let fd = openat(
            dir.as_fd(),
            name.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| read_err(io(e)))?;
        let mut f = File::from(fd);
        let mode = f.metadata().map_err(read_err)?.permissions().mode() & 0o7777;
        let mut contents = String::new();
        f.read_to_string(&mut contents).map_err(read_err)?;
        Ok(Some(Current { contents, mode }))
    }

    /// Stage `contents` for `path` with `mode`; when `backup` is set, also stage the
    /// current file's contents as `NAME.portcullis.bak` (same mode). Nothing visible
    /// changes until `Staged::commit`.
    pub fn stage(
        &self,
        path: &Path,
        contents: &[u8],
        mode: u32,
        backup: bool,
    ) -> Result<Staged, PersistError> {
        self.stage_as(path, contents, mode, backup.then_some(BACKUP_SUFFIX))
    }

    /// `stage`, with the backup (if any) named `NAME` + `backup_suffix`.
    pub fn stage_as(
        &self,
        path: &Path,
        contents: &[u8],
        mode: u32,
        backup_suffix: Option<&str>,
    ) -> Result<Staged, PersistError> {
        let (dir, name) = self
            .parent(path, true)?
            .expect("create makes the directories");
        let old = match backup_suffix {
            Some(_) => self.read(path)?,
            None => None,
        };
        let mut staged = Staged {
            dir,
            path: path.to_owned(),
            name: name.clone(),
            tmp: tmp_name(&name, ""),
            backup: None,
            committed: false,
            keep: false,
        };
        write_new(&staged.dir, &staged.tmp, contents, mode).map_err(|source| {
            PersistError::Write {
                path: path.to_owned(),
                source,
            }
        })?;
        if let (Some(old), Some(suffix)) = (old, backup_suffix) {
            let bak_tmp = tmp_name(&name, suffix);
            let mut bak_name = name.clone();
            bak_name.push(suffix);
            // Set before writing so a failed write is cleaned up by Drop too.
            staged.backup = Some((bak_tmp.clone(), bak_name));
            write_new(&staged.dir, &bak_tmp, old.contents.as_bytes(), mode).map_err(|source| {
                PersistError::Write {
                    path: backup_path(path),
                    source,
                }
            })?;
        }
        Ok(staged)
    }

    /// Open (creating it 0600, and its directories) the lock file at `path` and
    /// take its exclusive flock, waiting for it.
    pub fn lock(&self, path: &Path) -> Result<nix::fcntl::Flock<File>, PersistError> {
        let (dir, name) = self
            .parent(path, true)?
            .expect("create makes the directories");
        let err = |source: std::io::Error| PersistError::Write {
            path: path.to_owned(),
            source,
        };
        let fd = openat(
            dir.as_fd(),
            name.as_os_str(),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| err(io(e)))?;
        nix::fcntl::Flock::lock(File::from(fd), nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| err(io(e)))
    }

    /// Rename `from` to `to` inside the directory `dir` (in the root) and fsync
    /// it. `Ok(false)` when `from` is not there (already renamed).
    pub fn rename_in(&self, dir: &Path, from: &OsStr, to: &OsStr) -> Result<bool, PersistError> {
        let Some((fd, _)) = self.parent(&dir.join(from), false)? else {
            return Ok(false);
        };
        let err = |e: Errno| PersistError::Write {
            path: dir.join(to),
            source: io(e),
        };
        match renameat(fd.as_fd(), from, fd.as_fd(), to) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Ok(false),
            Err(e) => return Err(err(e)),
        }
        fsync(fd.as_fd()).map_err(err)?;
        Ok(true)
    }

    /// Remove the file at `path` (in the root) if it is there, and fsync its
    /// directory.
    pub fn remove(&self, path: &Path) -> Result<(), PersistError> {
        let Some((fd, name)) = self.parent(path, false)? else {
            return Ok(());
        };
        let err = |e: Errno| PersistError::Write {
            path: path.to_owned(),
            source: io(e),
        };
        match unlinkat(fd.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => fsync(fd.as_fd()).map_err(err),
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Remove the temp files in `dir` (in the root) left by writers that are
    /// dead (their pid is gone from /proc); returns their paths. Does nothing
    /// without a /proc to tell the living from the dead.
    pub fn sweep_dead_temps(&self, dir: &Path) -> Result<Vec<PathBuf>, PersistError> {
        if !Path::new("/proc/self").exists() {
            return Ok(vec![]);
        }
        let Some((fd, _)) = self.parent(&dir.join("x"), false)? else {
            return Ok(vec![]);
        };
        // Names only, read through the root's path; the unlink goes through the
        // descriptor walked with O_NOFOLLOW.
        let host = self.path.join(dir.strip_prefix("/").unwrap_or(dir));
        let Ok(entries) = std::fs::read_dir(&host) else {
            return Ok(vec![]);
        };
        let mut removed = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(pid) = temp_pid(&name) else { continue };
            if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
                continue;
            }
            match unlinkat(fd.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) => removed.push(dir.join(&name)),
                Err(Errno::ENOENT) => {}
                Err(e) => {
                    return Err(PersistError::Write {
                        path: dir.join(&name),
                        source: io(e),
                    });
                }
            }
        }
        if !removed.is_empty() {
            fsync(fd.as_fd()).map_err(|e| PersistError::Write {
                path: dir.to_owned(),
                source: io(e),
            })?;
        }
        Ok(removed)
    }
}

/// The pid in a temp name `.NAME[SUFFIX].PID.portcullis-tmp`.
fn temp_pid(name: &OsStr) -> Option<u32> {
    let s = name.to_str()?;
    let rest = s.strip_suffix(".portcullis-tmp")?;
    rest.rsplit('.').next()?.parse().ok()
}

/// How `write_file` treats whatever is already at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Rename over it. A symlink there is replaced itself, never written through.
    Replace,
    /// Fail with `PersistError::Exists` when anything (a file, a symlink, even a
    /// dangling one) is there; nothing is changed.
    Refuse,
}

/// Write `path` atomically with `mode` (exactly, regardless of the umask): a temp
/// file in the same directory created `O_EXCL | O_NOFOLLOW`, fsync, rename (or link
/// for `Existing::Refuse`), fsync of the directory. Readers see the old file or the
/// new one, never half of either. The directory must exist; it may be named through
/// a symlink (the caller named it), the file itself never is. No backup is kept.
///
/// `path` is any path (relative to the working directory or absolute), unlike
/// `Root::stage`, whose paths are inside a root.
pub fn write_file(
    path: &Path,
    contents: &[u8],
    mode: u32,
    existing: Existing,
) -> Result<(), PersistError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Some(name) = path.file_name() else {
        return Err(PersistError::NotAFile {
            path: path.to_owned(),
        });
    };
    let root = Root::open(dir)?;
    let mut staged = root.stage(Path::new(name), contents, mode, false)?;
    // Errors name the caller's path, not the in-directory one.
    staged.path = path.to_owned();
    match existing {
        Existing::Replace => staged.commit().map(|_| ()),
        Existing::Refuse => staged.commit_new(),
    }
}

/// `/etc/iptables/rules.v4` -> `/etc/iptables/rules.v4.portcullis.bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(BACKUP_SUFFIX);
    PathBuf::from(s)
}

/// `.NAME[SUFFIX].PID.portcullis-tmp`: hidden and recognisably ours (`is_temp_name`).
fn tmp_name(name: &OsString, suffix: &str) -> OsString {
    let mut s = OsString::from(".");
    s.push(name);
    s.push(suffix);
    // The pid keeps two concurrent writers of one file from renaming each other's
    // half-written temp into place.
    s.push(format!(".{}.portcullis-tmp", std::process::id()));
    s
}

/// Create `name` in `dir` (`O_EXCL | O_NOFOLLOW`, removing a leftover temp of ours
/// first), set `mode` regardless of the umask, write, fsync.
fn write_new(dir: &OwnedFd, name: &OsString, contents: &[u8], mode: u32) -> std::io::Result<()> {
    match unlinkat(dir.as_fd(), name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(io(e)),
    }
    let fd = openat(
        dir.as_fd(),
        name.as_os_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(mode & 0o700),
    )
    .map_err(io)?;
    fchmod(fd.as_fd(), Mode::from_bits_truncate(mode)).map_err(io)?;
    let mut f = File::from(fd);
    f.write_all(contents)?;
    f.sync_all()
}

/// A file written next to its target, not yet renamed over it.
#[must_use = "a staged file is unlinked unless committed"]
#[derive(Debug)]
pub struct Staged {
    dir: OwnedFd,
    path: PathBuf,
    name: OsString,
    tmp: OsString,
    /// (staged temp, final name) of the backup.
    backup: Option<(OsString, OsString)>,
    committed: bool,
    /// Journaled: a later run renames the temps, so Drop must leave them.
    keep: bool,
}

impl Staged {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The renames `commit` does, in order: (temp, final name), inside the
    /// directory of `path`.
    pub fn renames(&self) -> Vec<(OsString, OsString)> {
        let mut out: Vec<(OsString, OsString)> = self.backup.iter().cloned().collect();
        out.push((self.tmp.clone(), self.name.clone()));
        out
    }

    /// Leave the staged temps in place if this is dropped uncommitted: a journal
    /// names them, and the next run completes the renames.
    pub fn keep_on_drop(&mut self) {
        self.keep = true;
    }

    /// Rename the backup and the file into place, then fsync the directory so the
    /// renames survive a crash. Returns the backup's path when one was kept.
    pub fn commit(mut self) -> Result<Option<PathBuf>, PersistError> {
        let err = |path: PathBuf, e: Errno| PersistError::Write {
            path,
            source: io(e),
        };
        let mut kept = None;
        if let Some((tmp, bak)) = &self.backup {
            renameat(
                self.dir.as_fd(),
                tmp.as_os_str(),
                self.dir.as_fd(),
                bak.as_os_str(),
            )
            .map_err(|e| err(self.path.with_file_name(bak), e))?;
            kept = Some(self.path.with_file_name(bak));
        }
        renameat(
            self.dir.as_fd(),
            self.tmp.as_os_str(),
            self.dir.as_fd(),
            self.name.as_os_str(),
        )
        .map_err(|e| err(self.path.clone(), e))?;
        self.committed = true;
        fsync(self.dir.as_fd()).map_err(|e| err(self.path.clone(), e))?;
        Ok(kept)
    }

    /// Put the file in place only if nothing is at its name: a hard link never
    /// replaces, so the check and the write are one step. Staged without a backup.
    pub fn commit_new(mut self) -> Result<(), PersistError> {
        debug_assert!(
            self.backup.is_none(),
            "commit_new replaces nothing to back up"
        );
        match linkat(
            self.dir.as_fd(),
            self.tmp.as_os_str(),
            self.dir.as_fd(),
            self.name.as_os_str(),
            AtFlags::empty(),
        ) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                return Err(PersistError::Exists {
                    path: self.path.clone(),
                });
            }
            Err(e) => {
                return Err(PersistError::Write {
                    path: self.path.clone(),
                    source: io(e),
                });
            }
        }
        // The name now holds the file; drop the temp link before the directory
        // fsync so neither survives a crash half-done.
        self.committed = true;
        let _ = unlinkat(
            self.dir.as_fd(),
            self.tmp.as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        );
        fsync(self.dir.as_fd()).map_err(|e| PersistError::Write {
            path: self.path.clone(),
            source: io(e),
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if self.committed || self.keep {
            return;
        }
        let _ = unlinkat(
            self.dir.as_fd(),
            self.tmp.as_os_str(),
            UnlinkatFlags::NoRemoveDir,
        );
        if let Some((tmp, _)) = &self.backup {
            let _ = unlinkat(
                self.dir.as_fd(),
                tmp.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// Whether `name` looks like one of our temp files (for tests and cleanup checks).
pub fn is_temp_name(name: &std::ffi::OsStr) -> bool {
    name.as_bytes().ends_with(b".portcullis-tmp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let r = Root::open(dir.path()).unwrap();
        (dir, r)
    }

    #[test]
    fn stage_commit_creates_dirs_sets_mode_and_keeps_a_backup() {
        let (dir, r) = root();
        let p = Path::new("/etc/iptables/rules.v4");
        assert_eq!(r.read(p).unwrap(), None);
        assert_eq!(
            r.stage(p, b"one\n", 0o640, false)
                .unwrap()
                .commit()
                .unwrap(),
            None
        );
        assert_eq!(
            r.read(p).unwrap(),
            Some(Current {
                contents: "one\n".into(),
                mode: 0o640
            })
        );
        let bak = r.stage(p, b"two\n", 0o640, true).unwrap().commit().unwrap();
        assert_eq!(
            bak,
            Some(PathBuf::from("/etc/iptables/rules.v4.portcullis.bak"))
        );
        let host = dir.path().join("etc/iptables");
        assert_eq!(
            std::fs::read_to_string(host.join("rules.v4.portcullis.bak")).unwrap(),
            "one\n"
        );
        assert_eq!(
            std::fs::read_to_string(host.join("rules.v4")).unwrap(),
            "two\n"
        );
        assert_eq!(
            std::fs::read_dir(&host).unwrap().count(),
            2,
            "no temp files left"
        );
    }

    #[test]
    fn dropped_stage_leaves_nothing() {
        let (dir, r) = root();
        let staged = r.stage(Path::new("/a/b"), b"x", 0o600, false).unwrap();
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path().join("a")).unwrap().count(), 0);
    }

    #[test]
    fn symlinks_are_refused_not_followed() {
        let (dir, r) = root();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("etc")).unwrap();
        let p = Path::new("/etc/rules");
        assert!(matches!(r.read(p), Err(PersistError::Symlink { .. })));
        assert!(matches!(
            r.stage(p, b"x", 0o600, false),
            Err(PersistError::Symlink { .. })
        ));
        std::fs::create_dir(dir.path().join("var")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("f"), dir.path().join("var/f")).unwrap();
        assert!(matches!(
            r.read(Path::new("/var/f")),
            Err(PersistError::Symlink { .. })
        ));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn write_file_replaces_or_refuses_and_never_follows_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("policy.toml");
        write_file(&p, b"one", 0o600, Existing::Refuse).unwrap();
        assert!(matches!(
            write_file(&p, b"two", 0o600, Existing::Refuse),
            Err(PersistError::Exists { .. })
        ));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "one");
        write_file(&p, b"two", 0o640, Existing::Replace).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        // A symlink, even a dangling one, is refused or replaced itself.
        let outside = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(outside.path().join("f"), &link).unwrap();
        assert!(matches!(
            write_file(&link, b"x", 0o600, Existing::Refuse),
            Err(PersistError::Exists { .. })
        ));
        write_file(&link, b"x", 0o600, Existing::Replace).unwrap();
        assert!(!link.symlink_metadata().unwrap().is_symlink());
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            !names.iter().any(|n| is_temp_name(n)),
            "temp left: {names:?}"
        );
        assert!(matches!(
            write_file(
                &dir.path().join("missing/f"),
                b"x",
                0o600,
                Existing::Replace
            ),
            Err(PersistError::Root { .. })
        ));
    }

    #[test]
    fn parent_components_are_refused() {
        let (_dir, r) = root();
        assert!(r.read(Path::new("/etc/../../x")).is_err());
    }
}
