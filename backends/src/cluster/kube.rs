//! `kube`: the cluster's real Kubernetes API through kube-rs (rustls on ring).
//!
//! Health is `/readyz`; readiness is each Node's `Ready` condition; cordon is a merge patch of
//! `spec.unschedulable` with Hecate's mark (`hecate.dev/cordoned-at`), uncordon only of a marked
//! node; drain does what `kubectl drain` does: the pods bound to the node (by
//! `spec.nodeName`), minus DaemonSet-owned and mirror pods, evicted through the Eviction API with
//! their grace period capped (`deleteOptions.gracePeriodSeconds`); pods no controller manages
//! and pods with `emptyDir` volumes are kept unless the operator opted in (kubectl refuses them
//! without `--force` / `--delete-emptydir-data`); refused evictions (a PodDisruptionBudget
//! answers 429) are asked again for `pdb_timeout` only, then the configured fallback. The Eviction API version comes from discovery: `policy/v1` where the server
//! serves it, `policy/v1beta1` on servers older than 1.22.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use hecate_core::cluster::{
    CORDON_MARK, ClusterApi, ClusterApiConfig, ClusterNode, Cordoned, CredentialExpiry, DrainFallback, DrainOptions,
    DrainReport, Uncordoned,
};
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::{MIN_TIMEOUT, ONE_DAY, ONE_TRY};
use hecate_core::preflight::{Check, ClusterNeeds};
use hecate_core::{BackendError, BuildContext, ErrorKind};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::kube_access::{KubeAccess, Permission, api_error, default_kubeconfig, status_code};

/// The `kube` cluster API backend.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubeClusterConfig {
    /// The kubeconfig to use (its token or client certificate is never logged).
    #[serde(default = "default_kubeconfig")]
    pub kubeconfig: PathBuf,
    /// The kubeconfig context; its current context when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Overrides the context's server URL, for a kubeconfig copied from a server node whose
    /// `https://127.0.0.1:6443` means nothing on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Several API server URLs for an HA cluster (each server node runs one), tried in order:
    /// the first that answers is used until it stops answering, then the list is tried again.
    /// After `server` if both are set. The kubeconfig's certificate authority must have signed
    /// every one (k3s's `--tls-san` for the names used).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Time limit of each API request. 1ms to 10m; default 10s.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// Pause between evictions a disruption budget refused (kubectl waits 5 s). 1ms to 10m;
    /// default 5s.
    #[serde(default = "default_eviction_retry")]
    pub eviction_retry: HumanDuration,
}

fn default_request_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

fn default_eviction_retry() -> HumanDuration {
    HumanDuration::from_secs(5)
}

#[typetag::serde(name = "kube")]
impl ClusterApiConfig for KubeClusterConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (field, d) in [("request_timeout", self.request_timeout), ("eviction_retry", self.eviction_retry)] {
            if let Some(m) = d.out_of_range(MIN_TIMEOUT, ONE_TRY) {
                p.push(format!("`{field}` {m}"));
            }
        }
        for (field, s) in self.server.iter().map(|s| ("server", s)).chain(self.servers.iter().map(|s| ("servers", s))) {
            if !(s.starts_with("https://") || s.starts_with("http://")) {
                p.push(format!("`{field}` must be an http(s) url, not {s:?}"));
            }
        }
        p
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn ClusterApi>, BackendError> {
        Ok(Box::new(KubeCluster {
            access: KubeAccess::new(
                self.kubeconfig.clone(),
                self.context.clone(),
                self.server.iter().chain(&self.servers).cloned().collect(),
                *self.request_timeout,
            ),
            eviction_retry: *self.eviction_retry,
            eviction_version: OnceCell::new(),
        }))
    }
}

hecate_core::register_backend!(
    ClusterApi,
    "kube",
    "Kubernetes API through a kubeconfig: readiness, cordon, drain with the Eviction API",
    KubeClusterConfig
);

/// The runtime side of [`KubeClusterConfig`].
#[derive(Debug)]
pub struct KubeCluster {
    access: KubeAccess,
    eviction_retry: Duration,
    /// `policy/v1` or `policy/v1beta1`, asked of the server once.
    eviction_version: OnceCell<&'static str>,
}

/// A pod the drain works on.
#[derive(Debug, Clone)]
struct Target {
    namespace: String,
    name: String,
    uid: String,
    /// The grace it is given: its own `terminationGracePeriodSeconds` (30 s when unset, the
    /// API's default), at most the drain's `max_grace`.
    grace_s: i64,
}

