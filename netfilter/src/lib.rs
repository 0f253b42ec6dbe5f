//! portcullis-netfilter: the leaf both halves of portcullis stand on.
//!
//! - [`backend`]: [`Family`] (IPv4, IPv6), [`Backend`] (`nft`, `legacy`),
//!   [`backend::restore`] (one `*-restore -w` call per family) and
//!   [`backend::save`].
//! - [`runner`]: the one command runner. [`runner::run`] takes an argument
//!   vector; [`runner::run_prepared`] takes a prepared `std::process::Command`
//!   (the lab's, which enters a host's namespace between fork and exec). Stdin is
//!   written from a thread, so an early-exiting `*-restore` still reports its
//!   stderr, never "Broken pipe". Both are also at `backend::run` and
//!   `backend::run_prepared`.
//! - [`counters`]: the `*-save -c` text parsed into per-rule and per-policy
//!   [`Counters`], their growth between two snapshots ([`Counters::since`]) and
//!   the [`Selector`] queries that say which rule counted a packet. Pure: no I/O.
//!
//! It knows nothing of policies and nothing of namespaces: it acts on the network
//! namespace of the calling thread. The installer runs it on the live host; the
//! lab (`portcullis-harness`) runs it from a lab host's own thread. It refuses
//! to build a shell string: every command is an argument vector.

#![forbid(unsafe_code)]

pub mod backend;
pub mod counters;
pub mod runner;

pub use backend::{Backend, BackendError, Family};
pub use counters::{Counter, CounterKind, Counters, ParseError, Selector};
