//! `hecate drill`: an outage rehearsed in a maintenance window. The real shutdown plan runs, then
//! the startup plan; both are recorded in runs.json as `kind: drill` runs (`part: shutdown` /
//! `startup`), and the shutdown half teaches the budget as a shutdown does (it carries the
//! current plan's fingerprint). A report then sets each stage against the budget and earlier runs,
//! and says what the shutdown would have meant at the battery's current runtime.
//!
//! What a drill leaves out of the shutdown plan: the UPS stages (`fsd`, `leave-ups`, `ups-off`),
//! which would tell the UPS's other clients (a NAS) to shut down and power-cycle this host and
//! everything else on the UPS; and powering this host off (`shutdown.power_off_self`), since it
//! must run the startup. The record lists them (`left_out`).
//!
//! A drill never starts while the daemon is not watching or a UPS is on battery (or cannot be
//! read), and does not start the cluster again if an outage began while it shut it down: that is
//! then the daemon's and `hecate-bootstrap`'s to do. Each half holds the run lock like any run;
//! while the startup half holds it, a daemon that sees power fail stops it (as it would any
//! startup) and shuts down.

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use hecate_core::budget::Budget;
use hecate_core::config::Config;
use hecate_core::engine::{Outcome, RunReport};
use hecate_core::history::{History, RunKind, RunOutcome, RunRecord};
use hecate_core::plan::{self, Plan, PlanKind};
use hecate_core::runtime::Runtime;
use hecate_core::supervisor::PhaseKind;

use crate::status::{DaemonView, Snapshot};

/// The stages of the shutdown plan a drill leaves out (see the module doc).
pub const LEFT_OUT_STAGES: [&str; 3] = ["fsd", "leave-ups", "ups-off"];

/// Why a drill is given.
const REASON: &str = "drill (hecate drill, a maintenance window)";

/// The shutdown plan a drill runs: the real one without the UPS stages and without powering
/// this host off.
pub fn shutdown_plan(cfg: &Config, rt: &Runtime) -> Plan {
    let mut p = plan::shutdown_plan(cfg, rt, REASON);
    p.stages.retain(|s| !LEFT_OUT_STAGES.contains(&s.name.as_str()));
    p.finally = None;
    p
}

/// What the drill leaves out of this config's shutdown plan: its UPS stages, and powering this
/// host off.
pub fn left_out(cfg: &Config) -> Vec<String> {
    let real = plan::shutdown_plan(cfg, &Runtime::unbuilt(cfg), "");
    let mut left: Vec<String> =
        real.stages.iter().map(|s| s.name.clone()).filter(|n| LEFT_OUT_STAGES.contains(&n.as_str())).collect();
    if real.finally.is_some() {
        left.push("power-off-self".into());
    }
    left
}

/// `Ok` with the power sources as last seen when no outage is in progress; otherwise why a
/// drill must not run now. The daemon's view when one runs (its phase must be `watching`),
/// else a one-off read of every source.
pub async fn no_outage(cfg: &Config) -> Result<Snapshot, String> {
    let snap = match crate::status::daemon_snapshot(cfg, SystemTime::now()) {
        DaemonView::Fresh(s) => s,
        DaemonView::Stale(_, why) => return Err(format!("cannot tell whether an outage is in progress: {why}")),
        DaemonView::Absent(_) => {
            crate::status::one_off(cfg).await.map_err(|e| format!("cannot read the power sources: {e:#}"))?
        }
    };
    if snap.from_daemon && snap.phase != PhaseKind::Watching {
        let detail = snap.phase_detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
        return Err(format!("the daemon is {}{detail}, not watching", snap.phase.as_str().replace('_', " ")));
    }
    if let Some(r) = &snap.trigger_reason {
        return Err(format!("a shutdown was triggered: {r}"));
    }
    for src in &snap.sources {
        match &src.reading {
            None => {
                let why = src.error.as_deref().unwrap_or("not polled yet");
                return Err(format!("ups {} gives no data ({why}): cannot tell whether its mains are on", src.name));
            }
            Some(r) if r.status.on_battery() || !r.status.online() => {
                return Err(format!("ups {} is not on mains (status {})", src.name, r.status));
            }
            Some(_) => {}
        }
    }
    Ok(snap)
}

/// Records a finished half of the drill in runs.json as a `drill` run: its part, and for the
/// shutdown the current plan's fingerprint (so the budget learns from it) and the stages left
/// out.
fn record(cfg: &Config, report: &RunReport) -> anyhow::Result<()> {
    let shutdown = report.kind == PlanKind::Shutdown;
    let fingerprint = shutdown.then(|| plan::shutdown_fingerprint(cfg));
    let mut rec = RunRecord::from_report(report, &cfg.host, fingerprint);
    rec.kind = RunKind::Drill;
    rec.part = Some(report.kind);
    let left = left_out(cfg);
    if shutdown && !left.is_empty() {
        rec.extra.insert("left_out".into(), serde_json::json!(left));
    }
    let loaded = History::append(&crate::status::runs_path(cfg), rec)?;
    if let Some(w) = loaded.warning {
        tracing::warn!("{w}");
    }
    Ok(())
}

