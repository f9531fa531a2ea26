//! Untrusted text: what a peer (a UPS, a BMC, an API server, a forwarder) says, made safe before
//! it reaches a log line, `hecate status`, an event or `runs.json`.
//!
//! A peer's text is cut to a bounded length, stripped of control characters and terminal escape
//! sequences (a `ESC [2J` from a hostile upsd would clear the operator's terminal when
//! `hecate status` prints it; a NUL ends a C string in whatever reads the log), and credentials it
//! may echo (an `Authorization` header, a known secret) are replaced by `***`.
//!
//! Two lengths: [`PEER_TEXT_CHARS`] for one detail a peer supplied (a NUT `ERR` detail, a BMC's
//! error message, a forwarder's reason), applied where the text enters a message; and
//! [`MESSAGE_CHARS`] for a whole message at a sink (status, events, `runs.json`), a second bound
//! for whatever a backend let through.

/// Most characters kept of one detail a peer supplied.
pub const PEER_TEXT_CHARS: usize = 300;

/// Most characters kept of one whole message at a sink (status, an event, `runs.json`).
pub const MESSAGE_CHARS: usize = 2000;

/// What replaces a credential.
pub const REDACTED: &str = "***";

/// Secrets shorter than this are not searched for: replacing every `ab` in a message would make
/// it unreadable, and a secret that short protects little anyway.
pub const MIN_REDACTED_SECRET: usize = 4;

/// `s` on one line: terminal escape sequences and control characters removed (line breaks and
/// tabs become spaces), bidirectional overrides removed, trimmed, and cut to `max_chars`
/// characters (the last one an `…` when cut).
pub fn clean(s: &str, max_chars: usize) -> String {
    cut(strip_controls(s, false).trim(), max_chars)
}

/// As [`clean`], keeping line breaks (`\n`): for a multi-line view such as `hecate status`.
pub fn clean_lines(s: &str) -> String {
    strip_controls(s, true)
}

/// A peer's text as it may enter a message: [`redact`]ed of `secrets` and `Authorization`
/// values, then [`clean`]ed to `max_chars`.
pub fn untrusted(s: &str, max_chars: usize, secrets: &[&str]) -> String {
    // Cleaned first, so a control character inside a credential cannot hide it from the
    // redaction; then the redaction; then the cut, so a cut never leaves half a secret behind.
    let cleaned = strip_controls(s, false);
    cut(redact(&cleaned, secrets).trim(), max_chars)
}

/// `s` with every occurrence of a known secret (at least [`MIN_REDACTED_SECRET`] characters), the
/// credential of every `Authorization` value or `Basic`/`Bearer` token, and the user information
/// of a URL (`https://user:password@host`) replaced by `***`.
pub fn redact(s: &str, secrets: &[&str]) -> String {
    let mut out = s.to_string();
    for secret in secrets.iter().filter(|x| x.chars().count() >= MIN_REDACTED_SECRET) {
        if out.contains(secret) {
            out = out.replace(secret, REDACTED);
        }
    }
    redact_credentials(&out)
}

/// `s` cut to `max_chars` characters, the last one `…` when something was cut.
pub fn cut(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        None => s.to_string(),
        Some(_) if max_chars == 0 => String::new(),
        Some(_) => {
            let end = s.char_indices().nth(max_chars - 1).map_or(s.len(), |(i, _)| i);
            format!("{}…", &s[..end])
        }
    }
}

/// Whether `c` changes how the text around it is displayed: bidirectional embeddings, overrides
/// and isolates (a name could otherwise read backwards in a terminal).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn strip_controls(s: &str, keep_newlines: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\t' | '\n' | '\r' => out.push(' '),
            // ESC: the whole sequence goes, not just the ESC (else `[2J` would be left).
            '\u{1b}' => match chars.next() {
                Some('[') => skip_csi(&mut chars),
                Some(']' | 'P' | 'X' | '^' | '_') => skip_string(&mut chars),
                // A two-character escape (`ESC c`, `ESC 7`, ...), or a lone ESC at the end.
                _ => {}
            },
            // The 8-bit forms of CSI and of the string sequences.
            '\u{9b}' => skip_csi(&mut chars),
            '\u{90}' | '\u{98}' | '\u{9d}' | '\u{9e}' | '\u{9f}' => skip_string(&mut chars),
            c if c.is_control() || is_bidi_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// Skips a control sequence's parameters and intermediates up to and including its final byte.
fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
    }
}

/// Skips an operating-system command or device control string up to its terminator (BEL, or
/// ESC `\`), or to the end.
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

