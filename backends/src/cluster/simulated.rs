//! `simulated`: a Kubernetes API that exists only in memory. It is healthy while a simulated
//! server runs its unit, and a node is Ready a little after its unit starts.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use hecate_core::cluster::{
    ClusterApi, ClusterApiConfig, ClusterNode, Cordoned, DrainOptions, DrainReport, Uncordoned,
};
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::ONE_STEP;
use hecate_core::{BackendError, BuildContext, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::sim_world::{SimMachine, World, default_world, world};

/// A simulated cluster API.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedClusterConfig {
    /// The simulated world shared with `simulated` node controllers.
    #[serde(default = "default_world")]
    pub world: String,
    /// How long after a server's unit starts the API answers. At most 1h; default 1s.
    #[serde(default = "one_second")]
    pub api_delay: HumanDuration,
    /// How long after a node's unit starts it is Ready. At most 1h; default 1s.
    #[serde(default = "one_second")]
    pub ready_delay: HumanDuration,
    /// How long a drain takes. At most 1h; default 1s.
    #[serde(default = "one_second")]
    pub drain_duration: HumanDuration,
    /// Nodes whose drain fails (injected).
    #[serde(default)]
    pub fail_drain: Vec<String>,
}

fn one_second() -> HumanDuration {
    HumanDuration::from_secs(1)
}

#[typetag::serde(name = "simulated")]
impl ClusterApiConfig for SimulatedClusterConfig {
    fn validate(&self) -> Vec<String> {
        [("api_delay", self.api_delay), ("ready_delay", self.ready_delay), ("drain_duration", self.drain_duration)]
            .into_iter()
            .filter_map(|(field, d)| d.out_of_range(HumanDuration::ZERO, ONE_STEP).map(|m| format!("`{field}` {m}")))
            .collect()
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn ClusterApi>, BackendError> {
        Ok(Box::new(SimulatedCluster { world: world(&self.world), cfg: self.clone() }))
    }
}

hecate_core::register_backend!(
    ClusterApi,
    "simulated",
    "in-memory Kubernetes API driven by simulated nodes (demo, tests)",
    SimulatedClusterConfig
);

/// The runtime side of [`SimulatedClusterConfig`].
#[derive(Debug)]
pub struct SimulatedCluster {
    world: Arc<World>,
    cfg: SimulatedClusterConfig,
}

impl SimulatedCluster {
    fn require_api(&self) -> Result<(), BackendError> {
        let now = Instant::now();
        let up = self
            .world
            .machines()
            .values()
            .filter(|m| m.server && m.reachable(now))
            .filter_map(|m| m.running_since())
            .any(|since| since.checked_add(*self.cfg.api_delay).is_some_and(|up| now >= up));
        if up { Ok(()) } else { Err(BackendError::new(ErrorKind::Unreachable, "simulated api server is down")) }
    }
}

#[async_trait]
impl ClusterApi for SimulatedCluster {
    async fn health(&self) -> Result<(), BackendError> {
        self.require_api()
    }

    /// The simulated API answers while a simulated server runs k3s; it grants everything.
    async fn preflight(&self, _needs: &hecate_core::preflight::ClusterNeeds) -> Vec<hecate_core::preflight::Check> {
        vec![hecate_core::preflight::Check::from_result("api", self.require_api().map(|()| "answers".to_string()))]
    }

    async fn nodes(&self) -> Result<Vec<ClusterNode>, BackendError> {
        self.require_api()?;
        let now = Instant::now();
        Ok(self
            .world
            .machines()
            .iter()
            .map(|(name, m)| ClusterNode {
                name: name.clone(),
                ready: m.reachable(now)
                    && m.running_since().and_then(|s| s.checked_add(*self.cfg.ready_delay)).is_some_and(|r| now >= r),
                unschedulable: m.cordoned,
            })
            .collect())
    }

    async fn cordon(&self, node: &str) -> Result<Cordoned, BackendError> {
        self.with_machine(node, |m| match (m.cordoned, m.cordon_mark) {
            (false, _) => {
                (m.cordoned, m.cordon_mark) = (true, true);
                Cordoned::Marked
            }
            (true, true) => Cordoned::AlreadyMarked,
            (true, false) => Cordoned::ByOthers,
        })
    }

    async fn uncordon(&self, node: &str) -> Result<Uncordoned, BackendError> {
        self.with_machine(node, |m| match (m.cordoned, m.cordon_mark) {
            (_, true) => {
                (m.cordoned, m.cordon_mark) = (false, false);
                Uncordoned::Uncordoned
            }
            (true, false) => Uncordoned::LeftCordoned,
            (false, false) => Uncordoned::NotCordoned,
        })
    }

    async fn drain(&self, node: &str, _opts: &DrainOptions) -> Result<DrainReport, BackendError> {
        self.require_api()?;
        tokio::time::sleep(*self.cfg.drain_duration).await;
        if self.cfg.fail_drain.iter().any(|n| n == node) {
            return Err(BackendError::new(ErrorKind::Failed, format!("injected drain failure on {node}")));
        }
        Ok(DrainReport { evicted: vec![format!("{node}/demo-app")], ..Default::default() })
    }
}

impl SimulatedCluster {
    fn with_machine<T>(&self, node: &str, f: impl FnOnce(&mut SimMachine) -> T) -> Result<T, BackendError> {
        self.require_api()?;
        match self.world.machines().get_mut(node) {
            Some(m) => Ok(f(m)),
            None => Err(BackendError::new(ErrorKind::Failed, format!("node {node} not found"))),
        }
    }
}
