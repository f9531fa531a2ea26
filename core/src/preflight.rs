//! Preflight: checking, without changing anything, that each part of the shutdown and startup
//! path would work today: a node's SSH host key and login and the `sudo` rule for exactly the
//! commands the plans run, a BMC's credentials and power state, the Wake-on-LAN interface, the
//! Kubernetes API, its credentials and the permissions the plans need, each NUT login, a
//! forwarder's coordinator, and whether each notifier could deliver (without sending anything).
//! The worst UPS failure is a shutdown path that broke silently months before the outage (a
//! rotated key, an edited sudoers file, a changed BMC password, an expired certificate); the
//! daemon runs these checks every `preflight.interval` and `hecate preflight` on demand.
//!
//! A backend checks itself through its trait's `preflight` method, whose default says "not
//! checkable", so a third-party backend needs nothing. [`run`] asks every backend of a runtime
//! and names each answer by target (`node/NAME`, `ups/NAME`, `cluster`, `gitops`,
//! `notifier/NAME`) and check
//! (a node controller's are prefixed with its type: `ssh_systemd:sudo`). [`Tracker`] is pure: it
//! turns successive reports into the state of each (target, check) and the changes worth an event
//! (`preflight_failed`, `preflight_recovered`); the supervisor holds one.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::error::BackendError;
use crate::node::{ControllerChain, NodeOp};
use crate::plan::{Action, Plan};
use crate::runtime::{Runtime, join_all};

/// The state of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// It would work.
    Ok,
    /// It would not: the message says why.
    Failed,
    /// Not checked: the backend cannot check it without acting, or what it depends on failed
    /// first (a login cannot be checked on a node that does not answer).
    Skipped,
}

impl CheckStatus {
    /// `ok`, `failed` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
        }
    }
}

impl fmt::Display for CheckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a backend says about one of its checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The check's name within its backend (`host_key`, `sudo`, `login`, `rbac:create pods/eviction`).
    pub name: String,
    /// Its state.
    pub status: CheckStatus,
    /// What was found, in words (for a failure: what is wrong and, where known, what to do).
    pub message: String,
}

impl Check {
    /// A check that passed.
    pub fn ok(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self { name: name.into(), status: CheckStatus::Ok, message: message.into() }
    }

    /// A check that failed.
    pub fn failed(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self { name: name.into(), status: CheckStatus::Failed, message: message.into() }
    }

    /// A check that was not made.
    pub fn skipped(name: impl Into<String>, message: impl Into<String>) -> Self {
        Self { name: name.into(), status: CheckStatus::Skipped, message: message.into() }
    }

    /// Passed with the note of `Ok`, or failed with the error's kind and detail.
    pub fn from_result(name: impl Into<String>, result: Result<String, BackendError>) -> Self {
        match result {
            Ok(note) => Self::ok(name, note),
            Err(e) => Self::failed(name, format!("{}: {}", e.kind, e.detail())),
        }
    }
}

/// What a backend without a preflight of its own answers: one skipped check, so status shows
/// that nothing was checked rather than nothing at all.
pub fn not_checkable(what: &str) -> Vec<Check> {
    vec![Check::skipped("preflight", format!("{what} has no preflight check: it cannot be checked without acting"))]
}

/// What a power source's preflight returns: a future that owns what it needs, so the source's
/// lock (which the poller also takes) is held only while the future is made, never while it runs.
pub type PreflightFuture = Pin<Box<dyn Future<Output = Vec<Check>> + Send + 'static>>;

/// What the cluster API must be allowed to do for the plans this config gives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterNeeds {
    /// The shutdown drains the nodes (`shutdown.drain`).
    pub drain: bool,
    /// A pod a disruption budget keeps refusing is deleted (`shutdown.drain_fallback: delete`).
    pub delete_pods: bool,
}

impl ClusterNeeds {
    /// What `cfg`'s plans need.
    pub fn of(cfg: &Config) -> Self {
        Self {
            drain: cfg.shutdown.drain,
            delete_pods: cfg.shutdown.drain && cfg.shutdown.drain_fallback == crate::cluster::DrainFallback::Delete,
        }
    }
}

