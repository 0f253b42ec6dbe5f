//! The boot loader of a mechanism, as the root's init system sees it: which
//! systemd units, OpenRC services or scripts load the rules at boot, whether each
//! is enabled (a link in a `*.wants` directory, a runlevel link, an executable
//! rc.local), enabling it offline, and the commands it runs (a unit's
//! `ExecStartPre=` and `ExecStart=`, its drop-ins included), which
//! `verify --root` runs chrooted. `check_boot` is what `install` refuses: a
//! loader that would not run at boot, a manager that replaces the rules, a
//! Debian root without iptables-persistent.
//!
//! Reads follow symlinks the way a chroot would (`detect::resolve`); enabling
//! writes only symlinks, through `systemctl --root` when the host has it, else
//! the link systemctl itself makes, created in a directory walked without
//! following any symlink.

use std::path::{Path, PathBuf};

use super::detect::{self, Unit, read_in_root, resolve};
use super::{Mechanism, PersistError};

/// One thing that must start at boot for the rules to load.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Loader {
    /// A systemd unit (`netfilter-persistent.service`).
    Systemd { unit: String },
    /// An OpenRC service (`/etc/init.d/NAME` in a runlevel).
    OpenRc { service: String },
    /// A script systemd's rc-local generator runs when it is executable.
    RcLocal { script: String },
    /// A program run without an init system's record of it (Debian without systemd
    /// units: `netfilter-persistent start` from its init script).
    Program { argv: Vec<String> },
}

impl std::fmt::Display for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loader::Systemd { unit } => write!(f, "{unit}"),
            Loader::OpenRc { service } => write!(f, "OpenRC service {service}"),
            Loader::RcLocal { script } => write!(f, "{script}"),
            Loader::Program { argv } => write!(f, "{}", argv.join(" ")),
        }
    }
}

/// One command a loader runs, and whether systemd ignores its failure (`-`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exec {
    pub argv: Vec<String>,
    pub ignore_failure: bool,
    /// Where it comes from (`ExecStart= of /lib/systemd/system/x.service`).
    pub origin: String,
}

/// The loaders of `mechanism` in `root`, in the order they must run; `v6` adds
/// the IPv6 one where a distro has a separate one (RHEL, Arch, Gentoo, Alpine);
/// `sets` (the policy renders ipsets) puts the ipset loader first where it is a
/// service of its own ([`super::sets::loader`]). A missing unit is still named:
/// the caller reports it as missing.
pub fn loaders(
    root: &Path,
    mechanism: Mechanism,
    v6: bool,
    sets: bool,
) -> Result<Vec<Loader>, PersistError> {
    let sd = |u: &str| Loader::Systemd { unit: u.into() };
    let rc = |s: &str| Loader::OpenRc { service: s.into() };
    let mut out = match mechanism {
        Mechanism::NetfilterPersistent => {
            if detect::unit(root, "netfilter-persistent.service")? == Unit::Missing
                && read_in_root(root, "/etc/init.d/netfilter-persistent")?.is_some()
            {
                vec![Loader::Program {
                    argv: vec!["/usr/sbin/netfilter-persistent".into(), "start".into()],
                }]
            } else {
                vec![sd("netfilter-persistent.service")]
            }
        }
        Mechanism::IptablesServices | Mechanism::Arch => {
            let mut v = vec![sd("iptables.service")];
            if v6 {
                v.push(sd("ip6tables.service"));
            }
            v
        }
        Mechanism::Gentoo if detect::unit(root, "iptables-restore.service")? != Unit::Missing => {
            let mut v = vec![sd("iptables-restore.service")];
            if v6 {
                v.push(sd("ip6tables-restore.service"));
            }
            v
        }
        Mechanism::Gentoo | Mechanism::Alpine => {
            let mut v = vec![rc("iptables")];
            if v6 {
                v.push(rc("ip6tables"));
            }
            v
        }
        Mechanism::RcLocal => {
            let os = detect::os_release(root)?.unwrap_or_default();
            vec![Loader::RcLocal {
                script: detect::rc_local_path(root, &os).into(),
            }]
        }
    };
    out.dedup();
    if sets && let Some(l) = super::sets::loader(root, mechanism)? {
        out.insert(0, l);
    }
    Ok(out)
}

