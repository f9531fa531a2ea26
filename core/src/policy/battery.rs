//! The own runtime estimate: the battery as seen through its `battery.charge` readings.
//!
//! **Load and Peukert.** Charge falls with the energy drawn, so it is fitted against the
//! *effective discharge* x = ∫ (load / 100 %)^p dt (time, without `ups.load`), where p is the
//! Peukert exponent: a battery drains faster than in proportion to its load. A load step then
//! changes the predicted rate on the next poll. The fit is kept for several exponents at once
//! (1.0 to 1.5 and the configured one), and another than the configured one is used only when it
//! explains the readings across a load change clearly better. The load is averaged over a minute
//! unless it steps by more than a fifth and more than its reporting step.
//!
//! **Quantised readings.** A reading that has not changed says only that the charge is somewhere
//! in its step (whole percents, or 10 % on some UPSes); what is exact is the moment it changes,
//! when the charge crossed a step boundary. So the points of the fit are these *transitions* of
//! the median-filtered reading, each at the midpoint between the two polls, and the charge now is
//! an interval: from the last transition on, between the new reading and one step above it, less
//! what the fit says was consumed since; never more than a step above the latest reading. The
//! step (quantum) is the smallest change seen. A reading that repeats is not taken to bound the
//! charge from below: it may be stale (a driver that stopped updating, irregular polls).
//!
//! **Weights.** Points are weighed by the charge consumed since they were taken
//! (`slope_memory_pct`), not by poll count, so irregular polls and repeated readings weigh
//! nothing extra. Each on-battery stretch is a *segment* with its own offset and one slope shared
//! by all segments (a second outage keeps what the first taught about the battery).
//!
//! **Curvature.** A charge derived from battery voltage reads high mid-discharge and falls ever
//! faster near the end (the knee); an unreported load creeping up does the same. Once the current
//! segment has consumed a full slope memory, a parabola through it gives the slope *now* and its
//! acceleration, and a cubic how fast the acceleration itself grows (a knee that still sharpens);
//! each term is used only as far as the data proves it, shrunk by two (three for the cubic)
//! standard errors towards none and never the other way (a slope that would flatten is not counted
//! on), and the cubic only when it is the more pessimistic. The runtime solves
//! charge = rate·u + accel·u² + jerk·u³. A short-memory line overrides them when the readings fall
//! clearly faster (a step of an unreported load).
//!
//! **Steps.** A step down (a cell failing, the surface charge of a briefly recharged battery
//! sagging away) is not a slope: each transition's drop beyond what the rate explains is
//! accumulated (a CUSUM) and, past a few quanta, starts a new segment at the new level; while the
//! charge keeps falling off the step faster than twice the rate, the new segment starts afresh,
//! so the slope learnt before is not corrupted. Before any rate is known, only a drop faster than
//! any battery discharges is a step.
//!
//! **History.** With the discharge curves of earlier outages
//! ([`crate::discharge`]), the estimate follows the recorded curve as far down as it reaches
//! while this stretch's pace over its last 10 % of charge agrees with it within ±20 % (a stretch
//! with a step is not compared).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::PolicyConfig;
use super::filter::median;
use super::fit::{LineFit, Moments, QuadraticFit};
use crate::discharge::{ChargeCurve, CurvePoint, DischargeRecord, MAX_POINTS, MIN_RECORDED_DROP_PCT};

