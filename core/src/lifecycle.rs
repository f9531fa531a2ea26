//! Lifecycle replay: the [`Supervisor`] on virtual time, in a small model of the world around it
//! (the power sources, runs that take time, the journal they leave, a coordinator, restarts of
//! the daemon), so whole outage stories run in milliseconds. `hecate simulate --lifecycle` and
//! the supervisor's story tests use it.
//!
//! The model is deliberately plain: a shutdown takes `shutdown_s` and journals `shutdown_steps`
//! evenly spread steps, a startup takes `startup_s`, a forward or clear is answered after
//! `peer_latency_s`. What is modelled is what the supervisor can see: samples, run ends, peer
//! answers, and what a restart finds in the journal.

use std::collections::VecDeque;

use serde::Serialize;

use crate::engine::{JournalSummary, Outcome};
use crate::notify::EventKind;
use crate::plan::PlanKind;
use crate::power::{PowerReading, Sample, UpsStatus};
use crate::supervisor::{Effect, Input, Level, PeerMessage, PhaseKind, RunEnd, RunId, Supervisor, SupervisorConfig};

/// One thing that happened in a replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Happening {
    /// The supervisor entered a phase.
    Phase {
        /// Which.
        phase: PhaseKind,
    },
    /// A run began.
    RunStarted {
        /// Shutdown or startup.
        kind: PlanKind,
        /// Why.
        reason: String,
        /// It continues a journal.
        resume: bool,
    },
    /// A run could not start (injected).
    RunNotStarted {
        /// Shutdown or startup.
        kind: PlanKind,
        /// Why.
        error: String,
    },
    /// A run ended.
    RunFinished {
        /// Shutdown or startup.
        kind: PlanKind,
    },
    /// A run was aborted.
    RunAborted {
        /// Shutdown or startup.
        kind: PlanKind,
    },
    /// A notification.
    Notified {
        /// What.
        kind: EventKind,
        /// In words.
        message: String,
    },
    /// The trigger went to the coordinator.
    Forwarded {
        /// Why.
        reason: String,
    },
    /// The clear went to the coordinator.
    ClearSent,
    /// This host was told to power off.
    PoweredOffSelf,
    /// A startup of another process was asked to stop.
    StoppedOtherRun,
    /// The interrupted journal was closed.
    JournalClosed {
        /// Why.
        why: String,
    },
    /// The daemon restarted.
    Restarted,
    /// An operator ran a startup by hand.
    OperatorStartup,
    /// A warning or error the supervisor logged.
    Logged {
        /// The line.
        message: String,
    },
}

/// A happening and when.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// Seconds of virtual time.
    pub t: f64,
    /// What.
    #[serde(flatten)]
    pub what: Happening,
}

/// The power a source reports, as a function of virtual time.
pub type PowerFn = Box<dyn FnMut(f64) -> Sample>;

#[derive(Debug, Clone)]
struct RunningRun {
    id: RunId,
    kind: PlanKind,
    ends_at: f64,
}

/// What the state dir holds of a shutdown in progress.
#[derive(Debug, Clone)]
struct JournalModel {
    started_at: f64,
    /// Steps already done by earlier attempts.
    done_before: usize,
    /// When the current attempt began (`None` while no attempt runs).
    attempt_from: Option<f64>,
    last_write: f64,
}

