//! The snapshot: the live rules of both families as `*-save` prints them, kept in
//! the state directory, and the one restore per family that puts them back.
//!
//! A fresh host (or namespace) may have no `*filter` table at all: `*-save` then
//! prints nothing for it, and restoring nothing would leave the applied rules in
//! place. A snapshot without a filter table therefore gets an explicit one with
//! ACCEPT policies and no rules, which is what "no table" means to the kernel.

use portcullis_netfilter::{Backend, BackendError, Family};

use super::state::{StateDir, StateError, snapshot_name};

/// What went wrong taking or restoring a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot snapshot the live {family} rules: {source}")]
    Save {
        family: Family,
        #[source]
        source: BackendError,
    },
    #[error("cannot restore the {family} snapshot: {source}")]
    Restore {
        family: Family,
        #[source]
        source: BackendError,
    },
    #[error("the {family} snapshot is missing from the state dir; restore by hand from a backup")]
    Missing { family: Family },
    #[error(transparent)]
    State(#[from] StateError),
}

/// The filter table the kernel behaves as when there is none.
const EMPTY_FILTER: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n";

/// Make a `*-save` text restorable as "the rules before": add an empty ACCEPT
/// filter table when the text has none.
pub fn normalize(save: &str) -> String {
    if save.lines().any(|l| l.trim() == "*filter") {
        save.to_owned()
    } else {
        let mut s = save.to_owned();
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("# portcullis: no filter table was loaded; this is its empty equivalent\n");
        s.push_str(EMPTY_FILTER);
        s
    }
}

/// Save both families' live rules into the state directory (0600, fsynced).
pub fn take(state: &StateDir, backend: Backend) -> Result<(), SnapshotError> {
    for family in Family::ALL {
        let text = portcullis_netfilter::backend::save(backend, family, false)
            .map_err(|source| SnapshotError::Save { family, source })?;
        state.write_atomic(snapshot_name(family), normalize(&text).as_bytes())?;
    }
    Ok(())
}

/// Restore `families` from the snapshot, one `*-restore -w` call each. Keeps going
/// after a failure and reports every one.
pub fn restore(state: &StateDir, backend: Backend, families: &[Family]) -> Vec<SnapshotError> {
    let mut errors = Vec::new();
    for &family in families {
        let text = match state.read(snapshot_name(family)) {
            Ok(Some(t)) => t,
            Ok(None) => {
                errors.push(SnapshotError::Missing { family });
                continue;
            }
            Err(e) => {
                errors.push(e.into());
                continue;
            }
        };
        if let Err(source) = portcullis_netfilter::backend::restore(backend, family, &text, false) {
            errors.push(SnapshotError::Restore { family, source });
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_save_becomes_an_accepting_filter_table() {
        assert_eq!(
            normalize(""),
            format!(
                "# portcullis: no filter table was loaded; this is its empty equivalent\n{EMPTY_FILTER}"
            )
        );
        let nat = "*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT";
        assert!(normalize(nat).starts_with("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n# portcullis"));
        let filter = "*filter\n:INPUT DROP [0:0]\nCOMMIT\n";
        assert_eq!(normalize(filter), filter);
    }
}
