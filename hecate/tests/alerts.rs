//! The alerts NUT users rely on, end to end: a real `hecate daemon` on a real upsd (`dummy-ups`),
//! whose values change live (`upsrw`) and whose driver dies and comes back. Each alert reaches a
//! real notifier (`command`, appending each event's JSON to a file) once per occurrence, not
//! every poll, and is counted on /metrics.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use hecate_test_support::{HecateDaemon, Upsd, free_port, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

/// The kinds of the events the notifier got, in order.
fn events(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn count(file: &Path, kind: &str) -> usize {
    events(file).iter().filter(|k| *k == kind).count()
}

fn wait_event(d: &mut HecateDaemon, file: &Path, kind: &str) {
    wait_until(&format!("a {kind} event"), DEADLINE, || {
        assert!(!d.exited(), "the daemon exited:\n{}", d.log());
        if count(file, kind) > 0 { Ok(()) } else { Err(format!("events so far: {:?}", events(file))) }
    });
}

/// Waits until the daemon has polled `n` more times (it rewrites status.json at every poll).
fn wait_polls(d: &HecateDaemon, n: usize) {
    let path: PathBuf = d.state_dir().join("status.json");
    let mtime = || std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH);
    let mut last = mtime();
    for i in 0..n {
        last = wait_until(&format!("poll {} of {n}", i + 1), DEADLINE, || {
            let now = mtime();
            if now != last { Ok(now) } else { Err("status.json not rewritten yet".into()) }
        });
    }
}

fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn each_alert_reaches_the_notifier_once_per_occurrence_and_is_counted() {
    let mut upsd = Upsd::start("atlasups");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let metrics = free_port(Ipv4Addr::LOCALHOST);
    let yaml = format!(
        "host: alerts
daemon: {{ poll_interval: 300ms, deadtime: 2s, metrics_listen: \"127.0.0.1:{metrics}\" }}
power_sources:
  - {{ type: nut, name: atlas, ups: atlasups, endpoint: \"{addr}\", timeout: 1s }}
notifiers:
  - {{ type: command, argv: [/bin/sh, -c, 'cat >> \"$0\"; echo >> \"$0\"', {file}] }}
",
        addr = upsd.addr(),
        file = file.display(),
    );
    let mut d = HecateDaemon::start(Path::new(env!("CARGO_BIN_EXE_hecate")), &yaml);
    wait_until("a first reading", DEADLINE, || {
        if d.status()["sources"][0]["reading"].is_object() { Ok(()) } else { Err(d.log()) }
    });

    upsd.set_var("ups.status", "OL OVER");
    wait_event(&mut d, &file, "overload");
    upsd.set_var("ups.status", "OL OVER RB");
    wait_event(&mut d, &file, "replace_battery");
    upsd.set_var("ups.status", "OL OVER RB LB");
    wait_event(&mut d, &file, "low_battery");
    // The conditions last over many polls: no repeat.
    wait_polls(&d, 6);
    let status = d.status();
    let active: Vec<&str> =
        status["sources"][0]["alerts"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(active, ["low_battery", "replace_battery", "overload"], "{status}");

    upsd.kill_driver();
    wait_event(&mut d, &file, "comm_lost");
    wait_polls(&d, 4);
    upsd.restart_driver();
    wait_event(&mut d, &file, "comm_restored");
    wait_polls(&d, 4);

    for kind in ["overload", "replace_battery", "low_battery", "comm_lost", "comm_restored"] {
        assert_eq!(count(&file, kind), 1, "{kind}: {:?}", events(&file));
    }
    let text = scrape(metrics);
    for kind in ["overload", "replace_battery", "low_battery", "comm_lost", "comm_restored"] {
        let line = format!("hecate_alerts_total{{alert=\"{kind}\",ups=\"atlas\"}} 1");
        assert!(text.contains(&line), "no {line:?} in:\n{text}");
    }
    let log = d.stop(Duration::from_secs(10));
    // WARN and above reach `journalctl -p warning`.
    for needle in
        ["ERROR lost contact with ups atlas", " WARN ups atlas is overloaded", "ERROR ups atlas reports a low battery"]
    {
        assert!(log.contains(needle), "no {needle:?} in:\n{log}");
    }
}
