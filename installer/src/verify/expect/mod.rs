//! What a policy promises, as probes with expected outcomes: the pure function
//! `expectations(&Policy, &Topology) -> Derived`, composed of one part
//! per policy section (`ssh`, `inbound`, `outbound`, `hardening`, `forward`,
//! `logging`), and
//! in `map` the mapping of a policy's real-world CIDRs onto the lab's
//! documentation subnets.
//!
//! Refuses nothing and does no I/O: a promise the lab cannot probe (a UDP outbound
//! allow on the dns port, IPv6 left `untouched`) is simply not derived, and `notes`
//! says so.

mod blocklist;
mod forward;
mod hardening;
mod inbound;
mod logging;
mod map;
mod outbound;
mod ssh;

use std::net::IpAddr;

use ipnet::IpNet;
use portcullis_harness::Family;

use super::model::{CountedBy, Expect, Expectation, HostId, ProbeKind, ProbeSpec};
use crate::policy::{Allow, Ipv6Mode, Policy, Ports, Proto};
use crate::rule::Chain;

pub use map::{Mapping, apply_mappings, keeps_in_lab, map_policy, map_text};

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

/// The family of `net`.
pub(crate) fn family_of(net: &IpNet) -> Family {
    match net {
        IpNet::V4(_) => Family::V4,
        IpNet::V6(_) => Family::V6,
    }
}

fn first_port(p: Ports) -> u16 {
    match p {
        Ports::One(n) | Ports::Range(n, _) => n,
    }
}

/// The ports to probe of an allow entry: the one port, or both ends of a range.
fn probe_ports(p: Ports) -> Vec<u16> {
    match p {
        Ports::One(n) => vec![n],
        Ports::Range(a, b) => vec![a, b],
    }
}

/// A port just outside a range (above it, or below it when it ends at 65535);
/// `None` for a single port, whose neighbours say nothing about the entry.
fn outside(p: Ports) -> Option<u16> {
    match p {
        Ports::One(_) => None,
        Ports::Range(a, b) => b.checked_add(1).or(a.checked_sub(1)).filter(|&n| n > 0),
    }
}

/// Whether any inbound rule of this family accepts `proto` on `port` from `from`:
/// the ssh allow, or an inbound allow entry.
fn inbound_open(c: &Ctx<'_>, proto: Proto, port: u16, from: HostId) -> bool {
    let addr = c.topo.addr(from, c.family);
    (proto == Proto::Tcp && port == c.policy.ssh.port && ssh::admitted(c, from))
        || c.policy.inbound.allow.iter().any(|a| {
            let peers = c.peers(&a.peers);
            a.proto == proto
                && a.ports.covers(port)
                && (a.peers.is_empty() || !peers.is_empty())
                && admits(&peers, addr)
        })
}

/// Whether any outbound rule of this family accepts `proto` on `port` to `to`:
/// a switch (dns, http, https) or an outbound allow entry.
fn outbound_open(c: &Ctx<'_>, proto: Proto, port: u16, to: HostId) -> bool {
    let out = &c.policy.outbound;
    let addr = c.topo.addr(to, c.family);
    (out.dns && port == 53)
        || (proto == Proto::Tcp && ((out.http && port == 80) || (out.https && port == 443)))
        || out.allow.iter().any(|a| {
            let peers = c.peers(&a.peers);
            a.proto == proto
                && a.ports.covers(port)
                && (a.peers.is_empty() || !peers.is_empty())
                && admits(&peers, addr)
        })
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

impl Derived {
    fn append(&mut self, part: Derived) {
        self.expectations.extend(part.expectations);
        self.notes.extend(part.notes);
    }
}

/// What every section derives from: the (mapped) policy, the lab, and the
/// family, with `deny` for IPv6 under `ipv6.mode = deny`.
struct Ctx<'a> {
    policy: &'a Policy,
    topo: &'a Topology,
    family: Family,
    deny: bool,
}

