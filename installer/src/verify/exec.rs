//! Running probes in the lab: the one place `verify` and the scenario suite touch
//! namespaces, through the harness's `Lab` (every probe runs on its host's own
//! thread; nothing here calls setns).

use portcullis_harness::Backend;

use super::{Options, Report, Row, VerifyError};

/// Build the standard lab for `backend`, load the rules, probe every expectation.
pub fn run_backend(
    _opts: &Options,
    backend: Backend,
    _report: &mut Report,
    _progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>, VerifyError> {
    Err(VerifyError::Lab {
        backend,
        message: "the lab is not built yet".into(),
    })
}