/// Whether `loader` starts at boot: `Ok(evidence)` when it does, `Err(why not)`.
pub fn enabled(root: &Path, loader: &Loader) -> Result<Result<String, String>, PersistError> {
    Ok(match loader {
        Loader::Systemd { unit } => match detect::unit(root, unit)? {
            Unit::Missing => Err(format!("{unit} is not installed in the root")),
            _ => match wants_link(root, unit) {
                Some(l) => Ok(format!("{unit} is enabled ({l})")),
                None => Err(format!(
                    "{unit} is installed but not enabled (no link in /etc/systemd/system/*.wants)"
                )),
            },
        },
        Loader::OpenRc { service } => {
            if resolve(root, &Path::new("/etc/init.d").join(service)).is_none() {
                Err(format!(
                    "/etc/init.d/{service} is not installed in the root"
                ))
            } else {
                match runlevel_link(root, service) {
                    Some(l) => Ok(format!("{service} is in a runlevel ({l})")),
                    None => Err(format!(
                        "/etc/init.d/{service} is in no runlevel (no /etc/runlevels/*/{service})"
                    )),
                }
            }
        }
        Loader::RcLocal { script } => match resolve(root, Path::new(script)) {
            None => Err(format!("{script} does not exist")),
            Some(p) => {
                use std::os::unix::fs::PermissionsExt as _;
                let mode = std::fs::metadata(&p)
                    .map(|m| m.permissions().mode())
                    .unwrap_or(0);
                if mode & 0o111 != 0 {
                    Ok(format!(
                        "{script} is executable (systemd's rc-local generator runs it)"
                    ))
                } else {
                    Err(format!(
                        "{script} is not executable: systemd's rc-local generator ignores it"
                    ))
                }
            }
        },
        Loader::Program { argv } => {
            // Debian without systemd units: sysvinit runs the init script from rcS.d.
            let name = "netfilter-persistent";
            match sysv_link(root, name) {
                Some(l) => Ok(format!("{} runs from {l}", argv.join(" "))),
                None => Err(format!(
                    "/etc/init.d/{name} has no S link in /etc/rc?.d or /etc/rcS.d"
                )),
            }
        }
    })
}

/// Managers that replace or flush iptables rules at boot: `install` refuses them
/// unless `--force`. Docker only adds chains: a note.
pub const REFUSED_MANAGERS: [&str; 3] = ["firewalld", "ufw", "nftables"];

/// What `install` was told (`--enable`, `--force`, `--persistence`).
#[derive(Debug, Clone, Copy, Default)]
pub struct BootFlags {
    pub enable: bool,
    pub force: bool,
    /// The mechanism was chosen with `--persistence`, not detected.
    pub chosen: bool,
}

/// Whether a root would load the rules at boot, from its files.
#[derive(Debug, Clone, Default)]
pub struct BootCheck {
    /// Why the root would boot without the rules, each with its fix; `install`
    /// refuses (exit 2) unless this is empty.
    pub refusals: Vec<String>,
    /// Worth knowing, not refused.
    pub notes: Vec<String>,
    /// Loaders `--enable` will enable once the files are written.
    pub to_enable: Vec<Loader>,
}

