//! `hecate simulate --lifecycle`: a recorded outage through the whole daemon's decisions, not
//! only the policy. The trace drives the power source; the supervisor runs on virtual time in
//! the lifecycle model of `hecate_core::lifecycle` (a shutdown takes the budget, a startup a fixed
//! time); the output lists what the supervisor started and when.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use hecate_core::budget::{self, BudgetConfig};
use hecate_core::config::DaemonConfig;
use hecate_core::history::History;
use hecate_core::lifecycle::{Entry, Happening, Replay};
use hecate_core::plan::PlanKind;
use hecate_core::power::Sample;
use hecate_core::supervisor::SupervisorConfig;
use hecate_core::trace::{self, Trace};

/// Polls a lifecycle replay visits at most: a week at one poll a second. A trace spanning more is
/// refused rather than replayed for hours.
const MAX_POLLS: f64 = 7.0 * 24.0 * 3600.0;

/// How long a startup takes in the replay: it only delays when the next outage can be noticed by
/// a startup-abandoning trigger, and real startups take minutes.
const STARTUP_S: f64 = 180.0;

/// Runs the lifecycle replay and prints, per trace, what the supervisor did.
pub fn run(trace_path: &Path, runs: Option<&Path>, config: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let (sup_cfg, budget_cfg, poll_s) = match config {
        Some(c) => {
            let cfg = crate::load_config(c)?;
            (SupervisorConfig::from_config(&cfg), cfg.budget.clone(), cfg.daemon.poll_interval.as_secs_f64())
        }
        None => {
            let d = DaemonConfig::default();
            (SupervisorConfig::default(), BudgetConfig::default(), d.poll_interval.as_secs_f64())
        }
    };
    let records = match runs {
        Some(p) => History::load(p).with_context(|| format!("reading {}", p.display()))?.history.runs,
        None => Vec::new(),
    };
    let budget = budget::estimate(&records, &budget_cfg, None);
    let files = if trace_path.is_dir() { trace::trace_files(trace_path)? } else { vec![trace_path.to_path_buf()] };
    let mut out = std::io::stdout().lock();
    let mut failed = false;
    for f in files {
        let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let replayed = Trace::load(&f)
            .map_err(anyhow::Error::from)
            .and_then(|tr| replay(tr, &sup_cfg, budget.seconds, poll_s).with_context(|| format!("{}", f.display())));
        let (timeline, end) = match replayed {
            Ok(r) => r,
            Err(e) => {
                // One unreadable trace must not hide the others' results.
                eprintln!("error: {e:#}");
                failed = true;
                continue;
            }
        };
        let first_shutdown = timeline.iter().find_map(|e| match &e.what {
            Happening::RunStarted { kind: PlanKind::Shutdown, .. } => Some(e.t),
            _ => None,
        });
        if json {
            // `triggered_at` as `simulate` gives it, so the scorer reads this output too.
            let line =
                serde_json::json!({"trace": name, "triggered_at": first_shutdown, "end": end, "timeline": timeline});
            writeln!(out, "{line}")?;
        } else {
            writeln!(out, "{name}:")?;
            for e in timeline.iter().filter(|e| worth_a_line(&e.what)) {
                writeln!(out, "  {:>7.0} s  {}", e.t, describe(&e.what))?;
            }
            writeln!(out, "  {end:>7.0} s  end of trace")?;
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// One trace through the supervisor; its timeline and the time it ends.
fn replay(trace: Trace, cfg: &SupervisorConfig, budget_s: f64, poll_s: f64) -> anyhow::Result<(Vec<Entry>, f64)> {
    anyhow::ensure!(poll_s.is_finite() && poll_s > 0.0, "the poll interval must be a positive number of seconds");
    let end = trace.rows.last().map_or(0.0, |r| r.t);
    anyhow::ensure!(
        end / poll_s <= MAX_POLLS,
        "the trace spans {end} s, {:.0} polls at {poll_s} s: more than the {MAX_POLLS:.0} a replay visits",
        end / poll_s
    );
    let power = Box::new(move |t: f64| match trace.at(t) {
        Some(row) => row.sample.clone(),
        None => Sample::NoData { reason: "before the trace's first row".into() },
    });
    let mut r = Replay::new(cfg.clone(), vec![("trace".into(), power)]);
    r.poll_s = poll_s;
    r.budget_s = budget_s;
    r.shutdown_s = budget_s;
    r.startup_s = STARTUP_S;
    r.run_until(end);
    Ok((r.timeline, end))
}

fn worth_a_line(h: &Happening) -> bool {
    !matches!(h, Happening::Logged { .. } | Happening::Phase { .. })
}

fn describe(h: &Happening) -> String {
    match h {
        Happening::RunStarted { kind, reason, resume: false } => format!("{kind} started: {reason}"),
        Happening::RunStarted { kind, reason, resume: true } => format!("{kind} resumed: {reason}"),
        Happening::RunNotStarted { kind, error } => format!("{kind} could not start: {error}"),
        Happening::RunFinished { kind } => format!("{kind} finished"),
        Happening::RunAborted { kind } => format!("{kind} abandoned"),
        Happening::Notified { kind, message } => format!("notify {kind}: {message}"),
        Happening::Forwarded { reason } => format!("trigger forwarded: {reason}"),
        Happening::ClearSent => "clear sent to the coordinator".into(),
        Happening::PoweredOffSelf => "this host powers itself off".into(),
        Happening::StoppedOtherRun => "another process's startup asked to stop".into(),
        Happening::JournalClosed { why } => format!("journal closed: {why}"),
        Happening::Restarted => "daemon restarted".into(),
        Happening::OperatorStartup => "an operator started the cluster".into(),
        Happening::Phase { phase } => format!("phase {phase}"),
        Happening::Logged { message } => message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_absurd_span_is_refused_at_once() {
        // The parser refuses such a trace already; a trace built otherwise meets this check.
        let row = |t: f64| hecate_core::trace::TraceRow { t, sample: Sample::NoData { reason: String::new() } };
        let tr = Trace { rows: vec![row(0.0), row(1e15)] };
        let e = replay(tr, &SupervisorConfig::default(), 240.0, 2.0).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("more than the"), "{e}");
    }
}
