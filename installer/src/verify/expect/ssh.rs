//! `[ssh]`: the port opens to `allow_from` only; probed from the admin host (inside
//! the mapped subnet) and from the outsider. With `rate_limit`, the admin host's
//! connection over the limit is dropped by the limit rule while one it holds open
//! still carries data.

use super::{Ctx, admits};
use crate::render::RATE_LIMIT_COMMENT;
use crate::rule::Chain;
use crate::verify::model::{Expect, Expectation, HostId, ProbeKind, ProbeSpec};

/// Whether the policy lets `from` reach the ssh port (ignoring `ipv6.mode = deny`).
pub(super) fn admitted(c: &Ctx<'_>, from: HostId) -> bool {
    let nets = c.peers(&c.policy.ssh.allow_from);
    !nets.is_empty() && admits(&nets, c.topo.addr(from, c.family))
}

pub(super) fn expectations(c: &Ctx<'_>) -> Vec<Expectation> {
    [HostId::Admin, HostId::Outsider]
        .into_iter()
        .map(|from| {
            c.promise(
                (
                    ProbeKind::Ssh,
                    from,
                    HostId::Target,
                    Some(c.policy.ssh.port),
                ),
                c.allowed_if(admitted(c, from), "INPUT: ssh from the admin subnet"),
                Chain::Input,
                "ssh.allow_from",
            )
        })
        .collect()
}

/// `ssh.rate_limit`, when the admin host may reach the ssh port at all.
pub(super) fn rate_limit(c: &Ctx<'_>) -> Option<Expectation> {
    let limit = c.policy.ssh.rate_limit?;
    if c.deny || !admitted(c, HostId::Admin) {
        return None;
    }
    Some(Expectation {
        probe: ProbeSpec {
            kind: ProbeKind::SshLimit,
            from: HostId::Admin,
            to: HostId::Target,
            family: c.family,
            port: Some(c.policy.ssh.port),
            count: Some(limit.connections),
        },
        expect: Expect::NoAnswer,
        counted_by: format!("INPUT: {RATE_LIMIT_COMMENT}").parse().ok(),
        why: "ssh.rate_limit".to_owned(),
    })
}
