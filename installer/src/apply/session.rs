//! The SSH session a command runs in, from `SSH_CONNECTION`
//! (`CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT`, set by sshd).
//!
//! `sudo` drops `SSH_CONNECTION` with its default `env_reset`; under sudo (and only
//! then, so a test's environment decides for itself) the variable is looked up in
//! the environment of the nearest ancestor process that has it. It never guesses
//! a session from anything else.

use std::net::IpAddr;

/// One SSH connection as sshd describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConnection {
    pub client: IpAddr,
    pub client_port: u16,
    pub server: IpAddr,
    pub server_port: u16,
    /// The variable's text, as recorded in the state.
    pub raw: String,
    /// Where it was found (`SSH_CONNECTION`, or an ancestor pid under sudo).
    pub source: String,
}

impl SshConnection {
    /// Parse the value of `SSH_CONNECTION`. IPv4-mapped IPv6 addresses
    /// (`::ffff:192.0.2.10`, what a dual-stack sshd reports) become IPv4.
    pub fn parse(value: &str, source: &str) -> Result<SshConnection, String> {
        let parts: Vec<&str> = value.split_whitespace().collect();
        let [client, cport, server, sport] = parts.as_slice() else {
            return Err(format!(
                "SSH_CONNECTION {value:?} is not `CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT`"
            ));
        };
        let ip = |s: &str| -> Result<IpAddr, String> {
            // A link-local client carries a zone (`fe80::1%eth0`); the zone does not
            // take part in the policy's CIDR match.
            let s = s.split('%').next().unwrap_or(s);
            let ip: IpAddr = s
                .parse()
                .map_err(|_| format!("SSH_CONNECTION {value:?}: {s:?} is not an address"))?;
            Ok(match ip {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
                v4 => v4,
            })
        };
        let port = |s: &str| -> Result<u16, String> {
            s.parse()
                .map_err(|_| format!("SSH_CONNECTION {value:?}: {s:?} is not a port"))
        };
        Ok(SshConnection {
            client: ip(client)?,
            client_port: port(cport)?,
            server: ip(server)?,
            server_port: port(sport)?,
            raw: value.trim().to_owned(),
            source: source.to_owned(),
        })
    }

    /// The session of this process: `SSH_CONNECTION`, or under sudo the nearest
    /// ancestor's. `Ok(None)` when not over SSH.
    pub fn current() -> Result<Option<SshConnection>, String> {
        if let Some(v) = std::env::var_os("SSH_CONNECTION") {
            let v = v.to_string_lossy();
            if !v.trim().is_empty() {
                return SshConnection::parse(&v, "SSH_CONNECTION").map(Some);
            }
        }
        if std::env::var_os("SUDO_USER").is_none() {
            return Ok(None);
        }
        let mut pid = std::process::id();
        for _ in 0..64 {
            let Some(ppid) = parent_of(pid) else { break };
            if ppid <= 1 {
                break;
            }
            if let Some(v) = environ_var(ppid, "SSH_CONNECTION") {
                return SshConnection::parse(&v, &format!("SSH_CONNECTION of ancestor pid {ppid}"))
                    .map(Some);
            }
            pid = ppid;
        }
        Ok(None)
    }
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: the fields start after
    // the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn environ_var(pid: u32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|&b| b == 0).find_map(|kv| {
        let kv = String::from_utf8_lossy(kv);
        kv.strip_prefix(name)?.strip_prefix('=').map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_v4_and_mapped_v6() {
        let c = SshConnection::parse("192.0.2.10 50022 192.0.2.1 22", "t").unwrap();
        assert_eq!(c.client, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!((c.client_port, c.server_port), (50022, 22));
        let c = SshConnection::parse("::ffff:192.0.2.10 1 ::ffff:192.0.2.1 2222", "t").unwrap();
        assert_eq!(c.client, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(c.server_port, 2222);
        let c = SshConnection::parse("2001:db8::10 1 2001:db8::1 22", "t").unwrap();
        assert!(c.client.is_ipv6());
        let c = SshConnection::parse("fe80::1%eth0 1 fe80::2%eth0 22", "t").unwrap();
        assert!(c.client.is_ipv6());
    }

    #[test]
    fn refuses_garbage() {
        assert!(SshConnection::parse("192.0.2.10 22", "t").is_err());
        assert!(SshConnection::parse("nope 1 192.0.2.1 22", "t").is_err());
        assert!(SshConnection::parse("192.0.2.10 x 192.0.2.1 22", "t").is_err());
    }
}
