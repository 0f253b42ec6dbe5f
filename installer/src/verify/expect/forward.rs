//! Forwarding: every policy renders FORWARD DROP, probed from the admin host
//! through the target to the inner host behind it.

use super::Ctx;
use crate::rule::Chain::Forward;
use crate::verify::model::{Expectation, HostId, ProbeKind};

pub(super) fn expectation(c: &Ctx<'_>) -> Expectation {
    c.promise(
        (ProbeKind::Forward, HostId::Admin, HostId::Inner, Some(80)),
        None,
        Forward,
        "FORWARD DROP (a host is not a router)",
    )
}
