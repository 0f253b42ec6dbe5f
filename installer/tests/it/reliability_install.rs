//! Reliability trials of install, inputs and binaries (docs/reliability.md,
//! "Install, inputs and binaries"): each trial injects one fault or hostile input
//! many times and counts the outcomes, and fails naming the counts.
//!
//! - install under concurrency and SIGKILL: the original backup survives, the
//!   v4/v6 pair is never mixed without a journal that the next run completes, no
//!   temp file outlives the next run;
//! - inputs: a FIFO, a character device, an oversized file, a config writable by
//!   other users;
//! - binaries: look-alike iptables scripts first on PATH are never run; the guard
//!   runs the binaries apply recorded;
//! - sessions: the SSH session is found through the process tree (an ancestor's
//!   environment under `env -i`), a terminal with no session is refused unless
//!   `--i-am-on-the-console`, and `install --root /` (in a chroot, never this host's
//!   /) checks the lockout as apply does.
//!
//! Everything runs in scratch directories under the target dir and, where rules
//! are loaded, in `unshare -n` (and a PID namespace where the process tree
//! matters), never on this host's /etc or tables.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};

use crate::persist::{POLICY, leftover_temps, scratch, text};
use portcullis_harness::trial::privileged;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const SYS_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
const ORIG_V4: &str =
    "# the distro's own rules.v4, written by hand\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
const ORIG_V6: &str =
    "# the distro's own rules.v6, written by hand\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n";
/// Where install keeps its journal while it commits (see persist::txn).
const JOURNAL: &str = "etc/.portcullis-install.journal";

pub fn trials() -> Vec<Trial> {
    let unshare = missing("unshare");
    vec![
        privileged(
            "reliability::install::concurrent_installs_keep_the_original",
            None,
            concurrent_installs,
        ),
        privileged(
            "reliability::install::sigkill_leaves_a_pair_and_no_temps",
            None,
            sigkill_installs,
        ),
        privileged(
            "reliability::inputs::fifo_and_devices_are_refused",
            missing("prlimit"),
            fifo_and_devices,
        ),
        privileged(
            "reliability::inputs::oversized_policy_is_refused",
            None,
            oversized_policy,
        ),
        privileged(
            "reliability::inputs::config_writable_by_others",
            None,
            writable_config,
        ),
        privileged(
            "reliability::inputs::state_file_writable_by_others",
            unshare.clone(),
            writable_state,
        ),
        privileged(
            "reliability::bins::lookalikes_on_path_are_never_run",
            unshare.clone(),
            lookalikes_never_run,
        ),
        privileged(
            "reliability::bins::guard_runs_the_recorded_binaries",
            unshare.clone(),
            guard_uses_recorded,
        ),
        privileged(
            "reliability::session::ancestor_environment_under_env_i",
            unshare.clone(),
            ancestor_session,
        ),
        privileged(
            "reliability::session::sshd_ancestor_socket_under_env_i",
            ["/usr/sbin/sshd", "/usr/bin/ssh", "/usr/bin/ssh-keygen"]
                .iter()
                .find(|p| !Path::new(p).exists())
                .map(|p| format!("{p} not installed (openssh-server, openssh-client)")),
            sshd_ancestor_socket,
        ),
        privileged(
            "reliability::session::terminal_without_session_is_refused",
            unshare,
            tty_without_session,
        ),
        privileged(
            "reliability::session::install_live_root_checks_lockout",
            missing("chroot"),
            install_live_root,
        ),
    ]
}

fn missing(tool: &str) -> Option<String> {
    portcullis_harness::backend::find_in_path(tool)
        .is_none()
        .then(|| format!("{tool} not found (install util-linux)"))
}

/// `tool`'s absolute path, so a PATH given to the child never picks it.
fn tool(name: &str) -> PathBuf {
    portcullis_harness::backend::find_in_path(name).unwrap_or_else(|| PathBuf::from(name))
}

/// A second policy whose rendering differs from POLICY's in both families.
fn policy_b() -> String {
    format!("{POLICY}\n[[inbound.allow]]\nproto = \"tcp\"\nport = 8443\ncomment = \"webui\"\n")
}

