//! The Kubernetes side: API health, node readiness, cordon and drain.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::BuildContext;
use crate::error::BackendError;

/// One Kubernetes node as the API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// The node name.
    pub name: String,
    /// The `Ready` condition is `True`.
    pub ready: bool,
    /// Cordoned (`spec.unschedulable`).
    pub unschedulable: bool,
}

/// What to do with a pod a PodDisruptionBudget keeps refusing to evict once the deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DrainFallback {
    /// Delete the pod with its grace period.
    Delete,
    /// Leave the pod running and report it.
    #[default]
    Leave,
}

/// How to drain a node.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// Give up evicting (and apply `fallback`) after this long.
    pub timeout: Duration,
    /// What to do with pods still refused at the deadline.
    pub fallback: DrainFallback,
}

/// What a drain did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainReport {
    /// Pods evicted.
    pub evicted: Vec<String>,
    /// Pods deleted after the deadline.
    pub deleted: Vec<String>,
    /// Pods left running (DaemonSet and mirror pods are not listed).
    pub left: Vec<String>,
    /// Pods evicted or deleted that had not finished terminating at the deadline.
    #[serde(default)]
    pub terminating: Vec<String>,
}

/// Configuration of the cluster API backend, selected in YAML by `type:`.
#[typetag::serde(tag = "type")]
pub trait ClusterApiConfig: fmt::Debug + Send + Sync {
    /// Checks the backend's own settings, returning every problem found.
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }
    /// Builds the runtime client. Must not block on the network.
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn ClusterApi>, BackendError>;
}

/// A live Kubernetes API client.
#[async_trait]
pub trait ClusterApi: Send + Sync + fmt::Debug {
    /// `Ok` when the API server answers healthy (`/readyz`).
    async fn health(&self) -> Result<(), BackendError>;
    /// Every node and its readiness.
    async fn nodes(&self) -> Result<Vec<ClusterNode>, BackendError>;
    /// Marks a node unschedulable.
    async fn cordon(&self, node: &str) -> Result<(), BackendError>;
    /// Marks a node schedulable.
    async fn uncordon(&self, node: &str) -> Result<(), BackendError>;
    /// Evicts a node's pods as `kubectl drain` does.
    async fn drain(&self, node: &str, opts: &DrainOptions) -> Result<DrainReport, BackendError>;
}