/// One check of one target, as reports and status carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// What was checked: `node/NAME`, `ups/NAME`, `cluster`, `gitops` or `coordinator`.
    pub target: String,
    /// Which check: a node controller's prefixed with its type (`ssh_systemd:sudo`,
    /// `ipmi:login`), a cluster's with its backend's (`kube:rbac:patch nodes`).
    pub check: String,
    /// Its state.
    pub status: CheckStatus,
    /// What was found.
    pub message: String,
}

impl CheckResult {
    /// `check` of `target`, its text cleaned and bounded (a peer's words may be in it).
    pub fn new(target: impl Into<String>, check: impl Into<String>, c: Check) -> Self {
        let clean = |s: &str| crate::text::clean(s, crate::text::MESSAGE_CHARS);
        Self {
            target: clean(&target.into()),
            check: clean(&check.into()),
            status: c.status,
            message: clean(&c.message),
        }
    }
}

/// One preflight: every check and when it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When it started, RFC 3339.
    pub checked_at: String,
    /// How long it took, seconds.
    pub duration_s: f64,
    /// Every check, by target then check.
    pub results: Vec<CheckResult>,
}

impl Report {
    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.results.iter().filter(|r| r.status == CheckStatus::Failed)
    }

    /// Nothing failed.
    pub fn ok(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The report for a terminal: one line per check, grouped by target, then a summary line.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let width = self.results.iter().map(|r| r.check.chars().count()).max().unwrap_or(0);
        let mut target = None;
        for r in &self.results {
            if target != Some(&r.target) {
                let _ = writeln!(out, "{}", r.target);
                target = Some(&r.target);
            }
            let mark = match r.status {
                CheckStatus::Ok => "ok     ",
                CheckStatus::Failed => "FAILED ",
                CheckStatus::Skipped => "skipped",
            };
            let _ = writeln!(out, "  {mark} {:<width$}  {}", r.check, r.message);
        }
        let failed = self.failures().count();
        let skipped = self.results.iter().filter(|r| r.status == CheckStatus::Skipped).count();
        let passed = self.results.len() - failed - skipped;
        let _ = writeln!(
            out,
            "\npreflight {}: {passed} ok, {failed} failed, {skipped} skipped in {:.1} s ({})",
            if failed == 0 { "ok" } else { "FAILED" },
            self.duration_s,
            self.checked_at
        );
        crate::text::clean_lines(&out)
    }
}

/// How [`run`] runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The longest one backend's checks may take; one that runs out fails with that.
    pub timeout: Duration,
}

/// Every (node, operation) the shutdown and startup plans of `cfg` run through node controllers,
/// each operation once per node, in plan order: what each node's controllers must be able to do.
pub fn node_ops(cfg: &Config, rt: &Runtime) -> BTreeMap<String, Vec<NodeOp>> {
    let shutdown = crate::plan::shutdown_plan(cfg, rt, "preflight");
    let startup = crate::plan::startup_plan(cfg, rt, "preflight", None);
    let mut out: BTreeMap<String, Vec<NodeOp>> = BTreeMap::new();
    for (node, op) in plan_node_ops(&shutdown).into_iter().chain(plan_node_ops(&startup)) {
        let ops = out.entry(node).or_default();
        if !ops.contains(&op) {
            ops.push(op);
        }
    }
    out
}

/// The node operations a plan's steps run, as the engine runs them.
fn plan_node_ops(plan: &Plan) -> Vec<(String, NodeOp)> {
    let mut out = Vec::new();
    for step in plan.steps() {
        let (node, ops) = match &step.action {
            Action::Node { node, op } => (node, vec![op.clone()]),
            // A unit that runs already is not started again.
            Action::StartUnit { node, unit } => {
                (node, vec![NodeOp::UnitActive(unit.clone()), NodeOp::StartUnitNoBlock(unit.clone())])
            }
            Action::WaitUnitActive { node, unit } => (node, vec![NodeOp::UnitActive(unit.clone())]),
            // Requested, then confirmed by the power state or by silence, forced by a BMC.
            Action::PowerOff { node } => {
                (node, vec![NodeOp::PowerOff, NodeOp::PowerState, NodeOp::ForceOff, NodeOp::Probe])
            }
            Action::WaitClockSynced { node } => (node, vec![NodeOp::ClockSynced]),
            Action::WaitReachable { node } => (node, vec![NodeOp::Probe]),
            _ => continue,
        };
        out.extend(ops.into_iter().map(|op| (node.clone(), op)));
    }
    out
}

