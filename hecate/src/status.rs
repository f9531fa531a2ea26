//! What `hecate status` shows, the snapshot the daemon keeps current in the state dir, and the
//! run history glue (budget in, finished runs out).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use hecate_core::budget::{self, Budget};
use hecate_core::config::Config;
use hecate_core::duration::is_physical_duration;
use hecate_core::engine::{Journal, RunReport};
use hecate_core::history::{History, RunKind, RunOutcome, RunRecord};
use hecate_core::plan::{self, PlanKind};
use hecate_core::policy::{Decision, Policy};
use hecate_core::power::{PowerReading, Sample};
use hecate_core::runtime::Runtime;
use hecate_core::supervisor::{Phase, PhaseKind, ShutdownEnd, Supervisor};
use serde::{Deserialize, Serialize};

/// runs.json in the state dir.
pub fn runs_path(cfg: &Config) -> PathBuf {
    cfg.state_dir.join("runs.json")
}

/// status.json in the state dir (written by the daemon every poll).
pub fn snapshot_path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

/// The budget from runs.json, or the default when it holds too few runs: only successful
/// shutdowns of the plan this config gives count (`hecate_core::budget`). A corrupt runs.json is
/// moved aside by the loader (with a warning) and the default applies.
pub fn budget(cfg: &Config) -> Budget {
    let runs = match History::load(&runs_path(cfg)) {
        Ok(l) => {
            if let Some(w) = l.warning {
                tracing::warn!("{w}");
            }
            l.history.runs
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the run history; using the default budget");
            Vec::new()
        }
    };
    budget::estimate(&runs, &cfg.budget, Some(&plan::shutdown_fingerprint(cfg)))
}

/// What the history says a plan will take: the budget for a shutdown, and per stage the longest
/// of the recent successful runs of that kind.
pub fn expected(cfg: &Config, kind: PlanKind) -> hecate_core::plan::Expected {
    let runs = History::load(&runs_path(cfg)).map(|l| l.history.runs).unwrap_or_default();
    let want = match kind {
        PlanKind::Shutdown => RunKind::Shutdown,
        PlanKind::Startup => RunKind::Startup,
    };
    let recent: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| r.kind == want && r.outcome == RunOutcome::Success && is_physical_duration(r.duration_s))
        .rev()
        .take(cfg.budget.window)
        .collect();
    let mut stages = std::collections::BTreeMap::<String, f64>::new();
    for r in &recent {
        for s in r.stages.iter().filter(|s| is_physical_duration(s.duration_s)) {
            let e = stages.entry(s.name.clone()).or_insert(0.0);
            *e = e.max(s.duration_s);
        }
    }
    let total_s = match kind {
        PlanKind::Shutdown => Some(budget(cfg).seconds),
        PlanKind::Startup => recent.iter().map(|r| r.duration_s).reduce(f64::max),
    };
    hecate_core::plan::Expected { total_s, stages }
}

/// Appends a finished run to runs.json, with its per-stage durations and, for a shutdown, the
/// fingerprint of this config's shutdown plan (which the budget compares).
pub fn record_run(cfg: &Config, report: &RunReport) -> anyhow::Result<()> {
    let fingerprint = (report.kind == PlanKind::Shutdown).then(|| plan::shutdown_fingerprint(cfg));
    let rec = RunRecord::from_report(report, &cfg.host, fingerprint);
    let loaded = History::append(&runs_path(cfg), rec).context("recording the run in runs.json")?;
    if let Some(w) = loaded.warning {
        tracing::warn!("{w}");
    }
    Ok(())
}

/// One power source in the snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SourceStatus {
    /// The source's name.
    pub name: String,
    /// Its backend type.
    pub kind: String,
    /// The last reading, if the last poll got data.
    pub reading: Option<PowerReading>,
    /// Why the last poll got no data.
    pub error: Option<String>,
    /// The policy's last decision for this source.
    pub decision: Option<Decision>,
    /// Polls without data since the daemon started.
    pub poll_errors: u64,
}

