//! The standard lab: a router joining `target`, `admin`, `outsider`, `resolver`
//! and `web`, each on its own dual-stack link, documentation addresses only; and
//! on demand ([`Lab::add_inner`], [`LabOptions::inner`]) `inner`, a host on a
//! second link of the target that the rest of the lab reaches only through it.
//!
//! The address plan lives in [`HostId::plan`] and docs/lab.md. Teardown is driven
//! by `Drop` in reverse order of creation; [`Lab::shutdown`] does the same and
//! returns every error. The lab refuses to read or touch the namespace it was
//! started in: all work happens on the hosts' own threads.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::backend::{Backend, Family};
use crate::counters::{Counters, Selector};
use crate::error::{LabError, Result};
use crate::evidence::Evidence;
use crate::host::Host;
use crate::link;
use crate::probe::Outcome;

/// The ifindex of every host's `eth0`.
pub const LEAF_IFINDEX: u32 = 100;
/// The upstream end of a host's link (on the router, or on the target for
/// `inner`) gets this plus the host's [`HostId`] number: never
/// [`LEAF_IFINDEX`], so both ends of each veth see a peer with another index
/// (see [`link::add_veth`]).
pub const ROUTER_IFINDEX_BASE: u32 = 10;

/// The hosts of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostId {
    /// Joins every other host; forwards both families.
    Router,
    /// The firewall under test.
    Target,
    /// Inside the subnet a policy allows SSH from.
    Admin,
    /// Outside it.
    Outsider,
    /// DNS on 53.
    Resolver,
    /// HTTP 80, HTTPS 443, and a port the policy does not open.
    Web,
    /// On a second link of the target, reachable only THROUGH it (the FORWARD
    /// chain); not part of [`Lab::standard`] unless asked ([`Lab::add_inner`]).
    Inner,
}

impl HostId {
    /// Every host, in creation order (teardown runs in reverse).
    pub const ALL: [HostId; 7] = [
        HostId::Router,
        HostId::Target,
        HostId::Admin,
        HostId::Outsider,
        HostId::Resolver,
        HostId::Web,
        HostId::Inner,
    ];
    /// The hosts [`Lab::standard`] builds, in creation order: all but `inner`.
    pub const STANDARD: [HostId; 6] = match HostId::ALL {
        [standard @ .., HostId::Inner] => standard,
        _ => panic!("inner is made last"),
    };
    /// The hosts on a link to the router: all but the router and `inner`.
    pub const LEAVES: [HostId; 5] = match HostId::ALL {
        [HostId::Router, leaves @ .., HostId::Inner] => leaves,
        _ => panic!("the router is made first, inner last"),
    };

    pub fn name(self) -> &'static str {
        match self {
            HostId::Router => "router",
            HostId::Target => "target",
            HostId::Admin => "admin",
            HostId::Outsider => "outsider",
            HostId::Resolver => "resolver",
            HostId::Web => "web",
            HostId::Inner => "inner",
        }
    }

    /// The host at the other end of this host's link, its gateway: the router
    /// for the leaves, the target for `inner`; `None` for the router.
    pub fn upstream(self) -> Option<HostId> {
        match self {
            HostId::Router => None,
            HostId::Inner => Some(HostId::Target),
            _ => Some(HostId::Router),
        }
    }

    /// The plan of a host's link: its subnets, its addresses and its gateway's
    /// ([`HostId::upstream`]). `None` for the router, which has one address per
    /// leaf link (the gateways).
    pub fn plan(self) -> Option<LinkPlan> {
        // (v4 network, v6 network number): /28s out of the three documentation
        // /24s, 2001:db8:N::/64 with N the host's number.
        let (v4, n): ([u8; 4], u16) = match self {
            HostId::Router => return None,
            HostId::Target => ([192, 0, 2, 0], 1),
            HostId::Admin => ([198, 51, 100, 0], 2),
            HostId::Outsider => ([203, 0, 113, 0], 3),
            HostId::Resolver => ([192, 0, 2, 16], 4),
            HostId::Web => ([192, 0, 2, 32], 5),
            HostId::Inner => ([192, 0, 2, 48], 6),
        };
        let base = Ipv4Addr::from(v4);
        let b = u32::from(base);
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 0);
        Some(LinkPlan {
            subnet_v4: Ipv4Net::new(base, 28).expect("valid prefix"),
            subnet_v6: Ipv6Net::new(v6, 64).expect("valid prefix"),
            gateway_v4: Ipv4Addr::from(b + 1),
            host_v4: Ipv4Addr::from(b + 2),
            gateway_v6: Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 1),
            host_v6: Ipv6Addr::new(0x2001, 0xdb8, n, 0, 0, 0, 0, 2),
        })
    }

    /// The upstream-side interface name of a host's link (`to-target` on the
    /// router, ..., `to-inner` on the target).
    pub fn uplink_ifname(self) -> String {
        format!("to-{}", self.name())
    }
}

