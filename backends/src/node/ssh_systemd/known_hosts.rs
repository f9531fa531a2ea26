//! OpenSSH `known_hosts` files: which host keys a node may present.
//!
//! Read on every new connection (so an operator's edit takes effect without a restart), never
//! cached. Supports what OpenSSH writes and admins write by hand: plain and hashed (`|1|salt|hash`,
//! Debian's default `HashKnownHosts yes`) host names, comma-separated patterns with `*`/`?` and `!`
//! negation, `[host]:port` for ports other than 22, and `@revoked` lines. `@cert-authority` lines
//! are skipped: host certificates are not negotiated.

use std::fs::OpenOptions;
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;
use std::sync::Mutex;

use russh::keys::ssh_encoding::base64::{Base64, Encoding as _};
use russh::keys::{Algorithm, HashAlg, PublicKey};

/// A key listed for a host.
#[derive(Debug, Clone)]
pub struct Entry {
    /// 1-based line number in the file.
    pub line: usize,
    /// The line says `@revoked`: this key must never be accepted.
    pub revoked: bool,
    /// The key.
    pub key: PublicKey,
}

/// What a known_hosts file says about a key a host presented.
#[derive(Debug)]
pub enum Verdict {
    /// A line lists this very key for the host.
    Known,
    /// The file lists no key for the host.
    Unknown,
    /// The file lists other keys for the host (the lines), but not this one.
    Changed(Vec<Entry>),
    /// A `@revoked` line lists this key.
    Revoked(usize),
}

/// The name a host is listed under: `host` on port 22, `[host]:port` otherwise (OpenSSH's form).
pub fn host_name(host: &str, port: u16) -> String {
    if port == 22 { host.to_string() } else { format!("[{host}]:{port}") }
}

/// The SHA-256 fingerprint as OpenSSH prints it: `SHA256:...`.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Every key `path` lists for `host` on `port`, in file order. A missing file lists nothing; lines
/// that cannot be parsed are skipped, as OpenSSH does.
pub fn entries_for(path: &Path, host: &str, port: u16) -> io::Result<Vec<Entry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let name = host_name(host, port).to_ascii_lowercase();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let mut revoked = false;
        if first.starts_with('@') {
            match first {
                "@revoked" => revoked = true,
                // host certificates are never negotiated (no `host_key_certificates`), so a CA
                // line cannot vouch for anything here
                _ => continue,
            }
            first = fields.next().unwrap_or_default();
        }
        let (Some(kind), Some(b64)) = (fields.next(), fields.next()) else { continue };
        if !hosts_match(first, &name) {
            continue;
        }
        match PublicKey::from_openssh(&format!("{kind} {b64}")) {
            Ok(key) => out.push(Entry { line: i + 1, revoked, key }),
            Err(e) => {
                tracing::debug!(file = %path.display(), line = i + 1, error = %e, "skipping unreadable known_hosts key")
            }
        }
    }
    Ok(out)
}

/// Judges `key` against the entries listed for its host.
pub fn judge(entries: &[Entry], key: &PublicKey) -> Verdict {
    if let Some(e) = entries.iter().find(|e| e.revoked && e.key.key_data() == key.key_data()) {
        return Verdict::Revoked(e.line);
    }
    let listed: Vec<&Entry> = entries.iter().filter(|e| !e.revoked).collect();
    if listed.iter().any(|e| e.key.key_data() == key.key_data()) {
        Verdict::Known
    } else if listed.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Changed(listed.into_iter().cloned().collect())
    }
}

/// The host key algorithms to offer, the ones known_hosts lists for the host first: a server
/// with several host keys then proves itself with the one on record (as OpenSSH does), instead
/// of presenting another type that would look like a changed key.
pub fn preferred_algorithms(entries: &[Entry], supported: &[Algorithm]) -> Vec<Algorithm> {
    let known = |a: &Algorithm| entries.iter().any(|e| !e.revoked && e.key.algorithm() == *a);
    let mut out: Vec<Algorithm> = supported.iter().filter(|a| known(a)).cloned().collect();
    out.extend(supported.iter().filter(|a| !known(a)).cloned());
    out
}

