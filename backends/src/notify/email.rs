//! `email`: mails each event over SMTP (TLS through rustls: implicit TLS or STARTTLS), the
//! password read from a file at each send.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::notify::{DeliveryPolicy, Event, EventKind, Notifier, NotifierConfig};
use hecate_core::preflight::Check;
use hecate_core::{BackendError, BuildContext, ErrorKind};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};
use serde::{Deserialize, Serialize};

use super::{default_retry_for, default_timeout};

/// Mails events over SMTP.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// A name for this notifier in logs and reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// The SMTP server's host name (checked against its certificate) or address.
    pub server: String,
    /// The server's port; by default 465 with `tls: tls`, 587 with `starttls`, 25 with `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub port: Option<u16>,
    /// How the connection is protected: `tls` (implicit TLS, "smtps"), `starttls` (plain, then
    /// upgraded; refused if the server cannot) or `none` (only for a relay on this host).
    #[serde(default)]
    pub tls: SmtpTls,
    /// The user to log in as; needs `password_file`. Without it, no login is attempted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the password: its whole content, one trailing line break ignored, read at
    /// each send (keep it mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The sender: `hecate@example.org` or `Hecate <hecate@example.org>`.
    pub from: String,
    /// The recipients, in the same form.
    pub to: Vec<String>,
    /// Put before every subject.
    #[serde(default = "default_subject_prefix")]
    pub subject_prefix: String,
    /// Time limit of one try (connect, log in, send). 1ms to 10m; default 10s.
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

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// TLS from the first byte (port 465).
    Tls,
    /// Plain, upgraded with STARTTLS before anything is sent; fails if the server cannot.
    #[default]
    Starttls,
    /// No encryption: only for a relay on this host.
    None,
}

impl SmtpTls {
    fn default_port(self) -> u16 {
        match self {
            Self::Tls => 465,
            Self::Starttls => 587,
            Self::None => 25,
        }
    }
}

fn default_name() -> String {
    "email".to_string()
}

fn default_subject_prefix() -> String {
    "[hecate]".to_string()
}

fn is_loopback(server: &str) -> bool {
    server == "localhost" || server.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[typetag::serde(name = "email")]
impl NotifierConfig for EmailConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.server.is_empty() {
            p.push("`server` must not be empty".into());
        }
        if self.port == Some(0) {
            p.push("`port` must not be 0".into());
        }
        match (&self.username, &self.password_file) {
            (Some(u), _) if u.is_empty() => p.push("`username` must not be empty".into()),
            (Some(_), None) => p.push("`username` needs `password_file`".into()),
            (None, Some(_)) => p.push("`password_file` is only used with `username`".into()),
            _ => {}
        }
        if self.tls == SmtpTls::None && self.username.is_some() && !is_loopback(&self.server) {
            p.push("`tls: none` would send the password unencrypted: use `tls` or `starttls`".into());
        }
        if let Err(e) = self.from.parse::<Mailbox>() {
            p.push(format!("`from` is not an address: {e}"));
        }
        if self.to.is_empty() {
            p.push("`to` needs at least one recipient".into());
        }
        for (i, to) in self.to.iter().enumerate() {
            if let Err(e) = to.parse::<Mailbox>() {
                p.push(format!("`to[{i}]` is not an address: {e}"));
            }
        }
        p.extend(super::delivery_problems(self.timeout, self.retry_for));
        p
    }

    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn Notifier>, BackendError> {
        let mailbox = |field: &str, s: &str| {
            s.parse::<Mailbox>()
                .map_err(|e| BackendError::with_source(ErrorKind::Config, format!("`{field}` is not an address"), e))
        };
        let from = mailbox("from", &self.from)?;
        let to = self.to.iter().map(|t| mailbox("to", t)).collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(BackendError::new(ErrorKind::Config, "`to` needs at least one recipient"));
        }
        Ok(Box::new(Email {
            name: self.name.clone(),
            server: self.server.clone(),
            port: self.port.unwrap_or(self.tls.default_port()),
            tls: self.tls,
            login: self.username.clone().zip(self.password_file.clone()),
            from,
            to,
            subject_prefix: self.subject_prefix.clone(),
            hello_name: ctx.host.clone(),
            timeout: *self.timeout,
            policy: super::policy(self.timeout, self.retry_for, &self.events),
        }))
    }
}

