//! The `flux_gitea` GitOps backend against a real kube-apiserver 1.20.2 with the Flux CRDs the
//! project ships (tests/peers/k8s/flux-crds.yaml). No Flux controller, Deployment controller or
//! Gitea runs there, so the tests play them, each named as a stand-in: stand-in Flux controllers
//! write the Ready conditions Flux would, a stand-in Gitea health endpoint (a loopback HTTP server)
//! answers only while the stand-in "Gitea" is up, and Gitea is up once its Deployment is scaled up
//! (or applied) — what a Deployment controller and kubelet would bring about.

#![allow(clippy::unwrap_used)]

mod kube_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hecate_backends::gitops::flux_gitea::{FluxGiteaConfig, SUSPENDED_BY_HECATE};
use hecate_core::gitops::{GitOpsBootstrap, GitOpsConfig, ResumeOptions};
use hecate_core::{BuildContext, ErrorKind};
use hecate_test_support::KubeApiServer;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::PostParams;
use kube::{Client, ResourceExt};
use kube_support::*;
use serde_json::{Value, json};

fn backend(server: &KubeApiServer, ns: &str, extra: &str) -> Box<dyn GitOpsBootstrap> {
    let yaml = format!(
        "{}source: {{ namespace: {ns}, name: flux-system }}\nnamespaces: [{ns}]\npoll_interval: 100ms\n{extra}",
        kubeconfig_yaml(server)
    );
    let cfg: FluxGiteaConfig = serde_saphyr::from_str(&yaml).unwrap();
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let ctx = BuildContext { host: "test".into(), state_dir: std::env::temp_dir() };
    cfg.build(&ctx).unwrap()
}

/// A namespace with a GitRepository `flux-system` on branch `main` and Kustomizations
/// `infra` ← `gitea` ← `apps` (dependsOn), plus a HelmRelease `db`.
async fn flux_namespace(c: &Client, prefix: &str) -> String {
    flux_crds(c).await;
    let ns = unique(prefix);
    namespace(c, &ns).await;
    let source =
        json!({ "url": "https://gitea.example/ops/cluster.git", "interval": "1m", "ref": { "branch": "main" } });
    flux_object(c, &git_repository(), &ns, "flux-system", source).await;
    let ks = |deps: &[&str]| {
        let deps: Vec<Value> = deps.iter().map(|d| json!({ "name": d })).collect();
        json!({ "interval": "10m", "path": "./", "sourceRef": { "kind": "GitRepository", "name": "flux-system" }, "dependsOn": deps })
    };
    flux_object(c, &kustomization(), &ns, "apps", ks(&["gitea"])).await;
    flux_object(c, &kustomization(), &ns, "gitea", ks(&["infra"])).await;
    flux_object(c, &kustomization(), &ns, "infra", ks(&[])).await;
    flux_object(c, &helm_release(), &ns, "db", json!({ "interval": "10m", "chart": { "spec": { "chart": "db" } } }))
        .await;
    ns
}

fn suspended(o: &kube::api::DynamicObject) -> bool {
    o.data.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false)
}

