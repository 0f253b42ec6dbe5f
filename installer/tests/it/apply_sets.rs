//! `apply`, `confirm` and `rollback` of policies that render ipsets, as the
//! real binary in lab namespaces: a 50,000-entry `[[blocklist]]` is swapped in
//! under its `pc-*` names, a blocklisted source is dropped and counted by the
//! blocklist rule, a changed list is swapped in over the live one with both
//! sets present throughout, and every rollback (foreground, guard at the
//! deadline, the watchdog) brings back the snapshot's sets and rules and
//! destroys the sets it did not have. A set that is not portcullis's
//! (`lab-other-4`) is never touched. A corrupted sets snapshot makes the
//! rollback fail loudly, and a retry with the file put back succeeds; a failed
//! swap fails the apply at the sets step and the guard restores; persisting
//! sets is refused (no boot loader restores them yet).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use nix::sys::signal::Signal;
use portcullis::apply::Status;
use portcullis::apply::sets::{SetInfo, parse_list};
use portcullis_harness::probe::icmp;
use portcullis_harness::{Backend, Family, HostId, Lab, Selector};

use crate::support::{ApplyProc, Fixture, before_rules, ensure, lateness_ms, per_backend};

/// Entries of the big blocklist.
const ENTRIES: usize = 50_000;
/// The set no apply may touch.
const OTHER: &str = "lab-other-4";

/// The `i`th IPv6 network under 2001:db8:BASE::/33, every other /56 so no two
/// fold into one (the scale bench's generator).
fn net6(base: u32, i: usize) -> String {
    let n = (i as u32) * 2;
    format!("2001:db8:{:x}:{:x}00::/56", base + (n >> 8), n & 0xff)
}

/// The size of the list the guard-deadline trial applies and rolls back.
const GUARD_ENTRIES: usize = 5_000;

/// A blocklist file of `entries` distinct entries that fold into nothing: the
/// even addresses .128-.254 of the three documentation /24s (outside the lab's
/// /28s), `extra_v4` and `extra_v6` (the outsider's, say), and /56s of
/// 2001:db8:BASE::/33 for the rest. Returns the text and the v4 and v6 counts.
fn blocklist(
    entries: usize,
    base: u32,
    extra_v4: &[&str],
    extra_v6: &[&str],
) -> (String, usize, usize) {
    let mut v4: Vec<String> = Vec::new();
    for net in ["192.0.2", "198.51.100", "203.0.113"] {
        for host in (128..=254).step_by(2) {
            v4.push(format!("{net}.{host}"));
        }
    }
    v4.extend(extra_v4.iter().map(|s| s.to_string()));
    let mut v6: Vec<String> = extra_v6.iter().map(|s| s.to_string()).collect();
    let rest = entries - v4.len() - v6.len();
    v6.extend((0..rest).map(|i| net6(base, i)));
    let mut text = String::from("# portcullis test blocklist: documentation ranges only\n");
    for line in v4.iter().chain(&v6) {
        text.push_str(line);
        text.push('\n');
    }
    (text, v4.len(), v6.len())
}

/// The trials' policy: ssh from the admin, ICMP in (so the outsider's echo
/// would be answered but for the blocklist), and blocklist `file`, plus
/// `more` (further TOML).
fn policy(lab: &Lab, file: &str, more: &str) -> String {
    format!(
        "[ssh]\nport = 22\nallow_from = [\"{}\", \"{}\"]\n\n[inbound]\nicmp = true\n\n\
         [ipv6]\nmode = \"mirror\"\n\n[[blocklist]]\nfile = \"{file}\"\ndirection = \"in\"\n{more}",
        lab.subnet(HostId::Admin, Family::V4),
        lab.subnet(HostId::Admin, Family::V6),
    )
}

