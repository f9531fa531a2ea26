//! `hecate daemon`: poll every power source, run the policy, and on a trigger run the shutdown
//! plan to the end. Optionally bring the cluster back when mains power returns.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use hecate_core::config::{Config, HostRole};
use hecate_core::engine::{EventSink, Journal, RunReport};
use hecate_core::notify::{Event, EventKind};
use hecate_core::plan::{self, PlanKind};
use hecate_core::policy::{Decision, Policy, PowerState};
use hecate_core::power::{PowerReading, Sample};
use hecate_core::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::forward::{self, Forwarded, ForwarderMessage};
use crate::metrics::Metrics;
use crate::status::{Phase, Snapshot, SourceStatus};

/// How the daemon is run.
pub struct Options {
    /// Progress of runs.
    pub sink: EventSink,
    /// Exit once a shutdown and the startup after it finished (the demo).
    pub exit_after_cycle: bool,
    /// Give up after this long (the demo).
    pub stop_after: Option<Duration>,
    /// Print decisions for a person watching (the demo) rather than only logging them.
    pub narrate: bool,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("exit_after_cycle", &self.exit_after_cycle)
            .field("stop_after", &self.stop_after)
            .finish_non_exhaustive()
    }
}

/// `hecate daemon --config FILE`.
pub async fn run_from_file(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = crate::load_config(path)?;
    run(
        Arc::new(cfg),
        Options { sink: crate::run::log_sink(), exit_after_cycle: false, stop_after: None, narrate: false },
    )
    .await
}

/// `hecate demo`: the daemon on the embedded simulated config, in a temporary state dir.
pub async fn demo(timeout: Duration) -> anyhow::Result<ExitCode> {
    let dir = tempfile::Builder::new().prefix("hecate-demo-").tempdir().context("creating a temporary state dir")?;
    let mut cfg = crate::sim_config(dir.path())?;
    cfg.daemon.metrics_listen = None;
    println!("Hecate demo: simulated UPS and cluster (configs/sim.yaml), state in {}", dir.path().display());
    println!(
        "mains fail a few seconds in; watch the policy decide, the cluster shut down, power return and the cluster come back.\n"
    );
    let code = run(
        Arc::new(cfg),
        Options { sink: crate::run::terminal_sink(), exit_after_cycle: true, stop_after: Some(timeout), narrate: true },
    )
    .await?;
    let runs =
        hecate_core::history::History::load(&dir.path().join("runs.json")).map(|l| l.history.runs).unwrap_or_default();
    println!("\nruns.json now holds {} run(s); the shutdown budget learns from them:", runs.len());
    for r in runs {
        println!("  {} {} {:.1} s ({})", r.started_at, r.kind, r.duration_s, r.outcome);
    }
    Ok(code)
}

struct SourceState {
    name: String,
    kind: String,
    policy: Policy,
    last: Option<Decision>,
    reading: Option<PowerReading>,
    error: Option<String>,
    poll_errors: u64,
}

