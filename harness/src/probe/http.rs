//! HTTP GET over plain TCP: `GET /` with a Host header, the status line and the
//! body's first line as the detail.
//!
//! Any well-formed HTTP response is `Ok` (the service answered); the detail
//! carries the status so a caller can demand `200`. It does not follow redirects.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Outcome, from_io, within};

/// The most of a response a probe reads; the lab's pages are tiny.
const MAX_RESPONSE: u64 = 64 * 1024;

/// `GET /` from `addr` with `Host: host`: `Ok("200 OK portcullis lab: web")`.
pub async fn get(addr: SocketAddr, host: &str, window: Duration) -> Outcome {
    within(window, async {
        let stream = match tokio::net::TcpStream::connect(addr).await {
            Ok(s) => s,
            Err(e) => return from_io(&format!("connect {addr}"), &e),
        };
        exchange(stream, host, &format!("http {addr}")).await
    })
    .await
}

/// Send the request on an established stream (plain or TLS) and judge the reply.
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    host: &str,
    ctx: &str,
) -> Outcome {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: portcullis-probe\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return from_io(ctx, &e);
    }
    let mut raw = Vec::new();
    let read = (&mut stream).take(MAX_RESPONSE).read_to_end(&mut raw).await;
    // A TLS peer that closes without close_notify still sent a whole response;
    // judge what arrived before reporting the read error.
    match read {
        Err(e) if raw.is_empty() => return from_io(ctx, &e),
        _ => {}
    }
    parse_response(&raw, ctx)
}

fn parse_response(raw: &[u8], ctx: &str) -> Outcome {
    let text = String::from_utf8_lossy(raw);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        if raw.is_empty() {
            return Outcome::Refused(format!("{ctx}: closed without a response"));
        }
        return Outcome::Failed(format!("{ctx}: malformed response"));
    };
    let status_line = head.lines().next().unwrap_or_default();
    let Some(status) = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
    else {
        return Outcome::Failed(format!("{ctx}: not an HTTP status line: {status_line:?}"));
    };
    let first = body.lines().next().unwrap_or_default();
    Outcome::Ok(format!("{status} {first}").trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_first_body_line_make_the_detail() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 21\r\n\r\nportcullis lab: web\nmore\n";
        assert_eq!(
            parse_response(raw, "t"),
            Outcome::Ok("200 OK portcullis lab: web".into())
        );
        assert!(matches!(parse_response(b"", "t"), Outcome::Refused(_)));
        assert!(matches!(
            parse_response(b"SSH-2.0-OpenSSH\r\n\r\n", "t"),
            Outcome::Failed(_)
        ));
    }
}
