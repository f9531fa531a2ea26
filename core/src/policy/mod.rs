//! The shutdown trigger: a pure decision from a stream of UPS polls.
//!
//! [`Policy::observe`] is fed one [`Sample`] per poll with a monotonic time in seconds and the
//! shutdown budget (how long a shutdown of the cluster takes, see [`crate::budget`]). It returns a
//! [`Decision`]. The code does no I/O and never reads a clock, so the daemon, the `simulate`
//! replay ([`crate::trace::replay`]) and the tests all run exactly the same logic.
//!
//! # Rules
//! - `FSD` (forced shutdown) triggers at once; so does `LB` (low battery) while on battery, unless
//!   the runtime estimate says there is time left: some UPSes derive `LB` from a runtime reading
//!   that spikes for a single poll. Such an `LB` counts as a poll below the threshold, so an `LB`
//!   that persists triggers after `debounce_polls` polls while a one-poll `LB` does not.
//! - On battery, the runtime estimate is compared with `runtime_safety_factor × budget`; when it
//!   is below for `debounce_polls` consecutive polls, the shutdown is triggered.
//! - Mains back (`OL`) for `mains_back_polls` consecutive polls before the trigger cancels the
//!   pending count. Once triggered, nothing cancels it: a shutdown runs to its end
//!   ([`Policy::reset`] is for after power has come back post-shutdown).
//! - No data while on battery is *unknown*, never *online*: the last estimate is counted down by
//!   the time elapsed and triggers when it crosses the threshold. No data after the UPS was last
//!   seen online is also counted down (see [`PolicyConfig::blind_countdown_when_online`]).
//!
//! # The estimate
//! The estimate is the more pessimistic of two:
//! - the firmware's `battery.runtime`, through a running median over `runtime_median_polls` polls
//!   (spikes and scatter are ignored) with each reading aged by the time since it was taken, so
//!   the median does not lag behind a runtime that counts down;
//! - an own estimate from the charge slope. The firmware's runtime is optimistic on aged batteries,
//!   freezes and may be missing, but `battery.charge` stays honest. Charge falls in proportion to
//!   the energy drawn, so the slope is fitted against *load × time* (percent of nominal load ×
//!   seconds) rather than time: a load step changes the predicted runtime on the next poll instead
//!   of after the slope has caught up. The fit is a weighted least-squares line per on-battery
//!   stretch with one slope shared by all stretches (a brief return of mains between two stretches,
//!   or a second outage soon after the first, keeps what was learnt about the battery while each
//!   stretch keeps its own offset, since charge readings jump when charging resumes). Old points
//!   are forgotten by the charge consumed since (`slope_memory_pct`), which weights recent data
//!   for whatever the load model misses. The slope is trusted only once the charge has been seen
//!   to fall by `slope_min_drop_pct` percent: readings are whole percents, and a slope from one
//!   step of a staircase is meaningless. Remaining runtime = fitted charge now ÷ (slope × load now).

use std::collections::VecDeque;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::power::{PowerReading, Sample, StatusFlag};

/// How the shutdown trigger decides. Every field has a default; unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Trigger the shutdown when the estimated runtime left falls below this many times the
    /// shutdown budget. The budget is the slowest recent shutdown; the factor covers a shutdown
    /// slower than any before and the error of the runtime estimate. At least 1.0. Default 1.10.
    pub runtime_safety_factor: f64,
    /// Consecutive polls the estimate must stay below the threshold before the shutdown is
    /// triggered, so one bad reading does not shut the cluster down. `LB` and `FSD` are not
    /// debounced. At least 1. Default 3.
    pub debounce_polls: u32,
    /// Consecutive polls with mains back (`OL`) that cancel a pending (not yet triggered) count.
    /// Fewer `OL` polls between on-battery polls (flapping mains) neither cancel nor add to it.
    /// At least 1. Default 3.
    pub mains_back_polls: u32,
    /// Width, in polls, of the running median through which `battery.charge` and `ups.load` are
    /// read. A glitch lasting fewer than half of these polls is ignored; the price is a delay of
    /// half as many polls, which the estimate compensates by projecting the charge along its
    /// slope. An even number acts as the next odd one. At least 1. Default 5.
    pub spike_filter_polls: u32,
    /// Width, in polls, of the running median through which `battery.runtime` is read (each
    /// reading counted down by its age, so the median does not lag). Firmware runtimes scatter by
    /// tens of percent from poll to poll on some UPSes; the median of n readings scatters about
    /// 1.25/√n as much, and 15 brings a ±30 % scatter inside the ±10 % that
    /// `runtime_safety_factor` leaves. The own estimate from the charge slope reacts to a load
    /// step on the next poll, so a slow firmware median costs little. At least 1. Default 15.
    pub runtime_median_polls: u32,
    /// How fast the charge slope forgets old data, in percent of charge consumed since: a point
    /// this many percent ago weighs 1/e of a new one. Longer is steadier (charge is reported in
    /// whole percents), shorter follows a battery whose behaviour changes. Must be positive.
    /// Default 20.
    pub slope_memory_pct: f64,
    /// The own estimate from the charge slope is used only once the charge has been seen to fall by
    /// this many percent while on battery (in this outage or a previous one of this process).
    /// Charge is reported in whole percents, so the first steps say little about the slope.
    /// At least 1. Default 3.
    pub slope_min_drop_pct: f64,
    /// When the UPS was last seen online and then no data arrives, count down from the last
    /// runtime estimate as though an outage had begun when contact was lost, and trigger when that
    /// countdown crosses the threshold. After that long without data a clean shutdown can no longer
    /// be guaranteed if the mains did fail; with `false`, a UPS that goes silent while on mains
    /// never causes a shutdown. Default true.
    pub blind_countdown_when_online: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            runtime_safety_factor: 1.10,
            debounce_polls: 3,
            mains_back_polls: 3,
            spike_filter_polls: 5,
            runtime_median_polls: 15,
            slope_memory_pct: 20.0,
            slope_min_drop_pct: 3.0,
            blind_countdown_when_online: true,
        }
    }
}

