//! The run history: `runs.json` in the state directory, a JSON array of [`RunRecord`]s.
//!
//! Nothing in it is ever lost: fields this version does not know are kept and written back, and a
//! file that cannot be read as a history is moved aside to `runs.json.corrupt-<timestamp>` (with a
//! warning) rather than overwritten. Writes are atomic: a temporary file in the same directory is
//! written and fsynced, renamed over the old file, and the directory is fsynced, so a crash leaves
//! either the old or the new history. Appends hold an exclusive lock on `runs.json.lock` so two
//! processes appending at once do not lose a record.
//!
//! These are blocking file operations; async callers run them on a blocking thread.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::engine::{Outcome, RunReport};
use crate::plan::{PlanFingerprint, PlanKind};

/// What kind of run a record is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum RunKind {
    /// A shutdown of the cluster.
    Shutdown,
    /// A startup of the cluster.
    Startup,
    /// One half of a drill (`hecate drill`): a real shutdown or startup in a maintenance window;
    /// [`RunRecord::part`] says which.
    Drill,
    /// Any other kind, kept verbatim.
    Other(String),
}

impl From<String> for RunKind {
    fn from(s: String) -> Self {
        match s.as_str() {
            "shutdown" => Self::Shutdown,
            "startup" => Self::Startup,
            "drill" => Self::Drill,
            _ => Self::Other(s),
        }
    }
}

impl From<RunKind> for String {
    fn from(k: RunKind) -> Self {
        k.to_string()
    }
}

impl fmt::Display for RunKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shutdown => "shutdown",
            Self::Startup => "startup",
            Self::Drill => "drill",
            Self::Other(s) => s,
        })
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum RunOutcome {
    /// Every step succeeded.
    Success,
    /// The run failed.
    Failed,
    /// Some steps failed or were skipped, the run went on.
    Partial,
    /// The run stopped part-way (a crash, a power loss) and was closed without being resumed.
    Interrupted,
    /// Any other outcome, kept verbatim.
    Other(String),
}

impl RunOutcome {
    /// Every outcome but [`RunOutcome::Other`].
    pub const KNOWN: [RunOutcome; 4] = [Self::Success, Self::Partial, Self::Failed, Self::Interrupted];
}

impl From<String> for RunOutcome {
    fn from(s: String) -> Self {
        match s.as_str() {
            "success" => Self::Success,
            "failed" => Self::Failed,
            "partial" => Self::Partial,
            "interrupted" => Self::Interrupted,
            _ => Self::Other(s),
        }
    }
}

impl From<RunOutcome> for String {
    fn from(o: RunOutcome) -> Self {
        o.to_string()
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Success => "success",
            Self::Failed => "failed",
            Self::Partial => "partial",
            Self::Interrupted => "interrupted",
            Self::Other(s) => s,
        })
    }
}

