//! Prometheus metrics, served on `/metrics`.

use std::net::SocketAddr;

use anyhow::Context as _;
use hecate_core::budget::{Budget, BudgetSource};
use hecate_core::duration::is_physical_duration;
use hecate_core::history::{RunOutcome, RunRecord};
use hecate_core::notify::EventKind;
use hecate_core::policy::Decision;
use hecate_core::power::{PowerReading, StatusFlag};
use std::sync::{Arc, Mutex};

use hecate_core::supervisor::{Counters, PhaseKind, Supervisor};
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::http::Limits;

/// The flags exported as `hecate_ups_status{flag=...}`.
const FLAGS: [StatusFlag; 9] = [
    StatusFlag::Online,
    StatusFlag::OnBattery,
    StatusFlag::LowBattery,
    StatusFlag::ForcedShutdown,
    StatusFlag::Charging,
    StatusFlag::Discharging,
    StatusFlag::ReplaceBattery,
    StatusFlag::Bypass,
    StatusFlag::Overload,
];

/// The alerts that last, as `hecate_ups_alert{alert=...}` (see `Source::active_alerts`).
const ALERTS: [&str; 5] = ["comm_lost", "on_battery", "low_battery", "replace_battery", "overload"];

/// Every metric Hecate exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    status: GaugeVec,
    charge: GaugeVec,
    load: GaugeVec,
    runtime_firmware: GaugeVec,
    runtime_own: GaugeVec,
    runtime_used: GaugeVec,
    data: GaugeVec,
    poll_errors: IntCounterVec,
    threshold: GaugeVec,
    budget: prometheus::Gauge,
    triggered: IntGauge,
    run_active: IntGauge,
    last_run: GaugeVec,
    forwarded: IntCounterVec,
    forwarders_waiting: IntGauge,
    forwarding_refused: IntCounterVec,
    fallbacks: prometheus::IntCounter,
    phase: IntGaugeVec,
    start_failures: IntCounterVec,
    interrupted: prometheus::IntCounter,
    unavailable: IntGaugeVec,
    alerts: IntCounterVec,
    alert_active: IntGaugeVec,
    credential_days: GaugeVec,
    input_voltage: GaugeVec,
    output_voltage: GaugeVec,
    battery_voltage: GaugeVec,
    budget_runs: IntGauge,
    budget_learned: IntGauge,
    last_run_end: GaugeVec,
    last_run_outcome: IntGaugeVec,
    last_run_stage: GaugeVec,
    preflight_ok: IntGaugeVec,
    preflight_at: prometheus::Gauge,
    preflight_duration: prometheus::Gauge,
    /// The two gauges above are registered (once a preflight has run).
    preflight_shown: Arc<std::sync::atomic::AtomicBool>,
    /// The (target, check) series of `hecate_preflight_ok` exported now.
    preflight_series: Arc<Mutex<std::collections::BTreeSet<(String, String)>>>,
    /// The supervisor's counters as last exported.
    seen: Arc<Mutex<Counters>>,
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> anyhow::Result<GaugeVec> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> anyhow::Result<Self> {
        let r = Registry::new();
        let poll_errors = IntCounterVec::new(
            Opts::new("hecate_poll_errors_total", "Polls of a power source that returned no data"),
            &["ups"],
        )?;
        r.register(Box::new(poll_errors.clone()))?;
        let budget = prometheus::Gauge::new(
            "hecate_shutdown_budget_seconds",
            "Expected duration of a shutdown, learned from runs.json",
        )?;
        r.register(Box::new(budget.clone()))?;
        let triggered = IntGauge::new("hecate_shutdown_triggered", "1 once the policy has triggered a shutdown")?;
        r.register(Box::new(triggered.clone()))?;
        let run_active = IntGauge::new("hecate_run_active", "1 while a shutdown or startup run is in progress")?;
        r.register(Box::new(run_active.clone()))?;
        let forwarded = IntCounterVec::new(
            Opts::new("hecate_forwarded_triggers_total", "Coordinator: triggers forwarded by other instances"),
            &["forwarder"],
        )?;
        r.register(Box::new(forwarded.clone()))?;
        let forwarders_waiting = IntGauge::new(
            "hecate_forwarders_waiting",
            "Coordinator: forwarders that triggered and have not cleared (no automatic startup until 0)",
        )?;
        r.register(Box::new(forwarders_waiting.clone()))?;
        let forwarding_refused = IntCounterVec::new(
            Opts::new(
                "hecate_forwarding_refused_total",
                "Coordinator: forwarded requests refused, by reason (unknown name, bad signature, outside the clock \
                 window, replayed, ...)",
            ),
            &["reason"],
        )?;
        r.register(Box::new(forwarding_refused.clone()))?;
        for reason in crate::forward::RefusalReason::ALL {
            forwarding_refused.with_label_values(&[reason.as_str()]).inc_by(0);
        }
        let fallbacks = prometheus::IntCounter::new(
            "hecate_forwarder_fallbacks_total",
            "Forwarder: triggers no coordinator accepted, so this host shut down on its own",
        )?;
        r.register(Box::new(fallbacks.clone()))?;
        let phase = IntGaugeVec::new(
            Opts::new("hecate_phase", "1 for the daemon's current lifecycle phase (see the README), 0 for the others"),
            &["phase"],
        )?;
        r.register(Box::new(phase.clone()))?;
        let start_failures = IntCounterVec::new(
            Opts::new(
                "hecate_run_start_failures_total",
                "Runs that could not start (run lock, descriptors, disk); a shutdown is retried every poll",
            ),
            &["kind"],
        )?;
        r.register(Box::new(start_failures.clone()))?;
        let interrupted = prometheus::IntCounter::new(
            "hecate_interrupted_runs_total",
            "Interrupted shutdowns found at start and closed without resuming (mains were on)",
        )?;
        r.register(Box::new(interrupted.clone()))?;
        let unavailable = IntGaugeVec::new(
            Opts::new(
                "hecate_backend_unavailable",
                "1 for each backend (by config field) that could not be built; what needs it fails at once",
            ),
            &["backend"],
        )?;
        r.register(Box::new(unavailable.clone()))?;
        let alerts = IntCounterVec::new(
            Opts::new(
                "hecate_alerts_total",
                "Alerts notified per power source: comm_lost, comm_restored, on_battery, power_restored, \
                 low_battery, replace_battery, overload",
            ),
            &["ups", "alert"],
        )?;
        r.register(Box::new(alerts.clone()))?;
        let alert_active = IntGaugeVec::new(
            Opts::new(
                "hecate_ups_alert",
                "1 while a power source's alert lasts (comm_lost, on_battery, low_battery, replace_battery, overload)",
            ),
            &["ups", "alert"],
        )?;
        r.register(Box::new(alert_active.clone()))?;
        let credential_days = gauge(
            &r,
            "hecate_kube_credential_expiry_days",
            "Days until the cluster API's credentials (the kubeconfig's client certificate or token) expire; \
             negative once expired",
            &["credential"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("hecate_build_info", "Always 1; the running binary's version as a label"),
            &["version"],
        )?;
        r.register(Box::new(build_info.clone()))?;
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let budget_runs = IntGauge::new(
            "hecate_shutdown_budget_runs",
            "Successful shutdowns of the current plan in runs.json that the budget is (or, below min_runs, would be) \
             learned from",
        )?;
        r.register(Box::new(budget_runs.clone()))?;
        let budget_learned = IntGauge::new(
            "hecate_shutdown_budget_learned",
            "1 when the budget is learned from runs.json, 0 while it is default_shutdown_budget (too few runs)",
        )?;
        r.register(Box::new(budget_learned.clone()))?;
        let last_run_outcome = IntGaugeVec::new(
            Opts::new(
                "hecate_last_run_outcome",
                "1 for the outcome of the last recorded run of each kind (success, partial, failed, interrupted), 0 for \
                 the others",
            ),
            &["kind", "outcome"],
        )?;
        r.register(Box::new(last_run_outcome.clone()))?;
        for kind in ["shutdown", "startup"] {
            start_failures.with_label_values(&[kind]).inc_by(0);
        }
        let preflight_ok = IntGaugeVec::new(
            Opts::new(
                "hecate_preflight_ok",
                "1 while a preflight check of the shutdown and startup path passes, 0 while it fails, as last \
                 checked (target: node/NAME, ups/NAME, cluster, gitops, coordinator; check: what, such as \
                 ssh_systemd:sudo); a check that could never be made has no series",
            ),
            &["target", "check"],
        )?;
        r.register(Box::new(preflight_ok.clone()))?;
        let preflight_at = prometheus::Gauge::new(
            "hecate_preflight_last_check_timestamp_seconds",
            "When the daemon's last preflight ran, Unix time (absent until one has)",
        )?;
        let preflight_duration = prometheus::Gauge::new(
            "hecate_preflight_last_duration_seconds",
            "How long the daemon's last preflight took",
        )?;
        Ok(Self {
            input_voltage: gauge(
                &r,
                "hecate_ups_input_voltage_volts",
                "input.voltage (0 while mains are out)",
                &["ups"],
            )?,
            output_voltage: gauge(&r, "hecate_ups_output_voltage_volts", "output.voltage", &["ups"])?,
            battery_voltage: gauge(&r, "hecate_ups_battery_voltage_volts", "battery.voltage", &["ups"])?,
            budget_runs,
            budget_learned,
            last_run_end: gauge(
                &r,
                "hecate_last_run_timestamp_seconds",
                "When the last recorded run of each kind ended, Unix time",
                &["kind"],
            )?,
            last_run_outcome,
            last_run_stage: gauge(
                &r,
                "hecate_last_run_stage_duration_seconds",
                "How long each stage of the last recorded run of each kind took",
                &["kind", "stage"],
            )?,
            preflight_ok,
            preflight_at,
            preflight_duration,
            preflight_shown: Arc::default(),
            preflight_series: Arc::default(),
            alerts,
            alert_active,
            unavailable,
            credential_days,
            phase,
            start_failures,
            interrupted,
            seen: Arc::default(),
            forwarded,
            forwarders_waiting,
            forwarding_refused,
            fallbacks,
            status: gauge(&r, "hecate_ups_status", "1 when the UPS reports the ups.status flag", &["ups", "flag"])?,
            charge: gauge(&r, "hecate_ups_battery_charge_ratio", "battery.charge as a 0-1 ratio", &["ups"])?,
            load: gauge(&r, "hecate_ups_load_ratio", "ups.load as a 0-1 ratio of nominal", &["ups"])?,
            runtime_firmware: gauge(
                &r,
                "hecate_ups_runtime_firmware_seconds",
                "battery.runtime as the firmware reports it (filtered)",
                &["ups"],
            )?,
            runtime_own: gauge(
                &r,
                "hecate_ups_runtime_estimate_seconds",
                "Hecate's own runtime estimate from the charge slope",
                &["ups"],
            )?,
            runtime_used: gauge(
                &r,
                "hecate_ups_runtime_decision_seconds",
                "The runtime estimate the policy compared with the threshold",
                &["ups"],
            )?,
            data: gauge(&r, "hecate_ups_data_ok", "1 when the last poll returned data", &["ups"])?,
            threshold: gauge(&r, "hecate_shutdown_threshold_seconds", "runtime_safety_factor x budget", &["ups"])?,
            last_run: gauge(&r, "hecate_last_run_duration_seconds", "Duration of the last finished run", &["kind"])?,
            poll_errors,
            budget,
            triggered,
            run_active,
            registry: r,
        })
    }

    /// Records one poll of a source.
    pub fn observe(&self, ups: &str, reading: Option<&PowerReading>, decision: &Decision) {
        match reading {
            Some(r) => {
                self.data.with_label_values(&[ups]).set(1.0);
                for f in &FLAGS {
                    self.status.with_label_values(&[ups, f.as_str()]).set(if r.status.has(f) { 1.0 } else { 0.0 });
                }
                set_opt(&self.charge, ups, r.charge_pct.map(|c| c / 100.0));
                set_opt(&self.load, ups, r.load_pct.map(|l| l / 100.0));
                set_opt(&self.input_voltage, ups, r.input_voltage);
                set_opt(&self.output_voltage, ups, r.output_voltage);
                set_opt(&self.battery_voltage, ups, r.battery_voltage);
                // Present from the first poll, so `increase()` sees the first error.
                self.poll_errors.with_label_values(&[ups]).inc_by(0);
            }
            None => {
                self.data.with_label_values(&[ups]).set(0.0);
                self.poll_errors.with_label_values(&[ups]).inc();
            }
        }
        set_opt(&self.runtime_firmware, ups, decision.firmware_runtime_s);
        set_opt(&self.runtime_own, ups, decision.own_estimate_s);
        set_opt(&self.runtime_used, ups, decision.estimate_s);
        self.threshold.with_label_values(&[ups]).set(decision.threshold_s);
    }

    /// Records the supervisor's state: budget, trigger, phase, and its counters (the
    /// Prometheus counters advance by what the supervisor counted since the last call).
    pub fn set_lifecycle(&self, sup: &Supervisor, budget: &Budget) {
        self.budget.set(budget.seconds);
        let (runs, learned) = match budget.source {
            BudgetSource::History { runs } => (runs, true),
            BudgetSource::Default { successful_runs, .. } => (successful_runs, false),
        };
        self.budget_runs.set(i64::try_from(runs).unwrap_or(i64::MAX));
        self.budget_learned.set(i64::from(learned));
        self.triggered.set(i64::from(sup.is_triggered()));
        self.run_active.set(i64::from(sup.phase().run().is_some()));
        self.forwarders_waiting.set(i64::try_from(sup.outstanding().len()).unwrap_or(i64::MAX));
        for src in sup.sources() {
            let active = src.active_alerts();
            for kind in ALERTS {
                self.alert_active.with_label_values(&[&src.name, kind]).set(i64::from(active.contains(&kind)));
            }
            // Every alert's counter exists from the start at 0, so `increase()` sees the first.
            for kind in EventKind::UPS_ALERTS {
                self.alerts.with_label_values(&[&src.name, kind.as_str()]).inc_by(0);
            }
        }
        let current = sup.phase().kind();
        for p in PhaseKind::ALL {
            self.phase.with_label_values(&[p.as_str()]).set(i64::from(p == current));
        }
        let now = sup.counters();
        let Ok(mut seen) = self.seen.lock() else { return };
        for (host, n) in &now.forwarded_triggers {
            let before = seen.forwarded_triggers.get(host).copied().unwrap_or(0);
            self.forwarded.with_label_values(&[host]).inc_by(n.saturating_sub(before));
        }
        for (kind, n) in &now.run_start_failures {
            let before = seen.run_start_failures.get(kind).copied().unwrap_or(0);
            self.start_failures.with_label_values(&[kind]).inc_by(n.saturating_sub(before));
        }
        for (ups, kinds) in &now.alerts {
            for (kind, n) in kinds {
                let before = seen.alerts.get(ups).and_then(|k| k.get(kind)).copied().unwrap_or(0);
                self.alerts.with_label_values(&[ups, kind]).inc_by(n.saturating_sub(before));
            }
        }
        self.fallbacks.inc_by(now.forwarder_fallbacks.saturating_sub(seen.forwarder_fallbacks));
        self.interrupted.inc_by(now.interrupted_runs.saturating_sub(seen.interrupted_runs));
        *seen = now.clone();
    }

    /// Coordinator: the forwarders it lists, each with its counter at 0 from the start, so the
    /// first trigger is seen by `increase()` (the list is bounded by the config).
    pub fn forwarders(&self, names: &[String]) {
        for name in names {
            self.forwarded.with_label_values(&[name]).inc_by(0);
        }
    }

    /// A forwarded request refused, for `reason` (a fixed set: see `forward::RefusalReason`).
    pub fn forwarding_refused(&self, reason: &str) {
        self.forwarding_refused.with_label_values(&[reason]).inc();
    }

    /// Days until the cluster API's credentials expire (`None`: none known, the series goes).
    pub fn set_credential_expiry(&self, what: Option<&str>, days: Option<f64>) {
        self.credential_days.reset();
        if let (Some(what), Some(days)) = (what, days) {
            self.credential_days.with_label_values(&[what]).set(days);
        }
    }

    /// Each preflight check's last known state, and when the last preflight ran. The time and
    /// duration are registered only once a preflight has run, so a scrape before that does not
    /// show a check made at 1970.
    pub fn set_preflight(&self, tracker: &hecate_core::preflight::Tracker) {
        use hecate_core::preflight::CheckStatus;
        // Set in place, and only the series no longer wanted removed: a reset would let a
        // scrape in between see none, and an alert on a failing check resolve for nothing.
        let mut now = std::collections::BTreeSet::new();
        for c in tracker.states() {
            let ok = match c.status {
                CheckStatus::Ok => 1,
                CheckStatus::Failed => 0,
                CheckStatus::Skipped => continue,
            };
            self.preflight_ok.with_label_values(&[&c.target, &c.check]).set(ok);
            now.insert((c.target.clone(), c.check.clone()));
        }
        if let Ok(mut shown) = self.preflight_series.lock() {
            for (target, check) in shown.difference(&now) {
                let _ = self.preflight_ok.remove_label_values(&[target, check]);
            }
            *shown = now;
        }
        let Some((at, duration)) = tracker.last() else { return };
        if let Ok(t) = humantime::parse_rfc3339_weak(at)
            && let Ok(unix) = t.duration_since(std::time::UNIX_EPOCH)
        {
            // registered on first use: the gauges exist only once there is something to say
            if !self.preflight_shown.swap(true, std::sync::atomic::Ordering::Relaxed) {
                let _ = self.registry.register(Box::new(self.preflight_at.clone()));
                let _ = self.registry.register(Box::new(self.preflight_duration.clone()));
            }
            self.preflight_at.set(unix.as_secs_f64());
            self.preflight_duration.set(duration);
        }
    }

    /// A backend that could not be built.
    pub fn backend_unavailable(&self, field: &str) {
        self.unavailable.with_label_values(&[field]).set(1);
    }

    /// The last recorded run of each kind in `runs` (runs.json, oldest first): its duration,
    /// end time, outcome and stage durations. Called at start and after every run, so the
    /// series survive a restart and include runs the daemon did not run itself.
    pub fn set_runs(&self, runs: &[RunRecord]) {
        let mut last = std::collections::BTreeMap::new();
        for r in runs {
            if let Some(kind) = run_label(&r.kind.to_string()) {
                last.insert(kind, r);
            }
        }
        self.last_run_stage.reset();
        for (kind, r) in last {
            let kind = kind.as_str();
            if is_physical_duration(r.duration_s) {
                self.last_run.with_label_values(&[kind]).set(r.duration_s);
            }
            let ended = humantime::parse_rfc3339_weak(&r.started_at)
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|t| t.as_secs_f64() + if is_physical_duration(r.duration_s) { r.duration_s } else { 0.0 });
            match ended {
                Some(t) => self.last_run_end.with_label_values(&[kind]).set(t),
                None => {
                    let _ = self.last_run_end.remove_label_values(&[kind]);
                }
            }
            for o in RunOutcome::KNOWN {
                self.last_run_outcome.with_label_values(&[kind, &o.to_string()]).set(i64::from(o == r.outcome));
            }
            for s in r.stages.iter().filter(|s| is_physical_duration(s.duration_s)) {
                if let Some(stage) = run_label(&s.name) {
                    self.last_run_stage.with_label_values(&[kind, &stage]).set(s.duration_s);
                }
            }
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Serves `/metrics` until the task is dropped, within [`Limits::METRICS`]: the port is
    /// open to the LAN without a token, so connections are capped and timed out (see
    /// [`crate::http`]). An error only if `addr` cannot be bound.
    pub async fn serve(self, addr: SocketAddr) -> anyhow::Result<()> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding metrics on {addr}"))?;
        tracing::info!(%addr, "serving /metrics");
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let m = self.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], m.render()) }
            }),
        );
        crate::http::serve(listener, "/metrics", app, None, Limits::METRICS).await;
        Ok(())
    }
}

