//! Who watches the daemon's steps: the log in production, a narrator in `hecate demo`. An
//! observer sees every input the supervisor took and what it decided; it decides nothing itself
//! but whether to end the daemon (the demo does after one outage cycle).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hecate_core::notify::EventKind;
use hecate_core::plan::PlanKind;
use hecate_core::policy::PowerState;
use hecate_core::power::Sample;
use hecate_core::supervisor::{Effect, Input, PhaseKind, RunEnd, Supervisor};

use crate::progress::{Progress, Style};

/// Watches the daemon's steps.
pub trait Observer: Send {
    /// Called after every step with the phase before it; returns true to end the daemon.
    fn observe(&mut self, sup: &Supervisor, before: PhaseKind, input: &Input, effects: &[Effect]) -> bool;
}

/// Production: each poll's decisions go to the log at debug level (the supervisor logs every
/// change of state itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogObserver;

impl Observer for LogObserver {
    fn observe(&mut self, sup: &Supervisor, _before: PhaseKind, input: &Input, _effects: &[Effect]) -> bool {
        if let Input::Poll { .. } = input {
            for s in sup.sources() {
                if let Some(d) = &s.decision {
                    tracing::debug!(ups = %s.name, state = %d.state, "{}", d.describe());
                }
            }
        }
        false
    }
}

/// `hecate demo`: tells a person what happens, as a story: the battery and the threshold in one
/// line that updates (on a terminal), a line for each turn (mains lost, the runtime falling
/// below the threshold, the trigger, mains back), the runs stage by stage; and ends after one
/// shutdown and the startup after it.
#[derive(Debug)]
pub struct DemoObserver {
    progress: Arc<Progress>,
    settle: Duration,
    debounce: u32,
    /// Per source: the last state, streak and tenth of charge told.
    told: std::collections::BTreeMap<String, Told>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Told {
    state: PowerState,
    streak: u32,
    tenth: i64,
}

impl DemoObserver {
    fn poll(&mut self, sup: &Supervisor) {
        let live = self.progress.style() == Style::Live;
        for s in sup.sources() {
            let Some(d) = &s.decision else { continue };
            let reading = match &s.sample {
                Some(Sample::Reading(r)) => Some(r),
                _ => None,
            };
            let charge = reading.and_then(|r| r.charge_pct);
            let secs = |v: f64| format!("{v:.0} s");
            let runtime = d.estimate_s.map(secs).unwrap_or_else(|| "unknown".into());
            let threshold = secs(d.threshold_s);
            let state = match d.state {
                PowerState::Online => "on mains",
                PowerState::OnBattery => "on battery",
                PowerState::Unknown => "no data",
                PowerState::Triggered => "shutdown triggered",
            };
            let pct = charge.map(|c| format!("{c:.0} %")).unwrap_or_else(|| "charge unknown".into());
            self.progress.battery(
                &s.name,
                charge,
                &format!("{pct}  runtime {runtime} / threshold {threshold}  {state}"),
            );
            let now =
                Told { state: d.state, streak: d.streak, tenth: charge.map_or(-1, |c| (c / 10.0).floor() as i64) };
            let before = self.told.insert(s.name.clone(), now);
            let Some(before) = before else { continue };
            let ups = &s.name;
            if now.state != before.state {
                continue;
            }
            if now.streak != before.streak && now.streak > 0 && d.state == PowerState::OnBattery {
                // One decimal: rounded to whole seconds the two may read the same.
                let runtime = d.estimate_s.map(|v| format!("{v:.1} s")).unwrap_or_else(|| "unknown".into());
                self.progress.say(&format!(
                    "runtime {runtime} is below the threshold {:.1} s: {} of {} polls",
                    d.threshold_s, now.streak, self.debounce
                ));
            } else if !live && d.state == PowerState::OnBattery && now.tenth != before.tenth {
                self.progress.say(&format!("ups {ups}: battery {pct}, runtime {runtime}, threshold {threshold}"));
            }
        }
    }