impl Target {
    fn label(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Why a pod is not drained: kubectl leaves these too.
fn skip_reason(pod: &Pod) -> Option<&'static str> {
    let meta = &pod.metadata;
    if meta.annotations.as_ref().is_some_and(|a| a.contains_key("kubernetes.io/config.mirror")) {
        return Some("mirror pod");
    }
    let owned_by_daemonset =
        meta.owner_references.iter().flatten().any(|o| o.kind == "DaemonSet" && o.controller == Some(true));
    owned_by_daemonset.then_some("daemonset pod")
}

/// Why a pod is kept unless the operator opted in, as `kubectl drain` refuses it without
/// `--force` or `--delete-emptydir-data`: evicted, a pod no controller manages is gone for good
/// and an `emptyDir`'s data is lost.
fn protected_reason(pod: &Pod, opts: &DrainOptions) -> Option<&'static str> {
    let managed = pod.metadata.owner_references.iter().flatten().any(|o| o.controller == Some(true));
    if !managed && !opts.evict_unmanaged {
        return Some("no controller");
    }
    let empty_dir =
        pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten().any(|v| v.empty_dir.is_some());
    (empty_dir && !opts.delete_emptydir_data).then_some("emptyDir data")
}

impl KubeCluster {
    /// Which `policy` version the server's `pods/eviction` subresource takes, as `kubectl drain`
    /// decides it: from the core API's discovery document.
    async fn eviction_version(&self) -> Result<&'static str, BackendError> {
        self.eviction_version
            .get_or_try_init(|| async {
                let client = self.access.client().await?;
                let list = client
                    .list_core_api_resources("v1")
                    .await
                    .map_err(|e| api_error("cannot read the core api's resources", e))?;
                let eviction = list.resources.iter().find(|r| r.name == "pods/eviction");
                let version = match eviction.and_then(|r| r.version.as_deref()) {
                    Some("v1") => "policy/v1",
                    Some("v1beta1") => "policy/v1beta1",
                    Some(other) => {
                        return Err(BackendError::new(
                            ErrorKind::Unsupported,
                            format!("the server's eviction api is policy/{other}, which hecate does not speak"),
                        ));
                    }
                    None if eviction.is_some() => "policy/v1beta1",
                    None => {
                        return Err(BackendError::new(
                            ErrorKind::Unsupported,
                            "the server has no pods/eviction subresource",
                        ));
                    }
                };
                tracing::debug!(version, "eviction api version");
                Ok(version)
            })
            .await
            .copied()
    }

    /// Reads a node, lets `decide` choose from (cordoned, carries the mark, its resourceVersion)
    /// and applies the patch it returns with that `resourceVersion`, so a change made in between
    /// (a 409) is read again rather than overwritten.
    async fn change_cordon<T>(
        &self,
        node: &str,
        verb: &str,
        decide: impl Fn(bool, bool, Option<String>) -> (T, Option<serde_json::Value>),
    ) -> Result<T, BackendError> {
        let nodes: Api<Node> = Api::all(self.access.client().await?);
        for _ in 0..5 {
            let current = nodes.get(node).await.map_err(|e| api_error(format!("cannot read node {node}"), e))?;
            let cordoned = current.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
            let marked = current.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(CORDON_MARK));
            let (outcome, patch) = decide(cordoned, marked, current.metadata.resource_version);
            let Some(patch) = patch else { return Ok(outcome) };
            match nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => return Ok(outcome),
                Err(e) if status_code(&e) == Some(409) => {
                    tracing::debug!(node, verb, "the node changed while it was being patched; reading it again");
                }
                Err(e) => return Err(api_error(format!("cannot {verb} node {node}"), e)),
            }
        }
        Err(BackendError::new(
            ErrorKind::Failed,
            format!("cannot {verb} node {node}: it kept changing under the patch"),
        ))
    }

    /// One eviction request. `Ok(true)`: evicted; `Ok(false)`: the pod is gone already.
    async fn evict(&self, version: &str, pod: &Target) -> Result<bool, kube::Error> {
        let client = self.access.client().await.map_err(|e| kube::Error::Service(Box::new(e)))?;
        let body = json!({
            "apiVersion": version,
            "kind": "Eviction",
            "metadata": { "name": pod.name, "namespace": pod.namespace },
            "deleteOptions": { "gracePeriodSeconds": pod.grace_s },
        });
        let uri = format!("/api/v1/namespaces/{}/pods/{}/eviction", pod.namespace, pod.name);
        let request = http::Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?)
            .map_err(kube::Error::HttpError)?;
        match client.request_text(request).await {
            Ok(_) => Ok(true),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The pod still exists as the same object (same UID).
    async fn still_there(&self, pods: &Api<Pod>, pod: &Target) -> Result<bool, BackendError> {
        match pods.get_opt(&pod.name).await {
            Ok(Some(p)) => Ok(p.metadata.uid.as_deref() == Some(pod.uid.as_str())),
            Ok(None) => Ok(false),
            Err(e) => Err(api_error(format!("cannot read pod {}", pod.label()), e)),
        }
    }
}

