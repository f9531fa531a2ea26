//! Node controllers.

pub mod simulated;
