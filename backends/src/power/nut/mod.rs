//! `nut`: a UPS served by Network UPS Tools' `upsd`, polled over its TCP protocol with Hecate's
//! own small client (the `rups` crate's `INSTCMD` omits the UPS name, which upsd 2.8 rejects).
//!
//! One connection is kept open and reused by every poll (`LIST VAR <ups>` fetches all values in
//! one round trip). A connection that dies is replaced; after a failed attempt the next ones wait
//! 0.5 s, doubling up to 30 s, and meanwhile `read()` fails at once instead of holding up the
//! daemon's poll. A failure is always *no data*, never *online*.
//!
//! With `tls` configured every connection starts with `STARTTLS` and a verified TLS handshake
//! before anything else is sent (the login included); there is no plaintext fallback.

pub mod client;
pub mod protocol;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::{MIN_TIMEOUT, ONE_TRY};
use hecate_core::power::{
    Attachment, KillPower, OtherClients, PowerReading, PowerSource, PowerSourceConfig, StatusFlag, UpsStatus,
};
use hecate_core::preflight::{Check, PreflightFuture};
use hecate_core::{BackendError, BuildContext, ErrorKind};
use serde::{Deserialize, Serialize};

use self::client::{NutClient, Secret, TlsSettings, display_endpoint};

/// upsd's registered port.
pub const DEFAULT_PORT: u16 = 3493;

/// A UPS served by NUT's `upsd`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NutConfig {
    /// The source's name, unique within the config (used in logs, metrics and status).
    pub name: String,
    /// The UPS's name on upsd: the `[section]` of its ups.conf, the `atlasups` of
    /// `upsc atlasups@host`.
    pub ups: String,
    /// Where upsd listens: `host:port`, `host`, or `[ipv6]:port`. The port defaults to 3493.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// A user from upsd.users. Reading needs none; instant commands (such as cutting the UPS's
    /// load at the end of a shutdown) need a user with `instcmds` rights for them. Requires
    /// `password_file`. upsd only checks the password when a command is sent, so a wrong one
    /// shows then, not at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// A file holding the password of `username`: its whole content, a trailing line break
    /// ignored. Read once when Hecate starts; keep it readable by Hecate only (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Time limit on connecting and on each request. A request that runs out of time drops the
    /// connection; the next poll opens a new one. 1ms to 10m; default 5s.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Encrypt the connection with TLS (upsd's `STARTTLS`), checking upsd's certificate. Without
    /// this block the connection is plain TCP, as upsd serves by default: fine on loopback, but
    /// on a network anyone on the path can read the values and the password, and forge readings.
    /// upsd needs a certificate for it: `CERTFILE` in upsd.conf when built with OpenSSL,
    /// `CERTPATH` and `CERTIDENT` when built with NSS (as Debian's is).
    #[serde(default, deserialize_with = "tls_block", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "NutTlsConfig")]
    pub tls: Option<NutTlsConfig>,
    /// How Hecate counts among the UPS's NUT clients, as `upsmon` would: `primary` (`LOGIN` and
    /// `PRIMARY`: Hecate tells the other clients to shut down with `FSD` and waits for them to
    /// go before it cuts the power), `secondary` (`LOGIN`: the primary, another host's upsmon,
    /// waits for Hecate's shutdown before it cuts the power; Hecate logs out once its shutdown
    /// is done) or `none` (only reads). Needs `username`, a upsd.users user with
    /// `upsmon primary` or `upsmon secondary`. Default: `primary` for a upsd on this host
    /// (a loopback `endpoint`), `secondary` for one elsewhere, `none` without `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<Attachment>,
}

/// The `tls` block of a `nut` source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NutTlsConfig {
    /// A PEM file with the certificate of the CA that signed upsd's certificate (several CAs may
    /// follow each other in it). Only these are trusted, not the system's CAs. Required; read once
    /// when Hecate starts.
    // Optional to serde (a missing `Option` is `None`) so that `validate` reports it along with
    // every other problem; required in the schema, for editors.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(required, with = "PathBuf")]
    pub ca_file: Option<PathBuf>,
    /// The name upsd's certificate must be valid for (a DNS name or an IP address among its
    /// subject alternative names). Defaults to the host of `endpoint`; set it when connecting by
    /// an address the certificate does not name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Whether TLS is mandatory: it is, and `false` is refused. Hecate never falls back to
    /// plaintext, so an upsd without a certificate, a refused `STARTTLS` or a certificate that does
    /// not check out is an error, never a reading. Defaults to `true`; written out, it says so to
    /// the reader of the config.
    #[serde(default = "yes")]
    pub required: bool,
}

fn yes() -> bool {
    true
}

