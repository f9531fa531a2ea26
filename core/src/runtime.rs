//! The live objects built from a config: power sources, node controller chains, the cluster
//! API, GitOps and notifiers. Building never touches the network.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::cluster::ClusterApi;
use crate::config::Config;
use crate::delivery::{Delivery, DeliveryOptions, Refusal};
use crate::error::BackendError;
use crate::gitops::GitOpsBootstrap;
use crate::node::{Capability, ControllerChain, NodeInfo};
use crate::notify::Event;
use crate::power::PowerSource;

/// What every backend's `build()` is told about the host.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// This host's name.
    pub host: String,
    /// The state directory (a backend may keep files there, such as what it suspended).
    pub state_dir: PathBuf,
}

/// A power source and its configured type name.
#[derive(Debug)]
pub struct PowerHandle {
    /// The source's name.
    pub name: String,
    /// The backend's type name.
    pub kind: String,
    /// The live source; reads need exclusive access.
    pub source: Mutex<Box<dyn PowerSource>>,
}

/// Everything built from a config.
#[derive(Debug)]
pub struct Runtime {
    /// This host's name.
    pub host: String,
    /// Power sources in config order.
    pub power: Vec<Arc<PowerHandle>>,
    /// Node controller chains by node name.
    pub nodes: BTreeMap<String, ControllerChain>,
    /// The Kubernetes API, if configured.
    pub cluster: Option<(String, Box<dyn ClusterApi>)>,
    /// GitOps, if configured.
    pub gitops: Option<(String, Box<dyn GitOpsBootstrap>)>,
    /// Notifiers, behind their queues: sending an event never waits for one.
    pub notifiers: Delivery,
    /// Time limit of one controller's try (shutdown and startup share the shorter one).
    pub controller_timeout: Duration,
    /// Backends that could not be built (see [`Runtime::build_degraded`]).
    pub unavailable: Vec<BuildError>,
}

/// Every backend of a config that could not be built.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct BuildErrors(pub Vec<BuildError>);

/// Stands in for a backend that could not be built: it claims whatever is asked of it, so each
/// operation reaches it in its place, and fails at once with the build error; a node's fallback
/// chain then goes on to its next controller.
#[derive(Debug)]
struct Unavailable {
    kind: String,
    why: String,
}

impl Unavailable {
    fn error(&self) -> BackendError {
        BackendError::new(crate::error::ErrorKind::Config, format!("{} is unavailable: {}", self.kind, self.why))
    }

    /// A backend that cannot be built fails its preflight with why.
    fn preflight_failure(&self) -> Vec<crate::preflight::Check> {
        vec![crate::preflight::Check::failed("build", format!("cannot be built: {}", self.why))]
    }
}

#[async_trait::async_trait]
impl crate::node::NodeController for Unavailable {
    fn kind(&self) -> &str {
        &self.kind
    }
    fn capabilities(&self) -> &[Capability] {
        &Capability::ALL
    }
    async fn run(&self, _op: &crate::node::NodeOp) -> Result<crate::node::NodeOpOutput, BackendError> {
        Err(self.error())
    }
    async fn preflight(&self, _ops: &[crate::node::NodeOp]) -> Vec<crate::preflight::Check> {
        self.preflight_failure()
    }
}

#[async_trait::async_trait]
impl ClusterApi for Unavailable {
    async fn health(&self) -> Result<(), BackendError> {
        Err(self.error())
    }
    async fn nodes(&self) -> Result<Vec<crate::cluster::ClusterNode>, BackendError> {
        Err(self.error())
    }
    async fn cordon(&self, _node: &str) -> Result<crate::cluster::Cordoned, BackendError> {
        Err(self.error())
    }
    async fn uncordon(&self, _node: &str) -> Result<crate::cluster::Uncordoned, BackendError> {
        Err(self.error())
    }
    async fn drain(
        &self,
        _node: &str,
        _opts: &crate::cluster::DrainOptions,
    ) -> Result<crate::cluster::DrainReport, BackendError> {
        Err(self.error())
    }
    async fn preflight(&self, _needs: &crate::preflight::ClusterNeeds) -> Vec<crate::preflight::Check> {
        self.preflight_failure()
    }
}

