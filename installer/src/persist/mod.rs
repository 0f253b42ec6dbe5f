//! Persistence: detect the distro's boot-time loader of iptables rules, and install
//! the rendered rules where that loader reads them.
//!
//! `detect` reads files only (os-release, the loaders' scripts and unit files, and
//! whether a unit is a real file or a symlink alias). `install` writes through one
//! `Persistence` driver per mechanism, chosen by `driver`: each write is staged as a
//! temp file in the same directory, fsynced, renamed, and the directory fsynced; a
//! file portcullis did not write is first kept as `NAME.portcullis.bak` (never
//! replaced; later ones `.portcullis.bak.N`, see docs/distros.md); every ruleset file passes
//! the target backend's `*-restore --test` before anything is replaced.
//!
//! A policy whose rules match ipsets also installs the sets, where the
//! mechanism's ipset loader reads them before the rules load ([`sets`]), in the
//! same transaction; the rules are then tested after an `ipset restore` of the
//! sets in the same private namespace, which tests the set text too.
//!
//! It refuses to write through a symlink or to follow one out of the root, to
//! install a policy that lets nobody in over SSH, and to leave a half-written
//! install behind: all files are staged before the first rename.

mod alpine;
mod arch;
pub mod atomic;
mod conflicts;
mod debian;
pub mod detect;
mod gentoo;
pub mod loader;
mod openrc;
mod rc_local;
mod rhel;
pub mod sets;
pub mod txn;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use portcullis_netfilter::{Backend, Family};

use crate::render::Rendered;

pub use conflicts::{Conflict, conflicts, conflicts_live};
pub use detect::{Detection, OsRelease, detect};
pub use rc_local::{BLOCK_BEGIN, BLOCK_END};

/// One way a distro loads iptables rules at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(into = "String")]
pub enum Mechanism {
    /// Debian, Ubuntu: netfilter-persistent.service, /etc/iptables/rules.v{4,6}.
    NetfilterPersistent,
    /// RHEL, Fedora, Rocky, Alma, CentOS: iptables.service, /etc/sysconfig/iptables.
    IptablesServices,
    /// Arch: iptables.service, /etc/iptables/iptables.rules.
    Arch,
    /// Alpine: OpenRC /etc/init.d/iptables, /etc/iptables/rules-save.
    Alpine,
    /// Gentoo: iptables-restore.service (or OpenRC), /var/lib/iptables/rules-save.
    Gentoo,
    /// The fallback: a marked block in /etc/rc.local (or /etc/rc.d/rc.local).
    RcLocal,
}

impl Mechanism {
    pub const ALL: [Mechanism; 6] = [
        Mechanism::NetfilterPersistent,
        Mechanism::IptablesServices,
        Mechanism::Arch,
        Mechanism::Alpine,
        Mechanism::Gentoo,
        Mechanism::RcLocal,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::NetfilterPersistent => "netfilter-persistent",
            Mechanism::IptablesServices => "iptables-services",
            Mechanism::Arch => "arch",
            Mechanism::Alpine => "alpine",
            Mechanism::Gentoo => "gentoo",
            Mechanism::RcLocal => "rc-local",
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl From<Mechanism> for String {
    fn from(m: Mechanism) -> String {
        m.name().to_owned()
    }
}

impl FromStr for Mechanism {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Mechanism::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown persistence mechanism `{s}`: expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// Why persistence failed. Every variant names the path (inside the root) or the
/// command.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("cannot make the policy copy: {why}")]
    PolicyCopy { why: String },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write {path}: {source}; nothing was replaced (check that the root is writable)"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to write through the symlink {path}: replace it with a regular file or pass another --root"
    )]
    Symlink { path: PathBuf },
    #[error("{path} is not a regular file: remove it or pick another --persistence")]
    NotAFile { path: PathBuf },
    #[error("{path}: {message}")]
    Edit { path: PathBuf, message: String },
    #[error(
        "{path} does not pass `{command}`: {stderr}; nothing was replaced (fix the policy, or check the backend with --backend)"
    )]
    Invalid {
        path: PathBuf,
        command: String,
        stderr: String,
    },
    #[error(
        "cannot test {path} with `{command}`: {reason}; run as root with iptables installed, or pass --no-test to install untested"
    )]
    CannotTest {
        path: PathBuf,
        command: String,
        reason: String,
    },
    #[error(
        "the policy lets nobody in over SSH: set ssh.allow_from to your admin subnet before installing it"
    )]
    NoSshAccess,
    #[error("{path} already exists: remove it or pick another path")]
    Exists { path: PathBuf },
    #[error("cannot open the root {path}: {source}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl PersistError {
    /// Bad input (the policy, a symlink the user put there) rather than a failing host.
    pub fn is_usage(&self) -> bool {
        matches!(self, PersistError::NoSshAccess)
    }
}

