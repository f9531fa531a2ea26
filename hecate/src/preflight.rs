//! `hecate preflight`, and the checks the daemon runs every `preflight.interval`: every backend's
//! own (`hecate_core::preflight`), and a forwarder's coordinator, reached and taking its
//! signature (`POST /v1/check`).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Instant, SystemTime};

use hecate_core::config::{Config, Role};
use hecate_core::preflight::{self, Check, CheckResult, CheckStatus, Report, Tracker};
use hecate_core::runtime::Runtime;
use serde::{Deserialize, Serialize};

use crate::forward::ForwardLink;

/// The forwarding link as the checks see it: a forwarder's, or why it has none.
#[derive(Debug, Clone)]
pub enum Forwarding {
    /// Not a forwarder: nothing to check.
    None,
    /// A forwarder's link.
    Link(ForwardLink),
    /// A forwarder whose link could not be made (its key or CA unreadable): why.
    Unavailable(String),
}

impl Forwarding {
    /// The link of `cfg`'s role.
    pub fn of(cfg: &Config) -> Forwarding {
        match ForwardLink::from_config(cfg) {
            Ok(Some(link)) => Forwarding::Link(link),
            Ok(None) => Forwarding::None,
            Err(e) => Forwarding::Unavailable(format!("{e:#}")),
        }
    }
}

/// Runs every check once: each backend's, bounded by `preflight.timeout`, and a forwarder's
/// coordinator.
pub async fn run_checks(cfg: &Config, rt: &Runtime, forwarding: &Forwarding) -> Report {
    let started = Instant::now();
    let checked_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let opts = preflight::Options { timeout: *cfg.preflight.timeout };
    let coordinator = async {
        let check = match forwarding {
            Forwarding::None => return None,
            Forwarding::Link(link) => match tokio::time::timeout(opts.timeout, link.check()).await {
                Ok(c) => c,
                Err(_) => Check::failed("forwarding", "no answer within preflight.timeout"),
            },
            Forwarding::Unavailable(why) => Check::failed("forwarding", format!("forwarding is unavailable: {why}")),
        };
        Some(CheckResult::new("coordinator", check.name.clone(), check))
    };
    let (mut results, coordinator) = tokio::join!(preflight::run(cfg, rt, &opts), coordinator);
    results.extend(coordinator);
    Report { checked_at, duration_s: started.elapsed().as_secs_f64(), results }
}

/// `hecate preflight [--config FILE] [--json]`: every check once; exit 0 when nothing failed,
/// 1 when something did.
pub async fn command(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let cfg = crate::load_config(config)?;
    let rt = Runtime::build_degraded(&cfg);
    if let Some((pid, kind)) = crate::run::run_lock_holder(&cfg.state_dir).filter(|_| run_lock_held(&cfg.state_dir)) {
        eprintln!(
            "note: a {kind} (pid {pid}) is running: what it is changing may fail these checks (the daemon skips \
             its own preflight while a run holds the lock)"
        );
    }
    if !matches!(cfg.role, Role::Forwarder(_)) && cfg.nodes.is_empty() && cfg.cluster.is_none() {
        eprintln!("note: this config lists no nodes and no cluster: there is little to check");
    }
    let report = run_checks(&cfg, &rt, &Forwarding::of(&cfg)).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.render());
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Whether a run (of any process) holds the state dir's run lock now. Takes nothing: a shared
/// lock is tried and let go at once.
pub fn run_lock_held(state_dir: &Path) -> bool {
    let Ok(f) = std::fs::File::open(state_dir.join("run.lock")) else { return false };
    match f.try_lock_shared() {
        Ok(()) => false,
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// The preflight as `hecate status` and `status.json` show it: when it last ran and each check's
/// last known state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreflightStatus {
    /// When the last preflight ran, RFC 3339 (absent until one has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<String>,
    /// How long it took, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// How often it runs (`preflight.interval`), as written in the config.
    pub interval: String,
    /// Checks failing as last seen.
    pub failing: usize,
    /// Every check's last known state, by target then check.
    pub checks: Vec<preflight::CheckState>,
}

impl PreflightStatus {
    /// What the supervisor's tracker holds, or `None` with preflight off.
    pub fn of(cfg: &Config, tracker: &Tracker) -> Option<PreflightStatus> {
        cfg.preflight.enabled.then(|| PreflightStatus {
            checked_at: tracker.last().map(|(at, _)| at.to_string()),
            duration_s: tracker.last().map(|(_, d)| d),
            interval: cfg.preflight.interval.to_string(),
            failing: tracker.failing().count(),
            checks: tracker.states().cloned().collect(),
        })
    }
}

/// The preflight section of `hecate status`, self-contained: a heading line, then each failing
/// check, then a count of the rest (every check with `verbose`).
pub fn render_status(p: &PreflightStatus, verbose: bool) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let Some(at) = &p.checked_at else {
        let _ = writeln!(s, "preflight: not run yet (every {})", p.interval);
        return s;
    };
    let verdict = if p.failing == 0 { "ok".to_string() } else { format!("{} failing", p.failing) };
    let _ = writeln!(s, "preflight: {verdict} (last run {at}, every {})", p.interval);
    let mut quiet = 0;
    for c in &p.checks {
        let show = verbose || c.status == CheckStatus::Failed;
        if !show {
            quiet += 1;
            continue;
        }
        let since = if c.status == CheckStatus::Failed { format!(" (since {})", c.since) } else { String::new() };
        let _ = writeln!(s, "  {:<7} {} {}{since}: {}", c.status.as_str(), c.target, c.check, c.message);
    }
    if quiet > 0 {
        let _ = writeln!(s, "  {quiet} other check(s) ok or not checkable (`hecate preflight` shows them all)");
    }
    s
}

/// Each failing check in a line, for `hecate status`'s health verdict.
pub fn failing_lines(p: &PreflightStatus) -> Vec<String> {
    p.checks
        .iter()
        .filter(|c| c.status == CheckStatus::Failed)
        .map(|c| format!("preflight: {} {} fails", c.target, c.check))
        .collect()
}
