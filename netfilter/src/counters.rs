//! Rule and chain-policy counters, parsed from `*-save -c`, their growth between
//! two snapshots ([`Counters::since`]) and the one way to ask which rule counted
//! a packet ([`Selector`], [`Counters::count`]).
//!
//! Parsing is pure (no I/O): `Counters::parse(family, text)`. A rule is known by
//! its table, chain, 1-based index within the chain and its text; the comment of
//! `-m comment --comment` is lifted out so a scenario can name a rule by it.
//! It refuses nothing it does not understand silently: a malformed line is an
//! error naming the line.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::backend::Family;

/// What a counter belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CounterKind {
    /// The policy of a built-in chain (`ACCEPT`, `DROP`).
    Policy { policy: String },
    /// A rule: its 1-based position in its chain, its text after `-A CHAIN`, and
    /// its comment when it has one.
    Rule {
        index: usize,
        text: String,
        comment: Option<String>,
    },
}

/// One counter of one family's ruleset.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Counter {
    #[serde(serialize_with = "family_name")]
    pub family: Family,
    pub table: String,
    pub chain: String,
    pub kind: CounterKind,
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    /// The comment of a rule (`None` for a policy or a rule without one).
    pub fn comment(&self) -> Option<&str> {
        match &self.kind {
            CounterKind::Rule { comment, .. } => comment.as_deref(),
            CounterKind::Policy { .. } => None,
        }
    }

    /// Whether this is the policy of `chain` (in any table).
    pub fn is_policy_of(&self, chain: &str) -> bool {
        matches!(self.kind, CounterKind::Policy { .. }) && self.chain == chain
    }

    /// A short label: `ipv4 filter INPUT policy DROP`, `ipv6 filter INPUT #3
    /// "ssh from the admin subnet"` or the rule text when it has no comment.
    pub fn label(&self) -> String {
        self.to_string()
    }

    /// Whether this counter counts drops: a `DROP` policy, or a rule whose target
    /// is `-j DROP`.
    pub fn is_drop(&self) -> bool {
        match &self.kind {
            CounterKind::Policy { policy } => policy == "DROP",
            CounterKind::Rule { text, .. } => text.trim_end().ends_with("-j DROP"),
        }
    }

    /// The label `counted_in` gives: `INPUT: COMMENT`, `INPUT#3`, `INPUT policy`
    /// (DROP) or `OUTPUT policy (ACCEPT)`.
    pub fn short_label(&self) -> String {
        match &self.kind {
            // A DROP policy is the expected one; name any other.
            CounterKind::Policy { policy } if policy == "DROP" => format!("{} policy", self.chain),
            CounterKind::Policy { policy } => format!("{} policy ({policy})", self.chain),
            CounterKind::Rule {
                comment: Some(c), ..
            } => format!("{}: {c}", self.chain),
            CounterKind::Rule { index, .. } => format!("{}#{index}", self.chain),
        }
    }

    fn key(&self) -> (Family, &str, &str, &CounterKind) {
        (self.family, &self.table, &self.chain, &self.kind)
    }
}

impl fmt::Display for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {} ", self.family, self.table, self.chain)?;
        match &self.kind {
            CounterKind::Policy { policy } => write!(f, "policy {policy}"),
            CounterKind::Rule {
                index,
                comment: Some(c),
                ..
            } => write!(f, "#{index} {c:?}"),
            CounterKind::Rule { index, text, .. } => write!(f, "#{index} {text}"),
        }
    }
}

/// Names counters of a ruleset: the one vocabulary for "which rule (or policy)
/// counted this", asked of a [`Counters`] snapshot or a [`Counters::since`]
/// value with [`Counters::count`]. Chains are matched in any table and family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// The policy of this built-in chain (`INPUT`, `FORWARD`, `OUTPUT`).
    Policy(String),
    /// The rule at this 1-based position in this chain, as `iptables
    /// --line-numbers` numbers it.
    Rule { chain: String, index: usize },
    /// Every rule whose `--comment` begins with `prefix`, in `chain` or in any
    /// chain (a whole comment is its own prefix).
    Comment {
        chain: Option<String>,
        prefix: String,
    },
    /// Anything that drops: `-j DROP` rules and `DROP` policies.
    AnyDrop,
}