/// Reads a present `tls` key as a block: a bare `tls:` (null) is refused rather than read as "no
/// tls", which would silently mean plaintext.
fn tls_block<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<NutTlsConfig>, D::Error> {
    match Option::<NutTlsConfig>::deserialize(d)? {
        Some(tls) => Ok(Some(tls)),
        None => {
            Err(serde::de::Error::custom("`tls` is empty: give it at least `ca_file`, or remove the key for plain tcp"))
        }
    }
}

impl NutConfig {
    /// `login` as configured, or its default: `primary` on a loopback `endpoint`, `secondary`
    /// elsewhere, `none` without `username` (LOGIN needs a user).
    pub fn effective_login(&self) -> Attachment {
        match (self.login, &self.username) {
            (Some(login), _) => login,
            (None, None) => Attachment::None,
            (None, Some(_)) => {
                let local = parse_endpoint(&self.endpoint).is_ok_and(|(host, _)| {
                    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
                });
                if local { Attachment::Primary } else { Attachment::Secondary }
            }
        }
    }
}

fn default_endpoint() -> String {
    format!("127.0.0.1:{DEFAULT_PORT}")
}

fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

/// Splits an endpoint into host and port: `host:port`, `host` (port 3493), `1.2.3.4:port`,
/// `[::1]:port`, `[::1]` or `::1`.
pub fn parse_endpoint(endpoint: &str) -> Result<(String, u16), String> {
    let s = endpoint.trim();
    if s.is_empty() {
        return Err("`endpoint` must not be empty".into());
    }
    if s.contains("://") {
        return Err(format!("`endpoint` `{s}` is host:port, without a scheme (e.g. `10.0.0.5:3493`)"));
    }
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip.to_string(), DEFAULT_PORT));
    }
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return match inner.parse::<std::net::Ipv6Addr>() {
            Ok(ip) => Ok((ip.to_string(), DEFAULT_PORT)),
            Err(_) => Err(format!("`endpoint` `{s}`: `{inner}` is not an IPv6 address")),
        };
    }
    let (host, port) = match s.rsplit_once(':') {
        Some((host, port)) => match port.parse::<u16>() {
            Ok(p) if p > 0 => (host, p),
            _ => {
                return Err(format!("`endpoint` `{s}`: port `{port}` is not a number from 1 to 65535"));
            }
        },
        None => (s, DEFAULT_PORT),
    };
    if host.is_empty() || host.contains([':', '[', ']']) || host.chars().any(char::is_whitespace) {
        return Err(format!("`endpoint` `{s}`: `{host}` is not a host name or address (write IPv6 as `[::1]:3493`)"));
    }
    Ok((host.to_string(), port))
}

#[typetag::serde(name = "nut")]
impl PowerSourceConfig for NutConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.name.trim().is_empty() {
            p.push("`name` must not be empty".into());
        }
        if self.ups.is_empty() {
            p.push("`ups` must not be empty".into());
        } else if let Some((ups, _)) = self.ups.split_once('@') {
            p.push(format!("`ups` takes the UPS name alone (`{ups}`), not `{}`; put the host in `endpoint`", self.ups));
        } else if self.ups.chars().any(|c| c.is_whitespace() || c.is_control()) {
            p.push(format!("`ups` {:?} must not contain spaces or control characters", self.ups));
        }
        if let Err(e) = parse_endpoint(&self.endpoint) {
            p.push(e);
        }
        if let Some(user) = &self.username
            && (user.is_empty() || user.chars().any(char::is_control))
        {
            p.push("`username` must be non-empty, without control characters".into());
        }
        match (&self.username, &self.password_file) {
            (Some(_), None) => p.push("`username` needs `password_file`".into()),
            (None, Some(_)) => p.push("`password_file` is only used with `username`".into()),
            _ => {}
        }
        if let Some(login @ (Attachment::Primary | Attachment::Secondary)) = self.login
            && self.username.is_none()
        {
            p.push(format!(
                "`login: {login}` needs `username` (a upsd.users user with `upsmon {login}`) and `password_file`"
            ));
        }
        if let Some(m) = self.timeout.out_of_range(MIN_TIMEOUT, ONE_TRY) {
            p.push(format!("`timeout` {m}"));
        }
        if let Some(tls) = &self.tls {
            p.extend(tls.problems(&self.endpoint));
        }
        p
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn PowerSource>, BackendError> {
        Ok(Box::new(NutUps::new(self)?))
    }

    fn attachment(&self) -> Attachment {
        self.effective_login()
    }
}

hecate_core::register_backend!(
    PowerSource,
    "nut",
    "NUT upsd over TCP, optionally STARTTLS (LIST VAR polling, INSTCMD)",
    NutConfig
);