    /// The daemon's alerts, in words: mains lost and back, a low battery, a UPS gone silent.
    fn alert(&self, sup: &Supervisor, kind: EventKind, message: &str, details: &hecate_core::supervisor::Details) {
        let ups = details.get("ups").and_then(|u| u.as_str()).unwrap_or_default();
        let source = sup.sources().iter().find(|s| s.name == ups);
        let threshold = source.and_then(|s| s.decision.as_ref()).map(|d| format!("{:.0} s", d.threshold_s));
        match (kind, threshold) {
            (EventKind::OnBattery, Some(threshold)) => self.progress.say(&format!(
                "mains failed: ups {ups} is on battery. The shutdown starts once the runtime left stays below \
                 {threshold} (runtime_safety_factor × the shutdown budget) for {} polls.",
                self.debounce
            )),
            (EventKind::PowerRestored, _) => self.progress.say(&format!(
                "mains are back on ups {ups}; the cluster starts once they have stayed for {}",
                humantime::format_duration(self.settle)
            )),
            _ => self.progress.say(message),
        }
    }
}

impl Observer for DemoObserver {
    fn observe(&mut self, sup: &Supervisor, before: PhaseKind, input: &Input, effects: &[Effect]) -> bool {
        if let Input::Poll { .. } = input {
            self.poll(sup);
        }
        for e in effects {
            match e {
                Effect::Notify { kind, message, details } if EventKind::UPS_ALERTS.contains(kind) => {
                    self.alert(sup, *kind, message, details)
                }
                Effect::StartRun { kind: PlanKind::Shutdown, reason, .. } => {
                    self.progress.say(&format!("shutdown triggered: {reason}"));
                    if self.progress.style() == Style::Live {
                        self.progress.begin_run("shutdown");
                    }
                }
                Effect::StartRun { kind: PlanKind::Startup, .. } => {
                    self.progress.say(&format!(
                        "mains have been back for {}: starting the cluster",
                        humantime::format_duration(self.settle)
                    ));
                    if self.progress.style() == Style::Live {
                        self.progress.begin_run("startup");
                    }
                }
                _ => {}
            }
        }
        if let Input::RunEnded { end, .. } = input {
            let what = match before {
                PhaseKind::StartingUp => "startup",
                _ => "shutdown",
            };
            let how = match end {
                RunEnd::Finished(o) => serde_json::to_value(o).ok().and_then(|v| v.as_str().map(str::to_string)),
                RunEnd::NotStarted { error, .. } => Some(format!("not started: {error}")),
                RunEnd::Crashed(e) => Some(format!("crashed: {e}")),
            };
            self.progress.end_run();
            self.progress.say(&format!("{what} finished: {}", how.unwrap_or_default()));
        }
        matches!(input, Input::RunEnded { .. }) && before == PhaseKind::StartingUp
    }
}

/// `hecate demo`: the daemon on the embedded simulated config, in a temporary state dir. Its log
/// goes to a file (named at the start), so the story reads undisturbed.
pub async fn demo(timeout: Duration) -> anyhow::Result<std::process::ExitCode> {
    let dir = tempfile::Builder::new().prefix("hecate-demo-").tempdir().context("creating a temporary state dir")?;
    let mut cfg = crate::sim_config(dir.path())?;
    cfg.daemon.metrics_listen = None;
    let progress = Progress::new(Style::choose(false));
    let log = tempfile::Builder::new()
        .prefix("hecate-demo-")
        .suffix(".log")
        .tempfile()
        .context("creating the demo's log file")?
        .keep()
        .context("keeping the demo's log file")?
        .1;
    // Not even warnings above the display: the story tells what they would.
    crate::logging::to_file(&log, None).context("opening the demo's log file")?;
    println!("Hecate demo: the daemon on a simulated UPS and a five-node cluster (configs/sim.yaml).");
    println!("Mains fail a few seconds in: watch the runtime fall to the threshold, the cluster shut down,");
    println!("power return and the cluster come back. The daemon's log: {}\n", log.display());
    let observer = DemoObserver {
        progress: progress.clone(),
        settle: *cfg.daemon.power_return_settle,
        debounce: cfg.policy.debounce_polls,
        told: Default::default(),
    };
    let opts =
        crate::daemon::Options { sink: progress.sink(), observer: Box::new(observer), stop_after: Some(timeout) };
    let code = crate::daemon::run(Arc::new(cfg), opts).await;
    progress.finish();
    let code = code?;
    let runs =
        hecate_core::history::History::load(&dir.path().join("runs.json")).map(|l| l.history.runs).unwrap_or_default();
    println!("\nruns.json now holds {} run(s); the shutdown budget learns from them:", runs.len());
    for r in runs {
        println!("  {} {} {:.1} s ({})", r.started_at, r.kind, r.duration_s, r.outcome);
    }
    Ok(code)
}
