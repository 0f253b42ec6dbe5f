//! Real OpenSSH for everything about lockout: `sshd` in the target host, `ssh`
//! clients in the others, with generated keys and private configs.
//!
//! [`Sshd::start`] runs `sshd -D -e -f PRIVATE_CONFIG` in the calling host (its
//! thread, hence its network namespace), as PID 1 of a PID namespace of its own so
//! that nothing it forks can outlive it, and returns once sshd has logged "Server listening"
//! for every address. [`Client`] runs `ssh -F PRIVATE_CONFIG`: BatchMode, no host
//! key checking, only the lab's identity, so neither the host's `/etc/ssh` nor
//! anyone's `~/.ssh` is ever read; sessions get the lab directory as `HOME`, so
//! no real `~/.bashrc` runs either. Both sides pin one fast key exchange ([`KEX`]).
//! [`Session`] keeps an interactive session open
//! (a command with piped stdin and stdout), for "a session opened before the
//! ruleset loads keeps working", and for a server that speaks first.
//!
//! Refuses: PAM (sshd is started without it), passwords, agent and X11
//! forwarding, and keys anywhere but a root-only directory ([`LabDir`]).

use std::collections::VecDeque;
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::AbortHandle;

use super::ServiceError;

mod key;
use crate::backend::find_in_path;
use crate::probe::Outcome;
use crate::probe::raw::{die_with_parent, kill_tree};

/// Where lab directories live. Not /tmp: keys are secrets, and /tmp is world-
/// writable, so another user could plant a symlink or a directory there first.
/// Not `$XDG_RUNTIME_DIR`: under sudo it is unset or still the invoking user's
/// `/run/user/UID`, a directory that user owns and could rearrange under root.
/// `/run` is a root-owned tmpfs: never on disk, emptied at boot, and writable only
/// by root, so the 0700 directory made here is ours alone.
pub const LAB_ROOT: &str = "/run/portcullis-lab";

/// How long sshd may take to start listening.
const SSHD_READY: Duration = Duration::from_secs(10);

static NEXT_DIR: AtomicU32 = AtomicU32::new(0);

/// A root-only (0700) directory `/run/portcullis-lab/<pid>-<n>` for one lab's keys
/// and configs, removed with everything in it on drop. Creating one also removes
/// the directories of processes that no longer exist (a run that was SIGKILLed).
#[derive(Debug)]
pub struct LabDir {
    path: PathBuf,
}

impl LabDir {
    pub fn new() -> Result<Self, ServiceError> {
        let root = Path::new(LAB_ROOT);
        match DirBuilder::new().mode(0o700).create(root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => check_private(root)?,
            Err(source) => {
                return Err(ServiceError::Io {
                    path: root.into(),
                    source,
                });
            }
        }
        sweep_stale(root);
        let n = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{}-{n}", std::process::id()));
        // Not recursive: fails if the path exists in any form, symlinks included.
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|source| ServiceError::Io {
                path: path.clone(),
                source,
            })?;
        Ok(LabDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write a new file (0600) in this directory; refuses to replace anything.
    fn write(&self, name: &str, contents: &str) -> Result<PathBuf, ServiceError> {
        let path = self.path.join(name);
        write_new(&path, contents.as_bytes())?;
        Ok(path)
    }
}

/// Create `path` (0600) holding `contents`; refuses to replace anything, a
/// symlink included.
fn write_new(path: &Path, contents: &[u8]) -> Result<(), ServiceError> {
    let io = |source| ServiceError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(contents).map_err(io)
}

impl Drop for LabDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!(
                "portcullis lab: cannot remove {}: {e} (remove it by hand)",
                self.path.display()
            );
        }
    }
}

/// The lab root must be a real directory owned by root with no access for others.
fn check_private(root: &Path) -> Result<(), ServiceError> {
    let meta = std::fs::symlink_metadata(root).map_err(|source| ServiceError::Io {
        path: root.into(),
        source,
    })?;
    let unsafe_dir = |reason: &str| ServiceError::UnsafeDir {
        path: root.into(),
        reason: reason.into(),
    };
    if !meta.file_type().is_dir() {
        return Err(unsafe_dir("not a directory (a symlink?): remove it"));
    }
    if meta.uid() != 0 {
        return Err(unsafe_dir("not owned by root: remove it"));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir("group or others have access: chmod 0700 it"));
    }
    Ok(())
}

