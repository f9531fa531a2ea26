//! Multi-UPS forwarding between Hecate instances.
//!
//! A coordinator accepts `POST /v1/trigger` (JSON `{"host": …, "reason": …}`, a bearer token
//! shared with its forwarders) and treats it as a trigger of its own. A forwarder that triggers
//! posts there, retrying until `forwarding.timeout`; if no coordinator accepted by then, the
//! daemon runs the forwarder's own shutdown plan instead (and says so with a
//! `forwarder_fallback` event).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use tokio::sync::mpsc;

/// A trigger a forwarder sent.
#[derive(Debug, Clone)]
pub struct ForwardedTrigger {
    /// The forwarder's `host`.
    pub host: String,
    /// Its trigger reason.
    pub reason: String,
    /// Where the request came from.
    pub peer: SocketAddr,
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
    tx: mpsc::Sender<ForwardedTrigger>,
}

/// Serves the trigger endpoint on `listen` until the process ends.
pub async fn serve(listen: SocketAddr, token: String, tx: mpsc::Sender<ForwardedTrigger>) -> anyhow::Result<()> {
    let app = axum::Router::new()
        .route("/v1/trigger", axum::routing::post(trigger))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(Shared { token, tx });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the forwarding endpoint {listen}"))?;
    tracing::info!(%listen, "accepting forwarded triggers on /v1/trigger");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .context("serving the forwarding endpoint")
}

async fn trigger(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let presented = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !presented.is_some_and(|t| same_secret(t.as_bytes(), shared.token.as_bytes())) {
        tracing::warn!(%peer, "forwarded trigger refused: missing or wrong token");
        return (StatusCode::UNAUTHORIZED, "{\"error\":\"missing or wrong bearer token\"}".into());
    }
    let parsed: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    let field = |v: &serde_json::Value, name: &str| {
        v.get(name).and_then(|x| x.as_str()).map(|s| s.chars().take(MAX_FIELD).collect::<String>())
    };
    let (host, reason) = match &parsed {
        Ok(v) => match (field(v, "host"), field(v, "reason")) {
            (Some(h), Some(r)) if !h.is_empty() => (h, r),
            _ => return (StatusCode::BAD_REQUEST, "{\"error\":\"need string fields host and reason\"}".into()),
        },
        Err(_) => return (StatusCode::BAD_REQUEST, "{\"error\":\"body is not json\"}".into()),
    };
    match shared.tx.try_send(ForwardedTrigger { host, reason, peer }) {
        Ok(()) => (StatusCode::ACCEPTED, "{\"accepted\":true}".into()),
        // Full means triggers are already queued: a shutdown is coming either way.
        Err(mpsc::error::TrySendError::Full(_)) => {
            (StatusCode::ACCEPTED, "{\"accepted\":true,\"queued\":false}".into())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"daemon is stopping\"}".into())
        }
    }
}

/// Posts the trigger to the coordinator until it accepts or `timeout` passes. `Ok`: what the
/// coordinator answered; `Err`: why every try failed (the last reason).
pub async fn forward(url: &str, token: &str, host: &str, reason: &str, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build an http client: {e}"))?;
    let body = serde_json::json!({ "host": host, "reason": reason }).to_string();
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
        tracing::warn!(url, tries, %why, "forwarding the trigger failed");
        if Instant::now() + Duration::from_secs(1) >= deadline {
            return Err(format!("{why} ({tries} tries in {})", humantime::format_duration(timeout)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
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
