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
    // a drill's halves are the real plans
    let recent: Vec<&RunRecord> = runs
        .iter()
        .filter(|r| {
            r.plan_kind() == Some(kind) && r.outcome == RunOutcome::Success && is_physical_duration(r.duration_s)
        })
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
    /// Its alerts that last (`comm_lost`, `on_battery`, `low_battery`, `replace_battery`,
    /// `overload`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<String>,
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
    /// What happens next, and when, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
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
    /// Forwarder: why the last trigger or clear it sent was not taken (the coordinator's reason,
    /// such as a clock outside its window), until one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarding_problem: Option<String>,
    /// When the cluster API's credentials (the kubeconfig's client certificate or token) expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_credentials: Option<CredentialStatus>,
    /// The daemon's preflight: when it last ran and each check's last known state (absent with
    /// `preflight.enabled: false`, and in a one-off poll).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preflight: Option<crate::preflight::PreflightStatus>,
}

/// What of a [`Snapshot`] is written at once when it changes ([`Snapshot::headline`]).
#[derive(Debug, PartialEq)]
pub struct Headline {
    phase: PhaseKind,
    phase_detail: Option<String>,
    trigger_reason: Option<String>,
    waiting_for_forwarders: Vec<String>,
    unavailable: Vec<String>,
    power_off_self_at: Option<String>,
    forwarding_problem: Option<String>,
    sources: Vec<SourceHeadline>,
}

/// One source in a [`Headline`].
#[derive(Debug, PartialEq)]
struct SourceHeadline {
    error: Option<String>,
    /// The decision's power state, whether it triggered, its streak.
    state: Option<(hecate_core::policy::PowerState, bool, u32)>,
    alerts: Vec<String>,
    flags: Option<hecate_core::power::UpsStatus>,
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
                    Some(Sample::NoData { reason }) => Some(sink_text(reason)),
                    _ => None,
                },
                decision: s.decision.clone(),
                poll_errors: s.polls_without_data,
                alerts: s.active_alerts().into_iter().map(str::to_string).collect(),
            })
            .collect();
        let phase = sup.phase();
        Snapshot {
            host: cfg.host.clone(),
            updated_at: humantime::format_rfc3339_seconds(wall_now).to_string(),
            from_daemon: true,
            phase: phase.kind(),
            phase_since: phase.since().and_then(wall),
            phase_detail: phase_detail(phase, cfg).map(|d| sink_text(&d)),
            next: Some(sink_text(&next_step(phase, sup, cfg, budget))),
            budget: budget.clone(),
            sources,
            trigger_reason: sup.trigger().map(|t| sink_text(&t.reason)),
            last_run,
            waiting_for_forwarders: sup.outstanding().iter().cloned().collect(),
            unavailable: rt.unavailable.iter().map(ToString::to_string).collect(),
            power_off_self_at: sup.power_off_self_due().and_then(|due| {
                let ahead = Duration::try_from_secs_f64((due - now_s).max(0.0)).ok()?;
                wall_now.checked_add(ahead).map(|w| humantime::format_rfc3339_seconds(w).to_string())
            }),
            forwarding_problem: sup.forwarding_problem().map(sink_text),
            kube_credentials: credential_status(rt),
            preflight: crate::preflight::PreflightStatus::of(cfg, sup.preflight()),
        }
    }

    /// What of the snapshot an operator acts on: the phase and its sentence, the trigger, the
    /// forwarders and backends it waits for, and per source whether it has data, its power
    /// state, the trigger's streak, its alerts and the UPS's status flags. The rest (readings,
    /// estimates, the countdown in `next`) moves at every poll on a real UPS and may wait for
    /// the daemon's next periodic write.
    pub fn headline(&self) -> Headline {
        Headline {
            phase: self.phase,
            phase_detail: self.phase_detail.clone(),
            trigger_reason: self.trigger_reason.clone(),
            waiting_for_forwarders: self.waiting_for_forwarders.clone(),
            unavailable: self.unavailable.clone(),
            power_off_self_at: self.power_off_self_at.clone(),
            forwarding_problem: self.forwarding_problem.clone(),
            sources: self
                .sources
                .iter()
                .map(|s| SourceHeadline {
                    error: s.error.clone(),
                    state: s.decision.as_ref().map(|d| (d.state, d.triggered, d.streak)),
                    alerts: s.alerts.clone(),
                    flags: s.reading.as_ref().map(|r| r.status.clone()),
                })
                .collect(),
        }
    }

    /// Replaces status.json in the state dir: whole for every reader, not synced to disk, since
    /// the daemon rewrites it often and nothing decides from it (`hecate status` reads a
    /// missing or broken one as "not written yet").
    pub fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        hecate_core::history::replace_unsynced(&snapshot_path(state_dir), &bytes).context("writing status.json")?;
        Ok(())
    }

    /// The human view: the phase in words, why, what happens next; the budget; each UPS.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let origin = if self.from_daemon {
            format!("as the daemon saw it at {}", self.updated_at)
        } else {
            format!("a one-off poll at {}: no daemon is running", self.updated_at)
        };
        let since = self.phase_since.as_deref().map(|t| format!(" since {t}")).unwrap_or_default();
        let _ = writeln!(s, "{}: {}{since} ({origin})", self.host, phase_words(self.phase));
        if let Some(d) = &self.phase_detail {
            let _ = writeln!(s, "  why: {d}");
        }
        if let Some(r) = self.trigger_reason.as_deref().filter(|_| self.phase != PhaseKind::Watching) {
            let _ = writeln!(s, "  triggered by: {r}");
        }
        if let Some(n) = &self.next {
            let _ = writeln!(s, "  next: {n}");
        }
        let _ = writeln!(s, "shutdown budget: {}", self.budget);
        if !self.waiting_for_forwarders.is_empty() {
            let _ = writeln!(
                s,
                "forwarders still on battery (no automatic startup until they clear): {}",
                self.waiting_for_forwarders.join(", ")
            );
        }
        if let Some(p) = &self.forwarding_problem {
            let _ = writeln!(s, "forwarding problem: {p}");
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
                let _ = writeln!(s, "  policy: {}", d.describe());
            }
            if src.poll_errors > 0 {
                let _ = writeln!(s, "  polls without data: {}", src.poll_errors);
            }
            if !src.alerts.is_empty() {
                let _ = writeln!(s, "  alerts: {}", src.alerts.join(", "));
            }
        }
        if let Some(p) = &self.preflight {
            let _ = write!(s, "\n{}", crate::preflight::render_status(p, false));
        }
        // status.json may have been written by an older daemon: nothing in it reaches the
        // terminal raw.
        hecate_core::text::clean_lines(&s)
    }
}

