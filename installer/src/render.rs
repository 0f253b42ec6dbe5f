//! `Policy -> Ruleset -> text`, one `*filter` ruleset per family. Pure: no I/O,
//! deterministic, and it cannot fail once the policy is validated.
//!
//! Order, in every ruleset: replies of accepted connections, the blocklists'
//! drops (one rule per list and direction, matching its ipset), malicious TCP flag
//! drops, conntrack INVALID drops, loopback, then the allows (SSH, ICMP, inbound,
//! outbound), and with `logging.dropped = "limited"` a rate-limited LOG rule last
//! in each chain, so it logs what the chain's policy is about to drop. With
//! `ssh.rate_limit`, a `recent` rule just before each SSH allow drops the new
//! connection over the limit. Chain policies are DROP on INPUT, FORWARD and OUTPUT. It refuses to
//! emit the same rule twice: a later duplicate (say, two allow entries that differ
//! only in their comment) is left out, the first one keeps its place.

use std::collections::HashSet;

use ipnet::IpNet;

use crate::policy::{
    Allow, Blocklist, Ipv6Mode, LogDropped, Policy, Ports, Proto, RateLimit, SET_THRESHOLD,
};
use crate::rule::{Chain, IpSet, L4, Match, Recent, Rule, Ruleset, SetDir, Target};

/// The kernel log prefix of the LOG rule before each chain's DROP policy.
pub fn log_prefix(chain: Chain) -> &'static str {
    match chain {
        Chain::Input => "portcullis-drop-in: ",
        Chain::Output => "portcullis-drop-out: ",
        Chain::Forward => "portcullis-drop-fwd: ",
    }
}

/// The comment of those LOG rules (a `counted_by` names them by it).
pub const LOG_COMMENT: &str = "log what the policy drops next (rate limited: 3/min, burst 10)";

/// The comment of the SSH rate-limit rule begins with this.
pub const RATE_LIMIT_COMMENT: &str = "ssh rate limit";

pub use portcullis_netfilter::Family;

/// Both families' rendered rulesets. `v6` is `None` when IPv6 is `untouched`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub v4: Ruleset,
    pub v6: Option<Ruleset>,
    /// The ipsets the rules match (`-m set --match-set`), in the order the rules
    /// first name them; empty when every list is short enough for plain rules
    /// and there is no blocklist. They must exist before the rules are loaded.
    pub sets: Vec<IpSet>,
}

impl Rendered {
    /// The ruleset of `family`, if it is rendered at all.
    pub fn get(&self, family: Family) -> Option<&Ruleset> {
        match family {
            Family::V4 => Some(&self.v4),
            Family::V6 => self.v6.as_ref(),
        }
    }

    /// The iptables-restore text of `family`.
    pub fn text(&self, family: Family) -> Option<String> {
        self.get(family).map(|r| r.to_string())
    }

    /// The `ipset restore` text that creates every set (under its own name) and
    /// fills it, or `None` when there are no sets.
    pub fn sets_text(&self) -> Option<String> {
        if self.sets.is_empty() {
            return None;
        }
        let mut out = String::from(
            "# portcullis ipsets, rendered from a policy: edit the policy, not this file.\n\
             # Load with `ipset restore` before the rules that match them.\n",
        );
        for set in &self.sets {
            set.restore_text(&mut out);
        }
        Some(out)
    }

    /// The families that have a ruleset, in order (`ipv4`, then `ipv6` unless
    /// IPv6 is `untouched`).
    pub fn families(&self) -> impl Iterator<Item = (Family, &Ruleset)> {
        Family::ALL
            .into_iter()
            .filter_map(|f| self.get(f).map(|r| (f, r)))
    }
}

/// Render both families.
pub fn render(policy: &Policy) -> Rendered {
    let mut sets = Vec::new();
    let v4 = ruleset(policy, Family::V4, &mut sets);
    let v6 = match policy.ipv6.mode {
        Ipv6Mode::Mirror => Some(ruleset(policy, Family::V6, &mut sets)),
        Ipv6Mode::Deny => Some(deny_v6(policy)),
        Ipv6Mode::Untouched => None,
    };
    Rendered { v4, v6, sets }
}

/// The name of the set of list `base` in `family`: `pc-BASE-4` or `pc-BASE-6`
/// (`base` is `ssh`, `in3`, `out0`, `bl1`: the section and the entry's index).
pub fn set_name(base: &str, family: Family) -> String {
    let n = match family {
        Family::V4 => 4,
        Family::V6 => 6,
    };
    format!("pc-{base}-{n}")
}