/// How long one stage of a run took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageDuration {
    /// The stage's name.
    pub name: String,
    /// Seconds.
    pub duration_s: f64,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One shutdown or startup run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `shutdown` or `startup`.
    pub kind: RunKind,
    /// When the run started, RFC 3339 (`2026-01-04T02:11:09Z`).
    pub started_at: String,
    /// How long the run took, seconds.
    pub duration_s: f64,
    /// `success`, `failed`, `partial`, …
    pub outcome: RunOutcome,
    /// Why the run happened (for a shutdown, the policy's trigger reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_reason: Option<String>,
    /// How long each stage took, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageDuration>,
    /// For a shutdown, what its plan covered: the budget learns only from runs of the current
    /// plan. Absent in records written before Hecate recorded it (see [`crate::budget`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanFingerprint>,
    /// For a drill: which half it was, `shutdown` or `startup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<PlanKind>,
    /// Fields this version does not know, kept as they were.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl RunRecord {
    /// Which plan the run carried out: its kind, or for a drill its part. A drill's shutdown is
    /// the real shutdown plan, so the budget learns from it as from any shutdown.
    pub fn plan_kind(&self) -> Option<PlanKind> {
        match self.kind {
            RunKind::Shutdown => Some(PlanKind::Shutdown),
            RunKind::Startup => Some(PlanKind::Startup),
            RunKind::Drill => self.part,
            RunKind::Other(_) => None,
        }
    }

    /// A record with no optional fields.
    pub fn new(kind: RunKind, started_at: SystemTime, duration: Duration, outcome: RunOutcome) -> Self {
        Self {
            kind,
            started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
            duration_s: duration.as_secs_f64(),
            outcome,
            trigger_reason: None,
            stages: Vec::new(),
            plan: None,
            part: None,
            extra: serde_json::Map::new(),
        }
    }

    /// The record of a finished run: its kind, outcome, times, trigger reason, per-stage
    /// durations, failures (`failures`: one line each), the host that ran it (`host`) and, for a
    /// shutdown, its plan's fingerprint. A duration that is not a finite number of seconds from 0
    /// up (a damaged journal can cause one) is recorded as 0 with a warning: JSON cannot hold
    /// NaN or infinity, and a damaged record must never make runs.json unreadable.
    pub fn from_report(report: &RunReport, host: &str, plan: Option<PlanFingerprint>) -> Self {
        let kind = match report.kind {
            PlanKind::Shutdown => RunKind::Shutdown,
            PlanKind::Startup => RunKind::Startup,
        };
        let outcome = match report.outcome {
            Outcome::Success => RunOutcome::Success,
            Outcome::Partial => RunOutcome::Partial,
            Outcome::Failed => RunOutcome::Failed,
        };
        let finite = |what: &str, secs: f64| {
            if secs.is_finite() && secs >= 0.0 {
                secs
            } else {
                tracing::warn!(duration_s = secs, "the {what} has no possible duration; recording 0 s");
                0.0
            }
        };
        // A journal's start time has milliseconds; records have whole seconds.
        let started = humantime::parse_rfc3339_weak(report.started_at.trim()).unwrap_or_else(|_| SystemTime::now());
        let failures: Vec<String> = report.failures().map(|f| format!("{}: {}", f.description, f.message)).collect();
        let mut extra = serde_json::Map::new();
        if !failures.is_empty() {
            extra.insert("failures".into(), serde_json::json!(failures));
        }
        extra.insert("host".into(), serde_json::json!(host));
        Self {
            kind,
            started_at: humantime::format_rfc3339_seconds(started).to_string(),
            duration_s: finite("run", report.duration_s),
            outcome,
            trigger_reason: Some(report.reason.clone()),
            stages: report
                .stages
                .iter()
                .map(|s| StageDuration {
                    name: s.name.clone(),
                    duration_s: finite(&format!("stage {}", s.name), s.duration_s),
                    extra: serde_json::Map::new(),
                })
                .collect(),
            plan,
            part: None,
            extra,
        }
    }

    /// Its texts as runs.json may keep them: a step's message may carry a peer's answer (a BMC's
    /// error body, an API's message), cleaned and bounded here (see [`crate::text`]).
    pub fn sanitize(&mut self) {
        use crate::text::{MESSAGE_CHARS, clean, clean_map, needs_cleaning};
        if let Some(r) = self.trigger_reason.as_mut().filter(|r| needs_cleaning(r, MESSAGE_CHARS)) {
            *r = clean(r, MESSAGE_CHARS);
        }
        clean_map(&mut self.extra, MESSAGE_CHARS);
    }

    /// `started_at` as a time, if it parses.
    pub fn started_at_time(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(self.started_at.trim()).ok()
    }
}

/// A problem reading or writing the history that could not be worked around.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done, e.g. "cannot read".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The history could not be turned into JSON (not expected: it came from JSON).
    #[error("cannot encode the run history: {0}")]
    Encode(#[from] serde_json::Error),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> HistoryError + 'a {
    move |source| HistoryError::Io { action, path: path.to_path_buf(), source }
}

/// The runs in `runs.json`, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History {
    /// The records, in file order.
    pub runs: Vec<RunRecord>,
}

