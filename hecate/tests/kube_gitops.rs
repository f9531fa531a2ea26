//! `hecate shutdown --execute` then `hecate startup --execute --force-flux-branch` with the `kube`
//! cluster and `flux_gitea` GitOps backends against a real kube-apiserver 1.20.2 (etcd, the Flux
//! CRDs from tests/peers/k8s). The machines are simulated (power and units); the Kubernetes side
//! is real. No kubelet, Flux or Gitea runs, so the test plays them with the stand-ins of
//! backends/tests/kube_support (named there): a stand-in kubelet finishes pod deletions, stand-in
//! Flux controllers write Ready conditions, and a stand-in Gitea health endpoint answers only while
//! Gitea's Deployment has a replica.

#![allow(clippy::unwrap_used)]

#[path = "../../backends/tests/kube_support/mod.rs"]
mod kube_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hecate_test_support::KubeApiServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::PostParams;
use kube::{Api, ResourceExt};
use kube_support::*;
use serde_json::json;

async fn hecate(args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_hecate"))
        .args(args)
        .env("RUST_LOG", "debug")
        .env("NO_COLOR", "1")
        .output()
        .await
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The stages a run went through, in order, from its progress lines (`stage 2/7: cordon (...)`).
fn stages(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.split_once("] stage ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(": ").map(|(_, name)| name.split(' ').next().unwrap_or_default()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_and_suspends_then_startup_breaks_the_gitea_deadlock() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    flux_crds(&c).await;
    let ns = unique("e2e");
    namespace(&c, &ns).await;
    let (s1, a1) = (format!("{ns}-s1"), format!("{ns}-a1"));
    node(&c, &s1, true).await;
    node(&c, &a1, true).await;
    let kubelet = stand_in_kubelet(c.clone(), &ns);
    pod(&c, &ns, "web", &a1, managed(&[])).await;
    let ds_owner = json!({ "ownerReferences": [{
        "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "node-exporter",
        "uid": "00000000-0000-0000-0000-000000000002", "controller": true,
    }] });
    pod(&c, &ns, "exporter", &a1, ds_owner).await;
    let source =
        json!({ "url": "http://gitea.invalid/ops/cluster.git", "interval": "1m", "ref": { "branch": "main" } });
    flux_object(&c, &git_repository(), &ns, "flux-system", source).await;
    let sref =
        json!({ "interval": "10m", "path": "./", "sourceRef": { "kind": "GitRepository", "name": "flux-system" } });
    flux_object(&c, &kustomization(), &ns, "apps", sref).await;

    // Gitea: a Deployment (scaled to zero, as a full power-down leaves it unable to start without
    // Flux in this scenario) and its stand-in health endpoint.
    let deployments: Api<Deployment> = Api::namespaced(c.clone(), &ns);
    let gitea: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "gitea", "namespace": ns },
        "spec": { "replicas": 0, "selector": { "matchLabels": { "app": "gitea" } },
                  "template": { "metadata": { "labels": { "app": "gitea" } },
                                "spec": { "containers": [{ "name": "gitea", "image": "example.invalid/gitea:1" }] } } },
    }))
    .unwrap();
    deployments.create(&PostParams::default(), &gitea).await.unwrap();
    let up = Arc::new(AtomicBool::new(false));
    let health_url = stand_in_gitea_health(up.clone()).await;
    // Stand-in Deployment controller + kubelet: Gitea is up while its Deployment has a replica.
    let gitea_watch = stand_in_gitea_deployment(c.clone(), &ns, up.clone());
    let source_up = up.clone();
    let flux = stand_in_flux(c.clone(), &ns, move || source_up.load(Ordering::SeqCst));

    let state = tempfile::tempdir().unwrap();
    let kubeconfig = server.kubeconfig().display().to_string();
    let sim = "{ type: simulated, world: e2e, step_duration: 50ms, boot_time: 100ms }";
    let config = format!(
        "host: coordinator
state_dir: {state}
power_sources: [ {{ type: simulated, name: ups }} ]
nodes:
  - {{ name: {s1}, address: 10.0.0.1, role: server, init: true, controllers: [ {sim} ] }}
  - {{ name: {a1}, address: 10.0.0.2, role: agent, controllers: [ {sim} ] }}
cluster: {{ type: kube, kubeconfig: {kubeconfig}, eviction_retry: 200ms }}
gitops:
  type: flux_gitea
  kubeconfig: {kubeconfig}
  source: {{ namespace: {ns}, name: flux-system }}
  namespaces: [ {ns} ]
  poll_interval: 100ms
  source_timeout: 1s
  gitea:
    health_url: {health_url}
    timeout: 20s
    workloads: [ {{ kind: deployment, namespace: {ns}, name: gitea }} ]
shutdown: {{ drain_timeout: 10s, step_timeout: 20s, controller_timeout: 5s }}
startup: {{ step_timeout: 20s, controller_timeout: 5s, reachable_timeout: 20s, api_timeout: 20s, nodes_ready_timeout: 20s, gitops_timeout: 40s }}
",
        state = state.path().display(),
    );
    let path = state.path().join("hecate.yaml");
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap();

    let (ok, out) = hecate(&["shutdown", "--execute", "--config", path]).await;
    assert!(ok, "shutdown failed:\n{out}");
    assert_eq!(
        stages(&out),
        ["notify", "cordon", "suspend-gitops", "drain", "stop-agents", "stop-init-server", "power-off"],
        "{out}"
    );
    assert!(!out.contains(server.token()), "the kubeconfig's token must never be printed");
    assert!(get_pod(&c, &ns, "web").await.is_none(), "web evicted:\n{out}");
    assert!(get_pod(&c, &ns, "exporter").await.unwrap().metadata.deletion_timestamp.is_none(), "DaemonSet pod left");
    let nodes: Api<Node> = Api::all(c.clone());
    assert_eq!(nodes.get(&a1).await.unwrap().spec.unwrap().unschedulable, Some(true), "agent cordoned");
    let apps = get_flux(&c, &kustomization(), &ns, "apps").await;
    assert_eq!(apps.data.pointer("/spec/suspend"), Some(&json!(true)), "Flux suspended:\n{out}");

    let (ok, out) = hecate(&["startup", "--execute", "--force-flux-branch", "recovery", "--config", path]).await;
    flux.abort();
    gitea_watch.abort();
    kubelet.abort();
    assert!(ok, "startup failed:\n{out}");
    assert_eq!(
        stages(&out),
        [
            "power-on",
            "wait-reachable",
            "start-servers",
            "wait-api",
            "start-agents",
            "wait-ready",
            "uncordon",
            "resume-gitops",
            "notify"
        ],
        "{out}"
    );
    assert!(!out.contains(server.token()), "the kubeconfig's token must never be printed");
    let source = get_flux(&c, &git_repository(), &ns, "flux-system").await;
    assert_eq!(source.data.pointer("/spec/ref"), Some(&json!({ "branch": "recovery" })), "--force-flux-branch:\n{out}");
    assert_eq!(deployments.get("gitea").await.unwrap().spec.unwrap().replicas, Some(1), "gitea scaled up:\n{out}");
    let apps = get_flux(&c, &kustomization(), &ns, "apps").await;
    assert_eq!(apps.data.pointer("/spec/suspend"), Some(&json!(false)), "Flux resumed:\n{out}");
    assert!(!apps.annotations().contains_key("hecate.dev/suspended-at"));
    assert_ne!(nodes.get(&a1).await.unwrap().spec.unwrap().unschedulable, Some(true), "agent uncordoned:\n{out}");
    assert!(out.contains("bootstrap deadlock"), "the fallback is logged:\n{out}");
    assert!(out.contains(&format!("scaled Deployment {ns}/gitea from 0 to 1")), "and reported:\n{out}");
}