/// Check `root` before `install` writes into it: the loaders of `mechanism` (and
/// of IPv6 when `v6`, of the ipsets when `sets`) must be enabled (or
/// `--enable`d), the ipset loader installed and ordered before the rules, no
/// manager that replaces the rules at boot may be enabled (or `--force`), and a
/// Debian-like root must have iptables-persistent rather than fall back to
/// rc.local (or `--persistence rc-local` said so).
pub fn check_boot(
    root: &Path,
    mechanism: Mechanism,
    v6: bool,
    sets: bool,
    conflicts: &[super::Conflict],
    flags: BootFlags,
) -> Result<BootCheck, PersistError> {
    let mut notes = Vec::new();
    let mut to_enable = Vec::new();
    let mut out = Vec::new();
    for c in conflicts {
        if !REFUSED_MANAGERS.contains(&c.manager.as_str()) {
            notes.push(format!("{}: {}", c.manager, c.evidence));
            continue;
        }
        if flags.force {
            notes.push(format!(
                "--force: installing despite {}: {}",
                c.manager, c.evidence
            ));
            continue;
        }
        let fix = match c.manager.as_str() {
            "firewalld" => format!(
                "disable it in the image (systemctl --root {} disable firewalld.service, or remove the link), or pass --force",
                root.display()
            ),
            "ufw" => {
                "set ENABLED=no in /etc/ufw/ufw.conf of the image (or purge ufw), or pass --force"
                    .into()
            }
            _ => format!(
                "disable it in the image (systemctl --root {} disable nftables.service), or pass --force",
                root.display()
            ),
        };
        out.push(format!(
            "{}: the image would boot with {} managing the firewall instead; fix: {fix}",
            c.evidence, c.manager
        ));
    }
    let all = loaders(root, mechanism, v6, sets)?;
    if sets {
        let rules: Vec<Loader> = all
            .iter()
            .filter(|l| !super::sets::is_sets_loader(l))
            .cloned()
            .collect();
        out.extend(super::sets::refusals(root, mechanism, &rules));
        if mechanism == Mechanism::NetfilterPersistent
            && resolve(root, Path::new(super::sets::DEBIAN_PLUGIN)).is_none()
        {
            notes.push(format!(
                "ipset-persistent is not installed: portcullis installs its own netfilter-persistent plugin {} to load {} before the rules (apt-get install ipset-persistent to use the distribution's)",
                super::sets::OWN_PLUGIN,
                super::sets::DEBIAN
            ));
        }
    }
    for l in all {
        // install itself makes rc.local executable.
        if matches!(l, Loader::RcLocal { .. }) {
            continue;
        }
        let missing = match &l {
            Loader::Systemd { unit } => detect::unit(root, unit)? == Unit::Missing,
            Loader::OpenRc { service } => {
                resolve(root, &Path::new("/etc/init.d").join(service)).is_none()
            }
            _ => false,
        };
        if missing && super::sets::is_sets_loader(&l) {
            out.push(format!(
                "the policy renders ipsets and {l} is not installed in the root: the image would boot without the sets, and the rules that match them would not load; fix: {}",
                super::sets::package_hint(mechanism)
            ));
            continue;
        }
        match enabled(root, &l)? {
            Ok(_) => {}
            Err(why) if flags.enable => match enable_links(root, &l) {
                // Refuse what cannot be enabled now, before anything is written.
                Err(e) => out.push(format!("{why}, and --enable cannot fix that: {e}")),
                Ok(_) => {
                    notes.push(format!("{why}: enabling it (--enable)"));
                    to_enable.push(l);
                }
            },
            Err(why) => out.push(format!(
                "{why}: the image would boot without loading the rules; fix: pass --enable (enables {l} offline), or enable it in the image"
            )),
        }
    }
    if mechanism == Mechanism::RcLocal {
        let os = detect::os_release(root)?.unwrap_or_default();
        const SUGGEST: &str = "install iptables-persistent in the image (apt-get install iptables-persistent) so netfilter-persistent loads the rules before the network is up";
        if os.debian_like() && !flags.chosen {
            out.push(format!(
                "this Debian-like root has no iptables-persistent, so the rules would go to rc.local, which runs after the network is up and only where systemd's rc-local generator (or /etc/init.d/rc.local) runs it; fix: {SUGGEST}, then install again; or pass --persistence rc-local to accept the fallback"
            ));
        } else if os.debian_like() {
            notes.push(format!("rc.local runs after the network is up: {SUGGEST}"));
        }
        let runners = [
            "/usr/lib/systemd/system-generators/systemd-rc-local-generator",
            "/lib/systemd/system-generators/systemd-rc-local-generator",
            "/etc/init.d/rc.local",
        ];
        if !runners
            .iter()
            .any(|p| resolve(root, Path::new(p)).is_some())
        {
            notes.push(
                "nothing in the root is known to run rc.local at boot (no systemd rc-local generator, no /etc/init.d/rc.local): check that this image's init runs it".into(),
            );
        }
    }
    Ok(BootCheck {
        refusals: out,
        notes,
        to_enable,
    })
}