impl PolicyConfig {
    /// Every problem with the settings, as lowercase messages naming the field.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.runtime_safety_factor.is_finite() && self.runtime_safety_factor >= 1.0) {
            problems.push(format!(
                "runtime_safety_factor must be a number of at least 1.0, got {}",
                self.runtime_safety_factor
            ));
        }
        if self.debounce_polls == 0 {
            problems.push("debounce_polls must be at least 1".to_string());
        }
        if self.mains_back_polls == 0 {
            problems.push("mains_back_polls must be at least 1".to_string());
        }
        if self.spike_filter_polls == 0 {
            problems.push("spike_filter_polls must be at least 1".to_string());
        }
        if self.runtime_median_polls == 0 {
            problems.push("runtime_median_polls must be at least 1".to_string());
        }
        if !(self.slope_memory_pct.is_finite() && self.slope_memory_pct > 0.0) {
            problems.push(format!("slope_memory_pct must be a positive number, got {}", self.slope_memory_pct));
        }
        if !(self.slope_min_drop_pct.is_finite() && self.slope_min_drop_pct >= 1.0) {
            problems
                .push(format!("slope_min_drop_pct must be a number of at least 1, got {}", self.slope_min_drop_pct));
        }
        problems
    }

    /// The same settings with every out-of-range value replaced by the nearest usable one, so a
    /// [`Policy`] never runs on nonsense even if [`PolicyConfig::validate`] was skipped.
    fn sanitized(&self) -> Self {
        let d = Self::default();
        Self {
            runtime_safety_factor: if self.runtime_safety_factor.is_finite() {
                self.runtime_safety_factor.max(1.0)
            } else {
                d.runtime_safety_factor
            },
            debounce_polls: self.debounce_polls.max(1),
            mains_back_polls: self.mains_back_polls.max(1),
            spike_filter_polls: self.spike_filter_polls.clamp(1, 101),
            runtime_median_polls: self.runtime_median_polls.clamp(1, 301),
            slope_memory_pct: if self.slope_memory_pct.is_finite() && self.slope_memory_pct > 0.0 {
                self.slope_memory_pct
            } else {
                d.slope_memory_pct
            },
            slope_min_drop_pct: if self.slope_min_drop_pct.is_finite() {
                self.slope_min_drop_pct.max(1.0)
            } else {
                d.slope_min_drop_pct
            },
            blind_countdown_when_online: self.blind_countdown_when_online,
        }
    }
}

/// What the policy believes about the power, one poll at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// On mains.
    Online,
    /// On battery.
    OnBattery,
    /// No data this poll (or a status with neither `OL` nor `OB`); never read as online.
    Unknown,
    /// The shutdown has been triggered (latched).
    Triggered,
}

impl fmt::Display for PowerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Online => "online",
            Self::OnBattery => "on battery",
            Self::Unknown => "unknown",
            Self::Triggered => "triggered",
        })
    }
}

/// Why the shutdown was triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerCause {
    /// The UPS reported `FSD`.
    ForcedShutdown,
    /// The UPS reported `LB` while on battery.
    LowBattery,
    /// The runtime estimate stayed below the threshold for `debounce_polls` polls.
    LowRuntime,
    /// No data, and the last estimate counted down crossed the threshold.
    BlindCountdown,
}

