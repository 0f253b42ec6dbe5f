//! Evidence: what a probe observed, and which of the target's rules or chain
//! policies counted its packets meanwhile.
//!
//! A drop is proved by the counter of the rule (or policy) that must count it, not
//! by silence alone. Evidence does not judge: it reports outcome and deltas, and
//! answers "did this rule count anything?". The deltas can include unrelated
//! packets of the same window (neighbour discovery, say), so ask about the rule
//! you expect rather than demanding that nothing else moved.

use crate::counters::{CounterKind, Delta};
use crate::probe::Outcome;

/// One probe's outcome and the target's counter deltas around it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Evidence {
    pub outcome: Outcome,
    /// Every counter of the target that grew, with the growth.
    pub deltas: Vec<Delta>,
}

/// Names a counter of the target's ruleset.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    /// The rule(s) whose `-m comment --comment` is this text.
    Comment(String),
    /// The policy of this built-in chain (`INPUT`, `OUTPUT`, `FORWARD`).
    Policy(String),
    /// The rule at this 1-based position in this chain.
    Rule { chain: String, index: usize },
}

impl Selector {
    /// Whether `delta` is the counter this selector names.
    pub fn matches(&self, delta: &Delta) -> bool {
        match (self, &delta.kind) {
            (Selector::Comment(c), _) => delta.comment() == Some(c.as_str()),
            (Selector::Policy(chain), CounterKind::Policy { .. }) => &delta.chain == chain,
            (Selector::Rule { chain, index }, CounterKind::Rule { index: i, .. }) => {
                &delta.chain == chain && i == index
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Comment(c) => write!(f, "rule {c:?}"),
            Selector::Policy(chain) => write!(f, "{chain} policy"),
            Selector::Rule { chain, index } => write!(f, "{chain} rule #{index}"),
        }
    }
}

impl Evidence {
    /// The counters that grew during the probe, largest first: "which rule
    /// counted this".
    pub fn counted_by(&self) -> Vec<&Delta> {
        let mut v: Vec<&Delta> = self.deltas.iter().collect();
        v.sort_by_key(|d| std::cmp::Reverse(d.packets));
        v
    }

    /// Packets counted by what `selector` names during the probe (0 if nothing).
    pub fn count(&self, selector: &Selector) -> u64 {
        self.deltas
            .iter()
            .filter(|d| selector.matches(d))
            .map(|d| d.packets)
            .sum()
    }

    /// Packets counted by the rule with this comment.
    pub fn rule_packets(&self, comment: &str) -> u64 {
        self.count(&Selector::Comment(comment.to_owned()))
    }

    /// Packets counted by the policy of `chain`.
    pub fn policy_packets(&self, chain: &str) -> u64 {
        self.count(&Selector::Policy(chain.to_owned()))
    }

    /// One line for reports: `no-answer; counted by ipv4 filter INPUT policy DROP (1)`.
    pub fn summary(&self) -> String {
        let by: Vec<String> = self
            .counted_by()
            .iter()
            .map(|d| format!("{} ({})", d.label(), d.packets))
            .collect();
        if by.is_empty() {
            format!("{}; no counter moved", self.outcome.word())
        } else {
            format!("{}; counted by {}", self.outcome.word(), by.join(", "))
        }
    }
}