impl Ctx<'_> {
    fn v6(&self) -> bool {
        self.family == Family::V6
    }

    /// The rule `by` accepts when `cond` holds and the family is not denied.
    fn allowed_if<'b>(&self, cond: bool, by: &'b str) -> Option<&'b str> {
        (cond && !self.deny).then_some(by)
    }

    /// The CIDRs of `nets` in this family.
    fn peers(&self, nets: &[IpNet]) -> Vec<IpNet> {
        nets.iter()
            .filter(|n| family_of(n) == self.family)
            .copied()
            .collect()
    }

    /// `probe` is (kind, from, to, port); `allowed` names the accepting rule, or
    /// `None` for a drop counted by `blocked_by`'s policy.
    fn promise(
        &self,
        (kind, from, to, port): (ProbeKind, HostId, HostId, Option<u16>),
        allowed: Option<&str>,
        blocked_by: Chain,
        why: &str,
    ) -> Expectation {
        let (expect, counted_by) = match allowed {
            Some(by) => (Expect::Ok, by.parse::<CountedBy>().ok()),
            None => (Expect::NoAnswer, Some(CountedBy::Policy(blocked_by))),
        };
        Expectation {
            probe: ProbeSpec {
                kind,
                from,
                to,
                family: self.family,
                port: port.or(kind.default_port()),
                count: None,
            },
            expect,
            counted_by,
            why: why.to_owned(),
        }
    }

    /// A crafted segment: `ok` means it was sent (the probe cannot see a drop);
    /// the proof is the counter of the rule that must drop it.
    fn crafted(
        &self,
        (kind, from, port): (ProbeKind, HostId, u16),
        by: &str,
        why: &str,
    ) -> Expectation {
        Expectation {
            probe: ProbeSpec {
                kind,
                from,
                to: HostId::Target,
                family: self.family,
                port: Some(port),
                count: None,
            },
            expect: Expect::Ok,
            counted_by: by.parse().ok(),
            why: why.to_owned(),
        }
    }
}

/// The reachability `policy` promises in the lab `topo` (the policy's CIDRs
/// already mapped with [`map_policy`]). Drops are expected to be counted by their
/// chain policy or drop rule; accepts by the rule the renderer writes for them.
pub fn expectations(policy: &Policy, topo: &Topology) -> Derived {
    let mut d = Derived::default();
    for family in Family::ALL {
        if family == Family::V6 && policy.ipv6.mode == Ipv6Mode::Untouched {
            d.notes
                .push("ipv6.mode = untouched: no IPv6 rules are rendered, none probed".into());
            continue;
        }
        let deny = family == Family::V6 && policy.ipv6.mode == Ipv6Mode::Deny;
        d.append(family_expectations(&Ctx {
            policy,
            topo,
            family,
            deny,
        }));
    }
    d
}