/// Peukert exponents tried besides the configured one.
const EXPONENTS: [f64; 6] = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5];
/// The configured exponent plus [`EXPONENTS`]; index 0 is the configured one.
const N: usize = EXPONENTS.len() + 1;
/// Another exponent replaces the configured one only when its residual sum of squares is below
/// this fraction of the configured one's: a load change must make the difference, not noise.
const EXPONENT_EVIDENCE: f64 = 0.8;
/// Most segments remembered; older ones weigh next to nothing anyway.
const MAX_SEGMENTS: usize = 32;
/// The recent slope forgets this many times faster than `slope_memory_pct` says.
const RECENT_MEMORY_DIVISOR: f64 = 4.0;
/// x is kept in units of this many seconds at 100 % load, so the moments stay near 1.
const X_UNIT_S: f64 = 1000.0;
/// Standard errors by which the curvature is shrunk towards a straight line (two: the curvature
/// of a knee or a creeping load is strong once the stretch is long enough to fit it).
const CURVATURE_Z: f64 = 2.0;
/// The same for the cubic's terms: a third-order term is easily fitted to noise (a stale reading,
/// a load step), so it must be proven beyond three standard errors.
const JERK_Z: f64 = 3.0;
/// The current stretch is fitted with a parabola once it has consumed this fraction of the slope
/// memory (and three quanta): before that the slope shared with earlier stretches is steadier.
const CURVE_MIN_MEMORY_FRACTION: f64 = 1.0;
/// Step detection: each transition's drop beyond the fitted rate is accumulated less this many
/// quanta (slack for rounding and timing), and a sum beyond `STEP_QUANTA` quanta plus
/// `STEP_MARGIN_PCT` is a step.
const STEP_SLACK_QUANTA: f64 = 0.5;
const STEP_QUANTA: f64 = 1.5;
const STEP_MARGIN_PCT: f64 = 1.0;
/// After a step, a transition more than this many times faster than the fitted rate is still the
/// step.
const SETTLE_RATE_FACTOR: f64 = 2.0;
/// Step detection expects up to this much more drop than the fitted rate explains (the rate is
/// an estimate, and lags a knee).
const STEP_RATE_TOLERANCE: f64 = 0.3;
/// Before the rate is known, a drop between two polls faster than this (percent per second: a full
/// battery in under two minutes) and larger than `STEP_UNKNOWN_RATE_MIN_PCT` is a step. The
/// minimum is two and a half of the coarsest steps UPSes report charge in (10 %), since the
/// quantum is not known before the first change either.
const MAX_PLAUSIBLE_RATE_PCT_PER_S: f64 = 1.0;
const STEP_UNKNOWN_RATE_MIN_PCT: f64 = 25.0;
/// The discharge history is compared with this stretch over its last this many percent of charge,
/// at least `HISTORY_MIN_SPAN_PCT`, and used while the two paces differ by less than
/// `HISTORY_TOLERANCE` (relative).
const HISTORY_SPAN_PCT: f64 = 10.0;
const HISTORY_MIN_SPAN_PCT: f64 = 5.0;
const HISTORY_TOLERANCE: f64 = 0.2;
/// Weights are kept relative to a reference consumption; past this exponent they are rescaled.
const MAX_WEIGHT_EXPONENT: f64 = 300.0;

/// The own estimate with what it rests on, for the decision's reason and `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeEstimate {
    /// Runtime left, seconds, from the central estimate of the charge.
    pub runtime_s: f64,
    /// Runtime left if the charge is at the bottom of what the quantised readings allow.
    pub runtime_low_s: f64,
    /// Runtime left if the charge is at the top of what the quantised readings allow.
    pub runtime_high_s: f64,
    /// The charge now, percent (central estimate).
    pub charge_pct: f64,
    /// How fast the charge falls now at the present load, percent per second.
    pub rate_pct_per_s: f64,
    /// How fast that rate grows, percent of itself per minute (0: a straight line).
    pub speedup_pct_per_min: f64,
    /// The step of the charge readings, percent.
    pub quantum_pct: f64,
    /// The Peukert exponent in use.
    pub peukert_exponent: f64,
    /// Steps down (a failed cell, a surface charge sagging) seen in the charge so far.
    pub steps: u32,
    /// The slope is the recent one: the readings fall faster than the steady fit says.
    pub recent_slope: bool,
    /// The discharge curve of earlier outages, when it agrees with this one and is used.
    #[serde(default)]
    pub history: Option<HistoryUse>,
}

/// How the discharge history entered an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HistoryUse {
    /// Recorded outages the curve was made of.
    pub outages: usize,
    /// How much longer this outage took than the curve over the same fall of charge (1: the same).
    pub ratio: f64,
}

impl ChargeEstimate {
    /// A short description for the decision's reason.
    pub fn describe(&self) -> String {
        let mut s = format!("charge {:.1} % falling {:.3} %/s", self.charge_pct, self.rate_pct_per_s);
        if self.speedup_pct_per_min > 0.05 {
            s.push_str(&format!(", {:.1} % faster each minute", self.speedup_pct_per_min));
        }
        if self.recent_slope {
            s.push_str(", recent slope");
        }
        if self.peukert_exponent != 1.0 {
            s.push_str(&format!(", drain ∝ load^{:.2}", self.peukert_exponent));
        }
        if self.steps > 0 {
            s.push_str(&format!(", {} step{} down", self.steps, if self.steps == 1 { "" } else { "s" }));
        }
        if let Some(h) = self.history {
            s.push_str(&format!(
                ", following the curve of {} earlier outage{} (×{:.2})",
                h.outages,
                if h.outages == 1 { "" } else { "s" },
                h.ratio
            ));
        }
        if self.runtime_high_s - self.runtime_low_s >= 0.2 * self.runtime_s.max(1.0) {
            s.push_str(&format!(
                ", readings in {:.0} % steps: {:.0}–{:.0} s",
                self.quantum_pct, self.runtime_low_s, self.runtime_high_s
            ));
        }
        s
    }
}

