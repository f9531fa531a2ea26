//! Executes plans: stages in order, steps of a stage concurrently under its limit, each step
//! under its timeout, every start and end journaled so a crashed run resumes where it stopped.

mod journal;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::cluster::DrainOptions;
use crate::error::{BackendError, ErrorKind};
use crate::node::{AttemptReport, Capability, NodeOp, NodeOpOutput, PowerState};
use crate::notify::{Event, EventKind};
use crate::plan::{Action, OnFailure, Plan, PlanKind, Stage, Step};
use crate::runtime::{PowerHandle, Runtime, join_all};

pub use journal::{Journal, JournalError, JournalSummary};

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every step succeeded.
    Success,
    /// Some steps failed; the run went on.
    Partial,
    /// A step whose failure aborts the run failed.
    Failed,
}

/// What one step did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepOutcome {
    /// The step's id.
    pub id: String,
    /// The step, in words.
    pub description: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// What happened (the error, or a note).
    pub message: String,
    /// How long it took, seconds.
    pub duration_s: f64,
    /// For node operations: who was tried and why each failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<AttemptReport>,
    /// Finished in an earlier, interrupted run: not executed again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
}

/// What one stage did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage's name.
    pub name: String,
    /// How long it took, seconds.
    pub duration_s: f64,
    /// Its steps.
    pub steps: Vec<StepOutcome>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Shutdown or startup.
    pub kind: PlanKind,
    /// Why it ran.
    pub reason: String,
    /// When it started, RFC 3339.
    pub started_at: String,
    /// How long it took, seconds.
    pub duration_s: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// Each stage.
    pub stages: Vec<StageReport>,
}

impl RunReport {
    /// Every failed step.
    pub fn failures(&self) -> impl Iterator<Item = &StepOutcome> {
        self.stages.iter().flat_map(|s| s.steps.iter()).filter(|s| !s.ok)
    }
}

/// Progress, for a terminal or the daemon's log.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A stage begins.
    StageStarted {
        /// 1-based index.
        index: usize,
        /// Number of stages.
        total: usize,
        /// The stage's name.
        name: String,
        /// Its number of steps.
        steps: usize,
    },
    /// A step begins.
    StepStarted {
        /// The step's id.
        id: String,
        /// The step, in words.
        description: String,
    },
    /// A step ended (or was found finished by an earlier run).
    StepFinished(StepOutcome),
    /// A stage ended.
    StageFinished {
        /// The stage's name.
        name: String,
        /// How long it took, seconds.
        duration_s: f64,
        /// Failed steps.
        failed: usize,
    },
}

/// Receives progress events.
pub type EventSink = Arc<dyn Fn(EngineEvent) + Send + Sync>;

/// Engine settings that are not part of a plan.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How often waits re-check (SSH reachability, API health, readiness).
    pub wait_poll: Duration,
    /// Drain settings.
    pub drain: DrainOptions,
    /// How a power-off is confirmed.
    pub power_off: PowerOffOptions,
}

impl Default for EngineOptions {
    /// The config's defaults, polling every 2 s.
    fn default() -> Self {
        Self {
            wait_poll: Duration::from_secs(2),
            drain: DrainOptions::default(),
            power_off: PowerOffOptions::default(),
        }
    }
}

/// How a node's power-off is confirmed (`shutdown.soft_off_timeout`, `shutdown.off_silence`).
#[derive(Debug, Clone)]
pub struct PowerOffOptions {
    /// How long a node whose OS was asked to power off gets to be seen off before a BMC in its
    /// chain cuts the power.
    pub soft_off_timeout: Duration,
    /// For a node no controller can read the power of: how long its probe must fail for it to
    /// count as off.
    pub off_silence: Duration,
}

impl Default for PowerOffOptions {
    fn default() -> Self {
        Self { soft_off_timeout: Duration::from_secs(300), off_silence: Duration::from_secs(30) }
    }
}

