//! The shutdown budget: how long a shutdown of the cluster takes, from the run history.
//!
//! The policy triggers when the runtime left falls below `runtime_safety_factor × budget`, so the
//! budget must not be optimistic: it is the slowest of the last `window` successful shutdowns.
//! With fewer than `min_runs` of them the history says too little and the configured
//! `default_shutdown_budget` is used instead.

use std::fmt;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;

use crate::history::{RunKind, RunOutcome, RunRecord};

/// How the shutdown budget is derived. Every field has a default; unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// The budget used while the run history holds fewer than `min_runs` successful shutdowns, as
    /// a duration with a unit such as `5m` or `300s`. Default 5 minutes.
    pub default_shutdown_budget: HumanDuration,
    /// How many of the most recent successful shutdowns the budget is the maximum of. At least 1.
    /// Default 10.
    pub window: usize,
    /// How many successful shutdowns the history must hold before it replaces
    /// `default_shutdown_budget`. At least 1. Default 3.
    pub min_runs: usize,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { default_shutdown_budget: HumanDuration::from_secs(300), window: 10, min_runs: 3 }
    }
}

impl BudgetConfig {
    /// Every problem with the settings, as lowercase messages naming the field.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.default_shutdown_budget.is_zero() {
            problems.push("default_shutdown_budget must be more than zero".to_string());
        }
        if self.window == 0 {
            problems.push("window must be at least 1".to_string());
        }
        if self.min_runs == 0 {
            problems.push("min_runs must be at least 1".to_string());
        }
        problems
    }
}

/// Where a budget came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BudgetSource {
    /// The maximum of the last `runs` successful shutdowns in the history.
    History {
        /// How many runs the maximum was taken over.
        runs: usize,
    },
    /// `default_shutdown_budget`, because the history holds too few successful shutdowns.
    Default {
        /// Successful shutdowns found.
        successful_runs: usize,
        /// Successful shutdowns needed (`min_runs`).
        needed: usize,
    },
}

/// A shutdown budget and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Seconds a shutdown is expected to take at most.
    pub seconds: f64,
    /// Where the number came from.
    pub source: BudgetSource,
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            BudgetSource::History { runs } => {
                let plural = if *runs == 1 { "" } else { "s" };
                write!(f, "{:.1} s: max of last {runs} successful shutdown{plural} in the run history", self.seconds)
            }
            BudgetSource::Default { successful_runs, needed } => {
                let plural = if *successful_runs == 1 { "" } else { "s" };
                write!(
                    f,
                    "{:.1} s: default_shutdown_budget (only {successful_runs} successful run{plural}, need {needed})",
                    self.seconds
                )
            }
        }
    }
}

/// The budget from the run history: the maximum duration of the last `window` successful shutdowns
/// (ordered by `started_at`; records whose time does not parse keep their place in the file, which
/// is appended to in order), or `default_shutdown_budget` with fewer than `min_runs` of them.
/// Records with a duration that is not a positive finite number are ignored.
pub fn estimate(runs: &[RunRecord], cfg: &BudgetConfig) -> Budget {
    let window = cfg.window.max(1);
    let needed = cfg.min_runs.max(1);
    let mut ok: Vec<(usize, Option<SystemTime>, f64)> = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.kind == RunKind::Shutdown
                && r.outcome == RunOutcome::Success
                && r.duration_s.is_finite()
                && r.duration_s > 0.0
        })
        .map(|(i, r)| (i, r.started_at_time(), r.duration_s))
        .collect();
    if ok.iter().all(|(_, time, _)| time.is_some()) {
        ok.sort_by_key(|(i, time, _)| (*time, *i));
    }
    if ok.len() < needed {
        return Budget {
            seconds: cfg.default_shutdown_budget.as_secs_f64(),
            source: BudgetSource::Default { successful_runs: ok.len(), needed },
        };
    }
    let recent = &ok[ok.len().saturating_sub(window)..];
    let seconds = recent.iter().map(|(_, _, d)| *d).fold(0.0, f64::max);
    Budget { seconds, source: BudgetSource::History { runs: recent.len() } }
}
