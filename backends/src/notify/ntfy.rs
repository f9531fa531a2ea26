//! `ntfy`: publishes each event to an ntfy topic (ntfy.sh or a self-hosted server), with a
//! priority by event kind so a phone wakes for a shutdown but not for a finished stage.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::notify::{DeliveryPolicy, Event, EventKind, Notifier, NotifierConfig};
use hecate_core::preflight::Check;
use hecate_core::{BackendError, BuildContext, ErrorKind};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::{Deserialize, Serialize};

use super::{default_retry_for, default_timeout};

/// Publishes events to an ntfy topic.
#[derive(Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NtfyConfig {
    /// A name for this notifier in logs and reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// The ntfy server's base URL.
    #[serde(default = "default_server")]
    pub server: String,
    /// The topic. On a public server the topic name is the only protection: pick one that is
    /// hard to guess. Never logged.
    pub topic: String,
    /// A file holding an access token (`tk_...`), sent as `Authorization: Bearer`; read at each
    /// send (keep it mode 0600). Without it, messages are published anonymously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Priority per event kind, overriding the defaults: `high` for shutdown_triggered,
    /// step_failed, forwarder_fallback, run_not_started, run_interrupted, backend_unavailable,
    /// comm_lost, low_battery and overload, `low` for stage_finished, `default` otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub priorities: BTreeMap<EventKind, Priority>,
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

/// An ntfy message priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// 1: no sound or vibration, folded away.
    Min,
    /// 2: no sound or vibration.
    Low,
    /// 3: the phone's default.
    Default,
    /// 4: long vibration burst, pop-over.
    High,
    /// 5: really long vibration bursts, pop-over.
    Urgent,
}

impl Priority {
    /// The number ntfy's JSON API takes.
    pub fn number(self) -> u8 {
        match self {
            Self::Min => 1,
            Self::Low => 2,
            Self::Default => 3,
            Self::High => 4,
            Self::Urgent => 5,
        }
    }

    /// The default priority of an event kind: urgent events wake someone, progress does not.
    pub fn for_kind(kind: EventKind) -> Self {
        if kind.is_urgent() {
            Self::High
        } else if kind == EventKind::StageFinished {
            Self::Low
        } else {
            Self::Default
        }
    }
}

impl fmt::Debug for NtfyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NtfyConfig")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("topic", &"<redacted>")
            .field("token_file", &self.token_file)
            .field("priorities", &self.priorities)
            .field("timeout", &self.timeout)
            .field("retry_for", &self.retry_for)
            .field("events", &self.events)
            .finish()
    }
}

fn default_name() -> String {
    "ntfy".to_string()
}

fn default_server() -> String {
    "https://ntfy.sh".to_string()
}

#[typetag::serde(name = "ntfy")]
impl NotifierConfig for NtfyConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = super::parse_http_url("server", &self.server) {
            p.push(e);
        }
        let topic_ok = !self.topic.is_empty()
            && self.topic.len() <= 64
            && self.topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !topic_ok {
            p.push("`topic` must be 1 to 64 characters of letters, digits, `_` and `-`".into());
        }
        p.extend(super::delivery_problems(self.timeout, self.retry_for));
        p
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Notifier>, BackendError> {
        let server =
            super::parse_http_url("server", &self.server).map_err(|e| BackendError::new(ErrorKind::Config, e))?;
        Ok(Box::new(Ntfy {
            name: self.name.clone(),
            client: super::http_client(*self.timeout)?,
            server,
            topic: self.topic.clone(),
            token_file: self.token_file.clone(),
            priorities: self.priorities.clone(),
            policy: super::policy(self.timeout, self.retry_for, &self.events),
        }))
    }
}

hecate_core::register_backend!(Notifier, "ntfy", "publishes events to an ntfy topic", NtfyConfig);

/// The runtime side of [`NtfyConfig`].
pub struct Ntfy {
    name: String,
    client: reqwest::Client,
    server: reqwest::Url,
    topic: String,
    token_file: Option<PathBuf>,
    priorities: BTreeMap<EventKind, Priority>,
    policy: DeliveryPolicy,
}

impl fmt::Debug for Ntfy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ntfy")
            .field("name", &self.name)
            .field("server", &super::url_origin(&self.server))
            .finish_non_exhaustive()
    }
}