/// Σw(x−x̄)², Σw(x−x̄)(c−c̄) and Σw(c−c̄)² of several segments, each centred on its own means.
#[derive(Debug, Clone, Copy, Default)]
struct Pooled {
    sxx: f64,
    sxc: f64,
    scc: f64,
}

impl Pooled {
    fn add(&mut self, l: LineFit) {
        self.sxx += l.sxx;
        self.sxc += l.sxc;
        self.scc += l.scc;
    }

    fn with(mut self, l: Option<LineFit>) -> Self {
        if let Some(l) = l {
            self.add(l);
        }
        self
    }

    /// The pooled slope when the charge falls with x.
    fn slope(&self) -> Option<f64> {
        let k = self.sxc / self.sxx;
        (self.sxx > 0.0 && k.is_finite() && k < 0.0).then_some(k)
    }

    fn ssr(&self) -> f64 {
        LineFit { sxx: self.sxx, sxc: self.sxc, scc: self.scc }.ssr()
    }
}

/// A stretch of charge readings with its own offset: an on-battery stretch, or the part of one
/// after a step.
#[derive(Debug, Clone)]
struct Segment {
    /// Where x started for this segment (per exponent), so its moments stay small.
    origin: [f64; N],
    steady: [Moments; N],
    recent: [Moments; N],
    points: usize,
    first_v: Option<f64>,
    min_v: f64,
}

impl Segment {
    fn new(origin: [f64; N]) -> Self {
        Self {
            origin,
            steady: [Moments::default(); N],
            recent: [Moments::default(); N],
            points: 0,
            first_v: None,
            min_v: f64::INFINITY,
        }
    }

    fn drop_pct(&self) -> f64 {
        self.first_v.map_or(0.0, |first| (first - self.min_v).max(0.0))
    }

    fn local_x(&self, x: &[f64; N], i: usize) -> f64 {
        (x[i] - self.origin[i]) / X_UNIT_S
    }

    fn line(&self, i: usize, recent: bool) -> Option<LineFit> {
        if self.points < 2 {
            return None;
        }
        if recent { self.recent[i].line() } else { self.steady[i].line() }
    }
}

/// A reading changing from `q_old` to `q_new`: the charge crossed a step boundary, which lies in
/// `[lo, hi]`, at effective discharge `x`.
#[derive(Debug, Clone, Copy)]
struct Transition {
    x: [f64; N],
    lo: f64,
    hi: f64,
}

/// A charge reading `c` at effective discharge `x` and time `t`.
#[derive(Debug, Clone, Copy)]
struct Point {
    x: [f64; N],
    t: f64,
    c: f64,
    load: f64,
}

/// The current on-battery stretch.
#[derive(Debug, Clone)]
struct Run {
    x: [f64; N],
    last_t: f64,
    seen: usize,
    /// Raw charge readings waiting for the median filter, with the x and time they were taken at.
    raw: VecDeque<Point>,
    /// The last filtered reading, at the latest poll that showed it.
    last: Option<Point>,
    /// The first filtered reading of the stretch.
    first: Option<Point>,
    transition: Option<Transition>,
    /// Drops beyond the fitted rate, accumulated (step detection).
    cusum: f64,
    /// x of the previous transition (or the first reading), for the drop expected since.
    x_prev_transition: Option<[f64; N]>,
    /// After a step: the charge may still be falling off it (a surface charge sags away over a
    /// minute or so), until a transition comes at the usual rate again.
    settling: bool,
    /// When the stretch began.
    t0: f64,
    /// The filtered reading at its first poll and at each change, for the discharge history.
    trail: Vec<CurvePoint>,
    /// A step was seen: the stretch is not the battery's usual curve.
    stepped: bool,
}

impl Run {
    fn record(&self, quantum: f64) -> Option<DischargeRecord> {
        (!self.stepped && self.trail.len() >= 2).then(|| DischargeRecord {
            ended_at: String::new(),
            quantum_pct: quantum,
            points: self.trail.clone(),
        })
    }

    fn remember(&mut self, p: &Point) {
        self.trail.push(CurvePoint { t_s: p.t - self.t0, charge_pct: p.c, load_pct: p.load });
        // bounded: past twice what the history keeps, every other point goes (first and last stay)
        if self.trail.len() > 2 * MAX_POINTS {
            let last = self.trail.len() - 1;
            let mut i = 0;
            self.trail.retain(|_| {
                let keep = i % 2 == 0 || i == last;
                i += 1;
                keep
            });
        }
    }
}

