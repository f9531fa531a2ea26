//! The shutdown budget: how long a shutdown of the cluster takes, from the run history.
//!
//! The policy triggers when the runtime left falls below `runtime_safety_factor × budget`, so the
//! budget must not be optimistic: it is the slowest of the last `window` successful shutdowns.
//! With fewer than `min_runs` of them the history says too little and the configured
//! `default_shutdown_budget` is used instead.
//!
//! Only runs that say something about the shutdown to come count (a shutdown, or a drill's
//! shutdown half, which runs the same plan):
//! - a record whose duration is not a possible one (not a number, negative, zero, longer than
//!   [`MAX_RUN_SECS`]) is ignored with a warning: a damaged record must not make the budget
//!   zero or a billion years;
//! - a run recorded with a [`PlanFingerprint`] counts only when it is the current plan's, and a
//!   run whose plan had no node steps never counts: a shutdown of a config without nodes takes
//!   no time and would teach a budget of 0 s, after which only `LB` or `FSD` could trigger;
//! - a record written before fingerprints were recorded cannot show which nodes it covered. It
//!   counts unless its stages show that it stopped no node (a plan with nodes has a
//!   `stop-agents`, `stop-servers`, `stop-init-server` or `power-off` stage), so that an upgrade
//!   keeps the budget learned so far; as runs of the current plan are recorded they push it out
//!   of the `window`. A record with no stages at all (written by hand) counts too.
//!
//! Without a current plan to compare with (`hecate simulate --runs`), every physical successful
//! shutdown counts except those known to have stopped no node.

use std::fmt;
use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::limits::{MAX_COUNT, ONE_DAY};
use crate::duration::{HumanDuration, MAX_RUN_SECS, count_out_of_range};
use crate::history::{RunOutcome, RunRecord};
use crate::plan::{PlanFingerprint, PlanKind};

/// How the shutdown budget is derived. Every field has a default; unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BudgetConfig {
    /// The budget used while the run history holds fewer than `min_runs` successful shutdowns, as
    /// a duration with a unit such as `5m` or `300s`. 1s to 1 day; default 5 minutes.
    pub default_shutdown_budget: HumanDuration,
    /// How many of the most recent successful shutdowns the budget is the maximum of. 1 to 1000;
    /// default 10.
    #[schemars(range(min = MIN_RUNS, max = MAX_COUNT))]
    pub window: usize,
    /// How many successful shutdowns the history must hold before it replaces
    /// `default_shutdown_budget`. 1 to 1000; default 3.
    #[schemars(range(min = MIN_RUNS, max = MAX_COUNT))]
    pub min_runs: usize,
}

/// The fewest runs `window` and `min_runs` may be (the schema and `validate` read it).
pub const MIN_RUNS: u64 = 1;

impl Default for BudgetConfig {
    fn default() -> Self {
        Self { default_shutdown_budget: HumanDuration::from_secs(300), window: 10, min_runs: 3 }
    }
}

impl BudgetConfig {
    /// Every problem with the settings, as lowercase messages naming the field.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(m) = self.default_shutdown_budget.out_of_range(HumanDuration::from_secs(1), ONE_DAY) {
            problems.push(format!("`default_shutdown_budget` {m}"));
        }
        for (field, n) in [("window", self.window), ("min_runs", self.min_runs)] {
            if let Some(m) = count_out_of_range(u64::try_from(n).unwrap_or(u64::MAX), MIN_RUNS, MAX_COUNT) {
                problems.push(format!("`{field}` {m}"));
            }
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
    /// Successful shutdowns in the history that were left out because their plan was not the
    /// current one (other nodes, or none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub not_comparable: usize,
    /// Records left out because their duration is impossible, each with why (also logged).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            BudgetSource::History { runs } => {
                let plural = if *runs == 1 { "" } else { "s" };
                write!(f, "{:.1} s: max of last {runs} successful shutdown{plural} in the run history", self.seconds)?;
            }
            BudgetSource::Default { successful_runs, needed } => {
                let plural = if *successful_runs == 1 { "" } else { "s" };
                write!(
                    f,
                    "{:.1} s: default_shutdown_budget (only {successful_runs} successful run{plural}, need {needed})",
                    self.seconds
                )?;
            }
        }
        if self.not_comparable > 0 {
            let n = self.not_comparable;
            write!(f, "; {n} successful shutdown{} of another plan not counted", if n == 1 { "" } else { "s" })?;
        }
        if !self.ignored.is_empty() {
            let n = self.ignored.len();
            write!(f, "; {n} record{} with an impossible duration ignored", if n == 1 { "" } else { "s" })?;
        }
        Ok(())
    }
}

