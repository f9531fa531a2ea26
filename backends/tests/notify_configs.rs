//! configs/notifiers.yaml stays valid and builds every notifier without touching the network.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use hecate_core::config::Config;
use hecate_core::runtime::Runtime;

#[test]
fn the_notifiers_example_is_valid_and_builds() {
    hecate_backends::link();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/notifiers.yaml");
    let (cfg, warnings) = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    let kinds: Vec<String> =
        cfg.notifiers.iter().map(|n| serde_json::to_value(n).unwrap()["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["log", "webhook", "ntfy", "command", "email"]);
    let rt = Runtime::build(&cfg).unwrap();
    assert_eq!(rt.notifier_names(), ["log", "ops-webhook", "ntfy", "pager", "email"]);
}
