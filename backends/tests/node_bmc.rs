//! The hardware power controllers against real peers on loopback: `ipmi` against OpenIPMI's
//! `ipmi_sim` (hecate_test_support::IpmiSim), `redfish` against sushy-emulator
//! (hecate_test_support::Sushy), the fallback from one to the other through the core's
//! `ControllerChain`, and `wol` against a UDP listener. Needs root and the peers installed
//! (scripts/install-test-deps.sh); without them the tests fail, saying so.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use hecate_backends::node::ipmi::IpmiConfig;
use hecate_backends::node::redfish::RedfishConfig;
use hecate_backends::node::wol::{WolConfig, magic_packet, parse_mac};
use hecate_core::node::{
    Capability, ControllerChain, NodeController, NodeControllerConfig, NodeInfo, NodeOp, NodeOpOutput, NodeRole,
    PowerState,
};
use hecate_core::{BackendError, BuildContext, ErrorKind};
use hecate_test_support::{IpmiSim, SUSHY_SYSTEMS, Sushy, SushyOptions, free_port, free_udp_port};
use serde_json::json;

fn node_info() -> NodeInfo {
    NodeInfo { name: "titan-0a".into(), address: "127.0.0.1".into(), role: NodeRole::Agent }
}

fn build(cfg: &dyn NodeControllerConfig) -> Result<Box<dyn NodeController>, BackendError> {
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let ctx = BuildContext { host: "test".into(), state_dir: std::env::temp_dir() };
    cfg.build(&node_info(), &ctx)
}

/// A config from JSON `base` with `extra` merged over it.
fn merged<T: serde::de::DeserializeOwned>(base: serde_json::Value, extra: serde_json::Value) -> T {
    let mut v = base;
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    serde_json::from_value(v).unwrap()
}

fn ipmi_config(bmc: &IpmiSim, extra: serde_json::Value) -> IpmiConfig {
    merged(
        json!({
            "host": bmc.host(), "port": bmc.port(), "username": bmc.username(),
            "password_file": bmc.password_file(), "cipher_suite": 3,
            "timeout": "10s", "soft_timeout": "5s", "verify_timeout": "5s", "poll_interval": "100ms",
        }),
        extra,
    )
}

fn ipmi(bmc: &IpmiSim, extra: serde_json::Value) -> Box<dyn NodeController> {
    build(&ipmi_config(bmc, extra)).unwrap()
}

fn redfish_config(bmc: &Sushy, extra: serde_json::Value) -> RedfishConfig {
    merged(
        json!({
            "endpoint": bmc.url(), "system_name": "node1",
            "timeout": "10s", "graceful_timeout": "5s", "verify_timeout": "5s", "poll_interval": "100ms",
        }),
        extra,
    )
}

fn redfish(bmc: &Sushy, extra: serde_json::Value) -> Box<dyn NodeController> {
    build(&redfish_config(bmc, extra)).unwrap()
}

async fn power(c: &dyn NodeController) -> PowerState {
    match c.run(&NodeOp::PowerState).await.unwrap() {
        NodeOpOutput::Power(p) => p,
        other => panic!("power state answered {other:?}"),
    }
}

async fn expect_err(c: &dyn NodeController, op: NodeOp) -> BackendError {
    match c.run(&op).await {
        Ok(v) => panic!("{op} should fail, got {v:?}"),
        Err(e) => e,
    }
}