/// A phase in words.
pub fn phase_words(phase: PhaseKind) -> &'static str {
    match phase {
        PhaseKind::Recovering => "recovering from an interrupted shutdown",
        PhaseKind::Watching => "watching the power",
        PhaseKind::Forwarding => "forwarding a shutdown trigger to the coordinator",
        PhaseKind::Forwarded => "the coordinator took this host's shutdown trigger",
        PhaseKind::ShutdownQueued => "a shutdown is waiting to start",
        PhaseKind::ShuttingDown => "shutting the cluster down",
        PhaseKind::ShutDown => "the cluster is shut down",
        PhaseKind::StartingUp => "starting the cluster",
    }
}

/// What happens next in the phase, and when, in a sentence.
fn next_step(phase: &Phase, sup: &Supervisor, cfg: &Config, budget: &Budget) -> String {
    let settle = humantime::format_duration(*cfg.daemon.power_return_settle);
    let debounce = cfg.policy.debounce_polls;
    match phase {
        Phase::Watching => {
            let on_battery = sup.sources().iter().find_map(|s| {
                s.decision.as_ref().filter(|d| d.state == hecate_core::policy::PowerState::OnBattery).map(|d| (s, d))
            });
            match on_battery {
                Some((s, d)) => format!(
                    "the shutdown starts if the runtime left of ups {} ({}) stays below {:.0} s for {debounce} poll(s) \
                     ({} so far), or at once on FSD",
                    s.name,
                    d.estimate_s.map(|e| format!("{e:.0} s")).unwrap_or_else(|| "unknown".into()),
                    d.threshold_s,
                    d.streak
                ),
                None => format!(
                    "a shutdown once a UPS on battery has less than {:.0} s of runtime left ({} × the budget) for \
                     {debounce} poll(s), or at once on FSD",
                    cfg.policy.runtime_safety_factor * budget.seconds,
                    cfg.policy.runtime_safety_factor
                ),
            }
        }
        Phase::Recovering { .. } => {
            "at the next poll: resumed if power is still failing, else recorded as interrupted".into()
        }
        Phase::Forwarding { .. } => {
            let timeout = match &cfg.role {
                hecate_core::config::Role::Forwarder(f) => humantime::format_duration(*f.timeout).to_string(),
                _ => "its timeout".into(),
            };
            format!("if no coordinator takes the trigger within {timeout}, this host runs its own shutdown plan")
        }
        Phase::Forwarded { .. } => format!(
            "once mains have been back for {settle}, this host tells the coordinator and watches the power again"
        ),
        Phase::ShutdownQueued { .. } => format!(
            "the shutdown is tried again at every poll (every {}) until it starts; only mains back and stable drop it",
            humantime::format_duration(*cfg.daemon.poll_interval)
        ),
        Phase::ShuttingDown { .. } => {
            format!("the shutdown runs to its end; then the daemon waits for mains to be back for {settle}")
        }
        Phase::ShutDown { .. } if cfg.daemon.startup_on_power_return => {
            let charge = cfg
                .daemon
                .restart_min_charge
                .map(|c| format!(" and every UPS holds {c:.0} % charge"))
                .unwrap_or_default();
            format!("once mains have been back for {settle}{charge}, the daemon starts the cluster")
        }
        Phase::ShutDown { .. } => format!(
            "once mains have been back for {settle} the daemon watches the power again; the cluster comes back \
             with hecate-bootstrap at boot or `hecate startup --execute`"
        ),
        Phase::StartingUp { .. } => {
            "the daemon watches the power again once the startup ends (a trigger meanwhile abandons it for a \
             shutdown)"
                .into()
        }
    }
}

