//! Lockout flows over real OpenSSH in the standard lab: sshd runs in `target`, the
//! admin (`198.51.100.0/28`, `2001:db8:2::/64`) and the outsider (`203.0.113.0/28`)
//! connect with the real ssh client, and `portcullis apply`/`confirm` run as the
//! remote commands. Each trial runs under both backends.
//!
//! Also the side-by-side with Debian's stock iptables-apply under the same session
//! drop (docs/safety.md quotes its outcome).

use std::io::Read as _;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};
use portcullis::apply::Status;
use portcullis_harness::services::ssh::Client;
use portcullis_harness::trial::privileged;
use portcullis_harness::{Backend, Family, HostId, Lab, Selector};

use crate::support::{
    BIN, Fixture, TRACKED_BEFORE, ensure, lateness_ms, openssh_missing, per_backend,
    sleep_past_deadline, ssh_policy as policy,
};

/// The comment of the renderer's OUTPUT rule for sessions older than the ruleset
/// (`--sport 22 ! --syn`), read from the rendered text.
fn ssh_replies_comment(rendered_v4: &str) -> Option<String> {
    let line = rendered_v4.lines().find(|l| l.contains("! --syn"))?;
    let rest = &line[line.find("--comment \"")? + 11..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// The shared fixture on the standard lab, with sshd in `target`, and a client
/// holding sshd's key. Sessions get sshd's private dir as HOME (no real
/// ~/.bashrc), so the remote side prints right after login; the admin ACKs at
/// once (the lab's routes carry quickack), so after a load only the server can be
/// the first to speak on an untracked session.
struct SshLab {
    fx: Fixture<Lab>,
    client: Client,
}

impl SshLab {
    fn new(backend: Backend) -> Result<SshLab, Failed> {
        let mut fx = Fixture::in_lab("lockout", backend)?;
        let client = fx.start_sshd()?;
        Ok(SshLab { fx, client })
    }

    fn lab(&self) -> &Lab {
        &self.fx.ns
    }

    fn target(&self, family: Family) -> String {
        self.lab().addr(HostId::Target, family).to_string()
    }

    /// The ssh client in `from`, to the target over `family`, running `remote`,
    /// with the lab client's private config (BatchMode, the lab's key exchange).
    fn ssh(
        &self,
        from: HostId,
        family: Family,
        tty: bool,
        remote: &[&str],
    ) -> std::process::Command {
        let mut c = self.lab().host(from).command("ssh");
        c.arg("-F")
            .arg(self.client.config())
            // A locked-out client gives up soon (the config's 10 s is for logins
            // on a loaded machine; the lab's SYNs are answered at once or never).
            .args(["-o", "ConnectTimeout=2"]);
        c.arg(if tty { "-tt" } else { "-T" });
        c.arg(format!("{}@{}", self.client.user(), self.target(family)));
        c.arg("--");
        c.args(remote);
        c.env_remove("SSH_CONNECTION").env_remove("SSH_AUTH_SOCK");
        c
    }

    /// Run an ssh command to completion.
    fn ssh_output(
        &self,
        from: HostId,
        family: Family,
        remote: &[&str],
    ) -> Result<(ExitStatus, String), Failed> {
        let mut c = self.ssh(from, family, false, remote);
        c.stdin(Stdio::null());
        let out = c.output()?;
        Ok((
            out.status,
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    }

    /// `portcullis apply` over ssh from the admin, its output read line by line.
    fn remote_apply(&self, config: &Path, timeout: u64, tty: bool) -> Result<Remote, Failed> {
        let timeout = timeout.to_string();
        let argv = [
            BIN,
            "apply",
            "--config",
            config.to_str().unwrap(),
            "--timeout",
            &timeout,
            "--state-dir",
            self.fx.state_dir.to_str().unwrap(),
            "--backend",
            self.fx.backend.name(),
            "--no-persist",
        ];
        Remote::spawn(self, self.ssh(HostId::Admin, Family::V4, tty, &argv))
    }

    /// An ssh from `from` that must be refused: it fails, and the target's INPUT
    /// policy counted the dropped SYNs.
    fn assert_locked_out(&self, from: HostId) -> Result<(), Failed> {
        let before = self.fx.counters(Family::V4)?;
        let (st, out) = self.ssh_output(from, Family::V4, &["true"])?;
        ensure(!st.success(), || {
            format!("{from} could open a session: {out}")
        })?;
        let counted = self.fx.counters(Family::V4)?.since(&before);
        ensure(counted.packets(&Selector::policy("INPUT")) > 0, || {
            format!(
                "{from}'s ssh failed but the INPUT policy counted nothing ({}): {out}",
                counted.summary()
            )
        })
    }

    fn assert_admin_gets_in(&self) -> Result<(), Failed> {
        for family in Family::ALL {
            let (st, out) = self.ssh_output(HostId::Admin, family, &["true"])?;
            ensure(st.success(), || {
                format!("the admin cannot open a new {family} session: {out}")
            })?;
        }
        Ok(())
    }
}

/// A running ssh client whose output lines are collected with their arrival time.
struct Remote {
    child: Option<portcullis_harness::Child>,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Remote {
    fn spawn(lab: &SshLab, mut cmd: std::process::Command) -> Result<Remote, Failed> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = lab.lab().host(HostId::Admin).spawn_child(cmd)?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let out = child.inner().stdout.take().ok_or("no stdout")?;
        let err = child.inner().stderr.take().ok_or("no stderr")?;
        for pipe in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                // A pty turns "\n" into "\r\n", and a countdown on a terminal
                // redraws with "\r": a line ends at either.
                let mut pipe = pipe;
                let mut chunk = [0u8; 4096];
                let mut line = Vec::new();
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let now = Instant::now();
                    for &b in &chunk[..n] {
                        if b == b'\n' || b == b'\r' {
                            if !line.is_empty() {
                                let s = String::from_utf8_lossy(&line).trim_end().to_owned();
                                lines.lock().unwrap().push((now, s));
                                line.clear();
                            }
                        } else {
                            line.push(b);
                        }
                    }
                }
                if !line.is_empty() {
                    let s = String::from_utf8_lossy(&line).trim_end().to_owned();
                    lines.lock().unwrap().push((Instant::now(), s));
                }
            }));
        }
        Ok(Remote {
            child: Some(child),
            lines,
            readers,
        })
    }

    /// Type a line into the session, as at a keyboard.
    fn type_line(&mut self, line: &str) -> Result<(), Failed> {
        use std::io::Write as _;
        let c = self.child.as_mut().ok_or("no ssh")?;
        let stdin = c.inner().stdin.as_mut().ok_or("no stdin")?;
        Ok(stdin.write_all(format!("{line}\n").as_bytes())?)
    }

    fn text(&self) -> String {
        let l = self.lines.lock().unwrap();
        l.iter().map(|(_, s)| format!("{s}\n")).collect()
    }

    /// Wait until a line containing `needle` has arrived.
    fn wait_line(&mut self, needle: &str, limit: Duration) -> Result<Instant, Failed> {
        let until = Instant::now() + limit;
        loop {
            if let Some((t, _)) = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|(_, l)| l.contains(needle))
            {
                return Ok(*t);
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.inner().try_wait() {
                    // Let the readers drain what is left.
                    for r in self.readers.drain(..) {
                        let _ = r.join();
                    }
                    if let Some((t, _)) = self
                        .lines
                        .lock()
                        .unwrap()
                        .iter()
                        .find(|(_, l)| l.contains(needle))
                    {
                        return Ok(*t);
                    }
                    return Err(
                        format!("ssh exited ({st}) before {needle:?}:\n{}", self.text()).into(),
                    );
                }
            }
            if Instant::now() > until {
                return Err(format!("no {needle:?} within {limit:?}:\n{}", self.text()).into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self, limit: Duration) -> Result<(ExitStatus, String), Failed> {
        let until = Instant::now() + limit;
        let mut child = self.child.take().unwrap();
        let st = loop {
            if let Some(st) = child.inner().try_wait()? {
                break st;
            }
            if Instant::now() > until {
                return Err(format!("ssh did not exit within {limit:?}:\n{}", self.text()).into());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        Ok((st, self.text()))
    }

    /// SIGKILL the ssh client, as a dropped connection or a closed laptop would.
    fn kill(&mut self) -> Result<(), Failed> {
        if let Some(c) = self.child.take() {
            c.kill()?;
        }
        Ok(())
    }
}

/// The admin applies in one session and confirms from a second one: the rules
/// stay after the deadline, the admin still gets in, the outsider does not. The
/// target had no rules before, so the admin's session is untracked when the
/// ruleset loads: the countdown must still reach the admin, through the OUTPUT
/// rule for older sessions (its counter proves it).
fn admin_confirms_from_new_session(backend: Backend) -> Result<(), Failed> {
    let lab = SshLab::new(backend)?;
    let admin = [
        lab.lab().subnet(HostId::Admin, Family::V4).to_string(),
        lab.lab().subnet(HostId::Admin, Family::V6).to_string(),
    ];
    let cfg = lab
        .fx
        .write("policy.toml", &policy(&[&admin[0], &admin[1]]))?;
    let mut apply = lab.remote_apply(&cfg, 6, false)?;
    apply.wait_line("portcullis: applied ", Duration::from_secs(20))?;
    let id = lab.fx.pending()?.id;
    // Two countdown lines after the load reached the admin over the old session.
    apply.wait_line("waiting for confirm: 4 s left", Duration::from_secs(10))?;
    let text = std::fs::read_to_string(&cfg)?;
    let rendered = portcullis::render(&portcullis::Policy::parse(&text, "t")?);
    let comment = ssh_replies_comment(&rendered.text(Family::V4).unwrap_or_default())
        .ok_or("the rendered rules have no `! --syn` OUTPUT rule for older sessions")?;
    let replies = lab
        .fx
        .counters(Family::V4)?
        .packets(&Selector::comment(&comment));
    ensure(replies > 0, || {
        format!("the countdown reached the admin but the `{comment}` rule counted nothing")
    })?;
    let state = &lab.fx.state_dir;
    let (st, out) = lab.ssh_output(
        HostId::Admin,
        Family::V4,
        &[
            BIN,
            "confirm",
            "--no-persist",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    )?;
    ensure(st.success(), || {
        format!("confirm from a new session failed: {out}")
    })?;
    let (st, out) = apply.finish(Duration::from_secs(10))?;
    ensure(st.success() && out.contains("confirmed"), || {
        format!("apply over ssh: {st}:\n{out}")
    })?;
    let rec = lab.fx.wait_finished(&id, Duration::from_secs(1))?;
    ensure(rec.status == Status::Confirmed, || format!("{rec:?}"))?;
    // After the deadline, the rules stay.
    sleep_past_deadline(&rec, 500);
    ensure(lab.fx.save(Family::V4)?.contains(":INPUT DROP"), || {
        "the rules did not stay".into()
    })?;
    lab.assert_admin_gets_in()?;
    lab.assert_locked_out(HostId::Outsider)?;
    Ok(())
}

/// The control for the OUTPUT `! --syn` rule: the same rules without it, loaded
/// under an untracked session whose server speaks first (a remote loop printing
/// every 200 ms to an idle client). The output stops while the rules are loaded,
/// and the target's OUTPUT policy counts the dropped segments; once the rules go,
/// it resumes (the session was alive, only stalled).
fn untracked_session_stalls_without_the_syn_rule(backend: Backend) -> Result<(), Failed> {
    let lab = SshLab::new(backend)?;
    let admin = lab.lab().subnet(HostId::Admin, Family::V4).to_string();
    let rendered = portcullis::render(&portcullis::Policy::parse(&policy(&[&admin]), "t")?);
    let full = rendered.text(Family::V4).unwrap_or_default();
    ensure(full.contains("! --syn"), || {
        "the renderer has no `! --syn` rule".into()
    })?;
    let without: String = full
        .lines()
        .filter(|l| !l.contains("! --syn"))
        .map(|l| format!("{l}\n"))
        .collect();
    // The remote loop prints from the start and the target loads the rules while
    // it runs, so nothing of the session is in flight across the load but the
    // tick being written at that moment.
    let script = "while :; do echo tick; sleep 0.2; done";
    let mut run = Remote::spawn(&lab, lab.ssh(HostId::Admin, Family::V4, false, &[script]))?;
    run.wait_line("tick", Duration::from_secs(20))
        .map_err(|x| {
            format!(
                "{}\nsshd log:\n{}",
                x.message().unwrap_or(""),
                lab.fx.sshd_log()
            )
        })?;
    lab.lab()
        .host(HostId::Target)
        .load(backend, Family::V4, &without)?;
    let ticks_at_load = run.text().matches("tick").count();
    let dropped_before = lab.fx.counters(Family::V4)?;
    // A negative window: five ticks are due in it.
    std::thread::sleep(Duration::from_millis(1000));
    let ticks = run.text().matches("tick").count() - ticks_at_load;
    let dropped = lab
        .fx
        .counters(Family::V4)?
        .since(&dropped_before)
        .packets(&Selector::policy("OUTPUT"));
    // At most the one tick that was being written when the rules loaded.
    ensure(ticks <= 1, || {
        format!("{ticks} ticks reached the admin without the rule")
    })?;
    ensure(dropped > 0, || {
        "no tick arrived, but the OUTPUT policy counted nothing".into()
    })?;
    let empty =
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";
    lab.lab()
        .host(HostId::Target)
        .load(backend, Family::V4, empty)?;
    let stalled = run.text().matches("tick").count();
    let until = Instant::now() + Duration::from_secs(10);
    while run.text().matches("tick").count() <= stalled {
        ensure(Instant::now() < until, || {
            "the session did not resume once the rules were gone".into()
        })?;
        std::thread::sleep(Duration::from_millis(10));
    }
    run.kill()?;
    eprintln!(
        "measured: lockout::untracked_session::{backend}: without the `! --syn` rule, {ticks} tick(s) in 1 s (5 due) and {dropped} segments dropped by the OUTPUT policy; the output resumed once the rules were gone"
    );
    Ok(())
}

/// Nobody confirms: the guard rolls back at the deadline; how late is measured.
fn nobody_confirms(backend: Backend) -> Result<(), Failed> {
    let lab = SshLab::new(backend)?;
    lab.fx.load_before(|_| TRACKED_BEFORE.to_owned())?;
    let before = lab.fx.save_both()?;
    let admin = lab.lab().subnet(HostId::Admin, Family::V4).to_string();
    let cfg = lab.fx.write("policy.toml", &policy(&[&admin]))?;
    let mut apply = lab.remote_apply(&cfg, 3, false)?;
    apply.wait_line("portcullis: applied ", Duration::from_secs(20))?;
    let id = lab.fx.pending()?.id;
    let (st, out) = apply.finish(Duration::from_secs(15))?;
    ensure(st.code() == Some(1) && out.contains("ROLLED BACK"), || {
        format!("apply over ssh: {st}:\n{out}")
    })?;
    let rec = lab.fx.wait_rolled_back(&id, Duration::from_secs(1))?;
    lab.fx.ensure_rules(&before, "not rolled back")?;
    lab.assert_admin_gets_in()?;
    eprintln!(
        "measured: lockout::nobody_confirms::{backend}: rollback done {} ms after the deadline",
        lateness_ms(&rec)
    );
    Ok(())
}

/// The ssh client dies during the countdown (the session is hung up): rolled back.
fn ssh_client_killed(backend: Backend, tty: bool) -> Result<(), Failed> {
    let lab = SshLab::new(backend)?;
    // With a terminal, the same 2,000-entry ruleset under which iptables-apply's
    // revert loses the race with the hang-up (see iptables_apply_session_drop).
    if tty {
        lab.fx.load_before(big_before)?;
    } else {
        lab.fx.load_before(|_| TRACKED_BEFORE.to_owned())?;
    }
    let before = lab.fx.save_both()?;
    let admin = lab.lab().subnet(HostId::Admin, Family::V4).to_string();
    let cfg = lab.fx.write("policy.toml", &policy(&[&admin]))?;
    let mut apply = lab.remote_apply(&cfg, 4, tty)?;
    apply.wait_line("waiting for confirm", Duration::from_secs(20))?;
    let id = lab.fx.pending()?.id;
    apply.kill()?;
    let rec = lab.fx.wait_rolled_back(&id, Duration::from_secs(15))?;
    lab.fx.ensure_rules(&before, "not rolled back")?;
    lab.assert_admin_gets_in()?;
    eprintln!(
        "measured: lockout::ssh_client_killed::{}::{backend}: rollback done {} ms after the deadline",
        if tty { "tty" } else { "notty" },
        lateness_ms(&rec)
    );
    Ok(())
}

/// A policy that excludes the admin's subnet is refused over real ssh, nothing changed.
fn policy_excluding_admin_refused(backend: Backend) -> Result<(), Failed> {
    let lab = SshLab::new(backend)?;
    lab.fx.load_before(|_| TRACKED_BEFORE.to_owned())?;
    let before = lab.fx.save_both()?;
    let outsider = lab.lab().subnet(HostId::Outsider, Family::V4).to_string();
    let cfg = lab.fx.write("policy.toml", &policy(&[&outsider]))?;
    let apply = lab.remote_apply(&cfg, 5, false)?;
    let (st, out) = apply.finish(Duration::from_secs(20))?;
    let admin_ip = lab.lab().addr(HostId::Admin, Family::V4).to_string();
    ensure(st.code() == Some(2), || {
        format!("apply over ssh exited {st}:\n{out}")
    })?;
    ensure(
        out.contains(&admin_ip)
            && out.contains("`ssh.allow_from`")
            && out.contains("nothing changed"),
        || format!("the refusal does not name {admin_ip} and ssh.allow_from:\n{out}"),
    )?;
    lab.fx.ensure_rules(&before, "the rules changed")?;
    ensure(!lab.fx.state_dir.exists(), || {
        "a refused apply made a state dir".into()
    })?;
    lab.assert_admin_gets_in()?;
    Ok(())
}

/// Debian's iptables-apply under the same session drop: the admin applies rules
/// that keep established sessions but refuse new ssh from the admin (the mistake
/// iptables-apply's question is about), and the ssh client dies during the prompt.
/// The hang-up races the script: its HUP trap deletes the saved rules and bash
/// defers the trap until the running command ends, while `read` returns at once
/// on the hung-up terminal and starts the revert, which the same SIGHUP may kill.
/// This trial runs the drop `RUNS` times, each in its own lab and all at once
/// (one run is several seconds of iptables-apply and a 2,000-rule restore; in
/// sequence the five took 36 s), and reports each outcome; it fails only
/// when iptables-apply never left the new rules in place (then docs/safety.md
/// is wrong and must change).
fn iptables_apply_session_drop(backend: Backend) -> Result<(), Failed> {
    const RUNS: usize = 5;
    let results: Vec<Result<&'static str, Failed>> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..RUNS)
            .map(|_| scope.spawn(move || iptables_apply_drop_once(backend)))
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut outcomes = Vec::new();
    for r in results {
        outcomes.push(r?);
    }
    let stayed = outcomes
        .iter()
        .filter(|o| o.starts_with("new rules stayed"))
        .count();
    eprintln!(
        "measured: lockout::iptables_apply::{backend}: {stayed}/{RUNS} session drops left the new rules (lockout): {outcomes:?}"
    );
    ensure(stayed > 0, || {
        format!("iptables-apply rolled back in all {RUNS} runs: {outcomes:?}")
    })
}

/// One session drop of [`iptables_apply_session_drop`] in a lab of its own: its
/// outcome.
fn iptables_apply_drop_once(backend: Backend) -> Result<&'static str, Failed> {
    let lab = SshLab::new(backend)?;
    let outsider = lab.lab().subnet(HostId::Outsider, Family::V4).to_string();
    let rendered = portcullis::render(&portcullis::Policy::parse(&policy(&[&outsider]), "t")?);
    let rules = lab
        .fx
        .write("bad.rules.v4", &rendered.text(Family::V4).unwrap())?;
    let rules_s = rules.to_str().unwrap().to_owned();
    lab.lab()
        .host(HostId::Target)
        .load(backend, Family::V4, &big_before(Family::V4))?;
    // An interactive login shell, as an admin would use: iptables-apply runs
    // as a foreground job of the shell that the hang-up reaches first.
    let mut run = Remote::spawn(&lab, lab.ssh(HostId::Admin, Family::V4, true, &[]))?;
    run.type_line(&format!("exec 2>&1; PS1=; iptables-apply -t 5 {rules_s}"))?;
    run.wait_line("Can you establish NEW connections", Duration::from_secs(20))?;
    let killed = Instant::now();
    run.kill()?;
    // Wait for iptables-apply to be gone from the target (it names our file,
    // which is this lab's own).
    let until = Instant::now() + Duration::from_secs(20);
    while running_with_arg(&rules_s) {
        ensure(Instant::now() < until, || {
            "iptables-apply still running after 20 s".into()
        })?;
        std::thread::sleep(Duration::from_millis(20));
    }
    let gone_ms = killed.elapsed().as_millis();
    let now = lab.fx.save(Family::V4)?;
    eprintln!("iptables-apply gone {gone_ms} ms after the client was killed");
    Ok(if now.contains(":INPUT DROP") && now.contains(&outsider) {
        // Locked out: no new session from the admin, the drop counted.
        lab.assert_locked_out(HostId::Admin)?;
        "new rules stayed, admin locked out"
    } else if now.contains("before: tracked") {
        "rolled back"
    } else {
        "neither: half-restored"
    })
}

/// A host's existing ruleset with a blocklist of 2,000 entries (fail2ban-sized),
/// tracked like TRACKED_BEFORE: its restore takes long enough to race a hang-up.
fn big_before(family: Family) -> String {
    let mut s =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    s.push_str("-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment \"before: tracked\" -j ACCEPT\n");
    for i in 0..2000u32 {
        let src = match family {
            Family::V4 => format!("203.0.113.{}/32", i % 250 + 1),
            Family::V6 => format!("2001:db8:3::{:x}/128", i + 1),
        };
        s.push_str(&format!(
            "-A INPUT -s {src} -p tcp --dport {} -j DROP\n",
            1000 + i
        ));
    }
    s.push_str("COMMIT\n");
    s
}

fn running_with_arg(arg: &str) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .map(|c| c.split(|&b| b == 0).any(|a| a == arg.as_bytes()))
            .unwrap_or(false)
    })
}

