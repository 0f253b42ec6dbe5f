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
//! Everything runs in scratch directories under the target dir (apply's state
//! dirs in private root-only ones under /run, `support::private_dir`) and, where
//! rules are loaded, in `unshare -n` (and a PID namespace where the process tree
//! matters), never on this host's /etc or tables.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use libtest_mimic::{Failed, Trial};

use crate::persist::{POLICY, expect_exit, leftover_temps, policy_file, scratch, text};
use crate::support::{BIN, ensure, openssh_missing, private_dir};
use portcullis_harness::trial::privileged;

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
            openssh_missing(),
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

/// `program` with a clean environment (PATH the system's), no stdin, no stdout
/// and stderr piped.
fn clean(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env_clear()
        .env("PATH", SYS_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// `portcullis ARGS`, [`clean`].
fn portcullis_cmd(args: &[&OsStr]) -> Command {
    let mut c = clean(BIN);
    c.args(args);
    c
}

/// `portcullis render --config CONFIG`.
fn render_cmd(config: &Path) -> Command {
    portcullis_cmd(&["render".as_ref(), "--config".as_ref(), config.as_os_str()])
}

/// `install --config P --root R --persistence netfilter-persistent EXTRA`.
fn install_with(policy: &Path, root: &Path, extra: &[&str]) -> Command {
    let mut c = clean(BIN);
    c.arg("install")
        .arg("--config")
        .arg(policy)
        .arg("--root")
        .arg(root)
        .args(["--persistence", "netfilter-persistent"])
        .args(extra);
    c
}

/// The offline install of a scratch root: `--no-test --enable`.
fn install_cmd(policy: &Path, root: &Path) -> Command {
    install_with(policy, root, &["--no-test", "--enable"])
}

/// A state dir for apply, in a private root-only dir under /run
/// (`support::private_dir`): apply refuses one below a dir root does not own,
/// as the target dir is when CI builds as a user.
fn state_dir() -> Result<(tempfile::TempDir, PathBuf), Failed> {
    let dir = private_dir("reliability-install")?;
    let state = dir.path().join("state");
    Ok((dir, state))
}

/// `portcullis apply --config CONFIG --state-dir STATE [--backend BACKEND]
/// --no-persist --timeout 1`, the binary first: a rollback a second after the
/// rules went live.
fn apply_args<'a>(config: &'a OsStr, state: &'a Path, backend: Option<&'a str>) -> Vec<&'a OsStr> {
    let mut args: Vec<&OsStr> = vec![
        BIN.as_ref(),
        "apply".as_ref(),
        "--config".as_ref(),
        config,
        "--state-dir".as_ref(),
        state.as_os_str(),
    ];
    if let Some(b) = backend {
        args.extend(["--backend", b].map(OsStr::new));
    }
    args.extend(["--no-persist", "--timeout", "1"].map(OsStr::new));
    args
}

/// Wait until the guard of the apply that used `state` has exited (its lock
/// released): its last act is moving the record to last.json, and apply's own
/// exit does not wait for that.
fn guard_exited(state: &Path) -> Result<(), Failed> {
    let dir = portcullis::apply::StateDir::open(state)?;
    let gone = portcullis::apply::guard::wait_for_exit(&dir, Duration::from_secs(10))?;
    ensure(gone, || {
        "the guard still runs 10 s after apply exited".into()
    })
}