fn write_secret(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// ipmi

#[tokio::test]
async fn ipmi_off_and_on_send_only_what_is_needed() {
    let bmc = IpmiSim::start();
    let c = ipmi(&bmc, json!({}));
    assert_eq!(c.kind(), "ipmi");
    assert_eq!(c.capabilities(), [Capability::PowerState, Capability::PowerOn, Capability::PowerOff]);
    assert_eq!(power(&*c).await, PowerState::On);

    // the "OS" honours the soft off at once: no hard off follows
    assert_eq!(c.run(&NodeOp::PowerOff).await.unwrap(), NodeOpOutput::Power(PowerState::Off), "confirmed");
    assert!(!bmc.power_is_on());
    assert_eq!(bmc.actions(), ["set shutdown 1"]);
    assert_eq!(power(&*c).await, PowerState::Off);

    // already off, already on: nothing is sent
    c.run(&NodeOp::PowerOff).await.unwrap();
    assert_eq!(bmc.actions(), ["set shutdown 1"]);
    c.run(&NodeOp::PowerOn).await.unwrap();
    assert!(bmc.power_is_on());
    c.run(&NodeOp::PowerOn).await.unwrap();
    assert_eq!(bmc.actions(), ["set shutdown 1", "set power 1"]);
}

#[tokio::test]
async fn ipmi_soft_off_ignored_by_the_os_is_forced_after_soft_timeout() {
    let bmc = IpmiSim::start();
    bmc.ignore_soft_off();
    let c = ipmi(&bmc, json!({ "soft_timeout": "1s" }));
    let t0 = Instant::now();
    c.run(&NodeOp::PowerOff).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(1), "forced off before soft_timeout: {:?}", t0.elapsed());
    assert!(!bmc.power_is_on());
    assert_eq!(bmc.actions(), ["set shutdown 1", "set power 0"]);
}

#[tokio::test]
async fn a_forced_off_cuts_at_once_and_confirms_and_soft_offs_get_minutes_by_default() {
    let bmc = IpmiSim::start();
    bmc.ignore_soft_off();
    let c = ipmi(&bmc, json!({}));
    assert_eq!(c.run(&NodeOp::ForceOff).await.unwrap(), NodeOpOutput::Power(PowerState::Off));
    assert_eq!(bmc.actions(), ["set power 0"], "no soft off first");
    c.run(&NodeOp::ForceOff).await.unwrap();
    assert_eq!(bmc.actions(), ["set power 0"], "already off: nothing sent");

    let rf: RedfishConfig = serde_json::from_value(json!({ "endpoint": "https://10.0.0.1" })).unwrap();
    assert_eq!(*rf.graceful_timeout, Duration::from_secs(300));
    let ip: IpmiConfig =
        serde_json::from_value(json!({ "host": "10.0.0.1", "username": "u", "password_file": "/p" })).unwrap();
    assert_eq!(*ip.soft_timeout, Duration::from_secs(300));
}

#[tokio::test]
async fn ipmi_soft_off_that_takes_a_moment_is_waited_for() {
    let bmc = IpmiSim::start();
    bmc.set_soft_delay(1);
    let c = ipmi(&bmc, json!({ "soft_timeout": "10s" }));
    c.run(&NodeOp::PowerOff).await.unwrap();
    assert_eq!(bmc.actions(), ["set shutdown 1"], "no hard off while the os shuts down in time");
    assert_eq!(power(&*c).await, PowerState::Off);
}

#[tokio::test]
async fn ipmi_bmc_that_acknowledges_but_does_not_act_fails() {
    let bmc = IpmiSim::start();
    bmc.set_power(false);
    bmc.ignore_commands(true);
    let c = ipmi(&bmc, json!({ "verify_timeout": "1s" }));
    let e = expect_err(&*c, NodeOp::PowerOn).await;
    assert_eq!(e.kind, ErrorKind::Failed);
    assert_eq!(e.message, "bmc accepted power on but the machine is still off after 1s");

    bmc.set_power(true);
    let c = ipmi(&bmc, json!({ "soft_timeout": "0s", "verify_timeout": "1s" }));
    let e = expect_err(&*c, NodeOp::PowerOff).await;
    assert_eq!(e.message, "bmc accepted power off but the machine is still on after 1s");
    assert_eq!(bmc.actions(), ["set power 1", "set power 0"], "soft_timeout 0s goes straight to a hard off");
}

