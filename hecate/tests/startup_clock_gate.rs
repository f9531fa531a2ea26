//! The startup's optional clock gate over real sshd nodes: k3s is started on a node only once
//! `timedatectl show -p NTPSynchronized --value` says `yes` there, and a node whose clock never
//! synchronizes costs only `startup.clock_sync_timeout`. The nodes' `timedatectl` and
//! `systemctl` are STAND-INS (shim hooks): a clock that synchronizes on the third look, one that
//! never does, and a k3s unit that is stopped until started.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use hecate_core::config::Config;
use hecate_core::engine::Outcome;
use hecate_core::plan::startup_plan;
use hecate_core::runtime::Runtime;
use hecate_test_support::{SshNode, SshNodes};

/// A k3s unit that is stopped until `systemctl start` (state in the node's dir).
const K3S_UNIT: &str = "state=\"$HECATE_NODE_DIR/unit.state\"
case \"$1\" in
  start) echo active >\"$state\" ;;
  is-active) if [ \"$(cat \"$state\" 2>/dev/null)\" = active ]; then echo active; else echo inactive; exit 3; fi ;;
esac
exit 0
";

fn times(node: &SshNode, line: &str) -> Vec<std::time::SystemTime> {
    node.calls().into_iter().filter(|c| c.command_line() == line).map(|c| c.timestamp).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn k3s_starts_once_the_clock_is_synchronized_and_a_stuck_clock_costs_only_its_timeout() {
    let nodes = SshNodes::start_named(&[("s1", Ipv4Addr::new(127, 0, 0, 150)), ("a1", Ipv4Addr::new(127, 0, 0, 151))]);
    let (s1, a1) = (nodes.by_name("s1").unwrap(), nodes.by_name("a1").unwrap());
    // s1: NTP answers on the third look (the shim records each call before the hook runs).
    s1.set_hook(
        "timedatectl",
        "n=$(grep -c 'cmd=timedatectl' \"$HECATE_NODE_DIR/calls.log\")\nif [ \"$n\" -ge 3 ]; then echo yes; else echo no; fi\n",
    );
    a1.set_hook("timedatectl", "echo no\n");
    for n in nodes.iter() {
        n.set_hook("systemctl", K3S_UNIT);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = format!(
        "host: coordinator
state_dir: {}
daemon: {{ poll_interval: 200ms }}
power_sources: [ {{ type: simulated, name: ups }} ]
startup: {{ clock_sync_timeout: 3s, step_timeout: 20s, controller_timeout: 5s, reachable_timeout: 20s, api_timeout: 20s, nodes_ready_timeout: 20s }}
nodes:
",
        dir.path().join("state").display()
    );
    for (n, role) in [(s1, "server"), (a1, "agent")] {
        yaml += &format!(
            "  - {{ name: {}, address: {}, role: {role}, controllers: [ {{ type: ssh_systemd, user: {}, identity_file: {}, known_hosts: {}, port: {} }} ] }}\n",
            n.name(),
            n.addr(),
            n.user(),
            n.identity_file().display(),
            nodes.known_hosts().display(),
            n.port()
        );
    }
    hecate::init_process();
    let cfg = Config::from_yaml(&yaml, Path::new("clock.yaml")).map_err(|e| e.to_string()).unwrap().0;
    let rt = Arc::new(Runtime::build(&cfg).unwrap());
    let plan = startup_plan(&cfg, &rt, "test", None);
    let stages: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        stages,
        ["wait-reachable", "wait-clock", "start-servers", "wait-servers", "start-agents", "wait-agents", "notify"]
    );
    assert!(
        plan.render(&Default::default()).contains("wait until s1's clock is synchronized via ssh_systemd (timeout 3s)")
    );

    let report = hecate::run::execute(&cfg, rt, &plan, false, hecate::run::log_sink()).await;
    assert_eq!(report.outcome, Outcome::Partial);

    // s1: k3s started only after its clock said yes.
    let looks = times(s1, "timedatectl show -p NTPSynchronized --value");
    assert_eq!(looks.len(), 3, "{:?}", s1.calls());
    let started = times(s1, "systemctl start --no-block k3s");
    assert_eq!(started.len(), 1);
    assert!(looks.iter().all(|t| *t < started[0]), "k3s started before the clock was synchronized");

    // a1: its stuck clock is reported, and its k3s is started all the same.
    let failures: Vec<_> = report.failures().collect();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert_eq!(failures[0].id, "wait-clock/a1");
    assert!(failures[0].message.contains("within 3s"), "{}", failures[0].message);
    assert_eq!(times(a1, "systemctl start --no-block k3s-agent").len(), 1);
    let timeout = report.stages.iter().find(|s| s.name == "wait-clock").unwrap();
    assert!(timeout.steps.iter().any(|s| s.id == "wait-clock/s1" && s.ok));
}