/// A file a driver wants in the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// Absolute path inside the root (`/etc/iptables/rules.v4`).
    pub path: PathBuf,
    pub contents: String,
    /// The mode the distro expects; never world-readable for rules.
    pub mode: u32,
    /// The family to test with `*-restore --test`, for ruleset files.
    pub ruleset: Option<Family>,
}

/// What one mechanism writes and how its loader runs. One implementation per file
/// in this module; `driver` picks one.
pub trait Persistence {
    fn mechanism(&self) -> Mechanism;
    /// What loads the files at boot, for people (`detect`, reports, docs).
    fn loader(&self) -> &'static str;
    /// The files to write for `rendered` into `root`. Reads the root where the file
    /// is edited rather than replaced (rc.local).
    fn plan(&self, root: &Path, rendered: &Rendered) -> Result<Vec<PlannedFile>, PersistError>;
    /// The files the loader reads at boot, inside `root` (IPv4 first).
    fn files(&self, root: &Path) -> Vec<PathBuf>;
}

/// The two ruleset files of a mechanism, with `mode`; IPv6 only when rendered
/// (`ipv6.mode = "untouched"` leaves the IPv6 file alone).
fn ruleset_files(rendered: &Rendered, v4: &str, v6: &str, mode: u32) -> Vec<PlannedFile> {
    Family::ALL
        .into_iter()
        .filter_map(|f| {
            let text = rendered.text(f)?;
            Some(PlannedFile {
                path: PathBuf::from(if f == Family::V4 { v4 } else { v6 }),
                contents: text,
                mode,
                ruleset: Some(f),
            })
        })
        .collect()
}

/// The driver of `kind`.
pub fn driver(kind: Mechanism) -> Box<dyn Persistence> {
    match kind {
        Mechanism::NetfilterPersistent => Box::new(debian::NetfilterPersistent),
        Mechanism::IptablesServices => Box::new(rhel::IptablesServices),
        Mechanism::Arch => Box::new(arch::Arch),
        Mechanism::Alpine => Box::new(alpine::Alpine),
        Mechanism::Gentoo => Box::new(gentoo::Gentoo),
        Mechanism::RcLocal => Box::new(rc_local::RcLocal),
    }
}

/// How `install` validates ruleset files before replacing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TestMode {
    /// `*-restore -w --test` in a fresh network namespace (`unshare -n` as root,
    /// `unshare -rn` otherwise); refuse to install when that cannot run.
    #[default]
    Namespace,
    /// Do not test (the caller already tested the exact text, or said `--no-test`).
    Skip,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct InstallOptions {
    /// Compute what would change and write nothing.
    pub check_only: bool,
    pub test: TestMode,
}

/// What happened (or would happen) to one file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum FileStatus {
    Written { backup: Option<PathBuf> },
    Unchanged,
    WouldChange { diff: String },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileReport {
    /// Absolute path inside the root.
    pub path: PathBuf,
    /// Permission bits; JSON prints them in octal (`"0600"`).
    #[serde(serialize_with = "octal")]
    pub mode: u32,
    #[serde(flatten)]
    pub status: FileStatus,
}

fn octal<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstallReport {
    pub root: PathBuf,
    pub mechanism: Mechanism,
    /// The backend the ruleset files were tested with; `None` when not tested.
    pub tested_with: Option<String>,
    pub files: Vec<FileReport>,
}

impl InstallReport {
    pub fn changed(&self) -> bool {
        self.files
            .iter()
            .any(|f| !matches!(f.status, FileStatus::Unchanged))
    }
}

/// Install `rendered` into `root` for `mechanism`. `backend` is the backend whose
/// `*-restore --test` validates the files; `None` reads it from the root
/// (`/etc/alternatives/iptables`, `/usr/sbin/iptables`), defaulting to nft.
pub fn install(
    root: &Path,
    mechanism: Mechanism,
    rendered: &Rendered,
    backend: Option<Backend>,
    opts: InstallOptions,
) -> Result<InstallReport, PersistError> {
    install_with(root, mechanism, rendered, backend, opts, Vec::new())
}

