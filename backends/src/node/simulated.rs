//! `simulated`: a node that exists only in memory, with configurable step durations and
//! injectable failures. Backs the embedded demo and tests of the engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::{ONE_DAY, ONE_STEP};
use hecate_core::node::{
    Capability, NodeController, NodeControllerConfig, NodeInfo, NodeOp, NodeOpOutput, NodeRole, PowerState,
};
use hecate_core::preflight::Check;
use hecate_core::{BackendError, BuildContext, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::sim_world::{World, default_world, world};

/// A simulated node controller.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedNodeConfig {
    /// The simulated world shared with a `simulated` cluster.
    #[serde(default = "default_world")]
    pub world: String,
    /// How long each operation takes. At most 1h; default 500ms.
    #[serde(default = "default_step")]
    pub step_duration: HumanDuration,
    /// How long the OS takes to answer after power-on. At most 1h; default 2s.
    #[serde(default = "default_boot")]
    pub boot_time: HumanDuration,
    /// Operations that fail (injected): any of `probe`, `start_unit`, `stop_unit`,
    /// `unit_status`, `power_off`, `power_on`, `power_state`, `clock_status`.
    #[serde(default)]
    pub fail: Vec<Capability>,
    /// Every operation fails as unreachable (a dead machine or network).
    #[serde(default)]
    pub unreachable: bool,
    /// Offer only these capabilities (default: all), to model an SSH-only or BMC-only controller.
    #[serde(default)]
    pub capabilities: Option<Vec<Capability>>,
}

fn default_step() -> HumanDuration {
    HumanDuration::from_millis(500)
}

fn default_boot() -> HumanDuration {
    HumanDuration::from_secs(2)
}

#[typetag::serde(name = "simulated")]
impl NodeControllerConfig for SimulatedNodeConfig {
    fn validate(&self) -> Vec<String> {
        [("step_duration", self.step_duration), ("boot_time", self.boot_time)]
            .into_iter()
            .filter_map(|(field, d)| d.out_of_range(HumanDuration::ZERO, ONE_STEP).map(|m| format!("`{field}` {m}")))
            .collect()
    }

    fn build(&self, node: &NodeInfo, _ctx: &BuildContext) -> Result<Box<dyn NodeController>, BackendError> {
        let w = world(&self.world);
        let (unit, server) = match node.role {
            NodeRole::Server => ("k3s", true),
            NodeRole::Agent => ("k3s-agent", false),
        };
        w.ensure(&node.name, unit, server);
        Ok(Box::new(SimulatedNode {
            node: node.name.clone(),
            world: w,
            caps: self.capabilities.clone().unwrap_or_else(|| Capability::ALL.to_vec()),
            cfg: self.clone(),
        }))
    }
}

hecate_core::register_backend!(
    NodeController,
    "simulated",
    "in-memory node with scripted delays and failures (demo, tests)",
    SimulatedNodeConfig
);

/// The runtime side of [`SimulatedNodeConfig`].
#[derive(Debug)]
pub struct SimulatedNode {
    node: String,
    world: Arc<World>,
    caps: Vec<Capability>,
    cfg: SimulatedNodeConfig,
}

#[async_trait]
impl NodeController for SimulatedNode {
    fn kind(&self) -> &str {
        "simulated"
    }

    fn capabilities(&self) -> &[Capability] {
        &self.caps
    }

    async fn run(&self, op: &NodeOp) -> Result<NodeOpOutput, BackendError> {
        tokio::time::sleep(*self.cfg.step_duration).await;
        if self.cfg.unreachable {
            return Err(BackendError::new(
                ErrorKind::Unreachable,
                format!("simulated node {} does not answer", self.node),
            ));
        }
        if self.cfg.fail.contains(&op.capability()) {
            return Err(BackendError::new(ErrorKind::Failed, format!("injected failure: {op}")));
        }
        let now = Instant::now();
        let mut machines = self.world.machines();
        let m = machines
            .get_mut(&self.node)
            .ok_or_else(|| BackendError::new(ErrorKind::Config, format!("no simulated machine {}", self.node)))?;
        let needs_os = matches!(
            op,
            NodeOp::Probe
                | NodeOp::StartUnit(_)
                | NodeOp::StartUnitNoBlock(_)
                | NodeOp::StopUnit(_)
                | NodeOp::StopK3s { .. }
                | NodeOp::UnitActive(_)
                | NodeOp::ClockSynced
        );
        if needs_os && !m.reachable(now) {
            return Err(BackendError::new(
                ErrorKind::Unreachable,
                format!("{} is powered off or still booting", self.node),
            ));
        }
        Ok(match op {
            NodeOp::Probe => NodeOpOutput::Done,
            NodeOp::StartUnit(u) | NodeOp::StartUnitNoBlock(u) => {
                m.units.entry(u.clone()).or_insert(None).get_or_insert(now);
                NodeOpOutput::Done
            }
            NodeOp::StopUnit(u) | NodeOp::StopK3s { unit: u, .. } => {
                m.units.insert(u.clone(), None);
                NodeOpOutput::Done
            }
            NodeOp::UnitActive(u) => NodeOpOutput::Active(m.units.get(u).is_some_and(Option::is_some)),
            NodeOp::PowerOff | NodeOp::ForceOff => {
                m.powered = false;
                m.units.values_mut().for_each(|v| *v = None);
                // Like a BMC, a controller that can read the power state confirms it; one that
                // cannot (an SSH-like `capabilities:` list) only asked.
                if self.caps.contains(&Capability::PowerState) {
                    NodeOpOutput::Power(PowerState::Off)
                } else {
                    NodeOpOutput::Done
                }
            }
            NodeOp::PowerOn => {
                if !m.powered {
                    m.powered = true;
                    // Held to a day so that a time no config check stopped cannot overflow the clock.
                    m.booted_at = now.checked_add((*self.cfg.boot_time).min(*ONE_DAY)).unwrap_or(now);
                }
                NodeOpOutput::Done
            }
            NodeOp::PowerState => NodeOpOutput::Power(if m.powered { PowerState::On } else { PowerState::Off }),
            // a simulated clock is always right
            NodeOp::ClockSynced => NodeOpOutput::ClockSynced(true),
        })
    }

    /// Whether the machine answers (when an operation needs its OS), and which operations the
    /// config makes fail (`fail:`): a real controller's preflight finds the same things.
    async fn preflight(&self, ops: &[NodeOp]) -> Vec<Check> {
        if self.cfg.unreachable {
            return vec![Check::failed("reachable", format!("simulated node {} does not answer", self.node))];
        }
        let mut checks = Vec::new();
        let up = self.world.machines().get(&self.node).is_some_and(|m| m.reachable(Instant::now()));
        checks.push(if up {
            Check::ok("reachable", "the simulated machine answers")
        } else {
            Check::failed("reachable", format!("{} is powered off or still booting", self.node))
        });
        let mut failing: Vec<String> = Vec::new();
        for op in ops.iter().filter(|op| self.cfg.fail.contains(&op.capability())) {
            let what = op.capability().to_string();
            if !failing.contains(&what) {
                failing.push(what);
            }
        }
        checks.push(if failing.is_empty() {
            Check::ok("operations", format!("{} operation(s) would run", ops.len()))
        } else {
            Check::failed("operations", format!("fails as configured (`fail:`): {}", failing.join(", ")))
        });
        checks
    }
}

/// How long simulated operations take by default (for tests that reason about timing).
pub fn default_step_duration() -> Duration {
    *default_step()
}
