//! `webhook` against a local test receiver: the event as JSON, headers from the config and from
//! files, secrets kept out of Debug, errors with their kinds, and retries through the core's
//! delivery.

#![allow(clippy::unwrap_used)]

mod notify_support;

use std::time::Duration;

use hecate_core::ErrorKind;
use hecate_core::delivery::{Delivery, DeliveryOptions};
use hecate_core::notify::{Event, EventKind};
use notify_support::{HttpReceiver, build, event, parse};

fn token_file(dir: &tempfile::TempDir, content: &str) -> String {
    let path = dir.path().join("token");
    std::fs::write(&path, content).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn posts_the_event_as_json_with_the_configured_headers() {
    let mut rx = HttpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(&dir, "s3cret-token\n");
    let n = build(&format!(
        "type: webhook\nname: ops\nurl: {}\nheaders:\n  X-Plain: hello\n  X-Token: {{ value_file: {token} }}\n",
        rx.url("/hooks/T0/B0/path-secret")
    ));
    assert_eq!(n.name(), "ops");
    let ev = event(EventKind::ShutdownTriggered);
    n.notify(&ev).await.unwrap();
    let req = rx.next().await;
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/hooks/T0/B0/path-secret");
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(req.header("x-plain"), Some("hello"));
    assert_eq!(req.header("x-token"), Some("s3cret-token"), "trailing line break dropped");
    // The body is the event's one serialisation, and it reads back as the same event.
    assert_eq!(String::from_utf8(req.body.clone()).unwrap(), ev.to_json());
    let back: Event = serde_json::from_slice(&req.body).unwrap();
    assert_eq!(back, ev);
    assert_eq!(req.json()["kind"], "shutdown_triggered");
    assert_eq!(req.json()["details"]["estimate_s"], 120.0);
}

#[tokio::test]
async fn debug_output_shows_no_header_value_and_no_url_path() {
    let rx = HttpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(&dir, "s3cret-token");
    let yaml = format!(
        "type: webhook\nurl: {}\nheaders:\n  X-Inline: inline-secret\n  X-Token: {{ value_file: {token} }}\n",
        rx.url("/path-secret?key=query-secret")
    );
    let cfg = parse(&yaml);
    let built = cfg.build(&notify_support::ctx()).unwrap();
    for text in [format!("{cfg:?}"), format!("{built:?}")] {
        for secret in ["inline-secret", "s3cret-token", "path-secret", "query-secret"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert!(text.contains("X-Inline") || text.contains("x-inline"), "{text}");
    }
}

#[tokio::test]
async fn failures_carry_a_kind_and_no_url() {
    let rx = HttpReceiver::start().await;
    let n = build(&format!("type: webhook\nurl: {}\n", rx.url("/path-secret")));
    let ev = event(EventKind::OnBattery);

    rx.answer_next(&[500]);
    let e = n.notify(&ev).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Protocol, "{e}");
    assert!(e.message.contains("500"), "{e}");

    rx.answer_next(&[401]);
    assert_eq!(n.notify(&ev).await.unwrap_err().kind, ErrorKind::Auth);

    // A port nobody listens on: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let n = build(&format!("type: webhook\nurl: http://{closed}/path-secret\ntimeout: 2s\n"));
    let e = n.notify(&ev).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(!hecate_core::error::error_chain(&e).contains("path-secret"), "{}", hecate_core::error::error_chain(&e));
}

#[tokio::test]
async fn a_missing_value_file_fails_the_send_not_the_start() {
    let rx = HttpReceiver::start().await;
    let n = build(&format!(
        "type: webhook\nurl: {}\nheaders: {{ X-Token: {{ value_file: /nonexistent/hecate-token }} }}\n",
        rx.url("/")
    ));
    let e = n.notify(&event(EventKind::OnBattery)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config, "{e}");
    assert!(e.message.contains("/nonexistent/hecate-token"), "{e}");
}

#[tokio::test]
async fn delivery_retries_until_the_receiver_takes_it() {
    let mut rx = HttpReceiver::start().await;
    rx.answer_next(&[503, 502]);
    let n = build(&format!("type: webhook\nurl: {}\n", rx.url("/hook")));
    let opts = DeliveryOptions { first_backoff: Duration::from_millis(20), ..DeliveryOptions::default() };
    let delivery = Delivery::new(vec![n], opts);
    assert!(delivery.enqueue(&event(EventKind::StepFailed)).is_empty());
    assert_eq!(delivery.flush(notify_support::WAIT).await, 0, "not delivered in time");
    let got = rx.received();
    assert_eq!(got.len(), 3, "two refusals, then taken");
    assert!(got.iter().all(|r| r.json()["kind"] == "step_failed"));
}

#[test]
fn validate_reports_every_problem() {
    let cfg = parse(
        "type: webhook\nurl: ftp://example.invalid/x\nheaders:\n  'bad name': x\n  X-Ok: \"line\\nbreak\"\ntimeout: 0s\n",
    );
    let problems = cfg.validate();
    let all = problems.join("\n");
    assert_eq!(problems.len(), 4, "{all}");
    for needle in ["http or https", "bad name", "X-Ok", "`timeout`"] {
        assert!(all.contains(needle), "no {needle} in {all}");
    }
    let err = serde_saphyr::from_str::<Box<dyn hecate_core::notify::NotifierConfig>>(
        "type: webhook\nurl: http://127.0.0.1:1/\nsecret: x\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("secret"), "{err}");
}

#[test]
fn defaults() {
    let cfg = parse("type: webhook\nurl: https://hooks.example.invalid/x\n");
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["name"], "webhook");
    assert_eq!(json["timeout"], "10s");
    assert_eq!(json["retry_for"], "2m");
}

/// The preflight sends `HEAD` with the configured headers and passes on any answer (many webhook
/// endpoints answer only `POST`); an unreachable receiver fails it. Nothing is posted.
#[tokio::test]
async fn preflight_sends_head_with_the_headers_and_fails_when_unreachable() {
    use hecate_core::preflight::CheckStatus;
    let mut rx = HttpReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(&dir, "s3cret-token\n");
    let yaml =
        |url: String| format!("type: webhook\nname: ops\nurl: {url}\nheaders:\n  X-Token: {{ value_file: {token} }}\n");
    let n = build(&yaml(rx.url("/hooks/x")));
    rx.answer_next(&[405]);
    let checks = n.preflight().await;
    assert_eq!((checks[0].name.as_str(), checks[0].status), ("reachable", CheckStatus::Ok), "{checks:?}");
    assert!(checks[0].message.contains("405"), "{checks:?}");
    let req = rx.next().await;
    assert_eq!((req.method.as_str(), req.path.as_str()), ("HEAD", "/hooks/x"));
    assert_eq!(req.header("x-token"), Some("s3cret-token"));

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let n = build(&yaml(format!("http://{closed}/hooks/x")));
    let checks = n.preflight().await;
    assert_eq!(checks[0].status, CheckStatus::Failed, "{checks:?}");
    assert!(checks[0].message.starts_with("unreachable:"), "{checks:?}");
    assert!(!checks[0].message.contains("s3cret"), "{checks:?}");
    assert!(rx.received().is_empty());
}