/// Replaces the credential after `authorization` (header name, JSON key or query parameter) and
/// after a `Basic`/`Bearer` scheme word with `***`.
fn redact_credentials(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    // (start, end) byte ranges to replace, found on the lowercase copy (same byte offsets: ASCII
    // lowercasing keeps every byte where it is).
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let bytes = lower.as_bytes();
    let mut from = 0;
    while let Some(i) = lower[from..].find("authorization") {
        let mut j = from + i + "authorization".len();
        // `Authorization: Basic x`, `"authorization":"Basic x"`, `authorization=x`
        while j < bytes.len() && matches!(bytes[j], b'"' | b'\'' | b':' | b'=' | b' ' | b'\t') {
            j += 1;
        }
        // Keep the scheme word, if one comes before a space.
        let word_end = j + bytes[j..].iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'-').count();
        let start = if bytes.get(word_end) == Some(&b' ') { word_end + 1 } else { j };
        let end = start + bytes[start..].iter().take_while(|b| !matches!(b, b'"' | b'\'' | b'}' | b'\n')).count();
        if end > start {
            spans.push((start, end));
        }
        from = end.max(j).max(from + i + 1);
    }
    for scheme in ["basic ", "bearer "] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(scheme) {
            let start = from + i + scheme.len();
            let end = start
                + bytes[start..]
                    .iter()
                    .take_while(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'.' | b'_' | b'~' | b'-')
                    })
                    .count();
            // A token, not a word of a sentence ("basic auth is ..."): long enough.
            if end - start >= 8 {
                spans.push((start, end));
            }
            from = end.max(start);
        }
    }
    // `https://user:password@host/...`: the user information of a URL.
    let mut from = 0;
    while let Some(i) = lower[from..].find("://") {
        let start = from + i + 3;
        let host_end = start
            + bytes[start..]
                .iter()
                .take_while(|b| !matches!(b, b'/' | b' ' | b'"' | b'\'' | b'\n' | b'?' | b'#'))
                .count();
        if let Some(at) = lower[start..host_end].rfind('@') {
            spans.push((start, start + at));
        }
        from = host_end.max(start);
    }
    if spans.is_empty() {
        return s.to_string();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for (start, end) in spans {
        if start < at {
            // inside (or overlapping) a span already replaced
            at = at.max(end);
            continue;
        }
        out.push_str(&s[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&s[at.min(s.len())..]);
    out
}

/// Every string in a JSON value (object keys included) [`clean`]ed to `max_chars`: for records
/// and event details whose fields a peer may have filled.
pub fn clean_json(v: &mut serde_json::Value, max_chars: usize) {
    match v {
        serde_json::Value::String(s) if needs_cleaning(s, max_chars) => *s = clean(s, max_chars),
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| clean_json(i, max_chars)),
        serde_json::Value::Object(map) => clean_map(map, max_chars),
        _ => {}
    }
}

/// [`clean_json`] for a map.
pub fn clean_map(map: &mut serde_json::Map<String, serde_json::Value>, max_chars: usize) {
    if map.keys().any(|k| needs_cleaning(k, max_chars)) {
        let old = std::mem::take(map);
        for (k, v) in old {
            map.insert(clean(&k, max_chars), v);
        }
    }
    map.values_mut().for_each(|v| clean_json(v, max_chars));
}

/// Whether [`clean`] would change `s` (cheap check first: most text is clean).
pub fn needs_cleaning(s: &str, max_chars: usize) -> bool {
    s.chars().any(|c| c.is_control() || is_bidi_control(c))
        || s.len() > max_chars && s.chars().count() > max_chars
        || s.trim().len() != s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_controls_go_whole() {
        assert_eq!(clean("a\u{1b}[2Jb\u{1b}[1;31mc\u{1b}[0m", 100), "abc");
        assert_eq!(clean("t\u{1b}]0;pwned\u{7}x", 100), "tx");
        assert_eq!(clean("t\u{1b}]8;;http://e\u{1b}\\link\u{1b}]8;;\u{1b}\\", 100), "tlink");
        assert_eq!(clean("nul\0here\u{7f}\u{8}", 100), "nulhere");
        assert_eq!(clean("two\nlines\r\n\tand", 100), "two lines   and");
        assert_eq!(clean("\u{9b}31mred", 100), "red");
        assert_eq!(clean("evil\u{202e}txt.exe", 100), "eviltxt.exe");
        assert_eq!(clean("ends with esc\u{1b}", 100), "ends with esc");
        assert_eq!(clean_lines("a\nb\u{1b}[2J\n"), "a\nb\n");
        assert_eq!(clean("  ünïcödé ok  ", 100), "ünïcödé ok");
    }

    #[test]
    fn cut_counts_characters_and_marks_the_cut() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abcd", 4), "abcd");
        assert_eq!(cut("ééééé", 3), "éé…");
        assert_eq!(cut("abc", 0), "");
        let long = "x".repeat(1 << 20);
        assert_eq!(clean(&long, PEER_TEXT_CHARS).chars().count(), PEER_TEXT_CHARS);
    }

    #[test]
    fn credentials_are_redacted() {
        let r = untrusted(
            r#"{"error":"denied","request":{"headers":{"Authorization":"Basic aGVjYXRlOmh1bnRlcjI="}}}"#,
            300,
            &[],
        );
        assert!(!r.contains("aGVjYXRlOmh1bnRlcjI="), "{r}");
        assert!(r.contains("Basic ***"), "{r}");
        let r = untrusted("echo: Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.abc\nnext", 300, &[]);
        assert!(!r.contains("eyJ") && r.contains("Bearer ***"), "{r}");
        let r = untrusted("token bearer abcdefgh1234 seen; password hunter2 leaked", 300, &["hunter2"]);
        assert_eq!(r, "token bearer *** seen; password *** leaked");
        let r = untrusted("git clone https://hecate:s3cr3t-pat@gitea.local/x.git failed", 300, &[]);
        assert_eq!(r, "git clone https://***@gitea.local/x.git failed");
        // Short secrets and ordinary words stay.
        assert_eq!(untrusted("basic auth failed for pw", 300, &["pw"]), "basic auth failed for pw");
        // A secret split by a control character is still found.
        assert_eq!(untrusted("pass hun\u{1b}[0mter2", 300, &["hunter2"]), "pass ***");
        // A cut never leaves the start of a secret: redaction comes first.
        let r = untrusted(&format!("{}hunter2", "a".repeat(10)), 12, &["hunter2"]);
        assert!(!r.contains("hun"), "{r}");
    }

    #[test]
    fn json_strings_and_keys_are_cleaned() {
        let mut v = serde_json::json!({"a\u{1b}[2J": ["x\0y", {"k": "v\nw"}], "n": 1});
        clean_json(&mut v, 100);
        assert_eq!(v, serde_json::json!({"a": ["xy", {"k": "v w"}], "n": 1}));
    }
}