/// How the rules of an address list match its peers in one family.
enum Peers {
    /// One rule per CIDR (none: the list has no CIDR of this family).
    Each(Vec<IpNet>),
    /// One rule matching the set.
    Set(String),
    /// The folded list covers every address (it holds a prefix of length 0).
    Anywhere,
}

/// `list`'s peers in `family`: plain rules up to [`SET_THRESHOLD`] CIDRs, else a
/// set named `set_name(base)` (added to `sets`).
fn peers(base: &str, list: &[IpNet], family: Family, sets: &mut Vec<IpSet>) -> Peers {
    let mine: Vec<IpNet> = list
        .iter()
        .filter(|n| in_family(n, family))
        .copied()
        .collect();
    if mine.len() <= SET_THRESHOLD {
        return Peers::Each(mine);
    }
    let folded = IpNet::aggregate(&mine);
    if folded.iter().any(|n| n.prefix_len() == 0) {
        return Peers::Anywhere;
    }
    Peers::Set(add_set(set_name(base, family), family, folded, sets))
}

fn add_set(name: String, family: Family, nets: Vec<IpNet>, sets: &mut Vec<IpSet>) -> String {
    if !sets.iter().any(|s| s.name == name) {
        sets.push(IpSet {
            name: name.clone(),
            v6: family == Family::V6,
            nets,
        });
    }
    name
}

/// Each `[[blocklist]]` with CIDRs of `family`: a DROP rule per direction,
/// matching the list's set (sources coming in, destinations going out).
fn blocklists(rules: &mut Rules, policy: &Policy, family: Family, sets: &mut Vec<IpSet>) {
    for (i, b) in policy.blocklists.iter().enumerate() {
        let Blocklist {
            direction, nets, ..
        } = b;
        let mine: Vec<IpNet> = nets
            .iter()
            .filter(|n| in_family(n, family))
            .copied()
            .collect();
        if mine.is_empty() {
            continue;
        }
        let name = add_set(set_name(&format!("bl{i}"), family), family, mine, sets);
        let comment = b.comment(i);
        if direction.inbound() {
            rules.push(
                Rule::new(Chain::Input, Target::Drop, comment.clone())
                    .with(Match::Set(name.clone(), SetDir::Src)),
            );
        }
        if direction.outbound() {
            rules.push(
                Rule::new(Chain::Output, Target::Drop, comment).with(Match::Set(name, SetDir::Dst)),
            );
        }
    }
}

fn header(family: Family) -> String {
    format!(
        "portcullis {family} ruleset, rendered from a policy: edit the policy, not this file.\n\
         Default deny: INPUT, FORWARD and OUTPUT drop what no rule below accepts."
    )
}

fn drop_all() -> [(Chain, Target); 3] {
    [
        (Chain::Input, Target::Drop),
        (Chain::Forward, Target::Drop),
        (Chain::Output, Target::Drop),
    ]
}

/// The rules of one ruleset, without duplicates. Two rules are the same when
/// chain, matches and target are; the comment does not count, since iptables
/// would evaluate both identically and the second could never match.
struct Rules {
    list: Vec<Rule>,
    seen: HashSet<(Chain, Vec<Match>, Target)>,
}

impl Rules {
    fn new() -> Rules {
        Rules {
            list: Vec::new(),
            seen: HashSet::new(),
        }
    }

    fn push(&mut self, rule: Rule) {
        if self
            .seen
            .insert((rule.chain, rule.matches.clone(), rule.target))
        {
            self.list.push(rule);
        }
    }

    fn into_ruleset(self, family: Family) -> Ruleset {
        Ruleset {
            header: header(family),
            policies: drop_all(),
            rules: self.list,
        }
    }
}

fn in_family(net: &IpNet, family: Family) -> bool {
    matches!(
        (net, family),
        (IpNet::V4(_), Family::V4) | (IpNet::V6(_), Family::V6)
    )
}

fn port_range(p: Ports) -> (u16, u16) {
    match p {
        Ports::One(n) => (n, n),
        Ports::Range(a, b) => (a, b),
    }
}

fn l4(p: Proto) -> L4 {
    match p {
        Proto::Tcp => L4::Tcp,
        Proto::Udp => L4::Udp,
    }
}

