//! Running medians: the spike filter on charge and load, and the firmware's runtime read through a
//! median of readings each aged by the time since it was taken.

use std::collections::VecDeque;

pub(super) fn push_bounded<T>(q: &mut VecDeque<T>, v: T, cap: usize) {
    q.push_back(v);
    while q.len() > cap.max(1) {
        q.pop_front();
    }
}

/// The median of the values (the mean of the middle two for an even count).
pub(super) fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
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
pub(super) struct RuntimeFilter {
    cap: usize,
    on_battery: bool,
    readings: VecDeque<(f64, f64)>,
}

impl RuntimeFilter {
    pub(super) fn new(cap: usize) -> Self {
        Self { cap, on_battery: false, readings: VecDeque::with_capacity(cap) }
    }

    pub(super) fn clear(&mut self) {
        self.readings.clear();
    }

    pub(super) fn push(&mut self, t: f64, runtime: Option<f64>, on_battery: bool) {
        if on_battery != self.on_battery {
            // readings from before the mains changed describe another situation
            self.readings.clear();
            self.on_battery = on_battery;
        }
        if let Some(rt) = runtime {
            push_bounded(&mut self.readings, (t, rt), self.cap);
        }
    }

    pub(super) fn estimate(&self, t: f64) -> Option<f64> {
        let aged = self.readings.iter().map(|&(ti, rt)| if self.on_battery { rt - (t - ti).max(0.0) } else { rt });
        median(aged).map(|v| v.max(0.0))
    }
}

/// A reported load changing by more than this fraction of the average, and by more than
/// `LOAD_STEP_QUANTA` of the load's reporting step, is a step, followed at once; smaller changes
/// are scatter (a load reported in 10 % steps flips between the two around the true load).
const LOAD_STEP_FRACTION: f64 = 0.2;
const LOAD_STEP_QUANTA: f64 = 1.5;
/// The coarsest reporting step a load is taken to have, percent: a larger change between two
/// readings is a step of the load itself, not its resolution.
const LOAD_MAX_QUANTUM_PCT: f64 = 10.0;
/// The time constant, seconds, over which load scatter is averaged.
const LOAD_AVERAGE_S: f64 = 60.0;

/// `ups.load` through a running median (glitches) and then a time-weighted average that follows
/// steps at once but averages scatter away, so a load reported in coarse steps does not make the
/// predicted drain jump with each flip.
#[derive(Debug, Clone)]
pub(super) struct LoadFilter {
    cap: usize,
    readings: VecDeque<f64>,
    average: Option<(f64, f64)>,
    /// The smallest change between two readings seen: the load's reporting step.
    quantum: f64,
}

impl LoadFilter {
    pub(super) fn new(cap: usize) -> Self {
        Self { cap, readings: VecDeque::with_capacity(cap), average: None, quantum: f64::INFINITY }
    }

    /// Feeds a poll's load (none if not reported); returns the load to use, none if it was never
    /// reported.
    pub(super) fn push(&mut self, t: f64, load: Option<f64>) -> Option<f64> {
        if let Some(l) = load {
            if let Some(&prev) = self.readings.back()
                && prev != l
            {
                self.quantum = self.quantum.min((prev - l).abs()).min(LOAD_MAX_QUANTUM_PCT);
            }
            push_bounded(&mut self.readings, l, self.cap);
        }
        let m = median(self.readings.iter().copied())?;
        let quantum = if self.quantum.is_finite() { self.quantum } else { 0.0 };
        let next = match self.average {
            Some((avg, last_t)) if (m - avg).abs() <= (LOAD_STEP_FRACTION * avg).max(LOAD_STEP_QUANTA * quantum) => {
                let f = crate::math::exp(-(t - last_t).max(0.0) / LOAD_AVERAGE_S);
                avg * f + m * (1.0 - f)
            }
            _ => m,
        };
        self.average = Some((next, t));
        Some(next)
    }
}
