//! Name the persistence mechanism of a root from its files alone: os-release (`ID`,
//! `ID_LIKE`), the loaders' programs and scripts, and their unit files, telling a
//! real unit file from a symlink alias (Debian's netfilter-persistent installs
//! `iptables.service` as an alias of itself, which is not RHEL's iptables-services).
//!
//! Reads only: symlinks are resolved the way a chroot would see them (absolute
//! targets start at the root, `..` stops at the root), so a read never leaves the
//! root. It runs no command; the live probes live in `conflicts`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use portcullis_netfilter::Backend;

use super::{Mechanism, PersistError};

/// The fields of os-release that detection uses.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub pretty_name: Option<String>,
}

impl OsRelease {
    /// Parse os-release(5): `KEY=value` lines, values optionally quoted.
    pub fn parse(text: &str) -> OsRelease {
        let mut os = OsRelease::default();
        for line in text.lines() {
            let Some((k, v)) = line.trim().split_once('=') else {
                continue;
            };
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned();
            match k.trim() {
                "ID" => os.id = v.to_ascii_lowercase(),
                "ID_LIKE" => {
                    os.id_like = v
                        .split_whitespace()
                        .map(|s| s.to_ascii_lowercase())
                        .collect()
                }
                "PRETTY_NAME" => os.pretty_name = Some(v),
                _ => {}
            }
        }
        os
    }

    /// `ID` then `ID_LIKE`, most specific first.
    fn ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.id.as_str()).chain(self.id_like.iter().map(String::as_str))
    }

    fn is(&self, family: &[&str]) -> bool {
        self.ids().any(|id| family.contains(&id))
    }

    pub fn debian_like(&self) -> bool {
        self.is(&["debian", "ubuntu", "raspbian", "linuxmint", "pop"])
    }

    pub fn rhel_like(&self) -> bool {
        self.is(&[
            "rhel",
            "fedora",
            "centos",
            "rocky",
            "almalinux",
            "ol",
            "amzn",
            "scientific",
        ])
    }

    pub fn arch_like(&self) -> bool {
        self.is(&["arch", "archarm", "manjaro", "endeavouros"])
    }

    pub fn alpine_like(&self) -> bool {
        self.is(&["alpine", "postmarketos"])
    }

    pub fn gentoo_like(&self) -> bool {
        self.is(&["gentoo", "funtoo"])
    }
}

/// The mechanism detect chose, why, and what it found on the way.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Detection {
    pub mechanism: Mechanism,
    /// One sentence: the evidence that decided.
    pub reason: String,
    /// `None` when the root has no os-release.
    pub os: Option<OsRelease>,
    /// The files the mechanism loads at boot (inside the root).
    pub files: Vec<PathBuf>,
    /// What loads them.
    pub loader: String,
    /// Things worth knowing that did not decide (an alias ignored, a second loader).
    pub notes: Vec<String>,
}

/// Resolve `path` (absolute, inside `root`) to a host path the way a process
/// chrooted into `root` would, following at most 40 symlinks. `None` when a
/// component does not exist (a dangling link included).
pub fn resolve(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut todo: VecDeque<OsString> = normal(path).into();
    let mut cur: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop_front() {
        if c == ".." {
            cur.pop();
            continue;
        }
        cur.push(c);
        let host = host_path(root, &cur);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            cur.pop();
            if target.is_absolute() {
                cur.clear();
            }
            for (i, t) in normal(&target).into_iter().enumerate() {
                todo.insert(i, t);
            }
        }
    }
    Some(host_path(root, &cur))
}

/// The components of `p`, keeping `..` (as the string "..") and dropping `.` and `/`.
fn normal(p: &Path) -> Vec<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn host_path(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_owned();
    p.extend(parts);
    p
}

/// The text of `path` inside `root`, `None` when it does not exist. Any other
/// failure (not readable, not a regular file, over 64 MiB, not UTF-8) is an
/// error naming the path.
pub fn read_in_root(root: &Path, path: &str) -> Result<Option<String>, PersistError> {
    let Some(host) = resolve(root, Path::new(path)) else {
        return Ok(None);
    };
    // Capped, and a regular file only: a FIFO or a device planted in an image
    // is an error naming it, not a hang or a read without end.
    match crate::input::read_capped(&host, crate::input::RULES_MAX_BYTES) {
        Ok(input) => Ok(Some(input.text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PersistError::Read {
            path: PathBuf::from(path),
            source,
        }),
    }
}

fn exists(root: &Path, path: &str) -> bool {
    resolve(root, Path::new(path)).is_some()
}

/// The root's os-release (`/etc/os-release`, then `/usr/lib/os-release`).
pub fn os_release(root: &Path) -> Result<Option<OsRelease>, PersistError> {
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(text) = read_in_root(root, p)? {
            return Ok(Some(OsRelease::parse(&text)));
        }
    }
    Ok(None)
}

