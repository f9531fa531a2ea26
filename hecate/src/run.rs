//! `hecate startup` and `hecate shutdown`: build the plan, print it, or carry it out.

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use hecate_core::cluster::DrainOptions;
use hecate_core::config::Config;
use hecate_core::engine::{
    Engine, EngineEvent, EngineOptions, EventSink, Journal, Outcome, PowerOffOptions, RunReport,
};
use hecate_core::notify::{Event, EventKind};
use hecate_core::plan::{self, Plan, PlanKind};
use hecate_core::runtime::Runtime;

use crate::cli::RunArgs;
use crate::progress::{Progress, Style};

/// `hecate startup`.
pub async fn startup(args: &RunArgs, force_branch: Option<String>) -> anyhow::Result<ExitCode> {
    let cfg = crate::load_config(&args.config)?;
    let rt = Arc::new(build_reporting(&cfg));
    let plan = plan::startup_plan(&cfg, &rt, "requested from the command line", force_branch);
    carry_out(&cfg, rt, plan, args).await
}

/// `hecate shutdown`.
pub async fn shutdown(args: &RunArgs, reason: &str) -> anyhow::Result<ExitCode> {
    let cfg = crate::load_config(&args.config)?;
    let rt = Arc::new(build_reporting(&cfg));
    let plan = plan::shutdown_plan(&cfg, &rt, reason);
    carry_out(&cfg, rt, plan, args).await
}

/// Builds what it can; each backend that cannot be built is said on stderr. A run goes on
/// without it (the steps that need it fail at once, fallbacks go on): a broken SSH key on one
/// node must not keep the others up.
pub(crate) fn build_reporting(cfg: &Config) -> Runtime {
    let rt = Runtime::build_degraded(cfg);
    for b in &rt.unavailable {
        eprintln!("problem: {b}");
    }
    rt
}

