//! The command line, run as a user would run it.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn hecate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hecate")).args(args).env("RUST_LOG", "warn").output().expect("run hecate")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// configs/sim.yaml with its state dir moved into `dir` and the given replacements applied.
fn sim_config(dir: &Path, replace: &[(&str, &str)]) -> PathBuf {
    let mut yaml = std::fs::read_to_string(repo().join("configs/sim.yaml")).unwrap();
    yaml = yaml.replace("state_dir: /tmp/hecate-sim", &format!("state_dir: {}", dir.join("state").display()));
    // Each test gets its own simulated world: they run in separate processes anyway, but the
    // name makes that explicit.
    for (from, to) in replace {
        assert!(yaml.contains(from), "sim.yaml no longer contains {from:?}");
        yaml = yaml.replace(from, to);
    }
    let path = dir.join("hecate.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn every_shipped_config_passes_check() {
    let files: Vec<String> = std::fs::read_dir(repo().join("configs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| p.display().to_string())
        .collect();
    assert!(!files.is_empty());
    // The examples name files of a real coordinator (/etc/hecate/...): parsed and validated only.
    let mut args = vec!["config", "check", "--no-build"];
    args.extend(files.iter().map(String::as_str));
    let o = hecate(&args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(out.matches(": ok").count(), files.len(), "{out}");
    // These two need nothing from the host: every backend builds here.
    let buildable = ["sim.yaml", "hecate.example.yaml"].map(|f| repo().join("configs").join(f).display().to_string());
    let o = hecate(&["config", "check", &buildable[0], &buildable[1]]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
}

#[test]
fn a_bad_config_fails_with_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "host: a\npower_sources:\n  - { type: nutz, name: u }\n").unwrap();
    let o = hecate(&["config", "check", path.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains(&format!("{}:3:", path.display())), "{err}");
    assert!(err.contains("power_sources[0]"), "{err}");
    assert!(err.contains("nutz"), "{err}");

    // The daemon refuses to start on it, with the same message.
    let o = hecate(&["daemon", "--config", path.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("nutz"), "{err}");
}

#[test]
fn a_dry_run_prints_the_plan_and_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path(), &[]);
    let o = hecate(&["shutdown", "--config", cfg.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    for stage in
        ["notify", "cordon", "suspend-gitops", "drain", "stop-agents", "stop-servers", "stop-init-server", "power-off"]
    {
        assert!(out.contains(stage), "missing stage {stage}: {out}");
    }
    assert!(out.contains("stop k3s and its containers (grace 60s) on titan-0a"), "{out}");
    assert!(out.contains("dry run"), "{out}");
    assert!(!dir.path().join("state/runs.json").exists(), "a dry run must not record a run");
    let stop_init = out.find("stop-init-server").unwrap();
    let stop_agents = out.find("stop-agents").unwrap();
    assert!(stop_agents < stop_init, "agents stop before the init server");
}

#[test]
fn a_backend_that_cannot_build_is_named_once_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nut.pass");
    let cfg = dir.path().join("hecate.yaml");
    std::fs::write(
        &cfg,
        format!(
            "host: h\nstate_dir: {}\npower_sources:\n  - {{ type: nut, name: u, ups: u, endpoint: \"127.0.0.1:1\", \
             username: mon, password_file: {} }}\n",
            dir.path().join("state").display(),
            missing.display()
        ),
    )
    .unwrap();
    let o = hecate(&["shutdown", "--config", cfg.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(err.contains("power_sources[0]: config: cannot read password_file"), "{err}");
    // The cause once: not repeated by each layer that wraps it.
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert_eq!(err.matches("cannot read password_file").count(), 1, "{err}");
}

#[test]
fn shutdown_execute_on_the_simulation_runs_and_records() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path(), &[]);
    let o = hecate(&["shutdown", "--config", cfg.to_str().unwrap(), "--execute", "--reason", "test"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("✓ power off titan-1a"), "{out}");
    // titan-1a's first controller cannot power off; the report names the fallback.
    assert!(out.contains("simulated failed (failed: injected failure: power off), simulated ok"), "{out}");
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state/runs.json")).unwrap()).unwrap();
    assert_eq!(runs[0]["kind"], "shutdown");
    assert_eq!(runs[0]["outcome"], "success");
    assert!(runs[0]["stages"].as_array().unwrap().len() >= 6);
    assert!(!dir.path().join("state/journal-shutdown.jsonl").exists(), "a finished run leaves no journal");
}

#[test]
fn schema_backends_version_completions() {
    let o = hecate(&["config", "schema"]);
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).expect("schema is JSON");
    assert!(schema.to_string().contains("oneOf"));
    let o = hecate(&["backends", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(list.as_array().unwrap().iter().any(|b| b["type"] == "simulated" && b["role"] == "power_source"));
    let o = hecate(&["--version"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("hecate "));
    let o = hecate(&["completions", "bash"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("hecate"));
}

#[test]
fn status_json_without_a_daemon_polls_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path(), &[]);
    let o = hecate(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
    let (out, err) = text(&o);
    // Shown, but no daemon protects anything: exit 3 (hecate/tests/status_codes.rs).
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(s["from_daemon"], false);
    assert_eq!(s["health"]["exit_code"], 3);
    assert_eq!(s["sources"][0]["name"], "sim-ups");
    assert_eq!(s["sources"][0]["reading"]["status"], serde_json::json!(["OL"]));
    assert!(s["budget"]["seconds"].as_f64().unwrap() > 0.0);
    let o = hecate(&["status", "--config", cfg.to_str().unwrap()]);
    let (out, _) = text(&o);
    assert!(out.contains("shutdown budget: 12.0 s: default_shutdown_budget"), "{out}");
    assert!(out.contains("policy: on mains: "), "{out}");
}

/// The daemon on a fast simulated outage: it triggers, shuts the cluster down, records the run,
/// starts the cluster when mains return, and exits cleanly on SIGTERM.
#[test]
fn daemon_runs_a_full_outage_cycle_on_the_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(
        dir.path(),
        &[
            ("poll_interval: 1s", "poll_interval: 200ms"),
            ("battery_runtime: 36s", "battery_runtime: 12s"),
            ("{ at: 48s, event: mains_back }", "{ at: 16s, event: mains_back }"),
            ("default_shutdown_budget: 12s", "default_shutdown_budget: 4s"),
            ("power_return_settle: 3s", "power_return_settle: 1s"),
        ],
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hecate"))
        .args(["daemon", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let runs_path = dir.path().join("state/runs.json");
    let deadline = Instant::now() + Duration::from_secs(90);
    let kinds = loop {
        let kinds: Vec<String> = std::fs::read_to_string(&runs_path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v.as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        if kinds.len() >= 2 || Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break kinds;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let status_json = std::fs::read_to_string(dir.path().join("state/status.json")).unwrap_or_default();
    // SIGTERM: a clean exit.
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(kinds, vec!["shutdown", "startup"], "{log}");
    assert!(out.status.success(), "exit {:?}: {log}", out.status);
    assert!(log.contains("shutdown triggered"), "{log}");
    assert!(status_json.contains("\"from_daemon\": true"), "{status_json}");
}

/// `/metrics` serves the documented names, with units in them, while the daemon runs.
#[test]
fn daemon_serves_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let port = hecate_test_support::free_port(std::net::Ipv4Addr::LOCALHOST);
    let listen = format!("metrics_listen: 127.0.0.1:{port}");
    let cfg =
        sim_config(dir.path(), &[("metrics_listen: null", &listen), ("poll_interval: 1s", "poll_interval: 200ms")]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_hecate"))
        .args(["daemon", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let got = std::net::TcpStream::connect(("127.0.0.1", port)).ok().and_then(|mut s| {
            use std::io::{Read, Write};
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
            let mut b = String::new();
            s.read_to_string(&mut b).ok()?;
            Some(b)
        });
        match got {
            Some(b) if b.contains("hecate_ups_battery_charge_ratio") => break b,
            _ if Instant::now() > deadline => break String::new(),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    for name in [
        "hecate_ups_status{flag=\"OL\",ups=\"sim-ups\"} 1",
        "hecate_ups_battery_charge_ratio{ups=\"sim-ups\"}",
        "hecate_ups_load_ratio{ups=\"sim-ups\"} 0.4",
        "hecate_ups_runtime_firmware_seconds",
        "hecate_shutdown_threshold_seconds",
        "hecate_shutdown_budget_seconds 12",
        "hecate_shutdown_triggered 0",
        "hecate_ups_data_ok{ups=\"sim-ups\"} 1",
    ] {
        assert!(body.contains(name), "missing {name} in:\n{body}");
    }
}

/// Power failing while a startup (the boot-time bootstrap) holds the run lock: the daemon stops
/// the startup and shuts the cluster down instead of waiting for it or giving up.
#[test]
fn a_trigger_during_a_cli_startup_stops_it_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let slow = sim_config(dir.path(), &[("step_duration: 500ms", "step_duration: 120s")]);
    let slow_copy = dir.path().join("slow.yaml");
    std::fs::rename(&slow, &slow_copy).unwrap();
    let mut startup = Command::new(env!("CARGO_BIN_EXE_hecate"))
        .args(["startup", "--config", slow_copy.to_str().unwrap(), "--execute"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = dir.path().join("state/run.lock");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&lock).unwrap_or_default().contains("startup") {
        assert!(Instant::now() < deadline, "the startup never took the run lock");
        std::thread::sleep(Duration::from_millis(50));
    }
    let fast = sim_config(
        dir.path(),
        &[
            ("poll_interval: 1s", "poll_interval: 200ms"),
            ("battery_runtime: 36s", "battery_runtime: 10s"),
            ("{ at: 4s, event: mains_lost }", "{ at: 1s, event: mains_lost }"),
            ("default_shutdown_budget: 12s", "default_shutdown_budget: 4s"),
        ],
    );
    let daemon = Command::new(env!("CARGO_BIN_EXE_hecate"))
        .args(["daemon", "--config", fast.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let runs = dir.path().join("state/runs.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&runs).unwrap_or_default().contains("\"shutdown\"") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let startup_status = startup.try_wait().unwrap();
    let _ = startup.kill();
    let _ = startup.wait();
    Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap();
    let out = daemon.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(std::fs::read_to_string(&runs).unwrap_or_default().contains("\"shutdown\""), "no shutdown ran: {log}");
    assert!(log.contains("a startup holds the run lock while power is failing"), "{log}");
    let status = startup_status.expect("the startup was not stopped");
    assert!(!status.success(), "the startup should have been stopped by a signal: {status:?}");
}

/// `power_off_self`: the host's own power-off comes last, after the run is in runs.json (a
/// recording script stands in for `systemctl poweroff`). The dry run says so, and once a run is
/// recorded it shows how long each stage took.
#[test]
fn the_host_powers_itself_off_last_after_recording_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("fake-poweroff.sh");
    let seen = dir.path().join("runs-at-poweroff.json");
    std::fs::write(
        &script,
        format!("#!/bin/sh\ncp {} {}\n", dir.path().join("state/runs.json").display(), seen.display()),
    )
    .unwrap();
    Command::new("chmod").args(["+x", script.to_str().unwrap()]).status().unwrap();
    let shutdown_block = format!(
        "shutdown:\n  power_off_self: true\n  power_off_self_command: [\"{}\"]\n  concurrency: 4",
        script.display()
    );
    let cfg = sim_config(dir.path(), &[("shutdown:\n  concurrency: 4", &shutdown_block)]);
    let o = hecate(&["shutdown", "--config", cfg.to_str().unwrap()]);
    let (out, _) = text(&o);
    assert!(out.contains("then, once the run is recorded: power off this host"), "{out}");
    assert!(!out.contains("took up to"), "no history yet: {out}");
    assert!(!seen.exists(), "a dry run must not power anything off");

    let o = hecate(&["shutdown", "--config", cfg.to_str().unwrap(), "--execute"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    let at_poweroff: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(at_poweroff[0]["kind"], "shutdown", "the run was recorded before the power-off");

    let o = hecate(&["shutdown", "--config", cfg.to_str().unwrap()]);
    let (out, _) = text(&o);
    assert!(out.contains("stop-agents (up to 4 at once, took up to 0."), "{out}");
}

/// Issue 12, scenario 5: values that parse but would panic at run time are refused by `config
/// check` (and so by the daemon) with their file, line and field.
#[test]
fn config_check_refuses_values_that_would_panic_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.yaml");
    std::fs::write(
        &path,
        format!(
            "host: h\nstate_dir: {}\nshutdown:\n  concurrency: 18446744073709551615\npower_sources:\n  - {{ type: \
             simulated, name: u }}\nnotifiers:\n  - type: webhook\n    url: http://127.0.0.1:1/hook\n    retry_for: \
             500000000000y\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let o = hecate(&["config", "check", path.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    let p = path.display();
    assert!(err.contains(&format!("{p}:4:3: shutdown.concurrency: must be between 1 and 1024")), "{err}");
    assert!(err.contains(&format!("{p}:10:5: notifiers[0].retry_for: `retry_for` must be at most 1day")), "{err}");
    let o = hecate(&["daemon", "--config", path.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("notifiers[0].retry_for"), "{err}");
}

/// Issue 12, scenario 5: a journal line with an impossible duration resumes, the run is
/// recorded and the journal removed (it used to panic after every step had run, so every later
/// start ran the shutdown again).
#[test]
fn a_journal_with_an_impossible_step_duration_resumes_and_records_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path(), &[]);
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let journal = state.join("journal-shutdown.jsonl");
    let lines = [
        serde_json::json!({"event": "run", "kind": "shutdown", "reason": "test", "started_at": "2026-01-04T02:11:09.000Z"}),
        serde_json::json!({"event": "end", "at": "2026-01-04T02:11:10.000Z", "outcome": {
            "id": "notify/shutdown-triggered", "description": "notify shutdown_triggered", "ok": true,
            "message": "queued", "duration_s": 1e300}}),
    ];
    std::fs::write(&journal, lines.iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    let o = hecate(&["shutdown", "--config", cfg.to_str().unwrap(), "--execute", "--resume"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("↷ (done before resume) notify shutdown_triggered (0.0s)"), "{out}");
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("runs.json")).unwrap()).unwrap();
    let run = &runs[0];
    assert_eq!(run["outcome"], "success", "{run}");
    assert_eq!(run["started_at"], "2026-01-04T02:11:09Z", "{run}");
    let d = run["duration_s"].as_f64().unwrap();
    assert!(d > 0.0 && d < 600.0, "{run}");
    assert!(run["plan"]["node_steps"].as_u64().unwrap() > 0, "{run}");
    assert!(!journal.exists(), "the journal is removed once the run is recorded");
}

/// A config with only a simulated UPS and no nodes.
fn no_node_config(dir: &Path) -> PathBuf {
    let path = dir.join("hecate.yaml");
    std::fs::write(
        &path,
        format!(
            "host: h\nstate_dir: {}\nbudget: {{ default_shutdown_budget: 7m }}\npower_sources:\n  - {{ type: simulated, \
             name: u }}\n",
            dir.join("state").display()
        ),
    )
    .unwrap();
    path
}

fn status_budget(cfg: &Path) -> (serde_json::Value, String) {
    let o = hecate(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "no daemon runs: {out}{err}");
    let s: serde_json::Value = serde_json::from_str(&out).unwrap();
    (s["budget"].clone(), err)
}

/// Issue 12, scenario 7: shutdowns of a config without nodes take no time; three of them used
/// to teach a budget of 0 s, after which only LB or FSD could trigger.
#[test]
fn shutdowns_without_nodes_do_not_teach_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = no_node_config(dir.path());
    for _ in 0..3 {
        let o = hecate(&["shutdown", "--config", cfg.to_str().unwrap(), "--execute"]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{out}{err}");
    }
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("state/runs.json")).unwrap()).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 3);
    assert_eq!(runs[0]["plan"]["node_steps"], 0, "{runs}");
    let (budget, _) = status_budget(&cfg);
    assert_eq!(budget["seconds"], 420.0, "{budget}");
    assert_eq!(budget["source"]["kind"], "default", "{budget}");
    assert_eq!(budget["not_comparable"], 3, "{budget}");
}

/// Issue 12, scenario 5: a runs.json success of 1e300 s used to make the budget 1e300 s.
#[test]
fn an_impossible_run_in_the_history_is_ignored_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = no_node_config(dir.path());
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    // Written by hand: no stages, no plan fingerprint, so the records would count.
    let runs: Vec<serde_json::Value> = (1..=3)
        .map(|d| {
            serde_json::json!({"kind": "shutdown", "started_at": format!("2026-01-0{d}T00:00:00Z"),
                "duration_s": 1e300, "outcome": "success"})
        })
        .collect();
    std::fs::write(dir.path().join("state/runs.json"), serde_json::to_string(&runs).unwrap()).unwrap();
    let (budget, err) = status_budget(&cfg);
    assert_eq!(budget["seconds"], 420.0, "{budget}");
    assert_eq!(budget["ignored"].as_array().unwrap().len(), 3, "{budget}");
    assert!(err.contains("started at 2026-01-01T00:00:00Z took 1e300 s, which is not possible"), "{err}");
}

/// Issue 12, scenario 8: a three-line trace whose last `t` is 1e15 is refused at once instead
/// of replayed poll by poll forever.
#[test]
fn simulate_refuses_a_trace_spanning_more_than_a_week() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("forever.csv");
    std::fs::write(&trace, "t,ups.status,battery.runtime\n0,OL,1200\n1,OB DISCHRG,1100\n1e15,OB DISCHRG,1000\n")
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hecate"))
        .args(["simulate", "--trace", trace.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if child.try_wait().unwrap().is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("hecate simulate still replaying after 30 s");
    }
    let o = child.wait_with_output().unwrap();
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(err.contains("forever.csv: line 4: t = 1000000000000000 s is more than a week"), "{err}");
}

/// Issue 15: `config check` reads every forwarding key the config names, on either side, and
/// names the one it cannot use; `--no-build` does not.
#[test]
fn config_check_reads_the_forwarding_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("rhea.key");
    std::fs::write(&good, "rhea-forwarding-key-0123456789ab\n").unwrap();
    let short = dir.path().join("short.key");
    std::fs::write(&short, "short\n").unwrap();
    let coordinator = dir.path().join("coordinator.yaml");
    std::fs::write(
        &coordinator,
        format!(
            "host: titan-db\nstate_dir: {}\nrole:\n  coordinator:\n    listen: 127.0.0.1:1\n    forwarders:\n      - {{ name: rhea, key_file: {} }}\n      - {{ name: tethys, key_file: {} }}\n      - {{ name: dione, key_file: {} }}\npower_sources: [ {{ type: simulated, name: u }} ]\n",
            dir.path().join("state").display(),
            good.display(),
            dir.path().join("missing.key").display(),
            short.display()
        ),
    )
    .unwrap();
    let o = hecate(&["config", "check", coordinator.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}{err}");
    assert!(err.contains("role.coordinator.forwarders[1].key_file: cannot read key_file"), "{err}");
    assert!(err.contains("role.coordinator.forwarders[2].key_file") && err.contains("shorter than 16"), "{err}");
    assert!(!err.contains("forwarders[0]") && !err.contains("rhea-forwarding-key"), "{err}");
    assert!(hecate(&["config", "check", "--no-build", coordinator.to_str().unwrap()]).status.success());

    let forwarder = dir.path().join("forwarder.yaml");
    std::fs::write(
        &forwarder,
        format!(
            "host: tethys\nstate_dir: {}\nrole:\n  forwarder: {{ coordinator_url: http://127.0.0.1:1, key_file: {} }}\npower_sources: [ {{ type: simulated, name: u }} ]\n",
            dir.path().join("state").display(),
            dir.path().join("missing.key").display()
        ),
    )
    .unwrap();
    let o = hecate(&["config", "check", forwarder.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(!o.status.success() && err.contains("role.forwarder.key_file"), "{out}{err}");
}

/// The bootstrap unit runs the startup at every boot of this host: on a cluster that is up, each
/// stage checks and passes, nothing is started again and nothing the operator cordoned changes.
#[test]
fn startup_on_a_running_cluster_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path(), &[]);
    let o = hecate(&["startup", "--config", cfg.to_str().unwrap(), "--execute"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    for node in ["titan-0a", "titan-0b", "titan-0c", "titan-1a", "titan-1b"] {
        let unit = if node.starts_with("titan-0") { "k3s" } else { "k3s-agent" };
        assert!(out.contains(&format!("✓ start {unit} on {node} (without waiting)")), "{out}");
    }
    assert_eq!(out.matches("is running already").count(), 5, "{out}");
    assert_eq!(out.matches("not cordoned").count(), 5, "{out}");
    assert!(!out.contains("uncordoned (hecate had cordoned it)"), "{out}");
}

/// k3s.yaml's client certificate lasts a year: `config check` and `hecate status` say when the
/// kubeconfig's credentials expire, and warn below 30 days.
#[test]
fn config_check_and_status_say_when_the_kubeconfigs_certificate_expires() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("/usr/bin/openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-subj", "/CN=system:admin", "-days", "12", "-keyout"])
        .arg(dir.path().join("client.key"))
        .arg("-out")
        .arg(dir.path().join("client.crt"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kubeconfig = dir.path().join("k3s.yaml");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nclusters:\n- name: default\n  cluster:\n    server: https://127.0.0.1:6443\n\
         contexts:\n- name: default\n  context:\n    cluster: default\n    user: default\n\
         current-context: default\nkind: Config\nusers:\n- name: default\n  user:\n    \
         client-certificate: client.crt\n    client-key: client.key\n",
    )
    .unwrap();
    let cfg = sim_config(
        dir.path(),
        &[(
            "cluster: { type: simulated, world: sim, api_delay: 1s, ready_delay: 1s, drain_duration: 1s }",
            &format!("cluster: {{ type: kube, kubeconfig: {} }}", kubeconfig.display()),
        )],
    );
    let o = hecate(&["config", "check", cfg.to_str().unwrap()]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(
        out.contains("warning: cluster: kubernetes credentials: the client certificate expires in 11 day(s) ("),
        "{out}"
    );
    assert!(out.contains("renew it"), "{out}");

    let o = hecate(&["status", "--config", cfg.to_str().unwrap(), "--json"]);
    let (out, err) = text(&o);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let c = &status["kube_credentials"];
    assert_eq!(c["what"], "client certificate", "{out}");
    assert_eq!(c["warning"], true);
    let days = c["days_left"].as_f64().unwrap();
    assert!(days > 11.9 && days <= 12.0, "{days}");
    let o = hecate(&["status", "--config", cfg.to_str().unwrap()]);
    let (out, _) = text(&o);
    assert!(out.contains("warning: kubernetes credentials: the client certificate expires in 11 day(s)"), "{out}");
}
