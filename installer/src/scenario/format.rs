//! The scenario file format (documented in docs/scenarios.md): TOML with
//! `deny_unknown_fields`, parsed and validated into a [`Scenario`]. Policies named
//! by a scenario are read and validated here too, so a bad file fails before any
//! lab is built. Errors name the file, the step and what was expected.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::Policy;
use crate::verify::{CountedBy, Expect, HostId, ProbeKind, parse_host};
use ipnet::IpNet;
use portcullis_harness::Family;
use serde::Deserialize;

/// A parsed, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    pub description: String,
    /// Named rulesets; `main` is loaded before the first step unless a step loads it.
    pub rulesets: BTreeMap<String, RulesetSource>,
    /// Policy CIDRs the lab cannot use, and the lab host whose subnet stands in.
    pub map: Vec<(IpNet, HostId)>,
    pub steps: Vec<Step>,
}

/// Where a ruleset comes from.
#[derive(Debug, Clone)]
pub enum RulesetSource {
    /// A policy, rendered by the installer (after `map` is applied to its CIDRs).
    Policy(Box<Policy>),
    /// Literal restore text per family (after `map` is applied textually). A
    /// family without text gets no rules at all.
    Rules {
        v4: Option<String>,
        v6: Option<String>,
    },
}

/// One step, in file order.
#[derive(Debug, Clone)]
pub enum Step {
    /// Load a named ruleset into the target (one restore per family).
    Load(String),
    /// Zero the target's counters and flush its conntrack table.
    ResetCounters,
    /// Forget the neighbour cache of `on` for `family` (IPv6: neighbour discovery
    /// must run again under the loaded rules).
    FlushNeighbours { on: HostId, families: Vec<Family> },
    /// Open a long-lived interactive SSH session whose server prints periodically.
    OpenSshSession {
        name: String,
        from: HostId,
        family: Family,
    },
    /// Check that a session's server output keeps arriving with no keystroke.
    CheckSshSession {
        name: String,
        expect: Expect,
        counted_by: Option<CountedBy>,
        why: String,
    },
    /// Send a probe (once per family) and compare with the expectation.
    Probe(ProbeStep),
}

#[derive(Debug, Clone)]
pub struct ProbeStep {
    pub kind: ProbeKind,
    pub from: HostId,
    pub to: HostId,
    pub port: Option<u16>,
    /// `ssh-limit` only: the new connections the window allows.
    pub count: Option<u32>,
    pub families: Vec<Family>,
    pub expect: Expect,
    pub counted_by: Option<CountedBy>,
    pub why: String,
}

