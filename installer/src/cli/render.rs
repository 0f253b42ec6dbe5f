//! `portcullis render`: print (or write) the iptables-restore text of a policy.
//!
//! Printing writes one family (IPv4 unless `--family ipv6`), so that
//! `portcullis render | iptables-restore --test` reads a file it can parse;
//! `--out-dir` writes both, atomically, and `ipsets` (the `ipset restore` text)
//! when the policy has sets. It never writes through a symlink and
//! never leaves a half-written file.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use crate::persist::atomic::{Existing, write_file};
use crate::render::Family;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (default: the embedded default policy)
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Render one family only: ipv4 or ipv6 (printing defaults to ipv4)
    #[arg(long, value_name = "FAMILY")]
    pub family: Option<Family>,
    /// Write rules.v4 and rules.v6 (and `ipsets`, when the policy has sets) into
    /// this directory instead of printing
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// The file name a family's rules get in `--out-dir` (Debian's names).
pub fn file_name(family: Family) -> &'static str {
    match family {
        Family::V4 => "rules.v4",
        Family::V6 => "rules.v6",
    }
}

/// The file name of the `ipset restore` text in `--out-dir`.
pub const SETS_FILE: &str = "ipsets";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = crate::cli::load_policy_or_default(args.config.as_deref())?;
    super::warn(&crate::lint(&policy));
    let rendered = crate::render(&policy);
    match args.out_dir {
        None => {
            let family = args.family.unwrap_or(Family::V4);
            match rendered.text(family) {
                Some(text) => {
                    let mut out = std::io::stdout().lock();
                    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                        // `portcullis render | head` closed the pipe: not an error.
                        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                        r => r.context("cannot write to stdout")?,
                    }
                }
                None => eprintln!("portcullis: ipv6.mode is \"untouched\": no ipv6 ruleset"),
            }
            if !rendered.sets.is_empty() {
                eprintln!(
                    "portcullis: the rules match {} ipset(s), which must be loaded first: \
                     `--out-dir DIR` writes them to DIR/{SETS_FILE} for `ipset restore`",
                    rendered.sets.len()
                );
            }
            if args.family.is_none() && rendered.v6.is_some() {
                eprintln!(
                    "portcullis: printed the ipv4 ruleset; `--family ipv6` prints the ipv6 one, \
                     `--out-dir DIR` writes both"
                );
            }
        }
        Some(dir) => {
            create_dir(&dir)?;
            if let Some(text) = rendered.sets_text() {
                let path = dir.join(SETS_FILE);
                write_file(&path, text.as_bytes(), 0o600, Existing::Replace)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                eprintln!("portcullis: wrote {}", path.display());
            }
            let families = match args.family {
                Some(f) => vec![f],
                None => Family::ALL.to_vec(),
            };
            for f in families {
                let path = dir.join(file_name(f));
                match rendered.text(f) {
                    Some(text) => {
                        write_file(&path, text.as_bytes(), 0o600, Existing::Replace)
                            .with_context(|| format!("cannot write {}", path.display()))?;
                        eprintln!("portcullis: wrote {}", path.display());
                    }
                    None => {
                        let existing = if path.symlink_metadata().is_ok() {
                            " (the existing one was left as it was)"
                        } else {
                            ""
                        };
                        eprintln!(
                            "portcullis: ipv6.mode is \"untouched\": wrote no {}{existing}",
                            path.display()
                        );
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn create_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}
