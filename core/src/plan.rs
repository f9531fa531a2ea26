//! Plans: ordered stages of steps, built from the config before anything runs, so a dry run
//! can print exactly what `--execute` would do.

use std::fmt::{self, Write as _};

use serde::{Deserialize, Serialize};

use crate::config::{Config, FsdMoment};
use crate::duration::HumanDuration;
use crate::node::{Capability, NodeOp, NodeRole};
use crate::notify::EventKind;
use crate::power::Attachment;
use crate::runtime::Runtime;

/// Shutdown or startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlanKind {
    /// Graceful shutdown of the cluster.
    Shutdown,
    /// Staged startup after a power-down.
    Startup,
}

impl fmt::Display for PlanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shutdown => "shutdown",
            Self::Startup => "startup",
        })
    }
}

/// What happens when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Report it and go on: one dead node must never block the rest.
    Continue,
    /// Stop the run after this stage; later stages cannot work without this step.
    Abort,
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Send an event to every notifier.
    Notify {
        /// The event kind.
        kind: EventKind,
        /// The message.
        message: String,
        /// Structured details for the event (the trigger's numbers).
        #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
        details: serde_json::Map<String, serde_json::Value>,
    },
    /// Suspend GitOps reconciliation.
    GitOpsSuspend,
    /// Resume GitOps and wait for it to reconcile.
    GitOpsResume {
        /// Branch to force on the git source.
        force_branch: Option<String>,
    },
    /// Cordon a node with Hecate's mark (a node cordoned already is left as it is).
    Cordon {
        /// The node.
        node: String,
    },
    /// Evict a node's pods as `kubectl drain` does.
    Drain {
        /// The node.
        node: String,
    },
    /// Uncordon a node if Hecate cordoned it.
    Uncordon {
        /// The node.
        node: String,
    },
    /// Run an operation through the node's controller chain.
    Node {
        /// The node.
        node: String,
        /// The operation.
        op: NodeOp,
    },
    /// Start a node's k3s unit without waiting for it to be up (`systemctl start --no-block`),
    /// unless it runs already: what is waited for comes in later steps, so servers that need each
    /// other to come up (an etcd quorum) are all started first.
    StartUnit {
        /// The node.
        node: String,
        /// The unit.
        unit: String,
    },
    /// Poll the node until its unit is active (for k3s's `Type=notify` unit: until k3s said
    /// `READY=1`).
    WaitUnitActive {
        /// The node.
        node: String,
        /// The unit.
        unit: String,
    },
    /// Power a node off and confirm it: through its controller chain (a BMC confirms by
    /// itself); a node whose OS was only asked is confirmed by its power state, or for a node no
    /// controller can read the power of, by SSH staying silent; a BMC cuts the power of one still
    /// on after the soft-off time. A power-off that cannot be confirmed is a failure.
    PowerOff {
        /// The node.
        node: String,
    },
    /// Poll the node until its clock is synchronized.
    WaitClockSynced {
        /// The node.
        node: String,
    },
    /// Poll the node until it answers a probe.
    WaitReachable {
        /// The node.
        node: String,
    },
    /// Poll the Kubernetes API until it is healthy.
    WaitApi,
    /// Poll until every listed node is Ready.
    WaitNodesReady {
        /// The nodes.
        nodes: Vec<String>,
    },
    /// Cut the UPS's load: where this host is the UPS's primary, first tell its other clients to
    /// shut down (`FSD`) and wait for them to log out; then send the instant command.
    UpsCommand {
        /// The power source's name.
        source: String,
        /// The command; `None` takes what the UPS offers.
        command: Option<String>,
        /// How long the UPS should wait before cutting; `None`: its own delay.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        delay: Option<HumanDuration>,
        /// As the UPS's primary: how long to wait for the other clients after `FSD`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hostsync: Option<HumanDuration>,
    },
    /// As the UPS's primary, tell its other clients to shut down now (`FSD`).
    UpsFsd {
        /// The power source's name.
        source: String,
    },
    /// As one of the UPS's secondary clients, log out so its primary may cut the power.
    UpsLeave {
        /// The power source's name.
        source: String,
    },
}

