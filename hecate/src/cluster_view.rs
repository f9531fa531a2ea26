//! The nodes and the cluster as Hecate last saw them, for `hecate status`: what each run learned
//! (a node confirmed off, reachable again, its k3s unit stopped or active, Ready, cordoned by
//! whom), kept in `cluster.json` in the state dir with when and by what each fact was seen.
//!
//! Runs are one source of facts; anything else that looks at the nodes (preflight) adds its
//! own through [`ClusterView::observe`] under a key of its own: the table shows the columns
//! below, and every other key as a line under its node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hecate_core::cluster::{Cordoned, Uncordoned};
use hecate_core::engine::{RunReport, StepOutcome};
use hecate_core::node::NodeOp;
use hecate_core::plan::{Action, Plan};
use serde::{Deserialize, Serialize};

/// One thing seen about a node or the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fact {
    /// What was seen, in a word or two (`off`, `yes`, `by hecate`).
    pub value: String,
    /// Whether that is as it should be (a failed check, a node not confirmed off: false).
    pub ok: bool,
    /// When, RFC 3339.
    pub at: String,
    /// By what: `shutdown`, `startup`, `preflight`, ...
    pub source: String,
    /// More, when there is more to say (a failure's message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What is known of each node and of the cluster.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Per node (by name), per fact (`power`, `reachable`, `k3s`, `ready`, `cordoned`, ...).
    #[serde(default)]
    pub nodes: BTreeMap<String, BTreeMap<String, Fact>>,
    /// The cluster's own facts (`api`, `gitops`).
    #[serde(default)]
    pub cluster: BTreeMap<String, Fact>,
}

/// What a preflight found of each node and of the cluster, under `preflight: CHECK` keys (shown as
/// lines under each node; a check that was skipped says nothing new and is left out), kept in
/// `cluster.json`. Failures to write are logged: it is only a view.
pub fn record_preflight(state_dir: &Path, report: &hecate_core::preflight::Report) {
    use hecate_core::preflight::CheckStatus;
    let mut view = ClusterView::load(state_dir);
    for r in report.results.iter().filter(|r| r.status != CheckStatus::Skipped) {
        let node = match r.target.strip_prefix("node/") {
            Some(n) => Some(n),
            None if r.target == "cluster" || r.target == "gitops" => None,
            None => continue,
        };
        let ok = r.status == CheckStatus::Ok;
        let fact = Fact {
            value: if ok { "ok".into() } else { "failing".into() },
            ok,
            at: report.checked_at.clone(),
            source: "preflight".into(),
            detail: (!ok).then(|| r.message.clone()),
        };
        view.observe(node, &format!("preflight: {}", r.check), fact);
    }
    if let Err(e) = view.save(state_dir) {
        tracing::warn!(error = %format!("{e:#}"), "cannot write cluster.json");
    }
}

/// The facts shown as columns, in order; others are listed under their node.
const COLUMNS: [&str; 5] = ["power", "reachable", "k3s", "ready", "cordoned"];

impl ClusterView {
    /// The file in the state dir.
    pub const FILE_NAME: &'static str = "cluster.json";

