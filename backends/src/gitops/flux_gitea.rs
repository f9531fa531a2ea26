//! `flux_gitea`: Flux, pulling from a Gitea that runs inside the same cluster.
//!
//! Shutdown suspends every Kustomization (and HelmRelease, where that API exists) with a merge
//! patch that also marks the object as suspended *by Hecate*; what the operator had suspended
//! already carries no mark, so startup leaves it alone. The mark lives on the object itself, so it
//! survives a lost state directory or a coordinator reinstalled between shutdown and startup.
//!
//! Startup resumes what Hecate suspended, asks Flux to reconcile (`reconcile.fluxcd.io/requestedAt`)
//! and waits for the GitRepository, then the Kustomizations in `dependsOn` order, to report a
//! `Ready` condition that answers this very request. When the source stays not-Ready and Gitea's
//! health endpoint is silent, that is the bootstrap deadlock (Flux cannot fetch the manifests that
//! would start Gitea); Hecate breaks it by bringing Gitea up directly (scaling its workloads up or
//! server-side applying manifests from a local directory), waits for Gitea's health, and asks Flux
//! to reconcile again. Every step is logged and reported.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::{MAX_COUNT, MIN_TIMEOUT, ONE_DAY, ONE_TRY};
use hecate_core::gitops::{GitOpsBootstrap, GitOpsConfig, GitOpsHealth, GitOpsReport, ResumeOptions};
use hecate_core::preflight::Check;
use hecate_core::{BackendError, BuildContext, ErrorKind};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::discovery::Scope;
use kube::{Api, Client};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::kube_access::{KubeAccess, Permission, api_error, default_kubeconfig, status_code};

/// Set on the objects Hecate suspended; its value is when.
pub const SUSPENDED_BY_HECATE: &str = "hecate.dev/suspended-at";
/// Flux's on-demand reconciliation request.
pub const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
const FIELD_MANAGER: &str = "hecate";

/// The `flux_gitea` GitOps backend.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FluxGiteaConfig {
    /// The kubeconfig to use (its credentials are never logged).
    #[serde(default = "default_kubeconfig")]
    pub kubeconfig: PathBuf,
    /// The kubeconfig context; its current context when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Overrides the context's server URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Several API server URLs for an HA cluster, tried in order (as the `kube` cluster's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub servers: Vec<String>,
    /// Time limit of each API request. 1ms to 10m; default 10s.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// The GitRepository Flux pulls from (the one served by Gitea).
    #[serde(default)]
    pub source: ObjectRef,
    /// Namespaces whose Kustomizations and HelmReleases are suspended and resumed; every
    /// namespace when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// How long the source may stay not-Ready before the deadlock is suspected. 1ms to 1 day;
    /// default 2m.
    #[serde(default = "default_source_timeout")]
    pub source_timeout: HumanDuration,
    /// Pause between readiness checks. 1ms to 10m; default 2s.
    #[serde(default = "default_poll")]
    pub poll_interval: HumanDuration,
    /// How to bring Gitea up when Flux cannot; without it a deadlock can only be reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gitea: Option<GiteaFallback>,
}

/// A namespaced object.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ObjectRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl Default for ObjectRef {
    fn default() -> Self {
        Self { namespace: "flux-system".into(), name: "flux-system".into() }
    }
}

/// The deadlock fallback: how to tell whether Gitea is up, and how to start it without Flux.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GiteaFallback {
    /// Gitea's health endpoint (`/api/healthz`); any 2xx answer means up.
    pub health_url: String,
    /// Workloads to scale up (to at least `replicas`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<Workload>,
    /// A local directory of YAML/JSON manifests to server-side apply, in file-name order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifests_dir: Option<PathBuf>,
    /// How long to wait for Gitea's health after bringing it up. 1ms to 1 day; default 5m.
    #[serde(default = "default_gitea_timeout")]
    pub timeout: HumanDuration,
}

/// A Deployment or StatefulSet.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// `deployment` or `statefulset`.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Scale to at least this many replicas. 1 to 1000; default 1.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = MAX_COUNT))]
    pub replicas: i32,
}

/// The kinds of workload the fallback can scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    Statefulset,
}

