//! `redfish`: a machine's power through its BMC's Redfish API (DMTF), over HTTPS with basic auth.
//!
//! The system is found once (by `system_id`, by `system_name`, or as the only one under
//! `/redfish/v1/Systems`) and remembered. Power changes are `ComputerSystem.Reset` actions with
//! the ResetTypes bmclib uses: off is `GracefulShutdown`, then `ForceOff` if the machine is still
//! on after `graceful_timeout`; on is `On`; nothing is sent when the machine is already there.
//! Each action is checked by reading `PowerState` until it shows.

use std::fmt;
use std::path::PathBuf;

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::{MIN_TIMEOUT, ONE_STEP, ONE_TRY};
use hecate_core::node::{Capability, NodeController, NodeControllerConfig, NodeInfo, NodeOp, NodeOpOutput, PowerState};
use hecate_core::{BackendError, BuildContext, ErrorKind};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{StatusCode, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::bmc::{self, BMC_CAPABILITIES, BmcPower, PowerDriver, Timing};

/// A machine whose BMC speaks Redfish.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedfishConfig {
    /// The BMC's base URL, without a path: `https://10.10.1.10` or `https://bmc-0a.lan:8443` (the
    /// API is found under `/redfish/v1`). `http://` works but sends the credentials in clear.
    pub endpoint: String,
    /// The system to control, by its `Id` (the last part of its URL) or its `UUID`. Needed when
    /// the BMC lists several systems (a blade chassis); without it and `system_name`, the BMC
    /// must list exactly one, which is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_id: Option<String>,
    /// The system to control, by its `Name`; instead of `system_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_name: Option<String>,
    /// A file holding `username:password` on one line (split at the first `:`, so the password
    /// may contain colons), sent as HTTP basic auth. Without it requests carry no credentials.
    /// Read when Hecate starts (a missing file stops the start, not `config check`); keep it
    /// readable by Hecate only (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// A PEM file with the certificate(s) to trust for this BMC: the CA that issued its
    /// certificate, or its own self-signed one. Only these are trusted then. Without it (and
    /// without `insecure`), the system's trust store is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Skip TLS certificate verification for this BMC. Anyone on the network path can then pose
    /// as the BMC and read its credentials, so `hecate config check` warns; prefer `ca_file`.
    #[serde(default)]
    pub insecure: bool,
    /// Time limit of each HTTP request (connecting included). 1ms to 10m; default 10s.
    #[serde(default = "bmc::default_timeout")]
    pub timeout: HumanDuration,
    /// How long the OS gets to shut down after `GracefulShutdown` before `ForceOff` cuts the
    /// power; `0s` cuts it at once. Minutes by default, not seconds: a node cut while it still
    /// writes loses what it had not flushed. `graceful_timeout` + `verify_timeout` must fit within
    /// `shutdown.power_off_timeout` (10m by default), which bounds the whole power off. At most
    /// 1h; default 5m.
    #[serde(default = "bmc::default_soft_off_timeout")]
    pub graceful_timeout: HumanDuration,
    /// How long an accepted `ForceOff` or `On` gets to show in `PowerState` before the
    /// controller reports the BMC as not acting (and the node's next controller is tried). 1ms
    /// to 1h; default 15s.
    #[serde(default = "bmc::default_verify_timeout")]
    pub verify_timeout: HumanDuration,
    /// How often `PowerState` is read while waiting for a change. 1ms to 10m; default 1s.
    #[serde(default = "bmc::default_poll_interval")]
    pub poll_interval: HumanDuration,
}

/// Checks an endpoint: an `http(s)://host[:port]` URL without credentials, path or query.
/// Messages never repeat the text, which may hold a password.
fn parse_endpoint(endpoint: &str) -> Result<Url, String> {
    let url = Url::parse(endpoint.trim())
        .map_err(|e| format!("`endpoint` is not a url ({e}); write e.g. `https://10.10.1.10`"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("`endpoint` must not hold a user or password; put them in `credentials_file`".into());
    }
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("`endpoint` must start with https:// (or http://), not {}://", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("`endpoint` has no host".into());
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`endpoint` is the bmc's base url without a path, like `{}://{}`; the api under /redfish/v1 is found from there",
            url.scheme(),
            url.host_str().unwrap_or_default()
        ));
    }
    Ok(url)
}