/// The last runs in runs.json, newest last, as a short table.
pub fn runs_table(runs: &[RunRecord], last: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "\nlast runs (runs.json):");
    if runs.is_empty() {
        let _ = writeln!(s, "  none yet");
        return s;
    }
    let mut rows = vec![["started", "kind", "outcome", "took", "why"].map(String::from).to_vec()];
    for r in runs.iter().rev().take(last).rev() {
        let took = Duration::try_from_secs_f64(r.duration_s.round())
            .ok()
            .filter(|_| is_physical_duration(r.duration_s))
            .map_or_else(|| "?".into(), |d| humantime::format_duration(d).to_string());
        let failures = r.extra.get("failures").and_then(|f| f.as_array()).map_or(0, Vec::len);
        let outcome = if failures > 0 { format!("{} ({failures} failed)", r.outcome) } else { r.outcome.to_string() };
        let why = r.trigger_reason.as_deref().map(|w| hecate_core::text::clean(w, 70)).unwrap_or_default();
        rows.push(vec![r.started_at.clone(), r.kind.to_string(), outcome, took, why]);
    }
    s.push_str(&crate::cluster_view::table(&rows));
    hecate_core::text::clean_lines(&s)
}

/// Text that may carry a peer's words (a UPS's error, a forwarder's reason), as status keeps it.
fn sink_text(s: &str) -> String {
    hecate_core::text::clean(s, hecate_core::text::MESSAGE_CHARS)
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
        // The phase's name says it all; the trigger's reason follows it.
        Phase::ShuttingDown { .. } | Phase::StartingUp { .. } => return None,
        Phase::ShutDown { end: ShutdownEnd::Interrupted, .. } => {
            format!("an interrupted shutdown was not resumed; waiting for mains to be back for {settle}")
        }
        Phase::ShutDown { end: ShutdownEnd::Finished(o), .. } => format!(
            "the cluster was shut down ({}); waiting for mains to be back for {settle}",
            serde_json::to_value(o).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
        ),
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

/// What `hecate status` exits with, for health checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Exit 0: the daemon runs, its status is fresh, every source gives data, every backend was
    /// built, no alert lasts.
    Healthy,
    /// Exit 1: the daemon runs, but a source has no data, a backend could not be built, an alert
    /// lasts, or a preflight check fails (each reason in words).
    Degraded(Vec<String>),
    /// Exit 3: no daemon runs, or its status is stale (why).
    NotRunning(String),
}

