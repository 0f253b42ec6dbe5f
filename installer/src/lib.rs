//! portcullis: render a default-deny iptables ruleset (IPv4 and IPv6) from a small
//! TOML policy, apply it to a live host without locking the admin out, persist it
//! the way the host's distro loads rules at boot, and prove it in a namespace lab.
//!
//! The library does the work; `cli` parses, calls it, and prints. It refuses to
//! touch a host's rules except through one `*-restore` call per family.

#![forbid(unsafe_code)]

pub mod apply;
pub mod cli;
pub mod drift;
pub mod input;
pub mod lint;
pub mod persist;
pub mod policy;
pub mod render;
pub mod rule;
pub mod scenario;
pub mod verify;

pub use lint::{Warning, lint};
pub use policy::{Policy, PolicyError};
pub use render::{Rendered, render};