/// `ipset ARGS` in the fixture's namespace.
fn ipset<N: crate::support::Target>(
    fx: &Fixture<N>,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Failed> {
    let mut argv = vec!["ipset"];
    argv.extend_from_slice(args);
    Ok(fx.host().exec(&argv, stdin)?)
}

/// Every set of the namespace, by name.
fn sets<N: crate::support::Target>(fx: &Fixture<N>) -> Result<BTreeMap<String, SetInfo>, Failed> {
    Ok(parse_list(&ipset(fx, &["list", "-t"], None)?)
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect())
}

/// The `pc-*` sets have exactly these member counts (and no temporary set is
/// left), and the other set is as it was.
fn ensure_sets<N: crate::support::Target>(
    fx: &Fixture<N>,
    want: &[(&str, u64)],
    other: &str,
    what: &str,
) -> Result<(), Failed> {
    let all = sets(fx)?;
    let ours: Vec<(&str, u64)> = all
        .values()
        .filter(|s| s.name.starts_with("pc-"))
        .map(|s| (s.name.as_str(), s.entries))
        .collect();
    let mut want = want.to_vec();
    want.sort();
    ensure(ours == want, || {
        format!("{what}: the pc-* sets are {ours:?}, expected {want:?}")
    })?;
    let now = ipset(fx, &["save", OTHER], None)?;
    ensure(now == other, || {
        format!("{what}: {OTHER} changed:\n{now}\nwas:\n{other}")
    })
}

/// The common start of the one-entry trials: the rules before loaded, a set
/// that is not ours made, the one-entry blocklist policy written; returns that
/// set's name and the rules as they are.
fn one_entry_setup(fx: &Fixture) -> Result<(String, (String, String)), Failed> {
    fx.load_before(before_rules)?;
    let other = make_other(fx)?;
    fx.write(
        "policy.toml",
        "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n\n[[blocklist]]\ncidrs = [\"203.0.113.7/32\"]\n",
    )?;
    Ok((other, fx.save_both()?))
}

/// A set that is not portcullis's, with a member.
fn make_other<N: crate::support::Target>(fx: &Fixture<N>) -> Result<String, Failed> {
    ipset(
        fx,
        &["restore"],
        Some(&format!(
            "create {OTHER} hash:ip family inet\nadd {OTHER} 192.0.2.99\n"
        )),
    )?;
    ipset(fx, &["save", OTHER], None)
}

/// The outsider's echo to the target, in `family`: dropped and counted by the
/// blocklist rule (`blocked`), or answered.
fn outsider_echo(fx: &Fixture<Lab>, family: Family, blocked: bool) -> Result<(), Failed> {
    let lab = &fx.ns;
    // An earlier answered echo must not pass as a reply of a tracked flow.
    lab.reset()?;
    let to = lab.addr(HostId::Target, family);
    let by = Selector::comment("blocklist[0]");
    let window = Duration::from_secs(2);
    let ev = lab.probe_dropped(HostId::Outsider, family, &by, move || async move {
        icmp::echo(to, window).await
    })?;
    let counted = ev.counters.packets(&by);
    if blocked {
        ensure(!ev.outcome.is_ok() && counted > 0, || {
            format!(
                "the outsider's {family} echo was not dropped by the blocklist: {}",
                ev.summary()
            )
        })
    } else {
        ensure(ev.outcome.is_ok() && counted == 0, || {
            format!(
                "the outsider's {family} echo should pass once off the list: {}",
                ev.summary()
            )
        })
    }
}

/// The policy applied in the lab's target, a 50,000-entry blocklist with the
/// outsider on it: the sets live with their member counts, the outsider's
/// echo dropped and counted by the blocklist rule in both families, the admin's
/// answered; confirmed. Then the list changed (the outsider's IPv4 address
/// off, a thousand networks replaced) and applied again, while a sampler lists
/// the namespace's sets: both sets are present in every sample. A foreground
/// `rollback` then brings back the first list's contents and rules.
fn blocklist_50k_apply_confirm_reapply_rollback(backend: Backend) -> Result<(), Failed> {
    let fx = Fixture::in_lab("apply-sets", backend)?;
    fx.ns.adopt_backend(backend)?;
    let other = make_other(&fx)?;
    let out4 = fx.ns.addr(HostId::Outsider, Family::V4).to_string();
    let out6 = fx.ns.addr(HostId::Outsider, Family::V6).to_string();
    let (text, n4, n6) = blocklist(ENTRIES, 0xc000, &[&out4], &[&out6]);
    fx.write("block.netset", &text)?;
    fx.write("policy.toml", &policy(&fx.ns, "block.netset", ""))?;

    let started = Instant::now();
    let mut run = fx.spawn_apply(120, None)?;
    let rec = run.wait_pending(&fx)?;
    let apply_ms = started.elapsed().as_millis();
    let want1 = [("pc-bl0-4", n4 as u64), ("pc-bl0-6", n6 as u64)];
    ensure_sets(&fx, &want1, &other, "after the apply")?;
    let live = sets(&fx)?;
    ensure(
        live.values()
            .all(|s| !s.name.starts_with("pc-") || s.references > 0),
        || format!("a pc-* set is not referenced by the rules: {live:?}"),
    )?;
    let v4 = fx.save(Family::V4)?;
    ensure(v4.contains("--match-set pc-bl0-4 src"), || {
        format!("the blocklist rule is not live:\n{v4}")
    })?;
    for family in Family::ALL {
        outsider_echo(&fx, family, true)?;
        let to = fx.ns.addr(HostId::Target, family);
        let ev = fx
            .ns
            .probe(HostId::Admin, Some(family), move || async move {
                icmp::echo(to, Duration::from_secs(2)).await
            })?;
        ensure(ev.outcome.is_ok(), || {
            format!("the admin's {family} echo: {}", ev.summary())
        })?;
    }
    let started = Instant::now();
    let (st, _, err) = fx.run(fx.portcullis("confirm", &["--no-persist"], None))?;
    let confirm_ms = started.elapsed().as_millis();
    ensure(st.success(), || format!("confirm: {st}: {err}"))?;
    run.finish_with(0, "confirmed")?;
    let done = fx.wait_finished(&rec.id, Duration::from_secs(1))?;
    ensure(done.status == Status::Confirmed, || format!("{done:?}"))?;
    let rules1 = fx.save_both()?;

    // The changed list: the outsider's IPv4 address off, the first thousand
    // networks replaced by others.
    let (text2, m4, m6) = blocklist(ENTRIES, 0xc000, &[], &[&out6]);
    let mut lines: Vec<String> = text2.lines().map(str::to_owned).collect();
    let first6 = lines
        .iter()
        .position(|l| l.starts_with("2001:db8:c000:"))
        .ok_or("no generated network")?;
    for (k, line) in lines[first6..first6 + 1000].iter_mut().enumerate() {
        *line = net6(0xd000, k);
    }
    fx.write("block.netset", &(lines.join("\n") + "\n"))?;
    let want2 = [("pc-bl0-4", m4 as u64), ("pc-bl0-6", m6 as u64)];
    let stop = AtomicBool::new(false);
    let (reapply_ms, samples) = std::thread::scope(|s| -> Result<_, Failed> {
        let sampler = s.spawn(|| -> Result<usize, String> {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let names = fx
                    .host()
                    .exec(&["ipset", "list", "-n"], None)
                    .map_err(|e| e.to_string())?;
                for want in ["pc-bl0-4", "pc-bl0-6"] {
                    if !names.lines().any(|l| l == want) {
                        return Err(format!("sample {n}: {want} is missing: {names}"));
                    }
                }
                n += 1;
            }
            Ok(n)
        });
        let started = Instant::now();
        let run = fx.spawn_apply(120, None).and_then(|mut run| {
            run.wait_pending(&fx)?;
            Ok(run)
        });
        let took = started.elapsed().as_millis();
        stop.store(true, Ordering::SeqCst);
        let samples = sampler.join().map_err(|_| "the sampler panicked")??;
        Ok(((run?, took), samples))
    })?;
    let (run, reapply_ms) = reapply_ms;
    ensure(samples > 0, || "the sampler took no sample".into())?;
    ensure_sets(&fx, &want2, &other, "after the re-apply")?;
    let bl4 = ipset(&fx, &["save", "pc-bl0-4"], None)?;
    ensure(!bl4.contains(&format!(" {out4}\n")), || {
        format!("the outsider is still in the swapped set:\n{bl4}")
    })?;
    outsider_echo(&fx, Family::V4, false)?;
    outsider_echo(&fx, Family::V6, true)?;

    let started = Instant::now();
    let (st, _, err) = fx.run(fx.portcullis("rollback", &[], None))?;
    let rollback_ms = started.elapsed().as_millis();
    ensure(st.success(), || format!("rollback: {st}: {err}"))?;
    run.finish_with(1, "ROLLED BACK")?;
    ensure_sets(&fx, &want1, &other, "after the rollback")?;
    fx.ensure_rules(
        &rules1,
        "the rollback did not bring back the first apply's rules",
    )?;
    let bl4 = ipset(&fx, &["save", "pc-bl0-4"], None)?;
    ensure(bl4.contains(&format!(" {out4}\n")), || {
        format!("the outsider is not back in the set:\n{bl4}")
    })?;
    outsider_echo(&fx, Family::V4, true)?;
    eprintln!(
        "measured: apply_sets::blocklist_50k::{backend}: {ENTRIES} entries ({n4} v4, {n6} v6): apply {apply_ms} ms, confirm {confirm_ms} ms, re-apply {reapply_ms} ms ({samples} set samples, none missing), foreground rollback {rollback_ms} ms"
    );
    Ok(())
}

