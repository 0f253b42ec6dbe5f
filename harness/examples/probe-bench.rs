//! Times a negative probe in the standard lab, for `ci/bench`: under each backend
//! present and for each family, the target loads a ruleset whose INPUT policy is
//! DROP, and the outsider makes RUNS (default 21) TCP connects to target:2222. Each
//! must come back `no-answer` AND be counted by the target's `filter` INPUT DROP
//! policy (a drop is proved by its counter, not by silence). Each runs through
//! [`Lab::probe_dropped`], so it is decided as soon as that policy counted it.
//! The time printed is the probe alone, from its start on the outsider's thread
//! until it was decided (it answered, its window ran out, or the counter stopped
//! it); the two counter snapshots around it are not included.
//!
//! Usage: `probe-bench [RUNS]`; prints one line per backend and family:
//! `probe-bench backend=nft family=ipv4 runs=21 window_ms=45 min_ms=.. median_ms=.. p95_ms=.. max_ms=..`,
//! then `probe-bench all runs=N p50_ms=.. p95_ms=..` over every probe.

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use portcullis_harness::probe::{self, NEGATIVE_WINDOW};
use portcullis_harness::{Backend, Family, HostId, Lab, Selector};

const PORT: u16 = 2222;

/// A DROP policy on INPUT: every probe is the policy's to count. IPv6 keeps
/// neighbour discovery, or the router could not resolve the target at all and the
/// policy would count neighbour solicitations instead of the probe.
fn drop_all(family: Family) -> String {
    let nd = match family {
        Family::V4 => "",
        Family::V6 => {
            "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-solicitation -j ACCEPT\n\
             -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type neighbour-advertisement -j ACCEPT\n"
        }
    };
    format!("*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{nd}COMMIT\n")
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("RUNS must be a number"))
        .unwrap_or(21);
    if let Some(why) = portcullis_harness::trial::root_missing() {
        eprintln!("probe-bench: {why}");
        std::process::exit(2);
    }
    let mut failed = false;
    let mut all = Vec::new();
    for backend in Backend::ALL {
        if let Some(why) = backend.unavailable_reason() {
            println!("probe-bench backend={backend} skipped ({why})");
            continue;
        }
        let lab = Lab::standard().expect("lab up");
        for family in Family::ALL {
            match bench(&lab, backend, family, runs) {
                Ok(mut times) => {
                    times.sort();
                    println!(
                        "probe-bench backend={backend} family={family} runs={runs} window_ms={} \
                         min_ms={:.2} median_ms={:.2} p95_ms={:.2} max_ms={:.2}",
                        NEGATIVE_WINDOW.as_millis(),
                        ms(times[0]),
                        ms(times[runs / 2]),
                        ms(p95(&times)),
                        ms(times[runs - 1])
                    );
                    all.extend(times);
                }
                Err(e) => {
                    eprintln!("probe-bench: {backend} {family}: {e}");
                    failed = true;
                }
            }
        }
        if let Err(errors) = lab.shutdown() {
            for e in errors {
                eprintln!("probe-bench: teardown: {e}");
            }
            failed = true;
        }
    }
    if !all.is_empty() {
        all.sort();
        println!(
            "probe-bench all runs={} p50_ms={:.2} p95_ms={:.2}",
            all.len(),
            ms(all[all.len() / 2]),
            ms(p95(&all))
        );
    }
    if failed {
        std::process::exit(1);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The 95th percentile of sorted `times` (nearest rank).
fn p95(times: &[Duration]) -> Duration {
    let rank = (times.len() * 95).div_ceil(100).max(1);
    times[rank - 1]
}

/// Sends how long it lived when dropped: the probe's time whether it finished
/// or the counter stopped it.
struct Timer(Instant, mpsc::Sender<Duration>);

impl Drop for Timer {
    fn drop(&mut self) {
        let _ = self.1.send(self.0.elapsed());
    }
}

/// `runs` probes, each timed alone and each proved by the INPUT policy counter.
fn bench(
    lab: &Lab,
    backend: Backend,
    family: Family,
    runs: usize,
) -> Result<Vec<Duration>, String> {
    lab.load(backend, family, &drop_all(family))
        .map_err(|e| format!("load: {e}"))?;
    let dst = SocketAddr::new(lab.addr(HostId::Target, family), PORT);
    let (tx, rx) = mpsc::channel();
    let mut times = Vec::with_capacity(runs);
    let input_policy = Selector::policy("INPUT");
    for i in 0..runs {
        let tx = tx.clone();
        let ev = lab
            .probe_dropped(
                HostId::Outsider,
                family,
                &input_policy,
                move || async move {
                    let _timer = Timer(Instant::now(), tx);
                    probe::tcp::connect(dst, NEGATIVE_WINDOW).await
                },
            )
            .map_err(|e| format!("probe {i}: {e}"))?;
        if ev.outcome.word() != "no-answer" {
            return Err(format!(
                "probe {i}: expected no-answer, got {:?}",
                ev.outcome
            ));
        }
        let policy = ev
            .counters
            .table("filter")
            .matching(&input_policy)
            .find(|c| c.is_drop())
            .map(|c| c.packets);
        if policy.unwrap_or(0) == 0 {
            return Err(format!(
                "probe {i}: not counted by the filter INPUT DROP policy: {}",
                ev.summary()
            ));
        }
        times.push(rx.recv().map_err(|_| format!("probe {i}: no time"))?);
    }
    Ok(times)
}