impl Selector {
    /// The policy of `chain`.
    pub fn policy(chain: &str) -> Selector {
        Selector::Policy(chain.to_owned())
    }

    /// The rules, in any chain, whose comment begins with `prefix`.
    pub fn comment(prefix: &str) -> Selector {
        Selector::Comment {
            chain: None,
            prefix: prefix.to_owned(),
        }
    }

    /// The rule at 1-based `index` of `chain`.
    pub fn rule(chain: &str, index: usize) -> Selector {
        Selector::Rule {
            chain: chain.to_owned(),
            index,
        }
    }

    /// Whether `counter` is one this selector names.
    pub fn matches(&self, counter: &Counter) -> bool {
        match (self, &counter.kind) {
            (Selector::Policy(chain), CounterKind::Policy { .. }) => &counter.chain == chain,
            (Selector::Rule { chain, index }, CounterKind::Rule { index: i, .. }) => {
                &counter.chain == chain && i == index
            }
            (Selector::Comment { chain, prefix }, CounterKind::Rule { .. }) => {
                chain.as_ref().is_none_or(|ch| &counter.chain == ch)
                    && counter
                        .comment()
                        .is_some_and(|c| c.starts_with(prefix.as_str()))
            }
            (Selector::AnyDrop, _) => counter.is_drop(),
            _ => false,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Policy(chain) => write!(f, "{chain} policy"),
            Selector::Rule { chain, index } => write!(f, "{chain}#{index}"),
            Selector::Comment {
                chain: Some(chain),
                prefix,
            } => write!(f, "{chain}: {prefix}"),
            Selector::Comment {
                chain: None,
                prefix,
            } => f.write_str(prefix),
            Selector::AnyDrop => f.write_str("any DROP"),
        }
    }
}

/// Every counter of one family, in the order `*-save` printed them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub entries: Vec<Counter>,
}

/// A line of `*-save -c` output that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

impl Counters {
    /// Parse the output of `iptables-save -c` (either backend).
    pub fn parse(family: Family, text: &str) -> Result<Counters, ParseError> {
        Counters::parse_with(family, text, true)
    }

    /// Parse a ruleset as `iptables-restore` reads it, where `[packets:bytes]` is
    /// optional (absent counts are zero): which rules and policies a file would
    /// load, to check that a [`Selector`] names one before anything runs.
    pub fn parse_ruleset(family: Family, text: &str) -> Result<Counters, ParseError> {
        Counters::parse_with(family, text, false)
    }