/// A replay: the supervisor and its world. See the module doc.
pub struct Replay {
    cfg: SupervisorConfig,
    /// The supervisor (replaced by a new one at each restart).
    pub sup: Supervisor,
    names: Vec<String>,
    power: Vec<PowerFn>,
    /// Virtual time, seconds.
    pub now: f64,
    /// Seconds between polls.
    pub poll_s: f64,
    /// The budget handed to the policies.
    pub budget_s: f64,
    /// How long a whole shutdown takes.
    pub shutdown_s: f64,
    /// How many steps a shutdown journals.
    pub shutdown_steps: usize,
    /// How long a startup takes.
    pub startup_s: f64,
    /// Seconds before a forward or clear is answered.
    pub peer_latency_s: f64,
    /// Whether the coordinator takes forwards and clears (forwarder replays).
    pub coordinator_up: bool,
    /// The next runs that cannot start get these errors, in order.
    pub start_failures: VecDeque<RunEnd>,
    run: Option<RunningRun>,
    journal: Option<JournalModel>,
    inbox: Vec<(f64, Input)>,
    /// When the next poll happens: at 0, then every `poll_s`, as `trace::replay` polls.
    next_poll: f64,
    last_phase: Option<PhaseKind>,
    /// The cluster is up (it starts up; shutdowns take it down, startups bring it back).
    pub cluster_up: bool,
    /// What happened, in order.
    pub timeline: Vec<Entry>,
}

impl std::fmt::Debug for Replay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replay").field("now", &self.now).field("phase", self.sup.phase()).finish_non_exhaustive()
    }
}

impl Replay {
    /// A replay of named sources, each reporting what its function says; the daemon starts at 0.
    pub fn new(cfg: SupervisorConfig, sources: Vec<(String, PowerFn)>) -> Self {
        let (names, power): (Vec<String>, Vec<PowerFn>) = sources.into_iter().unzip();
        let sup = Supervisor::new(cfg.clone(), names.clone());
        let mut r = Self {
            cfg,
            sup,
            names,
            power,
            now: 0.0,
            poll_s: 2.0,
            budget_s: 240.0,
            shutdown_s: 240.0,
            shutdown_steps: 12,
            startup_s: 180.0,
            peer_latency_s: 1.0,
            coordinator_up: true,
            start_failures: VecDeque::new(),
            run: None,
            journal: None,
            inbox: Vec::new(),
            next_poll: 0.0,
            last_phase: None,
            cluster_up: true,
            timeline: Vec::new(),
        };
        r.feed(Input::Start { interrupted: None, startup_interrupted: false });
        r
    }

    fn record(&mut self, what: Happening) {
        self.timeline.push(Entry { t: self.now, what });
    }

    /// Feeds one input now and carries out its effects in the model.
    pub fn feed(&mut self, input: Input) {
        let effects = self.sup.step(self.now, input);
        for e in effects {
            self.carry_out(e);
        }
        let phase = self.sup.phase().kind();
        if self.last_phase != Some(phase) {
            self.last_phase = Some(phase);
            self.record(Happening::Phase { phase });
        }
    }

