//! HTTP/1.1 on port 80 and HTTPS (rustls) on 443: a tiny hand-written server that
//! answers `GET /` with `200 OK` and a body naming the host, so a probe proves
//! which host answered.
//!
//! One request per connection (`Connection: close`). It refuses everything a lab
//! does not need: other methods get 405, other paths 404, a request head over
//! 8 KiB or slower than a few seconds is dropped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use super::tls::ServerCert;
use super::{Service, ServiceError, bind_tcp};

const MAX_HEAD: usize = 8 * 1024;
/// A client that connects and says nothing must not pin a task for ever.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The body `GET /` answers on a host named `host`; probes compare against it.
pub fn body_for(host: &str) -> String {
    format!("portcullis lab: {host}\n")
}

/// Serve plain HTTP on each of `addrs` (normally port 80) as host `host`.
pub async fn start(addrs: &[SocketAddr], host: &str) -> Result<Service, ServiceError> {
    let body: Arc<str> = body_for(host).into();
    accept_each(format!("http {host}"), addrs, move |stream| {
        serve(stream, body.clone())
    })
}

/// Serve HTTPS on each of `addrs` (normally port 443) as host `host`, presenting
/// `cert`.
pub async fn start_tls(
    addrs: &[SocketAddr],
    host: &str,
    cert: &ServerCert,
) -> Result<Service, ServiceError> {
    let acceptor = TlsAcceptor::from(cert.server_config()?);
    let body: Arc<str> = body_for(host).into();
    accept_each(format!("https {host}"), addrs, move |stream| {
        let acceptor = acceptor.clone();
        let body = body.clone();
        async move {
            // A failed handshake (the client distrusts our CA) just ends the
            // connection; the client reports why.
            let Ok(Ok(tls)) = tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await
            else {
                return;
            };
            serve(tls, body).await;
        }
    })
}

/// Listen on each of `addrs` and hand every accepted connection to `handle`, on a
/// task of its own, until the service drops.
fn accept_each<H, Fut>(
    name: String,
    addrs: &[SocketAddr],
    handle: H,
) -> Result<Service, ServiceError>
where
    H: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut service = Service::new(name);
    for &addr in addrs {
        let listener = bind_tcp(addr)?;
        let local = listener.local_addr().unwrap_or(addr);
        let handle = handle.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(handle(stream));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        service.push(local, task);
    }
    Ok(service)
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, body: Arc<str>) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Some(h)) => h,
        _ => return,
    };
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body): (&str, &str) = match (method, path) {
        ("GET", "/") => ("200 OK", &body),
        ("GET", _) => ("404 Not Found", "not found\n"),
        _ => ("405 Method Not Allowed", "only GET\n"),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(response.as_bytes()).await.is_ok() {
        // close_notify for TLS, FIN for TCP: the client reads to the end.
        let _ = stream.shutdown().await;
    }
}

/// The request head up to the blank line, or `None` when the client closed early
/// or sent more than [`MAX_HEAD`].
async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            head.truncate(end);
            return String::from_utf8(head).ok();
        }
        if head.len() > MAX_HEAD {
            return None;
        }
    }
}