fn default_request_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_source_timeout() -> HumanDuration {
    HumanDuration::from_secs(120)
}
fn default_poll() -> HumanDuration {
    HumanDuration::from_secs(2)
}
fn default_gitea_timeout() -> HumanDuration {
    HumanDuration::from_secs(300)
}
fn one() -> i32 {
    1
}

#[typetag::serde(name = "flux_gitea")]
impl GitOpsConfig for FluxGiteaConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (field, d, max) in [
            ("request_timeout", self.request_timeout, ONE_TRY),
            ("source_timeout", self.source_timeout, ONE_DAY),
            ("poll_interval", self.poll_interval, ONE_TRY),
        ] {
            if let Some(m) = d.out_of_range(MIN_TIMEOUT, max) {
                p.push(format!("`{field}` {m}"));
            }
        }
        for (field, s) in self.server.iter().map(|s| ("server", s)).chain(self.servers.iter().map(|s| ("servers", s))) {
            if !(s.starts_with("https://") || s.starts_with("http://")) {
                p.push(format!("`{field}` must be an http(s) url, not {s:?}"));
            }
        }
        if let Some(g) = &self.gitea {
            if let Err(e) = crate::notify::parse_http_url("gitea.health_url", &g.health_url) {
                p.push(e);
            }
            if g.workloads.is_empty() && g.manifests_dir.is_none() {
                p.push("`gitea` needs `workloads` or `manifests_dir`: otherwise it cannot bring Gitea up".into());
            }
            if let Some(d) = &g.manifests_dir
                && !d.is_absolute()
            {
                p.push(format!("`gitea.manifests_dir` must be an absolute path, not {}", d.display()));
            }
            if let Some(m) = g.timeout.out_of_range(MIN_TIMEOUT, ONE_DAY) {
                p.push(format!("`gitea.timeout` {m}"));
            }
            let max = i32::try_from(MAX_COUNT).unwrap_or(i32::MAX);
            if g.workloads.iter().any(|w| !(1..=max).contains(&w.replicas)) {
                p.push(format!("`gitea.workloads[].replicas` must be between 1 and {max}"));
            }
        }
        p
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn GitOpsBootstrap>, BackendError> {
        let gitea_http = match &self.gitea {
            Some(_) => Some(crate::notify::http_client(*self.request_timeout)?),
            None => None,
        };
        Ok(Box::new(FluxGitea {
            access: KubeAccess::new(
                self.kubeconfig.clone(),
                self.context.clone(),
                self.server.iter().chain(&self.servers).cloned().collect(),
                *self.request_timeout,
            ),
            cfg: self.clone(),
            gitea_http,
        }))
    }
}

hecate_core::register_backend!(
    GitOps,
    "flux_gitea",
    "Flux suspend/resume, with a fallback that starts the in-cluster Gitea Flux depends on",
    FluxGiteaConfig
);

/// The runtime side of [`FluxGiteaConfig`].
#[derive(Debug)]
pub struct FluxGitea {
    access: KubeAccess,
    cfg: FluxGiteaConfig,
    gitea_http: Option<reqwest::Client>,
}

/// The Flux APIs this server has.
struct FluxKinds {
    git_repository: ApiResource,
    kustomization: ApiResource,
    helm_release: Option<ApiResource>,
}

/// The readiness of one Flux object, as its controller reported it.
#[derive(Debug, PartialEq, Eq)]
enum Readiness {
    /// `Ready=True` for the current request and generation.
    Ready,
    /// Not (yet) ready, with the condition's message when there is one.
    NotReady(String),
}

fn label(kind: &str, obj: &DynamicObject) -> String {
    format!("{kind} {}/{}", obj.metadata.namespace.as_deref().unwrap_or(""), obj.metadata.name.as_deref().unwrap_or(""))
}

fn is_suspended(obj: &DynamicObject) -> bool {
    obj.data.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false)
}

fn suspended_by_hecate(obj: &DynamicObject) -> bool {
    obj.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(SUSPENDED_BY_HECATE))
}

fn ready_condition(obj: &DynamicObject) -> Option<&Value> {
    obj.data.pointer("/status/conditions")?.as_array()?.iter().find(|c| c.get("type") == Some(&json!("Ready")))
}

