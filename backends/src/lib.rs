//! Hecate's built-in backends, one file per backend. Each registers itself with `typetag` (so
//! YAML `type:` finds it) and with the core's registry (so `hecate backends` lists it).

pub mod cluster;
pub mod gitops;
mod kube_access;
mod kube_credentials;
pub mod node;
pub mod notify;
pub mod power;
pub mod sim_world;

/// Call once from the binary. Registrations live in statics the linker may drop from a crate
/// nothing references; this function is that reference.
pub fn link() {}
