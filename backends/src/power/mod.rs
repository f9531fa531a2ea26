//! Power sources.

pub mod nut;
pub mod simulated;