impl NutTlsConfig {
    /// The name upsd's certificate must carry: `server_name`, else the host of `endpoint`.
    pub fn effective_server_name(&self, endpoint: &str) -> Result<String, String> {
        match &self.server_name {
            Some(name) => Ok(name.clone()),
            None => parse_endpoint(endpoint).map(|(host, _)| host),
        }
    }

    fn problems(&self, endpoint: &str) -> Vec<String> {
        let mut p = Vec::new();
        match &self.ca_file {
            None => p.push("`tls.ca_file` is required: the PEM file of the CA that signed upsd's certificate".into()),
            Some(file) if file.as_os_str().is_empty() => p.push("`tls.ca_file` must not be empty".into()),
            Some(_) => {}
        }
        match &self.server_name {
            Some(name) if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() => {
                p.push(format!("`tls.server_name` `{name}` is not a DNS name or IP address"));
            }
            Some(_) => {}
            // An unparsable endpoint is reported on its own.
            None => {
                if let Ok((host, _)) = parse_endpoint(endpoint)
                    && rustls::pki_types::ServerName::try_from(host.as_str()).is_err()
                {
                    p.push(format!(
                        "the host `{host}` of `endpoint` cannot be checked against a certificate; set `tls.server_name`"
                    ));
                }
            }
        }
        if !self.required {
            p.push(
                "`tls.required: false` is not supported: with `tls` the connection is always encrypted, \
                 without it never"
                    .into(),
            );
        }
        p
    }
}

/// Reads the password file (the project's one reader and rule).
fn read_password(file: &std::path::Path) -> Result<Secret, BackendError> {
    hecate_core::secret::read_secret_line(file, "password_file").map(|p| Secret::new(&p))
}

/// Loads the CA file of a `tls` block. Errors name the file.
fn tls_settings(tls: &NutTlsConfig, endpoint: &str) -> Result<TlsSettings, BackendError> {
    if !tls.required {
        return Err(BackendError::new(ErrorKind::Config, "`tls.required: false` is not supported"));
    }
    let Some(ca_file) = &tls.ca_file else {
        return Err(BackendError::new(ErrorKind::Config, "`tls` needs `ca_file`"));
    };
    let server_name = tls.effective_server_name(endpoint).map_err(|e| BackendError::new(ErrorKind::Config, e))?;
    TlsSettings::from_ca_file(ca_file, &server_name)
}

/// A upsd user and its password.
#[derive(Debug)]
struct Credentials {
    username: String,
    password: Secret,
}

/// When the next connection attempt may be made, after failed ones.
#[derive(Debug)]
struct Backoff {
    next_delay: Duration,
    retry_at: Option<Instant>,
    failures: u32,
    /// Kind and message of the failure that started the wait, repeated while waiting.
    last: Option<(ErrorKind, String)>,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const CAP: Duration = Duration::from_secs(30);

    fn failed(&mut self, peer: &str, err: &BackendError) {
        let delay = self.next_delay;
        self.retry_at = Some(Instant::now() + delay);
        self.next_delay = (delay * 2).min(Self::CAP);
        self.failures += 1;
        self.last = Some((err.kind, err.message.clone()));
        tracing::debug!(
            %peer,
            retry_in = %humantime::format_duration(delay),
            failures = self.failures,
            "upsd connection failed; backing off"
        );
    }

    fn succeeded(&mut self, peer: &str) {
        if self.failures > 0 {
            tracing::info!(%peer, failures = self.failures, "upsd answers again");
        }
        *self = Self::default();
    }

    /// An error if the next attempt must still wait.
    fn check(&self, peer: &str) -> Result<(), BackendError> {
        let now = Instant::now();
        match (self.retry_at, &self.last) {
            (Some(at), Some((kind, message))) if now < at => Err(BackendError::new(
                *kind,
                format!(
                    "not reconnecting to upsd at {peer} for another {} after {} failed attempts; last: {message}",
                    humantime::format_duration(round_ms(at - now)),
                    self.failures
                ),
            )),
            _ => Ok(()),
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next_delay: Self::FIRST, retry_at: None, failures: 0, last: None }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX))
}

/// One request the runtime makes.
#[derive(Clone, Copy)]
enum Op<'a> {
    ListVars,
    InstCmd { command: &'a str, param: Option<&'a str> },
    Fsd,
    OtherClients,
    ListCmds,
    GetVar(&'a str),
    SetVar { var: &'a str, value: &'a str },
}