impl fmt::Display for TriggerCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ForcedShutdown => "forced shutdown",
            Self::LowBattery => "low battery",
            Self::LowRuntime => "low runtime",
            Self::BlindCountdown => "blind countdown",
        })
    }
}

/// Where the runtime estimate used in a decision came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EstimateSource {
    /// The firmware's `battery.runtime` (median-filtered).
    Firmware,
    /// The own estimate from the charge slope.
    ChargeSlope,
    /// An earlier estimate counted down by the time elapsed since (no usable data now).
    Countdown,
}

impl fmt::Display for EstimateSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Firmware => "firmware",
            Self::ChargeSlope => "own estimate from charge slope",
            Self::Countdown => "countdown",
        })
    }
}

/// The outcome of one poll.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The poll's time, seconds on the caller's monotonic clock.
    pub t: f64,
    /// What the policy believes about the power now.
    pub state: PowerState,
    /// Whether the shutdown is triggered. Latched: once true it stays true until [`Policy::reset`].
    pub triggered: bool,
    /// Why it was triggered, when it is.
    pub cause: Option<TriggerCause>,
    /// When it was triggered (the time of the poll that triggered it).
    pub triggered_at: Option<f64>,
    /// The firmware's runtime, seconds, after the spike filter (none if not reported).
    pub firmware_runtime_s: Option<f64>,
    /// The own runtime estimate from the charge slope, seconds (none until the slope is known).
    pub own_estimate_s: Option<f64>,
    /// The estimate compared with the threshold, seconds.
    pub estimate_s: Option<f64>,
    /// Where [`Decision::estimate_s`] came from.
    pub estimate_source: Option<EstimateSource>,
    /// `runtime_safety_factor × budget`, seconds.
    pub threshold_s: f64,
    /// Consecutive polls with the estimate below the threshold.
    pub streak: u32,
    /// A sentence explaining the decision with its rule and numbers.
    pub reason: String,
}

/// Most on-battery stretches the slope fit remembers; older ones weigh next to nothing anyway.
const MAX_SEGMENTS: usize = 32;
/// The recent slope forgets this many times faster than `slope_memory_pct` says.
const RECENT_MEMORY_DIVISOR: f64 = 4.0;
/// Load assumed when the UPS never reports `ups.load`: any constant works, since the slope is then
/// simply against time; 100 keeps the units those of a reported load.
const ASSUMED_LOAD_PCT: f64 = 100.0;

/// The shutdown trigger. Pure: feed it polls with [`Policy::observe`].
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: PolicyConfig,
    battery: BatteryModel,
    firmware: RuntimeFilter,
    loads: VecDeque<f64>,
    mains: Mains,
    last_t: Option<f64>,
    anchor: Option<Anchor>,
    streak: u32,
    online_streak: u32,
    latch: Option<Latch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mains {
    Unknown,
    Online,
    OnBattery,
}

/// The last estimate made from real data, which a countdown starts from.
#[derive(Debug, Clone, Copy)]
struct Anchor {
    t: f64,
    seconds: f64,
    source: EstimateSource,
}

impl Anchor {
    fn counted_down(&self, t: f64) -> f64 {
        (self.seconds - (t - self.t).max(0.0)).max(0.0)
    }
}

#[derive(Debug, Clone)]
struct Latch {
    t: f64,
    cause: TriggerCause,
    reason: String,
}

/// How a poll moves the debounce count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counting {
    /// Compare the estimate with the threshold.
    Evaluate,
    /// Mains is on: counts towards cancelling.
    Online,
    /// No information either way.
    Hold,
}

struct Assessment {
    state: PowerState,
    firmware: Option<f64>,
    own: Option<f64>,
    estimate: Option<(f64, EstimateSource)>,
    immediate: Option<(TriggerCause, String)>,
    /// `LB` reported while the estimate says there is time: counts as a low poll.
    contradicted_low_battery: bool,
    counting: Counting,
    /// What the estimate is and where it came from, for the reason.
    context: String,
}

impl Policy {
    /// A policy with the given settings (out-of-range values are replaced by the nearest usable
    /// ones; [`PolicyConfig::validate`] reports them).
    pub fn new(cfg: PolicyConfig) -> Self {
        let cfg = cfg.sanitized();
        let filter = cfg.spike_filter_polls as usize;
        Self {
            battery: BatteryModel::new(&cfg),
            firmware: RuntimeFilter::new(cfg.runtime_median_polls as usize),
            loads: VecDeque::with_capacity(filter),
            mains: Mains::Unknown,
            last_t: None,
            anchor: None,
            streak: 0,
            online_streak: 0,
            latch: None,
            cfg,
        }
    }

