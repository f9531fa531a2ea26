//! Every number has a range: values that bypass `config check` (a plan built in code, a damaged
//! journal, a damaged runs.json) never panic a run, and the budget learns only from runs that
//! say something about the current plan.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hecate_core::budget::{self, BudgetConfig, BudgetSource};
use hecate_core::cluster::{DrainFallback, DrainOptions};
use hecate_core::config::Config;
use hecate_core::delivery::{Delivery, DeliveryOptions};
use hecate_core::duration::HumanDuration;
use hecate_core::engine::{Engine, EngineOptions, Journal, Outcome};
use hecate_core::history::{History, RunKind, RunOutcome, RunRecord};
use hecate_core::notify::EventKind;
use hecate_core::plan::{self, Action, OnFailure, Plan, PlanFingerprint, PlanKind, Stage, Step};
use hecate_core::runtime::Runtime;

// The core alone links no backends: a power source and a node controller that only parse.
mod stub {
    use hecate_core::node::{NodeController, NodeControllerConfig, NodeInfo};
    use hecate_core::power::{PowerSource, PowerSourceConfig};
    use hecate_core::{BackendError, BuildContext};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct StubUps {
        pub name: String,
    }

    #[typetag::serde(name = "stub_ups")]
    impl PowerSourceConfig for StubUps {
        fn name(&self) -> &str {
            &self.name
        }
        fn build(&self, _: &BuildContext) -> Result<Box<dyn PowerSource>, BackendError> {
            Err(BackendError::unsupported("stub"))
        }
    }

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct StubNode {
        #[serde(default)]
        pub timeout: Option<hecate_core::duration::HumanDuration>,
    }

    #[typetag::serde(name = "stub_node")]
    impl NodeControllerConfig for StubNode {
        fn build(&self, _: &NodeInfo, _: &BuildContext) -> Result<Box<dyn NodeController>, BackendError> {
            Err(BackendError::unsupported("stub"))
        }
    }
}

/// A runtime with no backends: notify steps are all a plan can run on it.
fn bare_runtime() -> Arc<Runtime> {
    Arc::new(Runtime {
        host: "h".into(),
        power: Vec::new(),
        nodes: BTreeMap::new(),
        cluster: None,
        gitops: None,
        notifiers: Delivery::new(Vec::new(), DeliveryOptions::default()),
        controller_timeout: Duration::from_secs(1),
        unavailable: Vec::new(),
    })
}

fn engine() -> Engine {
    let drain = DrainOptions { timeout: Duration::from_secs(1), fallback: DrainFallback::Leave, ..Default::default() };
    let opts = EngineOptions { wait_poll: Duration::from_millis(10), drain, ..Default::default() };
    Engine::new(bare_runtime(), opts, Arc::new(|_| {}))
}

fn notify_step(id: &str) -> Step {
    Step {
        id: id.into(),
        action: Action::Notify { kind: EventKind::StageFinished, message: id.into(), details: Default::default() },
        via: Vec::new(),
        timeout: HumanDuration::from_secs(5),
        on_failure: OnFailure::Continue,
    }
}

fn plan_of(concurrency: usize, ids: &[&str]) -> Plan {
    Plan {
        kind: PlanKind::Shutdown,
        reason: "test".into(),
        stages: vec![Stage {
            name: "notify".into(),
            concurrency,
            steps: ids.iter().map(|id| notify_step(id)).collect(),
        }],
        finally: None,
    }
}

#[tokio::test]
async fn a_plan_built_in_code_with_a_huge_concurrency_runs() {
    // More permits than a semaphore can hold: today's engine would panic building it.
    let report = engine().execute(&plan_of(usize::MAX, &["notify/a", "notify/b"]), None).await;
    assert_eq!(report.outcome, Outcome::Success);
    assert_eq!(report.stages[0].steps.len(), 2);
    let report = engine().execute(&plan_of(0, &["notify/a"]), None).await;
    assert_eq!(report.outcome, Outcome::Success, "a concurrency of 0 still runs one step at a time");
}