/// Ready for this request: the controller handled `token` (not just an old success) and saw the
/// object's current generation (the resume patch changed it).
fn readiness(obj: &DynamicObject, token: &str) -> Readiness {
    let Some(cond) = ready_condition(obj) else {
        return Readiness::NotReady("no Ready condition yet".into());
    };
    let message = cond.get("message").and_then(Value::as_str).unwrap_or("").to_string();
    if cond.get("status") != Some(&json!("True")) {
        let reason = cond.get("reason").and_then(Value::as_str).unwrap_or("");
        let status = cond.get("status").and_then(Value::as_str).unwrap_or("Unknown");
        // The controller's words (a git error may quote a URL with its credentials): cut and cleaned.
        return Readiness::NotReady(crate::kube_access::peer_text(&format!("Ready={status} {reason}: {message}")));
    }
    let handled = obj.data.pointer("/status/lastHandledReconcileAt").and_then(Value::as_str);
    if handled != Some(token) {
        return Readiness::NotReady("Ready from an earlier reconciliation; this request not handled yet".into());
    }
    let observed = obj.data.pointer("/status/observedGeneration").and_then(Value::as_i64);
    if let (Some(observed), Some(generation)) = (observed, obj.metadata.generation)
        && observed < generation
    {
        return Readiness::NotReady(format!("generation {generation} not observed yet (at {observed})"));
    }
    Readiness::Ready
}

/// The `dependsOn` order of Kustomizations: each after those it depends on; a cycle or a missing
/// dependency keeps the rest in name order (Flux reports those itself).
fn dependency_order(items: &[DynamicObject]) -> Vec<usize> {
    let key = |o: &DynamicObject| {
        (o.metadata.namespace.clone().unwrap_or_default(), o.metadata.name.clone().unwrap_or_default())
    };
    let index: BTreeMap<(String, String), usize> = items.iter().enumerate().map(|(i, o)| (key(o), i)).collect();
    let deps: Vec<Vec<usize>> = items
        .iter()
        .map(|o| {
            let ns = o.metadata.namespace.clone().unwrap_or_default();
            o.data
                .pointer("/spec/dependsOn")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|d| {
                    let name = d.get("name")?.as_str()?.to_string();
                    let dns = d.get("namespace").and_then(Value::as_str).map_or_else(|| ns.clone(), str::to_string);
                    index.get(&(dns, name)).copied()
                })
                .collect()
        })
        .collect();
    let mut order = Vec::new();
    let mut placed = BTreeSet::new();
    let mut by_name: Vec<usize> = (0..items.len()).collect();
    by_name.sort_by_key(|&i| key(&items[i]));
    while order.len() < items.len() {
        let next =
            by_name.iter().copied().find(|&i| !placed.contains(&i) && deps[i].iter().all(|d| placed.contains(d)));
        // A cycle: take the first unplaced by name and go on.
        let i = next.unwrap_or_else(|| by_name.iter().copied().find(|i| !placed.contains(i)).unwrap_or(0));
        placed.insert(i);
        order.push(i);
    }
    order
}

/// A fresh reconciliation token, as `flux reconcile` writes it.
fn new_token() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

impl FluxGitea {
    async fn client(&self) -> Result<Client, BackendError> {
        self.access.client().await
    }

    async fn kinds(&self, client: &Client) -> Result<FluxKinds, BackendError> {
        async fn find(client: &Client, group: &str, kind: &str) -> Result<Option<ApiResource>, BackendError> {
            match kube::discovery::group(client, group).await {
                Ok(g) => Ok(g.recommended_kind(kind).map(|(ar, _)| ar)),
                Err(e) if status_code(&e) == Some(404) => Ok(None),
                Err(kube::Error::Discovery(_)) => Ok(None),
                Err(e) => Err(api_error(format!("cannot discover {group}"), e)),
            }
        }
        let missing = |what: &str| {
            BackendError::new(ErrorKind::Failed, format!("the cluster has no {what} api: is Flux installed?"))
        };
        Ok(FluxKinds {
            git_repository: find(client, "source.toolkit.fluxcd.io", "GitRepository")
                .await?
                .ok_or_else(|| missing("GitRepository"))?,
            kustomization: find(client, "kustomize.toolkit.fluxcd.io", "Kustomization")
                .await?
                .ok_or_else(|| missing("Kustomization"))?,
            helm_release: find(client, "helm.toolkit.fluxcd.io", "HelmRelease").await?,
        })
    }

