//! `simulated`: a GitOps controller that exists only in memory, including an optional
//! in-cluster git source deadlock so the fallback path can be seen.

use std::collections::BTreeSet;
use std::sync::Mutex;

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::ONE_STEP;
use hecate_core::gitops::{GitOpsBootstrap, GitOpsConfig, GitOpsHealth, GitOpsReport, ResumeOptions};
use hecate_core::{BackendError, BuildContext};
use serde::{Deserialize, Serialize};

/// A simulated GitOps controller.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedGitOpsConfig {
    /// The Kustomizations it manages.
    #[serde(default = "default_objects")]
    pub kustomizations: Vec<String>,
    /// Kustomizations the operator suspended by hand (left alone by suspend and resume).
    #[serde(default)]
    pub operator_suspended: Vec<String>,
    /// The git source stays not Ready after resume until the fallback brings it up.
    #[serde(default)]
    pub source_deadlock: bool,
    /// How long each action takes. At most 1h; default 500ms.
    #[serde(default = "half_second")]
    pub step_duration: HumanDuration,
}

fn default_objects() -> Vec<String> {
    vec!["flux-system".into(), "apps".into()]
}

fn half_second() -> HumanDuration {
    HumanDuration::from_millis(500)
}

#[typetag::serde(name = "simulated")]
impl GitOpsConfig for SimulatedGitOpsConfig {
    fn validate(&self) -> Vec<String> {
        self.step_duration
            .out_of_range(HumanDuration::ZERO, ONE_STEP)
            .map(|m| format!("`step_duration` {m}"))
            .into_iter()
            .collect()
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn GitOpsBootstrap>, BackendError> {
        Ok(Box::new(SimulatedGitOps {
            suspended: Mutex::new(self.operator_suspended.iter().cloned().collect()),
            cfg: self.clone(),
        }))
    }
}

hecate_core::register_backend!(
    GitOps,
    "simulated",
    "in-memory Flux stand-in with an optional source deadlock (demo, tests)",
    SimulatedGitOpsConfig
);

/// The runtime side of [`SimulatedGitOpsConfig`].
#[derive(Debug)]
pub struct SimulatedGitOps {
    cfg: SimulatedGitOpsConfig,
    suspended: Mutex<BTreeSet<String>>,
}

#[async_trait]
impl GitOpsBootstrap for SimulatedGitOps {
    async fn suspend(&self) -> Result<GitOpsReport, BackendError> {
        tokio::time::sleep(*self.cfg.step_duration).await;
        let mut report = GitOpsReport::default();
        let mut s = self.suspended.lock().unwrap_or_else(|e| e.into_inner());
        for k in &self.cfg.kustomizations {
            if self.cfg.operator_suspended.contains(k) {
                report.left_alone.push(format!("kustomization/{k}"));
            } else if s.insert(k.clone()) {
                report.actions.push(format!("suspended kustomization/{k}"));
            }
        }
        Ok(report)
    }

    async fn resume(&self, opts: &ResumeOptions) -> Result<GitOpsReport, BackendError> {
        tokio::time::sleep(*self.cfg.step_duration).await;
        let mut report = GitOpsReport::default();
        if let Some(b) = &opts.force_branch {
            report.actions.push(format!("set gitrepository/flux-system branch to {b}"));
        }
        {
            let mut s = self.suspended.lock().unwrap_or_else(|e| e.into_inner());
            for k in &self.cfg.kustomizations {
                if self.cfg.operator_suspended.contains(k) {
                    report.left_alone.push(format!("kustomization/{k}"));
                } else if s.remove(k) {
                    report.actions.push(format!("resumed kustomization/{k}"));
                }
            }
        }
        report.actions.push("requested reconciliation".into());
        if self.cfg.source_deadlock {
            tokio::time::sleep(*self.cfg.step_duration).await;
            report.fallback_used = true;
            report.actions.push("source not ready and gitea not answering: scaled gitea up".into());
            report.actions.push("gitea healthy; requested reconciliation again".into());
        }
        report.actions.push("source and kustomizations ready".into());
        Ok(report)
    }

    async fn health(&self) -> Result<GitOpsHealth, BackendError> {
        let s = self.suspended.lock().unwrap_or_else(|e| e.into_inner());
        Ok(GitOpsHealth { source_ready: true, suspended: s.iter().cloned().collect(), not_ready: Vec::new() })
    }
}
