//! `hecate nodes keyscan`'s side of SSH: fetch the host keys a node offers (as `ssh-keyscan`
//! does, one handshake per key type, stopped before any login) and judge each against a
//! known_hosts file, or add it there.

use std::borrow::Cow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hecate_core::{BackendError, ErrorKind};
use russh::client;
use russh::keys::{PublicKey, PublicKeyOrCertificate};
use russh::{Preferred, keys::Algorithm};

use super::known_hosts::{self, Verdict};
use super::session::HOST_KEY_ALGORITHMS;

/// One host key a node offered.
#[derive(Debug, Clone)]
pub struct HostKey {
    /// Its type, as OpenSSH names it (`ssh-ed25519`).
    pub algorithm: String,
    /// Its SHA-256 fingerprint, as OpenSSH prints it (`SHA256:...`).
    pub fingerprint: String,
    key: PublicKey,
}

/// What a known_hosts file says of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listed {
    /// Listed for the host.
    Known,
    /// The file lists no key for the host.
    Unknown,
    /// The file lists other keys for the host (each `TYPE FINGERPRINT (line N)`), not this one.
    Changed(Vec<String>),
    /// A `@revoked` line (this line) lists it.
    Revoked(usize),
}

/// Captures the key the server proves itself with, and stops the handshake there.
struct Capture(Arc<Mutex<Option<PublicKey>>>);

impl client::Handler for Capture {
    type Error = russh::Error;

    async fn check_server_key(&mut self, server_key: &PublicKeyOrCertificate) -> Result<bool, Self::Error> {
        if let PublicKeyOrCertificate::PublicKey { key, .. } = server_key {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        }
        // Nothing more is wanted of this connection: no login follows.
        Ok(false)
    }
}

/// The host keys `host:port` offers, one handshake per type Hecate can verify (ed25519, ecdsa),
/// each bounded by `timeout`. A type the server does not have is left out; an error only when
/// the node offers none (unreachable, not SSH, only RSA).
pub async fn scan(host: &str, port: u16, timeout: Duration) -> Result<Vec<HostKey>, BackendError> {
    let name = known_hosts::host_name(host, port);
    let mut keys = Vec::new();
    let mut last = None;
    for alg in HOST_KEY_ALGORITHMS {
        match tokio::time::timeout(timeout, offered(host, port, alg.clone())).await {
            Ok(Ok(key)) => keys.push(HostKey {
                algorithm: key.algorithm().as_str().to_string(),
                fingerprint: known_hosts::fingerprint(&key),
                key,
            }),
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(BackendError::new(
                    ErrorKind::Timeout,
                    format!("no ssh handshake with {name} within {}", humantime::format_duration(timeout)),
                ));
            }
        }
        if last.as_ref().is_some_and(|e| matches!(e.kind, ErrorKind::Unreachable | ErrorKind::Timeout)) {
            break;
        }
    }
    match (keys.is_empty(), last) {
        (false, _) => Ok(keys),
        (true, Some(e)) => Err(e),
        (true, None) => Err(BackendError::new(ErrorKind::Protocol, format!("{name} offered no host key"))),
    }
}

async fn offered(host: &str, port: u16, alg: Algorithm) -> Result<PublicKey, BackendError> {
    let name = known_hosts::host_name(host, port);
    let config = client::Config {
        preferred: Preferred { key: Cow::Owned(vec![alg]), ..Preferred::default() },
        nodelay: true,
        ..client::Config::default()
    };
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| BackendError::with_source(ErrorKind::Unreachable, format!("cannot connect to {name}"), e))?;
    let slot = Arc::new(Mutex::new(None));
    // The handshake ends with our refusal of the key: an error, expected.
    let result = client::connect_stream(Arc::new(config), stream, Capture(slot.clone())).await;
    let captured = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
    match (captured, result) {
        (Some(key), _) => Ok(key),
        (None, Err(e)) => Err(super::session::ssh_error(e, &format!("ssh handshake with {name}"))),
        (None, Ok(_)) => Err(BackendError::new(ErrorKind::Protocol, format!("{name} showed no host key"))),
    }
}

impl HostKey {
    /// What `known_hosts` says of this key for `host:port`.
    pub fn listed(&self, known_hosts: &Path, host: &str, port: u16) -> std::io::Result<Listed> {
        let entries = known_hosts::entries_for(known_hosts, host, port)?;
        Ok(match known_hosts::judge(&entries, &self.key) {
            Verdict::Known => Listed::Known,
            Verdict::Unknown => Listed::Unknown,
            Verdict::Revoked(line) => Listed::Revoked(line),
            Verdict::Changed(listed) => Listed::Changed(
                listed
                    .iter()
                    .map(|e| format!("{} {} (line {})", e.key.algorithm(), known_hosts::fingerprint(&e.key), e.line))
                    .collect(),
            ),
        })
    }

    /// Appends this key for `host:port` to `known_hosts` (created if missing), as Hecate's
    /// trust on first use writes it.
    pub fn record(&self, known_hosts: &Path, host: &str, port: u16) -> std::io::Result<()> {
        known_hosts::learn(known_hosts, host, port, &self.key)
    }
}
