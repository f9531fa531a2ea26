//! Node controllers: how Hecate starts/stops k3s units and powers machines on and off.
//!
//! A node lists several controllers (say `ssh_systemd`, then `redfish`, then `ipmi`). Each
//! operation falls back through them in order, bmclib-style, and returns an [`AttemptReport`]
//! saying who succeeded, who was tried and why each failed.

use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::BuildContext;
use crate::error::{BackendError, ErrorKind};

/// What a node is to k3s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    /// Runs `k3s` (control plane).
    Server,
    /// Runs `k3s-agent` (worker).
    Agent,
}

/// One thing a controller may be able to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Check the node answers (SSH login, BMC reachable).
    Probe,
    /// Start a systemd unit.
    StartUnit,
    /// Stop a systemd unit.
    StopUnit,
    /// Ask whether a systemd unit is active.
    UnitStatus,
    /// Power the machine off (OS poweroff or BMC).
    PowerOff,
    /// Power the machine on (BMC or Wake-on-LAN).
    PowerOn,
    /// Read whether the machine is powered.
    PowerState,
    /// Read whether the OS's clock is synchronized (NTP).
    ClockStatus,
}

impl Capability {
    /// Every capability.
    pub const ALL: [Capability; 8] = [
        Self::Probe,
        Self::StartUnit,
        Self::StopUnit,
        Self::UnitStatus,
        Self::PowerOff,
        Self::PowerOn,
        Self::PowerState,
        Self::ClockStatus,
    ];
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Probe => "probe",
            Self::StartUnit => "start unit",
            Self::StopUnit => "stop unit",
            Self::UnitStatus => "unit status",
            Self::PowerOff => "power off",
            Self::PowerOn => "power on",
            Self::PowerState => "power state",
            Self::ClockStatus => "clock status",
        })
    }
}

/// Whether a machine is powered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// Powered on.
    On,
    /// Powered off (soft off included).
    Off,
}

/// What a controller is told about the node it controls.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// The node's name (its Kubernetes node name).
    pub name: String,
    /// The node's OS address (host name or IP).
    pub address: String,
    /// Server or agent.
    pub role: NodeRole,
}

/// One operation on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "unit", rename_all = "snake_case")]
pub enum NodeOp {
    /// Check the node answers.
    Probe,
    /// `systemctl start UNIT`: returns once the unit is up, which for k3s's `Type=notify` unit
    /// means once k3s has sent `READY=1` (with embedded etcd: once etcd has a quorum).
    StartUnit(String),
    /// `systemctl start --no-block UNIT`: returns once the start is queued. The startup plan
    /// uses this and then waits for the API or the unit, so servers that need each other (an
    /// etcd quorum) are all started before anything waits for one of them.
    StartUnitNoBlock(String),
    /// `systemctl stop UNIT`.
    StopUnit(String),
    /// The node's last step before its power is cut: stop the k3s unit, give every container
    /// SIGTERM and up to `grace_s` seconds, then end whatever is left of k3s (its
    /// containerd-shims) as `k3s-killall.sh` does. Stopping the unit alone leaves the containers
    /// running (k3s's unit has `KillMode=process`), to be killed hard when the power goes.
    StopK3s {
        /// The unit.
        unit: String,
        /// The longest grace a container gets.
        grace_s: u64,
    },
    /// `systemctl is-active UNIT`.
    UnitActive(String),
    /// Power off. A controller that can see the machine's power (a BMC) returns
    /// [`NodeOpOutput::Power`]`(Off)` once it has seen it off, after a soft off and, if the OS did
    /// not finish in time, a forced one; one that can only ask the OS (`systemctl poweroff` over
    /// SSH) returns [`NodeOpOutput::Done`]: requested, not confirmed.
    PowerOff,
    /// Cut the power now (a BMC's hard off) and wait until it shows: for a machine whose OS was
    /// asked to power off and did not within the time it had.
    ForceOff,
    /// Power on.
    PowerOn,
    /// Read the power state.
    PowerState,
    /// Whether the OS's clock is synchronized (`timedatectl show -p NTPSynchronized`).
    ClockSynced,
}

