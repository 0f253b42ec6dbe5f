//! The only module of the harness that makes raw system calls: unsharing a
//! thread's network namespace, preparing children (parent-death signal, entering
//! a namespace after fork), bind mounts for the debug mode, and signals.
//!
//! It refuses to change the namespace of any thread but the one that calls
//! [`unshare_thread_netns`], and that thread must be a lab host's own thread:
//! `setns` is only ever called in a forked child, between fork and exec.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Move the calling thread (and only it) into a new, empty network namespace and
/// return an fd that holds that namespace.
///
/// Namespaces are per thread: `unshare(CLONE_NEWNET)` changes the calling task's
/// nsproxy, so the other threads of the process, the test thread included, stay
/// where they were. The fd comes from `/proc/thread-self`, not `/proc/self`, which
/// names the main thread's namespace.
pub fn unshare_thread_netns() -> io::Result<OwnedFd> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
    let file = std::fs::File::open("/proc/thread-self/ns/net")?;
    Ok(OwnedFd::from(file))
}

/// The inode of a namespace fd: the identity `ip netns identify` and
/// `/proc/PID/ns/net` (`net:[INODE]`) show.
pub fn ns_inode(fd: BorrowedFd<'_>) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    Ok(std::fs::metadata(path)?.ino())
}

/// Prepare `cmd` so that its child dies with the thread that spawns it
/// (`PR_SET_PDEATHSIG` = SIGKILL) and, when `netns` is given, enters that network
/// namespace before exec.
///
/// The parent-death signal fires when the spawning THREAD exits, not the process:
/// spawn long-lived children from a lab host's thread, which lives exactly as long
/// as the host.
pub fn prepare_child(cmd: &mut Command, netns: Option<Arc<OwnedFd>>) {
    let parent = std::process::id();
    let hook = move || -> io::Result<()> {
        // Only async-signal-safe calls here: no allocation between fork and exec.
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
        // The parent may have died before the prctl took effect; then no signal
        // would ever come, so refuse to run orphaned.
        if nix::unistd::getppid().as_raw() as u32 != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        if let Some(fd) = &netns {
            // The forked child is single-threaded and about to exec: entering the
            // namespace here moves nobody but the child.
            nix::sched::setns(fd, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
        }
        Ok(())
    };
    // SAFETY: the hook runs in the child between fork and exec. It calls only
    // prctl, getppid and setns (async-signal-safe syscalls), reads captured data,
    // and allocates nothing (the error path builds an io::Error from a raw errno,
    // which does not allocate).
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// Send SIGKILL to `pid`; a process that is already gone is not an error.
pub fn kill(pid: u32) -> io::Result<()> {
    match nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether a process with this pid exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => true,
        },
        Err(_) => false,
    }
}

/// Bind-mount the namespace held by `fd` on `target` (an existing empty file), the
/// way `ip netns add` pins a namespace under /run/netns.
pub fn bind_netns(fd: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io::Error::from)
}

/// Detach the mount on `target`; "not mounted" is not an error.
pub fn unmount(target: &Path) -> io::Result<()> {
    match nix::mount::umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the process runs as root (namespaces, netlink and iptables need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `getsockopt(fd, level, name)` with `buf` as both the input (some options,
/// like `IPT_SO_GET_INFO`, read a table name from it) and the output; returns
/// how many bytes the kernel wrote.
pub fn getsockopt_bytes(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    buf: &mut [u8],
) -> io::Result<usize> {
    let mut len = libc::socklen_t::try_from(buf.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "getsockopt buffer too large"))?;
    // SAFETY: `buf` is valid for writes of `len` bytes, `len` is a live local the
    // kernel updates, and the kernel writes at most `len` bytes into `buf`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(len as usize)
}
