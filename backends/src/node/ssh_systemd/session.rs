//! One SSH connection to a node (russh): connect, verify the host key against known_hosts,
//! authenticate with the identity key, run commands and collect their exit status and output.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hecate_core::{BackendError, ErrorKind};
use russh::client;
use russh::keys::{Algorithm, EcdsaCurve, PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{ChannelMsg, Preferred};

use super::known_hosts::{self, Verdict};

/// Output kept per stream: the tail is what explains a failure.
const OUTPUT_LIMIT: usize = 16 * 1024;

/// The host key algorithms russh can verify in this build (no `rsa` feature), most preferred first.
pub(super) const HOST_KEY_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::Ed25519,
    Algorithm::Ecdsa { curve: EcdsaCurve::NistP256 },
    Algorithm::Ecdsa { curve: EcdsaCurve::NistP384 },
    Algorithm::Ecdsa { curve: EcdsaCurve::NistP521 },
];

/// Where and as whom to connect. Shared by a controller and its connections' handlers.
pub struct Target {
    /// The node's name, for messages.
    pub node: String,
    /// Host name or address.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Login user.
    pub user: String,
    /// The identity key, loaded at build time. Never printed.
    pub key: Arc<PrivateKey>,
    /// The identity file's path, for messages.
    pub identity_file: PathBuf,
    /// The known_hosts file.
    pub known_hosts: PathBuf,
    /// Trust and record a key the file does not list yet.
    pub accept_new_host_keys: bool,
    /// Limit on TCP connect + handshake + authentication.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for Target {
    // by hand: the derived form would print the private key
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("node", &self.node)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("identity_file", &self.identity_file)
            .field("known_hosts", &self.known_hosts)
            .field("accept_new_host_keys", &self.accept_new_host_keys)
            .finish_non_exhaustive()
    }
}

/// A live, authenticated connection.
pub type Connection = client::Handle<HostKeyCheck>;

/// russh's callback for the server's host key: known_hosts decides.
#[derive(Debug)]
pub struct HostKeyCheck {
    target: Arc<Target>,
    /// Record a key known_hosts does not list yet (with `accept_new_host_keys`); a preflight
    /// never does: it changes nothing.
    record_new: bool,
    /// What was decided about the key, in words, for a preflight's report.
    verdict: Arc<std::sync::Mutex<Option<String>>>,
}

/// Why the handshake stopped: russh's own error, or our refusal of the host key (kept apart so
/// it maps to [`ErrorKind::Auth`] with its full explanation, not to a bare "unknown key").
#[derive(Debug)]
pub enum HandshakeError {
    /// From russh.
    Ssh(russh::Error),
    /// The host key was refused, or known_hosts could not be read or written.
    HostKey(BackendError),
}

impl From<russh::Error> for HandshakeError {
    fn from(e: russh::Error) -> Self {
        Self::Ssh(e)
    }
}

impl client::Handler for HostKeyCheck {
    type Error = HandshakeError;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                let note = self.target.verify_host_key(key, self.record_new).map_err(HandshakeError::HostKey)?;
                *self.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(note);
                Ok(true)
            }
            // never offered (no `host_key_certificates`); refuse rather than trust blindly
            PublicKeyOrCertificate::Certificate(_) => Err(HandshakeError::HostKey(BackendError::new(
                ErrorKind::Auth,
                format!("node {} presented a host certificate; only known_hosts keys are accepted", self.target.node),
            ))),
        }
    }
}

impl Target {
    fn host_name(&self) -> String {
        known_hosts::host_name(&self.host, self.port)
    }