/// A run's kind or a stage's name as a label: runs.json is a file on disk, so anything that is
/// not a short plain name (a hand-edited or damaged record) gets no series of its own.
fn run_label(name: &str) -> Option<String> {
    (!name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'))
    .then(|| name.to_string())
}

fn set_opt(g: &GaugeVec, ups: &str, v: Option<f64>) {
    match v {
        Some(v) => g.with_label_values(&[ups]).set(v),
        // A value the UPS stopped reporting must not keep its last number.
        None => {
            let _ = g.remove_label_values(&[ups]);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn each_preflight_check_is_a_series_until_it_is_no_longer_checked() {
        use hecate_core::preflight::{CheckResult, CheckStatus, Report, Tracker};
        let m = Metrics::new().unwrap();
        let mut t = Tracker::default();
        m.set_preflight(&t);
        assert!(!m.render().contains("hecate_preflight_last_check_timestamp_seconds"), "no time before a run");
        let result = |check: &str, status| CheckResult {
            target: "node/n1".into(),
            check: check.into(),
            status,
            message: String::new(),
        };
        let report = |results| Report { checked_at: "2026-01-01T00:00:10Z".into(), duration_s: 2.5, results };
        t.observe(&report(vec![
            result("ssh_systemd:sudo", CheckStatus::Failed),
            result("ssh_systemd:login", CheckStatus::Ok),
            result("simulated:preflight", CheckStatus::Skipped),
        ]));
        m.set_preflight(&t);
        let text = m.render();
        assert!(text.contains(r#"hecate_preflight_ok{check="ssh_systemd:sudo",target="node/n1"} 0"#), "{text}");
        assert!(text.contains(r#"hecate_preflight_ok{check="ssh_systemd:login",target="node/n1"} 1"#), "{text}");
        assert!(!text.contains("simulated:preflight"), "a check never made has no series: {text}");
        assert!(text.contains("hecate_preflight_last_check_timestamp_seconds 1767225610"), "{text}");
        assert!(text.contains("hecate_preflight_last_duration_seconds 2.5"), "{text}");
        t.observe(&report(vec![result("ssh_systemd:login", CheckStatus::Ok)]));
        m.set_preflight(&t);
        assert!(!m.render().contains(r#"check="ssh_systemd:sudo""#), "{}", m.render());
    }

    #[test]
    fn the_credential_expiry_is_one_series_and_goes_when_unknown() {
        let m = Metrics::new().unwrap();
        m.set_credential_expiry(Some("client certificate"), Some(11.5));
        let text = m.render();
        assert!(text.contains("hecate_kube_credential_expiry_days{credential=\"client certificate\"} 11.5"), "{text}");
        m.set_credential_expiry(Some("token"), Some(-2.0));
        let text = m.render();
        assert!(text.contains("hecate_kube_credential_expiry_days{credential=\"token\"} -2"), "{text}");
        assert!(!text.contains("credential=\"client certificate\""), "{text}");
        m.set_credential_expiry(None, None);
        assert!(!m.render().contains("hecate_kube_credential_expiry_days{"));
    }
}
