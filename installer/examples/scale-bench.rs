//! Benchmark, for `ci/bench`'s `scale` section: large address lists as ipsets.
//!
//! 1. For 1,000, 10,000 and 50,000 entries (an admin list and a blocklist of
//!    that many IPv6 networks each, all under 2001:db8::/32, none adjacent):
//!    the time to parse and render the policy, to `check` it (`ipset restore`
//!    then `*-restore --test` in a private namespace), and to load it (sets,
//!    then rules) into the standard lab's target.
//! 2. Under each backend present, one standard lab per variant, each loaded
//!    once: the median time of a new TCP connection from admin to target
//!    (connect() until the handshake is done) through INPUT with the admin's
//!    address (a) alone (`none`), (b) last after 10,000 source rules (`plain`),
//!    (c) in one 10,000-entry `hash:net` set (`sets`); ten interleaved rounds
//!    over the three labs, the median over all.
//!    `set_ratio` = sets / none, `plain_ratio` = plain / none.
//!
//! Usage: `scale-bench [CONNECTS]` (default 301), as root. Prints one line per
//! measurement: `scale-bench render entries=.. render_ms=.. check_ms=.. load_ms=..`
//! and `scale-bench connect backend=.. entries=10000 none_us=.. plain_us=..
//! sets_us=.. plain_ratio=.. set_ratio=..`. Only the lab's namespaces and
//! private ones are touched.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use portcullis::Policy;
use portcullis_harness::{Backend, Family, HostId, Lab, services};

const PORT: u16 = 7070;
const LIST: usize = 10_000;

/// The `i`th of the bench's IPv6 networks under 2001:db8:BASE::/33 (every
/// other /56, so no two fold into one).
fn net(base: u32, i: usize) -> String {
    let n = (i as u32) * 2;
    format!("2001:db8:{:x}:{:x}00::/56", base + (n >> 8), n & 0xff)
}

