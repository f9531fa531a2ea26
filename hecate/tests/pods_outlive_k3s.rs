//! A whole power cycle, shutdown then startup, against a real kube-apiserver 1.20.2 and real sshd
//! nodes, with STAND-INS as unkind as the real things for what cannot run here:
//!
//! - each node's k3s: its `systemctl` hook keeps a unit state (`start`, `stop`, `is-active`) and
//!   powers the node off by stopping its sshd; `hecate-k3s-stop` marks the unit stopped.
//! - the kubelet: while a node's k3s runs, a pod deleted through the API (an eviction) is asked
//!   to terminate with the deletion's grace, recorded, and removed. Once k3s stops, nothing in
//!   the API reaches the pods any more, but the pods keep running: k3s's unit has
//!   `KillMode=process` ("the K3s containers continue running when the K3s service is stopped",
//!   docs.k3s.io/upgrades/killall). They are asked to terminate only by the node's own
//!   `hecate-k3s-stop UNIT GRACE` (recorded with that grace); what is still running at the
//!   node's `systemctl poweroff` is killed hard. The node is Ready while its k3s runs.
//! - the ReplicaSet controller and the scheduler: an evicted pod that a controller manages gets a
//!   replacement, which is bound to a Ready node that is not cordoned, if there is one.
//! - the disruption controller: one PodDisruptionBudget never allows a disruption.
//!
//! What must hold: every pod on every node, servers included, got its grace before its node's
//! power-off; nothing was scheduled onto a node about to lose power; the pod without a
//! controller and the pod with `emptyDir` data still exist after the cycle; the never-met budget
//! costs only its `pdb_timeout`; a node the operator had cordoned is still cordoned after startup.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

#[path = "../../backends/tests/kube_support/mod.rs"]
mod kube_support;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hecate_core::config::Config;
use hecate_core::engine::Outcome;
use hecate_core::plan::{shutdown_plan, startup_plan};
use hecate_core::runtime::Runtime;
use hecate_test_support::{KubeApiServer, STOP_SSHD_SH, SshNodes, read_calls};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use kube_support::*;
use serde_json::json;

/// What a pod was asked to do, and when.
#[derive(Debug, Clone)]
struct Termination {
    at: SystemTime,
    grace_s: i64,
    how: &'static str,
}

#[derive(Debug, Default)]
struct Records {
    /// Pod name → its termination.
    terminated: BTreeMap<String, Termination>,
    /// (pod, node) bindings the scheduler stand-in made.
    scheduled: Vec<(String, String)>,
    /// Node dirs whose `hecate-k3s-stop` was handled.
    stopped: Vec<PathBuf>,
    /// Rounds the stand-ins made.
    rounds: u64,
}

/// The node's k3s and systemd (see the module docs), its unit running.
fn k3s_node_stand_in(dir: &Path, nodes: &SshNodes, name: &str) {
    let n = nodes.by_name(name).unwrap();
    std::fs::write(dir.join("k3s.state"), "active\n").unwrap();
    n.set_hook(
        "systemctl",
        &format!(
            "# stand-in for a k3s node's systemd (hecate/tests/pods_outlive_k3s.rs)
state=\"$HECATE_NODE_DIR/k3s.state\"
case \"$1\" in
  poweroff)
{STOP_SSHD_SH}  ;;
  start) echo active >\"$state\" ;;
  stop) echo inactive >\"$state\" ;;
  is-active) if [ \"$(cat \"$state\")\" = active ]; then echo active; else echo inactive; exit 3; fi ;;
esac
exit 0
"
        ),
    );
    n.set_hook("hecate-k3s-stop", "echo inactive >\"$HECATE_NODE_DIR/k3s.state\"\necho \"stopped $1\"\n");
}

fn running(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("k3s.state")).is_ok_and(|s| s.trim() == "active")
}

/// Binds a pending pod to a node, as the scheduler does (`pods/binding`).
async fn bind(c: &Client, ns: &str, pod: &str, node: &str) -> bool {
    let body = json!({
        "apiVersion": "v1", "kind": "Binding",
        "metadata": { "name": pod, "namespace": ns },
        "target": { "apiVersion": "v1", "kind": "Node", "name": node },
    });
    let request = axum::http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{pod}/binding"))
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).unwrap())
        .unwrap();
    c.request_text(request).await.is_ok()
}