/// One family's promises, section by section, in the order they are probed.
fn family_expectations(c: &Ctx<'_>) -> Derived {
    let mut d = Derived::default();
    d.expectations.extend(blocklist::expectations(c));
    d.expectations.extend(ssh::expectations(c));
    d.expectations.extend(ssh::rate_limit(c));
    d.expectations.extend(inbound::expectations(c));
    d.append(outbound::expectations(c));
    d.expectations.push(hardening::loopback(c));
    if !c.deny {
        // IPv6 `deny`: policies DROP everything; the probes above expect that
        // (inbound, the INPUT policy counts the router's neighbour solicitation:
        // the target answers none, so nothing else reaches it).
        // Malicious flags and INVALID are not rendered there: nothing to count.
        d.append(hardening::crafted(c));
        d.expectations.push(forward::expectation(c));
    }
    logging::prepend(c, &mut d);
    d
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
    fn default_policy_promises() {
        use Family::{V4, V6};
        use ProbeKind::*;
        let (p, _) = map_policy(&Policy::embedded_default(), &topo());
        let d = expectations(&p, &topo());
        let ok = |by: &str| (Expect::Ok, by.to_owned());
        let no = |by: &str| (Expect::NoAnswer, by.to_owned());
        let promised = {
            use HostId::{Admin, Outsider, Target};
            [
                (Ssh, Admin, V4, ok("INPUT: ssh from the admin subnet")),
                (Ssh, Outsider, V4, no("INPUT policy")),
                // The default names only an IPv4 admin subnet: no IPv6 ssh for anyone.
                (Ssh, Admin, V6, no("INPUT policy")),
                (DnsUdp, Target, V6, ok("OUTPUT: dns lookups")),
                (Https, Target, V4, ok("OUTPUT: allow outbound https")),
                (LoopbackTcp, Target, V6, ok("OUTPUT: loopback")),
                (Forward, Admin, V4, no("FORWARD policy")),
                (
                    SynFin,
                    Outsider,
                    V4,
                    ok("INPUT: [malicious packet patterns] SYN+FIN"),
                ),
                (InvalidRst, Admin, V4, ok("INPUT: conntrack cannot place")),
            ]
        };
        for (kind, from, f, want) in promised {
            assert_eq!(one(&d, kind, from, f), want, "{kind} from {from} {f}");
        }
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
        // The range at both ends and just outside it; `to` from its negative side.
        let tcp = find(&d, ProbeKind::Tcp, HostId::Target, V4);
        let got: Vec<_> = tcp
            .iter()
            .map(|e| (e.probe.to, e.probe.port, e.expect))
            .collect();
        assert_eq!(
            got,
            [
                (HostId::Web, Some(8000), Expect::Ok),
                (HostId::Web, Some(8100), Expect::Ok),
                (HostId::Web, Some(8101), Expect::NoAnswer),
                (HostId::Outsider, Some(8000), Expect::NoAnswer),
            ]
        );
        assert!(
            tcp[2..]
                .iter()
                .all(|e| e.counted_by == Some(CountedBy::Policy(Chain::Output)))
        );
        // IPv6 deny: the admin gets nothing over IPv6 (the validator refuses IPv6
        // CIDRs under deny, so allow_from lists IPv4 only).
        let (e, _) = one(&d, ProbeKind::Ssh, HostId::Admin, V6);
        assert_eq!(e, Expect::NoAnswer);
        let (e, _) = one(&d, ProbeKind::Icmp, HostId::Outsider, V6);
        assert_eq!(e, Expect::NoAnswer);
        assert!(find(&d, ProbeKind::SynFin, HostId::Outsider, V6).is_empty());
    }

    #[test]
    fn an_inbound_range_is_probed_at_both_ends_and_just_outside() {
        let text = "[ssh]\nallow_from = [\"10.0.0.0/8\"]\n[[inbound.allow]]\nproto = \"udp\"\nport = \"60000:61000\"\nfrom = [\"10.0.0.0/8\"]\ncomment = \"mosh\"\n[[inbound.allow]]\nproto = \"tcp\"\nport = \"65000:65535\"\n";
        let (p, _) = map_policy(&Policy::parse(text, "t").unwrap(), &topo());
        let d = expectations(&p, &topo());
        let got = |kind, f| -> Vec<(HostId, Option<u16>, Expect, String)> {
            d.expectations
                .iter()
                .filter(|e| {
                    e.probe.kind == kind && e.probe.family == f && e.probe.to == HostId::Target
                })
                .map(|e| {
                    let by = e
                        .counted_by
                        .as_ref()
                        .map(|c| c.to_string())
                        .unwrap_or_default();
                    (e.probe.from, e.probe.port, e.expect, by)
                })
                .collect()
        };
        let row = |h, port, e, by: &str| (h, Some(port), e, by.to_owned());
        use Expect::{NoAnswer, Ok};
        assert_eq!(
            got(ProbeKind::Udp, Family::V4),
            [
                row(HostId::Admin, 60000, Ok, "INPUT: mosh"),
                row(HostId::Admin, 61000, Ok, "INPUT: mosh"),
                row(HostId::Outsider, 60000, NoAnswer, "INPUT policy"),
                row(HostId::Outsider, 61000, NoAnswer, "INPUT policy"),
                row(HostId::Admin, 61001, NoAnswer, "INPUT policy"),
            ]
        );
        // A range ending at 65535: the port just below it is the one outside.
        let any = "INPUT: allowed by the policy (inbound.allow)";
        let tcp = got(ProbeKind::Tcp, Family::V4);
        assert!(
            tcp.contains(&row(HostId::Outsider, 65535, Ok, any)),
            "{tcp:?}"
        );
        assert!(
            tcp.contains(&row(HostId::Admin, 64999, NoAnswer, "INPUT policy")),
            "{tcp:?}"
        );
        // An IPv4-only entry says nothing about IPv6.
        assert!(got(ProbeKind::Udp, Family::V6).is_empty());
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
            include_str!("../../../../examples/bastion.toml").to_owned(),
            include_str!("../../../../examples/mail-relay.toml").to_owned(),
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
    fn untouched_ipv6_is_not_probed_and_says_so() {
        let mut p = Policy::embedded_default();
        p.ipv6.mode = Ipv6Mode::Untouched;
        let d = expectations(&p, &topo());
        assert!(d.expectations.iter().all(|e| e.probe.family == Family::V4));
        assert!(d.notes.iter().any(|n| n.contains("untouched")));
    }
}
