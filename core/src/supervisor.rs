//! The daemon's lifecycle: when to start, resume, retry or abort a run, when to watch again, what
//! to forward. Pure, like [`crate::policy`]: [`Supervisor::step`] takes the time (seconds on the
//! daemon's monotonic clock) and one [`Input`], and returns the [`Effect`]s to carry out. It does
//! no I/O and reads no clock, so the daemon, `hecate simulate --lifecycle` and the tests run the
//! same decisions; the daemon is a shell that feeds inputs in and carries effects out.
//!
//! The supervisor owns one [`Policy`] per power source and feeds it every poll; a *trigger* is a
//! policy latching (or, on a coordinator, a forwarder's trigger).
//!
//! # Phases
//!
//! | phase | meaning |
//! |---|---|
//! | `recovering` | just started, and the journal holds a shutdown that was interrupted (the host lost power or the daemon was killed during it); waiting for readings to tell whether power is still failing |
//! | `watching` | protecting: no run of ours, waiting for a trigger |
//! | `forwarding` | forwarder: sending its trigger to the coordinator |
//! | `forwarded` | forwarder: the coordinator took the trigger; waiting for mains |
//! | `shutdown_queued` | a shutdown is needed but could not start (run lock, descriptors, disk); retried every poll |
//! | `shutting_down` | our shutdown run is in progress |
//! | `shut_down` | the shutdown ran (or an interrupted one was not resumed); waiting for mains to be back and stable |
//! | `starting_up` | our startup run is in progress (`daemon.startup_on_power_return`) |
//!
//! *Mains stable* means every power source has read online (`OL`, not `OB`) on every poll for
//! `daemon.power_return_settle`; a coordinator's automatic startup also waits until every
//! forwarder that triggered has cleared. *Power failing* means a source on battery, a policy
//! latched, or (while recovering) a source still without data after [`RECOVERY_DATA_WAIT_S`].
//!
//! # Transitions
//!
//! | phase | input | effects → next phase |
//! |---|---|---|
//! | any | poll | every source's policy observes its sample; a source going on battery (unless a shutdown is in hand; logged at warn) or back on mains (info) is notified |
//! | any | poll: a source without data for `daemon.deadtime` | notify `comm_lost` once (error); its next reading notifies `comm_restored` (warn) |
//! | any | poll: `LB` / `OVER` appears in a source's status | notify `low_battery` (error) / `overload` (warn) once; again only after it has gone |
//! | any | poll: `RB` in a source's status | notify `replace_battery` (warn), at most once a day while it stays |
//! | (start) | start, no journal | → `watching` |
//! | (start) | start, journal empty, unreadable or older than [`RESUME_MAX_AGE_S`] | close it as interrupted, notify → `watching` (empty: nothing was done) or `shut_down` (old) |
//! | (start) | start, journal with steps | → `recovering` |
//! | `recovering` | poll: power failing, or a trigger | start the shutdown resuming the journal → `shutting_down` |
//! | `recovering` | poll: every source online | close the journal as interrupted, notify → `shut_down` |
//! | `recovering` | poll: some source without data | wait, at most [`RECOVERY_DATA_WAIT_S`], then as power failing |
//! | `watching` | trigger | standalone/coordinator: start a shutdown → `shutting_down`; forwarder: forward it → `forwarding` |
//! | `watching` | poll: forwarder, mains stable, coordinator not told | send the clear (again after another settle if it fails) |
//! | `forwarding` | forward accepted | → `forwarded` |
//! | `forwarding` | forward failed | notify `forwarder_fallback`, start this host's own shutdown → `shutting_down` |
//! | `forwarded` | poll: mains stable | reset the policies → `watching` (which sends the clear) |
//! | `forwarded` | poll: `forwarding.power_off_self_after` passed | power this host off (once) |
//! | `shutdown_queued` | poll | start the shutdown again → `shutting_down`; or, mains stable, notify and reset → `watching` |
//! | `shutting_down` | trigger | joins the run (logged) |
//! | `shutting_down` | run finished | (`shutdown.power_off_self`: power this host off) → `shut_down` |
//! | `shutting_down` | run did not start | notify (first failure and when the error changes), SIGTERM a startup holding the run lock → `shutdown_queued` |
//! | `shutting_down` | run crashed | as did not start, resuming its journal next time |
//! | `shut_down` | trigger | nothing if the last shutdown of this outage succeeded, else start one → `shutting_down` |
//! | `shut_down` | poll: mains stable | `startup_on_power_return`: reset, start the startup → `starting_up`; otherwise reset → `watching` |
//! | `shut_down` | poll: mains stable, `startup_on_power_return`, a UPS's charge below `restart_min_charge` | say so once, wait |
//! | `starting_up` | trigger | abort the startup, start a shutdown → `shutting_down` |
//! | `starting_up` | run finished or crashed | → `watching` |
//! | `starting_up` | run did not start: another startup holds the lock | → `watching` |
//! | `starting_up` | run did not start, otherwise | → `shut_down` (retried while mains stay stable) |
//! | any | a run ended that is not the current one | ignored (an aborted startup) |
//! | coordinator, any | peer trigger, a new outage of that forwarder | the forwarder is waited for, counted once; as a trigger |
//! | coordinator, any | peer trigger, the outage already on record (a retry) or already cleared | nothing (logged): a retried request never counts or acts twice |
//! | coordinator, any | peer clear of its outage on record (or of any, `outage` absent) | the forwarder is no longer waited for |
//! | coordinator, any | peer clear of another outage | nothing (logged): a stale clear never ends a newer outage |
//! | coordinator, any | peer message from a name not in `role.coordinator.forwarders` | nothing stored (logged); the endpoint refuses such names before this |
//! | forwarder, any | forward or clear failed | the reason kept as the forwarding problem (status) until one succeeds |
//! | `watching` | poll: preflight on, none running, its time come ([`PREFLIGHT_FIRST_DELAY_S`] after start, or `preflight.interval` if shorter; then `preflight.interval` after the last one ended) | run the preflight checks in the background |
//! | any but `watching` | any input, a preflight running | stop it: a run (or an outage) changes what it checks, and its results would only be noise |
//! | `watching` | preflight done | each check that starts failing notified `preflight_failed` (warn), each that passes again `preflight_recovered` (info), once per change; the next one due `preflight.interval` later |
//! | `watching` | preflight not run (a run of another process holds the run lock) | nothing (logged); the next one due `preflight.interval` later |
//! | any | preflight done, none running (one that was stopped) | ignored |
//!
//! *Preflight* checks every part of the shutdown and startup path without changing anything (see
//! [`crate::preflight`]) while the daemon watches: never during a run, nor once the cluster is shut
//! down (its nodes are off, and every check would fail). The supervisor decides when, and which
//! results are news; [`Supervisor::preflight`] holds each check's last state for status and
//! metrics.
//!
//! *Outages* (forwarding): a forwarder gives every trigger it forwards a new outage id (this
//! daemon's random instance id and a counter, so ids never repeat across restarts); a retried
//! request carries the same id. Its clear names that outage, or none after a restart (it cannot
//! know which it had sent): "whatever of mine you wait for". Only the forwarder's own entry is
//! ever touched: the endpoint has checked its signature, so no forwarder clears another's.
//!
//! Each of these per-source alerts is counted ([`Counters::alerts`]) and, while its condition
//! lasts, listed by [`Source::active_alerts`] (`hecate status` exits 1 while any is).
//!
//! *Reset* forgets the outage in every policy (what was learnt about the batteries stays): the next
//! outage triggers afresh, whoever brought the cluster back (this daemon, the boot unit or an
//! operator). A shutdown is never triggered without starting or being queued in the same step, and
//! nothing but mains returning and staying for the settle time drops a queued one.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::config::{self, Config};
use crate::discharge::DischargeRecord;
use crate::engine::{JournalSummary, Outcome};
use crate::notify::EventKind;
use crate::plan::PlanKind;
use crate::policy::{Decision, Policy, PolicyConfig};
use crate::power::{Sample, StatusFlag};
use crate::preflight::{ChangeKind, Report, Tracker};

