//! The `ssh_systemd` node controller against real OpenSSH sshd nodes on loopback
//! (hecate_test_support::SshNode) whose `systemctl`/`poweroff` are recording shims. Needs root
//! and the peers installed (scripts/install-test-deps.sh).

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hecate_backends::node::ssh_systemd::SshSystemdConfig;
use hecate_core::node::{NodeController, NodeControllerConfig, NodeInfo, NodeOp, NodeOpOutput, NodeRole};
use hecate_core::{BackendError, BuildContext, ErrorKind};
use hecate_test_support::SshNode;

fn config(node: &SshNode, known_hosts: &Path, extra: serde_json::Value) -> SshSystemdConfig {
    let mut v = serde_json::json!({
        "user": node.user(),
        "identity_file": node.identity_file(),
        "known_hosts": known_hosts,
        "port": node.port(),
        "connect_timeout": "5s",
        "command_timeout": "10s",
    });
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let cfg: SshSystemdConfig = serde_json::from_value(v).unwrap();
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    cfg
}

fn build(cfg: &SshSystemdConfig, node: &SshNode) -> Result<Box<dyn NodeController>, BackendError> {
    let info = NodeInfo { name: node.name().to_string(), address: node.addr().to_string(), role: NodeRole::Agent };
    let ctx = BuildContext { host: "test".into(), state_dir: std::env::temp_dir() };
    cfg.build(&info, &ctx)
}

fn controller(node: &SshNode) -> Box<dyn NodeController> {
    build(&config(node, &node.known_hosts(), serde_json::json!({})), node).unwrap()
}

fn command_lines(node: &SshNode) -> Vec<String> {
    node.calls().iter().map(|c| c.command_line()).collect()
}

/// Logins sshd accepted so far (its log says `Accepted publickey for USER ...` once per connection).
fn logins(node: &SshNode) -> usize {
    std::fs::read_to_string(node.dir().join("sshd.log")).unwrap().matches("Accepted publickey").count()
}