/// A loaded history and, if the file could not be used, what was done about it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    /// The history (empty if the file was missing or unusable).
    pub history: History,
    /// Set when the file was unusable: what was wrong and where it was moved. Also logged.
    pub warning: Option<String>,
}

impl History {
    /// Reads the history. A missing file is an empty history. A file that is not a JSON array of
    /// run records is moved aside to `<name>.corrupt-<timestamp>` and an empty history is
    /// returned with a warning (also logged); an empty file is an empty history with a warning.
    /// Fails only when the file exists but cannot be read or moved aside.
    pub fn load(path: &Path) -> Result<Loaded, HistoryError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::default()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Self::set_aside(path, "it is not valid UTF-8".to_string());
            }
            Err(e) => return Err(io_err("cannot read", path)(e)),
        };
        if text.trim().is_empty() {
            let warning = format!("run history {} is empty; starting a new one", path.display());
            tracing::warn!("{warning}");
            return Ok(Loaded { history: History::default(), warning: Some(warning) });
        }
        match serde_json::from_str::<Vec<RunRecord>>(&text) {
            Ok(runs) => Ok(Loaded { history: History { runs }, warning: None }),
            Err(e) => Self::set_aside(path, e.to_string()),
        }
    }

    fn set_aside(path: &Path, problem: String) -> Result<Loaded, HistoryError> {
        let aside = corrupt_path(path, SystemTime::now());
        fs::rename(path, &aside).map_err(io_err("cannot move aside the unreadable", path))?;
        sync_parent(path)?;
        let warning = format!(
            "run history {} is not a list of run records ({problem}); moved it to {} and started a new one",
            path.display(),
            aside.display()
        );
        tracing::warn!("{warning}");
        Ok(Loaded { history: History::default(), warning: Some(warning) })
    }

    /// Writes the history to `path` atomically (see the module docs).
    pub fn save(&self, path: &Path) -> Result<(), HistoryError> {
        let mut json = serde_json::to_string_pretty(&self.runs)?;
        json.push('\n');
        write_atomic(path, json.as_bytes())
    }

    /// Appends one record to the history at `path`: reads it (setting an unusable file aside as
    /// [`History::load`] does), adds the record and writes it back atomically, holding an
    /// exclusive lock on `<path>.lock` meanwhile. The record's texts are cleaned first
    /// ([`RunRecord::sanitize`]). Returns the new history and any warning.
    pub fn append(path: &Path, record: RunRecord) -> Result<Loaded, HistoryError> {
        let mut record = record;
        record.sanitize();
        let lock_path = sibling(path, ".lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err("cannot open", &lock_path))?;
        lock.lock().map_err(io_err("cannot lock", &lock_path))?;
        let mut loaded = Self::load(path)?;
        loaded.history.runs.push(record);
        loaded.history.save(path)?;
        // the lock is released when `lock` is dropped
        drop(lock);
        Ok(loaded)
    }
}

/// `<path><suffix>` (suffix appended to the file name).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "runs.json".into());
    name.push(suffix);
    path.with_file_name(name)
}

/// `runs.json.corrupt-20260104T021109Z`, with `-2`, `-3`… if that name is taken.
pub(crate) fn corrupt_path(path: &Path, now: SystemTime) -> PathBuf {
    let stamp: String =
        humantime::format_rfc3339_seconds(now).to_string().chars().filter(|c| *c != '-' && *c != ':').collect();
    let base = sibling(path, &format!(".corrupt-{stamp}"));
    let mut candidate = base.clone();
    let mut n = 2;
    while candidate.exists() {
        candidate = sibling(&base, &format!("-{n}"));
        n += 1;
    }
    candidate
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

pub(crate) fn sync_parent(path: &Path) -> Result<(), HistoryError> {
    let dir = parent_dir(path);
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("cannot sync directory", dir))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one: a temporary
/// file in the same directory, fsynced, renamed over `path`, then the directory fsynced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HistoryError> {
    replace(path, bytes, true)
}