/// How long, after a start with an interrupted shutdown in the journal, the supervisor waits for
/// every power source to answer before it takes the silence as power failing. At boot the UPS
/// driver and `upsd` may need a little while; a minute of silence from a UPS is an outage.
pub const RECOVERY_DATA_WAIT_S: f64 = 60.0;

/// An interrupted shutdown whose journal was last written longer ago than this is never resumed:
/// whatever it stopped may have been started again since, and a new outage gets a fresh plan.
pub const RESUME_MAX_AGE_S: f64 = 3600.0;

/// The first preflight comes this long after the daemon starts (or `preflight.interval` after, if
/// shorter): not at once, since a daemon starting at boot would check nodes that are still coming
/// up, and not a whole interval later, so an operator sees it soon after a restart.
pub const PREFLIGHT_FIRST_DELAY_S: f64 = 60.0;

/// A battery that needs replacing (`RB`) is notified at most this often while it stays so: a
/// reminder a day, like upsmon's `RBWARNTIME` (12 h), not an alarm every poll.
pub const REPLACE_BATTERY_EVERY_S: f64 = 86_400.0;

/// Identifies a run the supervisor started, so a late report of an aborted run is not taken for
/// the current one.
pub type RunId = u64;

/// Event details (the numbers behind a trigger).
pub type Details = serde_json::Map<String, serde_json::Value>;

/// What this instance is, with what the supervisor needs of each role.
#[derive(Debug, Clone, PartialEq)]
pub enum Role {
    /// Watches its UPSes and runs the cluster's shutdown itself.
    Standalone,
    /// As standalone, and takes triggers from forwarders.
    Coordinator {
        /// The forwarders it accepts (`role.coordinator.forwarders`): what it keeps per forwarder
        /// is bounded by this list, and any other name is ignored.
        forwarders: BTreeSet<String>,
    },
    /// Forwards its triggers to the coordinator, shutting down its own plan if that fails.
    Forwarder {
        /// After a handover, power this host off when this long has passed without mains.
        power_off_self_after_s: Option<f64>,
    },
}

/// The supervisor's settings, taken from the config.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The role.
    pub role: Role,
    /// The policy every source gets.
    pub policy: PolicyConfig,
    /// `daemon.power_return_settle`, seconds.
    pub power_return_settle_s: f64,
    /// `daemon.startup_on_power_return`.
    pub startup_on_power_return: bool,
    /// `daemon.restart_min_charge`, percent: that automatic startup waits until every UPS that
    /// reports its charge holds at least this much.
    pub restart_min_charge_pct: Option<f64>,
    /// `shutdown.power_off_self`: power this host off once its own shutdown has run.
    pub power_off_self: bool,
    /// `daemon.deadtime`, seconds: a source without data this long is notified as lost.
    pub deadtime_s: f64,
}

impl Default for SupervisorConfig {
    /// A standalone instance with the config's defaults (what `Config` gives when nothing is set).
    fn default() -> Self {
        let d = config::DaemonConfig::default();
        Self {
            role: Role::Standalone,
            policy: PolicyConfig::default(),
            power_return_settle_s: d.power_return_settle.as_secs_f64(),
            startup_on_power_return: d.startup_on_power_return,
            restart_min_charge_pct: d.restart_min_charge,
            power_off_self: false,
            deadtime_s: d.deadtime.as_secs_f64(),
        }
    }
}

impl SupervisorConfig {
    /// The settings of a config.
    pub fn from_config(cfg: &Config) -> Self {
        let role = match &cfg.role {
            config::Role::Standalone => Role::Standalone,
            config::Role::Coordinator(c) => {
                Role::Coordinator { forwarders: c.forwarders.iter().map(|f| f.name.clone()).collect() }
            }
            config::Role::Forwarder(f) => Role::Forwarder {
                power_off_self_after_s: f
                    .power_off_self_after
                    .filter(|_| cfg.shutdown.power_off_self)
                    .map(|d| d.as_secs_f64()),
            },
        };
        Self {
            role,
            policy: cfg.policy.clone(),
            power_return_settle_s: cfg.daemon.power_return_settle.as_secs_f64(),
            startup_on_power_return: cfg.daemon.startup_on_power_return,
            restart_min_charge_pct: cfg.daemon.restart_min_charge,
            power_off_self: cfg.shutdown.power_off_self,
            deadtime_s: cfg.daemon.deadtime.as_secs_f64(),
        }
    }
}

/// Identifies one outage of one forwarder: a trigger and its retries carry the same id, and the
/// clear names it. See the module doc.
pub type OutageId = String;

/// What a forwarder says to its coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMessage {
    /// Its UPS triggered, for this reason.
    Trigger {
        /// Which outage.
        outage: OutageId,
        /// Why, in words.
        reason: String,
    },
    /// Its mains are back and stable.
    Clear {
        /// The outage that is over; `None`: whichever of its outages is on record.
        outage: Option<OutageId>,
    },
}

/// Who holds the run lock, when a run could not take it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The holder's process id.
    pub pid: u32,
    /// What it runs.
    pub kind: PlanKind,
    /// The holder is this process (a run of ours that was just aborted and has not let go yet).
    pub ours: bool,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEnd {
    /// The plan ran to its end, with this outcome.
    Finished(Outcome),
    /// The run never began: nothing was done.
    NotStarted {
        /// Why.
        error: String,
        /// Who holds the run lock, when that was the reason.
        lock_holder: Option<LockHolder>,
    },
    /// The run stopped part-way (its task died); its journal may hold finished steps.
    Crashed(String),
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The daemon started; `interrupted` is the journal of a shutdown that never finished.
    Start {
        /// The interrupted shutdown's journal, if there is one.
        interrupted: Option<JournalSummary>,
        /// A startup's journal is there too: a startup never finished.
        startup_interrupted: bool,
    },
    /// One poll of every power source, in config order, and the shutdown budget in force.
    Poll {
        /// One sample per source.
        samples: Vec<Sample>,
        /// The budget, seconds.
        budget_s: f64,
    },
    /// A coordinator received a message from a forwarder.
    Peer {
        /// The forwarder's name.
        from: String,
        /// Where the request came from.
        address: String,
        /// What it said.
        message: PeerMessage,
    },
    /// A run this supervisor started has ended.
    RunEnded {
        /// Which run.
        run: RunId,
        /// How.
        end: RunEnd,
    },
    /// A forwarder's trigger was taken by the coordinator (what it answered) or not (why).
    Forwarded(Result<String, String>),
    /// A forwarder's clear was taken by the coordinator or not.
    Cleared(Result<String, String>),
    /// The preflight asked for by [`Effect::RunPreflight`] has ended.
    PreflightDone(PreflightOutcome),
}

/// How a preflight ended.
#[derive(Debug, Clone, PartialEq)]
pub enum PreflightOutcome {
    /// It ran: every check.
    Ran(Report),
    /// It did not run (why): another process's run holds the run lock, so the cluster is being
    /// changed under it.
    NotRun(String),
}

/// How important a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something an operator should know.
    Warn,
    /// Something failed.
    Error,
}

