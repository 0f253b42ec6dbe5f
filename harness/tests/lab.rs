//! The lab's own tests: one libtest-mimic binary (`harness = false`). Trials that
//! need root are reported ignored with the reason when not root; trials for a
//! backend whose binaries are missing are ignored with that reason.
//!
//! The binary doubles as the child of the SIGKILL trials: with
//! `PORTCULLIS_LAB_TEST_CHILD` set it builds a lab, starts a child process in the
//! target, prints what it made and waits to be killed.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Failed, Trial};
use portcullis_harness::probe::NEGATIVE_WINDOW;
use portcullis_harness::{
    Backend, Family, Host, HostId, Lab, LabOptions, Outcome, Selector, host, trial,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CHILD_ENV: &str = "PORTCULLIS_LAB_TEST_CHILD";

fn main() {
    if let Ok(mode) = std::env::var(CHILD_ENV) {
        child_mode(&mode);
    }
    let args = Arguments::from_args();
    let mut trials = vec![
        privileged(
            "host_thread_owns_its_namespace",
            host_thread_owns_its_namespace,
        ),
        privileged(
            "children_run_in_the_host_namespace_and_die_with_it",
            children_die_with_host,
        ),
        privileged(
            "an_early_exiting_restore_reports_its_stderr",
            early_exiting_restore_reports_stderr,
        ),
        privileged("lab_routes_tcp_between_leaves_v4_and_v6", lab_routes_tcp),
        privileged(
            "a_host_behind_the_target_is_reachable_through_it",
            host_behind_target,
        ),
        privileged("teardown_leaves_nothing", teardown_leaves_nothing),
        privileged(
            "debug_mode_mounts_and_unmounts",
            debug_mode_mounts_and_unmounts,
        ),
        privileged(
            "sigkill_leaves_no_process_or_namespace",
            sigkill_leaves_nothing,
        ),
        privileged(
            "sweep_removes_mounts_of_killed_runs",
            sweep_removes_leftovers,
        ),
    ];
    for backend in Backend::ALL {
        trials.push(with_backend(
            format!("drop_is_counted_by_input_policy::{backend}"),
            backend,
            drop_is_counted,
        ));
        trials.push(with_backend(
            format!("kernel_counters_equal_save::{backend}"),
            backend,
            kernel_counters_equal_save,
        ));
        trials.push(with_backend(
            format!("probe_dropped_stops_a_probe_once_its_drop_counted::{backend}"),
            backend,
            probe_dropped_stops_once_counted,
        ));
        trials.push(with_backend(
            format!("an_idle_window_counts_nothing::{backend}"),
            backend,
            idle_window_counts_nothing,
        ));
        trials.push(with_backend(
            format!("inner_added_after_a_load_settles_before_probes::{backend}"),
            backend,
            inner_added_after_a_load_settles,
        ));
    }
    libtest_mimic::run(&args, trials).exit();
}

fn privileged(name: &str, f: fn() -> Result<(), Failed>) -> Trial {
    trial::privileged(name, None, f)
}

fn with_backend(name: String, backend: Backend, f: fn(Backend) -> Result<(), Failed>) -> Trial {
    trial::privileged(name, backend.unavailable_reason(), move || f(backend))
}

fn check(cond: bool, msg: impl FnOnce() -> String) -> Result<(), Failed> {
    if cond { Ok(()) } else { Err(msg().into()) }
}

fn ns_link(path: &str) -> String {
    std::fs::read_link(path)
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------

fn host_thread_owns_its_namespace() -> Result<(), Failed> {
    let mine = ns_link("/proc/thread-self/ns/net");
    let h = Host::new("solo")?;
    let expected = format!("net:[{}]", h.netns_inode());
    let (theirs, dad, dad_default) = h.run(|| async {
        (
            ns_link("/proc/thread-self/ns/net"),
            host::read_sysctl("net.ipv6.conf.all.accept_dad").unwrap(),
            host::read_sysctl("net.ipv6.conf.default.accept_dad").unwrap(),
        )
    });
    check(theirs == expected, || {
        format!("host thread in {theirs}, its fd holds {expected}")
    })?;
    check(mine != theirs, || {
        "the host shares the test thread's namespace".into()
    })?;
    check(ns_link("/proc/thread-self/ns/net") == mine, || {
        "the test thread's namespace changed".into()
    })?;
    check(dad == "0" && dad_default == "0", || {
        format!(
            "accept_dad all={dad} default={dad_default} in the host, want 0 (/proc/sys follows the thread)"
        )
    })?;
    // sysctl writes are refused off a host thread: here they would hit the machine.
    check(host::sysctl("net.ipv4.ip_forward", "1").is_err(), || {
        "sysctl() accepted a write from the test thread".into()
    })?;
    // lo is up: a TCP round trip over 127.0.0.1 and ::1 works inside the host.
    for addr in ["127.0.0.1:7000", "[::1]:7000"] {
        let addr: SocketAddr = addr.parse().unwrap();
        let (bound, _task) = h.serve(move || echo_server(addr))?;
        let out = h.run(move || connect(bound, Duration::from_secs(2)));
        check(out.is_ok(), || format!("loopback {bound}: {out:?}"))?;
    }
    // Task::cancel returns once the host thread has dropped the task's future
    // (and so everything it owns, its listener included).
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = dropped.clone();
    let addr: SocketAddr = "127.0.0.1:7001".parse().unwrap();
    let (bound, task) = h.serve(move || async move {
        let (bound, serve) = echo_server(addr).await?;
        let guard = SetOnDrop(flag);
        Ok::<_, std::io::Error>((bound, async move {
            let _guard = guard;
            serve.await
        }))
    })?;
    check(!task.is_finished(), || "the server ended by itself".into())?;
    let before = h.run(move || connect(bound, Duration::from_secs(2)));
    check(before.is_ok(), || {
        format!("server before cancel: {before:?}")
    })?;
    let listening = move |h: &Host| h.run(|| async { listeners_on(7001) });
    check(listening(&h) == 1, || {
        "no LISTEN socket on 7001 (the check is blind)".into()
    })?;
    task.cancel();
    check(dropped.load(std::sync::atomic::Ordering::SeqCst), || {
        "Task::cancel returned before the task was dropped".into()
    })?;
    // The socket itself closes with its last fd; a child another trial is
    // forking at this moment holds a copy until it execs, so wait for it.
    wait_until(Duration::from_secs(5), || listening(&h) == 0)
        .map_err(|()| "the listener outlived its task".to_string())?;
    // A caller inside some other tokio runtime can still use the blocking API.
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let from_async = rt.block_on(async { h.run(|| async { ns_link("/proc/thread-self/ns/net") }) });
    check(from_async == expected, || {
        format!("run() from async code landed in {from_async}")
    })?;
    h.shutdown().map_err(|e| format!("{e:?}"))?;
    Ok(())
}

/// A fake `*-restore` that rejects its input without reading it (as
/// iptables-restore stops at the first bad line), run in a host by `Host::exec`
/// (the path of `Host::load`) and by `host::run_command` on the host thread: both
/// report its stderr, never the broken pipe of the unread stdin.
fn early_exiting_restore_reports_stderr() -> Result<(), Failed> {
    use portcullis_harness::{BackendError, LabError};
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let fake = dir.path().join("fake-restore");
    // It names its namespace, so the message also proves where it ran.
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"line 2 failed in $(readlink /proc/self/ns/net)\" >&2\nexit 1\n",
    )?;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))?;
    let fake = fake.to_str().ok_or("tempdir path is not UTF-8")?.to_owned();
    // Far more than a pipe buffer, so writing it must hit the closed pipe.
    let input = "-A INPUT -j DROP\n".repeat(64 * 1024);
    let h = Host::new("restore")?;
    let want = format!("line 2 failed in net:[{}]", h.netns_inode());
    match h.exec(&[&fake, "-w"], Some(&input)) {
        Err(LabError::Backend {
            source: BackendError::Failed { command, stderr },
            ..
        }) => {
            check(command == format!("{fake} -w"), || {
                format!("exec: the error names `{command}`")
            })?;
            check(stderr == want, || {
                format!("exec: stderr {stderr:?}, want {want:?}")
            })?;
        }
        other => return Err(format!("exec: expected the child's stderr, got {other:?}").into()),
    }
    let argv = fake.clone();
    let got = h.run(move || async move { host::run_command(&[&argv, "-w"], Some(&input)).await });
    match got {
        Err(BackendError::Failed { stderr, .. }) => check(stderr == want, || {
            format!("run_command: stderr {stderr:?}, want {want:?}")
        })?,
        other => {
            return Err(format!("run_command: expected the child's stderr, got {other:?}").into());
        }
    }
    h.shutdown().map_err(|e| format!("{e:?}"))?;
    Ok(())
}

