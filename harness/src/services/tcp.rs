//! A plain TCP listener: "a port the policy does not open", and the far end of
//! long-lived connections (an established connection for the out-of-window RST,
//! an idle session across a ruleset load).
//!
//! Every connection is echoed back byte for byte, so a client can prove that an
//! established connection still carries data in both directions. It refuses
//! nothing and answers nothing else: it is not a protocol.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::{Service, ServiceError, bind_tcp};

/// Listen on each of `addrs` (TCP) and echo every connection. Returns once all are
/// listening.
pub async fn echo(addrs: &[SocketAddr]) -> Result<Service, ServiceError> {
    let mut service = Service::new("tcp echo");
    for &addr in addrs {
        let listener = bind_tcp(addr)?;
        let local = listener.local_addr().unwrap_or(addr);
        let task = tokio::spawn(async move {
            // Connections live in the accept loop's JoinSet: aborting the loop drops
            // the set, which aborts every connection with it.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((mut stream, _)) = accepted else { continue };
                        conns.spawn(async move {
                            let mut buf = [0u8; 4096];
                            loop {
                                match stream.read(&mut buf).await {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => {
                                        if stream.write_all(&buf[..n]).await.is_err() {
                                            break;
                                        }
                                    }
                                }
                            }
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        service.push(local, task);
    }
    Ok(service)
}
