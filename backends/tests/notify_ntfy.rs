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
