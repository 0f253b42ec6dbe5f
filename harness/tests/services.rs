//! End-to-end proof of every service and probe. Loopback trials (127.0.0.1 and
//! ::1) each run on a lab `Host` of their own: a dedicated thread in a fresh
//! network namespace with `lo` up and a current-thread runtime. The `lab::`
//! trials use the standard lab, across veth links and the router, with the
//! target's counters as evidence. Nothing touches the namespace the test process
//! started in.
//! Trials that need root are reported ignored, with the reason, when not root.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use portcullis_harness::backend::{self, Backend, Family};
use portcullis_harness::lab::{HostId, Lab};
use portcullis_harness::probe::dns::{Rtype, Transport};
use portcullis_harness::probe::{self, NEGATIVE_WINDOW, Outcome};
use portcullis_harness::services::ssh::{self, LabDir, Sshd};
use portcullis_harness::services::{self, dns::Zone, tls::LabCa};
use portcullis_harness::trial;
use portcullis_harness::{CounterKind, Counters, Selector};

/// The window of probes expected to succeed: generous, because a loaded CI
/// machine may be slow to schedule the server; success returns long before it.
const PATIENT: Duration = Duration::from_secs(5);

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

type TestResult = Result<(), String>;

/// Set in a re-executed copy of this binary that builds a lab with sshd and
/// sessions, reports their pids and waits to be SIGKILLed.
const CHILD_ENV: &str = "PORTCULLIS_SERVICES_TEST_CHILD";

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child_mode();
    }
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
        netns_trial("ssh::run_and_sessions_v4_v6", openssh_missing(), ssh_case),
        netns_trial("ssh::no_sshd_is_refused", openssh_missing(), ssh_refused),
    ];
    // One trial per backend for each: `NAME::nft`, `NAME::legacy`.
    macro_rules! per_backend {
        ($($name:literal => $f:ident),* $(,)?) => {
            for b in Backend::ALL {
                $(trials.push(with_backend(&format!("{}::{b}", $name), b, move || $f(b)));)*
            }
        };
    }
    per_backend!(
        "tcp::drop_is_no_answer" => tcp_dropped,
        "reject_is_refused" => rejected,
        "icmp::drop_is_no_answer" => icmp_dropped,
        "craft::syn_fin_and_syn_rst_counted" => malicious_flags,
        "craft::out_of_window_rst_is_invalid" => invalid_rst,
        "timing::negative_probe_median" => negative_timing,
    );
    trials.push(lab_trial("lab::services_across_the_router", lab_services));
    trials.push(lab_gated(
        "lab::ssh_admin_and_outsider_to_target",
        openssh_missing(),
        lab_ssh,
    ));
    trials.push(trial::privileged(
        "lab::sigkill_leaves_no_ssh_process",
        openssh_missing(),
        || Ok(sigkill_leaves_no_ssh_process()?),
    ));
    for b in Backend::ALL {
        trials.push(lab_gated(
            &format!("lab::crafted_and_dropped_counted_on_target::{b}"),
            b.unavailable_reason(),
            move |lab| lab_counted(lab, b),
        ));
        trials.push(lab_gated(
            &format!("lab::sessions_opened_before_the_ruleset::{b}"),
            b.unavailable_reason().or_else(openssh_missing),
            move |lab| lab_sessions_before_ruleset(lab, b),
        ));
    }
    libtest_mimic::run(&args, trials).exit();
}

// ---------------------------------------------------------------------------
// Trial plumbing

/// Why an OpenSSH trial cannot run here beyond root: sshd or ssh missing (the
/// lab makes its keys itself, without ssh-keygen).
fn openssh_missing() -> Option<String> {
    ["sshd", "ssh"]
        .into_iter()
        .find(|b| backend::find_in_path(b).is_none())
        .map(|bin| format!("{bin} not found on PATH (install openssh-server and openssh-client)"))
}

