//! Multi-UPS forwarding between Hecate instances: signed, replay-proof, one identity per
//! forwarder (issue 15).
//!
//! A coordinator accepts, from the forwarders its config lists (`role.coordinator.forwarders`,
//! each with its own key):
//! - `POST /v1/trigger` (JSON `{"outage": …, "reason": …}`): that forwarder's UPS triggered; the
//!   coordinator treats it as a trigger of its own and shuts the cluster down;
//! - `POST /v1/clear` (JSON `{"outage": …}`, or `null` for "whichever of mine"): that
//!   forwarder's mains are back and stable. Until every forwarder that triggered has cleared, the
//!   coordinator does not start the cluster on its own.
//! - `POST /v1/check` (JSON `{}`): nothing but the signature checks: a forwarder's preflight
//!   asks whether the coordinator answers and takes its signature. Nothing is stored but the
//!   nonce (as for every accepted request), nothing is counted, and the daemon is not told.
//!
//! # Signing
//!
//! Every request carries four headers: `X-Hecate-Forwarder` (the forwarder's name, its `host`),
//! `X-Hecate-Timestamp` (Unix seconds), `X-Hecate-Nonce` (128 random bits, hex) and
//! `X-Hecate-Signature`: HMAC-SHA256, keyed by the forwarder's secret, over [`signing_input`]:
//! a version tag, the method, the endpoint's path, the name, the time, the nonce and the body.
//! The secret never crosses the network, so plain http no longer hands it out (TLS still keeps
//! the requests private and stops anyone on the path from holding them back).
//!
//! The coordinator checks, in this order, and refuses before anything is stored or counted: the
//! headers' shape; that the name is listed (so what it keeps per forwarder, its status and its
//! metric labels are bounded by the config); the signature (compared in constant time by ring);
//! that the time is within `max_clock_skew` of its own clock; and that the nonce was not seen
//! within that window. Nonces are remembered until their time leaves the window (a replay older
//! than that is refused by its time), at most [`MAX_NONCES_PER_FORWARDER`] per forwarder, and
//! kept in the state dir so a restarted coordinator still refuses a request it accepted before.
//!
//! Refusals are counted (`hecate_forwarding_refused_total{reason}`) and logged with a rate limit:
//! the first at once, then one summary per minute ([`RefusalLog`]), so a flood cannot push real
//! lines out of journald's rate limit.
//!
//! # Clocks
//!
//! The window needs both clocks roughly right. After a site-wide outage a host may boot with a
//! wrong clock and no NTP yet: its requests are refused with both times in the answer, which the
//! forwarder logs and shows in `hecate status`. A refused trigger falls back to the forwarder's
//! own plan (as any refused trigger does); a refused clear is sent again after every
//! `daemon.power_return_settle` and is accepted once NTP has set either clock right. The
//! forwarder never adopts the coordinator's time from an answer: a forged answer could then make
//! it sign requests dated in the future, to be replayed later.
//!
//! A forwarder that triggers posts to the coordinator, retrying (each try signed anew) until its
//! `timeout`; if no coordinator accepted by then, the daemon runs the forwarder's own shutdown
//! plan instead (and says so with a `forwarder_fallback` event).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use hecate_core::config::{Config, CoordinatorConfig, Role};
use hecate_core::duration::limits::ONE_DAY;
use hecate_core::supervisor::{OutageId, PeerMessage};
use ring::hmac;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use crate::http::Limits;
use crate::metrics::Metrics;

/// The header naming the forwarder.
pub const HEADER_NAME: &str = "x-hecate-forwarder";
/// The header with the request's time, Unix seconds.
pub const HEADER_TIMESTAMP: &str = "x-hecate-timestamp";
/// The header with the request's nonce, 32 hex digits.
pub const HEADER_NONCE: &str = "x-hecate-nonce";
/// The header with the signature, 64 hex digits.
pub const HEADER_SIGNATURE: &str = "x-hecate-signature";

/// What the signature covers first: a new scheme gets a new tag, so a signature of one is never
/// valid under another.
const SIGNING_VERSION: &str = "hecate-forward-v1";

/// The shortest key accepted, in characters.
pub const MIN_KEY_CHARS: usize = 16;

/// Nonces a coordinator remembers per forwarder at most. A forwarder sends one request a second
/// while retrying; a full book means its key is being misused, and further requests are refused
/// (never an old nonce forgotten, which would reopen a replay).
pub const MAX_NONCES_PER_FORWARDER: usize = 1024;

/// Longest outage id accepted.
const MAX_OUTAGE_ID: usize = 64;

/// The file in the state dir where a coordinator keeps the nonces it accepted.
pub const NONCES_FILE: &str = "forwarding-nonces";

/// What a forwarder sent, once its request checked out.
#[derive(Debug, Clone)]
pub struct ForwarderMessage {
    /// The forwarder's name (listed in the config, the signature checked).
    pub name: String,
    /// Where the request came from.
    pub peer: SocketAddr,
    /// What it said.
    pub message: PeerMessage,
}

