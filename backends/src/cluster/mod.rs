//! Kubernetes API backends.

pub mod simulated;