/// Where systemd looks for unit files, highest precedence first.
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// A unit as the root's systemd would find it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    /// A unit file with this text, at this path.
    Real {
        path: String,
        text: String,
    },
    /// A symlink to a unit of another name: the name is an alias.
    Alias {
        path: String,
        target: String,
    },
    Missing,
}

/// Look up `name` in the unit directories. A symlink to a file of the same name is
/// followed (an admin's link to a vendor unit); to another name, it is an alias.
pub fn unit(root: &Path, name: &str) -> Result<Unit, PersistError> {
    for dir in UNIT_DIRS {
        let path = format!("{dir}/{name}");
        // Resolve the directory (merged /usr makes /lib a link) but look at the
        // entry itself without following it.
        let Some(host_dir) = resolve(root, Path::new(dir)) else {
            continue;
        };
        let host = host_dir.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&host) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&host).map_err(|source| PersistError::Read {
                path: PathBuf::from(&path),
                source,
            })?;
            let target_name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if target_name != name {
                return Ok(Unit::Alias {
                    path,
                    target: target_name,
                });
            }
        }
        if let Some(text) = read_in_root(root, &path)? {
            return Ok(Unit::Real { path, text });
        }
    }
    Ok(Unit::Missing)
}

/// The evidence for one mechanism.
struct Found {
    mechanism: Mechanism,
    why: String,
    /// Whether os-release agrees (a Debian-like root for netfilter-persistent...).
    fits_os: bool,
}

/// Name the mechanism of `root` from its files.
pub fn detect(root: &Path) -> Result<Detection, PersistError> {
    if !root.is_dir() {
        return Err(PersistError::Root {
            path: root.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let os = os_release(root)?;
    let osr = os.clone().unwrap_or_default();
    let mut notes = Vec::new();
    let mut found = Vec::new();

    // Debian's netfilter-persistent: the program, its unit, or its init script.
    let nfp_unit = unit(root, "netfilter-persistent.service")?;
    if exists(root, "/usr/sbin/netfilter-persistent") || !matches!(nfp_unit, Unit::Missing) {
        found.push(Found {
            mechanism: Mechanism::NetfilterPersistent,
            why: "netfilter-persistent is installed (/usr/sbin/netfilter-persistent, netfilter-persistent.service)".into(),
            fits_os: osr.debian_like(),
        });
    }

    // iptables.service: RHEL's iptables-services and Arch's iptables both ship a real
    // unit of that name; Debian's is an alias of netfilter-persistent.
    match unit(root, "iptables.service")? {
        Unit::Alias { path, target } => notes.push(format!(
            "{path} is a symlink alias of {target}, not RHEL's iptables-services"
        )),
        Unit::Real { path, text } => {
            if text.contains("/etc/sysconfig/iptables") || text.contains("iptables.init") {
                found.push(Found {
                    mechanism: Mechanism::IptablesServices,
                    why: format!("{path} is a real unit file that runs iptables.init (/etc/sysconfig/iptables)"),
                    fits_os: osr.rhel_like(),
                });
            } else if text.contains("/etc/iptables/iptables.rules") {
                found.push(Found {
                    mechanism: Mechanism::Arch,
                    why: format!(
                        "{path} is a real unit file that restores /etc/iptables/iptables.rules"
                    ),
                    fits_os: osr.arch_like(),
                });
            } else {
                notes.push(format!("{path} exists but loads no file portcullis knows"));
            }
        }
        Unit::Missing => {}
    }
    if !found
        .iter()
        .any(|f| f.mechanism == Mechanism::IptablesServices)
        && exists(root, "/usr/libexec/iptables/iptables.init")
    {
        found.push(Found {
            mechanism: Mechanism::IptablesServices,
            why: "/usr/libexec/iptables/iptables.init (iptables-services) is installed".into(),
            fits_os: osr.rhel_like(),
        });
    }

    // Gentoo: systemd's iptables-restore.service, or OpenRC's init script with
    // IPTABLES_SAVE under /var/lib. Alpine: OpenRC with /etc/iptables/rules-save.
    if let Unit::Real { path, text } = unit(root, "iptables-restore.service")?
        && text.contains("/var/lib/iptables")
    {
        found.push(Found {
            mechanism: Mechanism::Gentoo,
            why: format!("{path} restores /var/lib/iptables/rules-save"),
            fits_os: osr.gentoo_like(),
        });
    }
    if let Some(init) = read_in_root(root, "/etc/init.d/iptables")?
        && init.starts_with("#!/sbin/openrc-run")
    {
        let conf = read_in_root(root, "/etc/conf.d/iptables")?.unwrap_or_default();
        let save = conf_value(&conf, "IPTABLES_SAVE");
        let (mechanism, fits_os) = match save.as_deref() {
            Some(p) if p.starts_with("/var/lib/") => (Mechanism::Gentoo, osr.gentoo_like()),
            Some(_) => (Mechanism::Alpine, osr.alpine_like()),
            None if osr.gentoo_like() => (Mechanism::Gentoo, true),
            None => (Mechanism::Alpine, osr.alpine_like()),
        };
        if !found.iter().any(|f| f.mechanism == mechanism) {
            found.push(Found {
                mechanism,
                why: format!(
                    "/etc/init.d/iptables is an OpenRC script{}",
                    save.map(|s| format!(" saving to {s} (/etc/conf.d/iptables)"))
                        .unwrap_or_default()
                ),
                fits_os,
            });
        }
    }

    let os_name = match &os {
        Some(o) => {
            let like = if o.id_like.is_empty() {
                String::new()
            } else {
                format!(", ID_LIKE={}", o.id_like.join(" "))
            };
            format!(
                "{} (ID={}{like})",
                o.pretty_name.as_deref().unwrap_or(&o.id),
                o.id
            )
        }
        None => "a root without os-release".into(),
    };
    if os.is_none() {
        notes.push(
            "no /etc/os-release or /usr/lib/os-release: decided from the loaders alone".into(),
        );
    }
    // The loader that fits the distro wins; otherwise the first found (the order
    // above); otherwise rc.local.
    let pick = found
        .iter()
        .position(|f| f.fits_os)
        .or(if found.is_empty() { None } else { Some(0) });
    let (mechanism, reason) = match pick {
        Some(i) => {
            let f = &found[i];
            for (j, other) in found.iter().enumerate() {
                if j != i {
                    notes.push(format!("also found: {} ({})", other.mechanism, other.why));
                }
            }
            (f.mechanism, format!("{os_name}: {}", f.why))
        }
        None => {
            let path = rc_local_path(root, &osr);
            (
                Mechanism::RcLocal,
                format!(
                    "{os_name}: no boot-time iptables loader installed, falling back to {path}"
                ),
            )
        }
    };
    let driver = super::driver(mechanism);
    Ok(Detection {
        mechanism,
        reason,
        os,
        files: driver.files(root),
        loader: driver.loader().to_owned(),
        notes,
    })
}

/// `KEY="value"` from a shell-style conf file.
pub(super) fn conf_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.trim().split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned())
    })
}

