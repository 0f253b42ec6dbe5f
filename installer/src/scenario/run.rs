//! Running one scenario under one backend: build the standard lab, then walk the
//! steps in order. Every probe is judged by the outcome AND the counter of the
//! rule (or chain policy) that must count it; the trial fails with the matrix.

use crate::verify::exec::{LabSession, SshSessionId};
use crate::verify::expect::family_of;
use crate::verify::{
    Expectation, HostId, LabRules, Mapping, ProbeKind, ProbeSpec, Row, Topology, apply_mappings,
    map_text,
};
use portcullis_harness::{Backend, Family};

use super::format::{RulesetSource, Scenario, Step};

/// The scenario's `[map]` against a real lab: each CIDR to its host's subnet.
pub fn mappings(scn: &Scenario, topo: &Topology) -> Result<Vec<Mapping>, String> {
    scn.map
        .iter()
        .map(|(net, host)| {
            let family = family_of(net);
            let to = topo
                .subnet(*host, family)
                .ok_or_else(|| format!("the lab has no {family} subnet on {host} for map {net}"))?;
            Ok(Mapping {
                key: "map".into(),
                from: *net,
                to,
                host: *host,
            })
        })
        .collect()
}

/// The restore text of a named ruleset in this lab.
pub fn lab_rules(src: &RulesetSource, maps: &[Mapping]) -> LabRules {
    match src {
        RulesetSource::Policy(p) => {
            let r = crate::render(&apply_mappings(p, maps));
            LabRules {
                v4: r.text(Family::V4),
                v6: r.text(Family::V6),
                sets: r.sets_text(),
            }
        }
        RulesetSource::Rules { v4, v6 } => LabRules {
            v4: v4.as_deref().map(|t| map_text(t, maps)),
            v6: v6.as_deref().map(|t| map_text(t, maps)),
            sets: None,
        },
    }
}

/// Run `scn` under `backend`: every judged row, or the error that stopped the lab.
pub fn run(scn: &Scenario, backend: Backend) -> Result<Vec<Row>, String> {
    let mut lab = LabSession::start(backend).map_err(|e| format!("building the lab: {e}"))?;
    // Before any ruleset, so its link settles with the others.
    if uses_inner(scn) {
        lab.add_inner()
            .map_err(|e| format!("building the lab: {e}"))?;
    }
    let maps = mappings(scn, lab.topology())?;
    let mut rows = Vec::new();
    let mut sessions: Vec<(String, HostId, Family, SshSessionId)> = Vec::new();
    for (i, step) in scn.steps.iter().enumerate() {
        let at = |e: String| format!("step {}: {e}", i + 1);
        match step {
            Step::Load(name) => {
                let rules = lab_rules(&scn.rulesets[name], &maps);
                lab.load(&rules)
                    .map_err(|e| at(format!("loading ruleset `{name}`: {e}")))?;
            }
            Step::ResetCounters => lab.reset_counters().map_err(|e| at(e.to_string()))?,
            Step::FlushNeighbours { on, families } => {
                for &f in families {
                    lab.flush_neighbours(*on, f)
                        .map_err(|e| at(e.to_string()))?;
                }
            }
            Step::OpenSshSession { name, from, family } => {
                let id = lab
                    .open_ssh_session(*from, *family)
                    .map_err(|e| at(format!("opening ssh session `{name}`: {e}")))?;
                sessions.push((name.clone(), *from, *family, id));
            }
            Step::CheckSshSession {
                name,
                expect,
                counted_by,
                why,
            } => {
                let (_, from, family, id) = sessions
                    .iter()
                    .find(|s| &s.0 == name)
                    .ok_or_else(|| at(format!("no ssh session `{name}`")))?;
                let exp = Expectation {
                    probe: ProbeSpec {
                        kind: ProbeKind::Ssh,
                        from: *from,
                        to: HostId::Target,
                        family: *family,
                        port: Some(22),
                        count: None,
                    },
                    expect: *expect,
                    counted_by: counted_by.clone(),
                    why: if why.is_empty() {
                        format!("session `{name}` opened before the ruleset")
                    } else {
                        why.clone()
                    },
                };
                rows.push(match lab.check_ssh_session(*id, *expect) {
                    Ok(obs) => Row::judge(backend, exp, &obs),
                    Err(e) => Row::error(backend, exp, e.to_string()),
                });
            }
            Step::Probe(p) => {
                for &family in &p.families {
                    let exp = Expectation {
                        probe: ProbeSpec {
                            kind: p.kind,
                            from: p.from,
                            to: p.to,
                            family,
                            port: p.port,
                            count: p.count,
                        },
                        expect: p.expect,
                        counted_by: p.counted_by.clone(),
                        why: p.why.clone(),
                    };
                    // A `no-answer` step ends as soon as its `counted_by` drop counter rose
                    // (the window stays the bound), as in `verify`.
                    rows.push(
                        match lab.probe_counted(&exp.probe, exp.expect, exp.counted_by.as_ref()) {
                            Ok(obs) => Row::judge(backend, exp, &obs),
                            Err(e) => Row::error(backend, exp, e.to_string()),
                        },
                    );
                }
            }
        }
    }
    Ok(rows)
}

