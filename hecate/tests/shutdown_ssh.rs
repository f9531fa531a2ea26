//! The shutdown plan over real SSH: OpenSSH sshd nodes on loopback (hecate_test_support) whose
//! `systemctl`/`poweroff` are recording shims, driven through the engine and through the
//! `hecate shutdown --execute` binary. The order of calls across nodes is read from the shims'
//! timestamps. Needs root and the peers installed (scripts/install-test-deps.sh).

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hecate_core::config::Config;
use hecate_core::engine::{Outcome, RunReport};
use hecate_core::history::History;
use hecate_core::plan::shutdown_plan;
use hecate_core::runtime::Runtime;
use hecate_core::{ErrorKind, node::NodeRole};
use hecate_test_support::{SshNode, SshNodes, wait_until};

/// Three servers (s1 the init server) and three agents, one loopback address each, each going
/// down (its sshd stopping) when told to power off.
fn start_cluster(first: u8) -> SshNodes {
    let names = ["s1", "s2", "s3", "a1", "a2", "a3"];
    let specs: Vec<(&str, Ipv4Addr)> =
        names.iter().enumerate().map(|(i, n)| (*n, Ipv4Addr::new(127, 0, 0, first + i as u8))).collect();
    going_down(SshNodes::start_named(&specs))
}

fn going_down(nodes: SshNodes) -> SshNodes {
    for n in nodes.iter() {
        n.go_down_on_poweroff();
    }
    nodes
}

fn role(name: &str) -> NodeRole {
    if name.starts_with('s') { NodeRole::Server } else { NodeRole::Agent }
}

/// A config with one `ssh_systemd` controller per node, no cluster and no GitOps.
fn config_yaml(nodes: &SshNodes, state_dir: &Path, known_hosts: &Path) -> String {
    let mut yaml = format!(
        "host: coordinator
state_dir: {}
power_sources: [ {{ type: simulated, name: ups }} ]
shutdown: {{ concurrency: 8, step_timeout: 40s, controller_timeout: 30s, power_off_timeout: 60s, soft_off_timeout: 30s, off_silence: 1s }}
nodes:
",
        state_dir.display()
    );
    for n in nodes.iter() {
        let role = match role(n.name()) {
            NodeRole::Server => "server",
            NodeRole::Agent => "agent",
        };
        yaml += &format!(
            "  - name: {name}
    address: {addr}
    role: {role}
    init: {init}
    controllers:
      - type: ssh_systemd
        user: {user}
        identity_file: {key}
        known_hosts: {kh}
        port: {port}
        connect_timeout: 5s
        command_timeout: 20s
",
            name = n.name(),
            addr = n.addr(),
            init = n.name() == "s1",
            user = n.user(),
            key = n.identity_file().display(),
            kh = known_hosts.display(),
            port = n.port(),
        );
    }
    yaml
}

fn load(yaml: &str) -> Config {
    hecate::init_process();
    Config::from_yaml(yaml, Path::new("shutdown-ssh.yaml")).map_err(|e| e.to_string()).unwrap().0
}

async fn run_in_process(cfg: &Config) -> RunReport {
    let rt = Arc::new(Runtime::build(cfg).unwrap());
    let plan = shutdown_plan(cfg, &rt, "test: on battery");
    hecate::run::execute(cfg, rt, &plan, false, Arc::new(|_| {})).await
}

/// When `node` started `command line` (the shim records the start); panics unless exactly once.
fn when(node: &SshNode, line: &str) -> SystemTime {
    let hits: Vec<_> = node.calls().into_iter().filter(|c| c.command_line() == line).collect();
    assert_eq!(hits.len(), 1, "{}: `{line}` ran {} times: {:?}", node.name(), hits.len(), node.calls());
    hits[0].timestamp
}

/// The node's last step before its power-off (`shutdown.max_pod_grace` is 60 s by default).
fn stop_line(name: &str) -> &'static str {
    match role(name) {
        NodeRole::Server => "hecate-k3s-stop k3s 60",
        NodeRole::Agent => "hecate-k3s-stop k3s-agent 60",
    }
}

/// The plan's order, read from the shims' clocks: every agent stop before any server stop, the
/// init server's stop after the other servers', power-offs last.
fn assert_plan_order(nodes: &SshNodes, only: &[&str]) {
    let pick = |f: &dyn Fn(&str) -> bool| -> Vec<&SshNode> {
        nodes.iter().filter(|n| only.contains(&n.name()) && f(n.name())).collect()
    };
    let stop = |n: &SshNode| when(n, stop_line(n.name()));
    let agents = pick(&|n| role(n) == NodeRole::Agent);
    let servers = pick(&|n| role(n) == NodeRole::Server && n != "s1");
    let init = pick(&|n| n == "s1");
    let last_agent = agents.iter().map(|n| stop(n)).max().unwrap();
    let first_server = servers.iter().map(|n| stop(n)).min().unwrap();
    let last_server = servers.iter().map(|n| stop(n)).max().unwrap();
    assert!(last_agent < first_server, "a server stopped before the last agent");
    assert!(last_server < stop(init[0]), "the init server stopped before another server");
    let first_poweroff = pick(&|_| true).iter().map(|n| when(n, "systemctl poweroff")).min().unwrap();
    assert!(stop(init[0]) < first_poweroff, "a node powered off before the init server stopped");
}

