//! The NUT line parser and quoting: examples from upsd's answers, and properties over arbitrary
//! input (never a panic; quoting round-trips).

use hecate_backends::power::nut::protocol::{ErrAnswer, LineError, encode_arg, quote, request_line, split_words};
use hecate_core::ErrorKind;
use proptest::prelude::*;

fn words(line: &str) -> Vec<String> {
    split_words(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn splits_upsd_answers() {
    assert_eq!(words(r#"VAR atlasups ups.status "OB DISCHRG""#), ["VAR", "atlasups", "ups.status", "OB DISCHRG"]);
    assert_eq!(
        words(r#"VAR atlasups device.model "A \"quoted\" \\ name""#),
        ["VAR", "atlasups", "device.model", r#"A "quoted" \ name"#]
    );
    assert_eq!(words("BEGIN LIST VAR atlasups"), ["BEGIN", "LIST", "VAR", "atlasups"]);
    assert_eq!(words("ERR DATA-STALE"), ["ERR", "DATA-STALE"]);
    assert_eq!(words(r#"VAR a b """#), ["VAR", "a", "b", ""]);
    assert_eq!(words("  a \t b  "), ["a", "b"]);
    assert_eq!(words(r#"a"b c"d"#), ["ab cd"]);
    assert_eq!(words(r"a\ b"), ["a b"]);
    assert!(words("").is_empty());
}

#[test]
fn refuses_broken_lines() {
    assert_eq!(split_words(r#"VAR a b "unterminated"#), Err(LineError::UnterminatedQuote));
    assert_eq!(split_words(r"a b\"), Err(LineError::TrailingBackslash));
    assert_eq!(split_words(r#""abc\"#), Err(LineError::TrailingBackslash));
}

#[test]
fn requests_are_bare_when_they_can_be() {
    assert_eq!(
        request_line(&["INSTCMD", "atlasups", "load.off.delay", "120"]).unwrap(),
        "INSTCMD atlasups load.off.delay 120\n"
    );
    assert_eq!(request_line(&["PASSWORD", r#"pa ss"w\d"#]).unwrap(), "PASSWORD \"pa ss\\\"w\\\\d\"\n");
    assert_eq!(encode_arg(""), r#""""#);
    assert_eq!(request_line(&["USERNAME", "a\nb"]), Err(LineError::Unsendable));
    assert_eq!(request_line(&["PASSWORD", "a\rb"]), Err(LineError::Unsendable));
}

#[test]
fn err_codes_map_to_kinds() {
    let kind = |line: &str| ErrAnswer::from_words(&words(line)).unwrap().kind();
    assert_eq!(kind("ERR DATA-STALE"), ErrorKind::NoData);
    assert_eq!(kind("ERR DRIVER-NOT-CONNECTED"), ErrorKind::NoData);
    assert_eq!(kind("ERR ACCESS-DENIED"), ErrorKind::Auth);
    assert_eq!(kind("ERR USERNAME-REQUIRED"), ErrorKind::Auth);
    assert_eq!(kind("ERR INVALID-PASSWORD"), ErrorKind::Auth);
    assert_eq!(kind("ERR UNKNOWN-UPS"), ErrorKind::Config);
    assert_eq!(kind("ERR CMD-NOT-SUPPORTED"), ErrorKind::Unsupported);
    assert_eq!(kind("ERR INSTCMD-NOT-SUPPORTED"), ErrorKind::Unsupported);
    assert_eq!(kind("ERR INSTCMD-FAILED"), ErrorKind::Failed);
    assert_eq!(kind("ERR SOMETHING-NEW extra words"), ErrorKind::Protocol);
    let err = ErrAnswer::from_words(&words("ERR SOMETHING-NEW extra words")).unwrap();
    assert_eq!(err.detail.as_deref(), Some("extra words"));
    assert!(ErrAnswer::from_words(&words("OK")).is_none());
    assert!(ErrAnswer::from_words(&[]).is_none());
}

proptest! {
    #[test]
    fn any_text_never_panics(line in any::<String>()) {
        let _ = split_words(&line);
    }

    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        // As the client reads them: lossy UTF-8, one line at a time.
        let text = String::from_utf8_lossy(&bytes);
        for line in text.split('\n') {
            if let Ok(w) = split_words(line) {
                let _ = ErrAnswer::from_words(&w).map(|e| (e.kind(), e.meaning()));
            }
        }
    }

    #[test]
    fn quoted_lines_of_nut_tokens_never_panic(
        line in r#"(VAR|ERR|BEGIN|END|OK|"|\\| |\t|[a-z.]{1,8}){0,24}"#
    ) {
        let _ = split_words(&line);
    }

    #[test]
    fn quote_round_trips(s in any::<String>()) {
        prop_assert_eq!(split_words(&quote(&s)), Ok(vec![s]));
    }

    #[test]
    fn request_words_round_trip(ws in proptest::collection::vec("[^\r\n\u{0}]*", 0..8)) {
        let refs: Vec<&str> = ws.iter().map(String::as_str).collect();
        let line = request_line(&refs).unwrap();
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1);
        prop_assert_eq!(split_words(line.trim_end_matches('\n')), Ok(ws));
    }
}