impl NodeOp {
    /// The capability this operation needs.
    pub fn capability(&self) -> Capability {
        match self {
            Self::Probe => Capability::Probe,
            Self::StartUnit(_) | Self::StartUnitNoBlock(_) => Capability::StartUnit,
            Self::StopUnit(_) | Self::StopK3s { .. } => Capability::StopUnit,
            Self::UnitActive(_) => Capability::UnitStatus,
            Self::PowerOff | Self::ForceOff => Capability::PowerOff,
            Self::PowerOn => Capability::PowerOn,
            Self::PowerState => Capability::PowerState,
            Self::ClockSynced => Capability::ClockStatus,
        }
    }
}

impl fmt::Display for NodeOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StartUnit(u) => write!(f, "start {u}"),
            Self::StartUnitNoBlock(u) => write!(f, "start --no-block {u}"),
            Self::StopUnit(u) => write!(f, "stop {u}"),
            Self::StopK3s { unit, grace_s } => write!(f, "stop {unit} and its containers (grace {grace_s}s)"),
            Self::UnitActive(u) => write!(f, "is-active {u}"),
            Self::ForceOff => f.write_str("force power off"),
            other => write!(f, "{}", other.capability()),
        }
    }
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeOpOutput {
    /// Done, nothing to report.
    Done,
    /// A unit's activity.
    Active(bool),
    /// A machine's power state.
    Power(PowerState),
    /// Whether the OS's clock is synchronized.
    ClockSynced(bool),
}

/// Configuration of a node controller; implementations are selected in YAML by `type:`.
#[typetag::serde(tag = "type")]
pub trait NodeControllerConfig: fmt::Debug + Send + Sync {
    /// Checks the backend's own settings, returning every problem found.
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }
    /// Settings that work but deserve a second look (an `insecure: true`, a password sent in
    /// clear), shown by `hecate config check` and at start; never a reason to refuse the config.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
    /// Builds the runtime controller for one node. Must not block on the network.
    fn build(&self, node: &NodeInfo, ctx: &BuildContext) -> Result<Box<dyn NodeController>, BackendError>;
}

/// A live controller for one node. Methods take `&self` so steps can share it; a backend keeps
/// its connection behind its own lock.
#[async_trait]
pub trait NodeController: Send + Sync + fmt::Debug {
    /// The backend's type name (`ssh_systemd`, `ipmi`, ...), for reports.
    fn kind(&self) -> &str;
    /// What this controller can do.
    fn capabilities(&self) -> &[Capability];
    /// Runs one operation. Only called for operations whose capability is listed.
    async fn run(&self, op: &NodeOp) -> Result<NodeOpOutput, BackendError>;
    /// Checks, without changing anything, that this controller could run `ops` (the operations
    /// of the shutdown and startup plans it would be asked for: those its capabilities cover):
    /// reachable, credentials accepted, allowed to run exactly these. The default says it cannot
    /// be checked, so a backend that has no way to check without acting needs nothing.
    async fn preflight(&self, ops: &[NodeOp]) -> Vec<crate::preflight::Check> {
        let _ = ops;
        crate::preflight::not_checkable(&format!("the {} node controller", self.kind()))
    }
}

/// One controller's try at an operation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// The controller's type name.
    pub controller: String,
    /// `None` on success, else why it failed.
    pub error: Option<AttemptError>,
    /// How long the attempt took, in seconds.
    pub elapsed_s: f64,
}

/// Why an attempt failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptError {
    /// The failure's kind.
    pub kind: ErrorKind,
    /// The failure's message.
    pub message: String,
}

/// The result of running one operation through a node's controller chain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttemptReport {
    /// The node.
    pub node: String,
    /// The operation.
    pub op: NodeOp,
    /// Every controller tried, in order.
    pub attempts: Vec<Attempt>,
    /// The controller that succeeded, if any.
    pub succeeded_by: Option<String>,
}