impl std::fmt::Display for HostId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for HostId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostId::ALL
            .into_iter()
            .find(|h| h.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown host `{s}`: expected router, target, admin, outsider, resolver, web or inner"
                )
            })
    }
}

/// One host's link to its upstream ([`HostId::upstream`]): the host's end is
/// `eth0`, the upstream's is `to-<host>` and holds the gateway addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct LinkPlan {
    pub subnet_v4: Ipv4Net,
    pub subnet_v6: Ipv6Net,
    pub gateway_v4: Ipv4Addr,
    pub gateway_v6: Ipv6Addr,
    pub host_v4: Ipv4Addr,
    pub host_v6: Ipv6Addr,
}

impl LinkPlan {
    pub fn addr(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.host_v4.into(),
            Family::V6 => self.host_v6.into(),
        }
    }
    pub fn subnet(&self, family: Family) -> IpNet {
        match family {
            Family::V4 => self.subnet_v4.into(),
            Family::V6 => self.subnet_v6.into(),
        }
    }
    pub fn gateway(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.gateway_v4.into(),
            Family::V6 => self.gateway_v6.into(),
        }
    }
}

/// Options for building a lab.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// Bind-mount every namespace at `/run/netns/pc-<pid>-<seq>-<host>` so that
    /// `ip netns exec` works on a paused lab. Default: [`crate::debug::DEBUG_ENV`].
    pub debug: bool,
    /// Build `inner` with the lab ([`Lab::add_inner`]), so its link settles with
    /// the others before any ruleset loads.
    pub inner: bool,
}

impl LabOptions {
    /// Options from the environment (`PORTCULLIS_LAB_DEBUG=1` turns debug on).
    pub fn from_env() -> Self {
        LabOptions {
            debug: crate::debug::debug_from_env(),
            inner: false,
        }
    }
}

/// The standard lab. See the module docs.
pub struct Lab {
    /// In creation order; dropped in reverse.
    hosts: Vec<(HostId, Host)>,
    /// The debug-mount tag of this lab's hosts (`None`: no mounts).
    tag: Option<String>,
    backend: Mutex<Option<Backend>>,
    /// When the links came up, for [`Lab::settle`].
    links_up: Instant,
    settled: AtomicBool,
    /// Held from a probe's first snapshot to its last, so probes sharing a lab
    /// from several threads never see each other's packets in their evidence.
    probing: Mutex<()>,
}

/// How long after the links come up [`Lab::settle`] waits at most for the
/// target's MLD reports. Measured: all sent within 30 ms (3 jiffies at HZ=100).
pub const SETTLE_LIMIT: Duration = Duration::from_millis(300);

impl Lab {
    /// Build the standard lab (debug mounts per [`LabOptions::from_env`]).
    pub fn standard() -> Result<Lab> {
        Self::standard_with(LabOptions::from_env())
    }