/// Bounds one backend's checks by `timeout`: one that does not answer in time fails with that.
async fn bounded(timeout: Duration, fut: impl Future<Output = Vec<Check>>) -> Vec<Check> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(checks) => checks,
        Err(_) => vec![Check::failed(
            "preflight",
            format!("its checks did not finish within {} (preflight.timeout)", humantime::format_duration(timeout)),
        )],
    }
}

impl ControllerChain {
    /// Each controller's preflight for the operations it would be asked to run (those of `ops`
    /// its capabilities cover), as (check name, check): each name prefixed with the controller's
    /// type, and `#2`, `#3` for a second controller of one type.
    pub async fn preflight(&self, ops: &[NodeOp], timeout: Duration) -> Vec<(String, Check)> {
        let controllers = self.controllers();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let prefixes: Vec<String> = controllers
            .iter()
            .map(|c| {
                let n = seen.entry(c.kind()).or_default();
                *n += 1;
                if *n == 1 { c.kind().to_string() } else { format!("{}#{n}", c.kind()) }
            })
            .collect();
        let answers = join_all(controllers.iter().map(|c| {
            let mine: Vec<NodeOp> =
                ops.iter().filter(|op| c.capabilities().contains(&op.capability())).cloned().collect();
            async move { bounded(timeout, c.preflight(&mine)).await }
        }))
        .await;
        prefixes
            .into_iter()
            .zip(answers)
            .flat_map(|(prefix, checks)| checks.into_iter().map(move |c| (format!("{prefix}:{}", c.name), c)))
            .collect()
    }
}

/// Runs every backend's preflight concurrently, each bounded by `opts.timeout`. A backend that
/// could not be built is a failed `build` check of its target.
pub async fn run(cfg: &Config, rt: &Runtime, opts: &Options) -> Vec<CheckResult> {
    let timeout = opts.timeout;
    let ops = node_ops(cfg, rt);
    let no_ops = Vec::new();
    let nodes = join_all(rt.nodes.iter().map(|(name, chain)| {
        let ops = ops.get(name).unwrap_or(&no_ops);
        async move {
            chain
                .preflight(ops, timeout)
                .await
                .into_iter()
                .map(|(check, c)| CheckResult::new(format!("node/{name}"), check, c))
                .collect::<Vec<_>>()
        }
    }));
    let power = join_all(rt.power.iter().map(|p| async move {
        // The lock is held only to make the future: the poller is never kept waiting by a check.
        let checks = bounded(timeout, async {
            let fut = p.source.lock().await.preflight();
            fut.await
        })
        .await;
        checks
            .into_iter()
            .map(|c| CheckResult::new(format!("ups/{}", p.name), format!("{}:{}", p.kind, c.name), c))
            .collect::<Vec<_>>()
    }));
    let needs = ClusterNeeds::of(cfg);
    let cluster = async {
        let Some((kind, api)) = &rt.cluster else { return Vec::new() };
        bounded(timeout, api.preflight(&needs))
            .await
            .into_iter()
            .map(|c| CheckResult::new("cluster", format!("{kind}:{}", c.name), c))
            .collect()
    };
    let gitops = async {
        let Some((kind, g)) = &rt.gitops else { return Vec::new() };
        bounded(timeout, g.preflight())
            .await
            .into_iter()
            .map(|c| CheckResult::new("gitops", format!("{kind}:{}", c.name), c))
            .collect()
    };
    let notifiers = join_all(rt.notifiers.notifiers().into_iter().map(|n| async move {
        let target = format!("notifier/{}", n.name());
        bounded(timeout, n.preflight())
            .await
            .into_iter()
            .map(|c| CheckResult::new(target.clone(), c.name.clone(), c))
            .collect::<Vec<_>>()
    }));
    type PerBackend = Vec<Vec<CheckResult>>;
    let (nodes, power, cluster, gitops, notifiers): (
        PerBackend,
        PerBackend,
        Vec<CheckResult>,
        Vec<CheckResult>,
        PerBackend,
    ) = tokio::join!(nodes, power, cluster, gitops, notifiers);
    let mut out: Vec<CheckResult> = power.into_iter().flatten().collect();
    // Sources left out of the runtime because they could not be built.
    for b in rt.unavailable.iter().filter(|b| b.field.starts_with("power_sources[")) {
        let index = b.field.trim_start_matches("power_sources[").trim_end_matches(']').parse::<usize>().ok();
        let name =
            index.and_then(|i| cfg.power_sources.get(i)).map_or_else(|| b.field.clone(), |p| p.name().to_string());
        out.push(CheckResult::new(format!("ups/{name}"), "build", Check::failed("build", b.to_string())));
    }
    out.extend(nodes.into_iter().flatten());
    out.extend(cluster);
    out.extend(gitops);
    out.extend(notifiers.into_iter().flatten());
    // Notifiers left out because they could not be built (a password file gone, say).
    // Named by their place in the config: a name is known only to a notifier that was built.
    for b in rt.unavailable.iter().filter(|b| b.field.starts_with("notifiers[")) {
        out.push(CheckResult::new(format!("notifier/{}", b.field), "build", Check::failed("build", b.to_string())));
    }
    out
}

