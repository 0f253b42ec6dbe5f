//! `portcullis init`: write a commented starter policy.
//!
//! When run over SSH, `ssh.allow_from` holds the current client's address and
//! `ssh.port` the port it came in on, so the first apply cannot lock that admin
//! out. The session is found the way `apply` finds it (`SshConnection::current`:
//! `SSH_CONNECTION`, or under `sudo`, which drops it, an ancestor's). Otherwise
//! `allow_from` holds a marked placeholder (a documentation subnet nobody has)
//! for the user to change. The comments say the defaults: a key or section left
//! out is off, except `[hardening]`, which is on. It refuses to overwrite an
//! existing file unless `--force`, and writes atomically.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::apply::SshConnection;
use crate::persist::PersistError;
use crate::persist::atomic::{Existing, write_file};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to write the policy (`-` prints it)
    #[arg(
        long,
        short = 'o',
        value_name = "FILE",
        default_value = "portcullis.toml"
    )]
    pub out: PathBuf,
    /// Replace an existing file
    #[arg(long)]
    pub force: bool,
}

/// The SSH client and the server port the starter policy admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshClient {
    pub addr: IpAddr,
    pub server_port: u16,
}

impl SshClient {
    /// The client of this session as `apply` sees it (IPv4-mapped addresses
    /// already IPv4, zones dropped); `None` for a server port of 0, which no
    /// policy can name.
    pub fn from_connection(c: &SshConnection) -> Option<SshClient> {
        (c.server_port > 0).then_some(SshClient {
            addr: c.client,
            server_port: c.server_port,
        })
    }
}

/// The starter policy for `client` (or the placeholder when `None`).
pub fn starter_policy(client: Option<SshClient>) -> String {
    let (port, allow_from) = match client {
        Some(c) => {
            let prefix = if c.addr.is_ipv4() { 32 } else { 128 };
            (
                c.server_port,
                format!(
                    "allow_from = [\"{}/{prefix}\"]\n\
                     # ^ your current SSH client (from SSH_CONNECTION). Add your admin subnet\n\
                     #   before you rely on it: a new address elsewhere would be locked out.",
                    c.addr
                ),
            )
        }
        None => (
            22,
            "allow_from = [\"192.0.2.0/24\"]\n\
             # ^ PLACEHOLDER: 192.0.2.0/24 is a documentation range (RFC 5737) that no\n\
             #   real admin has. CHANGE IT to your admin subnet (IPv4 or IPv6 CIDRs)\n\
             #   before you apply this policy, or you will be locked out."
                .to_owned(),
        ),
    };
    format!(
        r#"# portcullis policy: a default-deny firewall for this host.
# Check it with `portcullis check --config FILE`, see the rules with
# `portcullis render --config FILE`, then `sudo portcullis apply --config FILE`.
# Everything not allowed below is dropped, both ways, for IPv4 and IPv6.
#
# Defaults: a key or a whole section left out of [outbound] or [inbound] is OFF
# (false, no entries); [hardening] keys left out are ON; ssh.port is 22 and
# ipv6.mode is "mirror". This starter turns the common switches on. Every key,
# its type and default: docs/policy.md.

[ssh]
# Who may open SSH sessions to this host. Sessions already open keep working.
port = {port}
{allow_from}

[outbound]
# What this host may start talking to (replies always pass). Left out: false.
dns = true         # udp and tcp 53
http = true        # tcp 80
https = true       # tcp 443
icmp = true        # ping and ICMP errors out

# More outbound destinations, as many as needed:
# [[outbound.allow]]
# proto = "tcp"              # tcp | udp
# port = 587                 # a port, or a range "8000:8100"
# to = ["198.51.100.0/24"]   # optional; default anywhere
# comment = "smtp submission"

[inbound]
# What may reach this host besides ssh. Left out: false, no entries.
icmp = true        # answer ping

# Services this host offers, as many as needed:
# [[inbound.allow]]
# proto = "tcp"
# port = 443
# from = ["203.0.113.0/24"]  # optional; default anywhere
# comment = "https"
# An entry on the ssh port wider than ssh.allow_from undoes it: apply refuses
# one unless it also says override_ssh = true.

[hardening]
# Left out: true.
loopback = true              # lo in and out
drop_invalid = true          # packets conntrack cannot place
drop_malicious_flags = true  # SYN+FIN and SYN+RST

[ipv6]
# mirror: the same rules for IPv6, plus the ICMPv6 IPv6 cannot work without;
# deny: drop all IPv6 but loopback; untouched: leave ip6tables alone.
mode = "mirror"
"#
    )
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let client = match SshConnection::current() {
        Ok(c) => c.as_ref().and_then(SshClient::from_connection),
        Err(e) => {
            eprintln!("portcullis: {e}: writing a placeholder allow_from");
            None
        }
    };
    let text = starter_policy(client);
    // Never hand out a policy that does not validate (the template is tested, but
    // the client address is not ours).
    crate::Policy::parse(&text, "<starter policy>").context("the starter policy is invalid")?;
    if args.out.as_os_str() == "-" {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let existing = if args.force {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    match write_file(&args.out, text.as_bytes(), 0o600, existing) {
        Ok(()) => {}
        Err(PersistError::Exists { .. }) => {
            return Err(super::UsageError(format!(
                "{} already exists: pass --force to replace it, or --out another file",
                args.out.display()
            ))
            .into());
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot write {}", args.out.display()));
        }
    }
    let out = args.out.display();
    match client {
        Some(c) => eprintln!(
            "portcullis: wrote {out}; ssh.allow_from holds your SSH client {} (port {}); \
             review it, then run `portcullis check --config {out}`",
            c.addr, c.server_port
        ),
        None => eprintln!(
            "portcullis: wrote {out}; ssh.allow_from is a PLACEHOLDER (192.0.2.0/24): \
             change it to your admin subnet, then run `portcullis check --config {out}`"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(v: &str) -> Option<SshClient> {
        SshClient::from_connection(&SshConnection::parse(v, "t").ok()?)
    }

    #[test]
    fn ssh_connection_gives_the_client_and_port() {
        let c = client("203.0.113.9 51234 192.0.2.1 2222").unwrap();
        assert_eq!(c.addr.to_string(), "203.0.113.9");
        assert_eq!(c.server_port, 2222);
        let c = client("::ffff:198.51.100.7 1 ::ffff:192.0.2.1 22").unwrap();
        assert_eq!(c.addr.to_string(), "198.51.100.7");
        let c = client("fe80::1%eth0 1 fe80::2%eth0 22").unwrap();
        assert_eq!(c.addr.to_string(), "fe80::1");
        assert_eq!(client("garbage"), None);
        assert_eq!(client("192.0.2.1 1 192.0.2.2 0"), None);
    }

    #[test]
    fn starter_policies_validate_and_admit_the_client() {
        let p = crate::Policy::parse(&starter_policy(None), "t").unwrap();
        assert_eq!(p.ssh.allow_from, vec!["192.0.2.0/24".parse().unwrap()]);
        assert_eq!(crate::lint(&p), vec![], "the starter draws no warning");
        for (env, net) in [
            ("203.0.113.9 5 192.0.2.1 2222", "203.0.113.9/32"),
            ("2001:db8::9 5 2001:db8::1 2222", "2001:db8::9/128"),
        ] {
            let c = client(env);
            let p = crate::Policy::parse(&starter_policy(c), "t").unwrap();
            assert_eq!(p.ssh.allow_from, vec![net.parse().unwrap()]);
            assert_eq!(p.ssh.port, 2222);
        }
    }
}
