//! What a policy promises, as probes with expected outcomes: the pure function
//! `expectations(&Policy, &Topology) -> Vec<Expectation>`, and the mapping of a
//! policy's real-world CIDRs onto the lab's documentation subnets.
//!
//! Refuses nothing and does no I/O: a promise the lab cannot probe (a UDP inbound
//! allow, IPv6 left `untouched`) is simply not derived, and `notes` says so.

use std::net::IpAddr;

use ipnet::IpNet;
use portcullis_harness::Family;

use super::model::{CountedBy, Expect, Expectation, HostId, ProbeKind, ProbeSpec};
use crate::policy::{Allow, Ipv6Mode, Policy, Ports, Proto};
use crate::rule::Chain;

/// Where the lab's hosts are: one address (and its link's subnet) per host and
/// family, plus the ports the lab's servers listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub hosts: Vec<HostAddr>,
    /// A port `web` listens on that the default policy does not open.
    pub closed_port: u16,
    /// A port on `target` no inbound rule opens (a listener runs there).
    pub closed_inbound_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostAddr {
    pub host: HostId,
    pub family: Family,
    pub addr: IpAddr,
    pub subnet: IpNet,
}

impl Topology {
    fn find(&self, host: HostId, family: Family) -> Option<&HostAddr> {
        self.hosts
            .iter()
            .find(|h| h.host == host && h.family == family)
    }

    pub fn addr(&self, host: HostId, family: Family) -> Option<IpAddr> {
        self.find(host, family).map(|h| h.addr)
    }

    pub fn subnet(&self, host: HostId, family: Family) -> Option<IpNet> {
        self.find(host, family).map(|h| h.subnet)
    }
}

/// One CIDR of the policy replaced by a lab subnet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mapping {
    /// The policy key it came from (`ssh.allow_from`, `inbound.allow[0].from`, ...).
    pub key: String,
    pub from: IpNet,
    pub to: IpNet,
    /// The lab host whose subnet stands in for it.
    pub host: HostId,
}

fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}

/// Whether the lab can keep a CIDR that stands for `host`'s network as it is:
/// anywhere (`/0`), or a network that already holds `host` in the lab. Any other
/// CIDR (a real subnet such as the default's 10.137.0.0/24, or a documentation
/// range that is some other lab link) is replaced by `host`'s subnet.
pub fn keeps_in_lab(net: &IpNet, host: HostId, topo: &Topology) -> bool {
    net.prefix_len() == 0
        || topo
            .addr(host, family_of(net))
            .is_some_and(|a| net.contains(&a))
}

/// Replace each CIDR the lab cannot keep with the subnet of the lab host that
/// plays its part: the admin host for `ssh.allow_from` and `inbound.allow.from`,
/// the web host for `outbound.allow.to`. Returns the lab's policy and what was
/// replaced.
pub fn map_policy(policy: &Policy, topo: &Topology) -> (Policy, Vec<Mapping>) {
    let mut maps = Vec::new();
    let mut map = |key: String, nets: &mut Vec<IpNet>, host: HostId| {
        let mut out: Vec<IpNet> = Vec::new();
        for net in nets.iter() {
            let replaced = if keeps_in_lab(net, host, topo) {
                *net
            } else if let Some(to) = topo.subnet(host, family_of(net)) {
                maps.push(Mapping {
                    key: key.clone(),
                    from: *net,
                    to,
                    host,
                });
                to
            } else {
                *net
            };
            if !out.contains(&replaced) {
                out.push(replaced);
            }
        }
        *nets = out;
    };
    let mut p = policy.clone();
    map(
        "ssh.allow_from".into(),
        &mut p.ssh.allow_from,
        HostId::Admin,
    );
    for (i, a) in p.inbound.allow.iter_mut().enumerate() {
        map(
            format!("inbound.allow[{i}].from"),
            &mut a.peers,
            HostId::Admin,
        );
    }
    for (i, a) in p.outbound.allow.iter_mut().enumerate() {
        map(format!("outbound.allow[{i}].to"), &mut a.peers, HostId::Web);
    }
    (p, maps)
}

