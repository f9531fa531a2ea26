//! Issue 15: a hostile upsd's words never reach the operator's terminal raw. A STAND-IN for upsd
//! (a real upsd cannot be made to send this): it answers every request with an `ERR` line of
//! 15,000 bytes full of terminal escapes (clear screen, set the window title), NUL and BEL, as
//! the attack in the issue did; `hecate status`, from a one-off poll and from a running
//! daemon's status.json, shows a short, clean error.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::time::Duration;

use hecate_test_support::{HecateDaemon, wait_until};

/// Starts the stand-in on a kernel-chosen loopback port; it runs until the test process ends.
fn hostile_upsd() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(!hecate_test_support::RESERVED_PORTS.contains(&port), "kernel picked reserved port {port}");
    let answer = format!("ERR DATA-STALE \u{1b}[2J\u{1b}]0;pwned\u{7}\0{}\u{1b}[31m\n", "A".repeat(15_000));
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().unwrap();
                for line in BufReader::new(conn).lines() {
                    if line.is_err() || writer.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn yaml(port: u16) -> String {
    format!(
        "host: titan-db
daemon: {{ poll_interval: 200ms, metrics_listen: null }}
power_sources:
  - {{ type: nut, name: atlas, ups: atlasups, endpoint: \"127.0.0.1:{port}\", timeout: 2s }}
"
    )
}

fn status(config: &Path, json: bool) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_hecate"));
    cmd.args(["status", "--config"]).arg(config);
    if json {
        cmd.arg("--json");
    }
    let out = cmd.output().unwrap();
    // A UPS without data is a degraded state (1), and without a daemon status says so (3): both
    // still print the status; anything else is an error.
    assert!(matches!(out.status.code(), Some(1 | 3)), "{:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn assert_clean(what: &str, out: &str) {
    let bad: Vec<char> = out.chars().filter(|c| c.is_control() && *c != '\n').collect();
    assert!(bad.is_empty(), "{what}: control characters {bad:?} in:\n{out:?}");
    assert!(out.contains("DATA-STALE"), "{what}: the error is shown:\n{out}");
    assert!(!out.contains("pwned"), "{what}: escape sequences go whole:\n{out}");
    assert!(out.len() < 4000, "{what}: {} bytes:\n{out}", out.len());
}

#[test]
fn no_control_character_from_a_hostile_upsd_reaches_hecate_status() {
    let port = hostile_upsd();

    // No daemon: a one-off poll.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hecate.yaml");
    std::fs::write(&config, format!("state_dir: {}\n{}", dir.path().join("state").display(), yaml(port))).unwrap();
    assert_clean("one-off poll", &status(&config, false));

    // A daemon polling it: its status.json, rendered and as JSON.
    let daemon = HecateDaemon::start(Path::new(env!("CARGO_BIN_EXE_hecate")), &yaml(port));
    wait_until("the daemon's status to carry the ups's error", Duration::from_secs(30), || {
        let st = daemon.status();
        if st["sources"][0]["error"].as_str().is_some_and(|e| e.contains("DATA-STALE")) {
            Ok(())
        } else {
            Err(format!("status {st}\nlog:\n{}", daemon.log()))
        }
    });
    let file = std::fs::read_to_string(daemon.state_dir().join("status.json")).unwrap();
    assert!(!file.contains("\\u001b") && !file.contains("\\u0000"), "status.json is clean:\n{file}");
    assert_clean("daemon, rendered", &status(daemon.config(), false));
    assert_clean("daemon, json", &status(daemon.config(), true));
    let log = daemon.log();
    assert!(!log.contains('\u{1b}') && !log.contains('\0'), "nor does the log:\n{log:?}");
}