/// Where `install --root` leaves a copy of the policy it installed (0600), for
/// `verify --root` and for people reading the image.
pub const POLICY_COPY: &str = "/etc/portcullis/policy.toml";

/// Where the policy copy's blocklist files go, beside it.
pub const BLOCKLIST_COPY_DIR: &str = "blocklists";

/// The policy copy as files to install alongside the rules: the policy text,
/// and when a `[[blocklist]]` reads a file, a copy of that list (its folded
/// CIDRs, 0600) at `/etc/portcullis/blocklists/N/NAME`, with the copy's
/// `file =` pointing there (NAME is the file's own name, so the rules rendered
/// from the copy are the rules installed). The copy then reads back inside the
/// root alone: `verify --root` and `status --config` on the booted image need
/// nothing from the machine that ran install. Comments and layout of the policy
/// are kept (toml_edit).
pub fn policy_copy(text: &str, policy: &crate::Policy) -> Result<Vec<PlannedFile>, PersistError> {
    let copy = |contents: String| PlannedFile {
        path: PathBuf::from(POLICY_COPY),
        contents,
        mode: 0o600,
        ruleset: None,
    };
    if policy.blocklists.iter().all(|b| b.file.is_none()) {
        return Ok(vec![copy(text.to_owned())]);
    }
    let bad = |why: String| PersistError::PolicyCopy { why };
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| bad(e.to_string()))?;
    let dir = Path::new(POLICY_COPY)
        .parent()
        .expect("POLICY_COPY has a parent");
    let mut files = Vec::new();
    let mut relocate = |i: usize,
                        table: &mut dyn toml_edit::TableLike|
     -> Result<(), PersistError> {
        let Some(b) = policy.blocklists.get(i) else {
            return Ok(());
        };
        let Some(file) = &b.file else {
            return Ok(());
        };
        let name = Path::new(file)
            .file_name()
            .ok_or_else(|| bad(format!("blocklist[{i}].file {file:?} names no file")))?;
        let rel = Path::new(BLOCKLIST_COPY_DIR).join(i.to_string()).join(name);
        let rel_text = rel
            .to_str()
            .ok_or_else(|| bad(format!("blocklist[{i}].file {file:?} is not UTF-8")))?;
        // The new path keeps the old one's surroundings (a trailing comment).
        match table
            .get_mut("file")
            .and_then(toml_edit::Item::as_value_mut)
        {
            Some(v) => {
                let decor = v.decor().clone();
                *v = toml_edit::Value::from(rel_text);
                *v.decor_mut() = decor;
            }
            None => {
                table.insert("file", toml_edit::value(rel_text));
            }
        }
        // Nothing of where it came from: installing the copy again (an
        // image rebuilt from it) must leave this file unchanged.
        let mut contents = format!(
            "# blocklist[{i}] of {POLICY_COPY}: its CIDRs, folded, as portcullis install copied them\n"
        );
        for net in &b.nets {
            contents.push_str(&net.to_string());
            contents.push('\n');
        }
        files.push(PlannedFile {
            path: dir.join(&rel),
            contents,
            mode: 0o600,
            ruleset: None,
        });
        Ok(())
    };
    match doc.get_mut("blocklist") {
        Some(toml_edit::Item::ArrayOfTables(tables)) => {
            for (i, t) in tables.iter_mut().enumerate() {
                relocate(i, t)?;
            }
        }
        Some(toml_edit::Item::Value(toml_edit::Value::Array(list))) => {
            for (i, v) in list.iter_mut().enumerate() {
                if let Some(t) = v.as_inline_table_mut() {
                    relocate(i, t)?;
                }
            }
        }
        _ => {}
    }
    files.insert(0, copy(doc.to_string()));
    Ok(files)
}

