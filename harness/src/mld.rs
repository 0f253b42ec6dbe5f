//! MLD settling: waiting, on a host thread, until a namespace has sent the
//! Multicast Listener Discovery reports its fresh IPv6 interfaces cause, so they
//! never land in a probe's counters.
//!
//! It reads `/proc/thread-self/net/{igmp6,if_inet6,snmp6}`: the calling thread's
//! namespace, so call it on the host thread whose namespace you mean
//! (`host.try_run(move || settle_mld(deadline))`). Off a host thread it would
//! read the namespace of whatever thread calls it. The lab's namespaces report at
//! once instead of at random within a second (the sysctls `Host::new` sets).

/// On a host thread: wait until the namespace has sent the MLD reports its
/// interfaces' multicast joins cause, or until `deadline`; whether it settled.
///
/// A fresh IPv6 interface joins the solicited-node group of each address and
/// reports each join twice (robustness 2, retransmitted at once in lab
/// namespaces). Reports through a loaded ruleset's OUTPUT chain would show up in
/// probe evidence, so call this after adding a link to a host whose counters you
/// read. Settled means: every interface with reportable groups has its
/// link-local address (until then that group is not joined),
/// `Icmp6OutMLDv2Reports` is at least twice the number of such interfaces,
/// and it has not moved for [`MLD_QUIET`]. Not twice the groups: one MLDv2
/// report carries several group records, and with forwarding on (a target with
/// `inner`) the kernel bundles them (measured: 9 reportable groups, 8 reports
/// in all, so a bound of twice the groups never held and every such lab waited
/// out its whole limit) (the kernel re-reports every group
/// when an interface becomes ready after some joins, so the count can overshoot;
/// measured: one idle probe in ten saw a late report without the quiet period).
/// Polls every 2 ms; unreadable /proc files count as settled.
pub async fn settle_mld(deadline: std::time::Instant) -> bool {
    let mut last: Option<(u64, std::time::Instant)> = None;
    loop {
        let now = std::time::Instant::now();
        match mld_state() {
            None => return true,
            Some((ready, sent)) => {
                let since = match last {
                    Some((n, t)) if n == sent => t,
                    _ => now,
                };
                last = Some((sent, since));
                if ready && now.duration_since(since) >= MLD_QUIET {
                    return true;
                }
            }
        }
        if now >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// How long the MLD report count must stay still for [`settle_mld`]: three
/// retransmission steps (the kernel retransmits every jiffy, 10 ms at HZ=100,
/// with the lab's zero report interval).
pub const MLD_QUIET: std::time::Duration = std::time::Duration::from_millis(30);

/// (whether every interface has its link-local address and the namespace sent
/// at least two reports per interface with reportable groups, reports sent),
/// or `None` when the /proc files cannot be read.
fn mld_state() -> Option<(bool, u64)> {
    let read = |f: &str| std::fs::read_to_string(format!("/proc/thread-self/net/{f}"));
    let (Ok(igmp6), Ok(if_inet6), Ok(snmp6)) = (read("igmp6"), read("if_inet6"), read("snmp6"))
    else {
        return None;
    };
    // igmp6: index, device, group, users, flags (hex), timer. MAF_NOREPORT
    // (0x08) marks groups never reported (ff02::1, interface-local ones).
    let mut devices = std::collections::BTreeSet::new();
    for l in igmp6.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 5
            && f[1] != "lo"
            && u32::from_str_radix(f[4], 16).is_ok_and(|flags| flags & 0x08 == 0)
        {
            devices.insert(f[1].to_owned());
        }
    }
    // if_inet6: address, ifindex, prefix, scope, flags, device. Scope 0x20 is
    // link-local; flag 0x40 is tentative.
    let has_link_local = |dev: &str| {
        if_inet6.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 6
                && f[5] == dev
                && f[3] == "20"
                && u32::from_str_radix(f[4], 16).is_ok_and(|flags| flags & 0x40 == 0)
        })
    };
    let sent: u64 = snmp6
        .lines()
        .find(|l| l.starts_with("Icmp6OutMLDv2Reports"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(u64::MAX);
    Some((
        devices.iter().all(|d| has_link_local(d)) && sent >= 2 * devices.len() as u64,
        sent,
    ))
}