/// Replaces `path` with `bytes` the way [`write_atomic`] does, without the two fsyncs: a reader
/// never sees half a file, but a crash may lose the new one (or, on some file systems, leave it
/// empty). For a view that is rewritten every poll and never read back to decide anything (the
/// daemon's status.json): syncing it would flush the disk twice per poll, tens of thousands of
/// times a day for years, on what is often flash.
pub fn replace_unsynced(path: &Path, bytes: &[u8]) -> Result<(), HistoryError> {
    replace(path, bytes, false)
}

fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<(), HistoryError> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = sibling(path, &format!(".tmp-{}-{nanos}", std::process::id()));
    let result = (|| {
        let mut file =
            OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io_err("cannot create", &tmp))?;
        file.write_all(bytes).map_err(io_err("cannot write", &tmp))?;
        if durable {
            file.sync_all().map_err(io_err("cannot sync", &tmp))?;
        }
        drop(file);
        fs::rename(&tmp, path).map_err(io_err("cannot replace", path))?;
        if durable { sync_parent(path) } else { Ok(()) }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(d: f64) -> RunRecord {
        RunRecord::new(
            RunKind::Shutdown,
            UNIX_EPOCH + Duration::from_secs(1_767_000_000),
            Duration::from_secs_f64(d),
            RunOutcome::Success,
        )
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = History::load(&dir.path().join("runs.json")).unwrap();
        assert!(loaded.history.runs.is_empty());
        assert!(loaded.warning.is_none());
    }

    #[test]
    fn corrupt_file_is_moved_aside_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.json");
        fs::write(&path, "[{\"kind\": \"shutdown\", truncated").unwrap();
        let loaded = History::load(&path).unwrap();
        assert!(loaded.history.runs.is_empty());
        let warning = loaded.warning.unwrap();
        assert!(warning.contains("moved it to"), "{warning}");
        assert!(!path.exists());
        let aside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("runs.json.corrupt-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        assert_eq!(fs::read_to_string(dir.path().join(&aside[0])).unwrap(), "[{\"kind\": \"shutdown\", truncated");

        // a second corrupt file in the same second gets its own name
        fs::write(&path, "not json").unwrap();
        History::load(&path).unwrap();
        let count = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("runs.json.corrupt-"))
            .count();
        assert_eq!(count, 2);
    }

    #[test]
    fn append_after_corrupt_keeps_the_corrupt_copy_and_the_new_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.json");
        fs::write(&path, "{}").unwrap();
        let loaded = History::append(&path, record(200.0)).unwrap();
        assert!(loaded.warning.is_some());
        let again = History::load(&path).unwrap();
        assert_eq!(again.history.runs, vec![record(200.0)]);
    }

    /// Both ways of replacing a file: durable (state) and unsynced (the per-poll view).
    type Writer = fn(&Path, &[u8]) -> Result<(), HistoryError>;
    const WRITERS: [(&str, Writer); 2] = [("write_atomic", write_atomic), ("replace_unsynced", replace_unsynced)];

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_files() {
        for (name, write) in WRITERS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("runs.json");
            write(&path, b"old").unwrap();
            write(&path, b"new").unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), "new", "{name}");
            let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec![std::ffi::OsString::from("runs.json")], "{name}");
        }
    }

    #[test]
    fn atomic_write_failure_keeps_the_old_file() {
        for (name, write) in WRITERS {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("runs.json");
            write(&path, b"old").unwrap();
            // renaming a file over a non-empty directory fails: the old content must survive
            let blocked = dir.path().join("blocked");
            fs::create_dir(&blocked).unwrap();
            fs::write(blocked.join("x"), b"x").unwrap();
            assert!(write(&blocked, b"new").is_err(), "{name}");
            assert_eq!(fs::read_to_string(&path).unwrap(), "old", "{name}");
            let leftovers = fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().contains(".tmp-"))
                .count();
            assert_eq!(leftovers, 0, "{name}");
        }
    }
}