/// The endpoint for `what` under the coordinator's base URL.
pub fn endpoint(base: &str, what: &str) -> String {
    format!("{}/v1/{what}", base.trim_end_matches('/'))
}

/// The path a request for `what` is signed with: the endpoint's own, whatever prefix the base URL
/// (or a proxy in front of the coordinator) adds.
fn signed_path(what: &str) -> String {
    format!("/v1/{what}")
}

/// A forwarding key: one line of a secret file, at least [`MIN_KEY_CHARS`] characters. `Debug`
/// never shows it.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

impl Key {
    /// The key from the secret itself.
    pub fn from_secret(secret: &str) -> Key {
        Key(hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()))
    }
}

/// Reads a forwarding key with the project's one secret reader (`what` names the setting).
pub fn read_key(path: &Path, what: &str) -> anyhow::Result<Key> {
    let line = hecate_core::secret::read_secret_line(path, what).map_err(|e| anyhow::anyhow!("{}", e.detail()))?;
    let secret = line.trim();
    anyhow::ensure!(
        secret.chars().count() >= MIN_KEY_CHARS,
        "the forwarding key in {} is shorter than {MIN_KEY_CHARS} characters (e.g. `openssl rand -hex 32 > {}`)",
        path.display(),
        path.display()
    );
    Ok(Key::from_secret(secret))
}

/// The forwarding keys a config names that cannot be read, as (field, problem): for
/// `config check`, so a coordinator that would refuse a forwarder, or a forwarder that would
/// always fall back, is caught before it runs.
pub fn key_problems(cfg: &Config) -> Vec<(String, String)> {
    let files: Vec<(String, &Path)> = match &cfg.role {
        Role::Standalone => Vec::new(),
        Role::Coordinator(c) => c
            .forwarders
            .iter()
            .enumerate()
            .map(|(i, f)| (format!("role.coordinator.forwarders[{i}].key_file"), f.key_file.as_path()))
            .collect(),
        Role::Forwarder(f) => vec![("role.forwarder.key_file".to_string(), f.key_file.as_path())],
    };
    files
        .into_iter()
        .filter_map(|(field, path)| read_key(path, "key_file").err().map(|e| (field, format!("{e:#}"))))
        .collect()
}

/// What is signed: the version tag, method, path, name, time and nonce, one per line, then the
/// body as sent.
pub fn signing_input(method: &str, path: &str, name: &str, timestamp: i64, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!("{SIGNING_VERSION}\n{method}\n{path}\n{name}\n{timestamp}\n{nonce}\n").into_bytes();
    v.extend_from_slice(body);
    v
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// A random value of `n` bytes, hex.
pub fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut buf = vec![0u8; n];
    // The system's generator does not fail on Linux once booted; a zero nonce would only be
    // refused as a replay, never accepted twice.
    let _ = ring::rand::SystemRandom::new().fill(&mut buf);
    hex(&buf)
}

/// The four headers of one signed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// `X-Hecate-Forwarder`.
    pub name: String,
    /// `X-Hecate-Timestamp`.
    pub timestamp: i64,
    /// `X-Hecate-Nonce`.
    pub nonce: String,
    /// `X-Hecate-Signature`.
    pub signature: String,
}

impl Signed {
    /// As (header, value) pairs.
    pub fn headers(&self) -> [(&'static str, String); 4] {
        [
            (HEADER_NAME, self.name.clone()),
            (HEADER_TIMESTAMP, self.timestamp.to_string()),
            (HEADER_NONCE, self.nonce.clone()),
            (HEADER_SIGNATURE, self.signature.clone()),
        ]
    }
}

/// A forwarder's signing side: its name and key.
#[derive(Debug, Clone)]
pub struct Signer {
    name: String,
    key: Key,
}

impl Signer {
    /// Signs for `name` with `key`.
    pub fn new(name: impl Into<String>, key: Key) -> Signer {
        Signer { name: name.into(), key }
    }

    /// The headers for a `POST` of `body` to endpoint `what` (`trigger`, `clear`) at time `now`,
    /// with a fresh nonce.
    pub fn sign(&self, what: &str, body: &[u8], now: SystemTime) -> Signed {
        self.sign_with_nonce(what, body, now, &random_hex(16))
    }

