//! Hecate's core: plugin traits, configuration, policy, planning and the engine.
//!
//! The core owns *what* happens and *when*; backends (in `hecate-backends` or third-party crates)
//! own *how* to talk to one kind of thing. No network crates live here.

pub mod budget;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod discharge;
pub mod duration;
pub mod engine;
pub mod error;
pub mod gitops;
pub mod history;
pub mod lifecycle;
pub mod math;
pub mod node;
pub mod notify;
pub mod plan;
pub mod policy;
pub mod power;
pub mod preflight;
pub mod registry;
pub mod runtime;
pub mod secret;
pub mod supervisor;
pub mod text;
pub mod trace;
mod yaml_index;

pub use error::{BackendError, ErrorKind};
pub use runtime::BuildContext;

// Re-exported so backend crates (including third-party ones) register with the same versions.
pub use async_trait::async_trait;
pub use inventory;
pub use schemars;
pub use typetag;