/// The last known state of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckState {
    /// What was checked.
    pub target: String,
    /// Which check.
    pub check: String,
    /// Its state at the last preflight that checked it.
    pub status: CheckStatus,
    /// What that preflight found.
    pub message: String,
    /// When that preflight ran, RFC 3339.
    pub checked_at: String,
    /// Since which preflight it has had this state, RFC 3339.
    pub since: String,
}

/// A check that changed in a way worth an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Failed (it was ok, or is new) or recovered (it had failed).
    pub kind: ChangeKind,
    /// What was checked.
    pub target: String,
    /// Which check.
    pub check: String,
    /// What the preflight found.
    pub message: String,
}

/// Which way a check changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// It fails now.
    Failed,
    /// It failed and passes now.
    Recovered,
}

/// The state of every check across preflights, and the changes between them. Pure.
///
/// A failure is a change when the check was ok or not known before; a pass is one when it had
/// failed. A skipped check keeps what it was last seen as (a node that stopped answering does not
/// make its host key "recovered"); one skipped from the first is kept as skipped. A check no
/// longer reported at all (the config changed) is forgotten without an event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracker {
    states: BTreeMap<(String, String), CheckState>,
    last: Option<(String, f64)>,
}

impl Tracker {
    /// Takes one preflight's report; returns what changed, in report order.
    pub fn observe(&mut self, report: &Report) -> Vec<Change> {
        let mut changes = Vec::new();
        let mut next = BTreeMap::new();
        for r in &report.results {
            let key = (r.target.clone(), r.check.clone());
            let before = self.states.remove(&key);
            let state = match (before, r.status) {
                (Some(old), CheckStatus::Skipped) if old.status != CheckStatus::Skipped => old,
                (before, status) => {
                    let was = before.as_ref().map(|b| b.status);
                    let change = match (was, status) {
                        (Some(CheckStatus::Failed), CheckStatus::Failed) => None,
                        (_, CheckStatus::Failed) => Some(ChangeKind::Failed),
                        (Some(CheckStatus::Failed), CheckStatus::Ok) => Some(ChangeKind::Recovered),
                        _ => None,
                    };
                    if let Some(kind) = change {
                        changes.push(Change {
                            kind,
                            target: r.target.clone(),
                            check: r.check.clone(),
                            message: r.message.clone(),
                        });
                    }
                    let since = match before {
                        Some(b) if b.status == status => b.since,
                        _ => report.checked_at.clone(),
                    };
                    CheckState {
                        target: r.target.clone(),
                        check: r.check.clone(),
                        status,
                        message: r.message.clone(),
                        checked_at: report.checked_at.clone(),
                        since,
                    }
                }
            };
            next.insert(key, state);
        }
        self.states = next;
        self.last = Some((report.checked_at.clone(), report.duration_s));
        changes
    }

