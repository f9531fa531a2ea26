//! A small async NUT client: one TCP connection to upsd, optionally upgraded to TLS with
//! `STARTTLS`, one request at a time, each bounded by a timeout.
//!
//! Cancel safety: a request marks the connection *broken* until its whole answer has been read.
//! If the future is dropped half-way (the daemon's own poll timeout) or the request times out, the
//! stream may still hold the rest of that answer, which the next request would take for its own;
//! [`NutClient::is_broken`] tells the owner to open a new connection instead.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hecate_core::{BackendError, ErrorKind};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::protocol::{ErrAnswer, request_line, split_words};

/// Longest answer line accepted. upsd's own lines fit in a few hundred bytes; the cap keeps a
/// confused peer from growing a buffer without bound.
const MAX_LINE: usize = 16 * 1024;
/// Most items (`VAR` lines) accepted in one `LIST` answer; real UPSes have at most a few hundred.
const MAX_VARS: usize = 10_000;
/// Most bytes of one `LIST` answer held in memory: a real UPS's is some 20 KiB. Without it a
/// hostile upsd's 10,000 lines of 16 KiB each would be 160 MB (issue 15 measured 92 MB of RSS).
const MAX_LIST_BYTES: usize = 1024 * 1024;
/// How much of an unparsable answer goes into an error message.
const SHOWN_ANSWER_CHARS: usize = 80;

/// A secret string (a password): its `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `host:port`, with brackets around an IPv6 address.
pub fn display_endpoint(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// What a TLS connection to upsd is checked against: the CAs that may have signed upsd's
/// certificate, and the name that certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

impl TlsSettings {
    /// Trusts the certificates in `ca_file` (PEM, one or more `BEGIN CERTIFICATE` blocks) and
    /// expects upsd's certificate to be valid for `server_name` (a DNS name or an IP address).
    pub fn from_ca_file(ca_file: &Path, server_name: &str) -> Result<Self, BackendError> {
        let shown = ca_file.display();
        let pem = std::fs::read(ca_file).map_err(|e| {
            BackendError::with_source(ErrorKind::Config, format!("cannot read tls ca_file {shown}: {e}"), e)
        })?;
        let certs = CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| {
            BackendError::with_source(ErrorKind::Config, format!("tls ca_file {shown} is not valid PEM: {e}"), e)
        })?;
        if certs.is_empty() {
            return Err(BackendError::new(
                ErrorKind::Config,
                format!("tls ca_file {shown} holds no certificate (no `BEGIN CERTIFICATE` block)"),
            ));
        }
        let mut roots = rustls::RootCertStore::empty();
        for (n, cert) in certs.into_iter().enumerate() {
            roots.add(cert).map_err(|e| {
                BackendError::with_source(
                    ErrorKind::Config,
                    format!("tls ca_file {shown}: certificate {} is not a usable CA certificate: {e}", n + 1),
                    e,
                )
            })?;
        }
        let server_name = ServerName::try_from(server_name.to_string()).map_err(|e| {
            BackendError::with_source(
                ErrorKind::Config,
                format!("tls server name `{server_name}` is not a DNS name or IP address: {e}"),
                e,
            )
        })?;
        // An explicit provider, not the process-wide default: `hecate::init_process` installs ring,
        // but a library user or a test that never calls it would otherwise panic here.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| BackendError::with_source(ErrorKind::Config, format!("cannot set up tls for upsd: {e}"), e))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { config: Arc::new(config), server_name })
    }

    /// The name upsd's certificate must be valid for.
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }
}

/// The connection under the line reader: plain TCP, or TLS after `STARTTLS`.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    // Boxed: a TLS session is over a kilobyte, a TcpStream a few words.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How one exchange went wrong.
enum Failure {
    /// upsd answered `ERR ...`: the exchange is complete and the connection still in step.
    Refused(ErrAnswer),
    /// I/O error, end of stream, or an answer that could not be followed: what is left in the
    /// stream is unknown.
    Broken(BackendError),
}

/// One connection to upsd.
#[derive(Debug)]
pub struct NutClient {
    stream: BufReader<Stream>,
    peer: String,
    timeout: Duration,
    /// Set while a request is in flight and left set if it did not finish cleanly.
    broken: bool,
}