/// Appends `key` for `host` on `port` (trust on first use), creating the file if needed.
pub fn learn(path: &Path, host: &str, port: u16, key: &PublicKey) -> io::Result<()> {
    // Nodes connect concurrently and usually share one file: one writer at a time keeps lines whole.
    static WRITING: Mutex<()> = Mutex::new(());
    let _guard = WRITING.lock().unwrap_or_else(|p| p.into_inner());
    let mut line = format!("{} {}", host_name(host, port), key.algorithm().as_str());
    let openssh = key.to_openssh().map_err(io::Error::other)?;
    // `to_openssh` gives `TYPE BASE64 [COMMENT]`; the comment of a server's key is empty
    let b64 = openssh.split_whitespace().nth(1).ok_or_else(|| io::Error::other("empty public key encoding"))?;
    line.push(' ');
    line.push_str(b64);
    line.push('\n');
    let mut f = OpenOptions::new().read(true).append(true).create(true).open(path)?;
    // a file whose last line lacks its newline would glue our line onto it
    if f.seek(SeekFrom::End(-1)).is_ok() {
        let mut last = [0u8; 1];
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, '\n');
        }
    }
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// Whether a comma-separated pattern list matches `name` (lowercase): any positive pattern
/// matches and no negated one does.
fn hosts_match(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pat in patterns.split(',') {
        if let Some(hashed) = pat.strip_prefix("|1|") {
            if hashed_match(hashed, name) {
                matched = true;
            }
        } else if let Some(neg) = pat.strip_prefix('!') {
            if glob(&neg.to_ascii_lowercase(), name) {
                return false;
            }
        } else if glob(&pat.to_ascii_lowercase(), name) {
            matched = true;
        }
    }
    matched
}

/// `|1|SALT|HASH`: HASH = HMAC-SHA1(key = SALT, name), both base64.
fn hashed_match(salt_and_hash: &str, name: &str) -> bool {
    let Some((salt, hash)) = salt_and_hash.split_once('|') else { return false };
    let (Ok(salt), Ok(hash)) = (Base64::decode_vec(salt), Base64::decode_vec(hash)) else { return false };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// `*` matches any run of characters, `?` any one character.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const ED_A: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED_B: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA6rWI3G1sz07DnfFlrouTcysQlj2P+jpNSOEWD9OJ3X";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn globs() {
        assert!(glob("*.example.com", "a.example.com"));
        assert!(glob("10.0.0.?", "10.0.0.7"));
        assert!(!glob("10.0.0.?", "10.0.0.17"));
        assert!(glob("*", ""));
        assert!(!glob("a", "ab"));
    }

    #[test]
    fn plain_port_pattern_negation_and_line_numbers() {
        let f = file(&format!(
            "# comment\n\n[10.0.0.1]:2222 {ED_A}\n10.0.0.1 {ED_B}\n*.lan,!bad.lan {ED_B} note\nNODE.lan {ED_A}\n"
        ));
        let e = entries_for(f.path(), "10.0.0.1", 2222).unwrap();
        assert_eq!(e.iter().map(|e| e.line).collect::<Vec<_>>(), [3]);
        assert!(matches!(judge(&e, &key(ED_A)), Verdict::Known));
        assert!(matches!(judge(&e, &key(ED_B)), Verdict::Changed(ref l) if l[0].line == 3));
        let e = entries_for(f.path(), "10.0.0.1", 22).unwrap();
        assert_eq!(e.iter().map(|e| e.line).collect::<Vec<_>>(), [4]);
        assert!(entries_for(f.path(), "bad.lan", 22).unwrap().is_empty());
        // host names compare case-insensitively, like OpenSSH
        assert_eq!(entries_for(f.path(), "node.LAN", 22).unwrap().len(), 2);
        assert!(matches!(judge(&[], &key(ED_A)), Verdict::Unknown));
    }

    #[test]
    fn hashed_names_revoked_and_cert_authority_lines() {
        // `ssh-keygen -H` output for "example.com" (from russh's own known_hosts test)
        let hashed = "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= ssh-ed25519 \
                      AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";
        let f = file(&format!("{hashed}\n@cert-authority * {ED_A}\n@revoked * {ED_B}\n"));
        let e = entries_for(f.path(), "example.com", 22).unwrap();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(matches!(judge(&e, &key(ED_B)), Verdict::Revoked(3)));
        assert!(matches!(judge(&e, &key(ED_A)), Verdict::Changed(_)));
        assert_eq!(entries_for(f.path(), "otherhost", 22).unwrap().len(), 1, "only the revocation applies");
    }

    #[test]
    fn a_missing_file_lists_nothing_and_learning_creates_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        assert!(entries_for(&path, "h", 22).unwrap().is_empty());
        learn(&path, "h", 2200, &key(ED_A)).unwrap();
        std::fs::write(&path, std::fs::read_to_string(&path).unwrap().trim_end()).unwrap();
        learn(&path, "g", 22, &key(ED_B)).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("[h]:2200 {ED_A}\ng {ED_B}\n"));
        assert!(matches!(judge(&entries_for(&path, "h", 2200).unwrap(), &key(ED_A)), Verdict::Known));
    }

    #[test]
    fn known_algorithms_come_first() {
        let e = vec![Entry { line: 1, revoked: false, key: key(ED_A) }];
        let supported = [Algorithm::Ecdsa { curve: russh::keys::EcdsaCurve::NistP256 }, Algorithm::Ed25519];
        assert_eq!(preferred_algorithms(&e, &supported)[0], Algorithm::Ed25519);
        assert_eq!(preferred_algorithms(&[], &supported), supported.to_vec());
    }
}
