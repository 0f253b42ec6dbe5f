//! The policy: a small TOML file saying who may reach the host and where it may go.
//!
//! `Policy::parse` is the only way in: it deserializes with `deny_unknown_fields`
//! and validates, so a `Policy` value is always renderable. Every error is one
//! line naming the file, the line, the dotted key and what was expected:
//!
//! ```text
//! policy.toml:12: outbound.allow[1].port: expected a port 1-65535 or a range "a:b" with a <= b, found "90:80"
//! ```
//!
//! It refuses what iptables would silently change: a CIDR with host bits set
//! (iptables widens `192.0.2.7/24` to the subnet; the error offers both
//! spellings), comments the kernel would cut (over 255 bytes) or that would end
//! the rule line (control characters), and IPv6 addresses in a policy whose
//! `ipv6.mode = "deny"` drops them. Absent keys take their defaults: outbound and
//! inbound switches off, hardening on, `ipv6.mode = "mirror"`, `ssh.port = 22`,
//! no `ssh.rate_limit`, `logging.dropped = "off"`.

use std::path::Path;

use ipnet::IpNet;

/// The embedded default policy: the seed walk-through's final ruleset with its gaps
/// closed. Also shipped as `examples/seed.toml` (a test keeps the two identical).
pub const DEFAULT_POLICY: &str = include_str!("default.toml");

/// A validated policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub ssh: Ssh,
    pub outbound: Outbound,
    pub inbound: Inbound,
    pub hardening: Hardening,
    pub ipv6: Ipv6,
    pub logging: Logging,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssh {
    pub port: u16,
    /// Who may open SSH sessions; both families. Empty: nobody (render allows it,
    /// `apply` and `install` refuse it).
    pub allow_from: Vec<IpNet>,
    /// `ssh.rate_limit = "6/60s"`: at most 6 new connections per 60 s from one
    /// source address; the next one in the window is dropped (ufw's `limit`).
    /// `None`: no limit (the key is absent).
    pub rate_limit: Option<RateLimit>,
}

/// At most `connections` new SSH connections from one source address within
/// `seconds`; the next one is dropped, and so is every further attempt while the
/// window still holds `connections` of them (attempts count, as with ufw).
///
/// Rendered with the `recent` match (ufw's choice, one list per source address,
/// named [`RateLimit::LIST`]): a rule before the SSH allow notes every new
/// connection (`--set`) and drops it when the list holds more than `connections`
/// within `seconds` (`--update --hitcount connections+1`). `recent` keeps the
/// last 20 timestamps per address (the kernel's `ip_pkt_list_tot`), so
/// `connections` is at most 19.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub connections: u32,
    pub seconds: u32,
}

impl RateLimit {
    /// The name of the kernel's `recent` list (`/proc/net/xt_recent/NAME`).
    pub const LIST: &'static str = "portcullis-ssh";
    /// The most `connections` the kernel's `recent` match can count (its
    /// `ip_pkt_list_tot` is 20 by default, and the hit count includes the
    /// connection being judged).
    pub const MAX_CONNECTIONS: u32 = 19;
    /// The longest window accepted: a day.
    pub const MAX_SECONDS: u32 = 86_400;
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}s", self.connections, self.seconds)
    }
}

