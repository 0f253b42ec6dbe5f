//! The policy: a small TOML file saying who may reach the host and where it may go.
//!
//! `Policy::parse` is the only way in: it deserializes with `deny_unknown_fields`
//! and validates, so a `Policy` value is always renderable. Errors name the key,
//! the line and what was expected.

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
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssh {
    pub port: u16,
    /// Who may open SSH sessions; both families. Empty: nobody (render allows it,
    /// `apply` and `install` refuse it).
    pub allow_from: Vec<IpNet>,
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

/// Why a policy was refused. Each variant names where.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
    #[error("cannot read policy {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

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

/// The serde shape of the file. First version: structural checks only; the
/// validation with key, line and expectation lives here too.
mod raw {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct File {
        ssh: RawSsh,
        outbound: RawOutbound,
        inbound: RawInbound,
        hardening: RawHardening,
        ipv6: RawIpv6,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct RawSsh {
        port: u16,
        allow_from: Vec<IpNet>,
    }
    impl Default for RawSsh {
        fn default() -> Self {
            RawSsh {
                port: 22,
                allow_from: Vec::new(),
            }
        }
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct RawOutbound {
        dns: bool,
        http: bool,
        https: bool,
        icmp: bool,
        allow: Vec<RawAllow>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields, default)]
    struct RawInbound {
        icmp: bool,
        allow: Vec<RawAllow>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RawAllow {
        proto: String,
        port: toml::Value,
        #[serde(default)]
        to: Vec<IpNet>,
        #[serde(default)]
        from: Vec<IpNet>,
        comment: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct RawHardening {
        loopback: bool,
        drop_invalid: bool,
        drop_malicious_flags: bool,
    }
    impl Default for RawHardening {
        fn default() -> Self {
            RawHardening {
                loopback: true,
                drop_invalid: true,
                drop_malicious_flags: true,
            }
        }
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct RawIpv6 {
        mode: String,
    }
    impl Default for RawIpv6 {
        fn default() -> Self {
            RawIpv6 {
                mode: "mirror".into(),
            }
        }
    }

    fn invalid(origin: &str, message: impl Into<String>) -> PolicyError {
        PolicyError::Invalid {
            origin: origin.to_owned(),
            message: message.into(),
        }
    }

    fn allow(origin: &str, a: RawAllow, outbound: bool) -> Result<Allow, PolicyError> {
        let proto = match a.proto.as_str() {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            other => {
                return Err(invalid(
                    origin,
                    format!("proto: expected tcp or udp, found `{other}`"),
                ));
            }
        };
        let ports = match &a.port {
            toml::Value::Integer(n) => match u16::try_from(*n) {
                Ok(p) if p > 0 => Ports::One(p),
                _ => {
                    return Err(invalid(
                        origin,
                        format!("port: expected 1-65535, found {n}"),
                    ));
                }
            },
            toml::Value::String(s) => {
                let (lo, hi) = s
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.parse::<u16>().ok()?, b.parse::<u16>().ok()?)))
                    .ok_or_else(|| {
                        invalid(
                            origin,
                            format!("port: expected a port or \"a:b\", found {s:?}"),
                        )
                    })?;
                if lo == 0 || lo > hi {
                    return Err(invalid(
                        origin,
                        format!("port: expected a range a:b with 1 <= a <= b, found {s:?}"),
                    ));
                }
                Ports::Range(lo, hi)
            }
            other => {
                return Err(invalid(
                    origin,
                    format!("port: expected a port or \"a:b\", found {other}"),
                ));
            }
        };
        let peers = if outbound { a.to } else { a.from };
        Ok(Allow {
            proto,
            ports,
            peers,
            comment: a.comment,
        })
    }

    pub(super) fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let f: File = toml::from_str(text).map_err(|e| invalid(origin, e.to_string()))?;
        let mode = match f.ipv6.mode.as_str() {
            "mirror" => Ipv6Mode::Mirror,
            "deny" => Ipv6Mode::Deny,
            "untouched" => Ipv6Mode::Untouched,
            other => {
                return Err(invalid(
                    origin,
                    format!("ipv6.mode: expected mirror, deny or untouched, found `{other}`"),
                ));
            }
        };
        Ok(Policy {
            ssh: Ssh {
                port: f.ssh.port,
                allow_from: f.ssh.allow_from,
            },
            outbound: Outbound {
                dns: f.outbound.dns,
                http: f.outbound.http,
                https: f.outbound.https,
                icmp: f.outbound.icmp,
                allow: f
                    .outbound
                    .allow
                    .into_iter()
                    .map(|a| allow(origin, a, true))
                    .collect::<Result<_, _>>()?,
            },
            inbound: Inbound {
                icmp: f.inbound.icmp,
                allow: f
                    .inbound
                    .allow
                    .into_iter()
                    .map(|a| allow(origin, a, false))
                    .collect::<Result<_, _>>()?,
            },
            hardening: Hardening {
                loopback: f.hardening.loopback,
                drop_invalid: f.hardening.drop_invalid,
                drop_malicious_flags: f.hardening.drop_malicious_flags,
            },
            ipv6: Ipv6 { mode },
        })
    }
}