    /// [`Signer::sign`] with a given nonce (tests).
    pub fn sign_with_nonce(&self, what: &str, body: &[u8], now: SystemTime, nonce: &str) -> Signed {
        let timestamp = unix_seconds(now);
        let input = signing_input("POST", &signed_path(what), &self.name, timestamp, nonce, body);
        let signature = hex(hmac::sign(&self.key.0, &input).as_ref());
        Signed { name: self.name.clone(), timestamp, nonce: nonce.to_string(), signature }
    }
}

/// Why a request was refused. The label is the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// A signing header is missing or malformed.
    Malformed,
    /// The name is not in `role.coordinator.forwarders` (or its key could not be read).
    UnknownForwarder,
    /// The signature does not match the name's key.
    BadSignature,
    /// The request's time is outside the window (a skewed clock, or an old request replayed).
    OutsideWindow,
    /// The nonce was seen within the window: a replay.
    Replayed,
    /// The forwarder sent more requests within the window than the coordinator remembers.
    TooMany,
    /// Signed correctly, but the body is not what the endpoint takes.
    BadBody,
}

impl RefusalReason {
    /// Every reason, for the metric's labels.
    pub const ALL: [RefusalReason; 7] = [
        Self::Malformed,
        Self::UnknownForwarder,
        Self::BadSignature,
        Self::OutsideWindow,
        Self::Replayed,
        Self::TooMany,
        Self::BadBody,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnknownForwarder => "unknown_forwarder",
            Self::BadSignature => "bad_signature",
            Self::OutsideWindow => "outside_window",
            Self::Replayed => "replayed",
            Self::TooMany => "too_many",
            Self::BadBody => "bad_body",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Self::Malformed | Self::BadBody => StatusCode::BAD_REQUEST,
            Self::UnknownForwarder | Self::BadSignature | Self::OutsideWindow => StatusCode::UNAUTHORIZED,
            Self::Replayed => StatusCode::CONFLICT,
            Self::TooMany => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

/// A refused request: why, in a label and in words (the words go back to the forwarder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The label.
    pub reason: RefusalReason,
    /// In words, lowercase.
    pub message: String,
}

impl Refusal {
    fn new(reason: RefusalReason, message: impl Into<String>) -> Refusal {
        Refusal { reason, message: message.into() }
    }
}

/// The nonces of one forwarder seen within the window, with their times.
#[derive(Debug, Default)]
struct NonceBook {
    seen: HashMap<u128, i64>,
}

/// The coordinator's checking side: the listed forwarders' keys, the window, the nonces seen.
pub struct Verifier {
    keys: BTreeMap<String, Key>,
    /// Listed forwarders whose key could not be read, with why.
    unusable: BTreeMap<String, String>,
    window_s: i64,
    books: Mutex<BTreeMap<String, NonceBook>>,
    /// Where accepted nonces are kept across restarts (`None`: memory only).
    store: Option<PathBuf>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a key.
        f.debug_struct("Verifier")
            .field("forwarders", &self.keys.keys().collect::<Vec<_>>())
            .field("unusable", &self.unusable)
            .field("window_s", &self.window_s)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for these (name, key) pairs and a window of `window` either way, keeping
    /// accepted nonces in `store` when given (read back now, dropping what the window has left).
    pub fn new(keys: impl IntoIterator<Item = (String, Key)>, window: Duration, store: Option<PathBuf>) -> Verifier {
        let v = Verifier {
            keys: keys.into_iter().collect(),
            unusable: BTreeMap::new(),
            window_s: i64::try_from(window.as_secs()).unwrap_or(i64::MAX).max(1),
            books: Mutex::default(),
            store,
        };
        v.load(unix_seconds(SystemTime::now()));
        v
    }

    /// The verifier of a coordinator's config: every listed forwarder's key read now. A key that
    /// cannot be read is logged and that forwarder refused; the others work.
    pub fn from_config(c: &CoordinatorConfig, state_dir: &Path) -> Verifier {
        let mut keys = Vec::new();
        let mut unusable = BTreeMap::new();
        for f in &c.forwarders {
            match read_key(&f.key_file, "key_file") {
                Ok(k) => keys.push((f.name.clone(), k)),
                Err(e) => {
                    tracing::error!(forwarder = %f.name, error = %format!("{e:#}"), "forwarder's key unavailable: its requests are refused");
                    unusable.insert(f.name.clone(), format!("{e:#}"));
                }
            }
        }
        let mut v = Verifier::new(keys, *c.max_clock_skew, Some(state_dir.join(NONCES_FILE)));
        v.unusable = unusable;
        v
    }

