//! A lab host: one anonymous network namespace owned by one dedicated OS thread
//! that runs a current-thread tokio runtime (inside a `LocalSet`).
//!
//! The thread unshares its own network namespace (namespaces are per thread), so
//! every socket, netlink handle and child process made on it lives in the host's
//! namespace. Callers hand it closures that build futures ([`Host::run`],
//! [`Host::spawn`], [`Host::serve`]); the futures run on the host thread and need
//! not be `Send`. The namespace is held by an fd and by the thread itself: when
//! the `Host` drops (or the process dies, even by SIGKILL) the kernel frees it.
//!
//! Children: [`Host::command`] and [`Host::spawn_child`] for long-lived ones;
//! [`Host::exec`] and [`run_command`] run one to completion through the one
//! runner (`portcullis_netfilter::runner`). A host's debug mount is made and
//! swept by [`crate::debug`]; waiting out its MLD reports is [`crate::mld`].
//!
//! Refuses: `setns` on any thread but a forked child before exec; sysctl writes
//! from any thread but a host's own ([`sysctl`] checks).

use std::cell::RefCell;
use std::ffi::OsStr;
use std::future::Future;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::thread;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use crate::backend::{Backend, BackendError, Family};
use crate::counters::Counters;
use crate::debug::{add_mount, mount_path, remove_mount};
use crate::error::{self, LabError, Result};
use crate::sys;

use crate::debug::{debug_from_env, next_mount_tag};

type LocalFuture = Pin<Box<dyn Future<Output = ()>>>;
type Job = Box<dyn FnOnce() -> LocalFuture + Send>;

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

#[derive(Clone)]
struct Current {
    name: Arc<str>,
    netlink: rtnetlink::Handle,
    netns: Arc<OwnedFd>,
}

/// The name of the host whose thread is calling, or `None` off a host thread.
pub fn current_host() -> Option<String> {
    CURRENT.with(|c| c.borrow().as_ref().map(|c| c.name.to_string()))
}

/// The rtnetlink handle of the calling host thread (bound to its namespace).
///
/// # Panics
/// Off a host thread: a netlink handle there would act on some other namespace,
/// perhaps the machine's own.
pub fn netlink() -> rtnetlink::Handle {
    CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .map(|c| c.netlink.clone())
            .expect("portcullis_harness::host::netlink() called off a lab host thread")
    })
}

/// Write a sysctl (`net.ipv4.ip_forward`, ...) in the calling host's namespace.
///
/// /proc/sys/net resolves through the CALLING THREAD's namespace, so this is only
/// allowed on a host thread; anywhere else it would change the machine itself.
pub fn sysctl(key: &str, value: &str) -> std::io::Result<()> {
    if current_host().is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refusing to write sysctl {key} off a lab host thread"),
        ));
    }
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    std::fs::write(&path, value)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Read a sysctl in the calling host's namespace (refused off a host thread,
/// where it would read the machine's own).
pub fn read_sysctl(key: &str) -> std::io::Result<String> {
    if current_host().is_none() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("refusing to read sysctl {key} off a lab host thread"),
        ));
    }
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    Ok(std::fs::read_to_string(path)?.trim().to_owned())
}

/// A `tokio::process::Command` for the calling host thread: the child inherits the
/// thread's namespace, gets SIGKILL when the host thread exits, and is killed when
/// the `Child` handle drops.
///
/// # Panics
/// Off a host thread (the child would run in the wrong namespace).
pub fn async_command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    assert!(
        current_host().is_some(),
        "portcullis_harness::host::async_command() called off a lab host thread"
    );
    let mut std_cmd = Command::new(program);
    sys::prepare_child(&mut std_cmd, None);
    let mut cmd = tokio::process::Command::from(std_cmd);
    cmd.kill_on_drop(true);
    cmd
}