    /// Judges the key against known_hosts: `Ok` with what was found, in words.
    fn verify_host_key(&self, key: &PublicKey, record_new: bool) -> Result<String, BackendError> {
        let file = self.known_hosts.display();
        let entries = known_hosts::entries_for(&self.known_hosts, &self.host, self.port).map_err(|e| {
            BackendError::with_source(ErrorKind::Config, format!("cannot read known_hosts file {file}"), e)
        })?;
        let fp = known_hosts::fingerprint(key);
        let alg = key.algorithm();
        let name = self.host_name();
        match known_hosts::judge(&entries, key) {
            Verdict::Known => Ok(format!("{alg} {fp} as listed in {file}")),
            Verdict::Revoked(line) => Err(BackendError::new(
                ErrorKind::Auth,
                format!(
                    "host key of node {} ({name}) is revoked: {alg} {fp} is marked @revoked in {file} line {line}",
                    self.node
                ),
            )),
            Verdict::Changed(listed) => {
                let was: Vec<String> = listed
                    .iter()
                    .map(|e| format!("{} {} (line {})", e.key.algorithm(), known_hosts::fingerprint(&e.key), e.line))
                    .collect();
                Err(BackendError::new(
                    ErrorKind::Auth,
                    format!(
                        "host key of node {} ({name}) changed: it presented {alg} {fp}, but {file} lists {}; \
                         refused even with accept_new_host_keys (a reinstalled node or an impostor: check, \
                         then replace the line)",
                        self.node,
                        was.join(", ")
                    ),
                ))
            }
            Verdict::Unknown if self.accept_new_host_keys && !record_new => Ok(format!(
                "{alg} {fp} is not in {file}; it would be trusted and recorded at the first connection \
                 (accept_new_host_keys): confirm it and add it now (hecate nodes keyscan --write)"
            )),
            Verdict::Unknown if self.accept_new_host_keys => {
                known_hosts::learn(&self.known_hosts, &self.host, self.port, key).map_err(|e| {
                    BackendError::with_source(
                        ErrorKind::Config,
                        format!("cannot record the host key of node {} in {file}", self.node),
                        e,
                    )
                })?;
                tracing::warn!(node = %self.node, host = %name, key = %format!("{alg} {fp}"), file = %file,
                    "trusting a new host key on first use and recording it (accept_new_host_keys)");
                Ok(format!("{alg} {fp} recorded in {file} on first use"))
            }
            Verdict::Unknown => Err(BackendError::new(
                ErrorKind::Auth,
                format!(
                    "host key of node {} ({name}) is unknown: {alg} {fp} is not in {file}; add it \
                     (ssh-keyscan -p {} {} >> {file}, after checking the fingerprint) or set accept_new_host_keys: true",
                    self.node, self.port, self.host
                ),
            )),
        }
    }
}

/// Opens a connection and authenticates, all within the connect timeout.
pub async fn connect(target: &Arc<Target>) -> Result<Connection, BackendError> {
    staged(target, target.accept_new_host_keys).await.map(|(c, _)| c).map_err(|(_, e)| e)
}

/// How far a connection got before it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The node was not reached, or did not speak SSH.
    Reach,
    /// Its host key was refused.
    HostKey,
    /// It refused the login.
    Login,
}

/// A connection for a preflight: as [`connect`], but a key known_hosts does not list is never
/// recorded, and a failure says at which stage it happened. `Ok` carries what was found about
/// the host key.
pub async fn probe(target: &Arc<Target>) -> Result<(Connection, String), (Stage, BackendError)> {
    staged(target, false).await
}

async fn staged(target: &Arc<Target>, record_new: bool) -> Result<(Connection, String), (Stage, BackendError)> {
    let t = target.clone();
    let limit = target.connect_timeout;
    let verdict = Arc::new(std::sync::Mutex::new(None));
    match tokio::time::timeout(limit, connect_inner(t, record_new, verdict.clone())).await {
        Ok(r) => {
            let conn = r?;
            let note = verdict.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default();
            Ok((conn, note))
        }
        Err(_) => Err((
            Stage::Reach,
            BackendError::new(
                ErrorKind::Timeout,
                format!(
                    "no ssh session with node {} ({}) within {} (connect_timeout)",
                    target.node,
                    target.host_name(),
                    humantime::format_duration(limit)
                ),
            ),
        )),
    }
}

