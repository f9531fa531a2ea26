//! `hecate simulate`: replays outage traces through the same policy code the daemon runs, on a
//! virtual clock (no sleeping).

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use hecate_core::budget::{self, BudgetConfig};
use hecate_core::history::History;
use hecate_core::policy::PolicyConfig;
use hecate_core::trace::{self, Trace};

/// Runs the replay and prints one line (or JSON object) per trace.
pub fn run(trace_path: &Path, runs: Option<&Path>, config: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let (policy, budget_cfg, poll_s) = match config {
        Some(c) => {
            let cfg = crate::load_config(c)?;
            (cfg.policy.clone(), cfg.budget.clone(), cfg.daemon.poll_interval.secs_f64())
        }
        None => (PolicyConfig::default(), BudgetConfig::default(), 2.0),
    };
    let records = match runs {
        Some(p) => {
            let loaded = History::load(p).with_context(|| format!("reading {}", p.display()))?;
            if let Some(w) = loaded.warning {
                tracing::warn!("{w}");
            }
            loaded.history.runs
        }
        None => Vec::new(),
    };
    // No plan to compare the records with: every physical successful shutdown counts.
    let budget = budget::estimate(&records, &budget_cfg, None);
    tracing::info!(budget = %budget, poll_interval_s = poll_s, "replaying");
    let files = if trace_path.is_dir() { trace::trace_files(trace_path)? } else { vec![trace_path.to_path_buf()] };
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tr = match Trace::load(&f) {
            Ok(t) => t,
            Err(e) => {
                // One unreadable trace must not hide the others' results.
                eprintln!("error: {e}");
                failed = true;
                continue;
            }
        };
        let r = trace::replay(&tr, &policy, budget.seconds, poll_s);
        if json {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "trace": name,
                    "triggered_at": r.triggered_at,
                    "reason": r.reason,
                    "charge_model": r.charge_model,
                })
            )?;
        } else {
            match (r.triggered_at, r.reason) {
                (Some(t), Some(why)) => writeln!(out, "{name}: triggered at {t:.0} s: {why}")?,
                _ => writeln!(out, "{name}: no shutdown")?,
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
