//! Dependencies point down, kept by a test rather than a hope (rust-analyzer's
//! `tidy.rs` habit): `portcullis-netfilter` is the leaf, the lab stands on it, and
//! in the installer only the two verbs that prove rules with packets may use the
//! lab: `verify` and `test` (the `verify` and `scenario` modules and their CLI
//! verbs). Rendering, policy, apply and persistence never import
//! `portcullis_harness`.

use std::path::{Path, PathBuf};

use libtest_mimic::{Failed, Trial};

use crate::support::trial;

/// The installer files allowed to name the lab: they build it and probe it
/// (`verify`, and `scenario`, which runs the user's scenario files for `test`).
const MAY_USE_THE_LAB: &[&str] = &[
    "src/verify.rs",
    "src/verify/",
    "src/cli/verify.rs",
    "src/scenario/",
    "src/cli/test.rs",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every line of the installer's sources outside the allowed files that names the
/// lab crate, as `path:line: text`.
fn lab_imports(root: &Path) -> Result<Vec<String>, Failed> {
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files)?;
    let mut found = Vec::new();
    for file in files {
        let rel = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        if MAY_USE_THE_LAB
            .iter()
            .any(|p| rel == *p || (p.ends_with('/') && rel.starts_with(p)))
        {
            continue;
        }
        let text = std::fs::read_to_string(&file)?;
        for (i, line) in text.lines().enumerate() {
            if line.contains("portcullis_harness") {
                found.push(format!("{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    Ok(found)
}

/// The `portcullis-*` crates a manifest's `[dependencies]` names.
fn workspace_deps(manifest: &Path) -> Result<Vec<String>, Failed> {
    let text = std::fs::read_to_string(manifest)?;
    let doc: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", manifest.display()))?;
    Ok(doc
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| {
            d.keys()
                .filter(|k| k.starts_with("portcullis"))
                .cloned()
                .collect()
        })
        .unwrap_or_default())
}

pub fn trials() -> Vec<Trial> {
    let installer = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let workspace = installer.parent().unwrap_or(&installer).to_path_buf();
    let ws = workspace.clone();
    vec![
        trial(
            "layering::only_verify_and_scenario_import_the_lab",
            move || {
                let found = lab_imports(&installer)?;
                if found.is_empty() {
                    return Ok(());
                }
                Err(format!(
                "only verify/ and scenario/ may import portcullis_harness; use portcullis_netfilter for \
                 backends, the runner and counters:\n{}",
                found.join("\n")
            )
            .into())
            },
        ),
        trial("layering::the_leaf_and_the_lab_point_down", move || {
            let leaf = workspace_deps(&ws.join("netfilter/Cargo.toml"))?;
            if !leaf.is_empty() {
                return Err(
                    format!("portcullis-netfilter is the leaf, yet depends on {leaf:?}").into(),
                );
            }
            let lab = workspace_deps(&ws.join("harness/Cargo.toml"))?;
            if lab != ["portcullis-netfilter"] {
                return Err(format!("the lab must stand on the leaf alone, found {lab:?}").into());
            }
            Ok(())
        }),
        trial("layering::the_scan_sees_an_import", || {
            // The check above could pass by finding no files at all: prove it reads them.
            let dir = tempfile::tempdir()?;
            std::fs::create_dir_all(dir.path().join("src/apply"))?;
            std::fs::create_dir_all(dir.path().join("src/verify"))?;
            std::fs::write(
                dir.path().join("src/apply/mod.rs"),
                "use portcullis_harness::Lab;\n",
            )?;
            std::fs::write(
                dir.path().join("src/verify/exec.rs"),
                "use portcullis_harness::Lab;\n",
            )?;
            let found = lab_imports(dir.path())?;
            if found != ["src/apply/mod.rs:1: use portcullis_harness::Lab;"] {
                return Err(format!("expected the one apply import, found {found:?}").into());
            }
            Ok(())
        }),
    ]
}
