//! `portcullis completions`: shell completions and the man page.
//!
//! The man page is one page for every verb: the synopsis and description of
//! `portcullis`, then a COMMANDS section with each verb's synopsis and options,
//! then EXIT STATUS (`super::EXIT_STATUS`). The internal `__guard` is not a
//! subcommand of the CLI, so neither completions nor the page offer it.

use std::io::Write;
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
        man(cmd, &mut out)?;
        return Ok(ExitCode::SUCCESS);
    }
    let shell: clap_complete::Shell = args
        .shell
        .parse()
        .map_err(|e: String| super::UsageError(format!("{e}; or `man`")))?;
    clap_complete::generate(shell, &mut cmd, "portcullis", &mut out);
    Ok(ExitCode::SUCCESS)
}

/// Escape text for a roff line: backslashes, and a leading `.` or `'`.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// The whole man page: every verb, and the exit status.
pub fn man(cmd: clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let cmd = cmd.disable_help_subcommand(true);
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(w)?;
    page.render_name_section(w)?;
    page.render_synopsis_section(w)?;
    page.render_description_section(w)?;
    writeln!(w, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("portcullis {}", sub.get_name());
        writeln!(w, ".SS \"{name}\"")?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(w, "{}", roff_text(&about.to_string()))?;
        }
        // The verb's synopsis and options as clap_mangen renders them, each
        // section heading turned into a paragraph break: they are parts of this
        // subsection.
        let sub = sub.clone().bin_name(name.clone());
        let verb = clap_mangen::Man::new(sub.clone());
        let mut part = Vec::new();
        verb.render_synopsis_section(&mut part)?;
        verb.render_options_section(&mut part)?;
        if sub.get_after_long_help().is_some() || sub.get_after_help().is_some() {
            verb.render_extra_section(&mut part)?;
        }
        for line in String::from_utf8_lossy(&part).lines() {
            if line.starts_with(".SH ") {
                writeln!(w, ".PP")?;
            } else {
                writeln!(w, "{line}")?;
            }
        }
    }
    writeln!(w, ".SH \"EXIT STATUS\"")?;
    for (code, what) in super::EXIT_STATUS {
        writeln!(w, ".TP\n{code}\n{}", roff_text(what))?;
    }
    writeln!(w, ".SH \"SEE ALSO\"")?;
    writeln!(
        w,
        "The policy reference is docs/policy.md and the JSON outputs are described in docs/json.md, in the portcullis sources."
    )?;
    page.render_version_section(w)
}
