//! Finding scenario files and naming their trials. A path given as a file is a
//! scenario; a directory is searched recursively for `*.toml` files (hidden
//! directories and `target/` left out, symlinks not followed). A TOML file found
//! by the search with neither `description` nor `[[step]]` is not a scenario (a
//! policy it names, say) and is reported as skipped; one that does not parse
//! as TOML at all is kept, so its error is shown.

use std::path::{Path, PathBuf};

/// One scenario file and the name of its trials (`area::file`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub name: String,
}

/// What a search found.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// Sorted by name.
    pub scenarios: Vec<Found>,
    /// TOML files found in directories that are not scenarios.
    pub skipped: Vec<PathBuf>,
}

/// Why a search found nothing usable.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("no scenario files under {0}")]
    Empty(String),
    #[error(
        "two scenarios are both named `{name}`: {a} and {b} (give a common parent directory instead)"
    )]
    Duplicate { name: String, a: String, b: String },
}

/// `seed/ssh-friendly.toml` under `root` -> `seed::ssh_friendly`.
pub fn trial_name(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path).with_extension("");
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().replace('-', "_"))
        .collect::<Vec<_>>()
        .join("::")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DiscoverError + '_ {
    move |source| DiscoverError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DiscoverError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let ty = entry.file_type().map_err(io(&path))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if ty.is_dir() {
            if !name.starts_with('.') && name != "target" {
                walk(&path, out)?;
            }
        } else if ty.is_file() && path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether a TOML file found by the search is a scenario: it has `description`
/// or `[[step]]`, or it is not TOML at all (its error belongs to the user).
fn looks_like_scenario(path: &Path) -> Result<bool, DiscoverError> {
    let text = crate::input::read_capped(path, crate::input::RULES_MAX_BYTES)
        .map_err(io(path))?
        .text;
    Ok(match text.parse::<toml::Table>() {
        Ok(t) => t.contains_key("description") || t.contains_key("step"),
        Err(_) => true,
    })
}

/// Every scenario under `paths` (files, or directories searched recursively),
/// named relative to the directory that was searched (a file given directly is
/// named by its stem). Sorted by name; an empty result is an error.
pub fn discover(paths: &[PathBuf]) -> Result<Discovery, DiscoverError> {
    let mut found = Discovery::default();
    for given in paths {
        let meta = std::fs::metadata(given).map_err(io(given))?;
        if !meta.is_dir() {
            found.scenarios.push(Found {
                path: given.clone(),
                name: trial_name(given.parent().unwrap_or(Path::new("")), given),
            });
            continue;
        }
        let mut files = Vec::new();
        walk(given, &mut files)?;
        let before = found.scenarios.len();
        for path in files {
            if looks_like_scenario(&path)? {
                found.scenarios.push(Found {
                    name: trial_name(given, &path),
                    path,
                });
            } else {
                found.skipped.push(path);
            }
        }
        if found.scenarios.len() == before {
            return Err(DiscoverError::Empty(given.display().to_string()));
        }
    }
    found
        .scenarios
        .sort_by(|a, b| a.name.cmp(&b.name).then(a.path.cmp(&b.path)));
    found.scenarios.dedup();
    found.skipped.sort();
    found.skipped.dedup();
    if let Some(w) = found.scenarios.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(DiscoverError::Duplicate {
            name: w[0].name.clone(),
            a: w[0].path.display().to_string(),
            b: w[1].path.display().to_string(),
        });
    }
    Ok(found)
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
    fn directories_are_searched_and_policies_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("web/deep")).unwrap();
        std::fs::create_dir_all(d.join("policies")).unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::create_dir_all(d.join("target")).unwrap();
        std::fs::write(d.join("web/deep/a-b.toml"), "description = \"x\"\n").unwrap();
        std::fs::write(d.join("web/c.toml"), "[[step]]\nprobe = \"ssh\"\n").unwrap();
        std::fs::write(d.join("web/broken.toml"), "description = \n").unwrap();
        std::fs::write(d.join("web/notes.txt"), "description = \"x\"\n").unwrap();
        std::fs::write(d.join("policies/p.toml"), "[ssh]\nallow_from = []\n").unwrap();
        std::fs::write(d.join(".git/h.toml"), "description = \"x\"\n").unwrap();
        std::fs::write(d.join("target/t.toml"), "description = \"x\"\n").unwrap();
        let found = discover(&[d.to_owned()]).unwrap();
        let names: Vec<&str> = found.scenarios.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["web::broken", "web::c", "web::deep::a_b"]);
        assert_eq!(found.skipped, [d.join("policies/p.toml")]);

        // A file given directly is a scenario whatever it holds, named by its stem.
        let one = discover(&[d.join("policies/p.toml")]).unwrap();
        assert_eq!(one.scenarios[0].name, "p");
        // Two files of one name from different places cannot both be reported.
        std::fs::write(d.join("web/deep/c.toml"), "description = \"y\"\n").unwrap();
        let e = discover(&[d.join("web/c.toml"), d.join("web/deep/c.toml")]).unwrap_err();
        assert!(matches!(e, DiscoverError::Duplicate { .. }), "{e}");
        // Nothing there is an error, not zero tests passed.
        assert!(matches!(
            discover(&[d.join("policies")]),
            Err(DiscoverError::Empty(_))
        ));
        assert!(matches!(
            discover(&[d.join("missing")]),
            Err(DiscoverError::Io { .. })
        ));
    }
}
