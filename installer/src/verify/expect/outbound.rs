//! `[outbound]`: DNS, HTTP, HTTPS and ICMP from the target, each `allow` entry
//! towards the web host (a range at both ends and one port just outside it; an
//! entry with `to` also towards the outsider, a destination outside `to`), and
//! ports no outbound rule opens.

use super::{Ctx, Derived, admits, allow_comment, first_port, outbound_open, outside, probe_ports};
use crate::policy::Proto;
use crate::rule::Chain::Output;
use crate::verify::model::{Expectation, HostId, ProbeKind};

pub(super) fn expectations(c: &Ctx<'_>) -> Derived {
    let allows = allows(c);
    let closed = closed_ports(c, &allows);
    let mut expectations = services(c);
    expectations.extend(allows.expectations);
    expectations.extend(closed);
    Derived {
        expectations,
        notes: allows.notes,
    }
}

/// The switches: dns (over UDP and TCP), http, https, and ICMP echo (the IPv6
/// mirror always passes it, RFC 4890).
fn services(c: &Ctx<'_>) -> Vec<Expectation> {
    let out = &c.policy.outbound;
    let mut v: Vec<Expectation> = [ProbeKind::DnsUdp, ProbeKind::DnsTcp]
        .into_iter()
        .map(|kind| {
            c.promise(
                (kind, HostId::Target, HostId::Resolver, None),
                c.allowed_if(out.dns, "OUTPUT: dns lookups"),
                Output,
                "outbound.dns",
            )
        })
        .collect();
    v.push(c.promise(
        (ProbeKind::Http, HostId::Target, HostId::Web, None),
        c.allowed_if(out.http, "OUTPUT: allow outbound http"),
        Output,
        "outbound.http",
    ));
    v.push(c.promise(
        (ProbeKind::Https, HostId::Target, HostId::Web, None),
        c.allowed_if(out.https, "OUTPUT: allow outbound https"),
        Output,
        "outbound.https",
    ));
    let (icmp, why) = if c.v6() {
        (
            c.allowed_if(true, "OUTPUT: icmpv6 echo request"),
            "RFC 4890 baseline",
        )
    } else {
        (
            c.allowed_if(out.icmp, "OUTPUT: outgoing icmp"),
            "outbound.icmp",
        )
    };
    v.push(c.promise(
        (ProbeKind::Icmp, HostId::Target, HostId::Web, None),
        icmp,
        Output,
        why,
    ));
    v
}

/// The allows' probes, and what they tell [`closed_ports`].
struct Allows {
    expectations: Vec<Expectation>,
    notes: Vec<String>,
    /// A TCP allow admitting the web host covers the lab's closed port.
    closed_tcp_open: bool,
    /// The same for a UDP allow.
    closed_udp_open: bool,
    /// Some UDP allow of this family is probed.
    any_udp: bool,
}

/// Each allow of this family, TCP or UDP, towards the web host.
fn allows(c: &Ctx<'_>) -> Allows {
    let out = &c.policy.outbound;
    let web = c.topo.addr(HostId::Web, c.family);
    let closed = c.topo.closed_port;
    let mut r = Allows {
        expectations: Vec::new(),
        notes: Vec::new(),
        closed_tcp_open: false,
        closed_udp_open: false,
        any_udp: false,
    };
    for (i, a) in out.allow.iter().enumerate() {
        if a.proto == Proto::Udp && out.dns && a.ports.covers(53) {
            // The renderer's dns rule comes first and would count the datagram.
            r.notes.push(format!(
                "outbound.allow[{i}] (udp {}) is not probed: port 53 is counted by the dns rule",
                first_port(a.ports)
            ));
            continue;
        }
        let peers = c.peers(&a.peers);
        if !a.peers.is_empty() && peers.is_empty() {
            continue; // this entry is for the other family only
        }
        let comment = format!("OUTPUT: {}", allow_comment(a, "outbound"));
        let ok = admits(&peers, web);
        let kind = match a.proto {
            Proto::Tcp => {
                r.closed_tcp_open |= ok && a.ports.covers(closed);
                ProbeKind::Tcp
            }
            Proto::Udp => {
                r.any_udp = true;
                r.closed_udp_open |= ok && a.ports.covers(closed);
                ProbeKind::Udp
            }
        };
        for port in probe_ports(a.ports) {
            r.expectations.push(c.promise(
                (kind, HostId::Target, HostId::Web, Some(port)),
                c.allowed_if(ok, &comment),
                Output,
                &format!("outbound.allow[{i}]"),
            ));
        }
        // The range ends where it says: the next port to web is dropped.
        if let Some(port) = outside(a.ports).filter(|_| ok) {
            if !outbound_open(c, a.proto, port, HostId::Web) {
                r.expectations.push(c.promise(
                    (kind, HostId::Target, HostId::Web, Some(port)),
                    None,
                    Output,
                    &format!("outbound.allow[{i}] (just outside its range)"),
                ));
            }
        }
        // `to` is a limit: the same port to a host outside it is dropped.
        let first = first_port(a.ports);
        let outsider = c.topo.addr(HostId::Outsider, c.family);
        if !peers.is_empty() && !admits(&peers, outsider) {
            if outbound_open(c, a.proto, first, HostId::Outsider) {
                r.notes.push(format!(
                    "outbound.allow[{i}] ({}): the negative side of `to` is not probed: another rule opens port {first} to the outsider",
                    c.family
                ));
            } else {
                r.expectations.push(c.promise(
                    (kind, HostId::Target, HostId::Outsider, Some(first)),
                    None,
                    Output,
                    &format!("outbound.allow[{i}] (a destination outside `to`)"),
                ));
            }
        }
    }
    r
}

/// The web host's closed port over TCP, unless an allow or a switch opens it;
/// with a UDP allow, the same port over UDP proves the allow is narrow.
fn closed_ports(c: &Ctx<'_>, allows: &Allows) -> Vec<Expectation> {
    let closed = c.topo.closed_port;
    let mut v = Vec::new();
    if !allows.closed_tcp_open && ![53, 80, 443].contains(&closed) {
        v.push(c.promise(
            (ProbeKind::Tcp, HostId::Target, HostId::Web, Some(closed)),
            None,
            Output,
            "default deny (no outbound rule opens this port)",
        ));
    }
    if allows.any_udp && !allows.closed_udp_open && !(c.policy.outbound.dns && closed == 53) {
        v.push(c.promise(
            (ProbeKind::Udp, HostId::Target, HostId::Web, Some(closed)),
            None,
            Output,
            "default deny (no outbound rule opens this udp port)",
        ));
    }
    v
}
