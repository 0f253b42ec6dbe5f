//! An authoritative DNS server for the lab's test zone, on UDP and TCP, with
//! hickory-proto for the wire format.
//!
//! It answers A and AAAA from a [`Zone`], NXDOMAIN for names it does not hold,
//! and an empty NOERROR answer (NODATA) for a held name asked with another type.
//! It refuses to recurse (it is the whole DNS of the lab, no packet leaves it) and
//! answers FORMERR to anything that is not one standard query.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use super::{Service, ServiceError, bind_tcp, bind_udp};

/// The TTL of every answer. Short: nothing in the lab caches, but a real stub
/// resolver would, and a stale answer must not outlive a scenario.
const TTL: u32 = 5;

/// The names the lab's DNS server knows, each with its addresses.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    names: BTreeMap<String, Vec<IpAddr>>,
}

impl Zone {
    pub fn new() -> Self {
        Zone::default()
    }

    /// Add an address for `name` (case-insensitive, with or without the final dot):
    /// IPv4 addresses answer A queries, IPv6 addresses AAAA queries.
    pub fn with(mut self, name: &str, addr: IpAddr) -> Self {
        self.names.entry(normalize(name)).or_default().push(addr);
        self
    }

    /// The answer for `name` and `rtype`: `None` when the name does not exist
    /// (NXDOMAIN), otherwise its addresses of that type (maybe none: NODATA).
    pub fn lookup(&self, name: &str, rtype: RecordType) -> Option<Vec<IpAddr>> {
        let addrs = self.names.get(&normalize(name))?;
        Some(
            addrs
                .iter()
                .copied()
                .filter(|a| match rtype {
                    RecordType::A => a.is_ipv4(),
                    RecordType::AAAA => a.is_ipv6(),
                    _ => false,
                })
                .collect(),
        )
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Serve `zone` on UDP and TCP on each of `addrs` (normally port 53). Returns once
/// every socket is bound and every TCP socket listens.
pub async fn start(addrs: &[SocketAddr], zone: Zone) -> Result<Service, ServiceError> {
    let zone = Arc::new(zone);
    let mut service = Service::new("dns");
    for &addr in addrs {
        let udp = bind_udp(addr)?;
        let local = udp.local_addr().unwrap_or(addr);
        let z = zone.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                if let Some(reply) = answer(&z, &buf[..n]) {
                    // A send error (peer gone, or dropped by the host's own OUTPUT)
                    // is the client's to observe as no answer.
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        service.push(local, task);

        let tcp = bind_tcp(local)?;
        let local = tcp.local_addr().unwrap_or(local);
        let z = zone.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = tcp.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        conns.spawn(serve_tcp(stream, z.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        service.push(local, task);
    }
    Ok(service)
}

/// DNS over TCP: each message behind a two-byte length (RFC 1035 4.2.2); several
/// queries may share one connection.
async fn serve_tcp(mut stream: tokio::net::TcpStream, zone: Arc<Zone>) {
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let mut msg = vec![0u8; usize::from(len)];
        if stream.read_exact(&mut msg).await.is_err() {
            return;
        }
        let Some(reply) = answer(&zone, &msg) else {
            return;
        };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&reply);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The encoded reply to one encoded query, or `None` when the bytes are not even
/// a DNS header (nothing sensible to answer).
fn answer(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    let request = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) => {
            // Echo the id when there is one, so the client can match the FORMERR.
            let id = u16::from_be_bytes([*query.first()?, *query.get(1)?]);
            return Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
                .to_vec()
                .ok();
        }
    };
    let id = request.metadata.id;
    let op = request.metadata.op_code;
    if request.metadata.message_type != MessageType::Query
        || op != OpCode::Query
        || request.queries.len() != 1
    {
        return Message::error_msg(id, op, ResponseCode::FormErr)
            .to_vec()
            .ok();
    }
    let q: &Query = &request.queries[0];
    let mut reply = Message::response(id, op);
    reply.metadata.authoritative = true;
    reply.metadata.recursion_desired = request.metadata.recursion_desired;
    reply.add_query(q.clone());
    let name = q.name().to_ascii();
    match zone.lookup(&name, q.query_type()) {
        None => reply.metadata.response_code = ResponseCode::NXDomain,
        Some(addrs) => {
            for addr in addrs {
                let rdata = match addr {
                    IpAddr::V4(a) => RData::A(A(a)),
                    IpAddr::V6(a) => RData::AAAA(AAAA(a)),
                };
                reply.add_answer(Record::from_rdata(q.name().clone(), TTL, rdata));
            }
        }
    }
    reply.to_vec().ok()
}

/// A name as hickory wants it, for probes building queries.
pub(crate) fn parse_name(name: &str) -> Result<Name, String> {
    Name::from_ascii(name).map_err(|e| format!("bad name {name:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_answers_by_type_and_says_nxdomain() {
        let z = Zone::new()
            .with("www.lab.test", "192.0.2.80".parse().unwrap())
            .with("WWW.lab.test.", "2001:db8::80".parse().unwrap());
        assert_eq!(
            z.lookup("www.LAB.test.", RecordType::A),
            Some(vec!["192.0.2.80".parse().unwrap()])
        );
        assert_eq!(
            z.lookup("www.lab.test", RecordType::AAAA),
            Some(vec!["2001:db8::80".parse().unwrap()])
        );
        assert_eq!(z.lookup("www.lab.test", RecordType::MX), Some(vec![]));
        assert_eq!(z.lookup("nope.lab.test", RecordType::A), None);
    }

    #[test]
    fn garbage_gets_formerr_with_its_id() {
        let z = Zone::new();
        let reply = answer(&z, &[0x12, 0x34, 0xff]).unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    }
}