/// [`install`] with `extra` files (the policy copy) staged and committed with the
/// driver's own.
pub fn install_with(
    root: &Path,
    mechanism: Mechanism,
    rendered: &Rendered,
    backend: Option<Backend>,
    opts: InstallOptions,
    extra: Vec<PlannedFile>,
) -> Result<InstallReport, PersistError> {
    // Refuse an unreadable or missing root before testing anything.
    let dir = atomic::Root::open(root)?;
    // A writing install holds the root's lock from before it reads anything to
    // after its last rename, and first completes an install a crash cut short.
    let _lock = if opts.check_only {
        None
    } else {
        let lock = txn::lock(&dir)?;
        txn::recover(&dir)?;
        Some(lock)
    };
    // Planned under the lock: a driver may read the file it edits (rc.local).
    // The sets first: what loads before the rules is listed before them.
    let mut plan = sets::files(root, mechanism, rendered)?;
    let set_paths: Vec<PathBuf> = plan.iter().map(|p| p.path.clone()).collect();
    plan.extend(driver(mechanism).plan(root, rendered)?);
    plan.extend(extra);
    if !opts.check_only {
        // Each directory once (Debian with sets: three files in /etc/iptables).
        let dirs: std::collections::BTreeSet<&Path> = plan
            .iter()
            .map(|p| p.path.as_path())
            .chain([Path::new(txn::JOURNAL)])
            .map(|p| p.parent().unwrap_or(Path::new("/")))
            .collect();
        for d in dirs {
            dir.sweep_dead_temps(d)?;
        }
    }
    let backend = backend.unwrap_or_else(|| detect::root_backend(root));

    let rulesets: Vec<PlannedFile> = plan
        .iter()
        .filter(|p| p.ruleset.is_some())
        .cloned()
        .collect();
    let mut files = Vec::new();
    let mut to_write = Vec::new();
    for p in plan {
        let current = dir.read(&p.path)?;
        let status = match &current {
            Some(old) if old.contents == p.contents && old.mode & 0o7777 == p.mode => {
                FileStatus::Unchanged
            }
            _ => {
                let old = current.as_ref().map(|c| c.contents.as_str()).unwrap_or("");
                FileStatus::WouldChange {
                    diff: unified_diff(&p.path, old, &p.contents),
                }
            }
        };
        if !matches!(status, FileStatus::Unchanged) {
            to_write.push((p.clone(), current.is_some()));
        }
        files.push(FileReport {
            path: p.path,
            mode: p.mode,
            status,
        });
    }

    let mut tested_with = None;
    if opts.test == TestMode::Namespace && !opts.check_only {
        // A changed sets file is tested with the rules that match it, changed
        // or not; the rules are tested with the sets loaded.
        let sets_text = rendered.sets_text();
        let sets_change = to_write.iter().any(|(p, _)| set_paths.contains(&p.path));
        for p in &rulesets {
            let changed = to_write.iter().any(|(w, _)| w.path == p.path);
            if let (Some(family), true) = (p.ruleset, changed || sets_change) {
                validate(backend, family, &p.path, &p.contents, sets_text.as_deref())?;
                tested_with = Some(backend.name().to_owned());
            }
        }
    }
    if opts.check_only || to_write.is_empty() {
        return Ok(InstallReport {
            root: root.to_owned(),
            mechanism,
            tested_with,
            files,
        });
    }

    // Stage everything, then rename as one journaled step: a failure while
    // staging leaves the root as it was, a crash after it is completed by the
    // next run.
    let mut staged = Vec::new();
    for (p, existed) in &to_write {
        let suffix = if *existed {
            backup_suffix(&dir, &p.path)?
        } else {
            None
        };
        staged.push(dir.stage_as(&p.path, p.contents.as_bytes(), p.mode, suffix.as_deref())?);
    }
    let backups = txn::commit(&dir, staged)?;
    for f in &mut files {
        if let Some((_, backup)) = backups.iter().find(|(path, _)| *path == f.path) {
            f.status = FileStatus::Written {
                backup: backup.clone(),
            };
        }
    }
    Ok(InstallReport {
        root: root.to_owned(),
        mechanism,
        tested_with,
        files,
    })
}

/// Whether portcullis wrote `contents` (a rendered ruleset, its drop-in, an
/// rc.local with its block).
fn written_by_portcullis(contents: &str) -> bool {
    let first = contents.lines().next().unwrap_or("");
    first.starts_with("# portcullis ")
        || first.starts_with("# Installed by portcullis")
        || contents.contains(BLOCK_BEGIN)
}