    fn parse_with(family: Family, text: &str, counted: bool) -> Result<Counters, ParseError> {
        let mut entries = Vec::new();
        let mut table: Option<String> = None;
        let mut index: HashMap<(String, String), usize> = HashMap::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            let err = |reason: &str| ParseError {
                line: n + 1,
                reason: format!("{reason}: {line:?}"),
            };
            if line.is_empty() || line.starts_with('#') || line == "COMMIT" {
                continue;
            }
            if let Some(t) = line.strip_prefix('*') {
                table = Some(t.to_owned());
                continue;
            }
            let Some(table) = table.clone() else {
                return Err(err("a rule or chain before any *table line"));
            };
            if let Some(chain_line) = line.strip_prefix(':') {
                // `:INPUT DROP [12:720]`; user chains have policy `-`.
                let mut parts = chain_line.split_whitespace();
                let (Some(chain), Some(policy), counts) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(err("a chain line needs a name, a policy and counters"));
                };
                let (packets, bytes) = match counts {
                    Some(counts) => {
                        parse_counts(counts).ok_or_else(|| err("bad [packets:bytes]"))?
                    }
                    None if !counted => (0, 0),
                    None => return Err(err("a chain line needs a name, a policy and counters")),
                };
                if policy == "-" {
                    continue;
                }
                entries.push(Counter {
                    family,
                    table,
                    chain: chain.to_owned(),
                    kind: CounterKind::Policy {
                        policy: policy.to_owned(),
                    },
                    packets,
                    bytes,
                });
                continue;
            }
            // `[5:300] -A INPUT -p tcp ... -j ACCEPT` (a ruleset may leave out the
            // counters)
            let ((packets, bytes), rule) = if !counted && line.starts_with("-A ") {
                ((0, 0), line)
            } else {
                let (counts, rule) = line
                    .split_once(' ')
                    .ok_or_else(|| err("a rule line needs [packets:bytes] and -A"))?;
                let counts = parse_counts(counts).ok_or_else(|| err("bad [packets:bytes]"))?;
                (counts, rule)
            };
            let rule = rule
                .trim_start()
                .strip_prefix("-A ")
                .ok_or_else(|| err("a rule line must append with -A"))?;
            let (chain, text) = rule.split_once(' ').unwrap_or((rule, ""));
            let i = index.entry((table.clone(), chain.to_owned())).or_default();
            *i += 1;
            entries.push(Counter {
                family,
                table,
                chain: chain.to_owned(),
                kind: CounterKind::Rule {
                    index: *i,
                    text: text.to_owned(),
                    comment: comment_of(text),
                },
                packets,
                bytes,
            });
        }
        Ok(Counters { entries })
    }

    /// Every counter, with its growth since `before` as its value, zeros kept: a
    /// rule that counted nothing is still there, so "no such rule" and "counted 0"
    /// stay apart. A counter that went down (zeroed between the reads) counts its
    /// new value. Counters are matched by family, table, chain, index and text.
    pub fn since(&self, before: &Counters) -> Counters {
        let old: HashMap<_, _> = before
            .entries
            .iter()
            .map(|c| (c.key(), (c.packets, c.bytes)))
            .collect();
        let sub = |now: u64, then: u64| if now >= then { now - then } else { now };
        let entries = self
            .entries
            .iter()
            .map(|c| {
                let (p0, b0) = old.get(&c.key()).copied().unwrap_or((0, 0));
                Counter {
                    packets: sub(c.packets, p0),
                    bytes: sub(c.bytes, b0),
                    ..c.clone()
                }
            })
            .collect();
        Counters { entries }
    }

    /// Only the counters of `table` (`"filter"`, where a policy lives).
    pub fn table(&self, table: &str) -> Counters {
        Counters {
            entries: self
                .entries
                .iter()
                .filter(|c| c.table == table)
                .cloned()
                .collect(),
        }
    }

    /// The packets counted by what `selector` names, summed over every counter
    /// it matches (narrow with [`Counters::table`] first when other tables are
    /// loaded); `None` when nothing here answers to it, so "no such rule" and
    /// "counted 0" stay apart. [`Selector::AnyDrop`] always answers.
    pub fn count(&self, selector: &Selector) -> Option<u64> {
        let mut hits = self.matching(selector).peekable();
        if hits.peek().is_none() && *selector != Selector::AnyDrop {
            return None;
        }
        Some(hits.map(|c| c.packets).sum())
    }

    /// The counters `selector` names, in save order.
    pub fn matching<'a>(
        &'a self,
        selector: &Selector,
    ) -> impl Iterator<Item = &'a Counter> + use<'a> {
        let selector = selector.clone();
        self.entries.iter().filter(move |c| selector.matches(c))
    }

    /// [`Counters::count`], with nothing answering read as 0.
    pub fn packets(&self, selector: &Selector) -> u64 {
        self.count(selector).unwrap_or(0)
    }

    /// The counters that counted packets, largest first: "which rule counted
    /// this" (use on a [`Counters::since`] value).
    pub fn moved(&self) -> Vec<&Counter> {
        let mut v: Vec<&Counter> = self.entries.iter().filter(|c| c.packets > 0).collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.packets));
        v
    }

    /// One line for reports: `counted by ipv4 filter INPUT policy DROP (1), ...`
    /// or `no counter moved`.
    pub fn summary(&self) -> String {
        let by: Vec<String> = self
            .moved()
            .iter()
            .map(|c| format!("{} ({})", c.label(), c.packets))
            .collect();
        if by.is_empty() {
            "no counter moved".to_owned()
        } else {
            format!("counted by {}", by.join(", "))
        }
    }

    /// What counted packets in `chain` (use on a `since` value): each rule
    /// with a non-zero count by `short_label`, then the policy. Conntrack's
    /// RELATED,ESTABLISHED rule is left out: it counts every reply.
    pub fn counted_in(&self, chain: &str) -> Vec<String> {
        let in_chain = || {
            self.entries
                .iter()
                .filter(|c| c.chain == chain && c.packets > 0)
        };
        let rules = in_chain().filter(|c| match &c.kind {
            CounterKind::Rule { text, .. } => !text.contains("RELATED,ESTABLISHED"),
            CounterKind::Policy { .. } => false,
        });
        let policies = in_chain().filter(|c| c.is_policy_of(chain));
        rules.chain(policies).map(Counter::short_label).collect()
    }

    /// The tables present, for zeroing them.
    pub fn tables(&self) -> BTreeSet<String> {
        self.entries.iter().map(|c| c.table.clone()).collect()
    }

    /// Append another family's counters (a snapshot of both families).
    pub fn extend(&mut self, other: Counters) {
        self.entries.extend(other.entries);
    }
}