    /// The file for `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(Self::FILE_NAME)
    }

    /// What was saved; nothing when there is no file or it cannot be read (it is only a view:
    /// the next run writes it anew).
    pub fn load(state_dir: &Path) -> ClusterView {
        std::fs::read_to_string(Self::path(state_dir))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    /// Writes it atomically.
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        hecate_core::history::write_atomic(&Self::path(state_dir), &bytes)?;
        Ok(())
    }

    /// One fact about `node` (or the cluster, with `None`) under `key`: the seam through which
    /// anything that checks the nodes adds what it saw.
    pub fn observe(&mut self, node: Option<&str>, key: &str, fact: Fact) {
        match node {
            Some(n) => {
                self.nodes.entry(n.to_string()).or_default().insert(key.to_string(), fact);
            }
            None => {
                self.cluster.insert(key.to_string(), fact);
            }
        }
    }

    /// What a finished run's steps showed.
    pub fn learn_from_run(&mut self, plan: &Plan, report: &RunReport) {
        let source = report.kind.to_string();
        let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        let outcomes: BTreeMap<&str, &StepOutcome> =
            report.stages.iter().flat_map(|s| &s.steps).map(|o| (o.id.as_str(), o)).collect();
        for step in plan.stages.iter().flat_map(|s| &s.steps) {
            let Some(o) = outcomes.get(step.id.as_str()) else { continue };
            if o.resumed {
                continue;
            }
            let fact = |value: &str, ok: bool| Fact {
                value: value.to_string(),
                ok,
                at: at.clone(),
                source: source.clone(),
                detail: (!o.ok).then(|| hecate_core::text::clean(&o.message, 200)),
            };
            let mut set = |node: &str, key: &str, value: &str, ok: bool| {
                self.observe(Some(node), key, fact(value, ok));
            };
            match &step.action {
                Action::Cordon { node } if o.ok => {
                    let by = if o.message == Cordoned::ByOthers.to_string() { "by someone else" } else { "by hecate" };
                    set(node, "cordoned", by, true);
                }
                Action::Uncordon { node } if o.ok => {
                    let still = o.message == Uncordoned::LeftCordoned.to_string();
                    set(node, "cordoned", if still { "by someone else" } else { "no" }, true);
                }
                Action::Node { node, op: NodeOp::StopK3s { .. } | NodeOp::StopUnit(_) } => {
                    set(node, "k3s", if o.ok { "stopped" } else { "stop failed" }, o.ok)
                }
                Action::Node { node, op: NodeOp::PowerOn } => {
                    set(node, "power", if o.ok { "on" } else { "power-on failed" }, o.ok)
                }
                Action::StartUnit { node, .. } => {
                    let value = match (o.ok, o.message.contains("running already")) {
                        (true, true) => "active",
                        (true, false) => "started",
                        (false, _) => "start failed",
                    };
                    set(node, "k3s", value, o.ok);
                }
                Action::WaitUnitActive { node, .. } => {
                    set(node, "k3s", if o.ok { "active" } else { "not active" }, o.ok)
                }
                Action::PowerOff { node } if o.ok => {
                    // Confirmed off: nothing on it answers or runs any more.
                    set(node, "power", "off", true);
                    set(node, "reachable", "no", true);
                    set(node, "ready", "no", true);
                    set(node, "k3s", "stopped", true);
                }
                Action::PowerOff { node } => set(node, "power", "not confirmed off", false),
                Action::WaitReachable { node } => {
                    set(node, "reachable", if o.ok { "yes" } else { "no" }, o.ok);
                    if o.ok {
                        set(node, "power", "on", true);
                    }
                }
                Action::WaitClockSynced { node } => {
                    set(node, "clock", if o.ok { "synced" } else { "not synced" }, o.ok)
                }
                Action::WaitNodesReady { nodes } => {
                    for node in nodes {
                        set(node, "ready", if o.ok { "yes" } else { "not all were" }, o.ok);
                    }
                }
                Action::WaitApi => self.observe(None, "api", fact(if o.ok { "healthy" } else { "not healthy" }, o.ok)),
                Action::GitOpsSuspend => {
                    self.observe(None, "gitops", fact(if o.ok { "suspended" } else { "suspend failed" }, o.ok))
                }
                Action::GitOpsResume { .. } => {
                    self.observe(None, "gitops", fact(if o.ok { "resumed" } else { "resume failed" }, o.ok))
                }
                _ => {}
            }
        }
    }

    /// The table `hecate status` shows, for the nodes in `names` (the config's) in that order.
    pub fn render(&self, names: &[String]) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        if names.is_empty() {
            return s;
        }
        let _ = writeln!(s, "\nnodes as last seen:");
        let mut rows =
            vec![["node", "power", "reachable", "k3s", "ready", "cordoned", "seen"].map(String::from).to_vec()];
        let mut extra = Vec::new();
        for n in names {
            let facts = self.nodes.get(n);
            let mut row = vec![n.clone()];
            for c in COLUMNS {
                row.push(
                    facts
                        .and_then(|f| f.get(c))
                        .map(|f| if f.ok { f.value.clone() } else { format!("{} (!)", f.value) })
                        .unwrap_or_else(|| "?".into()),
                );
            }
            let newest = facts.and_then(|f| f.values().max_by(|a, b| a.at.cmp(&b.at)));
            row.push(newest.map(|f| format!("{} {}", f.source, f.at)).unwrap_or_else(|| "never".into()));
            rows.push(row);
            for (key, f) in facts.into_iter().flatten().filter(|(k, _)| !COLUMNS.contains(&k.as_str())) {
                let detail = f.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default();
                extra.push(format!("  {n} {key}: {}{detail} ({} {})", f.value, f.source, f.at));
            }
            for (key, f) in facts.into_iter().flatten().filter(|(k, f)| COLUMNS.contains(&k.as_str()) && !f.ok) {
                if let Some(d) = &f.detail {
                    extra.push(format!("  {n} {key}: {d}"));
                }
            }
        }
        s.push_str(&table(&rows));
        for e in extra {
            let _ = writeln!(s, "{e}");
        }
        if self.nodes.is_empty() {
            let _ = writeln!(s, "  (no run has seen the nodes yet: a startup, a shutdown or a drill fills this in)");
        }
        if !self.cluster.is_empty() {
            let parts: Vec<String> =
                self.cluster.iter().map(|(k, f)| format!("{k} {} ({} {})", f.value, f.source, f.at)).collect();
            let _ = writeln!(s, "cluster: {}", parts.join("; "));
        }
        s
    }
}

