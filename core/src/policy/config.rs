//! The policy's settings: the `policy:` section of the config.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::limits::MAX_COUNT;

// The ranges `validate` checks, which the JSON Schema (`hecate config schema`) carries too: one
// constant for both.
/// `runtime_safety_factor`: from, to.
pub const SAFETY_FACTOR_RANGE: (f64, f64) = (1.0, 10.0);
/// `slope_memory_pct`: more than 0, at most this.
pub const SLOPE_MEMORY_MAX: f64 = 100.0;
/// `slope_min_drop_pct`: from, to.
pub const SLOPE_MIN_DROP_RANGE: (f64, f64) = (1.0, 100.0);
/// `peukert_exponent`: from, to.
pub const PEUKERT_RANGE: (f64, f64) = (1.0, 2.0);
/// Every count of polls: from 1 to [`MAX_COUNT`].
pub const MIN_POLLS: u64 = 1;

/// How the shutdown trigger decides. Every field has a default; unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Trigger the shutdown when the estimated runtime left falls below this many times the
    /// shutdown budget. The budget is the slowest recent shutdown; the factor covers a shutdown
    /// slower than any before and the error of the runtime estimate. 1.0 to 10.0; default 1.10.
    #[schemars(range(min = SAFETY_FACTOR_RANGE.0, max = SAFETY_FACTOR_RANGE.1))]
    pub runtime_safety_factor: f64,
    /// Consecutive polls the estimate must stay below the threshold before the shutdown is
    /// triggered, so one bad reading does not shut the cluster down. `LB` and `FSD` are not
    /// debounced. 1 to 1000; default 3.
    #[schemars(range(min = MIN_POLLS, max = MAX_COUNT))]
    pub debounce_polls: u32,
    /// Consecutive polls with mains back (`OL`) that cancel a pending (not yet triggered) count.
    /// Fewer `OL` polls between on-battery polls (flapping mains) neither cancel nor add to it.
    /// 1 to 1000; default 3.
    #[schemars(range(min = MIN_POLLS, max = MAX_COUNT))]
    pub mains_back_polls: u32,
    /// Width, in polls, of the running median through which `battery.charge` and `ups.load` are
    /// read. A glitch lasting fewer than half of these polls is ignored; the price is a delay of
    /// half as many polls, which the estimate compensates by projecting the charge along its
    /// slope. An even number acts as the next odd one. 1 to 1000; default 5.
    #[schemars(range(min = MIN_POLLS, max = MAX_COUNT))]
    pub spike_filter_polls: u32,
    /// Width, in polls, of the running median through which `battery.runtime` is read (each
    /// reading counted down by its age, so the median does not lag). Firmware runtimes scatter by
    /// tens of percent from poll to poll on some UPSes; the median of n readings scatters about
    /// 1.25/√n as much, and 15 brings a ±30 % scatter inside the ±10 % that
    /// `runtime_safety_factor` leaves. The own estimate from the charge slope reacts to a load
    /// step on the next poll, so a slow firmware median costs little. 1 to 1000; default 15.
    #[schemars(range(min = MIN_POLLS, max = MAX_COUNT))]
    pub runtime_median_polls: u32,
    /// How fast the charge slope forgets old data, in percent of charge consumed since: a point
    /// this many percent ago weighs 1/e of a new one. Longer is steadier (charge is reported in
    /// whole percents), shorter follows a battery whose behaviour changes. More than 0, at most
    /// 100; default 20.
    #[schemars(range(max = SLOPE_MEMORY_MAX), extend("exclusiveMinimum" = 0))]
    pub slope_memory_pct: f64,
    /// The own estimate from the charge slope is used only once the charge has been seen to fall by
    /// this many percent while on battery (in this outage or a previous one of this process).
    /// Charge is reported in whole percents, so the first steps say little about the slope.
    /// 1 to 100; default 3.
    #[schemars(range(min = SLOPE_MIN_DROP_RANGE.0, max = SLOPE_MIN_DROP_RANGE.1))]
    pub slope_min_drop_pct: f64,
    /// Peukert's exponent: a battery drains faster than in proportion to its load, as
    /// load^exponent (1.0: in proportion). Used to predict the drain after a load change until
    /// the readings across such a change show that another exponent between 1.0 and 1.5 fits
    /// clearly better (that one is then used, and the reason says so). Between 1.0 and 2.0.
    /// Default 1.0.
    #[schemars(range(min = PEUKERT_RANGE.0, max = PEUKERT_RANGE.1))]
    pub peukert_exponent: f64,
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
            peukert_exponent: 1.0,
            blind_countdown_when_online: true,
        }
    }
}

impl PolicyConfig {
    /// Every problem with the settings, as lowercase messages naming the field.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let (lo, hi) = SAFETY_FACTOR_RANGE;
        if !(lo..=hi).contains(&self.runtime_safety_factor) {
            problems.push(format!(
                "runtime_safety_factor must be a number from {lo:.1} to {hi:.1}, got {}",
                self.runtime_safety_factor
            ));
        }
        for (field, n) in [
            ("debounce_polls", self.debounce_polls),
            ("mains_back_polls", self.mains_back_polls),
            ("spike_filter_polls", self.spike_filter_polls),
            ("runtime_median_polls", self.runtime_median_polls),
        ] {
            if let Some(m) = crate::duration::count_out_of_range(u64::from(n), MIN_POLLS, MAX_COUNT) {
                problems.push(format!("{field} {m}"));
            }
        }
        if !(self.slope_memory_pct > 0.0 && self.slope_memory_pct <= SLOPE_MEMORY_MAX) {
            problems.push(format!(
                "slope_memory_pct must be a number more than 0, at most {SLOPE_MEMORY_MAX}, got {}",
                self.slope_memory_pct
            ));
        }
        let (lo, hi) = SLOPE_MIN_DROP_RANGE;
        if !(lo..=hi).contains(&self.slope_min_drop_pct) {
            problems.push(format!(
                "slope_min_drop_pct must be a number from {lo} to {hi}, got {}",
                self.slope_min_drop_pct
            ));
        }
        let (lo, hi) = PEUKERT_RANGE;
        if !(lo..=hi).contains(&self.peukert_exponent) {
            problems.push(format!(
                "peukert_exponent must be a number from {lo:.1} to {hi:.1}, got {}",
                self.peukert_exponent
            ));
        }
        problems
    }

    /// The same settings with every out-of-range value replaced by the nearest usable one, so a
    /// [`Policy`] never runs on nonsense even if [`PolicyConfig::validate`] was skipped.
    pub(super) fn sanitized(&self) -> Self {
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
            peukert_exponent: if self.peukert_exponent.is_finite() {
                self.peukert_exponent.clamp(1.0, 2.0)
            } else {
                d.peukert_exponent
            },
            blind_countdown_when_online: self.blind_countdown_when_online,
        }
    }
}