fn policy_text(entries: usize) -> String {
    let quoted = |base| {
        (0..entries)
            .map(|i| format!("\"{}\"", net(base, i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[ssh]\nallow_from = [{}]\n[outbound]\ndns = true\n[[blocklist]]\ncidrs = [{}]\n",
        quoted(0x8000),
        quoted(0xc000)
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `ipset restore` of `sets`, then `RESTORE --test` of `rules`, in one private
/// namespace: what `portcullis check` runs.
fn check(sets: &str, restore: &str, rules: &str) -> Result<(), String> {
    portcullis_harness::backend::test_with_sets("unshare", "ipset", restore, sets, rules)
        .map(drop)
        .map_err(|e| e.to_string())
}

fn render_section(backend: Backend) -> Result<(), String> {
    for entries in [1_000, 10_000, 50_000] {
        let text = policy_text(entries);
        let start = Instant::now();
        let policy = Policy::parse(&text, "scale.toml").map_err(|e| e.to_string())?;
        let rendered = portcullis::render(&policy);
        let render = start.elapsed();
        let sets = rendered.sets_text().ok_or("no sets rendered")?;
        let v4 = rendered.text(Family::V4).ok_or("no ipv4")?;
        let v6 = rendered.text(Family::V6).ok_or("no ipv6")?;
        let start = Instant::now();
        check(&sets, &backend.restore_binary(Family::V4), &v4)?;
        check(&sets, &backend.restore_binary(Family::V6), &v6)?;
        let checked = start.elapsed();
        let lab = Lab::standard().map_err(|e| e.to_string())?;
        lab.settle().map_err(|e| e.to_string())?;
        let start = Instant::now();
        lab.load_with_sets(
            backend,
            Some(&sets),
            &[(Family::V4, Some(&v4)), (Family::V6, Some(&v6))],
        )
        .map_err(|e| e.to_string())?;
        let load = start.elapsed();
        lab.shutdown().map_err(|e| format!("{e:?}"))?;
        println!(
            "scale-bench render backend={backend} entries={entries} sets={} render_ms={:.1} check_ms={:.1} load_ms={:.1}",
            rendered.sets.len(),
            ms(render),
            ms(checked),
            ms(load)
        );
    }
    Ok(())
}

/// The IPv6 ruleset of one variant: replies, neighbour discovery, then the
/// admin's access to PORT as `variant` says.
fn ruleset(variant: &str, admin: IpAddr) -> (Option<String>, String) {
    let mut rules = String::from(
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
         -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
         -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 135 -j ACCEPT\n\
         -A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 136 -j ACCEPT\n",
    );
    let mut sets = None;
    match variant {
        "none" => {}
        "plain" => {
            for i in 0..LIST {
                writeln!(
                    rules,
                    "-A INPUT -s {} -p tcp -m tcp --dport {PORT} -j ACCEPT",
                    net(0x8000, i)
                )
                .unwrap();
            }
        }
        _ => {
            let mut s = format!(
                "create pc-bench-6 hash:net family inet6 hashsize 16384 maxelem 65536\n\
                 add pc-bench-6 {admin}/128\n"
            );
            for i in 0..LIST {
                writeln!(s, "add pc-bench-6 {}", net(0x8000, i)).unwrap();
            }
            sets = Some(s);
            writeln!(
                rules,
                "-A INPUT -m set --match-set pc-bench-6 src -p tcp -m tcp --dport {PORT} -j ACCEPT"
            )
            .unwrap();
        }
    }
    if variant != "sets" {
        writeln!(
            rules,
            "-A INPUT -s {admin}/128 -p tcp -m tcp --dport {PORT} -j ACCEPT"
        )
        .unwrap();
    }
    rules.push_str("COMMIT\n");
    (sets, rules)
}

/// Load `variant`'s ruleset (and set) into `lab`'s target.
fn load_variant(lab: &Lab, backend: Backend, variant: &str) -> Result<(), String> {
    let admin = lab.addr(HostId::Admin, Family::V6);
    let (sets, rules) = ruleset(variant, admin);
    lab.load_with_sets(backend, sets.as_deref(), &[(Family::V6, Some(&rules))])
        .map_err(|e| e.to_string())
}

/// The connect times of `runs` new connections from admin to target, after
/// two warm-up connections.
fn connect(lab: &Lab, runs: usize) -> Result<Vec<Duration>, String> {
    let dst = SocketAddr::new(lab.addr(HostId::Target, Family::V6), PORT);
    let times = lab
        .host(HostId::Admin)
        .try_run(move || async move {
            let mut times = Vec::with_capacity(runs);
            for i in 0..runs + 2 {
                let start = Instant::now();
                let s = tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(dst),
                )
                .await
                .map_err(|_| format!("connect {i} timed out"))?
                .map_err(|e| format!("connect {i}: {e}"))?;
                let took = start.elapsed();
                drop(s);
                if i >= 2 {
                    times.push(took);
                }
            }
            Ok::<_, String>(times)
        })
        .map_err(|e| e.to_string())??;
    Ok(times)
}

/// The median of `times`, in microseconds.
fn median_us(mut times: Vec<Duration>) -> f64 {
    times.sort();
    times[times.len() / 2].as_secs_f64() * 1e6
}

fn connect_section(backend: Backend, runs: usize) -> Result<(), String> {
    // One lab per variant, each loaded once. Replacing a ruleset of 10,000
    // rules in the same namespace leaves the kernel freeing the old rules for
    // seconds afterwards, and whatever variant came next measured about 40 us
    // instead of 22 (nft), whatever its rules: so no variant follows another
    // in a namespace, and nothing is loaded while connects are timed.
    const VARIANTS: [&str; 3] = ["none", "plain", "sets"];
    let mut labs = Vec::new();
    let mut echoes = Vec::new();
    for variant in VARIANTS {
        let lab = Lab::standard().map_err(|e| e.to_string())?;
        lab.settle().map_err(|e| e.to_string())?;
        let addr = SocketAddr::new(lab.addr(HostId::Target, Family::V6), PORT);
        echoes.push(
            lab.host(HostId::Target)
                .try_run(move || async move { services::tcp::echo(&[addr]).await })
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?,
        );
        load_variant(&lab, backend, variant)?;
        labs.push(lab);
    }
    // Interleaved rounds, so neither order nor a spell of load elsewhere on the
    // machine favours one variant.
    const ROUNDS: usize = 10;
    let mut times: [Vec<Duration>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for (i, lab) in labs.iter().enumerate() {
            times[i].extend(connect(lab, runs.div_ceil(ROUNDS))?);
        }
    }
    let [none, plain, sets] = times.map(median_us);
    println!(
        "scale-bench connect backend={backend} entries={LIST} runs={runs} none_us={none:.1} \
         plain_us={plain:.1} sets_us={sets:.1} plain_ratio={:.2} set_ratio={:.2}",
        plain / none,
        sets / none
    );
    drop(echoes);
    for lab in labs {
        lab.shutdown().map_err(|e| format!("{e:?}"))?;
    }
    Ok(())
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("CONNECTS must be a number"))
        .unwrap_or(301);
    if let Some(why) = portcullis_harness::trial::root_missing() {
        eprintln!("scale-bench: {why}");
        std::process::exit(2);
    }
    let mut failed = false;
    for backend in Backend::ALL {
        if let Some(why) = backend.unavailable_reason() {
            println!("scale-bench backend={backend} skipped ({why})");
            continue;
        }
        for r in [render_section(backend), connect_section(backend, runs)] {
            if let Err(e) = r {
                eprintln!("scale-bench: {backend}: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::exit(1);
    }
}
