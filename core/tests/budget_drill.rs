//! A drill's shutdown half runs the real shutdown plan and teaches the budget like a shutdown;
//! its startup half does not, and neither does a drill of another plan.

use hecate_core::budget::{self, BudgetConfig, BudgetSource};
use hecate_core::history::{RunKind, RunRecord};
use hecate_core::plan::{PlanFingerprint, PlanKind};

fn plan(id: &str) -> PlanFingerprint {
    PlanFingerprint { id: id.into(), node_steps: 4 }
}

fn run(day: u32, kind: &str, part: Option<&str>, d: f64, fingerprint: &str) -> RunRecord {
    let mut v = serde_json::json!({
        "kind": kind, "started_at": format!("2026-02-{day:02}T00:00:00Z"), "duration_s": d, "outcome": "success",
        "plan": plan(fingerprint),
    });
    if let Some(part) = part {
        v["part"] = part.into();
    }
    serde_json::from_value(v).expect("a valid record")
}

#[test]
fn a_drills_shutdown_counts_and_its_startup_does_not() {
    let current = plan("fnv1a64:0000000000000001");
    let runs = vec![
        run(1, "shutdown", None, 200.0, &current.id),
        run(2, "drill", Some("shutdown"), 240.0, &current.id),
        run(3, "drill", Some("startup"), 900.0, &current.id),
        run(4, "drill", Some("shutdown"), 500.0, "fnv1a64:00000000000000ff"),
        run(5, "drill", None, 800.0, &current.id),
    ];
    assert_eq!(runs[1].kind, RunKind::Drill);
    assert_eq!(runs[1].plan_kind(), Some(PlanKind::Shutdown));
    assert_eq!(runs[4].plan_kind(), None, "a drill record without its part says nothing");
    let cfg = BudgetConfig { min_runs: 2, ..BudgetConfig::default() };
    let b = budget::estimate(&runs, &cfg, Some(&current));
    assert_eq!(b.source, BudgetSource::History { runs: 2 }, "{b}");
    assert_eq!(b.seconds, 240.0, "the drill's shutdown is the slowest that counts");
    assert_eq!(b.not_comparable, 1, "the drill of another plan");
    // the part survives a round trip
    let text = serde_json::to_string(&runs[1]).expect("json");
    assert!(text.contains(r#""kind":"drill""#) && text.contains(r#""part":"shutdown""#), "{text}");
}