/// The daemon loop.
pub async fn run(cfg: Arc<Config>, opts: Options) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&cfg.state_dir)
        .with_context(|| format!("creating state dir {}", cfg.state_dir.display()))?;
    let _daemon_lock = lock_daemon(&cfg.state_dir)?;
    let rt = Arc::new(Runtime::build(&cfg).context("building backends")?);
    let metrics = Metrics::new()?;
    if let Some(addr) = cfg.daemon.metrics_listen {
        let m = metrics.clone();
        // A metrics port that cannot be bound must not stop UPS protection: log and go on.
        tokio::spawn(async move {
            if let Err(e) = m.serve(addr).await {
                tracing::error!(error = %format!("{e:#}"), "metrics endpoint unavailable");
            }
        });
    }
    // Multi-UPS: a coordinator accepts triggers from forwarders; a forwarder needs the token to
    // send its own. A missing token file stops the daemon here, not when the UPS runs low.
    let (fwd_tx, mut fwd_rx) = mpsc::channel::<ForwarderMessage>(16);
    let mut forwarder = forward::Forwarder::from_config(&cfg)?;
    if let (HostRole::Coordinator, Some(f)) = (cfg.role, &cfg.forwarding) {
        let token = forward::read_token(&f.token_file)?;
        let tls = match (&f.tls_cert_file, &f.tls_key_file) {
            (Some(cert), Some(key)) => Some(forward::tls_acceptor(cert, key)?),
            _ => None,
        };
        if let Some(listen) = f.listen {
            let tx = fwd_tx.clone();
            // Like /metrics: an endpoint that cannot be bound must not stop UPS protection.
            tokio::spawn(async move {
                if let Err(e) = forward::serve(listen, token, tx, tls).await {
                    tracing::error!(error = %format!("{e:#}"), "forwarding endpoint unavailable");
                }
            });
        }
    }
    // Coordinator: forwarders that triggered and have not cleared.
    let mut outstanding: std::collections::BTreeSet<String> = Default::default();

    let mut sources: Vec<SourceState> = rt
        .power
        .iter()
        .map(|p| SourceState {
            name: p.name.clone(),
            kind: p.kind.clone(),
            policy: Policy::new(cfg.policy.clone()),
            last: None,
            reading: None,
            error: None,
            poll_errors: 0,
        })
        .collect();
    let mut budget = crate::status::budget(&cfg);
    tracing::info!(host = %cfg.host, sources = sources.len(), nodes = cfg.nodes.len(), budget = %budget, "daemon started");

    let mut phase = Phase::Watching;
    let mut trigger_reason: Option<String> = None;
    let mut running: Option<JoinHandle<anyhow::Result<RunReport>>> = None;
    let mut last_run: Option<serde_json::Value> = None;
    let mut online_since: Option<Instant> = None;
    let mut cycle_done = false;
    // Forwarder: when the coordinator took the trigger (monotonic for the delay, wall-clock for
    // status), and whether this host was powered off since.
    let mut forwarded_at: Option<(Instant, SystemTime)> = None;
    let mut self_power_off_done = false;

    // A shutdown interrupted by a crash or restart continues before anything else.
    if Journal::pending(&cfg.state_dir, PlanKind::Shutdown) {
        tracing::warn!("an interrupted shutdown was found in the journal; resuming it");
        trigger_reason = Some("resuming an interrupted shutdown".into());
        running = Some(spawn_run(
            &cfg,
            &rt,
            PlanKind::Shutdown,
            "resuming an interrupted shutdown",
            Default::default(),
            true,
            opts.sink.clone(),
        ));
        phase = Phase::ShuttingDown;
    }

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut interval = tokio::time::interval(*cfg.daemon.poll_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let t0 = Instant::now();
    let watchdog = sd_notify::watchdog_enabled();
    let mut ready_sent = false;

    loop {
        let mut from_forwarder = None;
        tokio::select! {
            _ = interval.tick() => {}
            Some(f) = fwd_rx.recv() => { from_forwarder = Some(f); }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: exiting"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: exiting"); break; }
        }
        if opts.stop_after.is_some_and(|d| t0.elapsed() > d) {
            tracing::warn!("stopping: the time limit passed");
            return Ok(ExitCode::FAILURE);
        }

        // A finished run moves the phase on and teaches the budget.
        if running.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(h) = running.take()
        {
            let kind = if phase == Phase::StartingUp { PlanKind::Startup } else { PlanKind::Shutdown };
            match h.await {
                Ok(Ok(report)) => {
                    metrics.run_finished(&report.kind.to_string(), report.duration_s);
                    last_run = Some(
                        serde_json::json!({"kind": report.kind, "outcome": report.outcome, "duration_s": report.duration_s, "started_at": report.started_at}),
                    );
                    if let Some(ev) = crate::run::finished_event(&cfg.host, &report) {
                        rt.notify_all(&ev);
                    }
                    let failed = report.failures().count();
                    tracing::info!(kind = %report.kind, outcome = ?report.outcome, duration_s = report.duration_s, failed, "run finished");
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %format!("{e:#}"), "run could not be carried out")
                }
                Err(e) => tracing::error!(error = %e, "run task failed"),
            }
            budget = crate::status::budget(&cfg);
            if kind == PlanKind::Shutdown {
                phase = Phase::ShutDown;
                online_since = None;
                if cfg.shutdown.power_off_self {
                    // Last of all: the run is recorded; give the notifications their chance.
                    rt.flush_notifications(crate::NOTIFY_FLUSH_TIMEOUT).await;
                    crate::run::power_off_self(&cfg).await;
                }
            } else {
                phase = Phase::Watching;
                trigger_reason = None;
                for s in &mut sources {
                    s.policy.reset();
                }
                cycle_done = true;
            }
        }
        // A forwarder's trigger was taken by the coordinator, or must be acted on here.
        let outcome = match forwarder.as_mut() {
            Some(f) => f.trigger_outcome().await,
            None => None,
        };
        if let Some((result, reason, details)) = outcome {
            match result {
                Ok(note) => {
                    tracing::warn!(%note, "the coordinator took the trigger: the cluster's shutdown is its to run");
                    phase = Phase::Forwarded;
                    online_since = None;
                    forwarded_at = Some((Instant::now(), SystemTime::now()));
                    self_power_off_done = false;
                }
                Err(why) => {
                    tracing::error!(%why, "forwarding the trigger failed: running this host's own shutdown plan");
                    metrics.forwarder_fallback();
                    rt.notify_all(
                        &Event::now(
                            EventKind::ForwarderFallback,
                            &cfg.host,
                            format!("coordinator not reached ({why}): running this host's own shutdown plan"),
                        )
                        .with("reason", reason.clone()),
                    );
                    let reason = format!("{reason} (forwarding failed: {why})");
                    trigger_reason = Some(reason.clone());
                    running =
                        Some(spawn_run(&cfg, &rt, PlanKind::Shutdown, &reason, details, false, opts.sink.clone()));
                    phase = Phase::ShuttingDown;
                }
            }
        }

        if cycle_done && opts.exit_after_cycle {
            rt.flush_notifications(crate::NOTIFY_FLUSH_TIMEOUT).await;
            return Ok(ExitCode::SUCCESS);
        }

        let mut newly_triggered = None;
        if let Some(f) = from_forwarder {
            // Not a poll: the sources are read at the next tick, so a forwarded message does not
            // count towards the coordinator's own debounce.
            match f.what {
                Forwarded::Trigger(why) => {
                    let reason = format!("forwarded by {}: {why}", f.host);
                    tracing::warn!(peer = %f.peer, %reason, "trigger forwarded by another instance");
                    let mut details = serde_json::Map::new();
                    details.insert("forwarded_by".into(), f.host.clone().into());
                    details.insert("forwarder_address".into(), f.peer.to_string().into());
                    metrics.forwarded(&f.host);
                    outstanding.insert(f.host);
                    newly_triggered = Some((reason, details));
                }
                Forwarded::Clear => {
                    if outstanding.remove(&f.host) {
                        tracing::info!(forwarder = %f.host, peer = %f.peer, "forwarder's mains are back");
                    } else {
                        tracing::debug!(forwarder = %f.host, "clear from a forwarder with no outage on record");
                    }
                }
            }
        } else {
            let t = t0.elapsed().as_secs_f64();
            let timeout = (*cfg.daemon.poll_interval).max(Duration::from_secs(1));
            let reads = hecate_core::runtime::join_all(rt.power.iter().map(|p| async move {
                match tokio::time::timeout(timeout, async { p.source.lock().await.read().await }).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {}", humantime::format_duration(timeout))),
                }
            }))
            .await;

            for (s, read) in sources.iter_mut().zip(reads) {
                let sample = match &read {
                    Ok(r) => Sample::Reading(r.clone()),
                    Err(e) => Sample::NoData { reason: e.clone() },
                };
                let was_triggered = s.policy.is_triggered();
                let d = s.policy.observe(t, &sample, budget.seconds);
                metrics.observe(&s.name, read.as_ref().ok(), &d);
                let changed = s.last.as_ref().is_none_or(|l| l.state != d.state);
                // While watching, every non-online poll is worth a line; once the cluster is down
                // only changes are.
                if changed || (phase == Phase::Watching && d.state != PowerState::Online) {
                    narrate(&opts, &s.name, &d, changed);
                }
                if changed {
                    match d.state {
                        PowerState::OnBattery if phase == Phase::Watching => {
                            rt.notify_all(
                                &Event::now(EventKind::OnBattery, &cfg.host, format!("ups {} is on battery", s.name))
                                    .with("reason", d.reason.clone()),
                            );
                        }
                        PowerState::Online if s.last.is_some() => {
                            rt.notify_all(&Event::now(
                                EventKind::PowerRestored,
                                &cfg.host,
                                format!("ups {} is back on mains", s.name),
                            ));
                        }
                        _ => {}
                    }
                }
                if d.triggered && !was_triggered {
                    let details = trigger_details(&s.name, &d, read.as_ref().ok(), budget.seconds);
                    newly_triggered = Some((format!("ups {}: {}", s.name, d.reason), details));
                }
                match read {
                    Ok(r) => {
                        s.reading = Some(r);
                        s.error = None;
                    }
                    Err(e) => {
                        s.reading = None;
                        s.error = Some(e);
                        s.poll_errors += 1;
                    }
                }
                s.last = Some(d);
            }
        }

        if let Some((reason, details)) = newly_triggered {
            match phase {
                Phase::Watching if forwarder.is_some() => {
                    tracing::warn!(%reason, "shutdown triggered: forwarding it to the coordinator");
                    rt.notify_all(
                        &Event::now(
                            EventKind::ShutdownTriggered,
                            &cfg.host,
                            format!("{reason}; forwarding to the coordinator"),
                        )
                        .with("reason", reason.clone()),
                    );
                    trigger_reason = Some(reason.clone());
                    if let Some(f) = forwarder.as_mut() {
                        f.send_trigger(&reason, details);
                    }
                    phase = Phase::Forwarding;
                }
                Phase::Forwarding | Phase::Forwarded => {
                    tracing::info!(%reason, "trigger noted: already forwarded to the coordinator")
                }
                Phase::Watching => {
                    tracing::warn!(%reason, "shutdown triggered");
                    if opts.narrate {
                        println!("\n>>> shutdown triggered: {reason}\n");
                    }
                    trigger_reason = Some(reason.clone());
                    running =
                        Some(spawn_run(&cfg, &rt, PlanKind::Shutdown, &reason, details, false, opts.sink.clone()));
                    phase = Phase::ShuttingDown;
                }
                // Another source triggering while a shutdown runs joins it: nothing cancels or restarts it.
                Phase::ShuttingDown => {
                    tracing::info!(%reason, "trigger joins the shutdown already running")
                }
                // Power failing again while the cluster comes back: the startup is abandoned
                // (its journal stays for the record) and the cluster is shut down from
                // whatever state it reached.
                Phase::StartingUp => {
                    tracing::warn!(%reason, "shutdown triggered during startup: abandoning the startup");
                    if let Some(h) = running.take() {
                        h.abort();
                    }
                    trigger_reason = Some(reason.clone());
                    running =
                        Some(spawn_run(&cfg, &rt, PlanKind::Shutdown, &reason, details, false, opts.sink.clone()));
                    phase = Phase::ShuttingDown;
                }
                Phase::ShutDown => tracing::info!(%reason, "trigger while the cluster is down: noted"),
            }
        }

        // The coordinator ran the shutdown; once mains is back and stable this forwarder watches
        // again, so the next outage is forwarded too.
        if phase == Phase::Forwarded {
            if sources.iter().all(|s| s.reading.as_ref().is_some_and(|r| r.status.online())) {
                let since = *online_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= *cfg.daemon.power_return_settle {
                    tracing::info!("mains power is back and stable: watching again");
                    phase = Phase::Watching;
                    // Already settled: the clear below goes out now, not after a second wait.
                    if let Some(f) = forwarder.as_mut() {
                        f.settled(since);
                    }
                    trigger_reason = None;
                    for s in &mut sources {
                        s.policy.reset();
                    }
                }
            } else {
                online_since = None;
                // The coordinator shuts the cluster down; this host itself is on a failing UPS.
                let after = cfg.forwarding.as_ref().and_then(|f| f.power_off_self_after);
                if let (Some(after), Some((at, _)), true, false) =
                    (after, forwarded_at, cfg.shutdown.power_off_self, self_power_off_done)
                    && at.elapsed() >= *after
                {
                    self_power_off_done = true;
                    tracing::warn!(
                        after = %after,
                        "mains not back since the coordinator took the trigger: powering this host off"
                    );
                    rt.flush_notifications(crate::NOTIFY_FLUSH_TIMEOUT).await;
                    crate::run::power_off_self(&cfg).await;
                }
            }
        }

        if let Some(f) = forwarder.as_mut() {
            let all_online = sources.iter().all(|s| s.reading.as_ref().is_some_and(|r| r.status.online()));
            f.tend_clear(phase == Phase::Watching, all_online, *cfg.daemon.power_return_settle).await;
        }

        if phase == Phase::ShutDown && cfg.daemon.startup_on_power_return {
            let all_online =
                sources.iter().all(|s| s.reading.as_ref().is_some_and(|r| r.status.online())) && outstanding.is_empty();
            if all_online {
                let since = *online_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= *cfg.daemon.power_return_settle {
                    tracing::info!("mains power is back and stable: starting the cluster");
                    if opts.narrate {
                        println!("\n>>> mains back for {}: starting the cluster\n", cfg.daemon.power_return_settle);
                    }
                    running = Some(spawn_run(
                        &cfg,
                        &rt,
                        PlanKind::Startup,
                        "mains power returned",
                        Default::default(),
                        false,
                        opts.sink.clone(),
                    ));
                    phase = Phase::StartingUp;
                    // The outage is over: a new one during the startup must be able to trigger.
                    trigger_reason = None;
                    for s in &mut sources {
                        s.policy.reset();
                    }
                }
            } else {
                online_since = None;
            }
        }

        metrics.set_state(budget.seconds, trigger_reason.is_some(), running.is_some());
        metrics.set_forwarders_waiting(outstanding.len());
        let snap = Snapshot {
            host: cfg.host.clone(),
            updated_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            from_daemon: true,
            phase,
            budget: budget.clone(),
            sources: sources
                .iter()
                .map(|s| SourceStatus {
                    name: s.name.clone(),
                    kind: s.kind.clone(),
                    reading: s.reading.clone(),
                    error: s.error.clone(),
                    decision: s.last.clone(),
                    poll_errors: s.poll_errors,
                })
                .collect(),
            trigger_reason: trigger_reason.clone(),
            last_run: last_run.clone(),
            waiting_for_forwarders: outstanding.iter().cloned().collect(),
            power_off_self_at: match (phase, forwarded_at, cfg.forwarding.as_ref().and_then(|f| f.power_off_self_after))
            {
                (Phase::Forwarded, Some((_, wall)), Some(after))
                    if cfg.shutdown.power_off_self && !self_power_off_done =>
                {
                    Some(humantime::format_rfc3339_seconds(wall + *after).to_string())
                }
                _ => None,
            },
        };
        if let Err(e) = snap.save(&cfg.state_dir) {
            tracing::warn!(error = %format!("{e:#}"), "cannot write status.json");
        }
        if !ready_sent {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            ready_sent = true;
        }
        if watchdog.is_some() {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }
    drop(fwd_tx);
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    rt.flush_notifications(crate::NOTIFY_FLUSH_TIMEOUT).await;
    if running.is_some() {
        tracing::warn!("exiting with a run in progress; its journal lets the next start resume it");
    }
    Ok(ExitCode::SUCCESS)
}

