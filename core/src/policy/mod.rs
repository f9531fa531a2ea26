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
//! Two estimates are weighed:
//! - the firmware's `battery.runtime`, through a running median over `runtime_median_polls` polls
//!   (spikes and scatter are ignored) with each reading aged by the time since it was taken, so
//!   the median does not lag behind a runtime that counts down;
//! - an own estimate from `battery.charge` ([`ChargeEstimate`]; the model is described in
//!   `policy/battery.rs`). The firmware's runtime is optimistic on aged batteries and under a
//!   voltage-derived knee, ignores Peukert's law, freezes and may be missing; the charge readings
//!   say how fast the battery really drains. The own estimate is a central value and the range the quantised readings
//!   allow (a reading of 10 % in 10 % steps is anything from 10 to 20 %).
//!
//! The firmware's estimate is used while it is within or below that range: readings in coarse
//! steps leave a wide range, and the firmware (in seconds) says where in it the battery is. Above
//! the range the firmware is optimistic: the top of the range is used while the firmware is
//! just above it, moving to the central value as it gets a range's width above it. Without a
//! firmware runtime the own central value is used; without either, the last estimate counted down.
//!
//! Where earlier outages of this UPS were recorded ([`Policy::set_discharge_history`]), the own
//! estimate follows their discharge curve while this outage's pace agrees with it.

mod battery;
mod config;
mod filter;
mod fit;

use std::fmt;

use serde::{Deserialize, Serialize};

use self::battery::BatteryModel;
pub use self::battery::{ChargeEstimate, HistoryUse};
pub use self::config::PolicyConfig;
use self::filter::{LoadFilter, RuntimeFilter};
use crate::discharge::DischargeRecord;
use crate::power::{PowerReading, Sample, StatusFlag};

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
    /// What the own estimate rests on (charge, rate, acceleration, quantisation, Peukert exponent,
    /// steps), when there is one.
    #[serde(default)]
    pub charge_model: Option<ChargeEstimate>,
}

impl Decision {
    /// The decision in one sentence, the state said once: the reason already opens with the
    /// power's state in words ("on battery: ...", "on mains: ...", "no data ...") and, once the
    /// trigger is latched, with "shutdown triggered at ..."; only the poll that triggers, whose
    /// reason does not say so yet, gets it put before.
    pub fn describe(&self) -> String {
        if self.state == PowerState::Triggered && !self.reason.starts_with("shutdown triggered") {
            format!("shutdown triggered: {}", self.reason)
        } else {
            self.reason.clone()
        }
    }
}

/// Load assumed when the UPS never reports `ups.load`: any constant works, since the slope is then
/// simply against time; 100 keeps the units those of a reported load.
const ASSUMED_LOAD_PCT: f64 = 100.0;

/// The shutdown trigger. Pure: feed it polls with [`Policy::observe`].
#[derive(Debug, Clone)]
pub struct Policy {
    cfg: PolicyConfig,
    battery: BatteryModel,
    firmware: RuntimeFilter,
    loads: LoadFilter,
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
    model: Option<ChargeEstimate>,
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
            loads: LoadFilter::new(filter),
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

    /// Uses the discharge curve of this UPS's earlier outages (its records in the
    /// [`DischargeHistory`](crate::discharge::DischargeHistory)) for the own estimate, while the
    /// live readings agree with it: over the last 10 % of charge this outage has fallen through, it
    /// took within ±20 % of the time the curve says. The curve then carries the estimate as far
    /// down as it reaches, scaled by that ratio, and the live fit the rest; the reason says so.
    /// Replaces any curve set before; an empty slice removes it.
    pub fn set_discharge_history(&mut self, records: &[DischargeRecord]) {
        self.battery.set_history(records);
    }

    /// The on-battery stretch that ended last (mains back, or the data lost), once: for the daemon
    /// to [`record`](crate::discharge::DischargeHistory::record) in the discharge history. None
    /// when there is none, or when it says little about the battery's curve (its charge fell by
    /// less than 10 %, or it had a step down).
    pub fn take_discharge(&mut self) -> Option<DischargeRecord> {
        self.battery.take_finished()
    }

