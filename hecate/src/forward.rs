//! Multi-UPS forwarding between Hecate instances.
//!
//! A coordinator accepts, with a bearer token it shares with its forwarders:
//! - `POST /v1/trigger` (JSON `{"host": …, "reason": …}`): a forwarder's UPS triggered; the
//!   coordinator treats it as a trigger of its own and shuts the cluster down;
//! - `POST /v1/clear` (JSON `{"host": …}`): that forwarder's mains are back and stable. Until every
//!   forwarder that triggered has cleared, the coordinator does not start the cluster on its own
//!   (its machines may still hang on the failing UPS).
//!
//! A forwarder that triggers posts to the coordinator, retrying until its `timeout`; if no
//! coordinator accepted by then, the daemon runs the forwarder's own shutdown plan instead (and
//! says so with a `forwarder_fallback` event).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use hecate_core::config::{Config, Role};
use hecate_core::duration::limits::ONE_DAY;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::http::Limits;

/// What a forwarder sent.
#[derive(Debug, Clone)]
pub struct ForwarderMessage {
    /// The forwarder's `host`.
    pub host: String,
    /// Where the request came from.
    pub peer: SocketAddr,
    /// Trigger or clear.
    pub what: Forwarded,
}

/// The two things a forwarder says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forwarded {
    /// Its UPS triggered, for this reason.
    Trigger(String),
    /// Its mains are back and stable.
    Clear,
}

/// The endpoint for `what` under the coordinator's base URL.
pub fn endpoint(base: &str, what: &str) -> String {
    format!("{}/v1/{what}", base.trim_end_matches('/'))
}

/// Longest `host` and `reason` kept from a request: they end up in logs and notifications.
const MAX_FIELD: usize = 512;

/// Reads the shared secret: the file's first line, at least 16 characters.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = hecate_core::secret::read_secret_line(path, "token_file")
        .map_err(|e| anyhow::anyhow!("{}", e.detail()))?
        .trim()
        .to_string();
    anyhow::ensure!(
        token.len() >= 16,
        "the forwarding token in {} is shorter than 16 characters (e.g. `openssl rand -hex 24 > {}`)",
        path.display(),
        path.display()
    );
    Ok(token)
}

/// Equal without an early exit, so response time does not tell how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone)]
struct Shared {
    token: String,
    tx: mpsc::Sender<ForwarderMessage>,
}

/// The TLS side of the endpoint, from the coordinator's certificate chain and key (PEM).
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading the certificate chain {}", cert_file.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no certificate", cert_file.display());
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading the private key {}", key_file.display()))?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| format!("{} and {} do not make a usable pair", cert_file.display(), key_file.display()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// An HTTP client for the forwarder: no proxy from the environment, no redirects, and for an
/// https coordinator only `ca_file`'s CA when one is given.
pub fn client(ca_file: Option<&Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading ca_file {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("ca_file {} is not PEM", ca.display()))?;
        anyhow::ensure!(!certs.is_empty(), "ca_file {} holds no certificate", ca.display());
        builder = builder.tls_certs_only(certs);
    }
    builder.build().context("building the forwarding http client")
}

/// Serves the endpoint on `listen`, over TLS when `tls` is given, until the process ends, within
/// [`Limits::FORWARDING`]: anyone on the LAN can connect before the token is checked, so
/// connections (TLS handshakes included) are capped and timed out (see [`crate::http`]).
pub async fn serve(
    listen: SocketAddr,
    token: String,
    tx: mpsc::Sender<ForwarderMessage>,
    tls: Option<TlsAcceptor>,
) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/v1/trigger", axum::routing::post(trigger))
        .route("/v1/clear", axum::routing::post(clear))
        .with_state(Shared { token, tx });
    let tcp = TcpListener::bind(listen).await.with_context(|| format!("binding the forwarding endpoint {listen}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%listen, scheme, "accepting forwarded triggers on /v1/trigger and /v1/clear");
    crate::http::serve(tcp, "forwarding endpoint", app, tls, Limits::FORWARDING).await;
    Ok(())
}

async fn trigger(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    receive(&shared, peer, &headers, &body, true)
}

async fn clear(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    receive(&shared, peer, &headers, &body, false)
}

fn receive(shared: &Shared, peer: SocketAddr, headers: &HeaderMap, body: &[u8], trigger: bool) -> (StatusCode, String) {
    let presented = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|t| same_secret(t.as_bytes(), shared.token.as_bytes())) {
        tracing::warn!(%peer, "forwarded message refused: missing or wrong token");
        return (StatusCode::UNAUTHORIZED, "{\"error\":\"missing or wrong bearer token\"}".into());
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (StatusCode::BAD_REQUEST, "{\"error\":\"body is not json\"}".into());
    };
    let field =
        |name: &str| v.get(name).and_then(|x| x.as_str()).map(|s| s.chars().take(MAX_FIELD).collect::<String>());
    let what = match (field("host"), field("reason")) {
        (Some(h), _) if h.is_empty() => None,
        (Some(_), Some(r)) if trigger => Some(Forwarded::Trigger(r)),
        (Some(_), _) if !trigger => Some(Forwarded::Clear),
        _ => None,
    };
    let (Some(host), Some(what)) = (field("host"), what) else {
        let need = if trigger { "host and reason" } else { "host" };
        return (StatusCode::BAD_REQUEST, format!("{{\"error\":\"need string fields {need}\"}}"));
    };
    match shared.tx.try_send(ForwarderMessage { host, peer, what }) {
        Ok(()) => (StatusCode::ACCEPTED, "{\"accepted\":true}".into()),
        // Full: the daemon is behind on messages; the forwarder retries.
        Err(mpsc::error::TrySendError::Full(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"busy, try again\"}".into())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"daemon is stopping\"}".into())
        }
    }
}