    /// Build the standard lab with explicit options.
    pub fn standard_with(options: LabOptions) -> Result<Lab> {
        let tag = options.debug.then(crate::debug::next_mount_tag);
        // Start every host thread first so their namespaces come up in parallel.
        let starting = HostId::STANDARD
            .iter()
            .map(|id| Host::start(id.name()).map(|s| (*id, s)))
            .collect::<Result<Vec<_>>>()?;
        let mut lab = Lab {
            hosts: Vec::with_capacity(HostId::ALL.len()),
            tag: tag.clone(),
            backend: Mutex::new(None),
            links_up: Instant::now(),
            settled: AtomicBool::new(false),
            probing: Mutex::new(()),
        };
        for (id, s) in starting {
            lab.hosts.push((id, s.finish(tag.clone())?));
        }

        // The router makes every veth pair, each peer created directly in its
        // leaf's namespace, and its own addresses.
        let leaves: Vec<_> = HostId::LEAVES
            .iter()
            .map(|id| (*id, lab.host(*id).netns_arc(), id.plan().expect("leaf")))
            .collect();
        lab.host(HostId::Router).try_run(move || async move {
            link::enable_forwarding()?;
            for (id, netns, plan) in &leaves {
                let index = link::add_veth_indexed(
                    &id.uplink_ifname(),
                    "eth0",
                    netns.as_raw_fd(),
                    Some((ROUTER_IFINDEX_BASE + *id as u32, LEAF_IFINDEX)),
                )
                .await?;
                link::add_address(index, plan.gateway_v4.into(), plan.subnet_v4.prefix_len())
                    .await?;
                link::add_address(index, plan.gateway_v6.into(), plan.subnet_v6.prefix_len())
                    .await?;
            }
            Ok::<_, LabError>(())
        })??;

        // Each leaf configures its end; all leaves at once.
        let jobs: Vec<_> = HostId::LEAVES
            .iter()
            .map(|id| {
                let plan = id.plan().expect("leaf");
                lab.host(*id).run_async(move || configure_eth0(plan))
            })
            .collect();
        for r in futures::executor::block_on(futures::future::join_all(jobs)) {
            r??;
        }
        lab.links_up = Instant::now();
        if options.inner {
            lab.add_inner()?;
        }
        Ok(lab)
    }

    /// Add `inner` ([`HostId::Inner`]) if the lab has none yet: a namespace on a
    /// second link of the target (`to-inner` there, `eth0` in inner, addresses
    /// per [`HostId::plan`]), forwarding on in the target, and routes to inner's
    /// subnets via the target on the router. The target's new link sends MLD
    /// reports like every fresh link: called before the first load (or with
    /// [`LabOptions::inner`]) they settle with the rest; called later, this waits
    /// for them here ([`Lab::settle`]), so they never land in a probe's counters.
    pub fn add_inner(&mut self) -> Result<()> {
        if self.has(HostId::Inner) {
            return Ok(());
        }
        let id = HostId::Inner;
        let plan = id.plan().expect("inner is planned");
        let inner = Host::start(id.name())?.finish(self.tag.clone())?;
        let netns = inner.netns_arc();
        // In the lab at once, so teardown takes it down even if the rest fails.
        self.hosts.push((id, inner));
        self.host(HostId::Target).try_run(move || async move {
            link::enable_forwarding()?;
            let index = link::add_veth_indexed(
                &id.uplink_ifname(),
                "eth0",
                netns.as_raw_fd(),
                Some((ROUTER_IFINDEX_BASE + id as u32, LEAF_IFINDEX)),
            )
            .await?;
            link::add_address(index, plan.gateway_v4.into(), plan.subnet_v4.prefix_len()).await?;
            link::add_address(index, plan.gateway_v6.into(), plan.subnet_v6.prefix_len()).await?;
            Ok::<_, LabError>(())
        })??;
        self.host(id).try_run(move || configure_eth0(plan))??;
        let target = HostId::Target.plan().expect("leaf");
        self.host(HostId::Router).try_run(move || async move {
            for family in Family::ALL {
                link::add_route(plan.subnet(family), target.addr(family)).await?;
            }
            Ok::<_, LabError>(())
        })??;
        self.links_up = Instant::now();
        // Settled already (a ruleset may be loaded): wait for the new reports now.
        if std::mem::take(self.settled.get_mut()) {
            self.settle()?;
        }
        Ok(())
    }

