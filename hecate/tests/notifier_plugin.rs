//! The example third-party notifier (examples/notifier-plugin) is selected by YAML `type:` and
//! receives a shutdown plan's events through the core's delivery, like a built-in one. (That the
//! binary built with it lists it in `hecate backends` is tested in its own crate,
//! examples/notifier-plugin/hecate-with-plugin/tests.)

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hecate_core::config::Config;
use hecate_core::engine::{Engine, EngineOptions, Outcome};
use hecate_core::notify::{Event, EventKind};
use hecate_core::plan::shutdown_plan;
use hecate_core::registry::{BackendRole, backends};
use hecate_core::runtime::Runtime;

fn config(dir: &Path, events: &Path) -> Config {
    hecate::init_process();
    hecate_notifier_example::link();
    let yaml = format!(
        "host: t
state_dir: {}
power_sources: [ {{ type: simulated, name: u }} ]
nodes:
  - {{ name: s1, address: a, role: server, init: true, controllers: [ {{ type: simulated, world: plugin-events, step_duration: 20ms }} ] }}
notifiers:
  - {{ type: log }}
  - {{ type: jsonl_file, name: audit, path: {} }}
",
        dir.display(),
        events.display()
    );
    Config::from_yaml(&yaml, Path::new("test.yaml")).unwrap_or_else(|e| panic!("{e}")).0
}

#[tokio::test]
async fn the_plugin_is_selected_by_type_and_receives_the_plans_events() {
    let dir = tempfile::tempdir().unwrap();
    let events_file = dir.path().join("events.jsonl");
    let cfg = config(dir.path(), &events_file);
    assert!(
        backends().iter().any(|b| b.role == BackendRole::Notifier && b.type_name == "jsonl_file"),
        "the plugin's registry row is linked"
    );
    let rt = Arc::new(Runtime::build(&cfg).unwrap());
    assert_eq!(rt.notifier_names(), vec!["log", "audit"]);
    let drain = hecate_core::cluster::DrainOptions { timeout: Duration::from_secs(1), ..Default::default() };
    let engine = Engine::new(
        rt.clone(),
        EngineOptions { wait_poll: Duration::from_millis(10), drain, ..Default::default() },
        Arc::new(|_| {}),
    );
    let plan = shutdown_plan(&cfg, &rt, "plugin test");
    let report = engine.execute(&plan, None).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:?}");
    assert_eq!(rt.flush_notifications(Duration::from_secs(10)).await, 0);

    let text = std::fs::read_to_string(&events_file).unwrap();
    let events: Vec<Event> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events[0].kind, EventKind::ShutdownTriggered);
    assert_eq!(events[0].message, "shutdown started: plugin test");
    let stages = events.iter().filter(|e| e.kind == EventKind::StageFinished).count();
    assert_eq!(stages, report.stages.len() - 1, "one per stage but the notify stage: {events:?}");
    // The same serialisation as every other notifier.
    assert_eq!(text.lines().next().unwrap(), events[0].to_json());
}
