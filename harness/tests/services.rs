//! End-to-end proof of every service and probe, each trial in its own private
//! network namespace (loopback only: 127.0.0.1 and ::1).
//!
//! A trial runs on a fresh thread that unshares its network namespace, brings
//! `lo` up and runs a current-thread tokio runtime: the same shape as a lab host,
//! without the lab. It never touches the namespace the test process started in.
//! Trials that need root are reported ignored, with the reason, when not root.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use portcullis_harness::backend::{self, Backend, Family};
use portcullis_harness::probe::dns::{Rtype, Transport};
use portcullis_harness::probe::{self, NEGATIVE_WINDOW, Outcome};
use portcullis_harness::services::{self, dns::Zone, tls::LabCa};

/// The window of probes expected to succeed: generous, because a loaded CI
/// machine may be slow to schedule the server; success returns long before it.
const PATIENT: Duration = Duration::from_secs(5);

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

type TestResult = Result<(), String>;

fn main() {
    let args = Arguments::from_args();
    let mut trials = vec![
        privileged("dns::a_over_udp", || dns_case(V4, Rtype::A, Transport::Udp)),
        privileged("dns::aaaa_over_udp", || {
            dns_case(V6, Rtype::Aaaa, Transport::Udp)
        }),
        privileged("dns::a_over_tcp", || dns_case(V4, Rtype::A, Transport::Tcp)),
        privileged("dns::aaaa_over_tcp", || {
            dns_case(V6, Rtype::Aaaa, Transport::Tcp)
        }),
        privileged("dns::nxdomain_and_nodata", dns_negative),
        privileged("http::get_200_v4_v6", http_200),
        privileged("https::right_ca_ok_wrong_ca_failed", https_ca),
        privileged("tcp::no_listener_is_refused", tcp_refused),
        privileged("tcp::echo_listener_echoes", tcp_echo),
        privileged("icmp::echo_v4_v6", icmp_echo),
    ];
    for b in Backend::ALL {
        trials.push(with_backend(
            &format!("tcp::drop_is_no_answer::{b}"),
            b,
            move || tcp_dropped(b),
        ));
        trials.push(with_backend(
            &format!("icmp::drop_is_no_answer::{b}"),
            b,
            move || icmp_dropped(b),
        ));
        trials.push(with_backend(
            &format!("craft::syn_fin_and_syn_rst_counted::{b}"),
            b,
            move || malicious_flags(b),
        ));
        trials.push(with_backend(
            &format!("craft::out_of_window_rst_is_invalid::{b}"),
            b,
            move || invalid_rst(b),
        ));
        trials.push(with_backend(
            &format!("timing::negative_probe_median::{b}"),
            b,
            move || negative_timing(b),
        ));
    }
    libtest_mimic::run(&args, trials).exit();
}

// ---------------------------------------------------------------------------
// Trial plumbing

fn not_root() -> Option<String> {
    (!nix::unistd::geteuid().is_root())
        .then(|| "needs root: private network namespaces (run with sudo)".to_owned())
}

