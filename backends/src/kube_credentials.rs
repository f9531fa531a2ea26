//! How long a kubeconfig's credentials last: its user's client certificate (`notAfter`) or, for a
//! JWT bearer token, its `exp` claim. k3s writes `k3s.yaml` with a client certificate valid for a
//! year; a copy made once stops working on the day the drain is needed, so `config check`,
//! `hecate status` and a metric say how many days are left.
//!
//! The kubeconfig is read here with a few fields of its own (not kube's types, which keep the
//! token behind a secret wrapper): nothing read here is logged, and a message never quotes the
//! file's content. The X.509 and base64 decoding is the little this needs (a certificate's
//! validity, standard and URL-safe base64), written out rather than pulled in as crates: every
//! length is checked, nothing indexes past a slice, and anything unexpected is an error.

use std::path::{Path, PathBuf};

use hecate_core::cluster::CredentialExpiry;
use hecate_core::{BackendError, ErrorKind};
use serde::Deserialize;

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    context: Context,
}

#[derive(Deserialize)]
struct Context {
    #[serde(default)]
    user: Option<String>,
}

#[derive(Deserialize)]
struct NamedUser {
    name: String,
    #[serde(default)]
    user: Option<User>,
}

#[derive(Deserialize)]
struct User {
    #[serde(rename = "client-certificate-data", default)]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-certificate", default)]
    client_certificate: Option<PathBuf>,
    #[serde(default)]
    token: Option<String>,
    #[serde(rename = "tokenFile", default)]
    token_file: Option<PathBuf>,
}

fn config_error(message: String) -> BackendError {
    BackendError::new(ErrorKind::Config, message)
}

/// The expiry of the credentials `context` (the current one when `None`) of the kubeconfig at
/// `path` uses: `Ok(None)` for credentials that do not expire or whose expiry cannot be known (a
/// static token, an exec plugin).
pub(crate) fn expiry(path: &Path, context: Option<&str>) -> Result<Option<CredentialExpiry>, BackendError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| BackendError::with_source(ErrorKind::Config, format!("cannot read kubeconfig {shown}"), e))?;
    let kc: Kubeconfig =
        serde_saphyr::from_str(&text).map_err(|_| config_error(format!("kubeconfig {shown} is not a kubeconfig")))?;
    let name = context
        .map(str::to_string)
        .or(kc.current_context)
        .ok_or_else(|| config_error(format!("kubeconfig {shown} has no current-context")))?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| config_error(format!("kubeconfig {shown} has no context {name:?}")))?;
    let Some(user_name) = &ctx.context.user else { return Ok(None) };
    let Some(user) = kc.users.iter().find(|u| &u.name == user_name).and_then(|u| u.user.as_ref()) else {
        return Err(config_error(format!("kubeconfig {shown} has no user {user_name:?}")));
    };
    let base = path.parent().unwrap_or(Path::new("."));
    let pem = match (&user.client_certificate_data, &user.client_certificate) {
        (Some(data), _) => {
            let bytes = base64_decode(data)
                .ok_or_else(|| config_error(format!("kubeconfig {shown}: client-certificate-data is not base64")))?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        (None, Some(file)) => {
            let file = base.join(file);
            Some(std::fs::read_to_string(&file).map_err(|e| {
                BackendError::with_source(
                    ErrorKind::Config,
                    format!("cannot read the client certificate {}", file.display()),
                    e,
                )
            })?)
        }
        (None, None) => None,
    };
    if let Some(pem) = pem {
        let der = pem_certificate(&pem).ok_or_else(|| {
            config_error(format!("kubeconfig {shown}: the client certificate is not a pem certificate"))
        })?;
        let not_after = certificate_not_after(&der)
            .ok_or_else(|| config_error(format!("kubeconfig {shown}: the client certificate cannot be read")))?;
        return Ok(Some(CredentialExpiry { what: "client certificate".into(), not_after_unix: not_after }));
    }
    let token = match (&user.token, &user.token_file) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(file)) => Some(std::fs::read_to_string(base.join(file)).map_err(|e| {
            BackendError::with_source(ErrorKind::Config, format!("cannot read the token file of kubeconfig {shown}"), e)
        })?),
        (None, None) => None,
    };
    Ok(token
        .and_then(|t| jwt_expiry(t.trim()))
        .map(|exp| CredentialExpiry { what: "token".into(), not_after_unix: exp }))
}

