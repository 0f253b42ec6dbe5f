//! The one command runner: every child portcullis runs to completion (the
//! `*-restore`/`*-save` calls here, the lab's iptables and conntrack calls) goes
//! through [`run_prepared`], usually by way of [`run`].
//!
//! # Why a runner at all
//!
//! A child that runs to completion has up to three pipes: stdin we write, stdout
//! and stderr we read. Doing them one after the other deadlocks or lies:
//!
//! - Writing all of stdin before reading anything blocks forever once the child
//!   fills its stdout or stderr pipe (64 KiB) before it has read all its input:
//!   it waits for us to read, we wait for it to read.
//! - A child may exit before it has read all of its input: `iptables-restore`
//!   stops at the first bad line. Writing the rest then fails with `EPIPE`, and a
//!   runner that reports that write error says "Broken pipe" where the child's
//!   stderr said which line was bad.
//!
//! # The threads
//!
//! Two threads per call, both ended before [`run_prepared`] returns:
//!
//! - The calling thread spawns the child (so the child is forked from it: a lab
//!   command's parent-death signal is tied to this thread, which is blocked until
//!   the child has exited), then reads stdout and stderr to their ends and reaps
//!   the child ([`std::process::Child::wait_with_output`], which polls both pipes
//!   at once, so neither can fill up while the other is read).
//! - When there is input, a scoped thread writes it to the child's stdin and
//!   closes the pipe (the child sees end of input). It borrows the input: no copy.
//!   Without input, stdin is `/dev/null`.
//!
//! Then the outcome, in this order: a child that failed is reported by its exit
//! status and stderr ([`BackendError::Failed`]), whatever happened to the write;
//! a child that succeeded without reading everything (the writer got `EPIPE`)
//! succeeded; any other write error is [`BackendError::Spawn`]. Its stdout comes
//! back as a string (lossy UTF-8).
//!
//! # Namespaces
//!
//! The runner changes no namespace: the child inherits the calling thread's,
//! unless the [`Command`] carries a `pre_exec` hook that enters another between
//! fork and exec. That is how the lab runs commands inside a host from any thread
//! (`portcullis_harness::Host::exec`): the hook runs in the forked child only, so
//! neither thread here ever changes namespace. The writer thread only touches a
//! pipe.
//!
//! Refuses: shell strings (every command is an argument vector or a prepared
//! [`Command`]).

use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::backend::BackendError;

/// Run `argv` (no shell) to completion with optional stdin; stdout on success, a
/// [`BackendError`] naming the command line and the child's stderr otherwise.
pub fn run(argv: &[&str], stdin: Option<&str>) -> Result<String, BackendError> {
    let (program, args) = argv.split_first().expect("argv is never empty");
    let mut cmd = Command::new(program);
    cmd.args(args);
    run_prepared(&mut cmd, &argv.join(" "), stdin)
}

/// Run a prepared `cmd` to completion (see the module docs for the threads);
/// stdout on success, a [`BackendError`] otherwise. `command_line` is what errors
/// call it (the argument vector, say, when `cmd` runs a resolved path or carries
/// a `pre_exec` hook). The runner sets the child's stdin (a pipe when `stdin` is
/// given, `/dev/null` otherwise), stdout and stderr (pipes); the rest of `cmd`
/// (arguments, environment, hooks) is the caller's.
pub fn run_prepared(
    cmd: &mut Command,
    command_line: &str,
    stdin: Option<&str>,
) -> Result<String, BackendError> {
    let spawn_err = |source: std::io::Error| BackendError::Spawn {
        command: command_line.to_owned(),
        source,
    };
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let pipe = child.stdin.take();
    let (out, written) = std::thread::scope(|s| {
        let writer = match (stdin, pipe) {
            (Some(input), Some(mut pipe)) => Some(s.spawn(move || {
                pipe.write_all(input.as_bytes())
                // Dropping `pipe` closes it: the child sees end of input.
            })),
            _ => None,
        };
        let out = child.wait_with_output();
        let written = writer.map_or(Ok(()), |w| {
            w.join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the stdin writer panicked")))
        });
        (out, written)
    });
    let out = out.map_err(spawn_err)?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        let stderr = if stderr.is_empty() {
            // "exit status: 3", or "signal: 9 (SIGKILL)".
            out.status.to_string()
        } else {
            stderr
        };
        return Err(BackendError::Failed {
            command: command_line.to_owned(),
            stderr,
        });
    }
    match written {
        // The child succeeded without reading everything: its exit status decides.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(spawn_err(e)),
        _ => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
    }
}

/// The first executable named `name` on PATH (plus the sbin directories, which a
/// non-root PATH often lacks).
pub fn find_in_path(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/sbin", "/sbin", "/usr/local/sbin"];
    std::env::split_paths(&path)
        .chain(extra.iter().map(std::path::PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake `*-restore` that rejects its input without reading it, the way
    /// iptables-restore stops at the first bad line.
    #[test]
    fn a_child_that_stops_reading_stdin_still_reports_its_stderr() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-restore");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho 'iptables-restore: line 2 failed' >&2\nexit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Far more than a pipe buffer, so the write must hit the closed pipe.
        let input = "-A INPUT -j DROP\n".repeat(64 * 1024);
        let fake = fake.display().to_string();
        match run(&[&fake, "-w"], Some(&input)) {
            Err(BackendError::Failed { command, stderr }) => {
                assert_eq!(command, format!("{fake} -w"));
                assert_eq!(stderr, "iptables-restore: line 2 failed");
            }
            other => panic!("expected the child's stderr, got {other:?}"),
        }
    }

    #[test]
    fn stdout_comes_back_and_stdin_is_read() {
        assert_eq!(run(&["cat"], Some("a\nb\n")).unwrap(), "a\nb\n");
        assert_eq!(run(&["true"], None).unwrap(), "");
        assert!(matches!(
            run(&["/nonexistent/portcullis-test"], None),
            Err(BackendError::Spawn { .. })
        ));
    }

    /// A child that writes more than a pipe buffer to stdout and to stderr before
    /// it reads any input must not deadlock against the writer.
    #[test]
    fn a_child_that_fills_its_output_pipes_before_reading_does_not_deadlock() {
        let script = "head -c 200000 /dev/zero; head -c 200000 /dev/zero >&2; wc -c";
        let input = "x".repeat(200_000);
        let out = run(&["sh", "-c", script], Some(&input)).unwrap();
        assert_eq!(out.len(), 200_000 + "200000\n".len());
        assert!(out.ends_with("200000\n"), "{:?}", &out[out.len() - 20..]);
    }

    /// A prepared command keeps what the caller set (here an environment
    /// variable) and is named in errors by the caller's command line.
    #[test]
    fn a_prepared_command_keeps_its_settings_and_its_display_name() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "printf %s \"$PC_RUNNER_TEST\"; cat >/dev/null"])
            .env("PC_RUNNER_TEST", "set");
        assert_eq!(run_prepared(&mut cmd, "sh", Some("in")).unwrap(), "set");
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        match run_prepared(&mut cmd, "the display name", None) {
            Err(BackendError::Failed { command, stderr }) => {
                assert_eq!(command, "the display name");
                assert_eq!(stderr, "exit status: 3");
            }
            other => panic!("expected Failed, got {other:?}"),
        }
    }
}
