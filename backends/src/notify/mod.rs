//! Notifiers. Each only sends one event once; the core queues, times out and retries
//! (`hecate_core::delivery`), so a slow or dead receiver never holds up a shutdown.

pub mod command;
pub mod email;
pub mod log;
pub mod ntfy;
pub mod webhook;

use std::path::Path;
use std::time::Duration;

use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::{MIN_TIMEOUT, ONE_DAY, ONE_TRY};
use hecate_core::notify::{DeliveryPolicy, EventKind};
use hecate_core::{BackendError, ErrorKind};

/// The default time limit of one try.
pub(crate) fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// The default time an event is retried for.
pub(crate) fn default_retry_for() -> HumanDuration {
    HumanDuration::from_secs(120)
}

/// Problems with the settings every notifier shares.
pub(crate) fn delivery_problems(timeout: HumanDuration, retry_for: HumanDuration) -> Vec<String> {
    let mut p = Vec::new();
    if let Some(m) = timeout.out_of_range(MIN_TIMEOUT, ONE_TRY) {
        p.push(format!("`timeout` {m}"));
    }
    if let Some(m) = retry_for.out_of_range(HumanDuration::ZERO, ONE_DAY) {
        p.push(format!("`retry_for` {m}"));
    } else if *retry_for < *timeout {
        p.push(format!("`retry_for` ({retry_for}) must be at least `timeout` ({timeout})"));
    }
    p
}

pub(crate) fn policy(timeout: HumanDuration, retry_for: HumanDuration, events: &[EventKind]) -> DeliveryPolicy {
    DeliveryPolicy { attempt_timeout: *timeout, retry_for: *retry_for, events: events.to_vec() }
}

/// Reads a secret from a file (the project's one reader and rule). Read at each send rather than
/// at start: a rotated secret is picked up, and a missing file fails only this notifier, never the
/// daemon's start.
pub(crate) fn read_secret(path: &Path, what: &str) -> Result<String, BackendError> {
    hecate_core::secret::read_secret_line(path, what)
}

/// Installs the ring crypto provider unless one is: `hecate` does this first thing, but a
/// backend used on its own (a test, an embedding program) must not panic building a client.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: a provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// An HTTP client for one notifier: rustls, the per-try time limit, no redirects (a POST that
/// is redirected is more likely a wrong URL than a moved receiver).
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, BackendError> {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("hecate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BackendError::with_source(ErrorKind::Config, "cannot build the http client", e))
}

/// A parsed `http(s)` URL, or why not.
pub(crate) fn parse_http_url(field: &str, url: &str) -> Result<reqwest::Url, String> {
    let u = reqwest::Url::parse(url).map_err(|e| format!("`{field}` is not a valid url: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("`{field}` must be an http or https url, not {}", u.scheme()));
    }
    if u.host_str().is_none() {
        return Err(format!("`{field}` has no host"));
    }
    Ok(u)
}

/// Scheme, host and port of a URL: what logs may show of it. A webhook URL's path or query is
/// often its secret.
pub(crate) fn url_origin(u: &reqwest::Url) -> String {
    u.origin().ascii_serialization()
}

/// A failed request, classified; the URL is left out of the message (it may hold a secret).
pub(crate) fn http_error(what: &str, e: reqwest::Error) -> BackendError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Unreachable
    } else if e.is_builder() {
        ErrorKind::Config
    } else {
        ErrorKind::Protocol
    };
    BackendError::with_source(kind, format!("{what} request failed"), e.without_url())
}

/// A non-2xx answer, classified.
pub(crate) fn http_status_error(what: &str, status: reqwest::StatusCode, body: &str) -> BackendError {
    let kind = match status.as_u16() {
        401 | 403 => ErrorKind::Auth,
        _ => ErrorKind::Protocol,
    };
    let body = hecate_core::text::clean(body.trim(), 200);
    let tail = if body.is_empty() { String::new() } else { format!(": {body}") };
    BackendError::new(kind, format!("{what} answered {status}{tail}"))
}
