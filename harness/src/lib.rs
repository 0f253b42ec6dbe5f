//! portcullis-harness: a lab of network namespaces joined by veth pairs, where an
//! iptables ruleset is loaded into a target host and proved with real packets.
//!
//! It knows nothing of policies: it loads iptables-restore text and sends packets.
//! It never touches the network namespace it was started in: every host is an
//! anonymous namespace held by a file descriptor, owned by one dedicated thread.

pub mod backend;
pub mod counters;
pub mod error;
pub mod evidence;
pub mod host;
pub mod lab;
pub mod link;
pub mod probe;
pub mod services;
mod sys;

pub use backend::{Backend, BackendError, Family};
pub use counters::{Counter, CounterKind, Counters, Delta};
pub use error::LabError;
pub use evidence::{Evidence, Selector};
pub use host::{Child, Host, Task};
pub use lab::{HostId, Lab, LabOptions, LinkPlan};
pub use probe::Outcome;

/// Whether this process can build labs (root). Privileged tests are reported
/// ignored with [`NOT_ROOT`] when this is false.
pub fn can_build_labs() -> bool {
    sys::is_root()
}

/// The reason privileged trials give when they cannot run.
pub const NOT_ROOT: &str = "needs root (network namespaces, netlink, iptables): run with sudo";

/// Whether process `pid` is alive (not gone, not a zombie); for tests that check
/// a lab's children died with it.
pub fn process_alive(pid: u32) -> bool {
    sys::alive(pid)
}