    /// The settings in use (after sanitizing).
    pub fn config(&self) -> &PolicyConfig {
        &self.cfg
    }

    /// Whether the shutdown has been triggered.
    pub fn is_triggered(&self) -> bool {
        self.latch.is_some()
    }

    /// Clears the trigger and everything about the current outage, for after power has come back
    /// following a shutdown. What was learnt about the battery (its discharge slope) is kept: it is
    /// the same battery, and the knowledge only errs towards an earlier shutdown until relearnt.
    pub fn reset(&mut self) {
        self.battery.close_run();
        self.firmware.clear();
        self.mains = Mains::Unknown;
        self.anchor = None;
        self.streak = 0;
        self.online_streak = 0;
        self.latch = None;
    }

    /// Feeds one poll: `t` in seconds on a monotonic clock (a time going backwards is taken as no
    /// time passing), the poll's sample, and the shutdown budget in seconds. A budget that is not a
    /// finite number is taken as unknown and every on-battery poll counts as low.
    pub fn observe(&mut self, t: f64, sample: &Sample, budget_s: f64) -> Decision {
        let t = match self.last_t {
            Some(prev) if t.is_nan() || t < prev => prev,
            None if !t.is_finite() => 0.0,
            _ => t,
        };
        self.last_t = Some(t);
        let threshold =
            if budget_s.is_finite() { self.cfg.runtime_safety_factor * budget_s.max(0.0) } else { f64::INFINITY };

        let a = match sample {
            Sample::Reading(r) if r.status.on_battery() => self.assess_on_battery(t, r, threshold),
            Sample::Reading(r) if r.status.online() => self.assess_online(t, r),
            Sample::Reading(r) => {
                let why = if r.status.is_empty() {
                    "empty ups.status".to_string()
                } else {
                    format!("ups.status {:?} has neither OL nor OB", r.status.to_string())
                };
                let mut a = self.assess_blind(t, &why);
                if r.status.has(&StatusFlag::ForcedShutdown) {
                    a.immediate =
                        Some((TriggerCause::ForcedShutdown, format!("ups reports forced shutdown (FSD, {why})")));
                }
                a
            }
            Sample::NoData { reason } => self.assess_blind(t, &format!("no data ({reason})")),
        };
        self.decide(t, threshold, a)
    }

    fn decide(&mut self, t: f64, threshold: f64, a: Assessment) -> Decision {
        if let Some((seconds, source)) = a.estimate
            && source != EstimateSource::Countdown
        {
            self.anchor = Some(Anchor { t, seconds, source });
        }

        let reason;
        if let Some(latch) = &self.latch {
            reason = format!("shutdown triggered at t={:.0} s ({}): {}", latch.t, latch.cause, latch.reason);
        } else if let Some((cause, why)) = a.immediate {
            self.latch = Some(Latch { t, cause, reason: why.clone() });
            reason = why;
        } else {
            let db = self.cfg.debounce_polls;
            let threshold_text = format!(
                "{:.2} × budget {:.0} s = {:.0} s",
                self.cfg.runtime_safety_factor,
                threshold / self.cfg.runtime_safety_factor,
                threshold
            );
            match a.counting {
                Counting::Evaluate => {
                    self.online_streak = 0;
                    match a.estimate {
                        Some((est, _)) if est < threshold || a.contradicted_low_battery => {
                            self.streak = self.streak.saturating_add(1);
                        }
                        Some(_) => self.streak = 0,
                        None => {}
                    }
                }
                Counting::Online => {
                    self.online_streak = self.online_streak.saturating_add(1);
                    if self.online_streak >= self.cfg.mains_back_polls {
                        self.streak = 0;
                    }
                }
                Counting::Hold => {}
            }
            let low = matches!(a.estimate, Some((est, _)) if est < threshold);
            let est_text = match a.estimate {
                Some((est, _)) => format!("estimated runtime {est:.0} s ({})", a.context),
                None => format!("no runtime estimate ({})", a.context),
            };
            if a.counting == Counting::Evaluate && self.streak >= db {
                let cause = if a.contradicted_low_battery {
                    TriggerCause::LowBattery
                } else if a.state == PowerState::OnBattery {
                    TriggerCause::LowRuntime
                } else {
                    TriggerCause::BlindCountdown
                };
                let why = if a.contradicted_low_battery {
                    format!(
                        "on battery: ups reports low battery (LB) for {}/{db} polls although {est_text} ≥ {threshold_text}",
                        self.streak.min(db)
                    )
                } else {
                    format!(
                        "{}: {est_text} < {threshold_text} for {}/{db} polls",
                        state_prefix(a.state, self.mains),
                        self.streak.min(db)
                    )
                };
                self.latch = Some(Latch { t, cause, reason: why.clone() });
                reason = why;
            } else {
                let cmp = if low { "<" } else { "≥" };
                let mut text = match (a.counting, a.estimate) {
                    (Counting::Online, Some((est, _))) => {
                        format!("on mains: runtime if power failed now {est:.0} s ({})", a.context)
                    }
                    (Counting::Online, None) => {
                        format!("on mains: runtime unknown ({})", a.context)
                    }
                    (_, Some(_)) if a.contradicted_low_battery => format!(
                        "on battery: ups reports low battery (LB) but {est_text} {cmp} {threshold_text}; counted as a low poll"
                    ),
                    (_, Some(_)) => format!("{}: {est_text} {cmp} {threshold_text}", state_prefix(a.state, self.mains)),
                    (_, None) => format!("{}: {est_text}", state_prefix(a.state, self.mains)),
                };
                if a.counting == Counting::Hold && a.state == PowerState::Unknown {
                    text.push_str("; not counted down");
                }
                if self.streak > 0 {
                    text.push_str(&format!("; {}/{db} polls below the threshold", self.streak));
                    if a.counting == Counting::Online {
                        text.push_str(&format!(
                            ", cancelled after mains is back for {} polls ({}/{})",
                            self.cfg.mains_back_polls, self.online_streak, self.cfg.mains_back_polls
                        ));
                    }
                }
                reason = text;
            }
        }

        let (state, cause, triggered_at) = match &self.latch {
            Some(l) => (PowerState::Triggered, Some(l.cause), Some(l.t)),
            None => (a.state, None, None),
        };
        Decision {
            t,
            state,
            triggered: self.latch.is_some(),
            cause,
            triggered_at,
            firmware_runtime_s: a.firmware,
            own_estimate_s: a.own,
            estimate_s: a.estimate.map(|e| e.0),
            estimate_source: a.estimate.map(|e| e.1),
            threshold_s: threshold,
            streak: self.streak,
            reason,
        }
    }

