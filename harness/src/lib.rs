//! portcullis-harness: a lab of network namespaces joined by veth pairs, where an
//! iptables ruleset is loaded into a target host and proved with real packets.
//!
//! It knows nothing of policies: it loads iptables-restore text and sends packets.
//! It never touches the network namespace it was started in: every host is an
//! anonymous namespace held by a file descriptor, owned by one dedicated thread.

pub mod backend;
pub mod probe;
pub mod services;

pub use backend::{Backend, BackendError, Family};
