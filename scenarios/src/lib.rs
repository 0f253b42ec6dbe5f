//! The scenario suite: scenario files under this crate's area folders, parsed and
//! run against the lab by the libtest-mimic runner in `tests/scenarios.rs`.