/// The file OpenRC's iptables script restores: `IPTABLES_SAVE` from
/// `/etc/conf.d/{iptables,ip6tables}` when it is an absolute path, else `default`.
pub(super) fn openrc_save_path(
    root: &Path,
    conf: &str,
    default: &str,
) -> Result<String, PersistError> {
    let text = read_in_root(root, conf)?.unwrap_or_default();
    Ok(
        match conf_value(&text, "IPTABLES_SAVE").or_else(|| conf_value(&text, "IP6TABLES_SAVE")) {
            Some(p) if p.starts_with('/') && !p.contains("..") && !p.contains('$') => p,
            _ => default.to_owned(),
        },
    )
}

/// The rc.local the root's systemd runs: `/etc/rc.d/rc.local` on the RHEL family
/// (where `/etc/rc.local` is only a link to it), `/etc/rc.local` elsewhere.
pub fn rc_local_path(root: &Path, os: &OsRelease) -> &'static str {
    if os.rhel_like() || (exists(root, "/etc/rc.d/rc.local") && !exists(root, "/etc/rc.local")) {
        "/etc/rc.d/rc.local"
    } else {
        "/etc/rc.local"
    }
}

/// The backend the root's plain `iptables` uses, from its alternatives link (Debian,
/// Fedora) or the binary `iptables` points at (Arch, Alpine); nft when unknown (the
/// default of every current distro).
pub fn root_backend(root: &Path) -> Backend {
    if root == Path::new("/")
        && let Ok(b) = Backend::detect()
    {
        return b;
    }
    for p in [
        "/etc/alternatives/iptables",
        "/usr/sbin/iptables",
        "/sbin/iptables",
        "/usr/bin/iptables",
    ] {
        if let Some(host) = resolve(root, Path::new(p)) {
            let name = host.to_string_lossy();
            if name.contains("legacy") {
                return Backend::Legacy;
            }
            if name.contains("nft") {
                return Backend::Nft;
            }
        }
    }
    Backend::Nft
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_in_the_root_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        nix::unistd::mkfifo(
            &dir.path().join("etc/os-release"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = read_in_root(dir.path(), "/etc/os-release").unwrap_err();
        assert!(err.to_string().contains("/etc/os-release"), "{err}");
        assert!(os_release(dir.path()).is_err());
    }

    #[test]
    fn os_release_ids() {
        let os = OsRelease::parse(
            "NAME=\"Rocky Linux\"\nID=\"rocky\"\nID_LIKE=\"rhel centos fedora\"\n",
        );
        assert_eq!(os.id, "rocky");
        assert!(os.rhel_like());
        assert!(!os.debian_like());
        let os = OsRelease::parse("ID=ubuntu\nID_LIKE=debian\n");
        assert!(os.debian_like());
    }

    #[test]
    fn conf_values() {
        assert_eq!(
            conf_value(
                "# x\nIPTABLES_SAVE=\"/var/lib/iptables/rules-save\"\n",
                "IPTABLES_SAVE"
            )
            .as_deref(),
            Some("/var/lib/iptables/rules-save")
        );
    }
}
