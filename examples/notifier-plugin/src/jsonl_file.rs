//! `jsonl_file`: appends each event as one JSON line to a file.

use std::path::PathBuf;

use async_trait::async_trait;
use hecate_core::notify::{Event, Notifier, NotifierConfig};
use hecate_core::{BackendError, BuildContext, ErrorKind};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;

/// Appends events as JSON lines to a file.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonlFileConfig {
    /// A name for this notifier in logs and reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// The file events are appended to; created if missing (its directory must exist).
    pub path: PathBuf,
}

fn default_name() -> String {
    "jsonl_file".to_string()
}

#[typetag::serde(name = "jsonl_file")]
impl NotifierConfig for JsonlFileConfig {
    fn validate(&self) -> Vec<String> {
        if self.path.as_os_str().is_empty() { vec!["`path` must not be empty".into()] } else { Vec::new() }
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Notifier>, BackendError> {
        Ok(Box::new(JsonlFile { name: self.name.clone(), path: self.path.clone() }))
    }
}

hecate_core::register_backend!(
    Notifier,
    "jsonl_file",
    "appends events as JSON lines to a file (example plugin)",
    JsonlFileConfig
);

/// The runtime side of [`JsonlFileConfig`].
#[derive(Debug)]
pub struct JsonlFile {
    name: String,
    path: PathBuf,
}

#[async_trait]
impl Notifier for JsonlFile {
    fn name(&self) -> &str {
        &self.name
    }

    async fn notify(&self, event: &Event) -> Result<(), BackendError> {
        let fail = |e: std::io::Error| {
            BackendError::with_source(ErrorKind::Failed, format!("cannot append to {}", self.path.display()), e)
        };
        let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&self.path).await.map_err(fail)?;
        // One write per line, so concurrent readers never see half an event.
        file.write_all(format!("{}\n", event.to_json()).as_bytes()).await.map_err(fail)?;
        file.flush().await.map_err(fail)
    }
}
