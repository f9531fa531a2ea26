//! `hecate daemon`: the I/O shell around the supervisor (`hecate_core::supervisor`), which holds
//! every decision. The shell polls the power sources, feeds the supervisor one input at a time
//! and carries out its effects. Everything slow (runs, forwarding, powering off, notifications)
//! is spawned and comes back as an input, so polling and the watchdog never wait on it.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use hecate_core::config::Config;
use hecate_core::discharge::DischargeHistory;
use hecate_core::engine::{EventSink, Journal, RunReport};
use hecate_core::notify::{Event, EventKind};
use hecate_core::plan::{self, PlanKind};
use hecate_core::power::Sample;
use hecate_core::runtime::Runtime;
use hecate_core::supervisor::{Effect, Input, Level, LockHolder, PreflightOutcome, RunEnd, RunId, Supervisor};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::forward::{self, ForwardLink, ForwarderMessage};
use crate::metrics::Metrics;
use crate::observe::{LogObserver, Observer};
use crate::status::Snapshot;

/// How the daemon is run.
pub struct Options {
    /// Progress of runs.
    pub sink: EventSink,
    /// Watches every step; may end the daemon (the demo does after one cycle).
    pub observer: Box<dyn Observer>,
    /// Give up after this long (the demo).
    pub stop_after: Option<Duration>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options").field("stop_after", &self.stop_after).finish_non_exhaustive()
    }
}

/// `hecate daemon --config FILE`.
pub async fn run_from_file(path: &Path) -> anyhow::Result<ExitCode> {
    let cfg = crate::load_config(path)?;
    let opts = Options { sink: crate::run::log_sink(), observer: Box::new(LogObserver), stop_after: None };
    run(Arc::new(cfg), opts).await
}

/// What comes back to the loop.
#[derive(Debug)]
enum Msg {
    /// A poll of every source, in config order.
    Polled(Vec<Sample>),
    /// For the supervisor.
    Input(Input),
    /// A run ended: its report, or how it failed.
    RunDone(RunId, Result<RunReport, RunEnd>),
}