#[typetag::serde(name = "redfish")]
impl NodeControllerConfig for RedfishConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let url = parse_endpoint(&self.endpoint).map_err(|e| p.push(e)).ok();
        for (key, value) in [("system_id", &self.system_id), ("system_name", &self.system_name)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                p.push(format!("`{key}` must not be empty"));
            }
        }
        if self.system_id.is_some() && self.system_name.is_some() {
            p.push("set `system_id` or `system_name`, not both".into());
        }
        if self.insecure && self.ca_file.is_some() {
            p.push("`ca_file` and `insecure: true` contradict each other; keep one".into());
        }
        if url.is_some_and(|u| u.scheme() == "http") && (self.insecure || self.ca_file.is_some()) {
            p.push("`ca_file` and `insecure` are tls settings; they do nothing for an http:// endpoint".into());
        }
        for (key, value, min, max) in [
            ("timeout", self.timeout, MIN_TIMEOUT, ONE_TRY),
            ("graceful_timeout", self.graceful_timeout, HumanDuration::ZERO, ONE_STEP),
            ("verify_timeout", self.verify_timeout, MIN_TIMEOUT, ONE_STEP),
            ("poll_interval", self.poll_interval, MIN_TIMEOUT, ONE_TRY),
        ] {
            if let Some(m) = value.out_of_range(min, max) {
                p.push(format!("`{key}` {m}"));
            }
        }
        p
    }

    fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let Ok(url) = parse_endpoint(&self.endpoint) else { return w };
        if url.scheme() == "https" && self.insecure {
            w.push(format!(
                "`insecure: true`: the certificate of {url} is not verified, so anyone on the network path can pose \
                 as the bmc and read its credentials; pin it with `ca_file` instead"
            ));
        }
        if url.scheme() == "http" && self.credentials_file.is_some() {
            w.push(format!("{url} is plain http: the bmc credentials cross the network unencrypted"));
        }
        w
    }

    fn build(&self, node: &NodeInfo, _ctx: &BuildContext) -> Result<Box<dyn NodeController>, BackendError> {
        Ok(Box::new(RedfishNode::new(node, self)?))
    }
}

hecate_core::register_backend!(
    NodeController,
    "redfish",
    "bmc power over redfish (https, basic auth): state, on, graceful then forced off",
    RedfishConfig
);

/// A user and password for basic auth; `Debug` never shows the password.
struct Credentials {
    username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"***").finish()
    }
}

impl Credentials {
    /// Reads `username:password` from a file.
    fn read(file: &std::path::Path) -> Result<Self, BackendError> {
        let line = bmc::read_secret_file(file, "credentials_file")?;
        match line.split_once(':') {
            Some((user, password)) if !user.is_empty() => {
                Ok(Self { username: user.to_owned(), password: password.to_owned() })
            }
            _ => Err(BackendError::new(
                ErrorKind::Config,
                format!("credentials_file {} must hold `username:password` on one line", file.display()),
            )),
        }
    }
}

/// Which system of the BMC to control.
#[derive(Debug, Clone)]
enum Selector {
    /// By `Id` or `UUID`.
    Id(String),
    /// By `Name`.
    Name(String),
    /// The only one listed.
    Only,
}

/// Where a found system and its reset action live.
#[derive(Debug, Clone)]
struct System {
    url: Url,
    reset_target: Url,
    /// `ResetType@Redfish.AllowableValues`, when the BMC lists them.
    reset_types: Option<Vec<String>>,
}

/// The runtime side of [`RedfishConfig`].
#[derive(Debug)]
pub struct RedfishNode {
    node: String,
    base: Url,
    client: reqwest::Client,
    credentials: Option<Credentials>,
    selector: Selector,
    /// Found on first use, then reused; forgotten when reading it fails, so a BMC that renumbered
    /// its systems is searched again.
    system: std::sync::Mutex<Option<System>>,
    timing: Timing,
}

