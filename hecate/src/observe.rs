//! Who watches the daemon's steps: the log in production, a narrator in `hecate demo`. An
//! observer sees every input the supervisor took and what it decided; it decides nothing itself
//! but whether to end the daemon (the demo does after one outage cycle).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hecate_core::plan::PlanKind;
use hecate_core::supervisor::{Effect, Input, PhaseKind, Supervisor};

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
                    tracing::debug!(ups = %s.name, state = %d.state, "{}", d.reason);
                }
            }
        }
        false
    }
}

/// `hecate demo`: tells a person what happens, and ends after one shutdown and the startup after it.
#[derive(Debug, Clone, Default)]
pub struct DemoObserver {
    settle: Duration,
}

impl Observer for DemoObserver {
    fn observe(&mut self, sup: &Supervisor, before: PhaseKind, input: &Input, effects: &[Effect]) -> bool {
        if let Input::Poll { .. } = input {
            for s in sup.sources() {
                // While watching every non-online poll is worth a line; after that only changes.
                if let Some(d) = &s.decision
                    && sup.phase().kind() == PhaseKind::Watching
                    && d.state != hecate_core::policy::PowerState::Online
                {
                    println!("[ups {}] {}: {}", s.name, d.state, d.reason);
                }
            }
        }
        for e in effects {
            match e {
                Effect::StartRun { kind: PlanKind::Shutdown, reason, .. } => {
                    println!("\n>>> shutdown triggered: {reason}\n")
                }
                Effect::StartRun { kind: PlanKind::Startup, .. } => {
                    println!("\n>>> mains back for {}: starting the cluster\n", humantime::format_duration(self.settle))
                }
                _ => {}
            }
        }
        matches!(input, Input::RunEnded { .. }) && before == PhaseKind::StartingUp
    }
}

/// `hecate demo`: the daemon on the embedded simulated config, in a temporary state dir.
pub async fn demo(timeout: Duration) -> anyhow::Result<std::process::ExitCode> {
    let dir = tempfile::Builder::new().prefix("hecate-demo-").tempdir().context("creating a temporary state dir")?;
    let mut cfg = crate::sim_config(dir.path())?;
    cfg.daemon.metrics_listen = None;
    println!("Hecate demo: simulated UPS and cluster (configs/sim.yaml), state in {}", dir.path().display());
    println!(
        "mains fail a few seconds in; watch the policy decide, the cluster shut down, power return and the cluster come back.\n"
    );
    let observer = DemoObserver { settle: *cfg.daemon.power_return_settle };
    let opts = crate::daemon::Options {
        sink: crate::run::terminal_sink(),
        observer: Box::new(observer),
        stop_after: Some(timeout),
    };
    let code = crate::daemon::run(Arc::new(cfg), opts).await?;
    let runs =
        hecate_core::history::History::load(&dir.path().join("runs.json")).map(|l| l.history.runs).unwrap_or_default();
    println!("\nruns.json now holds {} run(s); the shutdown budget learns from them:", runs.len());
    for r in runs {
        println!("  {} {} {:.1} s ({})", r.started_at, r.kind, r.duration_s, r.outcome);
    }
    Ok(code)
}