/// Replace exactly the CIDRs named in `maps` in a policy (an explicit mapping, as a
/// scenario file gives it); other CIDRs are kept.
pub fn apply_mappings(policy: &Policy, maps: &[Mapping]) -> Policy {
    let swap = |nets: &mut Vec<IpNet>| {
        let mut out: Vec<IpNet> = Vec::new();
        for n in nets.iter() {
            let m = maps.iter().find(|m| m.from == *n).map_or(*n, |m| m.to);
            if !out.contains(&m) {
                out.push(m);
            }
        }
        *nets = out;
    };
    let mut p = policy.clone();
    swap(&mut p.ssh.allow_from);
    for a in p
        .inbound
        .allow
        .iter_mut()
        .chain(p.outbound.allow.iter_mut())
    {
        swap(&mut a.peers);
    }
    p
}

/// Apply `maps` to hand-written restore text: each exact CIDR string (as the
/// policy spells it, e.g. `10.137.0.0/24`) becomes the lab subnet, and only where
/// it stands as a whole token. Bare addresses and other spellings are not touched.
pub fn map_text(text: &str, maps: &[Mapping]) -> String {
    let mut out = text.to_owned();
    for m in maps {
        let from = m.from.to_string();
        let to = m.to.to_string();
        let mut result = String::with_capacity(out.len());
        let mut at = 0;
        while let Some(i) = out[at..].find(&from).map(|i| i + at) {
            let before_ok = out[..i].chars().last().is_none_or(|c| !is_cidr_char(c));
            let end = i + from.len();
            let after_ok = out[end..].chars().next().is_none_or(|c| !is_cidr_char(c));
            result.push_str(&out[at..i]);
            result.push_str(if before_ok && after_ok { &to } else { &from });
            at = end;
        }
        result.push_str(&out[at..]);
        out = result;
    }
    out
}

fn is_cidr_char(c: char) -> bool {
    c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '/')
}

fn first_port(p: Ports) -> u16 {
    match p {
        Ports::One(n) | Ports::Range(n, _) => n,
    }
}

fn covers(p: Ports, port: u16) -> bool {
    match p {
        Ports::One(n) => n == port,
        Ports::Range(a, b) => (a..=b).contains(&port),
    }
}

/// Whether `peers` (empty: anywhere) admit `addr`, for `family`.
fn admits(peers: &[IpNet], addr: Option<IpAddr>) -> bool {
    match addr {
        None => false,
        Some(a) => peers.is_empty() || peers.iter().any(|n| n.contains(&a)),
    }
}

/// The comment the renderer gives an allow entry (its own, or the default).
fn allow_comment(a: &Allow, dir: &str) -> String {
    a.comment
        .clone()
        .unwrap_or_else(|| format!("allowed by the policy ({dir}.allow)"))
}

/// Everything derived: the promises, and what could not be probed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Derived {
    pub expectations: Vec<Expectation>,
    pub notes: Vec<String>,
}

struct Builder<'a> {
    topo: &'a Topology,
    family: Family,
    out: Vec<Expectation>,
}

impl Builder<'_> {
    /// `probe` is (kind, from, to, port); `allowed` names the accepting rule, or
    /// `None` for a drop counted by `blocked_by`'s policy.
    fn push(
        &mut self,
        (kind, from, to, port): (ProbeKind, HostId, HostId, Option<u16>),
        allowed: Option<&str>,
        blocked_by: Chain,
        why: &str,
    ) {
        let (expect, counted_by) = match allowed {
            Some(by) => (Expect::Ok, by.parse::<CountedBy>().ok()),
            None => (Expect::NoAnswer, Some(CountedBy::Policy(blocked_by))),
        };
        self.out.push(Expectation {
            probe: ProbeSpec {
                kind,
                from,
                to,
                family: self.family,
                port: port.or(kind.default_port()),
            },
            expect,
            counted_by,
            why: why.to_owned(),
        });
    }

    /// A crafted segment: `ok` means it was sent (the probe cannot see a drop);
    /// the proof is the counter of the rule that must drop it.
    fn crafted(&mut self, (kind, from, port): (ProbeKind, HostId, u16), by: &str, why: &str) {
        self.out.push(Expectation {
            probe: ProbeSpec {
                kind,
                from,
                to: HostId::Target,
                family: self.family,
                port: Some(port),
            },
            expect: Expect::Ok,
            counted_by: by.parse().ok(),
            why: why.to_owned(),
        });
    }
}