impl RedfishNode {
    fn new(node: &NodeInfo, cfg: &RedfishConfig) -> Result<Self, BackendError> {
        let base = parse_endpoint(&cfg.endpoint).map_err(|e| BackendError::new(ErrorKind::Config, e))?;
        let credentials = cfg.credentials_file.as_deref().map(Credentials::read).transpose()?;
        ensure_crypto_provider();
        // BMCs sit on management networks: never through a proxy from the environment
        let mut builder = reqwest::Client::builder().timeout(*cfg.timeout).connect_timeout(*cfg.timeout).no_proxy();
        if let Some(ca_file) = &cfg.ca_file {
            let pem = std::fs::read(ca_file).map_err(|e| {
                BackendError::with_source(ErrorKind::Config, format!("cannot read ca_file {}", ca_file.display()), e)
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                BackendError::with_source(ErrorKind::Config, format!("ca_file {} is not pem", ca_file.display()), e)
            })?;
            if certs.is_empty() {
                return Err(BackendError::new(
                    ErrorKind::Config,
                    format!("ca_file {} holds no certificate", ca_file.display()),
                ));
            }
            builder = builder.tls_certs_only(certs);
        } else if cfg.insecure {
            builder = builder.tls_danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| BackendError::with_source(ErrorKind::Config, "cannot set up the https client", e))?;
        let selector = match (&cfg.system_id, &cfg.system_name) {
            (Some(id), _) => Selector::Id(id.trim().to_owned()),
            (None, Some(name)) => Selector::Name(name.trim().to_owned()),
            (None, None) => Selector::Only,
        };
        Ok(Self {
            node: node.name.clone(),
            base,
            client,
            credentials,
            selector,
            system: std::sync::Mutex::new(None),
            timing: Timing { soft: *cfg.graceful_timeout, verify: *cfg.verify_timeout, poll: *cfg.poll_interval },
        })
    }

    /// `path` (an `@odata.id` such as `/redfish/v1/Systems/1`) on the BMC.
    fn url(&self, path: &str) -> Result<Url, BackendError> {
        self.base.join(path).map_err(|e| {
            BackendError::with_source(ErrorKind::Protocol, format!("the bmc gave an unusable link {path:?}"), e)
        })
    }

    fn request(&self, method: reqwest::Method, url: &Url) -> reqwest::RequestBuilder {
        let request =
            self.client.request(method, url.clone()).header(ACCEPT, "application/json").header("OData-Version", "4.0");
        match &self.credentials {
            Some(c) => request.basic_auth(&c.username, Some(&c.password)),
            None => request,
        }
    }

