//! Raw sockets for the probes (ICMP echo, crafted TCP, capture of a handshake),
//! and the one `pre_exec` hook of the lab's child processes. This is the only
//! module of the probes and services with `unsafe`; each block says why it holds.
//!
//! It refuses to do anything else: sockets are made through socket2's safe API
//! and wrapped in tokio's `AsyncFd`, so waiting for a packet never blocks the
//! host's single runtime thread.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

/// A non-blocking raw socket registered with the calling host's runtime.
pub(crate) struct RawSocket {
    fd: AsyncFd<Socket>,
}

impl RawSocket {
    /// A raw socket of `protocol` for the family of `peer`, in the calling
    /// thread's network namespace. Needs CAP_NET_RAW.
    pub(crate) fn new(peer: IpAddr, protocol: Protocol) -> io::Result<Self> {
        let domain = match peer {
            IpAddr::V4(_) => Domain::IPV4,
            IpAddr::V6(_) => Domain::IPV6,
        };
        let sock = Socket::new(domain, Type::RAW, Some(protocol))?;
        sock.set_nonblocking(true)?;
        // SAFETY: `sock` is a socket2::Socket, which owns its descriptor: the fd is
        // valid and open, only the AsyncFd holds the Socket from here on, and a
        // Socket's as_raw_fd() always returns the descriptor it was made with, so
        // it refers to the same open file description until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register(sock) }.map_err(io::Error::from)?;
        Ok(RawSocket { fd })
    }

    /// A socket that sends whole IP packets, header included: IPPROTO_RAW implies
    /// IP_HDRINCL for IPv4 and IPV6_HDRINCL for IPv6 (Linux >= 4.5), and it never
    /// receives anything.
    pub(crate) fn sender(peer: IpAddr) -> io::Result<Self> {
        Self::new(peer, Protocol::from(libc::IPPROTO_RAW))
    }

    pub(crate) fn send_to(&self, packet: &[u8], to: IpAddr) -> io::Result<usize> {
        // Raw sockets take the port field as a protocol selector: 0 means "this
        // socket's own protocol".
        let addr = SockAddr::from(SocketAddr::new(to, 0));
        // A raw send does not block for long; a full queue is an error to report.
        self.fd.get_ref().send_to(packet, &addr)
    }

    /// The next datagram: its bytes in `buf` and where it came from.
    pub(crate) async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|inner| recv_from(inner.get_ref(), buf)) {
                Ok(Ok((n, from))) => {
                    let ip = from
                        .as_socket()
                        .map(|s| s.ip())
                        .ok_or_else(|| io::Error::other("raw socket peer is not an ip address"))?;
                    return Ok((n, ip));
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_from(sock: &Socket, buf: &mut [u8]) -> io::Result<(usize, SockAddr)> {
    // SAFETY: `MaybeUninit<u8>` has the same size, alignment and layout as `u8`,
    // and every initialized byte is a valid `MaybeUninit<u8>`. recvfrom(2) only
    // ever writes initialized bytes into the buffer, never de-initializes it, so
    // `buf` is still a valid `&mut [u8]` afterwards. The reborrow ends before `buf`
    // is used again.
    let uninit = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    sock.recv_from(uninit)
}

/// Make `cmd`'s child receive SIGKILL when the thread that spawned it dies: a lab
/// host's thread, so the child dies with its host even when the test process is
/// SIGKILLed. (Linux ties PR_SET_PDEATHSIG to the parent *thread*, which is what a
/// host-per-thread lab wants.)
pub(crate) fn die_with_parent(cmd: &mut tokio::process::Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the hook runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed. It makes two raw syscalls (prctl,
    // getppid) through nix, which allocate nothing and take no lock; the only
    // captured value is a plain pid copied before the fork.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)?;
            // The parent may have died between fork and prctl: then nobody
            // will ever send the signal, so die now instead of lingering.
            if nix::unistd::getppid() != parent {
                return Err(io::Error::other("parent died before exec"));
            }
            Ok(())
        });
    }
}

/// SIGKILL `root` and every process descended from it (`procs::descendants`),
/// all killed. sshd's per-connection processes call setsid(2), so neither the
/// process group nor a parent-death signal reaches them.
pub(crate) fn kill_tree(root: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let tree = crate::procs::descendants(root);
    for pid in tree {
        if let Ok(pid) = i32::try_from(pid) {
            // ESRCH (already gone) is the goal reached.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}