/// A small blocklist applied and confirmed; then a 5,000-entry policy with a
/// second blocklist, left unconfirmed: at the deadline the guard brings back the
/// small sets' contents and the rules, and destroys the set only the big policy
/// had (`pc-bl1-4`).
fn guard_deadline_restores_sets(backend: Backend) -> Result<(), Failed> {
    let fx = Fixture::in_lab("apply-sets-guard", backend)?;
    fx.ns.adopt_backend(backend)?;
    let other = make_other(&fx)?;
    let out4 = fx.ns.addr(HostId::Outsider, Family::V4).to_string();
    let out6 = fx.ns.addr(HostId::Outsider, Family::V6).to_string();
    fx.write("small.netset", &format!("{out4}\n{out6}\n"))?;
    fx.write("policy.toml", &policy(&fx.ns, "small.netset", ""))?;
    let mut run = fx.spawn_apply(60, None)?;
    run.wait_pending(&fx)?;
    let (st, _, err) = fx.run(fx.portcullis("confirm", &["--no-persist"], None))?;
    ensure(st.success(), || format!("confirm: {st}: {err}"))?;
    run.finish_with(0, "confirmed")?;
    let small = [("pc-bl0-4", 1), ("pc-bl0-6", 1)];
    ensure_sets(&fx, &small, &other, "after the small apply")?;
    let rules = fx.save_both()?;

    // 5,000 entries: the guard's restore is what this proves (the 50,000-entry
    // apply and rollback are `blocklist_50k_apply_confirm_reapply_rollback`'s).
    let (text, n4, n6) = blocklist(GUARD_ENTRIES, 0xc000, &[&out4], &[&out6]);
    fx.write("block.netset", &text)?;
    let second = "\n[[blocklist]]\ncidrs = [\"198.51.100.99/32\"]\n";
    fx.write("policy.toml", &policy(&fx.ns, "block.netset", second))?;
    // Room for a slow apply before the deadline on a loaded machine.
    let timeout = 8;
    let mut run = fx.spawn_apply(timeout, None)?;
    let rec = run.wait_pending(&fx)?;
    let big = [
        ("pc-bl0-4", n4 as u64),
        ("pc-bl0-6", n6 as u64),
        ("pc-bl1-4", 1),
    ];
    ensure_sets(&fx, &big, &other, "after the big apply")?;
    let done = fx.wait_rolled_back(&rec.id, Duration::from_secs(timeout + 30))?;
    ensure(
        done.reason.as_deref() == Some("deadline reached without confirmation"),
        || format!("not the guard's rollback: {done:?}"),
    )?;
    run.finish_with(1, "ROLLED BACK")?;
    ensure_sets(&fx, &small, &other, "after the guard's rollback")?;
    fx.ensure_rules(
        &rules,
        "the guard did not bring back the small apply's rules",
    )?;
    outsider_echo(&fx, Family::V4, true)?;
    eprintln!(
        "measured: apply_sets::guard_deadline::{backend}: guard rollback of the {GUARD_ENTRIES}-entry policy done {} ms after the deadline",
        lateness_ms(&done)
    );
    Ok(())
}

