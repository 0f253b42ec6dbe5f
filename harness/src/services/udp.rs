//! A plain UDP echo server: the far end of a UDP allow entry that is not DNS (NTP,
//! syslog, WireGuard...). Every datagram is sent back, unchanged, to its sender.
//!
//! It is not a protocol: it answers any datagram and nothing else, and keeps no
//! state between datagrams.

use std::net::SocketAddr;

use super::{Service, ServiceError, bind_udp};

/// Listen on each of `addrs` (UDP) and echo every datagram to its sender.
/// Returns once all are bound.
pub async fn echo(addrs: &[SocketAddr]) -> Result<Service, ServiceError> {
    let mut service = Service::new("udp echo");
    for &addr in addrs {
        let socket = bind_udp(addr)?;
        let local = socket.local_addr().unwrap_or(addr);
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                // A receive error (an ICMP error queued for an earlier reply) is
                // that datagram's problem only: keep serving.
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let _ = socket.send_to(&buf[..n], peer).await;
            }
        });
        service.push(local, task);
    }
    Ok(service)
}
