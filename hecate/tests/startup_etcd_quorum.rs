//! The startup plan against three k3s servers with embedded etcd, the quorum etcd's own: real
//! sshd nodes whose `systemctl` is a STAND-IN for k3s's unit (`EtcdQuorum::k3s_stand_in`: `start
//! k3s` starts that node's member of a real three-member etcd cluster and returns only once it is
//! healthy, as k3s's `Type=notify` unit returns only after `READY=1`, which k3s sends once etcd is
//! ready, k3s `pkg/cli/server/server.go`; `--no-block` returns at once). The cluster API is a
//! STAND-IN too (no kube-apiserver runs on this etcd): ready while any member is healthy, as
//! kube-apiserver's `/readyz` checks its etcd, and each node Ready while its own member is.
//!
//! The order that was Hecate's (the init server alone, `systemctl start k3s` waited for) never
//! finishes (as seen in the field: PyratLabs/ansible-role-k3s#152, k3d-io/k3d#452); starting
//! all servers with `--no-block` and waiting for the API does, and a second run on the running
//! cluster starts nothing.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

mod stand_in_api {
    //! The cluster API stand-in: a test-only `cluster:` backend selected by `type:`.
    use std::collections::BTreeMap;
    use std::time::Duration;

    use async_trait::async_trait;
    use hecate_core::cluster::{
        ClusterApi, ClusterApiConfig, ClusterNode, Cordoned, DrainOptions, DrainReport, Uncordoned,
    };
    use hecate_core::{BackendError, BuildContext, ErrorKind};
    use serde::{Deserialize, Serialize};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Which etcd client port each node's member listens on.
    #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct EtcdApiStandInConfig {
        /// Node name → the etcd client port of its member.
        pub members: BTreeMap<String, u16>,
    }

    #[typetag::serde(name = "etcd_api_stand_in")]
    impl ClusterApiConfig for EtcdApiStandInConfig {
        fn build(&self, _: &BuildContext) -> Result<Box<dyn ClusterApi>, BackendError> {
            Ok(Box::new(EtcdApiStandIn { members: self.members.clone() }))
        }
    }

    hecate_core::register_backend!(
        ClusterApi,
        "etcd_api_stand_in",
        "test stand-in for the api of a k3s cluster with embedded etcd",
        EtcdApiStandInConfig
    );

    #[derive(Debug)]
    struct EtcdApiStandIn {
        members: BTreeMap<String, u16>,
    }

    async fn healthy(port: u16) -> bool {
        let ask = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
            s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").await.ok()?;
            let mut answer = Vec::new();
            s.take(64 * 1024).read_to_end(&mut answer).await.ok()?;
            Some(String::from_utf8_lossy(&answer).contains("\"health\":\"true\""))
        };
        tokio::time::timeout(Duration::from_secs(1), ask).await.ok().flatten().unwrap_or(false)
    }

    #[async_trait]
    impl ClusterApi for EtcdApiStandIn {
        async fn health(&self) -> Result<(), BackendError> {
            for port in self.members.values() {
                if healthy(*port).await {
                    return Ok(());
                }
            }
            Err(BackendError::new(ErrorKind::Unreachable, "no server's etcd has a quorum"))
        }
        async fn nodes(&self) -> Result<Vec<ClusterNode>, BackendError> {
            self.health().await?;
            let mut out = Vec::new();
            for (name, port) in &self.members {
                out.push(ClusterNode { name: name.clone(), ready: healthy(*port).await, unschedulable: false });
            }
            Ok(out)
        }
        async fn cordon(&self, _: &str) -> Result<Cordoned, BackendError> {
            Ok(Cordoned::Marked)
        }
        async fn uncordon(&self, _: &str) -> Result<Uncordoned, BackendError> {
            Ok(Uncordoned::NotCordoned)
        }
        async fn drain(&self, _: &str, _: &DrainOptions) -> Result<DrainReport, BackendError> {
            Ok(DrainReport::default())
        }
    }
}

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

use hecate_core::ErrorKind;
use hecate_core::config::Config;
use hecate_core::duration::HumanDuration;
use hecate_core::engine::{Outcome, RunReport};
use hecate_core::node::NodeOp;
use hecate_core::plan::{Action, OnFailure, Plan, PlanKind, Stage, Step, startup_plan};
use hecate_core::runtime::Runtime;
use hecate_test_support::{EtcdQuorum, SshNodes};

