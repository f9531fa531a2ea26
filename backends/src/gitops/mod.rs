//! GitOps bootstrap backends.

pub mod flux_gitea;
pub mod simulated;