    /// Whether the lab has host `id` (`inner` only after [`Lab::add_inner`]).
    pub fn has(&self, id: HostId) -> bool {
        self.hosts.iter().any(|(h, _)| *h == id)
    }

    /// The hosts of the lab, in creation order.
    pub fn ids(&self) -> Vec<HostId> {
        self.hosts.iter().map(|(h, _)| *h).collect()
    }

    /// A host of the lab.
    ///
    /// # Panics
    /// For [`HostId::Inner`] before [`Lab::add_inner`].
    pub fn host(&self, id: HostId) -> &Host {
        match self.hosts.iter().find(|(h, _)| *h == id) {
            Some((_, host)) => host,
            None => panic!("the lab has no {id} host (inner needs Lab::add_inner)"),
        }
    }

    /// The address of a host (the router's own address on a leaf's link is that
    /// leaf's [`LinkPlan::gateway`]).
    ///
    /// # Panics
    /// For the router, which has no single address.
    pub fn addr(&self, id: HostId, family: Family) -> IpAddr {
        id.plan()
            .expect("the router has one address per link: use plan().gateway")
            .addr(family)
    }

    /// The subnet of a host's link (e.g. the admin subnet a policy's
    /// `allow_from` names).
    ///
    /// # Panics
    /// For the router.
    pub fn subnet(&self, id: HostId, family: Family) -> IpNet {
        id.plan()
            .expect("the router has no single subnet")
            .subnet(family)
    }

    /// Load `text` into the target with one `*-restore -w`; later counter reads
    /// use the same backend.
    ///
    /// Refuses a second backend in the same lab: a packet would pass both
    /// kernels' hooks and the counters of one would not tell the whole story.
    ///
    /// The first load waits for [`Lab::settle`], so the target's MLD reports are
    /// out before any rule can count them.
    pub fn load(&self, backend: Backend, family: Family, text: &str) -> Result<()> {
        self.settle()?;
        let mut current = self.backend.lock().unwrap();
        same_backend(*current, backend)?;
        self.host(HostId::Target).load(backend, family, text)?;
        *current = Some(backend);
        Ok(())
    }

    /// Load `sets` (an `ipset restore` text, or `None` for none), then each
    /// family's rules (`None`: no rules, every chain ACCEPT), into the target:
    /// first every family's chains are opened (so no rule matches an old set),
    /// then the target's sets are replaced, then the rules load, one restore
    /// per family. As [`Lab::load`], one backend per lab.
    pub fn load_with_sets(
        &self,
        backend: Backend,
        sets: Option<&str>,
        rules: &[(Family, Option<&str>)],
    ) -> Result<()> {
        const OPEN: &str =
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        for family in Family::ALL {
            self.load(backend, family, OPEN)?;
        }
        self.host(HostId::Target).load_sets(sets)?;
        for (family, text) in rules {
            self.load(backend, *family, text.unwrap_or(OPEN))?;
        }
        Ok(())
    }

    /// For rules the target got by other means than [`Lab::load`] (a distro's
    /// boot loader, `portcullis apply`): read its counters with `backend` from
    /// now on, so [`Lab::probe`] and [`Lab::counters`] see them. Refuses a
    /// second backend, as `load` does.
    pub fn adopt_backend(&self, backend: Backend) -> Result<()> {
        let mut current = self.backend.lock().unwrap();
        same_backend(*current, backend)?;
        *current = Some(backend);
        Ok(())
    }

    /// The backend of the last [`Lab::load`].
    pub fn backend(&self) -> Option<Backend> {
        *self.backend.lock().unwrap()
    }

    /// The target's counters for `families` (both families read in parallel).
    pub fn counters(&self, families: &[Family]) -> Result<Counters> {
        let backend = self.backend().ok_or(LabError::NoBackend)?;
        let target = self.host(HostId::Target);
        let reads: Vec<_> = families
            .iter()
            .map(|&family| {
                let host = target.name().to_owned();
                target.run_async(move || async move {
                    crate::kcounters::counters(backend, family, None, &host).await
                })
            })
            .collect();
        let mut all = Counters::default();
        for r in futures::executor::block_on(futures::future::join_all(reads)) {
            all.extend(r??);
        }
        Ok(all)
    }

