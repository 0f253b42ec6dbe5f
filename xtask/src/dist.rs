//! The release build: `cargo build --release` of the `portcullis` binary and,
//! when cargo-deb is installed, a .deb of it through `ci/build-deb --prebuilt`
//! (which generates the man page and completions the package ships, then runs
//! `cargo deb --no-build`). It never installs cargo-deb: without it, `dist`
//! says so and builds the binary only.

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

use crate::{clean_cargo_env, project_root, target_dir};

pub(crate) fn run(sh: &Shell, args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("unexpected argument {}: dist takes none", args.join(" "));
    }
    let _cwd = sh.push_dir(project_root());
    let build = cmd!(
        sh,
        "cargo build --release --locked --package portcullis --bin portcullis"
    );
    clean_cargo_env(build).run()?;
    let binary = target_dir(sh).join("release/portcullis");

    let have_cargo_deb = cmd!(sh, "cargo deb --version")
        .quiet()
        .ignore_stdout()
        .ignore_stderr()
        .run()
        .is_ok();
    if have_cargo_deb {
        clean_cargo_env(cmd!(sh, "ci/build-deb --prebuilt")).run()?;
    } else {
        eprintln!(
            "xtask dist: cargo-deb is not installed, so no .deb (cargo install cargo-deb); built the binary only"
        );
    }
    println!("{}", binary.display());
    Ok(())
}