    /// GETs a resource as JSON.
    async fn get(&self, url: &Url) -> Result<Value, BackendError> {
        let what = format!("GET {}", url.path());
        let response = self.request(reqwest::Method::GET, url).send().await.map_err(|e| transport_error(&what, e))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| transport_error(&what, e))?;
        if !status.is_success() {
            return Err(self.status_error(&what, status, &body, ErrorKind::Protocol));
        }
        serde_json::from_slice(&body)
            .map_err(|e| BackendError::with_source(ErrorKind::Protocol, format!("{what}: the answer is not json"), e))
    }

    /// An error for a non-2xx answer; `kind` unless the status says more.
    fn status_error(&self, what: &str, status: StatusCode, body: &[u8], kind: ErrorKind) -> BackendError {
        let secrets: Vec<&str> = self.credentials.iter().map(|c| c.password.as_str()).collect();
        let detail = error_detail(body, &secrets).map(|m| format!(": {m}")).unwrap_or_default();
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Auth,
            StatusCode::NOT_IMPLEMENTED => ErrorKind::Unsupported,
            _ => kind,
        };
        let hint = if status == StatusCode::UNAUTHORIZED && self.credentials.is_none() {
            " (no credentials_file is configured)"
        } else {
            ""
        };
        BackendError::new(kind, format!("{what}: {status}{hint}{detail}"))
    }

    /// The system and its current resource, finding it first if needed.
    async fn fetch_system(&self) -> Result<(System, Value), BackendError> {
        let known = self.system.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(system) = known {
            return match self.get(&system.url).await {
                Ok(json) => Ok((system, json)),
                Err(e) => {
                    *self.system.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    Err(e)
                }
            };
        }
        let (system, json) = self.find_system().await?;
        tracing::debug!(node = %self.node, system = %system.url, "redfish system found");
        *self.system.lock().unwrap_or_else(|p| p.into_inner()) = Some(system.clone());
        Ok((system, json))
    }

    /// Walks from the service root to the configured system.
    async fn find_system(&self) -> Result<(System, Value), BackendError> {
        let root = self.get(&self.url("/redfish/v1/")?).await?;
        let collection_path = root["Systems"]["@odata.id"].as_str().unwrap_or("/redfish/v1/Systems").to_owned();
        let collection = self.get(&self.url(&collection_path)?).await?;
        let members: Vec<&str> = collection["Members"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["@odata.id"].as_str()).collect())
            .unwrap_or_default();
        let listed = || peer_text(&members.iter().map(|m| last_segment(m)).collect::<Vec<_>>().join(", "));
        if members.is_empty() {
            return Err(BackendError::new(
                ErrorKind::Protocol,
                format!("the bmc lists no system under {}", peer_text(&collection_path)),
            ));
        }
        let found = match &self.selector {
            Selector::Only if members.len() == 1 => Some(self.load_system(members[0]).await?),
            Selector::Only => {
                return Err(BackendError::new(
                    ErrorKind::Config,
                    format!(
                        "the bmc lists {} systems under {} ({}); choose one with `system_id` or `system_name`",
                        members.len(),
                        peer_text(&collection_path),
                        listed()
                    ),
                ));
            }
            Selector::Id(want) => {
                // the Id is usually the last part of the URL: try that before reading every system
                match members.iter().find(|m| last_segment(m) == want) {
                    Some(m) => Some(self.load_system(m).await?),
                    None => self.search(&members, |s| s["Id"] == want.as_str() || uuid_eq(&s["UUID"], want)).await?,
                }
            }
            Selector::Name(want) => self.search(&members, |s| s["Name"] == want.as_str()).await?,
        };
        found.ok_or_else(|| {
            let (key, want) = match &self.selector {
                Selector::Id(id) => ("Id or UUID", id),
                Selector::Name(name) => ("Name", name),
                Selector::Only => unreachable!("the only system was taken above"),
            };
            BackendError::new(
                ErrorKind::Config,
                format!(
                    "the bmc has no system with {key} `{want}` under {} (it lists {})",
                    peer_text(&collection_path),
                    listed()
                ),
            )
        })
    }

    /// Reads systems in turn until one satisfies `wanted`.
    async fn search(
        &self,
        members: &[&str],
        wanted: impl Fn(&Value) -> bool,
    ) -> Result<Option<(System, Value)>, BackendError> {
        for m in members {
            let (system, json) = self.load_system(m).await?;
            if wanted(&json) {
                return Ok(Some((system, json)));
            }
        }
        Ok(None)
    }

    /// GETs one system and notes where its reset action is.
    async fn load_system(&self, path: &str) -> Result<(System, Value), BackendError> {
        let url = self.url(path)?;
        let json = self.get(&url).await?;
        let action = &json["Actions"]["#ComputerSystem.Reset"];
        let reset_target = match action["target"].as_str() {
            Some(target) => self.url(target)?,
            None => self.url(&format!("{}/Actions/ComputerSystem.Reset", url.path().trim_end_matches('/')))?,
        };
        let reset_types = action["ResetType@Redfish.AllowableValues"]
            .as_array()
            .map(|v| v.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect());
        Ok((System { url, reset_target, reset_types }, json))
    }

    /// POSTs `ComputerSystem.Reset` with `reset_type`.
    async fn reset(&self, reset_type: &str) -> Result<(), BackendError> {
        let (system, _) = self.fetch_system().await?;
        if let Some(allowed) = &system.reset_types
            && !allowed.iter().any(|t| t == reset_type)
            && reset_type == "GracefulShutdown"
        {
            return Err(BackendError::unsupported(format!(
                "the bmc does not offer ResetType GracefulShutdown (it offers {})",
                peer_text(&allowed.join(", "))
            )));
        }
        tracing::info!(node = %self.node, system = %system.url, reset_type, "redfish reset");
        let what = format!("POST {} {reset_type}", system.reset_target.path());
        let body = serde_json::json!({ "ResetType": reset_type }).to_string();
        let response = self
            .request(reqwest::Method::POST, &system.reset_target)
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| transport_error(&what, e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(self.status_error(&what, status, &body, ErrorKind::Failed))
    }
}

#[async_trait]
impl PowerDriver for RedfishNode {
    async fn read(&self) -> Result<BmcPower, BackendError> {
        let (system, json) = self.fetch_system().await?;
        match json["PowerState"].as_str() {
            Some("On" | "Paused") => Ok(BmcPower::On),
            Some("Off") => Ok(BmcPower::Off),
            Some("PoweringOn") => Ok(BmcPower::PoweringOn),
            Some("PoweringOff") => Ok(BmcPower::PoweringOff),
            other => Err(BackendError::new(
                ErrorKind::Protocol,
                format!("system {} reports PowerState {}", system.url.path(), peer_text(&format!("{other:?}"))),
            )),
        }
    }

    async fn soft_off(&self) -> Result<(), BackendError> {
        self.reset("GracefulShutdown").await
    }

    async fn hard_off(&self) -> Result<(), BackendError> {
        self.reset("ForceOff").await
    }