    /// Every object of a kind in the configured namespaces.
    async fn list(&self, client: &Client, ar: &ApiResource) -> Result<Vec<DynamicObject>, BackendError> {
        let mut out = Vec::new();
        let scopes: Vec<Api<DynamicObject>> = if self.cfg.namespaces.is_empty() {
            vec![Api::all_with(client.clone(), ar)]
        } else {
            self.cfg.namespaces.iter().map(|ns| Api::namespaced_with(client.clone(), ns, ar)).collect()
        };
        for api in scopes {
            let list = api
                .list(&ListParams::default())
                .await
                .map_err(|e| api_error(format!("cannot list {}", ar.plural), e))?;
            out.extend(list.items);
        }
        Ok(out)
    }

    async fn patch(
        &self,
        client: &Client,
        ar: &ApiResource,
        obj: &DynamicObject,
        patch: &Value,
    ) -> Result<DynamicObject, BackendError> {
        let ns = obj.metadata.namespace.as_deref().unwrap_or("default");
        let name = obj.metadata.name.as_deref().unwrap_or("");
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, ar);
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| api_error(format!("cannot patch {}", label(&ar.kind, obj)), e))
    }

    async fn get_source(&self, client: &Client, kinds: &FluxKinds) -> Result<DynamicObject, BackendError> {
        let src = &self.cfg.source;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &src.namespace, &kinds.git_repository);
        api.get(&src.name)
            .await
            .map_err(|e| api_error(format!("cannot read GitRepository {}/{}", src.namespace, src.name), e))
    }

    /// Annotates the source and every unsuspended Kustomization/HelmRelease with `token`.
    async fn request_reconcile(
        &self,
        client: &Client,
        kinds: &FluxKinds,
        token: &str,
        report: &mut GitOpsReport,
    ) -> Result<(), BackendError> {
        let patch = json!({ "metadata": { "annotations": { REQUESTED_AT: token } } });
        let source = self.get_source(client, kinds).await?;
        self.patch(client, &kinds.git_repository, &source, &patch).await?;
        let mut count = 1;
        for ar in std::iter::once(&kinds.kustomization).chain(kinds.helm_release.as_ref()) {
            for obj in self.list(client, ar).await? {
                if !is_suspended(&obj) {
                    self.patch(client, ar, &obj, &patch).await?;
                    count += 1;
                }
            }
        }
        act(report, format!("requested reconciliation of {count} object(s) at {token}"));
        Ok(())
    }

    /// Polls until the source is Ready for `token`, or `until`.
    async fn wait_source(
        &self,
        client: &Client,
        kinds: &FluxKinds,
        token: &str,
        until: Instant,
    ) -> Result<Readiness, BackendError> {
        loop {
            let state = match self.get_source(client, kinds).await {
                Ok(src) => readiness(&src, token),
                Err(e) => Readiness::NotReady(e.to_string()),
            };
            if state == Readiness::Ready
                || Instant::now().checked_add(*self.cfg.poll_interval).is_none_or(|t| t > until)
            {
                return Ok(state);
            }
            tokio::time::sleep(*self.cfg.poll_interval).await;
        }
    }

    async fn gitea_healthy(&self) -> Result<(), String> {
        let (Some(g), Some(http)) = (&self.cfg.gitea, &self.gitea_http) else {
            return Err("no gitea health endpoint configured".into());
        };
        match http.get(&g.health_url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("gitea health answered {}", r.status())),
            Err(e) => Err(crate::notify::http_error("gitea health", e).detail()),
        }
    }

    /// Brings Gitea up without Flux: scale, apply, then wait for its health.
    async fn break_deadlock(
        &self,
        client: &Client,
        g: &GiteaFallback,
        until: Instant,
        report: &mut GitOpsReport,
    ) -> Result<(), BackendError> {
        report.fallback_used = true;
        for w in &g.workloads {
            let note = scale_up(client, w).await?;
            act(report, note);
        }
        if let Some(dir) = &g.manifests_dir {
            for note in apply_dir(client, dir).await? {
                act(report, note);
            }
        }
        let started = Instant::now();
        let until = until.min(started + *g.timeout);
        loop {
            match self.gitea_healthy().await {
                Ok(()) => {
                    act(report, format!("gitea healthy after {:.1} s", started.elapsed().as_secs_f64()));
                    return Ok(());
                }
                Err(why) if Instant::now().checked_add(*self.cfg.poll_interval).is_none_or(|t| t > until) => {
                    return Err(BackendError::new(
                        ErrorKind::Timeout,
                        format!(
                            "gitea still not healthy {:.0} s after the fallback: {why}",
                            started.elapsed().as_secs_f64()
                        ),
                    ));
                }
                Err(why) => tracing::debug!(%why, "waiting for gitea"),
            }
            tokio::time::sleep(*self.cfg.poll_interval).await;
        }
    }
}