    fn carry_out(&mut self, effect: Effect) {
        match effect {
            Effect::StartRun { run, kind, reason, resume, .. } => {
                if let Some(end) = self.start_failures.pop_front() {
                    if let RunEnd::NotStarted { error, .. } | RunEnd::Crashed(error) = &end {
                        self.record(Happening::RunNotStarted { kind, error: error.clone() });
                    }
                    self.inbox.push((self.now, Input::RunEnded { run, end }));
                    return;
                }
                let mut length = if kind == PlanKind::Shutdown { self.shutdown_s } else { self.startup_s };
                if kind == PlanKind::Shutdown {
                    let step = self.shutdown_s / self.shutdown_steps.max(1) as f64;
                    match (&mut self.journal, resume) {
                        (Some(j), true) => {
                            length = (self.shutdown_steps.saturating_sub(j.done_before)) as f64 * step;
                            j.attempt_from = Some(self.now);
                            j.last_write = self.now;
                        }
                        _ => {
                            self.journal = Some(JournalModel {
                                started_at: self.now,
                                done_before: 0,
                                attempt_from: Some(self.now),
                                last_write: self.now,
                            })
                        }
                    }
                }
                self.record(Happening::RunStarted { kind, reason, resume });
                self.run = Some(RunningRun { id: run, kind, ends_at: self.now + length });
            }
            Effect::AbortRun { run } => {
                if let Some(r) = self.run.take_if(|r| r.id == run) {
                    self.record(Happening::RunAborted { kind: r.kind });
                }
            }
            Effect::StopOtherRun { .. } => self.record(Happening::StoppedOtherRun),
            Effect::CloseInterrupted { why } => {
                self.journal = None;
                self.record(Happening::JournalClosed { why });
            }
            Effect::Notify { kind, message, .. } => self.record(Happening::Notified { kind, message }),
            Effect::Forward { reason, .. } => {
                self.record(Happening::Forwarded { reason });
                let answer = if self.coordinator_up { Ok("accepted".into()) } else { Err("unreachable".into()) };
                self.inbox.push((self.now + self.peer_latency_s, Input::Forwarded(answer)));
            }
            Effect::SendClear { .. } => {
                self.record(Happening::ClearSent);
                let answer = if self.coordinator_up { Ok("accepted".into()) } else { Err("unreachable".into()) };
                self.inbox.push((self.now + self.peer_latency_s, Input::Cleared(answer)));
            }
            Effect::PowerOffSelf { .. } => self.record(Happening::PoweredOffSelf),
            // The replay keeps no discharge history: each replay starts from what it is given.
            Effect::RecordDischarge { .. } => {}
            // The replay's supervisor runs no preflight (it is off unless asked for).
            Effect::RunPreflight | Effect::AbortPreflight => {}
            Effect::Log { level: Level::Warn | Level::Error, message } => self.record(Happening::Logged { message }),
            Effect::Log { .. } => {}
        }
    }

    /// Delivers a forwarder's message to this (coordinator) supervisor at `t`.
    pub fn peer_at(&mut self, t: f64, from: &str, message: PeerMessage) {
        self.inbox.push((t, Input::Peer { from: from.into(), address: "192.0.2.1:40000".into(), message }));
    }

    fn journal_summary(&self) -> Option<JournalSummary> {
        let j = self.journal.as_ref()?;
        let step = self.shutdown_s / self.shutdown_steps.max(1) as f64;
        let in_attempt = j.attempt_from.map_or(0, |from| ((self.now - from) / step) as usize);
        let finished = (j.done_before + in_attempt).min(self.shutdown_steps);
        Some(JournalSummary {
            kind: PlanKind::Shutdown,
            reason: Some("replayed".into()),
            started_at: Some(format!("t={:.0}", j.started_at)),
            steps_started: (finished + 1).min(self.shutdown_steps),
            steps_finished: finished,
            age_s: Some(self.now - j.last_write),
            readable: true,
        })
    }

    /// The daemon stops now (killed, or its host lost power) and starts again `offline_s` later
    /// with what the state dir holds. A run in progress stops where it is.
    pub fn restart(&mut self, offline_s: f64) {
        if let Some(summary) = self.journal_summary()
            && let Some(j) = &mut self.journal
        {
            j.done_before = summary.steps_finished;
            j.attempt_from = None;
            j.last_write = self.now;
        }
        self.run = None;
        self.inbox.clear();
        self.now += offline_s.max(0.0);
        self.next_poll = self.now;
        self.sup = Supervisor::new(self.cfg.clone(), self.names.clone());
        self.last_phase = None;
        self.record(Happening::Restarted);
        let interrupted = self.journal_summary();
        self.feed(Input::Start { interrupted, startup_interrupted: false });
    }

    /// An operator runs the startup by hand (the supervisor does not see it).
    pub fn operator_startup(&mut self) {
        self.cluster_up = true;
        self.record(Happening::OperatorStartup);
    }