/// The battery as seen through its charge readings.
#[derive(Debug, Clone)]
pub(super) struct BatteryModel {
    memory_pct: f64,
    min_drop_pct: f64,
    half_window: usize,
    exponents: [f64; N],
    segments: VecDeque<Segment>,
    /// Pooled line sums of every segment but the last, per exponent (steady and recent).
    closed_steady: [Pooled; N],
    closed_recent: [Pooled; N],
    run: Option<Run>,
    /// Charge consumed so far as modelled, percent, and the reference the weights are relative to.
    consumed: f64,
    consumed_ref: f64,
    quantum: Option<f64>,
    steps: u32,
    /// The exponent in use (index into `exponents`).
    chosen: usize,
    /// The last stretch that ended, until taken for the discharge history.
    finished: Option<DischargeRecord>,
    /// The curve of earlier stretches, per exponent.
    history: Option<Box<[ChargeCurve; N]>>,
}

impl BatteryModel {
    pub fn new(cfg: &PolicyConfig) -> Self {
        let mut exponents = [cfg.peukert_exponent; N];
        exponents[1..].copy_from_slice(&EXPONENTS);
        Self {
            memory_pct: cfg.slope_memory_pct,
            min_drop_pct: cfg.slope_min_drop_pct,
            half_window: (cfg.spike_filter_polls as usize) / 2,
            exponents,
            segments: VecDeque::new(),
            closed_steady: [Pooled::default(); N],
            closed_recent: [Pooled::default(); N],
            run: None,
            consumed: 0.0,
            consumed_ref: 0.0,
            quantum: None,
            steps: 0,
            chosen: 0,
            finished: None,
            history: None,
        }
    }

    /// The on-battery stretch ended (mains back, or no data).
    pub fn close_run(&mut self) {
        if let Some(run) = self.run.take()
            && let Some(rec) = run.record(self.quantum())
            && rec.drop_pct() >= MIN_RECORDED_DROP_PCT
        {
            self.finished = Some(rec);
        }
    }

    /// The last on-battery stretch that ended, once, for the discharge history.
    pub fn take_finished(&mut self) -> Option<DischargeRecord> {
        self.finished.take()
    }

    /// The current on-battery stretch so far.
    pub fn current_record(&self) -> Option<DischargeRecord> {
        self.run.as_ref().and_then(|r| r.record(self.quantum()))
    }

    /// Uses the curves of earlier stretches of this battery, where the live readings agree.
    pub fn set_history(&mut self, records: &[DischargeRecord]) {
        let usable: Vec<DischargeRecord> =
            records.iter().filter(|r| r.is_sane() && r.drop_pct() >= MIN_RECORDED_DROP_PCT).cloned().collect();
        self.history =
            (!usable.is_empty()).then(|| Box::new(self.exponents.map(|p| ChargeCurve::from_records(&usable, p))));
    }

    fn quantum(&self) -> f64 {
        self.quantum.unwrap_or(1.0)
    }

    /// Feeds an on-battery poll.
    pub fn on_battery(&mut self, t: f64, charge: Option<f64>, load_pct: f64) {
        let slope = self.pooled(self.chosen, false).slope();
        if self.run.is_none() {
            self.push_segment(Segment::new([0.0; N]));
            self.run = Some(Run {
                x: [0.0; N],
                last_t: t,
                seen: 0,
                raw: VecDeque::new(),
                last: None,
                first: None,
                transition: None,
                cusum: 0.0,
                x_prev_transition: None,
                settling: false,
                t0: t,
                trail: Vec::new(),
                stepped: false,
            });
        }
        let exponents = self.exponents;
        let chosen = self.chosen;
        let Some(run) = self.run.as_mut() else { return };
        let dt = (t - run.last_t).max(0.0);
        run.last_t = t;
        let load = (load_pct / 100.0).max(0.0);
        let before = run.x[chosen];
        for (x, p) in run.x.iter_mut().zip(exponents) {
            *x += crate::math::powf(load, p) * dt;
        }
        // forget by the charge consumed since, so the fit follows the battery as it is now
        if let Some(k) = slope {
            self.consumed += k.abs() * (run.x[chosen] - before) / X_UNIT_S;
            self.renormalise_if_needed();
        }

        let Some(c) = charge else { return };
        let Some(run) = self.run.as_mut() else { return };
        let h = self.half_window;
        run.raw.push_back(Point { x: run.x, t, c, load: load_pct });
        run.seen += 1;
        while run.raw.len() > 2 * h + 1 {
            run.raw.pop_front();
        }
        // emit the point whose centred window has just become complete, with the window's median;
        // the first points of a stretch get narrower windows, never lopsided ones (a lopsided
        // median of a falling charge would bias it)
        let newest = run.seen - 1;
        let centre = if newest >= 2 * h { Some(newest - h) } else { newest.is_multiple_of(2).then_some(newest / 2) };
        let Some(i) = centre else { return };
        let half = newest - i;
        let first = run.seen - run.raw.len();
        let Some(lo) = (i - half).checked_sub(first) else { return };
        let window = run.raw.iter().skip(lo).map(|p| p.c);
        let (Some(cm), Some(&centre)) = (median(window), run.raw.get(i - first)) else { return };
        let before = (self.segments.len(), self.segments.back().map(|s| s.points));
        self.filtered(Point { c: cm, ..centre });
        // the fits change only when a point is added
        if (self.segments.len(), self.segments.back().map(|s| s.points)) != before {
            self.choose_exponent();
        }
    }