/// A sets snapshot altered after the apply (whose rules `status --config`
/// finds in sync with the policy): `rollback` fails loudly (exit 1,
/// the record left `rollback_failed`), and with the file put back a second
/// `rollback --if-pending ID` restores the rules and destroys the applied set.
fn corrupt_sets_snapshot_fails_loudly(backend: Backend) -> Result<(), Failed> {
    let fx = Fixture::new("apply-sets-corrupt", backend)?;
    let (other, before) = one_entry_setup(&fx)?;
    let mut run = fx.spawn_apply(60, None)?;
    let rec = run.wait_pending(&fx)?;
    ensure_sets(&fx, &[("pc-bl0-4", 1)], &other, "after the apply")?;
    // `status --config` puts the policy's rules through the backend with their
    // sets (in a namespace of its own): the live rules are in sync.
    let root = fx.dir.path().join("root");
    std::fs::create_dir(&root)?;
    let policy = fx.policy();
    let check = fx.portcullis(
        "status",
        &[
            "--config",
            policy.to_str().unwrap(),
            "--backend",
            backend.name(),
            "--root",
            root.to_str().unwrap(),
            "--json",
        ],
        None,
    );
    let (st, out, err) = fx.run(check)?;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    let states: Vec<&str> = v["drift"]["families"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["state"].as_str()).collect())
        .unwrap_or_default();
    ensure(st.success() && states == ["in-sync", "in-sync"], || {
        format!("status --config of the applied policy: {st}: {states:?}: {out}{err}")
    })?;
    let snap = fx.state_dir.join("snapshot.ipset");
    let good = std::fs::read(&snap)?;
    let mut bad = good.clone();
    bad.extend_from_slice(b"create pc-bl0-4 hash:net family inet\nadd pc-bl0-4 192.0.2.77\n");
    std::fs::write(&snap, &bad)?;
    let (st, _, err) = fx.run(fx.portcullis("rollback", &[], None))?;
    ensure(st.code() == Some(1), || format!("rollback: {st}: {err}"))?;
    ensure(
        err.contains("FAILED") && err.contains("ipset snapshot is unusable"),
        || format!("rollback was not loud: {err}"),
    )?;
    let pending = fx.record("pending.json").ok_or("the record was retired")?;
    ensure(
        pending.id == rec.id && pending.status == Status::RollbackFailed,
        || format!("{pending:?}"),
    )?;
    run.finish_with(1, "ROLLBACK FAILED")?;
    std::fs::write(&snap, &good)?;
    // The retry as a timer set at apply time runs it.
    let (st, _, err) = fx.run(fx.portcullis("rollback", &["--if-pending", &rec.id], None))?;
    ensure(st.success(), || format!("retried rollback: {st}: {err}"))?;
    fx.ensure_rules(&before, "the retry did not restore the rules")?;
    ensure_sets(&fx, &[], &other, "after the retried rollback")?;
    Ok(())
}