/// Posts `body` to `url` until the coordinator accepts or `timeout` passes. `Ok`: what the
/// coordinator answered; `Err`: why every try failed (the last reason).
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: serde_json::Value,
    timeout: Duration,
) -> Result<String, String> {
    // Held to a day so that a time no config check stopped cannot overflow the clock.
    let deadline = Instant::now().checked_add(timeout.min(*ONE_DAY)).unwrap_or_else(Instant::now);
    let body = body.to_string();
    let mut tries = 0;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = client
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.clone())
            .timeout(left.clamp(Duration::from_millis(100), Duration::from_secs(10)))
            .send()
            .await;
        let why = match attempt {
            Ok(r) if r.status().is_success() => {
                return Ok(format!(
                    "coordinator accepted ({}) after {tries} tr{}",
                    r.status(),
                    if tries == 1 { "y" } else { "ies" }
                ));
            }
            Ok(r) => format!("coordinator answered {}", r.status()),
            Err(e) => hecate_core::error::error_chain(&e),
        };
        tracing::warn!(url, tries, %why, "the coordinator did not accept");
        if Instant::now().checked_add(Duration::from_secs(1)).is_none_or(|t| t >= deadline) {
            return Err(format!("{why} ({tries} tries in {})", humantime::format_duration(timeout)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A forwarder's link to its coordinator: posts its trigger and its clear. When to send which is
/// the supervisor's decision (`hecate_core::supervisor`); this only carries it out.
#[derive(Clone)]
pub struct ForwardLink {
    host: String,
    base_url: String,
    token: Arc<str>,
    client: reqwest::Client,
    timeout: Duration,
}

impl std::fmt::Debug for ForwardLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ForwardLink")
            .field("host", &self.host)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ForwardLink {
    /// The link for a `role: forwarder` config (`None` for other roles). Reads the token and
    /// `ca_file` now, so a missing file is reported at start, not when the UPS runs low.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<ForwardLink>> {
        let Role::Forwarder(f) = &cfg.role else {
            return Ok(None);
        };
        Ok(Some(ForwardLink {
            host: cfg.host.clone(),
            base_url: f.coordinator_url.clone(),
            token: read_token(&f.token_file)?.into(),
            client: client(f.ca_file.as_deref())?,
            timeout: *f.timeout,
        }))
    }

    /// Posts the trigger until the coordinator takes it or the forwarder's `timeout` passes.
    pub async fn trigger(&self, reason: &str) -> Result<String, String> {
        let body = serde_json::json!({ "host": self.host, "reason": reason });
        post(&self.client, &endpoint(&self.base_url, "trigger"), &self.token, body, self.timeout).await
    }

    /// Posts the clear (our mains are back and stable) the same way.
    pub async fn clear(&self) -> Result<String, String> {
        let body = serde_json::json!({ "host": self.host });
        post(&self.client, &endpoint(&self.base_url, "clear"), &self.token, body, self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"0123456789abcdef", b"0123456789abcdef"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcdeF"));
        assert!(!same_secret(b"0123456789abcdef", b"0123456789abcde"));
        assert!(!same_secret(b"", b"x"));
    }

    #[test]
    fn a_short_or_missing_token_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("token");
        std::fs::write(&p, "short\n").unwrap_or_else(|e| panic!("{e}"));
        let e = read_token(&p).map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("shorter than 16"), "{e}");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_token(&p).unwrap_or_default(), "0123456789abcdef0123");
        // One reader for every secret file: a second line is refused, not silently dropped.
        std::fs::write(&p, "0123456789abcdef0123\nsecond line\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(read_token(&p).is_err());
        assert!(read_token(&dir.path().join("missing")).is_err());
    }
}