/// The state `hecate status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    /// The host.
    pub host: String,
    /// When this snapshot was taken, RFC 3339.
    pub updated_at: String,
    /// Whether a daemon wrote it (false: a one-off poll by `hecate status`).
    pub from_daemon: bool,
    /// What the daemon is doing (see the lifecycle in the README).
    pub phase: PhaseKind,
    /// When the phase began, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<String>,
    /// The phase in a sentence, with its numbers (attempts, the last error, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_detail: Option<String>,
    /// The budget and its source.
    pub budget: Budget,
    /// Each power source.
    pub sources: Vec<SourceStatus>,
    /// Why the shutdown was triggered, once it was.
    pub trigger_reason: Option<String>,
    /// The last finished run: kind, outcome, duration.
    pub last_run: Option<serde_json::Value>,
    /// Coordinator: forwarders whose outage has not cleared; no automatic startup until it has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for_forwarders: Vec<String>,
    /// Backends that could not be built (config field, kind, why): what needs them fails at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unavailable: Vec<String>,
    /// Forwarder after a handover: when it powers its own host off unless mains return first
    /// (RFC 3339; `role.forwarder.power_off_self_after`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_off_self_at: Option<String>,
    /// When the cluster API's credentials (the kubeconfig's client certificate or token) expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_credentials: Option<CredentialStatus>,
}

/// When the cluster API's credentials expire, as `hecate status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CredentialStatus {
    /// What expires: `client certificate` or `token`; absent when it cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
    /// When, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Days left (negative once expired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days_left: Option<f64>,
    /// The whole story in one line.
    pub summary: String,
    /// Fewer than 30 days left, expired, or unreadable.
    pub warning: bool,
}

/// The cluster API's credential expiry, when the backend knows one (or cannot read it).
pub fn credential_status(rt: &Runtime) -> Option<CredentialStatus> {
    let (_, api) = rt.cluster.as_ref()?;
    let now = SystemTime::now();
    match api.credential_expiry() {
        Ok(None) => None,
        Ok(Some(e)) => {
            let warning = e.warn(now);
            let renew = if warning {
                "; renew it: k3s renews its certificates when it starts within 90 days of their expiry \
                 (docs.k3s.io/advanced), or run `k3s certificate rotate`, then copy /etc/rancher/k3s/k3s.yaml \
                 from a server again"
            } else {
                ""
            };
            Some(CredentialStatus {
                what: Some(e.what.clone()),
                expires_at: Some(e.not_after()),
                days_left: Some(e.days_left(now)),
                summary: format!("{}{renew}", e.describe(now)),
                warning,
            })
        }
        Err(err) => Some(CredentialStatus {
            what: None,
            expires_at: None,
            days_left: None,
            summary: format!("cannot tell when the credentials expire: {}", err.detail()),
            warning: true,
        }),
    }
}

impl Snapshot {
    /// The daemon's view: the supervisor's state at supervisor time `now_s`.
    pub fn from_supervisor(
        cfg: &Config,
        rt: &Runtime,
        sup: &Supervisor,
        now_s: f64,
        budget: &Budget,
        last_run: Option<serde_json::Value>,
    ) -> Snapshot {
        let wall_now = SystemTime::now();
        // Supervisor time is the daemon's monotonic clock; shown as wall-clock time.
        let wall = |t: f64| {
            Duration::try_from_secs_f64((now_s - t).max(0.0))
                .ok()
                .and_then(|ago| wall_now.checked_sub(ago))
                .map(|w| humantime::format_rfc3339_seconds(w).to_string())
        };
        let sources = sup
            .sources()
            .iter()
            .map(|s| SourceStatus {
                name: s.name.clone(),
                kind: rt.power_kind(&s.name),
                reading: match &s.sample {
                    Some(Sample::Reading(r)) => Some(r.clone()),
                    _ => None,
                },
                error: match &s.sample {
                    Some(Sample::NoData { reason }) => Some(reason.clone()),
                    _ => None,
                },
                decision: s.decision.clone(),
                poll_errors: s.polls_without_data,
            })
            .collect();
        let phase = sup.phase();
        Snapshot {
            host: cfg.host.clone(),
            updated_at: humantime::format_rfc3339_seconds(wall_now).to_string(),
            from_daemon: true,
            phase: phase.kind(),
            phase_since: phase.since().and_then(wall),
            phase_detail: phase_detail(phase, cfg),
            budget: budget.clone(),
            sources,
            trigger_reason: sup.trigger().map(|t| t.reason.clone()),
            last_run,
            waiting_for_forwarders: sup.outstanding().iter().cloned().collect(),
            unavailable: rt.unavailable.iter().map(ToString::to_string).collect(),
            power_off_self_at: sup.power_off_self_due().and_then(|due| {
                let ahead = Duration::try_from_secs_f64((due - now_s).max(0.0)).ok()?;
                wall_now.checked_add(ahead).map(|w| humantime::format_rfc3339_seconds(w).to_string())
            }),
            kube_credentials: credential_status(rt),
        }
    }

