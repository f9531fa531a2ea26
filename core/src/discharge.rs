//! The discharge history: how each UPS's charge fell in its earlier outages, in `discharge.json`
//! beside `runs.json` in the state directory.
//!
//! A battery follows much the same curve each time it discharges: a charge derived from voltage
//! reads high in the middle and falls ever faster near the end (the knee), at a pace set by the
//! load. A curve recorded once the knee has been seen tells a later outage, from its first
//! minutes, how the rest will go — where a live fit can only extrapolate what it has seen. The
//! [`Policy`](crate::policy::Policy) uses it only while the live readings agree with it (see
//! [`Policy::set_discharge_history`](crate::policy::Policy::set_discharge_history)).
//!
//! The daemon owns the file: [`DischargeHistory::load`] at start, [`DischargeHistory::record`] and
//! [`DischargeHistory::save`] when the policy hands over a finished on-battery stretch
//! ([`Policy::take_discharge`](crate::policy::Policy::take_discharge)). Writes are atomic
//! ([`crate::history::write_atomic`]); a file that cannot be read is moved aside to
//! `discharge.json.corrupt-<timestamp>` with a warning, never overwritten. The file is bounded:
//! [`MAX_RECORDS_PER_UPS`] stretches per UPS of at most [`MAX_POINTS`] points each (a few hundred
//! kilobytes at most).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::history::{HistoryError, corrupt_path, sync_parent, write_atomic};

/// Stretches kept per UPS, the most recent.
pub const MAX_RECORDS_PER_UPS: usize = 16;
/// Points kept per stretch; a longer one is thinned evenly.
pub const MAX_POINTS: usize = 400;
/// A stretch whose charge fell by less than this, percent, says too little about the curve and is
/// not recorded.
pub const MIN_RECORDED_DROP_PCT: f64 = 10.0;

/// One reading of a recorded stretch.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Seconds since the stretch began.
    pub t_s: f64,
    /// The charge reading, percent, at a change of the reading.
    pub charge_pct: f64,
    /// The load, percent of nominal, as the policy saw it then (100 when the UPS reports none).
    pub load_pct: f64,
}

/// One on-battery stretch: the charge readings against time at a load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DischargeRecord {
    /// When it ended (RFC 3339, UTC), set by [`DischargeHistory::record`].
    #[serde(default)]
    pub ended_at: String,
    /// The step of the charge readings, percent.
    pub quantum_pct: f64,
    /// The points, in time order: one at each change of the (median-filtered) charge reading.
    pub points: Vec<CurvePoint>,
}

impl DischargeRecord {
    /// How far the charge fell over the stretch, percent.
    pub fn drop_pct(&self) -> f64 {
        let first = self.points.first().map_or(0.0, |p| p.charge_pct);
        let min = self.points.iter().map(|p| p.charge_pct).fold(f64::INFINITY, f64::min);
        (first - min).max(0.0)
    }

    /// The points reduced to at most [`MAX_POINTS`], keeping the first and the last.
    fn thinned(mut self) -> Self {
        let n = self.points.len();
        if n > MAX_POINTS {
            let keep: Vec<CurvePoint> = (0..MAX_POINTS).map(|i| self.points[i * (n - 1) / (MAX_POINTS - 1)]).collect();
            self.points = keep;
        }
        self
    }

    /// Whether every number is finite, charges are percents, loads not negative, and the points go
    /// forward in time.
    pub fn is_sane(&self) -> bool {
        self.quantum_pct.is_finite()
            && self.points.iter().all(|p| {
                p.t_s.is_finite()
                    && p.charge_pct.is_finite()
                    && p.load_pct.is_finite()
                    && p.load_pct >= 0.0
                    && (0.0..=100.0).contains(&p.charge_pct)
            })
            && self.points.windows(2).all(|w| w[1].t_s >= w[0].t_s)
    }
}

/// The recorded stretches of every UPS, by the UPS's name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DischargeHistory {
    /// Per UPS, oldest first.
    #[serde(default)]
    pub ups: BTreeMap<String, Vec<DischargeRecord>>,
}

/// A loaded discharge history and, if the file could not be used, what was done about it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadedDischarge {
    /// The history (empty if the file was missing or unusable).
    pub history: DischargeHistory,
    /// Set when the file was unusable: what was wrong and where it was moved. Also logged.
    pub warning: Option<String>,
}

impl DischargeHistory {
    /// The file name in the state directory.
    pub const FILE_NAME: &'static str = "discharge.json";

