//! The simulated UPS replays a recorded trace: rows in force by time, no-data rows as errors.

#![allow(clippy::unwrap_used)]

use hecate_backends::power::simulated::SimulatedUpsConfig;
use hecate_core::power::PowerSourceConfig;
use hecate_core::{BuildContext, ErrorKind};

#[tokio::test]
async fn replays_a_trace_at_speed_and_reports_lost_polls_as_no_data() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    // 1000 trace seconds per real second: the rows below are reached within milliseconds.
    std::fs::write(
        &path,
        "# hecate-trace v1\n# power_return: none\nt,ups.status,battery.charge,battery.runtime,ups.load\n0,OL,100,1900,60\n50,OB DISCHRG,97,1500,60\n100,,,,\n",
    )
    .unwrap();
    let cfg: SimulatedUpsConfig =
        serde_json::from_value(serde_json::json!({"name": "replay", "trace": path, "speed": 1000.0})).unwrap();
    assert!(cfg.validate().is_empty());
    let ctx = BuildContext { host: "t".into(), state_dir: dir.path().into() };
    let mut ups = cfg.build(&ctx).unwrap();
    let first = ups.read().await.unwrap();
    assert!(first.status.online() || first.status.on_battery());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut seen_ob = false;
    let mut seen_no_data = false;
    while std::time::Instant::now() < deadline && !(seen_ob && seen_no_data) {
        match ups.read().await {
            Ok(r) if r.status.on_battery() => {
                assert_eq!(r.runtime_s, Some(1500.0));
                seen_ob = true;
            }
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::NoData);
                seen_no_data = true;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(seen_ob && seen_no_data, "ob {seen_ob} no-data {seen_no_data}");
}

#[test]
fn trace_and_script_exclude_each_other_and_a_missing_trace_is_a_config_error() {
    let cfg: SimulatedUpsConfig = serde_json::from_value(serde_json::json!({
        "name": "x", "trace": "/nonexistent/t.csv", "script": [{"at": "1s", "event": "mains_lost"}]
    }))
    .unwrap();
    assert!(cfg.validate().iter().any(|p| p.contains("exclude")));
    let cfg: SimulatedUpsConfig =
        serde_json::from_value(serde_json::json!({"name": "x", "trace": "/nonexistent/t.csv"})).unwrap();
    let ctx = BuildContext { host: "t".into(), state_dir: "/tmp".into() };
    let err = cfg.build(&ctx).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("/nonexistent/t.csv"));
}