/// A JWT's `exp` claim (a service account token); `None` for a token that is no JWT (k3s's and
/// static tokens do not expire) or carries no `exp`.
fn jwt_expiry(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims: serde_json::Value = serde_json::from_slice(&base64_decode(payload)?).ok()?;
    claims.get("exp")?.as_i64()
}

/// Standard or URL-safe base64, padding optional, whitespace ignored.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = ((acc << 6) | u32::from(v)) & 0x00ff_ffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// The DER of the first `CERTIFICATE` block of a PEM text.
fn pem_certificate(pem: &str) -> Option<Vec<u8>> {
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem.find(begin)? + begin.len();
    let len = pem.get(start..)?.find("-----END CERTIFICATE-----")?;
    base64_decode(pem.get(start..start + len)?)
}

/// One DER element: (tag, contents, the rest after it).
fn der_element(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = data.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A certificate's `notAfter`, seconds since the Unix epoch.
fn certificate_not_after(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    let (tag, cert, _) = der_element(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = der_element(cert)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rest = tbs;
    // [0] version (optional), serialNumber, signature, issuer, then validity
    let (tag, _, after) = der_element(rest)?;
    if tag == 0xa0 {
        rest = after;
        rest = der_element(rest)?.2; // serialNumber
    } else {
        rest = after; // that was the serialNumber
    }
    rest = der_element(rest)?.2; // signature
    rest = der_element(rest)?.2; // issuer
    let (tag, validity, _) = der_element(rest)?;
    if tag != SEQUENCE {
        return None;
    }
    let (_, _, after_not_before) = der_element(validity)?;
    let (tag, not_after, _) = der_element(after_not_before)?;
    asn1_time(tag, not_after)
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) as seconds
/// since the Unix epoch.
fn asn1_time(tag: u8, text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let num = |s: &str| -> Option<i64> { if s.bytes().all(|b| b.is_ascii_digit()) { s.parse().ok() } else { None } };
    let (year, rest) = match tag {
        0x17 if text.len() == 12 => {
            let yy = num(text.get(..2)?)?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        0x18 if text.len() == 14 => (num(text.get(..4)?)?, text.get(4..)?),
        _ => return None,
    };
    let (month, day) = (num(rest.get(..2)?)?, num(rest.get(2..4)?)?);
    let (hour, minute, second) = (num(rest.get(4..6)?)?, num(rest.get(6..8)?)?, num(rest.get(8..10)?)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn dates_base64_and_tokens() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(asn1_time(0x17, b"270101000000Z"), Some(1_798_761_600));
        assert_eq!(asn1_time(0x18, b"20270101000000Z"), Some(1_798_761_600));
        assert_eq!(asn1_time(0x17, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(asn1_time(0x17, b"500101000000Z"), Some(-631_152_000));
        for bad in [&b"2701010000Z"[..], b"271301000000Z", b"27010100000aZ", b"270101000000", b""] {
            assert_eq!(asn1_time(0x17, bad), None, "{bad:?}");
        }
        assert_eq!(base64_decode("aGVjYXRl").unwrap(), b"hecate");
        assert_eq!(base64_decode("aGVjYXRlIQ==").unwrap(), b"hecate!");
        assert_eq!(base64_decode("-_8").unwrap(), [0xfb, 0xff]);
        assert!(base64_decode("a*b").is_none());
        // header.payload.signature with {"exp":1798761600}
        assert_eq!(jwt_expiry("eyJhbGciOiJub25lIn0.eyJleHAiOjE3OTg3NjE2MDB9.c2ln"), Some(1_798_761_600));
        assert_eq!(jwt_expiry("K10abc::server:def"), None);
        assert_eq!(jwt_expiry("a.b.c.d"), None);
    }

    #[test]
    fn broken_der_is_none_never_a_panic() {
        assert_eq!(certificate_not_after(&[]), None);
        assert_eq!(certificate_not_after(&[0x30, 0x82, 0xff, 0xff]), None);
        assert_eq!(certificate_not_after(&[0x30, 0x85, 1, 2, 3, 4, 5]), None);
        assert_eq!(certificate_not_after(&[0x30, 0x03, 0x30, 0x01, 0x02]), None);
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            let _ = certificate_not_after(&junk);
        }
    }
}
