//! `hecate status` in words: the phase, why, what happens next; the nodes as the runs left them;
//! the last runs as a short table. A real daemon on the simulation shuts the cluster down and
//! stays in `shut_down` (mains do not come back).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hecate_test_support::{HecateDaemon, wait_until};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// configs/sim.yaml without its state_dir line (HecateDaemon writes its own), mains lost for good
/// and a fast battery, with no automatic startup.
fn yaml() -> String {
    let mut y = std::fs::read_to_string(repo().join("configs/sim.yaml")).unwrap();
    for (from, to) in [
        ("state_dir: /tmp/hecate-sim\n", ""),
        ("poll_interval: 1s", "poll_interval: 200ms"),
        ("battery_runtime: 36s", "battery_runtime: 12s"),
        ("      - { at: 48s, event: mains_back }\n", ""),
        ("default_shutdown_budget: 12s", "default_shutdown_budget: 4s"),
        ("startup_on_power_return: true", "startup_on_power_return: false"),
    ] {
        assert!(y.contains(from), "sim.yaml no longer contains {from:?}");
        y = y.replace(from, to);
    }
    y
}

fn status(daemon: &HecateDaemon, json: bool) -> (Option<i32>, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hecate"));
    c.args(["status", "--config"]).arg(daemon.config()).env("RUST_LOG", "error");
    if json {
        c.arg("--json");
    }
    let o = c.output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned())
}

#[test]
fn status_says_the_phase_why_and_what_next_with_the_nodes_and_the_last_runs() {
    let daemon = HecateDaemon::start(Path::new(env!("CARGO_BIN_EXE_hecate")), &yaml());
    wait_until("the shutdown recorded", Duration::from_secs(60), || {
        if daemon.runs_of("shutdown").is_empty() { Err(daemon.log()) } else { Ok(()) }
    });
    wait_until("the shut_down phase", Duration::from_secs(20), || {
        if daemon.status()["phase"] == "shut_down" { Ok(()) } else { Err(daemon.status().to_string()) }
    });
    let (code, out) = status(&daemon, false);
    // On battery still: degraded, as before.
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("sim-coordinator: the cluster is shut down since "), "{out}");
    assert!(out.contains("  why: the cluster was shut down (success); waiting for mains"), "{out}");
    assert!(out.contains("  triggered by: ups sim-ups: on battery: estimated runtime"), "{out}");
    assert!(
        out.contains("  next: once mains have been back for 3s the daemon watches the power again; the cluster comes back with hecate-bootstrap"),
        "{out}"
    );
    // No Rust enum, no raw JSON.
    assert!(!out.contains("ShutDown") && !out.contains("{\""), "{out}");
    // The nodes as the shutdown left them.
    let row = |name: &str| -> Vec<String> {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no row for {name}:\n{out}"));
        line.split_whitespace().map(String::from).collect()
    };
    for n in ["titan-0a", "titan-0b", "titan-1a"] {
        let r = row(n);
        assert_eq!(&r[1..7], ["off", "no", "stopped", "no", "by", "hecate"], "{n}: {r:?}\n{out}");
        assert_eq!(r[7], "shutdown", "{out}");
    }
    assert!(out.contains("cluster: gitops suspended (shutdown "), "{out}");
    // The last runs as a table.
    assert!(out.contains("last runs (runs.json):"), "{out}");
    let run = out.lines().find(|l| l.contains("  shutdown  success  ")).unwrap_or_else(|| panic!("{out}"));
    assert!(run.contains("ups sim-ups: on battery"), "{run}");

    // --json keeps its shape and exit code, and carries the same.
    let (code, out) = status(&daemon, true);
    assert_eq!(code, Some(1));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["phase"], "shut_down");
    assert_eq!(v["health"]["exit_code"], 1);
    assert!(v["next"].as_str().unwrap().starts_with("once mains have been back"), "{v}");
    assert_eq!(v["cluster_view"]["nodes"]["titan-0a"]["power"]["value"], "off");
    assert_eq!(v["last_runs"][0]["kind"], "shutdown");
    daemon.stop(Duration::from_secs(5));
}
