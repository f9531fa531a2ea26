//! `log`: writes each event to Hecate's own log as one JSON line. Always available, and what
//! the demo uses.

use async_trait::async_trait;
use hecate_core::notify::{Event, Notifier, NotifierConfig};
use hecate_core::{BackendError, BuildContext, ErrorKind};
use serde::{Deserialize, Serialize};

/// Logs events.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogNotifierConfig {
    /// A name for this notifier in reports.
    #[serde(default = "default_name")]
    pub name: String,
}

fn default_name() -> String {
    "log".to_string()
}

#[typetag::serde(name = "log")]
impl NotifierConfig for LogNotifierConfig {
    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Notifier>, BackendError> {
        Ok(Box::new(LogNotifier { name: self.name.clone() }))
    }
}

hecate_core::register_backend!(Notifier, "log", "writes events as JSON lines to Hecate's log", LogNotifierConfig);

/// The runtime side of [`LogNotifierConfig`].
#[derive(Debug)]
pub struct LogNotifier {
    name: String,
}

#[async_trait]
impl Notifier for LogNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn notify(&self, event: &Event) -> Result<(), BackendError> {
        let line = serde_json::to_string(event)
            .map_err(|e| BackendError::with_source(ErrorKind::Protocol, "cannot serialise event", e))?;
        tracing::info!(target: "hecate::event", "{line}");
        Ok(())
    }

    async fn preflight(&self) -> Vec<hecate_core::preflight::Check> {
        vec![hecate_core::preflight::Check::ok("log", "events go to Hecate's own log")]
    }
}
