//! The iptables backends (`nft` and `legacy`) and the one way rules reach a kernel:
//! a single `*-restore -w` call per family.
//!
//! Everything here acts on the network namespace of the calling thread. The harness
//! calls it from a lab host's own thread; the installer calls it on the live host.
//! Commands run as argument vectors (no shell), and every error carries the command line
//! and its stderr.

use std::fmt;
use std::str::FromStr;

/// An address family: one ruleset file, one set of binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The name used on the command line and in file names (`ipv4`, `ipv6`).
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        }
    }

    /// `iptables` or `ip6tables`: the prefix of every binary of this family.
    pub fn tool_prefix(self) -> &'static str {
        match self {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Family {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ipv4" | "v4" | "4" => Ok(Family::V4),
            "ipv6" | "v6" | "6" => Ok(Family::V6),
            other => Err(format!("unknown family `{other}`: expected ipv4 or ipv6")),
        }
    }
}

/// Which kernel API the iptables binaries drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Backend {
    Nft,
    Legacy,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Nft, Backend::Legacy];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }

    /// `iptables-nft`, `ip6tables-legacy`, ...
    pub fn binary(self, family: Family) -> String {
        format!("{}-{}", family.tool_prefix(), self.name())
    }

    /// `iptables-nft-restore`, `ip6tables-legacy-restore`, ...
    pub fn restore_binary(self, family: Family) -> String {
        format!("{}-restore", self.binary(family))
    }

    /// `iptables-nft-save`, `ip6tables-legacy-save`, ...
    pub fn save_binary(self, family: Family) -> String {
        format!("{}-save", self.binary(family))
    }

    /// Whether both families' restore and save binaries are found and trusted
    /// ([`crate::bins::resolve`]).
    pub fn available(self) -> bool {
        self.unavailable_reason().is_none()
    }

    /// Why this backend cannot be used here, or `None` when it can.
    pub fn unavailable_reason(self) -> Option<String> {
        for f in Family::ALL {
            for bin in [self.restore_binary(f), self.save_binary(f)] {
                if let Err(e) = crate::bins::resolve(&bin) {
                    return Some(e.to_string());
                }
            }
        }
        None
    }

    /// The backend the host's plain `iptables` uses, read from `iptables -V`
    /// (`iptables v1.8.9 (nf_tables)` or `(legacy)`).
    pub fn detect() -> Result<Backend, BackendError> {
        let iptables = crate::bins::resolve("iptables")?;
        let out = run(&[&iptables.to_string_lossy(), "-V"], None)?;
        Backend::from_version_line(&out).ok_or_else(|| BackendError::UnknownVersion {
            output: out.trim().to_owned(),
        })
    }

    /// Parse the output of `iptables -V`.
    pub fn from_version_line(line: &str) -> Option<Backend> {
        if line.contains("(nf_tables)") {
            Some(Backend::Nft)
        } else if line.contains("(legacy)") {
            Some(Backend::Legacy)
        } else {
            None
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nft" | "nf_tables" => Ok(Backend::Nft),
            "legacy" => Ok(Backend::Legacy),
            other => Err(format!("unknown backend `{other}`: expected nft or legacy")),
        }
    }
}

/// What went wrong running an iptables binary.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot tell the iptables backend from `iptables -V`: {output:?}")]
    UnknownVersion { output: String },
    /// The binary is missing or not safe to run as root.
    #[error(transparent)]
    Binary(#[from] crate::bins::BinError),
}

/// Load `text` with one `*-restore -w` call. `test_only` passes `--test`: the kernel
/// parses and checks the whole ruleset and commits nothing.
pub fn restore(
    backend: Backend,
    family: Family,
    text: &str,
    test_only: bool,
) -> Result<(), BackendError> {
    let bin = crate::bins::resolve(&backend.restore_binary(family))?;
    let bin = bin.to_string_lossy();
    let mut argv = vec![&*bin, "-w"];
    if test_only {
        argv.push("--test");
    }
    run(&argv, Some(text)).map(drop)
}