fn children_die_with_host() -> Result<(), Failed> {
    let h = Host::new("kids")?;
    let want = format!("net:[{}]", h.netns_inode());
    // command() enters the namespace between fork and exec, from any thread.
    let out = h.command("readlink").arg("/proc/self/ns/net").output()?;
    let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    check(got == want, || {
        format!("child of command() in {got}, want {want}")
    })?;
    // exec() enters it too, from this thread, through the one runner.
    let got = h.exec(&["readlink", "/proc/self/ns/net"], None)?;
    check(got.trim() == want, || {
        format!("child of exec() in {}, want {want}", got.trim())
    })?;
    // A long-lived child: dropping its handle kills it.
    let mut sleep = h.command("sleep");
    sleep.arg("1000");
    let child = h.spawn_child(sleep)?;
    let pid = child.id();
    check(portcullis_harness::process_alive(pid), || {
        "sleep did not start".into()
    })?;
    drop(child);
    check(!portcullis_harness::process_alive(pid), || {
        "sleep survived its handle".into()
    })?;
    // A leaked child dies with the host thread (parent-death signal).
    let mut sleep = h.command("sleep");
    sleep.arg("1000");
    let child = h.spawn_child(sleep)?;
    let pid = child.id();
    std::mem::forget(child);
    h.shutdown().map_err(|e| format!("{e:?}"))?;
    wait_until(Duration::from_secs(10), || {
        !portcullis_harness::process_alive(pid)
    })
    .map_err(|()| format!("leaked sleep {pid} outlived its host"))?;
    Ok(())
}