#[async_trait::async_trait]
impl GitOpsBootstrap for Unavailable {
    async fn suspend(&self) -> Result<crate::gitops::GitOpsReport, BackendError> {
        Err(self.error())
    }
    async fn resume(&self, _opts: &crate::gitops::ResumeOptions) -> Result<crate::gitops::GitOpsReport, BackendError> {
        Err(self.error())
    }
    async fn health(&self) -> Result<crate::gitops::GitOpsHealth, BackendError> {
        Err(self.error())
    }
    async fn preflight(&self) -> Vec<crate::preflight::Check> {
        self.preflight_failure()
    }
}

/// A backend that failed to build, named by where it is in the config. Its text is the whole
/// story (field, kind, message and causes) and it exposes no `source()`: a report that walks the
/// chain (anyhow's `{:#}`) would otherwise print the backend's error twice.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {}: {}", error.kind, error.detail())]
pub struct BuildError {
    /// The config field, such as `nodes[1].controllers[0]`.
    pub field: String,
    /// Why.
    pub error: BackendError,
}

fn type_name<T: serde::Serialize + ?Sized>(v: &T) -> String {
    // typetag serialises the tag first; the tag is the only reliable way to learn the type name.
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.get("type").and_then(|t| t.as_str()).map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

impl Runtime {
    /// Builds every backend of the config; fails, naming every backend that could not be
    /// built, unless all were. For `config check` and tests; the daemon and the commands use
    /// [`Runtime::build_degraded`].
    pub fn build(cfg: &Config) -> Result<Runtime, BuildErrors> {
        let mut rt = Self::build_degraded(cfg);
        if rt.unavailable.is_empty() { Ok(rt) } else { Err(BuildErrors(std::mem::take(&mut rt.unavailable))) }
    }

    /// Builds every backend it can. Degraded, never blind: a backend that cannot be built is
    /// listed in [`Runtime::unavailable`] and everything else works. A power source that cannot
    /// be built is left out (the others are watched; it is never taken for a UPS without data,
    /// which would count down to a shutdown); a notifier likewise; a node controller, the
    /// cluster API or GitOps is replaced by a stand-in that fails at once with its build error,
    /// so the steps that need it say why and a node's fallback chain goes on.
    pub fn build_degraded(cfg: &Config) -> Runtime {
        let ctx = BuildContext { host: cfg.host.clone(), state_dir: cfg.state_dir.clone() };
        let mut unavailable = Vec::new();
        let mut power = Vec::new();
        for (i, p) in cfg.power_sources.iter().enumerate() {
            match p.build(&ctx) {
                Ok(source) => power.push(Arc::new(PowerHandle {
                    name: p.name().to_string(),
                    kind: type_name(p),
                    source: Mutex::new(source),
                })),
                Err(error) => unavailable.push(BuildError { field: format!("power_sources[{i}]"), error }),
            }
        }
        let mut nodes = BTreeMap::new();
        for (i, n) in cfg.nodes.iter().enumerate() {
            let info = NodeInfo { name: n.name.clone(), address: n.address.clone(), role: n.role };
            let mut ctrls: Vec<Box<dyn crate::node::NodeController>> = Vec::new();
            for (j, c) in n.controllers.iter().enumerate() {
                match c.build(&info, &ctx) {
                    Ok(ctrl) => ctrls.push(ctrl),
                    Err(error) => {
                        ctrls.push(Box::new(Unavailable { kind: type_name(c), why: error.detail() }));
                        unavailable.push(BuildError { field: format!("nodes[{i}].controllers[{j}]"), error });
                    }
                }
            }
            nodes.insert(n.name.clone(), ControllerChain::new(info, ctrls));
        }
        let cluster = cfg.cluster.as_ref().map(|c| {
            let built = c.build(&ctx).unwrap_or_else(|error| {
                let stand_in = Box::new(Unavailable { kind: type_name(c), why: error.detail() });
                unavailable.push(BuildError { field: "cluster".into(), error });
                stand_in
            });
            (type_name(c), built)
        });
        let gitops = cfg.gitops.as_ref().map(|g| {
            let built = g.build(&ctx).unwrap_or_else(|error| {
                let stand_in = Box::new(Unavailable { kind: type_name(g), why: error.detail() });
                unavailable.push(BuildError { field: "gitops".into(), error });
                stand_in
            });
            (type_name(g), built)
        });
        let mut notifiers = Vec::new();
        for (i, n) in cfg.notifiers.iter().enumerate() {
            match n.build(&ctx) {
                Ok(n) => notifiers.push(n),
                Err(error) => unavailable.push(BuildError { field: format!("notifiers[{i}]"), error }),
            }
        }
        Runtime {
            host: cfg.host.clone(),
            power,
            nodes,
            cluster,
            gitops,
            notifiers: Delivery::new(notifiers, DeliveryOptions::default()),
            controller_timeout: *cfg.shutdown.controller_timeout.min(cfg.startup.controller_timeout),
            unavailable,
        }
    }

    /// A runtime with no backend built: for what depends on the config alone (a plan's
    /// fingerprint), never for running anything.
    pub fn unbuilt(cfg: &Config) -> Runtime {
        Runtime {
            host: cfg.host.clone(),
            power: Vec::new(),
            nodes: BTreeMap::new(),
            cluster: None,
            gitops: None,
            notifiers: Delivery::new(Vec::new(), DeliveryOptions::default()),
            controller_timeout: Duration::ZERO,
            unavailable: Vec::new(),
        }
    }

    /// A node's chain.
    pub fn chain(&self, node: &str) -> Option<&ControllerChain> {
        self.nodes.get(node)
    }

    /// The type names of a node's controllers that can do `cap`, in order.
    pub fn chain_kinds(&self, node: &str, cap: Capability) -> Vec<String> {
        self.nodes.get(node).map(|c| c.kinds_for(cap)).unwrap_or_default()
    }

    /// The cluster backend's type name.
    pub fn cluster_kind(&self) -> Option<String> {
        self.cluster.as_ref().map(|c| c.0.clone())
    }

    /// The GitOps backend's type name.
    pub fn gitops_kind(&self) -> Option<String> {
        self.gitops.as_ref().map(|g| g.0.clone())
    }

    /// A power source's type name.
    pub fn power_kind(&self, name: &str) -> String {
        self.power.iter().find(|p| p.name == name).map(|p| p.kind.clone()).unwrap_or_else(|| "?".into())
    }

    /// The notifiers' names.
    pub fn notifier_names(&self) -> Vec<String> {
        self.notifiers.names()
    }

    /// Queues an event for every notifier and returns at once: delivery (time limits, retries,
    /// the log line for what could not be delivered) goes on in the background and can never
    /// delay a shutdown. Returns the notifiers that refused it, such as one whose queue is full.
    pub fn notify_all(&self, event: &Event) -> Vec<Refusal> {
        // The one way events leave: what a peer put in one is cleaned here, whoever built it.
        let mut event = event.clone();
        event.sanitize();
        self.notifiers.enqueue(&event)
    }

    /// For a process about to exit: waits at most `timeout` for queued notifications to go out,
    /// and returns how many are left (each is logged when the runtime is dropped).
    pub async fn flush_notifications(&self, timeout: Duration) -> usize {
        self.notifiers.flush(timeout).await
    }
}

/// Runs futures concurrently on the current task and collects their outputs in order.
pub async fn join_all<F: std::future::Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    let mut pending: Vec<(usize, std::pin::Pin<Box<F>>)> = futs.into_iter().enumerate().collect();
    std::future::poll_fn(|cx| {
        pending.retain_mut(|(i, f)| match f.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => {
                outs[*i] = Some(v);
                false
            }
            std::task::Poll::Pending => true,
        });
        if pending.is_empty() { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    outs.into_iter().flatten().collect()
}