/// Records an action in the report and the log.
fn act(report: &mut GitOpsReport, note: String) {
    tracing::info!(target: "hecate::gitops", "{note}");
    report.actions.push(note);
}

async fn scale_up(client: &Client, w: &Workload) -> Result<String, BackendError> {
    let patch = json!({ "spec": { "replicas": w.replicas } });
    let pp = PatchParams::default();
    let (kind, current) = match w.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &w.namespace);
            let d = api
                .get(&w.name)
                .await
                .map_err(|e| api_error(format!("cannot read Deployment {}/{}", w.namespace, w.name), e))?;
            ("Deployment", d.spec.and_then(|s| s.replicas).unwrap_or(1))
        }
        WorkloadKind::Statefulset => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), &w.namespace);
            let s = api
                .get(&w.name)
                .await
                .map_err(|e| api_error(format!("cannot read StatefulSet {}/{}", w.namespace, w.name), e))?;
            ("StatefulSet", s.spec.and_then(|s| s.replicas).unwrap_or(1))
        }
    };
    if current >= w.replicas {
        return Ok(format!("{kind} {}/{} already has {current} replica(s)", w.namespace, w.name));
    }
    let result = match w.kind {
        WorkloadKind::Deployment => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &w.namespace);
            api.patch(&w.name, &pp, &Patch::Merge(&patch)).await.map(|_| ())
        }
        WorkloadKind::Statefulset => {
            let api: Api<StatefulSet> = Api::namespaced(client.clone(), &w.namespace);
            api.patch(&w.name, &pp, &Patch::Merge(&patch)).await.map(|_| ())
        }
    };
    result.map_err(|e| api_error(format!("cannot scale {kind} {}/{}", w.namespace, w.name), e))?;
    Ok(format!("scaled {kind} {}/{} from {current} to {} replica(s)", w.namespace, w.name, w.replicas))
}

/// Server-side applies every document of every `.yaml`/`.yml`/`.json` file in `dir`, in file-name
/// order, as field manager `hecate`.
async fn apply_dir(client: &Client, dir: &Path) -> Result<Vec<String>, BackendError> {
    let read_err = |e: std::io::Error| {
        BackendError::with_source(ErrorKind::Config, format!("cannot read manifests_dir {}", dir.display()), e)
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(read_err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json")))
        .collect();
    files.sort();
    let mut notes = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(read_err)?;
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .map_err(|e| BackendError::new(ErrorKind::Config, format!("{}: not valid yaml: {e}", file.display())))?;
        for doc in docs.into_iter().filter(|d| !d.is_null()) {
            notes.push(apply_one(client, &file, doc).await?);
        }
    }
    if notes.is_empty() {
        return Err(BackendError::new(
            ErrorKind::Config,
            format!("manifests_dir {} holds no manifests", dir.display()),
        ));
    }
    Ok(notes)
}

async fn apply_one(client: &Client, file: &Path, doc: Value) -> Result<String, BackendError> {
    let bad = |what: &str| BackendError::new(ErrorKind::Config, format!("{}: {what}", file.display()));
    let api_version =
        doc.get("apiVersion").and_then(Value::as_str).ok_or_else(|| bad("a document has no apiVersion"))?;
    let kind = doc.get("kind").and_then(Value::as_str).ok_or_else(|| bad("a document has no kind"))?;
    let name =
        doc.pointer("/metadata/name").and_then(Value::as_str).ok_or_else(|| bad("a document has no metadata.name"))?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .map_err(|e| api_error(format!("{}: the server has no {api_version} {kind}", file.display()), e))?;
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let what = if caps.scope == Scope::Namespaced {
        let ns = doc
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("{kind} {name} has no metadata.namespace")))?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
        api.patch(name, &pp, &Patch::Apply(&doc))
            .await
            .map_err(|e| api_error(format!("cannot apply {kind} {ns}/{name}"), e))?;
        format!("{ns}/{name}")
    } else {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        api.patch(name, &pp, &Patch::Apply(&doc))
            .await
            .map_err(|e| api_error(format!("cannot apply {kind} {name}"), e))?;
        name.to_string()
    };
    Ok(format!("applied {kind} {what} from {}", file.display()))
}