fn lab_routes_tcp() -> Result<(), Failed> {
    let lab = Lab::standard_with(LabOptions::default())?;
    let mut tasks = Vec::new();
    for family in Family::ALL {
        let web = SocketAddr::new(lab.addr(HostId::Web, family), 8080);
        let (bound, task) = lab.host(HostId::Web).serve(move || echo_server(web))?;
        tasks.push(task);
        for from in [HostId::Admin, HostId::Outsider, HostId::Target] {
            let out = lab
                .host(from)
                .run(move || connect(bound, Duration::from_secs(2)));
            check(out.is_ok(), || format!("{from} -> web {bound}: {out:?}"))?;
        }
        // A closed port answers with a reset: routing works both ways.
        let closed = SocketAddr::new(lab.addr(HostId::Web, family), 9);
        let out = lab
            .host(HostId::Admin)
            .run(move || connect(closed, Duration::from_secs(2)));
        check(matches!(out, Outcome::Refused(_)), || {
            format!("admin -> web {closed}: {out:?}, want refused")
        })?;
    }
    // After that traffic the admin knows its gateway and the router knows the
    // admin: flushing removes both entries, and traffic resolves them again.
    for family in Family::ALL {
        let deleted = lab.flush_neighbours(HostId::Admin, family)?;
        check(deleted >= 2, || {
            format!("flush_neighbours(admin, {family}) deleted {deleted}, want >= 2")
        })?;
        let web = SocketAddr::new(lab.addr(HostId::Web, family), 8080);
        let out = lab
            .host(HostId::Admin)
            .run(move || connect(web, Duration::from_secs(2)));
        check(out.is_ok(), || {
            format!("admin -> web {web} after flush: {out:?}")
        })?;
    }
    // Forwarding is on in the router only.
    let fwd = lab
        .host(HostId::Router)
        .run(|| async { host::read_sysctl("net.ipv4.ip_forward").unwrap() });
    check(fwd == "1", || format!("router ip_forward={fwd}"))?;
    drop(tasks);
    lab.shutdown().map_err(|e| format!("{e:?}"))?;
    Ok(())
}

const RULESET: &str = "*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"established\" -j ACCEPT
ICMPV6-A INPUT -s SUBNET -p tcp -m tcp --dport 2222 -m comment --comment \"test port from admin\" -j ACCEPT
COMMIT
";