#[tokio::test]
async fn a_journal_step_with_an_impossible_duration_resumes_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path();
    let journal_path = Journal::path_for(state, PlanKind::Shutdown);
    let line = |outcome: serde_json::Value| {
        serde_json::json!({"event": "end", "at": "2026-01-04T02:11:10.000Z", "outcome": outcome}).to_string()
    };
    let text = [
        serde_json::json!({"event": "run", "kind": "shutdown", "reason": "test", "started_at": "2026-01-04T02:11:09.000Z"})
            .to_string(),
        line(serde_json::json!({"id": "notify/a", "description": "a", "ok": true, "message": "", "duration_s": 1e300})),
        line(serde_json::json!({"id": "notify/b", "description": "b", "ok": true, "message": "", "duration_s": -7.0})),
    ]
    .join("\n");
    std::fs::write(&journal_path, text + "\n").unwrap();

    let mut journal = Journal::open(state, PlanKind::Shutdown, "test", true).unwrap();
    assert!(journal.is_resumed());
    assert_eq!(journal.earlier_elapsed_s(), 0.0, "impossible step durations count as 0 s");
    let report = engine().execute(&plan_of(2, &["notify/a", "notify/b", "notify/c"]), Some(&mut journal)).await;
    assert_eq!(report.outcome, Outcome::Success);
    assert!(report.duration_s.is_finite() && report.duration_s < 60.0, "{}", report.duration_s);
    let resumed: Vec<bool> = report.stages[0].steps.iter().map(|s| s.resumed).collect();
    assert_eq!(resumed, [true, true, false]);
    assert!(report.stages[0].steps.iter().all(|s| s.duration_s.is_finite() && s.duration_s >= 0.0));

    let record = RunRecord::from_report(&report, "h", None);
    assert_eq!(record.started_at, "2026-01-04T02:11:09Z", "the interrupted run's start, in whole seconds");
    let runs = state.join("runs.json");
    History::append(&runs, record).unwrap();
    journal.complete().unwrap();
    assert!(!journal_path.exists(), "the journal is removed once the run is recorded");
    let loaded = History::load(&runs).unwrap();
    assert!(loaded.warning.is_none());
    assert_eq!(loaded.history.runs.len(), 1);
    assert_eq!(loaded.history.runs[0].kind, RunKind::Shutdown);
}

#[test]
fn a_report_with_impossible_durations_still_makes_a_readable_record() {
    let mut report = hecate_core::engine::RunReport {
        kind: PlanKind::Shutdown,
        reason: "r".into(),
        started_at: "not a time".into(),
        duration_s: f64::NAN,
        outcome: Outcome::Success,
        stages: Vec::new(),
    };
    report.stages.push(hecate_core::engine::StageReport {
        name: "stop-agents".into(),
        duration_s: f64::INFINITY,
        steps: Vec::new(),
    });
    let record = RunRecord::from_report(&report, "h", None);
    assert_eq!(record.duration_s, 0.0);
    assert_eq!(record.stages[0].duration_s, 0.0);
    assert!(record.started_at_time().is_some(), "an unreadable start becomes now");
    // JSON has no NaN: a NaN would be written as null and make runs.json unreadable.
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs.json");
    History::append(&runs, record).unwrap();
    assert!(History::load(&runs).unwrap().warning.is_none());
}

fn config(nodes: &str, extra: &str) -> Config {
    let yaml = format!("host: h\npower_sources:\n  - {{ type: stub_ups, name: u }}\n{nodes}{extra}");
    Config::from_yaml(&yaml, Path::new("t.yaml")).map(|(c, _)| c).unwrap()
}

const THREE_NODES: &str = "\
nodes:
  - { name: s0, address: 10.0.0.1, role: server, init: true, controllers: [ { type: stub_node } ] }
  - { name: w1, address: 10.0.0.2, role: agent, controllers: [ { type: stub_node } ] }
  - { name: w2, address: 10.0.0.3, role: agent, controllers: [ { type: stub_node } ] }
";

#[test]
fn the_fingerprint_follows_the_nodes_and_what_the_plan_does_with_them() {
    let base = plan::shutdown_fingerprint(&config(THREE_NODES, ""));
    assert!(base.id.starts_with("fnv1a64:") && base.id.len() == "fnv1a64:".len() + 16, "{}", base.id);
    // stop w1, w2, s0; power off all three
    assert_eq!(base.node_steps, 6);
    assert_eq!(plan::shutdown_fingerprint(&config(THREE_NODES, "")), base, "stable");
    // How is not what: timeouts and controller settings do not change it.
    let slower = config(
        &THREE_NODES.replace(
            "[ { type: stub_node } ] }\n  - { name: w2",
            "[ { type: stub_node, timeout: 9s } ] }\n  - { name: w2",
        ),
        "shutdown: { step_timeout: 5m, controller_timeout: 1m, concurrency: 1 }\n",
    );
    assert_eq!(plan::shutdown_fingerprint(&slower), base);
    // Another node set, another role, no power-off: another plan.
    let two = THREE_NODES.lines().take(3).collect::<Vec<_>>().join("\n") + "\n";
    for other in [
        config(&two, ""),
        config(
            &THREE_NODES
                .replace("name: w2, address: 10.0.0.3, role: agent", "name: w2, address: 10.0.0.3, role: server"),
            "",
        ),
        config(THREE_NODES, "shutdown: { power_off_nodes: false }\n"),
    ] {
        assert_ne!(plan::shutdown_fingerprint(&other), base);
    }
    let none = plan::shutdown_fingerprint(&config("", ""));
    assert_eq!(none.node_steps, 0);
}