fn icmp(family: Family) -> L4 {
    match family {
        Family::V4 => L4::Icmp,
        Family::V6 => L4::Icmpv6,
    }
}

/// The first rules of every ruleset: replies, blocklists, malicious flags,
/// INVALID, loopback.
fn preamble(rules: &mut Rules, policy: &Policy, family: Family, sets: &mut Vec<IpSet>) {
    use Chain::{Input, Output};
    use Target::{Accept, Drop};
    // Replies and related ICMP errors (packet too big, unreachable) of connections
    // we accepted, both ways; first, because they are nearly all the traffic.
    for chain in [Input, Output] {
        rules.push(
            Rule::new(
                chain,
                Accept,
                "replies and related errors of accepted connections",
            )
            .with(Match::CtState("RELATED,ESTABLISHED")),
        );
    }
    blocklists(rules, policy, family, sets);
    if policy.hardening.drop_malicious_flags {
        rules.push(
            Rule::new(
                Input,
                Drop,
                "[malicious packet patterns] SYN+FIN is never legitimate (scanners, OS fingerprinting)",
            )
            .with(Match::Proto(L4::Tcp))
            .with(Match::TcpFlags("FIN,SYN", "FIN,SYN")),
        );
        rules.push(
            Rule::new(
                Input,
                Drop,
                "[malicious packet patterns] SYN+RST is never legitimate (scanners, OS fingerprinting)",
            )
            .with(Match::Proto(L4::Tcp))
            .with(Match::TcpFlags("SYN,RST", "SYN,RST")),
        );
    }
    if policy.hardening.drop_invalid {
        rules.push(
            Rule::new(
                Input,
                Drop,
                "conntrack cannot place the packet in any connection (out of window, bad flags)",
            )
            .with(Match::CtState("INVALID")),
        );
    }
    if policy.hardening.loopback {
        rules.push(
            Rule::new(Input, Accept, "loopback: local services talk to each other")
                .with(Match::InInterface("lo")),
        );
        rules.push(
            Rule::new(
                Output,
                Accept,
                "loopback: local services talk to each other",
            )
            .with(Match::OutInterface("lo")),
        );
    }
}

fn ruleset(policy: &Policy, family: Family, sets: &mut Vec<IpSet>) -> Ruleset {
    use Chain::{Input, Output};
    use Target::Accept;
    let mut rules = Rules::new();
    preamble(&mut rules, policy, family, sets);

    // SSH from the admin subnets. The OUTPUT rule lets the server speak first on a
    // session that was open before conntrack started: such a session is picked up
    // mid-stream as NEW, not ESTABLISHED, and without this rule the first packet
    // the server sends (a countdown, a prompt) is dropped and the session stalls
    // until the client types (FIELD-NOTES, conntrack note). `! --syn` keeps it from
    // opening connections.
    let ssh = policy.ssh.port;
    // Each pair: the INPUT rule's source match and the OUTPUT rule's destination
    // match (`None`: any address).
    let pairs: Vec<(Option<Match>, Option<Match>)> =
        match peers("ssh", &policy.ssh.allow_from, family, sets) {
            Peers::Each(nets) => nets
                .into_iter()
                .map(|n| (Some(Match::Source(n)), Some(Match::Destination(n))))
                .collect(),
            Peers::Set(name) => vec![(
                Some(Match::Set(name.clone(), SetDir::Src)),
                Some(Match::Set(name, SetDir::Dst)),
            )],
            Peers::Anywhere => vec![(None, None)],
        };
    let with = |r: Rule, m: &Option<Match>| match m {
        Some(m) => r.with(m.clone()),
        None => r,
    };
    for (source, destination) in &pairs {
        if let Some(limit) = policy.ssh.rate_limit {
            rules.push(ssh_rate_limit(source, ssh, limit));
        }
        rules.push(
            with(
                Rule::new(Input, Accept, "ssh from the admin subnet"),
                source,
            )
            .with(Match::Proto(L4::Tcp))
            .with(Match::DestPort(ssh, ssh)),
        );
        rules.push(
            with(
                Rule::new(
                    Output,
                    Accept,
                    "ssh server speaking first on a session older than the ruleset",
                ),
                destination,
            )
            .with(Match::Proto(L4::Tcp))
            .with(Match::SourcePort(ssh, ssh))
            .with(Match::NotSyn),
        );
    }

    match family {
        Family::V4 => {
            if policy.inbound.icmp {
                rules.push(
                    Rule::new(Input, Accept, "icmp echo request: the host answers ping")
                        .with(Match::Proto(L4::Icmp))
                        .with(Match::IcmpType(8)),
                );
            }
        }
        // The RFC 4890 baseline includes echo both ways, so `inbound.icmp` and
        // `outbound.icmp` add nothing to IPv6: the host must answer ping there.
        Family::V6 => icmpv6_baseline(&mut rules),
    }
    for (i, a) in policy.inbound.allow.iter().enumerate() {
        allow(&mut rules, Input, a, family, &format!("in{i}"), sets);
    }

    let out = &policy.outbound;
    if out.dns {
        for (p, why) in [
            (L4::Udp, "dns lookups (udp)"),
            (L4::Tcp, "dns lookups (tcp, for answers too big for udp)"),
        ] {
            rules.push(
                Rule::new(Output, Accept, why)
                    .with(Match::Proto(p))
                    .with(Match::DestPort(53, 53)),
            );
        }
    }
    if out.http {
        rules.push(
            Rule::new(Output, Accept, "allow outbound http")
                .with(Match::Proto(L4::Tcp))
                .with(Match::DestPort(80, 80)),
        );
    }
    if out.https {
        rules.push(
            Rule::new(Output, Accept, "allow outbound https")
                .with(Match::Proto(L4::Tcp))
                .with(Match::DestPort(443, 443)),
        );
    }
    if out.icmp && family == Family::V4 {
        rules.push(
            Rule::new(Output, Accept, "outgoing icmp: ping and errors")
                .with(Match::Proto(icmp(family))),
        );
    }
    for (i, a) in out.allow.iter().enumerate() {
        allow(&mut rules, Output, a, family, &format!("out{i}"), sets);
    }

    log_dropped(&mut rules, policy);
    rules.into_ruleset(family)
}