fn drop_is_counted(backend: Backend) -> Result<(), Failed> {
    let lab = Lab::standard_with(LabOptions::default())?;
    for family in Family::ALL {
        let admin_subnet = lab.subnet(HostId::Admin, family).to_string();
        // IPv6 needs neighbour discovery in, or the target cannot answer anyone.
        let icmpv6 = match family {
            Family::V4 => "",
            Family::V6 => "-A INPUT -p ipv6-icmp -m comment --comment \"icmpv6\" -j ACCEPT\n",
        };
        let text = RULESET
            .replace("SUBNET", &admin_subnet)
            .replace("ICMPV6", icmpv6);
        lab.load(backend, family, &text)?;
    }
    lab.reset()?;
    for family in Family::ALL {
        let target = SocketAddr::new(lab.addr(HostId::Target, family), 2222);
        let (bound, _task) = lab
            .host(HostId::Target)
            .serve(move || echo_server(target))?;

        let ok = lab.probe(HostId::Admin, Some(family), move || {
            connect(bound, Duration::from_secs(2))
        })?;
        check(ok.outcome.is_ok(), || {
            format!("{backend} {family} admin: {}", ok.summary())
        })?;
        let allow = Selector::comment("test port from admin");
        let policy = Selector::policy("INPUT");
        check(ok.counters.packets(&allow) >= 1, || {
            format!(
                "{backend} {family} admin: allow rule did not count: {}",
                ok.summary()
            )
        })?;
        check(ok.counters.count(&policy) == Some(0), || {
            format!(
                "{backend} {family} admin: INPUT policy counted: {}",
                ok.summary()
            )
        })?;
        // The connection is tracked; reset() forgets it (and zeroes the counters).
        let tracked = || -> Result<bool, Failed> {
            let list = lab
                .host(HostId::Target)
                .exec(&["conntrack", "-L", "-f", family.name()], None)?;
            Ok(list.contains("dport=2222"))
        };
        check(tracked()?, || {
            format!("{backend} {family}: admin's connection is not tracked (the check is blind)")
        })?;
        // The netlink flush itself, not the conntrack-binary fallback.
        let flushed = lab.host(HostId::Target).run(move || async move {
            portcullis_harness::conntrack::flush(family).map_err(|e| e.to_string())
        });
        check(flushed.is_ok(), || {
            format!("{backend} {family}: ctnetlink flush: {flushed:?}")
        })?;
        check(!tracked()?, || {
            format!("{backend} {family}: the flush left the conntrack entry")
        })?;
        lab.reset()?;
        let zeroed = lab.counters(&[family])?;
        check(zeroed.entries.iter().all(|c| c.packets == 0), || {
            format!(
                "{backend} {family}: reset() left counters: {:?}",
                zeroed.entries
            )
        })?;

        let dropped = lab.probe(HostId::Outsider, Some(family), move || {
            connect(bound, NEGATIVE_WINDOW)
        })?;
        check(dropped.outcome == Outcome::NoAnswer, || {
            format!("{backend} {family} outsider: {}", dropped.summary())
        })?;
        check(dropped.counters.packets(&policy) >= 1, || {
            format!(
                "{backend} {family} outsider: INPUT policy did not count: {}",
                dropped.summary()
            )
        })?;
        // Zeros are kept: the allow rule is there and counted nothing.
        check(dropped.counters.count(&allow) == Some(0), || {
            format!(
                "{backend} {family} outsider: allow rule counted: {}",
                dropped.summary()
            )
        })?;

        // Both at once from two threads: each evidence holds only its own probe.
        let (ok, dropped) = std::thread::scope(|s| {
            let a = s.spawn(|| {
                lab.probe(HostId::Admin, Some(family), move || {
                    connect(bound, Duration::from_secs(2))
                })
            });
            let o = s.spawn(|| {
                lab.probe(HostId::Outsider, Some(family), move || {
                    connect(bound, NEGATIVE_WINDOW)
                })
            });
            (a.join().unwrap(), o.join().unwrap())
        });
        let (ok, dropped) = (ok?, dropped?);
        check(
            ok.outcome.is_ok() && ok.counters.count(&policy) == Some(0),
            || format!("{backend} {family} concurrent admin: {}", ok.summary()),
        )?;
        check(
            dropped.outcome == Outcome::NoAnswer
                && dropped.counters.packets(&policy) >= 1
                && dropped.counters.count(&allow) == Some(0),
            || {
                format!(
                    "{backend} {family} concurrent outsider: {}",
                    dropped.summary()
                )
            },
        )?;
    }
    lab.shutdown().map_err(|e| format!("{e:?}"))?;
    Ok(())
}

/// Right after a lab comes up, nothing but a probe's own packets may move the
/// target's counters: the evidence of a probe that sends nothing is empty. (A
/// fresh link's MLD reports used to land here.)
fn idle_window_counts_nothing(backend: Backend) -> Result<(), Failed> {
    let lab = Lab::standard_with(LabOptions::default())?;
    load_drop_all(&lab, backend)?;
    idle_probe_counts_nothing(&lab, &format!("{backend}"))?;
    lab.shutdown().map_err(|e| format!("{e:?}"))?;
    Ok(())
}