/// Run `argv` (no shell) to completion in the calling host's namespace, feeding
/// `stdin`; stdout on success, an error naming the command and its stderr
/// otherwise. The async form of [`Host::exec`], for code already on a host thread.
///
/// It is the one runner ([`crate::backend::run_prepared`]) on a blocking-pool
/// thread, so the host thread keeps serving while the child runs. That thread is
/// in no particular namespace and needs none: the command enters the host's
/// namespace between fork and exec by its fd, as [`Host::command`]'s do. The
/// child's parent-death signal is tied to that thread, which waits for it.
///
/// # Panics
/// Off a host thread (there is no host namespace to run in).
pub async fn run_command(argv: &[&str], stdin: Option<&str>) -> Result<String, BackendError> {
    let netns = CURRENT.with(|c| {
        c.borrow()
            .as_ref()
            .map(|c| c.netns.clone())
            .expect("portcullis_harness::host::run_command() called off a lab host thread")
    });
    let (mut cmd, command) = command_in(netns, argv);
    let stdin = stdin.map(str::to_owned);
    let display = command.clone();
    match tokio::task::spawn_blocking(move || {
        crate::backend::run_prepared(&mut cmd, &display, stdin.as_deref())
    })
    .await
    {
        Ok(out) => out,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(BackendError::Spawn {
            command,
            source: std::io::Error::other("the host's runtime is shutting down"),
        }),
    }
}

/// `argv` as a command that runs in the namespace held by `netns` (entered
/// between fork and exec) and dies with the thread that spawns it; with its
/// command line, for errors. The program is looked up on PATH plus the sbin
/// directories (see [`crate::backend::find_in_path`]).
fn command_in(netns: Arc<OwnedFd>, argv: &[&str]) -> (Command, String) {
    let (program, args) = argv.split_first().expect("argv is never empty");
    let path = crate::backend::find_in_path(program).unwrap_or_else(|| PathBuf::from(program));
    let mut cmd = Command::new(path);
    cmd.args(args);
    sys::prepare_child(&mut cmd, Some(netns));
    (cmd, argv.join(" "))
}

/// A long-lived task on a host thread (a server). Dropping it cancels the task
/// (asynchronously: the host thread drops it at its next turn);
/// [`Task::cancel`] waits until it is gone.
#[must_use = "dropping a Task cancels it"]
pub struct Task {
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl Task {
    /// Whether the task has ended (returned, panicked or was cancelled).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Cancel the task and wait until the host thread has dropped its future (and
    /// with it the sockets it owns). The kernel closes a socket with its last fd:
    /// a child being forked elsewhere in the process at that moment holds a copy
    /// until it execs (every fd here is close-on-exec), so a listener can linger
    /// for that long. On a host thread it only cancels, as dropping does (waiting
    /// there could deadlock).
    pub fn cancel(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
            if current_host().is_none() {
                let _ = futures::executor::block_on(handle);
            }
        }
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if let Some(handle) = &self.handle {
            handle.abort();
        }
    }
}

/// A child process started in a host's namespace. Dropping it kills and reaps it;
/// if the handle is leaked, the parent-death signal kills it when the host thread
/// exits.
pub struct Child {
    host: Arc<str>,
    inner: Option<std::process::Child>,
}

impl Child {
    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.inner.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The std handle, for its pipes and `try_wait`.
    pub fn inner(&mut self) -> &mut std::process::Child {
        self.inner.as_mut().expect("child present until drop")
    }

