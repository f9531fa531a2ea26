//! Notifications: one event type, serialised the same way for every notifier.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::BuildContext;
use crate::error::BackendError;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A UPS went on battery.
    OnBattery,
    /// Mains power came back.
    PowerRestored,
    /// The policy triggered a shutdown.
    ShutdownTriggered,
    /// A plan stage finished.
    StageFinished,
    /// A shutdown run finished.
    ShutdownDone,
    /// A startup run finished.
    StartupDone,
    /// A step failed.
    StepFailed,
    /// A node step succeeded, but only through a fallback controller after the first choice
    /// failed: no failure, yet something to fix (a broken SSH key, a BMC password).
    StepFellBack,
    /// A forwarder could not reach its coordinator and acted locally.
    ForwarderFallback,
    /// A run could not start (run lock, descriptors, disk) and is retried, or gave up because
    /// mains came back first.
    RunNotStarted,
    /// A run interrupted by a crash or power loss was closed without resuming it.
    RunInterrupted,
    /// A backend could not be built: what needs it fails at once, everything else runs.
    BackendUnavailable,
    /// A UPS gave no data for longer than `daemon.deadtime` (upsmon's `COMMBAD`).
    CommLost,
    /// A UPS that was lost gives data again (upsmon's `COMMOK`).
    CommRestored,
    /// A UPS reports a low battery (`LB`; upsmon's `LOWBATT`).
    LowBattery,
    /// A UPS says its battery needs replacing (`RB`; upsmon's `REPLBATT`): at most once a day.
    ReplaceBattery,
    /// A UPS is overloaded (`OVER`).
    Overload,
    /// A preflight check of the shutdown or startup path started failing (a node's host key,
    /// its sudo rule, a BMC password, the cluster's permissions, ...): the path would break.
    PreflightFailed,
    /// A preflight check that had failed passes again.
    PreflightRecovered,
}

impl EventKind {
    /// Whether an operator should be woken for this.
    pub fn is_urgent(self) -> bool {
        matches!(
            self,
            Self::ShutdownTriggered
                | Self::StepFailed
                | Self::ForwarderFallback
                | Self::RunNotStarted
                | Self::RunInterrupted
                | Self::BackendUnavailable
                | Self::CommLost
                | Self::LowBattery
                | Self::Overload
        )
    }

    /// The alerts a power source raises (NUT's `NOTIFYFLAG` events), each counted per UPS in
    /// `hecate_alerts_total`.
    pub const UPS_ALERTS: [EventKind; 7] = [
        Self::CommLost,
        Self::CommRestored,
        Self::OnBattery,
        Self::PowerRestored,
        Self::LowBattery,
        Self::ReplaceBattery,
        Self::Overload,
    ];

    /// Every kind, for metrics and documentation.
    pub const ALL: [EventKind; 19] = [
        Self::OnBattery,
        Self::PowerRestored,
        Self::ShutdownTriggered,
        Self::StageFinished,
        Self::ShutdownDone,
        Self::StartupDone,
        Self::StepFailed,
        Self::StepFellBack,
        Self::ForwarderFallback,
        Self::RunNotStarted,
        Self::RunInterrupted,
        Self::BackendUnavailable,
        Self::CommLost,
        Self::CommRestored,
        Self::LowBattery,
        Self::ReplaceBattery,
        Self::Overload,
        Self::PreflightFailed,
        Self::PreflightRecovered,
    ];

    /// The `snake_case` name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnBattery => "on_battery",
            Self::PowerRestored => "power_restored",
            Self::ShutdownTriggered => "shutdown_triggered",
            Self::StageFinished => "stage_finished",
            Self::ShutdownDone => "shutdown_done",
            Self::StartupDone => "startup_done",
            Self::StepFailed => "step_failed",
            Self::StepFellBack => "step_fell_back",
            Self::ForwarderFallback => "forwarder_fallback",
            Self::RunNotStarted => "run_not_started",
            Self::RunInterrupted => "run_interrupted",
            Self::BackendUnavailable => "backend_unavailable",
            Self::CommLost => "comm_lost",
            Self::CommRestored => "comm_restored",
            Self::LowBattery => "low_battery",
            Self::ReplaceBattery => "replace_battery",
            Self::Overload => "overload",
            Self::PreflightFailed => "preflight_failed",
            Self::PreflightRecovered => "preflight_recovered",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The host that saw it.
    pub host: String,
    /// When, RFC 3339.
    pub at: String,
    /// A one-line human message.
    pub message: String,
    /// Structured details (numbers, node names, reasons).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// A new event stamped with the current time.
    pub fn now(kind: EventKind, host: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            host: host.to_string(),
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            message: message.into(),
            details: serde_json::Map::new(),
        }
    }

    /// The message and every detail as a sink may take them: a peer's text (a UPS's error, a
    /// forwarder's reason) cleaned and bounded (see [`crate::text`]).
    pub fn sanitize(&mut self) {
        if crate::text::needs_cleaning(&self.message, crate::text::MESSAGE_CHARS) {
            self.message = crate::text::clean(&self.message, crate::text::MESSAGE_CHARS);
        }
        crate::text::clean_map(&mut self.details, crate::text::MESSAGE_CHARS);
    }

    /// Adds a detail.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// The event as one line of JSON: what every notifier sends, so receivers parse one format.
    pub fn to_json(&self) -> String {
        // Strings, an enum and a map of JSON values always serialise.
        serde_json::to_string(self).unwrap_or_else(|e| unreachable!("an event always serialises: {e}"))
    }
}

/// How delivery treats one notifier: each try's time limit, how long an event is worth retrying,
/// and which events it wants. Backends usually take these from their config.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPolicy {
    /// Time limit of one try; a try that runs out is abandoned and counts as failed.
    pub attempt_timeout: Duration,
    /// How long after it was queued an event is still retried.
    pub retry_for: Duration,
    /// The kinds this notifier wants; empty means every kind.
    pub events: Vec<EventKind>,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        Self { attempt_timeout: Duration::from_secs(10), retry_for: Duration::from_secs(120), events: Vec::new() }
    }
}

impl DeliveryPolicy {
    /// Whether this notifier wants events of `kind`.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }
}

/// Configuration of a notifier, selected in YAML by `type:`.
#[typetag::serde(tag = "type")]
pub trait NotifierConfig: fmt::Debug + Send + Sync {
    /// Checks the backend's own settings, returning every problem found.
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }
    /// Builds the runtime notifier.
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Notifier>, BackendError>;
}

/// A live notifier.
#[async_trait]
pub trait Notifier: Send + Sync + fmt::Debug {
    /// The notifier's name for logs.
    fn name(&self) -> &str;
    /// Delivers one event: one try. Retries, time limits and queueing are the core's
    /// ([`crate::delivery`]), so a backend only sends.
    async fn notify(&self, event: &Event) -> Result<(), BackendError>;
    /// How delivery treats this notifier.
    fn policy(&self) -> DeliveryPolicy {
        DeliveryPolicy::default()
    }
    /// Checks, without sending anything, that an event could be delivered today: the server
    /// answers and accepts the credentials, the program exists. The default: not checkable.
    async fn preflight(&self) -> Vec<crate::preflight::Check> {
        crate::preflight::not_checkable("this notifier")
    }
}