/// The reachability `policy` promises in the lab `topo` (the policy's CIDRs
/// already mapped with [`map_policy`]). Drops are expected to be counted by their
/// chain policy or drop rule; accepts by the rule the renderer writes for them.
pub fn expectations(policy: &Policy, topo: &Topology) -> Derived {
    let mut d = Derived::default();
    for family in Family::ALL {
        let deny = family == Family::V6 && policy.ipv6.mode == Ipv6Mode::Deny;
        if family == Family::V6 && policy.ipv6.mode == Ipv6Mode::Untouched {
            d.notes
                .push("ipv6.mode = untouched: no IPv6 rules are rendered, none probed".into());
            continue;
        }
        let mut b = Builder {
            topo,
            family,
            out: Vec::new(),
        };
        family_expectations(policy, deny, &mut b, &mut d.notes);
        d.expectations.extend(b.out);
    }
    d
}

fn family_expectations(policy: &Policy, deny: bool, b: &mut Builder<'_>, notes: &mut Vec<String>) {
    use Chain::{Forward, Input, Output};
    let f = b.family;
    let v6 = f == Family::V6;
    fn allowed_if(cond: bool, deny: bool, by: &str) -> Option<&str> {
        (cond && !deny).then_some(by)
    }

    // SSH: from the admin host, and from the outsider.
    let ssh_nets: Vec<IpNet> = policy
        .ssh
        .allow_from
        .iter()
        .filter(|n| family_of(n) == f)
        .copied()
        .collect();
    let mut ssh_from_admin = false;
    for from in [HostId::Admin, HostId::Outsider] {
        let addr = b.topo.addr(from, f);
        let ok = !ssh_nets.is_empty() && admits(&ssh_nets, addr);
        ssh_from_admin |= from == HostId::Admin && ok && !deny;
        b.push(
            (ProbeKind::Ssh, from, HostId::Target, Some(policy.ssh.port)),
            allowed_if(ok, deny, "INPUT: ssh from the admin subnet"),
            Input,
            "ssh.allow_from",
        );
    }

    // ICMP echo in, from anywhere: IPv6 mirror always passes echo (RFC 4890).
    let icmp_in = if v6 {
        allowed_if(true, deny, "INPUT: icmpv6 echo request")
    } else {
        allowed_if(policy.inbound.icmp, deny, "INPUT: icmp echo request")
    };
    b.push(
        (ProbeKind::Icmp, HostId::Outsider, HostId::Target, None),
        icmp_in,
        Input,
        if v6 {
            "RFC 4890 baseline"
        } else {
            "inbound.icmp"
        },
    );

    // Inbound allows (TCP; a UDP allow has no probe here).
    let mut open_inbound: Vec<Ports> = vec![Ports::One(policy.ssh.port)];
    for (i, a) in policy.inbound.allow.iter().enumerate() {
        let kind = match a.proto {
            Proto::Tcp => {
                open_inbound.push(a.ports);
                ProbeKind::Tcp
            }
            // A UDP echo server on the target answers the datagram.
            Proto::Udp => ProbeKind::Udp,
        };
        let peers: Vec<IpNet> = a
            .peers
            .iter()
            .filter(|n| family_of(n) == f)
            .copied()
            .collect();
        if !a.peers.is_empty() && peers.is_empty() {
            continue; // this entry is for the other family only
        }
        let comment = format!("INPUT: {}", allow_comment(a, "inbound"));
        for from in [HostId::Admin, HostId::Outsider] {
            let ok = admits(&peers, b.topo.addr(from, f));
            b.push(
                (kind, from, HostId::Target, Some(first_port(a.ports))),
                allowed_if(ok, deny, &comment),
                Input,
                &format!("inbound.allow[{i}]"),
            );
        }
    }
    let closed_in = b.topo.closed_inbound_port;
    if !open_inbound.iter().any(|p| covers(*p, closed_in)) {
        b.push(
            (
                ProbeKind::Tcp,
                HostId::Admin,
                HostId::Target,
                Some(closed_in),
            ),
            None,
            Input,
            "default deny (no inbound rule opens this port)",
        );
    }

    // Outbound.
    let out = &policy.outbound;
    for kind in [ProbeKind::DnsUdp, ProbeKind::DnsTcp] {
        b.push(
            (kind, HostId::Target, HostId::Resolver, None),
            allowed_if(out.dns, deny, "OUTPUT: dns lookups"),
            Output,
            "outbound.dns",
        );
    }
    b.push(
        (ProbeKind::Http, HostId::Target, HostId::Web, None),
        allowed_if(out.http, deny, "OUTPUT: allow outbound http"),
        Output,
        "outbound.http",
    );
    b.push(
        (ProbeKind::Https, HostId::Target, HostId::Web, None),
        allowed_if(out.https, deny, "OUTPUT: allow outbound https"),
        Output,
        "outbound.https",
    );
    let icmp_out = if v6 {
        allowed_if(true, deny, "OUTPUT: icmpv6 echo request")
    } else {
        allowed_if(out.icmp, deny, "OUTPUT: outgoing icmp")
    };
    b.push(
        (ProbeKind::Icmp, HostId::Target, HostId::Web, None),
        icmp_out,
        Output,
        if v6 {
            "RFC 4890 baseline"
        } else {
            "outbound.icmp"
        },
    );
    let web = b.topo.addr(HostId::Web, f);
    let mut closed_covered = None;
    let mut closed_udp_covered = false;
    let mut any_udp = false;
    for (i, a) in out.allow.iter().enumerate() {
        if a.proto == Proto::Udp && out.dns && covers(a.ports, 53) {
            // The renderer's dns rule comes first and would count the datagram.
            notes.push(format!(
                "outbound.allow[{i}] (udp {}) is not probed: port 53 is counted by the dns rule",
                first_port(a.ports)
            ));
            continue;
        }
        let peers: Vec<IpNet> = a
            .peers
            .iter()
            .filter(|n| family_of(n) == f)
            .copied()
            .collect();
        if !a.peers.is_empty() && peers.is_empty() {
            continue;
        }
        let comment = format!("OUTPUT: {}", allow_comment(a, "outbound"));
        let ok = admits(&peers, web);
        let kind = match a.proto {
            Proto::Tcp => {
                if ok && covers(a.ports, b.topo.closed_port) && closed_covered.is_none() {
                    closed_covered = Some(comment.clone());
                }
                ProbeKind::Tcp
            }
            Proto::Udp => {
                any_udp = true;
                closed_udp_covered |= ok && covers(a.ports, b.topo.closed_port);
                ProbeKind::Udp
            }
        };
        b.push(
            (kind, HostId::Target, HostId::Web, Some(first_port(a.ports))),
            allowed_if(ok, deny, &comment),
            Output,
            &format!("outbound.allow[{i}]"),
        );
    }
    let closed = b.topo.closed_port;
    if closed_covered.is_none() && ![53, 80, 443].contains(&closed) {
        b.push(
            (ProbeKind::Tcp, HostId::Target, HostId::Web, Some(closed)),
            None,
            Output,
            "default deny (no outbound rule opens this port)",
        );
    }
    // With a UDP allow, a UDP port no rule opens proves the allow is narrow.
    if any_udp && !closed_udp_covered && !(out.dns && closed == 53) {
        b.push(
            (ProbeKind::Udp, HostId::Target, HostId::Web, Some(closed)),
            None,
            Output,
            "default deny (no outbound rule opens this udp port)",
        );
    }

    // Loopback: the packet leaves through OUTPUT -o lo and comes back INPUT -i lo.
    b.push(
        (
            ProbeKind::LoopbackTcp,
            HostId::Target,
            HostId::Target,
            Some(b.topo.closed_inbound_port),
        ),
        policy.hardening.loopback.then_some("OUTPUT: loopback"),
        Output,
        "hardening.loopback",
    );

    if deny {
        // IPv6 `deny`: policies DROP everything; the probes above expect that
        // (inbound, the INPUT policy counts the router's neighbour solicitation:
        // the target answers none, so nothing else reaches it).
        // Malicious flags and INVALID are not rendered there: nothing to count.
        return;
    }
    if policy.hardening.drop_malicious_flags {
        b.crafted(
            (ProbeKind::SynFin, HostId::Outsider, policy.ssh.port),
            "INPUT: [malicious packet patterns] SYN+FIN",
            "hardening.drop_malicious_flags",
        );
        b.crafted(
            (ProbeKind::SynRst, HostId::Outsider, policy.ssh.port),
            "INPUT: [malicious packet patterns] SYN+RST",
            "hardening.drop_malicious_flags",
        );
    }
    if policy.hardening.drop_invalid {
        if ssh_from_admin {
            // On an established ssh connection: the port the policy surely opens.
            b.crafted(
                (ProbeKind::InvalidRst, HostId::Admin, policy.ssh.port),
                "INPUT: conntrack cannot place",
                "hardening.drop_invalid",
            );
        } else {
            notes.push(format!(
                "hardening.drop_invalid ({f}) is not probed: it needs an established ssh connection from admin, which this policy does not allow"
            ));
        }
    }
    // Forwarding: every policy renders FORWARD DROP.
    b.push(
        (ProbeKind::Forward, HostId::Admin, HostId::Inner, Some(80)),
        None,
        Forward,
        "FORWARD DROP (a host is not a router)",
    );
}