fn family_name<S: serde::Serializer>(f: &Family, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.name())
}

fn parse_counts(s: &str) -> Option<(u64, u64)> {
    let inner = s.strip_prefix('[')?.strip_suffix(']')?;
    let (p, b) = inner.split_once(':')?;
    Some((p.parse().ok()?, b.parse().ok()?))
}

/// The argument of `--comment` in a saved rule: a bare word or a double-quoted
/// string with `\"` and `\\` escapes, as iptables-save prints it.
fn comment_of(text: &str) -> Option<String> {
    let start = text.find("--comment ")? + "--comment ".len();
    let rest = &text[start..];
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
        rest.split_whitespace().next().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_chain(chain: &str, prefix: &str) -> Selector {
        Selector::Comment {
            chain: Some(chain.to_owned()),
            prefix: prefix.to_owned(),
        }
    }

    #[test]
    fn selectors_print_as_verify_names_them() {
        for (sel, text) in [
            (Selector::policy("INPUT"), "INPUT policy"),
            (Selector::rule("INPUT", 3), "INPUT#3"),
            (in_chain("OUTPUT", "loopback"), "OUTPUT: loopback"),
            (Selector::comment("loopback"), "loopback"),
            (Selector::AnyDrop, "any DROP"),
        ] {
            assert_eq!(sel.to_string(), text);
        }
    }

    const SAVED: &str = r#"# Generated by iptables-nft-save v1.8.9 (nf_tables) on Sun Nov 29 00:00:00 2026
*filter
:INPUT DROP [7:420]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [3:180]
:LOGDROP - [0:0]
[10:600] -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
[1:60] -A INPUT -s 198.51.100.0/28 -p tcp -m tcp --dport 22 -m comment --comment "ssh from \"admin\" subnet" -j ACCEPT
[2:120] -A INPUT -p tcp -m comment --comment web -j ACCEPT
[0:0] -A OUTPUT -o lo -j ACCEPT
COMMIT
# Completed on Sun Nov 29 00:00:00 2026
"#;

    #[test]
    fn parses_policies_rules_indexes_and_comments() {
        let c = Counters::parse(Family::V4, SAVED).unwrap();
        assert_eq!(c.entries.len(), 7, "3 policies (no user chain) + 4 rules");
        assert_eq!(c.packets(&Selector::policy("INPUT")), 7);
        assert_eq!(
            c.packets(&Selector::comment("ssh from \"admin\" subnet")),
            1
        );
        assert_eq!(c.packets(&Selector::comment("web")), 2);
        let out = c
            .entries
            .iter()
            .find(|e| e.chain == "OUTPUT" && !e.is_policy_of("OUTPUT"));
        assert!(matches!(
            out.unwrap().kind,
            CounterKind::Rule { index: 1, .. }
        ));
        let second = &c.entries[4];
        assert!(matches!(second.kind, CounterKind::Rule { index: 2, .. }));
        assert_eq!(c.tables().into_iter().collect::<Vec<_>>(), vec!["filter"]);
    }

    #[test]
    fn since_keeps_every_counter_and_moved_lists_what_grew() {
        let before = Counters::parse(Family::V4, SAVED).unwrap();
        let after_text = SAVED
            .replace(":INPUT DROP [7:420]", ":INPUT DROP [8:480]")
            .replace("[2:120] -A INPUT -p tcp", "[5:300] -A INPUT -p tcp");
        let after = Counters::parse(Family::V4, &after_text).unwrap();
        let d = after.since(&before);
        assert_eq!(d.entries.len(), before.entries.len(), "zeros are kept");
        let moved = d.moved();
        assert_eq!(moved.len(), 2);
        assert_eq!(moved[0].comment(), Some("web"), "largest first");
        assert!(moved[1].is_policy_of("INPUT"));
        assert_eq!((moved[1].packets, moved[1].bytes), (1, 60));
        assert_eq!(moved[1].label(), "ipv4 filter INPUT policy DROP");
        assert_eq!(
            d.summary(),
            "counted by ipv4 filter INPUT #3 \"web\" (3), ipv4 filter INPUT policy DROP (1)"
        );
        assert_eq!(before.since(&before).summary(), "no counter moved");
    }

    /// What `portcullis verify` needs: every counter with its growth, "counted 0"
    /// apart from "no such rule", the filter table alone, comments by prefix, any
    /// drop, and what counted instead.
    #[test]
    fn since_attributes_a_probe_to_its_rule() {
        let with_mangle = format!("{SAVED}*mangle\n:INPUT ACCEPT [50:3000]\nCOMMIT\n");
        let before = Counters::parse(Family::V4, &with_mangle).unwrap();
        let after_text = with_mangle
            .replace(":INPUT DROP [7:420]", ":INPUT DROP [9:540]")
            .replace(
                "[2:120] -A INPUT -p tcp -m comment --comment web",
                "[5:300] -A INPUT -p tcp -m comment --comment web",
            )
            .replace(":INPUT ACCEPT [50:3000]", ":INPUT ACCEPT [60:3600]");
        let d = Counters::parse(Family::V4, &after_text)
            .unwrap()
            .since(&before)
            .table("filter");
        assert_eq!(d.entries.len(), 7, "zeros are kept, mangle is not");
        assert_eq!(d.count(&Selector::policy("INPUT")), Some(2));
        assert_eq!(d.count(&Selector::policy("OUTPUT")), Some(0));
        assert_eq!(d.count(&Selector::rule("INPUT", 3)), Some(3));
        assert_eq!(d.count(&Selector::rule("INPUT", 4)), None);
        assert_eq!(d.count(&in_chain("INPUT", "we")), Some(3));
        assert_eq!(d.count(&in_chain("OUTPUT", "web")), None);
        assert_eq!(d.count(&Selector::comment("ssh from")), Some(0));
        assert_eq!(d.count(&Selector::comment("no such rule")), None);
        assert_eq!(d.packets(&Selector::comment("no such rule")), 0);
        assert_eq!(
            d.count(&Selector::AnyDrop),
            Some(2),
            "the INPUT policy; OUTPUT accepts"
        );
        assert_eq!(
            Counters::default().count(&Selector::AnyDrop),
            Some(0),
            "any drop always answers"
        );
        assert_eq!(d.counted_in("INPUT"), ["INPUT: web", "INPUT policy"]);
        assert!(d.counted_in("OUTPUT").is_empty());
        let out = after_text.replace(":OUTPUT ACCEPT [3:180]", ":OUTPUT ACCEPT [4:240]");
        let d2 = Counters::parse(Family::V4, &out).unwrap().since(&before);
        assert_eq!(d2.counted_in("OUTPUT"), ["OUTPUT policy (ACCEPT)"]);
        // Zeroed between the reads: the new value is what counted.
        let zeroed = before.since(&Counters::parse(Family::V4, &after_text).unwrap());
        assert_eq!(
            zeroed.table("filter").count(&Selector::policy("INPUT")),
            Some(7)
        );
        let rule = d.matching(&Selector::rule("INPUT", 1)).next().unwrap();
        assert_eq!(rule.short_label(), "INPUT#1");
        assert!(!rule.is_drop());
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line() {
        let e = Counters::parse(Family::V6, "*filter\n[x:0] -A INPUT -j DROP\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = Counters::parse(Family::V6, ":INPUT DROP [0:0]\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = Counters::parse(Family::V6, "*filter\n:INPUT DROP\n").unwrap_err();
        assert_eq!(e.line, 2, "save output always carries the counters");
        let e = Counters::parse(Family::V6, "*filter\n-A INPUT -j DROP\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    /// A restore file names the same rules as its save output, counters or not;
    /// anything else that is not a rule is still an error.
    #[test]
    fn a_ruleset_parses_with_or_without_counters() {
        let text = "*filter\n:INPUT DROP [0:0]\n:OUTPUT DROP\n\
                    -A INPUT -i lo -m comment --comment loopback -j ACCEPT\n\
                    [0:0] -A INPUT -p tcp -m tcp --dport 22 -j DROP\n\
                    -A OUTPUT -o lo -m comment --comment loopback -j ACCEPT\nCOMMIT\n";
        let c = Counters::parse_ruleset(Family::V4, text).unwrap();
        assert_eq!(c.entries.len(), 5);
        let one = |sel: Selector| c.matching(&sel).cloned().collect::<Vec<_>>();
        assert!(matches!(&one(Selector::policy("OUTPUT"))[..], [p] if p.is_drop()));
        assert_eq!(c.count(&Selector::comment("loop")), Some(0));
        assert_eq!(c.count(&in_chain("FORWARD", "loop")), None);
        assert!(matches!(&one(Selector::rule("INPUT", 2))[..], [r] if r.is_drop()));
        assert_eq!(c.count(&Selector::rule("OUTPUT", 2)), None);
        let e = Counters::parse_ruleset(Family::V4, "*filter\n-I INPUT -j DROP\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    /// A drop counts wherever it happens: `-j DROP` rules and DROP policies, in
    /// every chain, and a comment prefix without a chain sums over chains.
    #[test]
    fn drops_and_comments_sum_over_chains() {
        let before = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                      [0:0] -A INPUT -p tcp -m tcp --dport 23 -m comment --comment \"no telnet\" -j DROP\n\
                      [0:0] -A INPUT -i lo -m comment --comment loopback -j ACCEPT\n\
                      [0:0] -A OUTPUT -o lo -m comment --comment loopback -j ACCEPT\nCOMMIT\n";
        let after = before
            .replace(":INPUT DROP [0:0]", ":INPUT DROP [2:120]")
            .replace(":OUTPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [9:540]")
            .replace("[0:0] -A INPUT -p tcp", "[1:60] -A INPUT -p tcp")
            .replace("[0:0] -A INPUT -i lo", "[3:180] -A INPUT -i lo")
            .replace("[0:0] -A OUTPUT -o lo", "[4:240] -A OUTPUT -o lo");
        let before = Counters::parse(Family::V4, before).unwrap();
        let d = Counters::parse(Family::V4, &after).unwrap().since(&before);
        assert_eq!(
            d.count(&Selector::AnyDrop),
            Some(3),
            "the telnet rule and the INPUT policy"
        );
        assert_eq!(d.count(&Selector::comment("loopback")), Some(7));
        assert_eq!(d.count(&in_chain("INPUT", "loopback")), Some(3));
        assert_eq!(
            d.counted_in("INPUT"),
            ["INPUT: no telnet", "INPUT: loopback", "INPUT policy"]
        );
    }
}