fn privileged<F, Fut>(name: &str, f: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = TestResult> + 'static,
{
    Trial::ignorable_test(name, move || {
        if let Some(reason) = not_root() {
            return Ok(Completion::ignored_with(reason));
        }
        in_netns(f).map(|()| Completion::Completed)
    })
}

fn with_backend<F, Fut>(name: &str, b: Backend, f: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = TestResult> + 'static,
{
    Trial::ignorable_test(name, move || {
        if let Some(reason) = not_root().or_else(|| b.unavailable_reason()) {
            return Ok(Completion::ignored_with(reason));
        }
        in_netns(f).map(|()| Completion::Completed)
    })
}

/// Run `f` on a new thread inside a new, private network namespace with `lo` up.
/// Namespaces are per thread, and this thread exists only for this trial, so
/// nothing leaks into libtest-mimic's reused worker threads.
fn in_netns<F, Fut>(f: F) -> Result<(), Failed>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = TestResult> + 'static,
{
    let handle = std::thread::spawn(move || -> TestResult {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("unshare(CLONE_NEWNET): {e}"))?;
        // `ip` forks from this thread, so it runs in the new namespace.
        backend::run(&["ip", "link", "set", "lo", "up"], None).map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        rt.block_on(f())
    });
    match handle.join() {
        Ok(r) => r.map_err(Failed::from),
        Err(panic) => Err(Failed::from(format!(
            "trial thread panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        ))),
    }
}

fn expect_ok(what: &str, got: &Outcome, detail_contains: &str) -> TestResult {
    match got {
        Outcome::Ok(d) if d.contains(detail_contains) => Ok(()),
        other => Err(format!(
            "{what}: expected ok containing {detail_contains:?}, got {other:?}"
        )),
    }
}

fn expect_word(what: &str, got: &Outcome, word: &str) -> TestResult {
    if got.word() == word {
        Ok(())
    } else {
        Err(format!("{what}: expected {word}, got {got:?}"))
    }
}

/// Packet count of the first rule in `family`'s saved ruleset (with `-c`) whose
/// text contains `needle`.
fn rule_packets(b: Backend, family: Family, needle: &str) -> Result<u64, String> {
    let saved = backend::save(b, family, true).map_err(|e| e.to_string())?;
    for line in saved.lines() {
        if line.starts_with('[') && line.contains(needle) {
            let counts = line[1..].split(']').next().unwrap_or_default();
            let packets = counts.split(':').next().unwrap_or_default();
            return packets
                .parse()
                .map_err(|e| format!("bad counter in {line:?}: {e}"));
        }
    }
    Err(format!("no rule containing {needle:?} in:\n{saved}"))
}

fn lab_zone() -> Zone {
    Zone::new()
        .with("www.lab.test", "192.0.2.80".parse().unwrap())
        .with("www.lab.test", "2001:db8:80::80".parse().unwrap())
        .with("resolver.lab.test", "198.51.100.53".parse().unwrap())
}

// ---------------------------------------------------------------------------
// DNS

async fn dns_case(server_ip: IpAddr, rtype: Rtype, over: Transport) -> TestResult {
    let server = SocketAddr::new(server_ip, 53);
    let svc = services::dns::start(&[server], lab_zone())
        .await
        .map_err(|e| e.to_string())?;
    let want = match rtype {
        Rtype::A => "192.0.2.80",
        Rtype::Aaaa => "2001:db8:80::80",
    };
    let got = probe::dns::resolve(server, "www.lab.test", rtype, over, PATIENT).await;
    expect_ok("www.lab.test", &got, want)?;
    if got != Outcome::Ok(want.to_owned()) {
        return Err(format!("expected exactly {want}, got {got:?}"));
    }
    drop(svc);
    // The service is gone once the runtime has turned: now nobody answers.
    tokio::task::yield_now().await;
    let after = probe::dns::resolve(server, "www.lab.test", rtype, over, PATIENT).await;
    expect_word("after the server stopped", &after, "refused")
}

async fn dns_negative() -> TestResult {
    let server = SocketAddr::new(V4, 53);
    let _svc = services::dns::start(&[server], lab_zone())
        .await
        .map_err(|e| e.to_string())?;
    for over in [Transport::Udp, Transport::Tcp] {
        let got = probe::dns::resolve(server, "nope.lab.test", Rtype::A, over, PATIENT).await;
        match &got {
            Outcome::Failed(d) if d.contains("nxdomain") => {}
            other => return Err(format!("nope.lab.test over {over:?}: {other:?}")),
        }
        let got =
            probe::dns::resolve(server, "resolver.lab.test", Rtype::Aaaa, over, PATIENT).await;
        match &got {
            Outcome::Failed(d) if d.contains("no Aaaa record") => {}
            other => return Err(format!("resolver AAAA over {over:?}: {other:?}")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// HTTP, HTTPS, TCP

async fn http_200() -> TestResult {
    let addrs = [SocketAddr::new(V4, 80), SocketAddr::new(V6, 80)];
    let _svc = services::http::start(&addrs, "web")
        .await
        .map_err(|e| e.to_string())?;
    for a in addrs {
        let got = probe::http::get(a, "www.lab.test", PATIENT).await;
        if got != Outcome::Ok("200 OK portcullis lab: web".into()) {
            return Err(format!("GET {a}: {got:?}"));
        }
    }
    Ok(())
}

async fn https_ca() -> TestResult {
    let ca = LabCa::new("portcullis lab ca").map_err(|e| e.to_string())?;
    let other = LabCa::new("some other ca").map_err(|e| e.to_string())?;
    let leaf = ca
        .issue(&["www.lab.test"], &[V4, V6])
        .map_err(|e| e.to_string())?;
    let addrs = [SocketAddr::new(V4, 443), SocketAddr::new(V6, 443)];
    let _svc = services::http::start_tls(&addrs, "web", &leaf)
        .await
        .map_err(|e| e.to_string())?;
    for a in addrs {
        for name in ["www.lab.test".to_owned(), a.ip().to_string()] {
            let got = probe::https::get(a, &name, ca.cert(), PATIENT).await;
            if got != Outcome::Ok("200 OK portcullis lab: web".into()) {
                return Err(format!("https {a} as {name} with the lab ca: {got:?}"));
            }
            let got = probe::https::get(a, &name, other.cert(), PATIENT).await;
            match &got {
                Outcome::Failed(d) if d.contains("certificate") => {}
                other => return Err(format!("https {a} as {name} with a wrong ca: {other:?}")),
            }
        }
        // The right CA but a name the certificate does not hold.
        let got = probe::https::get(a, "evil.lab.test", ca.cert(), PATIENT).await;
        match &got {
            Outcome::Failed(d) if d.contains("certificate") => {}
            other => return Err(format!("https {a} as evil.lab.test: {other:?}")),
        }
    }
    Ok(())
}

async fn tcp_refused() -> TestResult {
    for ip in [V4, V6] {
        let got = probe::tcp::connect(SocketAddr::new(ip, 9), PATIENT).await;
        expect_word(&format!("connect [{ip}]:9"), &got, "refused")?;
    }
    Ok(())
}

async fn tcp_echo() -> TestResult {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addrs = [SocketAddr::new(V4, 8081), SocketAddr::new(V6, 8081)];
    let _svc = services::tcp::echo(&addrs)
        .await
        .map_err(|e| e.to_string())?;
    for a in addrs {
        expect_ok(
            "connect",
            &probe::tcp::connect(a, PATIENT).await,
            "connected",
        )?;
        let mut s = tokio::net::TcpStream::connect(a)
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"ping\n").await.map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
        if &buf != b"ping\n" {
            return Err(format!("echo from {a}: {buf:?}"));
        }
    }
    Ok(())
}

const DROP_8082: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A INPUT -p tcp -m tcp --dport 8082 -j DROP\nCOMMIT\n";

async fn tcp_dropped(b: Backend) -> TestResult {
    let addrs = [SocketAddr::new(V4, 8082), SocketAddr::new(V6, 8082)];
    let _svc = services::tcp::echo(&addrs)
        .await
        .map_err(|e| e.to_string())?;
    for (a, family) in addrs.into_iter().zip(Family::ALL) {
        expect_ok(
            "before the drop",
            &probe::tcp::connect(a, PATIENT).await,
            "",
        )?;
        backend::restore(b, family, DROP_8082, false).map_err(|e| e.to_string())?;
        let before = rule_packets(b, family, "--dport 8082 -j DROP")?;
        let got = probe::tcp::connect(a, NEGATIVE_WINDOW).await;
        expect_word(&format!("connect {a} behind a DROP"), &got, "no-answer")?;
        let after = rule_packets(b, family, "--dport 8082 -j DROP")?;
        if after <= before {
            return Err(format!(
                "the DROP rule did not count the SYN ({before} -> {after})"
            ));
        }
    }
    Ok(())
}

/// Not an assertion on time (timing goals belong to benchmarks): it proves that
/// every probe in the sample was a real NoAnswer and prints the distribution.
async fn negative_timing(b: Backend) -> TestResult {
    let a = SocketAddr::new(V4, 8082);
    let _svc = services::tcp::echo(&[a]).await.map_err(|e| e.to_string())?;
    backend::restore(b, Family::V4, DROP_8082, false).map_err(|e| e.to_string())?;
    let mut times = Vec::new();
    for _ in 0..21 {
        let t = Instant::now();
        let got = probe::tcp::connect(a, NEGATIVE_WINDOW).await;
        times.push(t.elapsed());
        expect_word("negative probe", &got, "no-answer")?;
    }
    let counted = rule_packets(b, Family::V4, "--dport 8082 -j DROP")?;
    if counted < 21 {
        return Err(format!("the DROP rule counted {counted} of 21 SYNs"));
    }
    times.sort();
    eprintln!(
        "negative tcp probe ({b}, window {NEGATIVE_WINDOW:?}): min {:?} median {:?} max {:?}",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// ICMP

async fn icmp_echo() -> TestResult {
    for ip in [V4, V6] {
        let got = probe::icmp::echo(ip, PATIENT).await;
        expect_ok(
            &format!("echo {ip}"),
            &got,
            &format!("echo reply from {ip}"),
        )?;
    }
    Ok(())
}

fn ruleset(rules: &[&str]) -> String {
    let mut text =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for r in rules {
        text.push_str(r);
        text.push('\n');
    }
    text.push_str("COMMIT\n");
    text
}

async fn icmp_dropped(b: Backend) -> TestResult {
    for (ip, family, rule) in [
        (
            V4,
            Family::V4,
            "-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP",
        ),
        (
            V6,
            Family::V6,
            "-A INPUT -p ipv6-icmp -m icmp6 --icmpv6-type 128 -j DROP",
        ),
    ] {
        backend::restore(b, family, &ruleset(&[rule]), false).map_err(|e| e.to_string())?;
        let needle = rule
            .trim_start_matches("-A INPUT ")
            .split(" -m ")
            .next()
            .unwrap_or_default();
        let before = rule_packets(b, family, "-j DROP")?;
        let got = probe::icmp::echo(ip, NEGATIVE_WINDOW).await;
        expect_word(
            &format!("echo {ip} behind a DROP ({needle})"),
            &got,
            "no-answer",
        )?;
        let after = rule_packets(b, family, "-j DROP")?;
        if after != before + 1 {
            return Err(format!(
                "the DROP rule counted {before} -> {after}, expected one echo request"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Crafted TCP

async fn malicious_flags(b: Backend) -> TestResult {
    use probe::craft::{Flags, send_tcp};
    let rules = [
        "-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN FIN,SYN -j DROP",
        "-A INPUT -p tcp -m tcp --tcp-flags SYN,RST SYN,RST -j DROP",
    ];
    for (ip, family) in [(V4, Family::V4), (V6, Family::V6)] {
        backend::restore(b, family, &ruleset(&rules), false).map_err(|e| e.to_string())?;
        let src = SocketAddr::new(ip, 40000);
        let dst = SocketAddr::new(ip, 8083);
        for (flags, rule) in [
            (Flags::SYN_FIN, "FIN,SYN FIN,SYN"),
            (Flags::SYN_RST, "SYN,RST SYN,RST"),
        ] {
            let before = rule_packets(b, family, rule)?;
            let got = send_tcp(src, dst, flags, 1000, 0).await;
            expect_ok(&format!("send {flags} {src} -> {dst}"), &got, "sent")?;
            let after = rule_packets(b, family, rule)?;
            if after != before + 1 {
                return Err(format!(
                    "{family} {flags}: the `{rule}` rule counted {before} -> {after}, expected exactly one"
                ));
            }
        }
    }
    Ok(())
}

async fn invalid_rst(b: Backend) -> TestResult {
    let rule = "-A INPUT -m conntrack --ctstate INVALID -j DROP";
    for (ip, family) in [(V4, Family::V4), (V6, Family::V6)] {
        backend::restore(b, family, &ruleset(&[rule]), false).map_err(|e| e.to_string())?;
        let dst = SocketAddr::new(ip, 8084);
        let _svc = services::tcp::echo(&[dst])
            .await
            .map_err(|e| e.to_string())?;
        // Control: a normal connection is never INVALID.
        expect_ok(
            "control connect",
            &probe::tcp::connect(dst, PATIENT).await,
            "connected",
        )?;
        let before = rule_packets(b, family, "INVALID")?;
        let got = probe::craft::out_of_window_rst(dst, PATIENT).await;
        expect_ok(&format!("out-of-window rst to {dst}"), &got, "sent RST")?;
        let after = rule_packets(b, family, "INVALID")?;
        if after != before + 1 {
            return Err(format!(
                "{family}: the INVALID rule counted {before} -> {after}, expected exactly the RST ({got:?})"
            ));
        }
    }
    Ok(())
}