async fn gitea_deployment(c: &Client, ns: &str, replicas: i32) {
    let api: Api<Deployment> = Api::namespaced(c.clone(), ns);
    let d: Deployment = serde_json::from_value(json!({
        "metadata": { "name": "gitea", "namespace": ns },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": "gitea" } },
            "template": { "metadata": { "labels": { "app": "gitea" } },
                          "spec": { "containers": [{ "name": "gitea", "image": "example.invalid/gitea:1" }] } },
        },
    }))
    .unwrap();
    api.create(&PostParams::default(), &d).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_then_resume_leaves_what_the_operator_suspended() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let ns = flux_namespace(&c, "suspend").await;
    // The operator suspended `apps` before the outage.
    let ks = kustomization();
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(c.clone(), &ns, &ks);
    let patch = json!({ "spec": { "suspend": true } });
    api.patch("apps", &Default::default(), &kube::api::Patch::Merge(&patch)).await.unwrap();
    let flux = stand_in_flux(c.clone(), &ns, || true);
    let g = backend(server, &ns, "");

    let report = g.suspend().await.unwrap();
    assert_eq!(report.left_alone, [format!("Kustomization {ns}/apps")]);
    for (ar, name) in [(kustomization(), "gitea"), (kustomization(), "infra"), (helm_release(), "db")] {
        let o = get_flux(&c, &ar, &ns, name).await;
        assert!(suspended(&o), "{name} suspended");
        assert!(o.annotations().contains_key(SUSPENDED_BY_HECATE), "{name} marked as suspended by hecate");
    }
    assert!(!get_flux(&c, &ks, &ns, "apps").await.annotations().contains_key(SUSPENDED_BY_HECATE));
    // A second suspend (a resumed shutdown) changes nothing and still tells them apart.
    let again = g.suspend().await.unwrap();
    assert_eq!(again.left_alone, [format!("Kustomization {ns}/apps")]);

    let report = g.resume(&ResumeOptions { force_branch: None, timeout: Duration::from_secs(30) }).await.unwrap();
    flux.abort();
    assert!(!report.fallback_used);
    assert_eq!(report.left_alone, [format!("Kustomization {ns}/apps")]);
    for (ar, name) in [(kustomization(), "gitea"), (kustomization(), "infra"), (helm_release(), "db")] {
        let o = get_flux(&c, &ar, &ns, name).await;
        assert!(!suspended(&o), "{name} resumed");
        assert!(!o.annotations().contains_key(SUSPENDED_BY_HECATE), "{name}'s mark removed");
        assert!(o.annotations().contains_key("reconcile.fluxcd.io/requestedAt"), "{name} asked to reconcile");
    }
    assert!(suspended(&get_flux(&c, &ks, &ns, "apps").await), "the operator's suspension stays");
    // Waited for in dependency order: infra before gitea; apps (suspended) not at all.
    let ready: Vec<&String> = report.actions.iter().filter(|a| a.ends_with(" ready")).collect();
    let pos = |what: &str| ready.iter().position(|a| a.contains(what)).unwrap();
    assert!(pos("GitRepository") < pos("/infra") && pos("/infra") < pos("/gitea"), "{ready:?}");
    assert!(!ready.iter().any(|a| a.contains("/apps")), "{ready:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_scales_gitea_up_reconciles_again_and_forces_the_branch() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let ns = flux_namespace(&c, "deadlock").await;
    gitea_deployment(&c, &ns, 0).await;
    let up = Arc::new(AtomicBool::new(false));
    let health_url = stand_in_gitea_health(up.clone()).await;
    let gitea = stand_in_gitea_deployment(c.clone(), &ns, up.clone());
    let source_up = up.clone();
    let flux = stand_in_flux(c.clone(), &ns, move || source_up.load(Ordering::SeqCst));
    let g = backend(
        server,
        &ns,
        &format!(
            "source_timeout: 1s\ngitea:\n  health_url: {health_url}\n  timeout: 20s\n  workloads:\n    \
             - {{ kind: deployment, namespace: {ns}, name: gitea }}\n"
        ),
    );
    g.suspend().await.unwrap();

    let opts = ResumeOptions { force_branch: Some("recovery".into()), timeout: Duration::from_secs(40) };
    let report = g.resume(&opts).await.unwrap();
    flux.abort();
    gitea.abort();

    assert!(report.fallback_used, "{:?}", report.actions);
    let source = get_flux(&c, &git_repository(), &ns, "flux-system").await;
    assert_eq!(
        source.data.pointer("/spec/ref"),
        Some(&json!({ "branch": "recovery" })),
        "forced branch on the GitRepository"
    );
    let d = Api::<Deployment>::namespaced(c.clone(), &ns).get("gitea").await.unwrap();
    assert_eq!(d.spec.unwrap().replicas, Some(1));
    let text = report.actions.join("\n");
    let order = [
        "forced to branch recovery",
        "not ready after",
        "bootstrap deadlock",
        "scaled Deployment",
        "gitea healthy",
        "requested reconciliation",
        "GitRepository",
    ];
    let mut at = 0;
    for step in order {
        let found = report.actions[at..].iter().position(|a| a.contains(step));
        assert!(found.is_some(), "{step:?} missing after action {at} in:\n{text}");
        at += found.unwrap();
    }
    assert_eq!(report.actions.iter().filter(|a| a.starts_with("requested reconciliation")).count(), 2, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlock_applies_gitea_manifests_from_a_directory() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let ns = flux_namespace(&c, "manifests").await;
    let up = Arc::new(AtomicBool::new(false));
    let health_url = stand_in_gitea_health(up.clone()).await;
    let gitea = stand_in_gitea_deployment(c.clone(), &ns, up.clone());
    let source_up = up.clone();
    let flux = stand_in_flux(c.clone(), &ns, move || source_up.load(Ordering::SeqCst));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("10-gitea.yaml"),
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{ name: gitea, namespace: {ns} }}\nspec:\n  ports: [{{ port: 3000, protocol: TCP }}]\n  \
             selector: {{ app: gitea }}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: gitea, namespace: {ns} }}\n\
             spec:\n  replicas: 1\n  selector: {{ matchLabels: {{ app: gitea }} }}\n  template:\n    metadata: {{ labels: {{ app: gitea }} }}\n    \
             spec:\n      containers: [{{ name: gitea, image: example.invalid/gitea:1 }}]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("README.md"), "not a manifest").unwrap();
    let g = backend(
        server,
        &ns,
        &format!("source_timeout: 1s\ngitea:\n  health_url: {health_url}\n  manifests_dir: {}\n", dir.path().display()),
    );

    let report = g.resume(&ResumeOptions { force_branch: None, timeout: Duration::from_secs(40) }).await.unwrap();
    flux.abort();
    gitea.abort();
    assert!(report.fallback_used);
    assert!(
        report.actions.iter().any(|a| a.starts_with(&format!("applied Service {ns}/gitea"))),
        "{:?}",
        report.actions
    );
    assert!(
        report.actions.iter().any(|a| a.starts_with(&format!("applied Deployment {ns}/gitea"))),
        "{:?}",
        report.actions
    );
    let d = Api::<Deployment>::namespaced(c.clone(), &ns).get("gitea").await.unwrap();
    let managers: Vec<String> = d.metadata.managed_fields.unwrap().into_iter().filter_map(|m| m.manager).collect();
    assert!(managers.contains(&"hecate".to_string()), "server-side applied by hecate: {managers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_never_gets_ready_fails_within_the_timeout_saying_why() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let ns = flux_namespace(&c, "stuck").await;
    let flux = stand_in_flux(c.clone(), &ns, || false);
    // Gitea's health endpoint is a loopback port nothing listens on; no fallback configured.
    let g = backend(server, &ns, "source_timeout: 1s\n");
    let started = std::time::Instant::now();
    let e = g.resume(&ResumeOptions { force_branch: None, timeout: Duration::from_secs(4) }).await.unwrap_err();
    flux.abort();
    assert!(started.elapsed() < Duration::from_secs(4), "finishes before the engine's limit");
    assert_eq!(e.kind, ErrorKind::Timeout);
    assert!(e.message.contains("GitRepository") && e.message.contains("git server unreachable"), "{e}");
    assert!(e.message.contains("no `gitea` fallback configured"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_source_suspended_and_not_ready() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let ns = flux_namespace(&c, "health").await;
    let g = backend(server, &ns, "");
    g.suspend().await.unwrap();
    let h = g.health().await.unwrap();
    assert!(!h.source_ready);
    assert_eq!(h.suspended.len(), 4, "{h:?}");
}

#[test]
fn config_problems_are_named() {
    let cfg: FluxGiteaConfig = serde_saphyr::from_str(
        "gitea:\n  health_url: ftp://gitea/healthz\n  manifests_dir: relative/dir\n  workloads: [{ kind: deployment, namespace: g, name: g, replicas: 0 }]\n",
    )
    .unwrap();
    let problems = cfg.validate().join("\n");
    assert!(problems.contains("gitea.health_url"), "{problems}");
    assert!(problems.contains("absolute path"), "{problems}");
    assert!(problems.contains("replicas"), "{problems}");
    let cfg: FluxGiteaConfig = serde_saphyr::from_str("gitea:\n  health_url: http://gitea:3000/api/healthz\n").unwrap();
    assert!(cfg.validate().join("\n").contains("needs `workloads` or `manifests_dir`"));
}