    /// Zero the target's counters (both families) and flush its conntrack table,
    /// so the next step starts clean.
    pub fn reset(&self) -> Result<()> {
        let backend = self.backend().ok_or(LabError::NoBackend)?;
        self.settle()?;
        let target = self.host(HostId::Target);
        for family in Family::ALL {
            target.zero_counters(backend, family)?;
        }
        target.flush_conntrack()
    }

    /// Run `probe` on host `from` and return its outcome with what the target's
    /// rules and chain policies counted meanwhile: every counter with its growth,
    /// zeros kept ([`Counters::since`]; `family` limits the snapshots to one
    /// family, `None` reads both). Before any [`Lab::load`], the counters are
    /// empty. Probes of one lab run one at a time, so concurrent callers never
    /// see each other's packets.
    pub fn probe<F, Fut>(&self, from: HostId, family: Option<Family>, probe: F) -> Result<Evidence>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Outcome> + 'static,
    {
        let families: Vec<Family> = match family {
            Some(f) => vec![f],
            None => Family::ALL.to_vec(),
        };
        self.probe_watching(from, &families, None, probe)
    }

    /// [`Lab::probe`] for a probe whose packet must be dropped by what `by` names
    /// in the target's `filter` table of `family`: it returns as soon as that
    /// counter has risen while nothing answered, instead of waiting the probe's
    /// whole window (the window stays the bound for "nothing counted it"). The
    /// counter is read on the target while the probe runs, [`FAST_POLL`] apart
    /// at first, then every [`COUNTER_POLL`]
    /// (a netlink dump or a getsockopt, no process: [`crate::kcounters`]); when
    /// it rises the probe is stopped and
    /// its outcome is [`Outcome::NoAnswer`]: the packet was dropped, so nothing
    /// can answer it. The evidence is the same as [`Lab::probe`]'s (snapshots
    /// before and after): a drop is still proved by a counter, never by silence.
    ///
    /// Only when every counter `by` names drops (a `DROP` policy, `-j DROP`
    /// rules) does the counter end the probe; otherwise (nothing loaded, `by`
    /// names an ACCEPT rule or nothing) this is [`Lab::probe`] with its window.
    pub fn probe_dropped<F, Fut>(
        &self,
        from: HostId,
        family: Family,
        by: &Selector,
        probe: F,
    ) -> Result<Evidence>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Outcome> + 'static,
    {
        self.probe_watching(from, &[family], Some(by), probe)
    }

    fn probe_watching<F, Fut>(
        &self,
        from: HostId,
        families: &[Family],
        by: Option<&Selector>,
        probe: F,
    ) -> Result<Evidence>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Outcome> + 'static,
    {
        let loaded = self.backend();
        self.settle()?;
        // A probe that panicked while holding the lock left nothing half-done
        // behind it: the next probe may go on.
        let _one_at_a_time = self
            .probing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(backend) = loaded else {
            let outcome = self.host(from).try_run(probe)?;
            return Ok(Evidence {
                outcome,
                counters: Counters::default(),
            });
        };
        let before = self.counters(families)?;
        let watch = match (by, families) {
            (Some(by), &[family]) => {
                let filter = before.table(WATCHED_TABLE);
                let mut named = filter.matching(by).peekable();
                let drops = named.peek().is_some() && named.all(|c| c.is_drop());
                drops.then(|| (family, by.clone(), filter.packets(by)))
            }
            _ => None,
        };
        let outcome = match watch {
            None => self.host(from).try_run(probe)?,
            Some((family, by, base)) => {
                self.run_until_counted(from, backend, family, by, base, probe)?
            }
        };
        let counters = self.counters(families)?.since(&before);
        Ok(Evidence { outcome, counters })
    }

