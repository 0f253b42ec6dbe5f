//! What `verify` derives from a policy, pinned: for the embedded default and every
//! policy under `examples/`, the CIDR mappings onto the standard lab, then every
//! expectation in order (one JSON object a line), then the notes, in
//! `tests/golden/<name>.expectations`. `SNAPSHOTS=overwrite` rewrites them; review
//! the diff like code. A refactor of `verify::expect` must leave them unchanged.

use libtest_mimic::{Failed, Trial};
use portcullis::Policy;
use portcullis::verify::{self, exec};

use crate::golden::policies;
use crate::policy_test::{installer_dir, overwrite};
use crate::support::trial;

/// The derivation of `text` in the standard lab, as the snapshot spells it.
fn derive(name: &str, text: &str) -> Result<String, Failed> {
    let policy = Policy::parse(text, name).map_err(|e| e.to_string())?;
    let topo = exec::topology();
    let (lab_policy, mappings) = verify::map_policy(&policy, &topo);
    let derived = verify::expectations(&lab_policy, &topo);
    let mut out = String::new();
    for m in &mappings {
        out.push_str(&format!("map {}\n", serde_json::to_string(m)?));
    }
    for e in &derived.expectations {
        out.push_str(&format!("expect {}\n", serde_json::to_string(e)?));
    }
    for n in &derived.notes {
        out.push_str(&format!("note {n}\n"));
    }
    Ok(out)
}

fn compare(name: &str, text: &str) -> Result<(), Failed> {
    let got = derive(name, text)?;
    if !got.lines().any(|l| l.starts_with("expect ")) {
        return Err(format!("{name}: no expectation derived").into());
    }
    let path = installer_dir().join(format!("tests/golden/{name}.expectations"));
    if overwrite() {
        std::fs::write(&path, &got)?;
        return Ok(());
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| "<no file>\n".to_owned());
    if got == want {
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(&want, &got)
        .unified_diff()
        .header("golden", "derived")
        .to_string();
    Err(format!(
        "{} differs (SNAPSHOTS=overwrite rewrites it):\n{diff}",
        path.display()
    )
    .into())
}

pub fn trials() -> Vec<Trial> {
    policies()
        .into_iter()
        .map(|(name, text)| {
            trial(format!("verify_expect::{name}"), move || {
                compare(&name, &text)
            })
        })
        .collect()
}
