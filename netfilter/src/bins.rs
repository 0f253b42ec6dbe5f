//! Which file a binary name means, for the binaries portcullis runs as root
//! (`iptables-nft-restore`, `ip6tables-legacy-save`, `iptables`, `unshare`...).
//!
//! A name is looked up once per process, on PATH (absolute entries only) and then
//! in the system directories, and the first executable found must be trusted: it,
//! the file a symlink leads to, and every directory above either, owned by root
//! and writable by nobody else (a sticky directory such as /tmp is accepted as an
//! ancestor: nobody else can rename what root put there). An untrusted first
//! match is an error naming it, never skipped in silence: a look-alike planted
//! on PATH is refused loudly rather than run as root. The result is cached, and
//! the guard `pin`s the paths apply recorded, so the rollback runs exactly the
//! binaries that applied.
//!
//! It refuses relative PATH entries (`.`, an empty entry).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Searched after PATH, in this order.
pub const SYSTEM_DIRS: [&str; 6] = [
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
];

/// What cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinError {
    #[error(
        "{name} not found on PATH or in {} (install {})",
        SYSTEM_DIRS.join(", "),
        package(.name)
    )]
    NotFound { name: String },
    #[error(
        "refusing to run {path} as root: {why}; take it off PATH, or make it and its directories root-owned and writable by root alone"
    )]
    Untrusted { path: PathBuf, why: String },
}

/// The Debian package that brings binary `name`, for the "install ..." hint.
pub fn package(name: &str) -> &'static str {
    match name {
        "ipset" => "ipset",
        "unshare" => "util-linux",
        "chroot" => "coreutils",
        "ssh" | "ssh-keygen" => "openssh-client",
        "sshd" => "openssh-server",
        "systemctl" => "systemd",
        "conntrack" => "conntrack",
        _ => "iptables",
    }
}

static RESOLVED: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());

/// The trusted file `name` means here; looked up once, then cached.
pub fn resolve(name: &str) -> Result<PathBuf, BinError> {
    if let Some(p) = RESOLVED.lock().unwrap_or_else(|e| e.into_inner()).get(name) {
        return Ok(p.clone());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path)
        .filter(|d| d.is_absolute())
        .chain(SYSTEM_DIRS.iter().map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join(name);
        if !is_executable(&candidate) {
            continue;
        }
        trusted(&candidate).map_err(|why| BinError::Untrusted {
            path: candidate.clone(),
            why,
        })?;
        RESOLVED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), candidate.clone());
        return Ok(candidate);
    }
    Err(BinError::NotFound {
        name: name.to_owned(),
    })
}

/// Use `path` for `name` from now on (the paths an apply recorded), once it is
/// checked trusted.
pub fn pin(name: &str, path: &Path) -> Result<(), BinError> {
    let untrusted = |why: String| BinError::Untrusted {
        path: path.to_owned(),
        why,
    };
    if !path.is_absolute() {
        return Err(untrusted("not an absolute path".into()));
    }
    if !is_executable(path) {
        return Err(untrusted("not an executable file".into()));
    }
    trusted(path).map_err(untrusted)?;
    RESOLVED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_owned(), path.to_owned());
    Ok(())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Why `path` may not be run as root, or `Ok`: every directory a symlink on
/// the way sits in (where it could be swapped: `/usr/sbin/iptables` ->
/// `/etc/alternatives/iptables` -> ...) and the file it ends at, with all their
/// ancestors, root-owned and writable by root alone.
pub fn trusted(path: &Path) -> Result<(), String> {
    let mut cur = path.to_path_buf();
    for _ in 0..40 {
        let dir = cur
            .parent()
            .unwrap_or(Path::new("/"))
            .canonicalize()
            .map_err(|e| format!("cannot resolve the directory of {}: {e}", cur.display()))?;
        for (i, d) in dir.ancestors().enumerate() {
            let m = d
                .metadata()
                .map_err(|e| format!("cannot inspect {}: {e}", d.display()))?;
            // The directory holding the link or file may never be writable by
            // others; a sticky ancestor (/tmp) protects what root made in it.
            owned_by_root(d, &m, i > 0)?;
        }
        match std::fs::read_link(&cur) {
            Ok(target) => cur = dir.join(target),
            Err(_) => {
                let meta = cur
                    .metadata()
                    .map_err(|e| format!("cannot inspect {}: {e}", cur.display()))?;
                return owned_by_root(&cur, &meta, false);
            }
        }
    }
    Err("too many symlinks".into())
}

fn owned_by_root(p: &Path, m: &std::fs::Metadata, sticky_ok: bool) -> Result<(), String> {
    if m.uid() != 0 {
        return Err(format!(
            "{} is owned by uid {}, not root",
            p.display(),
            m.uid()
        ));
    }
    let mode = m.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(sticky_ok && sticky) {
        return Err(format!(
            "{} (mode {mode:04o}) is writable by other users",
            p.display()
        ));
    }
    Ok(())
}

/// Every name resolved (or pinned) so far, with its path: what apply records.
pub fn resolved() -> BTreeMap<String, PathBuf> {
    RESOLVED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn system_binaries_are_trusted() {
        // /bin/sh exists everywhere these tests run, root-owned.
        if nix_free_is_root_owned("/bin/sh") {
            assert_eq!(trusted(Path::new("/bin/sh")), Ok(()));
        }
    }

    fn nix_free_is_root_owned(p: &str) -> bool {
        std::fs::metadata(p).map(|m| m.uid() == 0).unwrap_or(false)
    }

    #[test]
    fn a_missing_binary_names_its_package() {
        for (name, package) in [
            ("ipset", "install ipset"),
            ("unshare", "install util-linux"),
            ("iptables-nft-restore", "install iptables"),
        ] {
            let e = BinError::NotFound { name: name.into() }.to_string();
            assert!(
                e.starts_with(name) && e.ends_with(&format!("({package})")),
                "{e}"
            );
        }
    }

    #[test]
    fn a_directory_writable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("iptables-nft-restore");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root_owned = std::fs::metadata(&bin).unwrap().uid() == 0;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = trusted(&bin).unwrap_err();
        assert!(
            why.contains("writable by other users") || !root_owned,
            "{why}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o757)).unwrap();
        assert!(trusted(&bin).is_err());
        assert!(pin("x", Path::new("relative")).is_err());
    }

    #[test]
    fn every_link_on_the_way_is_checked() {
        if !nix_free_is_root_owned("/bin/sh") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // Only root can make the root-owned directories the check needs.
        if std::fs::metadata(dir.path()).unwrap().uid() != 0 {
            return;
        }
        let open = dir.path().join("open");
        let safe = dir.path().join("safe");
        std::fs::create_dir(&open).unwrap();
        std::fs::create_dir(&safe).unwrap();
        std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        // safe/iptables -> open/alt -> /bin/sh: the middle link could be swapped.
        std::os::unix::fs::symlink("/bin/sh", open.join("alt")).unwrap();
        std::os::unix::fs::symlink(open.join("alt"), safe.join("iptables")).unwrap();
        let why = trusted(&safe.join("iptables")).unwrap_err();
        assert!(why.contains("open"), "{why}");
        std::os::unix::fs::symlink("/bin/sh", safe.join("sh")).unwrap();
        assert_eq!(trusted(&safe.join("sh")), Ok(()));
    }
}
