//! The daemon against a real NUT `upsd` (`dummy-ups` driver), with a simulated cluster: values
//! changed live with `upsrw` drive the policy end to end.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hecate_test_support::Upsd;

struct Daemon {
    child: Child,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    fn start(ups: &Upsd, poll: &str, debounce: u32) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let yaml = format!(
            "host: nut-e2e
state_dir: {state}
daemon: {{ poll_interval: {poll}, metrics_listen: null }}
policy: {{ debounce_polls: {debounce} }}
budget: {{ default_shutdown_budget: 10s }}
power_sources:
  - {{ type: nut, name: atlas, ups: {ups_name}, endpoint: \"{addr}\", timeout: 2s }}
cluster: {{ type: simulated }}
nodes:
  - {{ name: s1, address: x, role: server, init: true, controllers: [ {{ type: simulated, step_duration: 50ms }} ] }}
  - {{ name: a1, address: x, role: agent, controllers: [ {{ type: simulated, step_duration: 50ms }} ] }}
notifiers: [ {{ type: log }} ]
",
            state = state.display(),
            ups_name = ups.ups_name(),
            addr = ups.addr(),
        );
        let cfg = dir.path().join("hecate.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_hecate"))
            .args(["daemon", "--config", cfg.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Daemon { child, state, _dir: dir }
    }

    fn status(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(self.state.join("status.json")).ok()?).ok()
    }

    fn source_state(&self) -> Option<String> {
        self.status()?["sources"][0]["decision"]["state"].as_str().map(str::to_string)
    }

    fn runs(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.join("runs.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(&t).ok())
            .unwrap_or_default()
    }

    /// Polls `cond` until it holds or `timeout` passes; returns whether it held.
    fn wait(&mut self, timeout: Duration, mut cond: impl FnMut(&Daemon) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if cond(self) {
                return true;
            }
            assert!(self.child.try_wait().unwrap().is_none(), "the daemon exited: {}", self.stop());
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// SIGTERM, then the log.
    fn stop(&mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let mut log = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut log);
        }
        log
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shutdowns(d: &Daemon) -> usize {
    d.runs().iter().filter(|r| r["kind"] == "shutdown").count()
}

#[test]
fn on_battery_with_low_runtime_shuts_down_within_the_debounce() {
    hecate_test_support::require_root();
    let ups = Upsd::start("atlasups");
    let mut d = Daemon::start(&ups, "200ms", 3);
    assert!(d.wait(Duration::from_secs(20), |d| d.source_state().as_deref() == Some("online")), "never saw online");
    let t0 = Instant::now();
    ups.set_var("battery.runtime", "5");
    ups.set_var("ups.status", "OB DISCHRG");
    assert!(d.wait(Duration::from_secs(20), |d| d.source_state().as_deref() == Some("triggered")), "no trigger");
    let detection = t0.elapsed();
    assert!(d.wait(Duration::from_secs(20), |d| shutdowns(d) == 1), "no shutdown recorded");
    let status = d.status().unwrap();
    let reason = status["trigger_reason"].as_str().unwrap().to_string();
    let log = d.stop();
    assert!(reason.contains("< 1.10 × budget 10 s"), "{reason}");
    assert_eq!(d.runs()[0]["outcome"], "success", "{log}");
    // Not a benchmark: a generous functional bound that a policy waiting for far more than the
    // debounce (or for the driver's LB) would miss.
    assert!(detection < Duration::from_secs(10), "detection took {detection:?}");
}

#[test]
fn mains_back_before_the_debounce_cancels() {
    hecate_test_support::require_root();
    let ups = Upsd::start("atlasups");
    // 15 polls of 300 ms leave time to put mains back after the first low poll.
    let mut d = Daemon::start(&ups, "300ms", 15);
    assert!(d.wait(Duration::from_secs(20), |d| d.source_state().as_deref() == Some("online")), "never saw online");
    ups.set_var("battery.runtime", "5");
    ups.set_var("ups.status", "OB DISCHRG");
    assert!(
        d.wait(Duration::from_secs(10), |d| d
            .status()
            .is_some_and(|s| s["sources"][0]["decision"]["streak"].as_u64() >= Some(1))),
        "never counted a low poll"
    );
    ups.set_var("ups.status", "OL");
    ups.set_var("battery.runtime", "3600");
    assert!(d.wait(Duration::from_secs(10), |d| d.source_state().as_deref() == Some("online")), "never back online");
    // Well past the debounce: still no trigger, no run.
    let later = Instant::now() + Duration::from_secs(6);
    let stayed =
        d.wait(Duration::from_secs(7), |d| d.source_state().as_deref() == Some("triggered") || Instant::now() > later);
    let state = d.source_state();
    let log = d.stop();
    assert!(stayed);
    assert_eq!(state.as_deref(), Some("online"), "{log}");
    assert_eq!(shutdowns(&d), 0, "{log}");
}

#[test]
fn upsd_killed_on_battery_counts_down_and_shuts_down() {
    hecate_test_support::require_root();
    let mut ups = Upsd::start("atlasups");
    let mut d = Daemon::start(&ups, "200ms", 3);
    assert!(d.wait(Duration::from_secs(20), |d| d.source_state().as_deref() == Some("online")), "never saw online");
    // 16 s left against a threshold of 11 s: no trigger while data flows.
    ups.set_var("battery.runtime", "16");
    ups.set_var("ups.status", "OB DISCHRG");
    assert!(d.wait(Duration::from_secs(10), |d| d.source_state().as_deref() == Some("on_battery")), "never on battery");
    ups.kill_upsd();
    assert!(
        d.wait(Duration::from_secs(10), |d| d.source_state().as_deref() == Some("unknown")),
        "lost data not unknown"
    );
    assert_eq!(shutdowns(&d), 0);
    assert!(d.wait(Duration::from_secs(30), |d| shutdowns(d) == 1), "the countdown never triggered");
    let reason = d.status().unwrap()["trigger_reason"].as_str().unwrap().to_string();
    let log = d.stop();
    assert!(reason.contains("no data") || reason.contains("count"), "{reason}\n{log}");
}

/// When status.json was last replaced (each write is a new file renamed over the old one).
fn status_written_at(d: &Daemon) -> Option<std::time::SystemTime> {
    std::fs::metadata(d.state.join("status.json")).and_then(|m| m.modified()).ok()
}

/// Issue 18: a poll rewrites status.json only when what it shows an operator changes (here the
/// power state), otherwise every 5 s at 200 ms polling: a new file and a rename per poll cost
/// most of the daemon's CPU and wear a host's flash. Readings still reach it within the 5 s.
#[test]
fn status_json_follows_changes_not_every_poll() {
    hecate_test_support::require_root();
    let ups = Upsd::start("atlasups");
    let mut d = Daemon::start(&ups, "200ms", 3);
    assert!(d.wait(Duration::from_secs(20), |d| d.source_state().as_deref() == Some("online")), "never saw online");

    // 3 s of unchanged readings are 15 polls: the file seen at the start and at most one periodic
    // rewrite, one more to spare (a write at every poll would show 15).
    let mut seen = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(3);
    d.wait(Duration::from_secs(4), |d| {
        seen.extend(status_written_at(d));
        Instant::now() > until
    });
    assert!(seen.len() <= 3, "status.json was written {} times in 3 s of 200 ms polls", seen.len());

    // A reading alone (the charge) reaches it with the periodic rewrite.
    ups.set_var("battery.charge", "90");
    assert!(
        d.wait(Duration::from_secs(12), |d| d
            .status()
            .is_some_and(|s| s["sources"][0]["reading"]["charge_pct"].as_f64() == Some(90.0))),
        "the new charge never reached status.json"
    );

    // Right after a write, the next is 5 s away; a change of the power state does not wait for it.
    let last = status_written_at(&d);
    assert!(d.wait(Duration::from_secs(12), |d| status_written_at(d) != last), "no periodic rewrite");
    let changed = Instant::now();
    ups.set_var("ups.status", "OB DISCHRG");
    assert!(d.wait(Duration::from_secs(20), |d| d.source_state().as_deref() == Some("on_battery")), "never on battery");
    let took = changed.elapsed();
    let log = d.stop();
    assert!(took < Duration::from_secs(3), "on battery reached status.json after {took:?}, not at its poll\n{log}");
}
