//! Replays every trace of the shared corpus through the policy at a 2 s poll, with the budget from
//! the corpus's `runs.json`, and judges the triggers the way `score.py` does.
//!
//! The corpus lives in `shared/traces` beside the workspace (`<workspace>/../shared/traces`), or
//! wherever `HECATE_TRACES_DIR` points. It is part of the project's CI environment, so a missing
//! corpus fails the test rather than skipping it.

mod common;
use common::{traces_dir, truth};

use std::collections::BTreeMap;
use std::fs;
use std::process::Command;

use hecate_core::budget::{self, BudgetConfig};
use hecate_core::history::History;
use hecate_core::policy::PolicyConfig;
use hecate_core::trace::{self, Trace};

const POLL_S: f64 = 2.0;
/// score.py draws each trace's shutdown from mean × uniform(0.85, 1.25) with mean 240 s.
const SLOWEST_SHUTDOWN_S: f64 = 1.25 * 240.0;
const FASTEST_SHUTDOWN_S: f64 = 0.85 * 240.0;

#[derive(Debug, PartialEq)]
enum Verdict {
    Ok {
        margin_s: f64,
    },
    Fine,
    Missed,
    Unnecessary,
    /// Unnecessary for some shutdown durations score.py may draw, fine for others.
    PossiblyUnnecessary,
}

/// score.py's judge(): `missed` with the slowest shutdown it can draw (so a pass here is a pass
/// for every draw), `unnecessary` for the shutdown durations where it is certain.
fn judge(truth: &BTreeMap<String, Option<f64>>, t: Option<f64>) -> Verdict {
    let ex = truth["battery_exhausted"];
    let hyp = truth["battery_exhausted_if_no_return"].expect("battery_exhausted_if_no_return");
    let ret = truth["power_return"];
    match ex {
        None => match (ret, t) {
            (Some(ret), Some(t)) if t < ret && ret <= hyp - SLOWEST_SHUTDOWN_S => Verdict::Unnecessary,
            (Some(ret), Some(t)) if t < ret && ret <= hyp - FASTEST_SHUTDOWN_S => Verdict::PossiblyUnnecessary,
            _ => Verdict::Fine,
        },
        Some(ex) => match t {
            Some(t) if t <= hyp - SLOWEST_SHUTDOWN_S => Verdict::Ok { margin_s: ex - (t + SLOWEST_SHUTDOWN_S) },
            _ => Verdict::Missed,
        },
    }
}

#[test]
fn every_corpus_trace_triggers_in_time_and_never_needlessly() {
    let dir = traces_dir();
    assert!(
        dir.is_dir(),
        "trace corpus not found at {} (set HECATE_TRACES_DIR to the shared/traces directory)",
        dir.display()
    );
    let loaded = History::load(&dir.join("runs.json")).unwrap();
    assert!(loaded.warning.is_none(), "{:?}", loaded.warning);
    let budget = budget::estimate(&loaded.history.runs, &BudgetConfig::default(), None);
    assert!((budget.seconds - 298.1).abs() < 1e-9, "{budget}");

    let cfg = PolicyConfig::default();
    let files = trace::trace_files(&dir).unwrap();
    assert!(files.len() >= 45, "only {} traces in {}", files.len(), dir.display());

    let mut jsonl = String::new();
    let mut bad = Vec::new();
    let mut margins = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let trace = Trace::load(file).unwrap();
        let result = trace::replay(&trace, &cfg, budget.seconds, POLL_S);
        jsonl.push_str(
            &serde_json::json!({"trace": name, "triggered_at": result.triggered_at, "reason": result.reason})
                .to_string(),
        );
        jsonl.push('\n');
        let verdict = judge(&truth(file), result.triggered_at);
        println!("{name}: {:?} at {:?}: {}", verdict, result.triggered_at, result.reason.unwrap_or_default());
        match verdict {
            Verdict::Ok { margin_s } => margins.push(margin_s),
            Verdict::Fine | Verdict::PossiblyUnnecessary => {}
            Verdict::Missed | Verdict::Unnecessary => bad.push(format!("{name}: {verdict:?}")),
        }
    }
    margins.sort_by(f64::total_cmp);
    if !margins.is_empty() {
        println!(
            "worst-case margins: min {:.1} s, median {:.1} s over {} traces",
            margins[0],
            margins[margins.len() / 2],
            margins.len()
        );
    }
    if let Some(out) = std::env::var_os("HECATE_REPLAY_JSONL") {
        fs::write(out, &jsonl).unwrap();
    }
    assert!(bad.is_empty(), "{bad:#?}");

    // and the corpus's own scorer agrees, with the shutdown durations it really draws
    let tmp = tempfile::tempdir().unwrap();
    let results = tmp.path().join("results.jsonl");
    fs::write(&results, &jsonl).unwrap();
    let out = Command::new("python3")
        .arg(dir.join("score.py"))
        .arg("score")
        .arg(&dir)
        .arg(&results)
        .output()
        .expect("python3 is needed to run the corpus's score.py");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("score.py output is not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    println!("score.py: {report}");
    assert_eq!(report["missed"], 0, "{report:#}");
    assert_eq!(report["unnecessary"], 0, "{report:#}");
}