impl NutClient {
    /// Connects to upsd at `host:port` (a name is resolved), giving up after `timeout`.
    pub async fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self, BackendError> {
        let peer = display_endpoint(host, port);
        let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
            Err(_) => {
                return Err(BackendError::new(
                    ErrorKind::Timeout,
                    format!("connecting to upsd at {peer}: no answer within {}", humantime::format_duration(timeout)),
                ));
            }
            Ok(Err(e)) => {
                return Err(BackendError::with_source(
                    ErrorKind::Unreachable,
                    format!("cannot connect to upsd at {peer}: {e}"),
                    e,
                ));
            }
            Ok(Ok(stream)) => stream,
        };
        // Requests are single short lines, each waiting for its answer: Nagle only adds delay.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        tracing::debug!(%peer, "connected to upsd");
        Ok(Self { stream: BufReader::new(Stream::Plain(stream)), peer, timeout, broken: false })
    }

    /// Sends `STARTTLS` and, once upsd agrees, runs the TLS handshake on the same connection,
    /// checking upsd's certificate against `tls`. Call it before [`NutClient::authenticate`], so
    /// the password travels encrypted. Never falls back to plaintext: an upsd that answers `ERR`
    /// (no certificate configured, or built without TLS) is an error, and so is any certificate
    /// that does not check out. On error the connection is dropped.
    pub async fn start_tls(self, tls: &TlsSettings) -> Result<Self, BackendError> {
        let (peer, timeout) = (self.peer.clone(), self.timeout);
        match tokio::time::timeout(timeout, self.upgrade(tls)).await {
            Ok(result) => result,
            Err(_) => Err(BackendError::new(
                ErrorKind::Timeout,
                format!("upsd at {peer} did not finish STARTTLS within {}", humantime::format_duration(timeout)),
            )),
        }
    }

    /// Whether the connection is encrypted (after [`NutClient::start_tls`]).
    pub fn is_tls(&self) -> bool {
        matches!(self.stream.get_ref(), Stream::Tls(_))
    }

    /// The `host:port` this client talks to.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Whether a request was interrupted or failed mid-answer, so the connection must be dropped.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends `USERNAME` and `PASSWORD`. upsd stores both without checking them: a wrong password
    /// only shows when a request that needs rights (`INSTCMD`) answers `ERR ACCESS-DENIED`.
    pub async fn authenticate(&mut self, username: &str, password: &Secret) -> Result<(), BackendError> {
        let line = self.encode(&["USERNAME", username], "USERNAME")?;
        self.begin()?;
        let outcome = tokio::time::timeout(self.timeout, self.expect_ok(&line)).await;
        self.end("USERNAME", outcome)?;
        // The label, not the line, goes into messages and logs: the line holds the password.
        let line = self.encode(&["PASSWORD", password.expose()], "PASSWORD")?;
        self.begin()?;
        let outcome = tokio::time::timeout(self.timeout, self.expect_ok(&line)).await;
        self.end("PASSWORD", outcome)
    }

    /// `LIST VAR <ups>`: every variable of the UPS as (name, value), in upsd's order.
    pub async fn list_vars(&mut self, ups: &str) -> Result<Vec<(String, String)>, BackendError> {
        let label = format!("LIST VAR {ups}");
        let line = self.encode(&["LIST", "VAR", ups], &label)?;
        self.begin()?;
        let outcome = tokio::time::timeout(self.timeout, self.list_vars_exchange(&line, ups)).await;
        self.end(&label, outcome)
    }

    /// `GET VAR <ups> <var>`: one variable's value.
    pub async fn get_var(&mut self, ups: &str, var: &str) -> Result<String, BackendError> {
        let label = format!("GET VAR {ups} {var}");
        let line = self.encode(&["GET", "VAR", ups, var], &label)?;
        self.begin()?;
        let outcome = tokio::time::timeout(self.timeout, self.get_var_exchange(&line, ups, var)).await;
        self.end(&label, outcome)
    }

    /// `INSTCMD <ups> <command> [<param>]`. Needs [`NutClient::authenticate`] first, as a user
    /// with `instcmds` rights for the command in upsd.users.
    pub async fn instcmd(&mut self, ups: &str, command: &str, param: Option<&str>) -> Result<(), BackendError> {
        let mut words = vec!["INSTCMD", ups, command];
        words.extend(param);
        let label = words.join(" ");
        let line = self.encode(&words, &label)?;
        self.begin()?;
        let outcome = tokio::time::timeout(self.timeout, self.expect_ok(&line)).await;
        self.end(&label, outcome)
    }

    /// `LOGOUT`, then closes the connection.
    pub async fn logout(mut self) -> Result<(), BackendError> {
        let line = self.encode(&["LOGOUT"], "LOGOUT")?;
        self.begin()?;
        let outcome = tokio::time::timeout(self.timeout, self.expect_ok(&line)).await;
        self.end("LOGOUT", outcome)
    }

    async fn upgrade(mut self, tls: &TlsSettings) -> Result<Self, BackendError> {
        if self.broken {
            return Err(BackendError::new(
                ErrorKind::Protocol,
                format!("connection to upsd at {} is out of step; cannot start tls on it", self.peer),
            ));
        }
        if let Err(f) = self.send("STARTTLS\n").await {
            return Err(self.starttls_failure(f));
        }
        let words = match self.recv().await {
            Ok(words) => words,
            Err(f) => return Err(self.starttls_failure(f)),
        };
        if as_strs(&words) != ["OK", "STARTTLS"] {
            return Err(self.starttls_failure(self.unexpected(words)));
        }
        // upsd says nothing more until the client's TLS hello. Bytes already waiting would be
        // read as if they had come through TLS: a man in the middle could inject answers that way.
        if !self.stream.buffer().is_empty() {
            return Err(self.garbled("data after `OK STARTTLS` before the tls handshake".into()));
        }
        let tcp = match self.stream.into_inner() {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(_) => {
                return Err(BackendError::new(
                    ErrorKind::Protocol,
                    format!("connection to upsd at {} is already tls", self.peer),
                ));
            }
        };
        let connector = TlsConnector::from(tls.config.clone());
        let stream = connector.connect(tls.server_name.clone(), tcp).await.map_err(|e| {
            let (kind, why) = handshake_failure(&e);
            BackendError::with_source(
                kind,
                format!(
                    "tls handshake with upsd at {} (expecting a certificate for {}) failed: {why}",
                    self.peer,
                    tls.server_name()
                ),
                e,
            )
        })?;
        let (_, session) = stream.get_ref();
        tracing::debug!(
            peer = %self.peer,
            version = ?session.protocol_version(),
            cipher = ?session.negotiated_cipher_suite().map(|s| s.suite()),
            "upsd connection is now tls"
        );
        Ok(Self { stream: BufReader::new(Stream::Tls(Box::new(stream))), ..self })
    }

    /// The error for a failed `STARTTLS` exchange, an `ERR` answer included.
    fn starttls_failure(&self, failure: Failure) -> BackendError {
        let err = match failure {
            Failure::Broken(e) => return e,
            Failure::Refused(err) => err,
        };
        let (kind, why) = match err.code.as_str() {
            "FEATURE-NOT-CONFIGURED" => {
                (ErrorKind::Config, "upsd has no certificate configured (CERTFILE or CERTPATH/CERTIDENT in upsd.conf)")
            }
            "FEATURE-NOT-SUPPORTED" => (ErrorKind::Config, "this upsd was built without tls support"),
            _ => (ErrorKind::Protocol, err.meaning()),
        };
        BackendError::new(
            kind,
            format!(
                "upsd at {} refused STARTTLS: {why} (ERR {}); `tls` is configured, so hecate will not \
                 fall back to plaintext",
                self.peer,
                err_text(&err)
            ),
        )
    }

    fn encode(&self, words: &[&str], label: &str) -> Result<String, BackendError> {
        request_line(words).map_err(|e| {
            BackendError::with_source(
                ErrorKind::Config,
                format!("cannot send {label} to upsd at {}: {e}", self.peer),
                e,
            )
        })
    }

    fn begin(&mut self) -> Result<(), BackendError> {
        if self.broken {
            return Err(BackendError::new(
                ErrorKind::Protocol,
                format!("connection to upsd at {} is out of step after an interrupted request", self.peer),
            ));
        }
        self.broken = true;
        Ok(())
    }

    fn end<T>(
        &mut self,
        label: &str,
        outcome: Result<Result<T, Failure>, tokio::time::error::Elapsed>,
    ) -> Result<T, BackendError> {
        match outcome {
            Err(_) => Err(BackendError::new(
                ErrorKind::Timeout,
                format!(
                    "upsd at {} did not answer {label} within {}",
                    self.peer,
                    humantime::format_duration(self.timeout)
                ),
            )),
            Ok(Ok(value)) => {
                self.broken = false;
                Ok(value)
            }
            Ok(Err(Failure::Refused(err))) => {
                self.broken = false;
                Err(BackendError::new(
                    err.kind(),
                    format!("upsd at {} refused {label}: {} (ERR {})", self.peer, err.meaning(), err_text(&err)),
                ))
            }
            Ok(Err(Failure::Broken(e))) => Err(e),
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), Failure> {
        let stream = self.stream.get_mut();
        // The flush matters for TLS only: it pushes out records still held in the session.
        let sent = match stream.write_all(line.as_bytes()).await {
            Ok(()) => stream.flush().await,
            Err(e) => Err(e),
        };
        sent.map_err(|e| self.lost(e))
    }

    /// Reads one answer line and splits it into words.
    async fn recv(&mut self) -> Result<Vec<String>, Failure> {
        let mut buf = Vec::new();
        let read = (&mut self.stream).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).await;
        match read {
            Err(e) => return Err(self.lost(e)),
            Ok(0) => {
                return Err(Failure::Broken(BackendError::new(
                    ErrorKind::Unreachable,
                    format!("upsd at {} closed the connection", self.peer),
                )));
            }
            Ok(_) => {}
        }
        if buf.last() != Some(&b'\n') {
            return Err(Failure::Broken(if buf.len() > MAX_LINE {
                self.garbled(format!(
                    "an answer line longer than {MAX_LINE} bytes (the most hecate reads; the connection is closed)"
                ))
            } else {
                BackendError::new(
                    ErrorKind::Unreachable,
                    format!("upsd at {} closed the connection mid-line", self.peer),
                )
            }));
        }
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        // Lossy: one odd byte in, say, a model name must not cost the whole reading.
        let text = String::from_utf8_lossy(&buf);
        split_words(&text).map_err(|e| Failure::Broken(self.garbled(format!("{} ({e})", shown(&text)))))
    }

    /// Sends `line` and expects `OK` (or `OK <anything>`, such as `OK TRACKING <id>`).
    async fn expect_ok(&mut self, line: &str) -> Result<(), Failure> {
        self.send(line).await?;
        let words = self.recv().await?;
        match words.first().map(String::as_str) {
            Some("OK") => Ok(()),
            _ => Err(self.unexpected(words)),
        }
    }

    async fn list_vars_exchange(&mut self, line: &str, ups: &str) -> Result<Vec<(String, String)>, Failure> {
        self.send(line).await?;
        let first = self.recv().await?;
        if !matches!(as_strs(&first).as_slice(), ["BEGIN", "LIST", "VAR", u] if *u == ups) {
            return Err(self.unexpected(first));
        }
        let mut vars = Vec::new();
        let mut budget = ListBudget::default();
        loop {
            let words = self.recv().await?;
            match as_strs(&words).as_slice() {
                ["END", "LIST", "VAR", u] if *u == ups => return Ok(vars),
                ["VAR", u, name, value] if *u == ups => {
                    if let Err(over) = budget.take(&words) {
                        return Err(Failure::Broken(self.garbled(format!("a LIST VAR {ups} answer {over}"))));
                    }
                    vars.push((name.to_string(), value.to_string()));
                }
                _ => return Err(self.unexpected(words)),
            }
        }
    }

    async fn get_var_exchange(&mut self, line: &str, ups: &str, var: &str) -> Result<String, Failure> {
        self.send(line).await?;
        let words = self.recv().await?;
        match as_strs(&words).as_slice() {
            ["VAR", u, name, value] if *u == ups && *name == var => Ok(value.to_string()),
            _ => Err(self.unexpected(words)),
        }
    }

    /// An answer that is either `ERR ...` or not what the request expects.
    fn unexpected(&self, words: Vec<String>) -> Failure {
        match ErrAnswer::from_words(&words) {
            Some(err) => Failure::Refused(err),
            None => {
                let line = words.join(" ");
                Failure::Broken(self.garbled(format!("unexpected answer {}", shown(&line))))
            }
        }
    }

    fn garbled(&self, what: String) -> BackendError {
        BackendError::new(ErrorKind::Protocol, format!("upsd at {} sent {what}", self.peer))
    }

    fn lost(&self, e: std::io::Error) -> Failure {
        Failure::Broken(BackendError::with_source(
            ErrorKind::Unreachable,
            format!("connection to upsd at {} lost: {e}", self.peer),
            e,
        ))
    }
}