/// `[logging]`: what the kernel log hears about.
///
/// `dropped = "limited"` (ufw's `logging on`, firewalld's `LogDenied`) puts a `LOG`
/// rule at the end of INPUT, OUTPUT and FORWARD of each rendered family, so every
/// packet the chain's DROP policy is about to drop is logged first, rate limited
/// to 3 a minute with a burst of 10 (ufw's numbers) so a flood cannot fill the
/// log. The log prefixes are `portcullis-drop-in: `, `portcullis-drop-out: ` and
/// `portcullis-drop-fwd: `. Packets dropped by an explicit rule (malicious flags,
/// INVALID, the SSH rate limit) are not logged: they never reach the end of the
/// chain. `"off"` (the default) renders nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Logging {
    pub dropped: LogDropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogDropped {
    #[default]
    Off,
    /// A rate-limited `LOG` rule before each DROP policy.
    Limited,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    pub dns: bool,
    pub http: bool,
    pub https: bool,
    pub icmp: bool,
    pub allow: Vec<Allow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub icmp: bool,
    pub allow: Vec<Allow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    pub loopback: bool,
    pub drop_invalid: bool,
    pub drop_malicious_flags: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6 {
    pub mode: Ipv6Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv6Mode {
    /// The same intent for IPv6, plus the RFC 4890 ICMPv6 baseline.
    Mirror,
    /// Policies DROP, loopback alone allowed.
    Deny,
    /// Render nothing for IPv6.
    Untouched,
}

/// One `[[outbound.allow]]` or `[[inbound.allow]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    pub proto: Proto,
    pub ports: Ports,
    /// The remote peers (`to` outbound, `from` inbound); empty means anywhere.
    pub peers: Vec<IpNet>,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

/// A port or an inclusive range `a:b` with `a <= b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    One(u16),
    Range(u16, u16),
}

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text is not a valid policy: one line naming the file, line, key and what
    /// was expected, e.g. `policy.toml:12: outbound.allow[1].port: expected ...`.
    #[error("{0}")]
    Invalid(Invalid),
    #[error("cannot read policy {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Where and why a policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The file (or `<embedded default>`, `<stdin>`) the text came from.
    pub origin: String,
    /// 1-based line of the offending key or value, when the parser knows it.
    pub line: Option<usize>,
    /// The dotted key path (`outbound.allow[1].port`), when there is one.
    pub key: Option<String>,
    /// What was expected and what was found; one line, lowercase.
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The longest comment the kernel keeps: `XT_MAX_COMMENT_LEN` is 256 bytes including
/// the terminating NUL. A 256-byte comment passes `iptables-restore --test` and is
/// then silently cut to 255 (measured with both backends), so 255 is the limit.
pub const MAX_COMMENT_BYTES: usize = 255;

impl Policy {
    /// The embedded default policy.
    pub fn embedded_default() -> Policy {
        Policy::parse(DEFAULT_POLICY, "<embedded default>")
            .expect("the embedded default policy is valid (tested)")
    }

    /// Read and validate the policy at `path`.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Policy::parse(&text, &path.display().to_string())
    }

    /// The policy at `path`, or the embedded default when `None`.
    pub fn load_or_default(path: Option<&Path>) -> Result<Policy, PolicyError> {
        match path {
            Some(p) => Policy::load(p),
            None => Ok(Policy::embedded_default()),
        }
    }

    /// Parse and validate policy text; `origin` names it in errors (a path).
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        raw::parse(text, origin)
    }
}

/// Parse a CIDR (`192.0.2.0/24`, `2001:db8::/32`) or a bare address (a host: `/32`
/// or `/128`). Refuses host bits under the prefix (`192.0.2.7/24`): iptables would
/// silently widen that to the whole subnet, and on a firewall the difference between
/// "this host" and "this subnet" is the one the user must decide, so the error says
/// both spellings instead of guessing.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    use std::net::IpAddr;
    let expected = "expected an IPv4 or IPv6 address or CIDR such as 192.0.2.0/24 or 2001:db8::/32";
    let Some((addr, prefix)) = s.split_once('/') else {
        return match s.parse::<IpAddr>() {
            Ok(a) => Ok(IpNet::from(a)),
            Err(_) => Err(format!("{expected}, found {s:?}")),
        };
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{expected}, found {s:?}"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let fam = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
    let prefix: u8 = match prefix.parse::<u8>() {
        Ok(p) if p <= max && !prefix.starts_with('+') => p,
        _ => {
            return Err(format!(
                "expected an {fam} prefix length 0-{max}, found {s:?}"
            ));
        }
    };
    let net = IpNet::new(addr, prefix).map_err(|_| format!("{expected}, found {s:?}"))?;
    if net.trunc() != net {
        return Err(format!(
            "host bits set in {s:?}: write {:?} for the subnet or \"{addr}/{max}\" for the host",
            net.trunc().to_string()
        ));
    }
    Ok(net)
}

