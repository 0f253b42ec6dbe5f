//! `[logging]`: with `dropped = "limited"`, the LOG rule at the end of each chain
//! must count a packet its DROP policy drops. One drop probe per chain (the first
//! the other sections derive, copied) is counted by the LOG rule instead of the
//! policy, and goes FIRST in its family: the rule's token bucket (a burst of 10)
//! is then still full, whatever the later drop probes take from it.

use super::{Ctx, Derived};
use crate::policy::LogDropped;
use crate::render::LOG_COMMENT;
use crate::rule::Chain;
use crate::verify::model::{CountedBy, Expect};

pub(super) fn prepend(c: &Ctx<'_>, d: &mut Derived) {
    if c.policy.logging.dropped == LogDropped::Off {
        return;
    }
    let mut first = Vec::new();
    for chain in Chain::ALL {
        let found = d.expectations.iter().find(|e| {
            e.expect == Expect::NoAnswer && e.counted_by == Some(CountedBy::Policy(chain))
        });
        match found {
            Some(e) => {
                let mut e = e.clone();
                e.counted_by = Some(CountedBy::Comment(Some(chain), LOG_COMMENT.to_owned()));
                e.why = format!("logging.dropped = limited ({} policy)", chain.name());
                first.push(e);
            }
            None => d.notes.push(format!(
                "logging.dropped ({}, {}): no probe is dropped by that policy, so its LOG rule is not probed",
                c.family,
                chain.name()
            )),
        }
    }
    d.expectations.splice(0..0, first);
}