/// `apply` of `policy` persisting into `root` (30 s to confirm).
fn apply_into_root(
    fx: &Fixture,
    policy: &std::path::Path,
    root: &std::path::Path,
) -> std::process::Command {
    fx.portcullis(
        "apply",
        &[
            "--config",
            policy.to_str().unwrap(),
            "--backend",
            fx.backend.name(),
            "--timeout",
            "30",
            "--root",
            root.to_str().unwrap(),
        ],
        None,
    )
}

/// Persisting a policy with sets into a root whose boot would not load them
/// (an Arch root without ipset.service) is refused before anything changes:
/// apply without `--no-persist` exits 2 naming the package and `--no-persist`,
/// and no rule or set changed.
fn persisting_sets_refused(backend: Backend) -> Result<(), Failed> {
    let fx = Fixture::new("apply-sets-persist", backend)?;
    let (other, before) = one_entry_setup(&fx)?;
    let policy = fx.dir.path().join("policy.toml");
    let root = crate::persist::copy_fixture("arch", fx.dir.path())?;
    let c = apply_into_root(&fx, &policy, &root);
    let (st, _, err) = fx.run(c)?;
    ensure(
        st.code() == Some(2)
            && err.contains("ipset.service is not installed")
            && err.contains("pacman -S ipset")
            && err.contains("--no-persist"),
        || format!("apply: {st}: {err}"),
    )?;
    fx.ensure_rules(&before, "a refused apply changed the rules")?;
    ensure_sets(&fx, &[], &other, "after the refusal")
}