    /// Run `probe` on `from` while the target's task reads the counter `by`
    /// names; stop the probe (outcome [`Outcome::NoAnswer`]) once the counter
    /// is above `base`.
    fn run_until_counted<F, Fut>(
        &self,
        from: HostId,
        backend: Backend,
        family: Family,
        by: Selector,
        base: u64,
        probe: F,
    ) -> Result<Outcome>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Outcome> + 'static,
    {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
        let run = self.host(from).run_async(move || async move {
            let outcome = tokio::select! {
                o = probe() => o,
                // The counter that drops this probe's packet counted it.
                _ = stop_rx => Outcome::NoAnswer,
            };
            drop(done_tx);
            outcome
        });
        let host = self.host(HostId::Target).name().to_owned();
        let watch = self.host(HostId::Target).run_async(move || async move {
            let mut reads = 0u32;
            loop {
                // Between reads only: a read is never abandoned half-way.
                if !matches!(
                    done_rx.try_recv(),
                    Err(tokio::sync::oneshot::error::TryRecvError::Empty)
                ) {
                    return Ok(());
                }
                let now =
                    crate::kcounters::counters(backend, family, Some(WATCHED_TABLE), &host).await?;
                if now.packets(&by) > base {
                    let _ = stop_tx.send(());
                    return Ok(());
                }
                // The first reads come fast (the packet is usually counted
                // within a few hundred microseconds): tokio's timer counts
                // whole milliseconds, so those waits sleep on a blocking
                // thread instead.
                reads += 1;
                let pause = async {
                    if reads <= FAST_POLLS {
                        let _ = tokio::task::spawn_blocking(|| std::thread::sleep(FAST_POLL)).await;
                    } else {
                        tokio::time::sleep(COUNTER_POLL).await;
                    }
                };
                tokio::select! {
                    _ = &mut done_rx => return Ok(()),
                    () = pause => {}
                }
            }
        });
        let (outcome, watched) = futures::executor::block_on(futures::future::join(run, watch));
        watched??;
        outcome
    }

    /// Forget the neighbour entries (ARP / NDP) of `family` on host `id`, and its
    /// peers' entries for it (its upstream's entry for its address; each
    /// downstream host's entry for its gateway: every leaf's when `id` is the
    /// router, inner's when it is the target), so the next exchange starts with
    /// neighbour resolution. Returns how many were deleted.
    pub fn flush_neighbours(&self, id: HostId, family: Family) -> Result<usize> {
        let mut jobs = vec![
            self.host(id)
                .run_async(move || link::flush_neighbours(family, None))
                .boxed(),
        ];
        if let (Some(up), Some(plan)) = (id.upstream(), id.plan()) {
            let addr = plan.addr(family);
            jobs.push(
                self.host(up)
                    .run_async(move || link::flush_neighbours(family, Some(addr)))
                    .boxed(),
            );
        }
        for down in self.ids() {
            if down.upstream() == Some(id) {
                let gw = down
                    .plan()
                    .expect("a host with an upstream")
                    .gateway(family);
                jobs.push(
                    self.host(down)
                        .run_async(move || link::flush_neighbours(family, Some(gw)))
                        .boxed(),
                );
            }
        }
        let mut deleted = 0;
        for r in futures::executor::block_on(futures::future::join_all(jobs)) {
            deleted += r??;
        }
        Ok(deleted)
    }

    /// Wait until the target has sent the MLD reports its new link causes, so
    /// they do not land in a probe's counters: a fresh IPv6 interface reports
    /// each multicast group it joins (the solicited-node groups of its addresses)
    /// twice (the robustness variable), over about 3 jiffies. The check is
    /// [`crate::mld::settle_mld`] on the target, giving up [`SETTLE_LIMIT`] after the
    /// links came up. Runs once
    /// per lab; [`Lab::load`], [`Lab::reset`] and [`Lab::probe`] call it, so a
    /// lab that is only built and torn down never waits.
    pub fn settle(&self) -> Result<()> {
        if self.settled.load(Ordering::Acquire) {
            return Ok(());
        }
        let deadline = self.links_up + SETTLE_LIMIT;
        self.host(HostId::Target)
            .try_run(move || crate::mld::settle_mld(deadline))?;
        self.settled.store(true, Ordering::Release);
        Ok(())
    }