/// The serde shape of the file, with spans, and the validation that turns it into a
/// `Policy`. Serde does the structure (`deny_unknown_fields`, types); this module
/// does the values, and turns every error into one line with the line number and
/// the dotted key path.
mod raw {
    use std::ops::Range;

    use serde::Deserialize;
    use toml::Spanned;

    use super::*;

    type S<T> = Spanned<T>;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        ssh: Option<RawSsh>,
        outbound: Option<RawOutbound>,
        inbound: Option<RawInbound>,
        hardening: Option<RawHardening>,
        ipv6: Option<RawIpv6>,
        logging: Option<RawLogging>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawSsh {
        port: Option<S<i64>>,
        allow_from: Option<S<Vec<S<String>>>>,
        rate_limit: Option<S<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawOutbound {
        dns: Option<bool>,
        http: Option<bool>,
        https: Option<bool>,
        icmp: Option<bool>,
        allow: Option<Vec<S<RawOutAllow>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawInbound {
        icmp: Option<bool>,
        allow: Option<Vec<S<RawInAllow>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawOutAllow {
        proto: S<String>,
        port: S<toml::Value>,
        to: Option<S<Vec<S<String>>>>,
        comment: Option<S<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawInAllow {
        proto: S<String>,
        port: S<toml::Value>,
        from: Option<S<Vec<S<String>>>>,
        comment: Option<S<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawHardening {
        loopback: Option<bool>,
        drop_invalid: Option<bool>,
        drop_malicious_flags: Option<bool>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawIpv6 {
        mode: Option<S<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawLogging {
        dropped: Option<S<String>>,
    }

    struct Ctx<'a> {
        text: &'a str,
        origin: &'a str,
    }

    impl Ctx<'_> {
        fn line(&self, offset: usize) -> usize {
            let end = offset.min(self.text.len());
            // A span may end inside a multi-byte character only if the parser is
            // wrong; count bytes, which never panics.
            self.text.as_bytes()[..end]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1
        }

        fn err(&self, span: Range<usize>, key: impl Into<String>, message: String) -> PolicyError {
            PolicyError::Invalid(Invalid {
                origin: self.origin.to_owned(),
                line: Some(self.line(span.start)),
                key: Some(key.into()),
                message,
            })
        }
    }

    pub(super) fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let cx = Ctx { text, origin };
        let file: File = toml::from_str(text).map_err(|e| serde_error(&cx, &e))?;
        validate(&cx, file)
    }

    /// One line from a toml/serde error: the line from its span, the key path found
    /// by walking the parsed document to that span, and serde's wording turned
    /// around into "expected X, found Y".
    fn serde_error(cx: &Ctx<'_>, e: &toml::de::Error) -> PolicyError {
        let span = e.span();
        let line = span.as_ref().map(|s| cx.line(s.start));
        let raw = e.message().trim();
        // Parse errors (syntax, duplicate keys) come from the parser, before serde
        // sees a key; the document does not parse, so there is no path to find.
        let doc = toml::de::DeTable::parse(cx.text);
        let (key, message) = match (&doc, &span) {
            (Ok(doc), Some(span)) => {
                let mut path = Vec::new();
                locate(doc.get_ref(), span.start, &mut path);
                let key = join(&path);
                let mut message = reword(raw);
                // `ssh.port` is read as an integer; say what kind of integer.
                if key.as_deref() == Some("ssh.port") {
                    message = message.replacen("expected an integer", "expected a port 1-65535", 1);
                }
                // `[outbound.allow]` (one bracket) makes a table, not an entry.
                if let Some(k) = key.as_deref().filter(|k| k.ends_with(".allow")) {
                    if message == "expected an array, found a table" {
                        message = format!(
                            "expected an array of tables: write [[{k}]], with double brackets, above each entry"
                        );
                    }
                }
                (key, message)
            }
            (Err(_), Some(span)) if raw.starts_with("duplicate key") => {
                let k = cx.text.get(span.clone()).unwrap_or("").trim();
                (
                    None,
                    format!(
                        "duplicate key `{}`: each key may appear once per table",
                        k.trim_matches('"')
                    ),
                )
            }
            _ => (None, format!("invalid TOML: {}", one_line(raw))),
        };
        PolicyError::Invalid(Invalid {
            origin: cx.origin.to_owned(),
            line,
            key,
            message,
        })
    }

    enum Seg {
        Key(String),
        Index(usize),
    }

    fn join(path: &[Seg]) -> Option<String> {
        let mut s = String::new();
        for seg in path {
            match seg {
                Seg::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        (!s.is_empty()).then_some(s)
    }

    fn contains(span: &Range<usize>, pos: usize) -> bool {
        span.start <= pos && pos < span.end.max(span.start + 1)
    }

    /// The deepest key path whose key or value span covers `pos`. A table made by a
    /// header (`[ssh]`, `[[outbound.allow]]`) spans only its header, so the search
    /// goes into every table and array, not only the ones whose span covers `pos`.
    fn locate(table: &toml::de::DeTable<'_>, pos: usize, path: &mut Vec<Seg>) -> bool {
        for (k, v) in table {
            path.push(Seg::Key(k.get_ref().to_string()));
            if contains(&k.span(), pos) {
                return true;
            }
            if locate_value(v.get_ref(), pos, path) || contains(&v.span(), pos) {
                return true;
            }
            path.pop();
        }
        false
    }

    fn locate_value(v: &toml::de::DeValue<'_>, pos: usize, path: &mut Vec<Seg>) -> bool {
        match v {
            toml::de::DeValue::Table(t) => locate(t, pos, path),
            toml::de::DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    path.push(Seg::Index(i));
                    if locate_value(item.get_ref(), pos, path) || contains(&item.span(), pos) {
                        return true;
                    }
                    path.pop();
                }
                false
            }
            _ => false,
        }
    }

    fn one_line(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Serde says "invalid type: string \"yes\", expected a boolean" and "unknown
    /// field `x`, expected one of `a`, `b`"; say it the way the rest of the errors do.
    fn reword(raw: &str) -> String {
        let raw = one_line(raw);
        let plain = |s: &str| {
            s.replace('`', "")
                .replace("i64", "an integer")
                .replace("a sequence", "an array")
                .replace("struct RawSsh", "a table")
                .replace("struct RawOutbound", "a table")
                .replace("struct RawInbound", "a table")
                .replace("struct RawHardening", "a table")
                .replace("struct RawIpv6", "a table")
                .replace("struct RawLogging", "a table")
                .replace("struct RawOutAllow", "a table")
                .replace("struct RawInAllow", "a table")
                .replace("struct File", "a table")
                .replace("any valid TOML value", "a port or a range")
                .replace("map", "a table")
        };
        if let Some(rest) = raw.strip_prefix("invalid type: ") {
            if let Some((found, expected)) = rest.split_once(", expected ") {
                return format!("expected {}, found {}", plain(expected), plain(found));
            }
        }
        if let Some(rest) = raw.strip_prefix("unknown field ") {
            let expected = rest.split_once(", ").map(|(_, e)| e).unwrap_or("");
            return if expected.is_empty() {
                "unknown key".to_owned()
            } else {
                format!("unknown key, {}", plain(expected))
            };
        }
        if let Some(rest) = raw.strip_prefix("missing field ") {
            return format!("missing key {}", rest.replace('`', "\""));
        }
        plain(&raw)
    }

    fn validate(cx: &Ctx<'_>, f: File) -> Result<Policy, PolicyError> {
        let mode = match f.ipv6.and_then(|i| i.mode) {
            None => Ipv6Mode::Mirror,
            Some(m) => match m.get_ref().as_str() {
                "mirror" => Ipv6Mode::Mirror,
                "deny" => Ipv6Mode::Deny,
                "untouched" => Ipv6Mode::Untouched,
                other => {
                    return Err(cx.err(
                        m.span(),
                        "ipv6.mode",
                        format!("expected \"mirror\", \"deny\" or \"untouched\", found {other:?}"),
                    ));
                }
            },
        };

        let ssh = f.ssh.unwrap_or(RawSsh {
            port: None,
            allow_from: None,
            rate_limit: None,
        });
        let port = match ssh.port {
            None => 22,
            Some(p) => match u16::try_from(*p.get_ref()) {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(cx.err(
                        p.span(),
                        "ssh.port",
                        format!("expected a port 1-65535, found {}", p.get_ref()),
                    ));
                }
            },
        };
        let allow_from = match ssh.allow_from {
            None => Vec::new(),
            Some(list) => nets(cx, "ssh.allow_from", list, mode, true)?,
        };
        let rate_limit = match ssh.rate_limit {
            None => None,
            Some(r) => Some(rate(r.get_ref()).map_err(|m| cx.err(r.span(), "ssh.rate_limit", m))?),
        };
        let logging = match f.logging.and_then(|l| l.dropped) {
            None => Logging::default(),
            Some(d) => match d.get_ref().as_str() {
                "off" => Logging {
                    dropped: LogDropped::Off,
                },
                "limited" => Logging {
                    dropped: LogDropped::Limited,
                },
                other => {
                    return Err(cx.err(
                        d.span(),
                        "logging.dropped",
                        format!("expected \"off\" or \"limited\", found {other:?}"),
                    ));
                }
            },
        };

        let out = f.outbound.unwrap_or(RawOutbound {
            dns: None,
            http: None,
            https: None,
            icmp: None,
            allow: None,
        });
        let mut out_allow = Vec::new();
        for (i, a) in out.allow.unwrap_or_default().into_iter().enumerate() {
            let a = a.into_inner();
            out_allow.push(allow(
                cx,
                &format!("outbound.allow[{i}]"),
                (a.proto, a.port, a.comment),
                ("to", a.to),
                mode,
            )?);
        }
        let inb = f.inbound.unwrap_or(RawInbound {
            icmp: None,
            allow: None,
        });
        let mut in_allow = Vec::new();
        for (i, a) in inb.allow.unwrap_or_default().into_iter().enumerate() {
            let a = a.into_inner();
            in_allow.push(allow(
                cx,
                &format!("inbound.allow[{i}]"),
                (a.proto, a.port, a.comment),
                ("from", a.from),
                mode,
            )?);
        }
        let h = f.hardening.unwrap_or(RawHardening {
            loopback: None,
            drop_invalid: None,
            drop_malicious_flags: None,
        });

        Ok(Policy {
            ssh: Ssh {
                port,
                allow_from,
                rate_limit,
            },
            outbound: Outbound {
                dns: out.dns.unwrap_or(false),
                http: out.http.unwrap_or(false),
                https: out.https.unwrap_or(false),
                icmp: out.icmp.unwrap_or(false),
                allow: out_allow,
            },
            inbound: Inbound {
                icmp: inb.icmp.unwrap_or(false),
                allow: in_allow,
            },
            hardening: Hardening {
                loopback: h.loopback.unwrap_or(true),
                drop_invalid: h.drop_invalid.unwrap_or(true),
                drop_malicious_flags: h.drop_malicious_flags.unwrap_or(true),
            },
            ipv6: Ipv6 { mode },
            logging,
        })
    }

    /// `"6/60s"`: at most 6 new connections per 60 seconds (`"6/1m"` and
    /// `"6/1h"` say the window in minutes or hours).
    fn rate(s: &str) -> Result<RateLimit, String> {
        let expected = format!(
            "expected a rate such as \"6/60s\": 1-{} new connections per 1-{}s window (or m, h)",
            RateLimit::MAX_CONNECTIONS,
            RateLimit::MAX_SECONDS
        );
        let bad = || format!("{expected}, found {s:?}");
        let (n, window) = s.split_once('/').ok_or_else(bad)?;
        let digits = |t: &str| -> Option<u32> {
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse().ok())
                .flatten()
        };
        let connections = digits(n)
            .filter(|c| (1..=RateLimit::MAX_CONNECTIONS).contains(c))
            .ok_or_else(bad)?;
        let unit = match window.as_bytes().last() {
            Some(b's') => 1,
            Some(b'm') => 60,
            Some(b'h') => 3600,
            _ => return Err(bad()),
        };
        let seconds = digits(&window[..window.len() - 1])
            .and_then(|w| w.checked_mul(unit))
            .filter(|w| (1..=RateLimit::MAX_SECONDS).contains(w))
            .ok_or_else(bad)?;
        Ok(RateLimit {
            connections,
            seconds,
        })
    }

    /// A list of CIDRs. `may_be_empty`: `ssh.allow_from = []` means nobody, which
    /// is a valid (if useless) policy; an empty `to`/`from` would read as "nowhere"
    /// but the renderer treats a missing list as "anywhere", so it is refused.
    fn nets(
        cx: &Ctx<'_>,
        key: &str,
        list: S<Vec<S<String>>>,
        mode: Ipv6Mode,
        may_be_empty: bool,
    ) -> Result<Vec<IpNet>, PolicyError> {
        let span = list.span();
        let list = list.into_inner();
        if list.is_empty() && !may_be_empty {
            return Err(cx.err(
                span,
                key,
                "expected at least one CIDR; leave the key out to mean anywhere".to_owned(),
            ));
        }
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.into_iter().enumerate() {
            let k = format!("{key}[{i}]");
            let net = parse_net(s.get_ref()).map_err(|m| cx.err(s.span(), &k, m))?;
            if net.addr().is_ipv6() && mode == Ipv6Mode::Deny {
                return Err(cx.err(
                    s.span(),
                    &k,
                    format!(
                        "{net} is IPv6 but ipv6.mode is \"deny\", which drops all IPv6: \
                         remove it or set ipv6.mode = \"mirror\""
                    ),
                ));
            }
            out.push(net);
        }
        Ok(out)
    }

    type Common = (S<String>, S<toml::Value>, Option<S<String>>);

    fn allow(
        cx: &Ctx<'_>,
        key: &str,
        (proto, port, comment): Common,
        (peer_key, peers): (&str, Option<S<Vec<S<String>>>>),
        mode: Ipv6Mode,
    ) -> Result<Allow, PolicyError> {
        let proto = match proto.get_ref().as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => {
                return Err(cx.err(
                    proto.span(),
                    format!("{key}.proto"),
                    format!("expected \"tcp\" or \"udp\", found {other:?}"),
                ));
            }
        };
        let ports =
            ports(port.get_ref()).map_err(|m| cx.err(port.span(), format!("{key}.port"), m))?;
        let peers = match peers {
            None => Vec::new(),
            Some(list) => nets(cx, &format!("{key}.{peer_key}"), list, mode, false)?,
        };
        let comment = match comment {
            None => None,
            Some(c) => Some(
                check_comment(c.get_ref())
                    .map_err(|m| cx.err(c.span(), format!("{key}.comment"), m))?
                    .to_owned(),
            ),
        };
        Ok(Allow {
            proto,
            ports,
            peers,
            comment,
        })
    }

    fn ports(v: &toml::Value) -> Result<Ports, String> {
        const EXPECTED: &str = "expected a port 1-65535 or a range \"a:b\" with a <= b";
        let one = |s: &str| s.parse::<u16>().ok().filter(|&p| p > 0);
        match v {
            toml::Value::Integer(n) => match u16::try_from(*n) {
                Ok(p) if p > 0 => Ok(Ports::One(p)),
                _ => Err(format!("{EXPECTED}, found {n}")),
            },
            toml::Value::String(s) => {
                if let Some((a, b)) = s.split_once(':') {
                    match (one(a), one(b)) {
                        (Some(a), Some(b)) if a < b => Ok(Ports::Range(a, b)),
                        (Some(a), Some(b)) if a == b => Ok(Ports::One(a)),
                        _ => Err(format!("{EXPECTED}, found {s:?}")),
                    }
                } else {
                    one(s)
                        .map(Ports::One)
                        .ok_or_else(|| format!("{EXPECTED}, found {s:?}"))
                }
            }
            other => Err(format!("{EXPECTED}, found {} {other}", other.type_str())),
        }
    }
}

/// A comment as iptables-restore will read it back: not empty, no control
/// characters (a newline would end the rule line), at most `MAX_COMMENT_BYTES`.
/// Quotes and backslashes are fine: `rule::quote_comment` escapes them and both
/// backends read them back literally (checked in a namespace with iptables -L).
pub fn check_comment(c: &str) -> Result<&str, String> {
    if c.is_empty() {
        return Err("expected a non-empty comment; leave the key out for none".to_owned());
    }
    if let Some((i, ch)) = c.char_indices().find(|(_, ch)| ch.is_control()) {
        return Err(format!(
            "expected no control characters (newline, tab, ...), found U+{:04X} at byte {i}",
            ch as u32
        ));
    }
    if c.len() > MAX_COMMENT_BYTES {
        return Err(format!(
            "expected at most {MAX_COMMENT_BYTES} bytes (the kernel keeps no more), found {}",
            c.len()
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Result<Option<RateLimit>, String> {
        Policy::parse(
            &format!("[ssh]\nallow_from = [\"192.0.2.0/24\"]\nrate_limit = {s:?}\n"),
            "t",
        )
        .map(|p| p.ssh.rate_limit)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn rate_limits_parse_in_seconds_minutes_or_hours() {
        let r = |connections, seconds| {
            Ok(Some(RateLimit {
                connections,
                seconds,
            }))
        };
        assert_eq!(rate("6/60s"), r(6, 60));
        assert_eq!(rate("6/1m"), r(6, 60));
        assert_eq!(rate("19/24h"), r(19, 86_400));
        assert_eq!(rate("1/1s"), r(1, 1));
        assert_eq!(rate("6/60s").unwrap().unwrap().to_string(), "6/60s");
        for bad in [
            "0/60s",
            "20/60s",
            "6/0s",
            "6/86401s",
            "6/25h",
            "6/60",
            "6",
            "/60s",
            "6/s",
            "+6/60s",
            "6/-1s",
            "6/60S",
            " 6/60s",
            "6/4294967296s",
        ] {
            let e = rate(bad).unwrap_err();
            assert!(
                e.starts_with("t:3: ssh.rate_limit: expected a rate such as \"6/60s\""),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            Policy::parse("", "t").unwrap().ssh.rate_limit,
            None,
            "absent: no limit"
        );
    }

    #[test]
    fn logging_is_off_unless_limited() {
        let p = |t: &str| Policy::parse(t, "t").map(|p| p.logging.dropped);
        assert_eq!(p("").unwrap(), LogDropped::Off);
        assert_eq!(p("[logging]\n").unwrap(), LogDropped::Off);
        assert_eq!(
            p("[logging]\ndropped = \"off\"\n").unwrap(),
            LogDropped::Off
        );
        assert_eq!(
            p("[logging]\ndropped = \"limited\"\n").unwrap(),
            LogDropped::Limited
        );
        assert_eq!(
            p("[logging]\nlevel = 4\n").unwrap_err().to_string(),
            "t:2: logging.level: unknown key, expected dropped"
        );
    }
}
