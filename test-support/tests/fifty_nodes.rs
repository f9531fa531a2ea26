//! The harness scales to a 50-node cluster: all nodes start, each answers ssh with its own host
//! key from one shared known_hosts file, and a 1 s `systemctl stop` delay works on all of them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hecate_test_support::SshNodes;

#[test]
fn fifty_nodes_start_and_answer_in_parallel() {
    let started = Instant::now();
    let nodes = SshNodes::start(50, "node");
    eprintln!("50 sshd nodes started in {:?}", started.elapsed());
    assert_eq!(nodes.len(), 50);
    assert_eq!(nodes[49].name(), "node50");
    assert_eq!(nodes[49].addr().octets(), [127, 0, 0, 59]);

    for node in nodes.iter() {
        node.set_delay("systemctl", Duration::from_secs(1));
    }
    let started = Instant::now();
    let children: Vec<_> = nodes
        .iter()
        .map(|node| {
            Command::new("ssh")
                .args(["-F", "none", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20"])
                .arg("-i")
                .arg(node.identity_file())
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", nodes.known_hosts().display()))
                .args(["-o", "StrictHostKeyChecking=yes"])
                .arg("-p")
                .arg(node.port().to_string())
                .arg(format!("hecate@{}", node.addr()))
                .arg("sudo -n systemctl stop k3s")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn ssh")
        })
        .collect();
    for (node, child) in nodes.iter().zip(children) {
        let out = child.wait_with_output().expect("wait for ssh");
        assert!(out.status.success(), "{}: {out:?}", node.name());
    }
    let took = started.elapsed();
    eprintln!("50 parallel `sudo -n systemctl stop k3s` with a 1 s delay took {took:?}");
    assert!(took >= Duration::from_secs(1));
    for node in nodes.iter() {
        let calls = node.calls();
        assert_eq!(calls.len(), 1, "{}: {calls:?}", node.name());
        assert_eq!(calls[0].node, node.name());
        assert_eq!(calls[0].command_line(), "systemctl stop k3s");
    }
}
