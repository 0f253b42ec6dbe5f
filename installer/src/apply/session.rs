//! The SSH session a command runs in, from `SSH_CONNECTION`
//! (`CLIENT_IP CLIENT_PORT SERVER_IP SERVER_PORT`, set by sshd) and from the
//! process tree.
//!
//! The environment alone is not evidence: `sudo` (env_reset), `su -` and
//! `env -i` all drop `SSH_CONNECTION`, and a policy that excludes the client
//! would then be applied unchecked. So `all_current` walks the process tree
//! whatever the environment says: this process's `SSH_CONNECTION`, each
//! ancestor's, and the connection of the nearest `sshd`/`sshd-session` ancestor
//! (its established TCP socket, read from /proc), where the walk stops. Every
//! session found is checked. When none is found and stdin is a terminal that is
//! not a console (`unverifiable_terminal`), apply and `install --root /` refuse
//! unless told `--i-am-on-the-console`. It never guesses a session from anything
//! else.

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

    /// The session of this process, the first of `all_current`; `Ok(None)` when
    /// not over SSH.
    pub fn current() -> Result<Option<SshConnection>, String> {
        Ok(SshConnection::all_current()?.into_iter().next())
    }

    /// Every SSH session this process traces to, nearest first, each once: its
    /// own `SSH_CONNECTION`, then up the process tree each ancestor's, and the
    /// connection of the nearest sshd ancestor (where the walk stops). A
    /// malformed `SSH_CONNECTION` of this process is an error; an ancestor's is
    /// skipped.
    pub fn all_current() -> Result<Vec<SshConnection>, String> {
        let mut out: Vec<SshConnection> = Vec::new();
        let mut add = |c: SshConnection| {
            if !out.iter().any(|o| o.same_connection(&c)) {
                out.push(c);
            }
        };
        if let Some(v) = std::env::var_os("SSH_CONNECTION") {
            let v = v.to_string_lossy();
            if !v.trim().is_empty() {
                add(SshConnection::parse(&v, "SSH_CONNECTION")?);
            }
        }
        let mut pid = std::process::id();
        for _ in 0..256 {
            let Some(ppid) = parent_of(pid) else { break };
            if ppid == 0 {
                break;
            }
            if let Some(v) = environ_var(ppid, "SSH_CONNECTION") {
                let source = format!("SSH_CONNECTION of ancestor pid {ppid}");
                if let Ok(c) = SshConnection::parse(&v, &source) {
                    add(c);
                }
            }
            if is_sshd(ppid) {
                if let Some(c) = sshd_connection(ppid) {
                    add(c);
                }
                break;
            }
            pid = ppid;
        }
        Ok(out)
    }

    /// The same TCP connection (whatever the text looked like).
    pub fn same_connection(&self, other: &SshConnection) -> bool {
        (self.client, self.client_port, self.server, self.server_port)
            == (
                other.client,
                other.client_port,
                other.server,
                other.server_port,
            )
    }
}

/// Why this process cannot vouch for its session: no session was found, and
/// stdin is a terminal that is not a console (a pseudo-terminal could be an ssh
/// session hidden by a wrapper, tmux or screen). `None` when stdin is a console
/// or not a terminal (a script, a pipe).
pub fn unverifiable_terminal() -> Option<String> {
    use std::io::IsTerminal as _;
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return None;
    }
    let tty = nix::unistd::ttyname(&stdin)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "an unnamed terminal".into());
    (!is_console(&tty)).then(|| {
        format!(
            "no ssh session found in the environment or the process tree, and stdin is {tty}, not a console: portcullis cannot check that this policy keeps you in; run it in the ssh session itself, or pass --i-am-on-the-console if you are at the console"
        )
    })
}

/// A terminal that is the machine's own console: the virtual consoles, serial
/// lines and hypervisor consoles, never a pseudo-terminal.
pub fn is_console(tty: &str) -> bool {
    let Some(name) = tty.strip_prefix("/dev/") else {
        return false;
    };
    if name == "console" {
        return true;
    }
    if let Some(n) = name.strip_prefix("tty") {
        if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            return true;
        }
    }
    ["ttyS", "ttyAMA", "ttyUSB", "hvc", "xvc", "ttysclp", "3270/"]
        .iter()
        .any(|p| name.starts_with(p))
}

fn is_sshd(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| {
            let c = c.trim();
            c == "sshd" || c.starts_with("sshd-")
        })
        .unwrap_or(false)
}

