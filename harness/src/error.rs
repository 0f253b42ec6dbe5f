//! The lab's error type: every variant names the host and what was being done.

use std::io;

use crate::backend::BackendError;

/// What went wrong building, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("host `{host}`: {what}: {source}{}", hint(source))]
    Sys {
        host: String,
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("host `{host}`: netlink: {what}: {source}")]
    Netlink {
        host: String,
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("host `{host}`: its thread is gone (it panicked or was shut down); rebuild the lab")]
    HostGone { host: String },
    #[error("host `{host}`: its thread panicked: {message}")]
    Panicked { host: String, message: String },
    #[error("host `{host}`: {source}")]
    Backend {
        host: String,
        #[source]
        source: BackendError,
    },
    #[error("host `{host}`: cannot parse `{command}` output at line {line}: {reason}")]
    Parse {
        host: String,
        command: String,
        line: usize,
        reason: String,
    },
    #[error("no ruleset loaded on the target: call `Lab::load` before reading counters")]
    NoBackend,
    #[error(
        "the target already has {loaded} rules; refusing to load {asked} rules into the same lab (build a new lab per backend)"
    )]
    MixedBackends {
        loaded: crate::backend::Backend,
        asked: crate::backend::Backend,
    },
}

/// What to do next when the kernel said no for lack of privilege.
fn hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            " (the lab needs root and a kernel with network namespaces: run with sudo)"
        }
        _ => "",
    }
}

/// A short result alias for the lab.
pub type Result<T, E = LabError> = std::result::Result<T, E>;

pub(crate) fn sys(host: &str, what: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
    let host = host.to_owned();
    let what = what.into();
    move |source| LabError::Sys { host, what, source }
}

pub(crate) fn netlink(
    host: &str,
    what: impl Into<String>,
) -> impl FnOnce(rtnetlink::Error) -> LabError {
    let host = host.to_owned();
    let what = what.into();
    move |source| LabError::Netlink { host, what, source }
}

/// The text of a panic payload, for reports.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_errors_say_what_to_do() {
        let e = LabError::Sys {
            host: "target".into(),
            what: "unshare(CLONE_NEWNET)".into(),
            source: io::Error::from_raw_os_error(libc::EPERM),
        };
        let text = e.to_string();
        assert!(
            text.starts_with("host `target`: unshare(CLONE_NEWNET): "),
            "{text}"
        );
        assert!(text.ends_with("run with sudo)"), "{text}");
        let e = LabError::Sys {
            host: "target".into(),
            what: "find link eth0".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert!(!e.to_string().contains("sudo"), "{e}");
    }
}
