//! `verify --root`: prove an image. Detect the root's mechanism, build the lab
//! under the root's backend, and in the lab's `target` run the root's OWN boot
//! loader (a unit's `ExecStartPre=`/`ExecStart=`, the OpenRC script's `start`, or
//! rc.local), chrooted into a throwaway overlay of the root, in a private mount
//! namespace with its own /proc, /dev and /run. Then probe the policy's promises
//! exactly as `verify` does.
//!
//! The boot runs in a child: `unshare --mount --propagation private` (entered into
//! the target's network namespace by the harness between fork and exec) runs
//! `portcullis __boot`, which reads a [`BootPlan`] on stdin, mounts a tmpfs, the
//! overlay (the root as its read-only lower layer) and the pseudo filesystems,
//! chroots, replaces the rules files in the overlay by their lab-mapped text
//! (the policy's real CIDRs cannot exist in the lab; the mapping is printed),
//! runs each loader's commands and prints a [`BootOutcome`] as JSON. Every mount
//! belongs to that private namespace and dies with the child; nothing is mounted
//! on the machine's own /proc, /dev or /run, and the root itself is never written.
//!
//! A policy with ipsets runs the ipset loader first where it is a service of its
//! own (ipset.service, OpenRC `ipset`); the image's sets file is replaced in the
//! overlay by the lab's sets, as the rules files are by their mapped text.
//!
//! It fails (the report says which) when a loader is missing or not enabled, when
//! a sets file or the ipset binary the rules need is missing, when
//! it errors, when it loads nothing, when it fails open (exits 0 with a rules file
//! present that it did not load, as netfilter-persistent does on a broken file),
//! or when the rules behave otherwise than the policy.

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use portcullis_harness::{Backend, CounterKind, Family};

use super::exec::{self, ExecError, LabSession};
use super::{LabRules, Mapping, Report, VerifyError, expectations, map_policy, map_text};
use crate::Policy;
use crate::persist::loader::{self, Exec, Loader};
use crate::persist::{self, Mechanism, detect};

/// The PATH the loaders run with (what systemd gives a service).
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long one loader command may run before it is killed.
const STEP_LIMIT: Duration = Duration::from_secs(60);
pub use crate::persist::POLICY_COPY;

/// What the `__boot` child does, sent on its stdin.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BootPlan {
    pub root: PathBuf,
    /// Files (in-root path, text) to replace in the overlay before the boot.
    pub files: Vec<(PathBuf, String)>,
    /// Per loader, its commands in order; a failing command (not `-`) ends its loader.
    pub loaders: Vec<Vec<Exec>>,
}

/// What one command of a loader did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepOutcome {
    pub exec: Exec,
    /// The exit code; `None` when it did not exit normally or could not start.
    pub status: Option<i32>,
    /// Why it could not start, was killed or timed out.
    pub error: Option<String>,
    /// Its stdout, then its stderr.
    pub output: String,
}

impl StepOutcome {
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }
}

/// What the `__boot` child reports on stdout.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct BootOutcome {
    /// Per loader, the commands that ran.
    pub loaders: Vec<Vec<StepOutcome>>,
    /// The boot could not be set up (a mount, the chroot, a file).
    pub error: Option<String>,
}

/// One loader of the root, and whether it starts at boot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoaderState {
    pub loader: Loader,
    pub enabled: bool,
    /// The evidence, or why not.
    pub evidence: String,
    pub steps: Vec<StepOutcome>,
}

/// Whether a family's rules were loaded after the boot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Loaded {
    pub family: String,
    /// The file its loader reads (inside the root).
    pub file: PathBuf,
    pub file_present: bool,
    pub loaded: bool,
}

/// Everything `verify --root` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RootReport {
    pub root: PathBuf,
    pub mechanism: Mechanism,
    pub reason: String,
    #[serde(serialize_with = "super::matrix::ser_backend")]
    pub backend: Backend,
    pub loaders: Vec<LoaderState>,
    pub loaded: Vec<Loaded>,
    /// Why the image fails, one sentence each (empty: it passed).
    pub failures: Vec<String>,
    pub report: Report,
    pub passed: bool,
}