    /// Writes it atomically to the state dir.
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        hecate_core::history::write_atomic(&snapshot_path(state_dir), &bytes).context("writing status.json")?;
        Ok(())
    }

    /// The human view.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let origin = if self.from_daemon { "daemon" } else { "one-off poll (no daemon running)" };
        let phase = self.phase.as_str().replace('_', " ");
        let _ = writeln!(s, "host {} — {phase} — as of {} ({origin})", self.host, self.updated_at);
        if let Some(d) = &self.phase_detail {
            let since = self.phase_since.as_deref().map(|t| format!(" (since {t})")).unwrap_or_default();
            let _ = writeln!(s, "{d}{since}");
        }
        let _ = writeln!(s, "shutdown budget: {}", self.budget);
        if !self.waiting_for_forwarders.is_empty() {
            let _ = writeln!(
                s,
                "forwarders still on battery (no automatic startup until they clear): {}",
                self.waiting_for_forwarders.join(", ")
            );
        }
        for u in &self.unavailable {
            let _ = writeln!(s, "backend unavailable (what needs it fails at once): {u}");
        }
        if let Some(c) = &self.kube_credentials {
            let warning = if c.warning { "warning: " } else { "" };
            let _ = writeln!(s, "{warning}kubernetes credentials: {}", c.summary);
        }
        if let Some(at) = &self.power_off_self_at {
            let _ = writeln!(
                s,
                "the coordinator took the trigger; this host powers itself off at {at} unless mains return first"
            );
        }
        for src in &self.sources {
            let _ = writeln!(s, "\nups {} ({})", src.name, src.kind);
            match (&src.reading, &src.error) {
                (Some(r), _) => {
                    let opt =
                        |v: Option<f64>, unit: &str| v.map(|v| format!("{v:.0}{unit}")).unwrap_or_else(|| "n/a".into());
                    let _ = writeln!(
                        s,
                        "  status {}  charge {}  runtime {}  load {}",
                        r.status,
                        opt(r.charge_pct, " %"),
                        opt(r.runtime_s, " s"),
                        opt(r.load_pct, " %")
                    );
                }
                (None, Some(e)) => {
                    let _ = writeln!(s, "  no data: {e}");
                }
                (None, None) => {
                    let _ = writeln!(s, "  not polled yet");
                }
            }
            if let Some(d) = &src.decision {
                let _ = writeln!(s, "  policy: {} — {}", d.state, d.reason);
            }
            if src.poll_errors > 0 {
                let _ = writeln!(s, "  polls without data: {}", src.poll_errors);
            }
        }
        if let Some(r) = &self.trigger_reason {
            let _ = writeln!(s, "\nshutdown triggered: {r}");
        }
        if let Some(r) = &self.last_run {
            let _ = writeln!(s, "\nlast run: {r}");
        }
        s
    }
}

/// A phase in a sentence for `hecate status`.
fn phase_detail(phase: &Phase, cfg: &Config) -> Option<String> {
    let settle = humantime::format_duration(*cfg.daemon.power_return_settle);
    Some(match phase {
        Phase::Watching => return None,
        Phase::Recovering { interrupted, .. } => format!(
            "a shutdown started at {} was interrupted after {} step(s); it is resumed only if power is still failing",
            interrupted.started_at.as_deref().unwrap_or("an unknown time"),
            interrupted.steps_finished
        ),
        Phase::Forwarding { .. } => "sending the trigger to the coordinator".into(),
        Phase::Forwarded { .. } => "the coordinator took the trigger; waiting for mains".into(),
        Phase::ShutdownQueued { attempts, last_error, .. } => {
            format!("the shutdown could not start ({attempts} attempt(s); last: {last_error}); retrying every poll")
        }
        Phase::ShuttingDown { resume: true, .. } => "resuming an interrupted shutdown".into(),
        Phase::ShuttingDown { .. } => "shutdown in progress".into(),
        Phase::ShutDown { end: ShutdownEnd::Interrupted, .. } => {
            format!("an interrupted shutdown was not resumed; waiting for mains to be back for {settle}")
        }
        Phase::ShutDown { end: ShutdownEnd::Finished(o), .. } => format!(
            "the cluster was shut down ({}); waiting for mains to be back for {settle}",
            serde_json::to_value(o).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        ),
        Phase::StartingUp { .. } => "startup in progress".into(),
    })
}