async fn connect_inner(
    target: Arc<Target>,
    record_new: bool,
    verdict: Arc<std::sync::Mutex<Option<String>>>,
) -> Result<Connection, (Stage, BackendError)> {
    let name = target.host_name();
    // Read here only to order the algorithms; the key itself is judged in check_server_key.
    let entries = known_hosts::entries_for(&target.known_hosts, &target.host, target.port).unwrap_or_default();
    let config = client::Config {
        preferred: Preferred {
            key: Cow::Owned(known_hosts::preferred_algorithms(&entries, &HOST_KEY_ALGORITHMS)),
            ..Preferred::default()
        },
        // a connection idles between stages; keepalives notice a node that vanished
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        nodelay: true,
        ..client::Config::default()
    };
    let stream = tokio::net::TcpStream::connect((target.host.as_str(), target.port)).await.map_err(|e| {
        let e = BackendError::with_source(
            ErrorKind::Unreachable,
            format!("cannot connect to node {} at {name}", target.node),
            e,
        );
        (Stage::Reach, e)
    })?;
    let handler = HostKeyCheck { target: target.clone(), record_new, verdict };
    let mut handle = client::connect_stream(Arc::new(config), stream, handler).await.map_err(|e| match e {
        HandshakeError::HostKey(e) => (Stage::HostKey, e),
        HandshakeError::Ssh(e) => {
            (Stage::Reach, ssh_error(e, &format!("ssh handshake with node {} at {name} failed", target.node)))
        }
    })?;
    let auth = handle
        .authenticate_publickey(target.user.clone(), PrivateKeyWithHashAlg::new(target.key.clone(), None))
        .await
        .map_err(|e| (Stage::Login, ssh_error(e, &format!("ssh authentication with node {} failed", target.node))))?;
    if !auth.success() {
        return Err((
            Stage::Login,
            BackendError::new(
                ErrorKind::Auth,
                format!(
                    "node {} ({name}) refused user {} with the key of {} ({})",
                    target.node,
                    target.user,
                    target.identity_file.display(),
                    known_hosts::fingerprint(target.key.public_key())
                ),
            ),
        ));
    }
    Ok(handle)
}

/// Maps a russh error to a kind the engine can act on.
pub fn ssh_error(e: russh::Error, context: &str) -> BackendError {
    use russh::Error as E;
    let kind = match &e {
        E::IO(_) | E::Disconnect | E::HUP | E::SendError | E::RecvError => ErrorKind::Unreachable,
        E::ConnectionTimeout | E::KeepaliveTimeout | E::InactivityTimeout | E::Elapsed(_) => ErrorKind::Timeout,
        E::UnknownKey | E::KeyChanged { .. } | E::WrongServerSig | E::NotAuthenticated | E::NoAuthMethod => {
            ErrorKind::Auth
        }
        _ => ErrorKind::Protocol,
    };
    BackendError::with_source(kind, context.to_string(), e)
}

/// How a remote command ended.
#[derive(Debug, Default)]
pub struct Exit {
    /// Its exit status, if the server sent one.
    pub status: Option<u32>,
    /// The signal that killed it, if any.
    pub signal: Option<String>,
    /// The tail of its standard output.
    pub stdout: Vec<u8>,
    /// The tail of its standard error.
    pub stderr: Vec<u8>,
}

impl Exit {
    /// The last non-empty line of stderr, else of stdout: usually the reason for a failure. The
    /// node's words go into messages: cut and cleaned (see `hecate_core::text`).
    pub fn last_line(&self) -> Option<String> {
        [&self.stderr, &self.stdout].into_iter().find_map(|b| {
            String::from_utf8_lossy(b)
                .lines()
                .rev()
                .map(|l| hecate_core::text::untrusted(l, hecate_core::text::PEER_TEXT_CHARS, &[]))
                .find(|l| !l.is_empty())
        })
    }
}

/// Why a command did not run to an end.
#[derive(Debug)]
pub enum ExecError {
    /// No channel could be opened: the connection is unusable, the command never started.
    Open(russh::Error),
    /// The connection broke after the command was sent.
    Lost(russh::Error),
    /// The server refused to run the command.
    Refused,
}

/// Runs `command` in a new session channel and waits until the channel closes.
pub async fn exec(conn: &Connection, command: &str) -> Result<Exit, ExecError> {
    let mut channel = conn.channel_open_session().await.map_err(ExecError::Open)?;
    channel.exec(true, command).await.map_err(ExecError::Lost)?;
    let mut exit = Exit::default();
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => keep_tail(&mut exit.stdout, &data),
            ChannelMsg::ExtendedData { data, ext: 1 } => keep_tail(&mut exit.stderr, &data),
            ChannelMsg::ExitStatus { exit_status } => exit.status = Some(exit_status),
            ChannelMsg::ExitSignal { signal_name, .. } => exit.signal = Some(format!("{signal_name:?}")),
            ChannelMsg::Failure => return Err(ExecError::Refused),
            _ => {}
        }
    }
    Ok(exit)
}

fn keep_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > OUTPUT_LIMIT {
        buf.drain(..buf.len() - OUTPUT_LIMIT);
    }
}