/// What a policy with ipsets adds to [`check_boot`]'s refusals for `root`: no
/// ipset binary, the sets' loader missing, not enabled or not ordered before
/// the rules'. `apply` (which does not run the rest of install's checks on the
/// live host) refuses to persist sets on these.
pub fn sets_refusals(
    root: &Path,
    mechanism: Mechanism,
    v6: bool,
) -> Result<Vec<String>, PersistError> {
    let flags = BootFlags {
        enable: false,
        force: true,
        chosen: true,
    };
    let without = check_boot(root, mechanism, v6, false, &[], flags)?.refusals;
    let with = check_boot(root, mechanism, v6, true, &[], flags)?.refusals;
    Ok(with.into_iter().filter(|r| !without.contains(r)).collect())
}

/// A link for `unit` in a `*.wants` or `*.requires` directory of /etc/systemd/system.
pub fn wants_link(root: &Path, unit: &str) -> Option<String> {
    let dir = resolve(root, Path::new("/etc/systemd/system"))?;
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wants") || n.ends_with(".requires"))
        .collect();
    names.sort();
    names.into_iter().find_map(|w| {
        let p = format!("/etc/systemd/system/{w}/{unit}");
        let host = resolve(root, Path::new(&format!("/etc/systemd/system/{w}")))?.join(unit);
        host.symlink_metadata().is_ok().then_some(p)
    })
}

fn runlevel_link(root: &Path, service: &str) -> Option<String> {
    let dir = resolve(root, Path::new("/etc/runlevels"))?;
    let mut levels: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    levels.sort();
    levels.into_iter().find_map(|l| {
        let host = resolve(root, Path::new(&format!("/etc/runlevels/{l}")))?.join(service);
        host.symlink_metadata()
            .is_ok()
            .then(|| format!("/etc/runlevels/{l}/{service}"))
    })
}

fn sysv_link(root: &Path, name: &str) -> Option<String> {
    for d in ["rcS.d", "rc2.d", "rc3.d"] {
        let Some(dir) = resolve(root, &Path::new("/etc").join(d)) else {
            continue;
        };
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('S')
                && n.trim_start_matches(|c: char| c == 'S' || c.is_ascii_digit()) == name
            {
                return Some(format!("/etc/{d}/{n}"));
            }
        }
    }
    None
}

/// The links enabling `loader` would create (inside the root), and their targets.
pub fn enable_links(root: &Path, loader: &Loader) -> Result<Vec<(PathBuf, PathBuf)>, PersistError> {
    match loader {
        Loader::Systemd { unit } => {
            let (path, text) = match detect::unit(root, unit)? {
                Unit::Real { path, text } => (path, text),
                Unit::Alias { path, .. } => {
                    return Err(PersistError::Edit {
                        path: PathBuf::from(path),
                        message: format!("{unit} is an alias: enable the unit it names instead"),
                    });
                }
                Unit::Missing => {
                    return Err(PersistError::Edit {
                        path: PathBuf::from(format!("/lib/systemd/system/{unit}")),
                        message: format!("{unit} is not installed: install its package first"),
                    });
                }
            };
            let targets = install_targets(&text);
            if targets.is_empty() {
                return Err(PersistError::Edit {
                    path: PathBuf::from(path),
                    message: format!(
                        "{unit} has no WantedBy= or RequiredBy= in [Install]: it cannot be enabled"
                    ),
                });
            }
            Ok(targets
                .into_iter()
                .map(|(dir, target)| {
                    (
                        PathBuf::from(format!("/etc/systemd/system/{target}.{dir}/{unit}")),
                        PathBuf::from(&path),
                    )
                })
                .collect())
        }
        Loader::OpenRc { service } => Ok(vec![(
            PathBuf::from(format!("/etc/runlevels/default/{service}")),
            PathBuf::from(format!("/etc/init.d/{service}")),
        )]),
        Loader::RcLocal { .. } | Loader::Program { .. } => Ok(Vec::new()),
    }
}