    /// Checks a request (`what`: `trigger` or `clear`) at time `now`; `Ok`: the forwarder's name,
    /// and its nonce is now remembered.
    pub fn verify(&self, what: &str, headers: &HeaderMap, body: &[u8], now: SystemTime) -> Result<String, Refusal> {
        use RefusalReason as R;
        let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok()).map(str::trim);
        let (Some(name), Some(ts), Some(nonce_hex), Some(sig_hex)) =
            (header(HEADER_NAME), header(HEADER_TIMESTAMP), header(HEADER_NONCE), header(HEADER_SIGNATURE))
        else {
            return Err(Refusal::new(
                R::Malformed,
                format!(
                    "unsigned request: {HEADER_NAME}, {HEADER_TIMESTAMP}, {HEADER_NONCE} and {HEADER_SIGNATURE} are needed"
                ),
            ));
        };
        let timestamp: Option<i64> = ts.parse().ok();
        let nonce = (nonce_hex.len() == 32).then(|| u128::from_str_radix(nonce_hex, 16).ok()).flatten();
        let sig = (sig_hex.len() == 64).then(|| unhex(sig_hex)).flatten();
        let (Some(timestamp), Some(nonce), Some(sig)) = (timestamp, nonce, sig) else {
            return Err(Refusal::new(R::Malformed, "malformed signing headers"));
        };
        let Some(key) = self.keys.get(name) else {
            let why = if self.unusable.contains_key(name) {
                "its key_file could not be read at start (see the coordinator's log)"
            } else {
                "not in role.coordinator.forwarders"
            };
            return Err(Refusal::new(R::UnknownForwarder, format!("unknown forwarder: {why}")));
        };
        let input = signing_input("POST", &signed_path(what), name, timestamp, nonce_hex, body);
        if hmac::verify(&key.0, &input, &sig).is_err() {
            return Err(Refusal::new(R::BadSignature, format!("the signature does not match forwarder {name}'s key")));
        }
        let now_s = unix_seconds(now);
        let off = timestamp.saturating_sub(now_s);
        if off.saturating_abs() > self.window_s {
            let (by, side) = if off > 0 { (off, "ahead of") } else { (off.saturating_neg(), "behind") };
            return Err(Refusal::new(
                R::OutsideWindow,
                format!(
                    "the request's time {} is {by} s {side} the coordinator's clock {}, more than the {} s allowed \
                     (max_clock_skew): check both hosts' clocks (NTP); a replayed old request looks the same",
                    rfc3339(timestamp),
                    rfc3339(now_s),
                    self.window_s
                ),
            ));
        }
        let Ok(mut books) = self.books.lock() else {
            return Err(Refusal::new(R::TooMany, "the coordinator cannot check nonces now"));
        };
        let window = self.window_s;
        let book = books.entry(name.to_string()).or_default();
        // A nonce is needed only while its time is inside the window: after that the time refuses it.
        book.seen.retain(|_, t| t.saturating_add(window) >= now_s);
        if book.seen.contains_key(&nonce) {
            return Err(Refusal::new(R::Replayed, "this request was already received (a replay or a duplicate)"));
        }
        if book.seen.len() >= MAX_NONCES_PER_FORWARDER {
            return Err(Refusal::new(
                R::TooMany,
                format!("more than {MAX_NONCES_PER_FORWARDER} requests from {name} within {window} s"),
            ));
        }
        book.seen.insert(nonce, timestamp);
        self.save(&books);
        Ok(name.to_string())
    }

    /// Keeps the books in the state dir: one `name nonce time` line each (no secret in it).
    fn save(&self, books: &BTreeMap<String, NonceBook>) {
        let Some(path) = &self.store else { return };
        let mut text = String::new();
        for (name, book) in books {
            for (nonce, ts) in &book.seen {
                text.push_str(&format!("{name} {nonce:032x} {ts}\n"));
            }
        }
        if let Err(e) = hecate_core::history::write_atomic(path, text.as_bytes()) {
            tracing::warn!(error = %e, "cannot keep the forwarding nonces: a restart forgets them");
        }
    }

    /// Reads the books kept by an earlier process, dropping what the window has left and names no
    /// longer listed.
    fn load(&self, now_s: i64) {
        let Some(path) = &self.store else { return };
        let Ok(text) = std::fs::read_to_string(path) else { return };
        let Ok(mut books) = self.books.lock() else { return };
        for line in text.lines() {
            let mut words = line.split(' ');
            let (Some(name), Some(nonce), Some(ts)) = (words.next(), words.next(), words.next()) else { continue };
            let (Ok(nonce), Ok(ts)) = (u128::from_str_radix(nonce, 16), ts.parse::<i64>()) else { continue };
            if self.keys.contains_key(name) && ts.saturating_add(self.window_s) >= now_s {
                let book = books.entry(name.to_string()).or_default();
                if book.seen.len() < MAX_NONCES_PER_FORWARDER {
                    book.seen.insert(nonce, ts);
                }
            }
        }
    }
}

fn rfc3339(unix_s: i64) -> String {
    let t =
        u64::try_from(unix_s).ok().and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s))).unwrap_or(UNIX_EPOCH);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How often at most refusals are logged: the first at once, the rest as one summary per period.
pub const REFUSAL_LOG_PERIOD: Duration = Duration::from_secs(60);

/// Most distinct addresses a refusal summary names.
const MAX_SUMMARY_ADDRESSES: usize = 8;

/// Refusals logged with a rate limit: the first of a period at once, the rest counted and
/// summed up by [`RefusalLog::flush`] at the end of the period.
#[derive(Debug, Default)]
pub struct RefusalLog {
    state: Mutex<RefusalPeriod>,
}