#[async_trait]
impl GitOpsBootstrap for FluxGitea {
    async fn suspend(&self) -> Result<GitOpsReport, BackendError> {
        let client = self.client().await?;
        let kinds = self.kinds(&client).await?;
        let mut report = GitOpsReport::default();
        let now = new_token();
        for ar in std::iter::once(&kinds.kustomization).chain(kinds.helm_release.as_ref()) {
            for obj in self.list(&client, ar).await? {
                let what = label(&ar.kind, &obj);
                if is_suspended(&obj) && !suspended_by_hecate(&obj) {
                    tracing::info!(target: "hecate::gitops", "{what} was suspended by the operator; left alone");
                    report.left_alone.push(what);
                } else if is_suspended(&obj) {
                    act(&mut report, format!("{what} already suspended by hecate"));
                } else {
                    let patch = json!({
                        "metadata": { "annotations": { SUSPENDED_BY_HECATE: now } },
                        "spec": { "suspend": true },
                    });
                    self.patch(&client, ar, &obj, &patch).await?;
                    act(&mut report, format!("suspended {what}"));
                }
            }
        }
        if !report.left_alone.is_empty() {
            report.actions.push(format!("left alone (suspended by the operator): {}", report.left_alone.join(", ")));
        }
        Ok(report)
    }

