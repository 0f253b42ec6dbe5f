//! Build (once) and cache a real Debian bookworm root with iptables,
//! iptables-persistent, ipset and ipset-persistent, for the persistence trials: `install --root` writes into
//! an overlay of it, and the root's own netfilter-persistent loads the rules.
//!
//! - `cargo xtask debian-root` (or `ci/debian-root`): build when missing or
//!   incomplete, print the path (the last line of stdout; the tests read it)
//! - `--path`: print the path only (exit 1 when not built)
//! - `--rebuild`: throw the cache away and build again
//!
//! The mirror is read at run time from this machine's apt sources (deb822
//! /etc/apt/sources.list.d/*.sources, then /etc/apt/sources.list), or from
//! PORTCULLIS_DEBIAN_MIRROR; no mirror host is written in the repository. The
//! cache lives in a root-only directory (0700) outside the repository
//! (PORTCULLIS_CACHE_DIR, default /var/cache/portcullis); a marker file written
//! last says the build finished, so a killed build is rebuilt. One build at a
//! time: an flock(2) on the cache's `.lock`, the same lock the shell version
//! took with flock(1).

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use xshell::{Shell, cmd};

use crate::{is_root, non_empty_var};

const SUITE: &str = "bookworm";
/// The packages debootstrap adds to minbase: the rules loader, and the ipset
/// plugin that loads the sets before the rules (`install` persists sets).
const PACKAGES: &str = "iptables,iptables-persistent,ipset,ipset-persistent";
/// The cache directory's name carries a key of `PACKAGES`: a root built with
/// another list is another directory, so a changed list builds afresh and a
/// root in use by a running test is never replaced under it.
fn root_name() -> String {
    // FNV-1a, 32 bits: a stable key, not a security boundary.
    let key = PACKAGES.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("debian-root-{SUITE}-{key:08x}")
}
const MARKER: &str = ".portcullis-root-complete";

pub(crate) fn run(sh: &Shell, args: &[String]) -> Result<()> {
    let cache_dir = PathBuf::from(
        non_empty_var(sh, "PORTCULLIS_CACHE_DIR").unwrap_or_else(|| "/var/cache/portcullis".into()),
    );
    let root = cache_dir.join(root_name());
    let marker = root.join(MARKER);

    match args {
        [] => {}
        [a] if a.is_empty() => {}
        [a] if a == "--path" => {
            if !marker.is_file() {
                bail!("no complete root at {}: run ci/debian-root", root.display());
            }
            println!("{}", root.display());
            return Ok(());
        }
        [a] if a == "--rebuild" => remove_tree(sh, &root)?,
        _ => bail!(
            "unknown argument {}: expected --path or --rebuild",
            args.join(" ")
        ),
    }

    if marker.is_file() {
        println!("{}", root.display());
        return Ok(());
    }

    if !is_root(sh)? {
        bail!("needs root (debootstrap, chroot): run it with sudo");
    }
    if !on_path(sh, "debootstrap") {
        bail!("debootstrap not found: run ci/setup");
    }
    let Some(url) = mirror(sh) else {
        bail!("no Debian mirror in /etc/apt/sources.list{{,.d}}: set PORTCULLIS_DEBIAN_MIRROR");
    };

    cmd!(sh, "install -d -m 0700 {cache_dir}").quiet().run()?;
    // One build at a time (parallel test processes may all ask for the root). The
    // lock is released when the file closes, however this process ends.
    let lock_path = cache_dir.join(".lock");
    let lock = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    if marker.is_file() {
        println!("{}", root.display());
        return Ok(());
    }
    // Under the lock no other build runs, so a building directory left here was
    // left by a killed one (a signal skips the guard below).
    sweep_stale_builds(sh, &cache_dir)?;

    // Build next to the final place, then rename: a reader never sees half a root.
    let template = cache_dir.join(format!(".building-{SUITE}.XXXXXX"));
    let tmp = Building {
        sh,
        kept: false,
        path: PathBuf::from(cmd!(sh, "mktemp -d {template}").quiet().read()?),
    };
    let tmp_path = &tmp.path;

    let start = Instant::now();
    eprintln!(
        "ci/debian-root: debootstrap {SUITE} from {url} into {}",
        root.display()
    );
    let out = cmd!(
        sh,
        "debootstrap --variant=minbase --include={PACKAGES} {SUITE} {tmp_path} {url}"
    )
    .quiet()
    .ignore_status()
    .output()?;
    if !out.status.success() {
        let log = [out.stdout, out.stderr].concat();
        let log = String::from_utf8_lossy(&log);
        let lines: Vec<&str> = log.lines().collect();
        for line in &lines[lines.len().saturating_sub(20)..] {
            eprintln!("{line}");
        }
        bail!("debootstrap failed (log above)");
    }
    let seconds = start.elapsed().as_secs_f64();

    // iptables-persistent's and ipset-persistent's postinsts saved whatever rules
    // and sets the building namespace had; a test root starts with none.
    for rules in [
        "etc/iptables/rules.v4",
        "etc/iptables/rules.v6",
        "etc/iptables/ipsets",
    ] {
        remove_file_if_present(&tmp_path.join(rules))?;
    }
    // Drop the package caches: they are half the size and no test reads them.
    clear_dir(&tmp_path.join("var/cache/apt/archives"), |name| {
        name.ends_with(".deb")
    });
    clear_dir(&tmp_path.join("var/lib/apt/lists"), |_| true);

    let built = cmd!(sh, "date -u +%FT%TZ").quiet().read()?;
    fs::write(
        tmp_path.join(MARKER),
        format!("suite={SUITE}\nbuilt={built}\nseconds={seconds:.1}\n"),
    )?;
    remove_tree(sh, &root)?;
    fs::rename(tmp_path, &root)
        .with_context(|| format!("cannot move {} to {}", tmp_path.display(), root.display()))?;
    tmp.keep();
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755))?;
    let du = cmd!(sh, "du -sh --one-file-system {root}").quiet().read()?;
    let size = du.split_whitespace().next().unwrap_or("?");
    eprintln!("ci/debian-root: built in {seconds:.1}s, {size}");
    println!("{}", root.display());
    Ok(())
}

