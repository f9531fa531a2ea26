//! Recorded UPS traces and their replay through the same [`Policy`] the daemon runs.
//!
//! A trace is a CSV file with NUT variable names as column headers:
//!
//! ```text
//! # hecate-trace v1
//! t,ups.status,battery.charge,battery.runtime,ups.load
//! 0,OL,100,1919,62
//! 1,OB DISCHRG,100,1812,63
//! 2,,,,
//! ```
//!
//! Lines starting with `#` are comments and are ignored entirely (scorers keep ground truth there,
//! which a policy must never see). Columns are found by header name and may come in any order;
//! only `t` and `ups.status` are required, other known columns (`battery.charge`,
//! `battery.runtime`, `ups.load`, `input.voltage`, `output.voltage`, `battery.voltage`) are read
//! when present and unknown ones are ignored. An empty cell (or `none`) is a value the UPS did not
//! report; a row with an empty `ups.status` is a poll that got no answer ([`Sample::NoData`]).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::{ChargeEstimate, Policy, PolicyConfig};
use crate::power::{PowerReading, Sample, UpsStatus};

/// A problem reading a trace.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file or directory could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a valid trace; `line` is 1-based and counts comment lines.
    #[error("{}line {line}: {message}", .path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Parse {
        /// The file, when parsing one.
        path: Option<PathBuf>,
        /// 1-based line number.
        line: usize,
        /// What is wrong, lowercase.
        message: String,
    },
}

/// The furthest a row may be from the start of its trace, seconds: a week. A trace records one
/// outage (the longest in the shared corpus lasts about 1.5 hours), and a replay visits every
/// poll up to the last row, so a `t` of 1e15 would mean a replay that never ends.
pub const MAX_SPAN_S: f64 = 7.0 * 24.0 * 60.0 * 60.0;

/// One row of a trace: a poll's time and what it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceRow {
    /// Seconds since the start of the trace.
    pub t: f64,
    /// What the poll got.
    pub sample: Sample,
}

/// A parsed trace: rows in time order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// The rows, `t` non-decreasing.
    pub rows: Vec<TraceRow>,
}

#[derive(Debug, Clone, Copy)]
enum Column {
    Time,
    Status,
    Charge,
    Runtime,
    Load,
    InputVoltage,
    OutputVoltage,
    BatteryVoltage,
    Ignored,
}

impl Column {
    fn from_header(name: &str) -> Self {
        match name {
            "t" => Self::Time,
            "ups.status" => Self::Status,
            "battery.charge" => Self::Charge,
            "battery.runtime" => Self::Runtime,
            "ups.load" => Self::Load,
            "input.voltage" => Self::InputVoltage,
            "output.voltage" => Self::OutputVoltage,
            "battery.voltage" => Self::BatteryVoltage,
            _ => Self::Ignored,
        }
    }
}

impl Trace {
    /// Parses trace text. Errors name the 1-based line.
    pub fn parse(text: &str) -> Result<Self, TraceError> {
        let err = |line: usize, message: String| TraceError::Parse { path: None, line, message };
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.trim_start().starts_with('#') && !l.trim().is_empty());

        let Some((header_line, header)) = lines.next() else {
            return Err(err(text.lines().count().max(1), "no header row (expected t,ups.status,...)".into()));
        };
        let names = split_csv(header).map_err(|m| err(header_line, m))?;
        let columns: Vec<Column> = names.iter().map(|n| Column::from_header(n.trim())).collect();
        let require = |want: &str| {
            if names.iter().any(|n| n.trim() == want) {
                Ok(())
            } else {
                Err(err(header_line, format!("header has no {want:?} column")))
            }
        };
        require("t")?;
        require("ups.status")?;