    /// Reads the history. A missing or empty file is an empty history; a file that is not a
    /// discharge history is moved aside to `<name>.corrupt-<timestamp>` and an empty history is
    /// returned with a warning. Records with non-finite numbers are dropped. Fails only when the
    /// file exists but cannot be read or moved aside.
    pub fn load(path: &Path) -> Result<LoadedDischarge, HistoryError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LoadedDischarge::default()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Self::set_aside(path, "it is not valid UTF-8".to_string());
            }
            Err(source) => return Err(HistoryError::Io { action: "cannot read", path: path.to_path_buf(), source }),
        };
        if text.trim().is_empty() {
            return Ok(LoadedDischarge::default());
        }
        match serde_json::from_str::<DischargeHistory>(&text) {
            Ok(mut history) => {
                for records in history.ups.values_mut() {
                    records.retain(DischargeRecord::is_sane);
                }
                Ok(LoadedDischarge { history, warning: None })
            }
            Err(e) => Self::set_aside(path, e.to_string()),
        }
    }

    fn set_aside(path: &Path, problem: String) -> Result<LoadedDischarge, HistoryError> {
        let aside = corrupt_path(path, SystemTime::now());
        fs::rename(path, &aside).map_err(|source| HistoryError::Io {
            action: "cannot move aside the unreadable",
            path: path.to_path_buf(),
            source,
        })?;
        sync_parent(path)?;
        let warning = format!(
            "discharge history {} is unreadable ({problem}); moved it to {} and started a new one",
            path.display(),
            aside.display()
        );
        tracing::warn!("{warning}");
        Ok(LoadedDischarge { history: DischargeHistory::default(), warning: Some(warning) })
    }

    /// Writes the history to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), HistoryError> {
        let mut json = serde_json::to_string(self)?;
        json.push('\n');
        write_atomic(path, json.as_bytes())
    }

    /// Adds a finished stretch of `ups`, ended at `ended_at`, keeping the most recent
    /// [`MAX_RECORDS_PER_UPS`]. A stretch whose charge fell by less than [`MIN_RECORDED_DROP_PCT`]
    /// or that is not sane (non-finite numbers, time going backwards) is not kept; returns whether
    /// it was.
    pub fn record(&mut self, ups: &str, mut record: DischargeRecord, ended_at: SystemTime) -> bool {
        if !record.is_sane() || record.drop_pct() < MIN_RECORDED_DROP_PCT {
            return false;
        }
        record.ended_at = humantime::format_rfc3339_seconds(ended_at).to_string();
        let records = self.ups.entry(ups.to_string()).or_default();
        records.push(record.thinned());
        let excess = records.len().saturating_sub(MAX_RECORDS_PER_UPS);
        records.drain(..excess);
        true
    }

    /// The stretches recorded for `ups`, oldest first.
    pub fn records(&self, ups: &str) -> &[DischargeRecord] {
        self.ups.get(ups).map_or(&[], Vec::as_slice)
    }
}

/// Seconds at 100 % load (to the power of a Peukert exponent) that each percent of charge lasted,
/// per whole-percent bin (bin `b` covers charge `b` to `b + 1`), averaged over recorded stretches;
/// none where no stretch covered the bin.
#[derive(Debug, Clone, PartialEq)]
pub struct ChargeCurve {
    /// Index = the lower edge of the bin, percent.
    pub seconds_per_pct: Vec<Option<f64>>,
    /// How many stretches went into the curve.
    pub records: usize,
}

impl ChargeCurve {
    /// The curve of `records` with loads weighed as (load / 100 %)^`exponent`.
    pub fn from_records(records: &[DischargeRecord], exponent: f64) -> Self {
        let mut sum = vec![0.0; 100];
        let mut cover = vec![0.0; 100];
        let mut used = 0;
        for rec in records {
            let mut any = false;
            for w in rec.points.windows(2) {
                let (a, b) = (w[0], w[1]);
                let dc = a.charge_pct - b.charge_pct;
                if dc <= 0.0 {
                    continue;
                }
                // the load over the interval is the one at its end (the policy's smoothed load)
                let dx = crate::math::powf((b.load_pct / 100.0).max(0.0), exponent) * (b.t_s - a.t_s);
                let per_pct = dx / dc;
                if !(per_pct.is_finite() && per_pct > 0.0) {
                    continue;
                }
                // spread over the whole-percent bins the interval spans, by overlap
                let (lo, hi) = (b.charge_pct, a.charge_pct);
                let first = lo.floor().max(0.0) as usize;
                let last = (hi.ceil() as usize).min(100);
                for (bin, (s, c)) in sum.iter_mut().zip(cover.iter_mut()).enumerate().take(last).skip(first) {
                    let overlap = (hi.min(bin as f64 + 1.0) - lo.max(bin as f64)).max(0.0);
                    if overlap > 0.0 {
                        *s += per_pct * overlap;
                        *c += overlap;
                        any = true;
                    }
                }
            }
            used += usize::from(any);
        }
        let seconds_per_pct = sum.iter().zip(&cover).map(|(s, c)| (*c > 0.0).then(|| s / c)).collect();
        Self { seconds_per_pct, records: used }
    }