    /// The name of the host it runs in.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Kill (SIGKILL) and reap it, returning its status.
    pub fn kill(mut self) -> std::io::Result<ExitStatus> {
        let mut c = self.inner.take().expect("child present until drop");
        let killed = sys::kill(c.id());
        let status = c.wait();
        killed.and(status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(mut c) = self.inner.take() {
            if let Err(e) = sys::kill(c.id()) {
                eprintln!(
                    "lab: host `{}`: cannot kill child {}: {e}",
                    self.host,
                    c.id()
                );
            }
            if let Err(e) = c.wait() {
                eprintln!(
                    "lab: host `{}`: cannot reap child {}: {e}",
                    self.host,
                    c.id()
                );
            }
        }
    }
}

/// One lab host. See the module docs.
pub struct Host {
    name: Arc<str>,
    netns: Arc<OwnedFd>,
    inode: u64,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
    mount: Option<PathBuf>,
}

/// A host whose thread is still setting up; [`Starting::finish`] waits for it.
/// Starting several hosts before finishing any builds them in parallel.
pub(crate) struct Starting {
    name: Arc<str>,
    ready: std::sync::mpsc::Receiver<Result<Arc<OwnedFd>>>,
    jobs: mpsc::UnboundedSender<Job>,
    thread: thread::JoinHandle<()>,
}

impl Host {
    /// Start a host named `name` (used in errors, thread names and debug mounts):
    /// a thread, a fresh network namespace with `lo` up, IPv6 enabled with DAD and
    /// router solicitations off. Debug mounts follow [`crate::debug::DEBUG_ENV`].
    pub fn new(name: &str) -> Result<Host> {
        Self::with_debug(name, debug_from_env())
    }

    /// [`Host::new`], with debug mounts on or off regardless of the environment.
    pub fn with_debug(name: &str, debug: bool) -> Result<Host> {
        Self::start(name)?.finish(debug.then(next_mount_tag))
    }

    pub(crate) fn start(name: &str) -> Result<Starting> {
        let name: Arc<str> = Arc::from(name);
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let (jobs, rx) = mpsc::unbounded_channel::<Job>();
        let thread_name = name.clone();
        let thread = thread::Builder::new()
            .name(format!("lab-{name}"))
            .spawn(move || host_main(thread_name, ready_tx, rx))
            .map_err(error::sys(&name, "spawn the host thread"))?;
        Ok(Starting {
            name,
            ready,
            jobs,
            thread,
        })
    }

    /// The host's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fd that holds the host's network namespace.
    pub fn netns_fd(&self) -> BorrowedFd<'_> {
        self.netns.as_fd()
    }

    pub(crate) fn netns_arc(&self) -> Arc<OwnedFd> {
        self.netns.clone()
    }

    /// The namespace's inode (`net:[INODE]` in /proc/PID/ns/net).
    pub fn netns_inode(&self) -> u64 {
        self.inode
    }

    /// The debug mount (`/run/netns/pc-...`), when debug mode is on.
    pub fn debug_mount(&self) -> Option<&Path> {
        self.mount.as_deref()
    }