fn success(day: u32, d: f64, plan: Option<&PlanFingerprint>) -> RunRecord {
    let mut r: RunRecord = serde_json::from_value(serde_json::json!({
        "kind": "shutdown", "started_at": format!("2026-01-{day:02}T00:00:00Z"), "duration_s": 1.0, "outcome": "success"
    }))
    .unwrap();
    // Set here: JSON cannot hold an infinity.
    r.duration_s = d;
    r.plan = plan.cloned();
    r
}

#[test]
fn shutdowns_without_nodes_do_not_teach_a_zero_budget() {
    let no_nodes = plan::shutdown_fingerprint(&config("", ""));
    let runs: Vec<RunRecord> = (1..=3).map(|d| success(d, 0.004, Some(&no_nodes))).collect();
    let cfg = BudgetConfig::default();
    for current in [Some(&no_nodes), None] {
        let b = budget::estimate(&runs, &cfg, current);
        assert_eq!(b.seconds, 300.0, "{b}");
        assert_eq!(b.source, BudgetSource::Default { successful_runs: 0, needed: 3 });
    }
    // Nor once the config has nodes.
    let three = plan::shutdown_fingerprint(&config(THREE_NODES, ""));
    assert_eq!(budget::estimate(&runs, &cfg, Some(&three)).seconds, 300.0);
}

#[test]
fn only_runs_of_the_current_plan_count() {
    let three = plan::shutdown_fingerprint(&config(THREE_NODES, ""));
    let two =
        plan::shutdown_fingerprint(&config(&(THREE_NODES.lines().take(3).collect::<Vec<_>>().join("\n") + "\n"), ""));
    let mut runs: Vec<RunRecord> = (1..=3).map(|d| success(d, 100.0, Some(&two))).collect();
    let cfg = BudgetConfig::default();
    let b = budget::estimate(&runs, &cfg, Some(&three));
    assert_eq!(b.seconds, 300.0, "runs of another node set do not count: {b}");
    assert_eq!(b.not_comparable, 3);
    assert!(b.to_string().contains("3 successful shutdowns of another plan not counted"), "{b}");
    runs.extend((4..=6).map(|d| success(d, 250.0, Some(&three))));
    let b = budget::estimate(&runs, &cfg, Some(&three));
    assert_eq!(b.seconds, 250.0, "{b}");
    assert_eq!(b.source, BudgetSource::History { runs: 3 });
    // Without a plan to compare with (simulate), every run with node steps counts.
    assert_eq!(budget::estimate(&runs, &cfg, None).seconds, 250.0);
    assert_eq!(budget::estimate(&runs, &cfg, None).source, BudgetSource::History { runs: 6 });
}

#[test]
fn records_from_before_fingerprints_count_unless_they_stopped_no_node() {
    let three = plan::shutdown_fingerprint(&config(THREE_NODES, ""));
    let with_stages = |day: u32, d: f64, stages: &[&str]| {
        let mut r = success(day, d, None);
        r.stages = stages
            .iter()
            .map(|s| hecate_core::history::StageDuration {
                name: (*s).into(),
                duration_s: 1.0,
                extra: Default::default(),
            })
            .collect();
        r
    };
    let runs = vec![
        with_stages(1, 200.0, &["notify", "stop-agents", "power-off"]),
        with_stages(2, 0.01, &["notify"]),
        success(3, 230.0, None), // no stages at all: written by hand
        with_stages(4, 210.0, &["notify", "stop-init-server"]),
    ];
    let b = budget::estimate(&runs, &BudgetConfig::default(), Some(&three));
    assert_eq!(b.seconds, 230.0, "{b}");
    assert_eq!(b.source, BudgetSource::History { runs: 3 });
    assert_eq!(b.not_comparable, 1);
}

#[test]
fn impossible_durations_are_ignored_with_a_warning() {
    let runs: Vec<RunRecord> = [1e300, f64::INFINITY, -5.0, 90_000.0, 200.0, 210.0, 220.0]
        .iter()
        .enumerate()
        .map(|(i, d)| success(u32::try_from(i).unwrap() + 1, *d, None))
        .collect();
    let b = budget::estimate(&runs, &BudgetConfig::default(), None);
    assert_eq!(b.seconds, 220.0, "{b}");
    assert_eq!(b.ignored.len(), 4, "{:?}", b.ignored);
    assert!(
        b.ignored[0].contains("started at 2026-01-01T00:00:00Z") && b.ignored[0].contains("not possible"),
        "{:?}",
        b.ignored
    );
    assert!(b.to_string().contains("4 records with an impossible duration ignored"), "{b}");
    // The record kinds and outcomes the budget ignores anyway are not warned about.
    let mut failed = success(9, 1e300, None);
    failed.outcome = RunOutcome::Failed;
    assert!(budget::estimate(&[failed], &BudgetConfig::default(), None).ignored.is_empty());
}