/// `Lab::probe_dropped`: a probe whose SYN the INPUT DROP policy counts is
/// stopped (outcome `no-answer`) before its own window ends, and its evidence
/// holds that count; a probe named by an ACCEPT rule runs its window out
/// (nothing stops it). The window is 30 s and the probe records whether it ran
/// to its end, so "stopped early" is an observation, not a timing.
fn probe_dropped_stops_once_counted(backend: Backend) -> Result<(), Failed> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let lab = Lab::standard_with(LabOptions::default())?;
    load_shaped(&lab, backend, "x")?;
    lab.reset()?;
    for family in Family::ALL {
        let dst = SocketAddr::new(lab.addr(HostId::Target, family), 4444);
        let ran_out = Arc::new(AtomicBool::new(false));
        let flag = ran_out.clone();
        let policy = Selector::policy("INPUT");
        let ev = lab.probe_dropped(HostId::Outsider, family, &policy, move || async move {
            let outcome = connect(dst, Duration::from_secs(30)).await;
            flag.store(true, Ordering::SeqCst);
            outcome
        })?;
        check(ev.outcome == Outcome::NoAnswer, || {
            format!("{backend} {family}: {}", ev.summary())
        })?;
        check(!ran_out.load(Ordering::SeqCst), || {
            format!(
                "{backend} {family}: the probe ran its whole window: {}",
                ev.summary()
            )
        })?;
        check(ev.counters.packets(&policy) >= 1, || {
            format!(
                "{backend} {family}: stopped, but the policy counted nothing: {}",
                ev.summary()
            )
        })?;
        // Named by an ACCEPT rule: its counter rises (the ping), yet it never
        // stops the probe, which runs to its end.
        let accept = Selector::comment("icmp");
        let ran_out = Arc::new(AtomicBool::new(false));
        let flag = ran_out.clone();
        let target = lab.addr(HostId::Target, family);
        let ev = lab.probe_dropped(HostId::Outsider, family, &accept, move || async move {
            let outcome =
                portcullis_harness::probe::icmp::echo(target, Duration::from_secs(2)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
            outcome
        })?;
        check(ev.counters.packets(&accept) >= 1, || {
            format!(
                "{backend} {family}: the ping was not counted by the icmp rule: {}",
                ev.summary()
            )
        })?;
        check(ran_out.load(Ordering::SeqCst), || {
            format!("{backend} {family}: a probe named by an ACCEPT rule was stopped")
        })?;
    }
    Ok(())
}

/// The same when `inner` is added after the ruleset loaded: the target's new
/// link reports its multicast groups too, and `add_inner` waits them out.
fn inner_added_after_a_load_settles(backend: Backend) -> Result<(), Failed> {
    let mut lab = Lab::standard_with(LabOptions::default())?;
    load_drop_all(&lab, backend)?;
    idle_probe_counts_nothing(&lab, &format!("{backend} before add_inner"))?;
    lab.add_inner()?;
    idle_probe_counts_nothing(&lab, &format!("{backend} after add_inner"))?;
    lab.shutdown().map_err(|e| format!("{e:?}"))?;
    Ok(())
}

/// DROP everything, with a named rule per ICMPv6 type so a failure says what
/// moved.
/// A ruleset with a user chain, comments, a policy of each kind and rules in
/// every built-in chain; `TAG` varies the texts without changing the shape.
const SHAPED: &str = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n\
    :pc-check - [0:0]\n\
    -A INPUT -i lo -j ACCEPT\n\
    -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
    -A INPUT -p tcp -j pc-check\n\
    -A INPUT -p ICMP -m comment --comment \"icmp TAG\" -j ACCEPT\n\
    -A FORWARD -p tcp --dport 9 -j DROP\n\
    -A OUTPUT -p udp --dport 9 -m comment --comment \"out TAG\" -j DROP\n\
    -A pc-check -p tcp --dport 2222 -m comment --comment \"allowed TAG\" -j ACCEPT\n\
    -A pc-check -p tcp --dport 2223 -j DROP\n\
    COMMIT\n";

/// [`SHAPED`] in both families, its texts tagged `tag`.
fn load_shaped(lab: &Lab, backend: Backend, tag: &str) -> Result<(), Failed> {
    for family in Family::ALL {
        let icmp = if family == Family::V4 {
            "icmp"
        } else {
            "ipv6-icmp"
        };
        let text = SHAPED.replace("ICMP", icmp).replace("TAG", tag);
        lab.load(backend, family, &text)?;
    }
    Ok(())
}

