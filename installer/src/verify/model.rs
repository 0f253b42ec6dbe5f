//! The vocabulary shared by `verify` and the scenario suite: lab hosts, probe
//! kinds, expected outcomes and the rule (or chain policy) that must count a probe.
//! Pure data with parsers; nothing here touches a namespace.

use std::fmt;
use std::str::FromStr;

use portcullis_harness::Family;
pub use portcullis_harness::HostId;
use portcullis_harness::probe::Outcome;

use crate::rule::Chain;

/// The lab hosts a probe may come from or go to, with the names the scenario
/// format uses: every [`HostId`] but the router. `inner` sits on a second link
/// of the target, reachable only THROUGH it (for the FORWARD chain); the lab
/// makes it before the rules load when a probe needs it.
pub const HOSTS: [HostId; 6] = match HostId::ALL {
    [HostId::Router, rest @ ..] => rest,
    _ => panic!("HostId::ALL starts with the router"),
};

/// A host of [`HOSTS`] by its name (`target`, `admin`, `outsider`, `resolver`,
/// `web`, `inner`); the router is not one.
pub fn parse_host(s: &str) -> Result<HostId, String> {
    s.parse::<HostId>()
        .ok()
        .filter(|h| HOSTS.contains(h))
        .ok_or_else(|| {
            format!("unknown host `{s}`: expected target, admin, outsider, resolver, web or inner")
        })
}

/// What a probe does. The direction is implied: inbound kinds go from a client host
/// to the target, outbound kinds from the target to a server host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeKind {
    /// TCP connect to a port (a listener is started there first).
    Tcp,
    /// A real OpenSSH login running a command.
    Ssh,
    /// A DNS query over UDP that must resolve the lab's test name.
    DnsUdp,
    /// The same over TCP.
    DnsTcp,
    /// HTTP GET.
    Http,
    /// HTTPS GET with the certificate checked against the lab CA.
    Https,
    /// ICMP echo (ICMPv6 echo for IPv6).
    Icmp,
    /// A crafted TCP segment with SYN and FIN set.
    SynFin,
    /// A crafted TCP segment with SYN and RST set.
    SynRst,
    /// An out-of-window RST on an established connection: conntrack INVALID.
    InvalidRst,
    /// TCP over the target's own loopback (127.0.0.1, ::1).
    LoopbackTcp,
    /// TCP from a client routed THROUGH the target to a host behind it.
    Forward,
    /// One UDP datagram to an echo server started on the port; the echo is the
    /// proof (an ICMP port unreachable is `refused`).
    Udp,
    /// The SSH rate limit: hold one connection to the ssh port open, open
    /// `count - 1` more from the same source (`count` in all, what the window
    /// allows), then one more: its outcome is the probe's (the limit must drop
    /// it). `failed` when a connection within the limit is not accepted, or when
    /// the held one no longer carries data after the burst (its data counted by
    /// the RELATED,ESTABLISHED rule, when the ruleset has that portcullis comment).
    SshLimit,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 14] = [
        ProbeKind::Tcp,
        ProbeKind::Ssh,
        ProbeKind::DnsUdp,
        ProbeKind::DnsTcp,
        ProbeKind::Http,
        ProbeKind::Https,
        ProbeKind::Icmp,
        ProbeKind::SynFin,
        ProbeKind::SynRst,
        ProbeKind::InvalidRst,
        ProbeKind::LoopbackTcp,
        ProbeKind::Forward,
        ProbeKind::Udp,
        ProbeKind::SshLimit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Ssh => "ssh",
            ProbeKind::DnsUdp => "dns-udp",
            ProbeKind::DnsTcp => "dns-tcp",
            ProbeKind::Http => "http",
            ProbeKind::Https => "https",
            ProbeKind::Icmp => "icmp",
            ProbeKind::SynFin => "syn-fin",
            ProbeKind::SynRst => "syn-rst",
            ProbeKind::InvalidRst => "invalid-rst",
            ProbeKind::LoopbackTcp => "loopback-tcp",
            ProbeKind::Forward => "forward",
            ProbeKind::Udp => "udp",
            ProbeKind::SshLimit => "ssh-limit",
        }
    }

    /// Whether the kind needs an explicit `port`.
    pub fn needs_port(self) -> bool {
        matches!(
            self,
            ProbeKind::Tcp | ProbeKind::LoopbackTcp | ProbeKind::Forward | ProbeKind::Udp
        )
    }

    /// The well-known port of the kind, when it has one.
    pub fn default_port(self) -> Option<u16> {
        match self {
            ProbeKind::Ssh
            | ProbeKind::SynFin
            | ProbeKind::SynRst
            | ProbeKind::InvalidRst
            | ProbeKind::SshLimit => Some(22),
            ProbeKind::DnsUdp | ProbeKind::DnsTcp => Some(53),
            ProbeKind::Http => Some(80),
            ProbeKind::Https => Some(443),
            _ => None,
        }
    }

    /// The peer a probe of this kind goes to when the file does not say.
    pub fn default_to(self, from: HostId) -> Option<HostId> {
        match self {
            ProbeKind::DnsUdp | ProbeKind::DnsTcp => Some(HostId::Resolver),
            ProbeKind::Http | ProbeKind::Https => Some(HostId::Web),
            ProbeKind::LoopbackTcp => Some(HostId::Target),
            ProbeKind::Forward => Some(HostId::Inner),
            _ if from != HostId::Target => Some(HostId::Target),
            _ => None,
        }
    }
}

impl fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProbeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProbeKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = ProbeKind::ALL.iter().map(|k| k.name()).collect();
                format!(
                    "unknown probe kind `{s}`: expected one of {}",
                    all.join(", ")
                )
            })
    }
}