/// The matrix of `rows` as text, for a failed trial's message.
pub fn matrix_text(rows: &[Row]) -> String {
    let mut out = Vec::new();
    let _ = crate::verify::matrix::print(rows, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Without a lab: every `counted_by` names a rule of the ruleset loaded at that
/// step, in the probe's family (a renamed comment fails here, before any run).
pub fn check_counters_exist(scn: &Scenario) -> Result<(), String> {
    let mut loaded: Option<LabRules> = None;
    let mut sessions: Vec<(&str, Family)> = Vec::new();
    for (i, step) in scn.steps.iter().enumerate() {
        let (by, families): (_, Vec<Family>) = match step {
            Step::Load(name) => {
                loaded = Some(lab_rules(&scn.rulesets[name], &[]));
                continue;
            }
            Step::OpenSshSession { name, family, .. } => {
                sessions.push((name, *family));
                continue;
            }
            Step::Probe(p) => (&p.counted_by, p.families.clone()),
            Step::CheckSshSession {
                name, counted_by, ..
            } => (
                counted_by,
                sessions
                    .iter()
                    .filter(|s| s.0 == name)
                    .map(|s| s.1)
                    .collect(),
            ),
            _ => continue,
        };
        let Some(by) = by else { continue };
        for f in families {
            let text = loaded.as_ref().and_then(|r| r.get(f));
            let answers = crate::verify::answers(f, text, by)
                .map_err(|e| format!("step {}: the {f} ruleset: {e}", i + 1))?;
            if !answers {
                return Err(format!(
                    "step {}: counted_by `{by}` names no rule of the {f} ruleset loaded at that point",
                    i + 1
                ));
            }
        }
    }
    Ok(())
}

/// Whether a step of the scenario uses `inner`, the host behind the target.
pub fn uses_inner(scn: &Scenario) -> bool {
    scn.map.iter().any(|(_, h)| *h == HostId::Inner)
        || scn.steps.iter().any(|s| match s {
            Step::Probe(p) => p.from == HostId::Inner || p.to == HostId::Inner,
            Step::FlushNeighbours { on, .. } => *on == HostId::Inner,
            Step::OpenSshSession { from, .. } => *from == HostId::Inner,
            _ => false,
        })
}

/// Whether the scenario needs OpenSSH.
pub fn uses_ssh(scn: &Scenario) -> bool {
    scn.steps.iter().any(|s| match s {
        Step::Probe(p) => matches!(
            p.kind,
            ProbeKind::Ssh | ProbeKind::InvalidRst | ProbeKind::SshLimit
        ),
        Step::OpenSshSession { .. } | Step::CheckSshSession { .. } => true,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_replaces_the_seed_subnet_in_literal_rules_and_policies() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let topo = crate::verify::exec::topology();
        let admin_v4 = topo.subnet(HostId::Admin, Family::V4).unwrap().to_string();
        let admin_v6 = topo.subnet(HostId::Admin, Family::V6).unwrap().to_string();

        let seed = Scenario::load(&root.join("seed/seed_own_ruleset.toml")).unwrap();
        let maps = mappings(&seed, &topo).unwrap();
        let rules = lab_rules(&seed.rulesets["seed"], &maps);
        let v4 = rules.v4.unwrap();
        assert!(v4.contains(&format!("-s {admin_v4} -p tcp")), "{v4}");
        assert!(!v4.contains("10.137."), "{v4}");
        assert!(rules.v6.is_none(), "the seed has no IPv6 ruleset");

        assert!(
            !uses_inner(&seed)
                || seed
                    .steps
                    .iter()
                    .any(|s| matches!(s, Step::Probe(p) if p.kind == ProbeKind::Forward))
        );
        let fwd = Scenario::load(&root.join("seed/forward_drop.toml")).unwrap();
        assert!(uses_inner(&fwd), "forward_drop probes inner");
        let dual = Scenario::load(&root.join("seed/ssh_friendly_subnet.toml")).unwrap();
        let maps = mappings(&dual, &topo).unwrap();
        let rules = lab_rules(&dual.rulesets["main"], &maps);
        assert!(rules.v4.unwrap().contains(&format!("-s {admin_v4} ")));
        assert!(rules.v6.unwrap().contains(&format!("-s {admin_v6} ")));
        assert!(
            !uses_inner(&dual),
            "ssh_friendly_subnet never touches inner"
        );
    }
}
