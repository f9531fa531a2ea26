//! Hecate backends.