/// Something the daemon must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Start a run (in the background; its end comes back as [`Input::RunEnded`]).
    StartRun {
        /// Its id.
        run: RunId,
        /// Shutdown or startup.
        kind: PlanKind,
        /// Why.
        reason: String,
        /// The trigger's numbers, for the plan's `shutdown_triggered` event.
        details: Details,
        /// Continue the journal of an interrupted run.
        resume: bool,
    },
    /// Stop a run of ours (a startup overtaken by an outage).
    AbortRun {
        /// Which.
        run: RunId,
    },
    /// Ask another process's startup, which holds the run lock while power is failing, to stop
    /// (SIGTERM): its journal stays and the shutdown takes the cluster from wherever it got.
    StopOtherRun {
        /// Its process id.
        pid: u32,
    },
    /// Record the interrupted shutdown in the journal as interrupted, and put the journal aside.
    CloseInterrupted {
        /// Why it is not resumed.
        why: String,
    },
    /// Send an event to every notifier.
    Notify {
        /// What.
        kind: EventKind,
        /// In words.
        message: String,
        /// Numbers.
        details: Details,
    },
    /// Forwarder: send the trigger to the coordinator (the answer comes back as
    /// [`Input::Forwarded`]); a clear still on its way is called off.
    Forward {
        /// Why.
        reason: String,
        /// The outage it starts (retries of this request carry it too).
        outage: OutageId,
    },
    /// Forwarder: tell the coordinator our mains are back (answer: [`Input::Cleared`]).
    SendClear {
        /// The outage that is over; `None` after a restart, when it is not known.
        outage: Option<OutageId>,
    },
    /// Keep an on-battery stretch of a source in the discharge history (`discharge.json`), and
    /// hand the source's records back with [`Supervisor::set_discharge_history`].
    RecordDischarge {
        /// The source.
        source: String,
        /// The stretch.
        record: DischargeRecord,
    },
    /// Power this host off (after giving notifications their chance).
    PowerOffSelf {
        /// Why, for the log.
        why: String,
    },
    /// Run the preflight checks in the background (the answer comes back as
    /// [`Input::PreflightDone`]).
    RunPreflight,
    /// Stop the preflight running in the background: the daemon no longer watches.
    AbortPreflight,
    /// A line for the log.
    Log {
        /// Level.
        level: Level,
        /// The line.
        message: String,
    },
}

/// A trigger being acted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    /// Why, in words.
    pub reason: String,
    /// The numbers behind it.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: Details,
    /// When it happened (supervisor time).
    pub at: f64,
}

/// How the last shutdown of this outage ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownEnd {
    /// It ran to its end with this outcome.
    Finished(Outcome),
    /// It was interrupted and not resumed (mains were on when the daemon came back).
    Interrupted,
}

/// What the daemon is doing, with the data of that phase. See the module doc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Deciding whether to resume an interrupted shutdown.
    Recovering {
        /// Since when.
        since: f64,
        /// The journal.
        interrupted: JournalSummary,
    },
    /// Protecting, no run of ours.
    Watching,
    /// Forwarder: sending the trigger.
    Forwarding {
        /// Since when.
        since: f64,
        /// The trigger.
        trigger: Trigger,
    },
    /// Forwarder: the coordinator took the trigger.
    Forwarded {
        /// Since when.
        since: f64,
        /// The trigger.
        trigger: Trigger,
        /// This host was already told to power off.
        powered_off: bool,
    },
    /// A shutdown that could not start, retried every poll.
    ShutdownQueued {
        /// Since when.
        since: f64,
        /// The trigger.
        trigger: Trigger,
        /// Attempts that failed.
        attempts: u32,
        /// The last failure.
        last_error: String,
        /// Resume the journal when it starts.
        resume: bool,
        /// The startup already asked to stop.
        signalled: Option<u32>,
    },
    /// Our shutdown runs.
    ShuttingDown {
        /// The run.
        run: RunId,
        /// Since when.
        since: f64,
        /// The trigger.
        trigger: Trigger,
        /// It resumes a journal.
        resume: bool,
        /// Attempts that failed to start before this one.
        attempts: u32,
        /// The startup already asked to stop.
        signalled: Option<u32>,
    },
    /// The cluster was shut down; waiting for mains.
    ShutDown {
        /// Since when.
        since: f64,
        /// How the last shutdown ended.
        end: ShutdownEnd,
        /// A new trigger joins the shutdown already done (it succeeded, in this same outage).
        covered: bool,
    },
    /// Our startup runs.
    StartingUp {
        /// The run.
        run: RunId,
        /// Since when.
        since: f64,
    },
}

/// The name of a phase, without its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// See [`Phase::Recovering`].
    Recovering,
    /// See [`Phase::Watching`].
    Watching,
    /// See [`Phase::Forwarding`].
    Forwarding,
    /// See [`Phase::Forwarded`].
    Forwarded,
    /// See [`Phase::ShutdownQueued`].
    ShutdownQueued,
    /// See [`Phase::ShuttingDown`].
    ShuttingDown,
    /// See [`Phase::ShutDown`].
    ShutDown,
    /// See [`Phase::StartingUp`].
    StartingUp,
}

impl PhaseKind {
    /// Every phase, for metrics.
    pub const ALL: [PhaseKind; 8] = [
        Self::Recovering,
        Self::Watching,
        Self::Forwarding,
        Self::Forwarded,
        Self::ShutdownQueued,
        Self::ShuttingDown,
        Self::ShutDown,
        Self::StartingUp,
    ];

    /// The `snake_case` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Recovering => "recovering",
            Self::Watching => "watching",
            Self::Forwarding => "forwarding",
            Self::Forwarded => "forwarded",
            Self::ShutdownQueued => "shutdown_queued",
            Self::ShuttingDown => "shutting_down",
            Self::ShutDown => "shut_down",
            Self::StartingUp => "starting_up",
        }
    }
}

impl std::fmt::Display for PhaseKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Phase {
    /// The phase's name.
    pub fn kind(&self) -> PhaseKind {
        match self {
            Self::Recovering { .. } => PhaseKind::Recovering,
            Self::Watching => PhaseKind::Watching,
            Self::Forwarding { .. } => PhaseKind::Forwarding,
            Self::Forwarded { .. } => PhaseKind::Forwarded,
            Self::ShutdownQueued { .. } => PhaseKind::ShutdownQueued,
            Self::ShuttingDown { .. } => PhaseKind::ShuttingDown,
            Self::ShutDown { .. } => PhaseKind::ShutDown,
            Self::StartingUp { .. } => PhaseKind::StartingUp,
        }
    }

    /// When the phase began (supervisor time); `None` for watching.
    pub fn since(&self) -> Option<f64> {
        match self {
            Self::Watching => None,
            Self::Recovering { since, .. }
            | Self::Forwarding { since, .. }
            | Self::Forwarded { since, .. }
            | Self::ShutdownQueued { since, .. }
            | Self::ShuttingDown { since, .. }
            | Self::ShutDown { since, .. }
            | Self::StartingUp { since, .. } => Some(*since),
        }
    }

    /// The trigger this phase acts on.
    pub fn trigger(&self) -> Option<&Trigger> {
        match self {
            Self::Forwarding { trigger, .. }
            | Self::Forwarded { trigger, .. }
            | Self::ShutdownQueued { trigger, .. }
            | Self::ShuttingDown { trigger, .. } => Some(trigger),
            _ => None,
        }
    }

    /// The run in progress.
    pub fn run(&self) -> Option<RunId> {
        match self {
            Self::ShuttingDown { run, .. } | Self::StartingUp { run, .. } => Some(*run),
            _ => None,
        }
    }
}

/// What the power looked like at a source's last poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mains {
    /// `OL` without `OB`.
    Online,
    /// `OB`.
    OnBattery,
    /// No data, or a status that says neither.
    Unknown,
}

impl Mains {
    fn of(sample: &Sample) -> Self {
        match sample {
            Sample::Reading(r) if r.status.on_battery() => Self::OnBattery,
            Sample::Reading(r) if r.status.online() => Self::Online,
            _ => Self::Unknown,
        }
    }
}

/// One power source as the supervisor tracks it.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its name.
    pub name: String,
    /// Its policy.
    pub policy: Policy,
    /// The last sample.
    pub sample: Option<Sample>,
    /// The policy's last decision.
    pub decision: Option<Decision>,
    /// What the last sample said about mains (`None` before the first poll).
    pub mains: Option<Mains>,
    /// Polls that returned no data.
    pub polls_without_data: u64,
    /// What its alerts are tracking.
    pub alerts: SourceAlerts,
}