impl Op<'_> {
    /// Whether sending it twice does no harm, so a dead kept connection may be replaced and the
    /// request sent again. Not an instant command: whether the dead connection delivered it is
    /// unknown, and the engine decides about repeating it.
    fn repeatable(&self) -> bool {
        !matches!(self, Op::InstCmd { .. })
    }
}

enum Done {
    Vars(Vec<(String, String)>),
    Accepted,
    /// `NUMLOGINS`, the `LIST CLIENT` addresses (empty from an upsd before 2.6.4), and this
    /// connection's own address.
    Clients(u32, Vec<String>, Option<IpAddr>),
    Words(Vec<String>),
    Value(String),
}

/// The runtime side of [`NutConfig`]: a persistent upsd connection.
#[derive(Debug)]
pub struct NutUps {
    name: String,
    ups: String,
    host: String,
    port: u16,
    peer: String,
    credentials: Option<Credentials>,
    tls: Option<TlsSettings>,
    timeout: Duration,
    conn: Option<NutClient>,
    connections_opened: u64,
    backoff: Backoff,
    /// `login` in effect.
    attachment: Attachment,
    /// The kept connection has sent `LOGIN` and upsd counts it.
    logged_in: bool,
    /// The kept connection was granted `PRIMARY` (or `MASTER`).
    primary_granted: bool,
    /// Why the last attempt to log in fell short, logged when it changes.
    login_problem: Option<String>,
    /// Logged out at the end of a shutdown: no `LOGIN` on new connections until the UPS reads
    /// online without `FSD` again.
    detached: bool,
    /// This process set `FSD`, which upsd keeps until it restarts: while upsd still shows it,
    /// readings leave it out, so the outage that is over does not trigger again.
    fsd_raised: bool,
}

impl NutUps {
    /// The runtime object for `cfg`: reads the password file and the tls CA file, opens no
    /// connection yet.
    pub fn new(cfg: &NutConfig) -> Result<Self, BackendError> {
        let (host, port) = parse_endpoint(&cfg.endpoint).map_err(|e| BackendError::new(ErrorKind::Config, e))?;
        let credentials = match (&cfg.username, &cfg.password_file) {
            (Some(username), Some(file)) => {
                Some(Credentials { username: username.clone(), password: read_password(file)? })
            }
            (Some(_), None) => {
                return Err(BackendError::new(ErrorKind::Config, "`username` needs `password_file`"));
            }
            _ => None,
        };
        let tls = match &cfg.tls {
            None => None,
            Some(tls) => Some(tls_settings(tls, &cfg.endpoint)?),
        };
        Ok(Self {
            name: cfg.name.clone(),
            ups: cfg.ups.clone(),
            peer: display_endpoint(&host, port),
            host,
            port,
            credentials,
            tls,
            timeout: *cfg.timeout,
            conn: None,
            connections_opened: 0,
            backoff: Backoff::default(),
            attachment: cfg.effective_login(),
            logged_in: false,
            primary_granted: false,
            login_problem: None,
            detached: false,
            fsd_raised: false,
        })
    }

    /// `ups.delay.shutdown` in whole seconds, if the UPS has it.
    async fn shutdown_delay(&mut self) -> Option<u64> {
        match self.call(Op::GetVar("ups.delay.shutdown")).await {
            Ok(Done::Value(v)) => v.trim().parse::<u64>().ok(),
            _ => None,
        }
    }

    /// Makes `ups.delay.shutdown` (the delay `shutdown.return` runs with) `wanted` where the
    /// driver lets it be set. Returns the delay the UPS will use, where known, and how it came
    /// about.
    async fn set_shutdown_delay(&mut self, wanted: Option<u64>) -> (Option<u64>, String) {
        let current = self.shutdown_delay().await;
        let Some(want) = wanted else {
            let note = match current {
                Some(_) => "its own ups.delay.shutdown (offdelay in ups.conf)".to_string(),
                None => "its own delay: the ups reports no ups.delay.shutdown".to_string(),
            };
            return (current, note);
        };
        if current == Some(want) {
            return (current, "ups.delay.shutdown already so".into());
        }
        let value = want.to_string();
        match self.call(Op::SetVar { var: "ups.delay.shutdown", value: &value }).await {
            Ok(_) => {
                let was = current.map(|c| format!(" (was {c} s)")).unwrap_or_default();
                (Some(want), format!("ups.delay.shutdown set to {want} s{was}"))
            }
            Err(e) => {
                let uses = match current {
                    Some(c) => format!("the ups uses {c} s (offdelay in ups.conf)"),
                    None => "the ups uses its own delay".into(),
                };
                tracing::warn!(ups = %self.ups, error = %e, "cannot set ups.delay.shutdown to {want} s; {uses}");
                (current, format!("could not set ups.delay.shutdown to {want} s ({}): {uses}", e.message))
            }
        }
    }