/// `hecate drill [--config FILE] [--execute]`.
pub async fn command(config: &Path, execute: bool) -> anyhow::Result<ExitCode> {
    let cfg = crate::load_config(config)?;
    let rt = Arc::new(crate::run::build_reporting(&cfg));
    let down_plan = shutdown_plan(&cfg, &rt);
    let up_plan = plan::startup_plan(&cfg, &rt, REASON, None);
    let earlier = History::load(&crate::status::runs_path(&cfg)).map(|l| l.history.runs).unwrap_or_default();
    let budget_before = crate::status::budget(&cfg);
    let now = no_outage(&cfg).await;
    if !execute {
        println!("drill: the shutdown, then the startup\n");
        print!("{}", down_plan.render(&crate::status::expected(&cfg, PlanKind::Shutdown)));
        println!();
        print!("{}", up_plan.render(&crate::status::expected(&cfg, PlanKind::Startup)));
        let left = left_out(&cfg);
        if !left.is_empty() {
            println!("\nleft out of the drill's shutdown: {} (see `hecate drill --help`)", left.join(", "));
        }
        match &now {
            Ok(snap) => {
                let (factor, d) = (cfg.policy.runtime_safety_factor, budget_before.seconds);
                print!("\n{}", battery_lines(snap, factor * d, d, "a shutdown taking the budget"));
            }
            Err(why) => println!("\na drill now would be refused: {why}"),
        }
        println!("\ndry run: nothing was done. Add --execute to shut the cluster down and start it again.");
        return Ok(if now.is_ok() && rt.unavailable.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    if let Err(why) = now {
        eprintln!("refusing the drill: {why}");
        return Ok(ExitCode::FAILURE);
    }

    let progress = crate::run::live_progress(&cfg, "drill", false);
    progress.begin_run("drill, 1/2: the shutdown");
    let down = {
        let _lock = crate::run::lock_runs(&cfg.state_dir, PlanKind::Shutdown)?;
        crate::run::execute_recording(&cfg, rt.clone(), &down_plan, false, progress.sink(), record).await
    };
    progress.end_run();
    crate::run::print_summary(&down);
    if let Some(ev) = crate::run::finished_event(&cfg.host, &down) {
        rt.notify_all(&ev);
    }
    // The daemon (or the bootstrap unit) owns the cluster in an outage: no startup now.
    if let Err(why) = no_outage(&cfg).await {
        progress.finish();
        eprintln!("\nnot starting the cluster again: {why}; the daemon and hecate-bootstrap take it from here");
        rt.flush_notifications(crate::NOTIFY_FLUSH_TIMEOUT).await;
        return Ok(ExitCode::FAILURE);
    }
    progress.begin_run("drill, 2/2: the startup");
    let up = {
        let _lock = crate::run::lock_runs(&cfg.state_dir, PlanKind::Startup)?;
        crate::run::execute_recording(&cfg, rt.clone(), &up_plan, false, progress.sink(), record).await
    };
    progress.finish();
    crate::run::print_summary(&up);
    if let Some(ev) = crate::run::finished_event(&cfg.host, &up) {
        rt.notify_all(&ev);
    }
    rt.flush_notifications(crate::NOTIFY_FLUSH_TIMEOUT).await;

    let budget_after = crate::status::budget(&cfg);
    let fingerprint = plan::shutdown_fingerprint(&cfg);
    let mut text = String::from("\ndrill report\n");
    text.push_str(&stage_report(&down, &earlier, Some(&fingerprint), Some(&budget_before)));
    text.push_str(&stage_report(&up, &earlier, None, None));
    let _ = writeln!(text, "\nbudget before the drill: {budget_before}\nbudget now:              {budget_after}");
    match no_outage(&cfg).await {
        Ok(snap) => {
            let threshold = cfg.policy.runtime_safety_factor * budget_after.seconds;
            text.push_str(&battery_lines(&snap, threshold, down.duration_s, "this drill's shutdown"));
        }
        Err(why) => {
            let _ = writeln!(text, "the battery's runtime now: unknown ({why})");
        }
    }
    print!("{}", hecate_core::text::clean_lines(&text));
    let worst = [down.outcome, up.outcome];
    Ok(if worst.contains(&Outcome::Failed) {
        ExitCode::FAILURE
    } else if worst.contains(&Outcome::Partial) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// One half's stages: each one's time, its share of the budget (for the shutdown), and the
/// longest and count of that stage in earlier successful runs of the same plan (shutdowns of
/// this plan's fingerprint, drills' halves included).
pub fn stage_report(
    report: &RunReport,
    earlier: &[RunRecord],
    fingerprint: Option<&plan::PlanFingerprint>,
    budget: Option<&Budget>,
) -> String {
    let mut s = String::new();
    let comparable: Vec<&RunRecord> = earlier
        .iter()
        .filter(|r| r.plan_kind() == Some(report.kind) && r.outcome == RunOutcome::Success)
        .filter(|r| fingerprint.is_none() || r.plan.is_none() || r.plan.as_ref() == fingerprint)
        .collect();
    let outcome = serde_json::to_value(report.outcome).ok().and_then(|v| v.as_str().map(str::to_string));
    let of_budget = |secs: f64| match budget {
        Some(b) if b.seconds > 0.0 => Some(100.0 * secs / b.seconds),
        _ => None,
    };
    let share = of_budget(report.duration_s).map(|p| format!(" ({p:.0} % of the budget)")).unwrap_or_default();
    let _ = writeln!(s, "\n{}: {:.1} s, {}{share}", report.kind, report.duration_s, outcome.unwrap_or_default());
    let totals: Vec<f64> = comparable.iter().map(|r| r.duration_s).collect();
    if let Some(max) = totals.iter().copied().reduce(f64::max) {
        let _ = writeln!(s, "  earlier {}s: up to {max:.1} s in {} run(s)", report.kind, totals.len());
    } else {
        let _ = writeln!(s, "  no earlier successful {} of this plan to compare with", report.kind);
    }
    let width = report.stages.iter().map(|st| st.name.len()).max().unwrap_or(5).max(5);
    let budget_col = if budget.is_some() { format!("  {:>7}", "budget") } else { String::new() };
    let _ = writeln!(s, "  {:<width$}  {:>9}{budget_col}  earlier (max, runs)", "stage", "this run");
    for st in &report.stages {
        let before: Vec<f64> = comparable
            .iter()
            .flat_map(|r| r.stages.iter().filter(|x| x.name == st.name).map(|x| x.duration_s))
            .collect();
        let was = before
            .iter()
            .copied()
            .reduce(f64::max)
            .map_or_else(|| "-".to_string(), |m| format!("{m:.1} s ({})", before.len()));
        let pct = match of_budget(st.duration_s) {
            Some(p) => format!("  {:>7}", format!("{p:.0} %")),
            None => String::new(),
        };
        let failed = st.steps.iter().filter(|x| !x.ok).count();
        let note = if failed > 0 { format!("  ({failed} step(s) failed)") } else { String::new() };
        let _ = writeln!(s, "  {:<width$}  {:>7.1} s{pct}  {was}{note}", st.name, st.duration_s);
    }
    s
}

/// What a shutdown of `shutdown_s` seconds would mean in an outage starting now, for each UPS
/// that reports its runtime.
fn battery_lines(snap: &Snapshot, threshold_s: f64, shutdown_s: f64, what: &str) -> String {
    let mut s = String::new();
    let mut any = false;
    for src in &snap.sources {
        let Some(runtime) = src.reading.as_ref().and_then(|r| r.runtime_s) else { continue };
        any = true;
        let _ = writeln!(s, "ups {}: {}", src.name, at_runtime(runtime, threshold_s, shutdown_s, what));
    }
    if !any {
        let _ = writeln!(s, "no ups reports its runtime: what the shutdown would mean in an outage cannot be said");
    }
    s
}

/// In words: an outage now, with `runtime_s` of battery as the UPS says, the policy triggering at
/// `threshold_s` (safety factor × budget), and a shutdown of `shutdown_s`.
pub fn at_runtime(runtime_s: f64, threshold_s: f64, shutdown_s: f64, what: &str) -> String {
    if !(runtime_s.is_finite() && threshold_s.is_finite() && shutdown_s.is_finite()) {
        return "the numbers are not usable".into();
    }
    let (left_at_start, when) = if runtime_s <= threshold_s {
        (runtime_s, "at once (the battery already holds less than the threshold)".to_string())
    } else {
        (threshold_s, format!("after about {:.0} s on battery", runtime_s - threshold_s))
    };
    let end = if left_at_start >= shutdown_s {
        format!("ends with about {:.0} s of battery to spare", left_at_start - shutdown_s)
    } else {
        format!(
            "would need {:.0} s more than the battery has: raise the budget or the safety factor, or shorten the \
             shutdown",
            shutdown_s - left_at_start
        )
    };
    format!(
        "{runtime_s:.0} s of runtime now; an outage would trigger the shutdown {when}, at {:.0} s left, and {what} \
         ({shutdown_s:.0} s) {end}",
        left_at_start
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_an_outage_now_would_mean() {
        let full = at_runtime(1380.0, 330.0, 212.0, "this drill's shutdown");
        assert!(full.contains("after about 1050 s on battery, at 330 s left"), "{full}");
        assert!(full.contains("ends with about 118 s of battery to spare"), "{full}");
        let weak = at_runtime(200.0, 330.0, 212.0, "this drill's shutdown");
        assert!(weak.contains("at once"), "{weak}");
        assert!(weak.contains("would need 12 s more than the battery has"), "{weak}");
        assert!(at_runtime(f64::NAN, 1.0, 1.0, "x").contains("not usable"));
    }
}