fn config(nodes: &SshNodes, quorum: &EtcdQuorum, state: &Path, with_api: bool) -> Config {
    let mut yaml = format!(
        "host: coordinator
state_dir: {}
daemon: {{ poll_interval: 500ms }}
power_sources: [ {{ type: simulated, name: ups }} ]
startup: {{ step_timeout: 30s, controller_timeout: 20s, reachable_timeout: 30s, api_timeout: 60s, nodes_ready_timeout: 60s }}
",
        state.display()
    );
    if with_api {
        yaml += "cluster:\n  type: etcd_api_stand_in\n  members:\n";
        for (i, n) in nodes.iter().enumerate() {
            yaml += &format!("    {}: {}\n", n.name(), quorum.client_port(i));
        }
    }
    yaml += "nodes:\n";
    for n in nodes.iter() {
        yaml += &format!(
            "  - name: {name}
    address: {addr}
    role: server
    init: {init}
    controllers:
      - {{ type: ssh_systemd, user: {user}, identity_file: {key}, known_hosts: {kh}, port: {port}, connect_timeout: 5s, command_timeout: 5m }}
",
            name = n.name(),
            addr = n.addr(),
            init = n.name() == "s1",
            user = n.user(),
            key = n.identity_file().display(),
            kh = nodes.known_hosts().display(),
            port = n.port(),
        );
    }
    hecate::init_process();
    Config::from_yaml(&yaml, Path::new("etcd-quorum.yaml")).map_err(|e| e.to_string()).unwrap().0
}

async fn run(cfg: &Config, plan: &Plan) -> RunReport {
    let rt = Arc::new(Runtime::build(cfg).unwrap());
    hecate::run::execute(cfg, rt, plan, false, hecate::run::log_sink()).await
}

fn count(nodes: &SshNodes, name: &str, line: &str) -> usize {
    nodes.by_name(name).unwrap().calls().iter().filter(|c| c.command_line() == line).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_with_embedded_etcd_start_together_where_the_init_server_alone_never_starts() {
    let quorum = EtcdQuorum::initialise();
    let nodes = SshNodes::start_named(&[
        ("s1", Ipv4Addr::new(127, 0, 0, 120)),
        ("s2", Ipv4Addr::new(127, 0, 0, 121)),
        ("s3", Ipv4Addr::new(127, 0, 0, 122)),
    ]);
    for (i, n) in nodes.iter().enumerate() {
        n.set_hook("systemctl", &quorum.k3s_stand_in(i));
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(&nodes, &quorum, &dir.path().join("state"), true);

    // The order the startup had: the init server alone, its blocking start waited for. Built by
    // hand (the plan has no such stage any more); its step runs into its timeout.
    let step = Step {
        id: "start-init-server/s1".into(),
        action: Action::Node { node: "s1".into(), op: NodeOp::StartUnit("k3s".into()) },
        via: vec!["ssh_systemd".into()],
        timeout: HumanDuration::from_secs(10),
        on_failure: OnFailure::Continue,
    };
    let old = Plan {
        kind: PlanKind::Startup,
        reason: "the old order".into(),
        stages: vec![Stage { name: "start-init-server".into(), concurrency: 1, steps: vec![step] }],
        finally: None,
    };
    let report = run(&cfg, &old).await;
    let failure = report.failures().next().expect("the init server's blocking start cannot finish alone");
    let attempt = &failure.attempts.as_ref().unwrap().attempts[0];
    assert_eq!(attempt.error.as_ref().unwrap().kind, ErrorKind::Timeout, "{}", failure.message);
    assert!(!quorum.is_healthy(0), "one member alone has no quorum");
    quorum.stop_all();

    // The plan now: every server started without waiting, then the API waited for.
    let plan = startup_plan(&cfg, &Runtime::build(&cfg).unwrap(), "test", None);
    let stages: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["wait-reachable", "start-servers", "wait-api", "wait-ready", "uncordon", "notify"]);
    let report = run(&cfg, &plan).await;
    assert_eq!(report.outcome, Outcome::Success, "{:#?}", report.failures().collect::<Vec<_>>());
    for (i, n) in nodes.iter().enumerate() {
        assert!(quorum.is_healthy(i), "{} is up", n.name());
        assert_eq!(count(&nodes, n.name(), "systemctl start --no-block k3s"), 1, "{:?}", n.calls());
    }

    // Again on the running cluster (the bootstrap unit runs it at every boot): nothing started.
    let report = run(&cfg, &plan).await;
    assert_eq!(report.outcome, Outcome::Success, "{:#?}", report.failures().collect::<Vec<_>>());
    for n in nodes.iter() {
        assert_eq!(count(&nodes, n.name(), "systemctl start --no-block k3s"), 1, "{:?}", n.calls());
    }
    let started = report.stages.iter().find(|s| s.name == "start-servers").unwrap();
    assert!(started.steps.iter().all(|s| s.message.contains("running already")), "{started:?}");

    // Without a cluster API the plan waits for each server's unit to be active instead.
    quorum.stop_all();
    let cfg = config(&nodes, &quorum, &dir.path().join("state"), false);
    let plan = startup_plan(&cfg, &Runtime::build(&cfg).unwrap(), "test", None);
    let stages: Vec<&str> = plan.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["wait-reachable", "start-servers", "wait-servers", "notify"]);
    let report = run(&cfg, &plan).await;
    assert_eq!(report.outcome, Outcome::Success, "{:#?}", report.failures().collect::<Vec<_>>());
    assert!((0..quorum.len()).all(|i| quorum.is_healthy(i)));
    quorum.stop_all();
}
