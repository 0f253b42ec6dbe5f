//! `portcullis render`: print (or write) the iptables-restore text of a policy.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::render::Family;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The policy file (default: the embedded default policy)
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Render one family only (ipv4 or ipv6)
    #[arg(long, value_name = "FAMILY")]
    pub family: Option<Family>,
    /// Write rules.v4 and rules.v6 into this directory instead of printing
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let policy = crate::Policy::load_or_default(args.config.as_deref())?;
    let rendered = crate::render(&policy);
    let families: Vec<Family> = match args.family {
        Some(f) => vec![f],
        None => Family::ALL.to_vec(),
    };
    match args.out_dir {
        None => {
            for f in families {
                if let Some(text) = rendered.text(f) {
                    print!("{text}");
                }
            }
        }
        Some(dir) => {
            for f in families {
                let name = match f {
                    Family::V4 => "rules.v4",
                    Family::V6 => "rules.v6",
                };
                if let Some(text) = rendered.text(f) {
                    let path = dir.join(name);
                    std::fs::write(&path, text)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
