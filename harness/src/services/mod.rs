//! Services: the servers the lab's hosts run (DNS, HTTP, HTTPS, a plain TCP
//! listener, a UDP echo, real OpenSSH).
//!
//! Every server is namespace-agnostic: its `start` is an async function that binds
//! in whichever lab host (thread, namespace, current-thread tokio runtime) awaits
//! it, and returns once the sockets are bound and listening, so a probe made right
//! after `start` returns meets a ready server: readiness is proven by the bind, never
//! slept for. The returned [`Service`] (or [`ssh::Sshd`]) stops the server when
//! dropped.
//!
//! The API, all async functions awaited on a host's thread (they need that
//! thread's tokio runtime with IO, time and, for OpenSSH, process support):
//!
//! - [`dns::start`]`(&[SocketAddr], dns::Zone) -> Result<Service>`: UDP and TCP on
//!   each address, A/AAAA from the zone, NXDOMAIN otherwise.
//! - [`http::start`]`(&[SocketAddr], host) -> Result<Service>` and
//!   [`http::start_tls`]`(&[SocketAddr], host, &tls::ServerCert)`: `GET /` answers
//!   `200 OK` with [`http::body_for`]`(host)`.
//! - [`tls::LabCa::new`]`(name)`, [`tls::LabCa::issue`]`(&[dns names], &[IpAddr])
//!   -> ServerCert`, [`tls::LabCa::cert`] (what clients trust).
//! - [`tcp::echo`]`(&[SocketAddr]) -> Result<Service>`: a listener that echoes.
//! - [`udp::echo`]`(&[SocketAddr]) -> Result<Service>`: a UDP socket that sends
//!   every datagram back to its sender.
//! - [`ssh::Sshd::start`]`(Arc<ssh::LabDir>, &[IpAddr], port) -> Result<Sshd>`,
//!   [`ssh::Sshd::client`] -> [`ssh::Client`] with `run(addr, command, window)
//!   -> Outcome` and `session(addr, command, window) -> Result<ssh::Session>`.
//! - [`Service::stop`] closes every socket before it returns; dropping a
//!   [`Service`] schedules the same.
//!
//! What this module refuses to do: bind wildcard addresses (a lab host serves on
//! the addresses it was given, so a probe to any other address of the host proves
//! something), talk to the namespace it was not started in, or keep serving after
//! its handle is dropped.

pub mod dns;
pub mod http;
pub mod ssh;

pub mod tcp;
pub mod tls;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::task::JoinHandle;

/// What went wrong starting or running a service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot bind {proto} {addr}: {source} (is the address on a link of this host?)")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("tls setup failed: {0}")]
    Tls(String),
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} did not become ready within {waited_ms} ms: {detail}")]
    NotReady {
        what: String,
        waited_ms: u128,
        detail: String,
    },
    #[error("unsafe lab directory {path}: {reason}")]
    UnsafeDir { path: PathBuf, reason: String },
}

/// A running in-process service. Dropping it aborts its tasks: the listening
/// sockets and every open connection close the next time the host's runtime turns
/// (a task is dropped by the runtime that owns it, on that host's thread).
#[must_use = "dropping a Service stops it"]
#[derive(Debug)]
pub struct Service {
    what: String,
    addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Service {
    pub(crate) fn new(what: impl Into<String>) -> Self {
        Service {
            what: what.into(),
            addrs: Vec::new(),
            tasks: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, addr: SocketAddr, task: JoinHandle<()>) {
        self.addrs.push(addr);
        self.tasks.push(task);
    }

    /// What this service is, e.g. `dns` or `http www.lab.test`.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The addresses actually bound (a port 0 in the request is resolved here).
    /// A service on UDP and TCP lists each address once per protocol.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Stop now and return once every socket of the service is closed (drop only
    /// schedules that for the runtime's next turn).
    pub async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // Cancelled is the expected result; a panic in a task is not ours to
            // re-raise at shutdown.
            let _ = t.await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Bind a TCP listener on `addr` in the calling host's namespace.
pub(crate) fn bind_tcp(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServiceError> {
    let err = |source| ServiceError::Bind {
        proto: "tcp",
        addr,
        source,
    };
    // std's bind sets SO_REUSEADDR on Unix, so a service restarted on the same port
    // while old connections sit in TIME_WAIT binds at once.
    let l = std::net::TcpListener::bind(addr).map_err(err)?;
    l.set_nonblocking(true).map_err(err)?;
    tokio::net::TcpListener::from_std(l).map_err(err)
}

/// Bind a UDP socket on `addr` in the calling host's namespace.
pub(crate) fn bind_udp(addr: SocketAddr) -> Result<tokio::net::UdpSocket, ServiceError> {
    let err = |source| ServiceError::Bind {
        proto: "udp",
        addr,
        source,
    };
    let s = std::net::UdpSocket::bind(addr).map_err(err)?;
    s.set_nonblocking(true).map_err(err)?;
    tokio::net::UdpSocket::from_std(s).map_err(err)
}