/// The state behind one source's alerts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceAlerts {
    /// When it last gave data, or (never having given any) when it was first polled.
    pub data_since: Option<f64>,
    /// `comm_lost` was notified and no reading came since.
    pub comm_lost: bool,
    /// `LB` in its last reading.
    pub low_battery: bool,
    /// `OVER` in its last reading.
    pub overload: bool,
    /// `RB` in its last reading.
    pub replace_battery: bool,
    /// When `replace_battery` was last notified.
    pub replace_battery_notified: Option<f64>,
}

impl Source {
    /// The alerts whose condition lasts, by event name: `comm_lost`, `on_battery`,
    /// `low_battery`, `replace_battery`, `overload`.
    pub fn active_alerts(&self) -> Vec<&'static str> {
        let a = &self.alerts;
        [
            (a.comm_lost, EventKind::CommLost),
            (self.mains == Some(Mains::OnBattery), EventKind::OnBattery),
            (a.low_battery, EventKind::LowBattery),
            (a.replace_battery, EventKind::ReplaceBattery),
            (a.overload, EventKind::Overload),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, k)| k.as_str())
        .collect()
    }
}

/// Counters for metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    /// Runs that could not start, by kind.
    pub run_start_failures: BTreeMap<String, u64>,
    /// Forwarder: triggers no coordinator took, so this host shut down on its own.
    pub forwarder_fallbacks: u64,
    /// Coordinator: triggers received, per forwarder.
    pub forwarded_triggers: BTreeMap<String, u64>,
    /// Interrupted shutdowns closed without resuming.
    pub interrupted_runs: u64,
    /// Per-source alerts notified: source name, then event name (`comm_lost`, `on_battery`, ...).
    pub alerts: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Clone, Default)]
struct ClearState {
    /// The coordinator has not heard that our mains are back (true at start: this host may have
    /// gone down with its UPS and come back).
    pending: bool,
    in_flight: bool,
    not_before: f64,
    /// The outage to clear (`None` at start: an earlier process's, unknown).
    outage: Option<OutageId>,
}

/// Coordinator: one forwarder's outages.
#[derive(Debug, Clone, Default, PartialEq)]
struct PeerOutages {
    /// The outage it triggered and has not cleared.
    open: Option<OutageId>,
    /// The last outage it cleared (a late retry of its trigger is not a new outage).
    cleared: Option<OutageId>,
}

/// The daemon's lifecycle. See the module doc.
#[derive(Debug, Clone)]
pub struct Supervisor {
    cfg: SupervisorConfig,
    phase: Phase,
    sources: Vec<Source>,
    now: f64,
    budget_s: f64,
    mains_ok_since: Option<f64>,
    outstanding: BTreeSet<String>,
    /// Coordinator: per listed forwarder, its outages (keys only from the config's list).
    peers: BTreeMap<String, PeerOutages>,
    clear: ClearState,
    /// Forwarder: prefix of its outage ids (see [`Supervisor::with_instance_id`]).
    instance_id: String,
    /// Forwarder: outages started so far.
    outages: u64,
    /// Forwarder: why the last forward or clear failed, until one succeeds.
    forwarding_problem: Option<String>,
    next_run: RunId,
    counters: Counters,
    last_trigger: Option<Trigger>,
    last_start_error: Option<String>,
    started: bool,
    /// The automatic startup is waiting for the batteries to charge (said once per wait).
    charging: bool,
    preflight: PreflightSchedule,
}

/// When the next preflight is due, whether one runs, and what the last ones found.
#[derive(Debug, Clone, Default)]
struct PreflightSchedule {
    /// `preflight.interval`, seconds; `None`: off.
    interval_s: Option<f64>,
    next_due: f64,
    running: bool,
    tracker: Tracker,
}

/// Raises one source's alerts: notified, logged, counted.
struct Alerts<'a> {
    ups: &'a str,
    fx: &'a mut Fx,
    counts: &'a mut BTreeMap<String, BTreeMap<String, u64>>,
}

impl Alerts<'_> {
    fn raise(&mut self, level: Level, kind: EventKind, message: String, mut details: Details) {
        details.insert("ups".into(), self.ups.into());
        self.fx.log(level, message.clone());
        self.fx.notify(kind, message, details);
        let n = self.counts.entry(self.ups.to_string()).or_default().entry(kind.as_str().to_string()).or_default();
        *n = n.saturating_add(1);
    }
}

impl SourceAlerts {
    /// One poll's sample: each alert raised once per occurrence, never every poll.
    fn observe(&mut self, now: f64, sample: &Sample, deadtime_s: f64, alerts: &mut Alerts<'_>) {
        let ups = alerts.ups.to_string();
        let r = match sample {
            Sample::NoData { reason } => {
                let since = *self.data_since.get_or_insert(now);
                if !self.comm_lost && now - since >= deadtime_s {
                    self.comm_lost = true;
                    let mut details = Details::new();
                    details.insert("reason".into(), reason.clone().into());
                    details.insert("silent_s".into(), (now - since).into());
                    let message =
                        format!("lost contact with ups {ups}: no data for {} ({reason})", human_secs(now - since));
                    alerts.raise(Level::Error, EventKind::CommLost, message, details);
                }
                return;
            }
            Sample::Reading(r) => r,
        };
        if std::mem::take(&mut self.comm_lost) {
            let silent = self.data_since.map(|t| now - t).unwrap_or_default();
            let message = format!("contact with ups {ups} is back after {}", human_secs(silent));
            alerts.raise(Level::Warn, EventKind::CommRestored, message, Details::new());
        }
        self.data_since = Some(now);
        let status = || {
            let mut d = Details::new();
            d.insert("ups_status".into(), r.status.to_string().into());
            d.insert("charge_pct".into(), r.charge_pct.into());
            d.insert("runtime_s".into(), r.runtime_s.into());
            d.insert("load_pct".into(), r.load_pct.into());
            d
        };
        let low = r.status.has(&StatusFlag::LowBattery);
        if low && !self.low_battery {
            let message = format!("ups {ups} reports a low battery (LB, status {})", r.status);
            alerts.raise(Level::Error, EventKind::LowBattery, message, status());
        }
        self.low_battery = low;
        let over = r.status.has(&StatusFlag::Overload);
        if over && !self.overload {
            let load = r.load_pct.map(|l| format!(", load {l:.0} %")).unwrap_or_default();
            let message = format!("ups {ups} is overloaded (OVER{load}): its runtime is shorter than it says");
            alerts.raise(Level::Warn, EventKind::Overload, message, status());
        }
        self.overload = over;
        self.replace_battery = r.status.has(&StatusFlag::ReplaceBattery);
        if self.replace_battery && self.replace_battery_notified.is_none_or(|t| now - t >= REPLACE_BATTERY_EVERY_S) {
            self.replace_battery_notified = Some(now);
            let message =
                format!("ups {ups} says its battery needs replacing (RB): its runtime can no longer be trusted");
            alerts.raise(Level::Warn, EventKind::ReplaceBattery, message, status());
        }
    }
}

/// Collects a step's effects.
#[derive(Debug, Default)]
struct Fx(Vec<Effect>);

impl Fx {
    fn log(&mut self, level: Level, message: impl Into<String>) {
        self.0.push(Effect::Log { level, message: message.into() });
    }

    fn notify(&mut self, kind: EventKind, message: impl Into<String>, details: Details) {
        self.0.push(Effect::Notify { kind, message: message.into(), details });
    }
}