    /// Tear down now, in reverse order, and return every error (Drop does the
    /// same and logs them to stderr).
    pub fn shutdown(mut self) -> Result<(), Vec<LabError>> {
        let errors = self.teardown();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn teardown(&mut self) -> Vec<LabError> {
        let mut errors = Vec::new();
        while let Some((_, host)) = self.hosts.pop() {
            if let Err(e) = host.shutdown() {
                errors.extend(e);
            }
        }
        errors
    }
}

/// How often [`Lab::probe_dropped`] reads the counter it waits on (each read is
/// a kernel read of some tens of microseconds, [`crate::kcounters`]).
pub const COUNTER_POLL: Duration = Duration::from_millis(1);

/// The pause between the first [`FAST_POLLS`] reads of [`Lab::probe_dropped`].
pub const FAST_POLL: Duration = Duration::from_micros(100);

/// How many reads [`Lab::probe_dropped`] makes [`FAST_POLL`] apart before it
/// falls back to [`COUNTER_POLL`] (about 3 ms of them).
pub const FAST_POLLS: u32 = 30;

/// The table [`Lab::probe_dropped`] watches: where a policy's rules live.
const WATCHED_TABLE: &str = "filter";

/// Refuse `asked` when the lab already uses another backend.
fn same_backend(loaded: Option<Backend>, asked: Backend) -> Result<()> {
    match loaded {
        Some(loaded) if loaded != asked => Err(LabError::MixedBackends { loaded, asked }),
        _ => Ok(()),
    }
}

/// A host's end of its link: `eth0` up with its addresses, default routes via
/// its gateway (on the host's own thread).
async fn configure_eth0(plan: LinkPlan) -> Result<()> {
    let index = link::link_index("eth0").await?;
    link::set_up(index).await?;
    link::add_address(index, plan.host_v4.into(), plan.subnet_v4.prefix_len()).await?;
    link::add_address(index, plan.host_v6.into(), plan.subnet_v6.prefix_len()).await?;
    link::add_default_route(plan.gateway_v4.into()).await?;
    link::add_default_route(plan.gateway_v6.into()).await?;
    Ok(())
}

impl Drop for Lab {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("lab: teardown: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documentation(a: IpAddr) -> bool {
        let docs: [IpNet; 4] = [
            "192.0.2.0/24".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
            "203.0.113.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        docs.iter().any(|n| n.contains(&a))
    }

    #[test]
    fn the_plan_uses_documentation_addresses_on_disjoint_subnets() {
        let mut subnets = Vec::new();
        for id in HostId::ALL.into_iter().filter(|h| h.upstream().is_some()) {
            let p = id.plan().unwrap();
            for f in Family::ALL {
                assert!(documentation(p.addr(f)), "{id} {f}");
                assert!(documentation(p.gateway(f)), "{id} {f}");
                assert!(p.subnet(f).contains(&p.addr(f)));
                assert!(p.subnet(f).contains(&p.gateway(f)));
                assert_ne!(p.addr(f), p.gateway(f));
                subnets.push(p.subnet(f));
            }
        }
        for (i, a) in subnets.iter().enumerate() {
            for b in &subnets[i + 1..] {
                assert!(!a.contains(b) && !b.contains(a), "{a} overlaps {b}");
            }
        }
        assert_eq!(subnets.len(), 12, "six links, two families");
        assert!(HostId::Router.plan().is_none());
        assert!(HostId::ALL.iter().all(|h| h.uplink_ifname().len() <= 15));
        // inner's gateway is the target's address on inner's link.
        let inner = HostId::Inner.plan().unwrap();
        assert_eq!(HostId::Inner.upstream(), Some(HostId::Target));
        assert_eq!(inner.subnet(Family::V4).to_string(), "192.0.2.48/28");
        assert_eq!(inner.subnet(Family::V6).to_string(), "2001:db8:6::/64");
    }

    #[test]
    fn host_names_round_trip() {
        for h in HostId::ALL {
            assert_eq!(h.name().parse::<HostId>(), Ok(h));
            assert_eq!(h.to_string(), h.name());
        }
        assert!("gateway".parse::<HostId>().unwrap_err().contains("inner"));
    }
}