    /// An error unless a user is configured: `what` needs one with rights for it.
    fn needs_user(&self, what: &str) -> Result<(), BackendError> {
        if self.credentials.is_some() {
            return Ok(());
        }
        Err(BackendError::new(
            ErrorKind::Config,
            format!(
                "{what} for ups {} needs `username` and `password_file` (a upsd user with the rights for it)",
                self.ups
            ),
        ))
    }

    /// Whether the kept connection is logged in to the UPS (counted in upsd's `NUMLOGINS`).
    pub fn logged_in(&self) -> bool {
        self.conn.is_some() && self.logged_in
    }

    /// Whether the kept connection was granted primary (`PRIMARY` or, from an older upsd,
    /// `MASTER`).
    pub fn primary_granted(&self) -> bool {
        self.conn.is_some() && self.primary_granted
    }

    /// How many connections to upsd this source has opened. It stays at 1 while one persistent
    /// connection serves every poll.
    pub fn connections_opened(&self) -> u64 {
        self.connections_opened
    }

    /// Whether the kept connection is encrypted; `false` without one.
    pub fn connected_over_tls(&self) -> bool {
        self.conn.as_ref().is_some_and(NutClient::is_tls)
    }

    /// The upsd endpoint, as `host:port`.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The open connection, reused when it is in step, otherwise a new one (unless backing off).
    async fn session(&mut self) -> Result<&mut NutClient, BackendError> {
        let client = match self.conn.take() {
            Some(c) if !c.is_broken() => c,
            stale => {
                if stale.is_some() {
                    // The caller dropped a request half-way (its own timeout): its answer may
                    // still arrive on that stream, so it cannot carry the next request.
                    tracing::debug!(peer = %self.peer, "dropping connection with an interrupted request");
                }
                self.backoff.check(&self.peer)?;
                match self.open().await {
                    Ok(c) => c,
                    Err(e) => {
                        self.backoff.failed(&self.peer, &e);
                        return Err(e);
                    }
                }
            }
        };
        Ok(self.conn.insert(client))
    }

    async fn open(&mut self) -> Result<NutClient, BackendError> {
        self.connections_opened += 1;
        let mut client = NutClient::connect(&self.host, self.port, self.timeout).await?;
        if let Some(tls) = &self.tls {
            client = client.start_tls(tls).await?;
        }
        if let Some(c) = &self.credentials {
            client.authenticate(&c.username, &c.password).await?;
        }
        self.logged_in = false;
        self.primary_granted = false;
        if self.attachment != Attachment::None && !self.detached {
            self.attach(&mut client).await?;
        }
        Ok(client)
    }

    /// `LOGIN` (and `PRIMARY`, falling back to `MASTER`) on a new connection, as upsmon does. A
    /// refusal (a user without `upsmon` rights) is logged when it first happens and costs no
    /// reading: reads need neither. Only a connection that broke is an error.
    async fn attach(&mut self, client: &mut NutClient) -> Result<(), BackendError> {
        let mut problem = None;
        match client.login(&self.ups).await {
            Ok(()) => self.logged_in = true,
            Err(e) if client.is_broken() => return Err(e),
            Err(e) => {
                problem = Some(format!(
                    "{e}: the ups's other nut clients do not count this host (login: {} needs a upsd.users user with \
                     `upsmon {}`)",
                    self.attachment, self.attachment
                ));
            }
        }
        if self.logged_in && self.attachment == Attachment::Primary {
            match client.primary(&self.ups).await {
                Ok(word) => {
                    self.primary_granted = true;
                    tracing::debug!(ups = %self.ups, peer = %self.peer, granted = word, "logged in as primary");
                }
                Err(e) if client.is_broken() => return Err(e),
                Err(e) => {
                    problem = Some(format!(
                        "{e}: logged in, but not as primary, so hecate cannot tell the other clients to shut \
                         down (FSD)"
                    ));
                }
            }
        }
        if problem != self.login_problem {
            match &problem {
                Some(p) => tracing::warn!(source = %self.name, ups = %self.ups, "{p}"),
                None => {
                    tracing::info!(source = %self.name, ups = %self.ups, login = %self.attachment, "logged in to the ups")
                }
            }
            self.login_problem = problem;
        }
        Ok(())
    }