    /// Every check's last known state, by target then check.
    pub fn states(&self) -> impl Iterator<Item = &CheckState> {
        self.states.values()
    }

    /// When the last preflight ran (RFC 3339) and how long it took, once one has.
    pub fn last(&self) -> Option<(&str, f64)> {
        self.last.as_ref().map(|(at, d)| (at.as_str(), *d))
    }

    /// The checks failing as last seen.
    pub fn failing(&self) -> impl Iterator<Item = &CheckState> {
        self.states.values().filter(|s| s.status == CheckStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(at: &str, results: &[(&str, &str, CheckStatus)]) -> Report {
        Report {
            checked_at: at.into(),
            duration_s: 1.0,
            results: results
                .iter()
                .map(|(t, c, s)| CheckResult {
                    target: (*t).into(),
                    check: (*c).into(),
                    status: *s,
                    message: format!("{t} {c} {s}"),
                })
                .collect(),
        }
    }

    #[test]
    fn a_change_is_an_event_once_and_skips_keep_the_last_state() {
        use CheckStatus::{Failed, Ok, Skipped};
        let mut t = Tracker::default();
        let kinds = |c: Vec<Change>| c.into_iter().map(|c| (c.check, c.kind)).collect::<Vec<_>>();
        // first sight: a failure is news, a pass is not
        let c = t.observe(&report("t1", &[("node/a", "ssh:host_key", Ok), ("node/a", "ssh:sudo", Failed)]));
        assert_eq!(kinds(c), [("ssh:sudo".to_string(), ChangeKind::Failed)]);
        // the same again: nothing
        let c = t.observe(&report("t2", &[("node/a", "ssh:host_key", Ok), ("node/a", "ssh:sudo", Failed)]));
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(t.failing().next().map(|s| s.since.as_str()), Some("t1"));
        // the node stops answering: its checks are skipped and keep their last state
        let c = t.observe(&report("t3", &[("node/a", "ssh:host_key", Skipped), ("node/a", "ssh:sudo", Skipped)]));
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(t.failing().count(), 1);
        // repaired: recovered once
        let c = t.observe(&report("t4", &[("node/a", "ssh:host_key", Ok), ("node/a", "ssh:sudo", Ok)]));
        assert_eq!(kinds(c), [("ssh:sudo".to_string(), ChangeKind::Recovered)]);
        let c = t.observe(&report("t5", &[("node/a", "ssh:host_key", Ok), ("node/a", "ssh:sudo", Ok)]));
        assert!(c.is_empty());
        // broken again: failed again
        let c = t.observe(&report("t6", &[("node/a", "ssh:host_key", Failed)]));
        assert_eq!(kinds(c), [("ssh:host_key".to_string(), ChangeKind::Failed)]);
        // sudo no longer reported: forgotten
        assert_eq!(t.states().count(), 1);
        assert_eq!(t.last(), Some(("t6", 1.0)));
    }

    #[test]
    fn the_report_reads_as_a_table_and_says_failed() {
        let r = report(
            "2026-01-01T00:00:00Z",
            &[("node/a", "ssh_systemd:sudo", CheckStatus::Failed), ("node/a", "ipmi:login", CheckStatus::Ok)],
        );
        let text = r.render();
        assert!(text.contains("node/a\n  FAILED  ssh_systemd:sudo"), "{text}");
        assert!(text.contains("preflight FAILED: 1 ok, 1 failed, 0 skipped"), "{text}");
        assert!(!r.ok());
    }
}