#[tokio::test]
async fn the_shutdown_plan_runs_over_ssh_in_plan_order_and_is_recorded() {
    let nodes = start_cluster(80);
    // long enough that steps running one after the other could not overlap
    for n in nodes.iter() {
        n.set_delay("hecate-k3s-stop", Duration::from_secs(1));
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(&config_yaml(&nodes, &dir.path().join("state"), &nodes.known_hosts()));
    let report = run_in_process(&cfg).await;
    assert_eq!(report.outcome, Outcome::Success, "{:#?}", report.failures().collect::<Vec<_>>());
    let stages: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["notify", "stop-agents", "stop-servers", "stop-init-server", "power-off"]);
    // SSH alone cannot read a machine's power: each node counts as off once it stopped answering.
    let power_off = report.stages.iter().find(|s| s.name == "power-off").unwrap();
    for step in &power_off.steps {
        assert!(step.message.ends_with("confirmed off: unanswered for 1s"), "{}", step.message);
    }

    for n in nodes.iter() {
        let lines: Vec<String> = n.calls().iter().map(|c| c.command_line()).collect();
        assert_eq!(lines, [stop_line(n.name()), "systemctl poweroff"], "{}", n.name());
        assert!(n.calls().iter().all(|c| c.user == "root" && c.sudo_user.as_deref() == Some("hecate")));
    }
    assert_plan_order(&nodes, &["s1", "s2", "s3", "a1", "a2", "a3"]);
    // a stage's steps run concurrently: the three agent stops started within one shim delay
    let starts: Vec<SystemTime> =
        ["a1", "a2", "a3"].iter().map(|a| when(nodes.by_name(a).unwrap(), stop_line(a))).collect();
    let spread = starts.iter().max().unwrap().duration_since(*starts.iter().min().unwrap()).unwrap();
    assert!(spread < Duration::from_secs(1), "agent stops were not concurrent: {spread:?}");

    // the run is in runs.json with per-stage durations, and its journal is gone
    let history = History::load(&dir.path().join("state/runs.json")).unwrap().history;
    assert_eq!(history.runs.len(), 1);
    let stop_agents = history.runs[0].stages.iter().find(|s| s.name == "stop-agents").unwrap();
    assert!(stop_agents.duration_s >= 1.0, "{stop_agents:?}");
    assert!(!dir.path().join("state/journal-shutdown.jsonl").exists());
}

#[tokio::test]
async fn dead_failing_and_impostor_nodes_are_reported_and_the_run_goes_on() {
    let mut nodes = start_cluster(90);
    nodes.by_name_mut("a1").unwrap().stop(); // sshd down
    nodes.by_name("a2").unwrap().set_exit("hecate-k3s-stop", 1); // k3s-agent will not stop
    nodes.by_name_mut("s2").unwrap().change_host_key(); // not the machine known_hosts knows
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(&config_yaml(&nodes, &dir.path().join("state"), &nodes.known_hosts()));
    let report = run_in_process(&cfg).await;
    assert_eq!(report.outcome, Outcome::Partial);

    // nothing skipped: every planned step has an outcome
    let rt = Runtime::build(&cfg).unwrap();
    let planned = shutdown_plan(&cfg, &rt, "x").steps().count();
    assert_eq!(report.stages.iter().map(|s| s.steps.len()).sum::<usize>(), planned);

    let mut failed: Vec<(String, ErrorKind)> = report
        .failures()
        .map(|f| {
            let attempts = f.attempts.as_ref().unwrap();
            let kind = attempts.attempts[0].error.as_ref().unwrap().kind;
            (f.id.clone(), kind)
        })
        .collect();
    failed.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        failed,
        [
            ("power-off/a1".to_string(), ErrorKind::Unreachable),
            ("power-off/s2".to_string(), ErrorKind::Auth),
            ("stop-agents/a1".to_string(), ErrorKind::Unreachable),
            ("stop-agents/a2".to_string(), ErrorKind::Failed),
            ("stop-servers/s2".to_string(), ErrorKind::Auth),
        ]
    );
    let message = |id: &str| report.failures().find(|f| f.id == id).unwrap().message.clone();
    assert!(message("stop-agents/a1").contains("a1"), "{}", message("stop-agents/a1"));
    assert!(message("stop-agents/a2").contains("exited with status 1"), "{}", message("stop-agents/a2"));
    let s2 = message("stop-servers/s2");
    assert!(s2.contains("s2") && s2.contains("changed") && s2.contains("SHA256:"), "{s2}");

    // the healthy nodes went all the way, in order; the impostor was never asked anything
    assert_plan_order(&nodes, &["s1", "s3", "a3"]);
    assert!(nodes.by_name("s2").unwrap().calls().is_empty());
    assert_eq!(nodes.by_name("a2").unwrap().calls().len(), 2, "stop and poweroff were both tried");

    // and the record says which steps failed
    let history = History::load(&dir.path().join("state/runs.json")).unwrap().history;
    let failures = history.runs[0].extra["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 5, "{failures:?}");
}

