//! ICMP and ICMPv6 echo without ping(8): a raw socket of the calling host sends
//! one echo request and waits for the reply that carries the same identifier and
//! sequence number.
//!
//! Raw sockets, not the unprivileged "ping" datagram sockets: those depend on
//! `net.ipv4.ping_group_range`, which is off in a fresh namespace, and the lab
//! runs as root anyway. It refuses to count a reply that does not match: other
//! hosts' echoes and our own looped-back requests are skipped.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use etherparse::{
    IcmpEchoHeader, Icmpv4Header, Icmpv4Slice, Icmpv4Type, Icmpv6Header, Icmpv6Slice, Icmpv6Type,
    Ipv4HeaderSlice,
};
use socket2::Protocol;

use super::raw::RawSocket;
use super::{Outcome, from_io, within};

static SEQ: AtomicU16 = AtomicU16::new(1);

const PAYLOAD: &[u8] = b"portcullis-probe";

/// Send one echo request to `addr` and wait up to `window` for its reply:
/// `Ok("echo reply from ADDR in T")`, `Refused` on an ICMP destination
/// unreachable about this very request, `NoAnswer` otherwise.
pub async fn echo(addr: IpAddr, window: Duration) -> Outcome {
    let ctx = format!("icmp echo {addr}");
    let proto = match addr {
        IpAddr::V4(_) => Protocol::ICMPV4,
        IpAddr::V6(_) => Protocol::ICMPV6,
    };
    let sock = match RawSocket::new(addr, proto) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("{ctx}: raw socket: {e}")),
    };
    // The identifier tells our process's probes from others' (several lab runs
    // can share a namespace-less host thread's view of ICMP); the sequence number
    // tells this probe from the previous ones.
    let id = (std::process::id() & 0xffff) as u16;
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let echo = IcmpEchoHeader { id, seq };
    let packet = match addr {
        IpAddr::V4(_) => {
            let h = Icmpv4Header::with_checksum(Icmpv4Type::EchoRequest(echo), PAYLOAD);
            [h.to_bytes().as_slice(), PAYLOAD].concat()
        }
        // The kernel fills in the ICMPv6 checksum of a raw ICMPv6 socket (RFC 3542
        // 3.1): it needs the source address it alone will choose.
        IpAddr::V6(_) => {
            let h = Icmpv6Header::new(Icmpv6Type::EchoRequest(echo));
            [h.to_bytes().as_slice(), PAYLOAD].concat()
        }
    };
    let start = Instant::now();
    if let Err(e) = sock.send_to(&packet, addr) {
        return from_io(&ctx, &e);
    }
    within(window, async {
        let mut buf = vec![0u8; 2048];
        loop {
            let (n, from) = match sock.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => return from_io(&ctx, &e),
            };
            let verdict = match addr {
                IpAddr::V4(_) => judge_v4(&buf[..n], echo),
                IpAddr::V6(_) => judge_v6(&buf[..n], echo),
            };
            match verdict {
                Some(Verdict::Reply) if from == addr => {
                    return Outcome::Ok(format!(
                        "echo reply from {addr} in {:.1} ms",
                        start.elapsed().as_secs_f64() * 1000.0
                    ));
                }
                Some(Verdict::Unreachable(what)) => {
                    return Outcome::Refused(format!("{ctx}: {what} from {from}"));
                }
                _ => continue,
            }
        }
    })
    .await
}

enum Verdict {
    Reply,
    Unreachable(String),
}

/// An IPv4 raw socket delivers the IP header too.
fn judge_v4(packet: &[u8], ours: IcmpEchoHeader) -> Option<Verdict> {
    let ip = Ipv4HeaderSlice::from_slice(packet).ok()?;
    let icmp = Icmpv4Slice::from_slice(packet.get(ip.slice().len()..)?).ok()?;
    match icmp.icmp_type() {
        Icmpv4Type::EchoReply(h) if h == ours => Some(Verdict::Reply),
        Icmpv4Type::DestinationUnreachable(u) => {
            // The error quotes our request: its IP header, then our ICMP header.
            let quoted = icmp.payload();
            let inner = Ipv4HeaderSlice::from_slice(quoted).ok()?;
            let echo = quoted.get(inner.slice().len()..inner.slice().len() + 8)?;
            quotes_our_echo(echo, 8, ours).then(|| Verdict::Unreachable(format!("{u:?}")))
        }
        _ => None,
    }
}

/// An IPv6 raw socket delivers the ICMPv6 message alone.
fn judge_v6(packet: &[u8], ours: IcmpEchoHeader) -> Option<Verdict> {
    let icmp = Icmpv6Slice::from_slice(packet).ok()?;
    match icmp.icmp_type() {
        Icmpv6Type::EchoReply(h) if h == ours => Some(Verdict::Reply),
        Icmpv6Type::DestinationUnreachable(code) => {
            // The quoted packet: a 40-byte IPv6 header (our echo carries no
            // extension headers), then our ICMPv6 header.
            let echo = icmp.payload().get(40..48)?;
            quotes_our_echo(echo, 128, ours).then(|| Verdict::Unreachable(format!("{code:?}")))
        }
        _ => None,
    }
}

/// Whether an 8-byte quoted ICMP header is our echo request (`request_type` is 8
/// for ICMP, 128 for ICMPv6).
fn quotes_our_echo(h: &[u8], request_type: u8, ours: IcmpEchoHeader) -> bool {
    h.len() == 8
        && h[0] == request_type
        && u16::from_be_bytes([h[4], h[5]]) == ours.id
        && u16::from_be_bytes([h[6], h[7]]) == ours.seq
}