fn addr(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn expect_err(r: Result<NodeOpOutput, BackendError>) -> BackendError {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn operations_run_their_commands_over_one_reused_connection() {
    let node = SshNode::start("ops1", addr(60));
    let c = controller(&node);
    assert_eq!(c.kind(), "ssh_systemd");
    assert_eq!(c.run(&NodeOp::Probe).await.unwrap(), NodeOpOutput::Done);
    assert_eq!(c.run(&NodeOp::StopUnit("k3s-agent".into())).await.unwrap(), NodeOpOutput::Done);
    let stop = NodeOp::StopK3s { unit: "k3s-agent".into(), grace_s: 45 };
    assert_eq!(c.run(&stop).await.unwrap(), NodeOpOutput::Done);
    assert_eq!(c.run(&NodeOp::StartUnit("k3s-agent".into())).await.unwrap(), NodeOpOutput::Done);
    assert_eq!(c.run(&NodeOp::StartUnitNoBlock("k3s-agent".into())).await.unwrap(), NodeOpOutput::Done);
    assert_eq!(c.run(&NodeOp::UnitActive("k3s-agent".into())).await.unwrap(), NodeOpOutput::Active(true));
    node.set_exit("systemctl", 3);
    assert_eq!(c.run(&NodeOp::UnitActive("k3s-agent".into())).await.unwrap(), NodeOpOutput::Active(false));
    node.set_exit("systemctl", 4);
    let e = expect_err(c.run(&NodeOp::UnitActive("nope".into())).await);
    assert_eq!(e.kind, ErrorKind::Failed, "{e}");
    assert!(e.message.contains("exited with status 4") && e.message.contains("ops1"), "{e}");
    node.reset("systemctl");
    assert_eq!(logins(&node), 1, "every step so far shared one connection");
    assert_eq!(c.run(&NodeOp::PowerOff).await.unwrap(), NodeOpOutput::Done);
    assert!(c.run(&NodeOp::PowerOn).await.unwrap_err().kind == ErrorKind::Unsupported);

    assert_eq!(
        command_lines(&node),
        [
            "systemctl stop k3s-agent",
            "hecate-k3s-stop k3s-agent 45",
            "systemctl start k3s-agent",
            "systemctl start --no-block k3s-agent",
            "systemctl is-active k3s-agent",
            "systemctl is-active k3s-agent",
            "systemctl is-active nope",
            "systemctl poweroff",
        ]
    );
    let calls = node.calls();
    // stop, start and poweroff went through real sudo; is-active ran unprivileged
    for i in [0, 1, 2, 3, 7] {
        assert_eq!((calls[i].user.as_str(), calls[i].sudo_user.as_deref()), ("root", Some("hecate")), "{:?}", calls[i]);
    }
    assert_eq!((calls[4].user.as_str(), calls[4].sudo_user.as_deref()), ("hecate", None));

    // after a poweroff the connection is never reused: the next step logs in again
    assert_eq!(c.run(&NodeOp::Probe).await.unwrap(), NodeOpOutput::Done);
    assert_eq!(logins(&node), 2);
}

#[tokio::test]
async fn a_failing_command_reports_its_status_and_stderr() {
    let node = SshNode::start("fail1", addr(61));
    node.set_exit("systemctl", 5);
    let c = controller(&node);
    let e = expect_err(c.run(&NodeOp::StopUnit("k3s".into())).await);
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(e.message.contains("`sudo -n systemctl stop k3s` on node fail1 exited with status 5"), "{e}");

    // sudo refusing a command it has no rule for: its stderr is the reason given
    let cfg = config(&node, &node.known_hosts(), serde_json::json!({ "poweroff_command": "/sbin/halt -p" }));
    let e = expect_err(build(&cfg, &node).unwrap().run(&NodeOp::PowerOff).await);
    assert_eq!(e.kind, ErrorKind::Failed, "{e}");
    assert!(e.message.contains("exited with status 1: sudo:"), "{e}");
}

#[tokio::test]
async fn unit_names_with_shell_metacharacters_never_reach_the_node() {
    let node = SshNode::start("inject1", addr(62));
    let c = controller(&node);
    for unit in ["k3s; poweroff", "$(reboot)", "-H", "k3s agent"] {
        let e = expect_err(c.run(&NodeOp::StopUnit(unit.into())).await);
        assert_eq!(e.kind, ErrorKind::Config, "{unit}: {e}");
    }
    assert!(node.calls().is_empty(), "{:?}", node.calls());
    assert_eq!(logins(&node), 0, "refused before connecting");
}

#[tokio::test]
async fn a_node_whose_sshd_is_down_is_unreachable_and_comes_back() {
    let mut node = SshNode::start("down1", addr(63));
    let c = controller(&node);
    node.stop();
    let e = expect_err(c.run(&NodeOp::StopUnit("k3s".into())).await);
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(e.message.contains("down1"), "{e}");
    node.restart();
    assert_eq!(c.run(&NodeOp::StopUnit("k3s".into())).await.unwrap(), NodeOpOutput::Done);
    assert_eq!(command_lines(&node), ["systemctl stop k3s"]);
}

#[tokio::test]
async fn timeouts_are_reported_as_such() {
    let node = SshNode::start("slow1", addr(64));
    node.set_delay("systemctl", Duration::from_secs(5));
    let cfg = config(&node, &node.known_hosts(), serde_json::json!({ "command_timeout": "1s" }));
    let c = build(&cfg, &node).unwrap();
    let t0 = Instant::now();
    let e = expect_err(c.run(&NodeOp::StopUnit("k3s".into())).await);
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("command_timeout"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());

    // a port that accepts TCP but never speaks SSH
    let silent = std::net::TcpListener::bind((addr(64), 0)).unwrap();
    let mut v = serde_json::to_value(&cfg).unwrap();
    v["port"] = silent.local_addr().unwrap().port().into();
    v["connect_timeout"] = "1s".into();
    let c = build(&serde_json::from_value(v).unwrap(), &node).unwrap();
    let e = expect_err(c.run(&NodeOp::Probe).await);
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(e.message.contains("connect_timeout"), "{e}");
}

#[tokio::test]
async fn a_refused_login_is_an_auth_error() {
    let node = SshNode::start("auth1", addr(65));
    // `nobody` is not in the node's AllowUsers
    let cfg = config(&node, &node.known_hosts(), serde_json::json!({ "user": "nobody" }));
    let e = expect_err(build(&cfg, &node).unwrap().run(&NodeOp::Probe).await);
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert!(e.message.contains("nobody") && e.message.contains("SHA256:"), "{e}");
}

#[tokio::test]
async fn an_unknown_host_key_is_refused_by_default() {
    let node = SshNode::start("hk1", addr(66));
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::write(&kh, "").unwrap();
    let c = build(&config(&node, &kh, serde_json::json!({})), &node).unwrap();
    let e = expect_err(c.run(&NodeOp::StopUnit("k3s".into())).await);
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    let fp = fingerprint(&node);
    for want in ["hk1", "unknown", fp.as_str(), kh.to_str().unwrap()] {
        assert!(e.message.contains(want), "{want:?} missing from: {e}");
    }
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), "", "nothing recorded");
    assert!(node.calls().is_empty());
}