    /// Run `f()` on the host thread and block until its future completes.
    ///
    /// A panic in the future is re-raised here. It blocks the calling thread:
    /// inside async code prefer [`Host::run_async`]; from the host's own thread it
    /// panics (it would deadlock).
    ///
    /// # Panics
    /// When the host thread is gone (see [`Host::try_run`]) or `f` panics.
    pub fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        match self.try_run(f) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`Host::run`], with a gone host thread as an error instead of a panic.
    pub fn try_run<F, Fut, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        if self.thread.as_ref().map(|t| t.thread().id()) == Some(thread::current().id()) {
            panic!(
                "Host::run on host `{}` called from that host's own thread would deadlock: \
                 await the future directly instead",
                self.name
            );
        }
        let rx = self.submit(f)?;
        // Not `blocking_recv`: that panics when the caller sits inside some tokio
        // runtime (a test's `#[tokio::main]`); blocking there is the caller's choice.
        match futures::executor::block_on(rx) {
            Ok(Ok(t)) => Ok(t),
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => Err(LabError::HostGone {
                host: self.name.to_string(),
            }),
        }
    }

    /// Run `f()` on the host thread; the returned future (which is `Send`) resolves
    /// to its output. Lets one async caller drive several hosts at once.
    pub fn run_async<F, Fut, T>(&self, f: F) -> impl Future<Output = Result<T>> + Send + 'static
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let name = self.name.clone();
        let rx = self.submit(f);
        async move {
            match rx?.await {
                Ok(Ok(t)) => Ok(t),
                Ok(Err(panic)) => std::panic::resume_unwind(panic),
                Err(_) => Err(LabError::HostGone {
                    host: name.to_string(),
                }),
            }
        }
    }

    fn submit<F, Fut, T>(&self, f: F) -> Result<oneshot::Receiver<thread::Result<T>>>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
        T: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            Box::pin(async move {
                let out = AssertUnwindSafe(async move { f().await })
                    .catch_unwind()
                    .await;
                let _ = tx.send(out);
            })
        });
        let gone = || LabError::HostGone {
            host: self.name.to_string(),
        };
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        Ok(rx)
    }

    /// Start a long-lived task (a server) on the host thread. It runs until the
    /// returned [`Task`] drops or the host shuts down.
    pub fn spawn<F, Fut>(&self, f: F) -> Task
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        // In an Option: an async block yielding a bare JoinHandle reads like a
        // forgotten `.await`.
        let handle = self.run(move || async move { Some(tokio::task::spawn_local(f())) });
        Task { handle }
    }

    /// Set up a server and start it: `f()` runs on the host thread and returns
    /// `Ok((ready, serve))` once the server is ready (its socket bound, say); then
    /// `serve` is spawned as a [`Task`] and `ready` (an address, a port) is returned.
    /// An error from the setup comes back as is and nothing is spawned.
    pub fn serve<F, Fut, R, S, E>(&self, f: F) -> Result<(R, Task), E>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(R, S), E>> + 'static,
        S: Future<Output = ()> + 'static,
        R: Send + 'static,
        E: Send + 'static,
    {
        let out = self.run(move || async move {
            let (ready, serve) = f().await?;
            Ok((ready, tokio::task::spawn_local(serve)))
        });
        out.map(|(ready, handle)| {
            (
                ready,
                Task {
                    handle: Some(handle),
                },
            )
        })
    }

    /// A command whose child runs in this host's namespace (it enters it between
    /// fork and exec) and dies with the thread that spawns it. Spawn it with
    /// [`Host::spawn_child`] so that thread is the host's; run a command to
    /// completion with [`Host::exec`] (the one runner), from any thread.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        sys::prepare_child(&mut cmd, Some(self.netns.clone()));
        cmd
    }

    /// Spawn `cmd` (from [`Host::command`]) on the host thread. The returned
    /// [`Child`] kills and reaps it on drop; the parent-death signal covers a
    /// leaked handle and a killed test process.
    pub fn spawn_child(&self, mut cmd: Command) -> Result<Child> {
        let name = self.name.clone();
        let child = self
            .try_run(move || async move { cmd.spawn() })?
            .map_err(error::sys(&name, "spawn a child process"))?;
        Ok(Child {
            host: name,
            inner: Some(child),
        })
    }

    /// Run `argv` (no shell) to completion in this host's namespace with optional
    /// stdin; its stdout. It blocks the calling thread (any thread: the child
    /// enters the namespace between fork and exec, see [`Host::command`]) in the
    /// one runner, [`crate::backend::run_prepared`], so a child that exits before
    /// reading all its input (a `*-restore` refusing a line) is reported by its
    /// stderr. On the host thread itself, await [`run_command`] instead.
    pub fn exec(&self, argv: &[&str], stdin: Option<&str>) -> Result<String> {
        let (mut cmd, command) = command_in(self.netns.clone(), argv);
        crate::backend::run_prepared(&mut cmd, &command, stdin).map_err(|source| {
            LabError::Backend {
                host: self.name.to_string(),
                source,
            }
        })
    }

    /// Load `text` into this host's kernel with one `*-restore -w` call.
    pub fn load(&self, backend: Backend, family: Family, text: &str) -> Result<()> {
        let bin = backend.restore_binary(family);
        self.exec(&[&bin, "-w"], Some(text)).map(drop)
    }

    /// Replace every ipset of this host's namespace with the sets of `text` (an
    /// `ipset restore` text): `ipset destroy` (refused while a loaded rule still
    /// matches a set: load rules that do not first), then one `ipset restore`.
    /// `None` only destroys. ipset is one per network namespace, so the sets of
    /// a lab host are its own.
    pub fn load_sets(&self, text: Option<&str>) -> Result<()> {
        // The trusted lookup the installer runs ipset through (root-owned, cached).
        let ipset =
            portcullis_netfilter::bins::resolve("ipset").map_err(|e| LabError::Backend {
                host: self.name.to_string(),
                source: e.into(),
            })?;
        let ipset = ipset.display().to_string();
        self.exec(&[&ipset, "destroy"], None)?;
        if let Some(text) = text {
            self.exec(&[&ipset, "restore"], Some(text))?;
        }
        Ok(())
    }

    /// The counters of every rule and chain policy, as `*-save -c` prints them:
    /// read from the kernel on the host's thread, the rule texts from one
    /// `*-save -c` per ruleset ([`crate::kcounters`]).
    pub fn counters(&self, backend: Backend, family: Family) -> Result<Counters> {
        let name = self.name.to_string();
        self.try_run(move || async move {
            crate::kcounters::counters(backend, family, None, &name).await
        })?
    }

    /// Zero the counters of every table `*-save` shows (`-w -t TABLE -Z`).
    pub fn zero_counters(&self, backend: Backend, family: Family) -> Result<()> {
        let bin = backend.binary(family);
        let tables = self.counters(backend, family)?.tables();
        for table in tables {
            self.exec(&[&bin, "-w", "-t", &table, "-Z"], None)?;
        }
        Ok(())
    }

    /// Forget every tracked connection of both families, so the next step's
    /// packets are NEW again: one ctnetlink flush per family on the host thread
    /// (see [`crate::conntrack`]); if the kernel refuses that, `conntrack -F`.
    pub fn flush_conntrack(&self) -> Result<()> {
        let host = self.name.to_string();
        let netlink = self.try_run(|| async {
            for family in Family::ALL {
                crate::conntrack::flush(family)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("{family}: {e}")))?;
            }
            Ok::<_, std::io::Error>(())
        })?;
        let Err(netlink_err) = netlink else {
            return Ok(());
        };
        if crate::backend::find_in_path("conntrack").is_none() {
            return Err(LabError::Sys {
                host,
                what: "flush conntrack over netlink (and no conntrack binary to fall back on: \
                       install the conntrack package)"
                    .into(),
                source: netlink_err,
            });
        }
        for family in ["ipv4", "ipv6"] {
            self.exec(&["conntrack", "-F", "-f", family], None)?;
        }
        Ok(())
    }

    /// Stop the host: unmount its debug mount, end its thread (cancelling its
    /// tasks, killing its children), release the namespace. Every error is
    /// reported; the steps after a failed one still run.
    pub fn shutdown(mut self) -> Result<(), Vec<LabError>> {
        let errors = self.teardown();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn teardown(&mut self) -> Vec<LabError> {
        let mut errors = Vec::new();
        if let Some(mount) = self.mount.take() {
            if let Err(e) = remove_mount(&mount) {
                errors.push(LabError::Sys {
                    host: self.name.to_string(),
                    what: format!("remove debug mount {}", mount.display()),
                    source: e,
                });
            }
        }
        // Closing the job channel ends the thread's loop; it drops its tasks and
        // runtime, and its exit fires the children's parent-death signal.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            if let Err(panic) = thread.join() {
                errors.push(LabError::Panicked {
                    host: self.name.to_string(),
                    message: error::panic_message(&*panic),
                });
            }
        }
        errors
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for e in self.teardown() {
            eprintln!("lab: teardown: {e}");
        }
    }
}

