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
///
/// The two ends get different ifindexes (the next free one here, that plus
/// [`PEER_INDEX_OFFSET`] for the peer, or the kernel's choice if those are
/// taken): the kernel treats a link event as urgent only when a device's index
/// differs from its peer's (`linkwatch_urgent_event`), and in fresh namespaces
/// both ends would otherwise get index 2, so their operstate changes (and with
/// them the IPv6 MLD reports) waited up to a second in linkwatch, landing in the
/// first probes' counters as noise. [`add_veth_indexed`] picks them explicitly.
pub async fn add_veth(local: &str, peer: &str, peer_netns: RawFd) -> Result<u32> {
    let handle = host::netlink();
    let highest = handle
        .link()
        .get()
        .execute()
        .try_fold(
            1u32,
            |max, msg| async move { Ok(max.max(msg.header.index)) },
        )
        .await
        .map_err(error::netlink(&here(), "list links"))?;
    let local_index = highest + 1;
    match add_veth_indexed(
        local,
        peer,
        peer_netns,
        Some((local_index, local_index + PEER_INDEX_OFFSET)),
    )
    .await
    {
        Ok(index) => Ok(index),
        // The peer's namespace already uses that index: let the kernel choose.
        Err(_) => add_veth_indexed(local, peer, peer_netns, None).await,
    }
}

/// What [`add_veth`] adds to the local end's index to get the peer's.
pub const PEER_INDEX_OFFSET: u32 = 1000;

/// [`add_veth`] with the (local, peer) ifindexes given, or `None` for the
/// kernel's choice. The kernel honours the peer's index only when the local one
/// is given too; give them different values (see [`add_veth`]).
pub async fn add_veth_indexed(
    local: &str,
    peer: &str,
    peer_netns: RawFd,
    indexes: Option<(u32, u32)>,
) -> Result<u32> {
    let handle = host::netlink();
    let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_owned())
        .setns_by_fd(peer_netns);
    if let Some((_, index)) = indexes {
        peer_msg = peer_msg.index(index);
    }
    let peer_msg = peer_msg.build();
    let mut msg =
        LinkVeth::new(local, peer).set_info_data(rtnetlink::packet_route::link::InfoData::Veth(
            rtnetlink::packet_route::link::InfoVeth::Peer(peer_msg),
        ));
    if let Some((index, _)) = indexes {
        msg = msg.index(index);
    }
    let msg = msg.build();
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

/// Add a route to `dest` via `gateway` (same family).
pub async fn add_route(dest: ipnet::IpNet, gateway: IpAddr) -> Result<()> {
    let what = || format!("add route {dest} via {gateway}");
    let msg = match (dest, gateway) {
        (ipnet::IpNet::V4(d), IpAddr::V4(gw)) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(d.network(), d.prefix_len())
            .gateway(gw)
            .build(),
        (ipnet::IpNet::V6(d), IpAddr::V6(gw)) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(d.network(), d.prefix_len())
            .gateway(gw)
            .build(),
        _ => {
            return Err(LabError::Sys {
                host: here(),
                what: what(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "destination and gateway are of different families",
                ),
            });
        }
    };
    host::netlink()
        .route()
        .add(msg)
        .execute()
        .await
        .map_err(error::netlink(&here(), what()))
}

/// Add the default route of the address's family via `gateway`, with the
/// `quickack` metric (RTAX_QUICKACK): TCP through it ACKs every segment at once
/// instead of up to a delayed-ACK timeout (40 ms or more) later.
///
/// Every lab host gets its default route here, so no connection of the lab has a
/// delayed ACK in flight when a ruleset loads. With one, conntrack picks a session
/// older than the ruleset up from the client's side, and a test meant to watch
/// the server speak first watches the client instead (measured: 2 runs in 6 of
/// the ssh-session scenario, 4 in 6 of the services trial).
pub async fn add_default_route(gateway: IpAddr) -> Result<()> {
    use rtnetlink::packet_route::route::{RouteAttribute, RouteMetric};
    let mut msg = match gateway {
        IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new().gateway(gw).build(),
        IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new().gateway(gw).build(),
    };
    msg.attributes
        .push(RouteAttribute::Metrics(vec![RouteMetric::QuickAck(1)]));
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

/// Delete the neighbour (ARP / NDP) entries of `family` in the calling host's
/// namespace, or only those for `only` when given, so the next packet must
/// resolve its neighbour again. Permanent and no-ARP entries stay. Returns how
/// many were deleted.
pub async fn flush_neighbours(
    family: crate::backend::Family,
    only: Option<IpAddr>,
) -> Result<usize> {
    use rtnetlink::packet_route::AddressFamily;
    use rtnetlink::packet_route::neighbour::{
        NeighbourAddress, NeighbourAttribute, NeighbourState,
    };

    let handle = host::netlink();
    let af = match family {
        crate::backend::Family::V4 => AddressFamily::Inet,
        crate::backend::Family::V6 => AddressFamily::Inet6,
    };
    let what = || format!("flush {family} neighbours");
    let entries: Vec<_> = handle
        .neighbours()
        .get()
        .set_address_family(af)
        .execute()
        .try_collect()
        .await
        .map_err(error::netlink(&here(), what()))?;
    let mut deleted = 0;
    for msg in entries {
        if matches!(
            msg.header.state,
            NeighbourState::Noarp | NeighbourState::Permanent
        ) {
            continue;
        }
        let dest = msg.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
            _ => None,
        });
        if only.is_some() && dest != only {
            continue;
        }
        match handle.neighbours().del(msg).execute().await {
            Ok(()) => deleted += 1,
            // Gone meanwhile (expired, or already being resolved again).
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::ENOENT => {}
            Err(e) => return Err(error::netlink(&here(), what())(e)),
        }
    }
    Ok(deleted)
}