    /// Runs one request. A read that finds the kept connection dead (upsd restarted since the
    /// last poll) is tried once more on a new connection, so a restart costs no poll. An
    /// instant command is not: whether the dead connection delivered it is unknown, and the
    /// engine decides about repeating it.
    async fn call(&mut self, op: Op<'_>) -> Result<Done, BackendError> {
        let mut may_retry = op.repeatable();
        let ups = self.ups.clone();
        loop {
            let reused = self.conn.as_ref().is_some_and(|c| !c.is_broken());
            let client = self.session().await?;
            let result = match op {
                Op::ListVars => client.list_vars(&ups).await.map(Done::Vars),
                Op::InstCmd { command, param } => client.instcmd(&ups, command, param).await.map(|()| Done::Accepted),
                Op::Fsd => client.fsd(&ups).await.map(|()| Done::Accepted),
                Op::ListCmds => client.list_cmds(&ups).await.map(Done::Words),
                Op::GetVar(var) => client.get_var(&ups, var).await.map(Done::Value),
                Op::SetVar { var, value } => client.set_var(&ups, var, value).await.map(|()| Done::Accepted),
                Op::OtherClients => match client.num_logins(&ups).await {
                    Ok(n) => match client.list_clients(&ups).await {
                        Ok(addresses) => Ok(Done::Clients(n, addresses, client.local_ip())),
                        Err(_) if !client.is_broken() => Ok(Done::Clients(n, Vec::new(), client.local_ip())),
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                },
            };
            let broken = client.is_broken();
            match result {
                Err(e) if broken => {
                    self.conn = None;
                    let found_dead = reused && e.kind == ErrorKind::Unreachable;
                    if found_dead && may_retry {
                        tracing::debug!(peer = %self.peer, error = %e, "kept connection is dead; reconnecting");
                        may_retry = false;
                        continue;
                    }
                    if !found_dead {
                        self.backoff.failed(&self.peer, &e);
                    }
                    return Err(e);
                }
                // Answered, even if with `ERR`: upsd is there and the connection in step.
                other => {
                    self.backoff.succeeded(&self.peer);
                    return other;
                }
            }
        }
    }
}

/// The kill-power command to send: `command` if given (and offered, when the UPS says what it
/// offers), else `shutdown.return`, else `load.off.delay`. Never `load.off` unasked: it cuts at
/// once, before this host could finish.
pub fn choose_kill_command(
    command: Option<&str>,
    offered: Option<&[String]>,
    ups: &str,
) -> Result<String, BackendError> {
    let offers = |c: &str| offered.is_none_or(|o| o.iter().any(|x| x == c));
    let list = || offered.map(shown_list).unwrap_or_default();
    match command {
        Some(c) if offers(c) => Ok(c.to_string()),
        Some(c) => Err(BackendError::new(
            ErrorKind::Unsupported,
            format!("ups {ups} does not offer {c} (it offers {}); nothing was sent", list()),
        )),
        None => {
            ["shutdown.return", "load.off.delay"].into_iter().find(|c| offers(c)).map(str::to_string).ok_or_else(|| {
                BackendError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "ups {ups} offers neither shutdown.return nor load.off.delay (it offers {}); nothing was \
                         sent: set shutdown.ups_off.command to one it offers",
                        list()
                    ),
                )
            })
        }
    }
}

/// Most items of a list from upsd shown in a message.
const SHOWN_ITEMS: usize = 16;

/// Words from upsd (command names, client addresses) as a message may show them: each cut to 64
/// characters of letters, digits and `.:_-` (anything else becomes `?`), at most
/// [`SHOWN_ITEMS`] of them.
pub fn shown_list(items: &[String]) -> String {
    if items.is_empty() {
        return "nothing".into();
    }
    let mut shown: Vec<String> = items.iter().take(SHOWN_ITEMS).map(|i| shown_word(i)).collect();
    if items.len() > SHOWN_ITEMS {
        shown.push(format!("and {} more", items.len() - SHOWN_ITEMS));
    }
    shown.join(", ")
}

fn shown_word(word: &str) -> String {
    word.chars().take(64).map(|c| if c.is_ascii_alphanumeric() || ".:_-".contains(c) { c } else { '?' }).collect()
}

fn join_note(a: &str, b: &str) -> String {
    if a.is_empty() { b.to_string() } else { format!("{a}; {b}") }
}

