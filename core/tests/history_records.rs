//! runs.json records: unknown fields survive a rewrite; appends accumulate.

use std::time::{Duration, UNIX_EPOCH};

use hecate_core::history::{History, RunKind, RunOutcome, RunRecord, StageDuration};

#[test]
fn unknown_fields_and_values_survive_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.json");
    let original = r#"[{"kind": "rehearsal", "started_at": "2026-01-04T02:11:09Z", "duration_s": 212.4,
        "outcome": "aborted", "operator": "kim", "stages": [{"name": "drain", "duration_s": 80.5, "nodes": 3}]}]"#;
    std::fs::write(&path, original).unwrap();
    let loaded = History::load(&path).unwrap();
    assert!(loaded.warning.is_none());
    let r = &loaded.history.runs[0];
    assert_eq!(r.kind, RunKind::Other("rehearsal".into()));
    assert_eq!(r.outcome, RunOutcome::Other("aborted".into()));
    assert_eq!(r.extra["operator"], "kim");
    assert_eq!(r.stages[0].extra["nodes"], 3);

    let mut record = RunRecord::new(
        RunKind::Shutdown,
        UNIX_EPOCH + Duration::from_secs(1_780_000_000),
        Duration::from_secs_f64(251.25),
        RunOutcome::Success,
    );
    record.trigger_reason = Some("on battery: estimated runtime 301 s".into());
    record.stages.push(StageDuration { name: "drain".into(), duration_s: 100.0, extra: Default::default() });
    let after = History::append(&path, record.clone()).unwrap();
    assert_eq!(after.history.runs.len(), 2);

    let reread: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let expected: serde_json::Value = serde_json::from_str(original).unwrap();
    assert_eq!(reread[0], expected[0], "the old record is written back unchanged");
    assert_eq!(reread[1]["kind"], "shutdown");
    assert_eq!(reread[1]["started_at"], "2026-05-28T20:26:40Z");
    assert_eq!(reread[1]["trigger_reason"], "on battery: estimated runtime 301 s");
    assert!(reread[1].get("extra").is_none());
    assert_eq!(History::load(&path).unwrap().history.runs[1], record);
    assert!(record.started_at_time().is_some());
}

#[test]
fn appends_to_a_missing_file_create_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.json");
    for i in 0..3 {
        let r = RunRecord::new(RunKind::Startup, UNIX_EPOCH, Duration::from_secs(i), RunOutcome::Partial);
        History::append(&path, r).unwrap();
    }
    let runs = History::load(&path).unwrap().history.runs;
    assert_eq!(runs.iter().map(|r| r.duration_s).collect::<Vec<_>>(), [0.0, 1.0, 2.0]);
}

#[test]
fn an_empty_file_is_an_empty_history_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.json");
    std::fs::write(&path, "\n").unwrap();
    let loaded = History::load(&path).unwrap();
    assert!(loaded.history.runs.is_empty());
    assert!(loaded.warning.unwrap().contains("is empty"));
}
