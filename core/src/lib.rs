//! Hecate's core: plugin traits, configuration, policy, planning and the engine.
//!
//! The core owns *what* happens and *when*; backends (in `hecate-backends` or third-party crates)
//! own *how* to talk to one kind of thing. No network crates live here.

pub mod budget;
pub mod error;
pub mod history;
pub mod policy;
pub mod power;
pub mod trace;

pub use error::{BackendError, ErrorKind};