/// Reads a `LIST VAR` answer as a [`PowerReading`]. A missing, empty or `WAIT` `ups.status`
/// is no data. Other values are optional; one that is not a number is left out.
pub fn reading_from_vars(vars: &[(String, String)]) -> Result<PowerReading, BackendError> {
    let get = |name: &str| vars.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let status = match get("ups.status").map(str::trim) {
        None => {
            return Err(BackendError::new(ErrorKind::NoData, "upsd reports no ups.status"));
        }
        Some("") => {
            return Err(BackendError::new(ErrorKind::NoData, "upsd reports an empty ups.status"));
        }
        Some(s) if s.split_whitespace().any(|w| w == "WAIT") => {
            return Err(BackendError::new(
                ErrorKind::NoData,
                "ups.status is WAIT: upsd is waiting for data from the driver",
            ));
        }
        Some(s) => UpsStatus::parse(s),
    };
    let number = |name: &str| {
        let raw = get(name)?;
        match raw.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => {
                tracing::debug!(var = name, value = raw, "not a number; left out");
                None
            }
        }
    };
    Ok(PowerReading {
        status,
        charge_pct: number("battery.charge"),
        runtime_s: number("battery.runtime"),
        load_pct: number("ups.load"),
        input_voltage: number("input.voltage"),
        output_voltage: number("output.voltage"),
        battery_voltage: number("battery.voltage"),
    })
}