#[derive(Debug, Default)]
struct RefusalPeriod {
    /// The first refusal of this period has been logged.
    logged: bool,
    /// Refusals since, by reason.
    suppressed: BTreeMap<RefusalReason, u64>,
    /// Some of the addresses they came from, and how many addresses in all (up to a bound).
    addresses: BTreeSet<IpAddr>,
    more_addresses: bool,
}

impl RefusalLog {
    /// Records a refusal; logs it if it is the first of the period.
    pub fn refused(&self, peer: IpAddr, what: &str, refusal: &Refusal, claimed: Option<&str>) {
        let Ok(mut p) = self.state.lock() else { return };
        if !p.logged {
            p.logged = true;
            let claimed = claimed.map(|c| hecate_core::text::clean(c, hecate_core::config::MAX_FORWARDER_NAME));
            tracing::warn!(
                %peer,
                endpoint = %what,
                forwarder = claimed.as_deref().unwrap_or("-"),
                reason = refusal.reason.as_str(),
                "forwarded request refused: {}; further refusals are summed up once a minute",
                refusal.message
            );
            return;
        }
        *p.suppressed.entry(refusal.reason).or_default() += 1;
        if p.addresses.len() < MAX_SUMMARY_ADDRESSES {
            p.addresses.insert(peer);
        } else if !p.addresses.contains(&peer) {
            p.more_addresses = true;
        }
    }

    /// Ends the period: logs the summary of what was not logged, if anything.
    pub fn flush(&self) {
        let Ok(mut p) = self.state.lock() else { return };
        let period = std::mem::take(&mut *p);
        if period.suppressed.is_empty() {
            return;
        }
        let total: u64 = period.suppressed.values().sum();
        let by_reason =
            period.suppressed.iter().map(|(r, n)| format!("{} {n}", r.as_str())).collect::<Vec<_>>().join(", ");
        let mut from = period.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        if period.more_addresses {
            from.push_str(", and more");
        }
        tracing::warn!(
            refused = total,
            "{total} more forwarded request(s) refused in the last minute ({by_reason}) from {from}"
        );
    }
}

