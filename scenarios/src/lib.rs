//! The scenario suite: scenario files under this crate's area folders
//! (`seed/`, ...), parsed and validated by [`format`], run against the standard
//! lab by [`run`], and turned into libtest-mimic trials (one per file x backend,
//! plus a `parse` trial per file that runs anywhere) by [`trials`].
//!
//! It refuses to run a privileged trial without root or without its backend: such
//! trials are reported ignored, with the reason, never passed. Nothing here enters
//! a namespace: the lab's hosts run on their own threads.

pub mod flows;
pub mod format;
pub mod run;

use std::path::{Path, PathBuf};

use libtest_mimic::{Failed, Trial};
use portcullis_harness::Backend;
use portcullis_harness::trial::privileged;

pub use format::{FormatError, Scenario, Step};

/// The folder holding the area folders: this crate's directory.
pub fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Folders of this crate that hold no scenarios.
const NOT_AREAS: [&str; 4] = ["src", "tests", "policies", "target"];

/// Every scenario file under `root`'s area folders, sorted.
pub fn discover(root: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let path = entry.path();
            let ty = entry.file_type()?;
            if ty.is_dir() {
                walk(&path, out)?;
            } else if ty.is_file() && path.extension().is_some_and(|e| e == "toml") {
                out.push(path);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if entry.file_type()?.is_dir() && !name.starts_with('.') && !NOT_AREAS.contains(&&*name) {
            walk(&entry.path(), &mut out)?;
        }
    }
    out.sort();
    Ok(out)
}

/// `seed/ssh_friendly_subnet.toml` -> `seed::ssh_friendly_subnet`.
pub fn trial_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path).with_extension("");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().replace('-', "_"))
        .collect::<Vec<_>>()
        .join("::")
}

/// Why a privileged trial cannot run here even as root (its backend, conntrack or
/// OpenSSH missing), or `None`; root itself is [`privileged`]'s to check.
pub fn cannot_run(backend: Backend, needs_ssh: bool) -> Option<String> {
    if let Some(r) = backend.unavailable_reason() {
        return Some(r);
    }
    // Links, routes and neighbour flushes go over rtnetlink (no `ip`); conntrack
    // is flushed over ctnetlink, and the binary is the fallback some kernels need.
    if portcullis_harness::backend::find_in_path("conntrack").is_none() {
        return Some("conntrack not found (install conntrack)".into());
    }
    if needs_ssh {
        for bin in ["sshd", "ssh", "ssh-keygen"] {
            if portcullis_harness::backend::find_in_path(bin).is_none() {
                return Some(format!(
                    "{bin} not found (install openssh-server and openssh-client)"
                ));
            }
        }
    }
    None
}

/// The trials of every scenario file under `root`: `NAME::parse` (anywhere) and
/// `NAME::BACKEND` for each backend.
pub fn trials(root: &Path) -> Vec<Trial> {
    let files = match discover(root) {
        Ok(f) => f,
        Err(e) => {
            let msg = format!("cannot list scenario files under {}: {e}", root.display());
            return vec![Trial::test("discover", move || Err(msg.into()))];
        }
    };
    let mut out = Vec::new();
    for path in files {
        let name = trial_name(root, &path);
        let parsed = Scenario::load(&path).map_err(|e| e.to_string());
        let p = parsed.clone();
        out.push(Trial::test(format!("{name}::parse"), move || {
            run::check_counters_exist(&p?).map_err(Failed::from)
        }));
        for backend in Backend::ALL {
            let needs_ssh = parsed.as_ref().is_ok_and(run::uses_ssh);
            let reason = cannot_run(backend, needs_ssh);
            let scn = parsed.clone();
            out.push(privileged(
                format!("{name}::{backend}"),
                reason,
                move || run_trial(scn?, backend),
            ));
        }
    }
    out
}

fn run_trial(scn: Scenario, backend: Backend) -> Result<(), Failed> {
    let rows = run::run(&scn, backend)?;
    if rows.iter().all(|r| r.pass()) {
        Ok(())
    } else {
        Err(format!(
            "{}: {}\n{}",
            scn.path.display(),
            scn.description,
            run::matrix_text(&rows)
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trial_names_follow_the_path() {
        let root = Path::new("/x/scenarios");
        assert_eq!(
            trial_name(root, Path::new("/x/scenarios/seed/ssh-friendly.toml")),
            "seed::ssh_friendly"
        );
    }

    #[test]
    fn every_shipped_scenario_is_discovered_outside_src_and_policies() {
        let files = discover(&scenarios_dir()).unwrap();
        assert!(!files.is_empty());
        for f in &files {
            let rel = f.strip_prefix(scenarios_dir()).unwrap();
            let first = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy();
            assert!(!NOT_AREAS.contains(&&*first), "{}", f.display());
        }
    }
}
