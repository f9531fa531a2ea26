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

/// The annotation Hecate puts on a Node it cordons (its value the time, RFC 3339), like Flux's
/// `hecate.dev/suspended-at`: the startup uncordons only the nodes that carry it, so a node the
/// operator had cordoned on purpose stays cordoned.
pub const CORDON_MARK: &str = "hecate.dev/cordoned-at";

/// What cordoning a node did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cordoned {
    /// It was schedulable; Hecate cordoned it and marked it with [`CORDON_MARK`].
    Marked,
    /// It carried Hecate's mark already (an earlier, interrupted run): nothing changed.
    AlreadyMarked,
    /// Someone else had cordoned it: left as it was, without the mark, so the startup leaves it
    /// cordoned.
    ByOthers,
}

/// What uncordoning a node did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Uncordoned {
    /// It carried Hecate's mark: made schedulable again and the mark removed.
    Uncordoned,
    /// Cordoned without Hecate's mark (by the operator): left cordoned.
    LeftCordoned,
    /// It was schedulable already.
    NotCordoned,
}

impl fmt::Display for Cordoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Marked => "cordoned (marked as hecate's)",
            Self::AlreadyMarked => "cordoned by hecate already",
            Self::ByOthers => "cordoned by someone else already: left unmarked, so the startup leaves it cordoned",
        })
    }
}

impl fmt::Display for Uncordoned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Uncordoned => "uncordoned (hecate had cordoned it)",
            Self::LeftCordoned => "left cordoned: it was not hecate's cordon",
            Self::NotCordoned => "not cordoned",
        })
    }
}

/// Below this many days left, `config check`, `hecate status` and the daemon's log warn that the
/// cluster API's credentials expire: k3s writes a client certificate valid for a year into
/// `k3s.yaml`, and a copy made once stops working on the day the drain is needed.
pub const CREDENTIAL_WARN_DAYS: f64 = 30.0;

/// When the credentials the cluster API backend uses stop working.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialExpiry {
    /// What expires, for people: `client certificate`, `token`.
    pub what: String,
    /// When, as seconds since the Unix epoch (negative before 1970: a broken certificate).
    pub not_after_unix: i64,
}

impl CredentialExpiry {
    /// Days left at `now` (negative once expired).
    pub fn days_left(&self, now: std::time::SystemTime) -> f64 {
        let now = match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        // i64 seconds fit an f64 closely enough for days
        #[allow(clippy::cast_precision_loss)]
        let at = self.not_after_unix as f64;
        (at - now) / 86_400.0
    }

    /// The expiry date, RFC 3339 (or the raw number for a date no clock can show).
    pub fn not_after(&self) -> String {
        u64::try_from(self.not_after_unix)
            .ok()
            .and_then(|s| std::time::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
            .map_or_else(
                || format!("{} (unix time)", self.not_after_unix),
                |t| humantime::format_rfc3339_seconds(t).to_string(),
            )
    }

    /// One line: `the client certificate expires in 12 days (2027-01-01T00:00:00Z)`, or that it
    /// expired.
    pub fn describe(&self, now: std::time::SystemTime) -> String {
        let days = self.days_left(now);
        if days < 0.0 {
            format!("the {} expired {:.0} day(s) ago ({})", self.what, -days, self.not_after())
        } else {
            format!("the {} expires in {:.0} day(s) ({})", self.what, days.floor(), self.not_after())
        }
    }

    /// Whether it is worth a warning ([`CREDENTIAL_WARN_DAYS`]).
    pub fn warn(&self, now: std::time::SystemTime) -> bool {
        self.days_left(now) < CREDENTIAL_WARN_DAYS
    }
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

/// How to drain a node, as `kubectl drain`'s flags say it.
#[derive(Debug, Clone)]
pub struct DrainOptions {
    /// The whole drain's limit: evicting, and waiting for the evicted pods to be gone.
    pub timeout: Duration,
    /// How long an eviction a PodDisruptionBudget refuses is asked again before `fallback`
    /// (with every node going down a budget may never be met: waiting for it is bounded apart).
    pub pdb_timeout: Duration,
    /// What to do with pods still refused after `pdb_timeout`.
    pub fallback: DrainFallback,
    /// Evict pods no controller manages too (`kubectl drain --force`): they are gone for good.
    /// Without it they are kept (their containers get their grace on the node later).
    pub evict_unmanaged: bool,
    /// Evict pods with `emptyDir` volumes too (`kubectl drain --delete-emptydir-data`): their
    /// data is lost. Without it they are kept, and the data with them.
    pub delete_emptydir_data: bool,
    /// The longest termination grace an evicted or deleted pod gets (its own
    /// `terminationGracePeriodSeconds` when shorter).
    pub max_grace: Duration,
}

impl Default for DrainOptions {
    /// `shutdown:`'s defaults.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(90),
            pdb_timeout: Duration::from_secs(30),
            fallback: DrainFallback::Leave,
            evict_unmanaged: false,
            delete_emptydir_data: false,
            max_grace: Duration::from_secs(60),
        }
    }
}

/// What a drain did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DrainReport {
    /// Pods evicted.
    pub evicted: Vec<String>,
    /// Pods deleted after the deadline.
    pub deleted: Vec<String>,
    /// Pods left running because a PodDisruptionBudget refused them (DaemonSet and mirror pods
    /// are not listed).
    pub left: Vec<String>,
    /// Pods kept on purpose, each with why (`ns/name (no controller)`, `ns/name (emptyDir
    /// data)`): `kubectl drain` refuses these without `--force` / `--delete-emptydir-data`.
    #[serde(default)]
    pub kept: Vec<String>,
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
    /// Marks a schedulable node unschedulable with Hecate's [`CORDON_MARK`]; a node cordoned
    /// already is left as it is.
    async fn cordon(&self, node: &str) -> Result<Cordoned, BackendError>;
    /// Makes a node schedulable again if it carries Hecate's [`CORDON_MARK`] (and removes the
    /// mark); an unmarked cordon is the operator's and stays.
    async fn uncordon(&self, node: &str) -> Result<Uncordoned, BackendError>;
    /// Evicts a node's pods as `kubectl drain` does.
    async fn drain(&self, node: &str, opts: &DrainOptions) -> Result<DrainReport, BackendError>;
    /// When the credentials this backend uses expire: `Ok(None)` when they do not (or it cannot
    /// tell), an error when they cannot be read. Local only (no request to the API); may be
    /// called every poll, so a backend keeps the answer a while.
    fn credential_expiry(&self) -> Result<Option<CredentialExpiry>, BackendError> {
        Ok(None)
    }
    /// Checks, without changing anything, that the API answers, the credentials are accepted and
    /// not about to expire, and that they allow what the plans do (`needs`). The default says it
    /// cannot be checked.
    async fn preflight(&self, needs: &crate::preflight::ClusterNeeds) -> Vec<crate::preflight::Check> {
        let _ = needs;
        crate::preflight::not_checkable("this cluster api backend")
    }
}