    async fn on(&self) -> Result<(), BackendError> {
        self.reset("On").await
    }
}

#[async_trait]
impl NodeController for RedfishNode {
    fn kind(&self) -> &str {
        "redfish"
    }

    fn capabilities(&self) -> &[Capability] {
        &BMC_CAPABILITIES
    }

    async fn run(&self, op: &NodeOp) -> Result<NodeOpOutput, BackendError> {
        match op {
            NodeOp::PowerState => Ok(NodeOpOutput::Power(self.read().await?.state())),
            NodeOp::PowerOn => bmc::power_on(self, self.timing).await.map(|()| NodeOpOutput::Done),
            // returns only once the bmc shows the machine off: confirmed
            NodeOp::PowerOff => bmc::power_off(self, self.timing).await.map(|()| NodeOpOutput::Power(PowerState::Off)),
            NodeOp::ForceOff => bmc::force_off(self, self.timing).await.map(|()| NodeOpOutput::Power(PowerState::Off)),
            // not advertised (see BMC_CAPABILITIES), but answers if asked: the BMC and system answer
            NodeOp::Probe => self.fetch_system().await.map(|_| NodeOpOutput::Done),
            other => Err(BackendError::unsupported(format!("redfish cannot {other}"))),
        }
    }
    async fn preflight(&self, _ops: &[NodeOp]) -> Vec<hecate_core::preflight::Check> {
        bmc::preflight(self, &format!("the redfish bmc at {}", self.base.origin().ascii_serialization())).await
    }
}

/// Installs rustls's ring provider unless the process has one: building an HTTPS client panics
/// without it. `hecate::init_process` does the same; this covers tests and third-party binaries.
pub(crate) fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // losing a race against another thread installing one is fine
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// Classifies a failed request: a timeout, a certificate that did not verify (auth: the peer
/// could not prove who it is), or an unreachable BMC.
fn transport_error(what: &str, e: reqwest::Error) -> BackendError {
    let (kind, why) = if e.is_timeout() {
        (ErrorKind::Timeout, "no answer in time")
    } else if tls_failure(&e) {
        (ErrorKind::Auth, "tls handshake failed (is the bmc's certificate trusted? see `ca_file`)")
    } else if e.is_decode() || e.is_body() {
        (ErrorKind::Protocol, "unreadable answer")
    } else {
        (ErrorKind::Unreachable, "cannot reach the bmc")
    };
    BackendError::with_source(kind, format!("{what}: {why}"), e.without_url())
}

/// Whether a rustls error is somewhere in the cause chain. An `io::Error` hides the error it
/// wraps from `source()` (hyper-rustls wraps rustls's in two of them), so it is unwrapped instead.
fn tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    false
}

/// A BMC's error message as it may enter a step's message (and so runs.json and events): cut,
/// cleaned, and without the credentials a BMC may echo (`secrets`, an `Authorization` value).
fn error_detail(body: &[u8], secrets: &[&str]) -> Option<String> {
    redfish_message(body).map(|m| hecate_core::text::untrusted(&m, hecate_core::text::PEER_TEXT_CHARS, secrets))
}

/// The message of a Redfish error body (`error.@Message.ExtendedInfo[].Message`, else
/// `error.message`), shortened.
fn redfish_message(body: &[u8]) -> Option<String> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let error = &json["error"];
    let extended: Vec<&str> = error["@Message.ExtendedInfo"]
        .as_array()
        .map(|v| v.iter().filter_map(|i| i["Message"].as_str()).collect())
        .unwrap_or_default();
    let message = if extended.is_empty() { error["message"].as_str()?.to_owned() } else { extended.join("; ") };
    let mut message = message.trim().trim_end_matches('.').to_owned();
    if message.len() > 300 {
        let cut = (0..=300).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
        message.truncate(cut);
        message.push('…');
    }
    Some(message)
}

/// Text from the BMC's answer (names, links, values) as it may enter a message: cut and cleaned.
fn peer_text(s: &str) -> String {
    hecate_core::text::clean(s, hecate_core::text::PEER_TEXT_CHARS)
}

/// The last part of an `@odata.id`: `/redfish/v1/Systems/1/` → `1`.
fn last_segment(path: &str) -> &str {
    path.trim_end_matches('/').rsplit('/').next().unwrap_or(path)
}

