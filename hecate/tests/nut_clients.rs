//! Hecate among other NUT clients of the same real `upsd` (`dummy-ups`): a real `upsmon` (Debian
//! `nut-client`) with a recording `SHUTDOWNCMD` stands for the NAS that shares the UPS. As
//! primary, Hecate tells it to shut down (`FSD`) and cuts the power only after it left (or after
//! `hostsync`); as a secondary of another primary, Hecate obeys that primary's `FSD` and lets it
//! cut the power once Hecate's own shutdown is done. upsd handles one request at a time, so the
//! order of its log lines is the order things happened.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use hecate_test_support::{HecateDaemon, Upsd, Upsmon, UpsmonRole, wait_until};

const UPS: &str = "atlasups";
const DEADLINE: Duration = Duration::from_secs(90);

fn password_file(dir: &Path, password: &str) -> String {
    let file = dir.join("nut.pass");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    file.display().to_string()
}

/// A config body for HecateDaemon: one nut source logged in as `user`, and `extra`.
fn config(upsd: &Upsd, user: &str, pass_file: &str, source_extra: &str, extra: &str) -> String {
    format!(
        "host: nut-clients
daemon: {{ poll_interval: 500ms, metrics_listen: null }}
budget: {{ default_shutdown_budget: 10s }}
power_sources:
  - {{ type: nut, name: atlas, ups: {UPS}, endpoint: \"{addr}\", username: {user}, password_file: {pass_file}, timeout: 2s{source_extra} }}
notifiers: [ {{ type: log }} ]
{extra}",
        addr = upsd.addr(),
    )
}

fn line_at(log: &str, needle: &str) -> usize {
    log.find(needle).unwrap_or_else(|| panic!("no {needle:?} in upsd's log:\n{log}"))
}

fn wait_for_shutdown_run(d: &mut HecateDaemon) -> serde_json::Value {
    wait_until("hecate's shutdown to be recorded", DEADLINE, || {
        assert!(!d.exited(), "the daemon exited:\n{}", d.log());
        d.runs_of("shutdown").into_iter().next().ok_or_else(|| "no shutdown in runs.json yet".to_string())
    })
}

/// The message of the finished step `id` in the daemon's log.
fn step_done(log: &str, id: &str) -> String {
    log.lines()
        .find(|l| l.contains("step done") && l.contains(&format!("step={id}")))
        .unwrap_or_else(|| panic!("no finished step {id} in:\n{log}"))
        .to_owned()
}

/// Makes the UPS read on battery with little runtime left: the policy triggers within its debounce.
fn power_fails(upsd: &Upsd) {
    upsd.set_var("battery.runtime", "5");
    upsd.set_var("ups.status", "OB DISCHRG");
}

#[test]
fn as_primary_hecate_tells_the_nas_to_shut_down_and_cuts_the_power_after_it_left() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let pass = password_file(dir.path(), upsd.primary_password());
    let nas = Upsmon::start(&upsd, upsd.secondary_user(), upsd.secondary_password(), UpsmonRole::Secondary, 15);
    let yaml = config(
        &upsd,
        upsd.primary_user(),
        &pass,
        "",
        // dummy-ups offers one command, load.off; the choice among what a UPS offers is tested
        // in backends/tests/nut_fake.rs
        "shutdown: { ups_off: { source: atlas, command: load.off, hostsync: 60s } }\n",
    );
    let mut d = HecateDaemon::start(Path::new(env!("CARGO_BIN_EXE_hecate")), &yaml);
    wait_until("hecate and the NAS both logged in", DEADLINE, || match upsd.num_logins() {
        Ok(2) => Ok(()),
        other => Err(format!("NUMLOGINS {other:?}")),
    });
    assert!(nas.shutdowns().is_empty());

    power_fails(&upsd);
    let run = wait_for_shutdown_run(&mut d);
    let log = d.log();
    assert_eq!(run["outcome"], "success", "{log}");

    // The NAS ran its SHUTDOWNCMD once and left; hecate waited for that, then cut the power.
    assert_eq!(nas.shutdowns().len(), 1, "{}", nas.log());
    let step = step_done(&log, "ups-off/atlas");
    assert!(
        step.contains("FSD set; waited ") && step.contains("for 1 other client(s) (127.0.0.1) to log out"),
        "{step}"
    );
    assert!(step.contains("load.off accepted"), "{step}");
    let upsd_log = upsd.upsd_log();
    let fsd = line_at(&upsd_log, "Client hecate@127.0.0.1 set FSD on UPS [atlasups]");
    let cut = line_at(&upsd_log, "Instant command: hecate@127.0.0.1 did load.off on atlasups");
    assert!(fsd < cut, "{upsd_log}");
    assert_eq!(upsd.num_logins().unwrap(), 1, "only hecate is left");
}

/// A client that logged in and never leaves: a NAS whose shutdown hangs.
fn stuck_client(upsd: &Upsd) -> TcpStream {
    let stream = TcpStream::connect(upsd.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    for line in [
        format!("USERNAME {}", upsd.secondary_user()),
        format!("PASSWORD {}", upsd.secondary_password()),
        format!("LOGIN {UPS}"),
    ] {
        (&stream).write_all(format!("{line}\n").as_bytes()).unwrap();
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        assert!(answer.starts_with("OK"), "{line}: {answer}");
    }
    stream
}

#[test]
fn a_client_that_never_leaves_gets_hostsync_and_the_report_names_it() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let pass = password_file(dir.path(), upsd.primary_password());
    let _stuck = stuck_client(&upsd);
    let yaml = config(
        &upsd,
        upsd.primary_user(),
        &pass,
        "",
        "shutdown: { ups_off: { source: atlas, command: load.off, hostsync: 3s } }\n",
    );
    let mut d = HecateDaemon::start(Path::new(env!("CARGO_BIN_EXE_hecate")), &yaml);
    wait_until("hecate logged in", DEADLINE, || match upsd.num_logins() {
        Ok(2) => Ok(()),
        other => Err(format!("NUMLOGINS {other:?}")),
    });
    power_fails(&upsd);
    wait_for_shutdown_run(&mut d);
    let step = step_done(&d.log(), "ups-off/atlas");
    assert!(
        step.contains("hostsync 3s passed with 1 other client(s) (127.0.0.1) still attached: cutting the power anyway"),
        "{step}"
    );
    let upsd_log = upsd.upsd_log();
    assert!(line_at(&upsd_log, "set FSD on UPS") < line_at(&upsd_log, "did load.off on atlasups"), "{upsd_log}");
    assert_eq!(upsd.num_logins().unwrap(), 2, "the stuck client is still there");
}

#[test]
fn as_secondary_hecate_obeys_the_primarys_fsd_and_lets_it_cut_the_power_once_done() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let pass = password_file(dir.path(), upsd.secondary_password());
    // The primary waits up to a minute for its secondaries (HOSTSYNC).
    let mut primary = Upsmon::start(&upsd, upsd.monitor_user(), upsd.monitor_password(), UpsmonRole::Primary, 60);
    // A node whose stop and power-off take 2 s each: hecate's shutdown lasts about 4 s.
    let yaml = config(
        &upsd,
        upsd.secondary_user(),
        &pass,
        ", login: secondary",
        "policy: { debounce_polls: 30 }
nodes:
  - { name: s1, address: x, role: server, init: true, controllers: [ { type: simulated, step_duration: 2s } ] }
",
    );
    let mut d = HecateDaemon::start(Path::new(env!("CARGO_BIN_EXE_hecate")), &yaml);
    wait_until("hecate counted as the primary's secondary", DEADLINE, || match upsd.num_logins() {
        Ok(2) => Ok(()),
        other => Err(format!("NUMLOGINS {other:?}")),
    });

    // OB LB is critical for the primary, which raises FSD at once; hecate's policy would wait 30
    // polls on an LB its live estimate contradicts, so what it acts on is the primary's FSD.
    upsd.set_var_until("ups.status", "OB LB", |s| s.ends_with("OB LB"));
    let run = wait_for_shutdown_run(&mut d);
    assert!(run["trigger_reason"].as_str().unwrap().contains("FSD"), "{run}");
    let shutdown_at = wait_until("the primary's SHUTDOWNCMD", DEADLINE, || {
        primary.shutdowns().first().copied().ok_or_else(|| primary.log())
    });
    // upsmon 2.8.0 notifies LOWBATT when it sees OB LB, raises FSD in the same pass (no FSD
    // notification for its own), then waits for its secondaries.
    let critical_at = primary
        .notifications()
        .iter()
        .find(|(_, kind)| kind == "LOWBATT")
        .map(|(at, _)| *at)
        .unwrap_or_else(|| panic!("the primary notified no LOWBATT: {:?}", primary.notifications()));
    let waited = shutdown_at - critical_at;
    // It waited for hecate's shutdown (stop + power-off, 4 s), and went once hecate logged out,
    // long before its HOSTSYNC.
    assert!((3.5..50.0).contains(&waited), "the primary shut down {waited:.1} s after raising FSD");
    let upsd_log = upsd.upsd_log();
    assert!(
        line_at(&upsd_log, "Client monuser@127.0.0.1 set FSD") < line_at(&upsd_log, "User secmon@127.0.0.1 logged out"),
        "{upsd_log}"
    );
    assert!(step_done(&d.log(), "leave-ups/atlas").contains("logged out"));
    wait_until("the primary to exit", DEADLINE, || if primary.exited() { Ok(()) } else { Err(primary.log()) });
}
