//! `portcullis completions`: shell completions and the man page.

use std::process::ExitCode;

use clap::CommandFactory as _;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// bash, zsh, fish, elvish, powershell, or `man` for the roff man page
    #[arg(value_name = "SHELL")]
    pub shell: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut cmd = super::Cli::command();
    let mut out = std::io::stdout().lock();
    if args.shell == "man" {
        clap_mangen::Man::new(cmd).render(&mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let shell: clap_complete::Shell = args
        .shell
        .parse()
        .map_err(|e: String| super::UsageError(format!("{e}; or `man`")))?;
    clap_complete::generate(shell, &mut cmd, "portcullis", &mut out);
    Ok(ExitCode::SUCCESS)
}
