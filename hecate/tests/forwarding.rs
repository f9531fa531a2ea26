//! Multi-UPS forwarding between two real `hecate daemon` processes over loopback HTTP: a
//! forwarder (`tethys`, its UPS failing) and a coordinator (`titan-db`, its UPS fine). The UPSes
//! and machines are simulated; the two daemons, the endpoint and the token are real.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hecate_test_support::{HecateDaemon, free_port, wait_until};

const TOKEN: &str = "test-forwarding-token-0123456789";

type Daemon = HecateDaemon;

fn start(yaml_body: &str) -> Daemon {
    HecateDaemon::start(Path::new(env!("CARGO_BIN_EXE_hecate")), yaml_body)
}

fn token_file(dir: &Path, token: &str) -> PathBuf {
    let p = dir.join("forwarding.token");
    std::fs::write(&p, format!("{token}\n")).unwrap();
    p
}

/// The coordinator: its own UPS stays on mains; it runs the cluster's shutdown when told.
fn coordinator(port: u16, token: &Path) -> Daemon {
    coordinator_with(port, token, ", metrics_listen: null", "")
}

/// The coordinator with more `daemon:` and `forwarding:` settings.
fn coordinator_with(port: u16, token: &Path, daemon: &str, forwarding: &str) -> Daemon {
    start(&format!(
        "host: titan-db
role:
  coordinator: {{ listen: \"127.0.0.1:{port}\", token_file: {token}{forwarding} }}
daemon: {{ poll_interval: 200ms{daemon} }}
power_sources: [ {{ type: simulated, name: main-ups }} ]
cluster: {{ type: simulated }}
nodes:
  - {{ name: s1, address: x, role: server, init: true, controllers: [ {{ type: simulated, step_duration: 50ms }} ] }}
notifiers: [ {{ type: log }} ]
",
        token = token.display()
    ))
}

/// The forwarder: its UPS loses mains at once and runs low within seconds.
fn forwarder(url: &str, token: &Path) -> Daemon {
    forwarder_with(url, token, "", "", "")
}

/// The forwarder with more `daemon:` settings, UPS script steps and `forwarding:` settings.
fn forwarder_with(url: &str, token: &Path, daemon: &str, script: &str, forwarding: &str) -> Daemon {
    forwarder_full(url, token, daemon, script, forwarding, "")
}

/// The forwarder with all of the above and more top-level YAML (`extra`).
fn forwarder_full(url: &str, token: &Path, daemon: &str, script: &str, forwarding: &str, extra: &str) -> Daemon {
    start(&format!(
        "host: tethys
role:
  forwarder: {{ coordinator_url: \"{url}\", token_file: {token}, timeout: 3s{forwarding} }}
daemon: {{ poll_interval: 200ms, metrics_listen: null{daemon} }}
policy: {{ debounce_polls: 1 }}
budget: {{ default_shutdown_budget: 10s }}
power_sources:
  - {{ type: simulated, name: tethys-ups, battery_runtime: 12s, script: [ {{ at: 0s, event: mains_lost }}{script} ] }}
cluster: {{ type: simulated }}
nodes:
  - {{ name: t1, address: x, role: server, init: true, controllers: [ {{ type: simulated, step_duration: 50ms }} ] }}
notifiers: [ {{ type: log }} ]
{extra}",
        token = token.display()
    ))
}

/// `shutdown:` for a forwarder that powers itself off with a recording command (no real
/// poweroff): `touch MARK`.
fn power_off_self_by_touching(mark: &Path) -> String {
    format!("shutdown: {{ power_off_self: true, power_off_self_command: [ /usr/bin/touch, {} ] }}\n", mark.display())
}

/// `GET /metrics` over a plain socket.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn wait_for_listen(port: u16) {
    wait_until("the coordinator's forwarding endpoint", Duration::from_secs(30), || {
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map(|_| ()).map_err(|e| e.to_string())
    });
}

#[test]
fn the_coordinator_runs_the_shutdown_a_forwarder_sends() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let metrics_port = free_port(Ipv4Addr::LOCALHOST);
    let coord = coordinator_with(port, &token, &format!(", metrics_listen: \"127.0.0.1:{metrics_port}\""), "");
    wait_for_listen(port);
    let fwd = forwarder(&format!("http://127.0.0.1:{port}"), &token);

    let runs = wait_until("the coordinator's shutdown", Duration::from_secs(60), || {
        let s = coord.runs_of("shutdown");
        if s.is_empty() { Err(format!("no shutdown yet; coordinator log:\n{}", coord.log())) } else { Ok(s) }
    });
    let reason = runs[0]["trigger_reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.starts_with("forwarded by tethys: ups tethys-ups:"), "{reason}");
    wait_until("the forwarder to record the handover", Duration::from_secs(30), || {
        let phase = fwd.status()["phase"].clone();
        if phase == "forwarded" { Ok(()) } else { Err(format!("phase {phase}; forwarder log:\n{}", fwd.log())) }
    });
    assert!(
        fwd.runs_of("shutdown").is_empty(),
        "the forwarder must not run its own shutdown when the coordinator took it"
    );
    let metrics = scrape(metrics_port);
    assert!(metrics.contains("hecate_forwarded_triggers_total{forwarder=\"tethys\"} 1"), "{metrics}");
    assert!(metrics.contains("hecate_forwarders_waiting 1"), "tethys has not cleared yet:\n{metrics}");
    assert!(!fwd.log().contains(TOKEN) && !coord.log().contains(TOKEN), "the token is never logged");
}

#[test]
fn a_refused_forward_falls_back_to_the_local_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let good = token_file(dir.path(), TOKEN);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let coord = coordinator(port, &good);
    wait_for_listen(port);
    let wrong_dir = tempfile::tempdir().unwrap();
    let wrong = token_file(wrong_dir.path(), "a-different-token-of-enough-length");
    let fwd = forwarder(&format!("http://127.0.0.1:{port}"), &wrong);

    let runs = wait_until("the forwarder's own shutdown", Duration::from_secs(60), || {
        let s = fwd.runs_of("shutdown");
        if s.is_empty() { Err(format!("no local shutdown yet; forwarder log:\n{}", fwd.log())) } else { Ok(s) }
    });
    let reason = runs[0]["trigger_reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("forwarding failed: coordinator answered 401"), "{reason}");
    assert!(fwd.log().contains("\"kind\":\"forwarder_fallback\""), "the fallback event:\n{}", fwd.log());
    assert!(coord.runs_of("shutdown").is_empty(), "a wrong token must not shut the cluster down");
    assert!(coord.log().contains("forwarded message refused: missing or wrong token"), "{}", coord.log());
}

#[test]
fn an_unreachable_coordinator_falls_back_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    // Nothing listens there.
    let port = free_port(Ipv4Addr::LOCALHOST);
    let fwd = forwarder(&format!("http://127.0.0.1:{port}"), &token);
    let runs = wait_until("the forwarder's own shutdown", Duration::from_secs(60), || {
        let s = fwd.runs_of("shutdown");
        if s.is_empty() { Err(format!("no local shutdown yet; forwarder log:\n{}", fwd.log())) } else { Ok(s) }
    });
    let reason = runs[0]["trigger_reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("forwarding failed"), "{reason}");
    assert!(fwd.log().contains("\"kind\":\"forwarder_fallback\""), "{}", fwd.log());
}

#[test]
fn the_coordinator_starts_the_cluster_only_once_the_forwarder_has_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    let port = free_port(Ipv4Addr::LOCALHOST);
    // The coordinator's own mains never fail: without the forwarder's clear it would start the
    // cluster a second after its shutdown, onto machines whose UPS is still failing.
    let coord = coordinator_with(
        port,
        &token,
        ", metrics_listen: null, startup_on_power_return: true, power_return_settle: 1s",
        "",
    );
    wait_for_listen(port);
    let fwd = forwarder_with(
        &format!("http://127.0.0.1:{port}"),
        &token,
        ", power_return_settle: 1s",
        ", { at: 8s, event: mains_back }",
        "",
    );

    wait_until("the coordinator to wait for tethys", Duration::from_secs(60), || {
        let st = coord.status();
        let waiting = st["waiting_for_forwarders"].clone();
        let done = !coord.runs_of("shutdown").is_empty();
        if done && waiting == serde_json::json!(["tethys"]) && st["phase"] == "shut_down" {
            Ok(())
        } else {
            Err(format!("phase {}, waiting {waiting}; coordinator log:\n{}", st["phase"], coord.log()))
        }
    });
    wait_until("the coordinator's startup", Duration::from_secs(60), || {
        let log = coord.log();
        if log.contains("stage started stage=") && coord.status()["phase"] == "watching" {
            Ok(())
        } else {
            Err(format!("phase {}; forwarder log:\n{}", coord.status()["phase"], fwd.log()))
        }
    });
    let log = coord.log();
    let cleared = log.find("forwarder tethys: mains are back").expect("the clear arrived");
    let started = log.find("mains power is back and stable: starting the cluster").expect("the startup began");
    assert!(cleared < started, "no startup before the forwarder cleared:\n{log}");
    assert!(fwd.runs_of("shutdown").is_empty());
    assert_eq!(fwd.status()["phase"], "watching", "the forwarder watches again");
}

#[test]
fn after_the_handover_the_forwarder_powers_itself_off_when_its_mains_stay_out() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    let mark = dir.path().join("tethys-powered-off");
    let port = free_port(Ipv4Addr::LOCALHOST);
    let coord = coordinator(port, &token);
    wait_for_listen(port);
    let fwd = forwarder_full(
        &format!("http://127.0.0.1:{port}"),
        &token,
        "",
        "",
        ", power_off_self_after: 1s",
        &power_off_self_by_touching(&mark),
    );

    wait_until("the forwarder's power-off command", Duration::from_secs(60), || {
        if mark.exists() { Ok(()) } else { Err(format!("not powered off; forwarder log:\n{}", fwd.log())) }
    });
    let log = fwd.log();
    let handed = log.find("the coordinator took the trigger").expect("the handover is logged");
    let off = log.find("powering this host off").expect("the power-off is logged");
    assert!(handed < off, "the host is powered off only after the handover:\n{log}");
    assert!(fwd.runs_of("shutdown").is_empty(), "no local plan ran: the coordinator took the cluster's shutdown");
    assert!(!coord.runs_of("shutdown").is_empty() || coord.status()["phase"] == "shutting_down", "{}", coord.log());
}

#[test]
fn mains_back_before_the_delay_keep_the_forwarder_up() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    let mark = dir.path().join("tethys-powered-off");
    let port = free_port(Ipv4Addr::LOCALHOST);
    let _coord = coordinator(port, &token);
    wait_for_listen(port);
    let fwd = forwarder_full(
        &format!("http://127.0.0.1:{port}"),
        &token,
        ", power_return_settle: 1s",
        ", { at: 5s, event: mains_back }",
        ", power_off_self_after: 30s",
        &power_off_self_by_touching(&mark),
    );

    // While it waits, its status says when it will power itself off.
    let at = wait_until("the forwarder's power-off time in its status", Duration::from_secs(60), || {
        let st = fwd.status();
        match st["power_off_self_at"].as_str() {
            Some(at) if st["phase"] == "forwarded" => Ok(at.to_string()),
            _ => Err(format!("status {st}; forwarder log:\n{}", fwd.log())),
        }
    });
    let at = humantime::parse_rfc3339(&at).unwrap();
    let ahead = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
    assert!(ahead > Duration::from_secs(20) && ahead <= Duration::from_secs(30), "{ahead:?} ahead");
    wait_until("the forwarder to watch again after the handover", Duration::from_secs(60), || {
        let log = fwd.log();
        if log.contains("the coordinator took the trigger") && fwd.status()["phase"] == "watching" {
            Ok(())
        } else {
            Err(format!("phase {}; forwarder log:\n{log}", fwd.status()["phase"]))
        }
    });
    assert!(!mark.exists(), "mains came back within power_off_self_after: no power-off\n{}", fwd.log());
    assert!(fwd.status().get("power_off_self_at").is_none(), "nothing scheduled once watching: {}", fwd.status());
    assert!(!fwd.log().contains("powering this host off"), "{}", fwd.log());
}

