//! Links, addresses and routes through rtnetlink, for the calling host thread.
//!
//! Every function here is async and must run on a lab host's thread (inside
//! `Host::run`): it uses that thread's netlink handle, bound to the host's
//! namespace. No `ip` subprocess.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::RawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{self, LabError, Result};
use crate::host;

fn here() -> String {
    host::current_host().unwrap_or_else(|| "?".into())
}

/// Create a veth pair: `local` here, `peer` directly inside the namespace held by
/// `peer_netns` (IFLA_NET_NS_FD on the peer, which saves a move). Both ends are
/// created down: asking for IFF_UP in the same message fails with ENOTCONN when
/// the peer goes to another namespace (iproute2 6.1 on Linux 6.18 shows the same),
/// so the local end is set up here and the peer's host sets its own end up.
/// Returns the local end's index.
pub async fn add_veth(local: &str, peer: &str, peer_netns: RawFd) -> Result<u32> {
    let handle = host::netlink();
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_owned())
        .setns_by_fd(peer_netns)
        .build();
    let msg = LinkVeth::new(local, peer)
        .set_info_data(rtnetlink::packet_route::link::InfoData::Veth(
            rtnetlink::packet_route::link::InfoVeth::Peer(peer_msg),
        ))
        .build();
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(error::netlink(
            &here(),
            format!("add veth {local} <-> {peer}"),
        ))?;
    let index = link_index(local).await?;
    set_up(index).await?;
    Ok(index)
}

/// The index of the link named `name`.
pub async fn link_index(name: &str) -> Result<u32> {
    let handle = host::netlink();
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(msg.header.index),
        Ok(None) => Err(LabError::Sys {
            host: here(),
            what: format!("find link {name}"),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        }),
        Err(e) => Err(error::netlink(&here(), format!("find link {name}"))(e)),
    }
}

/// Set link `index` up.
pub async fn set_up(index: u32) -> Result<()> {
    host::netlink()
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(error::netlink(&here(), format!("set link {index} up")))
}

/// Add `addr/prefix` on link `index`; IPv6 addresses get `nodad` so they are
/// usable at once.
pub async fn add_address(index: u32, addr: IpAddr, prefix: u8) -> Result<()> {
    let mut req = host::netlink().address().add(index, addr, prefix);
    if addr.is_ipv6() {
        req.message_mut().header.flags |= AddressHeaderFlags::Nodad;
    }
    req.execute().await.map_err(error::netlink(
        &here(),
        format!("add address {addr}/{prefix}"),
    ))
}

/// Add the default route of the address's family via `gateway`.
pub async fn add_default_route(gateway: IpAddr) -> Result<()> {
    let msg = match gateway {
        IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw).build(),
    };
    host::netlink()
        .route()
        .add(msg)
        .execute()
        .await
        .map_err(error::netlink(
            &here(),
            format!("add default route via {gateway}"),
        ))
}

/// Turn on IPv4 and IPv6 forwarding in the calling host's namespace.
pub fn enable_forwarding() -> Result<()> {
    for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
        host::sysctl(key, "1").map_err(error::sys(&here(), format!("write {key}=1")))?;
    }
    Ok(())
}
