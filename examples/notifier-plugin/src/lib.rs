//! An example third-party Hecate notifier, `jsonl_file`: appends every event as one JSON line to a
//! file (for a dashboard, a log shipper, or a test). It uses only `hecate-core`'s public API: a
//! config struct selected by YAML `type:` through typetag, a row in Hecate's backend registry
//! through `hecate_core::register_backend!`, and the `Notifier` trait.
//!
//! Link it into a binary with [`link`] and call Hecate's `main` (see `hecate-with-plugin/`).

pub mod jsonl_file;

/// Call once from the binary that links this crate. typetag and inventory registrations live in
/// statics the linker may drop from a crate nothing references; this function is that reference.
pub fn link() {}