impl Starting {
    /// Wait for the host thread to be ready, then add the debug mount if asked.
    pub(crate) fn finish(self, mount_tag: Option<String>) -> Result<Host> {
        let Starting {
            name,
            ready,
            jobs,
            thread,
        } = self;
        let fd = match ready.recv() {
            Ok(Ok(fd)) => fd,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let message = match thread.join() {
                    Err(panic) => error::panic_message(&*panic),
                    Ok(()) => "the host thread ended during setup".into(),
                };
                return Err(LabError::Panicked {
                    host: name.to_string(),
                    message,
                });
            }
        };
        let inode =
            sys::ns_inode(fd.as_fd()).map_err(error::sys(&name, "stat the namespace fd"))?;
        let mut host = Host {
            name,
            netns: fd,
            inode,
            jobs: Some(jobs),
            thread: Some(thread),
            mount: None,
        };
        if let Some(tag) = mount_tag {
            let path = mount_path(&tag, &host.name);
            add_mount(host.netns.as_fd(), &path).map_err(error::sys(
                &host.name,
                format!("debug mount {}", path.display()),
            ))?;
            host.mount = Some(path);
        }
        Ok(host)
    }
}

fn host_main(
    name: Arc<str>,
    ready: std::sync::mpsc::Sender<Result<Arc<OwnedFd>>>,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let setup = || -> Result<(OwnedFd, tokio::runtime::Runtime)> {
        let fd = sys::unshare_thread_netns().map_err(error::sys(&name, "unshare(CLONE_NEWNET)"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(error::sys(&name, "build the tokio runtime"))?;
        Ok((fd, rt))
    };
    let (fd, rt) = match setup() {
        Ok((fd, rt)) => (Arc::new(fd), rt),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let netlink = match init_namespace(&name).await {
            Ok(h) => h,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        CURRENT.with(|c| {
            *c.borrow_mut() = Some(Current {
                name: name.clone(),
                netlink,
                netns: fd.clone(),
            })
        });
        if ready.send(Ok(fd)).is_err() {
            return;
        }
        while let Some(job) = jobs.recv().await {
            tokio::task::spawn_local(job());
        }
    });
    // Dropping the LocalSet cancels the host's remaining tasks (servers) and
    // their kill-on-drop children, before the runtime goes.
    drop(local);
    drop(rt);
    CURRENT.with(|c| c.borrow_mut().take());
}

/// Sysctls every lab namespace gets before any link exists: IPv6 on, no duplicate
/// address detection (the first packets would fail while it runs), no router
/// solicitations, and MLD report retransmissions at once instead of at random
/// within a second: both would otherwise show up in the target's counters during
/// the first probes, as noise (measured: 2 MLDv2 reports through the target's
/// OUTPUT within the first second of every lab).
const NAMESPACE_SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv6.conf.all.disable_ipv6", "0"),
    ("net.ipv6.conf.default.disable_ipv6", "0"),
    ("net.ipv6.conf.all.accept_dad", "0"),
    ("net.ipv6.conf.default.accept_dad", "0"),
    ("net.ipv6.conf.all.router_solicitations", "0"),
    ("net.ipv6.conf.default.router_solicitations", "0"),
    ("net.ipv6.conf.all.mldv2_unsolicited_report_interval", "0"),
    (
        "net.ipv6.conf.default.mldv2_unsolicited_report_interval",
        "0",
    ),
    ("net.ipv6.conf.all.mldv1_unsolicited_report_interval", "0"),
    (
        "net.ipv6.conf.default.mldv1_unsolicited_report_interval",
        "0",
    ),
];

async fn init_namespace(name: &Arc<str>) -> Result<rtnetlink::Handle> {
    for (key, value) in NAMESPACE_SYSCTLS {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(error::sys(name, format!("write {key}={value}")))?;
    }
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(error::sys(name, "open a netlink socket"))?;
    tokio::task::spawn_local(conn);
    // lo is always index 1 in a new namespace.
    handle
        .link()
        .set(rtnetlink::LinkUnspec::new_with_index(1).up().build())
        .execute()
        .await
        .map_err(error::netlink(name, "set lo up"))?;
    Ok(handle)
}
