//! The scenario suite: this crate's scenario files (`seed/`, `inbound/`, ...),
//! turned into libtest-mimic trials (one per file x backend, plus a `parse` trial
//! per file that runs anywhere) by [`trials`], and the flows that need code
//! ([`flows`]).
//!
//! Discovery, the format and the runner are the installer's
//! (`portcullis::scenario`), the very functions `portcullis test` calls: the
//! suite and the verb cannot judge a file differently.
//!
//! It refuses to run a privileged trial without root or without its backend: such
//! trials are reported ignored, with the reason, never passed. Nothing here enters
//! a namespace: the lab's hosts run on their own threads.

pub mod flows;

use std::path::PathBuf;

use libtest_mimic::{Failed, Trial};
use portcullis::scenario;
use portcullis_harness::Backend;
use portcullis_harness::trial::privileged;

pub use portcullis::scenario::{FormatError, Scenario, Step, cannot_run};

/// The folder holding the area folders: this crate's directory.
pub fn scenarios_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The trials of every scenario file under `root` (searched as `portcullis test
/// ROOT` searches it): `NAME::parse` (anywhere) and `NAME::BACKEND` for each
/// backend.
pub fn trials(root: &std::path::Path) -> Vec<Trial> {
    let found = match scenario::discover(&[root.to_owned()]) {
        Ok(f) => f,
        Err(e) => {
            let msg = e.to_string();
            return vec![Trial::test("discover", move || Err(msg.into()))];
        }
    };
    let mut out = Vec::new();
    for f in found.scenarios {
        let name = f.name;
        let parsed = Scenario::load(&f.path).map_err(|e| e.to_string());
        let p = parsed.clone();
        out.push(Trial::test(format!("{name}::parse"), move || {
            scenario::check(&p?).map_err(Failed::from)
        }));
        for backend in Backend::ALL {
            let needs_ssh = parsed.as_ref().is_ok_and(scenario::needs_ssh);
            let reason = cannot_run(backend, needs_ssh);
            let scn = parsed.clone();
            out.push(privileged(
                format!("{name}::{backend}"),
                reason,
                move || {
                    scenario::run_trial(&scn?, backend)
                        .map(drop)
                        .map_err(|f| Failed::from(f.message))
                },
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_policies_and_the_manifest_are_skipped() {
        let found = scenario::discover(&[scenarios_dir()]).unwrap();
        assert!(found.scenarios.len() >= 16, "{:?}", found.scenarios);
        let skipped: Vec<String> = found
            .skipped
            .iter()
            .map(|p| {
                p.strip_prefix(scenarios_dir())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        for s in &skipped {
            assert!(
                s == "Cargo.toml" || s.starts_with("policies/"),
                "skipped {s}: a scenario file without description?"
            );
        }
        assert!(skipped.iter().any(|s| s.starts_with("policies/")));
    }
}