impl Health {
    /// The exit code: 0, 1 or 3.
    pub fn code(&self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Degraded(_) => 1,
            Self::NotRunning(_) => 3,
        }
    }

    /// One line for humans.
    pub fn line(&self) -> String {
        match self {
            Self::Healthy => "health: ok".into(),
            Self::Degraded(why) => format!("health: degraded: {}", why.join("; ")),
            Self::NotRunning(why) => format!("health: not protected: {why}"),
        }
    }

    /// What a daemon's fresh snapshot says.
    pub fn of(snap: &Snapshot) -> Health {
        let mut why: Vec<String> = snap.unavailable.iter().map(|u| format!("backend unavailable: {u}")).collect();
        for src in &snap.sources {
            if src.reading.is_none() {
                let error = src.error.as_deref().unwrap_or("not polled yet");
                why.push(format!("ups {}: no data ({error})", src.name));
            }
            if !src.alerts.is_empty() {
                why.push(format!("ups {}: {}", src.name, src.alerts.join(", ")));
            }
        }
        if snap.sources.is_empty() {
            why.push("no power source is watched".into());
        }
        // A shutdown path that would break is worth the health check's attention now, not at
        // the outage.
        why.extend(snap.preflight.iter().flat_map(crate::preflight::failing_lines));
        if why.is_empty() { Health::Healthy } else { Health::Degraded(why) }
    }
}

/// How old the daemon's status.json may be before `hecate status` calls it stale: the daemon
/// rewrites it at a poll that changes what it shows an operator and at least every poll
/// interval or 5 s, whichever is longer, and a poll takes at most its interval plus a read's
/// time limit (10 s at most); three intervals and 15 s leave room for that and for the
/// seconds-only time stamp.
pub fn stale_after(cfg: &Config) -> Duration {
    cfg.daemon.poll_interval.saturating_mul(3).saturating_add(Duration::from_secs(15))
}