/// [`apply_args`] in `unshare -n`, [`clean`].
fn apply_cmd(config: &OsStr, state: &Path, backend: Option<&str>) -> Command {
    let mut c = clean(tool("unshare"));
    c.args(["-n", "--"])
        .args(apply_args(config, state, backend));
    c
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// The install trials' scratch dir, policies A (POLICY) and B ([`policy_b`])
/// in it, and what each renders to.
struct AB {
    dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    a_pair: (String, String),
    b_pair: (String, String),
}

impl AB {
    fn new() -> Result<AB, Failed> {
        let dir = scratch();
        let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.toml"));
        std::fs::write(&a, POLICY)?;
        std::fs::write(&b, policy_b())?;
        let (a_pair, b_pair) = (rendered(POLICY), rendered(&policy_b()));
        Ok(AB {
            dir,
            a,
            b,
            a_pair,
            b_pair,
        })
    }
}

/// rules.v4 and rules.v6 in `root`, empty where missing.
fn rules_pair(root: &Path) -> (String, String) {
    let etc = root.join("etc/iptables");
    (
        read(&etc.join("rules.v4")).unwrap_or_default(),
        read(&etc.join("rules.v6")).unwrap_or_default(),
    )
}

/// Whether the backups in `root` still hold the distro's own rules.
fn original_kept(root: &Path) -> bool {
    let etc = root.join("etc/iptables");
    read(&etc.join("rules.v4.portcullis.bak")).as_deref() == Some(ORIG_V4)
        && read(&etc.join("rules.v6.portcullis.bak")).as_deref() == Some(ORIG_V6)
}

/// Two installs of different policies on one root at once, 20 times.
fn concurrent_installs() -> Result<(), Failed> {
    let ab = AB::new()?;
    let tries = 20;
    let (mut failed_exit, mut lost_original, mut mixed, mut temps) = (0, 0, 0, 0);
    let mut notes = Vec::new();
    for i in 0..tries {
        let root = fresh_root(ab.dir.path(), &format!("root{i}"));
        let c1 = install_cmd(&ab.a, &root).spawn()?;
        let c2 = install_cmd(&ab.b, &root).spawn()?;
        for c in [c1, c2] {
            let out = c.wait_with_output()?;
            if !out.status.success() {
                failed_exit += 1;
                notes.push(text(&out.stderr));
            }
        }
        if !original_kept(&root) {
            lost_original += 1;
        }
        let pair = rules_pair(&root);
        if pair != ab.a_pair && pair != ab.b_pair {
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
    let ab = AB::new()?;
    ensure(
        ab.a_pair.0 != ab.b_pair.0 && ab.a_pair.1 != ab.b_pair.1,
        || "policy B must change both families".into(),
    )?;
    // The kill moments spread over the whole run of an uninterrupted install.
    let mut span = Duration::ZERO;
    for i in 0..5 {
        let root = fresh_root(ab.dir.path(), &format!("warm{i}"));
        let t = Instant::now();
        let out = install_cmd(&ab.b, &root).output()?;
        span = span.max(t.elapsed());
        expect_exit(&out, 0, &[], "from install B")?;
    }
    let span_us = (span.as_micros() as u64).max(1000);
    let mut rng = Lcg(0x9e37_79b9);
    let tries = 200;
    let (mut torn, mut mixed_no_journal, mut mixed_with_journal, mut killed_mid) = (0, 0, 0, 0);
    let (mut next_failed, mut not_new, mut lost_original, mut temps) = (0, 0, 0, 0);
    let mut notes = Vec::new();
    for i in 0..tries {
        let root = fresh_root(ab.dir.path(), &format!("root{i}"));
        let out = install_cmd(&ab.a, &root).output()?;
        expect_exit(&out, 0, &[], "from install A")?;
        let mut child = install_cmd(&ab.b, &root).spawn()?;
        std::thread::sleep(Duration::from_micros(rng.next() % span_us));
        let _ = child.kill();
        let st = child.wait()?;
        if st.code().is_none() {
            killed_mid += 1;
        }
        let (v4, v6) = rules_pair(&root);
        let whole4 = v4 == ab.a_pair.0 || v4 == ab.b_pair.0;
        let whole6 = v6 == ab.a_pair.1 || v6 == ab.b_pair.1;
        if !whole4 || !whole6 {
            torn += 1;
        } else if (v4 == ab.b_pair.0) != (v6 == ab.b_pair.1) {
            if root.join(JOURNAL).exists() {
                mixed_with_journal += 1;
            } else {
                mixed_no_journal += 1;
            }
        }
        // The next run.
        let out = install_cmd(&ab.b, &root).output()?;
        if !out.status.success() {
            next_failed += 1;
            notes.push(text(&out.stderr));
        }
        if rules_pair(&root) != ab.b_pair {
            not_new += 1;
        }
        if !original_kept(&root) {
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
    // Installs that all finished before their kill would prove nothing above.
    ensure(killed_mid >= tries / 20, || {
        format!("too few installs were killed before they exited: {summary}")
    })
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

/// A FIFO and /dev/zero as `--config`, for render, install and apply (apply in
/// `unshare -n`): each refused at once with exit 2, none hangs or grows.
fn fifo_and_devices() -> Result<(), Failed> {
    let dir = scratch();
    let fifo = dir.path().join("policy.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    let root = fresh_root(dir.path(), "root");
    let (_state_dir, state) = state_dir()?;
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
            let mut c = clean(tool("prlimit"));
            c.arg("--as=1073741824").arg("--").arg(BIN).args(&args);
            judge(c, &args, &mut failures)?;
        }
        tries += 1;
        let c = apply_cmd(input, &state, Some("nft"));
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

fn judge(mut c: Command, args: &[&OsStr], failures: &mut Vec<String>) -> Result<(), Failed> {
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
    let out = render_cmd(&big).output()?;
    expect_exit(&out, 2, &["larger than"], "for a 5 MiB policy")?;
    Ok(())
}

/// A group- or world-writable config: render warns; install and apply refuse
/// unless `--force`.
fn writable_config() -> Result<(), Failed> {
    let dir = scratch();
    let p = policy_file(dir.path(), POLICY);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))?;
    let root = fresh_root(dir.path(), "root");
    let v4 = root.join("etc/iptables/rules.v4");
    let (_state_dir, state) = state_dir()?;
    let says = &["writable by other users"];
    let mut failures = Vec::new();
    failures.extend(expect_exit(&render_cmd(&p).output()?, 0, says, "from render").err());
    let out = install_cmd(&p, &root).output()?;
    failures.extend(expect_exit(&out, 2, says, "from install without --force").err());
    if read(&v4).as_deref() != Some(ORIG_V4) {
        failures.push("install without --force replaced rules.v4".into());
    }
    let out = install_with(&p, &root, &["--no-test", "--enable", "--force"]).output()?;
    failures.extend(expect_exit(&out, 0, &[], "from install --force").err());
    if read(&v4).as_deref() == Some(ORIG_V4) {
        failures.push("install --force did not replace rules.v4".into());
    }
    let out = apply_cmd(p.as_os_str(), &state, Some("nft")).output()?;
    failures.extend(expect_exit(&out, 2, says, "from apply without --force").err());
    ensure(failures.is_empty(), || failures.join("\n"))
}

/// A state dir holding a file mode 0666: apply refuses unless `--force`.
fn writable_state() -> Result<(), Failed> {
    let dir = scratch();
    let p = policy_file(dir.path(), POLICY);
    let (_state_dir, state) = state_dir()?;
    std::fs::create_dir(&state)?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;
    let planted = state.join("guard.log");
    std::fs::write(&planted, "")?;
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666))?;
    let apply = || apply_cmd(p.as_os_str(), &state, Some("nft"));
    let out = apply().output()?;
    expect_exit(
        &out,
        2,
        &["writable by other users"],
        "from apply without --force",
    )?;
    ensure(!state.join("snapshot.v4").exists(), || {
        "apply without --force took a snapshot".into()
    })?;
    let out = apply().arg("--force").output()?;
    expect_exit(&out, 1, &["ROLLED BACK"], "from apply --force")?;
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
    let p = policy_file(dir.path(), POLICY);
    let root = fresh_root(dir.path(), "root");
    let (_state_dir, state) = state_dir()?;
    let path = format!("{}:{SYS_PATH}", evil.display());
    let mut failures = Vec::new();
    let apply = apply_cmd(p.as_os_str(), &state, None)
        .env("PATH", &path)
        .output()?;
    let apply_err = text(&apply.stderr);
    let install = install_with(&p, &root, &["--backend", "nft", "--enable"])
        .env("PATH", &path)
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
    ensure(failures.is_empty(), || failures.join("\n"))
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
    let p = policy_file(dir.path(), POLICY);
    let (_state_dir, state) = state_dir()?;
    let out = apply_cmd(p.as_os_str(), &state, Some("nft"))
        .env("PATH", format!("{}:{SYS_PATH}", wrap.display()))
        .output()?;
    expect_exit(&out, 1, &["ROLLED BACK"], "from apply (a rollback)")?;
    guard_exited(&state)?;
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
/// [`clean`].
fn isolated(args: &[&OsStr]) -> Command {
    let mut c = clean(tool("unshare"));
    c.args(["-n", "-p", "-f", "--mount-proc", "--"]).args(args);
    c
}

/// Under `su -` (here: a shell holding an outside client's SSH_CONNECTION runs
/// `env -i ... portcullis apply`): still refused, naming the client and the
/// ancestor; a shell holding an admitted client's session applies.
fn ancestor_session() -> Result<(), Failed> {
    let dir = scratch();
    let p = policy_file(dir.path(), POLICY);
    let (_state_dir, state) = state_dir()?;
    let run = |ssh: &str| -> Result<Output, Failed> {
        let mut args: Vec<&OsStr> = vec![
            "sh".as_ref(),
            "-c".as_ref(),
            // `; exit` keeps the shell alive as portcullis's parent.
            "env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \"$@\"; exit $?".as_ref(),
            "sh".as_ref(),
        ];
        args.extend(apply_args(p.as_os_str(), &state, Some("nft")));
        Ok(isolated(&args).env("SSH_CONNECTION", ssh).output()?)
    };
    let out = run("198.51.100.7 50022 192.0.2.1 22")?;
    expect_exit(
        &out,
        2,
        &["198.51.100.7", "ancestor"],
        "for an outside client under env -i",
    )?;
    ensure(!state.join("snapshot.v4").exists(), || {
        "the refused apply took a snapshot".into()
    })?;
    let out = run("192.0.2.10 50022 192.0.2.1 22")?;
    expect_exit(
        &out,
        1,
        &["ROLLED BACK"],
        "for an admitted client under env -i",
    )?;
    guard_exited(&state)?;
    // The guard writes the finished record into pending.json, then renames it
    // to last.json; the namespace's end (its PID 1 is the shell) may kill the
    // guard between the two, which leaves the record in pending.json.
    let last = read(&state.join("last.json"))
        .or_else(|| read(&state.join("pending.json")))
        .unwrap_or_default();
    ensure(last.contains("192.0.2.10 50022 192.0.2.1 22"), || {
        format!("the record does not hold the ancestor's session: {last}")
    })
}

/// No session anywhere in the process tree, stdin a pseudo-terminal: refused,
/// naming `--i-am-on-the-console`; with it, applied (and rolled back here).
fn tty_without_session() -> Result<(), Failed> {
    let dir = scratch();
    let p = policy_file(dir.path(), POLICY);
    let (_state_dir, state) = state_dir()?;
    let run = |extra: &[&str]| -> Result<Output, Failed> {
        let pty = nix::pty::openpty(None, None)?;
        let mut args = apply_args(p.as_os_str(), &state, Some("nft"));
        args.extend(extra.iter().map(OsStr::new));
        let out = isolated(&args)
            .stdin(Stdio::from(std::fs::File::from(pty.slave)))
            .output()?;
        drop(pty.master);
        Ok(out)
    };
    let console = "--i-am-on-the-console";
    expect_exit(
        &run(&[])?,
        2,
        &[console],
        "for a terminal without a session",
    )?;
    expect_exit(
        &run(&[console])?,
        1,
        &["ROLLED BACK"],
        "with --i-am-on-the-console",
    )?;
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
        // No PATH at all: the chroot holds no tools to find.
        clean(tool("chroot"))
            .env_remove("PATH")
            .arg(&croot)
            .args(["/portcullis", "install", "--config", "/policy.toml"])
            .args(["--root", "/", "--persistence", "netfilter-persistent"])
            .args(["--no-test", "--enable"])
            .env("SSH_CONNECTION", ssh)
            .output()
    };
    let v4 = croot.join("etc/iptables/rules.v4");
    let out = run("198.51.100.7 50022 192.0.2.1 22")?;
    expect_exit(
        &out,
        2,
        &["198.51.100.7"],
        "from install --root / for an outside client",
    )?;
    ensure(!v4.exists(), || {
        "install --root / for an outside client wrote rules.v4".into()
    })?;
    let out = run("192.0.2.10 50022 192.0.2.1 22")?;
    expect_exit(&out, 0, &[], "from install --root / for an admitted client")?;
    ensure(v4.exists(), || {
        "install --root / for an admitted client wrote no rules.v4".into()
    })
}

/// Real sshd on 127.0.0.1 in a private network and PID namespace; the remote
/// command is `exec env -i portcullis apply`, so no process above portcullis
/// holds SSH_CONNECTION: only the sshd ancestor's socket tells the session.
/// sshd daemonizes before it binds, so the script waits (at most 10 s) until
/// the namespace's /proc/net/tcp lists 127.0.0.1:22 listening.
const SSHD_SCRIPT: &str = r#"
ip link set lo up
/usr/sbin/sshd -f "$1/sshd_config"
i=0
until grep -q '0100007F:0016 00000000:0000 0A' /proc/net/tcp; do
  i=$((i + 1)); [ "$i" -gt 1000 ] && break; sleep 0.01
done
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
    policy_file(d, POLICY);
    let out = isolated(&[
        "sh".as_ref(),
        "-c".as_ref(),
        SSHD_SCRIPT.as_ref(),
        "sh".as_ref(),
        d.as_os_str(),
        BIN.as_ref(),
    ])
    .stdout(Stdio::piped())
    .output()?;
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    ensure(
        stdout.contains("rc=2") && err.contains("127.0.0.1") && err.contains("sshd ancestor"),
        || format!("apply under env -i over real ssh: {stdout}{err}"),
    )?;
    ensure(!d.join("state/snapshot.v4").exists(), || {
        "the refused apply took a snapshot".into()
    })
}