    async fn resume(&self, opts: &ResumeOptions) -> Result<GitOpsReport, BackendError> {
        let started = Instant::now();
        // Finish a little before the engine's own limit on this step, so the report says what
        // was waited for rather than just "timed out".
        // Held to a day so that a time no config check stopped cannot overflow the clock.
        let limit = opts.timeout.min(*ONE_DAY);
        let until =
            started.checked_add(limit.saturating_sub((limit / 20).min(Duration::from_secs(5)))).unwrap_or(started);
        let client = self.client().await?;
        let kinds = self.kinds(&client).await?;
        let mut report = GitOpsReport::default();

        if let Some(branch) = &opts.force_branch {
            let source = self.get_source(&client, &kinds).await?;
            let before = source.data.pointer("/spec/ref").cloned().unwrap_or(Value::Null);
            // Only a branch: a tag, semver range or commit would take precedence over it.
            let patch = json!({ "spec": { "ref": {
                "branch": branch, "tag": null, "semver": null, "commit": null, "name": null,
            } } });
            self.patch(&client, &kinds.git_repository, &source, &patch).await?;
            act(&mut report, format!("{}: ref {before} forced to branch {branch}", label("GitRepository", &source)));
        }

        for ar in std::iter::once(&kinds.kustomization).chain(kinds.helm_release.as_ref()) {
            for obj in self.list(&client, ar).await? {
                let what = label(&ar.kind, &obj);
                if suspended_by_hecate(&obj) {
                    let patch = json!({
                        "metadata": { "annotations": { SUSPENDED_BY_HECATE: null } },
                        "spec": { "suspend": false },
                    });
                    self.patch(&client, ar, &obj, &patch).await?;
                    act(&mut report, format!("resumed {what}"));
                } else if is_suspended(&obj) {
                    tracing::info!(target: "hecate::gitops", "{what} is suspended by the operator; left alone");
                    report.left_alone.push(what);
                }
            }
        }

        let mut token = new_token();
        self.request_reconcile(&client, &kinds, &token, &mut report).await?;
        let source_label = format!("GitRepository {}/{}", self.cfg.source.namespace, self.cfg.source.name);
        let mut state =
            self.wait_source(&client, &kinds, &token, until.min(started + *self.cfg.source_timeout)).await?;
        if let Readiness::NotReady(why) = &state {
            act(&mut report, format!("{source_label} not ready after {:.0} s: {why}", started.elapsed().as_secs_f64()));
            match (self.gitea_healthy().await, &self.cfg.gitea) {
                (Ok(()), _) => {
                    act(&mut report, "gitea answers its health check: not the bootstrap deadlock; waiting on".into());
                }
                (Err(why), None) => {
                    act(&mut report, format!("{why}; no `gitea` fallback configured; waiting on"));
                }
                (Err(why), Some(g)) => {
                    tracing::warn!(target: "hecate::gitops", %why, "bootstrap deadlock: bringing gitea up directly");
                    act(&mut report, format!("bootstrap deadlock suspected ({why}): bringing gitea up directly"));
                    if let Err(e) = self.break_deadlock(&client, g, until, &mut report).await {
                        return Err(fail(e, &report));
                    }
                    token = new_token();
                    self.request_reconcile(&client, &kinds, &token, &mut report).await?;
                }
            }
            state = self.wait_source(&client, &kinds, &token, until).await?;
        }
        if let Readiness::NotReady(why) = state {
            return Err(fail(
                BackendError::new(ErrorKind::Timeout, format!("{source_label} not ready: {why}")),
                &report,
            ));
        }
        act(&mut report, format!("{source_label} ready"));

        // Kustomizations in dependency order, each for this request.
        let items: Vec<DynamicObject> =
            self.list(&client, &kinds.kustomization).await?.into_iter().filter(|o| !is_suspended(o)).collect();
        for i in dependency_order(&items) {
            let obj = &items[i];
            let what = label("Kustomization", obj);
            let ns = obj.metadata.namespace.as_deref().unwrap_or("");
            let name = obj.metadata.name.as_deref().unwrap_or("");
            let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &kinds.kustomization);
            loop {
                let state = match api.get(name).await {
                    Ok(o) => readiness(&o, &token),
                    Err(e) => Readiness::NotReady(api_error("cannot read it", e).to_string()),
                };
                match state {
                    Readiness::Ready => {
                        act(&mut report, format!("{what} ready"));
                        break;
                    }
                    Readiness::NotReady(why)
                        if Instant::now().checked_add(*self.cfg.poll_interval).is_none_or(|t| t > until) =>
                    {
                        let e = BackendError::new(ErrorKind::Timeout, format!("{what} not ready: {why}"));
                        return Err(fail(e, &report));
                    }
                    Readiness::NotReady(_) => tokio::time::sleep(*self.cfg.poll_interval).await,
                }
            }
        }
        if !report.left_alone.is_empty() {
            report.actions.push(format!("left alone (suspended by the operator): {}", report.left_alone.join(", ")));
        }
        Ok(report)
    }

    /// The API, the credentials, Flux's APIs, and the permissions suspend and resume use:
    /// Kustomizations (and HelmReleases, where that API exists) listed and patched in the
    /// configured namespaces, the GitRepository read and patched, and the Gitea fallback's
    /// workloads patched.
    async fn preflight(&self) -> Vec<Check> {
        let namespaces: Vec<Option<&str>> = if self.cfg.namespaces.is_empty() {
            vec![None]
        } else {
            self.cfg.namespaces.iter().map(|n| Some(n.as_str())).collect()
        };
        let mut permissions = Vec::new();
        let mut flux = Check::ok("flux_api", "GitRepository and Kustomization are served");
        let helm = match self.client().await {
            Ok(client) => match self.kinds(&client).await {
                Ok(kinds) => kinds.helm_release.is_some(),
                Err(e) => {
                    flux = Check::failed("flux_api", format!("{}: {}", e.kind, e.detail()));
                    false
                }
            },
            // the access checks below say why
            Err(_) => false,
        };
        for (group, plural) in std::iter::once(("kustomize.toolkit.fluxcd.io", "kustomizations"))
            .chain(helm.then_some(("helm.toolkit.fluxcd.io", "helmreleases")))
        {
            for ns in &namespaces {
                permissions.push(Permission::new("list", group, plural).within(*ns));
                permissions.push(Permission::new("patch", group, plural).within(*ns));
            }
        }
        let src = Some(self.cfg.source.namespace.as_str());
        permissions.push(Permission::new("get", "source.toolkit.fluxcd.io", "gitrepositories").within(src));
        permissions.push(Permission::new("patch", "source.toolkit.fluxcd.io", "gitrepositories").within(src));
        for w in self.cfg.gitea.iter().flat_map(|g| &g.workloads) {
            let plural = match w.kind {
                WorkloadKind::Deployment => "deployments",
                WorkloadKind::Statefulset => "statefulsets",
            };
            let p = Permission::new("patch", "apps", plural).within(Some(&w.namespace));
            if !permissions.contains(&p) {
                permissions.push(p);
            }
        }
        let mut checks = self.access.preflight(&permissions).await;
        checks.push(flux);
        checks
    }

    async fn health(&self) -> Result<GitOpsHealth, BackendError> {
        let client = self.client().await?;
        let kinds = self.kinds(&client).await?;
        let source = self.get_source(&client, &kinds).await?;
        let source_ready = ready_condition(&source).is_some_and(|c| c.get("status") == Some(&json!("True")));
        let mut suspended = Vec::new();
        let mut not_ready = Vec::new();
        for ar in std::iter::once(&kinds.kustomization).chain(kinds.helm_release.as_ref()) {
            for obj in self.list(&client, ar).await? {
                if is_suspended(&obj) {
                    suspended.push(label(&ar.kind, &obj));
                } else if !ready_condition(&obj).is_some_and(|c| c.get("status") == Some(&json!("True"))) {
                    not_ready.push(label(&ar.kind, &obj));
                }
            }
        }
        Ok(GitOpsHealth { source_ready, suspended, not_ready })
    }
}

