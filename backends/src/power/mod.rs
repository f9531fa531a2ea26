//! Power sources.

pub mod simulated;
