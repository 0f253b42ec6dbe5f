//! Hand-made TCP packets (etherparse) sent through a raw socket with the IP header
//! included, v4 and v6: flag combinations no TCP stack sends (SYN+FIN, SYN+RST),
//! and an out-of-window RST on a real established connection, which conntrack on
//! the receiver classifies INVALID.
//!
//! These probes only send: no reply is expected (Linux discards SYN+FIN itself).
//! Their evidence is the packet counter of the rule that must take them, so they
//! return `Ok("sent ...")` once the kernel accepted the packet, and `NoAnswer`
//! when this host's own OUTPUT chain dropped it (EPERM). Forging a source address
//! the sending host does not own is refused: a lab probe speaks for its host.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use etherparse::{IpNumber, Ipv4HeaderSlice, PacketBuilder, TcpHeader, TcpSlice};
use socket2::Protocol;

use super::raw::RawSocket;
use super::{Outcome, from_io, within};

/// TCP flags of a crafted segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Flags {
    pub fin: bool,
    pub syn: bool,
    pub rst: bool,
    pub psh: bool,
    pub ack: bool,
    pub urg: bool,
    pub ece: bool,
    pub cwr: bool,
}

impl Flags {
    pub const SYN: Flags = Flags {
        syn: true,
        ..Flags::NONE
    };
    pub const SYN_FIN: Flags = Flags {
        syn: true,
        fin: true,
        ..Flags::NONE
    };
    pub const SYN_RST: Flags = Flags {
        syn: true,
        rst: true,
        ..Flags::NONE
    };
    pub const RST: Flags = Flags {
        rst: true,
        ..Flags::NONE
    };
    pub const NONE: Flags = Flags {
        fin: false,
        syn: false,
        rst: false,
        psh: false,
        ack: false,
        urg: false,
        ece: false,
        cwr: false,
    };

    /// Parse `SYN,FIN` (iptables' spelling, any case; `NONE` for no flag).
    pub fn parse(s: &str) -> Result<Flags, String> {
        let mut f = Flags::NONE;
        for word in s.split(',').map(str::trim) {
            match word.to_ascii_uppercase().as_str() {
                "FIN" => f.fin = true,
                "SYN" => f.syn = true,
                "RST" => f.rst = true,
                "PSH" => f.psh = true,
                "ACK" => f.ack = true,
                "URG" => f.urg = true,
                "ECE" => f.ece = true,
                "CWR" => f.cwr = true,
                "NONE" => {}
                other => {
                    return Err(format!(
                        "unknown tcp flag `{other}`: expected FIN, SYN, RST, PSH, ACK, URG, ECE, CWR or NONE"
                    ));
                }
            }
        }
        Ok(f)
    }
}

impl fmt::Display for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.fin, "FIN"),
            (self.syn, "SYN"),
            (self.rst, "RST"),
            (self.psh, "PSH"),
            (self.ack, "ACK"),
            (self.urg, "URG"),
            (self.ece, "ECE"),
            (self.cwr, "CWR"),
        ];
        let set: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        if set.is_empty() {
            f.write_str("NONE")
        } else {
            f.write_str(&set.join(","))
        }
    }
}

/// The window field of crafted segments: any plausible value.
const WINDOW: u16 = 64240;
const TTL: u8 = 64;

/// Build the whole IP packet of one TCP segment `src -> dst`.
pub fn build_tcp(
    src: SocketAddr,
    dst: SocketAddr,
    flags: Flags,
    seq: u32,
    ack: u32,
) -> Result<Vec<u8>, String> {
    let mut h = TcpHeader::new(src.port(), dst.port(), seq, WINDOW);
    h.fin = flags.fin;
    h.syn = flags.syn;
    h.rst = flags.rst;
    h.psh = flags.psh;
    h.ack = flags.ack;
    h.urg = flags.urg;
    h.ece = flags.ece;
    h.cwr = flags.cwr;
    h.acknowledgment_number = ack;
    let builder = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), TTL),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), TTL),
        _ => return Err(format!("{src} and {dst} are of different families")),
    }
    .tcp_header(h);
    let mut packet = Vec::with_capacity(builder.size(0));
    builder
        .write(&mut packet, &[])
        .map_err(|e| format!("build tcp {src} -> {dst}: {e}"))?;
    Ok(packet)
}

/// Send one TCP segment `src -> dst` with `flags`, `seq` and `ack`, IP header
/// included, from the calling host. `src` must be an address of this host.
pub async fn send_tcp(
    src: SocketAddr,
    dst: SocketAddr,
    flags: Flags,
    seq: u32,
    ack: u32,
) -> Outcome {
    let ctx = format!("craft {flags} {src} -> {dst}");
    let packet = match build_tcp(src, dst, flags, seq, ack) {
        Ok(p) => p,
        Err(e) => return Outcome::Failed(e),
    };
    let sock = match RawSocket::sender(dst.ip()) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("{ctx}: raw socket: {e}")),
    };
    match sock.send_to(&packet, dst.ip()) {
        Ok(_) => Outcome::Ok(format!("sent {flags} {src} -> {dst} seq {seq}")),
        Err(e) => from_io(&ctx, &e),
    }
}

