//! Shared by the tests against the real kube-apiserver peer: a client, namespaces, nodes and pods,
//! and the stand-ins for the controllers that do not run there (kubelet, disruption controller,
//! Flux, Gitea). Each stand-in is named as one where it is used.

// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hecate_test_support::KubeApiServer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

pub const FLUX_CRDS: &str = include_str!("../../../tests/peers/k8s/flux-crds.yaml");

/// How often the stand-in controllers look at the API, as a real controller resyncs. They run
/// until their task is aborted; nothing waits on them for a fixed time.
pub const RESYNC: Duration = Duration::from_millis(100);

/// Polls `probe` every 50 ms until it is `Ok`, or panics after `timeout` with `what` and the
/// last reason.
pub async fn wait_for<T, Fut>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        match probe().await {
            Ok(v) => return v,
            Err(why) if tokio::time::Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}: {why}")
            }
            Err(_) => {}
        }
    }
}

/// A client for the shared server (the test's own; Hecate's backends build theirs from the
/// kubeconfig).
pub async fn client(server: &KubeApiServer) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kc = Kubeconfig::read_from(server.kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await.unwrap();
    Client::try_from(cfg).unwrap()
}

/// Creates a namespace (each test has its own on the shared server).
pub async fn namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

/// Creates a node and writes its status as a kubelet would (stand-in: no kubelet runs here).
pub async fn node(client: &Client, name: &str, ready: bool) {
    let api: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({ "metadata": { "name": name } })).unwrap();
    api.create(&PostParams::default(), &node).await.unwrap();
    set_node_ready(client, name, ready).await;
}

/// Stand-in kubelet: sets the node's Ready condition.
pub async fn set_node_ready(client: &Client, name: &str, ready: bool) {
    let api: Api<Node> = Api::all(client.clone());
    let status = json!({ "status": { "conditions": [{
        "type": "Ready", "status": if ready { "True" } else { "False" },
        "reason": "KubeletReady", "message": "stand-in kubelet",
        "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z",
    }] } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

/// A running pod bound to `node`. `extra_meta` is merged into its metadata (labels, owner, annotations).
pub async fn pod(client: &Client, ns: &str, name: &str, node: &str, extra_meta: Value) -> Pod {
    pod_with(client, ns, name, node, extra_meta, json!({})).await
}

/// [`pod`] with `extra_spec` merged into its spec (volumes, `terminationGracePeriodSeconds`).
pub async fn pod_with(client: &Client, ns: &str, name: &str, node: &str, extra_meta: Value, extra_spec: Value) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut meta = json!({ "name": name, "namespace": ns });
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    let mut spec = json!({ "nodeName": node, "containers": [{ "name": "c", "image": "example.invalid/app:1" }] });
    if let (Some(m), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        m.extend(extra.clone());
    }
    let pod: Pod = serde_json::from_value(json!({ "metadata": meta, "spec": spec })).unwrap();
    api.create(&PostParams::default(), &pod).await.unwrap();
    // Stand-in kubelet: the pod runs. (A Pending pod is evicted without asking its budget.)
    let status = json!({ "status": { "phase": "Running", "conditions": [{ "type": "Ready", "status": "True" }] } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap()
}

/// The pod as the API has it now, if it exists.
pub async fn get_pod(client: &Client, ns: &str, name: &str) -> Option<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns).get_opt(name).await.unwrap()
}

/// Stand-in kubelet: finishes the deletion of every terminating pod in `ns` (a real kubelet would
/// stop the containers and then remove the pod), until the task is aborted.
pub fn stand_in_kubelet(client: Client, ns: &str) -> tokio::task::JoinHandle<()> {
    let api: Api<Pod> = Api::namespaced(client, ns);
    tokio::spawn(async move {
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            resync.tick().await;
            if let Ok(list) = api.list(&ListParams::default()).await {
                for p in list.items.iter().filter(|p| p.metadata.deletion_timestamp.is_some()) {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let _ =
                        api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
                }
            }
        }
    })
}

/// `policy/v1beta1` PodDisruptionBudget, as this 1.20 server serves it.
pub fn pdb_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget"),
        "poddisruptionbudgets",
    )
}

/// A PodDisruptionBudget that selects `app=<app>` and (with no disruption controller running)
/// refuses every eviction until [`allow_disruptions`] writes its status.
pub async fn pdb(client: &Client, ns: &str, name: &str, app: &str) {
    let ar = pdb_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let mut obj = DynamicObject::new(name, &ar).within(ns);
    obj.data = json!({ "spec": { "minAvailable": 1, "selector": { "matchLabels": { "app": app } } } });
    api.create(&PostParams::default(), &obj).await.unwrap();
    set_disruptions_allowed(client, ns, name, 0).await;
}

/// Stand-in disruption controller: writes the PDB's status as kube-controller-manager would.
pub async fn set_disruptions_allowed(client: &Client, ns: &str, name: &str, allowed: i64) {
    let ar = pdb_resource();
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let generation = api.get(name).await.unwrap().metadata.generation.unwrap_or(1);
    let status = json!({ "status": {
        "observedGeneration": generation, "disruptionsAllowed": allowed,
        "currentHealthy": 1 + allowed, "desiredHealthy": 1, "expectedPods": 1 + allowed,
    } });
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

/// Installs the Flux CRDs once per test process and waits until they are served.
pub async fn flux_crds(client: &Client) {
    static DONE: OnceCell<()> = OnceCell::const_new();
    DONE.get_or_init(|| async {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let docs: Vec<Value> = serde_saphyr::from_multiple(FLUX_CRDS).unwrap();
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            let crd: CustomResourceDefinition = serde_json::from_value(doc).unwrap();
            let name = crd.metadata.name.clone().unwrap();
            let pp = PatchParams::apply("hecate-tests").force();
            api.patch(&name, &pp, &Patch::Apply(&crd)).await.unwrap();
        }
        for kind in [git_repository(), kustomization(), helm_release()] {
            let name = format!("{}.{}", kind.plural, kind.group);
            wait_for(&format!("CRD {name} to be established"), Duration::from_secs(30), || async {
                let crd = api.get(&name).await.map_err(|e| e.to_string())?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .into_iter()
                    .flatten()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established { Ok(()) } else { Err("not established".to_string()) }
            })
            .await;
        }
        // Discovery of a new group lags the Established condition a little.
        wait_for("the flux groups in discovery", Duration::from_secs(30), || async {
            kube::discovery::group(client, "helm.toolkit.fluxcd.io").await.map(|_| ()).map_err(|e| e.to_string())
        })
        .await;
    })
    .await;
}