    /// Runs the world until `t`: polls at 0 and every `poll_s` after, run ends and answers in
    /// between.
    pub fn run_until(&mut self, t: f64) {
        loop {
            let next_poll = self.next_poll;
            let run_end = self.run.as_ref().map(|r| r.ends_at);
            let inbox = self.inbox.iter().map(|(at, _)| *at).reduce(f64::min);
            let next = [Some(next_poll), run_end, inbox].into_iter().flatten().fold(f64::INFINITY, f64::min);
            if next > t {
                self.now = self.now.max(t);
                return;
            }
            self.now = self.now.max(next);
            if let Some(i) = self.inbox.iter().position(|(at, _)| *at <= self.now) {
                let (_, input) = self.inbox.remove(i);
                self.feed(input);
            } else if run_end.is_some_and(|e| e <= self.now) {
                if let Some(r) = self.run.take() {
                    if r.kind == PlanKind::Shutdown {
                        self.journal = None;
                        self.cluster_up = false;
                    } else {
                        self.cluster_up = true;
                    }
                    self.record(Happening::RunFinished { kind: r.kind });
                    self.feed(Input::RunEnded { run: r.id, end: RunEnd::Finished(Outcome::Success) });
                }
            } else {
                let now = self.now;
                self.next_poll = now + self.poll_s;
                let samples = self.power.iter_mut().map(|p| p(now)).collect();
                let budget_s = self.budget_s;
                self.feed(Input::Poll { samples, budget_s });
            }
        }
    }

    /// The runs started, in order: (time, kind, resume).
    pub fn runs_started(&self) -> Vec<(f64, PlanKind, bool)> {
        self.timeline
            .iter()
            .filter_map(|e| match &e.what {
                Happening::RunStarted { kind, resume, .. } => Some((e.t, *kind, *resume)),
                _ => None,
            })
            .collect()
    }
}

/// A UPS for stories: mains fail during each `(from, to)` window (`to` may be infinite); on
/// battery the charge falls by `drain_pct_s` per second and the firmware's runtime says what is
/// left at that rate; on mains it recharges ten times slower. `LB` below 10 %.
#[derive(Debug, Clone)]
pub struct StoryUps {
    /// Outage windows, seconds.
    pub outages: Vec<(f64, f64)>,
    /// Percent per second on battery.
    pub drain_pct_s: f64,
    /// Times at which the UPS gives no data (`(from, to)`).
    pub silent: Vec<(f64, f64)>,
    charge: f64,
    last_t: f64,
}

impl StoryUps {
    /// A full UPS with these outages, lasting `full_runtime_s` on battery.
    pub fn new(outages: Vec<(f64, f64)>, full_runtime_s: f64) -> Self {
        Self { outages, drain_pct_s: 100.0 / full_runtime_s.max(1.0), silent: Vec::new(), charge: 100.0, last_t: 0.0 }
    }

    /// Whether mains are out at `t`.
    pub fn on_battery(&self, t: f64) -> bool {
        self.outages.iter().any(|(a, b)| t >= *a && t < *b)
    }

    /// The sample at `t` (times must not go backwards).
    pub fn sample(&mut self, t: f64) -> Sample {
        let dt = (t - self.last_t).max(0.0);
        self.last_t = t;
        let ob = self.on_battery(t);
        self.charge = if ob { self.charge - dt * self.drain_pct_s } else { self.charge + dt * self.drain_pct_s / 10.0 }
            .clamp(0.0, 100.0);
        if self.silent.iter().any(|(a, b)| t >= *a && t < *b) {
            return Sample::NoData { reason: "story: silent".into() };
        }
        let mut status = if ob { "OB DISCHRG" } else { "OL CHRG" }.to_string();
        if ob && self.charge < 10.0 {
            status.push_str(" LB");
        }
        Sample::Reading(PowerReading {
            status: UpsStatus::parse(&status),
            charge_pct: Some(self.charge.round()),
            runtime_s: Some((self.charge / self.drain_pct_s).round()),
            load_pct: Some(50.0),
            ..PowerReading::default()
        })
    }

    /// As a [`PowerFn`].
    pub fn into_fn(mut self) -> PowerFn {
        Box::new(move |t| self.sample(t))
    }
}