/// The counters the harness reads from the kernel (netlink for nft, getsockopt
/// for legacy) are the ones `*-save -c` prints, rule texts included; reads after
/// the first of a ruleset run no process; a reload with other texts but the same
/// shape is never paired with the old texts.
fn kernel_counters_equal_save(backend: Backend) -> Result<(), Failed> {
    let lab = Lab::standard_with(LabOptions::default())?;
    for (round, tag) in ["one", "two"].into_iter().enumerate() {
        load_shaped(&lab, backend, tag)?;
        lab.reset()?;
        for family in Family::ALL {
            // Packets for the user chain's rules, the policy and the comment rule.
            let target = lab.addr(HostId::Target, family);
            for port in [2222, 2223, 2224] {
                lab.probe(HostId::Admin, Some(family), move || {
                    connect(SocketAddr::new(target, port), Duration::from_millis(30))
                })?;
            }
            let save_reads = || {
                lab.host(HostId::Target)
                    .run(|| async { portcullis_harness::kcounters::save_reads() })
            };
            let reads_before = save_reads();
            for _ in 0..10 {
                lab.counters(&[family])?;
            }
            let spawned = save_reads() - reads_before;
            check(spawned == 0, || {
                format!("{backend} {family} round {round}: 10 reads ran {spawned} *-save")
            })?;
            // Compare with `*-save -c` itself, between two saves that agree (a
            // packet between the reads would make them differ).
            let save =
                || -> Result<_, Failed> {
                    let bin = backend.save_binary(family);
                    let text = lab.host(HostId::Target).exec(&[&bin, "-c"], None)?;
                    Ok(portcullis_harness::Counters::parse(family, &text)
                        .map_err(|e| e.to_string())?)
                };
            let mut agreed = false;
            for _ in 0..5 {
                let a = save()?;
                let kernel = lab.counters(&[family])?;
                if a == save()? {
                    check(kernel == a, || {
                        format!(
                            "{backend} {family} round {round}: kernel read differs from *-save:\n{kernel:#?}\nvs\n{a:#?}"
                        )
                    })?;
                    check(
                        kernel
                            .entries
                            .iter()
                            .any(|c| c.comment() == Some(&format!("allowed {tag}"))),
                        || {
                            format!(
                                "{backend} {family} round {round}: texts of another load: {kernel:#?}"
                            )
                        },
                    )?;
                    check(kernel.entries.iter().any(|c| c.packets > 0), || {
                        format!(
                            "{backend} {family} round {round}: nothing counted (the check is blind)"
                        )
                    })?;
                    agreed = true;
                    break;
                }
            }
            check(agreed, || {
                format!("{backend} {family}: two *-save in a row never agreed")
            })?;
        }
    }
    Ok(())
}

fn load_drop_all(lab: &Lab, backend: Backend) -> Result<(), Failed> {
    let rules = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\nCOMMIT\n";
    lab.load(backend, Family::V4, rules)?;
    let mut v6 =
        String::from("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT DROP [0:0]\n");
    for chain in ["INPUT", "FORWARD", "OUTPUT"] {
        for (ty, name) in [
            (143, "mld2"),
            (131, "mld1"),
            (133, "rs"),
            (134, "ra"),
            (135, "ns"),
            (136, "na"),
        ] {
            v6 += &format!(
                "-A {chain} -p ipv6-icmp -m icmp6 --icmpv6-type {ty} -m comment --comment {name} -j DROP\n"
            );
        }
    }
    v6 += "COMMIT\n";
    lab.load(backend, Family::V6, &v6)?;
    Ok(())
}

fn idle_probe_counts_nothing(lab: &Lab, what: &str) -> Result<(), Failed> {
    let ev = lab.probe(HostId::Admin, None, || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        Outcome::NoAnswer
    })?;
    check(ev.counters.moved().is_empty(), || {
        format!("{what}: an idle window counted: {}", ev.summary())
    })?;
    // The counters are all there, zeros kept (an empty list would prove nothing).
    check(
        ev.counters.count(&Selector::policy("INPUT")) == Some(0),
        || format!("{what}: no INPUT policy counter in {:?}", ev.counters),
    )
}

/// `inner`, on a second link of the target (the FORWARD scenarios' shape): the
/// two ends of the veth have different ifindexes, the router routes inner's
/// subnets via the target, and admin reaches inner through the target over both
/// families; `add_inner` is idempotent and the address plan is `HostId::plan`'s.
fn host_behind_target() -> Result<(), Failed> {
    use portcullis_harness::link;
    let mut lab = Lab::standard_with(LabOptions {
        inner: true,
        ..LabOptions::default()
    })?;
    lab.add_inner()?;
    check(lab.ids() == HostId::ALL, || {
        format!("hosts {:?}, want {:?}", lab.ids(), HostId::ALL)
    })?;
    let ours = lab
        .host(HostId::Target)
        .run(|| link::link_index("to-inner"))?;
    let theirs = lab.host(HostId::Inner).run(|| link::link_index("eth0"))?;
    check(ours != theirs, || {
        format!("both ends of the veth have index {ours}")
    })?;
    let mut tasks = Vec::new();
    for family in Family::ALL {
        let at = SocketAddr::new(lab.addr(HostId::Inner, family), 8080);
        let (bound, task) = lab.host(HostId::Inner).serve(move || echo_server(at))?;
        tasks.push(task);
        let out = lab
            .host(HostId::Admin)
            .run(move || connect(bound, Duration::from_secs(2)));
        check(out.is_ok(), || {
            format!("admin -> inner {bound} through the target: {out:?}")
        })?;
    }
    drop(tasks);
    lab.shutdown().map_err(|e| format!("{e:?}"))?;
    Ok(())
}

