//! Notifiers.

pub mod log;
