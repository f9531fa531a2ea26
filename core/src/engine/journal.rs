//! The run journal: one JSON line per step start and end, fsynced, so that a run interrupted by
//! a crash or a kill resumes without executing a finished step again.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::StepOutcome;
use crate::plan::PlanKind;

/// A journal that could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}")]
pub struct JournalError {
    /// The journal file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Line {
    Run { kind: PlanKind, reason: String, started_at: String },
    Start { step: String, at: String },
    End { at: String, outcome: StepOutcome },
}

/// What the journal of an unfinished run holds: enough to decide whether to resume it, without
/// trusting any number in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalSummary {
    /// The run's kind.
    pub kind: PlanKind,
    /// Why it ran, as journaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it started, as journaled (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Steps it began.
    pub steps_started: usize,
    /// Steps it finished.
    pub steps_finished: usize,
    /// Seconds since the journal was last written, when the clock can tell (a clock that went
    /// backwards, as one may at boot before it is synchronised, cannot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_s: Option<f64>,
    /// Whether the file could be read at all.
    pub readable: bool,
}

/// An open journal for one run.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    started_at: Option<String>,
    finished: HashMap<String, StepOutcome>,
    earlier_elapsed_s: f64,
    resumed: bool,
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl Journal {
    /// The journal file of a plan kind in a state dir.
    pub fn path_for(state_dir: &Path, kind: PlanKind) -> PathBuf {
        state_dir.join(format!("journal-{kind}.jsonl"))
    }

    /// Whether an unfinished run of this kind is waiting to be resumed.
    pub fn pending(state_dir: &Path, kind: PlanKind) -> bool {
        Self::path_for(state_dir, kind).exists()
    }

    /// What an unfinished run's journal holds, if there is one. `now` is the wall clock, for the
    /// journal's age. Lines that do not parse (one cut short by a crash) are skipped.
    pub fn inspect(state_dir: &Path, kind: PlanKind, now: SystemTime) -> Option<JournalSummary> {
        let path = Self::path_for(state_dir, kind);
        let meta = std::fs::metadata(&path).ok()?;
        let age_s = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).map(|d| d.as_secs_f64());
        let mut summary = JournalSummary {
            kind,
            reason: None,
            started_at: None,
            steps_started: 0,
            steps_finished: 0,
            age_s,
            readable: true,
        };
        let Ok(f) = File::open(&path) else {
            summary.readable = false;
            return Some(summary);
        };
        for line in BufReader::new(f).lines() {
            let Ok(line) = line else {
                summary.readable = summary.steps_started > 0 || summary.started_at.is_some();
                break;
            };
            match serde_json::from_str::<Line>(&line) {
                Ok(Line::Run { reason, started_at, .. }) => {
                    summary.reason = Some(reason);
                    summary.started_at = Some(started_at);
                }
                Ok(Line::Start { .. }) => summary.steps_started += 1,
                Ok(Line::End { .. }) => summary.steps_finished += 1,
                Err(_) => {}
            }
        }
        Some(summary)
    }

    /// Closes an unfinished run's journal without resuming it: the file is renamed to
    /// `journal-KIND.jsonl.interrupted-<unix time>` (kept for the record, never deleted).
    pub fn set_aside(state_dir: &Path, kind: PlanKind, now: SystemTime) -> Result<PathBuf, JournalError> {
        let path = Self::path_for(state_dir, kind);
        let secs = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let aside = path.with_extension(format!("jsonl.interrupted-{secs}"));
        std::fs::rename(&path, &aside).map_err(|source| JournalError { path: path.clone(), source })?;
        Ok(aside)
    }

    /// Opens the journal: continues an unfinished run when `resume` is set and one exists,
    /// otherwise starts a new one (an old unfinished journal is moved aside, never deleted).
    pub fn open(state_dir: &Path, kind: PlanKind, reason: &str, resume: bool) -> Result<Journal, JournalError> {
        let path = Self::path_for(state_dir, kind);
        let err = |source| JournalError { path: path.clone(), source };
        std::fs::create_dir_all(state_dir).map_err(err)?;
        let mut started_at = None;
        let mut finished = HashMap::new();
        let mut earlier = 0.0;
        let mut resumed = false;
        if path.exists() {
            if resume {
                let f = File::open(&path).map_err(err)?;
                for line in BufReader::new(f).lines() {
                    // A line cut short by the crash is not valid JSON: the step is simply redone.
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Line>(&line) {
                        Ok(Line::Run { started_at: s, .. }) => started_at = Some(s),
                        Ok(Line::End { mut outcome, .. }) => {
                            // A damaged line must not make the run's duration impossible (the
                            // run would then fail to be recorded, and resume at every start).
                            if !crate::duration::is_physical_duration(outcome.duration_s) {
                                tracing::warn!(
                                    step = %outcome.id,
                                    duration_s = outcome.duration_s,
                                    journal = %path.display(),
                                    "a finished step in the journal has an impossible duration; counting it as 0 s"
                                );
                                outcome.duration_s = 0.0;
                            }
                            earlier += outcome.duration_s;
                            finished.insert(outcome.id.clone(), outcome);
                        }
                        Ok(Line::Start { .. }) | Err(_) => {}
                    }
                }
                resumed = true;
            } else {
                let aside = path.with_extension(format!(
                    "jsonl.abandoned-{}",
                    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
                ));
                std::fs::rename(&path, &aside).map_err(err)?;
                tracing::warn!(old = %aside.display(), "an unfinished {kind} run was not resumed; its journal was moved aside");
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(err)?;
        let mut j = Journal { path, file, started_at, finished, earlier_elapsed_s: earlier, resumed };
        if j.started_at.is_none() {
            let at = now();
            if let Err(e) = j.append(&Line::Run { kind, reason: reason.to_string(), started_at: at.clone() }) {
                // A journal without its first line (a full disk) would later look like an
                // interrupted run: leave none behind.
                let _ = std::fs::remove_file(&j.path);
                return Err(e);
            }
            j.started_at = Some(at);
        }
        Ok(j)
    }

    /// Whether this journal continues an earlier run.
    pub fn is_resumed(&self) -> bool {
        self.resumed
    }

    /// When the run (possibly an earlier, interrupted attempt) started.
    pub fn started_at(&self) -> Option<&str> {
        self.started_at.as_deref()
    }

    /// Seconds spent in steps finished by earlier attempts (an estimate of time lost to the crash
    /// is not included).
    pub fn earlier_elapsed_s(&self) -> f64 {
        if self.resumed { self.earlier_elapsed_s } else { 0.0 }
    }

    /// The outcome of a step finished by an earlier attempt.
    pub fn finished(&self, id: &str) -> Option<StepOutcome> {
        self.finished.get(id).cloned()
    }

    fn append(&mut self, line: &Line) -> Result<(), JournalError> {
        let mut s = serde_json::to_string(line)
            .map_err(|e| JournalError { path: self.path.clone(), source: std::io::Error::other(e) })?;
        s.push('\n');
        let r = self.file.write_all(s.as_bytes()).and_then(|()| self.file.sync_data());
        r.map_err(|source| JournalError { path: self.path.clone(), source })
    }

    /// Records a step's start.
    pub fn step_started(&mut self, id: &str) -> Result<(), JournalError> {
        self.append(&Line::Start { step: id.to_string(), at: now() })
    }

    /// Records a step's end.
    pub fn step_finished(&mut self, outcome: &StepOutcome) -> Result<(), JournalError> {
        self.append(&Line::End { at: now(), outcome: outcome.clone() })?;
        self.finished.insert(outcome.id.clone(), outcome.clone());
        Ok(())
    }

    /// The run is over: the journal is removed so the next run starts fresh.
    pub fn complete(self) -> Result<(), JournalError> {
        std::fs::remove_file(&self.path).map_err(|source| JournalError { path: self.path.clone(), source })
    }
}