/// ntfy's JSON publishing body (`POST /` on the server).
#[derive(Debug, Serialize)]
struct Publish<'a> {
    topic: &'a str,
    title: String,
    message: &'a str,
    priority: u8,
    tags: Vec<&'static str>,
}

impl Ntfy {
    /// `Bearer TOKEN` from `token_file`, read at each use (a rotated token is picked up).
    fn authorization(&self) -> Result<Option<HeaderValue>, BackendError> {
        let Some(file) = &self.token_file else { return Ok(None) };
        let token = super::read_secret(file, "token_file")?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| BackendError::new(ErrorKind::Config, "the token in token_file has invalid characters"))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }

    fn priority(&self, kind: EventKind) -> Priority {
        self.priorities.get(&kind).copied().unwrap_or_else(|| Priority::for_kind(kind))
    }

    /// The emoji tag ntfy shows before the title.
    fn tag(kind: EventKind) -> &'static str {
        match kind {
            EventKind::OnBattery => "battery",
            EventKind::PowerRestored => "electric_plug",
            EventKind::ShutdownTriggered | EventKind::ForwarderFallback => "rotating_light",
            EventKind::StepFailed | EventKind::RunNotStarted | EventKind::BackendUnavailable => "warning",
            EventKind::RunInterrupted => "hourglass",
            EventKind::StageFinished => "arrow_forward",
            EventKind::ShutdownDone | EventKind::StartupDone | EventKind::CommRestored => "white_check_mark",
            EventKind::CommLost => "x",
            EventKind::LowBattery => "rotating_light",
            EventKind::ReplaceBattery | EventKind::StepFellBack => "wrench",
            EventKind::Overload => "zap",
            EventKind::PreflightFailed => "stethoscope",
            EventKind::PreflightRecovered => "white_check_mark",
        }
    }
}

#[async_trait]
impl Notifier for Ntfy {
    fn name(&self) -> &str {
        &self.name
    }

    async fn notify(&self, event: &Event) -> Result<(), BackendError> {
        let body = Publish {
            topic: &self.topic,
            title: format!("{}: {}", event.host, event.kind.as_str().replace('_', " ")),
            message: &event.message,
            priority: self.priority(event.kind).number(),
            tags: vec![Self::tag(event.kind), event.kind.as_str()],
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| BackendError::with_source(ErrorKind::Protocol, "cannot serialise the ntfy message", e))?;
        let mut req = self
            .client
            .post(self.server.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body);
        if let Some(value) = self.authorization()? {
            req = req.header(AUTHORIZATION, value);
        }
        let resp = req.send().await.map_err(|e| super::http_error("ntfy", e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text = resp.text().await.unwrap_or_default();
        Err(super::http_status_error("ntfy", status, &text))
    }

    /// `GET /v1/health` with the token: ntfy authenticates every request before it routes it
    /// (`maybeAuthenticate` in its server.go), so a token it does not know is refused with 401
    /// here too, and the health answer says the server works. Whether the token may publish to
    /// the topic is not checkable without publishing.
    async fn preflight(&self) -> Vec<Check> {
        let result = async {
            let url = self
                .server
                .join("v1/health")
                .map_err(|e| BackendError::with_source(ErrorKind::Config, "cannot make the health url", e))?;
            let mut req = self.client.get(url);
            if let Some(value) = self.authorization()? {
                req = req.header(AUTHORIZATION, value);
            }
            let resp = req.send().await.map_err(|e| super::http_error("ntfy", e))?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                return Err(super::http_status_error("ntfy", status, &text));
            }
            let healthy = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["healthy"].as_bool());
            match healthy {
                Some(true) if self.token_file.is_some() => {
                    Ok(format!("{} is healthy and accepts the token", super::url_origin(&self.server)))
                }
                Some(true) => Ok(format!("{} is healthy", super::url_origin(&self.server))),
                _ => Err(BackendError::new(
                    ErrorKind::Protocol,
                    format!(
                        "{} does not say it is healthy: {}",
                        super::url_origin(&self.server),
                        hecate_core::text::clean(&text, 200)
                    ),
                )),
            }
        }
        .await;
        vec![Check::from_result("server", result)]
    }

    fn policy(&self) -> DeliveryPolicy {
        self.policy.clone()
    }
}