    fn smoothed_load(&mut self, reading: &PowerReading) -> f64 {
        if let Some(load) = reading.load_pct.filter(|l| l.is_finite() && *l > 0.0) {
            push_bounded(&mut self.loads, load, self.cfg.spike_filter_polls as usize);
        }
        median(self.loads.iter().copied()).unwrap_or(ASSUMED_LOAD_PCT)
    }

    fn assess_on_battery(&mut self, t: f64, r: &PowerReading, threshold: f64) -> Assessment {
        let load = self.smoothed_load(r);
        let charge = valid_charge(r.charge_pct);
        self.mains = Mains::OnBattery;
        self.battery.on_battery(t, charge, load);
        self.firmware.push(t, valid_runtime(r.runtime_s), true);

        let firmware = self.firmware.estimate(t);
        let own = self.battery.runtime_now(load);
        let (estimate, context) = self.combine(t, firmware, own, r);
        let low_battery = r.status.has(&StatusFlag::LowBattery);
        // only live data can contradict the UPS, not an old estimate counted down
        let contradicted_low_battery = low_battery
            && matches!(estimate, Some((est, source)) if est >= threshold && source != EstimateSource::Countdown);
        let immediate = if r.status.has(&StatusFlag::ForcedShutdown) {
            Some((TriggerCause::ForcedShutdown, format!("ups reports forced shutdown (FSD, status {})", r.status)))
        } else if low_battery && !contradicted_low_battery {
            let mut why = format!("ups reports low battery while on battery (status {})", r.status);
            if let Some(c) = charge {
                why.push_str(&format!(", charge {c:.0} %"));
            }
            if let Some(rt) = valid_runtime(r.runtime_s) {
                why.push_str(&format!(", firmware runtime {rt:.0} s"));
            }
            Some((TriggerCause::LowBattery, why))
        } else {
            None
        };
        Assessment {
            state: PowerState::OnBattery,
            firmware,
            own,
            estimate,
            immediate,
            contradicted_low_battery,
            counting: Counting::Evaluate,
            context,
        }
    }

    fn assess_online(&mut self, t: f64, r: &PowerReading) -> Assessment {
        let load = self.smoothed_load(r);
        self.mains = Mains::Online;
        self.battery.close_run();
        self.firmware.push(t, valid_runtime(r.runtime_s), false);
        let firmware = self.firmware.estimate(t);
        let own = valid_charge(r.charge_pct).and_then(|c| self.battery.runtime_from(c, load));
        let (estimate, context) = self.combine(t, firmware, own, r);
        let immediate = r
            .status
            .has(&StatusFlag::ForcedShutdown)
            .then(|| (TriggerCause::ForcedShutdown, format!("ups reports forced shutdown (FSD, status {})", r.status)));
        Assessment {
            state: PowerState::Online,
            firmware,
            own,
            estimate,
            immediate,
            contradicted_low_battery: false,
            counting: Counting::Online,
            context,
        }
    }

