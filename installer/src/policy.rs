//! The policy: a small TOML file saying who may reach the host and where it may go.
//!
//! `Policy::parse` is the only way in: it deserializes with `deny_unknown_fields`
//! and validates, so a `Policy` value is always renderable. It reports every
//! error of a file at once (serde stops at the first, so each key and each allow
//! entry is also tried alone), each one line naming the file, the line, the
//! dotted key and what was expected:
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
//! no `ssh.rate_limit`, `logging.dropped = "off"`, no `[[blocklist]]`.
//!
//! A `[[blocklist]]` `file` is the one input read beyond the text: relative to
//! the policy file's directory, capped, each bad line an error naming that file
//! and line (see [`Blocklist`]).

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
    /// `[[blocklist]]`: addresses dropped before any allow, in file order.
    pub blocklists: Vec<Blocklist>,
    /// The top-level tables the file wrote (`ssh`, `outbound`, ...), sorted: a
    /// section written with every switch off is meant, a missing one may not be
    /// (`lint` tells them apart).
    pub written: Vec<String>,
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
    /// `override_ssh = true` (inbound only): the entry may open the SSH port wider
    /// than `ssh.allow_from`, on purpose. Without it `lint` flags such an entry and
    /// `apply`/`install` refuse it.
    pub override_ssh: bool,
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

impl Ports {
    /// Whether `port` is this port or within this range.
    pub fn covers(self, port: u16) -> bool {
        match self {
            Ports::One(n) => n == port,
            Ports::Range(a, b) => (a..=b).contains(&port),
        }
    }
}

/// An address list (`ssh.allow_from`, an allow entry's `from`/`to`) with more
/// than this many CIDRs of one family renders as one ipset `hash:net` set matched
/// with `-m set --match-set`, instead of one rule per CIDR; shorter lists stay
/// plain rules (their golden files and counters read better). Every blocklist is
/// a set, whatever its length. A packet walks a list of plain rules one by one (10,000
/// source rules cost a new connection 2.5-7x the no-list time, measured), a set is
/// one hash lookup.
pub const SET_THRESHOLD: usize = 8;

/// The largest blocklist file read: FireHOL's level 1-4 lists and Spamhaus DROP are
/// a few MiB; a country list of every prefix stays well under this.
pub use crate::input::BLOCKLIST_MAX_BYTES;

/// One `[[blocklist]]` entry: addresses dropped in `direction`, counted by their
/// own rule (comment [`Blocklist::comment`]), rendered right after the replies of
/// accepted connections, so before every allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocklist {
    /// `file = "PATH"` as resolved (relative paths are read from the policy
    /// file's directory); `None` for inline `cidrs`.
    pub file: Option<String>,
    pub direction: Direction,
    /// The CIDRs, folded: sorted, each once, none inside another, adjacent ones
    /// merged (`IpNet::aggregate`). Never empty.
    pub nets: Vec<IpNet>,
}

impl Blocklist {
    /// The comment of the rule of blocklist `index` (its prefix, [`BLOCKLIST_COMMENT`],
    /// is what a `counted_by` names). A file is named by its own name only, so
    /// the rules do not depend on where the policy was read from (the copy
    /// `install` leaves in a root keeps each list beside it under that name).
    pub fn comment(&self, index: usize) -> String {
        let from = match &self.file {
            Some(f) => format!(
                "from {}",
                std::path::Path::new(f)
                    .file_name()
                    .map_or_else(|| f.clone(), |n| n.to_string_lossy().into_owned())
            ),
            None => "inline".to_owned(),
        };
        let mut c = format!("{BLOCKLIST_COMMENT}[{index}] ({from})");
        if c.len() > MAX_COMMENT_BYTES {
            c = format!("{BLOCKLIST_COMMENT}[{index}]");
        }
        c
    }
}

/// The comment of every blocklist rule begins with this.
pub const BLOCKLIST_COMMENT: &str = "blocklist";

/// Which way a blocklist drops: sources of packets coming in, destinations of
/// packets going out, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
    Both,
}

impl Direction {
    pub fn inbound(self) -> bool {
        matches!(self, Direction::In | Direction::Both)
    }
    pub fn outbound(self) -> bool {
        matches!(self, Direction::Out | Direction::Both)
    }
}