fn missing(backend: Backend) -> Option<String> {
    backend.unavailable_reason().or_else(openssh_missing)
}

pub fn trials() -> Vec<Trial> {
    let mut trials = per_backend(
        "lockout",
        missing,
        &[
            (
                "admin_confirms_from_new_session",
                admin_confirms_from_new_session,
            ),
            (
                "untracked_session_stalls_without_the_syn_rule",
                untracked_session_stalls_without_the_syn_rule,
            ),
            ("nobody_confirms_rolled_back", nobody_confirms),
            ("ssh_client_killed_tty_rolled_back", |b| {
                ssh_client_killed(b, true)
            }),
            ("ssh_client_killed_notty_rolled_back", |b| {
                ssh_client_killed(b, false)
            }),
            (
                "policy_excluding_admin_refused",
                policy_excluding_admin_refused,
            ),
        ],
    );
    // iptables-apply drives the plain `iptables-restore`, whichever backend that is.
    let why = (!Path::new("/usr/sbin/iptables-apply").exists())
        .then(|| "/usr/sbin/iptables-apply not installed (apt-get install iptables)".to_owned());
    let backend = Backend::detect().unwrap_or(Backend::Nft);
    trials.push(privileged(
        format!("lockout::iptables_apply_session_drop_keeps_rules::{backend}"),
        why.or_else(|| missing(backend)),
        move || iptables_apply_session_drop(backend),
    ));
    trials
}
