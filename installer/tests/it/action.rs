//! The GitHub Action (`action.yml` at the repository root) run locally: its
//! steps are `ci/action/run.sh SUBCOMMAND` with the inputs in `PORTCULLIS_*`
//! variables, so this test reads the steps out of action.yml, checks each calls
//! the script with variables the script reads, and then runs the `verify` and
//! `test` steps exactly as the action does, with `GITHUB_STEP_SUMMARY` and
//! `GITHUB_OUTPUT` pointing at files, and checks the Markdown it wrote.
//! (Schema validation of action.yml is ci/test's, with check-jsonschema.)

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use libtest_mimic::{Failed, Trial};
use portcullis_harness::trial::privileged;

use crate::support::{BIN, ensure, trial};

fn workspace() -> PathBuf {
    let installer = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    installer.parent().unwrap_or(&installer).to_path_buf()
}

/// One step of action.yml's `runs.steps`, read line by line (there is no YAML
/// crate in the workspace; the file keeps each key on one line).
#[derive(Debug, Default)]
struct Step {
    name: String,
    shell: Option<String>,
    run: Option<String>,
    uses: Option<String>,
    env: Vec<(String, String)>,
}

fn steps(action: &str) -> Result<Vec<Step>, Failed> {
    let mut out: Vec<Step> = Vec::new();
    let mut in_steps = false;
    let mut in_env = false;
    for line in action.lines() {
        let t = line.trim();
        if line.starts_with("  steps:") {
            in_steps = true;
            continue;
        }
        if !in_steps || t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("    - ") {
            in_env = false;
            out.push(Step::default());
            if let Some(n) = rest.strip_prefix("name: ") {
                out.last_mut().ok_or("no step")?.name = n.to_owned();
            } else {
                return Err(format!("a step that does not begin with its name: {line}").into());
            }
            continue;
        }
        let step = out.last_mut().ok_or("a key before the first step")?;
        let indent = line.len() - line.trim_start().len();
        if indent == 6 {
            in_env = t == "env:";
            if let Some(v) = t.strip_prefix("shell: ") {
                step.shell = Some(v.to_owned());
            } else if let Some(v) = t.strip_prefix("run: ") {
                step.run = Some(v.trim_matches('\'').to_owned());
            } else if let Some(v) = t.strip_prefix("uses: ") {
                step.uses = Some(v.to_owned());
            }
        } else if in_env && indent == 8 {
            let (k, v) = t.split_once(": ").ok_or_else(|| format!("env line {t}"))?;
            step.env.push((k.to_owned(), v.to_owned()));
        }
    }
    Ok(out)
}

fn the_steps_call_run_sh() -> Result<(), Failed> {
    let ws = workspace();
    let action = std::fs::read_to_string(ws.join("action.yml"))?;
    let script = std::fs::read_to_string(ws.join("ci/action/run.sh"))?;
    let steps = steps(&action)?;
    let mut subcommands = Vec::new();
    for s in &steps {
        match (&s.run, &s.uses) {
            (Some(run), None) => {
                ensure(s.shell.as_deref() == Some("bash"), || {
                    format!("step {:?} has no `shell: bash`", s.name)
                })?;
                let sub = run
                    .strip_prefix("\"$GITHUB_ACTION_PATH/ci/action/run.sh\" ")
                    .ok_or_else(|| format!("step {:?} runs {run:?}, not run.sh", s.name))?;
                ensure(script.contains(&format!("\n  {sub}) ")), || {
                    format!("run.sh has no subcommand {sub}")
                })?;
                subcommands.push(sub.to_owned());
                for (k, v) in &s.env {
                    ensure(
                        k.starts_with("PORTCULLIS_") && script.contains(&format!("${{{k}")),
                        || format!("step {:?} sets {k}, which run.sh never reads", s.name),
                    )?;
                    // An input only ever reaches the script as a variable.
                    ensure(v.starts_with("${{") && v.ends_with("}}"), || {
                        format!("{k}: {v}")
                    })?;
                }
            }
            (None, Some(uses)) => ensure(uses.starts_with("actions/cache@"), || {
                format!("unexpected action {uses}")
            })?,
            _ => return Err(format!("step {:?}: neither run nor uses", s.name).into()),
        }
    }
    ensure(subcommands == ["deps", "install", "verify", "test"], || {
        format!("{subcommands:?}")
    })?;
    ensure(
        !action.contains("run: ${{") && !action.contains("run.sh\" ${{"),
        || "an expression spliced into a run script".into(),
    )
}