hecate_core::register_backend!(Notifier, "email", "mails events over SMTP (rustls)", EmailConfig);

/// The runtime side of [`EmailConfig`].
pub struct Email {
    name: String,
    server: String,
    port: u16,
    tls: SmtpTls,
    login: Option<(String, PathBuf)>,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject_prefix: String,
    hello_name: String,
    timeout: std::time::Duration,
    policy: DeliveryPolicy,
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Email")
            .field("name", &self.name)
            .field("server", &self.server)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.login.as_ref().map(|l| &l.0))
            .finish_non_exhaustive()
    }
}

impl Email {
    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, BackendError> {
        let tls_params = || {
            super::ensure_crypto_provider();
            TlsParameters::new(self.server.clone())
                .map_err(|e| BackendError::with_source(ErrorKind::Config, "cannot set up tls", e))
        };
        let tls = match self.tls {
            SmtpTls::Tls => Tls::Wrapper(tls_params()?),
            SmtpTls::Starttls => Tls::Required(tls_params()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(self.server.clone())
            .port(self.port)
            .tls(tls)
            .timeout(Some(self.timeout))
            .hello_name(ClientId::Domain(self.hello_name.clone()));
        if let Some((user, file)) = &self.login {
            let password = super::read_secret(file, "password_file")?;
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(builder.build())
    }

    fn message(&self, event: &Event) -> Result<Message, BackendError> {
        let headline: String = event.message.chars().take(100).collect();
        let subject =
            format!("{} {}: {}: {headline}", self.subject_prefix, event.host, event.kind.as_str().replace('_', " "));
        let mut body = format!("{}\n\nhost: {}\nevent: {}\nat: {}\n", event.message, event.host, event.kind, event.at);
        if !event.details.is_empty() {
            let details = serde_json::to_string_pretty(&event.details).unwrap_or_default();
            body.push_str(&format!("\ndetails:\n{details}\n"));
        }
        body.push_str(&format!("\n-- \nthe event as JSON:\n{}\n", event.to_json()));
        let mut builder =
            Message::builder().from(self.from.clone()).subject(subject.trim()).header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder.body(body).map_err(|e| BackendError::with_source(ErrorKind::Config, "cannot build the message", e))
    }
}

fn smtp_error(what: &str, e: lettre::transport::smtp::Error) -> BackendError {
    let code = e.status().map(|c| c.to_string());
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if matches!(code.as_deref(), Some("530" | "534" | "535" | "538")) {
        ErrorKind::Auth
    } else if e.is_response() || e.is_permanent() || e.is_transient() || e.is_tls() {
        ErrorKind::Protocol
    } else {
        ErrorKind::Unreachable
    };
    BackendError::with_source(kind, what.to_string(), e)
}

#[async_trait]
impl Notifier for Email {
    fn name(&self) -> &str {
        &self.name
    }

    async fn notify(&self, event: &Event) -> Result<(), BackendError> {
        let message = self.message(event)?;
        self.transport()?.send(message).await.map_err(|e| smtp_error("smtp delivery failed", e))?;
        Ok(())
    }

    /// Connects as a send would (TLS as configured, EHLO, the login), says `NOOP` and quits:
    /// no mail. Whether the server would accept the sender and recipients is not asked.
    async fn preflight(&self) -> Vec<Check> {
        let result = async {
            let usable = self.transport()?.test_connection().await.map_err(|e| smtp_error("smtp check failed", e))?;
            let who = format!("{}:{}", self.server, self.port);
            match (usable, &self.login) {
                (true, Some((user, _))) => Ok(format!("{who} accepts the login of {user}")),
                (true, None) => Ok(format!("{who} answers")),
                (false, _) => Err(BackendError::new(ErrorKind::Protocol, format!("{who} did not answer NOOP"))),
            }
        }
        .await;
        vec![Check::from_result("smtp", result)]
    }

    fn policy(&self) -> DeliveryPolicy {
        self.policy.clone()
    }
}