/// How far past the next expected sequence number the RST lands: beyond any
/// receive window (at most 2^30 with window scaling), yet "after" it in sequence
/// space (less than 2^31 ahead), so conntrack's check "SEQ is over the upper
/// bound" fails rather than "under the lower bound" (which it ignores, not flags).
const OUT_OF_WINDOW: u32 = 0x7000_0000;

/// Open a real TCP connection to `dst`, learn the client's next sequence number
/// from the SYN-ACK (its acknowledgment number), then send a RST on that 4-tuple
/// with a sequence number far outside the window. The receiver's TCP ignores it
/// (RFC 5961) and its conntrack marks it INVALID: the proof of a
/// `--ctstate INVALID` rule. `NoAnswer` when the connection cannot be set up
/// within `window`.
pub async fn out_of_window_rst(dst: SocketAddr, window: Duration) -> Outcome {
    let ctx = format!("out-of-window rst to {dst}");
    // Capture before connecting: a raw TCP socket gets a copy of every TCP segment
    // this host receives, the SYN-ACK included.
    let capture = match RawSocket::new(dst.ip(), Protocol::TCP) {
        Ok(s) => s,
        Err(e) => return Outcome::Failed(format!("{ctx}: raw socket: {e}")),
    };
    within(window, async {
        let stream = match tokio::net::TcpStream::connect(dst).await {
            Ok(s) => s,
            Err(e) => return from_io(&format!("{ctx}: connect"), &e),
        };
        let local = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(format!("{ctx}: local address: {e}")),
        };
        let mut buf = vec![0u8; 2048];
        let next_seq = loop {
            let (n, from) = match capture.recv_from(&mut buf).await {
                Ok(r) => r,
                Err(e) => return Outcome::Failed(format!("{ctx}: capture: {e}")),
            };
            if from != dst.ip() {
                continue;
            }
            if let Some(ack) = syn_ack_for(&buf[..n], dst, local) {
                break ack;
            }
        };
        let seq = next_seq.wrapping_add(OUT_OF_WINDOW);
        let sent = send_tcp(local, dst, Flags::RST, seq, 0).await;
        // The connection stays open until the RST is out, then closes normally.
        drop(stream);
        match sent {
            Outcome::Ok(_) => Outcome::Ok(format!(
                "sent RST {local} -> {dst} seq {seq} (next expected {next_seq})"
            )),
            other => other,
        }
    })
    .await
}

/// The acknowledgment number of a SYN-ACK `peer -> local` in a captured packet
/// (IPv4 raw sockets deliver the IP header, IPv6 ones do not).
fn syn_ack_for(packet: &[u8], peer: SocketAddr, local: SocketAddr) -> Option<u32> {
    let tcp = if peer.is_ipv4() {
        let ip = Ipv4HeaderSlice::from_slice(packet).ok()?;
        if ip.protocol() != IpNumber::TCP {
            return None;
        }
        TcpSlice::from_slice(packet.get(ip.slice().len()..)?).ok()?
    } else {
        TcpSlice::from_slice(packet).ok()?
    };
    (tcp.syn()
        && tcp.ack()
        && tcp.source_port() == peer.port()
        && tcp.destination_port() == local.port())
    .then(|| tcp.acknowledgment_number())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_and_print_in_iptables_spelling() {
        assert_eq!(Flags::parse("SYN,FIN").unwrap(), Flags::SYN_FIN);
        assert_eq!(Flags::parse("syn, rst").unwrap(), Flags::SYN_RST);
        assert_eq!(Flags::SYN_FIN.to_string(), "FIN,SYN");
        assert_eq!(Flags::NONE.to_string(), "NONE");
        assert!(Flags::parse("SYN,BOGUS").is_err());
    }

    #[test]
    fn built_packet_carries_the_flags_and_a_valid_checksum() {
        let src: SocketAddr = "192.0.2.1:40000".parse().unwrap();
        let dst: SocketAddr = "192.0.2.2:22".parse().unwrap();
        let p = build_tcp(src, dst, Flags::SYN_FIN, 7, 0).unwrap();
        let ip = Ipv4HeaderSlice::from_slice(&p).unwrap();
        let tcp = TcpSlice::from_slice(&p[ip.slice().len()..]).unwrap();
        assert!(tcp.syn() && tcp.fin() && !tcp.rst() && !tcp.ack());
        assert_eq!(tcp.sequence_number(), 7);
        let want = tcp
            .calc_checksum_ipv4(ip.source(), ip.destination())
            .unwrap();
        assert_eq!(tcp.checksum(), want);
        let v6 = build_tcp(
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::2]:22".parse().unwrap(),
            Flags::SYN_RST,
            1,
            0,
        )
        .unwrap();
        assert_eq!(v6.len(), 40 + 20);
        assert!(build_tcp(src, "[2001:db8::2]:22".parse().unwrap(), Flags::SYN, 0, 0).is_err());
    }
}
