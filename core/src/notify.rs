//! Notifications: one event type, serialised the same way for every notifier.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::BuildContext;
use crate::error::BackendError;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    /// A step or controller failed.
    StepFailed,
    /// A forwarder could not reach its coordinator and acted locally.
    ForwarderFallback,
}

impl EventKind {
    /// Whether an operator should be woken for this.
    pub fn is_urgent(self) -> bool {
        matches!(self, Self::ShutdownTriggered | Self::StepFailed | Self::ForwarderFallback)
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

    /// Adds a detail.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
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
    /// Delivers one event.
    async fn notify(&self, event: &Event) -> Result<(), BackendError>;
}