impl Supervisor {
    /// A supervisor for these sources (names in config order), watching until told otherwise by
    /// [`Input::Start`].
    pub fn new(cfg: SupervisorConfig, source_names: impl IntoIterator<Item = String>) -> Self {
        let sources = source_names
            .into_iter()
            .map(|name| Source {
                name,
                policy: Policy::new(cfg.policy.clone()),
                sample: None,
                decision: None,
                mains: None,
                polls_without_data: 0,
                alerts: SourceAlerts::default(),
            })
            .collect();
        let forwarder = matches!(cfg.role, Role::Forwarder { .. });
        Self {
            cfg,
            phase: Phase::Watching,
            sources,
            now: 0.0,
            budget_s: f64::NAN,
            mains_ok_since: None,
            outstanding: BTreeSet::new(),
            peers: BTreeMap::new(),
            clear: ClearState { pending: forwarder, ..ClearState::default() },
            instance_id: "0".into(),
            outages: 0,
            forwarding_problem: None,
            next_run: 1,
            counters: Counters::default(),
            last_trigger: None,
            last_start_error: None,
            started: false,
            charging: false,
            preflight: PreflightSchedule::default(),
        }
    }

    /// Sets the prefix of this forwarder's outage ids: a value this daemon process alone has (the
    /// daemon draws it at random), so an outage id is never reused after a restart and a
    /// coordinator never takes a new outage for an old one. Letters, digits, `.`, `_`, `-`.
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = id.into();
        self
    }

    /// Runs a preflight every `interval_s` seconds while watching, the first
    /// [`PREFLIGHT_FIRST_DELAY_S`] after time 0 (or `interval_s`, if shorter). Off by default.
    pub fn with_preflight(mut self, interval_s: f64) -> Self {
        if interval_s.is_finite() && interval_s > 0.0 {
            self.preflight.interval_s = Some(interval_s);
            self.preflight.next_due = interval_s.min(PREFLIGHT_FIRST_DELAY_S);
        }
        self
    }

    /// What the preflights found: each check's last state.
    pub fn preflight(&self) -> &Tracker {
        &self.preflight.tracker
    }

    /// Whether a preflight runs now.
    pub fn preflight_running(&self) -> bool {
        self.preflight.running
    }

    /// Forwarder: why the last forward or clear failed (the coordinator's reason, such as a clock
    /// out of its window), until one succeeds.
    pub fn forwarding_problem(&self) -> Option<&str> {
        self.forwarding_problem.as_deref()
    }

    /// The settings.
    pub fn config(&self) -> &SupervisorConfig {
        &self.cfg
    }

    /// The current phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The sources, in config order.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Coordinator: forwarders that triggered and have not cleared.
    pub fn outstanding(&self) -> &BTreeSet<String> {
        &self.outstanding
    }

    /// Counters for metrics.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The trigger of the current outage, once there was one (cleared when mains are back).
    pub fn trigger(&self) -> Option<&Trigger> {
        self.phase.trigger().or(self.last_trigger.as_ref())
    }

    /// Whether a policy has latched, or a trigger is being acted on.
    pub fn is_triggered(&self) -> bool {
        self.phase.trigger().is_some() || self.sources.iter().any(|s| s.policy.is_triggered())
    }

    /// Forwarder after a handover: when (supervisor time) this host powers itself off unless
    /// mains return first.
    pub fn power_off_self_due(&self) -> Option<f64> {
        match (&self.phase, &self.cfg.role) {
            (
                Phase::Forwarded { since, powered_off: false, .. },
                Role::Forwarder { power_off_self_after_s: Some(after) },
            ) => Some(since + after),
            _ => None,
        }
    }

    /// Since when mains have been good on every source, if they are.
    pub fn mains_ok_since(&self) -> Option<f64> {
        self.mains_ok_since
    }

    /// Feeds one input at time `now` (seconds on a monotonic clock; a time going backwards is
    /// taken as no time passing) and returns what to do.
    pub fn step(&mut self, now: f64, input: Input) -> Vec<Effect> {
        if now.is_finite() && now > self.now {
            self.now = now;
        }
        let now = self.now;
        let mut fx = Fx::default();
        let first = !std::mem::replace(&mut self.started, true);
        match input {
            Input::Start { interrupted, startup_interrupted } if first => {
                self.on_start(now, interrupted, startup_interrupted, &mut fx)
            }
            Input::Start { .. } => fx.log(Level::Debug, "a start after the first input ignored"),
            Input::Poll { samples, budget_s } => self.on_poll(now, samples, budget_s, &mut fx),
            Input::Peer { from, address, message } => self.on_peer(now, from, address, message, &mut fx),
            Input::RunEnded { run, end } => self.on_run_ended(now, run, end, &mut fx),
            Input::Forwarded(result) => self.on_forwarded(now, result, &mut fx),
            Input::Cleared(result) => self.on_cleared(now, result, &mut fx),
            Input::PreflightDone(outcome) => self.on_preflight_done(now, outcome, &mut fx),
        }
        self.schedule_preflight(now, &mut fx);
        fx.0
    }

    fn settled(&self, now: f64) -> bool {
        self.mains_ok_since.is_some_and(|since| now - since >= self.cfg.power_return_settle_s)
    }

    fn on_start(&mut self, now: f64, interrupted: Option<JournalSummary>, startup_interrupted: bool, fx: &mut Fx) {
        let Some(j) = interrupted else {
            if startup_interrupted && self.cfg.startup_on_power_return {
                // Our own startup was cut short (a crash, a restart): bring the cluster up again
                // once mains are stable, as after a shutdown. The startup is run afresh.
                fx.log(Level::Warn, "a startup was interrupted: it runs again once mains are stable");
                self.phase = Phase::ShutDown { since: now, end: ShutdownEnd::Interrupted, covered: false };
            }
            return;
        };
        let started = j.started_at.as_deref().unwrap_or("an unknown time");
        if !j.readable || j.steps_started == 0 {
            // Nothing was done, or nothing can be known: never a reason to shut anything down.
            let why =
                if j.readable { "its journal holds no step: nothing was done" } else { "its journal cannot be read" };
            self.close_interrupted(format!("the shutdown started at {started} is not resumed: {why}"), fx);
            self.phase = Phase::Watching;
        } else if j.age_s.is_some_and(|age| age > RESUME_MAX_AGE_S) {
            self.close_interrupted(
                format!(
                    "the shutdown started at {started} is not resumed: its journal was last written {} ago",
                    human_secs(j.age_s.unwrap_or_default())
                ),
                fx,
            );
            self.phase = Phase::ShutDown { since: now, end: ShutdownEnd::Interrupted, covered: false };
        } else {
            fx.log(
                Level::Warn,
                format!(
                    "a shutdown started at {started} was interrupted after {} of its steps: resuming it only if power is still failing",
                    j.steps_finished
                ),
            );
            self.phase = Phase::Recovering { since: now, interrupted: j };
        }
    }

    fn close_interrupted(&mut self, why: String, fx: &mut Fx) {
        self.counters.interrupted_runs += 1;
        fx.log(Level::Warn, why.clone());
        fx.notify(EventKind::RunInterrupted, why.clone(), Details::new());
        fx.0.push(Effect::CloseInterrupted { why });
    }

    fn on_poll(&mut self, now: f64, samples: Vec<Sample>, budget_s: f64, fx: &mut Fx) {
        self.budget_s = budget_s;
        let in_hand = matches!(
            self.phase,
            Phase::ShuttingDown { .. }
                | Phase::ShutdownQueued { .. }
                | Phase::Forwarding { .. }
                | Phase::Forwarded { .. }
        );
        let mut samples = samples.into_iter();
        let mut trigger = None;
        let deadtime_s = self.cfg.deadtime_s;
        for s in &mut self.sources {
            let sample = samples.next().unwrap_or_else(|| Sample::NoData { reason: "not polled".into() });
            let was_triggered = s.policy.is_triggered();
            let d = s.policy.observe(now, &sample, budget_s);
            let mains = Mains::of(&sample);
            let mut alerts = Alerts { ups: &s.name, fx: &mut *fx, counts: &mut self.counters.alerts };
            match (s.mains, mains) {
                (Some(before), Mains::OnBattery) if before != Mains::OnBattery && !in_hand => {
                    let mut details = Details::new();
                    details.insert("reason".into(), d.reason.clone().into());
                    alerts.raise(Level::Warn, EventKind::OnBattery, format!("ups {} is on battery", s.name), details);
                }
                (Some(Mains::OnBattery), Mains::Online) => {
                    let message = format!("ups {} is back on mains", s.name);
                    alerts.raise(Level::Info, EventKind::PowerRestored, message, Details::new());
                }
                _ => {}
            }
            s.alerts.observe(now, &sample, deadtime_s, &mut alerts);
            if d.state != s.decision.as_ref().map_or(d.state, |l| l.state) {
                fx.log(Level::Info, format!("ups {}: {}", s.name, d.describe()));
            }
            if d.triggered && !was_triggered && trigger.is_none() {
                trigger = Some(Trigger {
                    reason: format!("ups {}: {}", s.name, d.reason),
                    details: trigger_details(&s.name, &d, &sample, budget_s),
                    at: now,
                });
            }
            if matches!(sample, Sample::NoData { .. }) {
                s.polls_without_data = s.polls_without_data.saturating_add(1);
            }
            if let Some(record) = s.policy.take_discharge() {
                fx.0.push(Effect::RecordDischarge { source: s.name.clone(), record });
            }
            s.mains = Some(mains);
            s.sample = Some(sample);
            s.decision = Some(d);
        }
        let all_online = !self.sources.is_empty() && self.sources.iter().all(|s| s.mains == Some(Mains::Online));
        self.mains_ok_since = if all_online { Some(self.mains_ok_since.unwrap_or(now)) } else { None };
        if let Some(t) = trigger {
            self.on_trigger(now, t, fx);
        }
        self.on_time(now, fx);
    }

    fn on_trigger(&mut self, now: f64, trigger: Trigger, fx: &mut Fx) {
        // a new outage: a later wait for the batteries is said again
        self.charging = false;
        let forwarder = matches!(self.cfg.role, Role::Forwarder { .. });
        match std::mem::replace(&mut self.phase, Phase::Watching) {
            Phase::Recovering { interrupted, .. } => {
                let reason = format!(
                    "{}; resuming the shutdown interrupted at {}",
                    trigger.reason,
                    interrupted.started_at.as_deref().unwrap_or("an unknown time")
                );
                self.start_shutdown(now, Trigger { reason, ..trigger }, true, 0, None, fx);
            }
            Phase::StartingUp { run, .. } => {
                fx.log(
                    Level::Warn,
                    format!("{}: shutdown triggered during startup: abandoning the startup", trigger.reason),
                );
                fx.0.push(Effect::AbortRun { run });
                self.act_on(now, trigger, forwarder, fx);
            }
            Phase::Watching | Phase::ShutDown { covered: false, .. } => self.act_on(now, trigger, forwarder, fx),
            covered @ Phase::ShutDown { covered: true, .. } => {
                fx.log(
                    Level::Info,
                    format!("{}: the cluster was already shut down in this outage: trigger noted", trigger.reason),
                );
                self.phase = covered;
            }
            other => {
                let what = match other.kind() {
                    PhaseKind::Forwarding | PhaseKind::Forwarded => "already forwarded to the coordinator",
                    _ => "joins the shutdown already in hand",
                };
                fx.log(Level::Info, format!("{}: trigger {what}", trigger.reason));
                self.phase = other;
            }
        }
    }

    /// A trigger in a phase that acts on it: forward it (forwarder) or shut down.
    fn act_on(&mut self, now: f64, trigger: Trigger, forwarder: bool, fx: &mut Fx) {
        self.last_trigger = Some(trigger.clone());
        if forwarder {
            fx.log(Level::Warn, format!("shutdown triggered: {}; forwarding it to the coordinator", trigger.reason));
            let mut details = trigger.details.clone();
            details.insert("reason".into(), trigger.reason.clone().into());
            fx.notify(
                EventKind::ShutdownTriggered,
                format!("{}; forwarding to the coordinator", trigger.reason),
                details,
            );
            self.outages = self.outages.saturating_add(1);
            let outage = format!("{}-{}", self.instance_id, self.outages);
            self.clear = ClearState { pending: true, in_flight: false, not_before: 0.0, outage: Some(outage.clone()) };
            fx.0.push(Effect::Forward { reason: trigger.reason.clone(), outage });
            self.phase = Phase::Forwarding { since: now, trigger };
        } else {
            fx.log(Level::Warn, format!("shutdown triggered: {}", trigger.reason));
            self.start_shutdown(now, trigger, false, 0, None, fx);
        }
    }

    fn start_shutdown(
        &mut self,
        now: f64,
        trigger: Trigger,
        resume: bool,
        attempts: u32,
        signalled: Option<u32>,
        fx: &mut Fx,
    ) {
        let run = self.next_run_id();
        fx.0.push(Effect::StartRun {
            run,
            kind: PlanKind::Shutdown,
            reason: trigger.reason.clone(),
            details: trigger.details.clone(),
            resume,
        });
        self.last_trigger = Some(trigger.clone());
        self.phase = Phase::ShuttingDown { run, since: now, trigger, resume, attempts, signalled };
    }

    /// Powers this host off, keeping first what the current outage showed of each battery: the
    /// stretch would otherwise be lost with the host.
    fn power_off_self(&mut self, why: String, fx: &mut Fx) {
        for s in &self.sources {
            if let Some(record) = s.policy.discharge_so_far() {
                fx.0.push(Effect::RecordDischarge { source: s.name.clone(), record });
            }
        }
        fx.0.push(Effect::PowerOffSelf { why });
    }

    /// The discharge curves recorded for a source's UPS (at start, and after each record).
    pub fn set_discharge_history(&mut self, source: &str, records: &[DischargeRecord]) {
        if let Some(s) = self.sources.iter_mut().find(|s| s.name == source) {
            s.policy.set_discharge_history(records);
        }
    }

    fn next_run_id(&mut self) -> RunId {
        let run = self.next_run;
        self.next_run = self.next_run.saturating_add(1);
        run
    }

    /// The outage is over: every policy forgets it.
    fn reset(&mut self) {
        for s in &mut self.sources {
            s.policy.reset();
        }
        self.last_trigger = None;
    }

    /// With `restart_min_charge`: the first UPS whose last reading holds less charge, in words.
    /// A UPS that reports no charge is not waited for (what is not reported cannot be waited on).
    fn short_of_charge(&self) -> Option<String> {
        let min = self.cfg.restart_min_charge_pct?;
        self.sources.iter().find_map(|s| match &s.sample {
            Some(Sample::Reading(r)) => r
                .charge_pct
                .filter(|c| *c < min)
                .map(|c| format!("ups {} holds {min:.0} % of charge (now {c:.0} %)", s.name)),
            _ => None,
        })
    }

    /// What the passing of time decides, at each poll.
    fn on_time(&mut self, now: f64, fx: &mut Fx) {
        let settled = self.settled(now);
        match std::mem::replace(&mut self.phase, Phase::Watching) {
            Phase::Recovering { since, interrupted } => {
                let failing = self.sources.iter().find(|s| s.mains == Some(Mains::OnBattery)).map(|s| s.name.clone());
                let silent =
                    self.sources.iter().find(|s| s.mains.is_none_or(|m| m == Mains::Unknown)).map(|s| s.name.clone());
                let started = interrupted.started_at.clone().unwrap_or_else(|| "an unknown time".into());
                let why = match (failing, silent) {
                    (Some(ups), _) => Some(format!("ups {ups} is on battery")),
                    (None, Some(ups)) if now - since >= RECOVERY_DATA_WAIT_S => {
                        Some(format!("no data from ups {ups} for {}", human_secs(now - since)))
                    }
                    (None, Some(_)) => {
                        self.phase = Phase::Recovering { since, interrupted };
                        return;
                    }
                    (None, None) => None,
                };
                match why {
                    Some(why) => {
                        let trigger = Trigger {
                            reason: format!("resuming the shutdown interrupted at {started}: {why}"),
                            details: Details::new(),
                            at: now,
                        };
                        fx.log(Level::Warn, trigger.reason.clone());
                        self.start_shutdown(now, trigger, true, 0, None, fx);
                    }
                    None => {
                        self.close_interrupted(
                            format!(
                                "the shutdown started at {started} was interrupted and is not resumed: mains are on"
                            ),
                            fx,
                        );
                        self.phase = Phase::ShutDown { since: now, end: ShutdownEnd::Interrupted, covered: false };
                    }
                }
            }
            Phase::ShutDown { since, end, covered } if settled => {
                let startup = self.cfg.startup_on_power_return;
                if startup && !self.outstanding.is_empty() {
                    self.phase = Phase::ShutDown { since, end, covered };
                    return;
                }
                if startup && let Some(low) = self.short_of_charge() {
                    // A second outage must not find an empty battery under a running cluster.
                    if !std::mem::replace(&mut self.charging, true) {
                        fx.log(Level::Info, format!("mains power is back and stable; the cluster starts once {low}"));
                    }
                    self.phase = Phase::ShutDown { since, end, covered };
                    return;
                }
                self.charging = false;
                self.reset();
                if startup {
                    fx.log(Level::Info, "mains power is back and stable: starting the cluster");
                    let run = self.next_run_id();
                    fx.0.push(Effect::StartRun {
                        run,
                        kind: PlanKind::Startup,
                        reason: "mains power returned".into(),
                        details: Details::new(),
                        resume: false,
                    });
                    self.phase = Phase::StartingUp { run, since: now };
                } else {
                    fx.log(
                        Level::Info,
                        "mains power is back and stable: watching again (the cluster is brought back by \
                         hecate-bootstrap or an operator)",
                    );
                }
            }
            Phase::ShutdownQueued { trigger, attempts, last_error, resume, signalled, .. } => {
                if settled && self.outstanding.is_empty() {
                    let message = format!(
                        "mains power is back and stable; the shutdown triggered by {} never started \
                         ({attempts} attempt(s), last: {last_error}): watching again",
                        trigger.reason
                    );
                    fx.log(Level::Warn, message.clone());
                    fx.notify(EventKind::RunNotStarted, message, Details::new());
                    self.reset();
                } else {
                    self.start_shutdown(now, trigger, resume, attempts, signalled, fx);
                }
            }
            Phase::Forwarded { since, trigger, powered_off } => {
                if settled {
                    fx.log(Level::Info, "mains power is back and stable: watching again");
                    self.reset();
                } else {
                    let mut powered_off = powered_off;
                    if let Role::Forwarder { power_off_self_after_s: Some(after) } = self.cfg.role
                        && !powered_off
                        && now - since >= after
                    {
                        powered_off = true;
                        fx.0.push(Effect::PowerOffSelf {
                            why: format!("mains not back {} after the coordinator took the trigger", human_secs(after)),
                        });
                    }
                    self.phase = Phase::Forwarded { since, trigger, powered_off };
                }
            }
            other => self.phase = other,
        }
        if self.phase == Phase::Watching
            && matches!(self.cfg.role, Role::Forwarder { .. })
            && self.clear.pending
            && !self.clear.in_flight
            && settled
            && now >= self.clear.not_before
        {
            self.clear.in_flight = true;
            fx.0.push(Effect::SendClear { outage: self.clear.outage.clone() });
        }
    }

    fn on_peer(&mut self, now: f64, from: String, address: String, message: PeerMessage, fx: &mut Fx) {
        let Role::Coordinator { forwarders } = &self.cfg.role else {
            fx.log(Level::Warn, format!("a message from forwarder {from} ignored: this host is not a coordinator"));
            return;
        };
        if !forwarders.contains(&from) {
            // The endpoint refuses such names before they get here; nothing of them is kept.
            let shown = crate::text::clean(&from, crate::config::MAX_FORWARDER_NAME);
            fx.log(Level::Warn, format!("a message from {shown:?}, which is not a listed forwarder, ignored"));
            return;
        }
        let peer = self.peers.entry(from.clone()).or_default();
        match message {
            PeerMessage::Trigger { outage, reason } => {
                if peer.open.as_ref() == Some(&outage) || peer.cleared.as_ref() == Some(&outage) {
                    let state = if peer.open.as_ref() == Some(&outage) { "on record" } else { "already cleared" };
                    fx.log(
                        Level::Info,
                        format!("forwarder {from}: its trigger for outage {outage} again ({state}): counted once"),
                    );
                    return;
                }
                peer.open = Some(outage.clone());
                self.outstanding.insert(from.clone());
                let n = self.counters.forwarded_triggers.entry(from.clone()).or_default();
                *n = n.saturating_add(1);
                let mut details = Details::new();
                details.insert("forwarded_by".into(), from.clone().into());
                details.insert("forwarder_address".into(), address.into());
                details.insert("outage".into(), outage.into());
                let reason = format!("forwarded by {from}: {reason}");
                fx.log(Level::Warn, format!("trigger forwarded by another instance: {reason}"));
                self.on_trigger(now, Trigger { reason, details, at: now }, fx);
            }
            PeerMessage::Clear { outage } => {
                let ends_it = peer.open.is_some() && (outage.is_none() || outage == peer.open);
                if ends_it {
                    peer.cleared = peer.open.take();
                    self.outstanding.remove(&from);
                    fx.log(Level::Info, format!("forwarder {from}: mains are back"));
                } else {
                    let which = outage.as_deref().unwrap_or("any");
                    fx.log(
                        Level::Info,
                        format!("clear from forwarder {from} for outage {which}, which is not on record"),
                    );
                }
            }
        }
    }

    fn on_run_ended(&mut self, now: f64, run: RunId, end: RunEnd, fx: &mut Fx) {
        if self.phase.run() != Some(run) {
            fx.log(Level::Debug, format!("run {run} ended ({end:?}); it is not the current run"));
            return;
        }
        let failure = match end {
            RunEnd::Finished(outcome) => Err(outcome),
            RunEnd::NotStarted { error, lock_holder } => Ok((error, lock_holder, false)),
            RunEnd::Crashed(error) => Ok((format!("the run stopped part-way: {error}"), None, true)),
        };
        match (std::mem::replace(&mut self.phase, Phase::Watching), failure) {
            (Phase::ShuttingDown { .. }, Err(outcome)) => {
                self.last_start_error = None;
                fx.log(Level::Info, format!("shutdown finished: {}", outcome_word(outcome)));
                if self.cfg.power_off_self {
                    self.power_off_self("the cluster's shutdown is done".into(), fx);
                }
                self.phase = Phase::ShutDown {
                    since: now,
                    end: ShutdownEnd::Finished(outcome),
                    covered: outcome == Outcome::Success,
                };
            }
            (Phase::ShuttingDown { trigger, resume, attempts, signalled, .. }, Ok((error, holder, crashed))) => {
                // A crashed run's steps are in its journal: the next attempt continues it.
                let resume = resume || crashed;
                let attempts = attempts.saturating_add(1);
                let n = self.counters.run_start_failures.entry(PlanKind::Shutdown.to_string()).or_default();
                *n = n.saturating_add(1);
                let mut signalled = signalled;
                if let Some(h) = &holder
                    && h.kind == PlanKind::Startup
                    && !h.ours
                    && signalled != Some(h.pid)
                {
                    fx.log(
                        Level::Warn,
                        format!("a startup holds the run lock while power is failing: stopping it (pid {})", h.pid),
                    );
                    fx.0.push(Effect::StopOtherRun { pid: h.pid });
                    signalled = Some(h.pid);
                }
                let message =
                    format!("the shutdown could not start (attempt {attempts}): {error}; retrying every poll");
                // Every attempt is counted; the first failure and a new kind of failure are
                // notified, and every tenth attempt is worth a line of its own.
                let new_error = self.last_start_error.as_deref() != Some(error.as_str());
                if new_error {
                    fx.notify(EventKind::RunNotStarted, message.clone(), Details::new());
                }
                let level = if new_error || attempts.is_multiple_of(10) { Level::Error } else { Level::Debug };
                fx.log(level, message);
                self.last_start_error = Some(error.clone());
                self.phase =
                    Phase::ShutdownQueued { since: now, trigger, attempts, last_error: error, resume, signalled };
            }
            (Phase::StartingUp { .. }, Err(outcome)) => {
                fx.log(Level::Info, format!("startup finished: {}", outcome_word(outcome)));
            }
            (Phase::StartingUp { .. }, Ok((error, _, true))) => {
                let message = format!("the startup {error}: watching again");
                fx.log(Level::Error, message.clone());
                fx.notify(EventKind::RunNotStarted, message, Details::new());
            }
            (Phase::StartingUp { .. }, Ok((_, Some(h), false))) if h.kind == PlanKind::Startup && !h.ours => {
                fx.log(Level::Info, format!("another startup (pid {}) is bringing the cluster back", h.pid));
            }
            (Phase::StartingUp { .. }, Ok((error, _, false))) => {
                let n = self.counters.run_start_failures.entry(PlanKind::Startup.to_string()).or_default();
                *n = n.saturating_add(1);
                let message = format!("the startup could not start: {error}; retrying while mains stay on");
                fx.log(Level::Error, message.clone());
                fx.notify(EventKind::RunNotStarted, message, Details::new());
                self.phase = Phase::ShutDown { since: now, end: ShutdownEnd::Interrupted, covered: false };
            }
            (other, _) => self.phase = other,
        }
    }

    fn on_forwarded(&mut self, now: f64, result: Result<String, String>, fx: &mut Fx) {
        if !matches!(self.phase, Phase::Forwarding { .. }) {
            fx.log(Level::Debug, format!("forwarding result {result:?} arrived outside forwarding: ignored"));
            return;
        }
        let Phase::Forwarding { trigger, .. } = std::mem::replace(&mut self.phase, Phase::Watching) else {
            return;
        };
        match result {
            Ok(note) => {
                self.forwarding_problem = None;
                fx.log(
                    Level::Warn,
                    format!("the coordinator took the trigger: the cluster's shutdown is its to run ({note})"),
                );
                self.phase = Phase::Forwarded { since: now, trigger, powered_off: false };
            }
            Err(why) => {
                self.forwarding_problem = Some(format!("the trigger was not forwarded: {why}"));
                self.counters.forwarder_fallbacks = self.counters.forwarder_fallbacks.saturating_add(1);
                fx.log(
                    Level::Error,
                    format!("forwarding the trigger failed: {why}: running this host's own shutdown plan"),
                );
                let mut details = Details::new();
                details.insert("reason".into(), trigger.reason.clone().into());
                fx.notify(
                    EventKind::ForwarderFallback,
                    format!("coordinator not reached ({why}): running this host's own shutdown plan"),
                    details,
                );
                let reason = format!("{} (forwarding failed: {why})", trigger.reason);
                self.start_shutdown(now, Trigger { reason, ..trigger }, false, 0, None, fx);
            }
        }
    }

    fn on_cleared(&mut self, now: f64, result: Result<String, String>, fx: &mut Fx) {
        if !self.clear.in_flight {
            // Called off by a trigger since: the outage it would clear is not over.
            fx.log(Level::Debug, format!("a stale clear result {result:?} ignored"));
            return;
        }
        self.clear.in_flight = false;
        match result {
            Ok(note) => {
                self.forwarding_problem = None;
                self.clear.pending = false;
                fx.log(Level::Info, format!("told the coordinator our mains are back ({note})"));
            }
            Err(why) => {
                self.forwarding_problem = Some(format!("the coordinator was not told our mains are back: {why}"));
                self.clear.not_before = now + self.cfg.power_return_settle_s;
                fx.log(Level::Warn, format!("could not tell the coordinator our mains are back: {why}"));
            }
        }
    }
}