/// Runs plans against a runtime.
pub struct Engine {
    rt: Arc<Runtime>,
    opts: EngineOptions,
    sink: EventSink,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("opts", &self.opts).finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine over a built runtime.
    pub fn new(rt: Arc<Runtime>, opts: EngineOptions, sink: EventSink) -> Self {
        Self { rt, opts, sink }
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    /// Runs a plan to the end. Steps the journal already holds as finished are not executed
    /// again. A failed `Abort` step stops the run after its stage; any other failure is
    /// reported and the run goes on.
    pub async fn execute(&self, plan: &Plan, mut journal: Option<&mut Journal>) -> RunReport {
        let started = Instant::now();
        let started_at = journal
            .as_ref()
            .and_then(|j| j.started_at().map(str::to_string))
            .unwrap_or_else(|| humantime::format_rfc3339_seconds(SystemTime::now()).to_string());
        let mut stages = Vec::new();
        let mut aborted = false;
        let total = plan.stages.len();
        for (i, stage) in plan.stages.iter().enumerate() {
            (self.sink)(EngineEvent::StageStarted {
                index: i + 1,
                total,
                name: stage.name.clone(),
                steps: stage.steps.len(),
            });
            let t0 = Instant::now();
            let steps = self.run_stage(stage, journal.as_deref_mut()).await;
            let failed = steps.iter().filter(|s| !s.ok).count();
            let duration_s = t0.elapsed().as_secs_f64();
            (self.sink)(EngineEvent::StageFinished { name: stage.name.clone(), duration_s, failed });
            self.notify_stage_finished(plan, i, stage, duration_s, failed);
            let abort = stage.steps.iter().zip(&steps).any(|(st, out)| !out.ok && st.on_failure == OnFailure::Abort);
            stages.push(StageReport { name: stage.name.clone(), duration_s, steps });
            if abort {
                aborted = true;
                break;
            }
        }
        let any_failed = stages.iter().flat_map(|s| &s.steps).any(|s| !s.ok);
        let outcome = match (aborted, any_failed) {
            (true, _) => Outcome::Failed,
            (false, true) => Outcome::Partial,
            (false, false) => Outcome::Success,
        };
        // Each step the journal held is at most a day (the journal drops impossible ones), so the
        // sum is finite; the guard keeps an impossible total out of the report all the same.
        let resumed_s = journal.as_ref().map(|j| j.earlier_elapsed_s()).filter(|s| s.is_finite() && *s >= 0.0);
        let resumed_s = resumed_s.unwrap_or(0.0);
        RunReport {
            kind: plan.kind,
            reason: plan.reason.clone(),
            started_at,
            duration_s: resumed_s + started.elapsed().as_secs_f64(),
            outcome,
            stages,
        }
    }

    async fn run_stage(&self, stage: &Stage, journal: Option<&mut Journal>) -> Vec<StepOutcome> {
        // A concurrency beyond the stage's steps changes nothing, and beyond MAX_PERMITS the
        // semaphore would panic: clamp whatever a plan built in code says.
        let permits = stage.concurrency.min(stage.steps.len()).clamp(1, Semaphore::MAX_PERMITS);
        let limit = Semaphore::new(permits);
        // The journal is shared by the stage's concurrent steps; appends are short and ordered.
        let journal = std::sync::Mutex::new(journal);
        let futs = stage.steps.iter().map(|step| {
            let limit = &limit;
            let journal = &journal;
            async move {
                let prev = journal.lock().ok().and_then(|j| j.as_ref().and_then(|j| j.finished(&step.id)));
                if let Some(prev) = prev {
                    let out = StepOutcome { resumed: true, ..prev };
                    (self.sink)(EngineEvent::StepFinished(out.clone()));
                    return out;
                }
                let _permit = limit.acquire().await;
                let written = match journal.lock() {
                    Ok(mut j) => j.as_mut().map(|j| j.step_started(&step.id)),
                    Err(_) => None,
                };
                if let Some(Err(e)) = written {
                    tracing::error!(error = %e, "journal write failed; a crash now could repeat this step");
                }
                (self.sink)(EngineEvent::StepStarted { id: step.id.clone(), description: step.describe() });
                let out = self.run_step(step).await;
                self.notify_step_failure(step, &out);
                let written = match journal.lock() {
                    Ok(mut j) => j.as_mut().map(|j| j.step_finished(&out)),
                    Err(_) => None,
                };
                if let Some(Err(e)) = written {
                    tracing::error!(error = %e, "journal write failed; the run record may be incomplete");
                }
                (self.sink)(EngineEvent::StepFinished(out.clone()));
                out
            }
        });
        join_all(futs).await
    }

    /// A `stage_finished` event, except for stages that only notify (they would announce
    /// themselves).
    fn notify_stage_finished(&self, plan: &Plan, index: usize, stage: &Stage, duration_s: f64, failed: usize) {
        if stage.steps.iter().all(|s| matches!(s.action, Action::Notify { .. })) {
            return;
        }
        let failed_text = if failed > 0 { format!(", {failed} step(s) failed") } else { String::new() };
        let event = Event::now(
            EventKind::StageFinished,
            &self.rt.host,
            format!("{} stage {} finished in {duration_s:.1} s{failed_text}", plan.kind, stage.name),
        )
        .with("plan", plan.kind.to_string())
        .with("stage", stage.name.clone())
        .with("index", index + 1)
        .with("total", plan.stages.len())
        .with("duration_s", duration_s)
        .with("failed", failed);
        self.rt.notify_all(&event);
    }

    /// A `step_failed` event for a failed step; a `step_fell_back` event for a node step that
    /// succeeded only after a controller failed: it is no failure (nobody need be woken), but the
    /// operator should know the first choice is broken.
    fn notify_step_failure(&self, step: &Step, out: &StepOutcome) {
        let failed_controllers = out.attempts.as_ref().map(AttemptReport::failed_controllers).unwrap_or_default();
        let (kind, message) = if !out.ok {
            (EventKind::StepFailed, format!("{} failed: {}", out.description, out.message))
        } else if !failed_controllers.is_empty() {
            let by = out.attempts.as_ref().and_then(|r| r.succeeded_by.clone()).unwrap_or_default();
            (
                EventKind::StepFellBack,
                format!(
                    "{}: done by {by} after {} failed: {}",
                    out.description,
                    failed_controllers.join(", "),
                    out.message
                ),
            )
        } else {
            return;
        };
        let mut event = Event::now(kind, &self.rt.host, message).with("step", step.id.clone()).with("ok", out.ok);
        if !out.ok {
            event = event.with("error", out.message.clone());
        }
        if let Some(report) = out.attempts.as_ref().and_then(|r| serde_json::to_value(r).ok()) {
            event = event.with("attempts", report);
        }
        self.rt.notify_all(&event);
    }

    async fn run_step(&self, step: &Step) -> StepOutcome {
        let t0 = Instant::now();
        let mut attempts = None;
        let result = match tokio::time::timeout(*step.timeout, self.act(step, &mut attempts)).await {
            Ok(r) => r,
            Err(_) => {
                Err(BackendError::new(ErrorKind::Timeout, format!("step did not finish within {}", step.timeout)))
            }
        };
        let (ok, message) = match result {
            Ok(note) => (true, note),
            Err(e) => (false, crate::error::error_chain(&e)),
        };
        StepOutcome {
            id: step.id.clone(),
            description: step.describe(),
            ok,
            message,
            duration_s: t0.elapsed().as_secs_f64(),
            attempts,
            resumed: false,
        }
    }

    async fn act(&self, step: &Step, attempts: &mut Option<AttemptReport>) -> Result<String, BackendError> {
        let rt = &self.rt;
        match &step.action {
            Action::Notify { kind, message, details } => {
                let mut event = Event::now(*kind, &rt.host, message.clone());
                event.details.extend(details.clone());
                // Queued, not sent: a notifier that hangs or fails must not delay or fail the run.
                let refused = rt.notify_all(&event);
                Ok(if refused.is_empty() {
                    format!("queued for {} notifier(s)", rt.notifiers.len())
                } else {
                    let r: Vec<String> = refused.iter().map(ToString::to_string).collect();
                    format!(
                        "queued for {} of {} notifier(s); refused by {}",
                        rt.notifiers.len() - refused.len(),
                        rt.notifiers.len(),
                        r.join("; ")
                    )
                })
            }
            Action::GitOpsSuspend => {
                let g = gitops(rt)?;
                let r = g.suspend().await?;
                Ok(r.actions.join("; "))
            }
            Action::GitOpsResume { force_branch } => {
                let g = gitops(rt)?;
                let opts = crate::gitops::ResumeOptions { force_branch: force_branch.clone(), timeout: *step.timeout };
                let r = g.resume(&opts).await?;
                Ok(r.actions.join("; "))
            }
            Action::Cordon { node } => Ok(cluster(rt)?.cordon(node).await?.to_string()),
            Action::Drain { node } => {
                let c = cluster(rt)?;
                let r = c.drain(node, &self.opts.drain).await?;
                let mut note =
                    format!("evicted {}, deleted {}, left {}", r.evicted.len(), r.deleted.len(), r.left.len());
                if !r.left.is_empty() {
                    note.push_str(&format!(" ({})", r.left.join(", ")));
                }
                if !r.kept.is_empty() {
                    note.push_str(&format!("; kept {}", r.kept.join(", ")));
                }
                if !r.terminating.is_empty() {
                    note.push_str(&format!("; still terminating: {}", r.terminating.join(", ")));
                }
                Ok(note)
            }
            Action::Uncordon { node } => Ok(cluster(rt)?.uncordon(node).await?.to_string()),
            Action::Node { node, op } => {
                let chain = rt
                    .chain(node)
                    .ok_or_else(|| BackendError::new(ErrorKind::Config, format!("no node named {node}")))?;
                // Stopping k3s waits up to the containers' grace: a controller gets that on top.
                let per_controller = match op {
                    NodeOp::StopK3s { grace_s, .. } => {
                        rt.controller_timeout.saturating_add(Duration::from_secs(*grace_s))
                    }
                    _ => rt.controller_timeout,
                };
                let (res, report) = chain.run(op, per_controller, *step.timeout).await;
                let summary = report.tried();
                *attempts = Some(report);
                res.map(|_| summary)
            }
            Action::StartUnit { node, unit } => {
                let chain = rt
                    .chain(node)
                    .ok_or_else(|| BackendError::new(ErrorKind::Config, format!("no node named {node}")))?;
                // Idempotent, so the bootstrap unit can run the startup at every boot: a unit
                // that runs already is left alone. A status that cannot be read is no reason not
                // to start it (a start of a running unit changes nothing).
                if chain.can(Capability::UnitStatus) {
                    let (res, report) =
                        chain.run(&NodeOp::UnitActive(unit.clone()), rt.controller_timeout, *step.timeout).await;
                    if let Ok(NodeOpOutput::Active(true)) = res {
                        *attempts = Some(report);
                        return Ok(format!("{unit} is running already"));
                    }
                }
                let (res, report) =
                    chain.run(&NodeOp::StartUnitNoBlock(unit.clone()), rt.controller_timeout, *step.timeout).await;
                let summary = report.tried();
                *attempts = Some(report);
                res.map(|_| summary)
            }
            Action::WaitUnitActive { node, unit } => {
                let chain = rt
                    .chain(node)
                    .ok_or_else(|| BackendError::new(ErrorKind::Config, format!("no node named {node}")))?;
                let op = NodeOp::UnitActive(unit.clone());
                loop {
                    let (res, report) = chain.run(&op, rt.controller_timeout, rt.controller_timeout).await;
                    match res {
                        Ok(NodeOpOutput::Active(true)) => return Ok(format!("{unit} active ({})", report.tried())),
                        Ok(_) => tracing::debug!(node, unit, "unit not active yet"),
                        Err(e) if e.kind == ErrorKind::Unsupported => return Err(e),
                        Err(e) => tracing::debug!(node, unit, error = %e, "cannot read the unit's state yet"),
                    }
                    tokio::time::sleep(self.opts.wait_poll).await;
                }
            }
            Action::PowerOff { node } => self.power_off(node, *step.timeout, attempts).await,
            Action::WaitClockSynced { node } => {
                let chain = rt
                    .chain(node)
                    .ok_or_else(|| BackendError::new(ErrorKind::Config, format!("no node named {node}")))?;
                loop {
                    let (res, report) =
                        chain.run(&NodeOp::ClockSynced, rt.controller_timeout, rt.controller_timeout).await;
                    match res {
                        Ok(NodeOpOutput::ClockSynced(true)) => {
                            return Ok(format!("clock synchronized ({})", report.tried()));
                        }
                        Ok(_) => tracing::debug!(node, "clock not synchronized yet"),
                        Err(e) if e.kind == ErrorKind::Unsupported => return Err(e),
                        Err(e) => tracing::debug!(node, error = %e, "cannot read the clock's state yet"),
                    }
                    tokio::time::sleep(self.opts.wait_poll).await;
                }
            }
            Action::WaitReachable { node } => {
                let chain = rt
                    .chain(node)
                    .ok_or_else(|| BackendError::new(ErrorKind::Config, format!("no node named {node}")))?;
                loop {
                    let (res, report) = chain.run(&NodeOp::Probe, rt.controller_timeout, rt.controller_timeout).await;
                    match res {
                        Ok(_) => return Ok(format!("answers ({})", report.tried())),
                        Err(e) if e.kind == ErrorKind::Unsupported => return Err(e),
                        Err(e) => tracing::debug!(node, error = %e, "not reachable yet"),
                    }
                    tokio::time::sleep(self.opts.wait_poll).await;
                }
            }
            Action::WaitApi => {
                let c = cluster(rt)?;
                loop {
                    match c.health().await {
                        Ok(()) => return Ok("api healthy".into()),
                        Err(e) => tracing::debug!(error = %e, "api not healthy yet"),
                    }
                    tokio::time::sleep(self.opts.wait_poll).await;
                }
            }
            Action::WaitNodesReady { nodes } => {
                let c = cluster(rt)?;
                loop {
                    match c.nodes().await {
                        Ok(list) => {
                            let missing: Vec<&String> =
                                nodes.iter().filter(|n| !list.iter().any(|x| &x.name == *n && x.ready)).collect();
                            if missing.is_empty() {
                                return Ok(format!("{} node(s) ready", nodes.len()));
                            }
                            tracing::debug!(?missing, "nodes not ready yet");
                        }
                        Err(e) => tracing::debug!(error = %e, "cannot list nodes yet"),
                    }
                    tokio::time::sleep(self.opts.wait_poll).await;
                }
            }
            Action::UpsCommand { source, command, delay, hostsync } => {
                let p = power(rt, source)?;
                let mut notes = Vec::new();
                if let Some(hostsync) = hostsync {
                    // Told even if it was at the trigger: FSD is a latch, and telling twice is
                    // harmless. A refusal does not stop the cut: the clients still get their wait.
                    match p.source.lock().await.raise_fsd().await {
                        Ok(()) => notes.push("FSD set".to_string()),
                        Err(e) => notes.push(format!("FSD not set ({})", crate::error::error_chain(&e))),
                    }
                    notes.push(self.wait_for_other_clients(p, **hostsync).await);
                }
                let sent =
                    p.source.lock().await.kill_power(command.as_deref(), delay.map(|d| *d)).await.map_err(|e| {
                        // What was done before the failure belongs in the report too.
                        if notes.is_empty() {
                            e
                        } else {
                            BackendError { message: format!("{}; {}", notes.join("; "), e.message), ..e }
                        }
                    })?;
                let param = sent.param.as_deref().map(|p| format!(" {p}")).unwrap_or_default();
                let when = match sent.delay_s {
                    Some(0) => "the ups cuts its load at once".to_string(),
                    Some(s) => format!("the ups cuts its load in {s} s"),
                    None => "the ups cuts its load after its own delay".to_string(),
                };
                let note = if sent.note.is_empty() { String::new() } else { format!(" ({})", sent.note) };
                notes.push(format!("{}{param} accepted: {when}{note}", sent.command));
                Ok(notes.join("; "))
            }
            Action::UpsFsd { source } => {
                power(rt, source)?.source.lock().await.raise_fsd().await?;
                Ok("FSD set: the ups's other clients shut down now".into())
            }
            Action::UpsLeave { source } => power(rt, source)?.source.lock().await.detach().await,
        }
    }

    /// Waits until a UPS's other clients have logged out or `hostsync` has passed, as upsmon's
    /// primary does before it cuts the power, and says who was waited on. The source is locked
    /// for each look only, so the daemon's polls go on meanwhile.
    async fn wait_for_other_clients(&self, p: &PowerHandle, hostsync: Duration) -> String {
        let start = Instant::now();
        let mut waited_on = std::collections::BTreeSet::new();
        let mut most = 0;
        loop {
            let error = match p.source.lock().await.other_clients().await {
                Ok(c) if c.count == 0 && most == 0 => return "no other client was attached".into(),
                Ok(c) if c.count == 0 => {
                    return format!(
                        "waited {:.1} s for {most} other client(s) ({}) to log out",
                        start.elapsed().as_secs_f64(),
                        who(&waited_on)
                    );
                }
                Ok(c) => {
                    most = most.max(c.count);
                    waited_on.extend(c.addresses);
                    None
                }
                Err(e) if e.kind == ErrorKind::Unsupported => {
                    return format!("cannot tell whether other clients are attached: {}", e.message);
                }
                Err(e) => Some(e.to_string()),
            };
            let elapsed = start.elapsed();
            if elapsed >= hostsync {
                let now = match error {
                    Some(e) => format!("their number unknown ({e})"),
                    None => format!("{most} other client(s) ({}) still attached", who(&waited_on)),
                };
                return format!(
                    "hostsync {} passed with {now}: cutting the power anyway",
                    humantime::format_duration(hostsync)
                );
            }
            tokio::time::sleep(OTHER_CLIENTS_POLL.min(hostsync.saturating_sub(elapsed))).await;
        }
    }
}

/// How often a primary looks whether the UPS's other clients have logged out (upsmon: 250 ms).
const OTHER_CLIENTS_POLL: Duration = Duration::from_millis(250);

fn who(addresses: &std::collections::BTreeSet<String>) -> String {
    if addresses.is_empty() {
        "address unknown".into()
    } else {
        addresses.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn power<'a>(rt: &'a Runtime, source: &str) -> Result<&'a PowerHandle, BackendError> {
    rt.power
        .iter()
        .find(|p| p.name == source)
        .map(|p| p.as_ref())
        .ok_or_else(|| BackendError::new(ErrorKind::Config, format!("no power source named {source}")))
}

impl Engine {
    /// [`Action::PowerOff`]: the request through the chain, then, unless the controller that did
    /// it confirmed it (a BMC returns only once it reads `Off`), the confirmation: the power
    /// state read until `Off`, or for a node no controller can read the power of, its probe
    /// unanswered for `off_silence`. A node still on after `soft_off_timeout` is cut by a BMC in
    /// its chain. Anything else is a failure that says why the node could not be confirmed off.
    async fn power_off(
        &self,
        node: &str,
        timeout: Duration,
        attempts: &mut Option<AttemptReport>,
    ) -> Result<String, BackendError> {
        let rt = &self.rt;
        let chain =
            rt.chain(node).ok_or_else(|| BackendError::new(ErrorKind::Config, format!("no node named {node}")))?;
        // A BMC waits its own soft-off time before it cuts the power: it gets the whole step.
        let (res, report) = chain.run(&NodeOp::PowerOff, timeout, timeout).await;
        let requested = report.tried();
        let by = report.succeeded_by.clone().unwrap_or_default();
        *attempts = Some(report);
        match res? {
            NodeOpOutput::Power(PowerState::Off) => return Ok(format!("{requested}; confirmed off by {by}")),
            _ => tracing::info!(node, by, "power-off requested; confirming"),
        }
        let opts = &self.opts.power_off;
        let can_read = chain.can(Capability::PowerState);
        let can_probe = chain.can(Capability::Probe);
        if !can_read && !can_probe {
            return Err(BackendError::new(
                ErrorKind::Failed,
                format!(
                    "{requested}; the power-off could not be confirmed: no controller of {node} can read its power \
                     state or probe it"
                ),
            ));
        }
        let soft = humantime::format_duration(opts.soft_off_timeout);
        let silence = humantime::format_duration(opts.off_silence);
        let t0 = Instant::now();
        let soft_end = t0.checked_add(opts.soft_off_timeout).unwrap_or(t0);
        let silence_end = soft_end.checked_add(opts.off_silence).unwrap_or(soft_end);
        let mut silent_since: Option<Instant> = None;
        let mut last_power = None;
        loop {
            let power = if can_read {
                let (res, _) = chain.run(&NodeOp::PowerState, rt.controller_timeout, rt.controller_timeout).await;
                match res {
                    Ok(NodeOpOutput::Power(p)) => Some(p),
                    Ok(_) => None,
                    Err(e) => {
                        tracing::debug!(node, error = %e, "cannot read the power state");
                        None
                    }
                }
            } else {
                None
            };
            if power == Some(PowerState::Off) {
                return Ok(format!("{requested}; confirmed off by its power state"));
            }
            last_power = power.or(last_power);
            // A BMC that reads On outweighs a silent sshd: the OS stops sshd early on its way down.
            if can_probe && power != Some(PowerState::On) {
                let (res, _) = chain.run(&NodeOp::Probe, rt.controller_timeout, rt.controller_timeout).await;
                match res {
                    Err(e) if matches!(e.kind, ErrorKind::Unreachable | ErrorKind::Timeout) => {
                        let since = *silent_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= opts.off_silence {
                            return Ok(format!("{requested}; confirmed off: unanswered for {silence}"));
                        }
                    }
                    _ => silent_since = None,
                }
            } else {
                silent_since = None;
            }
            let now = Instant::now();
            let waiting_for_silence = silent_since.is_some() && now < silence_end;
            if now >= soft_end && !waiting_for_silence {
                break;
            }
            tokio::time::sleep(self.opts.wait_poll).await;
        }
        if !can_read {
            return Err(BackendError::new(
                ErrorKind::Failed,
                format!(
                    "{requested}; the power-off could not be confirmed: {node} still answered {soft} later and no \
                     controller can read its power state or cut it"
                ),
            ));
        }
        // Still on (or unreadable) after its soft-off time: cut the power.
        let state = match last_power {
            Some(PowerState::On) => "still on",
            _ => "not seen off",
        };
        tracing::warn!(node, after = %soft, state, "cutting the power");
        let left = timeout.saturating_sub(t0.elapsed()).max(rt.controller_timeout);
        let (res, forced) = chain.run(&NodeOp::ForceOff, left, left).await;
        let forced_summary = forced.tried();
        if let Some(report) = attempts.as_mut() {
            report.attempts.extend(forced.attempts);
            report.succeeded_by = forced.succeeded_by.or(report.succeeded_by.take());
        }
        match res {
            Ok(NodeOpOutput::Power(PowerState::Off)) => {
                Ok(format!("{requested}; {state} after {soft}: forced off and confirmed ({forced_summary})"))
            }
            Ok(_) => Err(BackendError::new(
                ErrorKind::Failed,
                format!("{requested}; {state} after {soft}: forced off, but that could not be confirmed"),
            )),
            Err(e) => Err(BackendError::new(
                e.kind,
                format!("{requested}; {state} after {soft}, and the forced off failed: {}", e.detail()),
            )),
        }
    }
}

fn cluster(rt: &Runtime) -> Result<&dyn crate::cluster::ClusterApi, BackendError> {
    rt.cluster
        .as_ref()
        .map(|c| c.1.as_ref())
        .ok_or_else(|| BackendError::new(ErrorKind::Config, "no cluster configured"))
}

fn gitops(rt: &Runtime) -> Result<&dyn crate::gitops::GitOpsBootstrap, BackendError> {
    rt.gitops.as_ref().map(|g| g.1.as_ref()).ok_or_else(|| BackendError::new(ErrorKind::Config, "no gitops configured"))
}