fn teardown_leaves_nothing() -> Result<(), Failed> {
    let lab = Lab::standard_with(LabOptions {
        inner: true,
        ..LabOptions::default()
    })?;
    let inodes: Vec<u64> = HostId::ALL
        .iter()
        .map(|h| lab.host(*h).netns_inode())
        .collect();
    let mut sleep = lab.host(HostId::Target).command("sleep");
    sleep.arg("1000");
    let child = lab.host(HostId::Target).spawn_child(sleep)?;
    let pid = child.id();
    std::mem::forget(child);
    check(!namespaces_in_use(&inodes).is_empty(), || {
        "the lab's namespaces are not visible while it runs (the check is blind)".into()
    })?;
    lab.shutdown().map_err(|e| format!("{e:?}"))?;
    wait_until(Duration::from_secs(10), || {
        !portcullis_harness::process_alive(pid)
    })
    .map_err(|()| format!("target child {pid} outlived the lab"))?;
    // Another trial of this process forking at this moment holds copies of
    // every fd (the namespace fds too) until its child execs and close-on-exec
    // drops them: wait that out, then nothing may hold the lab's namespaces.
    wait_until(Duration::from_secs(5), || {
        namespaces_in_use(&inodes).is_empty()
    })
    .map_err(|()| {
        format!(
            "namespaces still referenced: {:?}",
            namespaces_in_use(&inodes)
        )
    })?;
    Ok(())
}

fn debug_mode_mounts_and_unmounts() -> Result<(), Failed> {
    let lab = Lab::standard_with(LabOptions {
        debug: true,
        inner: true,
    })?;
    let mut mounts = Vec::new();
    for id in HostId::ALL {
        let h = lab.host(id);
        let m = h
            .debug_mount()
            .ok_or("debug mode made no mount")?
            .to_owned();
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&m)?.ino();
        check(ino == h.netns_inode(), || {
            format!("{} holds inode {ino}, not the host's", m.display())
        })?;
        mounts.push(m);
    }
    // `ip netns exec` sees the lab (this runs ip inside the lab's target only).
    let name = mounts[1].file_name().unwrap().to_str().unwrap().to_owned();
    let out = Command::new("ip")
        .args(["netns", "exec", &name, "readlink", "/proc/self/ns/net"])
        .output()?;
    let want = format!("net:[{}]", lab.host(HostId::Target).netns_inode());
    let got = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    check(got == want, || {
        format!("ip netns exec {name}: {got:?}, want {want}")
    })?;
    lab.shutdown().map_err(|e| format!("{e:?}"))?;
    for m in &mounts {
        check(!m.exists(), || format!("{} left behind", m.display()))?;
    }
    Ok(())
}

fn sigkill_leaves_nothing() -> Result<(), Failed> {
    // run_and_kill_child also waits for the child's sleep to die of its
    // parent-death signal.
    let report = run_and_kill_child("plain")?;
    // The kernel frees namespaces asynchronously but their references go with the
    // process at once.
    let left = namespaces_in_use(&report.inodes);
    check(left.is_empty(), || {
        format!("namespaces still referenced after SIGKILL: {left:?}")
    })?;
    Ok(())
}

fn sweep_removes_leftovers() -> Result<(), Failed> {
    // Other test processes on the machine (this same trial in another worktree)
    // may sweep our child's mounts first; then our sweep proved nothing, so try
    // again, a few times, until our own sweep is the one that removed them.
    for _ in 0..5 {
        let report = run_and_kill_child("debug")?;
        check(!report.mounts.is_empty(), || {
            "debug child made no mounts".into()
        })?;
        let removed = portcullis_harness::debug::sweep().map_err(|e| format!("{e:?}"))?;
        for m in &report.mounts {
            check(!std::path::Path::new(m).exists(), || {
                format!("{m} still there after the sweep")
            })?;
        }
        let ours: Vec<_> = report
            .mounts
            .iter()
            .filter(|m| removed.iter().any(|r| r.to_str() == Some(m.as_str())))
            .collect();
        if ours.len() != report.mounts.len() {
            eprintln!(
                "sweep test: another sweeper removed {} of the child's mounts first; again",
                report.mounts.len() - ours.len()
            );
            continue;
        }
        let left = namespaces_in_use(&report.inodes);
        check(left.is_empty(), || {
            format!("namespaces still referenced: {left:?}")
        })?;
        return Ok(());
    }
    Err("a concurrent sweeper always came first: run this trial alone".into())
}

// ---------------------------------------------------------------------------

struct ChildReport {
    sleep: u32,
    inodes: Vec<u64>,
    mounts: Vec<String>,
}