/// The kubelet, ReplicaSet controller and scheduler stand-ins for namespace `ns` and the nodes
/// (k8s name → node dir), until aborted.
fn cluster_stand_ins(
    c: Client,
    ns: String,
    nodes: BTreeMap<String, PathBuf>,
    records: Arc<Mutex<Records>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(c.clone(), &ns);
        let node_api: Api<Node> = Api::all(c.clone());
        let mut ready: BTreeMap<String, bool> = BTreeMap::new();
        let mut tick = tokio::time::interval(RESYNC);
        loop {
            tick.tick().await;
            // kubelet: the node's Ready condition follows its k3s
            for (name, dir) in &nodes {
                let up = running(dir);
                if ready.get(name) != Some(&up) {
                    set_node_ready(&c, name, up).await;
                    ready.insert(name.clone(), up);
                }
            }
            let Ok(list) = pods.list(&ListParams::default()).await else { continue };
            for p in &list.items {
                let name = p.metadata.name.clone().unwrap();
                let bound = p.spec.as_ref().and_then(|s| s.node_name.clone());
                // kubelet: an API deletion reaches the pod only while its node's k3s runs
                if p.metadata.deletion_timestamp.is_some()
                    && let Some(node) = &bound
                    && nodes.get(node).is_some_and(|d| running(d))
                {
                    let grace = p.metadata.deletion_grace_period_seconds.unwrap_or(30);
                    let t = Termination { at: SystemTime::now(), grace_s: grace, how: "evicted" };
                    records.lock().unwrap().terminated.entry(name.clone()).or_insert(t);
                    let _ =
                        pods.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
                    // ReplicaSet controller: a managed pod is replaced (unbound, for the scheduler)
                    let managed = p.metadata.owner_references.iter().flatten().any(|o| o.kind == "ReplicaSet");
                    if managed {
                        let replacement: Pod = serde_json::from_value(json!({
                            "metadata": { "name": format!("{name}-r"), "namespace": ns },
                            "spec": { "containers": [{ "name": "c", "image": "example.invalid/app:1" }] },
                        }))
                        .unwrap();
                        let _ = pods.create(&PostParams::default(), &replacement).await;
                    }
                }
                // scheduler: a pending pod goes to a Ready node that is not cordoned
                if bound.is_none() && p.metadata.deletion_timestamp.is_none() {
                    let Ok(all) = node_api.list(&ListParams::default()).await else { continue };
                    let target = all.items.iter().find(|n| {
                        let n_name = n.metadata.name.clone().unwrap_or_default();
                        nodes.contains_key(&n_name)
                            && ready.get(&n_name) == Some(&true)
                            && !n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
                    });
                    if let Some(t) = target {
                        let node = t.metadata.name.clone().unwrap();
                        if bind(&c, &ns, &name, &node).await {
                            records.lock().unwrap().scheduled.push((name.clone(), node));
                        }
                    }
                }
            }
            // kubelet, k3s gone: only the node's own stop reaches the pods still running there
            for (node, dir) in &nodes {
                if records.lock().unwrap().stopped.contains(dir) {
                    continue;
                }
                let Some(call) = read_calls(dir).into_iter().find(|c| c.command == "hecate-k3s-stop") else { continue };
                let grace: i64 = call.args.get(1).and_then(|g| g.parse().ok()).unwrap_or(-1);
                let mut r = records.lock().unwrap();
                for p in list.items.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()) == Some(node))
                {
                    let name = p.metadata.name.clone().unwrap();
                    let t = Termination { at: call.timestamp, grace_s: grace, how: "node stop" };
                    r.terminated.entry(name).or_insert(t);
                }
                r.stopped.push(dir.clone());
            }
            records.lock().unwrap().rounds += 1;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pod_gets_its_grace_before_power_off_and_what_kubectl_protects_survives_the_cycle() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let ns = unique("cycle");
    namespace(&c, &ns).await;
    let mut ssh = SshNodes::start_named(&[
        ("s1", Ipv4Addr::new(127, 0, 0, 140)),
        ("a1", Ipv4Addr::new(127, 0, 0, 141)),
        ("a2", Ipv4Addr::new(127, 0, 0, 142)),
    ]);
    // Kubernetes node names are unique per test on the shared server.
    let k8s = |n: &str| format!("{ns}-{n}");
    let mut dirs = BTreeMap::new();
    for n in ["s1", "a1", "a2"] {
        let dir = ssh.by_name(n).unwrap().dir().to_path_buf();
        k3s_node_stand_in(&dir, &ssh, n);
        node(&c, &k8s(n), true).await;
        dirs.insert(k8s(n), dir);
    }
    // The operator cordoned a2 on purpose.
    let nodes_api: Api<Node> = Api::all(c.clone());
    let cordon = json!({ "spec": { "unschedulable": true } });
    nodes_api.patch(&k8s("a2"), &PatchParams::default(), &Patch::Merge(&cordon)).await.unwrap();

    let ds = json!({ "ownerReferences": [{
        "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
        "uid": "00000000-0000-0000-0000-00000000dddd", "controller": true,
    }] });
    let slow = json!({ "terminationGracePeriodSeconds": 600 });
    let quick = json!({ "terminationGracePeriodSeconds": 5 });
    let scratch = json!({ "volumes": [{ "name": "scratch", "emptyDir": {} }] });
    let on = |n: &str| k8s(n);
    pod_with(&c, &ns, "web-s1", &on("s1"), managed(&[]), slow.clone()).await;
    pod(&c, &ns, "ds-s1", &on("s1"), ds.clone()).await;
    pod_with(&c, &ns, "web-a1", &on("a1"), managed(&[]), quick).await;
    pod(&c, &ns, "db-0", &on("a1"), managed(&[("app", "db")])).await;
    pod(&c, &ns, "bare", &on("a1"), json!({})).await;
    pod_with(&c, &ns, "cache", &on("a1"), managed(&[]), scratch).await;
    pod(&c, &ns, "ds-a1", &on("a1"), ds.clone()).await;
    pod_with(&c, &ns, "web-a2", &on("a2"), managed(&[]), slow).await;
    pod(&c, &ns, "ds-a2", &on("a2"), ds).await;
    pdb(&c, &ns, "db", "db").await; // never allows: no disruption controller writes otherwise
    let on_node: BTreeMap<String, String> = Api::<Pod>::namespaced(c.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.metadata.name.unwrap(), p.spec.unwrap().node_name.unwrap()))
        .collect();

    let records = Arc::new(Mutex::new(Records::default()));
    let stand_ins = cluster_stand_ins(c.clone(), ns.clone(), dirs.clone(), records.clone());

    let state = tempfile::tempdir().unwrap();
    let mut yaml = format!(
        "host: coordinator
state_dir: {state}
daemon: {{ poll_interval: 200ms }}
power_sources: [ {{ type: simulated, name: ups }} ]
cluster: {{ type: kube, kubeconfig: {kubeconfig}, eviction_retry: 200ms }}
shutdown: {{ drain_timeout: 10m, pdb_timeout: 2s, max_pod_grace: 30s, step_timeout: 30s, controller_timeout: 10s, power_off_timeout: 1m, soft_off_timeout: 20s, off_silence: 1s }}
startup: {{ step_timeout: 20s, controller_timeout: 5s, reachable_timeout: 30s, api_timeout: 20s, nodes_ready_timeout: 30s }}
nodes:
",
        state = state.path().display(),
        kubeconfig = server.kubeconfig().display(),
    );
    for n in ["s1", "a1", "a2"] {
        let s = ssh.by_name(n).unwrap();
        yaml += &format!(
            "  - {{ name: {name}, address: {addr}, role: {role}, init: {init}, controllers: [ {{ type: ssh_systemd, user: {user}, identity_file: {key}, known_hosts: {kh}, port: {port}, connect_timeout: 2s }} ] }}\n",
            name = k8s(n),
            addr = s.addr(),
            role = if n == "s1" { "server" } else { "agent" },
            init = n == "s1",
            user = s.user(),
            key = s.identity_file().display(),
            kh = ssh.known_hosts().display(),
            port = s.port(),
        );
    }
    hecate::init_process();
    let cfg = Config::from_yaml(&yaml, Path::new("cycle.yaml")).map_err(|e| e.to_string()).unwrap().0;

    // The shutdown. The drain's own limit is ten minutes: a run that waited for the budget that
    // is never met would not end within the outer bound.
    let rt = Arc::new(Runtime::build(&cfg).unwrap());
    let plan = shutdown_plan(&cfg, &rt, "test: on battery");
    let run = hecate::run::execute(&cfg, rt, &plan, false, hecate::run::log_sink());
    let report = tokio::time::timeout(Duration::from_secs(240), run).await.expect("the shutdown ends");
    assert_eq!(report.outcome, Outcome::Success, "{:#?}", report.failures().collect::<Vec<_>>());
    let drain_a1 =
        report.stages.iter().flat_map(|s| &s.steps).find(|s| s.id == format!("drain/{}", k8s("a1"))).unwrap();
    assert!(drain_a1.message.contains(&format!("left 1 ({ns}/db-0)")), "{}", drain_a1.message);
    assert!(
        drain_a1.message.contains(&format!("kept {ns}/bare (no controller), {ns}/cache (emptyDir data)")),
        "{}",
        drain_a1.message
    );

    // Every pod got SIGTERM and its grace before its node lost power.
    let after = records.lock().unwrap().rounds;
    hecate_test_support::wait_until("the stand-ins to look again", Duration::from_secs(10), || {
        let now = records.lock().unwrap().rounds;
        if now >= after + 2 { Ok(()) } else { Err(format!("round {now}")) }
    });
    {
        let r = records.lock().unwrap();
        for (pod, node) in &on_node {
            let n = node.rsplit('-').next().unwrap();
            let off = read_calls(&dirs[node])
                .into_iter()
                .find(|c| c.command_line() == "systemctl poweroff")
                .unwrap_or_else(|| panic!("{node} never powered off"))
                .timestamp;
            let t =
                r.terminated.get(pod).unwrap_or_else(|| panic!("{pod} on {n} was killed hard at power-off: {r:#?}"));
            assert!(t.at < off, "{pod}: asked to terminate after its node's power-off: {t:?}");
            let want = match (pod.as_str(), t.how) {
                ("web-a1", "evicted") => 5, // its own grace, shorter than the cap
                (_, "evicted") => 30,       // 600 capped at max_pod_grace
                (_, _) => 30,               // the node's stop: the cap for every container
            };
            assert_eq!(t.grace_s, want, "{pod}: {t:?}");
        }
        for evicted in ["web-s1", "web-a1", "web-a2"] {
            assert_eq!(r.terminated[evicted].how, "evicted", "{evicted}: servers are drained too");
        }
        for on_the_node in ["ds-s1", "ds-a1", "ds-a2", "db-0", "bare", "cache"] {
            assert_eq!(r.terminated[on_the_node].how, "node stop", "{on_the_node}");
        }
        // Nothing was scheduled onto a node about to lose power: every node was cordoned first.
        assert!(r.scheduled.is_empty(), "scheduled during the shutdown: {:?}", r.scheduled);
    }

    // Power comes back (a stand-in for the BMC or the operator): the nodes answer again, their
    // k3s still stopped.
    for n in ["s1", "a1", "a2"] {
        ssh.by_name_mut(n).unwrap().restart();
    }
    let rt = Arc::new(Runtime::build(&cfg).unwrap());
    let plan = startup_plan(&cfg, &rt, "test: power is back", None);
    let report = hecate::run::execute(&cfg, rt, &plan, false, hecate::run::log_sink()).await;
    assert_eq!(report.outcome, Outcome::Success, "{:#?}", report.failures().collect::<Vec<_>>());
    stand_ins.abort();

    let cordoned = |n: Node| {
        let marked = n.metadata.annotations.unwrap_or_default().contains_key(hecate_core::cluster::CORDON_MARK);
        (n.spec.and_then(|s| s.unschedulable).unwrap_or(false), marked)
    };
    assert_eq!(cordoned(nodes_api.get(&k8s("s1")).await.unwrap()), (false, false), "hecate's cordon undone");
    assert_eq!(cordoned(nodes_api.get(&k8s("a1")).await.unwrap()), (false, false), "hecate's cordon undone");
    assert_eq!(cordoned(nodes_api.get(&k8s("a2")).await.unwrap()), (true, false), "the operator's cordon stays");
    for survivor in ["bare", "cache", "ds-a1", "db-0"] {
        let p = get_pod(&c, &ns, survivor).await.unwrap_or_else(|| panic!("{survivor} is gone"));
        assert!(p.metadata.deletion_timestamp.is_none(), "{survivor} is being deleted");
    }
}
