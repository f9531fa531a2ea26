//! The `kube` cluster backend against a real kube-apiserver 1.20.2 with etcd (one per test
//! process, a namespace and nodes per test). No kubelet or controller-manager runs there, so the
//! tests play them: a stand-in kubelet writes node status and finishes pod deletions, a stand-in
//! disruption controller writes PodDisruptionBudget status.

#![allow(clippy::unwrap_used)]

mod kube_support;

use std::time::Duration;

use hecate_backends::cluster::kube::KubeClusterConfig;
use hecate_core::cluster::{
    CORDON_MARK, ClusterApi, ClusterApiConfig, Cordoned, DrainFallback, DrainOptions, Uncordoned,
};
use hecate_core::{BuildContext, ErrorKind};
use hecate_test_support::KubeApiServer;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube_support::*;
use serde_json::json;

fn backend(server: &KubeApiServer, extra: &str) -> Box<dyn ClusterApi> {
    let yaml = format!("{}eviction_retry: 200ms\n{extra}", kubeconfig_yaml(server));
    let cfg: KubeClusterConfig = serde_saphyr::from_str(&yaml).unwrap();
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let ctx = BuildContext { host: "test".into(), state_dir: std::env::temp_dir() };
    cfg.build(&ctx).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_nodes_cordon_and_uncordon() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let (ready, not_ready) = (unique("ready"), unique("down"));
    node(&c, &ready, true).await;
    node(&c, &not_ready, false).await;
    let api = backend(server, "");

    api.health().await.unwrap();
    let nodes = api.nodes().await.unwrap();
    let find = |n: &str| nodes.iter().find(|x| x.name == n).cloned().unwrap();
    assert!(find(&ready).ready);
    assert!(!find(&not_ready).ready);
    assert!(!find(&ready).unschedulable);

    let marked = |name: &str| {
        let c = c.clone();
        let name = name.to_string();
        async move {
            let n = Api::<Node>::all(c).get(&name).await.unwrap();
            n.metadata.annotations.unwrap_or_default().contains_key(CORDON_MARK)
        }
    };
    assert_eq!(api.cordon(&ready).await.unwrap(), Cordoned::Marked);
    assert!(api.nodes().await.unwrap().iter().any(|n| n.name == ready && n.unschedulable));
    assert!(marked(&ready).await, "hecate's cordon carries its mark");
    assert_eq!(api.cordon(&ready).await.unwrap(), Cordoned::AlreadyMarked, "a second run changes nothing");
    assert_eq!(api.uncordon(&ready).await.unwrap(), Uncordoned::Uncordoned);
    assert!(api.nodes().await.unwrap().iter().any(|n| n.name == ready && !n.unschedulable));
    assert!(!marked(&ready).await, "the mark goes with the cordon");
    assert_eq!(api.uncordon(&ready).await.unwrap(), Uncordoned::NotCordoned);

    // A node the operator cordoned is neither marked nor uncordoned.
    let patch = serde_json::json!({ "spec": { "unschedulable": true } });
    Api::<Node>::all(c.clone()).patch(&not_ready, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert_eq!(api.cordon(&not_ready).await.unwrap(), Cordoned::ByOthers);
    assert!(!marked(&not_ready).await);
    assert_eq!(api.uncordon(&not_ready).await.unwrap(), Uncordoned::LeftCordoned);
    assert!(api.nodes().await.unwrap().iter().any(|n| n.name == not_ready && n.unschedulable), "still cordoned");

    let e = api.cordon("no-such-node").await.unwrap_err();
    assert!(e.message.contains("no-such-node") && e.message.contains("404"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_a_blocking_pdb_and_leaves_daemonset_and_mirror_pods() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let (ns, worker) = (unique("drain"), unique("worker"));
    namespace(&c, &ns).await;
    node(&c, &worker, true).await;
    let kubelet = stand_in_kubelet(c.clone(), &ns);

    // Listed in name order: the PDB-protected pod is asked (and refused) before the plain one.
    pod(&c, &ns, "a-db", &worker, managed(&[("app", "db")])).await;
    pod(&c, &ns, "b-web", &worker, managed(&[])).await;
    let ds_owner = json!({ "ownerReferences": [{
        "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "node-exporter",
        "uid": "00000000-0000-0000-0000-000000000001", "controller": true,
    }] });
    pod(&c, &ns, "c-exporter", &worker, ds_owner).await;
    let mirror = json!({ "annotations": { "kubernetes.io/config.mirror": "abc" } });
    pod(&c, &ns, "d-static", &worker, mirror).await;
    pod(&c, &ns, "e-elsewhere", "another-node", json!({})).await;
    pdb(&c, &ns, "db", "db").await;

    // Stand-in disruption controller: allows one disruption only once the drain has been refused
    // (b-web, asked after a-db, is being deleted).
    let controller = {
        let c = c.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            wait_for("the drain to evict b-web", Duration::from_secs(30), || async {
                match get_pod(&c, &ns, "b-web").await {
                    Some(p) if p.metadata.deletion_timestamp.is_none() => Err("b-web not evicted yet".to_string()),
                    _ => Ok(()),
                }
            })
            .await;
            assert!(get_pod(&c, &ns, "a-db").await.unwrap().metadata.deletion_timestamp.is_none());
            set_disruptions_allowed(&c, &ns, "db", 1).await;
        })
    };

    let api = backend(server, "");
    let opts =
        DrainOptions { timeout: Duration::from_secs(30), pdb_timeout: Duration::from_secs(30), ..Default::default() };
    let report = api.drain(&worker, &opts).await.unwrap();
    controller.await.unwrap();
    kubelet.abort();

    let mut evicted = report.evicted.clone();
    evicted.sort();
    assert_eq!(evicted, [format!("{ns}/a-db"), format!("{ns}/b-web")]);
    assert!(report.left.is_empty() && report.deleted.is_empty() && report.terminating.is_empty(), "{report:?}");
    assert!(get_pod(&c, &ns, "a-db").await.is_none(), "evicted and gone");
    for untouched in ["c-exporter", "d-static", "e-elsewhere"] {
        let p = get_pod(&c, &ns, untouched).await.unwrap();
        assert!(p.metadata.deletion_timestamp.is_none(), "{untouched} must be left alone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdb_that_never_allows_is_left_or_deleted_at_the_deadline() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let (ns, worker) = (unique("deadline"), unique("worker"));
    namespace(&c, &ns).await;
    node(&c, &worker, true).await;
    pod(&c, &ns, "db-0", &worker, managed(&[("app", "db")])).await;
    pdb(&c, &ns, "db", "db").await;
    let api = backend(server, "");

    // The drain's own limit is ten minutes; the budget's refusals are asked again for two
    // seconds only (with every node going down it is never met). The outer bound makes a drain
    // that waited the ten minutes fail instead of hanging the suite.
    let bounded = |fallback| DrainOptions {
        timeout: Duration::from_secs(600),
        pdb_timeout: Duration::from_secs(2),
        fallback,
        ..Default::default()
    };
    let within = Duration::from_secs(60);
    let report =
        tokio::time::timeout(within, api.drain(&worker, &bounded(DrainFallback::Leave))).await.unwrap().unwrap();
    assert_eq!(report.left, [format!("{ns}/db-0")]);
    assert!(report.evicted.is_empty() && report.deleted.is_empty());
    assert!(get_pod(&c, &ns, "db-0").await.unwrap().metadata.deletion_timestamp.is_none(), "left running");

    // Without a kubelet the deleted pod stays terminating until the drain's limit: a short one here.
    let delete = DrainOptions { timeout: Duration::from_secs(4), ..bounded(DrainFallback::Delete) };
    let report = tokio::time::timeout(within, api.drain(&worker, &delete)).await.unwrap().unwrap();
    assert_eq!(report.deleted, [format!("{ns}/db-0")]);
    assert_eq!(report.terminating, [format!("{ns}/db-0")]);
    assert!(get_pod(&c, &ns, "db-0").await.unwrap().metadata.deletion_timestamp.is_some(), "deleted with grace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_and_emptydir_pods_are_kept_unless_opted_in_and_the_grace_is_capped() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let (ns, worker) = (unique("kept"), unique("worker"));
    namespace(&c, &ns).await;
    node(&c, &worker, true).await;
    let scratch = json!({ "volumes": [{ "name": "scratch", "emptyDir": {} }] });
    pod(&c, &ns, "bare", &worker, json!({})).await;
    pod_with(&c, &ns, "cache", &worker, managed(&[]), scratch).await;
    pod_with(&c, &ns, "slow", &worker, managed(&[]), json!({ "terminationGracePeriodSeconds": 600 })).await;
    pod_with(&c, &ns, "quick", &worker, managed(&[]), json!({ "terminationGracePeriodSeconds": 3 })).await;
    let api = backend(server, "");

    // No kubelet runs: evicted pods stay terminating, with the grace they were given.
    let opts =
        DrainOptions { timeout: Duration::from_secs(2), max_grace: Duration::from_secs(45), ..Default::default() };
    let report = api.drain(&worker, &opts).await.unwrap();
    let mut evicted = report.evicted.clone();
    evicted.sort();
    assert_eq!(evicted, [format!("{ns}/quick"), format!("{ns}/slow")]);
    assert_eq!(report.kept, [format!("{ns}/bare (no controller)"), format!("{ns}/cache (emptyDir data)")]);
    let grace = |p: Option<k8s_openapi::api::core::v1::Pod>| p.unwrap().metadata.deletion_grace_period_seconds;
    assert_eq!(grace(get_pod(&c, &ns, "slow").await), Some(45), "capped at max_grace");
    assert_eq!(grace(get_pod(&c, &ns, "quick").await), Some(3), "its own, shorter");
    for kept in ["bare", "cache"] {
        assert!(get_pod(&c, &ns, kept).await.unwrap().metadata.deletion_timestamp.is_none(), "{kept} untouched");
    }

    // The operator's opt-ins (kubectl's --force and --delete-emptydir-data).
    let opts = DrainOptions { evict_unmanaged: true, delete_emptydir_data: true, ..opts };
    let report = api.drain(&worker, &opts).await.unwrap();
    let mut evicted = report.evicted.clone();
    evicted.sort();
    assert_eq!(evicted, [format!("{ns}/bare"), format!("{ns}/cache")]);
    assert!(report.kept.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_nothing_to_evict_drains_at_once() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let worker = unique("empty");
    node(&c, &worker, true).await;
    let report = backend(server, "")
        .drain(&worker, &DrainOptions { timeout: Duration::from_secs(5), ..Default::default() })
        .await
        .unwrap();
    assert!(report.evicted.is_empty() && report.left.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_api_is_an_error_not_a_panic() {
    let server = KubeApiServer::shared();
    // The same credentials, pointed at a loopback port nothing listens on.
    let port = hecate_test_support::free_port(std::net::Ipv4Addr::LOCALHOST);
    let api = backend(server, &format!("server: https://127.0.0.1:{port}\nrequest_timeout: 2s\n"));
    let e = api.health().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(api.nodes().await.is_err());
}

#[tokio::test]
async fn a_missing_kubeconfig_is_a_config_error_naming_it() {
    let cfg: KubeClusterConfig = serde_saphyr::from_str("kubeconfig: /nonexistent/k3s.yaml\n").unwrap();
    let ctx = BuildContext { host: "test".into(), state_dir: std::env::temp_dir() };
    // Building does not read it (a dry run must not need it); the first request does.
    let api = cfg.build(&ctx).unwrap();
    let e = api.health().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains("/nonexistent/k3s.yaml"), "{e}");
}
