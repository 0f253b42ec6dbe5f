//! portcullis-netfilter: the leaf both halves of portcullis stand on.
//!
//! - [`backend`]: [`Family`] (IPv4, IPv6), [`Backend`] (`nft`, `legacy`), the one
//!   command runner [`backend::run`] (argument vectors, stdin from a thread so an
//!   early-exiting `*-restore` still reports its stderr), [`backend::restore`]
//!   (one `*-restore -w` call per family) and [`backend::save`].
//! - [`bins`]: which file a binary name means: looked up once, on PATH and the
//!   system directories, refused unless root-owned and writable by root alone;
//!   the guard pins the paths apply recorded.
//! - [`counters`]: the `*-save -c` text parsed into per-rule and per-policy
//!   [`Counters`], and their deltas. Pure: no I/O.
//!
//! It knows nothing of policies and nothing of namespaces: it acts on the network
//! namespace of the calling thread. The installer runs it on the live host; the
//! lab (`portcullis-harness`) runs it from a lab host's own thread. It refuses
//! to build a shell string: every command is an argument vector.

#![forbid(unsafe_code)]

pub mod backend;
pub mod bins;
pub mod counters;

pub use backend::{Backend, BackendError, Family};
pub use counters::{Counter, CounterKind, Counters, Delta, ParseError};
