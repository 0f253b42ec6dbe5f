//! TCP connect: does a handshake complete, is it refused, or does nothing come
//! back? It sends no data and closes at once (a FIN, never a RST).

use std::net::SocketAddr;
use std::time::Duration;

use super::{Outcome, from_io, within};

/// Connect to `addr` from the calling host: `Ok("connected LOCAL -> PEER")`,
/// `Refused` on a RST or ICMP unreachable, `NoAnswer` after `window` of silence.
pub async fn connect(addr: SocketAddr, window: Duration) -> Outcome {
    within(window, async {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                let local = stream
                    .local_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| "?".into());
                Outcome::Ok(format!("connected {local} -> {addr}"))
            }
            Err(e) => from_io(&format!("connect {addr}"), &e),
        }
    })
    .await
}