/// The daemon loop.
pub async fn run(cfg: Arc<Config>, opts: Options) -> anyhow::Result<ExitCode> {
    let mut shell = Shell::start(cfg, opts.sink)?;
    let (mut observer, t0) = (opts.observer, shell.t0);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut watchdog = tokio::time::interval(watchdog_period());
    let interrupted = Journal::inspect(&shell.cfg.state_dir, PlanKind::Shutdown, SystemTime::now());
    let startup_interrupted = Journal::pending(&shell.cfg.state_dir, PlanKind::Startup);
    let mut input = Some(Input::Start { interrupted, startup_interrupted });
    loop {
        if let Some(input) = input.take() {
            let before = shell.sup.phase().kind();
            let effects = shell.sup.step(t0.elapsed().as_secs_f64(), input.clone());
            // Told before the effects are carried out, so what it says comes before what they do
            // (a run's first stage).
            let stop = observer.observe(&shell.sup, before, &input, &effects);
            effects.iter().for_each(|e| shell.carry_out(e));
            let status = if before != shell.sup.phase().kind() {
                StatusWrite::Now
            } else if matches!(input, Input::Poll { .. }) {
                StatusWrite::IfDue
            } else {
                StatusWrite::No
            };
            shell.publish(status);
            if stop {
                break;
            }
        }
        if opts.stop_after.is_some_and(|d| t0.elapsed() > d) {
            tracing::warn!("stopping: the time limit passed");
            shell.rt.flush_notifications(crate::NOTIFY_FLUSH_TIMEOUT).await;
            return Ok(ExitCode::FAILURE);
        }
        tokio::select! {
            Some(msg) = shell.inbox.recv() => input = shell.receive(msg),
            _ = watchdog.tick() => shell.watchdog(),
            _ = sigterm.recv() => { tracing::info!("SIGTERM: exiting"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted: exiting"); break; }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    shell.rt.flush_notifications(crate::NOTIFY_FLUSH_TIMEOUT).await;
    if shell.sup.phase().run().is_some() {
        tracing::warn!("exiting with a run in progress; its journal lets the next start resume it");
    }
    Ok(ExitCode::SUCCESS)
}

/// Everything the loop holds besides the supervisor's decisions.
struct Shell {
    cfg: Arc<Config>,
    rt: Arc<Runtime>,
    sup: Supervisor,
    /// The discharge curves of earlier outages, per UPS, and where they are kept.
    discharge: DischargeHistory,
    discharge_path: std::path::PathBuf,
    /// Supervisor time 0.
    t0: Instant,
    sink: EventSink,
    metrics: Metrics,
    budget: hecate_core::budget::Budget,
    /// When runs.json was last changed as the budget knows it: a run of another process (a
    /// drill, an operator's shutdown) teaches the budget too.
    runs_changed: Option<SystemTime>,
    tx: mpsc::Sender<Msg>,
    inbox: mpsc::Receiver<Msg>,
    link: Option<ForwardLink>,
    runs: Vec<(RunId, AbortHandle)>,
    /// Held by a run for its whole life, so a run started after an abort waits for the aborted
    /// one to let go of the run lock.
    run_slot: Arc<tokio::sync::Mutex<()>>,
    clearing: Option<AbortHandle>,
    /// The preflight running in the background, if one is.
    preflight: Option<AbortHandle>,
    /// When start-up, a run or a preflight ended, having run code the watch loop does not: its
    /// pages are given back at the first poll `RELEASE_SETTLE` later with nothing else running.
    ran_once_at: Option<Instant>,
    released_once: bool,
    last_run: Option<serde_json::Value>,
    /// When status.json was last written, and what it then showed that an operator acts on.
    status_written: Option<(Instant, crate::status::Headline)>,
    /// The last write of status.json failed (said once, not at every poll of a full disk).
    status_failing: bool,
    last_poll: Option<Instant>,
    ready_sent: bool,
    _daemon_lock: std::fs::File,
}

impl Shell {
    fn start(cfg: Arc<Config>, sink: EventSink) -> anyhow::Result<Shell> {
        std::fs::create_dir_all(&cfg.state_dir)
            .with_context(|| format!("creating state dir {}", cfg.state_dir.display()))?;
        let daemon_lock = lock_daemon(&cfg.state_dir)?;
        let rt = Arc::new(Runtime::build_degraded(&cfg));
        let metrics = Metrics::new()?;
        let (tx, inbox) = mpsc::channel(64);
        // The instance id makes a forwarder's outage ids unique across restarts.
        let mut sup = Supervisor::new(
            hecate_core::supervisor::SupervisorConfig::from_config(&cfg),
            rt.power.iter().map(|p| p.name.clone()),
        )
        .with_instance_id(forward::random_hex(4));
        if cfg.preflight.enabled {
            sup = sup.with_preflight(cfg.preflight.interval.as_secs_f64());
        }
        // What earlier outages showed of each battery; a history that cannot be read is no
        // reason not to protect (the loader keeps an unreadable file aside and says so).
        let discharge_path = cfg.state_dir.join(DischargeHistory::FILE_NAME);
        let discharge = DischargeHistory::load(&discharge_path).map(|l| l.history).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the discharge history; starting without it");
            DischargeHistory::default()
        });
        for p in &rt.power {
            sup.set_discharge_history(&p.name, discharge.records(&p.name));
        }
        // A forwarder without its key or CA still watches its UPS; its trigger then falls back
        // to its own shutdown at once.
        let link = ForwardLink::from_config(&cfg).unwrap_or_else(|e| {
            tracing::error!(error = %format!("{e:#}"), "forwarding unavailable: a trigger will run this host's own plan");
            None
        });
        let shell = Shell {
            discharge,
            discharge_path,
            t0: Instant::now(),
            sink,
            runs_changed: runs_modified(&cfg),
            budget: crate::status::budget(&cfg),
            rt,
            sup,
            metrics,
            tx,
            inbox,
            link,
            runs: Vec::new(),
            run_slot: Arc::default(),
            clearing: None,
            preflight: None,
            ran_once_at: Some(Instant::now()),
            released_once: false,
            last_run: None,
            status_written: None,
            status_failing: false,
            last_poll: None,
            ready_sent: false,
            _daemon_lock: daemon_lock,
            cfg,
        };
        shell.report_unavailable();
        shell.publish_runs();
        shell.serve();
        shell.spawn_poller();
        tracing::info!(
            host = %shell.cfg.host,
            sources = shell.rt.power.len(),
            nodes = shell.cfg.nodes.len(),
            budget = %shell.budget,
            "daemon started"
        );
        Ok(shell)
    }

    /// Backends that could not be built: logged, notified, counted; everything else runs.
    fn report_unavailable(&self) {
        for b in &self.rt.unavailable {
            tracing::error!(backend = %b.field, "backend unavailable: {b}; what needs it fails at once, everything else runs");
            let ev = Event::now(
                EventKind::BackendUnavailable,
                &self.cfg.host,
                format!("{b}; what needs it fails at once, everything else runs"),
            )
            .with("backend", b.field.clone());
            self.rt.notify_all(&ev);
            self.metrics.backend_unavailable(&b.field);
        }
        if self.rt.power.is_empty() {
            tracing::error!("no power source could be built: no UPS is watched");
        }
        if let Some(c) = crate::status::credential_status(&self.rt).filter(|c| c.warning) {
            tracing::warn!("kubernetes credentials: {}", c.summary);
        }
    }

    /// `/metrics` and, on a coordinator, the forwarding endpoint. Neither failing stops UPS
    /// protection: it is logged and the daemon goes on.
    fn serve(&self) {
        if let Some(addr) = self.cfg.daemon.metrics_listen {
            let m = self.metrics.clone();
            tokio::spawn(async move {
                if let Err(e) = m.serve(addr).await {
                    tracing::error!(error = %format!("{e:#}"), "metrics endpoint unavailable");
                }
            });
        }
        let hecate_core::config::Role::Coordinator(f) = &self.cfg.role else {
            return;
        };
        self.metrics.forwarders(&f.forwarders.iter().map(|k| k.name.clone()).collect::<Vec<_>>());
        let tls = match (&f.tls_cert_file, &f.tls_key_file) {
            (Some(cert), Some(key)) => match forward::tls_acceptor(cert, key) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "forwarding endpoint unavailable: forwarders cannot reach this coordinator");
                    return;
                }
            },
            _ => None,
        };
        let verifier = forward::Verifier::from_config(f, &self.cfg.state_dir);
        let (listen, metrics) = (f.listen, self.metrics.clone());
        let (fwd_tx, mut fwd_rx) = mpsc::channel::<ForwarderMessage>(16);
        tokio::spawn(async move {
            if let Err(e) = forward::serve(listen, verifier, metrics, fwd_tx, tls).await {
                tracing::error!(error = %format!("{e:#}"), "forwarding endpoint unavailable");
            }
        });
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(m) = fwd_rx.recv().await {
                let input = Input::Peer { from: m.name, address: m.peer.to_string(), message: m.message };
                if tx.send(Msg::Input(input)).await.is_err() {
                    break;
                }
            }
        });
    }

    /// Reads every source every `poll_interval`, each read bounded, and sends the samples in.
    fn spawn_poller(&self) {
        let (rt, tx) = (self.rt.clone(), self.tx.clone());
        let every = *self.cfg.daemon.poll_interval;
        let timeout = read_timeout(every);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let reads = hecate_core::runtime::join_all(rt.power.iter().map(|p| async move {
                    match tokio::time::timeout(timeout, async { p.source.lock().await.read().await }).await {
                        Ok(Ok(r)) => Sample::Reading(r),
                        Ok(Err(e)) => Sample::NoData { reason: e.to_string() },
                        Err(_) => Sample::NoData {
                            reason: format!("no answer within {}", humantime::format_duration(timeout)),
                        },
                    }
                }))
                .await;
                if tx.send(Msg::Polled(reads)).await.is_err() {
                    return;
                }
            }
        });
    }

    /// Turns a message into the supervisor's input, doing what a finished run needs first.
    fn receive(&mut self, msg: Msg) -> Option<Input> {
        match msg {
            Msg::Polled(samples) => {
                self.last_poll = Some(Instant::now());
                let changed = runs_modified(&self.cfg);
                if changed != self.runs_changed {
                    self.runs_changed = changed;
                    self.budget = crate::status::budget(&self.cfg);
                    tracing::info!(budget = %self.budget, "runs.json changed: the budget is read again");
                }
                self.release_code_pages();
                Some(Input::Poll { samples, budget_s: self.budget.seconds })
            }
            Msg::Input(input) => {
                if let Input::PreflightDone(outcome) = &input {
                    if let PreflightOutcome::Ran(report) = outcome {
                        crate::cluster_view::record_preflight(&self.cfg.state_dir, report);
                    }
                    self.preflight = None;
                    self.ran_once_at = Some(Instant::now());
                }
                Some(input)
            }
            Msg::RunDone(run, result) => {
                self.runs.retain(|(id, _)| *id != run);
                self.ran_once_at = Some(Instant::now());
                let end = match result {
                    Ok(report) => {
                        self.publish_runs();
                        self.last_run = Some(serde_json::json!({
                            "kind": report.kind, "outcome": report.outcome,
                            "duration_s": report.duration_s, "started_at": report.started_at,
                        }));
                        if let Some(ev) = crate::run::finished_event(&self.cfg.host, &report) {
                            self.rt.notify_all(&ev);
                        }
                        let failed = report.failures().count();
                        tracing::info!(kind = %report.kind, outcome = ?report.outcome, duration_s = report.duration_s, failed, "run finished");
                        self.budget = crate::status::budget(&self.cfg);
                        self.runs_changed = runs_modified(&self.cfg);
                        RunEnd::Finished(report.outcome)
                    }
                    Err(end) => end,
                };
                Some(Input::RunEnded { run, end })
            }
        }
    }

    /// Gives the kernel back the pages of code that start-up, a run or a preflight ran once
    /// (argument parsing, the YAML parser, every backend's builder, SSH, the Kubernetes client),
    /// so that what stays resident is what watching uses: about 10.5 MiB after start, 6.3-7.2
    /// MiB from then on at 1 s polling (README, "Performance"). Only between runs and preflights, whose code would be mapped
    /// straight back. The pages stay in the page cache; see `hecate_residency`.
    fn release_code_pages(&mut self) {
        if self.ran_once_at.is_none_or(|t| t.elapsed() < RELEASE_SETTLE)
            || !self.runs.is_empty()
            || self.preflight.is_some()
        {
            return;
        }
        self.ran_once_at = None;
        let before = hecate_residency::resident_bytes();
        let result = hecate_residency::release_code_pages();
        let after = hecate_residency::resident_bytes();
        let mib = |b: Option<u64>| b.map_or_else(|| "?".to_string(), |b| format!("{:.1}", b as f64 / 1_048_576.0));
        let first = !std::mem::replace(&mut self.released_once, true);
        match result {
            // Said once at info, after start: what an operator comparing `ps` with the README sees.
            Ok(r) if first => tracing::info!(
                segments = r.segments,
                "gave back the code pages start-up ran once: resident {} -> {} MiB",
                mib(before),
                mib(after)
            ),
            Ok(r) => tracing::debug!(
                segments = r.segments,
                "gave back the code pages a run or preflight ran: resident {} -> {} MiB",
                mib(before),
                mib(after)
            ),
            Err(e) => tracing::debug!(error = %e, "cannot give back the code pages run once"),
        }
    }

    fn carry_out(&mut self, effect: &Effect) {
        match effect {
            Effect::StartRun { run, kind, reason, details, resume } => {
                self.start_run(*run, *kind, reason.clone(), details.clone(), *resume)
            }
            Effect::AbortRun { run } => {
                for (_, h) in self.runs.iter().filter(|(id, _)| id == run) {
                    h.abort();
                }
                self.runs.retain(|(id, _)| id != run);
            }
            Effect::StopOtherRun { pid } => {
                let pid = pid.to_string();
                tokio::spawn(async move {
                    let kill = tokio::process::Command::new("kill").args(["-TERM", &pid]).status();
                    if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(5), kill).await
                        && !st.success()
                    {
                        tracing::warn!(%pid, "could not signal the run holding the lock");
                    }
                });
            }
            // Inline, not spawned: a few small file operations that must be done before a new
            // shutdown could open a journal of its own.
            Effect::CloseInterrupted { why } => {
                crate::status::close_interrupted(&self.cfg, why);
                self.publish_runs();
            }
            Effect::Notify { kind, message, details } => {
                let mut ev = Event::now(*kind, &self.cfg.host, message.clone());
                ev.details.extend(details.clone());
                self.rt.notify_all(&ev);
            }
            Effect::Forward { reason, outage } => {
                if let Some(h) = self.clearing.take() {
                    h.abort();
                }
                let (link, tx, reason, outage) = (self.link.clone(), self.tx.clone(), reason.clone(), outage.clone());
                tokio::spawn(async move {
                    let r = match link {
                        Some(link) => link.trigger(&reason, &outage).await,
                        None => Err("forwarding is unavailable (see the error at start)".into()),
                    };
                    let _ = tx.send(Msg::Input(Input::Forwarded(r))).await;
                });
            }
            Effect::SendClear { outage } => {
                let (link, tx, outage) = (self.link.clone(), self.tx.clone(), outage.clone());
                let h = tokio::spawn(async move {
                    let r = match link {
                        Some(link) => link.clear(outage.as_ref()).await,
                        None => Err("forwarding is unavailable (see the error at start)".into()),
                    };
                    let _ = tx.send(Msg::Input(Input::Cleared(r))).await;
                });
                self.clearing = Some(h.abort_handle());
            }
            // Inline: one small atomic write per outage, done before a power-off that follows.
            Effect::RecordDischarge { source, record } => {
                if self.discharge.record(source, record.clone(), SystemTime::now()) {
                    if let Err(e) = self.discharge.save(&self.discharge_path) {
                        tracing::warn!(error = %e, "cannot write the discharge history");
                    }
                    self.sup.set_discharge_history(source, self.discharge.records(source));
                }
            }
            Effect::PowerOffSelf { why } => {
                tracing::warn!(%why, "powering this host off");
                let (cfg, rt) = (self.cfg.clone(), self.rt.clone());
                tokio::spawn(async move {
                    // Last of all: give the notifications their chance first.
                    rt.flush_notifications(crate::NOTIFY_FLUSH_TIMEOUT).await;
                    crate::run::power_off_self(&cfg).await;
                });
            }
            Effect::RunPreflight => {
                let (cfg, rt, tx) = (self.cfg.clone(), self.rt.clone(), self.tx.clone());
                let forwarding = match (&self.link, &cfg.role) {
                    (Some(link), _) => crate::preflight::Forwarding::Link(link.clone()),
                    (None, hecate_core::config::Role::Forwarder(_)) => crate::preflight::Forwarding::Unavailable(
                        "the forwarding key or ca_file could not be read at start (see the log)".into(),
                    ),
                    (None, _) => crate::preflight::Forwarding::None,
                };
                let task = tokio::spawn(async move {
                    // A run of another process (a drill, an operator's shutdown) changes what
                    // would be checked: its failures would be noise.
                    let outcome = if crate::preflight::run_lock_held(&cfg.state_dir) {
                        let holder = crate::run::run_lock_holder(&cfg.state_dir)
                            .map(|(pid, kind)| format!(" (pid {pid}, a {kind})"))
                            .unwrap_or_default();
                        PreflightOutcome::NotRun(format!("a run holds the run lock{holder}"))
                    } else {
                        PreflightOutcome::Ran(crate::preflight::run_checks(&cfg, &rt, &forwarding).await)
                    };
                    let _ = tx.send(Msg::Input(Input::PreflightDone(outcome))).await;
                });
                self.preflight = Some(task.abort_handle());
            }
            Effect::AbortPreflight => {
                if let Some(h) = self.preflight.take() {
                    h.abort();
                }
            }
            Effect::Log { level, message } => match level {
                Level::Debug => tracing::debug!(target: "hecate::lifecycle", "{message}"),
                Level::Info => tracing::info!(target: "hecate::lifecycle", "{message}"),
                Level::Warn => tracing::warn!(target: "hecate::lifecycle", "{message}"),
                Level::Error => tracing::error!(target: "hecate::lifecycle", "{message}"),
            },
        }
    }

    fn start_run(
        &mut self,
        run: RunId,
        kind: PlanKind,
        reason: String,
        details: hecate_core::supervisor::Details,
        resume: bool,
    ) {
        let (cfg, rt, tx, slot) = (self.cfg.clone(), self.rt.clone(), self.tx.clone(), self.run_slot.clone());
        let sink = self.sink.clone();
        let task = tokio::spawn(async move {
            let not_started = |error: String, lock_holder| Err(RunEnd::NotStarted { error, lock_holder });
            let Ok(_slot) = tokio::time::timeout(Duration::from_secs(10), slot.lock_owned()).await else {
                return not_started("the previous run has not stopped yet".into(), None);
            };
            let _lock = match crate::run::try_lock_runs(&cfg.state_dir, kind) {
                Ok(Some(lock)) => lock,
                Ok(None) => {
                    let holder = crate::run::run_lock_holder(&cfg.state_dir);
                    let lock_holder = holder.as_ref().and_then(|(pid, k)| {
                        let kind = match k.as_str() {
                            "startup" => PlanKind::Startup,
                            "shutdown" => PlanKind::Shutdown,
                            _ => return None,
                        };
                        Some(LockHolder { pid: *pid, kind, ours: *pid == std::process::id() })
                    });
                    let by = holder.map(|(pid, k)| format!(" by pid {pid}, a {k}")).unwrap_or_default();
                    return not_started(format!("the run lock is held{by}"), lock_holder);
                }
                Err(e) => return not_started(format!("{e:#}"), None),
            };
            let mut plan = match kind {
                PlanKind::Shutdown => plan::shutdown_plan(&cfg, &rt, &reason),
                PlanKind::Startup => plan::startup_plan(&cfg, &rt, &reason, None),
            };
            plan.add_event_details(EventKind::ShutdownTriggered, &details);
            Ok(crate::run::execute(&cfg, rt, &plan, resume, sink).await)
        });
        self.runs.push((run, task.abort_handle()));
        tokio::spawn(async move {
            let result = match task.await {
                Ok(r) => r,
                // Aborted by the supervisor: it knows, and takes no report.
                Err(e) if e.is_cancelled() => return,
                Err(e) => Err(RunEnd::Crashed(e.to_string())),
            };
            let _ = tx.send(Msg::RunDone(run, result)).await;
        });
    }

    /// status.json (when asked) and the metrics, from the supervisor's state.
    fn publish(&mut self, status: StatusWrite) {
        let sup = &self.sup;
        for s in sup.sources() {
            if let Some(d) = &s.decision {
                let reading = match &s.sample {
                    Some(Sample::Reading(r)) => Some(r),
                    _ => None,
                };
                self.metrics.observe(&s.name, reading, d);
            }
        }
        self.metrics.set_lifecycle(sup, &self.budget);
        let credentials = crate::status::credential_status(&self.rt);
        self.metrics.set_preflight(sup.preflight());
        self.metrics.set_credential_expiry(
            credentials.as_ref().and_then(|c| c.what.as_deref()),
            credentials.as_ref().and_then(|c| c.days_left),
        );
        if status != StatusWrite::No {
            let now_s = self.t0.elapsed().as_secs_f64();
            let snap = Snapshot::from_supervisor(&self.cfg, &self.rt, sup, now_s, &self.budget, self.last_run.clone());
            let headline = snap.headline();
            let refresh = status_refresh(*self.cfg.daemon.poll_interval);
            let due = status == StatusWrite::Now
                || self.status_written.as_ref().is_none_or(|(at, shown)| *shown != headline || at.elapsed() >= refresh);
            if due {
                match snap.save(&self.cfg.state_dir) {
                    Ok(()) => {
                        if std::mem::take(&mut self.status_failing) {
                            tracing::info!("status.json is written again");
                        }
                        self.status_written = Some((Instant::now(), headline));
                    }
                    Err(e) if !self.status_failing => {
                        self.status_failing = true;
                        tracing::warn!(
                            error = %format!("{e:#}"),
                            "cannot write status.json; tried again at every poll, said again once it works"
                        );
                    }
                    Err(_) => {}
                }
            }
        }
        if !self.ready_sent {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
            self.ready_sent = true;
        }
    }

    /// The last run of each kind in runs.json, as metrics: at start (so they survive a restart)
    /// and after each run or closed interrupted run.
    fn publish_runs(&self) {
        match hecate_core::history::History::load(&crate::status::runs_path(&self.cfg)) {
            Ok(l) => self.metrics.set_runs(&l.history.runs),
            Err(e) => tracing::warn!(error = %e, "cannot read the run history for the metrics"),
        }
    }

    /// Tells systemd the daemon is alive, but only while polls keep arriving: a loop that runs
    /// while the poller is stuck protects nothing and should be restarted.
    fn watchdog(&self) {
        let every = *self.cfg.daemon.poll_interval;
        let fresh =
            self.last_poll.is_none_or(|t| t.elapsed() <= every.saturating_mul(2).saturating_add(read_timeout(every)));
        if fresh {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        } else {
            tracing::error!("no poll of the power sources for too long: not telling the watchdog we are alive");
        }
    }
}