    /// No usable data this poll: count down from the last estimate.
    fn assess_blind(&mut self, t: f64, why: &str) -> Assessment {
        self.battery.close_run();
        let counting = match self.mains {
            Mains::OnBattery => Counting::Evaluate,
            Mains::Online if self.cfg.blind_countdown_when_online => Counting::Evaluate,
            Mains::Online | Mains::Unknown => Counting::Hold,
        };
        let last_seen = match self.mains {
            Mains::OnBattery => "last seen on battery",
            Mains::Online => "last seen online",
            Mains::Unknown => "never seen",
        };
        let (estimate, context) = match (self.anchor, counting) {
            (Some(anchor), Counting::Evaluate) => (
                Some((anchor.counted_down(t), EstimateSource::Countdown)),
                format!(
                    "{why}, {last_seen}: {:.0} s ({}) at t={:.0} s counted down by {:.0} s",
                    anchor.seconds,
                    anchor.source,
                    anchor.t,
                    t - anchor.t
                ),
            ),
            // on battery with no estimate ever made: nothing says there is any time left
            (None, Counting::Evaluate) if self.mains == Mains::OnBattery => {
                (Some((0.0, EstimateSource::Countdown)), format!("{why}, {last_seen} and no runtime was ever known"))
            }
            _ => (None, format!("{why}, {last_seen}")),
        };
        Assessment {
            state: PowerState::Unknown,
            firmware: None,
            own: None,
            estimate,
            immediate: None,
            contradicted_low_battery: false,
            counting,
            context,
        }
    }

    /// The more pessimistic of the firmware's and the own estimate, or the countdown when there is
    /// neither; with a description for the reason.
    fn combine(
        &self,
        t: f64,
        firmware: Option<f64>,
        own: Option<f64>,
        r: &PowerReading,
    ) -> (Option<(f64, EstimateSource)>, String) {
        match (firmware, own) {
            (Some(fw), Some(own)) if own < fw => (
                Some((own, EstimateSource::ChargeSlope)),
                format!("own estimate from charge slope; firmware says {fw:.0} s"),
            ),
            (Some(fw), Some(own)) => {
                (Some((fw, EstimateSource::Firmware)), format!("firmware; own estimate from charge slope {own:.0} s"))
            }
            (Some(fw), None) => {
                let why = if valid_charge(r.charge_pct).is_none() {
                    "no battery.charge"
                } else {
                    "charge slope not known yet"
                };
                (Some((fw, EstimateSource::Firmware)), format!("firmware; {why}"))
            }
            (None, Some(own)) => (
                Some((own, EstimateSource::ChargeSlope)),
                "own estimate from charge slope; firmware reports no battery.runtime".to_string(),
            ),
            (None, None) => match self.anchor {
                Some(anchor) => (
                    Some((anchor.counted_down(t), EstimateSource::Countdown)),
                    format!(
                        "no battery.runtime and no charge slope: {:.0} s ({}) at t={:.0} s counted down by {:.0} s",
                        anchor.seconds,
                        anchor.source,
                        anchor.t,
                        t - anchor.t
                    ),
                ),
                None => (None, "no battery.runtime and no charge slope yet".to_string()),
            },
        }
    }
}

fn state_prefix(state: PowerState, mains: Mains) -> &'static str {
    match (state, mains) {
        (PowerState::OnBattery, _) => "on battery",
        (PowerState::Online, _) => "on mains",
        (_, Mains::OnBattery) => "no data while on battery",
        (_, Mains::Online) => "no data since last seen online",
        _ => "no data",
    }
}

fn valid_charge(v: Option<f64>) -> Option<f64> {
    v.filter(|c| c.is_finite() && *c >= 0.0).map(|c| c.min(100.0))
}

fn valid_runtime(v: Option<f64>) -> Option<f64> {
    v.filter(|r| r.is_finite() && *r >= 0.0)
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    q.push_back(v);
    while q.len() > cap.max(1) {
        q.pop_front();
    }
}

/// The median of the values (the mean of the middle two for an even count).
fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

/// The firmware's runtime through a running median, each reading aged by the time since it was
/// taken while on battery (a runtime counts down; on mains it does not).
#[derive(Debug, Clone)]
struct RuntimeFilter {
    cap: usize,
    on_battery: bool,
    readings: VecDeque<(f64, f64)>,
}

impl RuntimeFilter {
    fn new(cap: usize) -> Self {
        Self { cap, on_battery: false, readings: VecDeque::with_capacity(cap) }
    }