pub fn git_repository() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("source.toolkit.fluxcd.io", "v1", "GitRepository"),
        "gitrepositories",
    )
}

pub fn kustomization() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"),
        "kustomizations",
    )
}

pub fn helm_release() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("helm.toolkit.fluxcd.io", "v2", "HelmRelease"),
        "helmreleases",
    )
}

/// Creates a Flux object with `spec`.
pub async fn flux_object(client: &Client, ar: &ApiResource, ns: &str, name: &str, spec: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
    let mut obj = DynamicObject::new(name, ar).within(ns);
    obj.data = json!({ "spec": spec });
    api.create(&PostParams::default(), &obj).await.unwrap();
}

pub async fn get_flux(client: &Client, ar: &ApiResource, ns: &str, name: &str) -> DynamicObject {
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, ar).get(name).await.unwrap()
}

/// Stand-in Flux controllers for namespace `ns`: for every unsuspended object whose
/// `reconcile.fluxcd.io/requestedAt` it has not handled, write `Ready=True`, the handled request
/// and the observed generation, as Flux does after a successful reconciliation. A GitRepository
/// becomes Ready only while `source_ok()` says its git server answers.
pub fn stand_in_flux(
    client: Client,
    ns: &str,
    source_ok: impl Fn() -> bool + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let ns = ns.to_string();
    tokio::spawn(async move {
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            resync.tick().await;
            for ar in [git_repository(), kustomization(), helm_release()] {
                let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
                let Ok(list) = api.list(&ListParams::default()).await else { continue };
                for obj in list.items {
                    let Some(requested) = obj
                        .metadata
                        .annotations
                        .as_ref()
                        .and_then(|a| a.get("reconcile.fluxcd.io/requestedAt"))
                        .cloned()
                    else {
                        continue;
                    };
                    let suspended = obj.data.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false);
                    let handled = obj.data.pointer("/status/lastHandledReconcileAt").and_then(Value::as_str);
                    if suspended || handled == Some(requested.as_str()) {
                        continue;
                    }
                    let name = obj.metadata.name.clone().unwrap_or_default();
                    let generation = obj.metadata.generation.unwrap_or(1);
                    let status = if ar.kind == "GitRepository" && !source_ok() {
                        json!({ "status": { "observedGeneration": generation, "conditions": [{
                            "type": "Ready", "status": "False", "reason": "GitOperationFailed",
                            "message": "stand-in source-controller: git server unreachable",
                            "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }] } })
                    } else {
                        json!({ "status": { "observedGeneration": generation, "lastHandledReconcileAt": requested, "conditions": [{
                            "type": "Ready", "status": "True", "reason": "ReconciliationSucceeded",
                            "message": "stand-in flux controller", "lastTransitionTime": "2026-01-01T00:00:00Z",
                        }] } })
                    };
                    let _ = api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await;
                }
            }
        }
    })
}

/// Metadata for [`pod`]: owned by a ReplicaSet (its controller), with `labels`. The ReplicaSet
/// need not exist: no garbage collector runs here.
pub fn managed(labels: &[(&str, &str)]) -> Value {
    json!({
        "labels": crate::kube_support::labels(labels),
        "ownerReferences": [{
            "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "app-5d8f",
            "uid": "00000000-0000-0000-0000-00000000aaaa", "controller": true,
        }],
    })
}

/// Labels as a JSON object for [`pod`]'s metadata.
pub fn labels(pairs: &[(&str, &str)]) -> Value {
    let m: BTreeMap<&str, &str> = pairs.iter().copied().collect();
    json!(m)
}

/// A unique name for this test's namespace and nodes.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
}

/// The `kubeconfig:` line of a backend config pointing at the shared server.
pub fn kubeconfig_yaml(server: &KubeApiServer) -> String {
    format!("kubeconfig: {}\n", server.kubeconfig().display())
}

/// A stand-in Gitea health endpoint on loopback (`/api/healthz`): 200 while `up`, 503
/// otherwise. Returns its url.
pub async fn stand_in_gitea_health(up: Arc<AtomicBool>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/api/healthz",
        axum::routing::get(move || {
            let up = up.clone();
            async move {
                if up.load(Ordering::SeqCst) {
                    (axum::http::StatusCode::OK, "pass")
                } else {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "fail")
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/api/healthz")
}

/// Stand-in Deployment controller + kubelet for Gitea: while the Deployment `ns/gitea` exists,
/// `up` follows whether it has a replica (unset means the API's default of one).
pub fn stand_in_gitea_deployment(c: Client, ns: &str, up: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let api: Api<Deployment> = Api::namespaced(c, ns);
    tokio::spawn(async move {
        let mut resync = tokio::time::interval(RESYNC);
        loop {
            resync.tick().await;
            if let Ok(Some(d)) = api.get_opt("gitea").await {
                up.store(d.spec.and_then(|s| s.replicas).unwrap_or(1) >= 1, Ordering::SeqCst);
            }
        }
    })
}
