//! The policy validator: the bad-input corpus (`tests/bad/<case>.toml` with the
//! exact one-line error in `<case>.err`), the seed example, and fuzzing that no
//! input makes it panic or print more than one line.

use std::path::{Path, PathBuf};

use libtest_mimic::{Failed, Trial};
use portcullis::Policy;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::trial;

pub fn installer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `dir/*.EXT`, sorted, as (stem, path).
pub fn files(dir: &Path, ext: &str) -> Vec<(String, PathBuf)> {
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    v.sort();
    v
}

/// Whether `SNAPSHOTS=overwrite` asks expected files to be rewritten.
pub fn overwrite() -> bool {
    std::env::var("SNAPSHOTS").is_ok_and(|v| v == "overwrite")
}

fn bad_case(path: &Path) -> Result<(), Failed> {
    let text = std::fs::read_to_string(path)?;
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let err = match Policy::parse(&text, &name) {
        Ok(_) => return Err(format!("{name} was accepted; it must be refused").into()),
        Err(e) => e.to_string(),
    };
    if err.contains('\n') {
        return Err(format!("the error is not one line: {err:?}").into());
    }
    let expect_path = path.with_extension("err");
    if overwrite() {
        std::fs::write(&expect_path, format!("{err}\n"))?;
        return Ok(());
    }
    let expect = std::fs::read_to_string(&expect_path).map_err(|e| {
        format!(
            "{}: {e} (SNAPSHOTS=overwrite writes it)",
            expect_path.display()
        )
    })?;
    if expect.trim_end() != err {
        return Err(format!(
            "error for {name}\nexpected: {}\n     got: {err}",
            expect.trim_end()
        )
        .into());
    }
    Ok(())
}

/// Fragments that make inputs that are nearly policies, so the fuzzer spends its
/// time past the TOML parser.
fn near_policy() -> impl Strategy<Value = String> {
    let frag = prop::sample::select(vec![
        "[ssh]\n",
        "[outbound]\n",
        "[inbound]\n",
        "[[outbound.allow]]\n",
        "[[inbound.allow]]\n",
        "[hardening]\n",
        "[ipv6]\n",
        "port = 22\n",
        "port = \"1:2\"\n",
        "port = \"2:1\"\n",
        "port = -1\n",
        "port = 99999999999\n",
        "proto = \"tcp\"\n",
        "proto = 7\n",
        "allow_from = [\"192.0.2.0/24\"]\n",
        "allow_from = [\"::/0\", \"1.2.3.4/0\"]\n",
        "to = [\"2001:db8::/129\"]\n",
        "from = []\n",
        "comment = \"a\\\"b\\\\c\"\n",
        "comment = \"\\u0000\"\n",
        "mode = \"deny\"\n",
        "mode = [1]\n",
        "dns = true\n",
        "icmp = 1\n",
        "x = { y = 1 }\n",
        "é = 'é'\n",
        "[ssh.port]\n",
        "\"\" = 1\n",
        "\n",
    ]);
    prop::collection::vec(frag, 0..12).prop_map(|v| v.concat())
}

fn never_panics() -> Result<(), Failed> {
    let mut runner = TestRunner::new(Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(512),
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = prop_oneof![any::<String>(), "\\PC{0,200}", near_policy()];
    runner
        .run(&strategy, |text| {
            let r = std::panic::catch_unwind(|| Policy::parse(&text, "fuzz.toml"));
            let r = r.map_err(|_| TestCaseError::fail(format!("panicked on {text:?}")))?;
            if let Err(e) = r {
                let e = e.to_string();
                prop_assert!(!e.contains('\n'), "multi-line error {e:?} for {text:?}");
                prop_assert!(e.starts_with("fuzz.toml"), "{e:?}");
            }
            Ok(())
        })
        .map_err(|e| Failed::from(e.to_string()))
}

pub fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    let bad = files(&installer_dir().join("tests/bad"), "toml");
    trials.push(trial("policy::bad::corpus_has_15_cases", move || {
        let n = files(&installer_dir().join("tests/bad"), "toml").len();
        if n < 15 {
            return Err(format!("only {n} bad cases").into());
        }
        Ok(())
    }));
    for (name, path) in bad {
        trials.push(trial(format!("policy::bad::{name}"), move || {
            bad_case(&path)
        }));
    }
    trials.push(trial(
        "policy::seed_example_is_the_embedded_default",
        || {
            let seed = std::fs::read_to_string(installer_dir().join("../examples/seed.toml"))?;
            if seed != portcullis::policy::DEFAULT_POLICY {
                return Err("examples/seed.toml differs from installer/src/default.toml".into());
            }
            Ok(())
        },
    ));
    trials.push(trial("policy::every_example_is_valid", || {
        for (_, path) in files(&installer_dir().join("../examples"), "toml") {
            Policy::load(&path)?;
        }
        Ok(())
    }));
    trials.push(trial("policy::defaults_when_absent", || {
        let p = Policy::parse("", "empty.toml")?;
        let h = &p.hardening;
        let ok = p.ssh.port == 22
            && p.ssh.allow_from.is_empty()
            && !(p.outbound.dns || p.outbound.http || p.outbound.https || p.outbound.icmp)
            && !p.inbound.icmp
            && h.loopback
            && h.drop_invalid
            && h.drop_malicious_flags
            && p.ipv6.mode == portcullis::policy::Ipv6Mode::Mirror;
        if !ok {
            return Err(format!("unexpected defaults: {p:?}").into());
        }
        Ok(())
    }));
    trials.push(trial(
        "policy::comments_keep_quotes_and_backslashes",
        || {
            let text = "[[inbound.allow]]\nproto = \"tcp\"\nport = 1\ncomment = 'a \"b\" \\c'\n";
            let p = Policy::parse(text, "t")?;
            match p.inbound.allow[0].comment.as_deref() {
                Some("a \"b\" \\c") => Ok(()),
                other => Err(format!("comment became {other:?}").into()),
            }
        },
    ));
    trials.push(trial(
        "policy::fuzz_never_panics_and_errors_are_one_line",
        never_panics,
    ));
    trials
}