/// A scenario file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct FormatError {
    pub path: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    description: String,
    /// Shorthand for `[ruleset.main]`: these four keys at the top level.
    policy: Option<String>,
    policy_inline: Option<toml::Table>,
    rules_v4: Option<String>,
    rules_v6: Option<String>,
    #[serde(default)]
    ruleset: BTreeMap<String, RawRuleset>,
    #[serde(default)]
    map: BTreeMap<String, String>,
    #[serde(default)]
    step: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleset {
    policy: Option<String>,
    policy_inline: Option<toml::Table>,
    rules_v4: Option<String>,
    rules_v6: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStep {
    probe: Option<String>,
    load: Option<String>,
    action: Option<String>,
    from: Option<String>,
    to: Option<String>,
    on: Option<String>,
    port: Option<u16>,
    count: Option<u32>,
    family: Option<String>,
    expect: Option<String>,
    counted_by: Option<String>,
    session: Option<String>,
    why: Option<String>,
}

fn families(s: Option<&str>) -> Result<Vec<Family>, String> {
    match s.unwrap_or("both") {
        "both" => Ok(Family::ALL.to_vec()),
        f => Ok(vec![f.parse::<Family>()?]),
    }
}

fn host(s: Option<&str>, key: &str) -> Result<HostId, String> {
    parse_host(s.ok_or_else(|| format!("`{key}` is required"))?)
}

impl Scenario {
    /// Read and validate the scenario at `path`.
    pub fn load(path: &Path) -> Result<Scenario, FormatError> {
        let err = |message: String| FormatError {
            path: path.display().to_string(),
            message,
        };
        // Capped as a rules file (a scenario may hold whole rulesets), a regular
        // file only.
        let input = crate::input::read_capped(path, crate::input::RULES_MAX_BYTES)
            .map_err(|e| err(format!("cannot read: {e}")))?;
        Scenario::parse(&input.text, path)
    }

    /// Parse scenario text; `path` names it and anchors relative policy paths.
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, FormatError> {
        let err = |message: String| FormatError {
            path: path.display().to_string(),
            message,
        };
        let raw: RawScenario = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut rulesets = BTreeMap::new();
        let mut raw_sets = raw.ruleset;
        let top = RawRuleset {
            policy: raw.policy,
            policy_inline: raw.policy_inline,
            rules_v4: raw.rules_v4,
            rules_v6: raw.rules_v6,
        };
        if top.policy.is_some()
            || top.policy_inline.is_some()
            || top.rules_v4.is_some()
            || top.rules_v6.is_some()
        {
            if raw_sets.contains_key("main") {
                return Err(err(
                    "both top-level ruleset keys and [ruleset.main]: they are the same ruleset, give one"
                        .into(),
                ));
            }
            raw_sets.insert("main".into(), top);
        }
        for (name, r) in raw_sets {
            let src = ruleset(name.as_str(), r, dir).map_err(err)?;
            rulesets.insert(name, src);
        }
        let mut map = Vec::new();
        for (cidr, h) in raw.map {
            let net: IpNet = cidr
                .parse()
                .map_err(|e| err(format!("map: `{cidr}` is not a CIDR: {e}")))?;
            let h = parse_host(&h).map_err(|e| err(format!("map.\"{cidr}\": {e}")))?;
            map.push((net, h));
        }
        let mut steps = Vec::new();
        for (i, s) in raw.step.into_iter().enumerate() {
            let step =
                step(s).map_err(|m| err(format!("step {} ([[step]] #{}): {m}", i + 1, i + 1)))?;
            if let Step::Load(name) = &step {
                if !rulesets.contains_key(name) {
                    return Err(err(format!(
                        "step {}: loads ruleset `{name}`, which no [ruleset.{name}] defines",
                        i + 1
                    )));
                }
            }
            steps.push(step);
        }
        // `main` is loaded before the first step unless a step loads it itself
        // (a session opened before the rules, say).
        let loads_main = steps
            .iter()
            .any(|s| matches!(s, Step::Load(n) if n == "main"));
        if rulesets.contains_key("main") && !loads_main {
            steps.insert(0, Step::Load("main".into()));
        }
        if !steps.iter().any(|s| matches!(s, Step::Load(_))) {
            return Err(err(
                "no [ruleset.main] and no step loads a ruleset: name the rules under test".into(),
            ));
        }
        let mut sessions: Vec<&str> = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            match s {
                Step::OpenSshSession { name, .. } => sessions.push(name),
                Step::CheckSshSession { name, .. } if !sessions.contains(&name.as_str()) => {
                    return Err(err(format!(
                        "step {i}: checks ssh session `{name}` before any step opens it"
                    )));
                }
                _ => {}
            }
        }
        if !steps
            .iter()
            .any(|s| matches!(s, Step::Probe(_) | Step::CheckSshSession { .. }))
        {
            return Err(err(
                "no probe: a scenario that checks nothing cannot fail".into()
            ));
        }
        Ok(Scenario {
            path: path.to_owned(),
            description: raw.description,
            rulesets,
            map,
            steps,
        })
    }
}

