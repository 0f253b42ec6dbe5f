//! One install as one transaction on a root: a lock so installs serialise, and a
//! journal so the files of one install (the v4/v6 pair, a drop-in) are all
//! renamed into place or none is, even across a crash.
//!
//! `lock` takes an exclusive flock on `ROOT/etc/.portcullis-install.lock`.
//! `commit` writes the journal (`ROOT/etc/.portcullis-install.journal`: every
//! rename still to do) only once every file is staged and fsynced, then renames,
//! then removes the journal. `recover`, which every install runs under the lock
//! before it reads anything, completes the renames of a journal left by a crash:
//! staged temps that are gone were renamed already. So after any crash the next
//! run finds either the old files (no journal yet) or completes the new ones.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt as _, OsStringExt as _};
use std::path::{Path, PathBuf};

use super::PersistError;
use super::atomic::{Root, Staged};

/// The lock every writing install holds on its root.
pub const LOCK: &str = "/etc/.portcullis-install.lock";
/// The renames of an install being committed.
pub const JOURNAL: &str = "/etc/.portcullis-install.journal";

/// One rename: in `dir` (in the root), `from` becomes `to`. Names are bytes
/// (hex in the journal), so any file name round-trips.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Rename {
    dir: String,
    from: String,
    to: String,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The held install lock of a root; released on drop.
#[derive(Debug)]
pub struct Lock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Take the install lock of `root`, waiting while another install holds it.
pub fn lock(root: &Root) -> Result<Lock, PersistError> {
    root.lock(Path::new(LOCK)).map(Lock)
}

fn corrupt(message: String) -> PersistError {
    PersistError::Edit {
        path: PathBuf::from(JOURNAL),
        message: format!(
            "{message}; an install was interrupted and its journal cannot be read: inspect it and remove it"
        ),
    }
}

/// Complete the install a crash interrupted, if its journal is there. Returns
/// the files it put in place.
pub fn recover(root: &Root) -> Result<Vec<PathBuf>, PersistError> {
    let Some(journal) = root.read(Path::new(JOURNAL))? else {
        return Ok(vec![]);
    };
    let renames: Vec<Rename> = serde_json::from_str(&journal.contents)
        .map_err(|e| corrupt(format!("not a journal ({e})")))?;
    let mut done = Vec::new();
    for r in &renames {
        let (Some(dir), Some(from), Some(to)) = (unhex(&r.dir), unhex(&r.from), unhex(&r.to))
        else {
            return Err(corrupt("a name is not hex".into()));
        };
        let dir = PathBuf::from(OsString::from_vec(dir));
        let (from, to) = (OsString::from_vec(from), OsString::from_vec(to));
        if root.rename_in(&dir, &from, &to)? {
            done.push(dir.join(to));
        }
    }
    root.remove(Path::new(JOURNAL))?;
    Ok(done)
}

/// Put every staged file in place as one step that a crash cannot split: the
/// journal first, then the renames, then the journal goes. Returns each file's
/// path and its backup, when one was kept.
pub fn commit(
    root: &Root,
    mut staged: Vec<Staged>,
) -> Result<Vec<(PathBuf, Option<PathBuf>)>, PersistError> {
    let mut renames = Vec::new();
    for s in &staged {
        let dir = s.path().parent().unwrap_or(Path::new("/"));
        for (from, to) in s.renames() {
            renames.push(Rename {
                dir: hex(dir.as_os_str().as_bytes()),
                from: hex(from.as_bytes()),
                to: hex(to.as_bytes()),
            });
        }
    }
    let text = serde_json::to_string(&renames).expect("renames serialize");
    root.stage(Path::new(JOURNAL), text.as_bytes(), 0o600, false)?
        .commit()?;
    // From here the journal owns the temps: an error below leaves them for the
    // next run to complete, never half of them.
    for s in &mut staged {
        s.keep_on_drop();
    }
    let mut out = Vec::new();
    for s in staged {
        let path = s.path().to_owned();
        out.push((path, s.commit()?));
    }
    root.remove(Path::new(JOURNAL))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_left_by_a_crash_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let _l = lock(&root).unwrap();
        let v4 = Path::new("/etc/iptables/rules.v4");
        let v6 = Path::new("/etc/iptables/rules.v6");
        for p in [v4, v6] {
            root.stage(p, b"old\n", 0o640, false)
                .unwrap()
                .commit()
                .unwrap();
        }
        let mut a = root.stage(v4, b"new4\n", 0o640, true).unwrap();
        let mut b = root.stage(v6, b"new6\n", 0o640, true).unwrap();
        // What commit writes before its first rename; then the crash.
        let renames: Vec<Rename> = [&a, &b]
            .iter()
            .flat_map(|s| {
                s.renames().into_iter().map(|(f, t)| Rename {
                    dir: hex(b"/etc/iptables"),
                    from: hex(f.as_bytes()),
                    to: hex(t.as_bytes()),
                })
            })
            .collect();
        root.stage(
            Path::new(JOURNAL),
            serde_json::to_string(&renames).unwrap().as_bytes(),
            0o600,
            false,
        )
        .unwrap()
        .commit()
        .unwrap();
        a.keep_on_drop();
        b.keep_on_drop();
        drop((a, b));
        let done = recover(&root).unwrap();
        assert_eq!(done.len(), 4, "{done:?}");
        let read = |p: &Path| root.read(p).unwrap().unwrap().contents;
        assert_eq!(read(v4), "new4\n");
        assert_eq!(read(v6), "new6\n");
        assert_eq!(
            read(Path::new("/etc/iptables/rules.v4.portcullis.bak")),
            "old\n"
        );
        assert!(root.read(Path::new(JOURNAL)).unwrap().is_none());
        // A second recovery finds nothing to do.
        assert!(recover(&root).unwrap().is_empty());
    }
}