impl Action {
    /// A notification or a quick message to a UPS's other clients: nothing that makes a run
    /// take longer, so nothing that makes two runs incomparable.
    fn is_message(&self) -> bool {
        matches!(self, Action::Notify { .. } | Action::UpsFsd { .. } | Action::UpsLeave { .. })
    }
}

/// One step of a stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// Stable id (`stop-agents/worker-1`), used by the journal to resume.
    pub id: String,
    /// What to do.
    pub action: Action,
    /// The backends that will be tried, in order (for the printed plan).
    pub via: Vec<String>,
    /// Time limit.
    pub timeout: HumanDuration,
    /// What a failure means for the run.
    pub on_failure: OnFailure,
}

impl Step {
    /// One line for humans.
    pub fn describe(&self) -> String {
        match &self.action {
            Action::Notify { kind, .. } => format!(
                "notify {}",
                serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
            ),
            Action::GitOpsSuspend => "suspend gitops reconciliation".into(),
            Action::GitOpsResume { force_branch: Some(b) } => format!("resume gitops on branch {b} and reconcile"),
            Action::GitOpsResume { force_branch: None } => "resume gitops and reconcile".into(),
            Action::Cordon { node } => format!("cordon {node}"),
            Action::Drain { node } => format!("drain {node}"),
            Action::Uncordon { node } => format!("uncordon {node} if hecate cordoned it"),
            Action::Node { node, op: NodeOp::PowerOff } => format!("power off {node}"),
            Action::Node { node, op: NodeOp::PowerOn } => format!("power on {node}"),
            Action::Node { node, op } => format!("{op} on {node}"),
            Action::StartUnit { node, unit } => format!("start {unit} on {node} (without waiting)"),
            Action::WaitUnitActive { node, unit } => format!("wait until {unit} is active on {node}"),
            Action::PowerOff { node } => format!("power off {node} and confirm it"),
            Action::WaitReachable { node } => format!("wait until {node} answers"),
            Action::WaitClockSynced { node } => format!("wait until {node}'s clock is synchronized"),
            Action::WaitApi => "wait for the kubernetes api".into(),
            Action::WaitNodesReady { nodes } => {
                format!("wait until {} node(s) are ready", nodes.len())
            }
            Action::UpsCommand { source, command, delay, hostsync } => {
                let command = command.as_deref().unwrap_or("shutdown.return or load.off.delay, as offered,");
                let delay = match delay {
                    Some(d) => format!("to cut its load in {d}"),
                    None => "to cut its load after its own delay".into(),
                };
                match hostsync {
                    Some(h) => format!(
                        "tell the other clients of ups {source} to shut down (FSD), wait up to {h} for them to log \
                         out, then send {command} {delay}"
                    ),
                    None => format!("send {command} to ups {source} {delay}"),
                }
            }
            Action::UpsFsd { source } => format!("tell the other clients of ups {source} to shut down (FSD)"),
            Action::UpsLeave { source } => format!("log out of ups {source}, so its primary may cut the power"),
        }
    }
}

/// Steps that run concurrently, under a limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stage {
    /// Stable name (`stop-agents`).
    pub name: String,
    /// How many steps run at once.
    pub concurrency: usize,
    /// The steps.
    pub steps: Vec<Step>,
}

/// An ordered list of stages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Shutdown or startup.
    pub kind: PlanKind,
    /// Why this plan runs.
    pub reason: String,
    /// The stages, in order.
    pub stages: Vec<Stage>,
    /// A program run after the run is recorded (powering this host off): it must come last,
    /// after runs.json is written, so it is not a step of a stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finally: Option<Vec<String>>,
}

/// What makes two runs comparable, recorded with each shutdown in runs.json so that the budget
/// learns only from shutdowns of the plan it is a budget for: a run of a plan with fewer nodes
/// (or none) says nothing about how long this one takes.
///
/// It covers what the plan does, not how: the ids of its steps other than notifications and the
/// quick messages to a UPS's other clients (`fsd/…`, `leave-ups/…`), each
/// naming its stage and the node or backend it acts on (`drain/w1`, `stop-agents/w1`,
/// `stop-init-server/s0`, `power-off/w1`, `suspend-gitops/flux`, `ups-off/ups`). Adding,
/// removing or renaming a node, changing its role or `power_off`, turning drain, GitOps
/// suspension or the UPS command on or off all change it; timeouts, controllers and their order
/// do not (a slower controller is what the budget is there to learn).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanFingerprint {
    /// `fnv1a64:` and 16 hex digits: the FNV-1a hash of the sorted step ids, one per line. The
    /// algorithm is fixed: changing it would make every recorded run incomparable.
    pub id: String,
    /// How many of the plan's steps act on a node through its controllers (stop a unit, power
    /// off). A run with none never teaches the budget anything.
    pub node_steps: usize,
}