/// The kind and a lowercase reason for a failed TLS handshake: a certificate that does not check
/// out is an auth failure (upsd could not prove who it is), anything else a protocol one.
fn handshake_failure(e: &io::Error) -> (ErrorKind, String) {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(unknown @ rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => (
            ErrorKind::Auth,
            format!("{} (not signed by a CA in the tls ca_file)", lowercase_first(&unknown.to_string())),
        ),
        Some(cert @ rustls::Error::InvalidCertificate(_)) => (ErrorKind::Auth, lowercase_first(&cert.to_string())),
        Some(other) => (ErrorKind::Protocol, lowercase_first(&other.to_string())),
        None if e.kind() == io::ErrorKind::UnexpectedEof => {
            (ErrorKind::Protocol, "upsd closed the connection during the handshake".into())
        }
        None => (ErrorKind::Unreachable, e.to_string()),
    }
}

fn lowercase_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

fn as_strs(words: &[String]) -> Vec<&str> {
    words.iter().map(String::as_str).collect()
}

/// The start of an answer, debug-quoted, for an error message.
fn shown(text: &str) -> String {
    let mut head: String = text.chars().take(SHOWN_ANSWER_CHARS).collect();
    if head.len() < text.len() {
        head.push('…');
    }
    format!("{head:?}")
}