/// The budget from the run history: the maximum duration of the last `window` successful shutdowns
/// that count (see the module docs; `plan` is the current plan's fingerprint, `None` when there
/// is no plan to compare with), ordered by `started_at` (records whose time does not parse keep
/// their place in the file, which is appended to in order), or `default_shutdown_budget` with
/// fewer than `min_runs` of them. Records with an impossible duration are logged and listed in
/// [`Budget::ignored`].
pub fn estimate(runs: &[RunRecord], cfg: &BudgetConfig, plan: Option<&PlanFingerprint>) -> Budget {
    let window = cfg.window.max(1);
    let needed = cfg.min_runs.max(1);
    let mut ok: Vec<(usize, Option<SystemTime>, f64)> = Vec::new();
    let mut not_comparable = 0;
    let mut ignored = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        // A drill's shutdown half is the real shutdown plan: it counts like any shutdown.
        if r.plan_kind() != Some(PlanKind::Shutdown) || r.outcome != RunOutcome::Success {
            continue;
        }
        if !(r.duration_s.is_finite() && r.duration_s > 0.0 && r.duration_s <= MAX_RUN_SECS) {
            let why = format!(
                "run history: the successful shutdown started at {} took {} s, which is not possible \
                 (more than 0 and at most {MAX_RUN_SECS} s); it does not count towards the budget",
                r.started_at,
                shown(r.duration_s)
            );
            tracing::warn!("{why}");
            ignored.push(why);
            continue;
        }
        if !comparable(r, plan) {
            not_comparable += 1;
            continue;
        }
        ok.push((i, r.started_at_time(), r.duration_s));
    }
    if ok.iter().all(|(_, time, _)| time.is_some()) {
        ok.sort_by_key(|(i, time, _)| (*time, *i));
    }
    if ok.len() < needed {
        return Budget {
            seconds: cfg.default_shutdown_budget.as_secs_f64(),
            source: BudgetSource::Default { successful_runs: ok.len(), needed },
            not_comparable,
            ignored,
        };
    }
    let recent = &ok[ok.len().saturating_sub(window)..];
    let seconds = recent.iter().map(|(_, _, d)| *d).fold(0.0, f64::max);
    Budget { seconds, source: BudgetSource::History { runs: recent.len() }, not_comparable, ignored }
}

/// A number of seconds as a person reads it: 1e300 rather than its 301 digits.
fn shown(secs: f64) -> String {
    if secs.is_finite() && secs.abs() >= 1e6 { format!("{secs:e}") } else { secs.to_string() }
}

/// The stages of a shutdown plan that act on nodes, as every version so far has named them.
const NODE_STAGES: [&str; 4] = ["stop-agents", "stop-servers", "stop-init-server", "power-off"];

/// Whether a successful shutdown says something about the current plan's (module docs).
fn comparable(run: &RunRecord, current: Option<&PlanFingerprint>) -> bool {
    if current.is_some_and(|c| c.node_steps == 0) {
        return false;
    }
    match (&run.plan, current) {
        (Some(recorded), _) if recorded.node_steps == 0 => false,
        (Some(recorded), Some(current)) => recorded == current,
        (Some(_), None) => true,
        (None, _) => run.stages.is_empty() || run.stages.iter().any(|s| NODE_STAGES.contains(&s.name.as_str())),
    }
}