/// The rendered pair of `policy`.
fn rendered(policy: &str) -> (String, String) {
    let p = portcullis::Policy::parse(policy, "t").unwrap();
    let r = portcullis::render(&p);
    (
        r.text(portcullis_harness::Family::V4).unwrap(),
        r.text(portcullis_harness::Family::V6).unwrap(),
    )
}

/// Debian's netfilter-persistent unit, so `install --enable` can enable the
/// loader offline in a scratch root.
fn add_loader_unit(root: &Path) {
    let units = root.join("usr/lib/systemd/system");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/roots/debian/usr/lib/systemd/system/netfilter-persistent.service"),
        units.join("netfilter-persistent.service"),
    )
    .unwrap();
}

/// A minimal netfilter-persistent root holding the distro's own rules files.
fn fresh_root(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    add_loader_unit(&root);
    let etc = root.join("etc/iptables");
    std::fs::create_dir_all(&etc).unwrap();
    for (f, t) in [("rules.v4", ORIG_V4), ("rules.v6", ORIG_V6)] {
        std::fs::write(etc.join(f), t).unwrap();
        std::fs::set_permissions(etc.join(f), std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    root
}

fn install_cmd(policy: &Path, root: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("install")
        .arg("--config")
        .arg(policy)
        .arg("--root")
        .arg(root)
        .args([
            "--persistence",
            "netfilter-persistent",
            "--no-test",
            "--enable",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// Two installs of different policies on one root at once, 20 times.
fn concurrent_installs() -> Result<(), Failed> {
    let dir = scratch();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, POLICY)?;
    std::fs::write(&b, policy_b())?;
    let (a4, a6) = rendered(POLICY);
    let (b4, b6) = rendered(&policy_b());
    let tries = 20;
    let (mut failed_exit, mut lost_original, mut mixed, mut temps) = (0, 0, 0, 0);
    let mut notes = Vec::new();
    for i in 0..tries {
        let root = fresh_root(dir.path(), &format!("root{i}"));
        let c1 = install_cmd(&a, &root).spawn()?;
        let c2 = install_cmd(&b, &root).spawn()?;
        for c in [c1, c2] {
            let out = c.wait_with_output()?;
            if !out.status.success() {
                failed_exit += 1;
                notes.push(text(&out.stderr));
            }
        }
        let etc = root.join("etc/iptables");
        if read(&etc.join("rules.v4.portcullis.bak")).as_deref() != Some(ORIG_V4)
            || read(&etc.join("rules.v6.portcullis.bak")).as_deref() != Some(ORIG_V6)
        {
            lost_original += 1;
        }
        let pair = (read(&etc.join("rules.v4")), read(&etc.join("rules.v6")));
        if pair != (Some(a4.clone()), Some(a6.clone()))
            && pair != (Some(b4.clone()), Some(b6.clone()))
        {
            mixed += 1;
        }
        if !leftover_temps(&root).is_empty() {
            temps += 1;
        }
    }
    let summary = format!(
        "{tries} tries: failed exit {failed_exit}, original backup lost {lost_original}, mixed pair {mixed}, temps left {temps}"
    );
    eprintln!("concurrent installs: {summary}");
    if failed_exit + lost_original + mixed + temps > 0 {
        return Err(format!("{summary}\n{}", notes.join("\n")).into());
    }
    Ok(())
}

/// A small deterministic generator, so a failing run can be repeated.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Install A, then SIGKILL an install of B at a random moment, 200 times; then
/// run install B again (the next run), which must complete the pair, keep the
/// original backup and leave no temp file.
fn sigkill_installs() -> Result<(), Failed> {
    let dir = scratch();
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    std::fs::write(&a, POLICY)?;
    std::fs::write(&b, policy_b())?;
    let (a4, a6) = rendered(POLICY);
    let (b4, b6) = rendered(&policy_b());
    if a4 == b4 || a6 == b6 {
        return Err("policy B must change both families".into());
    }
    // The kill moments spread over the whole run of an uninterrupted install.
    let mut span = Duration::ZERO;
    for i in 0..5 {
        let root = fresh_root(dir.path(), &format!("warm{i}"));
        let t = Instant::now();
        let out = install_cmd(&b, &root).output()?;
        span = span.max(t.elapsed());
        if !out.status.success() {
            return Err(format!("install failed: {}", text(&out.stderr)).into());
        }
    }
    let span_us = (span.as_micros() as u64).max(1000);
    let mut rng = Lcg(0x9e37_79b9);
    let tries = 200;
    let (mut torn, mut mixed_no_journal, mut mixed_with_journal, mut killed_mid) = (0, 0, 0, 0);
    let (mut next_failed, mut not_new, mut lost_original, mut temps) = (0, 0, 0, 0);
    let mut notes = Vec::new();
    for i in 0..tries {
        let root = fresh_root(dir.path(), &format!("root{i}"));
        let out = install_cmd(&a, &root).output()?;
        if !out.status.success() {
            return Err(format!("install A failed: {}", text(&out.stderr)).into());
        }
        let mut child = install_cmd(&b, &root).spawn()?;
        std::thread::sleep(Duration::from_micros(rng.next() % span_us));
        let _ = child.kill();
        let st = child.wait()?;
        if st.code().is_none() {
            killed_mid += 1;
        }
        let etc = root.join("etc/iptables");
        let v4 = read(&etc.join("rules.v4")).unwrap_or_default();
        let v6 = read(&etc.join("rules.v6")).unwrap_or_default();
        let whole4 = v4 == a4 || v4 == b4;
        let whole6 = v6 == a6 || v6 == b6;
        if !whole4 || !whole6 {
            torn += 1;
        } else if (v4 == b4) != (v6 == b6) {
            if root.join(JOURNAL).exists() {
                mixed_with_journal += 1;
            } else {
                mixed_no_journal += 1;
            }
        }
        // The next run.
        let out = install_cmd(&b, &root).output()?;
        if !out.status.success() {
            next_failed += 1;
            notes.push(text(&out.stderr));
        }
        if read(&etc.join("rules.v4")).as_deref() != Some(b4.as_str())
            || read(&etc.join("rules.v6")).as_deref() != Some(b6.as_str())
        {
            not_new += 1;
        }
        if read(&etc.join("rules.v4.portcullis.bak")).as_deref() != Some(ORIG_V4)
            || read(&etc.join("rules.v6.portcullis.bak")).as_deref() != Some(ORIG_V6)
        {
            lost_original += 1;
        }
        let left = leftover_temps(&root);
        if !left.is_empty() || root.join(JOURNAL).exists() {
            temps += 1;
            if notes.len() < 5 {
                notes.push(format!("left: {left:?}"));
            }
        }
        let _ = std::fs::remove_dir_all(&root);
    }
    let summary = format!(
        "{tries} tries over {span_us} us ({killed_mid} killed before exit): torn {torn}, mixed without journal {mixed_no_journal} (with journal {mixed_with_journal}), next run failed {next_failed}, next run not new {not_new}, original backup lost {lost_original}, temps or journal left {temps}"
    );
    eprintln!("sigkill installs: {summary}");
    if torn + mixed_no_journal + next_failed + not_new + lost_original + temps > 0 {
        return Err(format!("{summary}\n{}", notes.join("\n")).into());
    }
    Ok(())
}

/// Wait for `child` at most `limit`; kill it and say so if it is still running.
fn wait_limited(mut child: Child, limit: Duration) -> Result<(ExitStatus, String), String> {
    let until = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut err);
            }
            return Ok((st, err));
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("still running after {limit:?}: killed"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn portcullis_cmd(args: &[&OsStr]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_clear()
        .env("PATH", SYS_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// A FIFO and /dev/zero as `--config`, for render, install and apply (apply in
/// `unshare -n`): each refused at once with exit 2, none hangs or grows.
fn fifo_and_devices() -> Result<(), Failed> {
    let dir = scratch();
    let fifo = dir.path().join("policy.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    let root = fresh_root(dir.path(), "root");
    let state = dir.path().join("state");
    let mut failures = Vec::new();
    let mut tries = 0;
    for input in [fifo.as_os_str(), OsStr::new("/dev/zero")] {
        let verbs: Vec<Vec<&OsStr>> = vec![
            vec!["render".as_ref(), "--config".as_ref(), input],
            vec![
                "install".as_ref(),
                "--config".as_ref(),
                input,
                "--root".as_ref(),
                root.as_os_str(),
                "--no-test".as_ref(),
            ],
        ];
        for args in verbs {
            tries += 1;
            // An address-space limit turns "grows until the OOM killer" into a
            // quick allocation failure on a build that reads without a cap.
            let mut c = Command::new(tool("prlimit"));
            c.arg("--as=1073741824").arg("--").arg(BIN).args(&args);
            c.env_clear()
                .env("PATH", SYS_PATH)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            judge(c, &args, &mut failures)?;
        }
        tries += 1;
        let mut c = Command::new(tool("unshare"));
        c.args(["-n", "--"]).arg(BIN).args([
            OsStr::new("apply"),
            "--config".as_ref(),
            input,
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--backend".as_ref(),
            "nft".as_ref(),
            "--no-persist".as_ref(),
            "--timeout".as_ref(),
            "1".as_ref(),
        ]);
        c.env_clear()
            .env("PATH", SYS_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        judge(c, &[OsStr::new("apply"), input], &mut failures)?;
    }
    let etc = root.join("etc/iptables");
    if read(&etc.join("rules.v4")).as_deref() != Some(ORIG_V4) {
        failures.push("install replaced rules.v4".into());
    }
    eprintln!("fifo and devices: {tries} tries, {} failed", failures.len());
    if !failures.is_empty() {
        return Err(failures.join("\n").into());
    }
    Ok(())
}

fn judge(c: Command, args: &[&OsStr], failures: &mut Vec<String>) -> Result<(), Failed> {
    let mut c = c;
    let child = c.spawn()?;
    match wait_limited(child, Duration::from_secs(10)) {
        Err(e) => failures.push(format!("{args:?}: {e}")),
        Ok((st, err)) => {
            if st.code() != Some(2) || !err.contains("not a regular file") {
                failures.push(format!("{args:?}: {st}: {}", err.trim()));
            }
        }
    }
    Ok(())
}

/// A 5 MiB policy (comments) is refused with exit 2, naming the cap.
fn oversized_policy() -> Result<(), Failed> {
    let dir = scratch();
    let big = dir.path().join("big.toml");
    let mut text_ = POLICY.to_owned();
    let line = "# a comment line padding the file to many megabytes.........\n";
    while text_.len() < 5 * 1024 * 1024 {
        text_.push_str(line);
    }
    std::fs::write(&big, &text_)?;
    let out =
        portcullis_cmd(&["render".as_ref(), "--config".as_ref(), big.as_os_str()]).output()?;
    let err = text(&out.stderr);
    if out.status.code() != Some(2) || !err.contains("larger than") {
        return Err(format!("a 5 MiB policy: {}: {err}", out.status).into());
    }
    Ok(())
}

/// A group- or world-writable config: render warns; install and apply refuse
/// unless `--force`.
fn writable_config() -> Result<(), Failed> {
    let dir = scratch();
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, POLICY)?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))?;
    let root = fresh_root(dir.path(), "root");
    let mut failures = Vec::new();
    let out = portcullis_cmd(&["render".as_ref(), "--config".as_ref(), p.as_os_str()]).output()?;
    let err = text(&out.stderr);
    if !out.status.success() || !err.contains("writable by other users") {
        failures.push(format!("render: {}: {err}", out.status));
    }
    let install = |force: bool| {
        let mut args: Vec<&OsStr> = vec![
            "install".as_ref(),
            "--config".as_ref(),
            p.as_os_str(),
            "--root".as_ref(),
            root.as_os_str(),
            "--persistence".as_ref(),
            "netfilter-persistent".as_ref(),
            "--no-test".as_ref(),
            "--enable".as_ref(),
        ];
        if force {
            args.push("--force".as_ref());
        }
        portcullis_cmd(&args).output()
    };
    let out = install(false)?;
    let err = text(&out.stderr);
    let etc = root.join("etc/iptables");
    if out.status.code() != Some(2)
        || !err.contains("writable by other users")
        || read(&etc.join("rules.v4")).as_deref() != Some(ORIG_V4)
    {
        failures.push(format!("install without --force: {}: {err}", out.status));
    }
    let out = install(true)?;
    if !out.status.success() || read(&etc.join("rules.v4")).as_deref() == Some(ORIG_V4) {
        failures.push(format!(
            "install --force: {}: {}",
            out.status,
            text(&out.stderr)
        ));
    }
    let state = dir.path().join("state");
    let out = Command::new(tool("unshare"))
        .args(["-n", "--"])
        .arg(BIN)
        .args([
            OsStr::new("apply"),
            "--config".as_ref(),
            p.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--backend".as_ref(),
            "nft".as_ref(),
            "--no-persist".as_ref(),
            "--timeout".as_ref(),
            "1".as_ref(),
        ])
        .env_clear()
        .env("PATH", SYS_PATH)
        .stdin(Stdio::null())
        .output()?;
    let err = text(&out.stderr);
    if out.status.code() != Some(2) || !err.contains("writable by other users") {
        failures.push(format!("apply without --force: {}: {err}", out.status));
    }
    if !failures.is_empty() {
        return Err(failures.join("\n").into());
    }
    Ok(())
}

/// A state dir holding a file mode 0666: apply refuses unless `--force`.
fn writable_state() -> Result<(), Failed> {
    let dir = scratch();
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, POLICY)?;
    let state = dir.path().join("state");
    std::fs::create_dir(&state)?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;
    let planted = state.join("guard.log");
    std::fs::write(&planted, "")?;
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666))?;
    let apply = |force: bool| {
        let mut c = Command::new(tool("unshare"));
        c.args(["-n", "--"]).arg(BIN).args([
            OsStr::new("apply"),
            "--config".as_ref(),
            p.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--backend".as_ref(),
            "nft".as_ref(),
            "--no-persist".as_ref(),
            "--timeout".as_ref(),
            "1".as_ref(),
        ]);
        if force {
            c.arg("--force");
        }
        c.env_clear()
            .env("PATH", SYS_PATH)
            .stdin(Stdio::null())
            .output()
    };
    let out = apply(false)?;
    let err = text(&out.stderr);
    if out.status.code() != Some(2)
        || !err.contains("writable by other users")
        || state.join("snapshot.v4").exists()
    {
        return Err(format!("apply without --force: {}: {err}", out.status).into());
    }
    let out = apply(true)?;
    let err = text(&out.stderr);
    if out.status.code() != Some(1) || !err.contains("ROLLED BACK") {
        return Err(format!("apply --force: {}: {err}", out.status).into());
    }
    Ok(())
}

/// Scripts named like every iptables binary that leave a mark when run.
fn lookalikes(dir: &Path, mark: &Path) -> Result<(), Failed> {
    std::fs::create_dir_all(dir)?;
    let mut names = vec!["iptables".to_owned(), "ip6tables".to_owned()];
    for b in ["nft", "legacy"] {
        for f in ["iptables", "ip6tables"] {
            for s in ["", "-restore", "-save"] {
                names.push(format!("{f}-{b}{s}"));
            }
        }
    }
    names.extend(["iptables-restore", "ip6tables-restore", "unshare"].map(String::from));
    for n in names {
        let p = dir.join(&n);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"$0 $*\" >> '{}'\necho 'iptables v1.8.9 (nf_tables)'\nexit 0\n",
                mark.display()
            ),
        )?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    // Writable by others: anyone could have put these here.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
    Ok(())
}

/// PATH starts with a world-writable directory of look-alike scripts: apply
/// (auto backend, in `unshare -n`) and install must run none of them.
fn lookalikes_never_run() -> Result<(), Failed> {
    let dir = scratch();
    let evil = dir.path().join("evil");
    let mark = dir.path().join("ran");
    lookalikes(&evil, &mark)?;
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, POLICY)?;
    let root = fresh_root(dir.path(), "root");
    let state = dir.path().join("state");
    let path = format!("{}:{SYS_PATH}", evil.display());
    let mut failures = Vec::new();
    let apply = Command::new(tool("unshare"))
        .args(["-n", "--"])
        .arg(BIN)
        .args([
            OsStr::new("apply"),
            "--config".as_ref(),
            p.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--no-persist".as_ref(),
            "--timeout".as_ref(),
            "1".as_ref(),
        ])
        .env_clear()
        .env("PATH", &path)
        .stdin(Stdio::null())
        .output()?;
    let apply_err = text(&apply.stderr);
    let install = Command::new(BIN)
        .arg("install")
        .arg("--config")
        .arg(&p)
        .arg("--root")
        .arg(&root)
        .args([
            "--persistence",
            "netfilter-persistent",
            "--backend",
            "nft",
            "--enable",
        ])
        .env_clear()
        .env("PATH", &path)
        .stdin(Stdio::null())
        .output()?;
    let install_err = text(&install.stderr);
    if let Some(ran) = read(&mark) {
        failures.push(format!("look-alikes ran as root:\n{ran}"));
    }
    for (what, err) in [("apply", &apply_err), ("install", &install_err)] {
        if !err.contains(&evil.display().to_string()) {
            failures.push(format!("{what} does not name the unsafe directory: {err}"));
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("\n").into());
    }
    Ok(())
}