/// One probe: who sends what to whom, over which family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct ProbeSpec {
    pub kind: ProbeKind,
    pub from: HostId,
    pub to: HostId,
    #[serde(serialize_with = "ser_family")]
    pub family: Family,
    /// The destination port (TCP kinds), or the well-known port of the kind.
    pub port: Option<u16>,
    /// `ssh-limit` only: the new connections the policy allows in the window
    /// (`ssh.rate_limit`); the probe opens one more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

fn ser_family<S: serde::Serializer>(f: &Family, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(f.name())
}

impl ProbeSpec {
    /// Whether the probe comes from or goes to `host`.
    pub fn involves(&self, host: HostId) -> bool {
        self.from == host || self.to == host
    }

    /// A short label for tables: `ssh`, `tcp/8443`, `dns-udp`.
    pub fn service(&self) -> String {
        match (self.kind.needs_port(), self.port, self.count) {
            (true, Some(p), _) => format!("{}/{p}", self.kind),
            (false, _, Some(n)) => format!("{}#{}", self.kind, n + 1),
            _ => self.kind.to_string(),
        }
    }
}

/// The outcome a probe must observe; the words of [`Outcome::word`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    Ok,
    Refused,
    NoAnswer,
    Failed,
}

impl Expect {
    pub fn word(self) -> &'static str {
        match self {
            Expect::Ok => "ok",
            Expect::Refused => "refused",
            Expect::NoAnswer => "no-answer",
            Expect::Failed => "failed",
        }
    }

    pub fn matches(self, outcome: &Outcome) -> bool {
        self.word() == outcome.word()
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl FromStr for Expect {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ok" => Ok(Expect::Ok),
            "refused" => Ok(Expect::Refused),
            "no-answer" => Ok(Expect::NoAnswer),
            "failed" => Ok(Expect::Failed),
            other => Err(format!(
                "unknown outcome `{other}`: expected ok, refused, no-answer or failed"
            )),
        }
    }
}

/// The rule, or chain policy, whose packet counter must rise for a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CountedBy {
    /// `INPUT policy`: the chain's default policy.
    Policy(Chain),
    /// `INPUT#3`: the third rule of INPUT, as `iptables --line-numbers` numbers it
    /// (for rulesets without comments, such as the seed's own).
    Position(Chain, usize),
    /// `INPUT: loopback` or just `loopback`: every rule whose comment begins with
    /// this text (in that chain, or in any chain), so a scenario can name a rule
    /// by the first words of its comment.
    Comment(Option<Chain>, String),
    /// `any DROP`: any DROP rule or DROP chain policy (for hand-written rulesets,
    /// whose rules carry no portcullis comments).
    AnyDrop,
}

pub fn parse_chain(s: &str) -> Option<Chain> {
    Chain::ALL.into_iter().find(|c| c.name() == s)
}

impl FromStr for CountedBy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty counted_by: name a rule comment or `INPUT policy`".into());
        }
        if s == "any DROP" {
            return Ok(CountedBy::AnyDrop);
        }
        if let Some(chain) = s.strip_suffix(" policy").and_then(parse_chain) {
            return Ok(CountedBy::Policy(chain));
        }
        if let Some((c, n)) = s.split_once('#') {
            if let Some(chain) = parse_chain(c.trim()) {
                let n: usize = n.trim().parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    format!("`{s}`: expected CHAIN#N with N a rule number from 1")
                })?;
                return Ok(CountedBy::Position(chain, n));
            }
        }
        if let Some((c, comment)) = s.split_once(':') {
            if let Some(chain) = parse_chain(c.trim()) {
                return Ok(CountedBy::Comment(Some(chain), comment.trim().to_owned()));
            }
        }
        Ok(CountedBy::Comment(None, s.to_owned()))
    }
}

/// The text of the harness [`Selector`](portcullis_harness::Selector) it maps
/// to (`INPUT policy`, `INPUT#3`, `INPUT: loopback`, `loopback`, `any DROP`).
impl fmt::Display for CountedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&super::counters::selector(self), f)
    }
}

impl serde::Serialize for CountedBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A promise: this probe must observe this outcome, counted by this rule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Expectation {
    pub probe: ProbeSpec,
    pub expect: Expect,
    pub counted_by: Option<CountedBy>,
    /// Why the policy promises this (shown in the matrix and in failures).
    pub why: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_by_forms_round_trip() {
        for (text, want) in [
            ("INPUT policy", CountedBy::Policy(Chain::Input)),
            ("FORWARD policy", CountedBy::Policy(Chain::Forward)),
            ("INPUT#2", CountedBy::Position(Chain::Input, 2)),
            ("any DROP", CountedBy::AnyDrop),
            (
                "OUTPUT: loopback",
                CountedBy::Comment(Some(Chain::Output), "loopback".into()),
            ),
            (
                "[malicious packet patterns] SYN+FIN",
                CountedBy::Comment(None, "[malicious packet patterns] SYN+FIN".into()),
            ),
        ] {
            let got: CountedBy = text.parse().unwrap();
            assert_eq!(got, want, "{text}");
            assert_eq!(got.to_string(), text);
        }
        assert!("INPUT#0".parse::<CountedBy>().is_err());
        assert!("".parse::<CountedBy>().is_err());
    }

    #[test]
    fn kinds_and_hosts_parse_their_names() {
        for k in ProbeKind::ALL {
            assert_eq!(k.name().parse::<ProbeKind>(), Ok(k));
        }
        for h in HOSTS {
            assert_eq!(parse_host(h.name()), Ok(h));
        }
        assert!(parse_host("router").unwrap_err().contains("inner"));
        assert!("smtp".parse::<ProbeKind>().unwrap_err().contains("dns-udp"));
    }
}
