//! `webhook`: POSTs each event as JSON (the same document every notifier sends) to a URL, with
//! headers from the config; a header's value may come from a file, so tokens stay out of YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::notify::{DeliveryPolicy, Event, EventKind, Notifier, NotifierConfig};
use hecate_core::preflight::Check;
use hecate_core::{BackendError, BuildContext, ErrorKind};
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use super::{default_retry_for, default_timeout};

/// POSTs events as JSON to a URL.
#[derive(Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A name for this notifier in logs and reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where events are POSTed: an `http://` or `https://` URL. Logs show only its scheme, host
    /// and port, as a webhook URL's path often is its secret.
    pub url: String,
    /// Extra request headers. A value is either a string or `{ value_file: PATH }`: the file's
    /// content, one trailing line break ignored, read at each send (keep it mode 0600). Header
    /// values are never logged.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, HeaderSource>,
    /// Time limit of one try (connect, send, answer). 1ms to 10m; default 10s.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How long an event is retried, with growing pauses, before it is given up (and logged).
    /// From `timeout` to 1 day; default 2m.
    #[serde(default = "default_retry_for")]
    pub retry_for: HumanDuration,
    /// Only these event kinds are sent; empty or absent means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventKind>,
}

/// A header value: inline, or read from a file.
#[derive(Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum HeaderSource {
    /// The value itself.
    Value(String),
    /// A file holding the value.
    File(SecretFile),
}

/// `{ value_file: PATH }`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretFile {
    /// The file holding the value.
    pub value_file: PathBuf,
}

// Header values may be secrets even when inline: Debug shows only the header names.
impl fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("name", &self.name)
            .field("url", &redacted_url(&self.url))
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("timeout", &self.timeout)
            .field("retry_for", &self.retry_for)
            .field("events", &self.events)
            .finish()
    }
}

impl fmt::Debug for HeaderSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(<redacted>)"),
            Self::File(s) => f.debug_tuple("File").field(&s.value_file).finish(),
        }
    }
}

fn redacted_url(url: &str) -> String {
    reqwest::Url::parse(url).map(|u| super::url_origin(&u)).unwrap_or_else(|_| "<invalid url>".into())
}

fn default_name() -> String {
    "webhook".to_string()
}

#[typetag::serde(name = "webhook")]
impl NotifierConfig for WebhookConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = super::parse_http_url("url", &self.url) {
            p.push(e);
        }
        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(format!("`headers`: {name:?} is not a valid header name"));
            }
            match value {
                HeaderSource::Value(v) if HeaderValue::from_str(v).is_err() => {
                    p.push(format!("`headers.{name}`: the value has characters a header cannot carry"));
                }
                HeaderSource::File(f) if f.value_file.as_os_str().is_empty() => {
                    p.push(format!("`headers.{name}.value_file` must not be empty"));
                }
                _ => {}
            }
        }
        p.extend(super::delivery_problems(self.timeout, self.retry_for));
        p
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Notifier>, BackendError> {
        let url = super::parse_http_url("url", &self.url).map_err(|e| BackendError::new(ErrorKind::Config, e))?;
        let mut headers = Vec::new();
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| {
                BackendError::with_source(ErrorKind::Config, format!("invalid header name {name:?}"), e)
            })?;
            headers.push((name, value.clone()));
        }
        Ok(Box::new(Webhook {
            name: self.name.clone(),
            client: super::http_client(*self.timeout)?,
            url,
            headers,
            policy: super::policy(self.timeout, self.retry_for, &self.events),
        }))
    }
}

hecate_core::register_backend!(Notifier, "webhook", "POSTs events as JSON to a URL", WebhookConfig);

/// The runtime side of [`WebhookConfig`].
pub struct Webhook {
    name: String,
    client: reqwest::Client,
    url: reqwest::Url,
    headers: Vec<(HeaderName, HeaderSource)>,
    policy: DeliveryPolicy,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &super::url_origin(&self.url))
            .field("headers", &self.headers.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Webhook {
    fn header_value(name: &HeaderName, source: &HeaderSource) -> Result<HeaderValue, BackendError> {
        let text = match source {
            HeaderSource::Value(v) => v.clone(),
            HeaderSource::File(f) => super::read_secret(&f.value_file, &format!("the value_file of header {name}"))?,
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            BackendError::new(
                ErrorKind::Config,
                format!("the value of header {name} has characters a header cannot carry"),
            )
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[async_trait]
impl Notifier for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    async fn notify(&self, event: &Event) -> Result<(), BackendError> {
        let mut req = self
            .client
            .post(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(event.to_json());
        for (name, source) in &self.headers {
            req = req.header(name.clone(), Self::header_value(name, source)?);
        }
        let resp = req.send().await.map_err(|e| super::http_error("webhook", e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(super::http_status_error("webhook", status, &body))
    }

    /// A `HEAD` request with the configured headers: the server is reachable and its
    /// certificate trusted, and the header files readable. Whatever it answers passes: many
    /// webhook endpoints answer only `POST` (405, 404 or 400 to anything else), so the status
    /// is reported, not judged; only a `POST` would test the token, and it would notify.
    async fn preflight(&self) -> Vec<Check> {
        let result = async {
            let mut req = self.client.head(self.url.clone());
            for (name, source) in &self.headers {
                req = req.header(name.clone(), Self::header_value(name, source)?);
            }
            let resp = req.send().await.map_err(|e| super::http_error("webhook", e))?;
            Ok(format!("{} answers (HEAD: {})", super::url_origin(&self.url), resp.status()))
        }
        .await;
        vec![Check::from_result("reachable", result)]
    }

    fn policy(&self) -> DeliveryPolicy {
        self.policy.clone()
    }
}