/// The suffix to back up the file at `path` under, or `None` to keep no backup.
/// The first backup (`.portcullis.bak`) is never replaced: it holds what was
/// there before portcullis. A file portcullis wrote needs no second copy; one
/// it did not write (edited by hand since) goes to the first free
/// `.portcullis.bak.N`.
fn backup_suffix(root: &atomic::Root, path: &Path) -> Result<Option<String>, PersistError> {
    let current = root.read(path)?;
    let with = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    if root.read(&with(atomic::BACKUP_SUFFIX))?.is_none() {
        return Ok(Some(atomic::BACKUP_SUFFIX.to_owned()));
    }
    if current.is_some_and(|c| written_by_portcullis(&c.contents)) {
        return Ok(None);
    }
    for n in 1.. {
        let suffix = format!("{}.{n}", atomic::BACKUP_SUFFIX);
        if root.read(&with(&suffix))?.is_none() {
            return Ok(Some(suffix));
        }
    }
    unreachable!("some backup number is free")
}

/// Whether `root` is the root directory of this process (`/`, however named):
/// installing there changes what this host boots with.
pub fn is_live_root(root: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(root), std::fs::metadata("/")) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Refuse a policy whose rendered rules let nobody in over SSH: installed, it would
/// lock the admin out at the next boot.
pub fn require_ssh_access(policy: &crate::Policy) -> Result<(), PersistError> {
    if policy.ssh.allow_from.is_empty() {
        Err(PersistError::NoSshAccess)
    } else {
        Ok(())
    }
}

/// `--- a/PATH` / `+++ b/PATH` unified diff, three lines of context.
pub fn unified_diff(path: &Path, old: &str, new: &str) -> String {
    let name = path.display().to_string();
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{name}"), &format!("b{name}"))
        .to_string()
}