/// A root-owned, trusted wrapper directory first on PATH: apply records the
/// wrappers' paths, and the guard (whose own PATH is the system one) rolls back
/// through them, proving it runs what was recorded.
fn guard_uses_recorded() -> Result<(), Failed> {
    let dir = scratch();
    let wrap = dir.path().join("wrap");
    std::fs::create_dir(&wrap)?;
    let log = dir.path().join("wrap.log");
    for f in ["iptables", "ip6tables"] {
        for s in ["-restore", "-save"] {
            let name = format!("{f}-nft{s}");
            let real = portcullis_harness::backend::find_in_path(&name)
                .ok_or(format!("{name} missing"))?;
            let p = wrap.join(&name);
            std::fs::write(
                &p,
                format!(
                    "#!/bin/sh\necho \"$PPID $(basename \"$0\")\" >> '{}'\nexec '{}' \"$@\"\n",
                    log.display(),
                    real.display()
                ),
            )?;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, POLICY)?;
    let state = dir.path().join("state");
    let out = Command::new(tool("unshare"))
        .args(["-n", "--"])
        .arg(BIN)
        .args([
            OsStr::new("apply"),
            "--config".as_ref(),
            p.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--backend".as_ref(),
            "nft".as_ref(),
            "--no-persist".as_ref(),
            "--timeout".as_ref(),
            "1".as_ref(),
        ])
        .env_clear()
        .env("PATH", format!("{}:{SYS_PATH}", wrap.display()))
        .stdin(Stdio::null())
        .output()?;
    let err = text(&out.stderr);
    if out.status.code() != Some(1) || !err.contains("ROLLED BACK") {
        return Err(format!("apply did not roll back: {}: {err}", out.status).into());
    }
    let last: serde_json::Value = serde_json::from_str(
        &read(&state.join("last.json")).ok_or("no last.json after the rollback")?,
    )?;
    let guard = last["guard_pid"].as_i64().ok_or("no guard pid")?;
    let recorded = last["binaries"].to_string();
    if !recorded.contains(&wrap.join("iptables-nft-restore").display().to_string()) {
        return Err(format!("the record does not name the wrappers: {recorded}").into());
    }
    let log = read(&log).unwrap_or_default();
    if !log
        .lines()
        .any(|l| l == format!("{guard} iptables-nft-restore"))
    {
        return Err(
            format!("the guard (pid {guard}) did not run the recorded restore:\n{log}").into(),
        );
    }
    Ok(())
}

/// `unshare -n -p -f --mount-proc`: a network and a PID namespace, so the process
/// tree above portcullis is only what the trial built.
fn isolated(args: &[&OsStr]) -> Command {
    let mut c = Command::new(tool("unshare"));
    c.args(["-n", "-p", "-f", "--mount-proc", "--"]).args(args);
    c
}

/// Under `su -` (here: a shell holding an outside client's SSH_CONNECTION runs
/// `env -i ... portcullis apply`): still refused, naming the client and the
/// ancestor; a shell holding an admitted client's session applies.
fn ancestor_session() -> Result<(), Failed> {
    let dir = scratch();
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, POLICY)?;
    let state = dir.path().join("state");
    let run = |ssh: &str| -> Result<(ExitStatus, String), Failed> {
        let out = isolated(&[
            "sh".as_ref(),
            "-c".as_ref(),
            // `; exit` keeps the shell alive as portcullis's parent.
            "env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \"$@\"; exit $?".as_ref(),
            "sh".as_ref(),
            BIN.as_ref(),
            "apply".as_ref(),
            "--config".as_ref(),
            p.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--backend".as_ref(),
            "nft".as_ref(),
            "--no-persist".as_ref(),
            "--timeout".as_ref(),
            "1".as_ref(),
        ])
        .env_clear()
        .env("PATH", SYS_PATH)
        .env("SSH_CONNECTION", ssh)
        .stdin(Stdio::null())
        .output()?;
        Ok((out.status, text(&out.stderr)))
    };
    let (st, err) = run("198.51.100.7 50022 192.0.2.1 22")?;
    if st.code() != Some(2) || !err.contains("198.51.100.7") || !err.contains("ancestor") {
        return Err(format!("an outside client under env -i: {st}: {err}").into());
    }
    if state.join("snapshot.v4").exists() {
        return Err("the refused apply took a snapshot".into());
    }
    let (st, err) = run("192.0.2.10 50022 192.0.2.1 22")?;
    if st.code() != Some(1) || !err.contains("ROLLED BACK") {
        return Err(format!("an admitted client under env -i: {st}: {err}").into());
    }
    let last = read(&state.join("last.json")).unwrap_or_default();
    if !last.contains("192.0.2.10 50022 192.0.2.1 22") {
        return Err(format!("the record does not hold the ancestor's session: {last}").into());
    }
    Ok(())
}

