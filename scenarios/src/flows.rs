//! Flows that need code rather than a file, registered in the same runner: one
//! trial per flow x backend.

use libtest_mimic::{Failed, Trial};
use portcullis::Policy;
use portcullis::scenario::run::matrix_text;
use portcullis::verify::{self, Options};
use portcullis_harness::Backend;

use portcullis_harness::trial::privileged;

use crate::cannot_run;

/// `portcullis verify`'s core: `policy` in the lab under `backend`.
fn verify_policy(policy: Policy, backend: Backend) -> Result<verify::Report, Failed> {
    let opts = Options {
        policy,
        backends: vec![backend],
        rules_v4: None,
        rules_v6: None,
    };
    Ok(verify::verify(&opts, &mut |_| {})?)
}

/// `portcullis verify`'s core on the embedded default: every promise the default
/// policy makes holds in the lab.
fn verify_default(backend: Backend) -> Result<(), Failed> {
    let report = verify_policy(Policy::embedded_default(), backend)?;
    if report.passed() {
        Ok(())
    } else {
        Err(matrix_text(&report.rows).into())
    }
}

/// The example policies shipped in `examples/`, sorted.
fn example_policies() -> Vec<std::path::PathBuf> {
    let dir = crate::scenarios_dir().join("../examples");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
}

/// An example policy keeps every promise it makes.
fn verify_example(path: &std::path::Path, backend: Backend) -> Result<(), Failed> {
    let policy = Policy::load(path)?;
    let report = verify_policy(policy, backend)?;
    if report.passed() {
        Ok(())
    } else {
        Err(format!("{}:\n{}", path.display(), matrix_text(&report.rows)).into())
    }
}

/// The other half of `--rules-*`: portcullis's own rendering of the default,
/// handed in as if hand-written (with the real 10.137.0.0/24 in it), passes; so
/// the hand-written judgement is not stricter than the policy.
fn verify_rendered_as_hand_written(backend: Backend) -> Result<(), Failed> {
    let policy = Policy::embedded_default();
    let rendered = portcullis::render(&policy);
    let opts = Options {
        rules_v4: rendered.text(portcullis_harness::Family::V4),
        rules_v6: rendered.text(portcullis_harness::Family::V6),
        policy,
        backends: vec![backend],
    };
    let report = verify::verify(&opts, &mut |_| {})?;
    if report.passed() && report.hand_written && !report.mappings.is_empty() {
        Ok(())
    } else {
        Err(matrix_text(&report.rows).into())
    }
}