#[tokio::test]
async fn ipmi_auth_privilege_and_setup_errors() {
    let bmc = IpmiSim::start();
    let dir = tempfile::tempdir().unwrap();
    let wrong = write_secret(dir.path(), "wrong", "not-the-password\n");
    let c = ipmi(&bmc, json!({ "password_file": wrong }));
    let e = expect_err(&*c, NodeOp::PowerState).await;
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!e.message.contains("not-the-password"), "{e}");

    let oper = write_secret(dir.path(), "oper", "operpass\n");
    let c = ipmi(&bmc, json!({ "username": "oper", "password_file": oper, "privilege": "operator" }));
    assert_eq!(power(&*c).await, PowerState::On);

    let e = build(&ipmi_config(&bmc, json!({ "password_file": dir.path().join("missing") }))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains("password_file"), "{e}");
    assert!(bmc.actions().is_empty());
}

#[tokio::test]
async fn ipmi_silent_bmc_times_out() {
    let mut bmc = IpmiSim::start();
    bmc.kill();
    let c = ipmi(&bmc, json!({ "timeout": "2s" }));
    let t0 = Instant::now();
    let e = expect_err(&*c, NodeOp::PowerState).await;
    assert!(matches!(e.kind, ErrorKind::Timeout | ErrorKind::Unreachable), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

// ---------------------------------------------------------------------------------------------
// redfish

#[tokio::test]
async fn redfish_off_and_on_send_only_what_is_needed() {
    let bmc = Sushy::start();
    let c = redfish(&bmc, json!({}));
    assert_eq!(c.kind(), "redfish");
    assert_eq!(c.capabilities(), [Capability::PowerState, Capability::PowerOn, Capability::PowerOff]);
    assert_eq!(power(&*c).await, PowerState::On);

    c.run(&NodeOp::PowerOff).await.unwrap();
    assert_eq!(bmc.power_state("node1"), "Off");
    assert_eq!(bmc.power_state("node2"), "On", "only the configured system");
    assert_eq!(bmc.resets(), ["GracefulShutdown"]);
    assert_eq!(power(&*c).await, PowerState::Off);

    c.run(&NodeOp::PowerOff).await.unwrap();
    c.run(&NodeOp::PowerOn).await.unwrap();
    c.run(&NodeOp::PowerOn).await.unwrap();
    assert_eq!(bmc.power_state("node1"), "On");
    assert_eq!(bmc.resets(), ["GracefulShutdown", "On"]);
}

#[tokio::test]
async fn redfish_with_basic_auth() {
    let bmc = Sushy::start_with(&SushyOptions { auth: true, ..SushyOptions::default() });
    let c = redfish(&bmc, json!({ "credentials_file": bmc.credentials_file() }));
    c.run(&NodeOp::PowerOff).await.unwrap();
    c.run(&NodeOp::PowerOn).await.unwrap();
    assert_eq!(bmc.resets(), ["GracefulShutdown", "On"]);

    let dir = tempfile::tempdir().unwrap();
    let wrong = write_secret(dir.path(), "wrong", "admin:not-the-password\n");
    let e = expect_err(&*redfish(&bmc, json!({ "credentials_file": wrong })), NodeOp::PowerOff).await;
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(!e.detail().contains("not-the-password"), "{e}");

    let e = expect_err(&*redfish(&bmc, json!({})), NodeOp::PowerState).await;
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("no credentials_file"), "{e}");
    assert_eq!(bmc.resets(), ["GracefulShutdown", "On"], "refused requests changed nothing");
}

#[tokio::test]
async fn redfish_graceful_shutdown_ignored_by_the_os_is_forced_after_graceful_timeout() {
    let bmc = Sushy::start_with(&SushyOptions { ignore_graceful: true, ..SushyOptions::default() });
    let c = redfish(&bmc, json!({ "graceful_timeout": "1s" }));
    let t0 = Instant::now();
    c.run(&NodeOp::PowerOff).await.unwrap();
    assert!(t0.elapsed() >= Duration::from_secs(1), "forced off before graceful_timeout: {:?}", t0.elapsed());
    assert_eq!(bmc.power_state("node1"), "Off");
    assert_eq!(bmc.resets(), ["GracefulShutdown", "ForceOff"]);
}

#[tokio::test]
async fn redfish_power_change_that_takes_time_is_polled_until_it_shows() {
    let bmc = Sushy::start_with(&SushyOptions { power_delay_s: 2, ..SushyOptions::default() });
    let c = redfish(&bmc, json!({ "graceful_timeout": "10s", "verify_timeout": "10s" }));
    c.run(&NodeOp::PowerOff).await.unwrap();
    assert_eq!(bmc.power_state("node1"), "Off");
    c.run(&NodeOp::PowerOn).await.unwrap();
    assert_eq!(bmc.power_state("node1"), "On");
    assert_eq!(bmc.resets(), ["GracefulShutdown", "On"]);
}

#[tokio::test]
async fn redfish_bmc_that_acknowledges_but_does_not_act_fails() {
    let bmc = Sushy::start_with(&SushyOptions { power_delay_s: 3600, ..SushyOptions::default() });
    let c = redfish(&bmc, json!({ "graceful_timeout": "1s", "verify_timeout": "1s" }));
    let e = expect_err(&*c, NodeOp::PowerOff).await;
    assert_eq!(e.kind, ErrorKind::Failed);
    assert_eq!(e.message, "bmc accepted power off but the machine is still on after 1s");
    assert_eq!(bmc.resets(), ["GracefulShutdown", "ForceOff"]);
}

#[tokio::test]
async fn redfish_finds_the_system_by_uuid_name_or_as_the_only_one() {
    let bmc = Sushy::start();
    let (uuid2, _) = SUSHY_SYSTEMS[1];
    let by_uuid =
        redfish(&bmc, json!({ "system_name": null, "system_id": uuid2.to_uppercase(), "graceful_timeout": "0s" }));
    by_uuid.run(&NodeOp::PowerOff).await.unwrap();
    assert_eq!((bmc.power_state("node1").as_str(), bmc.power_state("node2").as_str()), ("On", "Off"));
    assert_eq!(bmc.resets(), ["ForceOff"], "graceful_timeout 0s goes straight to ForceOff");

    let by_name = redfish(&bmc, json!({ "system_name": "node2" }));
    assert_eq!(power(&*by_name).await, PowerState::Off);

    let ambiguous = redfish(&bmc, json!({ "system_name": null }));
    let e = expect_err(&*ambiguous, NodeOp::PowerState).await;
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains("2 systems") && e.message.contains(uuid2), "{e}");

    let unknown = redfish(&bmc, json!({ "system_name": "node9" }));
    let e = expect_err(&*unknown, NodeOp::PowerOn).await;
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains("no system with Name `node9`"), "{e}");

    let single = Sushy::start_with(&SushyOptions { single_system: true, ..SushyOptions::default() });
    let only = redfish(&single, json!({ "system_name": null }));
    assert_eq!(power(&*only).await, PowerState::On);
}