/// Why `verify --root` could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Bad input: the root cannot be read or detected.
    #[error("{0}")]
    Input(String),
}

/// The policy of `root`: the copy `install --root` left at [`POLICY_COPY`], read
/// as any policy is (capped, a regular file only).
pub fn policy_in_root(root: &Path) -> Result<Policy, RootError> {
    let host = detect::resolve(root, Path::new(POLICY_COPY)).ok_or_else(|| {
        RootError::Input(format!(
            "{} has no {POLICY_COPY} (install --root leaves one): pass --config FILE",
            root.display()
        ))
    })?;
    let text = crate::input::read_capped(&host, crate::input::POLICY_MAX_BYTES)
        .map_err(|source| {
            let e = persist::PersistError::Read {
                path: PathBuf::from(POLICY_COPY),
                source,
            };
            RootError::Input(e.to_string())
        })?
        .text;
    Policy::parse(
        &text,
        &root
            .join(POLICY_COPY.trim_start_matches('/'))
            .display()
            .to_string(),
    )
    .map_err(|e| RootError::Input(e.to_string()))
}

/// Run the root's boot loader in the lab and probe `policy`'s promises.
pub fn verify_root(
    root: &Path,
    policy: &Policy,
    progress: &mut dyn FnMut(&str),
) -> Result<RootReport, RootError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(VerifyError::NotRoot.into());
    }
    let detection = persist::detect(root).map_err(|e| {
        RootError::Input(format!(
            "cannot detect the persistence mechanism of {}: {e}",
            root.display()
        ))
    })?;
    let mechanism = detection.mechanism;
    let backend = detect::root_backend(root);
    if let Some(reason) = backend.unavailable_reason() {
        return Err(VerifyError::BackendMissing { backend, reason }.into());
    }
    let rendered = crate::render(policy);
    let families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|&f| rendered.text(f).is_some())
        .collect();
    let v6 = families.contains(&Family::V6);

    let topo = exec::topology();
    let (lab_policy, mappings) = map_policy(policy, &topo);
    let derived = expectations(&lab_policy, &topo);

    let mut failures = Vec::new();
    let mut states = Vec::new();
    let mut plans = Vec::new();
    let sets = !rendered.sets.is_empty();
    for l in
        loader::loaders(root, mechanism, v6, sets).map_err(|e| RootError::Input(e.to_string()))?
    {
        let commands = loader::commands(root, &l);
        let (enabled, evidence) =
            match loader::enabled(root, &l).map_err(|e| RootError::Input(e.to_string()))? {
                Ok(e) => (true, e),
                Err(why) => {
                    // A missing loader is said once, below.
                    if commands.is_ok() {
                        failures.push(format!(
                            "loader not enabled: {why}: the image boots without it"
                        ));
                    }
                    (false, why)
                }
            };
        match commands {
            Ok(c) => plans.push(c),
            Err(why) => {
                failures.push(format!("loader missing: {why}"));
                plans.push(Vec::new());
            }
        }
        states.push(LoaderState {
            loader: l,
            enabled,
            evidence,
            steps: Vec::new(),
        });
    }

    // The ruleset files (IPv4, IPv6), mapped onto the lab in the overlay.
    let files: Vec<PathBuf> = persist::driver(mechanism)
        .files(root)
        .into_iter()
        .take(2)
        .collect();
    let mut present = Vec::new();
    let mut mapped = Vec::new();
    for p in &files {
        let text = detect::read_in_root(root, &p.to_string_lossy())
            .map_err(|e| RootError::Input(e.to_string()))?;
        present.push(text.as_ref().is_some_and(|t| !t.trim().is_empty()));
        if let Some(t) = text {
            let m = map_text(&t, &mappings);
            if m != t {
                mapped.push((p.clone(), m));
            }
        }
    }
    // The sets files: the lab's sets (the policy's, mapped onto the lab as the
    // rules are) replace each one the image has; one it lacks is a failure, as
    // is a root without ipset: the rules that match the sets cannot load.
    if sets {
        let names: Vec<&str> = rendered.sets.iter().map(|s| s.name.as_str()).collect();
        if persist::sets::ipset_binary(root).is_none() {
            failures.push(format!(
                "ipset loader missing: the rules match ipsets ({}) and the image has no ipset (/usr/sbin/ipset, /sbin/ipset) to load them",
                names.join(", ")
            ));
        }
        let lab_rendered = crate::render(&lab_policy);
        let lab_sets = persist::sets::files(root, mechanism, &lab_rendered)
            .map_err(|e| RootError::Input(e.to_string()))?;
        for f in lab_sets {
            let text = detect::read_in_root(root, &f.path.to_string_lossy())
                .map_err(|e| RootError::Input(e.to_string()))?;
            if text.is_some_and(|t| !t.trim().is_empty()) {
                mapped.push((f.path, f.contents));
            } else {
                failures.push(format!(
                    "sets file missing: {} is missing or empty, and the rules match ipsets ({}): they cannot load at boot",
                    f.path.display(),
                    names.join(", ")
                ));
            }
        }
    }
    let plan = BootPlan {
        root: root.to_owned(),
        files: mapped,
        loaders: plans,
    };

    let mut outcome: Option<BootOutcome> = None;
    let mut loaded_state: Vec<(Family, bool)> = Vec::new();
    let rows = exec::run_backend_with(
        backend,
        &mut |lab: &mut LabSession| {
            // Nothing loaded yet: this sets the backend and waits for the lab to
            // settle; the image's loader replaces it.
            lab.load(&LabRules {
                v4: None,
                v6: None,
                sets: None,
            })?;
            let o = run_boot(lab, &plan)?;
            outcome = Some(o);
            loaded_state.clear();
            for &f in &families {
                let c = lab.counters(f)?;
                let any = c.entries.iter().any(|e| match &e.kind {
                    CounterKind::Rule { .. } => true,
                    CounterKind::Policy { policy } => policy != "ACCEPT",
                });
                loaded_state.push((f, any));
            }
            Ok(())
        },
        derived.expectations,
        progress,
    )?;
    let outcome = outcome.unwrap_or_default();
    if let Some(e) = &outcome.error {
        failures.push(format!("the boot could not be set up: {e}"));
    }
    for (state, steps) in states.iter_mut().zip(outcome.loaders) {
        state.steps = steps;
    }
    let loaders_ok = outcome.error.is_none()
        && states.iter().all(|s| {
            !s.steps.is_empty() && s.steps.iter().all(|st| st.ok() || st.exec.ignore_failure)
        });
    for s in &states {
        if let Some(st) = s
            .steps
            .iter()
            .find(|st| !st.ok() && !st.exec.ignore_failure)
        {
            let how = match (&st.error, st.status) {
                (Some(e), _) => e.clone(),
                (None, Some(n)) => format!("exited {n}"),
                (None, None) => "did not exit normally".into(),
            };
            failures.push(format!(
                "loader failed: {} ({}): `{}` {how}{}",
                s.loader,
                st.exec.origin,
                st.exec.argv.join(" "),
                tail(&st.output)
            ));
        }
    }
    let loaded: Vec<Loaded> = loaded_state
        .iter()
        .map(|&(f, l)| {
            let i = if f == Family::V4 { 0 } else { 1 };
            Loaded {
                family: f.to_string(),
                file: files.get(i).cloned().unwrap_or_default(),
                file_present: present.get(i).copied().unwrap_or(false),
                loaded: l,
            }
        })
        .collect();
    if loaders_ok {
        let names: Vec<String> = states.iter().map(|s| s.loader.to_string()).collect();
        let names = names.join(", ");
        if !loaded.is_empty() && loaded.iter().all(|l| !l.loaded) {
            let files: Vec<String> = loaded
                .iter()
                .map(|l| l.file.display().to_string())
                .collect();
            let output: String = states
                .iter()
                .flat_map(|s| &s.steps)
                .map(|s| s.output.as_str())
                .collect();
            if loaded.iter().any(|l| l.file_present) {
                failures.push(format!(
                    "fails open: {names} exited 0 but loaded no rules from {}{}",
                    files.join(", "),
                    tail(&output)
                ));
            } else {
                failures.push(format!(
                    "loads nothing: {names} exited 0 and loaded no rules ({} missing or empty)",
                    files.join(", ")
                ));
            }
        } else {
            for l in loaded.iter().filter(|l| !l.loaded) {
                let output: String = states
                    .iter()
                    .flat_map(|s| &s.steps)
                    .map(|s| s.output.as_str())
                    .collect();
                if l.file_present {
                    failures.push(format!(
                        "fails open: {names} exited 0 but did not load the {} rules of {}{}",
                        l.family,
                        l.file.display(),
                        tail(&output)
                    ));
                } else {
                    failures.push(format!(
                        "loads nothing for {}: {} is missing or empty",
                        l.family,
                        l.file.display()
                    ));
                }
            }
        }
    }
    let mut report = Report {
        backends: vec![backend],
        mappings,
        hand_written: false,
        notes: derived.notes,
        rows: Vec::new(),
        passed: false,
    };
    report.rows = rows;
    report.passed = report.passed();
    if !report.passed {
        let bad = report.rows.iter().filter(|r| !r.pass()).count();
        failures.push(format!(
            "the rules behave otherwise than the policy: {bad} of {} promises do not hold (see the matrix)",
            report.rows.len()
        ));
    }
    Ok(RootReport {
        root: root.to_owned(),
        mechanism,
        reason: detection.reason,
        backend,
        loaders: states,
        loaded,
        passed: failures.is_empty(),
        failures,
        report,
    })
}

