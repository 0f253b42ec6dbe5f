//! Probes: the client side of every check. Each probe is an async function that
//! runs on the current lab host's thread (inside its namespace) and returns an
//! [`Outcome`]. [`Lab::probe`](crate::Lab::probe) wraps a probe with the
//! target's counters over it ([`Evidence`](crate::Evidence)).

//!
//! The probes (every one takes a `window`, the whole time it may take; silence
//! for that long is [`Outcome::NoAnswer`]):
//!
//! - [`tcp::connect`]`(SocketAddr, window)`: `Ok("connected L -> P")`.
//! - [`dns::resolve`]`(server, name, dns::Rtype::{A, Aaaa},
//!   dns::Transport::{Udp, Tcp}, window)`: `Ok("192.0.2.34")`, addresses
//!   comma-separated; NXDOMAIN is `Failed("NAME: nxdomain")`.
//! - [`http::get`]`(addr, host, window)`: `Ok("200 OK <first body line>")`.
//! - [`https::get`]`(addr, server_name, &CertificateDer ca, window)`: the same
//!   over TLS, verified against `ca` only; a wrong CA or name is `Failed`.
//! - [`icmp::echo`]`(IpAddr, window)`: `Ok("echo reply from A in T ms")`.
//! - [`udp::echo`]`(SocketAddr, window)`: one datagram to a UDP echo server;
//!   `Ok("echoed N bytes from P")`, an ICMP port unreachable is `Refused`.
//! - [`craft::send_tcp`]`(src, dst, craft::Flags, seq, ack)`: one segment with any
//!   flags, IP header included; `Ok("sent ...")`, no answer awaited.
//! - [`craft::out_of_window_rst`]`(dst, window)`: a real connection, then a RST
//!   0x7000_0000 past its next sequence number: INVALID for conntrack.
//!
//! The ssh client ([`crate::services::ssh::Client::run`]) also returns an
//! [`Outcome`], so the lab's evidence wrapper takes it like any probe.
//!
//! How errors map to outcomes, everywhere: a TCP RST or an ICMP unreachable is
//! `Refused`; silence, or a send that this host's own OUTPUT chain refused
//! (`EPERM`), is `NoAnswer`; a completed exchange that failed at the application
//! level (NXDOMAIN, a certificate the lab CA did not sign) is `Failed`.

pub mod craft;
pub mod dns;
pub mod http;
pub mod https;
pub mod icmp;
pub(crate) mod raw;

pub mod tcp;
pub mod udp;

use std::io;
use std::time::Duration;

/// The window a negative probe waits before it decides "no answer". Readiness is
/// checked before a probe runs, so a silent window this short is decisive, and
/// the drop itself is proved by the counter of the rule that took the packet.
/// 45 ms, not 50: a probe ends about 1.3 ms after its window (timer tick, socket
/// teardown), and the goal is a negative probe decided in at most 50 ms.
pub const NEGATIVE_WINDOW: Duration = Duration::from_millis(45);

/// What one probe observed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// The exchange completed: connected, answered, resolved, echoed. The detail
    /// says what came back (an address, a status line, a banner).
    Ok(String),
    /// The peer answered with a refusal (TCP RST, ICMP unreachable).
    Refused(String),
    /// Nothing came back within the window.
    NoAnswer,
    /// The probe itself failed (bad certificate, malformed answer, socket error).
    Failed(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// A short lowercase word for tables: `ok`, `refused`, `no-answer`, `failed`.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Refused(_) => "refused",
            Outcome::NoAnswer => "no-answer",
            Outcome::Failed(_) => "failed",
        }
    }
}

/// The outcome of a socket error, by the rule in this module's docs.
pub(crate) fn from_io(context: &str, e: &io::Error) -> Outcome {
    match e.kind() {
        io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
            Outcome::Refused(format!("{context}: {e}"))
        }
        io::ErrorKind::TimedOut => Outcome::NoAnswer,
        _ => match e.raw_os_error() {
            // The local OUTPUT chain dropped the packet: nothing left this host.
            Some(libc::EPERM) => Outcome::NoAnswer,
            // An ICMP unreachable (REJECT with an icmp type, or no route).
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES) => {
                Outcome::Refused(format!("{context}: {e}"))
            }
            _ => Outcome::Failed(format!("{context}: {e}")),
        },
    }
}

/// Run `probe` for at most `window`; running out of time is `NoAnswer`.
pub(crate) async fn within<F>(window: Duration, probe: F) -> Outcome
where
    F: std::future::Future<Output = Outcome>,
{
    tokio::time::timeout(window, probe)
        .await
        .unwrap_or(Outcome::NoAnswer)
}