#[tokio::test]
async fn redfish_tls_is_verified_against_ca_file_or_skipped_when_insecure() {
    let bmc = Sushy::start_with(&SushyOptions { tls: true, ..SushyOptions::default() });
    assert!(bmc.url().starts_with("https://"));
    let pinned = redfish(&bmc, json!({ "ca_file": bmc.ca_file() }));
    assert_eq!(power(&*pinned).await, PowerState::On);

    // the test CA is in no system trust store
    let e = expect_err(&*redfish(&bmc, json!({})), NodeOp::PowerState).await;
    assert_eq!(e.kind, ErrorKind::Auth, "{}", e.detail());
    assert!(e.detail().to_lowercase().contains("certificate"), "{}", e.detail());

    let insecure_cfg = redfish_config(&bmc, json!({ "insecure": true }));
    assert!(insecure_cfg.warnings()[0].contains("insecure"), "{:?}", insecure_cfg.warnings());
    let insecure = build(&insecure_cfg).unwrap();
    assert_eq!(power(&*insecure).await, PowerState::On);

    let not_pem = write_secret(bmc.dir(), "not.pem", "hello\n");
    let e = build(&redfish_config(&bmc, json!({ "ca_file": not_pem }))).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
}

// ---------------------------------------------------------------------------------------------
// fallback through the core's chain

fn chain(controllers: Vec<Box<dyn NodeController>>) -> ControllerChain {
    ControllerChain::new(node_info(), controllers)
}

