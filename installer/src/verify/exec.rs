//! Running probes in the lab: the one place `verify` and the scenario suite touch
//! namespaces, through the harness's [`Lab`]. Every probe, server and child runs
//! on its lab host's own thread; nothing here calls setns, and nothing touches the
//! namespace the process started in.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use portcullis_harness::probe::{self, Outcome};
use portcullis_harness::services::ssh;
use portcullis_harness::services::{self, Service};
use portcullis_harness::{Backend, Counters, Evidence, Family, HostId, Lab, Task, link};
use rustls_pki_types::CertificateDer;

use super::counters::TABLE;
use super::expect::{HostAddr, Topology};
use super::model::{Expect, HOSTS, ProbeKind, ProbeSpec};
use super::{Expectation, LabRules, Row, VerifyError};

/// The name the lab's DNS answers and its web server's certificate carries.
pub const WEB_NAME: &str = "www.lab.test";
/// A port `web` listens on that the default policy does not open.
pub const CLOSED_PORT: u16 = 8081;
/// A port the target listens on that no inbound rule of the default opens.
pub const CLOSED_INBOUND_PORT: u16 = 9099;
/// How long a probe expected to succeed may take: it returns as soon as it does
/// (a few milliseconds in the lab), so this only bounds a failure.
pub const PATIENT: Duration = Duration::from_secs(1);
/// The same for a real ssh login (key exchange, authentication, a session).
pub const PATIENT_SSH: Duration = Duration::from_secs(3);

/// What went wrong driving the lab (not a probe's outcome: that is data).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExecError(pub String);

fn err(what: &str) -> impl FnOnce(portcullis_harness::LabError) -> ExecError + '_ {
    move |e| ExecError(format!("{what}: {e}"))
}

/// A long-lived interactive SSH session opened by [`LabSession::open_ssh_session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SshSessionId(pub usize);

/// The remote side of a session: it prints on its own, every 100 ms, and never
/// reads its input (the server speaks first, the client never types).
const TICKER: &str = "while :; do echo tick; sleep 0.1; done";

/// A request to a session task: read `lines` fresh lines, each within `window`.
struct SessionCmd {
    lines: usize,
    window: Duration,
    reply: tokio::sync::oneshot::Sender<Outcome>,
}

/// A session owned by a task on its client host's thread (the ssh child and its
/// pipes belong to that host's runtime).
struct SessionHandle {
    family: Family,
    tx: tokio::sync::mpsc::UnboundedSender<SessionCmd>,
    _task: Task,
}

/// The lab's address plan ([`HostId::plan`]) as `verify` sees it.
pub fn topology() -> Topology {
    let mut hosts = Vec::new();
    for h in HOSTS {
        let plan = h.plan().expect("every probe host is planned");
        for family in Family::ALL {
            hosts.push(HostAddr {
                host: h,
                family,
                addr: plan.addr(family),
                subnet: plan.subnet(family),
            });
        }
    }
    Topology {
        hosts,
        closed_port: CLOSED_PORT,
        closed_inbound_port: CLOSED_INBOUND_PORT,
    }
}

/// The standard lab under one backend, its servers, and the target's rules.
pub struct LabSession {
    backend: Backend,
    topology: Topology,
    ca: CertificateDer<'static>,
    /// Servers, dropped before the lab (their tasks are aborted).
    services: Vec<Service>,
    /// (host, port, on loopback) of every TCP listener.
    listeners: Vec<(HostId, u16, bool)>,
    /// (host, port) of every UDP echo server.
    udp_servers: Vec<(HostId, u16)>,
    /// Open ssh sessions (their tasks run on the client host's thread); dropped
    /// before sshd.
    sessions: Vec<SessionHandle>,
    /// sshd on the target: its port, a client for it, and the task holding it.
    sshd: Option<(u16, ssh::Client, Task)>,
    loaded: bool,
    /// Whether the target holds ipsets from an earlier load.
    sets_loaded: bool,
    lab: Lab,
}