impl KubeCluster {
    /// `/readyz` of the API server in use.
    async fn readyz(&self) -> Result<(), BackendError> {
        let client = self.access.client().await?;
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| BackendError::with_source(ErrorKind::Config, "cannot build the /readyz request", e))?;
        let text = client.request_text(request).await.map_err(|e| api_error("api /readyz", e))?;
        if text.trim() == "ok" {
            Ok(())
        } else {
            Err(BackendError::new(
                ErrorKind::Failed,
                format!("api /readyz answered {:?}", crate::kube_access::peer_text(text.trim())),
            ))
        }
    }

    async fn list_nodes(&self) -> Result<Vec<ClusterNode>, BackendError> {
        let nodes: Api<Node> = Api::all(self.access.client().await?);
        let list = nodes.list(&ListParams::default()).await.map_err(|e| api_error("cannot list nodes", e))?;
        Ok(list
            .items
            .into_iter()
            .map(|n| {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let unschedulable = n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
                ClusterNode { name: n.metadata.name.unwrap_or_default(), ready, unschedulable }
            })
            .collect())
    }
}

#[async_trait]
impl ClusterApi for KubeCluster {
    async fn health(&self) -> Result<(), BackendError> {
        let result = self.readyz().await;
        if let Err(e) = &result {
            self.access.forget_if_unreachable(e).await;
        }
        result
    }

    async fn nodes(&self) -> Result<Vec<ClusterNode>, BackendError> {
        let result = self.list_nodes().await;
        if let Err(e) = &result {
            self.access.forget_if_unreachable(e).await;
        }
        result
    }

    fn credential_expiry(&self) -> Result<Option<CredentialExpiry>, BackendError> {
        self.access.credential_expiry()
    }

    /// The API, the credentials, and the permissions cordon, uncordon, readiness and the drain
    /// use: nodes read and patched; pods listed, read and evicted (and deleted, with
    /// `drain_fallback: delete`) in every namespace.
    async fn preflight(&self, needs: &ClusterNeeds) -> Vec<Check> {
        let mut permissions = vec![
            Permission::new("get", "", "nodes"),
            Permission::new("list", "", "nodes"),
            Permission::new("patch", "", "nodes"),
        ];
        if needs.drain {
            permissions.push(Permission::new("list", "", "pods"));
            permissions.push(Permission::new("get", "", "pods"));
            permissions.push(Permission::new("create", "", "pods").sub("eviction"));
        }
        if needs.delete_pods {
            permissions.push(Permission::new("delete", "", "pods"));
        }
        self.access.preflight(&permissions).await
    }

    async fn cordon(&self, node: &str) -> Result<Cordoned, BackendError> {
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.change_cordon(node, "cordon", |cordoned, marked, version| match (cordoned, marked) {
            (true, true) => (Cordoned::AlreadyMarked, None),
            (true, false) => (Cordoned::ByOthers, None),
            (false, _) => (
                Cordoned::Marked,
                Some(json!({
                    "metadata": { "resourceVersion": version, "annotations": { CORDON_MARK: now } },
                    "spec": { "unschedulable": true },
                })),
            ),
        })
        .await
    }

    async fn uncordon(&self, node: &str) -> Result<Uncordoned, BackendError> {
        self.change_cordon(node, "uncordon", |cordoned, marked, version| match (cordoned, marked) {
            (_, true) => (
                Uncordoned::Uncordoned,
                Some(json!({
                    "metadata": { "resourceVersion": version, "annotations": { CORDON_MARK: null } },
                    "spec": { "unschedulable": false },
                })),
            ),
            (true, false) => (Uncordoned::LeftCordoned, None),
            (false, false) => (Uncordoned::NotCordoned, None),
        })
        .await
    }