    /// A filtered reading: a transition when it differs from the last one.
    fn filtered(&mut self, point: Point) {
        let Point { x, c: q, .. } = point;
        let Some(run) = self.run.as_mut() else { return };
        let Some(Point { x: x_prev, t: t_prev, c: q_prev, .. }) = run.last else {
            run.last = Some(point);
            run.first = Some(point);
            run.x_prev_transition = Some(x);
            run.remember(&point);
            return;
        };
        run.last = Some(point);
        if q == q_prev {
            return;
        }
        let rate = match (self.run.as_ref(), self.segments.back()) {
            (Some(run), Some(seg)) => self.shape(run, seg).map(|s| s.drain.rate),
            _ => None,
        };
        let quantum = self.quantum();
        let chosen = self.chosen;
        let Some(run) = self.run.as_mut() else { return };
        run.remember(&Point { t: (t_prev + point.t) / 2.0, ..point });
        let mut x_t = [0.0; N];
        for (m, (a, b)) in x_t.iter_mut().zip(x_prev.iter().zip(&x)) {
            *m = (a + b) / 2.0;
        }
        let drop = q_prev - q;
        let since = run.x_prev_transition.map_or(0.0, |p| (x_t[chosen] - p[chosen]) / X_UNIT_S).max(0.0);
        // after a step, a fall much faster than the usual rate still belongs to the step: the
        // segment starts afresh from here, so the step's tail does not steepen the slope
        if run.settling && drop > 0.0 {
            let falling_off = rate.is_some_and(|r| drop > SETTLE_RATE_FACTOR * r * since);
            run.x_prev_transition = Some(x_t);
            if falling_off {
                run.transition = Some(Transition { x: x_t, lo: q, hi: q + quantum });
                self.segments.pop_back();
                self.push_segment(Segment::new(x_t));
                self.add_point(&x_t, q + quantum / 2.0);
                return;
            }
            run.settling = false;
        }
        // step detection: the drop beyond what the rate explains since the previous transition
        let threshold = STEP_QUANTA * quantum + STEP_MARGIN_PCT;
        let is_step = match rate {
            Some(r) => {
                let excess = drop - r * since * (1.0 + STEP_RATE_TOLERANCE);
                run.cusum = (run.cusum + excess - STEP_SLACK_QUANTA * quantum).max(0.0);
                run.cusum > threshold
            }
            // no battery discharges faster than this: beyond it, only a step explains the drop
            None => {
                drop - MAX_PLAUSIBLE_RATE_PCT_PER_S * (point.t - t_prev).max(0.0)
                    > threshold.max(STEP_UNKNOWN_RATE_MIN_PCT)
            }
        };
        run.x_prev_transition = Some(x_t);
        if is_step {
            run.cusum = 0.0;
            run.settling = true;
            run.stepped = true;
            run.transition = Some(Transition { x: x_t, lo: q, hi: q + quantum });
            self.steps = self.steps.saturating_add(1);
            self.push_segment(Segment::new(x_t));
            self.add_point(&x_t, q + quantum / 2.0);
            return;
        }
        if drop.abs() > 1e-9 {
            let d = drop.abs();
            self.quantum = Some(self.quantum.map_or(d, |qn| qn.min(d)));
        }
        let quantum = self.quantum();
        let (lo, hi) = if drop > 0.0 { (q, q + quantum) } else { (q - quantum, q) };
        if let Some(run) = self.run.as_mut() {
            run.transition = Some(Transition { x: x_t, lo, hi });
        }
        self.add_point(&x_t, (q_prev + q) / 2.0);
    }

    fn push_segment(&mut self, seg: Segment) {
        self.segments.push_back(seg);
        while self.segments.len() > MAX_SEGMENTS {
            self.segments.pop_front();
        }
        self.refresh_closed();
    }