/// The `(key, value)` of each `key=value` line in `[section]` of a unit file,
/// both trimmed, in order.
fn section_entries<'t>(
    text: &'t str,
    section: &'t str,
) -> impl Iterator<Item = (&'t str, &'t str)> {
    let mut current = "";
    text.lines().filter_map(move |line| {
        let l = line.trim();
        if l.starts_with('[') {
            current = l;
            return None;
        }
        if current.strip_prefix('[')?.strip_suffix(']')? != section {
            return None;
        }
        let (k, v) = l.split_once('=')?;
        Some((k.trim(), v.trim()))
    })
}

/// `(wants|requires, target)` of each `WantedBy=`/`RequiredBy=` in `[Install]`.
fn install_targets(text: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (k, v) in section_entries(text, "Install") {
        let dir = match k {
            "WantedBy" => "wants",
            "RequiredBy" => "requires",
            _ => continue,
        };
        for t in v.split_whitespace() {
            out.push((dir, t.to_owned()));
        }
    }
    out
}

/// Enable `loader` in `root` offline: `systemctl --root ROOT enable UNIT` when this
/// host has systemctl on PATH and it is trusted (`bins::resolve`: it runs as
/// root), else the
/// links systemctl makes; OpenRC: the runlevel link.
/// Returns what it did, one line each.
pub fn enable(root: &Path, loader: &Loader) -> Result<Vec<String>, PersistError> {
    if let Loader::Systemd { unit } = loader
        && let Some(systemctl) = portcullis_netfilter::backend::find_in_path("systemctl")
            .and_then(|_| portcullis_netfilter::bins::resolve("systemctl").ok())
    {
        let out = std::process::Command::new(&systemctl)
            .arg("--root")
            .arg(root)
            .args(["enable", "--no-reload", unit.as_str()])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|source| PersistError::Write {
                path: PathBuf::from(format!("/etc/systemd/system/{unit}")),
                source,
            })?;
        if out.status.success() {
            return Ok(vec![format!(
                "systemctl --root {} enable {unit}",
                root.display()
            )]);
        }
        return Err(PersistError::Edit {
            path: PathBuf::from(format!("/etc/systemd/system/{unit}")),
            message: format!(
                "systemctl --root enable {unit} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    let mut done = Vec::new();
    for (link, target) in enable_links(root, loader)? {
        if symlink_in_root(root, &link, &target)? {
            done.push(format!("{} -> {}", link.display(), target.display()));
        }
    }
    Ok(done)
}

/// Create the symlink `link` (inside `root`) pointing at `target`, making missing
/// directories (0755) on the way; every directory is opened `O_NOFOLLOW` from the
/// root's descriptor, so nothing leads outside the root. `Ok(false)` when the same
/// link is already there; anything else already there is refused.
fn symlink_in_root(root: &Path, link: &Path, target: &Path) -> Result<bool, PersistError> {
    use nix::errno::Errno;
    use nix::fcntl::{OFlag, openat};
    use nix::sys::stat::{Mode, mkdirat};
    use std::os::fd::AsFd as _;
    let io = |e: Errno| std::io::Error::from(e);
    let werr = |p: &Path, e: Errno| PersistError::Write {
        path: p.to_owned(),
        source: io(e),
    };
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = openat(nix::fcntl::AT_FDCWD, root, flags, Mode::empty()).map_err(|e| {
        PersistError::Root {
            path: root.to_owned(),
            source: io(e),
        }
    })?;
    let parts: Vec<_> = link
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.to_owned()),
            _ => None,
        })
        .collect();
    let Some((name, dirs)) = parts.split_last() else {
        return Err(PersistError::NotAFile {
            path: link.to_owned(),
        });
    };
    let mut so_far = PathBuf::from("/");
    for d in dirs {
        so_far.push(d);
        let next = match openat(
            dir.as_fd(),
            d.as_os_str(),
            flags | OFlag::O_NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                mkdirat(dir.as_fd(), d.as_os_str(), Mode::from_bits_truncate(0o755))
                    .map_err(|e| werr(&so_far, e))?;
                openat(
                    dir.as_fd(),
                    d.as_os_str(),
                    flags | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                )
                .map_err(|e| werr(&so_far, e))?
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(PersistError::Symlink { path: so_far });
            }
            Err(e) => return Err(werr(&so_far, e)),
        };
        dir = next;
    }
    match nix::unistd::symlinkat(target, dir.as_fd(), name.as_os_str()) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => match nix::fcntl::readlinkat(dir.as_fd(), name.as_os_str()) {
            Ok(t) if Path::new(&t) == target => Ok(false),
            _ => Err(PersistError::Exists {
                path: link.to_owned(),
            }),
        },
        Err(e) => Err(werr(link, e)),
    }
}

