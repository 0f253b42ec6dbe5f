//! `portcullis test` as a user runs it: a scenario suite written OUTSIDE this
//! repository (its own policy, a relative `policy =` path, a policy file beside
//! the scenarios that is skipped) listed, filtered, run under both backends, and
//! reported as JUnit XML that a real XML parser reads back with every trial; a
//! wrong expectation fails with exit 1 and its matrix; bad input exits 2.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libtest_mimic::{Failed, Trial};
use portcullis_harness::trial::privileged;

use crate::support::text;
use crate::support::{BIN, ensure, trial};

const POLICY: &str = r#"
[ssh]
allow_from = ["10.9.0.0/24"]

[inbound]
allow = [{ port = 8080, proto = "tcp" }]
"#;

/// One `tcp` probe from the outsider: port, family (both when `None`), the
/// outcome expected, the rule said to count it.
type Step<'a> = (u16, Option<&'a str>, &'a str, Option<&'a str>);

/// A scenario of the suite: `description`, the suite's policy
/// (`../policies/web.toml`) and its admin map, then `steps`.
fn scenario(description: &str, steps: &[Step<'_>]) -> String {
    let mut s = format!(
        "description = \"{description}\"\npolicy = \"../policies/web.toml\"\n\n[map]\n\"10.9.0.0/24\" = \"admin\"\n"
    );
    for (port, family, expect, counted_by) in steps {
        s.push_str(&format!(
            "\n[[step]]\nprobe = \"tcp\"\nfrom = \"outsider\"\nport = {port}\n"
        ));
        if let Some(f) = family {
            s.push_str(&format!("family = \"{f}\"\n"));
        }
        s.push_str(&format!("expect = \"{expect}\"\n"));
        if let Some(c) = counted_by {
            s.push_str(&format!("counted_by = \"{c}\"\n"));
        }
    }
    s
}

/// `web/open.toml`.
fn open() -> String {
    scenario(
        "8080 is open from anywhere; 8081 is not",
        &[
            (8080, None, "ok", Some("INPUT: allowed by the policy")),
            (8081, None, "no-answer", Some("INPUT policy")),
        ],
    )
}

/// `web/ssh.toml`.
fn ssh() -> String {
    scenario(
        "ssh from the admin subnet only",
        &[(22, Some("ipv4"), "no-answer", Some("INPUT policy"))],
    )
}

/// A suite in a fresh directory under /tmp: `suite/web/{open,ssh}.toml` and the
/// policy they name, `suite/policies/web.toml`.
fn suite(extra: &[(&str, &str)]) -> Result<(tempfile::TempDir, PathBuf), Failed> {
    let dir = tempfile::tempdir()?;
    let suite = dir.path().join("suite");
    std::fs::create_dir_all(suite.join("web"))?;
    std::fs::create_dir_all(suite.join("policies"))?;
    std::fs::write(suite.join("policies/web.toml"), POLICY)?;
    std::fs::write(suite.join("web/open.toml"), open())?;
    std::fs::write(suite.join("web/ssh.toml"), ssh())?;
    for (name, text) in extra {
        std::fs::write(suite.join(name), text)?;
    }
    Ok((dir, suite))
}

fn test_cmd(cwd: &Path, args: &[&str]) -> Result<Output, Failed> {
    Ok(Command::new(BIN)
        .arg("test")
        .args(args)
        .current_dir(cwd)
        .env_remove("NO_COLOR")
        .output()?)
}

fn exit(out: &Output, want: i32) -> Result<(String, String), Failed> {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    ensure(out.status.code() == Some(want), || {
        format!(
            "exit {:?}, expected {want}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status.code()
        )
    })?;
    Ok((stdout, stderr))
}

fn list_and_filter_name_every_trial() -> Result<(), Failed> {
    let (dir, _) = suite(&[])?;
    let (stdout, stderr) = exit(&test_cmd(dir.path(), &["suite", "--list"])?, 0)?;
    ensure(
        stdout
            == "web::open::nft: test\nweb::open::legacy: test\nweb::ssh::nft: test\nweb::ssh::legacy: test\n",
        || format!("--list:\n{stdout}"),
    )?;
    ensure(
        stderr.contains("skipping suite/policies/web.toml: not a scenario"),
        || format!("the policy is not said to be skipped:\n{stderr}"),
    )?;
    for (args, want) in [
        (
            &["--backend", "legacy"][..],
            "web::open::legacy: test\nweb::ssh::legacy: test\n",
        ),
        (
            &["--filter", "ssh"][..],
            "web::ssh::nft: test\nweb::ssh::legacy: test\n",
        ),
        (
            &["--filter", "open::nft", "--exact"][..],
            "web::open::nft: test\n",
        ),
        (
            &["--skip", "nft", "--filter", "open"][..],
            "web::open::legacy: test\n",
        ),
    ] {
        let mut all = vec!["--list"];
        all.extend_from_slice(args);
        all.push("suite/web");
        let (stdout, _) = exit(&test_cmd(dir.path(), &all)?, 0)?;
        // Named relative to the directory given: `suite/web` gives `open`, not `web::open`.
        let want = want.replace("web::", "");
        ensure(stdout == want, || {
            format!("{args:?}:\n{stdout}\nwanted:\n{want}")
        })?;
    }
    // A file given directly is named by its stem.
    let (stdout, _) = exit(
        &test_cmd(
            dir.path(),
            &["--list", "--backend", "nft", "suite/web/ssh.toml"],
        )?,
        0,
    )?;
    ensure(stdout == "ssh::nft: test\n", || stdout.clone())
}

fn bad_input_exits_2_before_any_lab() -> Result<(), Failed> {
    let typo = open().replace("expect = \"ok\"", "expect = \"okay\"");
    let (dir, _) = suite(&[("web/typo.toml", &typo)])?;
    let (_, stderr) = exit(&test_cmd(dir.path(), &["suite"])?, 2)?;
    ensure(
        stderr.contains("suite/web/typo.toml: step 1") && stderr.contains("unknown outcome `okay`"),
        || stderr.clone(),
    )?;
    let missing = open().replace("../policies/web.toml", "../policies/gone.toml");
    std::fs::write(dir.path().join("suite/web/typo.toml"), missing)?;
    let (_, stderr) = exit(&test_cmd(dir.path(), &["suite"])?, 2)?;
    ensure(stderr.contains("policies/gone.toml"), || stderr.clone())?;
    let renamed = open().replace("INPUT: allowed by the policy", "INPUT: no such rule");
    std::fs::write(dir.path().join("suite/web/typo.toml"), renamed)?;
    let (_, stderr) = exit(&test_cmd(dir.path(), &["suite"])?, 2)?;
    ensure(
        stderr.contains("counted_by `INPUT: no such rule` names no rule"),
        || stderr.clone(),
    )?;
    let (_, stderr) = exit(&test_cmd(dir.path(), &["nowhere"])?, 2)?;
    ensure(stderr.contains("cannot read nowhere"), || stderr.clone())?;
    let (_, stderr) = exit(&test_cmd(dir.path(), &["suite/policies"])?, 2)?;
    ensure(
        stderr.contains("no scenario files under suite/policies"),
        || stderr.clone(),
    )?;
    let (_, stderr) = exit(
        &test_cmd(
            dir.path(),
            &["--filter", "nothing-matches", "suite/web/ssh.toml"],
        )?,
        2,
    )?;
    ensure(stderr.contains("no trial matches"), || stderr.clone())
}

/// The JUnit report read back by a real XML parser (python3's xml.etree): every
/// testcase as `name result`, one a line, `result` being `passed` or the first
/// line of its failure body.
fn junit_cases(path: &Path) -> Result<Vec<String>, Failed> {
    let script = r#"
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "testsuites", root.tag
suites = root.findall("testsuite")
assert len(suites) == 1
cases = suites[0].findall("testcase")
assert int(suites[0].get("tests")) == len(cases)
assert int(suites[0].get("failures")) == sum(1 for c in cases if c.find("failure") is not None)
for c in cases:
    f = c.find("failure")
    print(c.get("name"), "passed" if f is None else "FAILED " + f.text.splitlines()[0])
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()?;
    ensure(out.status.success(), || {
        format!(
            "python3 could not read the JUnit XML: {}",
            text(&out.stderr)
        )
    })?;
    Ok(text(&out.stdout).lines().map(str::to_owned).collect())
}

/// `portcullis test suite --junit report.xml ARGS` on a [`suite`] with `extra`:
/// it must exit `code` with each of `wants` on stdout. The dir, stdout and the
/// report's cases ([`junit_cases`]).
fn run_suite(
    extra: &[(&str, &str)],
    args: &[&str],
    code: i32,
    wants: &[&str],
) -> Result<(tempfile::TempDir, String, Vec<String>), Failed> {
    let (dir, _) = suite(extra)?;
    let mut all = vec!["suite", "--junit", "report.xml"];
    all.extend_from_slice(args);
    let (stdout, _) = exit(&test_cmd(dir.path(), &all)?, code)?;
    for want in wants {
        ensure(stdout.contains(want), || format!("no {want:?}:\n{stdout}"))?;
    }
    let cases = junit_cases(&dir.path().join("report.xml"))?;
    Ok((dir, stdout, cases))
}

fn a_suite_outside_the_repo_passes_with_junit() -> Result<(), Failed> {
    let wants = [
        "running 4 tests",
        "test web::open::nft ... ok",
        "test web::open::legacy ... ok",
        "test web::ssh::nft ... ok",
        "test web::ssh::legacy ... ok",
        "test result: ok. 4 passed, 0 failed",
    ];
    let (_dir, stdout, mut cases) = run_suite(&[], &[], 0, &wants)?;
    ensure(!stdout.contains('\x1b'), || {
        "colour escapes in output that is not a terminal".into()
    })?;
    cases.sort();
    ensure(
        cases
            == [
                "web::open::legacy passed",
                "web::open::nft passed",
                "web::ssh::legacy passed",
                "web::ssh::nft passed",
            ],
        || format!("{cases:?}"),
    )
}

fn a_wrong_expectation_exits_1_with_its_matrix() -> Result<(), Failed> {
    // 8081 is closed, yet this file says it answers: the scenario is wrong.
    let wrong = scenario("8081 said to answer", &[(8081, Some("ipv4"), "ok", None)]);
    let (dir, _, cases) = run_suite(
        &[("web/wrong.toml", &wrong)],
        &["--color", "always"],
        1,
        &[
            "test web::wrong::nft ... \x1b[31mFAILED\x1b[0m",
            "---- web::wrong::legacy ----",
            "MISMATCH legacy outsider -> target tcp/8081 ipv4",
            "4 passed, 2 failed",
        ],
    )?;
    ensure(cases.len() == 6, || format!("{cases:?}"))?;
    let failed: Vec<&String> = cases.iter().filter(|c| c.contains("FAILED")).collect();
    ensure(
        failed.len() == 2 && failed.iter().all(|c| c.contains("suite/web/wrong.toml")),
        || format!("{cases:?}"),
    )?;
    let xml = std::fs::read_to_string(dir.path().join("report.xml"))?;
    ensure(
        xml.contains("MISMATCH nft outsider -&gt; target tcp/8081 ipv4"),
        || format!("the matrix is not in the failure body:\n{xml}"),
    )
}

pub fn trials() -> Vec<Trial> {
    let missing = portcullis_harness::Backend::ALL
        .iter()
        .find_map(|b| b.unavailable_reason())
        .or_else(|| {
            portcullis_netfilter::backend::find_in_path("python3")
                .is_none()
                .then(|| "python3 not found (it reads the JUnit XML back)".to_owned())
        });
    vec![
        trial(
            "scenario_cli::list_and_filter_name_every_trial",
            list_and_filter_name_every_trial,
        ),
        trial(
            "scenario_cli::bad_input_exits_2_before_any_lab",
            bad_input_exits_2_before_any_lab,
        ),
        privileged(
            "scenario_cli::a_suite_outside_the_repo_passes_with_junit",
            missing.clone(),
            a_suite_outside_the_repo_passes_with_junit,
        ),
        privileged(
            "scenario_cli::a_wrong_expectation_exits_1_with_its_matrix",
            missing,
            a_wrong_expectation_exits_1_with_its_matrix,
        ),
    ]
}