    /// The current on-battery stretch so far, for the discharge history before the host powers
    /// off at the end of a shutdown (when it will not end otherwise). None on mains or after a
    /// step down.
    pub fn discharge_so_far(&self) -> Option<DischargeRecord> {
        self.battery.current_record()
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
            charge_model: a.model,
        }
    }

    fn smoothed_load(&mut self, t: f64, reading: &PowerReading) -> f64 {
        let load = reading.load_pct.filter(|l| l.is_finite() && *l > 0.0);
        self.loads.push(t, load).unwrap_or(ASSUMED_LOAD_PCT)
    }

    fn assess_on_battery(&mut self, t: f64, r: &PowerReading, threshold: f64) -> Assessment {
        let load = self.smoothed_load(t, r);
        let charge = valid_charge(r.charge_pct);
        self.mains = Mains::OnBattery;
        self.battery.on_battery(t, charge, load);
        self.firmware.push(t, valid_runtime(r.runtime_s), true);

        let firmware = self.firmware.estimate(t);
        let model = self.battery.estimate(load);
        let own = model.as_ref().map(|m| m.runtime_s);
        let (estimate, context) = self.combine(t, firmware, model.as_ref().map(Own::from), r);
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
            model,
            estimate,
            immediate,
            contradicted_low_battery,
            counting: Counting::Evaluate,
            context,
        }
    }

    fn assess_online(&mut self, t: f64, r: &PowerReading) -> Assessment {
        let load = self.smoothed_load(t, r);
        self.mains = Mains::Online;
        self.battery.close_run();
        self.firmware.push(t, valid_runtime(r.runtime_s), false);
        let firmware = self.firmware.estimate(t);
        let own = valid_charge(r.charge_pct).and_then(|c| self.battery.runtime_from(c, load));
        let (estimate, context) = self.combine(t, firmware, own.map(Own::plain), r);
        let immediate = r
            .status
            .has(&StatusFlag::ForcedShutdown)
            .then(|| (TriggerCause::ForcedShutdown, format!("ups reports forced shutdown (FSD, status {})", r.status)));
        Assessment {
            state: PowerState::Online,
            firmware,
            own,
            model: None,
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
            model: None,
            estimate,
            immediate: None,
            contradicted_low_battery: false,
            counting,
            context,
        }
    }

    /// The firmware's estimate unless it is more than the charge readings allow (then the most
    /// they allow), the own estimate when the firmware reports none, or the countdown when there is
    /// neither; with a description for the reason.
    fn combine(
        &self,
        t: f64,
        firmware: Option<f64>,
        own: Option<Own>,
        r: &PowerReading,
    ) -> (Option<(f64, EstimateSource)>, String) {
        match (firmware, own) {
            (Some(fw), Some(own)) if own.high < fw => (
                Some((own.above(fw), EstimateSource::ChargeSlope)),
                format!("own estimate from charge slope{}; firmware says {fw:.0} s", own.detail),
            ),
            (Some(fw), Some(own)) => (
                Some((fw, EstimateSource::Firmware)),
                format!("firmware; own estimate from charge slope {:.0} s{}", own.central, own.detail),
            ),
            (Some(fw), None) => {
                let why = if valid_charge(r.charge_pct).is_none() {
                    "no battery.charge"
                } else {
                    "charge slope not known yet"
                };
                (Some((fw, EstimateSource::Firmware)), format!("firmware; {why}"))
            }
            (None, Some(own)) => (
                Some((own.central, EstimateSource::ChargeSlope)),
                format!("own estimate from charge slope{}; firmware reports no battery.runtime", own.detail),
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

/// The own estimate as [`Policy::combine`] weighs it: its central value, the range the quantised
/// charge readings allow, and a description.
#[derive(Debug, Clone)]
struct Own {
    central: f64,
    low: f64,
    high: f64,
    detail: String,
}

impl Own {
    /// The estimate when the firmware says `fw`, more than the charge readings allow. A firmware
    /// just above the top of their range vouches for that top (firmware runtimes scatter, and
    /// readings in coarse steps leave a wide range: a 10 % step can be a quarter of the runtime);
    /// one further above it is off and says nothing about where in the range the charge is, so
    /// the estimate moves to the middle of the range as the firmware gets a range's width above it.
    fn above(&self, fw: f64) -> f64 {
        let width = (self.high - self.low).max(1.0);
        let off = ((fw - self.high) / width).clamp(0.0, 1.0);
        self.high - off * (self.high - self.central).max(0.0)
    }
}

impl Own {
    /// An estimate with no range or detail (on mains: the runtime if power failed now).
    fn plain(seconds: f64) -> Self {
        Self { central: seconds, low: seconds, high: seconds, detail: String::new() }
    }
}

impl From<&ChargeEstimate> for Own {
    fn from(e: &ChargeEstimate) -> Self {
        Self {
            central: e.runtime_s,
            low: e.runtime_low_s.min(e.runtime_s),
            high: e.runtime_high_s.max(e.runtime_s),
            detail: format!(" ({})", e.describe()),
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