fn narrate(opts: &Options, ups: &str, d: &Decision, changed: bool) {
    if opts.narrate {
        println!("[ups {ups}] {}: {}", d.state, d.reason);
    } else if changed {
        tracing::info!(ups, state = %d.state, "{}", d.reason);
    } else {
        tracing::debug!(ups, state = %d.state, "{}", d.reason);
    }
}

/// The numbers behind a trigger, for the `shutdown_triggered` event.
fn trigger_details(
    ups: &str,
    d: &Decision,
    reading: Option<&PowerReading>,
    budget_s: f64,
) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("ups".into(), ups.into());
    m.insert("cause".into(), serde_json::to_value(d.cause).unwrap_or_default());
    m.insert("estimate_s".into(), d.estimate_s.into());
    m.insert("estimate_source".into(), serde_json::to_value(d.estimate_source).unwrap_or_default());
    m.insert("firmware_runtime_s".into(), d.firmware_runtime_s.into());
    m.insert("own_estimate_s".into(), d.own_estimate_s.into());
    m.insert("threshold_s".into(), d.threshold_s.into());
    m.insert("budget_s".into(), budget_s.into());
    if let Some(r) = reading {
        m.insert("ups_status".into(), r.status.to_string().into());
        m.insert("charge_pct".into(), r.charge_pct.into());
        m.insert("load_pct".into(), r.load_pct.into());
    }
    m
}

fn spawn_run(
    cfg: &Arc<Config>,
    rt: &Arc<Runtime>,
    kind: PlanKind,
    reason: &str,
    event_details: serde_json::Map<String, serde_json::Value>,
    resume: bool,
    sink: EventSink,
) -> JoinHandle<anyhow::Result<RunReport>> {
    let cfg = cfg.clone();
    let rt = rt.clone();
    let reason = reason.to_string();
    tokio::spawn(async move {
        let _lock = crate::run::lock_runs_waiting(&cfg.state_dir, kind).await?;
        let mut plan = match kind {
            PlanKind::Shutdown => plan::shutdown_plan(&cfg, &rt, &reason),
            PlanKind::Startup => plan::startup_plan(&cfg, &rt, &reason, None),
        };
        plan.add_event_details(EventKind::ShutdownTriggered, &event_details);
        crate::run::execute(&cfg, rt, &plan, resume, sink).await
    })
}

/// One daemon per state dir.
fn lock_daemon(state_dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = state_dir.join("daemon.lock");
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another hecate daemon already uses {} (lock {} is held)",
            state_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}