/// A trial that runs `f` on a host of its own (`in_netns`), ignored with the
/// reason when not root or when `extra` names another reason it cannot run.
fn netns_trial<F, Fut>(name: &str, extra: Option<String>, f: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = TestResult> + 'static,
{
    trial::privileged(name, extra, move || in_netns(f))
}

fn privileged<F, Fut>(name: &str, f: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = TestResult> + 'static,
{
    netns_trial(name, None, f)
}

fn with_backend<F, Fut>(name: &str, b: Backend, f: F) -> Trial
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = TestResult> + 'static,
{
    netns_trial(name, b.unavailable_reason(), f)
}

/// Run `f` on a lab host of its own: a dedicated thread in a new, private network
/// namespace with `lo` up, running a current-thread runtime. Namespaces are per
/// thread, and this one exists only for this trial, so nothing leaks into
/// libtest-mimic's reused worker threads.
fn in_netns<F, Fut>(f: F) -> Result<(), Failed>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = TestResult> + 'static,
{
    let host = portcullis_harness::Host::new("services-test")
        .map_err(|e| Failed::from(format!("private namespace: {e}")))?;
    let result = host
        .try_run(f)
        .map_err(|e| Failed::from(format!("host thread: {e}")))?;
    host.shutdown()
        .map_err(|e| Failed::from(format!("host teardown: {e:?}")))?;
    result.map_err(Failed::from)
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

/// `family`'s counters now, in the calling host's namespace (`*-save -c`).
fn snapshot(b: Backend, family: Family) -> Result<Counters, String> {
    let saved = backend::save(b, family, true).map_err(|e| e.to_string())?;
    Counters::parse(family, &saved).map_err(|e| e.to_string())
}

/// Packets of the first rule in `c` whose text contains `needle` (use on a
/// [`Counters::since`] value).
fn rule_packets(c: &Counters, needle: &str) -> Result<u64, String> {
    c.entries
        .iter()
        .find(|e| matches!(&e.kind, CounterKind::Rule { text, .. } if text.contains(needle)))
        .map(|e| e.packets)
        .ok_or_else(|| format!("no rule containing {needle:?} in {:?}", c.entries))
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
    svc.stop().await;
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

const DROP_8082: &str = "-A INPUT -p tcp -m tcp --dport 8082 -j DROP";

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
        backend::restore(b, family, &ruleset(&[DROP_8082]), false).map_err(|e| e.to_string())?;
        let before = snapshot(b, family)?;
        let got = probe::tcp::connect(a, NEGATIVE_WINDOW).await;
        expect_word(&format!("connect {a} behind a DROP"), &got, "no-answer")?;
        let counted = rule_packets(&snapshot(b, family)?.since(&before), "--dport 8082 -j DROP")?;
        if counted == 0 {
            return Err("the DROP rule did not count the SYN".into());
        }
    }
    Ok(())
}

/// Not an assertion on time (timing goals belong to benchmarks): it proves that
/// every probe in the sample was a real NoAnswer, counted by its DROP rule, and
/// prints the distribution of the time each took to decide.
async fn negative_timing(b: Backend) -> TestResult {
    const N: usize = 21;
    let tcp = SocketAddr::new(V4, 8082);
    let dns = SocketAddr::new(V4, 53);
    let _echo = services::tcp::echo(&[tcp])
        .await
        .map_err(|e| e.to_string())?;
    let _dns = services::dns::start(&[dns], lab_zone())
        .await
        .map_err(|e| e.to_string())?;
    let rules = [
        "-A INPUT -p tcp -m tcp --dport 8082 -j DROP",
        "-A INPUT -p udp -m udp --dport 53 -j DROP",
        "-A INPUT -p icmp -m icmp --icmp-type 8 -j DROP",
    ];
    backend::restore(b, Family::V4, &ruleset(&rules), false).map_err(|e| e.to_string())?;
    for (i, rule) in rules.iter().enumerate() {
        let mut times = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            let got = match i {
                0 => probe::tcp::connect(tcp, NEGATIVE_WINDOW).await,
                1 => {
                    probe::dns::resolve(
                        dns,
                        "www.lab.test",
                        Rtype::A,
                        Transport::Udp,
                        NEGATIVE_WINDOW,
                    )
                    .await
                }
                _ => probe::icmp::echo(V4, NEGATIVE_WINDOW).await,
            };
            times.push(t.elapsed());
            expect_word(
                &format!("negative probe behind `{rule}`"),
                &got,
                "no-answer",
            )?;
        }
        let needle = rule.trim_start_matches("-A INPUT ");
        let counted = rule_packets(&snapshot(b, Family::V4)?, needle)?;
        if counted < N as u64 {
            return Err(format!("`{rule}` counted {counted} of {N} probes"));
        }
        times.sort();
        eprintln!(
            "negative probe ({b}, window {NEGATIVE_WINDOW:?}, {N} runs) `{needle}`: min {:.2?} median {:.2?} max {:.2?}",
            times[0],
            times[N / 2],
            times[N - 1]
        );
    }
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
        let before = snapshot(b, family)?;
        let got = probe::icmp::echo(ip, NEGATIVE_WINDOW).await;
        expect_word(
            &format!("echo {ip} behind a DROP ({needle})"),
            &got,
            "no-answer",
        )?;
        let counted = rule_packets(&snapshot(b, family)?.since(&before), "-j DROP")?;
        if counted != 1 {
            return Err(format!(
                "the DROP rule counted {counted}, expected one echo request"
            ));
        }
    }
    Ok(())
}

