//! Flushing the conntrack table of the calling host thread's namespace with one
//! ctnetlink message per family, no `conntrack` process.
//!
//! Must run on a lab host's thread: a netlink socket is bound to the namespace of
//! the thread that opens it. It refuses to run anywhere else.

use std::io;

use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::backend::Family;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;

/// Delete every conntrack entry of `family` in the calling host's namespace (an
/// `IPCTNL_MSG_CT_DELETE` without a tuple is a flush, as `conntrack -F` sends).
pub fn flush(family: Family) -> io::Result<()> {
    if crate::host::current_host().is_none() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "refusing to flush conntrack off a lab host thread",
        ));
    }
    let af = match family {
        Family::V4 => libc::AF_INET,
        Family::V6 => libc::AF_INET6,
    } as u8;
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;

    // nlmsghdr (16 bytes, host order) + nfgenmsg (family, version 0, res_id 0 BE).
    let mut msg = Vec::with_capacity(20);
    msg.extend_from_slice(&20u32.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(&[af, 0, 0, 0]);
    socket.send(&msg, 0)?;

    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    socket.recv(&mut buf, 0)?;
    let reply = &buf[..];
    if reply.len() < 20 {
        return Err(io::Error::other("short ctnetlink reply"));
    }
    let kind = u16::from_ne_bytes([reply[4], reply[5]]);
    if kind != NLMSG_ERROR {
        return Err(io::Error::other(format!(
            "unexpected ctnetlink reply type {kind}"
        )));
    }
    let code = i32::from_ne_bytes([reply[16], reply[17], reply[18], reply[19]]);
    match code {
        0 => Ok(()),
        // ENOENT: the table is already empty for this family.
        c if -c == libc::ENOENT => Ok(()),
        c => Err(io::Error::from_raw_os_error(-c)),
    }
}