/// The last lines of a loader's output, for a failure sentence.
fn tail(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return String::new();
    }
    let from = lines.len().saturating_sub(3);
    format!("; it said: {}", lines[from..].join(" / "))
}

/// Mappings for people: `KEY FROM -> TO`.
pub fn describe(m: &Mapping) -> String {
    format!("{} {} -> {} ({} host)", m.key, m.from, m.to, m.host)
}

/// Run the `__boot` child in the lab's target with `plan` on its stdin.
fn run_boot(lab: &LabSession, plan: &BootPlan) -> Result<BootOutcome, ExecError> {
    let exe = std::env::current_exe()
        .map_err(|e| ExecError(format!("cannot find the portcullis binary: {e}")))?;
    let unshare =
        portcullis_netfilter::bins::resolve("unshare").map_err(|e| ExecError(e.to_string()))?;
    let mut cmd = lab.target().command(unshare);
    cmd.args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .arg("__boot")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| ExecError(format!("cannot start the boot child: {e}")))?;
    let json = serde_json::to_vec(plan).expect("a plan serializes");
    let _ = child.stdin.take().expect("piped").write_all(&json);
    let out = child
        .wait_with_output()
        .map_err(|e| ExecError(format!("the boot child: {e}")))?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        ExecError(format!(
            "the boot child failed ({}): {e}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })
}

/// The `__boot` child: already in a private mount namespace (and the target's
/// network namespace). Reads a [`BootPlan`] from stdin, prints a [`BootOutcome`].
pub fn child_main() -> BootOutcome {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        return BootOutcome {
            error: Some(format!("cannot read the plan: {e}")),
            ..Default::default()
        };
    }
    let plan: BootPlan = match serde_json::from_slice(&input) {
        Ok(p) => p,
        Err(e) => {
            return BootOutcome {
                error: Some(format!("bad plan: {e}")),
                ..Default::default()
            };
        }
    };
    if let Err(e) = setup(&plan) {
        return BootOutcome {
            error: Some(e),
            ..Default::default()
        };
    }
    BootOutcome {
        loaders: plan
            .loaders
            .iter()
            .map(|cmds| {
                let mut steps = Vec::new();
                for c in cmds {
                    let s = run_step(c);
                    let stop = !s.ok() && !c.ignore_failure;
                    steps.push(s);
                    if stop {
                        break;
                    }
                }
                steps
            })
            .collect(),
        error: None,
    }
}