fn ruleset(name: &str, r: RawRuleset, dir: &Path) -> Result<RulesetSource, String> {
    let here = format!("ruleset.{name}");
    let literal = r.rules_v4.is_some() || r.rules_v6.is_some();
    let sources = [r.policy.is_some(), r.policy_inline.is_some(), literal]
        .iter()
        .filter(|&&b| b)
        .count();
    if sources != 1 {
        return Err(format!(
            "{here}: give exactly one of `policy`, `policy_inline`, or `rules_v4`/`rules_v6`"
        ));
    }
    if let Some(p) = r.policy {
        let policy = if p == "@default" {
            Policy::embedded_default()
        } else {
            Policy::load(&dir.join(&p)).map_err(|e| format!("{here}.policy: {e}"))?
        };
        return Ok(RulesetSource::Policy(Box::new(policy)));
    }
    if let Some(table) = r.policy_inline {
        let text = toml::to_string(&table).map_err(|e| format!("{here}.policy_inline: {e}"))?;
        let policy =
            Policy::parse(&text, &format!("{here}.policy_inline")).map_err(|e| e.to_string())?;
        return Ok(RulesetSource::Policy(Box::new(policy)));
    }
    for (key, text) in [("rules_v4", &r.rules_v4), ("rules_v6", &r.rules_v6)] {
        if let Some(t) = text {
            if !t.lines().any(|l| l.trim() == "*filter") || !t.lines().any(|l| l.trim() == "COMMIT")
            {
                return Err(format!(
                    "{here}.{key}: expected iptables-restore text with a *filter table and COMMIT"
                ));
            }
        }
    }
    Ok(RulesetSource::Rules {
        v4: r.rules_v4,
        v6: r.rules_v6,
    })
}

