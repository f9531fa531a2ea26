//! Shared by the tests that replay the trace corpus.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The corpus: `HECATE_TRACES_DIR`, else `../shared/traces` beside the clone (where CI puts it).
pub fn traces_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HECATE_TRACES_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces")
}

/// The physics corpus: `HECATE_PHYSICS_TRACES_DIR`, else `../shared/traces-physics` beside the
/// clone.
pub fn physics_traces_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HECATE_PHYSICS_TRACES_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces-physics")
}

/// The ground truth in a trace's header comments, which only the tests' judges read.
pub fn truth(path: &Path) -> BTreeMap<String, Option<f64>> {
    fs::read_to_string(path)
        .expect("trace readable")
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.split_whitespace().next().and_then(|v| v.parse().ok())))
        .collect()
}