/// `ssh.rate_limit`: the new connection (a SYN conntrack has not seen) from `net`
/// is noted in the `recent` list, and dropped when the list holds more than
/// `limit.connections` from its source address within `limit.seconds`, this one
/// included. Only SYNs count: a session older than the ruleset, picked up
/// mid-stream as NEW, neither counts nor is dropped here.
fn ssh_rate_limit(source: &Option<Match>, port: u16, limit: RateLimit) -> Rule {
    let r = Rule::new(
        Chain::Input,
        Target::Drop,
        format!(
            "{RATE_LIMIT_COMMENT}: over {} new connections from one address in {}s",
            limit.connections, limit.seconds
        ),
    );
    let r = match source {
        Some(m) => r.with(m.clone()),
        None => r,
    };
    r.with(Match::Proto(L4::Tcp))
        .with(Match::DestPort(port, port))
        .with(Match::Syn)
        .with(Match::CtState("NEW"))
        .with(Match::Recent(Recent::Set, RateLimit::LIST))
        .with(Match::Recent(
            Recent::Update {
                seconds: limit.seconds,
                hitcount: limit.connections + 1,
            },
            RateLimit::LIST,
        ))
}

/// `logging.dropped = "limited"`: the last rule of each chain logs what the DROP
/// policy is about to drop, at most 3 a minute after a burst of 10 (ufw's
/// numbers), one token bucket per rule.
fn log_dropped(rules: &mut Rules, policy: &Policy) {
    if policy.logging.dropped == LogDropped::Off {
        return;
    }
    for chain in Chain::ALL {
        rules.push(
            Rule::new(chain, Target::Log(log_prefix(chain)), LOG_COMMENT).with(Match::Limit {
                per_minute: 3,
                burst: 10,
            }),
        );
    }
}