impl Supervisor {
    /// Starts a preflight when one is due while watching; stops one running when the daemon no
    /// longer watches.
    fn schedule_preflight(&mut self, now: f64, fx: &mut Fx) {
        let p = &mut self.preflight;
        let watching = self.phase == Phase::Watching;
        if p.running && !watching {
            p.running = false;
            fx.log(Level::Debug, format!("preflight stopped: the daemon is {} now", self.phase.kind()));
            fx.0.push(Effect::AbortPreflight);
        } else if watching && !p.running && p.interval_s.is_some() && now >= p.next_due {
            p.running = true;
            fx.0.push(Effect::RunPreflight);
        }
    }

    fn on_preflight_done(&mut self, now: f64, outcome: PreflightOutcome, fx: &mut Fx) {
        let p = &mut self.preflight;
        if !std::mem::replace(&mut p.running, false) {
            fx.log(Level::Debug, "the result of a preflight that was stopped ignored");
            return;
        }
        p.next_due = now + p.interval_s.unwrap_or(f64::INFINITY);
        let report = match outcome {
            PreflightOutcome::Ran(report) => report,
            PreflightOutcome::NotRun(why) => {
                fx.log(Level::Info, format!("preflight not run: {why}"));
                return;
            }
        };
        for change in p.tracker.observe(&report) {
            let what = format!("{} {}", change.target, change.check);
            let (level, kind, message) = match change.kind {
                ChangeKind::Failed => {
                    (Level::Warn, EventKind::PreflightFailed, format!("preflight: {what} fails: {}", change.message))
                }
                ChangeKind::Recovered => (
                    Level::Info,
                    EventKind::PreflightRecovered,
                    format!("preflight: {what} passes again: {}", change.message),
                ),
            };
            let mut details = Details::new();
            details.insert("target".into(), change.target.into());
            details.insert("check".into(), change.check.into());
            fx.log(level, message.clone());
            fx.notify(kind, message, details);
        }
        let failing = p.tracker.failing().count();
        fx.log(
            Level::Debug,
            format!("preflight: {} check(s), {failing} failing, in {:.1} s", report.results.len(), report.duration_s),
        );
    }
}