    /// Seconds (at 100 % load) the charge takes to fall from `from` to `to` percent, when the curve
    /// covers that whole range.
    pub fn between(&self, from: f64, to: f64) -> Option<f64> {
        let (hi, lo) = (from.clamp(0.0, 100.0), to.clamp(0.0, 100.0));
        if hi <= lo {
            return Some(0.0);
        }
        let mut total = 0.0;
        for bin in (lo.floor() as usize)..(hi.ceil() as usize).min(100) {
            let overlap = (hi.min(bin as f64 + 1.0) - lo.max(bin as f64)).max(0.0);
            if overlap > 0.0 {
                total += self.seconds_per_pct.get(bin).copied().flatten()? * overlap;
            }
        }
        Some(total)
    }

    /// Seconds per percent (at 100 % load) in the lowest bin the curve covers below `from`
    /// without a gap: how fast the charge fell at the lowest point recorded.
    pub fn lowest_seconds_per_pct(&self, from: f64) -> Option<f64> {
        let floor = self.covered_down_to(from);
        self.seconds_per_pct.get(floor as usize).copied().flatten()
    }

    /// The lowest charge, percent, from which the curve covers every bin up to `from`.
    pub fn covered_down_to(&self, from: f64) -> f64 {
        let mut bin = (from.clamp(0.0, 100.0).ceil() as usize).min(100);
        while bin > 0 && self.seconds_per_pct.get(bin - 1).copied().flatten().is_some() {
            bin -= 1;
        }
        (bin as f64).min(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(points: usize, from: f64, to: f64, seconds: f64, load: f64) -> DischargeRecord {
        let pts = (0..points)
            .map(|i| {
                let f = i as f64 / (points - 1) as f64;
                CurvePoint { t_s: f * seconds, charge_pct: from + (to - from) * f, load_pct: load }
            })
            .collect();
        DischargeRecord { ended_at: String::new(), quantum_pct: 1.0, points: pts }
    }

    #[test]
    fn a_curve_gives_the_time_between_two_charges() {
        // 80 % in 1600 s at 50 % load: 20 s per percent, 10 s per percent at 100 % load
        let c = ChargeCurve::from_records(&[linear(81, 100.0, 20.0, 1600.0, 50.0)], 1.0);
        assert_eq!(c.records, 1);
        let t = c.between(60.0, 40.0).unwrap();
        assert!((t - 200.0).abs() < 1e-6, "{t}");
        assert_eq!(c.between(30.0, 10.0), None, "not covered below 20 %");
        assert_eq!(c.covered_down_to(70.0), 20.0);
        assert!((c.lowest_seconds_per_pct(70.0).unwrap() - 10.0).abs() < 1e-6);
        // Peukert: at exponent 1.2 the same stretch counts less effective discharge
        let p = ChargeCurve::from_records(&[linear(81, 100.0, 20.0, 1600.0, 50.0)], 1.2);
        assert!(p.between(60.0, 40.0).unwrap() < t);
    }

    #[test]
    fn records_are_bounded_and_short_stretches_ignored() {
        let mut h = DischargeHistory::default();
        assert!(!h.record("ups", linear(5, 100.0, 95.0, 100.0, 50.0), SystemTime::UNIX_EPOCH));
        for _ in 0..MAX_RECORDS_PER_UPS + 3 {
            assert!(h.record("ups", linear(2000, 100.0, 10.0, 3000.0, 50.0), SystemTime::UNIX_EPOCH));
        }
        assert_eq!(h.records("ups").len(), MAX_RECORDS_PER_UPS);
        assert!(h.records("ups").iter().all(|r| r.points.len() == MAX_POINTS));
        assert_eq!(h.records("ups")[0].points.last().unwrap().charge_pct, 10.0);
        assert_eq!(h.records("ups")[0].ended_at, "1970-01-01T00:00:00Z");
        assert!(h.records("other").is_empty());
        let mut bad = linear(50, 100.0, 50.0, 500.0, 50.0);
        bad.points[3].charge_pct = f64::NAN;
        assert!(!h.record("ups", bad, SystemTime::UNIX_EPOCH));
    }

    #[test]
    fn save_and_load_round_trip_and_a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DischargeHistory::FILE_NAME);
        assert_eq!(DischargeHistory::load(&path).unwrap(), LoadedDischarge::default());
        let mut h = DischargeHistory::default();
        // values exact in binary, so they survive the trip through decimal JSON unchanged
        let points = (0..71)
            .map(|i| CurvePoint { t_s: 20.0 * i as f64, charge_pct: 100.0 - i as f64, load_pct: 40.0 })
            .collect();
        h.record("ups", DischargeRecord { ended_at: String::new(), quantum_pct: 1.0, points }, SystemTime::UNIX_EPOCH);
        h.save(&path).unwrap();
        let loaded = DischargeHistory::load(&path).unwrap();
        assert_eq!(loaded.history, h);
        assert!(loaded.warning.is_none());

        fs::write(&path, b"{ not json").unwrap();
        let loaded = DischargeHistory::load(&path).unwrap();
        assert_eq!(loaded.history, DischargeHistory::default());
        assert!(loaded.warning.unwrap().contains("moved it to"));
        let aside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("discharge.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "the unreadable file is kept");
        assert_eq!(fs::read(aside[0].path()).unwrap(), b"{ not json");
        assert!(!path.exists());
    }
}