/// Whether a JSON `UUID` equals `want`, ignoring case (UUIDs are hex).
fn uuid_eq(uuid: &Value, want: &str) -> bool {
    uuid.as_str().is_some_and(|u| u.eq_ignore_ascii_case(want))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> RedfishConfig {
        serde_saphyr::from_str(yaml).expect("parse")
    }

    #[test]
    fn endpoints() {
        assert!(parse_endpoint("https://10.10.1.10").is_ok());
        assert!(parse_endpoint("https://bmc.lan:8443/").is_ok());
        assert!(parse_endpoint("http://127.0.0.1:8000").is_ok());
        let e = parse_endpoint("https://root:hunter2@10.0.0.1").expect_err("credentials");
        assert!(e.contains("credentials_file") && !e.contains("hunter2"), "{e}");
        assert!(parse_endpoint("https://10.0.0.1/redfish/v1").expect_err("path").contains("without a path"));
        assert!(parse_endpoint("10.0.0.1").is_err());
        assert!(parse_endpoint("ftp://10.0.0.1").expect_err("scheme").contains("https://"));
    }

    #[test]
    fn validation_and_warnings() {
        let ok = config("endpoint: https://10.0.0.1\ncredentials_file: /etc/hecate/bmc\n");
        assert!(ok.validate().is_empty() && ok.warnings().is_empty(), "{:?} {:?}", ok.validate(), ok.warnings());
        assert_eq!(*ok.graceful_timeout, std::time::Duration::from_secs(300), "minutes, not seconds");

        let insecure = config("endpoint: https://10.0.0.1\ninsecure: true\n");
        assert!(insecure.validate().is_empty());
        assert!(insecure.warnings()[0].contains("`insecure: true`"), "{:?}", insecure.warnings());

        let clear = config("endpoint: http://10.0.0.1\ncredentials_file: /x\n");
        assert!(clear.warnings()[0].contains("unencrypted"), "{:?}", clear.warnings());

        let bad = config(
            "endpoint: http://10.0.0.1\nsystem_id: a\nsystem_name: b\nca_file: /ca.pem\ninsecure: true\ntimeout: 0s\n",
        );
        let problems = bad.validate();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems.iter().all(|p| p.chars().next().is_some_and(|c| !c.is_uppercase()) && !p.ends_with('.')));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = serde_saphyr::from_str::<RedfishConfig>("endpoint: https://a\npassword: x\n").expect_err("unknown");
        assert!(e.to_string().contains("password"), "{e}");
    }

    #[test]
    fn credentials_are_split_at_the_first_colon_and_never_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("bmc");
        std::fs::write(&file, "admin:pa:ss\n").expect("write");
        let c = Credentials::read(&file).expect("read");
        assert_eq!((c.username.as_str(), c.password.as_str()), ("admin", "pa:ss"));
        assert!(!format!("{c:?}").contains("pa:ss"));
        std::fs::write(&file, "justapassword\n").expect("write");
        let e = Credentials::read(&file).expect_err("no colon");
        assert!(e.message.contains("username:password") && !e.message.contains("justapassword"), "{e}");
    }

    #[test]
    fn redfish_error_messages() {
        let body = br#"{"error":{"code":"Base.1.0.GeneralError","message":"A general error has occurred.",
            "@Message.ExtendedInfo":[{"Message":"The action was not allowed."}]}}"#;
        assert_eq!(redfish_message(body).as_deref(), Some("The action was not allowed"));
        assert_eq!(redfish_message(br#"{"error":{"message":"nope"}}"#).as_deref(), Some("nope"));
        assert_eq!(redfish_message(b"<html>"), None);
        assert_eq!(last_segment("/redfish/v1/Systems/1/"), "1");
    }

    #[test]
    fn an_error_body_echoing_credentials_or_escapes_is_redacted_and_cleaned() {
        let body = br#"{"error":{"message":"denied \u001b[2J; got Authorization: Basic cm9vdDpodW50ZXIy and password hunter2"}}"#;
        let d = error_detail(body, &["hunter2"]).expect("a message");
        assert!(!d.contains("cm9vdDpodW50ZXIy") && !d.contains("hunter2"), "{d}");
        assert!(!d.chars().any(char::is_control) && !d.contains("[2J"), "{d:?}");
        assert!(d.starts_with("denied") && d.contains("Basic ***"), "{d}");
        let long = format!(r#"{{"error":{{"message":"{}"}}}}"#, "x".repeat(100_000));
        assert!(error_detail(long.as_bytes(), &[]).expect("a message").chars().count() <= 300);
    }
}