fn outcome_word(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::Partial => "partial (some steps failed)",
        Outcome::Failed => "failed",
    }
}

/// Seconds for a person: `95 s`, `12 min`, `3 h`.
fn human_secs(s: f64) -> String {
    if !s.is_finite() {
        "an unknown time".into()
    } else if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.0} h", s / 3600.0)
    }
}

/// The numbers behind a trigger, for the `shutdown_triggered` event.
fn trigger_details(ups: &str, d: &Decision, sample: &Sample, budget_s: f64) -> Details {
    let mut m = Details::new();
    m.insert("ups".into(), ups.into());
    m.insert("cause".into(), serde_json::to_value(d.cause).unwrap_or_default());
    m.insert("estimate_s".into(), d.estimate_s.into());
    m.insert("estimate_source".into(), serde_json::to_value(d.estimate_source).unwrap_or_default());
    m.insert("firmware_runtime_s".into(), d.firmware_runtime_s.into());
    m.insert("own_estimate_s".into(), d.own_estimate_s.into());
    m.insert("threshold_s".into(), d.threshold_s.into());
    m.insert("budget_s".into(), budget_s.into());
    if let Sample::Reading(r) = sample {
        m.insert("ups_status".into(), r.status.to_string().into());
        m.insert("charge_pct".into(), r.charge_pct.into());
        m.insert("load_pct".into(), r.load_pct.into());
    }
    m
}