#[tokio::test]
async fn redfish_down_falls_back_to_ipmi_and_the_report_names_both() {
    let ipmi_bmc = IpmiSim::start();
    // a port nobody listens on: connections are refused
    let dead = format!("http://127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST));
    let rf: RedfishConfig = serde_json::from_value(json!({ "endpoint": dead, "timeout": "5s" })).unwrap();
    let chain = chain(vec![build(&rf).unwrap(), ipmi(&ipmi_bmc, json!({}))]);
    assert_eq!(chain.kinds_for(Capability::PowerOff), ["redfish", "ipmi"]);

    let (result, report) = chain.run(&NodeOp::PowerOff, Duration::from_secs(20), Duration::from_secs(40)).await;
    assert_eq!(result.unwrap(), NodeOpOutput::Power(PowerState::Off));
    assert!(!ipmi_bmc.power_is_on());
    assert_eq!(report.succeeded_by.as_deref(), Some("ipmi"));
    let tried: Vec<&str> = report.attempts.iter().map(|a| a.controller.as_str()).collect();
    assert_eq!(tried, ["redfish", "ipmi"]);
    assert_eq!(report.attempts[0].error.as_ref().unwrap().kind, ErrorKind::Unreachable);
    assert!(report.attempts[1].error.is_none());
    assert_eq!((report.node.as_str(), report.op.to_string().as_str()), ("titan-0a", "power off"));
    let tried = report.tried();
    assert!(tried.starts_with("redfish failed (unreachable: "), "{tried}");
    assert!(tried.ends_with("ipmi ok"), "{tried}");
}

#[tokio::test]
async fn redfish_wrong_credentials_fall_back_to_ipmi() {
    let sushy = Sushy::start_with(&SushyOptions { auth: true, ..SushyOptions::default() });
    let ipmi_bmc = IpmiSim::start();
    ipmi_bmc.set_power(false);
    let dir = tempfile::tempdir().unwrap();
    let wrong = write_secret(dir.path(), "wrong", "admin:wrong\n");
    let chain = chain(vec![redfish(&sushy, json!({ "credentials_file": wrong })), ipmi(&ipmi_bmc, json!({}))]);

    let (result, report) = chain.run(&NodeOp::PowerOn, Duration::from_secs(20), Duration::from_secs(40)).await;
    assert_eq!(result.unwrap(), NodeOpOutput::Done);
    assert!(ipmi_bmc.power_is_on());
    assert!(sushy.resets().is_empty());
    assert_eq!(report.succeeded_by.as_deref(), Some("ipmi"));
    assert_eq!(report.attempts.len(), 2);
    assert_eq!((report.attempts[0].controller.as_str(), report.attempts[1].controller.as_str()), ("redfish", "ipmi"));
    assert_eq!(report.attempts[0].error.as_ref().unwrap().kind, ErrorKind::Auth);
    assert!(report.tried().contains("redfish failed (auth: "), "{}", report.tried());
}

#[tokio::test]
async fn both_bmcs_failing_is_an_error_naming_both() {
    let ipmi_bmc = IpmiSim::start();
    ipmi_bmc.ignore_commands(true);
    let dead = format!("http://127.0.0.1:{}", free_port(Ipv4Addr::LOCALHOST));
    let rf: RedfishConfig = serde_json::from_value(json!({ "endpoint": dead })).unwrap();
    let chain =
        chain(vec![build(&rf).unwrap(), ipmi(&ipmi_bmc, json!({ "soft_timeout": "0s", "verify_timeout": "1s" }))]);
    let (result, report) = chain.run(&NodeOp::PowerOff, Duration::from_secs(20), Duration::from_secs(40)).await;
    let e = result.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(report.succeeded_by.is_none());
    assert!(e.message.contains("redfish failed (unreachable"), "{e}");
    assert!(
        e.message.contains("ipmi failed (failed: bmc accepted power off but the machine is still on after 1s)"),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// wake-on-lan

#[tokio::test]
async fn wol_sends_a_magic_packet_for_the_mac() {
    let port = free_udp_port(Ipv4Addr::LOCALHOST);
    let listener = UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mac = "52:54:00:00:00:01";
    // the test sends to the listener's own address; real configs use a broadcast address
    let cfg: WolConfig = serde_json::from_value(json!({ "mac": mac, "broadcast": "127.0.0.1", "port": port })).unwrap();
    let c = build(&cfg).unwrap();
    assert_eq!(c.kind(), "wol");
    assert_eq!(c.capabilities(), [Capability::PowerOn]);

    assert_eq!(c.run(&NodeOp::PowerOn).await.unwrap(), NodeOpOutput::Done);
    let mut buf = [0u8; 256];
    let (n, from) = listener.recv_from(&mut buf).expect("a magic packet within 5s");
    assert!(from.ip().is_loopback());
    assert_eq!(n, 102);
    assert_eq!(&buf[..6], &[0xff; 6]);
    let want = parse_mac(mac).unwrap();
    assert!(buf[6..n].chunks(6).all(|c| c == want), "{:02x?}", &buf[..n]);
    assert_eq!(buf[..n], magic_packet(want));

    let e = expect_err(&*c, NodeOp::PowerOff).await;
    assert_eq!(e.kind, ErrorKind::Unsupported);
}

// ---------------------------------------------------------------------------------------------
// configuration

#[test]
fn the_example_config_is_valid_and_quiet() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/bmc.yaml");
    let (cfg, warnings) = hecate_core::config::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.nodes.len(), 3);
    assert_eq!(cfg.nodes[0].controllers.len(), 3);
    assert!(warnings.iter().all(|w| !w.contains("controllers")), "{warnings:?}");
}

#[test]
fn config_check_warns_about_insecure_tls_and_clear_text_credentials() {
    let yaml = r#"
host: h
power_sources: [ { type: simulated, name: ups } ]
nodes:
  - name: n1
    address: 10.0.0.1
    role: agent
    controllers:
      - { type: redfish, endpoint: "https://10.0.1.1", insecure: true }
      - { type: redfish, endpoint: "http://10.0.1.1", credentials_file: /etc/hecate/bmc }
      - { type: ipmi, host: 10.0.1.1, username: admin, password_file: /nonexistent/is/fine/here }
      - { type: wol, mac: "52:54:00:00:00:01" }
"#;
    let (_, warnings) =
        hecate_core::config::Config::from_yaml(yaml, Path::new("t.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let ours: Vec<&String> = warnings.iter().filter(|w| w.starts_with("nodes[")).collect();
    assert_eq!(ours.len(), 2, "{warnings:?}");
    assert!(ours[0].starts_with("nodes[0].controllers[0] (n1): `insecure: true`"), "{}", ours[0]);
    assert!(ours[1].starts_with("nodes[0].controllers[1] (n1): ") && ours[1].contains("unencrypted"), "{}", ours[1]);
}

#[test]
fn config_check_reports_every_bmc_problem_with_its_place() {
    let yaml = r#"
host: h
power_sources: [ { type: simulated, name: ups } ]
nodes:
  - name: n1
    address: 10.0.0.1
    role: agent
    controllers:
      - { type: redfish, endpoint: "https://10.0.1.1/redfish/v1", ca_file: /ca.pem, insecure: true }
      - { type: ipmi, host: 10.0.1.1, username: admin, password_file: /p, cipher_suite: 99 }
      - { type: wol, mac: "52:54:00:00:00" }
"#;
    let err = hecate_core::config::Config::from_yaml(yaml, Path::new("t.yaml")).unwrap_err();
    let fields: Vec<&str> = err.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "nodes[0].controllers[0].endpoint",
            "nodes[0].controllers[0].ca_file",
            "nodes[0].controllers[1].cipher_suite",
            "nodes[0].controllers[2].mac"
        ],
        "{err}"
    );
    assert!(err.problems.iter().all(|p| p.line.is_some()), "{err}");
    let text = err.to_string();
    assert!(text.contains("without a path") && text.contains("contradict") && text.contains("cipher_suite"), "{text}");
    assert!(text.contains("is not a mac address"), "{text}");
}
