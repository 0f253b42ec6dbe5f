//! `cargo xtask`: the project's own tasks, in Rust, the way rust-analyzer keeps
//! its: the benchmark driver (`bench`), the cached Debian test root
//! (`debian-root`) and the release build (`dist`). Every command runs through
//! xshell's `cmd!` with interpolated arguments, never a shell string.
//!
//! It orchestrates; it refuses to be on the runtime path (nothing in the
//! installer, the harness or the scenarios depends on it), and it never runs a
//! firewall command itself: the benchmarks it starts build their own namespaces.
//! `ci/bench` and `ci/debian-root` are thin entry points into it; `ci/setup`,
//! `ci/test` and `ci/ip-baseline.sh` stay shell.

mod bench;
mod debian_root;
mod dist;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use xshell::{Cmd, Shell, cmd};

const HELP: &str = "\
usage: cargo xtask <task> [args]

tasks:
  bench [CYCLES]                   every benchmark, one section each (default 20 lab
                                   cycles); BENCH=lab,apply,rollback,probe selects
  debian-root [--path|--rebuild]   build (once) and cache the Debian test root under
                                   /var/cache/portcullis, print its path
  dist                             the release binary, and a .deb when cargo-deb is
                                   installed
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((task, rest)) = args.split_first() else {
        eprint!("{HELP}");
        return ExitCode::FAILURE;
    };
    // Each task's messages carry the name people call it by (its ci/ entry point
    // where it has one), so the output is the same whichever way it was started.
    let (prefix, result) = match task.as_str() {
        "bench" => ("ci/bench", with_shell(|sh| bench::run(sh, rest))),
        "debian-root" => (
            "ci/debian-root",
            with_shell(|sh| debian_root::run(sh, rest)),
        ),
        "dist" => ("xtask dist", with_shell(|sh| dist::run(sh, rest))),
        "help" | "-h" | "--help" => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprint!("xtask: unknown task {other}\n\n{HELP}");
            return ExitCode::FAILURE;
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{prefix}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn with_shell(task: impl FnOnce(&Shell) -> Result<()>) -> Result<()> {
    task(&Shell::new()?)
}

/// The workspace root: the xtask's own manifest directory is one below it.
fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lives inside the workspace")
        .to_path_buf()
}

/// Cargo's target directory as ci/bench always read it: `CARGO_TARGET_DIR`, or
/// `target` under the workspace root.
fn target_dir(sh: &Shell) -> PathBuf {
    let dir = non_empty_var(sh, "CARGO_TARGET_DIR").unwrap_or_else(|| "target".into());
    project_root().join(dir)
}

/// A variable the way `${VAR:-default}` reads it: unset and empty are the same.
fn non_empty_var(sh: &Shell, key: &str) -> Option<String> {
    sh.var(key).ok().filter(|v| !v.is_empty())
}

fn is_root(sh: &Shell) -> Result<bool> {
    Ok(cmd!(sh, "id -u").quiet().read()?.trim() == "0")
}

/// A cargo started from here must not inherit what `cargo run` hands its child
/// about the xtask package: a build script that watches one of those variables
/// (ring watches CARGO_MANIFEST_DIR) would rebuild its crate, and rebuild it again
/// at the next plain `cargo build`.
fn clean_cargo_env(cmd: Cmd<'_>) -> Cmd<'_> {
    std::env::vars_os()
        .map(|(key, _)| key)
        .filter(|key| {
            let key = key.to_string_lossy();
            key.starts_with("CARGO_PKG_")
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                ]
                .contains(&key.as_ref())
        })
        .fold(cmd, |cmd, key| cmd.env_remove(key))
}
