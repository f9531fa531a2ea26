//! Shared by the tests that replay the trace corpus.

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

/// The ground truth in a trace's header comments, which only the tests' judges read.
#[allow(dead_code)] // not every test that shares this module judges
pub fn truth(path: &Path) -> BTreeMap<String, Option<f64>> {
    fs::read_to_string(path)
        .expect("trace readable")
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.split_whitespace().next().and_then(|v| v.parse().ok())))
        .collect()
}