#[test]
fn over_tls_the_forwarder_trusts_only_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    hecate_test_support::make_certificates(dir.path());
    let (ca, cert, key) = (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let tls = format!(", tls_cert_file: {}, tls_key_file: {}", cert.display(), key.display());
    let coord = coordinator_with(port, &token, ", metrics_listen: null", &tls);
    wait_for_listen(port);
    let url = format!("https://127.0.0.1:{port}");

    // Without the CA the coordinator's certificate is not trusted: the forwarder acts locally.
    let untrusting = forwarder(&url, &token);
    wait_until("the untrusting forwarder's own shutdown", Duration::from_secs(60), || {
        if untrusting.runs_of("shutdown").is_empty() { Err(untrusting.log()) } else { Ok(()) }
    });
    assert!(coord.runs_of("shutdown").is_empty(), "nothing reached the coordinator:\n{}", coord.log());

    let fwd = forwarder_with(&url, &token, "", "", &format!(", ca_file: {}", ca.display()));
    let runs = wait_until("the coordinator's shutdown", Duration::from_secs(60), || {
        let s = coord.runs_of("shutdown");
        if s.is_empty() {
            Err(format!("coordinator log:\n{}\nforwarder log:\n{}", coord.log(), fwd.log()))
        } else {
            Ok(s)
        }
    });
    assert!(runs[0]["trigger_reason"].as_str().unwrap_or_default().starts_with("forwarded by tethys"));
    assert!(fwd.runs_of("shutdown").is_empty());
}