/// Longest `ERR` code kept in a message (real ones, such as `DRIVER-NOT-CONNECTED`, are shorter).
const MAX_ERR_CODE_CHARS: usize = 40;

/// An `ERR` answer's code and detail as they may enter a message, which reaches logs, status and
/// `runs.json`: cut and cleaned (a hostile upsd's 16 KiB detail with NUL and terminal escapes was
/// printed raw by `hecate status`).
fn err_text(err: &ErrAnswer) -> String {
    let code = hecate_core::text::clean(&err.code, MAX_ERR_CODE_CHARS);
    match &err.detail {
        Some(d) => format!("{code} {}", hecate_core::text::untrusted(d, hecate_core::text::PEER_TEXT_CHARS, &[])),
        None => code,
    }
}

/// What one `LIST` answer has taken so far, against [`MAX_VARS`] and [`MAX_LIST_BYTES`].
#[derive(Debug, Default)]
struct ListBudget {
    items: usize,
    bytes: usize,
}

impl ListBudget {
    /// Counts one item line; `Err` says how the answer went over (for "a LIST ... answer {it}").
    fn take(&mut self, words: &[String]) -> Result<(), String> {
        self.items += 1;
        self.bytes = self.bytes.saturating_add(words.iter().map(|w| w.len() + 1).sum::<usize>());
        if self.items > MAX_VARS || self.bytes > MAX_LIST_BYTES {
            return Err(format!(
                "went over what hecate reads of one answer ({MAX_VARS} items or {} KiB; a real ups has a few \
                 hundred variables): the answer is dropped and the connection closed",
                MAX_LIST_BYTES / 1024
            ));
        }
        Ok(())
    }
}