#[derive(Clone)]
struct Shared {
    verifier: Arc<Verifier>,
    log: Arc<RefusalLog>,
    metrics: Metrics,
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
        let pem = std::fs::read(ca).with_context(|| format!("reading ca_file {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("ca_file {} is not PEM", ca.display()))?;
        anyhow::ensure!(!certs.is_empty(), "ca_file {} holds no certificate", ca.display());
        builder = builder.tls_certs_only(certs);
    }
    builder.build().context("building the forwarding http client")
}

/// Serves the endpoint on `listen`, over TLS when `tls` is given, until the process ends, within
/// [`Limits::FORWARDING`]: anyone on the LAN can connect before a request is checked, so
/// connections (TLS handshakes included) are capped and timed out (see [`crate::http`]).
pub async fn serve(
    listen: SocketAddr,
    verifier: Verifier,
    metrics: Metrics,
    tx: mpsc::Sender<ForwarderMessage>,
    tls: Option<TlsAcceptor>,
) -> anyhow::Result<()> {
    let log = Arc::new(RefusalLog::default());
    let shared = Shared { verifier: Arc::new(verifier), log: log.clone(), metrics, tx };
    let app = axum::Router::new()
        .route("/v1/trigger", axum::routing::post(trigger))
        .route("/v1/clear", axum::routing::post(clear))
        .route("/v1/check", axum::routing::post(check))
        .with_state(shared);
    let tcp = TcpListener::bind(listen).await.with_context(|| format!("binding the forwarding endpoint {listen}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(%listen, scheme, "accepting forwarded triggers on /v1/trigger and /v1/clear");
    let summaries = tokio::spawn(async move {
        let mut every = tokio::time::interval(REFUSAL_LOG_PERIOD);
        every.tick().await;
        loop {
            every.tick().await;
            log.flush();
        }
    });
    crate::http::serve(tcp, "forwarding endpoint", app, tls, Limits::FORWARDING).await;
    summaries.abort();
    Ok(())
}

async fn trigger(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    receive(&shared, peer, "trigger", &headers, &body)
}

async fn clear(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    receive(&shared, peer, "clear", &headers, &body)
}

async fn check(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    receive(&shared, peer, "check", &headers, &body)
}

fn answer_refusal(
    shared: &Shared,
    peer: SocketAddr,
    what: &str,
    headers: &HeaderMap,
    r: &Refusal,
) -> (StatusCode, String) {
    shared.metrics.forwarding_refused(r.reason.as_str());
    let claimed = headers.get(HEADER_NAME).and_then(|v| v.to_str().ok());
    shared.log.refused(peer.ip(), what, r, claimed);
    (r.reason.status(), serde_json::json!({ "error": r.message, "reason": r.reason.as_str() }).to_string())
}

fn receive(shared: &Shared, peer: SocketAddr, what: &str, headers: &HeaderMap, body: &[u8]) -> (StatusCode, String) {
    let name = match shared.verifier.verify(what, headers, body, SystemTime::now()) {
        Ok(name) => name,
        Err(r) => return answer_refusal(shared, peer, what, headers, &r),
    };
    if what == "check" {
        // Signed and fresh: that is all a check asks. The daemon is not told.
        if !serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object()) {
            let r = Refusal::new(RefusalReason::BadBody, "a check's body is a json object");
            return answer_refusal(shared, peer, what, headers, &r);
        }
        return (StatusCode::OK, serde_json::json!({ "ok": true, "forwarder": name }).to_string());
    }
    let message = match parse_body(what, body) {
        Ok(m) => m,
        Err(why) => return answer_refusal(shared, peer, what, headers, &Refusal::new(RefusalReason::BadBody, why)),
    };
    match shared.tx.try_send(ForwarderMessage { name, peer, message }) {
        Ok(()) => (StatusCode::ACCEPTED, "{\"accepted\":true}".into()),
        // Full: the daemon is behind on messages; the forwarder retries (signed anew).
        Err(mpsc::error::TrySendError::Full(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"busy, try again\"}".into())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {
            (StatusCode::SERVICE_UNAVAILABLE, "{\"error\":\"daemon is stopping\"}".into())
        }
    }
}

/// Whether `s` can be an outage id: 1 to 64 letters, digits, `.`, `_` or `-`.
fn is_outage_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_OUTAGE_ID
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The message in a checked request's body. The reason is a peer's text: cleaned and cut here.
fn parse_body(what: &str, body: &[u8]) -> Result<PeerMessage, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| "the body is not json".to_string())?;
    let outage = match v.get("outage") {
        Some(serde_json::Value::String(o)) if is_outage_id(o) => Some(o.clone()),
        None | Some(serde_json::Value::Null) if what == "clear" => None,
        _ => return Err(format!("`outage` must be 1 to {MAX_OUTAGE_ID} letters, digits, `.`, `_` or `-`")),
    };
    match (what, outage) {
        ("trigger", Some(outage)) => {
            let reason = v.get("reason").and_then(|r| r.as_str()).ok_or("a trigger needs a string `reason`")?;
            let reason = hecate_core::text::clean(reason, hecate_core::text::PEER_TEXT_CHARS);
            Ok(PeerMessage::Trigger { outage, reason })
        }
        ("clear", outage) => Ok(PeerMessage::Clear { outage }),
        _ => Err("a trigger needs an `outage`".into()),
    }
}

/// Most bytes of a coordinator's answer read: its own are one short line.
const MAX_ANSWER_BYTES: usize = 4096;

/// The `error` of a coordinator's answer, cleaned: it is a peer's text.
async fn answer_error(mut response: reqwest::Response) -> Option<String> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_ANSWER_BYTES {
            break;
        }
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v.get("error")?.as_str().map(|e| hecate_core::text::clean(e, hecate_core::text::PEER_TEXT_CHARS))
}