/// Remove `<pid>-<n>` directories whose process is gone.
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(p, _)| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn command_error(command: &str, detail: impl Into<String>) -> ServiceError {
    ServiceError::Command {
        command: command.into(),
        detail: detail.into(),
    }
}

/// A running OpenSSH server. Dropping it kills sshd and every session it forked.
/// [`Sshd::pid`] is the pid of the `unshare` that holds sshd's PID namespace.
#[must_use = "dropping an Sshd stops it"]
pub struct Sshd {
    child: Child,
    addrs: Vec<SocketAddr>,
    log: Arc<Mutex<VecDeque<String>>>,
    drain: AbortHandle,
    client: Client,
}

impl std::fmt::Debug for Sshd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sshd")
            .field("pid", &self.child.id())
            .field("addrs", &self.addrs)
            .finish_non_exhaustive()
    }
}

impl Sshd {
    /// Generate a host key and a client key pair in `dir`, write a private
    /// `sshd_config` and `ssh_config`, and run sshd on `port` of each of `listen`,
    /// in the calling host. Returns once sshd listens on all of them. One sshd per
    /// `dir`.
    pub async fn start(
        dir: Arc<LabDir>,
        listen: &[IpAddr],
        port: u16,
    ) -> Result<Sshd, ServiceError> {
        if listen.is_empty() {
            // sshd would listen on every address, and readiness (one "Server
            // listening" per address asked for) would prove nothing.
            return Err(command_error(
                "sshd",
                "no listen address given: name the lab addresses sshd serves",
            ));
        }
        let sshd = find_in_path("sshd")
            .ok_or_else(|| command_error("sshd", "not found on PATH (install openssh-server)"))?;
        ensure_privsep_dir()?;
        let d = dir.path();
        let host_key = d.join("ssh_host_ed25519_key");
        let id = d.join("id_ed25519");
        // In-process, as `ssh-keygen -t ed25519` would write them ([`key`]).
        key::generate(&host_key, "portcullis-lab-host")?;
        let pubkey = key::generate(&id, "portcullis-lab-client")?;
        dir.write("authorized_keys", &pubkey)?;
        let mut config = format!(
            "# portcullis lab sshd: private, never the host's /etc/ssh/sshd_config\n\
             Port {port}\n\
             AddressFamily any\n\
             HostKey {hk}\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitUserRC no\n\
             PermitUserEnvironment no\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             UseDNS no\n\
             X11Forwarding no\n\
             AllowAgentForwarding no\n\
             AllowTcpForwarding no\n\
             MaxStartups 100:30:200\n\
             MaxSessions 50\n\
             LoginGraceTime 30\n\
             KexAlgorithms {KEX}\n\
             SetEnv HOME={d}\n\
             Subsystem sftp internal-sftp\n\
             LogLevel INFO\n",
            hk = host_key.display(),
            d = d.display(),
        );
        for ip in listen {
            config.push_str(&format!("ListenAddress {ip}\n"));
        }
        let config_path = dir.write("sshd_config", &config)?;
        let client = Client::new(dir.clone(), &id)?;

        // sshd runs as PID 1 of its own PID namespace: when it dies, the kernel
        // kills every process in that namespace, the per-connection sshds too.
        // They setsid(2) away from its process group, and a parent-death signal
        // does not reach them; without this, a session whose client is locked out
        // by the ruleset (so no FIN ever arrives) outlives a SIGKILLed test run
        // and keeps the target's network namespace alive. `unshare` itself gets
        // the parent-death signal, and `--kill-child` passes it on to sshd.
        let unshare = find_in_path("unshare")
            .ok_or_else(|| command_error("unshare", "not found on PATH (install util-linux)"))?;
        let mut cmd = Command::new(&unshare);
        cmd.args(["--pid", "--fork", "--kill-child=SIGKILL", "--"])
            .arg(&sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .map_err(|e| command_error(&format!("{} -D -e", sshd.display()), e.to_string()))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(VecDeque::new()));

        // Readiness: sshd logs "Server listening on ADDR port PORT." once per bound
        // address, after listen(2); a failed bind is logged and is fatal here.
        let started = Instant::now();
        let mut listening = 0;
        let ready = tokio::time::timeout(SSHD_READY, async {
            while listening < listen.len() {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        let fatal = line.contains("Bind to port") || line.contains("fatal");
                        if line.contains("Server listening on") {
                            listening += 1;
                        }
                        push_log(&log, line);
                        if fatal {
                            return false;
                        }
                    }
                    _ => return false,
                }
            }
            true
        })
        .await;
        if ready != Ok(true) {
            kill_tree(child.id().unwrap_or(0));
            let detail = log
                .lock()
                .map(|l| l.iter().cloned().collect::<Vec<_>>().join("; "));
            return Err(ServiceError::NotReady {
                what: format!("sshd on port {port}"),
                waited_ms: started.elapsed().as_millis(),
                detail: detail.unwrap_or_default(),
            });
        }
        // Keep reading: a full stderr pipe would block sshd's logging, and the log
        // is the first thing to read when a login fails.
        let l = log.clone();
        let drain = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                push_log(&l, line);
            }
        })
        .abort_handle();
        Ok(Sshd {
            child,
            addrs: listen.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
            log,
            drain,
            client,
        })
    }

    /// The pid of the `unshare` whose child is the listening sshd (`None` once it
    /// has been reaped); every sshd process descends from it.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The addresses sshd listens on.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A client holding the key this sshd accepts; clone it into other hosts.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// sshd's log so far (the last 1000 lines), for diagnostics.
    pub fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.drain.abort();
        if let Some(pid) = self.child.id() {
            kill_tree(pid);
        }
        // kill_on_drop (already killed) hands the zombie to tokio's reaper.
    }
}

