//! `hecate status` as a health check: exit 0 healthy, 1 degraded (a source without data, a
//! backend that did not build, an alert that lasts), 3 no daemon running or its status stale.
//! Each state made for real: a real `hecate daemon`, a real upsd (`dummy-ups`) for data and
//! alerts, SIGSTOP for a daemon that stopped writing its status.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hecate_test_support::{HecateDaemon, Upsd, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

fn hecate() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hecate"))
}

/// `hecate status --config CONFIG`: (exit code, stdout and stderr).
fn status(config: &Path) -> (Option<i32>, String) {
    let o = Command::new(hecate()).args(["status", "--config"]).arg(config).env("RUST_LOG", "warn").output().unwrap();
    (o.status.code(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

fn wait_status(config: &Path, code: i32, needle: &str) -> String {
    wait_until(&format!("hecate status to exit {code} saying {needle:?}"), DEADLINE, || match status(config) {
        (Some(c), out) if c == code && out.contains(needle) => Ok(out),
        (c, out) => Err(format!("exit {c:?}:\n{out}")),
    })
}

const SIMULATED: &str = "daemon: { poll_interval: 200ms, metrics_listen: null }
power_sources:
  - { type: simulated, name: sim }
";

#[test]
fn without_a_daemon_status_polls_once_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hecate.yaml");
    std::fs::write(&config, format!("host: h\nstate_dir: {}\n{SIMULATED}", dir.path().join("state").display()))
        .unwrap();
    let (code, out) = status(&config);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.starts_with("health: not protected: no daemon is running"), "{out}");
    assert!(
        out.contains("(a one-off poll at ") && out.contains(": no daemon is running)") && out.contains("ups sim"),
        "{out}"
    );
}

/// Resumes a stopped daemon whatever happens, so a failed assertion leaves no stopped process.
struct Stopped(u32);

impl Stopped {
    fn signal(pid: u32, sig: &str) {
        let ok = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig} {pid}");
    }
    fn new(pid: u32) -> Self {
        Self::signal(pid, "-STOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        Self::signal(self.0, "-CONT");
    }
}

#[test]
fn a_healthy_daemon_is_0_and_its_stale_status_is_3() {
    let mut d = HecateDaemon::start(hecate(), &format!("host: h\n{SIMULATED}"));
    let out = wait_status(d.config(), 0, "health: ok");
    assert!(out.contains("(as the daemon saw it at "), "{out}");

    // The daemon stops writing (stopped, as a hung process would be) and its status ages.
    let path = d.state_dir().join("status.json");
    {
        let _stopped = Stopped::new(d.pid());
        let mut snap: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
        snap["updated_at"] = humantime::format_rfc3339_seconds(hour_ago).to_string().into();
        std::fs::write(&path, serde_json::to_vec(&snap).unwrap()).unwrap();
        let (code, out) = status(d.config());
        assert_eq!(code, Some(3), "{out}");
        assert!(out.contains("the daemon's status is stale: last written 1h ago"), "{out}");
        assert!(out.contains("stale after 15s 600ms: three poll intervals and 15 s"), "{out}");
    }
    // Resumed, it writes again at its next poll.
    wait_status(d.config(), 0, "health: ok");
    assert!(!d.exited());
}

/// A status.json that cannot be written (a directory in its place refuses the rename, as a full
/// disk refuses the write) is said once in the log, not at every poll, the daemon goes on, and
/// it says when the file is written again.
#[test]
fn a_status_json_that_cannot_be_written_is_said_once() {
    let mut d = HecateDaemon::start(hecate(), &format!("host: h\n{SIMULATED}"));
    let path = d.state_dir().join("status.json");
    wait_until("the first status.json", DEADLINE, || if path.is_file() { Ok(()) } else { Err("none yet".into()) });
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let refused = "cannot write status.json";
    wait_until("the refusal in the log", DEADLINE, || if d.log().contains(refused) { Ok(()) } else { Err(d.log()) });
    // 2 s more are 10 polls of 200 ms, each of which tries again.
    let window = std::time::Instant::now() + Duration::from_secs(2);
    wait_until("the window to pass", DEADLINE, || {
        if std::time::Instant::now() > window { Ok(()) } else { Err("still in it".into()) }
    });
    assert!(!d.exited(), "{}", d.log());
    std::fs::remove_dir(&path).unwrap();
    wait_until("status.json written again", DEADLINE, || {
        if path.is_file() && d.log().contains("status.json is written again") { Ok(()) } else { Err(d.log()) }
    });
    let log = d.log();
    assert_eq!(log.matches(refused).count(), 1, "{log}");
}

#[test]
fn a_backend_that_could_not_be_built_is_1() {
    let yaml = "host: h
daemon: { poll_interval: 200ms, metrics_listen: null }
power_sources:
  - { type: simulated, name: sim }
  - { type: nut, name: nas, ups: nasups, username: hecate, password_file: /nonexistent/nut.pass }
";
    let d = HecateDaemon::start(hecate(), yaml);
    let out = wait_status(d.config(), 1, "health: degraded: backend unavailable: power_sources[1]");
    assert!(out.contains("/nonexistent/nut.pass"), "{out}");
}

#[test]
fn a_source_without_data_or_with_an_alert_is_1() {
    let mut upsd = Upsd::start("atlasups");
    let yaml = format!(
        "host: h
daemon: {{ poll_interval: 200ms, metrics_listen: null }}
power_sources:
  - {{ type: nut, name: atlas, ups: atlasups, endpoint: \"{}\", timeout: 1s }}
",
        upsd.addr()
    );
    let d = HecateDaemon::start(hecate(), &yaml);
    wait_status(d.config(), 0, "health: ok");

    upsd.set_var("ups.status", "OL RB");
    wait_status(d.config(), 1, "health: degraded: ups atlas: replace_battery");
    upsd.set_var("ups.status", "OL");
    wait_status(d.config(), 0, "health: ok");

    upsd.kill_upsd();
    let out = wait_status(d.config(), 1, "health: degraded: ups atlas: no data");
    assert!(out.contains("Connection refused") || out.contains("not reconnecting"), "{out}");
}
