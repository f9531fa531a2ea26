//! Notifiers inside a real shutdown plan on simulated backends: a receiver that accepts and never
//! answers does not slow the plan (a functional bound against the same plan without notifiers,
//! not a benchmark), and the plan reports its trigger, its stages and its failed controllers.

#![allow(clippy::unwrap_used)]

mod notify_support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hecate_core::config::Config;
use hecate_core::engine::{Engine, EngineOptions, Outcome, RunReport};
use hecate_core::notify::EventKind;
use hecate_core::plan::{Plan, shutdown_plan};
use hecate_core::runtime::Runtime;
use notify_support::{HttpReceiver, SilentListener, WAIT};

/// What the plan may take beyond its own time with a hung notifier: scheduling noise on a busy
/// 2-core machine, far below the 10 s a notify step waiting for its receiver would add.
const SLACK: Duration = Duration::from_millis(1500);

fn config(state_dir: &Path, world: &str, notifiers: &str) -> Config {
    hecate_backends::link();
    let yaml = format!(
        "host: titan-db
state_dir: {}
power_sources: [ {{ type: simulated, name: ups }} ]
cluster: {{ type: simulated, world: {world}, api_delay: 50ms, ready_delay: 50ms, drain_duration: 200ms }}
gitops: {{ type: simulated, kustomizations: [apps], step_duration: 100ms }}
nodes:
  - {{ name: s1, address: a, role: server, init: true, controllers: [ {{ type: simulated, world: {world}, step_duration: 200ms }} ] }}
  - name: a1
    address: b
    role: agent
    controllers:
      - {{ type: simulated, world: {world}, step_duration: 200ms, fail: [power_off] }}
      - {{ type: simulated, world: {world}, step_duration: 100ms, capabilities: [power_off, power_on, power_state] }}
notifiers: {notifiers}
shutdown: {{ concurrency: 2 }}
",
        state_dir.display()
    );
    Config::from_yaml(&yaml, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}")).0
}

fn engine(cfg: &Config) -> Engine {
    let rt = Arc::new(Runtime::build(cfg).unwrap());
    let drain = hecate_core::cluster::DrainOptions { timeout: Duration::from_secs(5), ..Default::default() };
    Engine::new(
        rt,
        EngineOptions { wait_poll: Duration::from_millis(20), drain, ..Default::default() },
        Arc::new(|_| {}),
    )
}

async fn run(eng: &Engine, plan: &Plan) -> (RunReport, Duration) {
    let t0 = Instant::now();
    let report = tokio::time::timeout(Duration::from_secs(60), eng.execute(plan, None)).await.expect("plan hung");
    (report, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_answers_does_not_slow_the_shutdown_plan() {
    let dir = tempfile::tempdir().unwrap();
    let base_cfg = config(dir.path(), "notify-baseline", "[]");
    let base = engine(&base_cfg);
    let (report, plan_time) = run(&base, &shutdown_plan(&base_cfg, base.runtime(), "test")).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");

    let mut silent = SilentListener::start().await;
    let cfg = config(
        dir.path(),
        "notify-hung",
        &format!("[ {{ type: webhook, url: 'http://{}/hook', timeout: 30s, retry_for: 5m }} ]", silent.addr),
    );
    let eng = engine(&cfg);
    let plan = shutdown_plan(&cfg, eng.runtime(), "test");
    let (report, took) = run(&eng, &plan).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert!(took <= plan_time + SLACK, "with a hung webhook the plan took {took:?}, without notifiers {plan_time:?}");
    let notify = &report.stages[0].steps[0];
    assert!(notify.ok && notify.message.starts_with("queued for 1"), "{notify:?}");
    assert!(notify.duration_s < 0.5, "the notify step waited: {notify:?}");
    // The webhook really was trying: the listener holds its connection, unanswered.
    silent.wait_accepted().await;
    assert!(eng.runtime().notifiers.pending() > 0, "the events are still queued behind the hung receiver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_reports_trigger_numbers_stages_and_failed_controllers() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = HttpReceiver::start().await;
    let cfg = config(dir.path(), "notify-events", &format!("[ {{ type: webhook, url: '{}' }} ]", rx.url("/hook")));
    let eng = engine(&cfg);
    let mut plan = shutdown_plan(&cfg, eng.runtime(), "ups atlas: estimated runtime 90 s < 1.1 × budget 100 s");
    let mut numbers = serde_json::Map::new();
    numbers.insert("estimate_s".into(), 90.0.into());
    numbers.insert("threshold_s".into(), 110.0.into());
    plan.add_event_details(EventKind::ShutdownTriggered, &numbers);
    let (report, _) = run(&eng, &plan).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(eng.runtime().flush_notifications(WAIT).await, 0, "not everything was delivered");

    let events: Vec<serde_json::Value> = rx.received().iter().map(|r| r.json()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "shutdown_triggered", "{kinds:?}");
    let trigger = &events[0];
    assert!(trigger["message"].as_str().unwrap().contains("estimated runtime 90 s"), "{trigger}");
    assert_eq!(trigger["details"]["estimate_s"], 90.0);
    assert_eq!(trigger["details"]["threshold_s"], 110.0);
    assert_eq!(trigger["host"], "titan-db");

    // One stage_finished per stage that does more than notify, in order.
    let stages: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "stage_finished")
        .map(|e| e["details"]["stage"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = report.stages.iter().skip(1).map(|s| s.name.as_str()).collect();
    assert_eq!(stages, want);
    assert!(events.iter().filter(|e| e["kind"] == "stage_finished").all(|e| e["details"]["plan"] == "shutdown"));

    // a1's first controller cannot power off; the second does: reported, though the step
    // succeeded, as what it is: a fallback, not a failure (step_failed would page someone).
    assert!(!kinds.contains(&"step_failed"), "{kinds:?}");
    let failed: Vec<&serde_json::Value> = events.iter().filter(|e| e["kind"] == "step_fell_back").collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["details"]["ok"], true);
    assert!(failed[0]["message"].as_str().unwrap().contains("a1"), "{}", failed[0]);
    assert!(failed[0]["details"]["attempts"]["attempts"].as_array().unwrap().len() == 2, "{}", failed[0]);
}
