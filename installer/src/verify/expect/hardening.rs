//! `[hardening]`: loopback, and the crafted segments the malicious-flags and
//! INVALID rules must drop (proved by their counters, the probe cannot see a drop).

use super::{Ctx, Derived, ssh};
use crate::rule::Chain::Output;
use crate::verify::model::{Expectation, HostId, ProbeKind};

/// Loopback: the packet leaves through OUTPUT -o lo and comes back INPUT -i lo.
/// Allowed under `ipv6.mode = deny` too.
pub(super) fn loopback(c: &Ctx<'_>) -> Expectation {
    c.promise(
        (
            ProbeKind::LoopbackTcp,
            HostId::Target,
            HostId::Target,
            Some(c.topo.closed_inbound_port),
        ),
        c.policy.hardening.loopback.then_some("OUTPUT: loopback"),
        Output,
        "hardening.loopback",
    )
}

/// SYN+FIN and SYN+RST from the outsider, and an INVALID segment on an
/// established ssh connection from the admin host (noted when there is none).
pub(super) fn crafted(c: &Ctx<'_>) -> Derived {
    let h = &c.policy.hardening;
    let port = c.policy.ssh.port;
    let mut d = Derived::default();
    if h.drop_malicious_flags {
        d.expectations.push(c.crafted(
            (ProbeKind::SynFin, HostId::Outsider, port),
            "INPUT: [malicious packet patterns] SYN+FIN",
            "hardening.drop_malicious_flags",
        ));
        d.expectations.push(c.crafted(
            (ProbeKind::SynRst, HostId::Outsider, port),
            "INPUT: [malicious packet patterns] SYN+RST",
            "hardening.drop_malicious_flags",
        ));
    }
    if h.drop_invalid {
        if ssh::admitted(c, HostId::Admin) {
            // On an established ssh connection: the port the policy surely opens.
            d.expectations.push(c.crafted(
                (ProbeKind::InvalidRst, HostId::Admin, port),
                "INPUT: conntrack cannot place",
                "hardening.drop_invalid",
            ));
        } else {
            d.notes.push(format!(
                "hardening.drop_invalid ({}) is not probed: it needs an established ssh connection from admin, which this policy does not allow",
                c.family
            ));
        }
    }
    d
}
