//! Evidence: what a probe observed, and what the target's rules and chain
//! policies counted meanwhile.
//!
//! A drop is proved by the counter of the rule (or policy) that must count it, not
//! by silence alone. Evidence does not judge: it carries the outcome and the
//! target's [`Counters::since`] the probe began (every counter, zeros kept), and
//! the questions are asked of those counters with a [`Selector`]
//! (`ev.counters.count(&Selector::policy("INPUT"))`). The counters can include
//! unrelated packets of the same window (neighbour discovery, say), so ask about
//! the rule you expect rather than demanding that nothing else moved.
//!
//! [`Selector`]: crate::Selector

use crate::counters::Counters;
use crate::probe::Outcome;

/// One probe's outcome and the target's counters over it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Evidence {
    pub outcome: Outcome,
    /// Every counter of the target with its growth over the probe, zeros kept
    /// ([`Counters::since`]); empty before any ruleset is loaded.
    pub counters: Counters,
}

impl Evidence {
    /// One line for reports: `no-answer; counted by ipv4 filter INPUT policy DROP (1)`.
    pub fn summary(&self) -> String {
        format!("{}; {}", self.outcome.word(), self.counters.summary())
    }
}