/// The env of a step, as action.yml maps it, with the inputs given.
fn step_env(step: &str, inputs: &[(&str, &str)]) -> Result<Vec<(String, String)>, Failed> {
    let action = std::fs::read_to_string(workspace().join("action.yml"))?;
    let steps = steps(&action)?;
    let s = steps
        .iter()
        .find(|s| {
            s.run
                .as_deref()
                .is_some_and(|r| r.ends_with(&format!(" {step}")))
        })
        .ok_or_else(|| format!("no {step} step"))?;
    let mut env = Vec::new();
    for (k, v) in &s.env {
        let value = if v == "${{ steps.install.outputs.bin }}" {
            BIN.to_owned()
        } else if let Some(input) = v
            .strip_prefix("${{ inputs.")
            .and_then(|r| r.split([' ', '}']).next())
        {
            inputs
                .iter()
                .find(|(i, _)| *i == input)
                .map(|(_, v)| (*v).to_owned())
                .unwrap_or_default()
        } else {
            return Err(format!("{k}: {v}: not an input").into());
        };
        env.push((k.clone(), value));
    }
    Ok(env)
}

fn run_step(step: &str, dir: &Path, inputs: &[(&str, &str)]) -> Result<(Output, String), Failed> {
    let summary = dir.join("summary.md");
    let out = Command::new(workspace().join("ci/action/run.sh"))
        .arg(step)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_OUTPUT", dir.join("output"))
        .envs(step_env(step, inputs)?)
        .output()?;
    let md = std::fs::read_to_string(&summary).unwrap_or_default();
    std::fs::remove_file(&summary).ok();
    Ok((out, md))
}

fn context(out: &Output, md: &str) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}\nsummary:\n{md}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn verify_and_test_write_the_step_summary() -> Result<(), Failed> {
    let dir = tempfile::tempdir()?;
    let policy = workspace().join("examples/minimal-ssh.toml");
    let policy = policy.to_string_lossy();
    let inputs = [("policy", &*policy), ("backend", "nft")];
    let (out, md) = run_step("verify", dir.path(), &inputs)?;
    ensure(out.status.success(), || context(&out, &md))?;
    let lines: Vec<&str> = md.lines().collect();
    ensure(
        lines.first().is_some_and(|l| {
            l.starts_with("### portcullis verify: `") && l.ends_with("under nft: every promise held")
        }) && lines.contains(
            &"| | backend | from | to | service | family | expected | observed | counted by |",
        ) && lines.contains(&"|---|---|---|---|---|---|---|---|---|")
            && lines.iter().any(|l| {
                l.starts_with("| ok | nft | outsider | target | ssh | ipv4 | no-answer | no-answer | INPUT policy (+")
            })
            && !md.contains("MISMATCH")
            && md.contains(" 0 mismatched"),
        || context(&out, &md),
    )?;
    // Every row of the table has the header's nine cells.
    for l in lines.iter().filter(|l| l.starts_with("| ")) {
        ensure(l.matches(" | ").count() == 8, || format!("row {l:?}"))?;
    }

    // A scenario that is wrong: the test step fails, its table and failure say so.
    let scn = dir.path().join("scn");
    std::fs::create_dir(&scn)?;
    std::fs::write(
        scn.join("closed.toml"),
        "description = \"8081 is closed\"\npolicy = \"@default\"\n\
         [[step]]\nprobe = \"tcp\"\nfrom = \"outsider\"\nport = 8081\nfamily = \"ipv4\"\n\
         expect = \"no-answer\"\ncounted_by = \"INPUT policy\"\n",
    )?;
    std::fs::write(
        scn.join("wrong.toml"),
        "description = \"8081 answers (it does not)\"\npolicy = \"@default\"\n\
         [[step]]\nprobe = \"tcp\"\nfrom = \"outsider\"\nport = 8081\nfamily = \"ipv4\"\nexpect = \"ok\"\n",
    )?;
    let junit = dir.path().join("junit.xml");
    let junit = junit.to_string_lossy();
    let inputs = [("scenarios", "scn"), ("backend", "nft"), ("junit", &*junit)];
    let (out, md) = run_step("test", dir.path(), &inputs)?;
    ensure(out.status.code() == Some(1), || context(&out, &md))?;
    for want in [
        "### portcullis test: test result: FAILED. 1 passed, 1 failed",
        "| trial | result |",
        "| `closed::nft` | ok |",
        "| `wrong::nft` | FAILED |",
        "---- wrong::nft ----",
        "MISMATCH nft outsider -> target tcp/8081 ipv4",
    ] {
        ensure(md.contains(want), || {
            format!("no {want:?}\n{}", context(&out, &md))
        })?;
    }
    let output = std::fs::read_to_string(dir.path().join("output"))?;
    ensure(output.contains(&format!("junit={junit}\n")), || {
        output.clone()
    })?;
    let xml = std::fs::read_to_string(&*junit)?;
    ensure(xml.matches("<testcase ").count() == 2, || xml.clone())
}

pub fn trials() -> Vec<Trial> {
    vec![
        trial("action::the_steps_call_run_sh", the_steps_call_run_sh),
        privileged(
            "action::verify_and_test_write_the_step_summary",
            portcullis_harness::Backend::Nft.unavailable_reason(),
            verify_and_test_write_the_step_summary,
        ),
    ]
}
