//! GitOps bootstrap backends.

pub mod simulated;
