//! The connection to a Kubernetes API that the `kube` cluster backend and the `flux_gitea` GitOps
//! backend share: a kubeconfig read when first needed, a client built once, and errors mapped to
//! Hecate's kinds. Nothing here prints the kubeconfig's credentials: `Debug` shows the path only,
//! and kube's errors carry the server's status, never the request's headers.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use std::time::Instant;

use hecate_core::cluster::CredentialExpiry;
use hecate_core::{BackendError, ErrorKind};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tokio::sync::Mutex;

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
    /// The API server URLs to try in order; empty: the kubeconfig's own.
    servers: Vec<String>,
    timeout: Duration,
    /// The client in use, built on first use; dropped when its server stops answering, so the
    /// next request tries the list again from the start.
    client: std::sync::Arc<Mutex<Option<Client>>>,
    /// The credentials' expiry, read at most every [`EXPIRY_REREAD`].
    expiry: std::sync::Arc<std::sync::Mutex<Option<ExpiryRead>>>,
}

/// When the credentials' expiry was read, and what it was (or why it could not be).
type ExpiryRead = (Instant, Result<Option<CredentialExpiry>, String>);

/// How long a credential expiry read from the kubeconfig is reused: a new one copied over it is
/// seen within this.
const EXPIRY_REREAD: Duration = Duration::from_secs(600);

impl fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeAccess")
            .field("kubeconfig", &self.kubeconfig)
            .field("context", &self.context)
            .field("servers", &self.servers)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl KubeAccess {
    pub(crate) fn new(kubeconfig: PathBuf, context: Option<String>, servers: Vec<String>, timeout: Duration) -> Self {
        Self { kubeconfig, context, servers, timeout, client: Default::default(), expiry: Default::default() }
    }

    /// The client, built on first use. The kubeconfig is read then, not at start-up: at a cold
    /// start k3s may rewrite it, and a dry run must not need it. With several servers, the first
    /// that answers is used until it stops answering ([`KubeAccess::forget_if_unreachable`]).
    pub(crate) async fn client(&self) -> Result<Client, BackendError> {
        let mut slot = self.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = self.connect().await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// After an error: a server that no longer answers is dropped, so the next request tries
    /// every configured server again, in order (an HA cluster whose first server went down).
    pub(crate) async fn forget_if_unreachable(&self, e: &BackendError) {
        if self.servers.len() > 1 && matches!(e.kind, ErrorKind::Unreachable | ErrorKind::Timeout) {
            *self.client.lock().await = None;
        }
    }

    /// The kubeconfig credentials' expiry (see [`crate::kube_credentials`]), kept a while.
    pub(crate) fn credential_expiry(&self) -> Result<Option<CredentialExpiry>, BackendError> {
        let mut cached = self.expiry.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = cached.as_ref().is_some_and(|(at, _)| at.elapsed() < EXPIRY_REREAD);
        if !fresh {
            let read =
                crate::kube_credentials::expiry(&self.kubeconfig, self.context.as_deref()).map_err(|e| e.detail());
            *cached = Some((Instant::now(), read));
        }
        match cached.as_ref().map(|(_, r)| r.clone()) {
            Some(Ok(e)) => Ok(e),
            Some(Err(why)) => Err(BackendError::new(ErrorKind::Config, why)),
            None => Ok(None),
        }
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
        config.connect_timeout = Some(self.timeout);
        config.read_timeout = Some(self.timeout);
        config.write_timeout = Some(self.timeout);
        // Retries are ours: a PodDisruptionBudget answers 429 and the drain decides how long to
        // keep asking; kube's own retry would spend that deadline behind our back.
        config.default_retry = false;
        let build = |config: kube::Config| {
            Client::try_from(config).map_err(|e| {
                BackendError::with_source(ErrorKind::Config, format!("cannot build a client from {path}"), e)
            })
        };
        match self.servers.as_slice() {
            [] => build(config),
            [only] => {
                config.cluster_url = parse_server(only)?;
                build(config)
            }
            several => {
                // The first that answers at all (any HTTP answer: an error status is still a
                // server, and the request that follows says what is wrong).
                let mut failures = Vec::new();
                for server in several {
                    let mut c = config.clone();
                    c.cluster_url = parse_server(server)?;
                    let client = build(c)?;
                    match client.apiserver_version().await {
                        Ok(_) | Err(kube::Error::Api(_)) => {
                            tracing::debug!(server, "using this api server");
                            return Ok(client);
                        }
                        Err(e) => {
                            let e = api_error(format!("api server {server}"), e);
                            tracing::info!(server, error = %e, "api server does not answer; trying the next");
                            failures.push(e.detail());
                        }
                    }
                }
                Err(BackendError::new(
                    ErrorKind::Unreachable,
                    format!("no api server answers: {}", failures.join("; ")),
                ))
            }
        }
    }
}

/// What the API server (or an admission webhook behind it) said, as it may enter a message: cut,
/// cleaned, and without an `Authorization` value it may echo.
pub(crate) fn peer_text(s: &str) -> String {
    hecate_core::text::untrusted(s, hecate_core::text::PEER_TEXT_CHARS, &[])
}

fn parse_server(server: &str) -> Result<http::Uri, BackendError> {
    server
        .parse()
        .map_err(|e| BackendError::with_source(ErrorKind::Config, format!("`server` {server} is not a url"), e))
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
