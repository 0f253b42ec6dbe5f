//! The policy in the lab: each real-world CIDR of a policy replaced by the subnet
//! of the lab host that plays its part, on the policy ([`map_policy`],
//! [`apply_mappings`]) or textually on hand-written restore files ([`map_text`]).

use ipnet::IpNet;

use portcullis_harness::Family;

use super::{Topology, family_of};
use crate::policy::Policy;
use crate::verify::model::HostId;

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

/// Whether `net` overlaps any link of the lab.
fn overlaps_lab(net: &IpNet, topo: &Topology) -> bool {
    topo.hosts
        .iter()
        .any(|h| h.subnet.contains(net) || net.contains(&h.subnet))
}

/// Replace each CIDR the lab cannot keep with the subnet of the lab host that
/// plays its part: the admin host for `ssh.allow_from` and `inbound.allow.from`,
/// the web host for `outbound.allow.to`. Returns the lab's policy and what was
/// replaced.
pub fn map_policy(policy: &Policy, topo: &Topology) -> (Policy, Vec<Mapping>) {
    let mut maps = Vec::new();
    let mut map = |key: String, nets: &mut Vec<IpNet>, host: HostId| {
        let count = |f: Family| nets.iter().filter(|n| family_of(n) == f).count();
        // A list long enough to render as a set keeps its length in the lab, so
        // the lab loads, matches and counts the set as the host would: its first
        // CIDR the lab cannot keep stands for `host`, CIDRs that overlap no lab
        // link stay as they are, the rest are mapped. A short list maps every
        // CIDR and drops repeats.
        let long = [Family::V4, Family::V6].map(|f| count(f) > crate::policy::SET_THRESHOLD);
        let mut stand_in = [false, false];
        let mut out: Vec<IpNet> = Vec::new();
        for net in nets.iter() {
            let f = usize::from(family_of(net) == Family::V6);
            let keep = keeps_in_lab(net, host, topo)
                || (long[f] && stand_in[f] && !overlaps_lab(net, topo));
            let replaced = if keep {
                *net
            } else if let Some(to) = topo.subnet(host, family_of(net)) {
                stand_in[f] = true;
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
            if long[f] || !out.contains(&replaced) {
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
    // A blocklist stands for the inner host's network, in both directions: a
    // host no other promise involves on INPUT or OUTPUT, so the other probes
    // are judged as without the list. One mapping per family (the list's first
    // CIDR stands for all of them: a blocklist may hold 50,000).
    // CIDRs that overlap no lab link stay, so the lab's set is as large as the
    // host's; those that overlap one are left out (the inner subnet stands in).
    for (i, b) in p.blocklists.iter_mut().enumerate() {
        let mut out = Vec::new();
        for family in Family::ALL {
            let Some(first) = b.nets.iter().find(|n| family_of(n) == family) else {
                continue;
            };
            if let Some(to) = topo.subnet(HostId::Inner, family) {
                maps.push(Mapping {
                    key: format!("blocklist[{i}]"),
                    from: *first,
                    to,
                    host: HostId::Inner,
                });
                out.push(to);
                out.extend(
                    b.nets
                        .iter()
                        .filter(|n| family_of(n) == family && !overlaps_lab(n, topo)),
                );
            }
        }
        b.nets = ipnet::IpNet::aggregate(&out);
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

#[cfg(test)]
mod tests {
    use super::super::tests::topo;
    use super::*;

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
}
