//! A rule is a value. This is the only place that knows iptables-restore syntax.

use std::fmt::{self, Write as _};

use ipnet::IpNet;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    Input,
    Forward,
    Output,
}

impl Chain {
    pub const ALL: [Chain; 3] = [Chain::Input, Chain::Forward, Chain::Output];

    pub fn name(self) -> &'static str {
        match self {
            Chain::Input => "INPUT",
            Chain::Forward => "FORWARD",
            Chain::Output => "OUTPUT",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Accept,
    Drop,
    /// `-j LOG --log-prefix PREFIX`: log the packet to the kernel log and go on
    /// to the next rule (not a verdict, so never a chain policy).
    Log(&'static str),
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Accept => "ACCEPT",
            Target::Drop => "DROP",
            Target::Log(_) => "LOG",
        }
    }
}

/// What a `recent` match does with the packet's source address in its list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recent {
    /// `--set`: note the packet (always matches).
    Set,
    /// `--update --seconds S --hitcount N`: matches when the list holds at least
    /// `N` notes of this source younger than `S` seconds (and then notes this one).
    Update { seconds: u32, hitcount: u32 },
}

/// The transport a match is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

impl L4 {
    fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
            L4::Icmp => "icmp",
            L4::Icmpv6 => "ipv6-icmp",
        }
    }
}

/// One match of a rule, in the order iptables-save prints them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Match {
    Source(IpNet),
    Destination(IpNet),
    InInterface(&'static str),
    OutInterface(&'static str),
    /// `-p PROTO` (with `-m PROTO` for tcp and udp, so the port and flag matches load).
    Proto(L4),
    /// `--dport` of the preceding tcp/udp match: a port or an inclusive range.
    DestPort(u16, u16),
    /// `--sport` of the preceding tcp/udp match.
    SourcePort(u16, u16),
    /// `--tcp-flags MASK COMP`, e.g. `FIN,SYN FIN,SYN`.
    TcpFlags(&'static str, &'static str),
    /// `! --syn`: any TCP segment that does not open a connection.
    NotSyn,
    /// `--syn`: a TCP segment that opens a connection (SYN without ACK, RST, FIN).
    Syn,
    IcmpType(u8),
    Icmpv6Type(u8),
    /// `-m hl --hl-eq N` (IPv6 hop limit).
    HopLimit(u8),
    /// `-m conntrack --ctstate STATES`.
    CtState(&'static str),
    /// `-m limit --limit N/min --limit-burst B`: a token bucket shared by every
    /// packet the rule sees.
    Limit {
        per_minute: u32,
        burst: u32,
    },
    /// `-m recent ... --name LIST --rsource`: one list of source addresses (with
    /// timestamps) per name, kept by the kernel per network namespace.
    Recent(Recent, &'static str),
    /// `-m set --match-set NAME src|dst`: the address is in the ipset `NAME`
    /// (xt_set, under both backends).
    Set(String, SetDir),
}

/// Which address of the packet a set match looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetDir {
    Src,
    Dst,
}

/// A rule: the chain it is appended to, what it matches, what it does, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: Chain,
    pub matches: Vec<Match>,
    pub target: Target,
    /// Why the rule exists; rendered as `-m comment --comment "..."`. Validated
    /// (no control characters, at most 256 bytes) before it gets here.
    pub comment: String,
}

impl Rule {
    pub fn new(chain: Chain, target: Target, comment: impl Into<String>) -> Rule {
        Rule {
            chain,
            matches: Vec::new(),
            target,
            comment: comment.into(),
        }
    }

    pub fn with(mut self, m: Match) -> Rule {
        self.matches.push(m);
        self
    }
}

/// A whole `*filter` table for one family: chain policies and rules in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub header: String,
    pub policies: [(Chain, Target); 3],
    pub rules: Vec<Rule>,
}

fn ports(lo: u16, hi: u16) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}:{hi}")
    }
}