/// Rows as columns padded to their widest cell, two spaces apart, indented by two.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|v| v.chars().count()).max().unwrap_or(0)).collect();
    let mut s = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, v)| if i + 1 == r.len() { v.clone() } else { format!("{v:<w$}", w = widths[i]) })
            .collect();
        s.push_str("  ");
        s.push_str(cells.join("  ").trim_end());
        s.push('\n');
    }
    s
}

/// After a run: what it learned, saved. A view that cannot be saved is logged, nothing more.
pub fn record(state_dir: &Path, plan: &Plan, report: &RunReport) {
    let mut view = ClusterView::load(state_dir);
    view.learn_from_run(plan, report);
    if let Err(e) = view.save(state_dir) {
        tracing::warn!(error = %format!("{e:#}"), "cannot write cluster.json (what hecate status shows of the nodes)");
    }
}

#[cfg(test)]
mod tests {
    use hecate_core::preflight::{CheckResult, CheckStatus, Report};

    use super::*;

    #[test]
    fn a_preflight_adds_its_checks_to_the_nodes_view() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let result = |target: &str, check: &str, status, message: &str| CheckResult {
            target: target.into(),
            check: check.into(),
            status,
            message: message.into(),
        };
        let report = Report {
            checked_at: "2026-12-01T03:00:00Z".into(),
            duration_s: 1.0,
            results: vec![
                result("node/n1", "ssh_systemd:sudo", CheckStatus::Failed, "sudo refuses systemctl stop k3s"),
                result("node/n1", "ipmi:login", CheckStatus::Skipped, "not checked"),
                result("cluster", "kube:api", CheckStatus::Ok, "answers"),
                result("ups/u", "nut:login", CheckStatus::Ok, "primary"),
            ],
        };
        record_preflight(dir.path(), &report);
        let view = ClusterView::load(dir.path());
        let sudo = &view.nodes["n1"]["preflight: ssh_systemd:sudo"];
        assert!(!sudo.ok && sudo.source == "preflight", "{sudo:?}");
        assert_eq!(sudo.detail.as_deref(), Some("sudo refuses systemctl stop k3s"));
        assert!(!view.nodes["n1"].contains_key("preflight: ipmi:login"), "a skipped check says nothing");
        assert!(view.cluster["preflight: kube:api"].ok);
        assert_eq!(view.nodes.len(), 1, "a UPS is not a node: {view:?}");
    }
}