/// What history says a plan will take, for the dry run.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The whole run, seconds.
    pub total_s: Option<f64>,
    /// Per stage name, seconds.
    pub stages: std::collections::BTreeMap<String, f64>,
}

impl Plan {
    /// Adds details to the events the plan's notify steps of `kind` send, such as the numbers
    /// behind a shutdown trigger.
    pub fn add_event_details(&mut self, kind: EventKind, details: &serde_json::Map<String, serde_json::Value>) {
        for step in self.stages.iter_mut().flat_map(|s| &mut s.steps) {
            if let Action::Notify { kind: k, details: d, .. } = &mut step.action
                && *k == kind
            {
                d.extend(details.clone());
            }
        }
    }

    /// Every step, in order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.stages.iter().flat_map(|s| s.steps.iter())
    }

    /// What makes a run of this plan comparable to another (see [`PlanFingerprint`]).
    pub fn fingerprint(&self) -> PlanFingerprint {
        let mut ids: Vec<&str> = self.steps().filter(|s| !s.action.is_message()).map(|s| s.id.as_str()).collect();
        ids.sort_unstable();
        // FNV-1a, 64 bits: tiny, and stable across Rust versions (std's hasher is not).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in ids.join("\n").bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        PlanFingerprint {
            id: format!("fnv1a64:{hash:016x}"),
            node_steps: self
                .steps()
                .filter(|s| matches!(s.action, Action::Node { .. } | Action::PowerOff { .. }))
                .count(),
        }
    }

    /// The plan as printed by a dry run.
    pub fn render(&self, expected: &Expected) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} plan ({}): {} stage(s), {} step(s)",
            self.kind,
            self.reason,
            self.stages.len(),
            self.steps().count()
        );
        if let Some(e) = expected.total_s {
            let _ = writeln!(out, "expected duration from history: {e:.0} s");
        }
        for (i, stage) in self.stages.iter().enumerate() {
            let took = match expected.stages.get(&stage.name) {
                Some(s) => format!(", took up to {s:.1} s in recent runs"),
                None => String::new(),
            };
            let _ = writeln!(out, "\n{}. {} (up to {} at once{took})", i + 1, stage.name, stage.concurrency);
            for step in &stage.steps {
                let via = if step.via.is_empty() { String::new() } else { format!(" via {}", step.via.join(" → ")) };
                let fail = match step.on_failure {
                    OnFailure::Continue => "",
                    OnFailure::Abort => ", abort on failure",
                };
                let _ = writeln!(out, "   - {}{} (timeout {}{})", step.describe(), via, step.timeout, fail);
            }
        }
        if let Some(cmd) = &self.finally {
            let _ = writeln!(out, "\nthen, once the run is recorded: power off this host (`{}`)", cmd.join(" "));
        }
        out
    }
}

fn step(id: String, action: Action, via: Vec<String>, timeout: HumanDuration) -> Step {
    Step { id, action, via, timeout, on_failure: OnFailure::Continue }
}

fn stage(name: &str, concurrency: usize, steps: Vec<Step>) -> Option<Stage> {
    (!steps.is_empty()).then(|| Stage { name: name.to_string(), concurrency, steps })
}

