//! `ntfy` against a local test receiver: ntfy's JSON publishing body, priority by event kind
//! (with overrides), the access token from a file, and the topic kept out of Debug.

#![allow(clippy::unwrap_used)]

mod notify_support;

use hecate_core::ErrorKind;
use hecate_core::notify::EventKind;
use notify_support::{HttpReceiver, build, event, parse};

#[tokio::test]
async fn publishes_json_with_priority_by_event_kind() {
    let mut rx = HttpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tk_abc123\n").unwrap();
    let n = build(&format!(
        "type: ntfy\nserver: {}\ntopic: hecate-alerts_7\ntoken_file: {}\npriorities: {{ power_restored: urgent }}\n",
        rx.url(""),
        token.display()
    ));
    let expect = [
        (EventKind::ShutdownTriggered, 4),
        (EventKind::StepFailed, 4),
        (EventKind::ForwarderFallback, 4),
        (EventKind::StageFinished, 2),
        (EventKind::ShutdownDone, 3),
        (EventKind::OnBattery, 3),
        (EventKind::PowerRestored, 5), // the override
    ];
    for (kind, priority) in expect {
        let ev = event(kind);
        n.notify(&ev).await.unwrap();
        let req = rx.next().await;
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/", "ntfy's JSON API is the server root");
        assert_eq!(req.header("authorization"), Some("Bearer tk_abc123"));
        let body = req.json();
        assert_eq!(body["topic"], "hecate-alerts_7");
        assert_eq!(body["priority"], priority, "{kind}");
        assert_eq!(body["message"], ev.message.as_str());
        assert_eq!(body["title"], format!("titan-db: {}", kind.as_str().replace('_', " ")));
        assert!(body["tags"].as_array().unwrap().iter().any(|t| t == kind.as_str()), "{body}");
    }
}

#[tokio::test]
async fn anonymous_without_a_token_and_errors_classified() {
    let mut rx = HttpReceiver::start().await;
    let n = build(&format!("type: ntfy\nserver: {}\ntopic: t\n", rx.url("")));
    n.notify(&event(EventKind::OnBattery)).await.unwrap();
    assert_eq!(rx.next().await.header("authorization"), None);
    rx.answer_next(&[403]);
    assert_eq!(n.notify(&event(EventKind::OnBattery)).await.unwrap_err().kind, ErrorKind::Auth);
    rx.answer_next(&[429]);
    assert_eq!(n.notify(&event(EventKind::OnBattery)).await.unwrap_err().kind, ErrorKind::Protocol);
}

#[test]
fn config_defaults_validation_and_debug() {
    let cfg = parse("type: ntfy\ntopic: hard-to-guess-topic\n");
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["server"], "https://ntfy.sh");
    assert_eq!(json["name"], "ntfy");
    assert!(!format!("{cfg:?}").contains("hard-to-guess-topic"), "{cfg:?}");

    let cfg = parse("type: ntfy\nserver: not a url\ntopic: 'a/b'\nretry_for: 1s\n");
    let problems = cfg.validate();
    assert_eq!(problems.len(), 3, "{problems:?}");
    let err = serde_saphyr::from_str::<Box<dyn hecate_core::notify::NotifierConfig>>(
        "type: ntfy\ntopic: t\npriorities: { shutdown_triggered: loud }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("loud"), "{err}");
}

/// The preflight asks `GET /v1/health` with the token. The receiver answers as ntfy does
/// (a stand-in: no ntfy server is packaged for Debian or PyPI): ntfy authenticates every request
/// before it routes it (`maybeAuthenticate` in its `server/server.go`), so a token it does not
/// know gets 401 `{"code":40101,...}` on the health path too, and a known one `{"healthy":true}`.
#[tokio::test]
async fn preflight_asks_the_health_path_with_the_token_and_names_a_refused_one() {
    use hecate_core::preflight::CheckStatus;
    let mut rx = HttpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tk_abc123\n").unwrap();
    let n = build(&format!("type: ntfy\nserver: {}\ntopic: t\ntoken_file: {}\n", rx.url("/"), token.display()));

    rx.answer_next_with(200, "{\"healthy\":true}\n");
    let checks = n.preflight().await;
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!((checks[0].name.as_str(), checks[0].status), ("server", CheckStatus::Ok), "{checks:?}");
    assert!(checks[0].message.contains("accepts the token"), "{checks:?}");
    let req = rx.next().await;
    assert_eq!((req.method.as_str(), req.path.as_str()), ("GET", "/v1/health"));
    assert_eq!(req.header("authorization"), Some("Bearer tk_abc123"));

    rx.answer_next_with(401, "{\"code\":40101,\"http\":401,\"error\":\"unauthorized\"}\n");
    let checks = n.preflight().await;
    assert_eq!(checks[0].status, CheckStatus::Failed, "{checks:?}");
    assert!(checks[0].message.starts_with("auth:"), "{checks:?}");
    assert!(!checks[0].message.contains("tk_abc123"), "the token is shown: {checks:?}");

    // something else at that address: not ntfy
    rx.answer_next_with(200, "<html>hello</html>");
    let checks = n.preflight().await;
    assert_eq!(checks[0].status, CheckStatus::Failed, "{checks:?}");
    assert!(checks[0].message.contains("does not say it is healthy"), "{checks:?}");
    assert!(rx.received().iter().all(|r| r.method != "POST"), "the preflight published");
}
