//! Multi-UPS forwarding between Hecate instances.
//!
//! A coordinator accepts, with a bearer token it shares with its forwarders:
//! - `POST /v1/trigger` (JSON `{"host": …, "reason": …}`): a forwarder's UPS triggered; the
//!   coordinator treats it as a trigger of its own and shuts the cluster down;
//! - `POST /v1/clear` (JSON `{"host": …}`): that forwarder's mains are back and stable. Until every
//!   forwarder that triggered has cleared, the coordinator does not start the cluster on its own
//!   (its machines may still hang on the failing UPS).
//!
//! A forwarder that triggers posts to the coordinator, retrying until `forwarding.timeout`; if no
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
use hecate_core::config::{Config, HostRole};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
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
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the forwarding token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
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
        let pem = std::fs::read(ca).with_context(|| format!("reading forwarding.ca_file {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("forwarding.ca_file {} is not PEM", ca.display()))?;
        anyhow::ensure!(!certs.is_empty(), "forwarding.ca_file {} holds no certificate", ca.display());
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
    let deadline = Instant::now() + timeout;
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
            Err(e) => error_chain(&e),
        };
        tracing::warn!(url, tries, %why, "the coordinator did not accept");
        if Instant::now() + Duration::from_secs(1) >= deadline {
            return Err(format!("{why} ({tries} tries in {})", humantime::format_duration(timeout)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A forwarder's link to its coordinator: sends its trigger and, once its mains are back and
/// stable, its clear. The daemon loop asks it what happened at each tick.
#[derive(Debug)]
pub struct Forwarder {
    host: String,
    base_url: String,
    token: String,
    client: reqwest::Client,
    timeout: Duration,
    /// The trigger being sent, with its reason and event details.
    sending: Option<(Delivery, String, Details)>,
    /// The coordinator has not heard our mains are back (true at start: this host may have gone
    /// down with its UPS and come back).
    clear_pending: bool,
    clearing: Option<Delivery>,
    settled_since: Option<Instant>,
}

/// A post on its way: what the coordinator answered, or why it was not reached.
type Delivery = JoinHandle<Result<String, String>>;

/// Event details of a trigger.
pub type Details = serde_json::Map<String, serde_json::Value>;

impl Forwarder {
    /// The link for a `role: forwarder` config (`None` for other roles). Reads the token and
    /// `ca_file` now, so a missing file stops the daemon at start, not when the UPS runs low.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Forwarder>> {
        let (HostRole::Forwarder, Some(f)) = (cfg.role, &cfg.forwarding) else {
            return Ok(None);
        };
        Ok(Some(Forwarder {
            host: cfg.host.clone(),
            base_url: f.coordinator_url.clone().unwrap_or_default(),
            token: read_token(&f.token_file)?,
            client: client(f.ca_file.as_deref())?,
            timeout: *f.timeout,
            sending: None,
            clear_pending: true,
            clearing: None,
            settled_since: None,
        }))
    }

    fn spawn_post(&self, what: &str, body: serde_json::Value) -> Delivery {
        let (client, token, timeout) = (self.client.clone(), self.token.clone(), self.timeout);
        let url = endpoint(&self.base_url, what);
        tokio::spawn(async move { post(&client, &url, &token, body, timeout).await })
    }

    /// Starts sending a trigger. A clear still on its way is called off: it would be stale.
    pub fn send_trigger(&mut self, reason: &str, details: Details) {
        if let Some(h) = self.clearing.take() {
            h.abort();
        }
        self.clear_pending = true;
        let task = self.spawn_post("trigger", serde_json::json!({ "host": self.host, "reason": reason }));
        self.sending = Some((task, reason.to_string(), details));
    }

    /// The trigger's outcome once known: the coordinator's answer, or why it was not reached;
    /// with the trigger's reason and details.
    pub async fn trigger_outcome(&mut self) -> Option<(Result<String, String>, String, Details)> {
        if !self.sending.as_ref().is_some_and(|(h, _, _)| h.is_finished()) {
            return None;
        }
        let (h, reason, details) = self.sending.take()?;
        let result = h.await.unwrap_or_else(|e| Err(format!("the forwarding task failed: {e}")));
        Some((result, reason, details))
    }

    /// Mains have been back since `since` (already settled): the clear may go out at once.
    pub fn settled(&mut self, since: Instant) {
        self.settled_since = Some(since);
    }

    /// At each tick while watching: once mains have been back for `settle`, tell the
    /// coordinator (retried after another `settle` if it does not take it).
    pub async fn tend_clear(&mut self, watching: bool, all_online: bool, settle: Duration) {
        if self.clearing.as_ref().is_some_and(JoinHandle::is_finished)
            && let Some(h) = self.clearing.take()
        {
            match h.await.unwrap_or_else(|e| Err(e.to_string())) {
                Ok(note) => {
                    tracing::info!(%note, "told the coordinator our mains are back");
                    self.clear_pending = false;
                }
                Err(why) => tracing::warn!(%why, "could not tell the coordinator our mains are back"),
            }
            self.settled_since = None;
        }
        if !all_online {
            self.settled_since = None;
            return;
        }
        if self.clear_pending && self.clearing.is_none() && watching {
            let since = *self.settled_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= settle {
                self.clearing = Some(self.spawn_post("clear", serde_json::json!({ "host": self.host })));
            }
        }
    }
}

/// An error and its causes on one line (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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
        std::fs::write(&p, "0123456789abcdef0123\nsecond line\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_token(&p).unwrap_or_default(), "0123456789abcdef0123");
        assert!(read_token(&dir.path().join("missing")).is_err());
    }
}