#[tokio::test]
async fn accept_new_host_keys_records_an_unknown_key_but_refuses_a_changed_one() {
    let mut node = SshNode::start("hk2", addr(67));
    let dir = tempfile::tempdir().unwrap();
    // missing: created on first use
    let kh = dir.path().join("known_hosts");
    let tofu = config(&node, &kh, serde_json::json!({ "accept_new_host_keys": true }));
    assert_eq!(build(&tofu, &node).unwrap().run(&NodeOp::Probe).await.unwrap(), NodeOpOutput::Done);
    let recorded = std::fs::read_to_string(&kh).unwrap();
    assert_eq!(recorded, format!("{}\n", node.known_hosts_line()), "recorded as OpenSSH writes it");

    // now known: a strict controller accepts it, and nothing more is appended
    let strict = config(&node, &kh, serde_json::json!({}));
    assert_eq!(build(&strict, &node).unwrap().run(&NodeOp::Probe).await.unwrap(), NodeOpOutput::Done);
    assert_eq!(build(&tofu, &node).unwrap().run(&NodeOp::Probe).await.unwrap(), NodeOpOutput::Done);
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), recorded);

    node.change_host_key();
    let e = expect_err(build(&tofu, &node).unwrap().run(&NodeOp::StopUnit("k3s".into())).await);
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    let fp = fingerprint(&node);
    for want in ["hk2", "changed", fp.as_str(), kh.to_str().unwrap(), "line 1"] {
        assert!(e.message.contains(want), "{want:?} missing from: {e}");
    }
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), recorded, "a changed key is never recorded");
    assert!(node.calls().iter().all(|c| c.command != "systemctl"), "{:?}", node.calls());
}

#[tokio::test]
async fn a_hashed_known_hosts_entry_is_honoured() {
    let node = SshNode::start("hk3", addr(68));
    let dir = tempfile::tempdir().unwrap();
    let kh = dir.path().join("known_hosts");
    std::fs::copy(node.known_hosts(), &kh).unwrap();
    let out = Command::new("ssh-keygen").arg("-H").arg("-f").arg(&kh).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read_to_string(&kh).unwrap().starts_with("|1|"));
    let c = build(&config(&node, &kh, serde_json::json!({})), &node).unwrap();
    assert_eq!(c.run(&NodeOp::Probe).await.unwrap(), NodeOpOutput::Done);
}