/// A half-built root, removed when dropped unless kept (renamed into place).
struct Building<'a> {
    sh: &'a Shell,
    path: PathBuf,
    kept: bool,
}

impl Building<'_> {
    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Building<'_> {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Err(e) = remove_tree(self.sh, &self.path) {
            eprintln!("ci/debian-root: {e:#}");
        }
    }
}

/// `rm -rf --one-file-system`: a mount debootstrap left inside the root (a killed
/// build's /proc) is skipped, never descended into.
fn remove_tree(sh: &Shell, path: &Path) -> Result<()> {
    cmd!(sh, "rm -rf --one-file-system {path}").quiet().run()?;
    Ok(())
}

fn sweep_stale_builds(sh: &Shell, cache_dir: &Path) -> Result<()> {
    let prefix = format!(".building-{SUITE}.");
    for entry in fs::read_dir(cache_dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            eprintln!(
                "ci/debian-root: removing {}, left by a killed build",
                entry.path().display()
            );
            // What cannot go (a mount the killed debootstrap left) costs space only.
            if let Err(e) = remove_tree(sh, &entry.path()) {
                eprintln!("ci/debian-root: {e:#}");
            }
        }
    }
    Ok(())
}

fn remove_file_if_present(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Removes the entries of `dir` whose names `pick` chooses (not dot files, as a
/// shell glob would), ignoring failures: a cache left in place costs only space.
fn clear_dir(dir: &Path, pick: impl Fn(&str) -> bool) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !pick(&name) {
            continue;
        }
        let path = entry.path();
        let _ = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
    }
}

fn on_path(sh: &Shell, program: &str) -> bool {
    let Some(path) = sh.var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// The first Debian archive URI of the machine's apt sources (not -security,
/// which lacks the main suite), or PORTCULLIS_DEBIAN_MIRROR.
fn mirror(sh: &Shell) -> Option<String> {
    if let Some(m) = non_empty_var(sh, "PORTCULLIS_DEBIAN_MIRROR") {
        return Some(m);
    }
    let mut sources: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "sources")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                && p.is_file()
        })
        .collect();
    sources.sort();
    for file in sources {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        if let Some(uri) = first_debian(deb822_uris(&text)) {
            return Some(uri);
        }
    }
    let text = fs::read_to_string("/etc/apt/sources.list").ok()?;
    first_debian(one_line_uris(&text))
}

/// The URIs of every `URIs:` field of a deb822 sources file.
fn deb822_uris(text: &str) -> impl Iterator<Item = &str> {
    text.lines().flat_map(|line| {
        let mut fields = line.split_whitespace();
        let is_uris = fields
            .next()
            .is_some_and(|f| f.eq_ignore_ascii_case("uris:"));
        fields.filter(move |_| is_uris)
    })
}

/// The URI of every `deb` line of a one-line sources.list (after its options).
fn one_line_uris(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next() != Some("deb") {
            return None;
        }
        fields.find(|f| {
            ["http:", "https:", "file:"]
                .iter()
                .any(|s| f.starts_with(s))
        })
    })
}

fn first_debian<'a>(mut uris: impl Iterator<Item = &'a str>) -> Option<String> {
    uris.find(|u| !u.contains("-security") && u.strip_suffix('/').unwrap_or(u).ends_with("/debian"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_is_the_first_debian_archive_not_security() {
        let deb822 = "\
Types: deb
URIs: http://deb.example.org/debian-security/
Suites: bookworm-security

Types: deb deb-src
uris: http://deb.example.org/debian http://other.example.org/debian/
Suites: bookworm bookworm-updates
";
        assert_eq!(
            first_debian(deb822_uris(deb822)).as_deref(),
            Some("http://deb.example.org/debian")
        );
        let list = "\
# deb http://commented.example.org/debian bookworm main
deb http://security.example.org/debian-security bookworm-security main
deb [arch=amd64 signed-by=/k.gpg] https://deb.example.org/debian/ bookworm main
";
        assert_eq!(
            first_debian(one_line_uris(list)).as_deref(),
            Some("https://deb.example.org/debian/")
        );
        assert_eq!(
            first_debian(one_line_uris(
                "deb http://archive.example.org/ubuntu noble main"
            )),
            None
        );
    }
}
