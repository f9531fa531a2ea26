//! The daemon gives the kernel back the code pages its start-up ran once (`hecate-residency`),
//! and whatever it does afterwards still works from the pages it maps again: against a real NUT
//! upsd (`dummy-ups`), a trigger after the release and a whole shutdown run to its record.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use hecate_test_support::{HecateDaemon, Upsd, wait_until};

const DEADLINE: Duration = Duration::from_secs(60);

/// (VmRSS, VmHWM) of a process, in kB.
fn rss_and_peak_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn start_up_pages_are_given_back_and_the_daemon_still_protects() {
    hecate_test_support::require_root();
    let ups = Upsd::start("atlasups");
    let d = HecateDaemon::start(
        Path::new(env!("CARGO_BIN_EXE_hecate")),
        &format!(
            "host: resident
daemon: {{ poll_interval: 200ms, metrics_listen: null }}
policy: {{ debounce_polls: 2 }}
budget: {{ default_shutdown_budget: 10s }}
power_sources:
  - {{ type: nut, name: atlas, ups: {}, endpoint: \"{}\", timeout: 2s }}
cluster: {{ type: simulated }}
nodes:
  - {{ name: s1, address: x, role: server, init: true, controllers: [ {{ type: simulated, step_duration: 50ms }} ] }}
  - {{ name: a1, address: x, role: agent, controllers: [ {{ type: simulated, step_duration: 50ms }} ] }}
",
            ups.ups_name(),
            ups.addr()
        ),
    );
    // Ten seconds after start (the daemon's settling time), at a poll.
    let line = wait_until("the start-up pages given back", DEADLINE, || {
        let log = d.log();
        log.lines().find(|l| l.contains("gave back the code pages start-up ran once")).map(str::to_string).ok_or(log)
    });
    let (rss, peak) = rss_and_peak_kb(d.pid());
    // Start-up maps several MiB of code the watch loop never runs again; without the release
    // the resident set stays at its peak.
    assert!(rss + 1024 <= peak, "VmRSS {rss} kB against a peak of {peak} kB: nothing given back ({line})");

    // Everything after the release runs from pages mapped again: the policy, the trigger, the
    // whole shutdown run and its record.
    ups.set_var("battery.runtime", "5");
    ups.set_var("ups.status", "OB DISCHRG");
    let run = wait_until("a shutdown run recorded after the release", DEADLINE, || {
        d.runs_of("shutdown").into_iter().next().ok_or_else(|| d.log())
    });
    assert_eq!(run["outcome"], "success", "{run}\n{}", d.log());
}