/// `[[inbound.allow]]` / `[[outbound.allow]]`: one rule per peer of this family
/// (one rule matching the set `set_name(base)` past [`SET_THRESHOLD`] peers), or
/// one rule for anywhere; an entry whose peers are all of the other family
/// renders nothing here.
fn allow(
    rules: &mut Rules,
    chain: Chain,
    a: &Allow,
    family: Family,
    base: &str,
    sets: &mut Vec<IpSet>,
) {
    let (lo, hi) = port_range(a.ports);
    let comment = match &a.comment {
        Some(c) => c.clone(),
        None if chain == Chain::Input => "allowed by the policy (inbound.allow)".to_owned(),
        None => "allowed by the policy (outbound.allow)".to_owned(),
    };
    let rule = |peer: Option<Match>| {
        let mut r = Rule::new(chain, Target::Accept, comment.clone());
        if let Some(m) = peer {
            r = r.with(m);
        }
        r.with(Match::Proto(l4(a.proto)))
            .with(Match::DestPort(lo, hi))
    };
    if a.peers.is_empty() {
        rules.push(rule(None));
        return;
    }
    let dir = if chain == Chain::Input {
        SetDir::Src
    } else {
        SetDir::Dst
    };
    match peers(base, &a.peers, family, sets) {
        Peers::Each(nets) => {
            for net in nets {
                rules.push(rule(Some(if chain == Chain::Input {
                    Match::Source(net)
                } else {
                    Match::Destination(net)
                })));
            }
        }
        Peers::Set(name) => rules.push(rule(Some(Match::Set(name, dir)))),
        Peers::Anywhere => rules.push(rule(None)),
    }
}

/// RFC 4890 section 4.4: the ICMPv6 a host must not drop, both ways. Neighbour and
/// router discovery (RFC 4861) only with hop limit 255, which proves the packet did
/// not cross a router. MLD (RFC 2710, RFC 3810) only from link-local sources with
/// hop limit 1: without it, a switch that snoops MLD stops forwarding the
/// solicited-node multicast the neighbour discovery above relies on.
fn icmpv6_baseline(rules: &mut Rules) {
    let link_local: IpNet = "fe80::/10".parse().expect("a valid literal");
    for chain in [Chain::Input, Chain::Output] {
        for (t, why) in [
            (1, "icmpv6 destination unreachable (RFC 4890)"),
            (2, "icmpv6 packet too big: path MTU discovery (RFC 4890)"),
            (3, "icmpv6 time exceeded (RFC 4890)"),
            (4, "icmpv6 parameter problem (RFC 4890)"),
            (128, "icmpv6 echo request (RFC 4890)"),
            (129, "icmpv6 echo reply (RFC 4890)"),
        ] {
            rules.push(
                Rule::new(chain, Target::Accept, why)
                    .with(Match::Proto(L4::Icmpv6))
                    .with(Match::Icmpv6Type(t)),
            );
        }
        for (t, why) in [
            (133, "router solicitation, on-link only (RFC 4861)"),
            (134, "router advertisement, on-link only (RFC 4861)"),
            (135, "neighbour solicitation, on-link only (RFC 4861)"),
            (136, "neighbour advertisement, on-link only (RFC 4861)"),
        ] {
            rules.push(
                Rule::new(chain, Target::Accept, why)
                    .with(Match::Proto(L4::Icmpv6))
                    .with(Match::Icmpv6Type(t))
                    .with(Match::HopLimit(255)),
            );
        }
        for (t, why) in [
            (130, "mld query, link-local only (RFC 2710)"),
            (131, "mld report, link-local only (RFC 2710)"),
            (132, "mld done, link-local only (RFC 2710)"),
            (143, "mldv2 report, link-local only (RFC 3810)"),
        ] {
            let mut r = Rule::new(chain, Target::Accept, why);
            // Outgoing reports may leave from :: while the link-local address is
            // still tentative (RFC 3810 5.2.13), so OUTPUT does not match a source.
            if chain == Chain::Input {
                r = r.with(Match::Source(link_local));
            }
            rules.push(
                r.with(Match::Proto(L4::Icmpv6))
                    .with(Match::Icmpv6Type(t))
                    .with(Match::HopLimit(1)),
            );
        }
    }
}