impl AttemptReport {
    /// Who was tried and how it went, in order: `ssh_systemd failed (unreachable: ...), ipmi ok`.
    /// What a step's message says: the step's own description names the operation and the node.
    pub fn tried(&self) -> String {
        if self.attempts.is_empty() {
            return "no controller can do this".into();
        }
        let parts: Vec<String> = self
            .attempts
            .iter()
            .map(|a| match &a.error {
                None => format!("{} ok", a.controller),
                Some(e) => format!("{} failed ({}: {})", a.controller, e.kind, e.message),
            })
            .collect();
        parts.join(", ")
    }

    /// The controllers that failed before one succeeded (or all of them).
    pub fn failed_controllers(&self) -> Vec<&str> {
        self.attempts.iter().filter(|a| a.error.is_some()).map(|a| a.controller.as_str()).collect()
    }
}

/// A node's controllers in fallback order.
#[derive(Debug)]
pub struct ControllerChain {
    node: NodeInfo,
    controllers: Vec<Box<dyn NodeController>>,
}

impl ControllerChain {
    /// A chain over already-built controllers.
    pub fn new(node: NodeInfo, controllers: Vec<Box<dyn NodeController>>) -> Self {
        Self { node, controllers }
    }

    /// The node this chain controls.
    pub fn node(&self) -> &NodeInfo {
        &self.node
    }

    /// The controllers, in fallback order.
    pub fn controllers(&self) -> &[Box<dyn NodeController>] {
        &self.controllers
    }

    /// Whether any controller offers the capability.
    pub fn can(&self, cap: Capability) -> bool {
        self.controllers.iter().any(|c| c.capabilities().contains(&cap))
    }

    /// The type names of the controllers that can do `cap`, in fallback order.
    pub fn kinds_for(&self, cap: Capability) -> Vec<String> {
        self.controllers.iter().filter(|c| c.capabilities().contains(&cap)).map(|c| c.kind().to_string()).collect()
    }

    /// Runs `op` through each capable controller in order until one succeeds. Each attempt is
    /// bounded by `per_controller`; the whole chain by `deadline` (remaining attempts are
    /// reported as timeouts rather than silently skipped).
    pub async fn run(
        &self,
        op: &NodeOp,
        per_controller: Duration,
        deadline: Duration,
    ) -> (Result<NodeOpOutput, BackendError>, AttemptReport) {
        let started = Instant::now();
        let mut report =
            AttemptReport { node: self.node.name.clone(), op: op.clone(), attempts: Vec::new(), succeeded_by: None };
        let cap = op.capability();
        let mut last_err = None;
        for ctrl in self.controllers.iter().filter(|c| c.capabilities().contains(&cap)) {
            let left = deadline.saturating_sub(started.elapsed());
            let t0 = Instant::now();
            let result = if left.is_zero() {
                Err(BackendError::new(ErrorKind::Timeout, "overall deadline passed before this controller was tried"))
            } else {
                match tokio::time::timeout(per_controller.min(left), ctrl.run(op)).await {
                    Ok(r) => r,
                    Err(_) => Err(BackendError::new(
                        ErrorKind::Timeout,
                        format!("no answer within {}", humantime::format_duration(per_controller.min(left))),
                    )),
                }
            };
            let elapsed_s = t0.elapsed().as_secs_f64();
            match result {
                Ok(out) => {
                    report.attempts.push(Attempt { controller: ctrl.kind().to_string(), error: None, elapsed_s });
                    report.succeeded_by = Some(ctrl.kind().to_string());
                    return (Ok(out), report);
                }
                Err(e) => {
                    report.attempts.push(Attempt {
                        controller: ctrl.kind().to_string(),
                        error: Some(AttemptError { kind: e.kind, message: e.detail() }),
                        elapsed_s,
                    });
                    last_err = Some(e);
                }
            }
        }
        let err = match last_err {
            Some(e) => BackendError::new(e.kind, report.tried()),
            None => BackendError::unsupported(format!("no controller of node {} can {}", self.node.name, cap)),
        };
        (Err(err), report)
    }
}