fn push_log(log: &Mutex<VecDeque<String>>, line: String) {
    if let Ok(mut l) = log.lock() {
        if l.len() == 1000 {
            l.pop_front();
        }
        l.push_back(line);
    }
}

/// sshd's privilege separation needs its empty root-owned directory; a fresh
/// container often lacks it. It is the path the distro's sshd expects.
fn ensure_privsep_dir() -> Result<(), ServiceError> {
    let p = Path::new("/run/sshd");
    match DirBuilder::new().mode(0o755).create(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(ServiceError::Io {
            path: p.into(),
            source,
        }),
    }
}

/// The one key exchange the lab's sshd and clients use (both sides pin it, so a
/// mismatch fails loudly instead of negotiating something slower): OpenSSH 9.x
/// otherwise picks the post-quantum sntrup761x25519-sha512 hybrid. The lab sshd
/// also sets `HOME` to its private directory, so a session's shell does not run
/// the real user's `~/.bashrc` (on the CI machine it runs `pyenv init`, and a
/// session killed mid-`pyenv rehash`, as every lab session is at teardown, leaves
/// a stale lock that stalls every later login on the machine for 60 s).
/// Measured with OpenSSH 9.2 on loopback, 20 logins each, on a loaded 2-core
/// machine: 0.65 s a login with the defaults, 0.51 s with this key exchange,
/// 0.17 s with it and the private `HOME`.
pub const KEX: &str = "curve25519-sha256";

/// An ssh client with the lab's identity and a private config. Cheap to clone;
/// the lab directory lives as long as any clone.
#[derive(Debug, Clone)]
pub struct Client {
    dir: Arc<LabDir>,
    config: PathBuf,
    user: String,
}

