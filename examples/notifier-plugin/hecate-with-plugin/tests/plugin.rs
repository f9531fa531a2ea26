//! The binary with the example plugin linked in: `hecate backends` lists `jsonl_file`, `config
//! check` accepts it, and a shutdown run delivers its events to it before the process exits.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use hecate_core::notify::Event;

async fn hecate(args: &[&str]) -> Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hecate-with-plugin"))
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), child).await.expect("hecate-with-plugin hung").unwrap()
}

fn text(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn write_config(dir: &Path, world: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let events = dir.join("events.jsonl");
    let cfg = dir.join("hecate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "host: plugin-test
state_dir: {state}
power_sources: [ {{ type: simulated, name: ups }} ]
nodes:
  - {{ name: s1, address: a, role: server, init: true, controllers: [ {{ type: simulated, world: {world}, step_duration: 50ms }} ] }}
  - {{ name: a1, address: b, role: agent, controllers: [ {{ type: simulated, world: {world}, step_duration: 50ms }} ] }}
notifiers:
  - {{ type: jsonl_file, path: {events} }}
",
            state = dir.join("state").display(),
            events = events.display()
        ),
    )
    .unwrap();
    (cfg, events)
}

#[tokio::test]
async fn backends_lists_the_plugin() {
    let out = hecate(&["backends"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.split_whitespace().nth(1) == Some("jsonl_file")).unwrap_or_else(|| {
        panic!("no jsonl_file line in {stdout}");
    });
    assert!(line.starts_with("notifier") && line.contains("example plugin"), "{line}");
    // Hecate's own backends are still there.
    assert!(stdout.lines().any(|l| l.split_whitespace().nth(1) == Some("webhook")), "{stdout}");

    let out = hecate(&["backends", "--json"]).await;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list.as_array().unwrap().iter().any(|b| b["type"] == "jsonl_file" && b["role"] == "notifier"), "{list}");
}

#[tokio::test]
async fn config_check_accepts_the_plugin_type_and_the_schema_offers_it() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, _) = write_config(dir.path(), "plugin-check");
    let out = hecate(&["config", "check", cfg.to_str().unwrap()]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = hecate(&["config", "schema"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"const\": \"jsonl_file\""), "{}", text(&out));
}

#[tokio::test]
async fn a_shutdown_run_delivers_its_events_to_the_plugin_before_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, events) = write_config(dir.path(), "plugin-run");
    let out = hecate(&["shutdown", "--config", cfg.to_str().unwrap(), "--execute", "--reason", "plugin test"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let lines = std::fs::read_to_string(&events).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let events: Vec<Event> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<String> = events.iter().map(|e| e.kind.to_string()).collect();
    assert_eq!(kinds.first().map(String::as_str), Some("shutdown_triggered"), "{kinds:?}");
    assert!(events[0].message.contains("plugin test"), "{:?}", events[0]);
    assert_eq!(events[0].host, "plugin-test");
    let last_stage = events.iter().rev().find(|e| e.kind.as_str() == "stage_finished").unwrap();
    assert_eq!(last_stage.details["index"], last_stage.details["total"], "{kinds:?}");
    // Queued just before the process ends: the exit flush sent it.
    let done = events.last().unwrap();
    assert_eq!(done.kind.as_str(), "shutdown_done", "{kinds:?}");
    assert_eq!(done.details["outcome"], "success");
}
