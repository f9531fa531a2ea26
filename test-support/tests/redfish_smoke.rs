//! Proves the `Sushy` harness: a real sushy-emulator serves the two fake systems over Redfish,
//! resets change the power state and are logged, basic auth is enforced when asked for, and the
//! graceful-shutdown and delay knobs behave as documented.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hecate_test_support::{RESERVED_PORTS, SUSHY_SYSTEMS, Sushy, SushyOptions};

/// A raw GET without credentials; returns the status code.
fn status_without_auth(bmc: &Sushy, path: &str) -> u16 {
    get(bmc, path).0
}

#[test]
fn resets_change_power_and_are_logged() {
    let bmc = Sushy::start();
    assert!(bmc.addr().ip().is_loopback());
    assert!(!RESERVED_PORTS.contains(&bmc.addr().port()));
    assert!(bmc.url().starts_with("http://127.0.0.1:"));
    assert_eq!(bmc.power_state("node1"), "On");
    assert_eq!(bmc.power_state(SUSHY_SYSTEMS[1].0), "On");
    assert!(bmc.resets().is_empty());

    bmc.reset("node1", "ForceOff");
    assert_eq!(bmc.power_state("node1"), "Off");
    assert_eq!(bmc.power_state("node2"), "On");
    bmc.reset("node1", "On");
    assert_eq!(bmc.power_state("node1"), "On");
    bmc.reset("node1", "GracefulShutdown");
    assert_eq!(bmc.power_state("node1"), "Off");
    assert_eq!(bmc.resets(), ["ForceOff", "On", "GracefulShutdown"]);
    assert!(bmc.requests().iter().any(|r| r.starts_with("POST /redfish/v1/Systems/")), "{:?}", bmc.requests());
}

#[test]
fn auth_is_enforced_when_asked_for() {
    let open = Sushy::start();
    assert_eq!(status_without_auth(&open, "/redfish/v1/Systems"), 200);
    let closed = Sushy::start_with(&SushyOptions { auth: true, ..SushyOptions::default() });
    assert_eq!(status_without_auth(&closed, "/redfish/v1/Systems"), 401);
    assert_eq!(closed.power_state("node1"), "On");
    let creds = std::fs::read_to_string(closed.credentials_file()).expect("read credentials file");
    assert_eq!(creds, "admin:password\n");
}

#[test]
fn ignored_graceful_shutdown_and_delayed_power() {
    let bmc = Sushy::start_with(&SushyOptions { ignore_graceful: true, ..SushyOptions::default() });
    bmc.reset("node1", "GracefulShutdown");
    assert_eq!(bmc.power_state("node1"), "On", "the \"OS\" ignores the power button");
    bmc.reset("node1", "ForceOff");
    assert_eq!(bmc.power_state("node1"), "Off");
    assert_eq!(bmc.resets(), ["GracefulShutdown", "ForceOff"]);

    let slow = Sushy::start_with(&SushyOptions { power_delay_s: 3600, ..SushyOptions::default() });
    slow.reset("node1", "ForceOff");
    assert_eq!(slow.power_state("node1"), "On", "a delayed reset must not show yet");
    assert_eq!(slow.resets(), ["ForceOff"]);
}

#[test]
fn single_system_and_tls() {
    let single = Sushy::start_with(&SushyOptions { single_system: true, ..SushyOptions::default() });
    let (status, body) = get(&single, "/redfish/v1/Systems");
    assert_eq!(status, 200);
    assert!(body.contains("\"Members@odata.count\": 1"), "{body}");

    let tls = Sushy::start_with(&SushyOptions { tls: true, ..SushyOptions::default() });
    assert!(tls.url().starts_with("https://127.0.0.1:"));
    let pem = std::fs::read_to_string(tls.ca_file()).expect("read the test ca");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    // openssl verifies the served chain against the test CA and the address
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", &tls.addr().to_string(), "-verify_return_error", "-verify_ip", "127.0.0.1"])
        .arg("-CAfile")
        .arg(tls.ca_file())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run openssl s_client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("Verify return code: 0 (ok)"), "{out:?}");
}

fn get(bmc: &Sushy, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&bmc.addr(), Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("set read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", bmc.addr()).expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    let status =
        answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("not http: {answer:?}"));
    (status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}