impl Client {
    fn new(dir: Arc<LabDir>, identity: &Path) -> Result<Client, ServiceError> {
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .unwrap_or_else(|| "root".into());
        let config = format!(
            "# portcullis lab ssh client: read with -F, so no other config is read\n\
             Host *\n\
             \x20 User {user}\n\
             \x20 IdentityFile \"{id}\"\n\
             \x20 IdentitiesOnly yes\n\
             \x20 IdentityAgent none\n\
             \x20 BatchMode yes\n\
             \x20 StrictHostKeyChecking no\n\
             \x20 UserKnownHostsFile /dev/null\n\
             \x20 GlobalKnownHostsFile /dev/null\n\
             \x20 CheckHostIP no\n\
             \x20 UpdateHostKeys no\n\
             \x20 PasswordAuthentication no\n\
             \x20 KbdInteractiveAuthentication no\n\
             \x20 ConnectTimeout 10\n\
             \x20 ConnectionAttempts 1\n\
             \x20 ControlMaster no\n\
             \x20 ControlPath none\n\
             \x20 ForwardAgent no\n\
             \x20 ForwardX11 no\n\
             \x20 RequestTTY no\n\
             \x20 EscapeChar none\n\
             \x20 KexAlgorithms {KEX}\n\
             \x20 LogLevel ERROR\n",
            id = identity.display(),
        );
        let config = dir.write("ssh_config", &config)?;
        Ok(Client { dir, config, user })
    }

    /// The user the client logs in as (the one running the lab).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The private ssh_config (to run ssh by hand: `ssh -F THIS ...`).
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The lab directory holding the keys.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `ssh ... USER@ADDR -- REMOTE`; with `subsystem`, `ssh -s ...`: REMOTE
    /// names a subsystem of sshd instead of a command for the user's shell.
    fn command(&self, addr: SocketAddr, remote: &str, subsystem: bool) -> Command {
        // Looked up once per process: a bare "ssh" would make every run search
        // PATH entry by entry (a failed exec each).
        static SSH: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
        let ssh = SSH.get_or_init(|| find_in_path("ssh").unwrap_or_else(|| "ssh".into()));
        let mut cmd = Command::new(ssh);
        cmd.arg("-F")
            .arg(&self.config)
            .arg("-p")
            .arg(addr.port().to_string());
        if subsystem {
            cmd.arg("-s");
        }
        cmd.arg(format!("{}@{}", self.user, addr.ip()))
            .arg("--")
            .arg(remote)
            .kill_on_drop(true);
        die_with_parent(&mut cmd);
        cmd
    }

    /// `ssh USER@ADDR -- REMOTE`, run to completion within `window`:
    /// `Ok(stdout, trimmed)` when it exits 0; `Refused` when the TCP connection is
    /// refused; `NoAnswer` when nothing came back in `window` (ssh is killed);
    /// `Failed` for anything else (authentication, a non-zero exit), with stderr.
    pub async fn run(&self, addr: SocketAddr, remote: &str, window: Duration) -> Outcome {
        let mut cmd = self.command(addr, remote, false);
        cmd.stdin(Stdio::null());
        match Self::finish(addr, cmd, window).await {
            Ok(stdout) => Outcome::Ok(stdout),
            Err(o) => o,
        }
    }

    /// A real authenticated SSH session that runs nothing on the target:
    /// `ssh -s USER@ADDR sftp` with stdin closed. sshd serves the subsystem
    /// itself (`Subsystem sftp internal-sftp`, no shell, no exec), which sees
    /// end of input at once and exits 0; so exit 0 means the key exchange, the
    /// public-key login and a session channel all went through, opened and
    /// closed by sshd. `Ok("ssh session")`, otherwise what [`Client::run`]
    /// returns for the same failure.
    pub async fn login(&self, addr: SocketAddr, window: Duration) -> Outcome {
        let mut cmd = self.command(addr, "sftp", true);
        cmd.stdin(Stdio::null());
        match Self::finish(addr, cmd, window).await {
            Ok(_) => Outcome::Ok(LOGIN_OK.into()),
            Err(o) => o,
        }
    }