impl LabSession {
    /// Build the standard lab and start its servers: DNS on the resolver, HTTP,
    /// HTTPS and a listener on [`CLOSED_PORT`] on web.
    pub fn start(backend: Backend) -> Result<LabSession, ExecError> {
        let lab = Lab::standard().map_err(err("building the standard lab"))?;
        let topology = topology();
        let both = |h: HostId, port: u16| -> Vec<SocketAddr> {
            Family::ALL
                .iter()
                .map(|&f| SocketAddr::new(topology.addr(h, f).expect("planned"), port))
                .collect()
        };
        let zone = Family::ALL
            .iter()
            .fold(services::dns::Zone::new(), |z, &f| {
                z.with(WEB_NAME, topology.addr(HostId::Web, f).expect("planned"))
            });
        let dns_addrs = both(HostId::Resolver, 53);
        let dns = lab
            .host(HostId::Resolver)
            .run_async(move || async move { services::dns::start(&dns_addrs, zone).await });
        let (web80, web443, web_closed) = (
            both(HostId::Web, 80),
            both(HostId::Web, 443),
            both(HostId::Web, CLOSED_PORT),
        );
        let web_ips: Vec<IpAddr> = web80.iter().map(|a| a.ip()).collect();
        let web = lab.host(HostId::Web).run_async(move || async move {
            let ca = services::tls::LabCa::new("portcullis verify lab ca")?;
            let leaf = ca.issue(&[WEB_NAME], &web_ips)?;
            let http = services::http::start(&web80, "web").await?;
            let https = services::http::start_tls(&web443, "web", &leaf).await?;
            let closed = services::tcp::echo(&web_closed).await?;
            Ok::<_, services::ServiceError>((ca.cert().clone(), vec![http, https, closed]))
        });
        let (dns, web) = futures::executor::block_on(futures::future::join(dns, web));
        let dns = dns
            .map_err(err("the resolver"))?
            .map_err(|e| ExecError(format!("dns on the resolver: {e}")))?;
        let (ca, mut svcs) = web
            .map_err(err("the web host"))?
            .map_err(|e| ExecError(format!("servers on web: {e}")))?;
        svcs.push(dns);
        Ok(LabSession {
            backend,
            topology,
            ca,
            services: svcs,
            listeners: vec![
                (HostId::Web, CLOSED_PORT, false),
                (HostId::Web, 80, false),
                (HostId::Web, 443, false),
            ],
            udp_servers: Vec::new(),
            sessions: Vec::new(),
            sshd: None,
            loaded: false,
            sets_loaded: false,
            lab,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The lab's target host (`verify --root` runs the image's boot loader there).
    pub fn target(&self) -> &portcullis_harness::Host {
        self.lab.host(HostId::Target)
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Load `rules` into the target with one restore per family; a family without
    /// text is reset to no rules at all (ACCEPT), as on a host without a ruleset.
    /// With sets (or sets from an earlier load), `Lab::load_with_sets`: the sets
    /// replace the target's before the rules that match them load.
    /// Every load after the first also flushes the target's conntrack table, so a
    /// connection an earlier step made (an ICMP echo id, say) cannot pass a later
    /// ruleset as ESTABLISHED.
    pub fn load(&mut self, rules: &LabRules) -> Result<(), ExecError> {
        const OPEN: &str =
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
        if rules.sets.is_some() || self.sets_loaded {
            // The sets first (replacing earlier ones), then the rules that match them.
            let per_family: Vec<(Family, Option<&str>)> =
                Family::ALL.iter().map(|&f| (f, rules.get(f))).collect();
            self.lab
                .load_with_sets(self.backend, rules.sets.as_deref(), &per_family)
                .map_err(err("loading the sets and rules"))?;
            self.sets_loaded = rules.sets.is_some();
        } else {
            for family in Family::ALL {
                let text = rules.get(family).unwrap_or(OPEN);
                self.lab
                    .load(self.backend, family, text)
                    .map_err(err(&format!("loading the {family} rules")))?;
            }
        }
        if self.loaded {
            self.lab
                .host(HostId::Target)
                .flush_conntrack()
                .map_err(err("flushing conntrack"))?;
        }
        self.loaded = true;
        Ok(())
    }

    /// Zero the target's counters and forget its conntrack entries.
    pub fn reset_counters(&mut self) -> Result<(), ExecError> {
        self.lab.reset().map_err(err("resetting counters"))
    }

    /// The target's `filter` counters of `family` now (zero before any load).
    pub fn counters(&self, family: Family) -> Result<Counters, ExecError> {
        if !self.loaded {
            return Ok(Counters::default());
        }
        let c = self
            .lab
            .counters(&[family])
            .map_err(err("reading counters"))?;
        Ok(c.table(TABLE))
    }

    fn addr(&self, h: HostId, f: Family) -> Result<IpAddr, ExecError> {
        self.topology
            .addr(h, f)
            .ok_or_else(|| ExecError(format!("the lab has no {f} address on {h}")))
    }

    /// Lab host `h`, built first if it is `inner`.
    fn host(&mut self, h: HostId) -> Result<&portcullis_harness::Host, ExecError> {
        if h == HostId::Inner {
            self.add_inner()?;
        }
        Ok(self.lab.host(h))
    }

    /// A TCP echo listener on `h`:`port`, both families; with `lo`, on the
    /// target's 127.0.0.1 and ::1 instead.
    fn ensure_listener(&mut self, h: HostId, port: u16, lo: bool) -> Result<(), ExecError> {
        let key = (h, port, lo);
        if self.listeners.contains(&key) {
            return Ok(());
        }
        let addrs: Vec<SocketAddr> = if lo {
            vec![
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), port),
            ]
        } else {
            Family::ALL
                .iter()
                .map(|&f| self.addr(h, f).map(|a| SocketAddr::new(a, port)))
                .collect::<Result<_, _>>()?
        };
        let svc = self
            .host(h)?
            .try_run(move || async move { services::tcp::echo(&addrs).await })
            .map_err(err("starting a listener"))?
            .map_err(|e| ExecError(format!("a listener on {h} port {port}: {e}")))?;
        self.services.push(svc);
        self.listeners.push(key);
        Ok(())
    }

    /// A UDP echo server on `h`:`port`, both families.
    fn ensure_udp_server(&mut self, h: HostId, port: u16) -> Result<(), ExecError> {
        if self.udp_servers.contains(&(h, port)) {
            return Ok(());
        }
        let addrs: Vec<SocketAddr> = Family::ALL
            .iter()
            .map(|&f| self.addr(h, f).map(|a| SocketAddr::new(a, port)))
            .collect::<Result<_, _>>()?;
        let svc = self
            .host(h)?
            .try_run(move || async move { services::udp::echo(&addrs).await })
            .map_err(err("starting a udp echo server"))?
            .map_err(|e| ExecError(format!("a udp echo server on {h} port {port}: {e}")))?;
        self.services.push(svc);
        self.udp_servers.push((h, port));
        Ok(())
    }

    /// Real OpenSSH sshd on the target, on `port` of both its addresses.
    fn ensure_sshd(&mut self, port: u16) -> Result<ssh::Client, ExecError> {
        if let Some((p, client, _)) = &self.sshd {
            if *p == port {
                return Ok(client.clone());
            }
            return Err(ExecError(format!(
                "sshd already runs on port {p}; one scenario uses one ssh port"
            )));
        }
        let listen: Vec<IpAddr> = Family::ALL
            .iter()
            .map(|&f| self.addr(HostId::Target, f))
            .collect::<Result<_, _>>()?;
        let (client, task) = self
            .lab
            .host(HostId::Target)
            .serve(move || async move {
                let dir = std::sync::Arc::new(ssh::LabDir::new()?);
                let sshd = ssh::Sshd::start(dir, &listen, port).await?;
                let client = sshd.client();
                Ok::<_, services::ServiceError>((client, async move {
                    // sshd lives as long as this task: dropping the task kills it.
                    let _sshd = sshd;
                    std::future::pending::<()>().await
                }))
            })
            .map_err(|e| ExecError(format!("sshd on the target: {e}")))?;
        self.listeners.push((HostId::Target, port, false));
        self.sshd = Some((port, client.clone(), task));
        Ok(client)
    }

    /// Add `inner`, the host behind the target ([`Lab::add_inner`]; idempotent).
    /// Called before [`LabSession::load`], its link settles with the others.
    pub fn add_inner(&mut self) -> Result<(), ExecError> {
        self.lab.add_inner().map_err(err("the inner host"))
    }

    /// Forget `host`'s neighbour cache of `family`, and its peers' entries for it
    /// (see [`Lab::flush_neighbours`]).
    pub fn flush_neighbours(&mut self, host: HostId, family: Family) -> Result<(), ExecError> {
        if host == HostId::Inner {
            self.add_inner()?;
        }
        self.lab
            .flush_neighbours(host, family)
            .map_err(err("flushing neighbours"))
            .map(drop)
    }

    /// Send one probe through [`Lab::probe`]: its outcome and its family's
    /// `filter` counters over it. `expect` picks the window: a probe expected to
    /// get no answer waits the short negative window, any other up to
    /// [`PATIENT`] (it returns at once on success).
    pub fn probe(&mut self, spec: &ProbeSpec, expect: Expect) -> Result<Evidence, ExecError> {
        self.probe_counted(spec, expect, None)
    }

    /// [`LabSession::probe`] knowing the promise's `counted_by`: a probe
    /// expected to get no answer whose packet `counted_by` must drop returns as
    /// soon as that counter rose ([`Lab::probe_dropped`]), its window only the
    /// bound for "nothing counted it". An ssh probe expected to get no answer is
    /// a plain TCP connect to sshd's port (its SYN's counter decides), never a
    /// client login that cannot happen.
    pub fn probe_counted(
        &mut self,
        spec: &ProbeSpec,
        expect: Expect,
        counted_by: Option<&super::CountedBy>,
    ) -> Result<Evidence, ExecError> {
        if spec.kind == ProbeKind::SshLimit {
            return self.ssh_limit(spec, expect);
        }
        let f = spec.family;
        let window = if expect == Expect::NoAnswer {
            probe::NEGATIVE_WINDOW
        } else {
            PATIENT
        };
        let port = spec.port.or(spec.kind.default_port()).unwrap_or(0);
        if spec.involves(HostId::Inner) {
            self.add_inner()?;
        }
        // Servers the probe needs, started before the snapshot.
        match spec.kind {
            // The out-of-window RST rides a real ssh connection (sshd on the
            // policy's ssh port, the one port sure to be open from the admin).
            ProbeKind::InvalidRst if spec.to == HostId::Target => {
                self.ensure_sshd(port)?;
            }
            ProbeKind::Tcp
                if spec.to == HostId::Target && self.sshd.as_ref().is_some_and(|s| s.0 == port) => {
            }
            ProbeKind::Tcp | ProbeKind::InvalidRst => self.ensure_listener(spec.to, port, false)?,
            ProbeKind::LoopbackTcp => self.ensure_listener(HostId::Target, port, true)?,
            ProbeKind::Udp => self.ensure_udp_server(spec.to, port)?,
            ProbeKind::Forward => self.ensure_listener(HostId::Inner, port, false)?,
            _ => {}
        }
        // An ssh probe expected to be dropped is a plain TCP connect to the real
        // sshd: the drop is the SYN's, proved by its counter, and a client
        // login that cannot happen would only cost a spawn and a longer window.
        // Any other ssh probe is a real login (a session sshd serves itself,
        // [`ssh::Client::login`]); a real client needs longer than a socket.
        let login = spec.kind == ProbeKind::Ssh && expect != Expect::NoAnswer;
        let client = match spec.kind {
            ProbeKind::Ssh => {
                let client = self.ensure_sshd(port)?;
                login.then_some(client)
            }
            _ => None,
        };
        let window = if login { PATIENT_SSH } else { window };
        let to = match spec.kind {
            ProbeKind::LoopbackTcp => match f {
                Family::V4 => Ipv4Addr::LOCALHOST.into(),
                Family::V6 => Ipv6Addr::LOCALHOST.into(),
            },
            _ => self.addr(spec.to, f)?,
        };
        let from_addr = self.addr(spec.from, f)?;
        let dst = SocketAddr::new(to, port);
        let ca = self.ca.clone();
        let kind = spec.kind;
        static SPORT: AtomicU16 = AtomicU16::new(41000);
        let sport = SPORT.fetch_add(1, Ordering::Relaxed);
        // Over IPv6 the router must resolve the target afresh for every inbound
        // probe: a cached (or FAILED) neighbour entry would hide whether the
        // target's rules let neighbour discovery through. Under `ipv6.mode =
        // deny` the router's solicitation is what the INPUT policy counts.
        if f == Family::V6 && spec.to == HostId::Target && spec.kind != ProbeKind::LoopbackTcp {
            self.lab
                .host(HostId::Router)
                .try_run(move || link::flush_neighbours(Family::V6, Some(to)))
                .map_err(err("flushing the router's neighbour entry"))?
                .map_err(|e| ExecError(format!("flushing the router's neighbour entry: {e}")))?;
        }
        let dropped_by = counted_by
            .filter(|_| expect == Expect::NoAnswer)
            .map(super::counters::selector);
        let run = move || async move {
            use probe::craft::{Flags, send_tcp};
            use probe::dns::{Rtype, Transport};
            let rtype = if f == Family::V4 {
                Rtype::A
            } else {
                Rtype::Aaaa
            };
            let src = SocketAddr::new(from_addr, sport);
            match kind {
                ProbeKind::Tcp | ProbeKind::LoopbackTcp | ProbeKind::Forward => {
                    probe::tcp::connect(dst, window).await
                }
                ProbeKind::DnsUdp => {
                    probe::dns::resolve(dst, WEB_NAME, rtype, Transport::Udp, window).await
                }
                ProbeKind::DnsTcp => {
                    probe::dns::resolve(dst, WEB_NAME, rtype, Transport::Tcp, window).await
                }
                ProbeKind::Http => probe::http::get(dst, WEB_NAME, window).await,
                ProbeKind::Https => probe::https::get(dst, WEB_NAME, &ca, window).await,
                ProbeKind::Icmp => probe::icmp::echo(dst.ip(), window).await,
                ProbeKind::Udp => probe::udp::echo(dst, window).await,
                ProbeKind::SynFin => send_tcp(src, dst, Flags::SYN_FIN, 1000, 0).await,
                ProbeKind::SynRst => send_tcp(src, dst, Flags::SYN_RST, 1000, 0).await,
                ProbeKind::InvalidRst => probe::craft::out_of_window_rst(dst, window).await,
                ProbeKind::Ssh => match client {
                    Some(c) => c.login(dst, window).await,
                    None => probe::tcp::connect(dst, window).await,
                },
                ProbeKind::SshLimit => Outcome::Failed("ssh-limit runs on its own".into()),
            }
        };
        let ev = match &dropped_by {
            Some(by) => self.lab.probe_dropped(spec.from, f, by, run),
            None => self.lab.probe(spec.from, Some(f), run),
        }
        .map_err(err(&format!("probing from {}", spec.from)))?;
        Ok(Evidence {
            counters: ev.counters.table(TABLE),
            ..ev
        })
    }

    /// Empty the target's `recent` list of the SSH rate limit (writing `/` to
    /// `/proc/net/xt_recent/LIST` flushes it), in the target's namespace; a
    /// ruleset without the list has nothing to empty.
    fn clear_rate_limit_list(&self) -> Result<(), ExecError> {
        let path = format!(
            "/proc/thread-self/net/xt_recent/{}",
            crate::policy::RateLimit::LIST
        );
        self.lab
            .host(HostId::Target)
            .try_run(move || async move {
                match std::fs::write(&path, "/\n") {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    r => r.map_err(|e| format!("{path}: {e}")),
                }
            })
            .map_err(err("emptying the ssh rate limit list"))?
            .map_err(|e| ExecError(format!("emptying the ssh rate limit list: {e}")))
    }

    /// [`ProbeKind::SshLimit`]: hold one connection to the ssh port open (its
    /// banner read), open `count - 1` more that must be accepted, then one more
    /// whose outcome is the probe's; then the held connection must still carry
    /// data both ways, counted by the RELATED,ESTABLISHED rule. The rate limit's
    /// list is emptied before (earlier probes' connections must not count) and
    /// after (later probes must not be dropped by this one's). The deltas span
    /// the burst and the exchange.
    fn ssh_limit(&mut self, spec: &ProbeSpec, expect: Expect) -> Result<Evidence, ExecError> {
        use std::io::{Read as _, Write as _};
        let f = spec.family;
        let port = spec.port.or(spec.kind.default_port()).unwrap_or(22);
        let allowed = spec.count.filter(|&n| n > 0).ok_or_else(|| {
            ExecError("an ssh-limit probe needs a count: the connections the window allows".into())
        })?;
        self.ensure_sshd(port)?;
        let dst = SocketAddr::new(self.addr(spec.to, f)?, port);
        self.clear_rate_limit_list()?;
        let failed = |why: String, counters: Counters| Evidence {
            outcome: Outcome::Failed(why),
            counters,
        };
        // The held connection, made in the client's namespace; a std socket keeps
        // its namespace wherever it is used afterwards.
        let held = self
            .host(spec.from)?
            .try_run(move || async move {
                let s = std::net::TcpStream::connect_timeout(&dst, PATIENT)?;
                s.set_read_timeout(Some(PATIENT))?;
                Ok::<_, std::io::Error>(s)
            })
            .map_err(err(&format!("connecting from {}", spec.from)))?;
        let mut held = match held {
            Ok(s) => s,
            Err(e) => {
                return Ok(failed(
                    format!("the connection to hold ({dst}) was not accepted: {e}"),
                    Counters::default(),
                ));
            }
        };
        let mut banner = [0u8; 256];
        match held.read(&mut banner) {
            Ok(n) if banner[..n].starts_with(b"SSH-") => {}
            other => {
                return Ok(failed(
                    format!("the held connection got no ssh banner: {other:?}"),
                    Counters::default(),
                ));
            }
        }
        let last_window = if expect == Expect::NoAnswer {
            probe::NEGATIVE_WINDOW
        } else {
            PATIENT
        };
        let before = self.counters(f)?;
        let burst = self
            .host(spec.from)?
            .try_run(move || async move {
                let mut v = Vec::new();
                for i in 1..=allowed {
                    let w = if i == allowed { last_window } else { PATIENT };
                    v.push(probe::tcp::connect(dst, w).await);
                }
                v
            })
            .map_err(err(&format!("probing from {}", spec.from)))?;
        let mid = self.counters(f)?;
        let exchange = held
            .write_all(b"SSH-2.0-portcullis-verify\r\n")
            .and_then(|()| held.read(&mut banner));
        let after = self.counters(f)?;
        drop(held);
        self.clear_rate_limit_list()?;
        let deltas = after.since(&before);
        // Connection 1 is the held one; the burst's i-th is connection i + 1.
        if let Some((i, o)) = burst[..burst.len() - 1]
            .iter()
            .enumerate()
            .find(|(_, o)| !o.is_ok())
        {
            return Ok(failed(
                format!(
                    "new connection {} of the {allowed} the window allows was not accepted: {o:?}",
                    i + 2
                ),
                deltas,
            ));
        }
        match exchange {
            Ok(n) if n > 0 => {}
            other => {
                return Ok(failed(
                    format!("the held connection carried no data after the burst: {other:?}"),
                    deltas,
                ));
            }
        }
        let established: super::CountedBy = "INPUT: replies and related"
            .parse()
            .expect("a comment form");
        if super::counted(&after.since(&mid), &established) == Some(0) {
            return Ok(failed(
                "the RELATED,ESTABLISHED rule did not count the held connection's data".into(),
                deltas,
            ));
        }
        Ok(Evidence {
            outcome: burst.last().cloned().unwrap_or(Outcome::NoAnswer),
            counters: deltas,
        })
    }

    /// Open an interactive SSH session from `from` to the target whose server side
    /// prints every 100 ms without any client input; returns once it runs.
    pub fn open_ssh_session(
        &mut self,
        from: HostId,
        family: Family,
    ) -> Result<SshSessionId, ExecError> {
        let client = self.ensure_sshd(22)?;
        let addr = SocketAddr::new(self.addr(HostId::Target, family)?, 22);
        // The client ACKs the server's output at once (the lab's default routes
        // carry `quickack`, see `link::add_default_route`), so after a load only
        // the server can be the first to speak.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<SessionCmd>();
        let ((), task) = self
            .host(from)?
            .serve(move || async move {
                let mut session = client.session(addr, TICKER, PATIENT_SSH).await?;
                Ok::<_, services::ServiceError>(((), async move {
                    while let Some(cmd) = rx.recv().await {
                        // Lines already waiting were printed before this check.
                        while session.read_line(Duration::from_millis(1)).await.is_ok() {}
                        let mut last = Outcome::NoAnswer;
                        for _ in 0..cmd.lines {
                            last = session.read_line(cmd.window).await;
                            if !last.is_ok() {
                                break;
                            }
                        }
                        let _ = cmd.reply.send(last);
                    }
                }))
            })
            .map_err(|e| ExecError(format!("ssh session from {from} over {family}: {e}")))?;
        self.sessions.push(SessionHandle {
            family,
            tx,
            _task: task,
        });
        Ok(SshSessionId(self.sessions.len() - 1))
    }

    /// Whether the session's server output still arrives with no client keystroke
    /// (three fresh lines); its family's counters SINCE THE RULESET LOADED (a
    /// restore zeroes them), because the packet that matters, the server's first
    /// after the load, may pass before this check starts.
    pub fn check_ssh_session(
        &mut self,
        id: SshSessionId,
        expect: Expect,
    ) -> Result<Evidence, ExecError> {
        let h = self
            .sessions
            .get(id.0)
            .ok_or_else(|| ExecError(format!("no ssh session #{}", id.0)))?;
        let window = if expect == Expect::NoAnswer {
            Duration::from_millis(500)
        } else {
            PATIENT_SSH
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        h.tx.send(SessionCmd {
            lines: 3,
            window,
            reply,
        })
        .map_err(|_| ExecError("the ssh session task is gone".into()))?;
        let outcome = rx
            .blocking_recv()
            .map_err(|_| ExecError("the ssh session task ended".into()))?;
        let family = h.family;
        Ok(Evidence {
            outcome,
            counters: self.counters(family)?,
        })
    }
}

/// Build the standard lab for `backend`, load `rules`, probe every expectation.
pub fn run_backend(
    backend: Backend,
    rules: &LabRules,
    expectations: Vec<Expectation>,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, VerifyError> {
    run_backend_with(backend, &mut |lab| lab.load(rules), expectations, progress)
}

/// [`run_backend`] with the rules put in place by `load` (`verify --root` runs
/// the image's own boot loader in the target there).
pub fn run_backend_with(
    backend: Backend,
    load: &mut dyn FnMut(&mut LabSession) -> Result<(), ExecError>,
    expectations: Vec<Expectation>,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, VerifyError> {
    let lab_err = |e: ExecError| VerifyError::Lab {
        backend,
        message: e.0,
    };
    progress(&format!("{backend}: building the lab"));
    let mut lab = LabSession::start(backend).map_err(lab_err)?;
    // Before the rules, so its link settles with the others.
    if expectations.iter().any(|e| e.probe.involves(HostId::Inner)) {
        lab.add_inner().map_err(lab_err)?;
    }
    progress(&format!("{backend}: loading the rules"));
    load(&mut lab).map_err(lab_err)?;
    let total = expectations.len();
    let mut rows = Vec::with_capacity(total);
    for (i, exp) in expectations.into_iter().enumerate() {
        let row = match lab.probe_counted(&exp.probe, exp.expect, exp.counted_by.as_ref()) {
            Ok(obs) => Row::judge(backend, exp, &obs),
            Err(e) => Row::error(backend, exp, e.0),
        };
        let p = &row.expectation.probe;
        progress(&format!(
            "{backend}: [{}/{total}] {} -> {} {} {}: {} ({})",
            i + 1,
            p.from,
            p.to,
            p.service(),
            p.family,
            row.observed.word(),
            if row.pass() {
                "as promised"
            } else {
                "MISMATCH"
            }
        ));
        rows.push(row);
    }
    Ok(rows)
}