    fn clear(&mut self) {
        self.readings.clear();
    }

    fn push(&mut self, t: f64, runtime: Option<f64>, on_battery: bool) {
        if on_battery != self.on_battery {
            // readings from before the mains changed describe another situation
            self.readings.clear();
            self.on_battery = on_battery;
        }
        if let Some(rt) = runtime {
            push_bounded(&mut self.readings, (t, rt), self.cap);
        }
    }

    fn estimate(&self, t: f64) -> Option<f64> {
        let aged = self.readings.iter().map(|&(ti, rt)| if self.on_battery { rt - (t - ti).max(0.0) } else { rt });
        median(aged).map(|v| v.max(0.0))
    }
}

/// Weighted sums for a least-squares line of charge `c` against load × time `x`.
#[derive(Debug, Clone, Copy, Default)]
struct Sums {
    w: f64,
    x: f64,
    c: f64,
    xx: f64,
    xc: f64,
}

impl Sums {
    fn add(&mut self, x: f64, c: f64) {
        self.w += 1.0;
        self.x += x;
        self.c += c;
        self.xx += x * x;
        self.xc += x * c;
    }

    fn scale(&mut self, f: f64) {
        self.w *= f;
        self.x *= f;
        self.c *= f;
        self.xx *= f;
        self.xc *= f;
    }

    /// Σw(x−x̄)² and Σw(x−x̄)(c−c̄).
    fn centered(&self) -> Option<(f64, f64)> {
        if self.w <= 0.0 {
            return None;
        }
        let sxx = self.xx - self.x * self.x / self.w;
        let sxc = self.xc - self.x * self.c / self.w;
        (sxx > 0.0 && sxx.is_finite() && sxc.is_finite()).then_some((sxx, sxc))
    }
}

/// One on-battery stretch of the fit: its own offset, the shared slope.
#[derive(Debug, Clone, Default)]
struct Segment {
    /// The fit with `slope_memory_pct` memory.
    sums: Sums,
    /// The same points with a quarter of that memory: the recent slope.
    recent: Sums,
    points: usize,
    first_c: Option<f64>,
    min_c: f64,
}

impl Segment {
    fn drop_pct(&self) -> f64 {
        self.first_c.map_or(0.0, |first| (first - self.min_c).max(0.0))
    }
}

/// The current on-battery stretch: the load × time coordinate and the raw charge readings
/// waiting for the median filter.
#[derive(Debug, Clone)]
struct Run {
    x: f64,
    last_t: f64,
    seen: usize,
    raw: VecDeque<(f64, f64)>,
}

/// The battery as seen through its charge readings: a line of charge against load × time.
#[derive(Debug, Clone)]
struct BatteryModel {
    memory_pct: f64,
    min_drop_pct: f64,
    half_window: usize,
    segments: VecDeque<Segment>,
    run: Option<Run>,
}

impl BatteryModel {
    fn new(cfg: &PolicyConfig) -> Self {
        Self {
            memory_pct: cfg.slope_memory_pct,
            min_drop_pct: cfg.slope_min_drop_pct,
            half_window: (cfg.spike_filter_polls as usize) / 2,
            segments: VecDeque::new(),
            run: None,
        }
    }

    fn close_run(&mut self) {
        self.run = None;
    }

