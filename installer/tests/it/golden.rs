//! Golden files: the exact rendered text of the embedded default and of every
//! policy under `examples/`, in `tests/golden/<name>.v4` and `.v6` (no `.v6` when
//! IPv6 is untouched). `SNAPSHOTS=overwrite` rewrites them; review the diff like
//! code. Each golden file is then fed to the real `*-restore --test` of both
//! backends inside a fresh network namespace, after `ipset restore` of the
//! policy's sets (`tests/golden/<name>.ipset`, when it has any) there.

use std::path::PathBuf;

use libtest_mimic::{Failed, Trial};
use portcullis::Policy;
use portcullis_harness::{Backend, Family};

use crate::policy_test::{files, installer_dir, overwrite};
use crate::support::trial;
use portcullis_harness::trial::privileged;

/// (name, policy text): `default` and each example by file stem.
pub fn policies() -> Vec<(String, String)> {
    let mut v = vec![(
        "default".to_owned(),
        portcullis::policy::DEFAULT_POLICY.to_owned(),
    )];
    for (name, path) in files(&installer_dir().join("../examples"), "toml") {
        v.push((name, std::fs::read_to_string(path).unwrap()));
    }
    v
}

pub fn golden_path(name: &str, family: Family) -> PathBuf {
    let ext = match family {
        Family::V4 => "v4",
        Family::V6 => "v6",
    };
    installer_dir().join(format!("tests/golden/{name}.{ext}"))
}

fn compare(name: &str, text: &str) -> Result<(), Failed> {
    let policy = Policy::parse(text, name)?;
    let rendered = portcullis::render(&policy);
    let mut errors = Vec::new();
    let sets_path = installer_dir().join(format!("tests/golden/{name}.ipset"));
    let sets = rendered.sets_text();
    if overwrite() {
        match &sets {
            Some(t) => std::fs::write(&sets_path, t)?,
            None => {
                let _ = std::fs::remove_file(&sets_path);
            }
        }
    } else if sets != std::fs::read_to_string(&sets_path).ok() {
        errors.push(format!(
            "{} differs or is missing (SNAPSHOTS=overwrite rewrites it)",
            sets_path.display()
        ));
    }
    for family in Family::ALL {
        let path = golden_path(name, family);
        let got = rendered.text(family);
        if overwrite() {
            match &got {
                Some(t) => std::fs::write(&path, t)?,
                None => {
                    let _ = std::fs::remove_file(&path);
                }
            }
            continue;
        }
        let want = std::fs::read_to_string(&path).ok();
        if got != want {
            let diff = similar::TextDiff::from_lines(
                want.as_deref().unwrap_or("<no file>\n"),
                got.as_deref().unwrap_or("<not rendered>\n"),
            )
            .unified_diff()
            .header("golden", "rendered")
            .to_string();
            errors.push(format!(
                "{} differs (SNAPSHOTS=overwrite rewrites it):\n{diff}",
                path.display()
            ));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n").into())
    }
}

/// Load `text` into a fresh namespace and list `chain` with `iptables -L -n`,
/// which prints each comment as `/* ... */` exactly as the kernel holds it.
fn load_and_list(
    backend: Backend,
    family: Family,
    text: &str,
    chain: &str,
) -> Result<String, Failed> {
    let restore = backend.restore_binary(family);
    let list = backend.binary(family);
    // A constant script; the binaries and chain are arguments, never spliced in.
    let out = portcullis_harness::backend::run(
        &[
            "unshare",
            "-n",
            "sh",
            "-ec",
            "\"$0\" -w; \"$1\" -w -n -L \"$2\"",
            &restore,
            &list,
            chain,
        ],
        Some(text),
    )?;
    Ok(out)
}

/// Quotes, backslashes and apostrophes in comments reach the kernel literally:
/// the escaping in `rule::quote_comment` is read back by iptables-restore as the
/// user wrote it (checked per backend with the mail-relay example's comments).
fn comments_read_back_literally(backend: Backend) -> Result<(), Failed> {
    let p = Policy::load(&installer_dir().join("../examples/mail-relay.toml"))?;
    let rendered = portcullis::render(&p);
    let mut tricky = 0;
    for family in Family::ALL {
        let rs = rendered.get(family).ok_or("not rendered")?;
        let listed = load_and_list(backend, family, &rs.to_string(), "OUTPUT")?;
        for rule in rs
            .rules
            .iter()
            .filter(|r| r.chain == portcullis::rule::Chain::Output)
        {
            tricky += usize::from(rule.comment.contains(['"', '\\', '\'']));
            let want = format!("/* {} */", rule.comment);
            if !listed.contains(&want) {
                return Err(format!("{backend} {family}: {want} not in:\n{listed}").into());
            }
        }
    }
    if tricky == 0 {
        return Err("the example has no comment with quotes or backslashes".into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for backend in Backend::ALL {
        trials.push(privileged(
            format!("golden::comments_read_back_literally::{backend}"),
            backend.unavailable_reason(),
            move || comments_read_back_literally(backend),
        ));
    }
    for (name, text) in policies() {
        let (n, t) = (name.clone(), text.clone());
        trials.push(trial(format!("golden::{name}::text"), move || {
            compare(&n, &t)
        }));
        for family in Family::ALL {
            for backend in Backend::ALL {
                let n = name.clone();
                trials.push(privileged(
                    format!("golden::{name}::{family}::{backend}"),
                    backend.unavailable_reason(),
                    move || {
                        let path = golden_path(&n, family);
                        let sets = std::fs::read_to_string(
                            installer_dir().join(format!("tests/golden/{n}.ipset")),
                        )
                        .ok();
                        match std::fs::read_to_string(&path) {
                            Ok(text) => Ok(crate::restore_test::restore_test_with_sets(
                                backend,
                                family,
                                sets.as_deref(),
                                &text,
                            )?),
                            // An untouched family has no golden file, and the
                            // text trial checks that it was not rendered.
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                                let p = Policy::load(
                                    &installer_dir().join(format!("../examples/{n}.toml")),
                                )?;
                                if portcullis::render(&p).get(family).is_some() {
                                    return Err(format!("{} is missing", path.display()).into());
                                }
                                Ok(())
                            }
                            Err(e) => Err(format!("{}: {e}", path.display()).into()),
                        }
                    },
                ));
            }
        }
    }
    trials
}