        let mut rows: Vec<TraceRow> = Vec::new();
        for (line, raw) in lines {
            let cells = split_csv(raw).map_err(|m| err(line, m))?;
            if cells.len() != columns.len() {
                return Err(err(line, format!("{} fields where the header has {}", cells.len(), columns.len())));
            }
            let mut t = None;
            let mut status = String::new();
            let mut reading = PowerReading::default();
            for ((column, name), cell) in columns.iter().zip(&names).zip(&cells) {
                let cell = cell.trim();
                let number = || parse_number(cell).map_err(|m| err(line, format!("{}: {m}", name.trim())));
                match column {
                    Column::Time => t = number()?,
                    Column::Status => status = cell.to_string(),
                    Column::Charge => reading.charge_pct = number()?,
                    Column::Runtime => reading.runtime_s = number()?,
                    Column::Load => reading.load_pct = number()?,
                    Column::InputVoltage => reading.input_voltage = number()?,
                    Column::OutputVoltage => reading.output_voltage = number()?,
                    Column::BatteryVoltage => reading.battery_voltage = number()?,
                    Column::Ignored => {}
                }
            }
            let Some(t) = t else {
                return Err(err(line, "t is empty".into()));
            };
            if t.abs() > MAX_SPAN_S {
                return Err(err(
                    line,
                    format!(
                        "t = {t} s is more than a week ({MAX_SPAN_S} s) from the start: a trace records one outage"
                    ),
                ));
            }
            if let Some(prev) = rows.last()
                && t < prev.t
            {
                return Err(err(line, format!("t goes backwards ({t} after {})", prev.t)));
            }
            let sample = if status.is_empty() {
                Sample::NoData { reason: "empty ups.status in trace".into() }
            } else {
                reading.status = UpsStatus::parse(&status);
                Sample::Reading(reading)
            };
            rows.push(TraceRow { t, sample });
        }
        Ok(Self { rows })
    }

    /// Reads and parses a trace file.
    pub fn load(path: &Path) -> Result<Self, TraceError> {
        let text = fs::read_to_string(path).map_err(|source| TraceError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text).map_err(|e| match e {
            TraceError::Parse { line, message, .. } => {
                TraceError::Parse { path: Some(path.to_path_buf()), line, message }
            }
            other => other,
        })
    }

    /// The row in force at time `t`: the last one at or before it.
    pub fn at(&self, t: f64) -> Option<&TraceRow> {
        let n = self.rows.partition_point(|r| r.t <= t);
        n.checked_sub(1).and_then(|i| self.rows.get(i))
    }
}

/// The `*.csv` files in a directory, sorted by name.
pub fn trace_files(dir: &Path) -> Result<Vec<PathBuf>, TraceError> {
    let io = |source| TraceError::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "csv") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Splits one CSV line; double-quoted fields may hold commas and `""` for a quote.
fn split_csv(line: &str) -> Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut was_quoted = false;
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.trim().is_empty() && !was_quoted => {
                cell.clear();
                quoted = true;
                was_quoted = true;
            }
            (false, ',') => {
                cells.push(std::mem::take(&mut cell));
                was_quoted = false;
            }
            (false, c) => cell.push(c),
        }
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    cells.push(cell);
    Ok(cells)
}

fn parse_number(cell: &str) -> Result<Option<f64>, String> {
    if cell.is_empty() || cell.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    match cell.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(format!("{cell:?} is not a number")),
    }
}

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplayResult {
    /// The poll time of the first trigger, seconds; none if the policy never triggered.
    pub triggered_at: Option<f64>,
    /// The policy's reason for the trigger.
    pub reason: Option<String>,
    /// What the own estimate rested on at the trigger, when there was one.
    #[serde(default)]
    pub charge_model: Option<ChargeEstimate>,
}

/// Replays a trace through a fresh [`Policy`] polling every `poll_interval_s` seconds on a virtual
/// clock: polls at t = 0, p, 2p, … up to the last row, each seeing the row at or just before its
/// time (polls before the first row see nothing and are skipped). Stops at the first trigger.
/// A `poll_interval_s` that is not a positive number replays every row instead.
pub fn replay(trace: &Trace, cfg: &PolicyConfig, budget_s: f64, poll_interval_s: f64) -> ReplayResult {
    let mut policy = Policy::new(cfg.clone());
    let Some(last) = trace.rows.last() else {
        return ReplayResult::default();
    };
    let polls: Box<dyn Iterator<Item = (f64, &TraceRow)>> = if poll_interval_s.is_finite() && poll_interval_s > 0.0 {
        let end = last.t;
        Box::new(
            (0u64..)
                .map(move |i| i as f64 * poll_interval_s)
                .take_while(move |t| *t <= end)
                .filter_map(|t| trace.at(t).map(|row| (t, row))),
        )
    } else {
        Box::new(trace.rows.iter().map(|row| (row.t, row)))
    };
    for (t, row) in polls {
        let decision = policy.observe(t, &row.sample, budget_s);
        if decision.triggered {
            return ReplayResult {
                triggered_at: decision.triggered_at.or(Some(t)),
                reason: Some(decision.reason),
                charge_model: decision.charge_model,
            };
        }
    }
    ReplayResult::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_quoted_fields() {
        assert_eq!(split_csv(r#"1,"OB, DISCHRG","say ""hi""""#).unwrap(), vec!["1", "OB, DISCHRG", r#"say "hi""#]);
        assert!(split_csv(r#"1,"open"#).is_err());
    }
}
