//! Packet counters of one family's `filter` table, read from `*-save -c`, and the
//! check that decides whether a probe was counted by the rule that must count it.
//! Pure text processing: the lab reads the counters on the target's own thread.

use portcullis_harness::Family;
use portcullis_harness::probe::Outcome;

use super::model::{CountedBy, Expectation, parse_chain};
use crate::rule::Chain;

/// One rule's packet counter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleCount {
    #[serde(serialize_with = "ser_chain")]
    pub chain: Chain,
    /// 1-based position in its chain, as `--line-numbers` prints it.
    pub position: usize,
    pub comment: Option<String>,
    /// The rule as `*-save` prints it, without the counter.
    pub spec: String,
    pub packets: u64,
}

fn ser_chain<S: serde::Serializer>(c: &Chain, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.name())
}

/// The counters of the built-in chains of `*filter`: each policy and each rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// INPUT, FORWARD, OUTPUT policy packet counts.
    pub policies: [u64; 3],
    /// Whether each of those policies is DROP.
    pub policy_drops: [bool; 3],
    pub rules: Vec<RuleCount>,
}

fn chain_index(c: Chain) -> usize {
    match c {
        Chain::Input => 0,
        Chain::Forward => 1,
        Chain::Output => 2,
    }
}

/// `[12:345]` at the start of `s`: the packet count and the rest of the line.
fn bracket_count(s: &str) -> Option<(u64, &str)> {
    let s = s.strip_prefix('[')?;
    let (inside, rest) = s.split_once(']')?;
    let (packets, _bytes) = inside.split_once(':')?;
    Some((packets.trim().parse().ok()?, rest.trim_start()))
}

/// The `--comment` of a saved rule: quoted (with `\"` escapes) or one bare word.
fn comment_of(spec: &str) -> Option<String> {
    let at = spec.find("--comment ")? + "--comment ".len();
    let rest = &spec[at..];
    if let Some(quoted) = rest.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = quoted.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return Some(out),
                c => out.push(c),
            }
        }
        None
    } else {
        Some(rest.split_whitespace().next()?.to_owned())
    }
}

impl Counters {
    /// Parse the `*filter` table of `*-save -c` output. Other tables and
    /// user-defined chains are skipped: the policy lives in the built-in chains.
    pub fn parse(save: &str) -> Counters {
        let mut out = Counters::default();
        let mut in_filter = false;
        let mut positions = [0usize; 3];
        for line in save.lines() {
            let line = line.trim();
            if let Some(table) = line.strip_prefix('*') {
                in_filter = table == "filter";
                continue;
            }
            if !in_filter || line.starts_with('#') || line.is_empty() {
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                // `:INPUT DROP [31:1848]`
                let mut parts = decl.splitn(3, ' ');
                let (Some(name), Some(policy), count) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if let Some(chain) = parse_chain(name) {
                    let packets = count.and_then(bracket_count).map_or(0, |(p, _)| p);
                    out.policies[chain_index(chain)] = packets;
                    out.policy_drops[chain_index(chain)] = policy == "DROP";
                }
                continue;
            }
            // `[678:42849] -A INPUT ...` (legacy and nft both print this with -c)
            let (packets, rule) = match bracket_count(line) {
                Some(x) => x,
                None => (0, line),
            };
            let Some(after) = rule.strip_prefix("-A ") else {
                continue;
            };
            let name = after.split_whitespace().next().unwrap_or("");
            let Some(chain) = parse_chain(name) else {
                continue;
            };
            positions[chain_index(chain)] += 1;
            out.rules.push(RuleCount {
                chain,
                position: positions[chain_index(chain)],
                comment: comment_of(rule),
                spec: rule.to_owned(),
                packets,
            });
        }
        out
    }

    pub fn policy(&self, chain: Chain) -> u64 {
        self.policies[chain_index(chain)]
    }

