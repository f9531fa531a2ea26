//! Errors a backend returns, with a kind the engine can branch on (never string matching).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of failure a backend hit. The engine decides retries and fallbacks from this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The peer could not be reached (refused, no route, DNS).
    Unreachable,
    /// The peer refused our credentials or host key.
    Auth,
    /// The peer did not answer in time.
    Timeout,
    /// The backend cannot do this operation at all.
    Unsupported,
    /// The peer answered something we could not understand, or an error code.
    Protocol,
    /// The peer is reachable but has no data (NUT `DATA-STALE`, `DRIVER-NOT-CONNECTED`).
    NoData,
    /// The operation ran and failed (a command exited non-zero, a BMC refused an action).
    Failed,
    /// The backend's configuration is unusable (a missing credentials file).
    Config,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unreachable => "unreachable",
            Self::Auth => "auth",
            Self::Timeout => "timeout",
            Self::Unsupported => "unsupported",
            Self::Protocol => "protocol",
            Self::NoData => "no data",
            Self::Failed => "failed",
            Self::Config => "config",
        })
    }
}

/// An error from a backend: a kind, a lowercase message, and the underlying cause if any.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct BackendError {
    /// What kind of failure this is.
    pub kind: ErrorKind,
    /// A human message, lowercase, no trailing period, never containing a secret.
    pub message: String,
    /// The underlying cause.
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl BackendError {
    /// A new error without a cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), source: None }
    }

    /// A new error keeping its cause.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self { kind, message: message.into(), source: Some(Box::new(source)) }
    }

    /// The message followed by its causes, without the kind.
    pub fn detail(&self) -> String {
        let mut s = self.message.clone();
        push_causes(&mut s, self.source.as_deref().map(|e| e as _));
        s
    }

    /// Shorthand for an [`ErrorKind::Unsupported`] error.
    pub fn unsupported(what: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, what)
    }
}

/// An error's message followed by its causes, `: `-separated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    push_causes(&mut s, e.source());
    s
}

/// Appends each cause in the chain, `: `-separated, except one the text already ends with: many
/// messages quote their cause (`cannot read X: {e}`), and saying it twice helps nobody.
pub fn push_causes(s: &mut String, mut cur: Option<&(dyn std::error::Error + 'static)>) {
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
}
