//! The daemon's lifecycle end to end, on the real binary with the simulated UPS and cluster:
//! what a restart finds in the state dir, and a daemon with a backend that cannot be built. The
//! decisions themselves are tested on virtual time in core (`lifecycle_stories.rs`,
//! `supervisor_table.rs`).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hecate_test_support::{HecateDaemon, wait_until};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hecate"))
}

/// configs/sim.yaml without its state_dir line (the harness writes one), with replacements.
fn sim_yaml(replace: &[(&str, &str)]) -> String {
    let mut yaml = std::fs::read_to_string(repo().join("configs/sim.yaml")).unwrap();
    yaml = yaml.replace("state_dir: /tmp/hecate-sim\n", "");
    for (from, to) in replace {
        assert!(yaml.contains(from), "sim.yaml no longer contains {from:?}");
        yaml = yaml.replace(from, to);
    }
    yaml
}

/// A journal as an interrupted shutdown leaves it: the run line and some finished steps.
fn interrupted_journal(state: &Path) {
    let lines = [
        r#"{"event":"run","kind":"shutdown","reason":"ups sim-ups: low runtime","started_at":"2026-11-30T02:00:00.000Z"}"#,
        r#"{"event":"start","step":"notify/triggered","at":"2026-11-30T02:00:00.100Z"}"#,
        r#"{"event":"end","at":"2026-11-30T02:00:00.200Z","outcome":{"id":"notify/triggered","description":"notify","ok":true,"message":"","duration_s":0.1}}"#,
        r#"{"event":"start","step":"suspend-gitops/gitops","at":"2026-11-30T02:00:00.300Z"}"#,
    ];
    std::fs::write(state.join("journal-shutdown.jsonl"), lines.join("\n") + "\n").unwrap();
}

/// Issue 12, scenario 2: the host lost power in the middle of a shutdown and boots with mains
/// on. The daemon must not resume it (the cluster is healthy): it records the run as
/// interrupted, puts the journal aside, notifies, and watches.
#[test]
fn an_interrupted_shutdown_is_not_resumed_at_boot_with_mains_on() {
    let yaml = sim_yaml(&[
        ("{ at: 4s, event: mains_lost }", "{ at: 600s, event: mains_lost }"),
        ("poll_interval: 1s", "poll_interval: 200ms"),
        ("startup_on_power_return: true", "startup_on_power_return: false"),
    ]);
    let d = HecateDaemon::start_with(bin(), &yaml, interrupted_journal);
    let runs = wait_until("the interrupted run to be recorded", Duration::from_secs(30), || {
        let runs = d.runs();
        if runs.is_empty() { Err(format!("no run yet; log:\n{}", d.log())) } else { Ok(runs) }
    });
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["kind"], "shutdown");
    assert_eq!(runs[0]["outcome"], "interrupted", "{runs:?}");
    assert_eq!(runs[0]["trigger_reason"], "ups sim-ups: low runtime");
    let state = d.state_dir().to_path_buf();
    assert!(!state.join("journal-shutdown.jsonl").exists(), "the journal is closed");
    let aside = std::fs::read_dir(&state)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("journal-shutdown.jsonl.interrupted-"));
    assert!(aside, "the journal is kept aside");
    let status = wait_until("watching again", Duration::from_secs(30), || {
        let s = d.status();
        if s["phase"] == "watching" { Ok(s) } else { Err(format!("phase {}", s["phase"])) }
    });
    assert!(status["trigger_reason"].is_null(), "{status}");
    let log = d.stop(Duration::from_secs(10));
    assert!(!log.contains("stage started"), "nothing was shut down:\n{log}");
    assert!(log.contains("\"kind\":\"run_interrupted\""), "notified:\n{log}");
}

/// The same interrupted journal while mains are still out: the shutdown is resumed, skipping the
/// step it had finished.
#[test]
fn an_interrupted_shutdown_is_resumed_while_power_is_failing() {
    let yaml = sim_yaml(&[
        ("{ at: 4s, event: mains_lost }", "{ at: 0s, event: mains_lost }"),
        ("poll_interval: 1s", "poll_interval: 200ms"),
    ]);
    let d = HecateDaemon::start_with(bin(), &yaml, interrupted_journal);
    let runs = wait_until("the resumed shutdown to finish", Duration::from_secs(60), || {
        let runs = d.runs_of("shutdown");
        if runs.is_empty() { Err(format!("log:\n{}", d.log())) } else { Ok(runs) }
    });
    assert_eq!(runs[0]["outcome"], "success", "{runs:?}");
    assert_eq!(runs[0]["started_at"], "2026-11-30T02:00:00Z", "the record continues the interrupted run");
    let log = d.stop(Duration::from_secs(10));
    assert!(
        log.contains("resuming the shutdown interrupted at 2026-11-30T02:00:00.000Z: ups sim-ups is on battery"),
        "{log}"
    );
}

/// Degraded, never blind (issue 12, scenario 6): a node controller whose identity file is
/// missing fails `config check` (with its line), but the daemon still watches the UPS, says what
/// is unavailable in `status` and notifies it.
#[test]
fn a_backend_that_cannot_be_built_fails_the_check_but_not_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-key");
    let ssh = format!(
        "- {{ type: ssh_systemd, user: hecate, identity_file: {}, known_hosts: {} }}\n      - {{ type: simulated, world: sim, step_duration: 500ms, fail: [power_off] }}",
        missing.display(),
        dir.path().join("known_hosts").display()
    );
    let yaml = sim_yaml(&[
        ("- { type: simulated, world: sim, step_duration: 500ms, fail: [power_off] }", &ssh),
        ("{ at: 4s, event: mains_lost }", "{ at: 600s, event: mains_lost }"),
        ("poll_interval: 1s", "poll_interval: 200ms"),
    ]);
    let cfg = dir.path().join("check.yaml");
    std::fs::write(&cfg, format!("state_dir: {}\n{yaml}", dir.path().join("state").display())).unwrap();
    let o = Command::new(bin()).args(["config", "check"]).arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    let line = std::fs::read_to_string(&cfg).unwrap().lines().position(|l| l.contains("ssh_systemd")).unwrap() + 1;
    assert!(err.contains(&format!("{}:{line}:", cfg.display())), "{err}");
    assert!(err.contains("nodes[3].controllers[0]: cannot be built: config:") && err.contains("missing-key"), "{err}");

    let d = HecateDaemon::start(bin(), &yaml);
    let status = wait_until("a poll in status.json", Duration::from_secs(30), || {
        let s = d.status();
        if s["sources"][0]["decision"].is_object() { Ok(s) } else { Err(format!("log:\n{}", d.log())) }
    });
    let unavailable = status["unavailable"].to_string();
    assert!(unavailable.contains("nodes[3].controllers[0]") && unavailable.contains("missing-key"), "{status}");
    assert_eq!(status["phase"], "watching", "{status}");
    let log = d.stop(Duration::from_secs(10));
    assert!(log.contains("backend unavailable"), "{log}");
    assert!(log.contains("\"kind\":\"backend_unavailable\""), "notified:\n{log}");
}