/// `verify --rules-v4` has teeth: the seed's own final ruleset, judged against
/// the embedded default policy, must FAIL exactly where the seed falls short
/// (no INPUT loopback, no tcp/53, no IPv6 rules at all) and pass elsewhere.
fn verify_catches_seed_gaps(backend: Backend) -> Result<(), Failed> {
    use portcullis::verify::{HostId, ProbeKind};
    use portcullis_harness::Family;
    let path = crate::scenarios_dir().join("seed/seed_own_ruleset.toml");
    let scn = crate::Scenario::load(&path)?;
    let Some(portcullis::scenario::RulesetSource::Rules { v4: Some(seed), .. }) =
        scn.rulesets.get("seed").cloned()
    else {
        return Err("seed_own_ruleset.toml has no [ruleset.seed] rules_v4".into());
    };
    let opts = Options {
        policy: Policy::embedded_default(),
        backends: vec![backend],
        rules_v4: Some(seed),
        rules_v6: None,
    };
    let report = verify::verify(&opts, &mut |_| {})?;
    let row = |kind: ProbeKind, from: HostId, family: Family, port: Option<u16>| {
        report
            .rows
            .iter()
            .find(|r| {
                let p = &r.expectation.probe;
                p.kind == kind
                    && p.from == from
                    && p.family == family
                    && (port.is_none() || p.port == port)
            })
            .ok_or_else(|| format!("no {kind} row from {from} over {family}"))
    };
    let mut problems = Vec::new();
    for (kind, from, family, port) in [
        (ProbeKind::LoopbackTcp, HostId::Target, Family::V4, None),
        (ProbeKind::DnsTcp, HostId::Target, Family::V4, None),
        (
            ProbeKind::Tcp,
            HostId::Admin,
            Family::V6,
            Some(portcullis::verify::exec::CLOSED_INBOUND_PORT),
        ),
        (ProbeKind::Forward, HostId::Admin, Family::V6, None),
    ] {
        if row(kind, from, family, port)?.pass() {
            problems.push(format!(
                "{kind} from {from} over {family} passed: the seed has that gap"
            ));
        }
    }
    for (kind, from, family) in [
        (ProbeKind::Http, HostId::Target, Family::V4),
        (ProbeKind::DnsUdp, HostId::Target, Family::V4),
        (ProbeKind::SynFin, HostId::Outsider, Family::V4),
        (ProbeKind::Forward, HostId::Admin, Family::V4),
    ] {
        let r = row(kind, from, family, None)?;
        if !r.pass() {
            problems.push(format!(
                "{kind} from {from} over {family} failed: {:?}",
                r.problems
            ));
        }
    }
    if report.passed() {
        problems.push("the whole report passed".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{}\n{}", problems.join("\n"), matrix_text(&report.rows)).into())
    }
}

/// A policy with `allow` admin addresses (IPv6, plus 10 IPv4) and a blocklist of
/// `blocked` IPv6 networks (plus one IPv4), all documentation addresses, none
/// adjacent (so folding keeps every one).
pub fn scale_policy(allow: usize, blocked: usize) -> String {
    let v6 = |base: u32, i: usize| {
        // Every other /56 under 2001:db8:BASE::/33: no two fold together.
        let n = (i as u32) * 2;
        format!("\"2001:db8:{:x}:{:x}00::/56\"", base + (n >> 8), n & 0xff)
    };
    let mut admins: Vec<String> = (10..20).map(|i| format!("\"198.51.100.{i}\"")).collect();
    admins.extend((0..allow).map(|i| v6(0x8000, i)));
    let mut blocks = vec!["\"203.0.113.0/24\"".to_owned()];
    blocks.extend((0..blocked).map(|i| v6(0xc000, i)));
    format!(
        "[ssh]\nallow_from = [{}]\n\n[[inbound.allow]]\nproto = \"tcp\"\nport = 443\n\n\
         [outbound]\ndns = true\nhttps = true\n\n[[blocklist]]\ncidrs = [{}]\n",
        admins.join(", "),
        blocks.join(", ")
    )
}

/// At scale: a 10,000-address admin list and a 50,000-network blocklist render
/// as sets, load into the lab whole (the lab keeps every CIDR that overlaps no
/// lab link), and verify holds: the blocklist rule counts the blocked source,
/// the set rule counts the admin.
fn verify_at_scale(backend: Backend) -> Result<(), Failed> {
    let policy = Policy::parse(&scale_policy(10_000, 50_000), "scale.toml")?;
    let topo = verify::exec::topology();
    let (lab, _) = verify::map_policy(&policy, &topo);
    let rendered = portcullis::render(&lab);
    let sizes: Vec<(String, usize)> = rendered
        .sets
        .iter()
        .map(|s| (s.name.clone(), s.nets.len()))
        .collect();
    let size = |n: &str| sizes.iter().find(|(s, _)| s == n).map_or(0, |(_, k)| *k);
    if size("pc-bl0-6") < 50_000 || size("pc-ssh-6") < 10_000 {
        return Err(format!("the lab's sets are not at scale: {sizes:?}").into());
    }
    let report = verify_policy(policy, backend)?;
    let counted = |why: &str| {
        report
            .rows
            .iter()
            .any(|r| r.expectation.why == why && r.pass())
    };
    if report.passed() && counted("blocklist[0]") && counted("ssh.allow_from") {
        Ok(())
    } else {
        Err(matrix_text(&report.rows).into())
    }
}

pub fn trials() -> Vec<Trial> {
    let mut out = Vec::new();
    for backend in Backend::ALL {
        out.push(privileged(
            format!("flows::verify_default::{backend}"),
            cannot_run(backend, true),
            move || verify_default(backend),
        ));
        out.push(privileged(
            format!("flows::verify_at_scale::{backend}"),
            cannot_run(backend, true),
            move || verify_at_scale(backend),
        ));
        for path in example_policies() {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().replace('-', "_"))
                .unwrap_or_default();
            out.push(privileged(
                format!("flows::verify_example::{name}::{backend}"),
                cannot_run(backend, true),
                move || verify_example(&path, backend),
            ));
        }
        out.push(privileged(
            format!("flows::verify_rendered_as_hand_written::{backend}"),
            cannot_run(backend, true),
            move || verify_rendered_as_hand_written(backend),
        ));
        out.push(privileged(
            format!("flows::verify_catches_seed_gaps::{backend}"),
            cannot_run(backend, true),
            move || verify_catches_seed_gaps(backend),
        ));
    }
    out
}
