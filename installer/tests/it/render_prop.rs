//! Property: any policy the validator accepts renders text that the real
//! `*-restore --test` of both backends accepts, for both families. Policies are
//! generated as TOML (so the validator stays in the loop), with edge values:
//! port 1 and 65535, ranges, /0 and /32 and /128 prefixes, comments full of quotes,
//! backslashes and non-ASCII text up to the byte limit.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use libtest_mimic::{Failed, Trial};
use portcullis::Policy;
use portcullis_harness::{Backend, Family};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::restore_test::restore_test_in_netns;
use portcullis_harness::trial::privileged;

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, p)| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(a), p).unwrap().trunc())),
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, p)| IpNet::V6(Ipv6Net::new(Ipv6Addr::from(a), p).unwrap().trunc())),
    ]
}

fn port() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![1u16, 22, 65535]).prop_map(|p| p.to_string()),
        (1u16..=65535).prop_map(|p| p.to_string()),
        (1u16..=65535, 1u16..=65535).prop_map(|(a, b)| format!("\"{}:{}\"", a.min(b), a.max(b))),
    ]
}

fn comment() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop_oneof![
        "[ -~]{1,60}",
        "[\"\\\\' #*]{1,20}",
        "\\PC{1,80}",
        Just("x".repeat(portcullis::policy::MAX_COMMENT_BYTES)),
    ])
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn list(nets: &[IpNet]) -> String {
    let v: Vec<String> = nets.iter().map(|n| quote(&n.to_string())).collect();
    format!("[{}]", v.join(", "))
}

fn allow(table: &'static str, peer_key: &'static str) -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["tcp", "udp"]),
        port(),
        prop::option::of(prop::collection::vec(net(), 1..4)),
        comment(),
    )
        .prop_map(move |(proto, port, peers, comment)| {
            let mut s = format!("[[{table}]]\nproto = \"{proto}\"\nport = {port}\n");
            if let Some(p) = peers {
                s.push_str(&format!("{peer_key} = {}\n", list(&p)));
            }
            if let Some(c) = comment {
                s.push_str(&format!("comment = {}\n", quote(&c)));
            }
            s
        })
}

fn policy() -> impl Strategy<Value = String> {
    (
        (1u16..=65535, prop::collection::vec(net(), 0..4)),
        prop::array::uniform4(any::<bool>()),
        any::<bool>(),
        prop::collection::vec(allow("outbound.allow", "to"), 0..4),
        prop::collection::vec(allow("inbound.allow", "from"), 0..4),
        prop::array::uniform3(any::<bool>()),
        prop::sample::select(vec!["mirror", "deny", "untouched"]),
    )
        .prop_map(|((ssh_port, from), out, in_icmp, outs, ins, hard, mode)| {
            // A deny policy refuses IPv6 peers; keep most generated ones valid.
            let keep = |n: &IpNet| mode != "deny" || n.addr().is_ipv4();
            let from: Vec<IpNet> = from.into_iter().filter(keep).collect();
            let mut s = format!(
                "[ssh]\nport = {ssh_port}\nallow_from = {}\n\
                 [outbound]\ndns = {}\nhttp = {}\nhttps = {}\nicmp = {}\n\
                 [inbound]\nicmp = {in_icmp}\n\
                 [hardening]\nloopback = {}\ndrop_invalid = {}\ndrop_malicious_flags = {}\n\
                 [ipv6]\nmode = \"{mode}\"\n",
                list(&from),
                out[0],
                out[1],
                out[2],
                out[3],
                hard[0],
                hard[1],
                hard[2],
            );
            for a in outs.iter().chain(&ins) {
                s.push_str(a);
            }
            s
        })
}

fn accepted_policies_restore() -> Result<(), Failed> {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let backends: Vec<Backend> = Backend::ALL.into_iter().filter(|b| b.available()).collect();
    let accepted = std::cell::Cell::new(0u32);
    let refused = std::cell::Cell::new(0u32);
    let result = runner.run(&policy(), |text| {
        let policy = match Policy::parse(&text, "prop.toml") {
            Ok(p) => p,
            Err(_) => {
                refused.set(refused.get() + 1);
                return Ok(());
            }
        };
        accepted.set(accepted.get() + 1);
        let rendered = portcullis::render(&policy);
        for family in Family::ALL {
            let Some(rs) = rendered.text(family) else {
                continue;
            };
            for &backend in &backends {
                restore_test_in_netns(backend, family, &rs).map_err(|e| {
                    TestCaseError::fail(format!("{backend} {family}: {e}\npolicy:\n{text}"))
                })?;
            }
        }
        Ok(())
    });
    result.map_err(|e| Failed::from(e.to_string()))?;
    let (accepted, refused) = (accepted.get(), refused.get());
    // Most generated policies must be valid, or the property proves little (the
    // refused ones have comments over the byte limit or IPv6 peers under `deny`).
    if accepted < refused {
        return Err(format!(
            "only {accepted} of {} generated policies were valid",
            accepted + refused
        )
        .into());
    }
    Ok(())
}

pub fn trials() -> Vec<Trial> {
    let missing = Backend::ALL.iter().find_map(|b| b.unavailable_reason());
    vec![privileged(
        "render_prop::accepted_policies_pass_restore_test_on_both_backends",
        missing,
        accepted_policies_restore,
    )]
}
