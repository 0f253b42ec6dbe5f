//! Blocklists: each `[[blocklist]]` (mapped onto the inner host's network by
//! `map_policy`) drops a TCP connection from the inner host to the target
//! (direction `in`/`both`) and from the target to the inner host (`out`/`both`),
//! each counted by the blocklist's own rule, not by a chain policy.

use super::Ctx;
use crate::policy::BLOCKLIST_COMMENT;
use crate::rule::Chain;
use crate::verify::model::{CountedBy, Expect, Expectation, HostId, ProbeKind, ProbeSpec};

pub(super) fn expectations(c: &Ctx<'_>) -> Vec<Expectation> {
    let mut out = Vec::new();
    if c.deny {
        // IPv6 `deny` renders no blocklist: everything is dropped anyway.
        return out;
    }
    for (i, b) in c.policy.blocklists.iter().enumerate() {
        if c.peers(&b.nets).is_empty() {
            continue;
        }
        let why = format!("blocklist[{i}]");
        let by =
            |chain: Chain| CountedBy::Comment(Some(chain), format!("{BLOCKLIST_COMMENT}[{i}]"));
        let probe = |from: HostId, to: HostId, port: u16| ProbeSpec {
            kind: ProbeKind::Tcp,
            from,
            to,
            family: c.family,
            port: Some(port),
            count: None,
        };
        if b.direction.inbound() {
            // A port with a listener: were the source not listed, the INPUT
            // policy would count it; listed, the blocklist rule comes first.
            out.push(Expectation {
                probe: probe(HostId::Inner, HostId::Target, c.topo.closed_inbound_port),
                expect: Expect::NoAnswer,
                counted_by: Some(by(Chain::Input)),
                why: why.clone(),
            });
        }
        if b.direction.outbound() {
            out.push(Expectation {
                probe: probe(HostId::Target, HostId::Inner, c.topo.closed_port),
                expect: Expect::NoAnswer,
                counted_by: Some(by(Chain::Output)),
                why: why.clone(),
            });
        }
    }
    out
}