    /// `after - before`, rule by rule (matched by chain and position: the ruleset is
    /// the same between the two reads). A counter that went down (a reset between
    /// reads) counts as its new value.
    pub fn delta(before: &Counters, after: &Counters) -> Counters {
        let sub = |a: u64, b: u64| if a >= b { a - b } else { a };
        let mut d = after.clone();
        for (i, p) in d.policies.iter_mut().enumerate() {
            *p = sub(after.policies[i], before.policies[i]);
        }
        for r in &mut d.rules {
            let old = before
                .rules
                .iter()
                .find(|b| b.chain == r.chain && b.position == r.position && b.spec == r.spec)
                .map_or(0, |b| b.packets);
            r.packets = sub(r.packets, old);
        }
        d
    }

    /// The packets `by` counted; `None` when no rule of this ruleset answers to it.
    pub fn counted(&self, by: &CountedBy) -> Option<u64> {
        match by {
            CountedBy::Policy(c) => Some(self.policy(*c)),
            CountedBy::Position(c, n) => self
                .rules
                .iter()
                .find(|r| r.chain == *c && r.position == *n)
                .map(|r| r.packets),
            CountedBy::Comment(chain, text) => {
                let hits: Vec<&RuleCount> = self
                    .rules
                    .iter()
                    .filter(|r| chain.is_none_or(|c| r.chain == c))
                    .filter(|r| {
                        r.comment
                            .as_deref()
                            .is_some_and(|c| c.starts_with(text.as_str()))
                    })
                    .collect();
                (!hits.is_empty()).then(|| hits.iter().map(|r| r.packets).sum())
            }
            CountedBy::AnyDrop => Some(
                self.rules
                    .iter()
                    .filter(|r| r.spec.trim_end().ends_with("-j DROP"))
                    .map(|r| r.packets)
                    .sum::<u64>()
                    + (0..3)
                        .filter(|&i| self.policy_drops[i])
                        .map(|i| self.policies[i])
                        .sum::<u64>(),
            ),
        }
    }

    /// What counted packets in `chain`: each rule with a non-zero delta (by comment
    /// when it has one, else `CHAIN#N`), then the policy. Conntrack's
    /// RELATED,ESTABLISHED rule is left out: it counts every reply.
    pub fn counted_in(&self, chain: Chain) -> Vec<String> {
        let mut out: Vec<String> = self
            .rules
            .iter()
            .filter(|r| r.chain == chain && r.packets > 0)
            .filter(|r| !r.spec.contains("RELATED,ESTABLISHED"))
            .map(|r| match &r.comment {
                Some(c) => format!("{}: {c}", chain.name()),
                None => format!("{}#{}", chain.name(), r.position),
            })
            .collect();
        if self.policy(chain) > 0 {
            let accept = if self.policy_drops[chain_index(chain)] {
                ""
            } else {
                " (ACCEPT)"
            };
            out.push(format!("{} policy{accept}", chain.name()));
        }
        out
    }
}

/// What a probe saw, and what the target's counters say about it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Observation {
    pub outcome: Outcome,
    /// The counter deltas of the probe's family over the probe.
    pub deltas: Counters,
    #[serde(skip)]
    pub family: Option<Family>,
}