/// Mount the overlay and the pseudo filesystems, chroot, and write the mapped files.
fn setup(plan: &BootPlan) -> Result<(), String> {
    use nix::mount::{MsFlags, mount};
    let root = plan
        .root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", plan.root.display()))?;
    let root_s = root.to_string_lossy().into_owned();
    if root_s.contains([',', ':', '\\']) {
        return Err(format!(
            "{root_s}: a root path with `,`, `:` or `\\` cannot be an overlay's lower layer"
        ));
    }
    // A scratch tmpfs on a directory that does not hold the root (it is mounted in
    // this private namespace only).
    let scratch = ["/tmp", "/run", "/mnt", "/var/tmp"]
        .into_iter()
        .map(Path::new)
        .find(|d| d.is_dir() && !root.starts_with(d))
        .ok_or("no scratch directory for the overlay (/tmp, /run, /mnt)")?;
    let m = |what: &str, e: nix::errno::Errno| format!("mounting {what}: {e}");
    mount(
        Some("portcullis-boot"),
        scratch,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0700"),
    )
    .map_err(|e| m("a tmpfs", e))?;
    let (upper, work, merged) = (
        scratch.join("upper"),
        scratch.join("work"),
        scratch.join("root"),
    );
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let opts = format!(
        "lowerdir={root_s},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(opts.as_str()),
    )
    .map_err(|e| m("the overlay of the root", e))?;
    nix::unistd::chroot(&merged).map_err(|e| format!("chroot: {e}"))?;
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;
    for d in ["/proc", "/dev", "/run"] {
        if !Path::new(d).is_dir() {
            std::fs::create_dir(d).map_err(|e| format!("{d}: {e}"))?;
        }
    }
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        nosuid | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| m("/proc", e))?;
    mount(
        Some("portcullis-dev"),
        "/dev",
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    )
    .map_err(|e| m("/dev", e))?;
    mount(
        Some("portcullis-run"),
        "/run",
        Some("tmpfs"),
        nosuid,
        Some("mode=0755"),
    )
    .map_err(|e| m("/run", e))?;
    use nix::sys::stat::{Mode, SFlag, makedev, mknod};
    use std::os::unix::fs::PermissionsExt as _;
    for (name, minor) in [
        ("null", 3),
        ("zero", 5),
        ("full", 7),
        ("random", 8),
        ("urandom", 9),
    ] {
        let p = format!("/dev/{name}");
        mknod(
            p.as_str(),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, minor),
        )
        .map_err(|e| format!("mknod {p}: {e}"))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| format!("{p}: {e}"))?;
    }
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        std::os::unix::fs::symlink(target, link).map_err(|e| format!("{link}: {e}"))?;
    }
    // openrc-run refuses to start a service on a system OpenRC did not boot
    // unless its softlevel file exists (its own advice for a chroot).
    if ["/sbin/openrc-run", "/usr/sbin/openrc-run"]
        .iter()
        .any(|p| Path::new(p).exists())
    {
        std::fs::create_dir_all("/run/openrc")
            .and_then(|()| std::fs::write("/run/openrc/softlevel", ""))
            .map_err(|e| format!("/run/openrc/softlevel: {e}"))?;
    }
    // The mapped rules, written into the overlay (the root is its lower layer and
    // is never written), through the same no-symlink atomic writer as install.
    let dir = persist::atomic::Root::open(Path::new("/")).map_err(|e| e.to_string())?;
    for (path, text) in &plan.files {
        let mode = dir
            .read(path)
            .map_err(|e| e.to_string())?
            .map_or(0o600, |c| c.mode);
        dir.stage(path, text.as_bytes(), mode, false)
            .and_then(|s| s.commit())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Run one command with the environment a service gets, at most [`STEP_LIMIT`].
fn run_step(exec: &Exec) -> StepOutcome {
    let mut out = StepOutcome {
        exec: exec.clone(),
        status: None,
        error: None,
        output: String::new(),
    };
    let child = Command::new(&exec.argv[0])
        .args(&exec.argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .env("LANG", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("cannot run: {e}"));
            return out;
        }
    };
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let result = match rx.recv_timeout(STEP_LIMIT) {
        Ok(r) => r,
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            out.error = Some(format!("did not finish within {}s", STEP_LIMIT.as_secs()));
            match rx.recv() {
                Ok(r) => r,
                Err(_) => return out,
            }
        }
    };
    match result {
        Ok(o) => {
            out.status = o.status.code();
            out.output = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Err(e) => out.error = Some(format!("waiting: {e}")),
    }
    out
}
