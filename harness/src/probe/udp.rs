//! UDP echo: send one datagram to a server of [`crate::services::udp::echo`] and
//! wait for it to come back. UDP has no handshake, so the answer is the proof.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use super::{Outcome, from_io, within};

/// Send a datagram to `addr` from the calling host and wait up to `window` for
/// the same bytes back: `Ok("echoed N bytes from PEER")`; `Refused` when an ICMP
/// port (or host) unreachable comes back instead (the socket is connected, so the
/// kernel reports it as `ECONNREFUSED` on the next receive); `NoAnswer` after
/// `window` of silence, or when this host's own OUTPUT chain dropped the datagram.
/// An answer with other bytes is `Failed`.
pub async fn echo(addr: SocketAddr, window: Duration) -> Outcome {
    within(window, async {
        let any: IpAddr = match addr {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let what = format!("udp echo {addr}");
        let socket = match tokio::net::UdpSocket::bind(SocketAddr::new(any, 0)).await {
            Ok(s) => s,
            Err(e) => return Outcome::Failed(format!("{what}: bind: {e}")),
        };
        // Connected, so an ICMP error for this flow surfaces on this socket.
        if let Err(e) = socket.connect(addr).await {
            return from_io(&what, &e);
        }
        let payload = b"portcullis udp probe";
        if let Err(e) = socket.send(payload).await {
            return from_io(&what, &e);
        }
        let mut buf = [0u8; 2048];
        match socket.recv(&mut buf).await {
            Ok(n) if &buf[..n] == payload => Outcome::Ok(format!("echoed {n} bytes from {addr}")),
            Ok(n) => Outcome::Failed(format!("{what}: {n} bytes came back, not the probe's")),
            Err(e) => from_io(&what, &e),
        }
    })
    .await
}
