//! HTTPS GET with real certificate verification against the lab CA (rustls,
//! ring provider). It trusts only the CA it is given: a server whose chain that
//! CA did not sign, or whose certificate does not name `server_name`, is `Failed`
//! with rustls' reason.

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio_rustls::TlsConnector;

use super::{Outcome, from_io, within};
use crate::services::tls::client_config;

/// `GET /` over TLS from `addr`, verifying the server as `server_name` (a DNS
/// name or an IP address literal) against `ca`.
pub async fn get(
    addr: SocketAddr,
    server_name: &str,
    ca: &CertificateDer<'static>,
    window: Duration,
) -> Outcome {
    let config = match client_config(ca) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    let name = match ServerName::try_from(server_name.to_owned()) {
        Ok(n) => n,
        Err(e) => return Outcome::Failed(format!("bad server name {server_name:?}: {e}")),
    };
    let ctx = format!("https {addr}");
    within(window, async {
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => return from_io(&format!("connect {addr}"), &e),
        };
        let tls = match TlsConnector::from(config).connect(name, stream).await {
            Ok(t) => t,
            Err(e) => {
                // rustls reports a refused certificate as InvalidData; a peer that
                // vanished mid-handshake is a transport outcome.
                return match e.kind() {
                    std::io::ErrorKind::InvalidData => Outcome::Failed(format!("{ctx}: tls: {e}")),
                    _ => from_io(&format!("{ctx}: tls"), &e),
                };
            }
        };
        super::http::exchange(tls, server_name, &ctx).await
    })
    .await
}