/// The shutdown plan: notify → cordon every node (marked as Hecate's) → suspend GitOps → drain
/// every node → stop agents → stop servers (the init server last) → power off → UPS off.
pub fn shutdown_plan(cfg: &Config, rt: &Runtime, reason: &str) -> Plan {
    let s = &cfg.shutdown;
    let n = s.concurrency;
    let cluster_via = || rt.cluster_kind().into_iter().collect::<Vec<_>>();
    let mut stages = Vec::new();
    let notify_via = rt.notifier_names();
    stages.push(stage(
        "notify",
        1,
        vec![step(
            "notify/shutdown-triggered".into(),
            Action::Notify {
                kind: EventKind::ShutdownTriggered,
                message: format!("shutdown started: {reason}"),
                details: Default::default(),
            },
            notify_via.clone(),
            HumanDuration::from_secs(10),
        )],
    ));
    // The UPS's primary may tell its other clients to shut down as the shutdown starts.
    let primary_of =
        |source: &str| cfg.power_sources.iter().any(|p| p.name() == source && p.attachment() == Attachment::Primary);
    if let Some(u) = s.ups_off.as_ref().filter(|u| u.fsd == FsdMoment::AtTrigger && primary_of(&u.source)) {
        stages.push(stage(
            "fsd",
            1,
            vec![step(
                format!("fsd/{}", u.source),
                Action::UpsFsd { source: u.source.clone() },
                vec![rt.power_kind(&u.source)],
                HumanDuration::from_secs(15),
            )],
        ));
    }
    if cfg.cluster.is_some() {
        // Every node, first: nothing may be rescheduled onto a node about to lose power.
        let steps = cfg
            .nodes
            .iter()
            .map(|node| {
                step(
                    format!("cordon/{}", node.name),
                    Action::Cordon { node: node.name.clone() },
                    cluster_via(),
                    s.step_timeout,
                )
            })
            .collect();
        stages.push(stage("cordon", n, steps));
    }
    if s.suspend_gitops && cfg.gitops.is_some() {
        stages.push(stage(
            "suspend-gitops",
            1,
            vec![step(
                "suspend-gitops/flux".into(),
                Action::GitOpsSuspend,
                rt.gitops_kind().into_iter().collect(),
                s.step_timeout,
            )],
        ));
    }
    if s.drain && cfg.cluster.is_some() {
        // Every node, servers included: with all of them cordoned nothing moves, and each pod a
        // controller manages stops with its grace while the cluster still runs.
        let steps = cfg
            .nodes
            .iter()
            .map(|node| {
                step(
                    format!("drain/{}", node.name),
                    Action::Drain { node: node.name.clone() },
                    cluster_via(),
                    HumanDuration(s.drain_timeout.saturating_add(std::time::Duration::from_secs(15))),
                )
            })
            .collect();
        stages.push(stage("drain", n, steps));
    }
    // The node's last step before its power goes: k3s stopped, every container given SIGTERM
    // and its grace, what is left of k3s ended (its unit's KillMode=process would leave the
    // containers running). The grace comes on top of the step's time.
    let grace = s.max_pod_grace;
    let unit_step = |prefix: &str, node: &crate::config::NodeConfig| {
        step(
            format!("{prefix}/{}", node.name),
            Action::Node {
                node: node.name.clone(),
                op: NodeOp::StopK3s { unit: node.unit_name().into(), grace_s: grace.as_secs() },
            },
            rt.chain_kinds(&node.name, Capability::StopUnit),
            HumanDuration(s.step_timeout.saturating_add(*grace)),
        )
    };
    stages.push(stage(
        "stop-agents",
        n,
        cfg.nodes_with_role(NodeRole::Agent).map(|node| unit_step("stop-agents", node)).collect(),
    ));
    stages.push(stage(
        "stop-servers",
        n,
        cfg.nodes_with_role(NodeRole::Server).filter(|x| !x.init).map(|node| unit_step("stop-servers", node)).collect(),
    ));
    stages.push(stage(
        "stop-init-server",
        1,
        cfg.nodes_with_role(NodeRole::Server)
            .filter(|x| x.init)
            .map(|node| unit_step("stop-init-server", node))
            .collect(),
    ));
    if s.power_off_nodes {
        let steps = cfg
            .nodes
            .iter()
            .filter(|node| node.power_off)
            .map(|node| {
                step(
                    format!("power-off/{}", node.name),
                    Action::PowerOff { node: node.name.clone() },
                    rt.chain_kinds(&node.name, Capability::PowerOff),
                    s.power_off_timeout,
                )
            })
            .collect();
        stages.push(stage("power-off", n, steps));
    }
    // A secondary client leaves each UPS once its machines are down, so that UPS's primary
    // (another host's upsmon, waiting up to its HOSTSYNC) may cut the power.
    let leave = cfg
        .power_sources
        .iter()
        .filter(|p| p.attachment() == Attachment::Secondary)
        .map(|p| {
            step(
                format!("leave-ups/{}", p.name()),
                Action::UpsLeave { source: p.name().to_string() },
                vec![rt.power_kind(p.name())],
                HumanDuration::from_secs(15),
            )
        })
        .collect();
    stages.push(stage("leave-ups", n, leave));
    // The very last act, once every node's power-off has ended (confirmed off, failed or timed
    // out: the stages run in order): cutting the UPS's load earlier would cut a node that is
    // still writing.
    if let Some(u) = &s.ups_off {
        let command = (u.command != crate::config::UPS_OFF_AUTO).then(|| u.command.clone());
        let hostsync = primary_of(&u.source).then_some(u.hostsync);
        // The wait, then a handful of requests (LIST CMD, GET/SET VAR, INSTCMD) under the
        // source's own per-request timeout.
        let timeout = HumanDuration(
            std::time::Duration::from_secs(60).saturating_add(hostsync.map_or(std::time::Duration::ZERO, |h| *h)),
        );
        stages.push(stage(
            "ups-off",
            1,
            vec![step(
                format!("ups-off/{}", u.source),
                Action::UpsCommand { source: u.source.clone(), command, delay: u.delay, hostsync },
                vec![rt.power_kind(&u.source)],
                timeout,
            )],
        ));
    }
    let finally = s.power_off_self.then(|| s.power_off_self_command.clone());
    Plan {
        kind: PlanKind::Shutdown,
        reason: reason.to_string(),
        stages: stages.into_iter().flatten().collect(),
        finally,
    }
}