/// `ipv6.mode = "deny"`: the host does not use IPv6; loopback alone passes.
fn deny_v6(policy: &Policy) -> Ruleset {
    let mut rules = Rules::new();
    if policy.hardening.loopback {
        rules.push(
            Rule::new(
                Chain::Input,
                Target::Accept,
                "loopback: the host does not use ipv6 beyond itself",
            )
            .with(Match::InInterface("lo")),
        );
        rules.push(
            Rule::new(
                Chain::Output,
                Target::Accept,
                "loopback: the host does not use ipv6 beyond itself",
            )
            .with(Match::OutInterface("lo")),
        );
    }
    log_dropped(&mut rules, policy);
    rules.into_ruleset(Family::V6)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules `policy` renders for `family`, without comments (the golden files
    /// pin those), one string per rule; `<not rendered>` when the family is not.
    fn rules_of(policy: &Policy, family: Family) -> Vec<String> {
        match render(policy).get(family) {
            None => vec!["<not rendered>".to_owned()],
            Some(r) => r
                .rules
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.comment.clear();
                    r.to_string()
                })
                .collect(),
        }
    }

    /// Render `policy` and compare the rules of `family` (see [`rules_of`]) with
    /// `expect`, one rule per line.
    #[track_caller]
    fn check(policy: &str, family: Family, expect: &str) {
        let policy = Policy::parse(policy, "test.toml").unwrap_or_else(|e| panic!("{e}"));
        let got = rules_of(&policy, family);
        let expect: Vec<&str> = expect
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(got, expect, "\ngot:\n{}\n", got.join("\n"));
    }

    /// [`check`] the IPv4 rules: the two that every ruleset opens with (replies to
    /// what either side started), then `rest`.
    #[track_caller]
    fn check_v4_after_established(policy: &str, rest: &str) {
        let established = "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
                           -A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
        check(policy, Family::V4, &format!("{established}{rest}"));
    }

    const NO_HARDENING: &str =
        "[hardening]\nloopback = false\ndrop_invalid = false\ndrop_malicious_flags = false\n";

    #[test]
    fn empty_policy_is_hardening_only() {
        check_v4_after_established(
            "",
            r#"
            -A INPUT -p tcp -m tcp --tcp-flags FIN,SYN FIN,SYN -j DROP
            -A INPUT -p tcp -m tcp --tcp-flags SYN,RST SYN,RST -j DROP
            -A INPUT -m conntrack --ctstate INVALID -j DROP
            -A INPUT -i lo -j ACCEPT
            -A OUTPUT -o lo -j ACCEPT
            "#,
        );
    }

    #[test]
    fn hardening_can_be_switched_off() {
        check_v4_after_established(NO_HARDENING, "");
    }

    #[test]
    fn ssh_lets_the_server_speak_first_on_old_sessions() {
        let p = format!(
            "{NO_HARDENING}[ssh]\nport = 2222\nallow_from = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n"
        );
        check_v4_after_established(
            &p,
            r#"
            -A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 2222 -j ACCEPT
            -A OUTPUT -d 192.0.2.0/24 -p tcp -m tcp --sport 2222 ! --syn -j ACCEPT
            "#,
        );
    }

    #[test]
    fn allow_entries_render_per_peer_of_the_family() {
        let p = format!(
            "{NO_HARDENING}[ipv6]\nmode = \"untouched\"\n\
             [[outbound.allow]]\nproto = \"udp\"\nport = \"8000:8100\"\nto = [\"198.51.100.0/24\", \"2001:db8::/48\", \"203.0.113.9\"]\n\
             [[inbound.allow]]\nproto = \"tcp\"\nport = 443\n"
        );
        check_v4_after_established(
            &p,
            r#"
            -A INPUT -p tcp -m tcp --dport 443 -j ACCEPT
            -A OUTPUT -d 198.51.100.0/24 -p udp -m udp --dport 8000:8100 -j ACCEPT
            -A OUTPUT -d 203.0.113.9/32 -p udp -m udp --dport 8000:8100 -j ACCEPT
            "#,
        );
        check(&p, Family::V6, "<not rendered>");
    }

    #[test]
    fn duplicates_are_rendered_once() {
        let p = format!(
            "{NO_HARDENING}[outbound]\nhttps = true\n\
             [[outbound.allow]]\nproto = \"tcp\"\nport = 443\ncomment = \"again\"\n\
             [[outbound.allow]]\nproto = \"tcp\"\nport = \"443:443\"\n"
        );
        check_v4_after_established(
            &p,
            r#"
            -A OUTPUT -p tcp -m tcp --dport 443 -j ACCEPT
            "#,
        );
    }

    #[test]
    fn ipv6_mirror_has_the_rfc4890_baseline_once() {
        let p = format!("{NO_HARDENING}[inbound]\nicmp = true\n[outbound]\nicmp = true\n");
        let policy = Policy::parse(&p, "t").unwrap();
        let v6 = render(&policy).v6.unwrap();
        let lines: Vec<String> = v6.rules.iter().map(|r| r.to_string()).collect();
        for t in [1, 2, 3, 4, 128, 129] {
            for chain in ["INPUT", "OUTPUT"] {
                let n = lines
                    .iter()
                    .filter(|l| {
                        l.starts_with(&format!("-A {chain} "))
                            && l.contains(&format!("--icmpv6-type {t} "))
                    })
                    .count();
                assert_eq!(n, 1, "type {t} in {chain}: {lines:#?}");
            }
        }
        for t in [133, 134, 135, 136] {
            assert!(
                lines
                    .iter()
                    .all(|l| !l.contains(&format!("--icmpv6-type {t} "))
                        || l.contains("--hl-eq 255"))
            );
        }
        for t in [130, 131, 132, 143] {
            assert!(
                lines.iter().all(
                    |l| !l.contains(&format!("--icmpv6-type {t} ")) || l.contains("--hl-eq 1 ")
                )
            );
        }
        assert!(lines.iter().all(|l| !l.contains("-p icmp ")), "{lines:#?}");
    }

    #[test]
    fn ipv6_deny_is_loopback_only() {
        check(
            "[ipv6]\nmode = \"deny\"\n[ssh]\nallow_from = [\"192.0.2.0/24\"]\n",
            Family::V6,
            r#"
            -A INPUT -i lo -j ACCEPT
            -A OUTPUT -o lo -j ACCEPT
            "#,
        );
    }

    #[test]
    fn order_is_replies_flags_invalid_loopback_allows() {
        let policy = Policy::embedded_default();
        for (family, rs) in render(&policy).families() {
            let pos = |needle: &str| rs.rules.iter().position(|r| r.to_string().contains(needle));
            // The seed's admin subnet is IPv4 only: IPv6 has no SSH rule.
            let ssh = pos("--dport 22 ");
            assert_eq!(ssh.is_some(), family == Family::V4);
            let order: Vec<usize> = [
                pos("RELATED,ESTABLISHED"),
                pos("FIN,SYN FIN,SYN"),
                pos("--ctstate INVALID"),
                pos("-i lo"),
                ssh,
                pos("--dport 8443 "),
                pos("--dport 443 "),
            ]
            .into_iter()
            .flatten()
            .collect();
            assert_eq!(order.len(), if family == Family::V4 { 7 } else { 6 });
            assert!(order.windows(2).all(|w| w[0] < w[1]), "{family}: {order:?}");
        }
    }

    #[test]
    fn every_policy_drops_by_default() {
        for text in ["", crate::policy::DEFAULT_POLICY, "[ipv6]\nmode = \"deny\""] {
            let r = render(&Policy::parse(text, "t").unwrap());
            for (_, rs) in r.families() {
                assert!(rs.policies.iter().all(|(_, t)| *t == Target::Drop));
            }
        }
    }

    #[test]
    fn ssh_rate_limit_comes_just_before_each_ssh_allow() {
        let p = format!(
            "{NO_HARDENING}[ssh]\nallow_from = [\"192.0.2.0/24\", \"198.51.100.0/24\"]\nrate_limit = \"6/60s\"\n"
        );
        check_v4_after_established(
            &p,
            r#"
            -A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 --syn -m conntrack --ctstate NEW -m recent --set --name portcullis-ssh --rsource -m recent --update --seconds 60 --hitcount 7 --name portcullis-ssh --rsource -j DROP
            -A INPUT -s 192.0.2.0/24 -p tcp -m tcp --dport 22 -j ACCEPT
            -A OUTPUT -d 192.0.2.0/24 -p tcp -m tcp --sport 22 ! --syn -j ACCEPT
            -A INPUT -s 198.51.100.0/24 -p tcp -m tcp --dport 22 --syn -m conntrack --ctstate NEW -m recent --set --name portcullis-ssh --rsource -m recent --update --seconds 60 --hitcount 7 --name portcullis-ssh --rsource -j DROP
            -A INPUT -s 198.51.100.0/24 -p tcp -m tcp --dport 22 -j ACCEPT
            -A OUTPUT -d 198.51.100.0/24 -p tcp -m tcp --sport 22 ! --syn -j ACCEPT
            "#,
        );
        // No IPv6 admin subnet: nothing to limit there.
        let unlimited = Policy::parse(&p.replace("rate_limit = \"6/60s\"\n", ""), "t").unwrap();
        let unlimited = rules_of(&unlimited, Family::V6);
        assert_ne!(unlimited, ["<not rendered>"]);
        check(&p, Family::V6, &unlimited.join("\n"));
    }

    #[test]
    fn limited_logging_is_the_last_rule_of_every_chain_in_both_families() {
        for mode in ["mirror", "deny"] {
            let p = format!(
                "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n[logging]\ndropped = \"limited\"\n[ipv6]\nmode = \"{mode}\"\n"
            );
            let r = render(&Policy::parse(&p, "t").unwrap());
            for (family, rs) in r.families() {
                for chain in Chain::ALL {
                    let last = rs.rules.iter().rfind(|r| r.chain == chain).unwrap();
                    assert_eq!(
                        last.target,
                        Target::Log(log_prefix(chain)),
                        "{family} {mode}"
                    );
                    assert_eq!(
                        last.to_string(),
                        format!(
                            "-A {} -m limit --limit 3/min --limit-burst 10 -m comment --comment \"{LOG_COMMENT}\" -j LOG --log-prefix \"{}\"",
                            chain.name(),
                            log_prefix(chain)
                        )
                    );
                }
            }
        }
        // Off (the default) renders no LOG rule at all.
        let off = render(&Policy::embedded_default());
        for (_, rs) in off.families() {
            assert!(rs.rules.iter().all(|r| !matches!(r.target, Target::Log(_))));
        }
    }

    #[test]
    fn long_lists_are_sets_and_short_ones_plain_rules() {
        let hosts = |n: usize| {
            (0..n)
                .map(|i| format!("\"198.51.100.{i}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let short = format!(
            "{NO_HARDENING}[ipv6]\nmode = \"untouched\"\n[[inbound.allow]]\nproto = \"tcp\"\nport = 25\nfrom = [{}]\n",
            hosts(SET_THRESHOLD)
        );
        let r = render(&Policy::parse(&short, "t").unwrap());
        assert!(r.sets.is_empty());
        assert_eq!(r.v4.rules.len(), 2 + SET_THRESHOLD);
        let long = format!(
            "{NO_HARDENING}[ipv6]\nmode = \"untouched\"\n[[inbound.allow]]\nproto = \"tcp\"\nport = 25\nfrom = [{}]\n",
            hosts(SET_THRESHOLD + 1)
        );
        check(
            &long,
            Family::V4,
            r#"
            -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
            -A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
            -A INPUT -m set --match-set pc-in0-4 src -p tcp -m tcp --dport 25 -j ACCEPT
            "#,
        );
        let r = render(&Policy::parse(&long, "t").unwrap());
        // 198.51.100.0-8: folded to a /29 and a /32.
        assert_eq!(
            r.sets_text().unwrap().lines().skip(2).collect::<Vec<_>>(),
            [
                "create pc-in0-4 hash:net family inet hashsize 64 maxelem 65536",
                "add pc-in0-4 198.51.100.0/29",
                "add pc-in0-4 198.51.100.8/32",
            ]
        );
    }

    #[test]
    fn blocklists_come_right_after_the_replies_in_their_directions() {
        let p = "[[blocklist]]\ncidrs = [\"203.0.113.0/24\"]\ndirection = \"in\"\n\
                 [[blocklist]]\ncidrs = [\"192.0.2.0/24\", \"2001:db8::/32\"]\ndirection = \"out\"\n";
        check(
            &format!("{NO_HARDENING}{p}"),
            Family::V4,
            r#"
            -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
            -A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
            -A INPUT -m set --match-set pc-bl0-4 src -j DROP
            -A OUTPUT -m set --match-set pc-bl1-4 dst -j DROP
            "#,
        );
        let r = render(&Policy::parse(p, "t").unwrap());
        let names: Vec<&str> = r.sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["pc-bl0-4", "pc-bl1-4", "pc-bl1-6"]);
        let v6: Vec<String> = r.v6.unwrap().rules.iter().map(|r| r.to_string()).collect();
        assert!(v6[2].starts_with("-A OUTPUT -m set --match-set pc-bl1-6 dst -m comment --comment \"blocklist[1] (inline)\""), "{v6:#?}");
        // deny: IPv6 is loopback only, the IPv6 half of a blocklist is moot.
        let deny = render(&Policy::parse(&format!("{p}[ipv6]\nmode = \"deny\"\n"), "t").unwrap());
        assert!(deny.sets.iter().all(|s| !s.v6));
    }

    #[test]
    fn quotes_in_comments_are_escaped() {
        let p = "[[inbound.allow]]\nproto = \"tcp\"\nport = 1\ncomment = 'say \"hi\" \\ bye'\n";
        let text = render(&Policy::parse(p, "t").unwrap())
            .text(Family::V4)
            .unwrap();
        assert!(text.contains(r#"--comment "say \"hi\" \\ bye""#), "{text}");
    }
}
