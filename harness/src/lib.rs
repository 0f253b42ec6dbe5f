//! portcullis-harness: a lab of network namespaces joined by veth pairs, where an
//! iptables ruleset is loaded into a target host and proved with real packets.
//!
//! It knows nothing of policies: it loads iptables-restore text and sends packets.
//! It never touches the network namespace it was started in: every host is an
//! anonymous namespace held by a file descriptor, owned by one dedicated thread.
//! It refuses to `setns` a test thread or a multi-thread runtime worker, to write
//! a sysctl off a host thread, and to mix two iptables backends in one lab.
//!
//! # The pieces
//!
//! - [`Host`] (module [`host`]): one namespace, one OS thread running a
//!   current-thread tokio runtime. [`Host::run`] sends a closure there and blocks
//!   for the output of the future it builds (the future need not be `Send`);
//!   [`Host::run_async`] returns a `Send` future instead; [`Host::spawn`] and
//!   [`Host::serve`] start long-lived tasks (servers) cancelled when their
//!   [`Task`] drops. Children: [`Host::command`] (enters the namespace between
//!   fork and exec, parent-death signal), [`Host::spawn_child`] (spawned on the
//!   host thread, killed and reaped when the [`Child`] drops), [`Host::exec`]
//!   (run to completion from any thread, stdout), and on the host thread itself
//!   [`host::async_command`] (long-lived, tokio) / [`host::run_command`] (run to
//!   completion, async). Every run-to-completion child goes through the one
//!   runner, [`backend::run_prepared`] (stdin from a thread: a `*-restore` that
//!   stops at a bad line is reported by its stderr). Netlink:
//!   [`host::netlink`] on a host thread; helpers in [`link`].
//! - [`Lab`] (module [`lab`]): the standard dual-stack lab, a router joining
//!   [`HostId::Target`], `Admin`, `Outsider`, `Resolver` and `Web`, and on demand
//!   `Inner` behind the target ([`Lab::add_inner`], [`LabOptions::inner`], for
//!   the FORWARD chain); addresses from [`HostId::plan`] / [`Lab::addr`] /
//!   [`Lab::subnet`] (see docs/lab.md).
//!   Dropping it tears down in reverse order; [`Lab::shutdown`] returns every
//!   error.
//! - Rules on the target: [`Lab::load`] (one `*-restore -w`), [`Lab::counters`]
//!   ([`Counters`] as `*-save -c` prints them, the numbers read from the
//!   kernel with no process: module [`kcounters`]), [`Lab::reset`] (zero counters and
//!   flush conntrack over ctnetlink, module [`conntrack`]), [`Counters::since`].
//!   [`Lab::flush_neighbours`] forgets ARP/NDP entries of a host and its peers.
//! - [`Lab::settle`]: waits (once per lab, at most [`lab::SETTLE_LIMIT`]) until
//!   the target has sent the MLD reports of its fresh link, so they never land in
//!   a probe's counters; the first [`Lab::reset`] or [`Lab::probe`] calls it. The
//!   wait itself is [`mld::settle_mld`], for a link added later.
//! - [`Lab::probe`]: run any async probe returning an [`Outcome`] on one host and
//!   get [`Evidence`]: the outcome plus the target's [`Counters::since`] the probe
//!   began (every counter with its growth, zeros kept, resets handled), so a drop
//!   is proved by the rule or policy that counted it: [`Counters::count`] with a
//!   [`Selector`] (`None` when no rule answers to it), [`Counters::moved`].
//! - Privileged trials: [`trial::privileged`] builds every libtest-mimic trial
//!   that needs root in the workspace, ignored with one reason when not root.
//! - Debug mode ([`LabOptions::debug`] or `PORTCULLIS_LAB_DEBUG=1`): every
//!   namespace is also bind-mounted at `/run/netns/pc-<pid>-<seq>-<host>` for
//!   `ip netns exec`; [`sweep`] removes mounts left by dead processes (module
//!   [`debug`]).
//!
//! # Example
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use portcullis_harness::{Backend, Family, HostId, Lab, Outcome, Selector};
//! use portcullis_harness::probe::NEGATIVE_WINDOW;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let lab = Lab::standard()?;
//! let rules = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
//! lab.load(Backend::Nft, Family::V4, rules)?;
//! lab.reset()?;
//!
//! // A listener on the target, started on the target's thread.
//! let addr = SocketAddr::new(lab.addr(HostId::Target, Family::V4), 22);
//! let (bound, _server) = lab.host(HostId::Target).serve(move || async move {
//!     let l = tokio::net::TcpListener::bind(addr).await?;
//!     let bound = l.local_addr()?;
//!     Ok::<_, std::io::Error>((bound, async move { while l.accept().await.is_ok() {} }))
//! })?;
//!
//! // A connect from the outsider, with the counters that moved meanwhile.
//! let ev = lab.probe(HostId::Outsider, Some(Family::V4), move || async move {
//!     match tokio::time::timeout(NEGATIVE_WINDOW, tokio::net::TcpStream::connect(bound)).await {
//!         Err(_) => Outcome::NoAnswer,
//!         Ok(Ok(_)) => Outcome::Ok("connected".into()),
//!         Ok(Err(e)) => Outcome::Refused(e.to_string()),
//!     }
//! })?;
//! assert_eq!(ev.outcome, Outcome::NoAnswer);
//! assert!(ev.counters.packets(&Selector::policy("INPUT")) >= 1, "{}", ev.summary());
//! lab.shutdown().map_err(|e| format!("{e:?}"))?;
//! # Ok(())
//! # }
//! ```
//!
//! # Rules for callers
//!
//! - Do not call the blocking [`Host::run`] (or anything of [`Lab`]) from inside
//!   an async context: use [`Host::run_async`] there, or a plain thread.
//! - Everything made inside a host closure (sockets, children, netlink handles)
//!   belongs to that host; do not move a socket to another host's closure.
//! - Child processes that must outlive one call go through
//!   [`Host::spawn_child`]; their parent-death signal is tied to the host thread.

pub mod conntrack;
pub mod debug;
pub mod error;
pub mod evidence;
pub mod host;
pub mod kcounters;
pub mod lab;
pub mod link;
pub mod mld;
pub mod probe;
pub mod procs;
pub mod services;
mod sys;
pub mod trial;

// The backends, the command runner and the counter parser live in the leaf crate
// both halves depend on; the lab re-exports them so a lab user needs one import.
pub use debug::sweep;
pub use error::LabError;
pub use evidence::Evidence;
pub use host::{Child, Host, Task};
pub use lab::{HostId, Lab, LabOptions, LinkPlan};
pub use portcullis_netfilter::{Backend, BackendError, Family};
pub use portcullis_netfilter::{Counter, CounterKind, Counters, Selector};
pub use portcullis_netfilter::{backend, counters};
pub use probe::Outcome;

/// Whether process `pid` is alive (not gone, not a zombie); for tests that check
/// a lab's children died with it.
pub fn process_alive(pid: u32) -> bool {
    sys::alive(pid)
}

// Labs are shared between threads (a runner's workers), so they must stay Send
// and Sync; this fails to compile the day they are not.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Lab>();
    assert_send_sync::<Host>();
    assert_send_sync::<Evidence>();
    assert_send_sync::<Counters>();
};