    /// Run `cmd` (an ssh client) to completion within `window`: its stdout,
    /// trimmed, when it exits 0, otherwise the outcome.
    async fn finish(
        addr: SocketAddr,
        mut cmd: Command,
        window: Duration,
    ) -> Result<String, Outcome> {
        let out = match tokio::time::timeout(window, cmd.output()).await {
            Err(_) => return Err(Outcome::NoAnswer),
            Ok(Err(e)) => return Err(Outcome::Failed(format!("cannot run ssh: {e}"))),
            Ok(Ok(out)) => out,
        };
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned()),
            Some(255) => Err(judge_ssh_error(addr, &stderr)),
            code => Err(Outcome::Failed(format!(
                "ssh {addr}: remote command exited {code:?}: {stderr}"
            ))),
        }
    }

    /// Open a session running `remote` (for instance `cat`, or a loop that prints
    /// a countdown) and return once the remote side has proved it runs: the
    /// session prints a marker line before running `remote`, and this waits up to
    /// `window` for it.
    pub async fn session(
        &self,
        addr: SocketAddr,
        remote: &str,
        window: Duration,
    ) -> Result<Session, ServiceError> {
        // A newline, not `exec`: `remote` may be a compound command (a loop).
        let wrapped = format!("echo {SESSION_READY}\n{remote}");
        let mut cmd = self.command(addr, &wrapped, false);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("ssh session to {addr}");
        let mut child = cmd
            .spawn()
            .map_err(|e| command_error("ssh", e.to_string()))?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let errors = Arc::new(Mutex::new(String::new()));
        let e = errors.clone();
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = e.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        })
        .abort_handle();
        let mut session = Session {
            child,
            stdin,
            stdout,
            partial: Vec::new(),
            errors,
            drain,
        };
        let started = Instant::now();
        match session.read_line(window).await {
            Outcome::Ok(line) if line == SESSION_READY => Ok(session),
            other => Err(ServiceError::NotReady {
                what,
                waited_ms: started.elapsed().as_millis(),
                detail: format!("{other:?}"),
            }),
        }
    }
}

const SESSION_READY: &str = "portcullis-session-ready";

/// What [`Client::login`] reports for a session sshd opened and closed.
pub const LOGIN_OK: &str = "ssh session";

fn judge_ssh_error(addr: SocketAddr, stderr: &str) -> Outcome {
    let lower = stderr.to_ascii_lowercase();
    if lower.contains("connection refused") {
        Outcome::Refused(format!("ssh {addr}: {stderr}"))
    } else if lower.contains("timed out") {
        Outcome::NoAnswer
    } else if lower.contains("no route to host") || lower.contains("network is unreachable") {
        Outcome::Refused(format!("ssh {addr}: {stderr}"))
    } else if lower.contains("operation not permitted") {
        // This host's own OUTPUT chain dropped the SYN.
        Outcome::NoAnswer
    } else {
        Outcome::Failed(format!("ssh {addr}: {stderr}"))
    }
}

/// An open ssh session with piped stdin and stdout. Dropping it kills the local
/// ssh; sshd then ends the remote side.
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    partial: Vec<u8>,
    errors: Arc<Mutex<String>>,
    drain: AbortHandle,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// The pid of the local ssh client.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Write `line` and a newline to the remote command's stdin.
    pub async fn send_line(&mut self, line: &str) -> std::io::Result<()> {
        self.stdin.write_all(format!("{line}\n").as_bytes()).await?;
        self.stdin.flush().await
    }

    /// The next line the remote command prints, within `window`: `Ok(line)`,
    /// `NoAnswer` when nothing came, `Failed` when the session ended (with ssh's
    /// stderr). A line that arrives late is not lost: the next read returns it.
    pub async fn read_line(&mut self, window: Duration) -> Outcome {
        // read_until is cancel-safe: bytes of a line cut by the timeout stay in
        // `partial`, and the next read completes that line.
        match tokio::time::timeout(window, self.stdout.read_until(b'\n', &mut self.partial)).await {
            Err(_) => Outcome::NoAnswer,
            Ok(Err(e)) => Outcome::Failed(format!("session read: {e}")),
            Ok(Ok(_)) if self.partial.last() == Some(&b'\n') => {
                let line = String::from_utf8_lossy(&self.partial)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                self.partial.clear();
                Outcome::Ok(line)
            }
            Ok(Ok(_)) => Outcome::Failed(format!("session closed: {}", self.stderr())),
        }
    }

    /// Send `line` and read one line back within `window` (with `cat` remotely,
    /// the echo of `line`).
    pub async fn exchange(&mut self, line: &str, window: Duration) -> Outcome {
        if let Err(e) = self.send_line(line).await {
            return Outcome::Failed(format!("session write: {e}; {}", self.stderr()));
        }
        self.read_line(window).await
    }

    /// What ssh printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.errors.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.drain.abort();
        // kill_on_drop sends SIGKILL to the local ssh when `child` drops next.
    }
}