async fn carry_out(cfg: &Config, rt: Arc<Runtime>, plan: Plan, args: &RunArgs) -> anyhow::Result<ExitCode> {
    if !args.execute {
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", plan.render(&crate::status::expected(cfg, plan.kind)));
            println!("\ndry run: nothing was done. Add --execute to carry this plan out.");
        }
        // A dry run is a preflight: a backend that cannot be built fails it.
        if !rt.unavailable.is_empty() {
            eprintln!(
                "{} backend(s) cannot be built (above): the steps that need them would fail",
                rt.unavailable.len()
            );
            return Ok(ExitCode::FAILURE);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let _lock = lock_runs(&cfg.state_dir, plan.kind)?;
    let progress = live_progress(cfg, &plan.kind.to_string(), args.json);
    progress.begin_run(&format!("{}: {}", plan.kind, plan.reason));
    let report = execute(cfg, rt.clone(), &plan, args.resume, progress.sink()).await;
    // The log stays in its file to the end: what follows (the notifications, a power-off)
    // belongs with the run's.
    progress.finish();
    if progress.style() == Style::Json {
        println!("{}", serde_json::json!({ "event": "run_finished", "report": report }));
    } else {
        print_summary(&report);
    }
    if let Some(ev) = finished_event(&cfg.host, &report) {
        rt.notify_all(&ev);
    }
    // The process exits next: give queued notifications (the last stage's among them) a
    // bounded chance to go out.
    rt.flush_notifications(crate::NOTIFY_FLUSH_TIMEOUT).await;
    if plan.finally.is_some() {
        power_off_self(cfg).await;
    }
    Ok(match report.outcome {
        Outcome::Success => ExitCode::SUCCESS,
        Outcome::Partial => ExitCode::from(2),
        Outcome::Failed => ExitCode::FAILURE,
    })
}

/// The progress display for a run from the command line. On a terminal it is live, and the log
/// goes to `STATE_DIR/<log_name>.log` (its warnings above the display); otherwise plain lines, or
/// JSON with `json`.
pub fn live_progress(cfg: &Config, log_name: &str, json: bool) -> Arc<Progress> {
    let progress = Progress::new(Style::choose(json));
    if let Some(mp) = progress.multi() {
        let log = cfg.state_dir.join(format!("{log_name}.log"));
        match crate::logging::to_file(&log, Some(mp)) {
            Ok(()) => progress.say(&format!("the log: {}", log.display())),
            Err(e) => tracing::warn!(error = %e, file = %log.display(), "cannot write the log file; logging here"),
        }
    }
    progress
}

/// Takes the per-state-dir run lock, so two runs never act on the cluster at once. The lock file
/// names its holder (`PID KIND`), so a shutdown can find a startup it must stop.
pub fn lock_runs(state_dir: &Path, kind: PlanKind) -> anyhow::Result<File> {
    match try_lock_runs(state_dir, kind)? {
        Some(f) => Ok(f),
        None => anyhow::bail!(
            "another startup or shutdown is running (lock {} is held{})",
            state_dir.join("run.lock").display(),
            run_lock_holder(state_dir).map(|(pid, k)| format!(" by pid {pid}, a {k}")).unwrap_or_default()
        ),
    }
}

/// The run lock if it is free, `None` if another run holds it.
pub fn try_lock_runs(state_dir: &Path, kind: PlanKind) -> anyhow::Result<Option<File>> {
    use std::io::{Seek as _, Write as _};
    std::fs::create_dir_all(state_dir).with_context(|| format!("creating state dir {}", state_dir.display()))?;
    let path = state_dir.join("run.lock");
    let mut f = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {
            // Only the holder writes, so the content always names the current holder.
            let _ = f.set_len(0).and_then(|()| f.rewind()).and_then(|()| writeln!(f, "{} {kind}", std::process::id()));
            Ok(Some(f))
        }
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Who holds the run lock: (pid, kind) as its holder wrote them.
pub fn run_lock_holder(state_dir: &Path) -> Option<(u32, String)> {
    let text = std::fs::read_to_string(state_dir.join("run.lock")).ok()?;
    let mut words = text.split_whitespace();
    Some((words.next()?.parse().ok()?, words.next()?.to_string()))
}

/// Runs a plan with its journal and records the finished run in runs.json. A run matters more
/// than its records: a journal that cannot be written (a full disk) means a run that could not
/// be resumed after a crash, not a run that does not happen, and a run that cannot be recorded is
/// still done. Both are logged.
pub async fn execute(cfg: &Config, rt: Arc<Runtime>, plan: &Plan, resume: bool, sink: EventSink) -> RunReport {
    execute_recording(cfg, rt, plan, resume, sink, crate::status::record_run).await
}

/// [`execute`], recording the finished run with `record` (a drill records its halves as drill
/// runs).
pub async fn execute_recording(
    cfg: &Config,
    rt: Arc<Runtime>,
    plan: &Plan,
    resume: bool,
    sink: EventSink,
    record: impl FnOnce(&Config, &RunReport) -> anyhow::Result<()>,
) -> RunReport {
    let mut journal = match Journal::open(&cfg.state_dir, plan.kind, &plan.reason, resume) {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::error!(error = %e, kind = %plan.kind, "cannot write the run's journal: running without one (a crash now could not be resumed)");
            None
        }
    };
    if journal.as_ref().is_some_and(Journal::is_resumed) {
        tracing::info!(kind = %plan.kind, "resuming an interrupted run from its journal");
    }
    let engine = Engine::new(rt, engine_options(cfg), sink);
    let report = engine.execute(plan, journal.as_mut()).await;
    if let Err(e) = record(cfg, &report) {
        tracing::error!(error = %format!("{e:#}"), "the run is done but could not be recorded");
    }
    crate::cluster_view::record(&cfg.state_dir, plan, &report);
    if let Some(j) = journal
        && let Err(e) = j.complete()
    {
        tracing::error!(error = %e, "the run is done but its journal could not be removed");
    }
    report
}

/// Powers this host off with the configured command, once the run is recorded and notifications
/// had their chance. Its failure is logged: there is nothing left to fall back to.
pub async fn power_off_self(cfg: &Config) {
    let Some((program, args)) = cfg.shutdown.power_off_self_command.split_first() else { return };
    tracing::warn!(command = %cfg.shutdown.power_off_self_command.join(" "), "powering this host off");
    let run = tokio::process::Command::new(program).args(args).stdin(std::process::Stdio::null()).status();
    match tokio::time::timeout(std::time::Duration::from_secs(60), run).await {
        Ok(Ok(st)) if st.success() => {}
        Ok(Ok(st)) => tracing::error!(status = %st, "power-off command failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "cannot run the power-off command"),
        Err(_) => tracing::error!("power-off command did not return within 60 s"),
    }
}

/// The event for a finished run: `shutdown_done` with the outcome, the time and the failures. A
/// startup plan announces its own end in its last stage, so it gets one here only when it
/// stopped before that stage.
pub fn finished_event(host: &str, report: &RunReport) -> Option<Event> {
    let kind = match (report.kind, report.outcome) {
        (PlanKind::Shutdown, _) => EventKind::ShutdownDone,
        (PlanKind::Startup, Outcome::Failed) => EventKind::StartupDone,
        (PlanKind::Startup, _) => return None,
    };
    let failures: Vec<String> = report.failures().map(|f| format!("{}: {}", f.description, f.message)).collect();
    let outcome = serde_json::to_value(report.outcome).unwrap_or_default();
    Some(
        Event::now(
            kind,
            host,
            format!("{} finished in {:.1} s ({})", report.kind, report.duration_s, outcome.as_str().unwrap_or("?")),
        )
        .with("outcome", outcome)
        .with("duration_s", report.duration_s)
        .with("reason", report.reason.clone())
        .with("failures", failures),
    )
}

/// Engine settings from the config.
pub fn engine_options(cfg: &Config) -> EngineOptions {
    EngineOptions {
        wait_poll: (*cfg.daemon.poll_interval).min(std::time::Duration::from_secs(2)),
        drain: DrainOptions {
            timeout: *cfg.shutdown.drain_timeout,
            pdb_timeout: *cfg.shutdown.pdb_timeout,
            fallback: cfg.shutdown.drain_fallback,
            evict_unmanaged: cfg.shutdown.evict_unmanaged,
            delete_emptydir_data: cfg.shutdown.delete_emptydir_data,
            max_grace: *cfg.shutdown.max_pod_grace,
        },
        power_off: PowerOffOptions {
            soft_off_timeout: *cfg.shutdown.soft_off_timeout,
            off_silence: *cfg.shutdown.off_silence,
        },
    }
}

/// Structured progress for the daemon's log.
pub fn log_sink() -> EventSink {
    Arc::new(|ev| match ev {
        EngineEvent::StageStarted { index, total, name, steps } => {
            tracing::info!(stage = %name, index, total, steps, "stage started")
        }
        EngineEvent::StepStarted { id, description } => tracing::info!(step = %id, "{description}"),
        EngineEvent::StepFinished(o) if o.ok => {
            tracing::info!(step = %o.id, duration_s = o.duration_s, resumed = o.resumed, "step done: {}", o.message)
        }
        EngineEvent::StepFinished(o) => {
            tracing::warn!(step = %o.id, duration_s = o.duration_s, "step failed: {}", o.message)
        }
        EngineEvent::StageFinished { name, duration_s, failed } => {
            tracing::info!(stage = %name, duration_s, failed, "stage finished")
        }
    })
}

/// The end-of-run report for a terminal.
pub fn print_summary(report: &RunReport) {
    let outcome = match report.outcome {
        Outcome::Success => "success",
        Outcome::Partial => "partial (some steps failed, the run went on)",
        Outcome::Failed => "failed (a step the rest depends on failed)",
    };
    println!("\n{} finished in {:.1}s: {outcome}", report.kind, report.duration_s);
    for f in report.failures() {
        println!("  ✗ {}: {}", f.description, f.message);
    }
}
