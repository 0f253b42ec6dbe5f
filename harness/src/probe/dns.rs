//! Resolve a name with one DNS query, over UDP or TCP: the lab's equivalent of
//! the seed's `ping hostname`, whose first step is exactly this query.
//!
//! It asks one server, once; it neither retries nor falls back from UDP to TCP,
//! so the outcome says what that one transport can do.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Outcome, from_io, within};
use crate::services::dns::parse_name;

/// Which record a probe asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rtype {
    A,
    Aaaa,
}

/// How the query travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Ask `server` for `name`'s `rtype` over `over`. `Ok(detail)` lists the addresses
/// answered (comma-separated, in answer order); NXDOMAIN, an empty answer or any
/// other error code is `Failed`; a refused TCP connection or an ICMP port
/// unreachable is `Refused`; silence for `window` is `NoAnswer`.
pub async fn resolve(
    server: SocketAddr,
    name: &str,
    rtype: Rtype,
    over: Transport,
    window: Duration,
) -> Outcome {
    let query = match build_query(name, rtype) {
        Ok(q) => q,
        Err(e) => return Outcome::Failed(e),
    };
    let id = query.metadata.id;
    let bytes = match query.to_vec() {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(format!("encode query: {e}")),
    };
    within(window, async {
        let reply = match over {
            Transport::Udp => udp_exchange(server, id, &bytes).await,
            Transport::Tcp => tcp_exchange(server, &bytes).await,
        };
        match reply {
            Ok(msg) => judge(&msg, id, name, rtype),
            Err(outcome) => outcome,
        }
    })
    .await
}

fn build_query(name: &str, rtype: Rtype) -> Result<Message, String> {
    let name = parse_name(name)?;
    let rtype = match rtype {
        Rtype::A => RecordType::A,
        Rtype::Aaaa => RecordType::AAAA,
    };
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(name, rtype));
    Ok(msg)
}

async fn udp_exchange(server: SocketAddr, id: u16, query: &[u8]) -> Result<Message, Outcome> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let ctx = format!("dns udp {server}");
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| from_io(&ctx, &e))?;
    // Connected, so an ICMP port unreachable comes back as ECONNREFUSED and
    // datagrams from anyone else are filtered by the kernel.
    sock.connect(server).await.map_err(|e| from_io(&ctx, &e))?;
    sock.send(query).await.map_err(|e| from_io(&ctx, &e))?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = sock.recv(&mut buf).await.map_err(|e| from_io(&ctx, &e))?;
        // A stray datagram with another id is not our answer: keep waiting.
        match Message::from_vec(&buf[..n]) {
            Ok(msg) if msg.metadata.id == id => return Ok(msg),
            _ => continue,
        }
    }
}

async fn tcp_exchange(server: SocketAddr, query: &[u8]) -> Result<Message, Outcome> {
    let ctx = format!("dns tcp {server}");
    let mut stream = tokio::net::TcpStream::connect(server)
        .await
        .map_err(|e| from_io(&ctx, &e))?;
    let len = u16::try_from(query.len()).map_err(|_| Outcome::Failed("query too long".into()))?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    stream
        .write_all(&out)
        .await
        .map_err(|e| from_io(&ctx, &e))?;
    let len = stream
        .read_u16()
        .await
        .map_err(|e| eof_is_refusal(&ctx, e))?;
    let mut msg = vec![0u8; usize::from(len)];
    stream
        .read_exact(&mut msg)
        .await
        .map_err(|e| eof_is_refusal(&ctx, e))?;
    Message::from_vec(&msg).map_err(|e| Outcome::Failed(format!("{ctx}: malformed answer: {e}")))
}

/// The server closing the connection without an answer is a refusal to answer.
fn eof_is_refusal(ctx: &str, e: std::io::Error) -> Outcome {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Outcome::Refused(format!("{ctx}: closed without an answer"))
    } else {
        from_io(ctx, &e)
    }
}

fn judge(msg: &Message, id: u16, name: &str, rtype: Rtype) -> Outcome {
    if msg.metadata.id != id || msg.metadata.message_type != MessageType::Response {
        return Outcome::Failed(format!("answer for {name} is not a response to our query"));
    }
    let code = msg.metadata.response_code;
    match code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Outcome::Failed(format!("{name}: nxdomain")),
        other => {
            return Outcome::Failed(format!("{name}: {}", other.to_str().to_ascii_lowercase()));
        }
    }
    let addrs: Vec<String> = msg
        .answers
        .iter()
        .filter_map(|r| match (&r.data, rtype) {
            (RData::A(a), Rtype::A) => Some(IpAddr::V4(a.0).to_string()),
            (RData::AAAA(a), Rtype::Aaaa) => Some(IpAddr::V6(a.0).to_string()),
            _ => None,
        })
        .collect();
    if addrs.is_empty() {
        return Outcome::Failed(format!("{name}: no {rtype:?} record"));
    }
    Outcome::Ok(addrs.join(","))
}