/// No session anywhere in the process tree, stdin a pseudo-terminal: refused,
/// naming `--i-am-on-the-console`; with it, applied (and rolled back here).
fn tty_without_session() -> Result<(), Failed> {
    let dir = scratch();
    let p = dir.path().join("policy.toml");
    std::fs::write(&p, POLICY)?;
    let state = dir.path().join("state");
    let run = |extra: Option<&str>| -> Result<(ExitStatus, String), Failed> {
        let pty = nix::pty::openpty(None, None)?;
        let mut args: Vec<&OsStr> = vec![
            BIN.as_ref(),
            "apply".as_ref(),
            "--config".as_ref(),
            p.as_os_str(),
            "--state-dir".as_ref(),
            state.as_os_str(),
            "--backend".as_ref(),
            "nft".as_ref(),
            "--no-persist".as_ref(),
            "--timeout".as_ref(),
            "1".as_ref(),
        ];
        if let Some(e) = extra {
            args.push(e.as_ref());
        }
        let out = isolated(&args)
            .env_clear()
            .env("PATH", SYS_PATH)
            .stdin(Stdio::from(std::fs::File::from(pty.slave)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()?;
        drop(pty.master);
        Ok((out.status, text(&out.stderr)))
    };
    let (st, err) = run(None)?;
    if st.code() != Some(2) || !err.contains("--i-am-on-the-console") {
        return Err(format!("a terminal without a session: {st}: {err}").into());
    }
    let (st, err) = run(Some("--i-am-on-the-console"))?;
    if st.code() != Some(1) || !err.contains("ROLLED BACK") {
        return Err(format!("with --i-am-on-the-console: {st}: {err}").into());
    }
    Ok(())
}

/// The libraries `BIN` loads, from ldd.
fn libraries() -> Result<Vec<PathBuf>, Failed> {
    let out = Command::new("ldd").arg(BIN).output()?;
    Ok(text(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split("=> ").nth(1).unwrap_or(l);
            let path = path.split(' ').next()?;
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// `install --root /` inside a chroot whose / is a scratch directory (this
/// host's / is never the target): an outside client is refused before a file
/// is written, an admitted one installs.
fn install_live_root() -> Result<(), Failed> {
    let dir = scratch();
    let croot = dir.path().join("chroot");
    std::fs::create_dir(&croot)?;
    std::fs::set_permissions(&croot, std::fs::Permissions::from_mode(0o755))?;
    for lib in libraries()? {
        let dst = croot.join(lib.strip_prefix("/")?);
        std::fs::create_dir_all(dst.parent().unwrap())?;
        std::fs::copy(&lib, &dst)?;
    }
    if std::fs::hard_link(BIN, croot.join("portcullis")).is_err() {
        std::fs::copy(BIN, croot.join("portcullis"))?;
    }
    std::fs::create_dir_all(croot.join("etc/iptables"))?;
    add_loader_unit(&croot);
    std::fs::write(croot.join("policy.toml"), POLICY)?;
    let run = |ssh: &str| {
        Command::new(tool("chroot"))
            .arg(&croot)
            .args([
                "/portcullis",
                "install",
                "--config",
                "/policy.toml",
                "--root",
                "/",
                "--persistence",
                "netfilter-persistent",
                "--no-test",
                "--enable",
            ])
            .env_clear()
            .env("SSH_CONNECTION", ssh)
            .stdin(Stdio::null())
            .output()
    };
    let out = run("198.51.100.7 50022 192.0.2.1 22")?;
    let err = text(&out.stderr);
    let v4 = croot.join("etc/iptables/rules.v4");
    if out.status.code() != Some(2) || !err.contains("198.51.100.7") || v4.exists() {
        return Err(format!(
            "install --root / for an outside client: {} (rules.v4 written: {}): {err}",
            out.status,
            v4.exists()
        )
        .into());
    }
    let out = run("192.0.2.10 50022 192.0.2.1 22")?;
    if !out.status.success() || !v4.exists() {
        return Err(format!(
            "install --root / for an admitted client: {}: {}",
            out.status,
            text(&out.stderr)
        )
        .into());
    }
    Ok(())
}

/// Real sshd on 127.0.0.1 in a private network and PID namespace; the remote
/// command is `exec env -i portcullis apply`, so no process above portcullis
/// holds SSH_CONNECTION: only the sshd ancestor's socket tells the session.
/// sshd binds before it daemonizes, so it listens once its command returns.
const SSHD_SCRIPT: &str = r#"
ip link set lo up
/usr/sbin/sshd -f "$1/sshd_config"
ssh -F /dev/null -i "$1/client_key" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -T root@127.0.0.1 -- \
    exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$2" apply --config "$1/policy.toml" \
    --state-dir "$1/state" --backend nft --no-persist --timeout 1
echo "rc=$?"
"#;

fn sshd_ancestor_socket() -> Result<(), Failed> {
    let dir = scratch();
    let d = dir.path();
    for key in ["host_key", "client_key"] {
        let st = Command::new(tool("ssh-keygen"))
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join(key))
            .stdin(Stdio::null())
            .status()?;
        if !st.success() {
            return Err(format!("ssh-keygen: {st}").into());
        }
    }
    std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))?;
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "Port 22\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             UsePAM no\nStrictModes no\nPidFile none\n",
            d = d.display()
        ),
    )?;
    // The policy admits only 192.0.2.0/24; the session comes from 127.0.0.1.
    std::fs::write(d.join("policy.toml"), POLICY)?;
    let out = isolated(&[
        "sh".as_ref(),
        "-c".as_ref(),
        SSHD_SCRIPT.as_ref(),
        "sh".as_ref(),
        d.as_os_str(),
        BIN.as_ref(),
    ])
    .env_clear()
    .env("PATH", SYS_PATH)
    .stdin(Stdio::null())
    .output()?;
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    if !stdout.contains("rc=2") || !err.contains("127.0.0.1") || !err.contains("sshd ancestor") {
        return Err(format!("apply under env -i over real ssh: {stdout}{err}").into());
    }
    if d.join("state/snapshot.v4").exists() {
        return Err("the refused apply took a snapshot".into());
    }
    Ok(())
}