/// Closes an interrupted shutdown that is not resumed: recorded in runs.json as `interrupted`
/// and its journal put aside. Failures are logged: nothing here may stop the daemon.
pub fn close_interrupted(cfg: &Config, why: &str) {
    let now = SystemTime::now();
    if let Some(j) = Journal::inspect(&cfg.state_dir, PlanKind::Shutdown, now) {
        let started = j.started_at.as_deref().and_then(|s| humantime::parse_rfc3339_weak(s).ok());
        // From its start to its last journal line, when the clock can tell.
        let lasted = match (started, j.age_s) {
            (Some(started), Some(age)) => Duration::try_from_secs_f64(age)
                .ok()
                .and_then(|age| now.checked_sub(age))
                .and_then(|last| last.duration_since(started).ok())
                .unwrap_or_default(),
            _ => Duration::ZERO,
        };
        let mut rec = RunRecord::new(RunKind::Shutdown, started.unwrap_or(now), lasted, RunOutcome::Interrupted);
        rec.trigger_reason = j.reason.clone();
        rec.extra.insert("interrupted".into(), serde_json::json!(why));
        rec.extra.insert("steps_finished".into(), serde_json::json!(j.steps_finished));
        rec.extra.insert("host".into(), serde_json::json!(cfg.host));
        match History::append(&runs_path(cfg), rec) {
            Ok(l) => {
                if let Some(w) = l.warning {
                    tracing::warn!("{w}");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot record the interrupted shutdown in runs.json"),
        }
    }
    match Journal::set_aside(&cfg.state_dir, PlanKind::Shutdown, now) {
        Ok(aside) => tracing::info!(journal = %aside.display(), "the interrupted shutdown's journal was put aside"),
        Err(e) => tracing::error!(error = %e, "cannot put the interrupted shutdown's journal aside"),
    }
}

/// `hecate status`: the daemon's snapshot when one is running, else a one-off poll.
pub async fn show(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = crate::load_config(config)?;
    let snap = match daemon_snapshot(&cfg) {
        Some(s) => s,
        None => one_off(&cfg).await?,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&snap)?);
    } else {
        print!("{}", snap.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// The daemon's snapshot, if a daemon holds the state dir's lock and the snapshot is fresh.
fn daemon_snapshot(cfg: &Config) -> Option<Snapshot> {
    let lock = std::fs::File::open(cfg.state_dir.join("daemon.lock")).ok()?;
    if lock.try_lock_shared().is_ok() {
        return None; // nobody holds it: no daemon
    }
    let text = std::fs::read_to_string(snapshot_path(&cfg.state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

async fn one_off(cfg: &Config) -> anyhow::Result<Snapshot> {
    let rt = Runtime::build_degraded(cfg);
    let budget = budget(cfg);
    let mut sources = Vec::new();
    for p in &rt.power {
        let timeout = *cfg.daemon.poll_interval.max(hecate_core::duration::HumanDuration::from_secs(5));
        let read = tokio::time::timeout(timeout, async { p.source.lock().await.read().await }).await;
        let (reading, error) = match read {
            Ok(Ok(r)) => (Some(r), None),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (None, Some("timed out".to_string())),
        };
        let sample = match &reading {
            Some(r) => Sample::Reading(r.clone()),
            None => Sample::NoData { reason: error.clone().unwrap_or_default() },
        };
        let decision = Policy::new(cfg.policy.clone()).observe(0.0, &sample, budget.seconds);
        sources.push(SourceStatus {
            name: p.name.clone(),
            kind: p.kind.clone(),
            reading,
            error,
            decision: Some(decision),
            poll_errors: 0,
        });
    }
    Ok(Snapshot {
        host: cfg.host.clone(),
        updated_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        from_daemon: false,
        phase: PhaseKind::Watching,
        phase_since: None,
        phase_detail: None,
        budget,
        sources,
        trigger_reason: None,
        last_run: None,
        waiting_for_forwarders: Vec::new(),
        unavailable: rt.unavailable.iter().map(ToString::to_string).collect(),
        power_off_self_at: None,
        kube_credentials: credential_status(&rt),
    })
}