/// Whether a step of the loop rewrites status.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusWrite {
    /// Nothing a poll or the phase shows changed.
    No,
    /// A poll: when what it shows an operator changed ([`crate::status::Snapshot::headline`]),
    /// or the last write is [`status_refresh`] old.
    IfDue,
    /// The phase changed.
    Now,
}

/// How old status.json may get while nothing an operator acts on changes: readings move at
/// every poll on a real UPS, and rewriting the file each time costs a new inode and a rename
/// per second on a host's flash for nothing `hecate status` needs. Well inside
/// [`crate::status::stale_after`] (three intervals and 15 s).
fn status_refresh(poll_interval: Duration) -> Duration {
    poll_interval.max(Duration::from_secs(5))
}

/// How long after start-up, a run or a preflight the pages they ran are given back: the first
/// polls after each still run code of their own once (the first decision, the first status).
const RELEASE_SETTLE: Duration = Duration::from_secs(10);

/// When runs.json was last modified (`None` without one).
fn runs_modified(cfg: &Config) -> Option<SystemTime> {
    std::fs::metadata(crate::status::runs_path(cfg)).and_then(|m| m.modified()).ok()
}

/// How long one read of a source may take: a UPS that has not answered in this long has no data.
fn read_timeout(poll_interval: Duration) -> Duration {
    poll_interval.clamp(Duration::from_secs(1), Duration::from_secs(10))
}

/// Half the watchdog interval systemd asked for (`WATCHDOG_USEC`), or 10 s without one.
fn watchdog_period() -> Duration {
    sd_notify::watchdog_enabled().map_or(Duration::from_secs(10), |d| (d / 2).max(Duration::from_millis(500)))
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