#[async_trait]
impl PowerSource for NutUps {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&mut self) -> Result<PowerReading, BackendError> {
        let mut reading = match self.call(Op::ListVars).await? {
            Done::Vars(vars) => reading_from_vars(&vars).map_err(|e| BackendError {
                message: format!("ups {} at {}: {}", self.ups, self.peer, e.message),
                ..e
            })?,
            _ => return Err(BackendError::new(ErrorKind::Protocol, "internal: LIST VAR answered like a command")),
        };
        let fsd = reading.status.has(&StatusFlag::ForcedShutdown);
        if self.fsd_raised {
            if fsd {
                tracing::debug!(ups = %self.ups, "FSD is still latched in upsd since this host set it: left out");
                reading.status.0.remove(&StatusFlag::ForcedShutdown);
            } else {
                tracing::info!(ups = %self.ups, "upsd no longer shows the FSD this host set (it restarted)");
                self.fsd_raised = false;
            }
        }
        if self.detached && reading.status.online() && !fsd {
            tracing::info!(ups = %self.ups, login = %self.attachment, "the ups is back on mains: logging in again");
            self.detached = false;
            // The next connection logs in; this one is not counted.
            self.conn = None;
        }
        Ok(reading)
    }

    async fn instant_command(&mut self, command: &str, param: Option<&str>) -> Result<(), BackendError> {
        self.needs_user(&format!("instant command {command}"))?;
        self.call(Op::InstCmd { command, param }).await?;
        tracing::info!(ups = %self.ups, peer = %self.peer, command, param, "upsd accepted instant command");
        Ok(())
    }

    fn attachment(&self) -> Attachment {
        self.attachment
    }

    async fn raise_fsd(&mut self) -> Result<(), BackendError> {
        self.needs_user("FSD")?;
        self.call(Op::Fsd).await?;
        if !self.fsd_raised {
            tracing::warn!(ups = %self.ups, peer = %self.peer, "FSD set: the ups's other clients shut down now");
        }
        self.fsd_raised = true;
        Ok(())
    }

    async fn other_clients(&mut self) -> Result<OtherClients, BackendError> {
        let Done::Clients(logins, mut addresses, local) = self.call(Op::OtherClients).await? else {
            return Err(BackendError::new(ErrorKind::Protocol, "internal: NUMLOGINS answered like something else"));
        };
        // This host's own login is not an other client, nor is its address in the list.
        let own = self.logged_in();
        if own && let Some(i) = local.and_then(|ip| addresses.iter().position(|a| a.parse::<IpAddr>().ok() == Some(ip)))
        {
            addresses.remove(i);
        }
        // Shown in the run's report: cleaned, and a upsd listing thousands is cut short.
        addresses.truncate(SHOWN_ITEMS);
        let addresses = addresses.iter().map(|a| shown_word(a)).collect();
        Ok(OtherClients { count: logins.saturating_sub(u32::from(own)), addresses })
    }

    async fn kill_power(&mut self, command: Option<&str>, delay: Option<Duration>) -> Result<KillPower, BackendError> {
        self.needs_user("cutting the load")?;
        let offered = match self.call(Op::ListCmds).await {
            Ok(Done::Words(cmds)) => Some(cmds),
            Ok(_) => None,
            // An upsd too old for LIST CMD cannot tell: the command is sent and upsd judges it.
            Err(e) if e.kind == ErrorKind::Unsupported => None,
            Err(e) => return Err(e),
        };
        let command = choose_kill_command(command, offered.as_deref(), &self.ups)?;
        let wanted = delay.map(|d| d.as_secs());
        let (param, delay_s, mut note) = match command.as_str() {
            // usbhid-ups (drivers/usbhid-ups.c, instcmd) runs these as load.on.delay with
            // ups.delay.start and load.off.delay with ups.delay.shutdown, ignoring the
            // parameter; other drivers take ups.delay.shutdown (offdelay) too.
            "shutdown.return" | "shutdown.stayoff" => {
                let (delay_s, note) = self.set_shutdown_delay(wanted).await;
                (None, delay_s, note)
            }
            // Its parameter is the delay; without one usbhid-ups takes its built-in 20 s, not
            // ups.delay.shutdown: send that, so the UPS keeps the delay ups.conf asks for.
            "load.off.delay" => {
                let current = self.shutdown_delay().await;
                match (wanted, current) {
                    (Some(s), _) => (Some(s.to_string()), Some(s), String::new()),
                    (None, Some(s)) => (Some(s.to_string()), Some(s), "ups.delay.shutdown".into()),
                    (None, None) => (None, None, "the driver's default".into()),
                }
            }
            "load.off" => (None, Some(0), "load.off has no delay".into()),
            _ => (wanted.map(|s| s.to_string()), None, String::new()),
        };
        if let Some(s) = delay_s.filter(|s| s % 60 != 0) {
            let mfr = match self.call(Op::GetVar("ups.mfr")).await {
                Ok(Done::Value(v)) => v,
                _ => String::new(),
            };
            let lower = mfr.to_ascii_lowercase();
            if lower.contains("cyber") || lower.contains("cps") {
                // docs/man/usbhid-ups.txt: "many CPS models tend to divide this delay by 60 and
                // round down".
                note = join_note(&note, &format!("a CyberPower UPS may round {s} s down to {} s", s / 60 * 60));
            }
        }
        self.call(Op::InstCmd { command: &command, param: param.as_deref() }).await?;
        tracing::warn!(ups = %self.ups, peer = %self.peer, %command, param = ?param, delay_s = ?delay_s, "upsd accepted the kill-power command");
        Ok(KillPower { command, param, delay_s, note })
    }

    async fn detach(&mut self) -> Result<String, BackendError> {
        self.detached = true;
        match self.conn.take() {
            Some(client) if self.logged_in && !client.is_broken() => {
                self.logged_in = false;
                client.logout().await?;
                tracing::info!(ups = %self.ups, peer = %self.peer, "logged out: the ups's primary may cut the power");
                Ok("logged out".into())
            }
            _ => Ok("not logged in".into()),
        }
    }

    /// Whether this host counts among the UPS's clients as configured (`login`): from the kept
    /// connection when there is one (the daemon's), otherwise on a connection of its own that
    /// asks upsd's access check `PRIMARY` for a primary (it logs nothing in), or logs in and
    /// out again for a secondary (upsd has no other check of that right).
    fn preflight(&self) -> PreflightFuture {
        let name = "login";
        let ready = |c: Check| -> PreflightFuture { Box::pin(std::future::ready(vec![c])) };
        let attachment = self.attachment;
        if attachment == Attachment::None {
            return ready(Check::skipped(name, "login: none: hecate only reads this ups"));
        }
        if self.detached {
            return ready(Check::skipped(name, "logged out after the shutdown, until the ups is back on mains"));
        }
        if self.conn.as_ref().is_some_and(|c| !c.is_broken()) {
            let problem = || self.login_problem.clone().unwrap_or_else(|| "not logged in".into());
            return ready(match (self.logged_in, attachment, self.primary_granted) {
                (true, Attachment::Primary, true) => {
                    Check::ok(name, format!("logged in to {} at {} as its primary", self.ups, self.peer))
                }
                (true, Attachment::Secondary, _) => {
                    Check::ok(name, format!("logged in to {} at {} as a secondary", self.ups, self.peer))
                }
                _ => Check::failed(name, problem()),
            });
        }
        let Some(credentials) = self.credentials.as_ref() else {
            return ready(Check::failed(name, format!("login: {attachment} needs `username` and `password_file`")));
        };
        let (host, port, timeout, tls) = (self.host.clone(), self.port, self.timeout, self.tls.clone());
        let (user, password, ups, peer) =
            (credentials.username.clone(), credentials.password.clone(), self.ups.clone(), self.peer.clone());
        Box::pin(async move {
            let checked = async {
                let mut client = NutClient::connect(&host, port, timeout).await?;
                if let Some(tls) = &tls {
                    client = client.start_tls(tls).await?;
                }
                client.authenticate(&user, &password).await?;
                if attachment == Attachment::Primary {
                    let word = client.primary(&ups).await?;
                    Ok(format!("upsd at {peer} grants {user} {word} of {ups} (checked without logging in)"))
                } else {
                    client.login(&ups).await?;
                    client.logout().await?;
                    Ok(format!("upsd at {peer} lets {user} log in to {ups} (logged in and out again)"))
                }
            };
            vec![Check::from_result(name, checked.await)]
        })
    }
}