/// Apply with persistence into a Debian fixture root that has ipset (no
/// ipset-persistent): nothing is written while pending; confirm writes the
/// sets file, portcullis's own netfilter-persistent plugin that loads it, and
/// the applied rules.
fn confirm_persists_sets_into_root(backend: Backend) -> Result<(), Failed> {
    let fx = Fixture::new("apply-sets-persist-ok", backend)?;
    let (_other, _before) = one_entry_setup(&fx)?;
    let root = crate::persist::copy_fixture("debian", fx.dir.path())?;
    crate::persist::sets::add_ipset(&root, "debian", true)?;
    let sets_file = root.join("etc/iptables/ipsets");
    let plugin = root.join("usr/share/netfilter-persistent/plugins.d/10-portcullis-ipset");
    let policy = fx.dir.path().join("policy.toml");
    let c = apply_into_root(&fx, &policy, &root);
    let mut run = fx.spawn(c)?;
    let rec = run.wait_pending(&fx)?;
    ensure(rec.persist && !sets_file.exists(), || {
        "the sets file was written before confirmation".into()
    })?;
    let (st, _, err) = fx.run(fx.portcullis("confirm", &[], None))?;
    ensure(st.success(), || format!("confirm: {st}: {err}"))?;
    // The applied line names the sets it loaded.
    run.finish_with(0, "and ipsets pc-bl0-4 (1 entry)")?;
    let sets = std::fs::read_to_string(&sets_file).unwrap_or_default();
    ensure(
        sets.contains("create pc-bl0-4 hash:net family inet"),
        || format!("confirm did not persist the sets: {sets:?}\n{err}"),
    )?;
    ensure(plugin.exists(), || {
        format!("no plugin loads {} at boot:\n{err}", sets_file.display())
    })?;
    let applied = std::fs::read_to_string(fx.state_dir.join("applied.v4"))?;
    let boot = std::fs::read_to_string(root.join("etc/iptables/rules.v4"))?;
    ensure(boot == applied, || {
        "rules.v4 is not the applied text".into()
    })
}

/// An `ipset` whose `restore` of the swaps fails (a fake first on PATH, the
/// real one for everything else): apply fails at the sets step, before any rule
/// changed, and the guard restores the snapshot: the rules as before, and no
/// `pc-*` set left (the filled temporary one destroyed).
fn failed_swap_rolls_back(backend: Backend) -> Result<(), Failed> {
    let mut fx = Fixture::new("apply-sets-swapfail", backend)?;
    let (other, before) = one_entry_setup(&fx)?;
    fx.fake_bin("ipset", |real| {
        format!(
            "#!/bin/sh\nif [ \"$*\" = restore ]; then\n  input=$(cat)\n  case \"$input\" in *'swap pc-tmp-'*) echo 'fake ipset: swap refused' >&2; exit 1;; esac\n  printf '%s\\n' \"$input\" | exec {real} \"$@\"\nfi\nexec {real} \"$@\"\n"
        )
    })?;
    let run = fx.spawn_apply(60, None)?;
    let err = run.finish_with(1, "ROLLED BACK")?;
    ensure(
        err.contains("applying the ipsets failed") && err.contains("swap refused"),
        || format!("apply did not name the failed sets step: {err}"),
    )?;
    fx.ensure_rules(&before, "the rules are not the snapshot")?;
    ensure_sets(&fx, &[], &other, "after the failed apply")?;
    let last = fx.record("last.json").ok_or("no last.json")?;
    ensure(last.status == Status::RolledBack, || format!("{last:?}"))
}

