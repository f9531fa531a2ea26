//! `hecate drill` on the simulated cluster: a dry run changes nothing, an executed drill records a
//! `drill` run for each half and its shutdown teaches the budget, and a drill is refused while a
//! UPS is on battery or the daemon is not watching.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hecate_test_support::{HecateDaemon, wait_until};
use serde_json::Value;

fn hecate() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hecate"))
}

fn run(args: &[&str], config: &Path) -> (i32, String) {
    let out = Command::new(hecate()).args(args).arg("--config").arg(config).env("NO_COLOR", "1").output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), text)
}

/// A simulated UPS (with `script` events) and a simulated three-node cluster; the budget learns
/// from a single run.
fn body(script: &str) -> String {
    let sim = "{ type: simulated, world: drill, step_duration: 100ms, boot_time: 200ms }";
    format!(
        "host: drill-test
daemon: {{ poll_interval: 200ms, metrics_listen: null }}
budget: {{ default_shutdown_budget: 5m, min_runs: 1 }}
power_sources:
  - {{ type: simulated, name: ups, battery_runtime: 20m, script: [ {script} ] }}
cluster: {{ type: simulated, world: drill, api_delay: 200ms, ready_delay: 200ms, drain_duration: 100ms }}
nodes:
  - {{ name: s1, address: 10.0.0.1, role: server, init: true, controllers: [ {sim} ] }}
  - {{ name: a1, address: 10.0.0.2, role: agent, controllers: [ {sim} ] }}
  - {{ name: a2, address: 10.0.0.3, role: agent, controllers: [ {sim} ] }}
notifiers: [ {{ type: log }} ]
shutdown: {{ step_timeout: 20s, controller_timeout: 5s }}
startup: {{ step_timeout: 20s, controller_timeout: 5s, reachable_timeout: 20s, api_timeout: 20s, nodes_ready_timeout: 20s }}
"
    )
}

fn config(dir: &Path, script: &str) -> PathBuf {
    let path = dir.join("hecate.yaml");
    std::fs::write(&path, format!("state_dir: {}\n{}", dir.join("state").display(), body(script))).unwrap();
    path
}

fn runs(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("state/runs.json"))
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or_default()
}

#[test]
fn a_drill_records_both_halves_and_its_shutdown_teaches_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "");

    let (code, out) = run(&["drill"], &path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("shutdown plan (drill") && out.contains("startup plan (drill"), "{out}");
    assert!(out.contains("dry run: nothing was done"), "{out}");
    assert!(runs(dir.path()).is_empty(), "a dry run records nothing");

    let (code, out) = run(&["drill", "--execute"], &path);
    assert_eq!(code, 0, "{out}");
    let records = runs(dir.path());
    let parts: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| (r["kind"].as_str().unwrap(), r["part"].as_str().unwrap(), r["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(parts, [("drill", "shutdown", "success"), ("drill", "startup", "success")], "{records:#?}");
    assert!(records[0]["plan"]["id"].as_str().unwrap().starts_with("fnv1a64:"), "the shutdown carries the plan");
    let shutdown_s = records[0]["duration_s"].as_f64().unwrap();

    // The report: each half's stages, the budget before and after, the battery now.
    assert!(out.contains("drill report"), "{out}");
    for stage in ["drain", "stop-agents", "power-off", "wait-ready"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(stage)), "{stage} missing:\n{out}");
    }
    assert!(out.contains("budget before the drill: 300.0 s: default_shutdown_budget"), "{out}");
    assert!(out.contains("budget now:") && out.contains("max of last 1 successful shutdown"), "{out}");
    assert!(out.contains("ups ups: 1200 s of runtime now"), "{out}");

    // The budget in force is the drill's shutdown.
    let (_, status) = run(&["status", "--json"], &path);
    let status: Value = serde_json::from_str(
        status.lines().skip_while(|l| !l.starts_with('{')).collect::<Vec<_>>().join("\n").as_str(),
    )
    .unwrap();
    assert_eq!(status["budget"]["source"]["kind"], "history", "{status:#}");
    assert!((status["budget"]["seconds"].as_f64().unwrap() - shutdown_s).abs() < 1e-6, "{status:#}");

    // A second drill compares with the first.
    let (code, out) = run(&["drill", "--execute"], &path);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("earlier shutdowns: up to") && out.contains("in 1 run(s)"), "{out}");
    assert_eq!(runs(dir.path()).len(), 4);
}

#[test]
fn a_drill_is_refused_on_battery_and_while_the_daemon_is_not_watching() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "{ at: 0s, event: mains_lost }");
    let (code, out) = run(&["drill", "--execute"], &path);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refusing the drill: ups ups is not on mains"), "{out}");
    assert!(runs(dir.path()).is_empty());

    // A daemon whose UPS runs low shuts the cluster down: no drill then either.
    let daemon = HecateDaemon::start(
        hecate(),
        &body("{ at: 0s, event: mains_lost }").replace("battery_runtime: 20m", "battery_runtime: 30s"),
    );
    wait_until("the daemon to leave watching", Duration::from_secs(60), || match daemon.status()["phase"].as_str() {
        Some("watching") | None => Err(format!("{}", daemon.status()["phase"])),
        Some(_) => Ok(()),
    });
    let (code, out) = run(&["drill", "--execute"], daemon.config());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("refusing the drill: the daemon is "), "{out}");
    assert!(daemon.runs_of("drill").is_empty());
}

#[test]
fn a_running_daemon_learns_the_budget_a_drill_taught() {
    let daemon = HecateDaemon::start(hecate(), &body(""));
    wait_until("the daemon to watch", Duration::from_secs(30), || match daemon.status()["phase"].as_str() {
        Some("watching") => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(daemon.status()["budget"]["source"]["kind"], "default");
    let (code, out) = run(&["drill", "--execute"], daemon.config());
    assert_eq!(code, 0, "{out}");
    let shutdown_s = daemon.runs_of("drill")[0]["duration_s"].as_f64().unwrap();
    wait_until("the daemon's budget to be the drill's", Duration::from_secs(30), || {
        let budget = &daemon.status()["budget"];
        match (budget["source"]["kind"].as_str(), budget["seconds"].as_f64()) {
            (Some("history"), Some(s)) if (s - shutdown_s).abs() < 1e-6 => Ok(()),
            _ => Err(format!("{budget}")),
        }
    });
}
