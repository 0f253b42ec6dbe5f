//! Probes: the client side of every check. Each probe is an async function that
//! runs on the current lab host's thread (inside its namespace) and returns an
//! [`Outcome`]. The lab wraps probes with the target's counter deltas.

use std::time::Duration;

/// The window a negative probe waits before it decides "no answer". Readiness is
/// checked before a probe runs, so a silent window this short is decisive.
pub const NEGATIVE_WINDOW: Duration = Duration::from_millis(50);

/// What one probe observed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// The exchange completed: connected, answered, resolved, echoed. The detail
    /// says what came back (an address, a status line, a banner).
    Ok(String),
    /// The peer answered with a refusal (TCP RST, ICMP unreachable).
    Refused(String),
    /// Nothing came back within the window.
    NoAnswer,
    /// The probe itself failed (bad certificate, malformed answer, socket error).
    Failed(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// A short lowercase word for tables: `ok`, `refused`, `no-answer`, `failed`.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Ok(_) => "ok",
            Outcome::Refused(_) => "refused",
            Outcome::NoAnswer => "no-answer",
            Outcome::Failed(_) => "failed",
        }
    }
}