/// A small blocklist applied and confirmed; then a policy that changes its
/// contents and adds a second blocklist, pending, when the guard and the
/// session's apply are killed together: the watchdog puts back the first
/// list's contents (and the rules), and destroys the added set.
fn watchdog_restores_sets(backend: Backend) -> Result<(), Failed> {
    let fx = Fixture::new("apply-sets-watchdog", backend)?;
    fx.load_before(before_rules)?;
    let other = make_other(&fx)?;
    let ssh = "[ssh]\nallow_from = [\"192.0.2.0/24\"]\n";
    fx.write(
        "policy.toml",
        &format!("{ssh}\n[[blocklist]]\ncidrs = [\"203.0.113.7/32\"]\n"),
    )?;
    let mut run = fx.spawn_apply(60, None)?;
    run.wait_pending(&fx)?;
    let (st, _, err) = fx.run(fx.portcullis("confirm", &["--no-persist"], None))?;
    ensure(st.success(), || format!("confirm: {st}: {err}"))?;
    run.finish_with(0, "confirmed")?;
    let rules = fx.save_both()?;
    let first = ipset(&fx, &["save", "pc-bl0-4"], None)?;

    fx.write(
        "policy.toml",
        &format!(
            "{ssh}\n[[blocklist]]\ncidrs = [\"203.0.113.8/32\", \"203.0.113.10/32\"]\n\n\
             [[blocklist]]\ncidrs = [\"198.51.100.99/32\"]\n"
        ),
    )?;
    let mut run = fx.spawn_apply(60, None)?;
    let rec = run.wait_pending(&fx)?;
    ensure_sets(
        &fx,
        &[("pc-bl0-4", 2), ("pc-bl1-4", 1)],
        &other,
        "after the second apply",
    )?;
    run.signal(Signal::SIGKILL)?;
    ApplyProc::guard(&rec)?.signal(Signal::SIGKILL)?;
    fx.wait_rolled_back(&rec.id, Duration::from_secs(10))?;
    let log = fx.guard_log();
    ensure(
        log.contains("watchdog") && log.contains("restoring"),
        || format!("the watchdog did not restore: {log}"),
    )?;
    ensure_sets(
        &fx,
        &[("pc-bl0-4", 1)],
        &other,
        "after the watchdog's rollback",
    )?;
    let now = ipset(&fx, &["save", "pc-bl0-4"], None)?;
    // The members, not the header (`initval` differs between two creations).
    let members = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("add "))
            .map(str::to_owned)
            .collect()
    };
    ensure(members(&now) == members(&first), || {
        format!("pc-bl0-4 is not the first list:\n{now}\nwas:\n{first}")
    })?;
    fx.ensure_rules(&rules, "the watchdog did not bring back the rules")
}

fn missing(backend: Backend) -> Option<String> {
    backend.unavailable_reason().or_else(|| {
        portcullis_harness::backend::find_in_path("ipset")
            .is_none()
            .then(|| "ipset not installed (apt-get install ipset)".to_owned())
    })
}

pub fn trials() -> Vec<Trial> {
    per_backend(
        "apply_sets",
        missing,
        &[
            (
                "blocklist_50k_apply_confirm_reapply_rollback",
                blocklist_50k_apply_confirm_reapply_rollback,
            ),
            ("guard_deadline_restores_sets", guard_deadline_restores_sets),
            (
                "corrupt_sets_snapshot_fails_loudly",
                corrupt_sets_snapshot_fails_loudly,
            ),
            ("persisting_sets_refused", persisting_sets_refused),
            (
                "confirm_persists_sets_into_root",
                confirm_persists_sets_into_root,
            ),
            ("failed_swap_rolls_back", failed_swap_rolls_back),
            ("watchdog_restores_sets", watchdog_restores_sets),
        ],
    )
}
