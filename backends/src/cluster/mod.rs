//! Kubernetes API backends.

pub mod kube;
pub mod simulated;