    /// Recomputes the pooled sums of every segment but the last.
    fn refresh_closed(&mut self) {
        let n = self.segments.len().saturating_sub(1);
        for i in 0..N {
            let (mut s, mut r) = (Pooled::default(), Pooled::default());
            for seg in self.segments.iter().take(n) {
                s = s.with(seg.line(i, false));
                r = r.with(seg.line(i, true));
            }
            self.closed_steady[i] = s;
            self.closed_recent[i] = r;
        }
    }

    fn add_point(&mut self, x: &[f64; N], v: f64) {
        let e = self.consumed - self.consumed_ref;
        let w = crate::math::exp(e / self.memory_pct);
        let w_recent = crate::math::exp(e * RECENT_MEMORY_DIVISOR / self.memory_pct);
        let Some(seg) = self.segments.back_mut() else { return };
        for i in 0..N {
            let xl = seg.local_x(x, i);
            seg.steady[i].add(w, xl, v);
            seg.recent[i].add(w_recent, xl, v);
        }
        seg.points += 1;
        if seg.first_v.is_none() {
            seg.first_v = Some(v);
        }
        seg.min_v = seg.min_v.min(v);
    }

    /// Weights grow as e^(consumed / memory); rescale them all before they overflow.
    fn renormalise_if_needed(&mut self) {
        let e = self.consumed - self.consumed_ref;
        if e * RECENT_MEMORY_DIVISOR / self.memory_pct < MAX_WEIGHT_EXPONENT {
            return;
        }
        let f = crate::math::exp(-e / self.memory_pct);
        let f_recent = crate::math::exp(-e * RECENT_MEMORY_DIVISOR / self.memory_pct);
        for seg in &mut self.segments {
            seg.steady.iter_mut().for_each(|m| m.scale(f));
            seg.recent.iter_mut().for_each(|m| m.scale(f_recent));
        }
        self.consumed_ref = self.consumed;
        self.refresh_closed();
    }

    fn pooled(&self, i: usize, recent: bool) -> Pooled {
        let closed = if recent { self.closed_recent[i] } else { self.closed_steady[i] };
        closed.with(self.segments.back().and_then(|s| s.line(i, recent)))
    }

