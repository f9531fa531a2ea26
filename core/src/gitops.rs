//! GitOps bootstrap: suspending Flux for a shutdown and bringing it back at startup.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::BuildContext;
use crate::error::BackendError;

/// Options for resuming GitOps at startup.
#[derive(Debug, Clone, Default)]
pub struct ResumeOptions {
    /// Patch the git source to this branch before reconciling.
    pub force_branch: Option<String>,
    /// How long to wait for the source and its dependants to become ready.
    pub timeout: Duration,
}

/// What a suspend or resume did, step by step, for the run log.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GitOpsReport {
    /// Each action taken, in order.
    pub actions: Vec<String>,
    /// Objects left alone (for example suspended by the operator before the shutdown).
    pub left_alone: Vec<String>,
    /// Whether a deadlock fallback was needed.
    pub fallback_used: bool,
}

/// Health of the GitOps machinery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GitOpsHealth {
    /// The git source is ready.
    pub source_ready: bool,
    /// Suspended objects.
    pub suspended: Vec<String>,
    /// Objects not ready.
    pub not_ready: Vec<String>,
}

/// Configuration of a GitOps backend, selected in YAML by `type:`.
#[typetag::serde(tag = "type")]
pub trait GitOpsConfig: fmt::Debug + Send + Sync {
    /// Checks the backend's own settings, returning every problem found.
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }
    /// Builds the runtime object. Must not block on the network.
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn GitOpsBootstrap>, BackendError>;
}

/// A live GitOps controller.
#[async_trait]
pub trait GitOpsBootstrap: Send + Sync + fmt::Debug {
    /// Suspends reconciliation, remembering what the operator had suspended already.
    async fn suspend(&self) -> Result<GitOpsReport, BackendError>;
    /// Resumes what `suspend` suspended, reconciles, and waits for readiness, breaking the
    /// in-cluster git source deadlock if needed.
    async fn resume(&self, opts: &ResumeOptions) -> Result<GitOpsReport, BackendError>;
    /// Current state.
    async fn health(&self) -> Result<GitOpsHealth, BackendError>;
    /// Checks, without changing anything, that suspending and resuming would be allowed. The
    /// default says it cannot be checked.
    async fn preflight(&self) -> Vec<crate::preflight::Check> {
        crate::preflight::not_checkable("this gitops backend")
    }
}