/// The files that define systemd `unit` in `root`, as systemd reads them: the
/// unit file (an alias's target) as `(path, text)`, then its drop-ins
/// (`UNIT.d/*.conf` under /usr/lib, /lib and /etc, by name). `Err` names what
/// is missing.
pub fn unit_sources(root: &Path, unit: &str) -> Result<Vec<(String, String)>, String> {
    let (path, text) = match detect::unit(root, unit).map_err(|e| e.to_string())? {
        Unit::Real { path, text } => (path, text),
        Unit::Alias { path, target } => {
            match detect::unit(root, &target).map_err(|e| e.to_string())? {
                Unit::Real { path, text } => (path, text),
                _ => return Err(format!("{path} is an alias of {target}, which is missing")),
            }
        }
        Unit::Missing => return Err(format!("{unit} is not installed in the root")),
    };
    let mut sources = vec![(path, text)];
    for dir in [
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
        "/etc/systemd/system",
    ] {
        let d = format!("{dir}/{unit}.d");
        let Some(host) = resolve(root, Path::new(&d)) else {
            continue;
        };
        let Ok(rd) = std::fs::read_dir(host) else {
            continue;
        };
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".conf"))
            .collect();
        names.sort();
        for n in names {
            let p = format!("{d}/{n}");
            if let Ok(Some(t)) = read_in_root(root, &p) {
                sources.push((p, t));
            }
        }
    }
    Ok(sources)
}

/// Every unit named by `key=` lines (`Before=`, `After=`) of `[Unit]` in
/// `sources` (a unit file and its drop-ins, [`unit_sources`]).
pub fn unit_list(sources: &[(String, String)], key: &str) -> Vec<String> {
    sources
        .iter()
        .flat_map(|(_, text)| section_entries(text, "Unit"))
        .filter(|(k, _)| *k == key)
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_owned))
        .collect()
}