    /// Picks the Peukert exponent: the configured one unless another fits clearly better.
    fn choose_exponent(&mut self) {
        let ssr: [Option<f64>; N] = std::array::from_fn(|i| {
            let p = self.pooled(i, false);
            p.slope().map(|_| p.ssr())
        });
        let Some(base) = ssr[0] else {
            self.chosen = 0;
            return;
        };
        let best = (1..N)
            .filter_map(|i| ssr[i].map(|s| (i, s)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .filter(|&(_, s)| s < EXPONENT_EVIDENCE * base);
        self.chosen = best.map_or(0, |(i, _)| i);
    }

    /// Whether the charge has been seen to fall enough to trust a slope.
    fn slope_trusted(&self) -> bool {
        let drop: f64 = self.segments.iter().map(Segment::drop_pct).sum();
        drop >= self.min_drop_pct
    }

    /// Runtime left at this load from the given charge, with the pooled straight-line slope
    /// (on mains: what an outage starting now would give).
    pub fn runtime_from(&self, charge: f64, load_pct: f64) -> Option<f64> {
        if !self.slope_trusted() {
            return None;
        }
        let k = self.pooled(self.chosen, false).slope()?;
        let ell = crate::math::powf((load_pct / 100.0).max(0.0), self.exponents[self.chosen]);
        let rate = k.abs() * ell / X_UNIT_S;
        (rate > 0.0).then(|| (charge / rate).max(0.0))
    }

    /// How the charge falls from now on (per x unit) and the fitted charge now, from the current
    /// segment and the slope shared with earlier ones; none until a slope is trusted.
    fn shape(&self, run: &Run, seg: &Segment) -> Option<Shape> {
        if !self.slope_trusted() {
            return None;
        }
        let i = self.chosen;
        let quantum = self.quantum();
        let pooled = self.pooled(i, false).slope()?;
        let x_now = seg.local_x(&run.x, i);

        // how the charge will fall from here (per x unit): from polynomials through the current
        // segment once it has consumed enough, else the line shared with earlier segments
        let curve_min_drop = (CURVE_MIN_MEMORY_FRACTION * self.memory_pct).max(3.0 * quantum);
        let curved = seg.drop_pct() >= curve_min_drop;
        let quad: Option<QuadraticFit> = if curved { seg.steady[i].quadratic() } else { None };
        let mut drain = Drain::line(-pooled);
        let mut fitted = None;
        if let Some(q) = quad {
            let a2 = (q.a2 + CURVATURE_Z * q.a2_se).min(0.0);
            let s = q.slope_at(x_now, a2);
            if s < 0.0 {
                drain = Drain { rate: -s, accel: -a2, jerk: 0.0 };
                fitted = Some(q.value_at(x_now, q.a2));
            }
        }
        // a knee that sharpens still (the acceleration itself growing) is a cubic; it is used when
        // its third-order term is proven and it is the more pessimistic
        if let Some(c) = if curved { seg.steady[i].cubic(x_now) } else { None } {
            let jerk = -(c.coef[3] + JERK_Z * c.se[3]).min(0.0);
            let accel = -(c.coef[2] + JERK_Z * c.se[2]).min(0.0);
            let cubic = Drain { rate: -c.coef[1], accel, jerk };
            if jerk > 0.0 && cubic.rate > 0.0 {
                let probe = fitted.unwrap_or(c.coef[0]).max(0.0);
                if cubic.lasts(probe) < drain.lasts(probe) {
                    drain = cubic;
                    fitted = Some(c.coef[0]);
                }
            }
        }
        let mut recent = false;
        let recent_memory = self.memory_pct / RECENT_MEMORY_DIVISOR;
        if let Some(r) = self.pooled(i, true).slope()
            && -r / (1.0 + 1.0 / recent_memory) > drain.rate
        {
            drain = Drain::line(-r);
            fitted = None;
            recent = true;
        }

        if fitted.is_none() {
            let m = if recent { &seg.recent[i] } else { &seg.steady[i] };
            if let (Some(c), Some(xm)) = (m.mean_c(), m.mean_x())
                && seg.points > 0
            {
                fitted = Some(c - drain.rate * (x_now - xm));
            }
        }
        Some(Shape { drain, fitted, recent })
    }

    /// The estimate now, in the current on-battery stretch, at this load.
    pub fn estimate(&self, load_pct: f64) -> Option<ChargeEstimate> {
        let run = self.run.as_ref()?;
        let seg = self.segments.back()?;
        let i = self.chosen;
        let p = self.exponents[i];
        let quantum = self.quantum();
        let Shape { drain, fitted, recent } = self.shape(run, seg)?;
        let consumed_since = |x: &[f64; N]| drain.past_drop(((run.x[i] - x[i]) / X_UNIT_S).max(0.0));
        let Point { x: x_r, c: reading, .. } = run.last?;
        let since_reading = consumed_since(&x_r);
        // from the last change of the reading on, the charge has fallen as the fit says; a reading
        // that has not changed since may be stale (a driver that stopped updating), so it bounds
        // the charge only from above (a reading is less than one step below the truth)
        let (lo, hi) = match run.transition {
            Some(tr) => {
                let since = consumed_since(&tr.x);
                (tr.lo - since, tr.hi - since)
            }
            None => {
                let since = run.first.map_or(since_reading, |f| consumed_since(&f.x));
                (reading - quantum - since, reading + quantum - since)
            }
        };
        let lo = lo.max(0.0);
        let hi = hi.min(reading + quantum - since_reading).max(lo);
        let charge = fitted.filter(|c| c.is_finite()).unwrap_or((lo + hi) / 2.0).clamp(lo, hi);

        let ell = crate::math::powf((load_pct / 100.0).max(0.0), p);
        let history = self.history_agreement(run, i, quantum);
        let runtime = |c: f64| {
            let live = drain.lasts(c);
            let x = match history {
                // the recorded curve down to where it ends, scaled to this outage, then the live drain
                // (below it, at the pace of its lowest part if that is faster than the live fit's:
                // a knee only steepens)
                Some((curve, ratio)) => {
                    let floor = curve.covered_down_to(c);
                    match curve.between(c, floor) {
                        Some(s) => {
                            let below = drain.lasts(floor);
                            let below = curve
                                .lowest_seconds_per_pct(c)
                                .map_or(below, |spp| below.min(ratio * spp * floor / X_UNIT_S));
                            ratio * s / X_UNIT_S + below
                        }
                        None => live,
                    }
                }
                None => live,
            };
            x * X_UNIT_S / ell
        };
        let rate = drain.rate * ell / X_UNIT_S;
        // d(rate)/dt relative to the rate, per minute
        let speedup = 2.0 * drain.accel * ell / X_UNIT_S / drain.rate * 60.0 * 100.0;
        let est = ChargeEstimate {
            runtime_s: runtime(charge),
            runtime_low_s: runtime(lo),
            runtime_high_s: runtime(hi),
            charge_pct: charge,
            rate_pct_per_s: rate,
            speedup_pct_per_min: speedup,
            quantum_pct: quantum,
            peukert_exponent: p,
            steps: self.steps,
            recent_slope: recent,
            history: history.map(|(curve, ratio)| HistoryUse { outages: curve.records, ratio }),
        };
        [est.runtime_s, est.runtime_low_s, est.runtime_high_s].iter().all(|v| v.is_finite() && *v >= 0.0).then_some(est)
    }
}

impl BatteryModel {
    /// The recorded curves and how this stretch's pace compares with them, when they agree: over
    /// the last [`HISTORY_SPAN_PCT`] of charge this stretch has fallen through (at least
    /// [`HISTORY_MIN_SPAN_PCT`] and two quanta), it took between 1/(1 + tolerance) and
    /// (1 + tolerance) times what the curve says. A stretch with a step is not the usual curve.
    fn history_agreement(&self, run: &Run, i: usize, quantum: f64) -> Option<(&ChargeCurve, f64)> {
        let curve = self.history.as_deref()?.get(i)?;
        if run.stepped {
            return None;
        }
        let p = self.exponents[i];
        let last = run.trail.last()?;
        let mut x = 0.0;
        let mut start = last;
        for w in run.trail.windows(2).rev() {
            if w[0].charge_pct - last.charge_pct > HISTORY_SPAN_PCT {
                break;
            }
            x += crate::math::powf((w[1].load_pct / 100.0).max(0.0), p) * (w[1].t_s - w[0].t_s);
            start = &w[0];
        }
        let span = start.charge_pct - last.charge_pct;
        if span < HISTORY_MIN_SPAN_PCT.max(2.0 * quantum) {
            return None;
        }
        let recorded = curve.between(start.charge_pct, last.charge_pct)?;
        let ratio = x / recorded;
        let tolerance = 1.0 + HISTORY_TOLERANCE;
        (ratio.is_finite() && ratio > 1.0 / tolerance && ratio < tolerance).then_some((curve, ratio))
    }
}

/// The fitted shape of the discharge now.
#[derive(Debug, Clone, Copy)]
struct Shape {
    drain: Drain,
    /// The fitted charge now, when the current segment has points.
    fitted: Option<f64>,
    /// The drain is the recent slope.
    recent: bool,
}

/// How the charge falls from now: by rate·u + accel·u² + jerk·u³ over the next u of effective
/// discharge (each term non-negative: a slope that would flatten is not counted on).
#[derive(Debug, Clone, Copy)]
struct Drain {
    rate: f64,
    accel: f64,
    jerk: f64,
}

impl Drain {
    fn line(rate: f64) -> Self {
        Self { rate, accel: 0.0, jerk: 0.0 }
    }

    /// How far (in x) a charge `c` lasts: the positive root of c = rate·u + accel·u² + jerk·u³.
    fn lasts(&self, c: f64) -> f64 {
        if c <= 0.0 || self.rate <= 0.0 {
            return 0.0;
        }
        if self.jerk <= 0.0 {
            // the root of the quadratic, in a form that is stable for accel → 0
            return 2.0 * c / (self.rate + (self.rate * self.rate + 4.0 * self.accel * c).sqrt());
        }
        // the drop is convex and increasing, so Newton's method from c / rate (at or beyond the
        // root) comes down to it monotonically
        let mut u = c / self.rate;
        for _ in 0..50 {
            let f = self.rate * u + self.accel * u * u + self.jerk * u * u * u - c;
            let df = self.rate + 2.0 * self.accel * u + 3.0 * self.jerk * u * u;
            let step = f / df;
            u -= step;
            if step.abs() <= 1e-12 * u.abs().max(1e-12) {
                break;
            }
        }
        u.max(0.0)
    }

    /// The charge the model says was consumed over the last `d` of effective discharge.
    fn past_drop(&self, d: f64) -> f64 {
        (self.rate * d - self.accel * d * d + self.jerk * d * d * d).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_empty_solves_the_drain_polynomial() {
        assert_eq!(Drain::line(0.5).lasts(50.0), 100.0);
        // 50 = 0.5u + 0.005u² → u = 61.8…
        let u = Drain { rate: 0.5, accel: 0.005, jerk: 0.0 }.lasts(50.0);
        assert!((50.0 - 0.5 * u - 0.005 * u * u).abs() < 1e-9, "{u}");
        let d = Drain { rate: 0.5, accel: 0.005, jerk: 0.0001 };
        let u = d.lasts(50.0);
        assert!((50.0 - 0.5 * u - 0.005 * u * u - 0.0001 * u * u * u).abs() < 1e-9, "{u}");
        assert_eq!(d.lasts(0.0), 0.0);
        assert_eq!(Drain { rate: 0.0, accel: 0.1, jerk: 0.0 }.lasts(10.0), 0.0);
    }
}
