//! `[ssh]`: the port opens to `allow_from` only; probed from the admin host (inside
//! the mapped subnet) and from the outsider.

use super::{Ctx, admits};
use crate::rule::Chain;
use crate::verify::model::{Expectation, Host, ProbeKind};

/// Whether the policy lets `from` reach the ssh port (ignoring `ipv6.mode = deny`).
pub(super) fn admitted(c: &Ctx<'_>, from: Host) -> bool {
    let nets = c.peers(&c.policy.ssh.allow_from);
    !nets.is_empty() && admits(&nets, c.topo.addr(from, c.family))
}

pub(super) fn expectations(c: &Ctx<'_>) -> Vec<Expectation> {
    [Host::Admin, Host::Outsider]
        .into_iter()
        .map(|from| {
            c.promise(
                (ProbeKind::Ssh, from, Host::Target, Some(c.policy.ssh.port)),
                c.allowed_if(admitted(c, from), "INPUT: ssh from the admin subnet"),
                Chain::Input,
                "ssh.allow_from",
            )
        })
        .collect()
}
