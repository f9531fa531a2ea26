//! The connection to a Kubernetes API that the `kube` cluster backend and the `flux_gitea` GitOps
//! backend share: a kubeconfig read when first needed, a client built once, and errors mapped to
//! Hecate's kinds. Nothing here prints the kubeconfig's credentials: `Debug` shows the path only,
//! and kube's errors carry the server's status, never the request's headers.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use hecate_core::{BackendError, ErrorKind};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::OnceCell;

/// Where k3s writes the admin kubeconfig on a server node.
pub(crate) const K3S_KUBECONFIG: &str = "/etc/rancher/k3s/k3s.yaml";

pub(crate) fn default_kubeconfig() -> PathBuf {
    PathBuf::from(K3S_KUBECONFIG)
}

/// How to reach the API, as configured.
#[derive(Clone)]
pub(crate) struct KubeAccess {
    kubeconfig: PathBuf,
    context: Option<String>,
    server: Option<String>,
    timeout: Duration,
    client: std::sync::Arc<OnceCell<Client>>,
}

impl fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeAccess")
            .field("kubeconfig", &self.kubeconfig)
            .field("context", &self.context)
            .field("server", &self.server)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KubeAccess {
    pub(crate) fn new(kubeconfig: PathBuf, context: Option<String>, server: Option<String>, timeout: Duration) -> Self {
        Self { kubeconfig, context, server, timeout, client: Default::default() }
    }

    /// The client, built on first use. The kubeconfig is read then, not at start-up: at a cold
    /// start k3s may rewrite it, and a dry run must not need it.
    pub(crate) async fn client(&self) -> Result<Client, BackendError> {
        self.client.get_or_try_init(|| self.connect()).await.cloned()
    }

    async fn connect(&self) -> Result<Client, BackendError> {
        crate::notify::ensure_crypto_provider();
        let path = self.kubeconfig.display().to_string();
        let kc = Kubeconfig::read_from(&self.kubeconfig)
            .map_err(|e| BackendError::with_source(ErrorKind::Config, format!("cannot read kubeconfig {path}"), e))?;
        let opts = KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        let mut config = kube::Config::from_custom_kubeconfig(kc, &opts)
            .await
            .map_err(|e| BackendError::with_source(ErrorKind::Config, format!("unusable kubeconfig {path}"), e))?;
        if let Some(server) = &self.server {
            config.cluster_url = server.parse().map_err(|e| {
                BackendError::with_source(ErrorKind::Config, format!("`server` {server} is not a url"), e)
            })?;
        }
        config.connect_timeout = Some(self.timeout);
        config.read_timeout = Some(self.timeout);
        config.write_timeout = Some(self.timeout);
        // Retries are ours: a PodDisruptionBudget answers 429 and the drain decides how long to
        // keep asking; kube's own retry would spend that deadline behind our back.
        config.default_retry = false;
        Client::try_from(config)
            .map_err(|e| BackendError::with_source(ErrorKind::Config, format!("cannot build a client from {path}"), e))
    }
}

/// What the API server (or an admission webhook behind it) said, as it may enter a message: cut,
/// cleaned, and without an `Authorization` value it may echo.
pub(crate) fn peer_text(s: &str) -> String {
    hecate_core::text::untrusted(s, hecate_core::text::PEER_TEXT_CHARS, &[])
}

/// The HTTP status code of an API error, if the server answered one.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

/// A kube error as a Hecate error with `what` as context: the server's answer (code, reason,
/// message) or the transport failure.
pub(crate) fn api_error(what: impl Into<String>, e: kube::Error) -> BackendError {
    let what = what.into();
    match &e {
        kube::Error::Api(s) => {
            let kind = match s.code {
                401 | 403 => ErrorKind::Auth,
                404 => ErrorKind::Failed,
                408 | 504 => ErrorKind::Timeout,
                _ => ErrorKind::Protocol,
            };
            let reason = if s.reason.is_empty() { String::new() } else { format!(" {}", peer_text(&s.reason)) };
            BackendError::new(kind, format!("{what}: api answered {}{reason}: {}", s.code, peer_text(&s.message)))
        }
        kube::Error::SerdeError(_) => BackendError::with_source(ErrorKind::Protocol, what, e),
        kube::Error::InferConfig(_) | kube::Error::BuildRequest(_) => {
            BackendError::with_source(ErrorKind::Config, what, e)
        }
        _ => {
            let text = e.to_string().to_lowercase();
            let kind = if text.contains("timed out") || text.contains("timeout") {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unreachable
            };
            BackendError::with_source(kind, what, e)
        }
    }
}
