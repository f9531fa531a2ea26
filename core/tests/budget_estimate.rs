//! The shutdown budget from run history.

use std::time::Duration;

use hecate_core::budget::{self, BudgetConfig, BudgetSource};
use hecate_core::history::{RunKind, RunOutcome, RunRecord};

fn run(day: u32, kind: &str, outcome: &str, d: f64) -> RunRecord {
    serde_json::from_value(serde_json::json!({
        "kind": kind, "started_at": format!("2026-01-{day:02}T00:00:00Z"), "duration_s": d, "outcome": outcome
    }))
    .expect("a valid record")
}

#[test]
fn max_of_the_last_successful_shutdowns() {
    let mut runs: Vec<RunRecord> = (1..=12).map(|i| run(i, "shutdown", "success", 200.0 + f64::from(i))).collect();
    runs[0].duration_s = 900.0; // oldest, outside the window of 10
    runs.push(run(20, "shutdown", "failed", 1000.0));
    runs.push(run(21, "startup", "success", 2000.0));
    runs.push(run(22, "shutdown", "success", 0.0));
    runs.push(run(23, "shutdown", "success", 1.0));
    runs.last_mut().unwrap().duration_s = f64::NAN;
    let b = budget::estimate(&runs, &BudgetConfig::default(), None);
    assert_eq!(b.seconds, 212.0);
    assert_eq!(b.source, BudgetSource::History { runs: 10 });
    assert_eq!(
        b.to_string(),
        "212.0 s: max of last 10 successful shutdowns in the run history; \
         2 records with an impossible duration ignored"
    );
}

#[test]
fn order_is_by_start_time() {
    // the slow run is the oldest by time although last in the file
    let mut runs: Vec<RunRecord> = (2..=4).map(|i| run(i, "shutdown", "success", 250.0)).collect();
    runs.push(run(1, "shutdown", "success", 400.0));
    let cfg = BudgetConfig { window: 3, ..BudgetConfig::default() };
    assert_eq!(budget::estimate(&runs, &cfg, None).seconds, 250.0);
}

#[test]
fn too_few_runs_fall_back_to_the_default() {
    let runs = vec![
        run(1, "shutdown", "success", 100.0),
        run(2, "shutdown", "partial", 100.0),
        run(3, "shutdown", "success", 120.0),
    ];
    let b = budget::estimate(&runs, &BudgetConfig::default(), None);
    assert_eq!(b.seconds, 300.0);
    assert_eq!(b.source, BudgetSource::Default { successful_runs: 2, needed: 3 });
    assert_eq!(b.to_string(), "300.0 s: default_shutdown_budget (only 2 successful runs, need 3)");
    assert_eq!(budget::estimate(&[], &BudgetConfig::default(), None).seconds, 300.0);
}

#[test]
fn config_reads_durations_and_rejects_unknown_fields() {
    let cfg: BudgetConfig = serde_json::from_str(r#"{"default_shutdown_budget": "6m 30s"}"#).unwrap();
    assert_eq!(*cfg.default_shutdown_budget, Duration::from_secs(390));
    assert_eq!((cfg.window, cfg.min_runs), (10, 3));
    let cfg: BudgetConfig = serde_json::from_str(r#"{"default_shutdown_budget": "120s"}"#).unwrap();
    assert_eq!(*cfg.default_shutdown_budget, Duration::from_secs(120));
    assert_eq!(serde_json::to_value(&cfg).unwrap()["default_shutdown_budget"], "2m");
    // A bare number is ambiguous (seconds? minutes?): refused, as everywhere in the config.
    assert!(serde_json::from_str::<BudgetConfig>(r#"{"default_shutdown_budget": 120}"#).is_err());
    assert!(serde_json::from_str::<BudgetConfig>(r#"{"default_shutdown_budget": "soon"}"#).is_err());
    assert!(serde_json::from_str::<BudgetConfig>(r#"{"default_shutdown_budget": -5}"#).is_err());
    assert!(serde_json::from_str::<BudgetConfig>(r#"{"windw": 5}"#).is_err());
    assert!(BudgetConfig::default().validate().is_empty());
    assert_eq!(BudgetConfig { window: 0, min_runs: 0, ..BudgetConfig::default() }.validate().len(), 2);
}

#[test]
fn the_corpus_history_gives_its_slowest_run() {
    let runs: Vec<RunRecord> = serde_json::from_str(
        r#"[{"kind": "shutdown", "started_at": "2026-01-04T02:11:09Z", "duration_s": 212.4, "outcome": "success"},
            {"kind": "shutdown", "started_at": "2026-07-08T04:45:18Z", "duration_s": 298.1, "outcome": "success"},
            {"kind": "shutdown", "started_at": "2026-10-30T09:31:27Z", "duration_s": 244.5, "outcome": "success"}]"#,
    )
    .unwrap();
    assert_eq!(runs[0].kind, RunKind::Shutdown);
    assert_eq!(runs[0].outcome, RunOutcome::Success);
    assert_eq!(budget::estimate(&runs, &BudgetConfig::default(), None).seconds, 298.1);
}