/// The fingerprint of the shutdown plan `cfg` gives, without building a backend: which steps a
/// plan has depends on the config alone (the built backends only name who will be tried), so
/// the daemon can compare runs before it builds a plan.
pub fn shutdown_fingerprint(cfg: &Config) -> PlanFingerprint {
    shutdown_plan(cfg, &Runtime::unbuilt(cfg), "").fingerprint()
}

/// The startup plan: power on → wait for SSH → (optionally) wait for each clock → start every
/// server at once → wait for the API
/// (or, without a cluster API, for each server's unit) → start the agents → wait for Ready →
/// uncordon what Hecate cordoned (an operator's cordon stays) → GitOps → notify.
///
/// The servers are started together and without waiting (`systemctl start --no-block`): k3s's
/// unit is `Type=notify` and sends `READY=1` only once its datastore is up (k3s
/// `pkg/cli/server/server.go` waits for `ETCDReady`), and a restarted member of a three-server
/// embedded etcd has no quorum alone, so a blocking start of one server waits for the others
/// forever (k3s's unit has `TimeoutStartSec=0`). Since k3s 1.21.8/1.22.5 the servers need no
/// order among themselves (k3s-io/k3s#4746). A single server on sqlite starts the same way.
pub fn startup_plan(cfg: &Config, rt: &Runtime, reason: &str, force_branch: Option<String>) -> Plan {
    let s = &cfg.startup;
    let n = s.concurrency;
    let cluster_via = || rt.cluster_kind().into_iter().collect::<Vec<_>>();
    let mut stages = Vec::new();
    if s.power_on_nodes {
        let steps = cfg
            .nodes
            .iter()
            .filter(|node| rt.chain(&node.name).is_some_and(|c| c.can(Capability::PowerOn)))
            .map(|node| {
                step(
                    format!("power-on/{}", node.name),
                    Action::Node { node: node.name.clone(), op: NodeOp::PowerOn },
                    rt.chain_kinds(&node.name, Capability::PowerOn),
                    s.step_timeout,
                )
            })
            .collect();
        stages.push(stage("power-on", n, steps));
    }
    let reach = cfg
        .nodes
        .iter()
        .map(|node| {
            step(
                format!("wait-reachable/{}", node.name),
                Action::WaitReachable { node: node.name.clone() },
                rt.chain_kinds(&node.name, Capability::Probe),
                s.reachable_timeout,
            )
        })
        .collect();
    stages.push(stage("wait-reachable", n, reach));
    if let Some(timeout) = s.clock_sync_timeout {
        // k3s and TLS need sane time; after a site-wide outage NTP may answer late.
        let steps = cfg
            .nodes
            .iter()
            .map(|node| {
                step(
                    format!("wait-clock/{}", node.name),
                    Action::WaitClockSynced { node: node.name.clone() },
                    rt.chain_kinds(&node.name, Capability::ClockStatus),
                    timeout,
                )
            })
            .collect();
        stages.push(stage("wait-clock", cfg.nodes.len().max(1), steps));
    }
    let start_step = |prefix: &str, node: &crate::config::NodeConfig| {
        step(
            format!("{prefix}/{}", node.name),
            Action::StartUnit { node: node.name.clone(), unit: node.unit_name().into() },
            rt.chain_kinds(&node.name, Capability::StartUnit),
            s.step_timeout,
        )
    };
    let wait_unit_step = |prefix: &str, node: &crate::config::NodeConfig, timeout: HumanDuration| {
        step(
            format!("{prefix}/{}", node.name),
            Action::WaitUnitActive { node: node.name.clone(), unit: node.unit_name().into() },
            rt.chain_kinds(&node.name, Capability::UnitStatus),
            timeout,
        )
    };
    // Every server at once, however low the concurrency: the start only queues the unit.
    let servers: Vec<_> = cfg.nodes_with_role(NodeRole::Server).collect();
    let all_at_once = servers.len().max(1);
    stages.push(stage(
        "start-servers",
        all_at_once,
        servers.iter().map(|node| start_step("start-servers", node)).collect(),
    ));
    if cfg.cluster.is_some() {
        stages.push(stage(
            "wait-api",
            1,
            vec![Step {
                on_failure: OnFailure::Abort,
                ..step("wait-api/kubernetes".into(), Action::WaitApi, cluster_via(), s.api_timeout)
            }],
        ));
    } else {
        // No API to ask: each server's unit is active once k3s said READY=1.
        let steps = servers
            .iter()
            .map(|node| Step { on_failure: OnFailure::Abort, ..wait_unit_step("wait-servers", node, s.api_timeout) })
            .collect();
        stages.push(stage("wait-servers", all_at_once, steps));
    }
    let agents: Vec<_> = cfg.nodes_with_role(NodeRole::Agent).collect();
    stages.push(stage("start-agents", n, agents.iter().map(|node| start_step("start-agents", node)).collect()));
    if cfg.cluster.is_none() {
        let steps = agents.iter().map(|node| wait_unit_step("wait-agents", node, s.nodes_ready_timeout)).collect();
        stages.push(stage("wait-agents", agents.len().max(1), steps));
    }
    if cfg.cluster.is_some() {
        let names: Vec<String> = cfg.nodes.iter().map(|x| x.name.clone()).collect();
        if !names.is_empty() {
            stages.push(stage(
                "wait-ready",
                1,
                vec![step(
                    "wait-ready/all".into(),
                    Action::WaitNodesReady { nodes: names },
                    cluster_via(),
                    s.nodes_ready_timeout,
                )],
            ));
        }
        let steps = cfg
            .nodes
            .iter()
            .map(|node| {
                step(
                    format!("uncordon/{}", node.name),
                    Action::Uncordon { node: node.name.clone() },
                    cluster_via(),
                    s.step_timeout,
                )
            })
            .collect();
        stages.push(stage("uncordon", n, steps));
    }
    if cfg.gitops.is_some() {
        let branch = force_branch.or_else(|| s.force_flux_branch.clone());
        stages.push(stage(
            "resume-gitops",
            1,
            vec![step(
                "resume-gitops/flux".into(),
                Action::GitOpsResume { force_branch: branch },
                rt.gitops_kind().into_iter().collect(),
                s.gitops_timeout,
            )],
        ));
    }
    stages.push(stage(
        "notify",
        1,
        vec![step(
            "notify/startup-done".into(),
            Action::Notify {
                kind: EventKind::StartupDone,
                message: format!("startup finished: {reason}"),
                details: Default::default(),
            },
            rt.notifier_names(),
            HumanDuration::from_secs(10),
        )],
    ));
    Plan {
        kind: PlanKind::Startup,
        reason: reason.to_string(),
        stages: stages.into_iter().flatten().collect(),
        finally: None,
    }
}