/// REJECT answers: a RST or an ICMP unreachable, each `Refused`, and each counted
/// by its REJECT rule. The ICMP case proves the probe reads the request quoted in
/// the error (its id and sequence number).
async fn rejected(b: Backend) -> TestResult {
    let echo = [SocketAddr::new(V4, 8085), SocketAddr::new(V6, 8085)];
    let _echo = services::tcp::echo(&echo)
        .await
        .map_err(|e| e.to_string())?;
    let dns = [SocketAddr::new(V4, 53), SocketAddr::new(V6, 53)];
    let _dns = services::dns::start(&dns, lab_zone())
        .await
        .map_err(|e| e.to_string())?;
    for (i, family) in Family::ALL.into_iter().enumerate() {
        let (icmp, unreachable) = match family {
            Family::V4 => ("-p icmp -m icmp --icmp-type 8", "icmp-port-unreachable"),
            Family::V6 => (
                "-p ipv6-icmp -m icmp6 --icmpv6-type 128",
                "icmp6-port-unreachable",
            ),
        };
        let rules = [
            "-A INPUT -p tcp -m tcp --dport 8085 -m comment --comment tcp-rst -j REJECT --reject-with tcp-reset".to_owned(),
            format!(
                "-A INPUT -p tcp -m tcp --dport 8086 -m comment --comment tcp-unreach -j REJECT --reject-with {unreachable}"
            ),
            format!(
                "-A INPUT -p udp -m udp --dport 53 -m comment --comment udp-unreach -j REJECT --reject-with {unreachable}"
            ),
            format!(
                "-A INPUT {icmp} -m comment --comment icmp-unreach -j REJECT --reject-with {unreachable}"
            ),
        ];
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        backend::restore(b, family, &ruleset(&rules), false).map_err(|e| e.to_string())?;
        let ip = echo[i].ip();
        let cases: [(&str, Outcome); 4] = [
            ("tcp-rst", probe::tcp::connect(echo[i], PATIENT).await),
            (
                "tcp-unreach",
                probe::tcp::connect(SocketAddr::new(ip, 8086), PATIENT).await,
            ),
            (
                "udp-unreach",
                probe::dns::resolve(dns[i], "www.lab.test", Rtype::A, Transport::Udp, PATIENT)
                    .await,
            ),
            ("icmp-unreach", probe::icmp::echo(ip, PATIENT).await),
        ];
        for (comment, got) in cases {
            expect_word(&format!("{family} {comment}"), &got, "refused")?;
            // At least one: over loopback the ICMPv6 error can reach the socket
            // while connect(2) still holds it, so TCP keeps it as a soft error and
            // the SYN is sent again before the refusal sticks.
            let counted = rule_packets(&snapshot(b, family)?, &format!("--comment {comment} "))?;
            if counted == 0 {
                return Err(format!("{family}: rule {comment} counted nothing"));
            }
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
            let before = snapshot(b, family)?;
            let got = send_tcp(src, dst, flags, 1000, 0).await;
            expect_ok(&format!("send {flags} {src} -> {dst}"), &got, "sent")?;
            let counted = rule_packets(&snapshot(b, family)?.since(&before), rule)?;
            if counted != 1 {
                return Err(format!(
                    "{family} {flags}: the `{rule}` rule counted {counted}, expected exactly one"
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
        let before = snapshot(b, family)?;
        let got = probe::craft::out_of_window_rst(dst, PATIENT).await;
        expect_ok(&format!("out-of-window rst to {dst}"), &got, "sent RST")?;
        let counted = rule_packets(&snapshot(b, family)?.since(&before), "INVALID")?;
        if counted != 1 {
            return Err(format!(
                "{family}: the INVALID rule counted {counted}, expected exactly the RST ({got:?})"
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// OpenSSH

async fn ssh_case() -> TestResult {
    let dir = std::sync::Arc::new(LabDir::new().map_err(|e| e.to_string())?);
    let dir_path = dir.path().to_owned();
    let sshd = Sshd::start(dir, &[V4, V6], 22)
        .await
        .map_err(|e| e.to_string())?;
    let client = sshd.client();
    for &addr in sshd.addrs() {
        let got = client.run(addr, "echo hi", PATIENT).await;
        if got != Outcome::Ok("hi".into()) {
            return Err(format!(
                "ssh {addr} echo hi: {got:?}\nsshd log: {:?}",
                sshd.log()
            ));
        }
        // A login that runs nothing on the target: a subsystem sshd serves
        // itself, opened and closed.
        let got = client.login(addr, PATIENT).await;
        if got != Outcome::Ok(ssh::LOGIN_OK.into()) {
            return Err(format!(
                "ssh {addr} login: {got:?}\nsshd log: {:?}",
                sshd.log()
            ));
        }
        // An interactive session: what goes in comes back.
        let mut s = client
            .session(addr, "cat", PATIENT)
            .await
            .map_err(|e| format!("{e}\nsshd log: {:#?}", sshd.log()))?;
        for line in ["first", "second"] {
            let got = s.exchange(line, PATIENT).await;
            if got != Outcome::Ok(line.into()) {
                return Err(format!("session {addr}: sent {line:?}, got {got:?}"));
            }
        }
        // Nothing sent, nothing comes back: the silent case is observable too.
        expect_word("idle cat", &s.read_line(NEGATIVE_WINDOW).await, "no-answer")?;
        // A server that speaks first: a countdown the client only reads.
        let mut c = client
            .session(
                addr,
                "for i in 3 2 1; do echo $i; sleep 0.05; done",
                PATIENT,
            )
            .await
            .map_err(|e| e.to_string())?;
        for want in ["3", "2", "1"] {
            let got = c.read_line(PATIENT).await;
            if got != Outcome::Ok(want.into()) {
                return Err(format!("countdown {addr}: want {want}, got {got:?}"));
            }
        }
        expect_word("countdown over", &c.read_line(PATIENT).await, "failed")?;
    }
    let log = sshd.log().join("\n");
    if !log.contains("Accepted publickey") {
        return Err(format!("sshd never logged a publickey login:\n{log}"));
    }
    drop(sshd);
    drop(client);
    if dir_path.exists() {
        return Err(format!(
            "{} outlived the sshd and its clients",
            dir_path.display()
        ));
    }
    Ok(())
}

async fn ssh_refused() -> TestResult {
    let dir = std::sync::Arc::new(LabDir::new().map_err(|e| e.to_string())?);
    let sshd = Sshd::start(dir, &[V4], 2222)
        .await
        .map_err(|e| e.to_string())?;
    let client = sshd.client();
    for ip in [V4, V6] {
        let got = client
            .run(SocketAddr::new(ip, 22), "echo hi", PATIENT)
            .await;
        expect_word(&format!("ssh [{ip}]:22 with no sshd"), &got, "refused")?;
        let got = client.login(SocketAddr::new(ip, 22), PATIENT).await;
        expect_word(&format!("login [{ip}]:22 with no sshd"), &got, "refused")?;
    }
    // Listening on 127.0.0.1 only: ::1 is refused on the same port.
    let got = client
        .run(SocketAddr::new(V6, 2222), "echo hi", PATIENT)
        .await;
    expect_word("ssh [::1]:2222", &got, "refused")
}

// ---------------------------------------------------------------------------
// The same services and probes in the standard lab: across veth links and the
// router, between namespaces, with the target's counters as evidence.

fn lab_trial<F>(name: &str, f: F) -> Trial
where
    F: FnOnce(&Lab) -> TestResult + Send + 'static,
{
    lab_gated(name, None, f)
}

/// A trial that runs `f` on a fresh standard lab, torn down afterwards (a teardown
/// failure fails the trial), ignored with the reason when not root or when
/// `extra` names another reason it cannot run.
fn lab_gated<F>(name: &str, extra: Option<String>, f: F) -> Trial
where
    F: FnOnce(&Lab) -> TestResult + Send + 'static,
{
    trial::privileged(name, extra, move || {
        let lab = Lab::standard().map_err(|e| format!("standard lab: {e}"))?;
        let result = f(&lab);
        lab.shutdown().map_err(|e| format!("lab teardown: {e:?}"))?;
        Ok(result?)
    })
}

fn both(lab: &Lab, id: HostId) -> [IpAddr; 2] {
    [lab.addr(id, Family::V4), lab.addr(id, Family::V6)]
}

fn on_ports(ips: [IpAddr; 2], port: u16) -> Vec<SocketAddr> {
    ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect()
}

fn lab_services(lab: &Lab) -> TestResult {
    let web = both(lab, HostId::Web);
    let resolver = both(lab, HostId::Resolver);
    let zone = Zone::new()
        .with("www.lab.test", web[0])
        .with("www.lab.test", web[1]);
    let dns_addrs = on_ports(resolver, 53);
    let a = dns_addrs.clone();
    let _dns = lab
        .host(HostId::Resolver)
        .run(move || async move { services::dns::start(&a, zone).await })
        .map_err(|e| e.to_string())?;
    let ca = LabCa::new("portcullis lab ca").map_err(|e| e.to_string())?;
    let leaf = ca
        .issue(&["www.lab.test"], &web)
        .map_err(|e| e.to_string())?;
    let (http, https, echo) = lab
        .host(HostId::Web)
        .run(move || async move {
            Ok::<_, services::ServiceError>((
                services::http::start(&on_ports(web, 80), "web").await?,
                services::http::start_tls(&on_ports(web, 443), "web", &leaf).await?,
                services::tcp::echo(&on_ports(web, 8080)).await?,
            ))
        })
        .map_err(|e| e.to_string())?;
    let ca_cert = ca.cert().clone();
    let result = lab.host(HostId::Target).run(move || async move {
        for (i, server) in dns_addrs.iter().enumerate() {
            for over in [Transport::Udp, Transport::Tcp] {
                for (rtype, want) in [(Rtype::A, web[0]), (Rtype::Aaaa, web[1])] {
                    let got =
                        probe::dns::resolve(*server, "www.lab.test", rtype, over, PATIENT).await;
                    if got != Outcome::Ok(want.to_string()) {
                        return Err(format!(
                            "resolve {rtype:?} over {over:?} via {server}: {got:?}"
                        ));
                    }
                }
            }
            let ip = web[i];
            let got = probe::http::get(SocketAddr::new(ip, 80), "www.lab.test", PATIENT).await;
            expect_ok("http from target", &got, "200 OK portcullis lab: web")?;
            let got =
                probe::https::get(SocketAddr::new(ip, 443), "www.lab.test", &ca_cert, PATIENT)
                    .await;
            expect_ok("https from target", &got, "200 OK portcullis lab: web")?;
            let got = probe::tcp::connect(SocketAddr::new(ip, 8080), PATIENT).await;
            expect_ok("tcp 8080 from target", &got, "connected")?;
            let got = probe::tcp::connect(SocketAddr::new(ip, 8081), PATIENT).await;
            expect_word("tcp 8081 (nothing listens) from target", &got, "refused")?;
            let got = probe::icmp::echo(ip, PATIENT).await;
            expect_ok("echo web from target", &got, "echo reply")?;
        }
        Ok(())
    });
    drop((http, https, echo));
    result?;
    for ip in both(lab, HostId::Target) {
        let got = lab
            .host(HostId::Outsider)
            .run(move || async move { probe::icmp::echo(ip, PATIENT).await });
        expect_ok("echo target from outsider", &got, "echo reply")?;
    }
    Ok(())
}

fn lab_ssh(lab: &Lab) -> TestResult {
    let target = both(lab, HostId::Target);
    let dir = std::sync::Arc::new(LabDir::new().map_err(|e| e.to_string())?);
    let sshd = lab
        .host(HostId::Target)
        .run(move || async move { Sshd::start(dir, &target, 22).await })
        .map_err(|e| e.to_string())?;
    for &addr in sshd.addrs() {
        let client = sshd.client();
        let got = lab
            .host(HostId::Admin)
            .run(move || async move { client.run(addr, "echo hi", PATIENT).await });
        if got != Outcome::Ok("hi".into()) {
            return Err(format!(
                "admin: ssh {addr} echo hi: {got:?}\nsshd: {:?}",
                sshd.log()
            ));
        }
        let client = sshd.client();
        let got = lab.host(HostId::Outsider).run(move || async move {
            let mut s = client
                .session(addr, "cat", PATIENT)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(s.exchange("over the router", PATIENT).await)
        })?;
        if got != Outcome::Ok("over the router".into()) {
            return Err(format!("outsider: session {addr}: {got:?}"));
        }
    }
    Ok(())
}

fn counted_ruleset() -> String {
    ruleset(&[
        "-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN FIN,SYN -m comment --comment syn-fin -j DROP",
        "-A INPUT -p tcp -m tcp --tcp-flags SYN,RST SYN,RST -m comment --comment syn-rst -j DROP",
        "-A INPUT -m conntrack --ctstate INVALID -m comment --comment invalid -j DROP",
        "-A INPUT -p tcp -m tcp --dport 2222 -m comment --comment drop-2222 -j DROP",
    ])
}

fn lab_counted(lab: &Lab, b: Backend) -> TestResult {
    use probe::craft::{Flags, send_tcp};
    for family in Family::ALL {
        lab.load(b, family, &counted_ruleset())
            .map_err(|e| e.to_string())?;
    }
    let target = both(lab, HostId::Target);
    let _echo = lab
        .host(HostId::Target)
        .run(move || async move { services::tcp::echo(&on_ports(target, 8443)).await })
        .map_err(|e| e.to_string())?;
    for (i, family) in Family::ALL.into_iter().enumerate() {
        let dst = SocketAddr::new(target[i], 8443);
        let outsider = SocketAddr::new(lab.addr(HostId::Outsider, family), 40000);
        for (flags, comment) in [(Flags::SYN_FIN, "syn-fin"), (Flags::SYN_RST, "syn-rst")] {
            let ev = lab
                .probe(HostId::Outsider, Some(family), move || {
                    send_tcp(outsider, dst, flags, 1000, 0)
                })
                .map_err(|e| e.to_string())?;
            expect_ok(&format!("{family} craft {flags}"), &ev.outcome, "sent")?;
            if ev.counters.count(&Selector::comment(comment)) != Some(1) {
                return Err(format!(
                    "{family} {flags}: expected rule {comment} to count 1: {}",
                    ev.summary()
                ));
            }
        }
        let ev = lab
            .probe(HostId::Admin, Some(family), move || {
                probe::craft::out_of_window_rst(dst, PATIENT)
            })
            .map_err(|e| e.to_string())?;
        expect_ok(
            &format!("{family} out-of-window rst"),
            &ev.outcome,
            "sent RST",
        )?;
        if ev.counters.count(&Selector::comment("invalid")) != Some(1) {
            return Err(format!(
                "{family} out-of-window rst: expected rule invalid to count 1: {}",
                ev.summary()
            ));
        }
        // A negative probe across the router: decided in the window, counted by
        // its rule; the time is printed, not asserted.
        let dropped = SocketAddr::new(target[i], 2222);
        let mut times = Vec::new();
        for _ in 0..11 {
            let t = Instant::now();
            let ev = lab
                .probe(HostId::Outsider, Some(family), move || {
                    probe::tcp::connect(dropped, NEGATIVE_WINDOW)
                })
                .map_err(|e| e.to_string())?;
            times.push(t.elapsed());
            expect_word(&format!("{family} tcp 2222"), &ev.outcome, "no-answer")?;
            if ev.counters.packets(&Selector::comment("drop-2222")) < 1 {
                return Err(format!(
                    "{family} tcp 2222 not counted by drop-2222: {}",
                    ev.summary()
                ));
            }
        }
        times.sort();
        let pure = lab.host(HostId::Outsider).run(move || async move {
            let mut t = Vec::new();
            for _ in 0..11 {
                let start = Instant::now();
                let got = probe::tcp::connect(dropped, NEGATIVE_WINDOW).await;
                t.push((start.elapsed(), got));
            }
            t
        });
        let mut pure_times = Vec::new();
        for (d, got) in pure {
            expect_word(&format!("{family} tcp 2222 (timed)"), &got, "no-answer")?;
            pure_times.push(d);
        }
        pure_times.sort();
        eprintln!(
            "lab negative probe alone ({b} {family}, outsider -> target:2222): median {:.2?}",
            pure_times[pure_times.len() / 2]
        );
        eprintln!(
            "lab negative probe with evidence ({b} {family}, outsider -> target:2222): median {:.2?} (probe window {NEGATIVE_WINDOW:?}, plus two counter reads)",
            times[times.len() / 2]
        );
    }
    Ok(())
}

/// Sessions opened before a ruleset loads, as the seed's admin has them: the
/// connection is untracked until the ruleset switches conntrack on, then picked
/// up mid-stream by whichever side speaks first (FIELD-NOTES). A `cat` session,
/// where the client speaks first, keeps working; a server that speaks first
/// stalls (its packets NEW in OUTPUT, counted by the OUTPUT policy) until the
/// client writes a byte. This proves Session can be carried across `Host::run`
/// calls and observe both behaviours.
fn lab_sessions_before_ruleset(lab: &Lab, b: Backend) -> TestResult {
    let target = lab.addr(HostId::Target, Family::V4);
    let dir = std::sync::Arc::new(LabDir::new().map_err(|e| e.to_string())?);
    let sshd = lab
        .host(HostId::Target)
        .run(move || async move { Sshd::start(dir, &[target], 22).await })
        .map_err(|e| e.to_string())?;
    let addr = SocketAddr::new(target, 22);
    let client = sshd.client();
    let admin = lab.host(HostId::Admin);
    // The admin ACKs the ticks at once (the lab's default routes carry quickack,
    // see `link::add_default_route`), so no ACK of its is in flight when the
    // ruleset loads and the server is the first to speak.
    let (cat, ticker) = admin
        .run(move || async move {
            let cat = client.session(addr, "cat", PATIENT).await?;
            let ticker = client
                .session(addr, "while :; do echo tick; sleep 0.1; done", PATIENT)
                .await?;
            Ok::<_, services::ServiceError>((cat, ticker))
        })
        .map_err(|e| e.to_string())?;
    lab.load(
        b,
        Family::V4,
        "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n\
         -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment established-in -j ACCEPT\n\
         -A INPUT -p tcp -m tcp --dport 22 -m comment --comment ssh-in -j ACCEPT\n\
         -A OUTPUT -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment established-out -j ACCEPT\n\
         COMMIT\n",
    )
    .map_err(|e| e.to_string())?;

    // The client speaks first: picked up as NEW by ssh-in, then ESTABLISHED.
    let (_cat, got) = admin.run(move || async move {
        let mut cat = cat;
        let got = cat.exchange("still here", PATIENT).await;
        (cat, got)
    });
    if got != Outcome::Ok("still here".into()) {
        return Err(format!("cat session after the ruleset loaded: {got:?}"));
    }

    // The server speaks first: after the lines already in flight, silence, and
    // the OUTPUT policy counts the server's segments.
    let ev = lab
        .probe(HostId::Admin, Some(Family::V4), move || async move {
            let mut ticker = ticker;
            let mut buffered = 0;
            let outcome = loop {
                match ticker.read_line(Duration::from_millis(400)).await {
                    Outcome::Ok(_) if buffered < 50 => buffered += 1,
                    other => break other,
                }
            };
            // Park the session for the next step.
            TICKER.with(|t| *t.borrow_mut() = Some(ticker));
            outcome
        })
        .map_err(|e| e.to_string())?;
    expect_word("ticker after the ruleset loaded", &ev.outcome, "no-answer")?;
    if ev.counters.packets(&Selector::policy("OUTPUT")) == 0 {
        return Err(format!(
            "the ticker stalled but the OUTPUT policy counted nothing: {}",
            ev.summary()
        ));
    }

    // One byte from the client, and the server's output flows again.
    let got = admin.run(move || async move {
        let mut ticker = TICKER
            .with(|t| t.borrow_mut().take())
            .expect("the ticker session was parked on this host thread");
        if let Err(e) = ticker.send_line("wake").await {
            return Outcome::Failed(e.to_string());
        }
        ticker.read_line(PATIENT).await
    });
    expect_ok("ticker after the client wrote", &got, "tick")?;
    drop(sshd);
    Ok(())
}

thread_local! {
    /// A session parked on the host thread that owns it between two steps.
    static TICKER: std::cell::RefCell<Option<services::ssh::Session>> =
        const { std::cell::RefCell::new(None) };
}

/// The child of `sigkill_leaves_no_ssh_process`: a lab, sshd in the target, a
/// ticking session and an idle `cat` session from admin; print the pids, wait.
fn child_mode() -> ! {
    let lab = Lab::standard().expect("child lab");
    let target = both(&lab, HostId::Target);
    let dir = std::sync::Arc::new(LabDir::new().expect("lab dir"));
    let sshd = lab
        .host(HostId::Target)
        .run(move || async move { Sshd::start(dir, &target, 22).await })
        .expect("sshd");
    let client = sshd.client();
    let addr = sshd.addrs()[1];
    let sessions = lab
        .host(HostId::Admin)
        .run(move || async move {
            let a = client
                .session(addr, "while :; do echo tick; sleep 0.1; done", PATIENT)
                .await?;
            let b = client.session(addr, "cat", PATIENT).await?;
            Ok::<_, services::ServiceError>([a, b])
        })
        .expect("sessions");
    // Lock the admin out: its FIN can no longer reach sshd when it dies, so only
    // the kill, not the connection's end, can take the sessions down.
    let backend = Backend::ALL
        .into_iter()
        .find(|b| b.available())
        .expect("an iptables backend");
    for family in Family::ALL {
        lab.load(
            backend,
            family,
            "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\nCOMMIT\n",
        )
        .expect("lockout ruleset");
    }
    let mut line = format!("sshd={}", sshd.pid().unwrap_or(0));
    for s in &sessions {
        line += &format!(" ssh={}", s.pid().unwrap_or(0));
    }
    println!("{line}");
    loop {
        std::thread::park();
    }
}

/// SIGKILL a process holding a lab with sshd and open sessions, after a ruleset
/// has locked the sessions' client out: sshd, every per-connection sshd it forked
/// (they setsid, out of reach of its process group, and no FIN will reach them),
/// the remote commands and the local ssh clients must all die.
fn sigkill_leaves_no_ssh_process() -> TestResult {
    use std::io::BufRead;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe)
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let mut watched = Vec::new();
    for field in line.split_whitespace() {
        let (what, pid) = field
            .split_once('=')
            .ok_or(format!("child said {line:?}"))?;
        let pid: u32 = pid
            .parse()
            .map_err(|e| format!("child said {line:?}: {e}"))?;
        if what == "sshd" {
            watched.extend(portcullis_harness::procs::descendants(pid));
        } else {
            watched.push(pid);
        }
    }
    // sshd, 2 x (privileged + session sshd, remote shell), and 2 ssh clients.
    if watched.len() < 7 {
        return Err(format!(
            "expected sshd, its sessions and 2 clients, saw {watched:?} from {line:?}"
        ));
    }
    let killed = Instant::now();
    child.kill().map_err(|e| e.to_string())?;
    child.wait().map_err(|e| e.to_string())?;
    let deadline = killed + Duration::from_secs(10);
    loop {
        let alive: Vec<u32> = watched
            .iter()
            .copied()
            .filter(|&p| portcullis_harness::process_alive(p))
            .collect();
        if alive.is_empty() {
            eprintln!(
                "sigkill: {} ssh-related processes gone {:.0?} after the kill",
                watched.len(),
                Instant::now() + Duration::from_secs(10) - deadline
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            let names: Vec<String> = alive
                .iter()
                .map(|p| {
                    let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                    format!("{p}: {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
                })
                .collect();
            // Do not leave them behind for the next test either.
            for p in &alive {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(format!("still alive 10 s after SIGKILL: {names:?}"));
        }
        // Polling a process table has no readiness event to wait on.
        std::thread::sleep(Duration::from_millis(20));
    }
}