/// The established TCP connection held by sshd process `pid`, from its socket
/// descriptors and its network namespace's /proc/PID/net/tcp{,6}.
fn sshd_connection(pid: u32) -> Option<SshConnection> {
    let inodes: Vec<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let l = std::fs::read_link(e.path()).ok()?;
            let l = l.to_str()?;
            l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            if let Some((inode, c)) = parse_tcp_line(line, pid) {
                if inodes.contains(&inode) {
                    return Some(c);
                }
            }
        }
    }
    None
}

/// One established line of /proc/net/tcp{,6}: its inode and the connection, the
/// local end as the server.
fn parse_tcp_line(line: &str, pid: u32) -> Option<(u64, SshConnection)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 || f[3] != "01" {
        return None;
    }
    let (server, server_port) = hex_endpoint(f[1])?;
    let (client, client_port) = hex_endpoint(f[2])?;
    let raw = format!("{client} {client_port} {server} {server_port}");
    let c =
        SshConnection::parse(&raw, &format!("the connection of sshd ancestor pid {pid}")).ok()?;
    Some((f[9].parse().ok()?, c))
}

/// `0100007F:0016` or 32 hex digits `:PORT`: the kernel prints each 32-bit word
/// of the address in host byte order.
fn hex_endpoint(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for i in (0..addr.len()).step_by(8) {
        let word = u32::from_str_radix(addr.get(i..i + 8)?, 16).ok()?;
        bytes.extend(word.to_ne_bytes());
    }
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?),
        _ => return None,
    };
    Some((ip, port))
}

/// The fields of /proc/PID/stat after `PID (COMM)`, the state first. The command
/// name may contain spaces and parentheses: the fields start after the last `)`.
pub(crate) fn stat_fields(pid: impl std::fmt::Display) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
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
    fn reads_proc_net_tcp_lines() {
        // 192.0.2.1:22 <- 198.51.100.7:50022, established, as a little-endian
        // kernel prints it.
        let v4 = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let line = format!(
            "   1: {}:0016 {}:C366 01 00000000:00000000 02:0009 00000000     0        0 4242 2 0 20 4 30 10 -1",
            v4([192, 0, 2, 1]),
            v4([198, 51, 100, 7])
        );
        let (inode, c) = parse_tcp_line(&line, 7).unwrap();
        assert_eq!(inode, 4242);
        assert_eq!(c.client, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!((c.client_port, c.server_port), (50022, 22));
        assert!(c.source.contains("sshd ancestor pid 7"));
        // A listening socket is not a session.
        assert!(parse_tcp_line(&line.replace(" 01 ", " 0A "), 7).is_none());
        // IPv6, and a v4-mapped client.
        let words = |a: [u8; 16]| {
            a.chunks(4)
                .map(|w| format!("{:08X}", u32::from_ne_bytes(w.try_into().unwrap())))
                .collect::<String>()
        };
        let mapped: std::net::Ipv6Addr = "::ffff:192.0.2.10".parse().unwrap();
        let server: std::net::Ipv6Addr = "2001:db8::1".parse().unwrap();
        let line = format!(
            "   0: {}:0016 {}:1388 01 00000000:00000000 00:00000000 00000000     0        0 99 1",
            words(server.octets()),
            words(mapped.octets())
        );
        let (_, c) = parse_tcp_line(&line, 1).unwrap();
        assert_eq!(c.client, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(c.server, IpAddr::V6(server));
    }

    #[test]
    fn consoles_are_named_ttys_not_ptys() {
        for c in [
            "/dev/console",
            "/dev/tty1",
            "/dev/ttyS0",
            "/dev/hvc0",
            "/dev/ttyAMA0",
        ] {
            assert!(is_console(c), "{c}");
        }
        for c in [
            "/dev/pts/0",
            "/dev/tty",
            "/dev/ttyp0",
            "an unnamed terminal",
        ] {
            assert!(!is_console(c), "{c}");
        }
    }

    #[test]
    fn same_connection_ignores_the_spelling() {
        let a = SshConnection::parse("::ffff:192.0.2.10 1 ::ffff:192.0.2.1 22", "a").unwrap();
        let b = SshConnection::parse("192.0.2.10 1 192.0.2.1 22", "b").unwrap();
        assert!(a.same_connection(&b));
        let c = SshConnection::parse("192.0.2.10 2 192.0.2.1 22", "c").unwrap();
        assert!(!a.same_connection(&c));
    }

    #[test]
    fn refuses_garbage() {
        assert!(SshConnection::parse("192.0.2.10 22", "t").is_err());
        assert!(SshConnection::parse("nope 1 192.0.2.1 22", "t").is_err());
        assert!(SshConnection::parse("192.0.2.10 x 192.0.2.1 22", "t").is_err());
    }
}