/// The error, with what was done before it (the engine keeps only the error of a failed step).
fn fail(e: BackendError, report: &GitOpsReport) -> BackendError {
    if report.actions.is_empty() {
        return e;
    }
    BackendError { message: format!("{}; done before: {}", e.message, report.actions.join("; ")), ..e }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ks(name: &str, deps: &[&str]) -> DynamicObject {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("kustomize.toolkit.fluxcd.io", "v1", "Kustomization"));
        let mut o = DynamicObject::new(name, &ar).within("flux-system");
        let deps: Vec<Value> = deps.iter().map(|d| json!({ "name": d })).collect();
        o.data = json!({ "spec": { "dependsOn": deps } });
        o
    }

    fn names(items: &[DynamicObject], order: &[usize]) -> Vec<String> {
        order.iter().map(|&i| items[i].metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn dependencies_come_first() {
        let items = vec![ks("apps", &["infra", "gitea"]), ks("gitea", &["infra"]), ks("infra", &[])];
        assert_eq!(names(&items, &dependency_order(&items)), ["infra", "gitea", "apps"]);
    }

    #[test]
    fn a_cycle_or_missing_dependency_still_orders_everything() {
        let items = vec![ks("a", &["b"]), ks("b", &["a"]), ks("c", &["nowhere"])];
        // c's missing dependency is ignored, so it can go first; the a/b cycle is broken by name.
        assert_eq!(names(&items, &dependency_order(&items)), ["c", "a", "b"]);
    }

    #[test]
    fn readiness_needs_this_request_and_generation() {
        let mut o = ks("apps", &[]);
        o.metadata.generation = Some(3);
        assert!(matches!(readiness(&o, "t1"), Readiness::NotReady(_)));
        o.data["status"] = json!({
            "conditions": [{ "type": "Ready", "status": "True", "reason": "ReconciliationSucceeded", "message": "ok" }],
            "lastHandledReconcileAt": "t0", "observedGeneration": 3,
        });
        assert!(matches!(readiness(&o, "t1"), Readiness::NotReady(m) if m.contains("earlier")));
        o.data["status"]["lastHandledReconcileAt"] = json!("t1");
        assert_eq!(readiness(&o, "t1"), Readiness::Ready);
        o.metadata.generation = Some(4);
        assert!(matches!(readiness(&o, "t1"), Readiness::NotReady(m) if m.contains("generation 4")));
        o.data["status"]["conditions"][0]["status"] = json!("False");
        assert!(matches!(readiness(&o, "t1"), Readiness::NotReady(m) if m.contains("Ready=False")));
    }
}