    /// Feeds an on-battery poll.
    fn on_battery(&mut self, t: f64, charge: Option<f64>, load: f64) {
        let slope = self.slope();
        if self.run.is_none() {
            self.segments.push_back(Segment::default());
            while self.segments.len() > MAX_SEGMENTS {
                self.segments.pop_front();
            }
        }
        let run = self.run.get_or_insert(Run { x: 0.0, last_t: t, seen: 0, raw: VecDeque::new() });
        let dt = (t - run.last_t).max(0.0);
        run.last_t = t;
        run.x += load * dt;

        // forget by the charge consumed since, so the fit follows the battery as it is now
        if let Some((k, _)) = slope {
            let consumed = k.abs() * load * dt;
            let f = (-consumed / self.memory_pct).exp();
            let f_recent = (-consumed / (self.memory_pct / RECENT_MEMORY_DIVISOR)).exp();
            let (mut max_w, mut max_recent): (f64, f64) = (0.0, 0.0);
            for s in &mut self.segments {
                s.sums.scale(f);
                s.recent.scale(f_recent);
                max_w = max_w.max(s.sums.w);
                max_recent = max_recent.max(s.recent.w);
            }
            // only the ratios matter: keep the numbers representable
            if max_w > 0.0 && max_w < 1e-150 {
                self.segments.iter_mut().for_each(|s| s.sums.scale(1e150));
            }
            if max_recent > 0.0 && max_recent < 1e-150 {
                self.segments.iter_mut().for_each(|s| s.recent.scale(1e150));
            }
        }

        let Some(c) = charge else { return };
        let h = self.half_window;
        let x = run.x;
        run.raw.push_back((x, c));
        run.seen += 1;
        while run.raw.len() > 2 * h + 1 {
            run.raw.pop_front();
        }
        // emit the point whose centred window has just become complete, with the window's median;
        // the first points of a stretch get narrower windows, never lopsided ones (a lopsided
        // median of a falling charge would bias the slope)
        let newest = run.seen - 1; // index in the run of the newest reading
        let centre = if newest >= 2 * h { Some(newest - h) } else { newest.is_multiple_of(2).then_some(newest / 2) };
        let Some(i) = centre else { return };
        let half = newest - i;
        let first = run.seen - run.raw.len(); // index in the run of raw[0]
        let Some(lo) = (i - half).checked_sub(first) else {
            return;
        };
        let window = run.raw.iter().skip(lo).map(|p| p.1);
        let (Some(cm), Some(&(xi, _))) = (median(window), run.raw.get(i - first)) else {
            return;
        };
        if let Some(seg) = self.segments.back_mut() {
            seg.sums.add(xi, cm);
            seg.recent.add(xi, cm);
            seg.points += 1;
            if seg.first_c.is_none() {
                seg.first_c = Some(cm);
                seg.min_c = cm;
            }
            seg.min_c = seg.min_c.min(cm);
        }
    }

    /// Charge per unit of load × time (negative while discharging), once trusted, and whether it
    /// is the recent slope.
    ///
    /// The fit with the full memory is steady but slow to follow a change the load does not
    /// explain (a load step when `ups.load` is not reported, a battery that fades). The fit with a
    /// quarter of the memory follows within a few percent of charge but, spanning few whole-percent
    /// steps, is off by up to about one step over its span (1 / memory in relative terms). Its
    /// slope, reduced by that error, is a lower bound of how fast the battery drains now: when
    /// even that bound is steeper than the steady slope, the steady slope is out of date and the
    /// recent one is used.
    fn slope(&self) -> Option<(f64, bool)> {
        let drop: f64 = self.segments.iter().map(Segment::drop_pct).sum();
        if drop < self.min_drop_pct {
            return None;
        }
        let pooled = |sums: fn(&Segment) -> &Sums| {
            let (mut sxx, mut sxc) = (0.0, 0.0);
            for s in self.segments.iter().filter(|s| s.points >= 2) {
                if let Some((xx, xc)) = sums(s).centered() {
                    sxx += xx;
                    sxc += xc;
                }
            }
            let k = sxc / sxx;
            (sxx > 0.0 && k.is_finite() && k < 0.0).then_some(k)
        };
        let steady = pooled(|s| &s.sums)?;
        let recent_memory = self.memory_pct / RECENT_MEMORY_DIVISOR;
        match pooled(|s| &s.recent) {
            Some(recent) if recent / (1.0 + 1.0 / recent_memory) < steady => Some((recent, true)),
            _ => Some((steady, false)),
        }
    }

    /// Runtime left at this load from the given charge.
    fn runtime_from(&self, charge: f64, load: f64) -> Option<f64> {
        let (k, _) = self.slope()?;
        let rate = k.abs() * load;
        (rate > 0.0).then(|| (charge / rate).max(0.0))
    }

    /// Runtime left now in the current on-battery stretch.
    fn runtime_now(&self, load: f64) -> Option<f64> {
        let (k, recent) = self.slope()?;
        let run = self.run.as_ref()?;
        // the newest readings through the median filter, centred on the middle one
        let m = run.raw.len().min(2 * self.half_window + 1);
        let tail: Vec<(f64, f64)> = run.raw.iter().skip(run.raw.len() - m).copied().collect();
        let reading = median(tail.iter().map(|p| p.1))?;
        let x_center = tail.get(m / 2).map_or(run.x, |p| p.0);
        let consumed_since = k.abs() * (run.x - x_center).max(0.0);
        // readings are whole percents: the true charge is within half a percent of the reading
        let upper = reading + 0.5;
        let lower = (reading - 0.5 - consumed_since).max(0.0);
        let fitted = self
            .segments
            .back()
            .map(|s| if recent { s.recent } else { s.sums })
            .filter(|sums| sums.w > 0.0)
            .map(|sums| sums.c / sums.w + k * (run.x - sums.x / sums.w));
        let charge = match fitted {
            Some(f) if f.is_finite() => f.clamp(lower, upper.max(lower)),
            _ => (reading - consumed_since).max(0.0),
        };
        self.runtime_from(charge, load)
    }
}