    async fn drain(&self, node: &str, opts: &DrainOptions) -> Result<DrainReport, BackendError> {
        // Held to a day so that a time no config check stopped cannot overflow the clock.
        let deadline = Instant::now().checked_add(opts.timeout.min(*ONE_DAY)).unwrap_or_else(Instant::now);
        let client = self.access.client().await?;
        let all: Api<Pod> = Api::all(client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let list = all.list(&lp).await.map_err(|e| api_error(format!("cannot list the pods on {node}"), e))?;

        let mut report = DrainReport::default();
        let mut pending = Vec::new();
        // Evicted or deleted by us, or already terminating: waited for below.
        let mut going = Vec::new();
        let max_grace = i64::try_from(opts.max_grace.as_secs()).unwrap_or(i64::MAX);
        for pod in &list.items {
            let own_grace = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
            let target = Target {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                grace_s: own_grace.clamp(0, max_grace),
            };
            if let Some(why) = skip_reason(pod) {
                tracing::debug!(node, pod = %target.label(), why, "left in place");
            } else if pod.metadata.deletion_timestamp.is_some() {
                going.push(target);
            } else if let Some(why) = protected_reason(pod, opts) {
                tracing::info!(node, pod = %target.label(), why, "kept, as kubectl drain would without its flags");
                report.kept.push(format!("{} ({why})", target.label()));
            } else {
                pending.push(target);
            }
        }

        let version = if pending.is_empty() { "" } else { self.eviction_version().await? };
        // The last refusal per pod, for the report and the log.
        let mut refusals: BTreeMap<String, String> = BTreeMap::new();
        // A budget's refusals are asked again only this long: with the whole cluster going
        // down it may never be met, and the wait would be learned into the shutdown budget.
        let pdb_deadline =
            Instant::now().checked_add(opts.pdb_timeout.min(*ONE_DAY)).unwrap_or_else(Instant::now).min(deadline);
        loop {
            let mut still = Vec::new();
            for pod in pending {
                match self.evict(version, &pod).await {
                    Ok(true) => {
                        tracing::info!(node, pod = %pod.label(), version, "evicted");
                        report.evicted.push(pod.label());
                        going.push(pod);
                    }
                    Ok(false) => tracing::debug!(node, pod = %pod.label(), "gone before its eviction"),
                    Err(e) => {
                        let why = match &e {
                            kube::Error::Api(s) if s.code == 429 => {
                                format!("refused (429): {}", crate::kube_access::peer_text(&s.message))
                            }
                            _ => api_error("eviction failed", e).detail(),
                        };
                        if refusals.get(&pod.label()) != Some(&why) {
                            tracing::info!(node, pod = %pod.label(), %why, "eviction not granted yet");
                        }
                        refusals.insert(pod.label(), why);
                        still.push(pod);
                    }
                }
            }
            pending = still;
            if pending.is_empty() || Instant::now().checked_add(self.eviction_retry).is_none_or(|t| t > pdb_deadline) {
                break;
            }
            tokio::time::sleep(self.eviction_retry).await;
        }

        for pod in pending {
            let why = refusals.get(&pod.label()).cloned().unwrap_or_default();
            match opts.fallback {
                DrainFallback::Delete => {
                    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
                    // The pod's own grace period (capped): a database still gets to shut down cleanly.
                    let dp =
                        DeleteParams { grace_period_seconds: u32::try_from(pod.grace_s).ok(), ..Default::default() };
                    match pods.delete(&pod.name, &dp).await {
                        Ok(_) => {
                            tracing::warn!(node, pod = %pod.label(), last_refusal = %why, "eviction refused until the deadline; deleted");
                            report.deleted.push(pod.label());
                            going.push(pod);
                        }
                        Err(e) if status_code(&e) == Some(404) => {}
                        Err(e) => {
                            let e = api_error(format!("cannot delete pod {}", pod.label()), e);
                            tracing::warn!(node, pod = %pod.label(), error = %e, "left running");
                            report.left.push(pod.label());
                        }
                    }
                }
                DrainFallback::Leave => {
                    tracing::warn!(node, pod = %pod.label(), last_refusal = %why, "eviction refused until the deadline; left running");
                    report.left.push(pod.label());
                }
            }
        }

        // Like kubectl, wait for the pods to be gone, so their containers stop while the node's
        // agent still runs them; whatever is still terminating at the deadline is reported.
        loop {
            let mut still = Vec::new();
            for pod in going {
                let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
                match self.still_there(&pods, &pod).await {
                    Ok(false) => {}
                    Ok(true) => still.push(pod),
                    Err(e) => {
                        tracing::debug!(node, error = %e, "cannot check a terminating pod");
                        still.push(pod);
                    }
                }
            }
            going = still;
            let pause = self.eviction_retry.min(Duration::from_secs(1));
            if going.is_empty() || Instant::now().checked_add(pause).is_none_or(|t| t > deadline) {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        report.terminating = going.iter().map(Target::label).collect();
        if !report.terminating.is_empty() {
            tracing::warn!(node, pods = ?report.terminating, "still terminating at the drain deadline");
        }
        Ok(report)
    }
}