/// Posts `body` to endpoint `what` under `base` until the coordinator accepts or `timeout`
/// passes, each try signed anew (its own time and nonce). `Ok`: what the coordinator answered;
/// `Err`: why every try failed (the last reason).
pub async fn post(
    client: &reqwest::Client,
    base: &str,
    what: &str,
    signer: &Signer,
    body: serde_json::Value,
    timeout: Duration,
) -> Result<String, String> {
    // Held to a day so that a time no config check stopped cannot overflow the clock.
    let deadline = Instant::now().checked_add(timeout.min(*ONE_DAY)).unwrap_or_else(Instant::now);
    let url = endpoint(base, what);
    let body = body.to_string();
    let mut tries = 0;
    loop {
        tries += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let why = match post_once(client, &url, what, signer, &body, left).await {
            Ok(status) => {
                return Ok(format!(
                    "coordinator accepted ({status}) after {tries} tr{}",
                    if tries == 1 { "y" } else { "ies" }
                ));
            }
            Err(why) => why,
        };
        tracing::warn!(url, tries, %why, "the coordinator did not accept");
        if Instant::now().checked_add(Duration::from_secs(1)).is_none_or(|t| t >= deadline) {
            return Err(format!("{why} ({tries} tries in {})", humantime::format_duration(timeout)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One signed `POST` of `body` to `url` (endpoint `what`), within `left` (held between 100 ms and
/// 10 s). `Ok`: the status of an accepted request; `Err`: why it was not.
async fn post_once(
    client: &reqwest::Client,
    url: &str,
    what: &str,
    signer: &Signer,
    body: &str,
    left: Duration,
) -> Result<reqwest::StatusCode, String> {
    let signed = signer.sign(what, body.as_bytes(), SystemTime::now());
    let mut request = client.post(url).header("content-type", "application/json").body(body.to_string());
    for (h, v) in signed.headers() {
        request = request.header(h, v);
    }
    match request.timeout(left.clamp(Duration::from_millis(100), Duration::from_secs(10))).send().await {
        Ok(r) if r.status().is_success() => Ok(r.status()),
        Ok(r) => {
            let status = r.status();
            Err(match answer_error(r).await {
                Some(e) => format!("coordinator answered {status}: {e}"),
                None => format!("coordinator answered {status}"),
            })
        }
        Err(e) => Err(hecate_core::error::error_chain(&e)),
    }
}

/// A forwarder's link to its coordinator: posts its trigger and its clear. When to send which is
/// the supervisor's decision (`hecate_core::supervisor`); this only carries it out.
#[derive(Debug, Clone)]
pub struct ForwardLink {
    base_url: String,
    signer: Arc<Signer>,
    client: reqwest::Client,
    timeout: Duration,
}

impl ForwardLink {
    /// The link for a `role: forwarder` config (`None` for other roles). Reads the key and
    /// `ca_file` now, so a missing file is reported at start, not when the UPS runs low.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<ForwardLink>> {
        let Role::Forwarder(f) = &cfg.role else {
            return Ok(None);
        };
        Ok(Some(ForwardLink {
            base_url: f.coordinator_url.clone(),
            signer: Arc::new(Signer::new(cfg.host.clone(), read_key(&f.key_file, "key_file")?)),
            client: client(f.ca_file.as_deref())?,
            timeout: *f.timeout,
        }))
    }

    /// Posts the trigger of `outage` until the coordinator takes it or the forwarder's `timeout`
    /// passes.
    pub async fn trigger(&self, reason: &str, outage: &OutageId) -> Result<String, String> {
        let body = serde_json::json!({ "outage": outage, "reason": reason });
        post(&self.client, &self.base_url, "trigger", &self.signer, body, self.timeout).await
    }

    /// The forwarder's preflight: one signed `POST /v1/check` (no retries, at most 10 s): the
    /// coordinator reached, and accepting this forwarder's name, key and clock. Changes nothing
    /// there.
    pub async fn check(&self) -> hecate_core::preflight::Check {
        let url = endpoint(&self.base_url, "check");
        match post_once(&self.client, &url, "check", &self.signer, "{}", self.timeout).await {
            Ok(status) => hecate_core::preflight::Check::ok(
                "forwarding",
                format!("{} accepts this forwarder's signed requests ({status})", self.base_url),
            ),
            Err(why) => hecate_core::preflight::Check::failed(
                "forwarding",
                format!("{why}: a trigger would not be taken, and this host would run its own plan"),
            ),
        }
    }

    /// Posts the clear (our mains are back and stable) of `outage` (`None`: whichever is on
    /// record) the same way.
    pub async fn clear(&self, outage: Option<&OutageId>) -> Result<String, String> {
        let body = serde_json::json!({ "outage": outage });
        post(&self.client, &self.base_url, "clear", &self.signer, body, self.timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(s: &Signed) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in s.headers() {
            h.insert(k, v.parse().unwrap_or_else(|e| panic!("{e}")));
        }
        h
    }

    fn verifier(window_s: u64) -> Verifier {
        Verifier::new(
            [
                ("tethys".to_string(), Key::from_secret("tethys-key-0123456789")),
                ("rhea".to_string(), Key::from_secret("rhea-key-0123456789ab")),
            ],
            Duration::from_secs(window_s),
            None,
        )
    }

    #[test]
    fn a_signed_request_is_accepted_once() {
        let v = verifier(60);
        let now = SystemTime::now();
        let s = Signer::new("tethys", Key::from_secret("tethys-key-0123456789")).sign("trigger", b"{}", now);
        assert_eq!(v.verify("trigger", &headers(&s), b"{}", now), Ok("tethys".into()));
        let again = v.verify("trigger", &headers(&s), b"{}", now).unwrap_err();
        assert_eq!(again.reason, RefusalReason::Replayed, "{again:?}");
        // The same signature does not carry over to the other endpoint, another body or name.
        let s = Signer::new("tethys", Key::from_secret("tethys-key-0123456789")).sign("trigger", b"{}", now);
        assert_eq!(v.verify("clear", &headers(&s), b"{}", now).unwrap_err().reason, RefusalReason::BadSignature);
        assert_eq!(v.verify("trigger", &headers(&s), b"{ }", now).unwrap_err().reason, RefusalReason::BadSignature);
        let mut forged = s.clone();
        forged.name = "rhea".into();
        assert_eq!(
            v.verify("trigger", &headers(&forged), b"{}", now).unwrap_err().reason,
            RefusalReason::BadSignature,
            "one forwarder's key does not sign for another"
        );
    }

    #[test]
    fn time_outside_the_window_unknown_names_and_garbage_are_refused() {
        let v = verifier(60);
        let now = SystemTime::now();
        let signer = Signer::new("tethys", Key::from_secret("tethys-key-0123456789"));
        for (off, ok) in [(-61i64, false), (-60, true), (59, true), (61, false), (300, false)] {
            let at = if off < 0 {
                now - Duration::from_secs(off.unsigned_abs())
            } else {
                now + Duration::from_secs(off.unsigned_abs())
            };
            let r = v.verify("clear", &headers(&signer.sign("clear", b"", at)), b"", now);
            assert_eq!(r.is_ok(), ok, "{off}: {r:?}");
            if let Err(e) = r {
                assert_eq!(e.reason, RefusalReason::OutsideWindow);
                assert!(e.message.contains(if off > 0 { "ahead of" } else { "behind" }), "{e:?}");
            }
        }
        let stranger = Signer::new("mallory", Key::from_secret("mallory-key-0123456789")).sign("clear", b"", now);
        assert_eq!(
            v.verify("clear", &headers(&stranger), b"", now).unwrap_err().reason,
            RefusalReason::UnknownForwarder
        );
        assert_eq!(v.verify("clear", &HeaderMap::new(), b"", now).unwrap_err().reason, RefusalReason::Malformed);
        let mut bad = signer.sign("clear", b"", now);
        bad.signature = "zz".repeat(32);
        assert_eq!(v.verify("clear", &headers(&bad), b"", now).unwrap_err().reason, RefusalReason::Malformed);
        // Nothing of a refused name is kept.
        assert!(v.books.lock().map(|b| !b.contains_key("mallory")).unwrap_or(false));
    }

    #[test]
    fn the_nonce_book_is_bounded_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let store = dir.path().join(NONCES_FILE);
        let key = || Key::from_secret("tethys-key-0123456789");
        let v = Verifier::new([("tethys".to_string(), key())], Duration::from_secs(60), Some(store.clone()));
        let signer = Signer::new("tethys", key());
        let now = SystemTime::now();
        let first = signer.sign("trigger", b"{}", now);
        assert!(v.verify("trigger", &headers(&first), b"{}", now).is_ok());
        // A new process reads the nonces back: the captured request is still refused.
        let restarted = Verifier::new([("tethys".to_string(), key())], Duration::from_secs(60), Some(store));
        let r = restarted.verify("trigger", &headers(&first), b"{}", now).unwrap_err();
        assert_eq!(r.reason, RefusalReason::Replayed);
        for i in 1..MAX_NONCES_PER_FORWARDER {
            let s = signer.sign_with_nonce("clear", b"", now, &format!("{i:032x}"));
            assert!(restarted.verify("clear", &headers(&s), b"", now).is_ok(), "{i}");
        }
        let s = signer.sign("clear", b"", now);
        assert_eq!(restarted.verify("clear", &headers(&s), b"", now).unwrap_err().reason, RefusalReason::TooMany);
        // Once their time has left the window, old nonces go and new requests are taken again.
        let later = now + Duration::from_secs(61);
        let s = signer.sign("clear", b"", later);
        assert!(restarted.verify("clear", &headers(&s), b"", later).is_ok());
    }

    #[test]
    fn bodies() {
        assert_eq!(
            parse_body("trigger", br#"{"outage":"ab-1","reason":"ups x: low \u001b[2Jruntime"}"#),
            Ok(PeerMessage::Trigger { outage: "ab-1".into(), reason: "ups x: low runtime".into() })
        );
        assert_eq!(parse_body("clear", br#"{"outage":null}"#), Ok(PeerMessage::Clear { outage: None }));
        assert_eq!(
            parse_body("clear", br#"{"outage":"ab-1"}"#),
            Ok(PeerMessage::Clear { outage: Some("ab-1".into()) })
        );
        assert!(parse_body("trigger", br#"{"reason":"r"}"#).is_err());
        assert!(parse_body("trigger", br#"{"outage":"a b","reason":"r"}"#).is_err());
        assert!(parse_body("clear", b"nope").is_err());
    }

    #[test]
    fn a_short_or_missing_key_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let p = dir.path().join("key");
        std::fs::write(&p, "short\n").unwrap_or_else(|e| panic!("{e}"));
        let e = read_key(&p, "key_file").map(|_| ()).unwrap_err().to_string();
        assert!(e.contains("shorter than 16"), "{e}");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap_or_else(|e| panic!("{e}"));
        let k = read_key(&p, "key_file").unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{k:?}").contains("0123"), "Debug never shows the key");
        // One reader for every secret file: a second line is refused, not silently dropped.
        std::fs::write(&p, "0123456789abcdef0123\nsecond line\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(read_key(&p, "key_file").is_err());
        assert!(read_key(&dir.path().join("missing"), "key_file").is_err());
    }
}
