//! The installer's one integration-test binary.