#[test]
fn build_checks_the_files_and_never_shows_the_key() {
    let node = SshNode::start("build1", addr(69));
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-key");
    let e =
        build(&config(&node, &node.known_hosts(), serde_json::json!({ "identity_file": missing })), &node).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains(missing.to_str().unwrap()), "{e}");

    let kh = dir.path().join("no-such-known-hosts");
    let e = build(&config(&node, &kh, serde_json::json!({})), &node).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains(kh.to_str().unwrap()) && e.message.contains("does not exist"), "{e}");
    // with trust on first use a missing file is fine, a missing directory is not
    build(&config(&node, &kh, serde_json::json!({ "accept_new_host_keys": true })), &node).unwrap();
    let e =
        build(&config(&node, &dir.path().join("nodir/kh"), serde_json::json!({ "accept_new_host_keys": true })), &node)
            .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");

    for (args, want) in [(&["-t", "ed25519", "-N", "secret"][..], "passphrase"), (&["-t", "rsa", "-N", ""][..], "rsa")]
    {
        let key = keygen(dir.path(), args);
        let e =
            build(&config(&node, &node.known_hosts(), serde_json::json!({ "identity_file": key })), &node).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config, "{e}");
        assert!(e.message.contains(want) && e.message.contains(key.to_str().unwrap()), "{e}");
    }

    let c = controller(&node);
    let secret = std::fs::read_to_string(node.identity_file()).unwrap();
    let body: Vec<&str> = secret.lines().filter(|l| !l.starts_with("-----")).collect();
    let shown = format!("{c:?}");
    assert!(shown.contains("build1"), "{shown}");
    for line in body {
        assert!(!shown.contains(line), "the debug output shows the private key: {shown}");
    }
}

fn keygen(dir: &Path, args: &[&str]) -> PathBuf {
    let path = dir.join(format!("key-{}", args.join("").replace(['-', ' '], "")));
    let out = Command::new("ssh-keygen").arg("-q").args(args).arg("-f").arg(&path).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

/// The node's host key fingerprint as OpenSSH prints it.
fn fingerprint(node: &SshNode) -> String {
    let out = Command::new("ssh-keygen").arg("-l").arg("-f").arg(node.dir().join("ssh_host_ed25519_key.pub")).output();
    let out = out.unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn yaml_config_errors_name_the_field() {
    hecate_backends::link();
    let yaml = "host: a
power_sources: [ { type: simulated, name: u } ]
nodes:
  - name: n1
    address: 10.0.0.1
    role: agent
    controllers:
      - type: ssh_systemd
        user: 'bad user'
        identity_file: relative/key
        known_hosts: /etc/hecate/known_hosts
        port: 0
        connect_timeout: 0s
";
    let e = hecate_core::config::Config::from_yaml(yaml, Path::new("t.yaml")).unwrap_err().to_string();
    for want in ["nodes[0].controllers[0]", "user:", "identity_file:", "port:", "connect_timeout:"] {
        assert!(e.contains(want), "{want} missing from:\n{e}");
    }
    // an unknown key is refused, not ignored
    let e = hecate_core::config::Config::from_yaml(
        &yaml.replace("        port: 0\n", "        prot: 22\n"),
        Path::new("t.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("prot"), "{e}");
    // the unit goes into the remote command line: the config check already refuses a bad one
    let e = hecate_core::config::Config::from_yaml(
        &yaml.replace("    role: agent\n", "    role: agent\n    unit: 'k3s; reboot'\n"),
        Path::new("t.yaml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nodes[0].unit") && e.contains("is not a unit name"), "{e}");
}

#[tokio::test]
async fn without_the_stop_script_only_the_unit_is_stopped_and_config_check_warns() {
    let node = SshNode::start("nostop1", addr(70));
    let cfg = config(&node, &node.known_hosts(), serde_json::json!({ "k3s_stop_command": null }));
    let warnings = cfg.warnings().join("\n");
    assert!(warnings.contains("killed hard when the power goes"), "{warnings}");
    assert!(config(&node, &node.known_hosts(), serde_json::json!({})).warnings().is_empty());
    let c = build(&cfg, &node).unwrap();
    c.run(&NodeOp::StopK3s { unit: "k3s".into(), grace_s: 30 }).await.unwrap();
    assert_eq!(command_lines(&node), ["systemctl stop k3s"]);
}
