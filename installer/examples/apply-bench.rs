//! Benchmark: load a large policy (5,000 allow entries by default) with ONE
//! `iptables-restore` call, against one `iptables -A` call per rule, in a private
//! network namespace, under each backend present. Prints both times and the ratio.
//!
//! Run as root: `cargo run --release -p portcullis --example apply-bench [-- ENTRIES]`
//! (ci/bench does). The host's own tables are never touched: the process unshares
//! its network namespace before it runs any iptables binary.

use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use portcullis_harness::{Backend, Family};

fn policy_text(entries: usize) -> String {
    let mut t = String::from("[ssh]\nallow_from = [\"198.51.100.0/24\"]\n[outbound]\ndns = true\n");
    for i in 0..entries {
        // Distinct destinations so no two rules collapse into one.
        let net = format!("203.0.{}.{}/32", 113 + (i / 250) % 2, i % 250 + 1);
        let port = 1024 + i % 60000;
        writeln!(
            t,
            "[[outbound.allow]]\nproto = \"tcp\"\nport = {port}\nto = [\"{net}\"]"
        )
        .unwrap();
    }
    t
}

/// Split one `-A CHAIN ...` line the way iptables-restore does: whitespace, with
/// double-quoted words whose `\"` and `\\` are escapes.
fn split_rule(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => cur.extend(chars.next()),
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

fn flush(backend: Backend) {
    let bin = backend.binary(Family::V4);
    for args in [
        &["-w", "-F"][..],
        &["-w", "-P", "INPUT", "ACCEPT"],
        &["-w", "-P", "OUTPUT", "ACCEPT"],
    ] {
        let st = Command::new(&bin)
            .args(args)
            .status()
            .expect("run iptables");
        assert!(st.success(), "{bin} {args:?} failed");
    }
}

fn one_restore(backend: Backend, text: &str) -> Duration {
    let start = Instant::now();
    portcullis_harness::backend::restore(backend, Family::V4, text, false).expect("restore");
    start.elapsed()
}

fn per_rule(backend: Backend, text: &str) -> (Duration, usize) {
    let bin = backend.binary(Family::V4);
    let start = Instant::now();
    let mut calls = 0;
    for line in text.lines() {
        let args: Vec<String> = if let Some(rest) = line.strip_prefix(':') {
            // `:INPUT DROP [0:0]` -> `-P INPUT DROP` (FORWARD/OUTPUT too).
            let mut w = rest.split_whitespace();
            let (chain, policy) = (w.next().unwrap(), w.next().unwrap());
            vec!["-P".into(), chain.into(), policy.into()]
        } else if line.starts_with("-A ") {
            split_rule(line)
        } else {
            continue;
        };
        let st = Command::new(&bin)
            .arg("-w")
            .args(&args)
            .stderr(Stdio::inherit())
            .status()
            .expect("run iptables");
        assert!(st.success(), "{bin} {args:?} failed");
        calls += 1;
    }
    (start.elapsed(), calls)
}

fn main() {
    let entries: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ENTRIES"))
        .unwrap_or(5000);
    if let Some(why) = portcullis_harness::trial::root_missing() {
        eprintln!("apply-bench: {why}");
        std::process::exit(2);
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
    let policy = portcullis::Policy::parse(&policy_text(entries), "bench").expect("valid policy");
    let rendering = std::time::Instant::now();
    let rendered = portcullis::render(&policy);
    let render_ms = rendering.elapsed().as_secs_f64() * 1000.0;
    let text = rendered.text(Family::V4).expect("ipv4 rendered");
    let rules = text.lines().filter(|l| l.starts_with("-A ")).count();
    println!("apply-bench: {entries} allow entries -> {rules} ipv4 rules");
    println!("apply-bench: render_ms={render_ms:.2} (both families)");
    for backend in Backend::ALL {
        if let Some(why) = backend.unavailable_reason() {
            println!("{backend}: skipped ({why})");
            continue;
        }
        flush(backend);
        let one = one_restore(backend, &text);
        flush(backend);
        let (each, calls) = per_rule(backend, &text);
        flush(backend);
        println!(
            "{backend}: one restore {:.3} s; {calls} iptables calls {:.3} s; ratio {:.0}x",
            one.as_secs_f64(),
            each.as_secs_f64(),
            each.as_secs_f64() / one.as_secs_f64()
        );
    }
}