fn journal_ended(journal: &Path, step: &str) -> bool {
    std::fs::read_to_string(journal).unwrap_or_default().lines().any(|l| {
        serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["event"] == "end" && v["outcome"]["id"] == step)
    })
}

fn count(node: &SshNode, line: &str) -> usize {
    node.calls().iter().filter(|c| c.command_line() == line).count()
}

#[test]
fn killed_mid_run_and_resumed_no_finished_step_runs_twice() {
    let nodes = going_down(SshNodes::start_named(&[
        ("s1", Ipv4Addr::new(127, 0, 0, 100)),
        ("s2", Ipv4Addr::new(127, 0, 0, 101)),
        ("a1", Ipv4Addr::new(127, 0, 0, 102)),
        ("a2", Ipv4Addr::new(127, 0, 0, 103)),
        ("a3", Ipv4Addr::new(127, 0, 0, 104)),
    ]));
    // a2 is slow: Hecate is killed while a2's stop runs and after a1's and a3's have ended
    let a2 = nodes.by_name("a2").unwrap();
    a2.set_delay("hecate-k3s-stop", Duration::from_secs(6));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let cfg_path = dir.path().join("hecate.yaml");
    std::fs::write(&cfg_path, config_yaml(&nodes, &state, &nodes.known_hosts())).unwrap();
    let journal = state.join("journal-shutdown.jsonl");

    let hecate = |resume: bool, out: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hecate"));
        c.args(["shutdown", "--execute", "--config"]).arg(&cfg_path).env("RUST_LOG", "warn");
        if resume {
            c.arg("--resume");
        }
        let log = std::fs::File::create(dir.path().join(out)).unwrap();
        c.stdout(log.try_clone().unwrap()).stderr(log);
        c
    };
    let mut first = hecate(false, "first.log").spawn().unwrap();
    wait_until("the agents' stops (a1, a3 done, a2 begun)", Duration::from_secs(60), || {
        assert!(first.try_wait().unwrap().is_none(), "hecate ended before it was killed");
        if journal_ended(&journal, "stop-agents/a1")
            && journal_ended(&journal, "stop-agents/a3")
            && count(a2, stop_line("a2")) == 1
        {
            Ok(())
        } else {
            Err(format!("journal: {:?}", std::fs::read_to_string(&journal)))
        }
    });
    first.kill().unwrap(); // SIGKILL: no cleanup of any kind
    first.wait().unwrap();
    // the moment of the kill: a2's stop had started and not ended, no server was touched
    assert!(!journal_ended(&journal, "stop-agents/a2"));
    for s in ["s1", "s2"] {
        assert!(nodes.by_name(s).unwrap().calls().is_empty(), "{s} was reached before the kill");
    }
    a2.reset("hecate-k3s-stop");

    let out = hecate(true, "resume.log").output().unwrap();
    let log = std::fs::read_to_string(dir.path().join("resume.log")).unwrap();
    assert!(out.status.success(), "resume failed: {log}");
    assert!(log.contains("done before resume"), "{log}");

    // finished steps ran exactly once; a2's stop, interrupted mid-way, ran again (as it must:
    // nobody knows whether it completed), and stopping a stopped unit is harmless
    for n in nodes.iter() {
        let stops = count(n, stop_line(n.name()));
        let want = if n.name() == "a2" { 2 } else { 1 };
        assert_eq!(stops, want, "{}: {:?}", n.name(), n.calls());
        assert_eq!(count(n, "systemctl poweroff"), 1, "{}: {:?}", n.name(), n.calls());
    }
    assert_plan_order(&nodes, &["s1", "s2", "a1", "a3"]);
    assert!(!journal.exists(), "the journal is removed once the run is over");
    let history = History::load(&state.join("runs.json")).unwrap().history;
    assert_eq!(history.runs.len(), 1, "one run, recorded once");
    assert_eq!(history.runs[0].outcome, hecate_core::history::RunOutcome::Success);
}
