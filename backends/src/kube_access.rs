//! The connection to a Kubernetes API that the `kube` cluster backend and the `flux_gitea` GitOps
//! backend share: a kubeconfig read when first needed, a client built once, and errors mapped to
//! Hecate's kinds. Nothing here prints the kubeconfig's credentials: `Debug` shows the path only,
//! and kube's errors carry the server's status, never the request's headers.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use std::time::Instant;

use hecate_core::cluster::CredentialExpiry;
use hecate_core::preflight::Check;
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

/// One permission a plan needs of the Kubernetes API: `verb` on `resource` (with its
/// `subresource`) of API `group`, in `namespace` or every namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Permission {
    pub verb: &'static str,
    /// The API group; `""` for the core API.
    pub group: &'static str,
    pub resource: String,
    pub subresource: Option<&'static str>,
    /// `None`: every namespace (or a cluster-scoped resource).
    pub namespace: Option<String>,
}

impl Permission {
    pub(crate) fn new(verb: &'static str, group: &'static str, resource: &str) -> Self {
        Self { verb, group, resource: resource.to_string(), subresource: None, namespace: None }
    }

    pub(crate) fn sub(mut self, subresource: &'static str) -> Self {
        self.subresource = Some(subresource);
        self
    }

    pub(crate) fn within(mut self, namespace: Option<&str>) -> Self {
        self.namespace = namespace.map(str::to_string);
        self
    }

    /// `create pods/eviction`, `patch kustomizations in flux-system`: the check's name.
    pub(crate) fn name(&self) -> String {
        let sub = self.subresource.map(|s| format!("/{s}")).unwrap_or_default();
        let ns = self.namespace.as_ref().map(|n| format!(" in {n}")).unwrap_or_default();
        format!("{} {}{sub}{ns}", self.verb, self.resource)
    }
}

impl KubeAccess {
    /// The API answering, the credentials accepted and not about to expire, and each permission
    /// granted, asked with one `SelfSubjectAccessReview` each (the API answers whether this
    /// client may; nothing is changed or stored). The credentials are the review's own: a 401
    /// to it is a refused token or certificate.
    pub(crate) async fn preflight(&self, permissions: &[Permission]) -> Vec<Check> {
        use k8s_openapi::api::authorization::v1::{
            ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
        };
        let mut checks = Vec::new();
        checks.push(match self.credential_expiry() {
            Ok(None) => Check::ok("credential_expiry", "the credentials carry no expiry"),
            Ok(Some(e)) if e.warn(std::time::SystemTime::now()) => {
                Check::failed("credential_expiry", e.describe(std::time::SystemTime::now()))
            }
            Ok(Some(e)) => Check::ok("credential_expiry", e.describe(std::time::SystemTime::now())),
            Err(e) => Check::failed("credential_expiry", format!("cannot tell when they expire: {}", e.detail())),
        });
        let not = |name: String, why: &str| Check::skipped(name, format!("not checked: {why}"));
        let client = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                checks.push(Check::failed("api", format!("{}: {}", e.kind, e.detail())));
                checks.push(not("credentials".into(), "no api"));
                checks.extend(permissions.iter().map(|p| not(format!("rbac:{}", p.name()), "no api")));
                return checks;
            }
        };
        match client.apiserver_version().await {
            Ok(v) => checks.push(Check::ok("api", format!("answers (kubernetes {}.{})", v.major, v.minor))),
            // An HTTP answer is a server answering; what it refused is the next checks' to say.
            Err(kube::Error::Api(s)) => checks.push(Check::ok("api", format!("answers ({})", s.code))),
            Err(e) => {
                let e = api_error("the api server", e);
                self.forget_if_unreachable(&e).await;
                checks.push(Check::failed("api", format!("{}: {}", e.kind, e.detail())));
                checks.push(not("credentials".into(), "no api"));
                checks.extend(permissions.iter().map(|p| not(format!("rbac:{}", p.name()), "no api")));
                return checks;
            }
        }
        let reviews: kube::Api<SelfSubjectAccessReview> = kube::Api::all(client);
        let mut credentials = None;
        for p in permissions {
            let name = format!("rbac:{}", p.name());
            if let Some(false) = credentials {
                checks.push(not(name, "the credentials were refused"));
                continue;
            }
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(ResourceAttributes {
                        verb: Some(p.verb.into()),
                        group: Some(p.group.into()),
                        resource: Some(p.resource.clone()),
                        subresource: p.subresource.map(str::to_string),
                        namespace: p.namespace.clone(),
                        ..ResourceAttributes::default()
                    }),
                    ..SelfSubjectAccessReviewSpec::default()
                },
                ..SelfSubjectAccessReview::default()
            };
            match reviews.create(&kube::api::PostParams::default(), &review).await {
                Ok(answer) => {
                    credentials = Some(true);
                    let status = answer.status.unwrap_or_default();
                    let reason = status.reason.filter(|r| !r.is_empty()).map(|r| format!(" ({})", peer_text(&r)));
                    checks.push(if status.allowed {
                        Check::ok(name, format!("allowed{}", reason.unwrap_or_default()))
                    } else {
                        Check::failed(
                            name,
                            format!(
                                "the credentials may not {}{}: the plans need it",
                                p.name(),
                                reason.unwrap_or_else(|| " (no rbac rule grants it)".into())
                            ),
                        )
                    });
                }
                Err(e) if status_code(&e) == Some(401) => {
                    credentials = Some(false);
                    let e = api_error("the api refused the credentials", e);
                    checks.push(Check::failed("credentials", e.detail()));
                    checks.push(not(name, "the credentials were refused"));
                }
                Err(e) => {
                    let e = api_error(format!("cannot ask whether the credentials may {}", p.name()), e);
                    checks.push(Check::failed(name, format!("{}: {}", e.kind, e.detail())));
                }
            }
        }
        if credentials != Some(false) {
            let note = if credentials == Some(true) { "accepted" } else { "not used: no permission to check" };
            checks.insert(2, Check::ok("credentials", note));
        }
        checks
    }
}