/// Start this binary in child mode, read what it built, SIGKILL it.
fn run_and_kill_child(mode: &str) -> Result<ChildReport, Failed> {
    let mut child = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    child.kill()?;
    child.wait()?;
    let mut report = ChildReport {
        sleep: 0,
        inodes: Vec::new(),
        mounts: Vec::new(),
    };
    for field in line.split_whitespace() {
        if let Some(v) = field.strip_prefix("sleep=") {
            report.sleep = v.parse()?;
        } else if let Some(v) = field.strip_prefix("ns=") {
            report.inodes.push(v.parse()?);
        } else if let Some(v) = field.strip_prefix("mount=") {
            report.mounts.push(v.to_owned());
        }
    }
    check(
        report.sleep != 0 && report.inodes.len() == HostId::ALL.len(),
        || format!("child reported {line:?}"),
    )?;
    // The child's own child gets its parent-death signal as the child dies; wait
    // for it to be gone (it holds the target's namespace until then).
    wait_until(Duration::from_secs(10), || {
        !portcullis_harness::process_alive(report.sleep)
    })
    .map_err(|()| format!("child's sleep {} survived SIGKILL", report.sleep))?;
    Ok(report)
}

fn child_mode(mode: &str) -> ! {
    let lab = Lab::standard_with(LabOptions {
        debug: mode == "debug",
        inner: true,
    })
    .expect("child lab");
    let mut sleep = lab.host(HostId::Target).command("sleep");
    sleep.arg("1000");
    let child = lab.host(HostId::Target).spawn_child(sleep).expect("sleep");
    let mut line = format!("sleep={}", child.id());
    for id in HostId::ALL {
        line += &format!(" ns={}", lab.host(id).netns_inode());
        if let Some(m) = lab.host(id).debug_mount() {
            line += &format!(" mount={}", m.display());
        }
    }
    println!("{line}");
    loop {
        std::thread::park();
    }
}

/// Which of `inodes` any process still references (its threads' namespace or an
/// open fd).
fn namespaces_in_use(inodes: &[u64]) -> Vec<String> {
    let wanted: Vec<String> = inodes.iter().map(|i| format!("net:[{i}]")).collect();
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for p in procs.flatten() {
        let pid = p.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let mut links = Vec::new();
        if let Ok(tasks) = std::fs::read_dir(p.path().join("task")) {
            links.extend(tasks.flatten().map(|t| t.path().join("ns/net")));
        }
        if let Ok(fds) = std::fs::read_dir(p.path().join("fd")) {
            links.extend(fds.flatten().map(|f| f.path()));
        }
        for l in links {
            if let Ok(target) = std::fs::read_link(&l) {
                let t = target.display().to_string();
                if wanted.contains(&t) {
                    found.push(format!("{} -> {t}", l.display()));
                }
            }
        }
    }
    found
}

/// Sets its flag when dropped.
struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// LISTEN sockets on `port` in the calling thread's namespace (IPv4 and IPv6).
fn listeners_on(port: u16) -> usize {
    ["tcp", "tcp6"]
        .iter()
        .map(|f| {
            std::fs::read_to_string(format!("/proc/thread-self/net/{f}"))
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    // local_address is ADDR:PORT (hex); st 0A is LISTEN.
                    f.len() > 3
                        && f[3] == "0A"
                        && f[1].rsplit(':').next() == Some(&format!("{port:04X}"))
                })
                .count()
        })
        .sum()
}

/// Poll `cond` until it holds or `limit` passes: a readiness wait, not a timing
/// assertion.
fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Result<(), ()> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if cond() { Ok(()) } else { Err(()) }
}

/// Bind a TCP listener on `addr` and return (its address, a server that echoes one
/// line per connection).
async fn echo_server(
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((bound, async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::task::spawn_local(async move {
                let mut buf = [0u8; 64];
                if let Ok(n) = s.read(&mut buf).await {
                    let _ = s.write_all(&buf[..n]).await;
                }
            });
        }
    }))
}

/// Connect, send a line, expect it back: Ok, Refused (RST), NoAnswer (timeout).
async fn connect(addr: SocketAddr, window: Duration) -> Outcome {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"hello\n").await?;
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    match tokio::time::timeout(window, attempt).await {
        Err(_) => Outcome::NoAnswer,
        Ok(Ok(buf)) if &buf == b"hello\n" => Outcome::Ok(format!("echo from {addr}")),
        Ok(Ok(buf)) => Outcome::Failed(format!("bad echo {buf:?}")),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Outcome::Refused(e.to_string())
        }
        Ok(Err(e)) => Outcome::Failed(format!("{e} ({})", ip_kind(addr.ip()))),
    }
}

fn ip_kind(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() { "ipv4" } else { "ipv6" }
}