/// Compare an observation with its promise: `Ok(())` or every reason it failed.
pub fn check(exp: &Expectation, obs: &Observation) -> Result<(), Vec<String>> {
    let mut why = Vec::new();
    if !exp.expect.matches(&obs.outcome) {
        why.push(format!(
            "expected {}, observed {:?}",
            exp.expect, obs.outcome
        ));
    }
    if let Some(by) = &exp.counted_by {
        match obs.deltas.counted(by) {
            None => why.push(format!(
                "no rule answers to counted_by `{by}` in the loaded ruleset"
            )),
            Some(0) => {
                let seen = Chain::ALL
                    .into_iter()
                    .flat_map(|c| obs.deltas.counted_in(c))
                    .collect::<Vec<_>>();
                why.push(format!(
                    "`{by}` did not count it (counted instead: {})",
                    if seen.is_empty() {
                        "nothing".to_owned()
                    } else {
                        seen.join(", ")
                    }
                ));
            }
            Some(_) => {}
        }
    }
    if why.is_empty() { Ok(()) } else { Err(why) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT DROP [31:1848]
:FORWARD DROP [0:0]
:OUTPUT DROP [3:214]
[110:7468] -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
[0:0] -A INPUT -s 192.0.2.0/26 -p tcp -m tcp --dport 22 -m comment --comment \"ssh from admin subnet\" -j ACCEPT
[4:240] -A INPUT -i lo -m comment --comment loopback -j ACCEPT
[0:0] -A OUTPUT -o lo -m comment --comment loopback -j ACCEPT
[0:0] -A OUTPUT -p tcp -m tcp --dport 80 -m comment --comment \"say \\\"hi\\\"\" -j ACCEPT
COMMIT
";

    #[test]
    fn parses_policies_rules_positions_and_comments() {
        let c = Counters::parse(BEFORE);
        assert_eq!(c.policies, [31, 0, 3]);
        assert_eq!(c.policy_drops, [true, true, true]);
        assert_eq!(c.rules.len(), 5);
        assert_eq!(c.rules[1].position, 2);
        assert_eq!(c.rules[1].comment.as_deref(), Some("ssh from admin subnet"));
        assert_eq!(c.rules[2].comment.as_deref(), Some("loopback"));
        assert_eq!(c.rules[3].position, 1);
        assert_eq!(c.rules[4].comment.as_deref(), Some("say \"hi\""));
        assert_eq!(c.rules[0].comment, None);
    }

    #[test]
    fn deltas_attribute_a_probe_to_its_rule() {
        let before = Counters::parse(BEFORE);
        let after = Counters::parse(
            &BEFORE
                .replace(":INPUT DROP [31:1848]", ":INPUT DROP [33:1968]")
                .replace("[4:240] -A INPUT -i lo", "[6:360] -A INPUT -i lo"),
        );
        let d = Counters::delta(&before, &after);
        assert_eq!(d.counted(&"INPUT policy".parse().unwrap()), Some(2));
        assert_eq!(d.counted(&"INPUT: loopback".parse().unwrap()), Some(2));
        assert_eq!(d.counted(&"OUTPUT: loopback".parse().unwrap()), Some(0));
        assert_eq!(d.counted(&"loopback".parse().unwrap()), Some(2));
        assert_eq!(d.counted(&"INPUT#3".parse().unwrap()), Some(2));
        assert_eq!(d.counted(&"no such rule".parse().unwrap()), None);
        assert_eq!(d.counted(&CountedBy::AnyDrop), Some(2));
        assert_eq!(
            d.counted_in(Chain::Input),
            ["INPUT: loopback", "INPUT policy"]
        );
    }

    fn exp(expect: &str, by: &str) -> Expectation {
        use super::super::model::*;
        Expectation {
            probe: ProbeSpec {
                kind: ProbeKind::Ssh,
                from: Host::Outsider,
                to: Host::Target,
                family: Family::V4,
                port: Some(22),
            },
            expect: expect.parse().unwrap(),
            counted_by: Some(by.parse().unwrap()),
            why: String::new(),
        }
    }

    #[test]
    fn a_drop_needs_its_counter_not_just_silence() {
        let before = Counters::parse(BEFORE);
        let silent = Observation {
            outcome: Outcome::NoAnswer,
            deltas: Counters::delta(&before, &before),
            family: None,
        };
        let err = check(&exp("no-answer", "INPUT policy"), &silent).unwrap_err();
        assert!(err[0].contains("did not count it"), "{err:?}");
        let counted = Observation {
            outcome: Outcome::NoAnswer,
            deltas: Counters::delta(
                &before,
                &Counters::parse(&BEFORE.replace("[31:1848]", "[32:1908]")),
            ),
            family: None,
        };
        assert!(check(&exp("no-answer", "INPUT policy"), &counted).is_ok());
        let err = check(&exp("ok", "INPUT policy"), &counted).unwrap_err();
        assert!(err[0].contains("expected ok"), "{err:?}");
    }
}