/// For a hand-written ruleset: its rules carry no portcullis comments, so a drop
/// (or a crafted segment) must be counted by SOME DROP rule or DROP policy, and
/// an accept by nothing in particular; the outcome must still match.
pub fn relax_for_hand_written(exps: &mut [Expectation]) {
    for e in exps {
        let crafted = matches!(
            e.probe.kind,
            ProbeKind::SynFin | ProbeKind::SynRst | ProbeKind::InvalidRst
        );
        e.counted_by = (crafted || e.expect == Expect::NoAnswer).then_some(CountedBy::AnyDrop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn topo() -> Topology {
        let h = |host, family, addr: &str, subnet: &str| HostAddr {
            host,
            family,
            addr: addr.parse().unwrap(),
            subnet: subnet.parse().unwrap(),
        };
        Topology {
            hosts: vec![
                h(HostId::Admin, Family::V4, "192.0.2.10", "192.0.2.0/26"),
                h(
                    HostId::Admin,
                    Family::V6,
                    "2001:db8:1::10",
                    "2001:db8:1::/64",
                ),
                h(
                    HostId::Outsider,
                    Family::V4,
                    "198.51.100.10",
                    "198.51.100.0/26",
                ),
                h(
                    HostId::Outsider,
                    Family::V6,
                    "2001:db8:2::10",
                    "2001:db8:2::/64",
                ),
                h(HostId::Web, Family::V4, "203.0.113.10", "203.0.113.0/26"),
                h(HostId::Web, Family::V6, "2001:db8:3::10", "2001:db8:3::/64"),
            ],
            closed_port: 8081,
            closed_inbound_port: 9099,
        }
    }

    fn find(d: &Derived, kind: ProbeKind, from: HostId, f: Family) -> Vec<&Expectation> {
        d.expectations
            .iter()
            .filter(|e| e.probe.kind == kind && e.probe.from == from && e.probe.family == f)
            .collect()
    }

    fn one(d: &Derived, kind: ProbeKind, from: HostId, f: Family) -> (Expect, String) {
        let v = find(d, kind, from, f);
        assert_eq!(v.len(), 1, "{kind} from {from} {f}: {v:?}");
        (
            v[0].expect,
            v[0].counted_by
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_default(),
        )
    }

    #[test]
    fn default_policy_maps_its_admin_subnet_onto_the_admin_host() {
        let (p, maps) = map_policy(&Policy::embedded_default(), &topo());
        assert_eq!(maps.len(), 1);
        assert_eq!(maps[0].from.to_string(), "10.137.0.0/24");
        assert_eq!(maps[0].to.to_string(), "192.0.2.0/26");
        assert_eq!(
            p.ssh.allow_from,
            vec!["192.0.2.0/26".parse::<IpNet>().unwrap()]
        );
    }

    #[test]
    fn default_policy_promises() {
        use Family::{V4, V6};
        use ProbeKind::*;
        let (p, _) = map_policy(&Policy::embedded_default(), &topo());
        let d = expectations(&p, &topo());
        let ok = |by: &str| (Expect::Ok, by.to_owned());
        let no = |by: &str| (Expect::NoAnswer, by.to_owned());
        assert_eq!(
            one(&d, Ssh, HostId::Admin, V4),
            ok("INPUT: ssh from the admin subnet")
        );
        assert_eq!(one(&d, Ssh, HostId::Outsider, V4), no("INPUT policy"));
        // The default names only an IPv4 admin subnet: no IPv6 ssh for anyone.
        assert_eq!(one(&d, Ssh, HostId::Admin, V6), no("INPUT policy"));
        assert_eq!(
            one(&d, DnsUdp, HostId::Target, V6),
            ok("OUTPUT: dns lookups")
        );
        assert_eq!(
            one(&d, Https, HostId::Target, V4),
            ok("OUTPUT: allow outbound https")
        );
        assert_eq!(
            one(&d, LoopbackTcp, HostId::Target, V6),
            ok("OUTPUT: loopback")
        );
        assert_eq!(one(&d, Forward, HostId::Admin, V4), no("FORWARD policy"));
        assert_eq!(
            one(&d, SynFin, HostId::Outsider, V4),
            ok("INPUT: [malicious packet patterns] SYN+FIN")
        );
        assert_eq!(
            one(&d, InvalidRst, HostId::Admin, V4),
            ok("INPUT: conntrack cannot place")
        );
        // No IPv6 ssh from admin, so no established connection to make INVALID.
        assert!(find(&d, InvalidRst, HostId::Admin, V6).is_empty());
        assert!(d.notes.iter().any(|n| n.contains("drop_invalid (ipv6)")));
        let tcp_admin = find(&d, Tcp, HostId::Admin, V4);
        assert!(tcp_admin.iter().any(|e| e.probe.port == Some(8443)
            && e.expect == Expect::Ok
            && e.counted_by == Some("INPUT: mineos webui".parse().unwrap())));
        assert!(
            tcp_admin.iter().any(|e| e.probe.port == Some(9099)
                && e.counted_by == Some(CountedBy::Policy(Chain::Input)))
        );
        let tcp_out = find(&d, Tcp, HostId::Target, V4);
        assert_eq!(tcp_out.len(), 1);
        assert_eq!(tcp_out[0].probe.port, Some(8081));
        assert_eq!(tcp_out[0].expect, Expect::NoAnswer);
    }

    #[test]
    fn closed_outbound_becomes_open_when_an_allow_covers_it() {
        let text = r#"
[ssh]
allow_from = ["10.0.0.0/8"]
[outbound]
[[outbound.allow]]
proto = "tcp"
port = "8000:8100"
to = ["172.16.0.0/12"]
comment = "app"
[ipv6]
mode = "deny"
"#;
        let pol = Policy::parse(text, "t").unwrap();
        let (p, maps) = map_policy(&pol, &topo());
        assert_eq!(maps.len(), 2, "{maps:?}");
        assert_eq!(maps[1].to.to_string(), "203.0.113.0/26");
        let d = expectations(&p, &topo());
        use Family::{V4, V6};
        let (e, by) = one(&d, ProbeKind::DnsUdp, HostId::Target, V4);
        assert_eq!((e, by.as_str()), (Expect::NoAnswer, "OUTPUT policy"));
        let tcp = find(&d, ProbeKind::Tcp, HostId::Target, V4);
        assert_eq!(tcp.len(), 1, "{tcp:?}");
        assert_eq!(tcp[0].probe.port, Some(8000));
        assert_eq!(tcp[0].expect, Expect::Ok);
        // IPv6 deny: the admin gets nothing over IPv6 (the validator refuses IPv6
        // CIDRs under deny, so allow_from lists IPv4 only).
        let (e, _) = one(&d, ProbeKind::Ssh, HostId::Admin, V6);
        assert_eq!(e, Expect::NoAnswer);
        let (e, _) = one(&d, ProbeKind::Icmp, HostId::Outsider, V6);
        assert_eq!(e, Expect::NoAnswer);
        assert!(find(&d, ProbeKind::SynFin, HostId::Outsider, V6).is_empty());
    }

    const UDP_POLICY: &str = r#"
[ssh]
allow_from = ["10.0.0.0/8", "fd00::/64"]
[[inbound.allow]]
proto = "udp"
port = 51820
from = ["10.0.0.0/8", "fd00::/64"]
comment = "wireguard"
[[outbound.allow]]
proto = "udp"
port = 123
comment = "ntp"
"#;

    #[test]
    fn udp_allows_are_probed_both_ways() {
        use Family::{V4, V6};
        let (p, _) = map_policy(&Policy::parse(UDP_POLICY, "t").unwrap(), &topo());
        let d = expectations(&p, &topo());
        assert!(!d.notes.iter().any(|n| n.contains("udp")), "{:?}", d.notes);
        for f in [V4, V6] {
            // Inbound: from the mapped subnet through its rule, the outsider dropped.
            let from_admin = find(&d, ProbeKind::Udp, HostId::Admin, f);
            assert_eq!(from_admin.len(), 1, "{from_admin:?}");
            assert_eq!(from_admin[0].probe.port, Some(51820));
            assert_eq!(from_admin[0].probe.to, HostId::Target);
            assert_eq!(one(&d, ProbeKind::Udp, HostId::Admin, f).0, Expect::Ok);
            assert_eq!(
                one(&d, ProbeKind::Udp, HostId::Admin, f).1,
                "INPUT: wireguard"
            );
            assert_eq!(
                one(&d, ProbeKind::Udp, HostId::Outsider, f),
                (Expect::NoAnswer, "INPUT policy".to_owned())
            );
            // Outbound: the allowed port through its rule, another port dropped.
            let out = find(&d, ProbeKind::Udp, HostId::Target, f);
            assert_eq!(out.len(), 2, "{out:?}");
            let ntp = out.iter().find(|e| e.probe.port == Some(123)).unwrap();
            assert_eq!(ntp.expect, Expect::Ok);
            assert_eq!(ntp.probe.to, HostId::Web);
            assert_eq!(ntp.counted_by, Some("OUTPUT: ntp".parse().unwrap()));
            let closed = out.iter().find(|e| e.probe.port == Some(8081)).unwrap();
            assert_eq!(closed.expect, Expect::NoAnswer);
            assert_eq!(closed.counted_by, Some(CountedBy::Policy(Chain::Output)));
        }
        // A UDP allow is not a TCP one: no TCP probe on its port.
        assert!(
            d.expectations
                .iter()
                .all(|e| e.probe.kind != ProbeKind::Tcp || e.probe.port != Some(123))
        );
    }

    #[test]
    fn udp_on_the_dns_port_is_left_to_the_dns_rule() {
        let text = "[ssh]\nallow_from = [\"10.0.0.0/8\"]\n[outbound]\ndns = true\n[[outbound.allow]]\nproto = \"udp\"\nport = 53\n";
        let (p, _) = map_policy(&Policy::parse(text, "t").unwrap(), &topo());
        let d = expectations(&p, &topo());
        assert!(
            d.notes
                .iter()
                .any(|n| n.contains("counted by the dns rule"))
        );
        assert!(find(&d, ProbeKind::Udp, HostId::Target, Family::V4).is_empty());
    }

    /// Every rule a derived expectation names exists in the policy's rendering:
    /// the renderer's comments and this module cannot drift apart unseen.
    #[test]
    fn every_named_counter_exists_in_the_rendering() {
        let policies = [
            crate::policy::DEFAULT_POLICY.to_owned(),
            crate::policy::DEFAULT_POLICY.replace(
                "allow_from = [\"10.137.0.0/24\"]",
                "allow_from = [\"10.137.0.0/24\", \"fd00::/64\"]",
            ),
            "[ssh]\nallow_from = [\"10.0.0.0/8\"]\n[[outbound.allow]]\nproto = \"tcp\"\nport = 25\n[ipv6]\nmode = \"deny\"\n".to_owned(),
            UDP_POLICY.to_owned(),
        ];
        for text in policies {
            let (p, _) = map_policy(&Policy::parse(&text, "t").unwrap(), &topo());
            let rendered = crate::render(&p);
            let d = expectations(&p, &topo());
            assert!(d.expectations.len() > 10);
            for e in &d.expectations {
                let Some(by) = &e.counted_by else { continue };
                let text = rendered.text(e.probe.family);
                assert!(
                    super::super::counters::answers(e.probe.family, text.as_deref(), by).unwrap(),
                    "{} {} {}: no rule answers to `{by}` in\n{}",
                    e.probe.kind,
                    e.probe.from,
                    e.probe.family,
                    rendered.text(e.probe.family).unwrap_or_default()
                );
            }
        }
    }

    #[test]
    fn cidrs_holding_their_lab_host_or_anywhere_are_kept() {
        let text = r#"
[ssh]
allow_from = ["198.51.100.0/24", "192.0.2.0/24", "0.0.0.0/0", "2001:db8:1::/48"]
"#;
        let (p, maps) = map_policy(&Policy::parse(text, "t").unwrap(), &topo());
        // 198.51.100.0/24 is a documentation range, but the outsider's, not the
        // admin's: it stands for the admin's network, so it is replaced.
        let from: Vec<String> = maps.iter().map(|m| m.from.to_string()).collect();
        assert_eq!(from, ["198.51.100.0/24"]);
        let kept: Vec<String> = p.ssh.allow_from.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            kept,
            [
                "192.0.2.0/26",
                "192.0.2.0/24",
                "0.0.0.0/0",
                "2001:db8:1::/48"
            ]
        );
    }

    #[test]
    fn text_mapping_replaces_whole_cidrs_only() {
        let (_, maps) = map_policy(&Policy::embedded_default(), &topo());
        let text = "-A INPUT -s 10.137.0.0/24 -p tcp\n-A INPUT -s 110.137.0.0/24\n-A INPUT -s 10.137.0.0/245\n";
        assert_eq!(
            map_text(text, &maps),
            "-A INPUT -s 192.0.2.0/26 -p tcp\n-A INPUT -s 110.137.0.0/24\n-A INPUT -s 10.137.0.0/245\n"
        );
    }

    #[test]
    fn untouched_ipv6_is_not_probed_and_says_so() {
        let mut p = Policy::embedded_default();
        p.ipv6.mode = Ipv6Mode::Untouched;
        let d = expectations(&p, &topo());
        assert!(d.expectations.iter().all(|e| e.probe.family == Family::V4));
        assert!(d.notes.iter().any(|n| n.contains("untouched")));
    }
}
