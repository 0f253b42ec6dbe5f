//! Safe apply: snapshot, a detached rollback guard, confirmation from a new session.