/// `BACKEND-restore -w --test` on `text`, in a network namespace of its own so the
/// host's tables are never read or touched. Root uses `unshare -n`; anyone else
/// tries a user namespace (`unshare -rn`), which some kernels refuse.
fn validate(
    backend: Backend,
    family: Family,
    path: &Path,
    text: &str,
    sets: Option<&str>,
) -> Result<(), PersistError> {
    use portcullis_netfilter::{BackendError, runner};
    use std::process::Command;
    let bin = backend.restore_binary(family);
    let command = format!("{bin} -w --test");
    let cannot = |reason: String| PersistError::CannotTest {
        path: path.to_owned(),
        command: command.clone(),
        reason,
    };
    use portcullis_netfilter::bins;
    // The error names the package to install (or why a file is not trusted).
    let bin_path = bins::resolve(&bin).map_err(|e| cannot(e.to_string()))?;
    let unshare = bins::resolve("unshare").map_err(|e| cannot(e.to_string()))?;
    let ns = if nix::unistd::geteuid().is_root() {
        "-n"
    } else {
        "-rn"
    };
    if let Some(sets) = sets {
        // The sets, then the rules that match them, in one private namespace.
        let command = format!("unshare {ns} sh -c 'ipset restore -f SETS && {bin} -w --test'");
        let cannot = |reason: String| PersistError::CannotTest {
            path: path.to_owned(),
            command: command.clone(),
            reason,
        };
        let ipset = bins::resolve("ipset")
            .map_err(|e| cannot(format!("the policy has ipsets, and {e}")))?;
        let stderr = match portcullis_netfilter::backend::test_with_sets_ns(
            &unshare.to_string_lossy(),
            ns,
            &ipset.to_string_lossy(),
            &bin_path.to_string_lossy(),
            sets,
            text,
        ) {
            Ok(_) => return Ok(()),
            Err(BackendError::Failed { stderr, .. }) => stderr,
            Err(e) => return Err(cannot(e.to_string())),
        };
        if stderr.starts_with("unshare:") {
            return Err(cannot(stderr));
        }
        return Err(PersistError::Invalid {
            path: path.to_owned(),
            command,
            stderr,
        });
    }
    let mut cmd = Command::new(unshare);
    cmd.arg(ns).arg(&bin_path).args(["-w", "--test"]);
    // The one runner: a restore that stops at the first bad line is reported by
    // its status and stderr, never by the write that hit its closed stdin.
    let stderr = match runner::run_prepared(&mut cmd, &command, Some(text)) {
        Ok(_) => return Ok(()),
        Err(BackendError::Failed { stderr, .. }) => stderr,
        Err(BackendError::Spawn { source, .. }) => return Err(cannot(source.to_string())),
        Err(e) => return Err(cannot(e.to_string())),
    };
    // unshare itself failing (no privilege for a namespace) is "cannot test", not
    // "the file is bad".
    if stderr.starts_with("unshare:") {
        return Err(cannot(stderr));
    }
    Err(PersistError::Invalid {
        path: path.to_owned(),
        command,
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_backup_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc/iptables");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("rules.v4"), "# the distro's own\n").unwrap();
        let policy = |port: u16| {
            crate::Policy::parse(
                &format!("[ssh]\nport = {port}\nallow_from = [\"192.0.2.0/24\"]\n"),
                "t",
            )
            .unwrap()
        };
        let opts = InstallOptions {
            check_only: false,
            test: TestMode::Skip,
        };
        let m = Mechanism::NetfilterPersistent;
        let read = |n: &str| std::fs::read_to_string(etc.join(n)).ok();
        install(dir.path(), m, &crate::render(&policy(22)), None, opts).unwrap();
        install(dir.path(), m, &crate::render(&policy(2222)), None, opts).unwrap();
        assert_eq!(
            read("rules.v4.portcullis.bak").as_deref(),
            Some("# the distro's own\n")
        );
        assert_eq!(
            read("rules.v4.portcullis.bak.1"),
            None,
            "no copy of our own output"
        );
        // Edited by hand since: kept, under the next free number.
        std::fs::write(etc.join("rules.v4"), "# edited by hand\n").unwrap();
        install(dir.path(), m, &crate::render(&policy(22)), None, opts).unwrap();
        assert_eq!(
            read("rules.v4.portcullis.bak").as_deref(),
            Some("# the distro's own\n")
        );
        assert_eq!(
            read("rules.v4.portcullis.bak.1").as_deref(),
            Some("# edited by hand\n")
        );
        assert!(read("rules.v4").unwrap().starts_with("# portcullis ipv4"));
    }

    #[test]
    fn the_sets_file_is_committed_and_backed_up_with_the_rules() {
        let dir = tempfile::tempdir().unwrap();
        let etc = dir.path().join("etc/iptables");
        std::fs::create_dir_all(&etc).unwrap();
        // What ipset-persistent's postinst leaves: `ipset save` of the host.
        std::fs::write(etc.join("ipsets"), "create old hash:ip family inet\n").unwrap();
        let policy = crate::Policy::parse(
            "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n[[blocklist]]\ncidrs = [\"203.0.113.0/24\"]\n",
            "t",
        )
        .unwrap();
        let opts = InstallOptions {
            check_only: false,
            test: TestMode::Skip,
        };
        let m = Mechanism::NetfilterPersistent;
        let report = install(dir.path(), m, &crate::render(&policy), None, opts).unwrap();
        let paths: Vec<String> = report
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        // The sets first, then the rules, then the plugin (no ipset-persistent here).
        assert_eq!(
            paths,
            [
                "/etc/iptables/ipsets",
                "/etc/iptables/rules.v4",
                "/etc/iptables/rules.v6",
                "/usr/share/netfilter-persistent/plugins.d/10-portcullis-ipset"
            ]
        );
        let read = |n: &str| std::fs::read_to_string(etc.join(n)).unwrap();
        assert_eq!(
            read("ipsets.portcullis.bak"),
            "create old hash:ip family inet\n"
        );
        assert!(read("ipsets").starts_with("# portcullis ipsets"));
        assert!(read("ipsets").contains("add pc-bl0-4 203.0.113.0/24\n"));
        // --check sees it in sync; a changed list only in the sets file.
        let check = InstallOptions {
            check_only: true,
            test: TestMode::Skip,
        };
        let again = install(dir.path(), m, &crate::render(&policy), None, check).unwrap();
        assert!(!again.changed());
        let other = crate::Policy::parse(
            "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n[[blocklist]]\ncidrs = [\"203.0.113.0/25\"]\n",
            "t",
        )
        .unwrap();
        let diff = install(dir.path(), m, &crate::render(&other), None, check).unwrap();
        let changed: Vec<String> = diff
            .files
            .iter()
            .filter(|f| matches!(f.status, FileStatus::WouldChange { .. }))
            .map(|f| f.path.display().to_string())
            .collect();
        assert_eq!(changed, ["/etc/iptables/ipsets"]);
    }

    #[test]
    fn mechanism_names_round_trip() {
        for m in Mechanism::ALL {
            assert_eq!(m.name().parse::<Mechanism>(), Ok(m));
        }
        assert!("iptables".parse::<Mechanism>().is_err());
    }
}
