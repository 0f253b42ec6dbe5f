//! `portcullis verify` as users run it: the embedded default proved in the lab
//! (exit 0), the seed's own hand-written ruleset judged against the default's
//! intent (exit 1, with the mapping said), the JSON report, and bad input (exit 2).

use libtest_mimic::{Failed, Trial};

use crate::policy_test::installer_dir;
use crate::support::portcullis_cmd as portcullis;
use crate::support::text;
use crate::support::trial;
use portcullis_harness::trial::privileged;

/// The seed walk-through's final IPv4 ruleset, from the scenario that pins it.
fn seed_rules() -> Result<String, Failed> {
    let path = installer_dir().join("../scenarios/seed/seed_own_ruleset.toml");
    let doc: toml::Table = toml::from_str(&std::fs::read_to_string(&path)?)?;
    doc.get("ruleset")
        .and_then(|r| r.get("seed"))
        .and_then(|s| s.get("rules_v4"))
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("{}: no ruleset.seed.rules_v4", path.display()).into())
}

fn default_proves_every_promise() -> Result<(), Failed> {
    let out = portcullis().arg("verify").output()?;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if out.status.code() != Some(0) {
        return Err(format!("exit {:?}\n{stdout}\n{stderr}", out.status.code()).into());
    }
    for want in [
        "ssh.allow_from 10.137.0.0/24 -> ",
        "backend  from",
        " 0 mismatched",
    ] {
        if !stdout.contains(want) {
            return Err(format!("stdout lacks {want:?}:\n{stdout}").into());
        }
    }
    if !stderr.contains("verify: nft: [1/") || !stderr.contains("verify: legacy: [1/") {
        return Err(format!("no progress on stderr:\n{stderr}").into());
    }
    Ok(())
}

fn seed_rules_fail_against_the_default() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("iptables.v4");
    std::fs::write(&rules, seed_rules()?)?;
    let out = portcullis()
        .args(["verify", "--backend", "nft", "--rules-v4"])
        .arg(&rules)
        .output()?;
    let stdout = text(&out.stdout);
    if out.status.code() != Some(1) {
        return Err(format!("exit {:?}, expected 1\n{stdout}", out.status.code()).into());
    }
    for want in [
        "replaced textually, exact CIDR strings only",
        "no --rules-v6 given",
        "MISMATCH nft target -> target loopback-tcp/9099 ipv4",
        "MISMATCH nft target -> resolver dns-tcp ipv4",
    ] {
        if !stdout.contains(want) {
            return Err(format!("stdout lacks {want:?}:\n{stdout}").into());
        }
    }
    // --quiet: the same mismatches and summary, no matrix, no progress; every
    // line of a mismatch fits a terminal.
    let out = portcullis()
        .args(["verify", "--quiet", "--backend", "nft", "--rules-v4"])
        .arg(&rules)
        .output()?;
    let (quiet, stderr) = (text(&out.stdout), text(&out.stderr));
    if out.status.code() != Some(1)
        || !quiet.starts_with("MISMATCH nft target -> ")
        || quiet.contains("counted by")
        || stderr.contains("verify: nft: [")
        || !quiet.lines().last().unwrap_or("").ends_with(" mismatched")
        || quiet.lines().any(|l| l.chars().count() > 80)
    {
        return Err(format!("exit {:?}\n{quiet}\n{stderr}", out.status.code()).into());
    }
    for l in stdout.lines().filter(|l| l.starts_with("MISMATCH ")) {
        if !quiet.contains(l) {
            return Err(format!("--quiet lacks {l:?}:\n{quiet}").into());
        }
    }
    Ok(())
}

fn json_report_says_passed() -> Result<(), Failed> {
    let out = portcullis()
        .args(["verify", "--backend", "legacy", "--json"])
        .output()?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if report["passed"] != serde_json::Value::Bool(true)
        || report["schema_version"] != 1
        || out.status.code() != Some(0)
    {
        return Err(format!("exit {:?}: {report:#}", out.status.code()).into());
    }
    let rows = report["rows"].as_array().map_or(0, Vec::len);
    if rows < 20 || report["backends"] != serde_json::json!(["legacy"]) {
        return Err(format!("{rows} rows: {report:#}").into());
    }
    // Every row held, and JSON says it in the words of the promise.
    let rows = report["rows"].as_array().cloned().unwrap_or_default();
    if let Some(r) = rows
        .iter()
        .find(|r| r["observed"]["outcome"] != r["expect"])
    {
        return Err(format!("observed and expect in different words: {r:#}").into());
    }
    if !rows.iter().any(|r| r["expect"] == "no-answer") {
        return Err("no no-answer row to compare".into());
    }
    // The admin's ssh login is a real session sshd served itself (no shell).
    if !rows.iter().any(|r| {
        r["probe"]["kind"] == "ssh"
            && r["expect"] == "ok"
            && r["observed"]["detail"] == "ssh session"
    }) {
        return Err(format!("no ssh row observed as `ok (ssh session)`: {rows:#?}").into());
    }
    let missing = crate::cli_test::undocumented("verify --json", &out.stdout, &[])?;
    if !missing.is_empty() {
        return Err(format!("docs/json.md does not name {missing:?}").into());
    }
    Ok(())
}

fn unreadable_rules_file_exits_2() -> Result<(), Failed> {
    let out = portcullis()
        .args(["verify", "--rules-v4", "/nonexistent/rules.v4"])
        .output()?;
    let stderr = text(&out.stderr);
    if out.status.code() != Some(2)
        || !stderr.contains("cannot read rules file /nonexistent/rules.v4")
    {
        return Err(format!("exit {:?}: {stderr}", out.status.code()).into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let missing = portcullis_harness::Backend::ALL
        .iter()
        .find_map(|b| b.unavailable_reason());
    vec![
        privileged(
            "verify_cli::default_proves_every_promise",
            missing.clone(),
            default_proves_every_promise,
        ),
        privileged(
            "verify_cli::seed_rules_fail_against_the_default",
            missing.clone(),
            seed_rules_fail_against_the_default,
        ),
        privileged(
            "verify_cli::json_report_says_passed",
            missing,
            json_report_says_passed,
        ),
        trial(
            "verify_cli::unreadable_rules_file_exits_2",
            unreadable_rules_file_exits_2,
        ),
    ]
}