/// Quote a comment for iptables-restore: inside double quotes, `\` and `"` are
/// escaped with a backslash, which iptables-restore reads back literally.
pub fn quote_comment(comment: &str) -> String {
    let mut out = String::with_capacity(comment.len() + 2);
    out.push('"');
    for c in comment.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = format!("-A {}", self.chain.name());
        for m in &self.matches {
            match m {
                Match::Source(net) => write!(line, " -s {net}")?,
                Match::Destination(net) => write!(line, " -d {net}")?,
                Match::InInterface(i) => write!(line, " -i {i}")?,
                Match::OutInterface(i) => write!(line, " -o {i}")?,
                Match::Proto(p) => {
                    write!(line, " -p {}", p.name())?;
                    if matches!(p, L4::Tcp | L4::Udp) {
                        write!(line, " -m {}", p.name())?;
                    }
                }
                Match::DestPort(lo, hi) => write!(line, " --dport {}", ports(*lo, *hi))?,
                Match::SourcePort(lo, hi) => write!(line, " --sport {}", ports(*lo, *hi))?,
                Match::TcpFlags(mask, comp) => write!(line, " --tcp-flags {mask} {comp}")?,
                Match::NotSyn => line.push_str(" ! --syn"),
                Match::Syn => line.push_str(" --syn"),
                Match::IcmpType(t) => write!(line, " -m icmp --icmp-type {t}")?,
                Match::Icmpv6Type(t) => write!(line, " -m icmp6 --icmpv6-type {t}")?,
                Match::HopLimit(n) => write!(line, " -m hl --hl-eq {n}")?,
                Match::CtState(s) => write!(line, " -m conntrack --ctstate {s}")?,
                Match::Limit { per_minute, burst } => write!(
                    line,
                    " -m limit --limit {per_minute}/min --limit-burst {burst}"
                )?,
                Match::Recent(Recent::Set, list) => {
                    write!(line, " -m recent --set --name {list} --rsource")?
                }
                Match::Recent(Recent::Update { seconds, hitcount }, list) => write!(
                    line,
                    " -m recent --update --seconds {seconds} --hitcount {hitcount} --name {list} --rsource"
                )?,
                Match::Set(name, dir) => {
                    let dir = match dir {
                        SetDir::Src => "src",
                        SetDir::Dst => "dst",
                    };
                    write!(line, " -m set --match-set {name} {dir}")?
                }
            }
        }
        if !self.comment.is_empty() {
            write!(
                line,
                " -m comment --comment {}",
                quote_comment(&self.comment)
            )?;
        }
        write!(line, " -j {}", self.target.name())?;
        if let Target::Log(prefix) = self.target {
            write!(line, " --log-prefix {}", quote_comment(prefix))?;
        }
        f.write_str(&line)
    }
}

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in self.header.lines() {
            writeln!(f, "# {line}")?;
        }
        writeln!(f, "*filter")?;
        for (chain, target) in &self.policies {
            writeln!(f, ":{} {} [0:0]", chain.name(), target.name())?;
        }
        for rule in &self.rules {
            writeln!(f, "{rule}")?;
        }
        writeln!(f, "COMMIT")
    }
}

/// One ipset `hash:net` set: its name (`pc-...`, at most 31 bytes), family and
/// members. It writes the rendered sets' `ipset restore` text (`apply::sets` adds
/// the `swap` and `destroy` lines of a live load).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    pub name: String,
    /// `inet` for IPv4, `inet6` for IPv6.
    pub v6: bool,
    /// Folded CIDRs of the set's family, none of prefix length 0 (`hash:net`
    /// refuses it).
    pub nets: Vec<IpNet>,
}

impl IpSet {
    /// The hash size asked for: the member count rounded up to a power of two,
    /// at least 64 (ipset's minimum), so buckets stay short without resizing.
    pub fn hashsize(&self) -> usize {
        self.nets.len().next_power_of_two().max(64)
    }

    /// The most members the set may hold: at least ipset's default 65536, and
    /// twice the members, so a reload of a grown list fits.
    pub fn maxelem(&self) -> usize {
        (self.nets.len() * 2).next_power_of_two().max(65536)
    }

    /// What follows `create NAME`: the type and its options
    /// (`hash:net family inet hashsize 64 maxelem 65536`).
    pub fn options(&self) -> String {
        format!(
            "hash:net family {} hashsize {} maxelem {}",
            if self.v6 { "inet6" } else { "inet" },
            self.hashsize(),
            self.maxelem()
        )
    }

    /// `create` then one `add` per member, for `ipset restore`.
    pub fn restore_text(&self, out: &mut String) {
        let name = &self.name;
        let _ = writeln!(out, "create {name} {}", self.options());
        for net in &self.nets {
            let _ = writeln!(out, "add {name} {net}");
        }
    }
}