fn step(s: RawStep) -> Result<Step, String> {
    let actions = [s.probe.is_some(), s.load.is_some(), s.action.is_some()]
        .iter()
        .filter(|&&b| b)
        .count();
    if actions != 1 {
        return Err("give exactly one of `probe = KIND`, `load = RULESET`, `action = ...`".into());
    }
    let expect = |s: &Option<String>| -> Result<Expect, String> {
        s.as_deref()
            .ok_or("`expect` is required (ok, refused, no-answer, failed)")?
            .parse()
    };
    let counted = |c: &Option<String>| -> Result<Option<CountedBy>, String> {
        c.as_deref().map(str::parse).transpose()
    };
    // The optional keys this step sets; each kind of step names the ones it uses
    // and any other is refused (`why` is welcome everywhere).
    let present: Vec<&str> = [
        ("from", s.from.is_some()),
        ("to", s.to.is_some()),
        ("on", s.on.is_some()),
        ("port", s.port.is_some()),
        ("count", s.count.is_some()),
        ("family", s.family.is_some()),
        ("expect", s.expect.is_some()),
        ("counted_by", s.counted_by.is_some()),
        ("session", s.session.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect();
    let uses_only = |uses: &[&str]| -> Result<(), String> {
        match present.iter().find(|key| !uses.contains(key)) {
            Some(key) => Err(format!("`{key}` means nothing for this step")),
            None => Ok(()),
        }
    };
    if let Some(name) = s.load {
        uses_only(&[])?;
        return Ok(Step::Load(name));
    }
    if let Some(kind) = s.probe {
        let kind: ProbeKind = kind.parse()?;
        if kind == ProbeKind::SshLimit {
            uses_only(&[
                "from",
                "to",
                "port",
                "count",
                "family",
                "expect",
                "counted_by",
            ])?;
            if s.count.is_none_or(|n| n == 0) {
                return Err(
                    "`count` (the new connections the window allows, 1 or more) is required for an ssh-limit probe"
                        .into(),
                );
            }
        } else {
            uses_only(&["from", "to", "port", "family", "expect", "counted_by"])?;
        }
        let from = host(s.from.as_deref(), "from")?;
        let to = match s.to.as_deref() {
            Some(_) => host(s.to.as_deref(), "to")?,
            None => kind
                .default_to(from)
                .ok_or_else(|| format!("`to` is required for a {kind} probe from {from}"))?,
        };
        if from == to && kind != ProbeKind::LoopbackTcp {
            return Err(format!(
                "a {kind} probe from {from} to itself: use loopback-tcp"
            ));
        }
        let port = s.port.or(kind.default_port());
        if kind.needs_port() && port.is_none() {
            return Err(format!("`port` is required for a {kind} probe"));
        }
        return Ok(Step::Probe(ProbeStep {
            kind,
            from,
            to,
            port,
            count: s.count,
            families: families(s.family.as_deref())?,
            expect: expect(&s.expect)?,
            counted_by: counted(&s.counted_by)?,
            why: s.why.unwrap_or_default(),
        }));
    }
    let action = s.action.unwrap_or_default();
    match action.as_str() {
        "reset-counters" => {
            uses_only(&[])?;
            Ok(Step::ResetCounters)
        }
        "flush-neighbours" => {
            uses_only(&["on", "family"])?;
            Ok(Step::FlushNeighbours {
                on: host(s.on.as_deref(), "on")?,
                families: families(s.family.as_deref())?,
            })
        }
        "open-ssh-session" => {
            let fams = families(s.family.as_deref())?;
            let [family] = fams[..] else {
                return Err("open-ssh-session needs one `family` (ipv4 or ipv6)".into());
            };
            uses_only(&["from", "to", "on", "port", "family", "session"])?;
            Ok(Step::OpenSshSession {
                name: s.session.unwrap_or_else(|| "session".into()),
                from: host(s.from.as_deref(), "from")?,
                family,
            })
        }
        "check-ssh-session" => {
            uses_only(&["expect", "counted_by", "session"])?;
            Ok(Step::CheckSshSession {
                name: s.session.unwrap_or_else(|| "session".into()),
                expect: expect(&s.expect)?,
                counted_by: counted(&s.counted_by)?,
                why: s.why.unwrap_or_default(),
            })
        }
        other => Err(format!(
            "unknown action `{other}`: expected reset-counters, flush-neighbours, open-ssh-session or check-ssh-session"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, String> {
        Scenario::parse(text, Path::new("scenarios/t/x.toml")).map_err(|e| e.to_string())
    }

    const OK: &str = r#"
description = "ssh from the admin subnet"
[ruleset.main]
policy = "@default"
[map]
"10.137.0.0/24" = "admin"
[[step]]
probe = "ssh"
from = "admin"
family = "ipv4"
expect = "ok"
counted_by = "INPUT: ssh from admin subnet"
[[step]]
probe = "tcp"
from = "target"
to = "web"
port = 8081
expect = "no-answer"
counted_by = "OUTPUT policy"
"#;

    #[test]
    fn a_valid_scenario_loads_main_first_and_expands_families() {
        let s = parse(OK).unwrap();
        assert!(matches!(&s.steps[0], Step::Load(n) if n == "main"));
        let Step::Probe(p) = &s.steps[1] else {
            panic!()
        };
        assert_eq!(
            (p.kind, p.to, p.port),
            (ProbeKind::Ssh, HostId::Target, Some(22))
        );
        assert_eq!(p.families, [Family::V4]);
        let Step::Probe(p) = &s.steps[2] else {
            panic!()
        };
        assert_eq!(p.families, [Family::V4, Family::V6]);
        assert_eq!(s.map.len(), 1);
    }

    #[test]
    fn errors_name_the_step_and_what_was_expected() {
        for (text, want) in [
            (OK.replace("probe = \"tcp\"", "probe = \"smtp\""), "step 2"),
            (
                OK.replace("expect = \"ok\"", "expect = \"maybe\""),
                "unknown outcome `maybe`",
            ),
            (
                OK.replace("family = \"ipv4\"", "famly = \"ipv4\""),
                "unknown field `famly`",
            ),
            (OK.replace("port = 8081\n", ""), "`port` is required"),
            (
                OK.replace("policy = \"@default\"", "policy = \"nope.toml\""),
                "cannot read policy",
            ),
            (
                OK.replace("\"admin\"\n[[step]]", "\"gateway\"\n[[step]]"),
                "unknown host `gateway`",
            ),
            (
                OK.replace("\"admin\"\n[[step]]", "\"router\"\n[[step]]"),
                "unknown host `router`: expected target, admin, outsider, resolver, web or inner",
            ),
            (
                OK.replace("to = \"web\"", "to = \"router\""),
                "unknown host `router`",
            ),
            (
                OK.replace(
                    "policy = \"@default\"",
                    "policy = \"@default\"\nrules_v4 = \"*filter\\nCOMMIT\\n\"",
                ),
                "exactly one of",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.contains(want), "want {want:?} in {e}");
            assert!(e.starts_with("scenarios/t/x.toml: "), "{e}");
        }
    }

    #[test]
    fn top_level_keys_are_ruleset_main() {
        let text = OK.replace(
            "[ruleset.main]\npolicy = \"@default\"\n",
            "policy = \"@default\"\n",
        );
        let s = parse(&text).unwrap();
        assert!(matches!(s.rulesets["main"], RulesetSource::Policy(_)));
        let both = OK.replace("[ruleset.main]", "policy = \"@default\"\n[ruleset.main]");
        assert!(parse(&both).unwrap_err().contains("give one"));
    }

    #[test]
    fn an_ssh_limit_probe_needs_its_count() {
        let step = "[[step]]\nprobe = \"ssh-limit\"\nfrom = \"admin\"\nexpect = \"no-answer\"\n";
        let e = parse(&format!("{OK}{step}")).unwrap_err();
        assert!(e.contains("`count`"), "{e}");
        let s = parse(&format!("{OK}{step}count = 6\n")).unwrap();
        let Some(Step::Probe(p)) = s.steps.last() else {
            panic!("no probe step")
        };
        assert_eq!(
            (p.kind, p.count, p.port),
            (ProbeKind::SshLimit, Some(6), Some(22))
        );
    }

    #[test]
    fn a_key_a_step_does_not_use_is_refused() {
        let session =
            "[[step]]\naction = \"open-ssh-session\"\nfrom = \"admin\"\nfamily = \"ipv4\"\n";
        for (step, key) in [
            ("[[step]]\nload = \"main\"\nport = 22\n", "port"),
            (
                "[[step]]\nprobe = \"ssh\"\nfrom = \"admin\"\ncount = 6\nexpect = \"ok\"\n",
                "count",
            ),
            (
                "[[step]]\nprobe = \"tcp\"\nfrom = \"admin\"\nport = 22\non = \"target\"\n",
                "on",
            ),
            (
                "[[step]]\naction = \"reset-counters\"\nfamily = \"ipv4\"\n",
                "family",
            ),
            (
                "[[step]]\naction = \"flush-neighbours\"\non = \"admin\"\nport = 1\n",
                "port",
            ),
            (
                "[[step]]\naction = \"open-ssh-session\"\nfrom = \"admin\"\nfamily = \"ipv4\"\nexpect = \"ok\"\n",
                "expect",
            ),
            (
                "[[step]]\naction = \"check-ssh-session\"\nexpect = \"ok\"\nfrom = \"admin\"\n",
                "from",
            ),
        ] {
            let e = parse(&format!("{OK}{session}{step}")).unwrap_err();
            assert!(e.contains(&format!("`{key}` means nothing")), "{step}: {e}");
        }
        // What each step does use is accepted.
        let fine = format!(
            "{OK}{session}[[step]]\naction = \"flush-neighbours\"\non = \"admin\"\nfamily = \"ipv6\"\n\
             [[step]]\naction = \"check-ssh-session\"\nexpect = \"ok\"\ncounted_by = \"OUTPUT policy\"\n"
        );
        parse(&fine).unwrap();
    }

    #[test]
    fn a_scenario_without_probes_is_refused() {
        let e = parse("description = \"x\"\n[ruleset.main]\npolicy = \"@default\"\n").unwrap_err();
        assert!(e.contains("cannot fail"), "{e}");
    }

    #[test]
    fn literal_rules_and_inline_policies_parse() {
        let text = r#"
description = "literal"
[ruleset.old]
rules_v4 = '''
*filter
:INPUT DROP [0:0]
COMMIT
'''
[ruleset.new.policy_inline]
ssh = { allow_from = ["192.0.2.0/24"] }
outbound = { dns = true }
[[step]]
load = "old"
[[step]]
probe = "dns-udp"
from = "target"
expect = "no-answer"
counted_by = "OUTPUT policy"
[[step]]
load = "new"
[[step]]
action = "open-ssh-session"
from = "admin"
family = "ipv4"
[[step]]
action = "check-ssh-session"
expect = "ok"
"#;
        let s = parse(text).unwrap();
        assert!(matches!(
            &s.rulesets["old"],
            RulesetSource::Rules {
                v4: Some(_),
                v6: None
            }
        ));
        let RulesetSource::Policy(p) = &s.rulesets["new"] else {
            panic!()
        };
        assert!(p.outbound.dns && !p.outbound.http);
        assert_eq!(s.steps.len(), 5);
    }
}