/// `hecate status`: the daemon's snapshot when one is running, else a one-off poll. Exits 0
/// healthy, 1 degraded, 3 no daemon or a stale status (see [`Health`]).
pub async fn show(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = crate::load_config(config)?;
    let (snap, health) = match daemon_snapshot(&cfg, SystemTime::now()) {
        DaemonView::Fresh(s) => {
            let health = Health::of(&s);
            (s, health)
        }
        DaemonView::Stale(s, why) => (s, Health::NotRunning(why)),
        DaemonView::Absent(why) => (one_off(&cfg).await?, Health::NotRunning(why)),
    };
    let view = crate::cluster_view::ClusterView::load(&cfg.state_dir);
    let runs = History::load(&runs_path(&cfg)).map(|l| l.history.runs).unwrap_or_default();
    if json {
        let mut value = serde_json::to_value(&snap)?;
        if let Some(map) = value.as_object_mut() {
            map.insert("health".into(), serde_json::json!({ "exit_code": health.code(), "summary": health.line() }));
            map.insert("cluster_view".into(), serde_json::to_value(&view)?);
            let recent: Vec<&RunRecord> = runs.iter().rev().take(LAST_RUNS).rev().collect();
            map.insert("last_runs".into(), serde_json::to_value(recent)?);
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{}", health.line());
        print!("{}", snap.render());
        let names: Vec<String> = cfg.nodes.iter().map(|n| n.name.clone()).collect();
        print!("{}", hecate_core::text::clean_lines(&view.render(&names)));
        print!("{}", runs_table(&runs, LAST_RUNS));
    }
    Ok(ExitCode::from(health.code()))
}

/// How many runs `hecate status` lists.
const LAST_RUNS: usize = 5;

/// What the state dir says about a daemon.
pub(crate) enum DaemonView {
    /// A daemon holds the lock and its snapshot is fresh.
    Fresh(Snapshot),
    /// A daemon holds the lock, but its snapshot is older than [`stale_after`].
    Stale(Snapshot, String),
    /// No daemon, or no snapshot of it to read (why).
    Absent(String),
}

/// The daemon's snapshot, if a daemon holds the state dir's lock, and whether it is fresh.
pub(crate) fn daemon_snapshot(cfg: &Config, now: SystemTime) -> DaemonView {
    let lock_path = cfg.state_dir.join("daemon.lock");
    let no_daemon = || DaemonView::Absent(format!("no daemon is running (nothing holds {})", lock_path.display()));
    let Ok(lock) = std::fs::File::open(&lock_path) else {
        return no_daemon();
    };
    if lock.try_lock_shared().is_ok() {
        return no_daemon();
    }
    let path = snapshot_path(&cfg.state_dir);
    let snap = match std::fs::read_to_string(&path).map(|t| serde_json::from_str::<Snapshot>(&t)) {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return DaemonView::Absent(format!("the daemon's {} cannot be read: {e}", path.display())),
        Err(e) => return DaemonView::Absent(format!("the daemon has not written {} yet ({e})", path.display())),
    };
    let limit = stale_after(cfg);
    let age = humantime::parse_rfc3339_weak(&snap.updated_at).ok().map(|at| now.duration_since(at).unwrap_or_default());
    match age {
        Some(age) if age <= limit => DaemonView::Fresh(snap),
        Some(age) => {
            let why = format!(
                "the daemon's status is stale: last written {} ago (stale after {}: three poll intervals and 15 s)",
                humantime::format_duration(Duration::from_secs(age.as_secs())),
                humantime::format_duration(limit)
            );
            DaemonView::Stale(snap, why)
        }
        None => {
            let why = format!("the daemon's status has no readable time stamp ({:?})", snap.updated_at);
            DaemonView::Stale(snap, why)
        }
    }
}

pub(crate) async fn one_off(cfg: &Config) -> anyhow::Result<Snapshot> {
    let rt = Runtime::build_degraded(cfg);
    let budget = budget(cfg);
    let mut sources = Vec::new();
    for p in &rt.power {
        let timeout = *cfg.daemon.poll_interval.max(hecate_core::duration::HumanDuration::from_secs(5));
        let read = tokio::time::timeout(timeout, async { p.source.lock().await.read().await }).await;
        let (reading, error) = match read {
            Ok(Ok(r)) => (Some(r), None),
            Ok(Err(e)) => (None, Some(sink_text(&e.to_string()))),
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
            alerts: Vec::new(),
        });
    }
    Ok(Snapshot {
        host: cfg.host.clone(),
        updated_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        from_daemon: false,
        phase: PhaseKind::Watching,
        phase_since: None,
        phase_detail: None,
        next: None,
        budget,
        sources,
        trigger_reason: None,
        last_run: None,
        waiting_for_forwarders: Vec::new(),
        unavailable: rt.unavailable.iter().map(ToString::to_string).collect(),
        power_off_self_at: None,
        forwarding_problem: None,
        kube_credentials: credential_status(&rt),
        preflight: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_control_character_reaches_the_terminal() {
        let hostile = "upsd at 127.0.0.1:1 refused LIST VAR u: (ERR X \u{1b}[2J\u{1b}]0;pwned\u{7}\0boom)";
        let snap = Snapshot {
            host: "h".into(),
            updated_at: "now".into(),
            from_daemon: true,
            phase: PhaseKind::Watching,
            phase_since: None,
            phase_detail: None,
            next: None,
            budget: budget::estimate(&[], &budget::BudgetConfig::default(), None),
            sources: vec![SourceStatus {
                name: "u".into(),
                kind: "nut".into(),
                reading: None,
                error: Some(hostile.into()),
                decision: None,
                poll_errors: 1,
                alerts: vec!["comm_lost".into()],
            }],
            trigger_reason: Some("forwarded by x: \u{9b}31mred".into()),
            last_run: None,
            waiting_for_forwarders: Vec::new(),
            unavailable: Vec::new(),
            power_off_self_at: None,
            forwarding_problem: Some("the coordinator answered 401: \u{1b}[2Jskew".into()),
            kube_credentials: None,
            preflight: None,
        };
        let out = snap.render();
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(out.contains("boom") && out.contains("red"), "{out}");
    }
}
