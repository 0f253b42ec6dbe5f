//! The iptables backends (`nft` and `legacy`) and the one way rules reach a kernel:
//! a single `*-restore -w` call per family.
//!
//! Everything here acts on the network namespace of the calling thread. The harness
//! runs its commands inside a lab host's namespace instead (its own `Host::load`
//! and `Host::counters`, through [`run_prepared`]); the installer calls these on
//! the live host. Commands run through the one runner ([`crate::runner`]) as
//! argument vectors (no shell), and every error carries the command line and its
//! stderr.

use std::fmt;
use std::str::FromStr;

// The runner lives in its own module; these paths are the ones callers know.
pub use crate::runner::{find_in_path, run, run_prepared};

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

/// `ipset restore` of `sets` then `RESTORE -w --test` of `text`, in one private
/// network namespace (`unshare -n`): how `check`, the tests and the scale bench
/// test a ruleset whose rules match ipsets. The set text goes through a private temporary file (a
/// set list is public data); the script is a constant, the paths its arguments.
pub fn test_with_sets(
    unshare: &str,
    ipset: &str,
    restore: &str,
    sets: &str,
    text: &str,
) -> Result<String, BackendError> {
    test_with_sets_ns(unshare, "-n", ipset, restore, sets, text)
}

/// [`test_with_sets`] with `unshare`'s namespace flag: `-n` as root, `-rn` (a
/// user namespace too) otherwise.
pub fn test_with_sets_ns(
    unshare: &str,
    ns: &str,
    ipset: &str,
    restore: &str,
    sets: &str,
    text: &str,
) -> Result<String, BackendError> {
    use std::io::Write as _;
    let fail = |e: std::io::Error| BackendError::Failed {
        command: "write the set file".to_owned(),
        stderr: e.to_string(),
    };
    // A new file (random name, O_EXCL: never an existing one, never through a
    // symlink), 0600, removed when `file` drops, after the test.
    let mut file = tempfile::Builder::new()
        .prefix("portcullis-test-")
        .suffix(".ipset")
        .tempfile()
        .map_err(fail)?;
    file.write_all(sets.as_bytes()).map_err(fail)?;
    file.flush().map_err(fail)?;
    let path = file.path().display().to_string();
    run(
        &[
            unshare,
            ns,
            "sh",
            "-ec",
            "\"$0\" restore -f \"$1\"; exec \"$2\" -w --test",
            ipset,
            &path,
            restore,
        ],
        Some(text),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