/// The commands `loader` runs to load the rules, in order, as its init system
/// would: for a unit, each `ExecStartPre=` then each `ExecStart=` of the unit file
/// and its drop-ins (`/etc/systemd/system/UNIT.d/*.conf`, by name; an empty
/// assignment resets the list). `Err` names what is missing.
pub fn commands(root: &Path, loader: &Loader) -> Result<Vec<Exec>, String> {
    match loader {
        Loader::Systemd { unit } => {
            let sources = unit_sources(root, unit)?;
            let mut pre = Vec::new();
            let mut start = Vec::new();
            for (path, text) in &sources {
                for (k, v) in section_entries(text, "Service") {
                    let list = match k {
                        "ExecStartPre" => &mut pre,
                        "ExecStart" => &mut start,
                        _ => continue,
                    };
                    if v.is_empty() {
                        list.clear();
                        continue;
                    }
                    list.push(exec_line(v, &format!("{k}= of {path}"))?);
                }
            }
            if start.is_empty() {
                return Err(format!("{unit} has no ExecStart="));
            }
            pre.extend(start);
            Ok(pre)
        }
        // `--nodeps`: the chroot has no booted runlevel to start dependencies in.
        Loader::OpenRc { service } => Ok(vec![Exec {
            argv: vec![
                format!("/etc/init.d/{service}"),
                "--nodeps".into(),
                "start".into(),
            ],
            ignore_failure: false,
            origin: format!("OpenRC service {service}"),
        }]),
        Loader::RcLocal { script } => {
            if resolve(root, Path::new(script)).is_none() {
                return Err(format!("{script} does not exist"));
            }
            // What systemd's rc-local.service runs.
            Ok(vec![Exec {
                argv: vec![script.clone(), "start".into()],
                ignore_failure: false,
                origin: "rc-local.service".into(),
            }])
        }
        Loader::Program { argv } => Ok(vec![Exec {
            argv: argv.clone(),
            ignore_failure: false,
            origin: "/etc/init.d/netfilter-persistent".into(),
        }]),
    }
}

/// One `Exec*=` value: its prefixes (`-` ignores failure; `@`, `+`, `!`, `:` are
/// dropped) and its words (double and single quotes group; no `$` expansion).
fn exec_line(v: &str, origin: &str) -> Result<Exec, String> {
    let mut rest = v;
    let mut ignore_failure = false;
    while let Some(c) = rest.chars().next() {
        match c {
            '-' => ignore_failure = true,
            '@' | '+' | '!' | ':' => {}
            _ => break,
        }
        rest = &rest[1..];
    }
    let mut argv = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for c in rest.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    argv.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("{origin}: unbalanced quote in `{v}`"));
    }
    if in_word {
        argv.push(word);
    }
    if argv.is_empty() {
        return Err(format!("{origin}: no command in `{v}`"));
    }
    Ok(Exec {
        argv,
        ignore_failure,
        origin: origin.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_lines_split_like_systemd() {
        let e = exec_line("-/sbin/iptables-restore -w -- \"/var/lib/a b\"", "x").unwrap();
        assert!(e.ignore_failure);
        assert_eq!(
            e.argv,
            ["/sbin/iptables-restore", "-w", "--", "/var/lib/a b"]
        );
        assert!(exec_line("'unbalanced", "x").is_err());
    }

    #[test]
    fn the_ipset_loader_runs_first() {
        let root = tempfile::tempdir().unwrap();
        let names = |m: Mechanism, sets: bool| -> Vec<String> {
            loaders(root.path(), m, true, sets)
                .unwrap()
                .iter()
                .map(|l| l.to_string())
                .collect()
        };
        for m in [Mechanism::IptablesServices, Mechanism::Arch] {
            assert_eq!(
                names(m, true),
                ["ipset.service", "iptables.service", "ip6tables.service"]
            );
            assert_eq!(names(m, false), ["iptables.service", "ip6tables.service"]);
        }
        for m in [Mechanism::Alpine, Mechanism::Gentoo] {
            assert_eq!(
                names(m, true),
                [
                    "OpenRC service ipset",
                    "OpenRC service iptables",
                    "OpenRC service ip6tables"
                ]
            );
        }
        // netfilter-persistent's own unit loads them (drop-in, plugin).
        assert_eq!(
            names(Mechanism::NetfilterPersistent, true),
            ["netfilter-persistent.service"]
        );
    }

    #[test]
    fn install_section_targets() {
        let t = install_targets(
            "[Unit]\nWantedBy=no.target\n[Install]\nWantedBy=multi-user.target basic.target\nRequiredBy=x.target\n",
        );
        assert_eq!(
            t,
            vec![
                ("wants", "multi-user.target".to_owned()),
                ("wants", "basic.target".to_owned()),
                ("requires", "x.target".to_owned())
            ]
        );
    }
}