/// Most items accepted in a `LIST CMD` or `LIST CLIENT` answer: a UPS has a few dozen commands,
/// a upsd a handful of clients.
const MAX_LIST_ITEMS: usize = 1_000;

/// What a client that counts as one of the UPS's users sends, as `upsmon` does (`LOGIN`,
/// `PRIMARY`, `FSD`, `GET NUMLOGINS`, `LIST CLIENT`), and what choosing and timing the kill-power
/// command needs (`LIST CMD`, `SET VAR`). Kept apart from the reading requests above.
impl NutClient {
    /// `LOGIN <ups>`: upsd counts this connection among the UPS's clients (`NUMLOGINS`) until it
    /// closes, so a primary elsewhere waits for it before cutting the power. Needs
    /// [`NutClient::authenticate`] first, as a user with `upsmon primary` or `upsmon secondary`.
    pub async fn login(&mut self, ups: &str) -> Result<(), BackendError> {
        self.request_ok(&["LOGIN", ups]).await
    }

    /// `PRIMARY <ups>`, then the older `MASTER <ups>` if upsd refuses it, as upsmon does (an
    /// upsd before 2.8 does not know `PRIMARY`). Returns the word upsd granted. Needs a user with
    /// `upsmon primary`.
    pub async fn primary(&mut self, ups: &str) -> Result<&'static str, BackendError> {
        match self.request_ok(&["PRIMARY", ups]).await {
            Ok(()) => Ok("PRIMARY"),
            Err(e) if self.broken => Err(e),
            Err(first) => match self.request_ok(&["MASTER", ups]).await {
                Ok(()) => Ok("MASTER"),
                // An upsd that does not know PRIMARY says why it refuses MASTER; one that knows it
                // said it first.
                Err(e) if first.message.contains("UNKNOWN-COMMAND") => Err(e),
                Err(_) => Err(first),
            },
        }
    }

    /// `FSD <ups>`: sets upsd's forced-shutdown flag for the UPS, which every client then sees
    /// in `ups.status` and treats as on battery with a low battery. upsd keeps it until it
    /// restarts. Needs a user with `upsmon primary` (or the `FSD` action).
    pub async fn fsd(&mut self, ups: &str) -> Result<(), BackendError> {
        self.request_ok(&["FSD", ups]).await
    }

    /// `GET NUMLOGINS <ups>`: how many connections have sent `LOGIN` for the UPS.
    pub async fn num_logins(&mut self, ups: &str) -> Result<u32, BackendError> {
        let label = format!("GET NUMLOGINS {ups}");
        let line = self.encode(&["GET", "NUMLOGINS", ups], &label)?;
        self.begin()?;
        let outcome = tokio::time::timeout(self.timeout, self.num_logins_exchange(&line, ups)).await;
        self.end(&label, outcome)
    }

    /// `LIST CLIENT <ups>`: the address of every connection logged in to the UPS (upsd 2.6.4
    /// and later).
    pub async fn list_clients(&mut self, ups: &str) -> Result<Vec<String>, BackendError> {
        self.list_items("CLIENT", ups).await
    }

    /// `LIST CMD <ups>`: the instant commands the UPS's driver offers.
    pub async fn list_cmds(&mut self, ups: &str) -> Result<Vec<String>, BackendError> {
        self.list_items("CMD", ups).await
    }

    /// `SET VAR <ups> <var> <value>`: changes a writable variable (such as
    /// `ups.delay.shutdown`). Needs a user with the `SET` action.
    pub async fn set_var(&mut self, ups: &str, var: &str, value: &str) -> Result<(), BackendError> {
        self.request_ok(&["SET", "VAR", ups, var, value]).await
    }

    /// The local address of the connection, as upsd sees this client in `LIST CLIENT` (behind
    /// no NAT).
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        let tcp = match self.stream.get_ref() {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref().0,
        };
        tcp.local_addr().ok().map(|a| a.ip())
    }

    /// Sends a request whose answer is `OK` or `OK <anything>`.
    async fn request_ok(&mut self, words: &[&str]) -> Result<(), BackendError> {
        let label = words.join(" ");
        let line = self.encode(words, &label)?;
        self.begin()?;
        let outcome = tokio::time::timeout(self.timeout, self.expect_ok(&line)).await;
        self.end(&label, outcome)
    }

    async fn list_items(&mut self, kind: &str, ups: &str) -> Result<Vec<String>, BackendError> {
        let label = format!("LIST {kind} {ups}");
        let line = self.encode(&["LIST", kind, ups], &label)?;
        self.begin()?;
        let outcome = tokio::time::timeout(self.timeout, self.list_items_exchange(&line, kind, ups)).await;
        self.end(&label, outcome)
    }

    async fn num_logins_exchange(&mut self, line: &str, ups: &str) -> Result<u32, Failure> {
        self.send(line).await?;
        let words = self.recv().await?;
        let count = match as_strs(&words).as_slice() {
            ["NUMLOGINS", u, n] if *u == ups => n.parse::<u32>().ok(),
            _ => return Err(self.unexpected(words)),
        };
        count.ok_or_else(|| {
            Failure::Broken(self.garbled(format!("a login count that is not a number: {}", shown(&words.join(" ")))))
        })
    }

    /// A `BEGIN LIST <kind> <ups>` answer: the last word of each `<kind> <ups> ...` line.
    async fn list_items_exchange(&mut self, line: &str, kind: &str, ups: &str) -> Result<Vec<String>, Failure> {
        self.send(line).await?;
        let first = self.recv().await?;
        if !matches!(as_strs(&first).as_slice(), ["BEGIN", "LIST", k, u] if *k == kind && *u == ups) {
            return Err(self.unexpected(first));
        }
        let mut items = Vec::new();
        loop {
            let words = self.recv().await?;
            match as_strs(&words).as_slice() {
                ["END", "LIST", k, u] if *k == kind && *u == ups => return Ok(items),
                [k, u, item] if *k == kind && *u == ups => {
                    if items.len() >= MAX_LIST_ITEMS {
                        return Err(Failure::Broken(
                            self.garbled(format!("more than {MAX_LIST_ITEMS} items in LIST {kind}")),
                        ));
                    }
                    items.push(item.to_string());
                }
                _ => return Err(self.unexpected(words)),
            }
        }
    }
}
