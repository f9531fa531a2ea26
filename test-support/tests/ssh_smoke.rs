//! Proves the `SshNode` harness: real sshd nodes accept the test key, `sudo -n systemctl` runs the
//! recording shim as root, scripted exit codes and delays work, stopped nodes refuse connections.

use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use hecate_test_support::{RESERVED_PORTS, SshNode, SshNodes};

/// `ssh -i KEY -o UserKnownHostsFile=KH -o StrictHostKeyChecking=yes -p PORT USER@ADDR COMMAND`
fn ssh(node: &SshNode, user: &str, known_hosts: &Path, command: &str) -> Output {
    Command::new("ssh")
        .args(["-F", "none", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"])
        .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])
        .arg("-i")
        .arg(node.identity_file())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"])
        .arg("-p")
        .arg(node.port().to_string())
        .arg(format!("{user}@{}", node.addr()))
        .arg(command)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ssh")
}

fn hecate(node: &SshNode, command: &str) -> Output {
    ssh(node, node.user(), &node.known_hosts(), command)
}

#[test]
fn sudo_systemctl_is_recorded_on_the_right_node() {
    let nodes = SshNodes::start_named(&[("alpha", Ipv4Addr::new(127, 0, 0, 2)), ("beta", Ipv4Addr::new(127, 0, 0, 3))]);
    let (alpha, beta) = (&nodes[0], &nodes[1]);
    assert_eq!(alpha.addr(), Ipv4Addr::new(127, 0, 0, 2));
    assert!(!RESERVED_PORTS.contains(&alpha.port()));

    let out = hecate(alpha, "sudo -n systemctl stop k3s");
    assert!(out.status.success(), "{out:?}");

    let calls = alpha.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].node, "alpha");
    assert_eq!(calls[0].user, "root");
    assert_eq!(calls[0].sudo_user.as_deref(), Some("hecate"));
    assert_eq!(calls[0].command_line(), "systemctl stop k3s");
    assert!(beta.calls().is_empty(), "{:?}", beta.calls());

    // without sudo the shim still answers, as the login user
    let out = hecate(beta, "systemctl is-active k3s");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "active");
    let calls = beta.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!((calls[0].user.as_str(), calls[0].sudo_user.as_deref()), ("hecate", None));
    assert_eq!(calls[0].node, "beta");

    // the combined known_hosts file vouches for both nodes
    for node in nodes.iter() {
        let out = ssh(node, "hecate", &nodes.known_hosts(), "true");
        assert!(out.status.success(), "{}: {out:?}", node.name());
    }
}

#[test]
fn set_exit_fails_the_command_and_reset_restores_it() {
    let node = SshNode::start("exits", Ipv4Addr::new(127, 0, 0, 4));
    node.set_exit("systemctl", 3);
    let out = hecate(&node, "sudo -n systemctl stop k3s");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = hecate(&node, "sudo -n poweroff");
    assert!(out.status.success(), "other shims unaffected: {out:?}");

    node.reset("systemctl");
    let out = hecate(&node, "sudo -n systemctl stop k3s");
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<String> = node.calls().iter().map(|c| c.command_line()).collect();
    assert_eq!(lines, ["systemctl stop k3s", "poweroff", "systemctl stop k3s"]);
}

#[test]
fn sudo_is_limited_to_the_shims() {
    let node = SshNode::start("locked", Ipv4Addr::new(127, 0, 0, 5));
    for command in ["sudo -n /usr/bin/id", "sudo -n /usr/bin/systemctl status", "sudo -n -s true"] {
        let out = hecate(&node, command);
        assert!(!out.status.success(), "{command} must be refused: {out:?}");
    }
    assert!(node.calls().is_empty(), "{:?}", node.calls());
}

#[test]
fn root_sessions_get_the_fake_sudo() {
    let node = SshNode::start("rooted", Ipv4Addr::new(127, 0, 0, 6));
    let out = ssh(&node, "root", &node.known_hosts(), "sudo -n systemctl stop k3s");
    assert!(out.status.success(), "{out:?}");
    let calls = node.calls();
    let lines: Vec<String> = calls.iter().map(|c| c.command_line()).collect();
    assert_eq!(lines, ["sudo -n systemctl stop k3s", "systemctl stop k3s"]);
    assert!(calls.iter().all(|c| c.user == "root" && c.sudo_user.is_none()), "{calls:?}");
}

#[test]
fn delay_makes_the_shim_slow() {
    let node = SshNode::start("slow", Ipv4Addr::new(127, 0, 0, 7));
    node.set_delay("systemctl", Duration::from_millis(1500));
    let started = Instant::now();
    let out = hecate(&node, "sudo -n systemctl stop k3s");
    let took = started.elapsed();
    assert!(out.status.success(), "{out:?}");
    assert!(took >= Duration::from_millis(1500), "took only {took:?}");
    assert_eq!(node.calls().len(), 1);
}

#[test]
fn wrong_host_key_is_rejected() {
    let nodes = SshNodes::start(2, "hk");
    // node 2's known_hosts does not list node 1's key
    let out = ssh(&nodes[0], "hecate", &nodes[1].known_hosts(), "true");
    assert!(!out.status.success(), "{out:?}");
    assert!(nodes[0].calls().is_empty());
}

#[test]
fn stopped_node_refuses_connections_until_restarted() {
    let mut node = SshNode::start("down", Ipv4Addr::new(127, 0, 0, 8));
    let addr = node.socket_addr();
    node.stop();
    assert!(!node.is_running());
    let err =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect_err("a stopped node must refuse connections");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    let out = hecate(&node, "sudo -n systemctl stop k3s");
    assert_eq!(out.status.code(), Some(255), "ssh must fail to connect: {out:?}");
    assert!(node.calls().is_empty());

    node.restart();
    assert_eq!(node.socket_addr(), addr);
    let out = hecate(&node, "sudo -n systemctl stop k3s");
    assert!(out.status.success(), "same host key after restart: {out:?}");
}

#[test]
fn drop_kills_sshd_and_removes_dir() {
    let node = SshNode::start("dropped", Ipv4Addr::new(127, 0, 0, 9));
    let (addr, dir) = (node.socket_addr(), node.dir().to_owned());
    drop(node);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err());
}
