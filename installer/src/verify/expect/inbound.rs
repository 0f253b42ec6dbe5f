//! `[inbound]`: ICMP echo in, each `allow` entry from the admin host and from the
//! outsider (a range at both ends, and one port just outside it from a host the
//! entry admits), and a port no inbound rule opens.

use super::{Ctx, admits, allow_comment, inbound_open, outside, probe_ports};
use crate::policy::{Ports, Proto};
use crate::rule::Chain::Input;
use crate::verify::model::{Expectation, HostId, ProbeKind};

pub(super) fn expectations(c: &Ctx<'_>) -> Vec<Expectation> {
    let mut out = vec![icmp(c)];
    out.extend(allows(c));
    out.extend(closed_port(c));
    out
}

/// ICMP echo in, from anywhere: the IPv6 mirror always passes echo (RFC 4890).
fn icmp(c: &Ctx<'_>) -> Expectation {
    let (allowed, why) = if c.v6() {
        (
            c.allowed_if(true, "INPUT: icmpv6 echo request"),
            "RFC 4890 baseline",
        )
    } else {
        (
            c.allowed_if(c.policy.inbound.icmp, "INPUT: icmp echo request"),
            "inbound.icmp",
        )
    };
    c.promise(
        (ProbeKind::Icmp, HostId::Outsider, HostId::Target, None),
        allowed,
        Input,
        why,
    )
}

/// Each allow of this family, TCP or UDP (a UDP echo server on the target
/// answers the datagram), from the admin host and from the outsider.
fn allows(c: &Ctx<'_>) -> Vec<Expectation> {
    let mut out = Vec::new();
    for (i, a) in c.policy.inbound.allow.iter().enumerate() {
        let kind = match a.proto {
            Proto::Tcp => ProbeKind::Tcp,
            Proto::Udp => ProbeKind::Udp,
        };
        let peers = c.peers(&a.peers);
        if !a.peers.is_empty() && peers.is_empty() {
            continue; // this entry is for the other family only
        }
        let comment = format!("INPUT: {}", allow_comment(a, "inbound"));
        let mut admitted = None;
        for from in [HostId::Admin, HostId::Outsider] {
            let ok = admits(&peers, c.topo.addr(from, c.family));
            if ok && admitted.is_none() {
                admitted = Some(from);
            }
            for port in probe_ports(a.ports) {
                out.push(c.promise(
                    (kind, from, HostId::Target, Some(port)),
                    c.allowed_if(ok, &comment),
                    Input,
                    &format!("inbound.allow[{i}]"),
                ));
            }
        }
        // The range ends where it says: the next port is dropped for a host the
        // entry admits (unless another rule opens it to that host).
        if let (Some(port), Some(from)) = (outside(a.ports), admitted) {
            if !inbound_open(c, a.proto, port, from) {
                out.push(c.promise(
                    (kind, from, HostId::Target, Some(port)),
                    None,
                    Input,
                    &format!("inbound.allow[{i}] (just outside its range)"),
                ));
            }
        }
    }
    out
}

/// The lab's closed inbound port, unless the ssh port or a TCP allow (of either
/// family) covers it.
fn closed_port(c: &Ctx<'_>) -> Option<Expectation> {
    let closed = c.topo.closed_inbound_port;
    let tcp_allows = c
        .policy
        .inbound
        .allow
        .iter()
        .filter(|a| a.proto == Proto::Tcp);
    let mut open =
        std::iter::once(Ports::One(c.policy.ssh.port)).chain(tcp_allows.map(|a| a.ports));
    (!open.any(|p| p.covers(closed))).then(|| {
        c.promise(
            (ProbeKind::Tcp, HostId::Admin, HostId::Target, Some(closed)),
            None,
            Input,
            "default deny (no inbound rule opens this port)",
        )
    })
}