/// A policy read from a file, with its text.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub policy: Policy,
    pub text: String,
    /// The path, as errors and records name it.
    pub origin: String,
    /// Why users other than root could have written the file, if they could.
    pub writable_by_others: Option<String>,
}

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The text is not a valid policy: every error found, one line each (sorted by
    /// line), naming the file, line, key and what was expected, e.g.
    /// `policy.toml:12: outbound.allow[1].port: expected ...`. Never empty.
    #[error("{}", lines(.0))]
    Invalid(Vec<Invalid>),
    #[error("cannot read policy {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn lines(errors: &[Invalid]) -> String {
    errors
        .iter()
        .map(Invalid::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl PolicyError {
    /// The validation errors, one per problem; empty for a read error.
    pub fn invalid(&self) -> &[Invalid] {
        match self {
            PolicyError::Invalid(v) => v,
            PolicyError::Read { .. } => &[],
        }
    }
}

/// Where and why a policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
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
        Policy::read(path).map(|l| l.policy)
    }

    /// Read and validate the policy at `path`, keeping its text and whether other
    /// users could have written it. Refuses a FIFO, a device or anything but a
    /// regular file, and a file over [`crate::input::POLICY_MAX_BYTES`].
    pub fn read(path: &Path) -> Result<Loaded, PolicyError> {
        let input =
            crate::input::read_capped(path, crate::input::POLICY_MAX_BYTES).map_err(|source| {
                PolicyError::Read {
                    path: path.display().to_string(),
                    source,
                }
            })?;
        let origin = path.display().to_string();
        Ok(Loaded {
            policy: Policy::parse(&input.text, &origin)?,
            text: input.text,
            origin,
            writable_by_others: input.writable_by_others,
        })
    }

    /// Parse and validate policy text; `origin` names it in errors (a path).
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        raw::parse(text, origin)
    }

    /// Every key the file format accepts, dotted, sorted: `ssh.port`,
    /// `inbound.allow` (an array of tables) and `inbound.allow[].port` (a key of
    /// each entry). Read from the serde schema itself, so a key added to the
    /// format is listed without anyone remembering to (docs/policy.md is tested
    /// against it).
    pub fn schema_keys() -> Vec<String> {
        raw::schema_keys()
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
    use std::cell::RefCell;
    use std::ops::Range;

    use serde::Deserialize;
    use toml::Spanned;
    use toml::de::{DeArray, DeString, DeTable, DeValue};

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
        blocklist: Option<Vec<S<RawBlocklist>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawBlocklist {
        file: Option<S<String>>,
        cidrs: Option<S<Vec<S<String>>>>,
        direction: Option<S<String>>,
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
        override_ssh: Option<bool>,
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

    /// The keys of `File`, found by deserializing it from a tracer that answers
    /// every struct with all of its fields and records the path of each value.
    pub(super) fn schema_keys() -> Vec<String> {
        let keys = RefCell::new(Vec::new());
        File::deserialize(trace::Tracer {
            path: Some(String::new()),
            keys: &keys,
        })
        .expect("the tracer satisfies every field of the schema");
        let mut keys = keys.into_inner();
        keys.sort();
        keys.dedup();
        keys
    }

    mod trace {
        use std::cell::RefCell;

        use serde::de::value::{BorrowedStrDeserializer, Error};
        use serde::de::{self, DeserializeSeed, Visitor};

        /// A deserializer that makes up a value for every field. `path` is the
        /// dotted key of the value it stands for (`None`: not a key, such as the
        /// span bounds of a `Spanned`).
        pub(super) struct Tracer<'a> {
            pub(super) path: Option<String>,
            pub(super) keys: &'a RefCell<Vec<String>>,
        }

        impl Tracer<'_> {
            fn record(&self) {
                if let Some(p) = self.path.as_ref().filter(|p| !p.is_empty()) {
                    // An element of a list of values is its list's key.
                    if !p.ends_with("[]") {
                        self.keys.borrow_mut().push(p.clone());
                    }
                }
            }
        }

        impl<'de> de::Deserializer<'de> for Tracer<'_> {
            type Error = Error;

            fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
                self.record();
                v.visit_str("x")
            }
            fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
                self.record();
                v.visit_bool(false)
            }
            fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
                self.record();
                v.visit_i64(1)
            }
            fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
                self.record();
                v.visit_u64(0)
            }
            fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
                v.visit_some(self)
            }
            fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
                v.visit_unit()
            }
            fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
                self.record();
                let path = self.path.as_ref().map(|p| format!("{p}[]"));
                v.visit_seq(One(Some(Tracer {
                    path,
                    keys: self.keys,
                })))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                name: &'static str,
                fields: &'static [&'static str],
                v: V,
            ) -> Result<V::Value, Error> {
                v.visit_map(Fields {
                    fields,
                    i: 0,
                    // `toml::Spanned` is a struct of its bounds and its value.
                    spanned: name.starts_with("$__serde_spanned"),
                    path: self.path,
                    keys: self.keys,
                })
            }
            serde::forward_to_deserialize_any! {
                i8 i16 i32 i128 u8 u16 u32 u128 f32 f64 char str string bytes byte_buf
                unit unit_struct newtype_struct tuple tuple_struct map enum identifier
            }
        }

        struct One<'a>(Option<Tracer<'a>>);

        impl<'de> de::SeqAccess<'de> for One<'_> {
            type Error = Error;
            fn next_element_seed<T: DeserializeSeed<'de>>(
                &mut self,
                seed: T,
            ) -> Result<Option<T::Value>, Error> {
                self.0.take().map(|t| seed.deserialize(t)).transpose()
            }
        }

        struct Fields<'a> {
            fields: &'static [&'static str],
            i: usize,
            spanned: bool,
            path: Option<String>,
            keys: &'a RefCell<Vec<String>>,
        }

        impl<'de> de::MapAccess<'de> for Fields<'_> {
            type Error = Error;
            fn next_key_seed<K: DeserializeSeed<'de>>(
                &mut self,
                seed: K,
            ) -> Result<Option<K::Value>, Error> {
                match self.fields.get(self.i) {
                    Some(f) => seed.deserialize(BorrowedStrDeserializer::new(f)).map(Some),
                    None => Ok(None),
                }
            }
            fn next_value_seed<V: DeserializeSeed<'de>>(
                &mut self,
                seed: V,
            ) -> Result<V::Value, Error> {
                let f = self.fields[self.i];
                self.i += 1;
                let path = match &self.path {
                    Some(_) if self.spanned && !f.ends_with("value") => None,
                    Some(p) if self.spanned => Some(p.clone()),
                    Some(p) if p.is_empty() => Some(f.to_owned()),
                    Some(p) => Some(format!("{p}.{f}")),
                    None => None,
                };
                seed.deserialize(Tracer {
                    path,
                    keys: self.keys,
                })
            }
        }
    }

    struct Ctx<'a> {
        text: &'a str,
        origin: &'a str,
        /// Every error found so far; validation goes on past each one.
        errors: RefCell<Vec<Invalid>>,
        /// For `outbound` and `inbound`: the original index of each `allow` entry
        /// that survived `prune`, so keys name the entry the user wrote.
        kept: RefCell<Vec<(String, Vec<usize>)>>,
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

        fn err(&self, span: Range<usize>, key: impl Into<String>, message: String) {
            self.errors.borrow_mut().push(Invalid {
                origin: self.origin.to_owned(),
                line: Some(self.line(span.start)),
                key: Some(key.into()),
                message,
            });
        }

        /// The key of entry `i` of `section.allow` after pruning, as written.
        fn allow_key(&self, section: &str, i: usize) -> String {
            let original = self
                .kept
                .borrow()
                .iter()
                .find(|(s, _)| s == section)
                .and_then(|(_, v)| v.get(i).copied())
                .unwrap_or(i);
            format!("{section}.allow[{original}]")
        }
    }

    pub(super) fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let cx = Ctx {
            text,
            origin,
            errors: RefCell::new(Vec::new()),
            kept: RefCell::new(Vec::new()),
        };
        let (doc, syntax) = DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            // What the parser recovered is a guess: judge no value past a syntax
            // error, and keep the first error of each line (the rest of a line
            // after one mistake is mostly the same mistake seen again).
            let mut errors: Vec<Invalid> = syntax.iter().map(|e| serde_error(&cx, e)).collect();
            errors.dedup_by_key(|e| e.line);
            return Err(PolicyError::Invalid(errors));
        }
        let doc = prune(&cx, doc);
        let policy = match File::deserialize(toml::de::Deserializer::from(doc)) {
            Ok(file) => Some(validate(&cx, file)),
            Err(e) => {
                // `prune` tried each piece alone; the whole may still fail in a way
                // no piece does. Report it rather than guess.
                let e = serde_error(&cx, &e);
                cx.errors.borrow_mut().push(e);
                None
            }
        };
        let mut errors = cx.errors.into_inner();
        match policy {
            Some(p) if errors.is_empty() => Ok(p),
            _ => {
                errors.sort_by_key(|e| e.line);
                errors.dedup();
                Err(PolicyError::Invalid(errors))
            }
        }
    }

    /// Serde stops at the first error of a document. To report every one, try each
    /// piece alone (a top-level key, each key of a section, each `[[...allow]]`
    /// entry) as a one-piece document, record its error, and keep only the pieces
    /// that deserialize. Spans stay those of the original text, so errors name the
    /// right line and key.
    fn prune<'i>(cx: &Ctx<'_>, doc: Spanned<DeTable<'i>>) -> Spanned<DeTable<'i>> {
        let whole = doc.span();
        let alone = |table: DeTable<'i>| -> bool {
            match File::deserialize(toml::de::Deserializer::from(Spanned::new(
                whole.clone(),
                table,
            ))) {
                Ok(_) => true,
                Err(e) => {
                    let e = serde_error(cx, &e);
                    cx.errors.borrow_mut().push(e);
                    false
                }
            }
        };
        let one = |k: &Spanned<DeString<'i>>, v: Spanned<DeValue<'i>>| {
            let mut t = DeTable::new();
            t.insert(k.clone(), v);
            t
        };
        let mut out = DeTable::new();
        for (k, v) in doc.into_inner() {
            let span = v.span();
            let section = match v.into_inner() {
                DeValue::Table(t) => t,
                // Not a table (`ssh = 22`, or an unknown key): try it as it is.
                other => {
                    let v = Spanned::new(span, other);
                    if alone(one(&k, v.clone())) {
                        out.insert(k, v);
                    }
                    continue;
                }
            };
            // An unknown section: one error, not one per key inside it.
            if !alone(one(
                &k,
                Spanned::new(span.clone(), DeValue::Table(DeTable::new())),
            )) {
                continue;
            }
            let mut kept = DeTable::new();
            for (k2, v2) in section {
                let span2 = v2.span();
                match v2.into_inner() {
                    DeValue::Array(items) if k2.get_ref().as_ref() == "allow" => {
                        let mut arr = DeArray::new();
                        let mut idx = Vec::new();
                        for (i, item) in items.into_iter().enumerate() {
                            let mut single = DeArray::new();
                            single.push(item.clone());
                            let piece =
                                one(&k2, Spanned::new(span2.clone(), DeValue::Array(single)));
                            if alone(one(&k, Spanned::new(span.clone(), DeValue::Table(piece)))) {
                                arr.push(item);
                                idx.push(i);
                            }
                        }
                        cx.kept.borrow_mut().push((k.get_ref().to_string(), idx));
                        kept.insert(k2, Spanned::new(span2, DeValue::Array(arr)));
                    }
                    v2 => {
                        let v2 = Spanned::new(span2, v2);
                        let piece = one(&k2, v2.clone());
                        if alone(one(&k, Spanned::new(span.clone(), DeValue::Table(piece)))) {
                            kept.insert(k2, v2);
                        }
                    }
                }
            }
            out.insert(k, Spanned::new(span, DeValue::Table(kept)));
        }
        Spanned::new(whole, out)
    }

    /// One line from a toml/serde error: the line from its span, the key path found
    /// by walking the parsed document to that span, and serde's wording turned
    /// around into "expected X, found Y".
    fn serde_error(cx: &Ctx<'_>, e: &toml::de::Error) -> Invalid {
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
        Invalid {
            origin: cx.origin.to_owned(),
            line,
            key,
            message,
        }
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
                .replace("struct RawBlocklist", "a table")
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

    /// Turn the deserialized file into a `Policy`, recording every bad value in
    /// `cx` and going on with the default in its place (the result is thrown away
    /// when there is any error).
    fn validate(cx: &Ctx<'_>, f: File) -> Policy {
        let mut written: Vec<String> = [
            ("ssh", f.ssh.is_some()),
            ("outbound", f.outbound.is_some()),
            ("inbound", f.inbound.is_some()),
            ("hardening", f.hardening.is_some()),
            ("ipv6", f.ipv6.is_some()),
            ("logging", f.logging.is_some()),
            ("blocklist", f.blocklist.is_some()),
        ]
        .into_iter()
        .filter(|&(_, w)| w)
        .map(|(k, _)| k.to_owned())
        .collect();
        written.sort();
        let mode = match f.ipv6.and_then(|i| i.mode) {
            None => Ipv6Mode::Mirror,
            Some(m) => match m.get_ref().as_str() {
                "mirror" => Ipv6Mode::Mirror,
                "deny" => Ipv6Mode::Deny,
                "untouched" => Ipv6Mode::Untouched,
                other => {
                    cx.err(
                        m.span(),
                        "ipv6.mode",
                        format!("expected \"mirror\", \"deny\" or \"untouched\", found {other:?}"),
                    );
                    Ipv6Mode::Mirror
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
                    cx.err(
                        p.span(),
                        "ssh.port",
                        format!("expected a port 1-65535, found {}", p.get_ref()),
                    );
                    22
                }
            },
        };
        let allow_from = match ssh.allow_from {
            None => Vec::new(),
            Some(list) => nets(cx, "ssh.allow_from", list, mode, true),
        };
        let rate_limit = match ssh.rate_limit {
            None => None,
            Some(r) => match rate(r.get_ref()) {
                Ok(limit) => Some(limit),
                Err(m) => {
                    cx.err(r.span(), "ssh.rate_limit", m);
                    None
                }
            },
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
                    cx.err(
                        d.span(),
                        "logging.dropped",
                        format!("expected \"off\" or \"limited\", found {other:?}"),
                    );
                    Logging::default()
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
            out_allow.extend(allow(
                cx,
                &cx.allow_key("outbound", i),
                (a.proto, a.port, a.comment),
                ("to", a.to),
                mode,
            ));
        }
        let inb = f.inbound.unwrap_or(RawInbound {
            icmp: None,
            allow: None,
        });
        let mut in_allow = Vec::new();
        for (i, a) in inb.allow.unwrap_or_default().into_iter().enumerate() {
            let a = a.into_inner();
            let override_ssh = a.override_ssh.unwrap_or(false);
            in_allow.extend(
                allow(
                    cx,
                    &cx.allow_key("inbound", i),
                    (a.proto, a.port, a.comment),
                    ("from", a.from),
                    mode,
                )
                .map(|a| Allow { override_ssh, ..a }),
            );
        }
        let mut blocklists = Vec::new();
        for (i, b) in f.blocklist.unwrap_or_default().into_iter().enumerate() {
            let span = b.span();
            blocklists.extend(blocklist(cx, i, span, b.into_inner()));
        }
        let h = f.hardening.unwrap_or(RawHardening {
            loopback: None,
            drop_invalid: None,
            drop_malicious_flags: None,
        });

        Policy {
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
            blocklists,
            written,
        }
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

    /// A list of CIDRs; a bad one is recorded and left out. `may_be_empty`:
    /// `ssh.allow_from = []` means nobody, which is a valid (if useless) policy
    /// (`lint` warns); an empty `to`/`from` would read as "nowhere" but the
    /// renderer treats a missing list as "anywhere", so it is refused.
    fn nets(
        cx: &Ctx<'_>,
        key: &str,
        list: S<Vec<S<String>>>,
        mode: Ipv6Mode,
        may_be_empty: bool,
    ) -> Vec<IpNet> {
        let span = list.span();
        let list = list.into_inner();
        if list.is_empty() && !may_be_empty {
            cx.err(
                span,
                key,
                "expected at least one CIDR; leave the key out to mean anywhere".to_owned(),
            );
        }
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.into_iter().enumerate() {
            let k = format!("{key}[{i}]");
            let net = match parse_net(s.get_ref()) {
                Ok(net) => net,
                Err(m) => {
                    cx.err(s.span(), &k, m);
                    continue;
                }
            };
            if net.addr().is_ipv6() && mode == Ipv6Mode::Deny {
                cx.err(
                    s.span(),
                    &k,
                    format!(
                        "{net} is IPv6 but ipv6.mode is \"deny\", which drops all IPv6: \
                         remove it or set ipv6.mode = \"mirror\""
                    ),
                );
                continue;
            }
            out.push(net);
        }
        out
    }

    /// One `[[blocklist]]` entry, or `None` when it is bad (recorded). Exactly one
    /// of `file` and `cidrs`; the file is read here, capped at
    /// [`BLOCKLIST_MAX_BYTES`], each bad line an error naming the file and line.
    fn blocklist(cx: &Ctx<'_>, i: usize, span: Range<usize>, b: RawBlocklist) -> Option<Blocklist> {
        let key = format!("blocklist[{i}]");
        let direction = match b.direction {
            None => Some(Direction::Both),
            Some(d) => match d.get_ref().as_str() {
                "in" => Some(Direction::In),
                "out" => Some(Direction::Out),
                "both" => Some(Direction::Both),
                other => {
                    cx.err(
                        d.span(),
                        format!("{key}.direction"),
                        format!("expected \"in\", \"out\" or \"both\", found {other:?}"),
                    );
                    None
                }
            },
        };
        let (file, nets) = match (b.file, b.cidrs) {
            (Some(_), Some(_)) | (None, None) => {
                cx.err(
                    span,
                    key,
                    "expected exactly one of file = \"PATH\" and cidrs = [...]".to_owned(),
                );
                return None;
            }
            (None, Some(list)) => {
                let span = list.span();
                let nets = nets(cx, &format!("{key}.cidrs"), list, Ipv6Mode::Mirror, false);
                if nets.iter().any(|n| n.prefix_len() == 0) {
                    cx.err(span, format!("{key}.cidrs"), ANYWHERE.to_owned());
                    return None;
                }
                (None, nets)
            }
            (Some(path), None) => {
                let resolved = resolve(cx.origin, path.get_ref());
                match blocklist_file(&resolved) {
                    Ok(nets) => (Some(resolved.display().to_string()), nets),
                    Err(errors) => {
                        for (line, message) in errors {
                            let origin = resolved.display().to_string();
                            let e = match line {
                                Some(line) => Invalid {
                                    origin,
                                    line: Some(line),
                                    key: Some(format!("{key}.file")),
                                    message,
                                },
                                // The file as a whole (unreadable, empty): the
                                // policy line that names it.
                                None => Invalid {
                                    origin: cx.origin.to_owned(),
                                    line: Some(cx.line(path.span().start)),
                                    key: Some(format!("{key}.file")),
                                    message: format!("{}: {message}", resolved.display()),
                                },
                            };
                            cx.errors.borrow_mut().push(e);
                        }
                        return None;
                    }
                }
            }
        };
        Some(Blocklist {
            file,
            direction: direction?,
            nets: IpNet::aggregate(&nets),
        })
    }

    const ANYWHERE: &str = "a blocklist entry of prefix length 0 blocks everything: \
                            leave it out (the chain policies already drop what is not allowed)";

    /// A blocklist path as written: absolute, or relative to the policy file's
    /// directory (to the working directory for a policy not read from a file).
    fn resolve(origin: &str, path: &str) -> std::path::PathBuf {
        let p = Path::new(path);
        if p.is_absolute() || origin.starts_with('<') {
            return p.to_path_buf();
        }
        match Path::new(origin).parent() {
            Some(dir) => dir.join(p),
            None => p.to_path_buf(),
        }
    }

    /// A blocklist file: one CIDR or address per line; `#` and `;` start a comment
    /// (FireHOL's `.netset`/`.ipset` and Spamhaus DROP's `CIDR ; SBL123` lines);
    /// blank lines are skipped. Every bad line is one `(Some(line), message)`; a
    /// file that cannot be read or holds no address is one `(None, message)`.
    pub(super) fn blocklist_file(path: &Path) -> Result<Vec<IpNet>, Vec<(Option<usize>, String)>> {
        let input = crate::input::read_capped(path, BLOCKLIST_MAX_BYTES)
            .map_err(|e| vec![(None, format!("cannot read the blocklist: {e}"))])?;
        let (nets, errors) = blocklist_lines(&input.text);
        if !errors.is_empty() {
            return Err(errors.into_iter().map(|(l, m)| (Some(l), m)).collect());
        }
        if nets.is_empty() {
            return Err(vec![(
                None,
                "the blocklist holds no address (only comments and blank lines): \
                 an empty blocklist is refused, since it is almost surely a failed download"
                    .to_owned(),
            )]);
        }
        Ok(nets)
    }

    /// The addresses of blocklist text, and each bad line as `(line, message)`.
    pub(super) fn blocklist_lines(text: &str) -> (Vec<IpNet>, Vec<(usize, String)>) {
        let mut nets = Vec::new();
        let mut errors = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let data = line.split(['#', ';']).next().unwrap_or("").trim();
            if data.is_empty() {
                continue;
            }
            match parse_net(data) {
                Ok(net) if net.prefix_len() == 0 => errors.push((n + 1, ANYWHERE.to_owned())),
                Ok(net) => nets.push(net),
                Err(m) => errors.push((n + 1, m)),
            }
        }
        (nets, errors)
    }

    type Common = (S<String>, S<toml::Value>, Option<S<String>>);

    /// One allow entry, or `None` when its proto or port is bad (recorded).
    fn allow(
        cx: &Ctx<'_>,
        key: &str,
        (proto, port, comment): Common,
        (peer_key, peers): (&str, Option<S<Vec<S<String>>>>),
        mode: Ipv6Mode,
    ) -> Option<Allow> {
        let proto = match proto.get_ref().as_str() {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            other => {
                cx.err(
                    proto.span(),
                    format!("{key}.proto"),
                    format!("expected \"tcp\" or \"udp\", found {other:?}"),
                );
                None
            }
        };
        let ports = ports(port.get_ref())
            .map_err(|m| cx.err(port.span(), format!("{key}.port"), m))
            .ok();
        let peers = match peers {
            None => Vec::new(),
            Some(list) => nets(cx, &format!("{key}.{peer_key}"), list, mode, false),
        };
        let comment = comment.and_then(|c| {
            check_comment(c.get_ref())
                .map(str::to_owned)
                .map_err(|m| cx.err(c.span(), format!("{key}.comment"), m))
                .ok()
        });
        Some(Allow {
            proto: proto?,
            ports: ports?,
            peers,
            comment,
            override_ssh: false,
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

    #[test]
    fn a_blocklist_rule_names_its_file_by_its_own_name() {
        let b = |file: Option<&str>| Blocklist {
            file: file.map(str::to_owned),
            direction: Direction::Both,
            nets: vec!["203.0.113.0/24".parse().unwrap()],
        };
        // Where the policy was read from (the install host, a root's copy)
        // does not change the rules.
        for f in [
            "drop.netset",
            "/srv/lists/drop.netset",
            "blocklists/0/drop.netset",
        ] {
            assert_eq!(b(Some(f)).comment(2), "blocklist[2] (from drop.netset)");
        }
        assert_eq!(b(None).comment(0), "blocklist[0] (inline)");
    }

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

    #[test]
    fn blocklist_files_are_read_from_the_policy_directory_with_file_and_line_errors() {
        let dir = std::env::temp_dir().join(format!("portcullis-bl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let policy = dir.join("policy.toml").display().to_string();
        let bl = dir.join("drop.txt");
        let text = "[[blocklist]]\nfile = \"drop.txt\"\ndirection = \"in\"\n";
        // Spamhaus DROP and FireHOL lines, a duplicate, an overlap, adjacent halves.
        std::fs::write(
            &bl,
            "; Spamhaus DROP List\n# firehol\n\n203.0.113.0/25 ; SBL1\n203.0.113.128/25\n\
             192.0.2.0/24\n192.0.2.7\n192.0.2.0/24 # again\n2001:db8:bad::/48\n",
        )
        .unwrap();
        let p = Policy::parse(text, &policy).unwrap();
        assert_eq!(p.blocklists.len(), 1);
        let b = &p.blocklists[0];
        assert_eq!(b.direction, Direction::In);
        assert_eq!(b.file.as_deref(), Some(bl.to_str().unwrap()));
        let nets: Vec<String> = b.nets.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            nets,
            ["192.0.2.0/24", "203.0.113.0/24", "2001:db8:bad::/48"]
        );

        // Bad lines: each one, with the file and its line.
        std::fs::write(
            &bl,
            "192.0.2.0/24\n192.0.2.7/24\nnot-an-address ; x\n0.0.0.0/0\n",
        )
        .unwrap();
        let e = Policy::parse(text, &policy).unwrap_err().to_string();
        let file = bl.display();
        assert!(
            e.contains(&format!("{file}:2: blocklist[0].file: host bits set")),
            "{e}"
        );
        assert!(
            e.contains(&format!("{file}:3: blocklist[0].file: expected an IPv4")),
            "{e}"
        );
        assert!(
            e.contains(&format!(
                "{file}:4: blocklist[0].file: a blocklist entry of prefix length 0"
            )),
            "{e}"
        );

        // An empty file (comments only) and a missing one: the policy's line.
        std::fs::write(&bl, "# nothing\n;\n").unwrap();
        let e = Policy::parse(text, &policy).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "{policy}:2: blocklist[0].file: {file}: the blocklist holds no address"
            )),
            "{e}"
        );
        std::fs::remove_file(&bl).unwrap();
        let e = Policy::parse(text, &policy).unwrap_err().to_string();
        assert!(e.contains("cannot read the blocklist"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn blocklist_entries_need_exactly_one_source_and_a_known_direction() {
        let e = |t: &str| Policy::parse(t, "t").unwrap_err().to_string();
        assert_eq!(
            e("[[blocklist]]\ndirection = \"in\"\n"),
            "t:1: blocklist[0]: expected exactly one of file = \"PATH\" and cidrs = [...]"
        );
        assert_eq!(
            e("[[blocklist]]\ncidrs = [\"192.0.2.0/24\"]\ndirection = \"up\"\n"),
            "t:3: blocklist[0].direction: expected \"in\", \"out\" or \"both\", found \"up\""
        );
        assert!(
            e("[[blocklist]]\ncidrs = []\n")
                .contains("blocklist[0].cidrs: expected at least one CIDR")
        );
        assert!(e("[[blocklist]]\ncidrs = [\"::/0\"]\n").contains("prefix length 0"));
        let p = Policy::parse("[[blocklist]]\ncidrs = [\"192.0.2.0/24\"]\n", "t").unwrap();
        assert_eq!(p.blocklists[0].direction, Direction::Both, "the default");
        assert_eq!(p.blocklists[0].comment(0), "blocklist[0] (inline)");
    }

    #[test]
    fn schema_keys_are_read_from_the_format() {
        let keys = Policy::schema_keys();
        for k in [
            "ssh.port",
            "ssh.allow_from",
            "outbound.dns",
            "outbound.allow",
            "outbound.allow[].to",
            "inbound.allow[].override_ssh",
            "hardening.drop_malicious_flags",
            "ipv6.mode",
        ] {
            assert!(keys.iter().any(|x| x == k), "{k} missing from {keys:?}");
        }
        // Only keys: no sections, no span bounds, no list elements.
        assert!(
            !keys
                .iter()
                .any(|k| k == "ssh" || k.contains('$') || k.ends_with("[]"))
        );
        // Each one is accepted by the parser (a key that is not would be refused
        // as unknown, whatever its value).
        for k in &keys {
            // A top-level array of tables (`blocklist`): its keys are tried below.
            let Some((table, key)) = k.rsplit_once('.') else {
                continue;
            };
            let text = format!("[{}]\n{key} = 1\n", table.replace("[]", ""));
            let text = if table.ends_with("[]") {
                text.replacen('[', "[[", 1).replacen(']', "]]", 1)
            } else {
                text
            };
            if let Err(e) = Policy::parse(&text, "t") {
                assert!(!e.to_string().contains("unknown key"), "{k}: {e}");
            }
        }
    }
}