/// The ruleset of `family` as `*-save` prints it; `counters` adds `-c`
/// (`[packets:bytes]` before each rule and chain policy).
pub fn save(backend: Backend, family: Family, counters: bool) -> Result<String, BackendError> {
    let bin = crate::bins::resolve(&backend.save_binary(family))?;
    let bin = bin.to_string_lossy();
    let mut argv = vec![&*bin];
    if counters {
        argv.push("-c");
    }
    run(&argv, None)
}

/// Run `argv` (no shell) with optional stdin; stdout on success, a `BackendError`
/// naming the command and its stderr otherwise.
///
/// A child may exit before it has read all of its input: `iptables-restore` stops
/// at the first bad line. Its stdin is written from a thread and a broken pipe
/// there is not the error: the exit status and stderr always are, so the message
/// names the bad line instead of "Broken pipe".
pub fn run(argv: &[&str], stdin: Option<&str>) -> Result<String, BackendError> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let command = argv.join(" ");
    let spawn_err = |source: std::io::Error| BackendError::Spawn {
        command: command.clone(),
        source,
    };
    let (program, args) = argv.split_first().expect("argv is never empty");
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    // From a thread, so a child that fills its stdout or stderr pipe before it
    // reads its input cannot deadlock against us.
    let writer = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => {
            let input = input.to_owned();
            Some(std::thread::spawn(move || {
                pipe.write_all(input.as_bytes())
                // Dropping `pipe` closes it: the child sees end of input.
            }))
        }
        _ => None,
    };
    let out = child.wait_with_output().map_err(spawn_err)?;
    let written = writer.map_or(Ok(()), |w| {
        w.join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the stdin writer panicked")))
    });
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stderr = if stderr.is_empty() {
            format!("exit status {}", out.status)
        } else {
            stderr
        };
        return Err(BackendError::Failed { command, stderr });
    }
    match written {
        // The child succeeded without reading everything: its exit status decides.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(spawn_err(e)),
        _ => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
    }
}

/// The first executable named `name` on PATH (plus the sbin directories, which a
/// non-root PATH often lacks).
pub fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(std::path::PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `*-restore` that rejects its input without reading it, the way
    /// iptables-restore stops at the first bad line.
    #[test]
    fn a_child_that_stops_reading_stdin_still_reports_its_stderr() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-restore");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'iptables-restore: line 2 failed' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Far more than a pipe buffer, so the write must hit the closed pipe.
        let input = "-A INPUT -j DROP\n".repeat(64 * 1024);
        let fake = fake.display().to_string();
        match run(&[&fake, "-w"], Some(&input)) {
            Err(BackendError::Failed { command, stderr }) => {
                assert_eq!(command, format!("{fake} -w"));
                assert_eq!(stderr, "iptables-restore: line 2 failed");
            }
            other => panic!("expected the child's stderr, got {other:?}"),
        }
    }

    #[test]
    fn stdout_comes_back_and_stdin_is_read() {
        assert_eq!(run(&["cat"], Some("a\nb\n")).unwrap(), "a\nb\n");
        assert_eq!(run(&["true"], None).unwrap(), "");
        assert!(matches!(
            run(&["/nonexistent/portcullis-test"], None),
            Err(BackendError::Spawn { .. })
        ));
    }

    #[test]
    fn version_line_names_the_backend() {
        assert_eq!(
            Backend::from_version_line("iptables v1.8.9 (nf_tables)"),
            Some(Backend::Nft)
        );
        assert_eq!(
            Backend::from_version_line("iptables v1.8.9 (legacy)"),
            Some(Backend::Legacy)
        );
        assert_eq!(Backend::from_version_line("iptables v1.4.21"), None);
    }

    #[test]
    fn binaries_are_named_by_family_and_backend() {
        assert_eq!(
            Backend::Nft.restore_binary(Family::V6),
            "ip6tables-nft-restore"
        );
        assert_eq!(
            Backend::Legacy.save_binary(Family::V4),
            "iptables-legacy-save"
        );
    }
}
