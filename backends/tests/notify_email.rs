//! `email` against a real SMTP server on loopback (aiosmtpd, Debian's `python3-aiosmtpd`): login
//! with the password from its file, sender, recipients, subject and body; a refused login is an
//! auth error; STARTTLS required means no mail goes out in the clear to a server that cannot do it.

#![allow(clippy::unwrap_used)]

mod notify_support;

use hecate_core::ErrorKind;
use hecate_core::notify::EventKind;
use hecate_test_support::Smtpd;
use notify_support::{build, event, parse};

fn config(sink: &Smtpd, password_file: &str, extra: &str) -> String {
    format!(
        "type: email
server: 127.0.0.1
port: {}
tls: none
username: hecate
password_file: {password_file}
from: 'Hecate <hecate@example.org>'
to: [ops@example.org, 'On Call <oncall@example.org>']
timeout: 5s
{extra}",
        sink.addr().port()
    )
}

#[tokio::test]
async fn mails_the_event_after_logging_in() {
    let mut sink = Smtpd::start(Some("pa ss"));
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("smtp.pass");
    std::fs::write(&pw, "pa ss\n").unwrap();
    let n = build(&config(&sink, pw.to_str().unwrap(), ""));
    let ev = event(EventKind::ShutdownTriggered);
    n.notify(&ev).await.unwrap();
    let mail = sink.wait_mail();
    assert_eq!(mail.login, Some(("hecate".into(), "pa ss".into())));
    assert_eq!(mail.ehlo, "titan-db", "EHLO names this host");
    assert_eq!(mail.from, "hecate@example.org");
    assert_eq!(mail.to, vec!["ops@example.org", "oncall@example.org"]);
    let data = mail.data;
    assert!(data.contains("Subject: [hecate] titan-db: shutdown triggered: shutdown started"), "{data}");
    assert!(data.contains("From: Hecate <hecate@example.org>"), "{data}");
    assert!(data.contains("Content-Type: text/plain"), "{data}");
    assert!(data.contains("\"estimate_s\": 120.0"), "details in the body: {data}");
    assert!(data.contains("\"kind\":\"shutdown_triggered\""), "the event's JSON in the body: {data}");
}

#[tokio::test]
async fn a_refused_login_is_an_auth_error() {
    let mut sink = Smtpd::start(Some("right"));
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("smtp.pass");
    std::fs::write(&pw, "wrong").unwrap();
    let n = build(&config(&sink, pw.to_str().unwrap(), ""));
    let e = n.notify(&event(EventKind::OnBattery)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{}", hecate_core::error::error_chain(&e));
    assert!(sink.new_mail().is_none());
}

#[tokio::test]
async fn starttls_required_sends_nothing_to_a_server_without_it() {
    let mut sink = Smtpd::start(None);
    let n = build(&format!(
        "type: email\nserver: 127.0.0.1\nport: {}\ntls: starttls\nfrom: a@example.org\nto: [b@example.org]\ntimeout: 5s\n",
        sink.addr().port()
    ));
    let e = n.notify(&event(EventKind::OnBattery)).await.unwrap_err();
    assert_ne!(e.kind, ErrorKind::Config, "{e}");
    assert!(sink.new_mail().is_none(), "a mail went out unencrypted");
}

#[tokio::test]
async fn a_missing_password_file_is_a_config_error() {
    let sink = Smtpd::start(None);
    let n = build(&config(&sink, "/nonexistent/smtp.pass", ""));
    assert_eq!(n.notify(&event(EventKind::OnBattery)).await.unwrap_err().kind, ErrorKind::Config);
}

#[test]
fn validation_and_debug() {
    let cfg = parse(
        "type: email\nserver: smtp.example.org\ntls: none\nusername: u\npassword_file: /p\nfrom: 'not an address'\nto: []\n",
    );
    let problems = cfg.validate();
    let all = problems.join("\n");
    assert_eq!(problems.len(), 3, "{all}");
    for needle in ["unencrypted", "`from`", "`to`"] {
        assert!(all.contains(needle), "no {needle} in {all}");
    }
    let cfg = parse("type: email\nserver: smtp.example.org\nusername: u\nfrom: a@example.org\nto: [b@example.org]\n");
    assert_eq!(cfg.validate(), vec!["`username` needs `password_file`".to_string()]);
    let cfg = parse("type: email\nserver: smtp.example.org\nfrom: a@example.org\nto: [b@example.org]\n");
    assert!(cfg.validate().is_empty());
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["tls"], "starttls");
    assert_eq!(json["subject_prefix"], "[hecate]");
}

/// The preflight connects, logs in and quits without a mail; a refused password fails it as an
/// auth error (the password never shown), and so does a server that is gone.
#[tokio::test]
async fn preflight_logs_in_without_sending_and_names_a_refused_login() {
    use hecate_core::preflight::CheckStatus;
    let mut sink = Smtpd::start(Some("right"));
    let dir = tempfile::tempdir().unwrap();
    let (right, wrong) = (dir.path().join("right.pass"), dir.path().join("wrong.pass"));
    std::fs::write(&right, "right\n").unwrap();
    std::fs::write(&wrong, "wr0ng-pass\n").unwrap();

    let checks = build(&config(&sink, right.to_str().unwrap(), "")).preflight().await;
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!((checks[0].name.as_str(), checks[0].status), ("smtp", CheckStatus::Ok), "{checks:?}");
    assert!(checks[0].message.contains("accepts the login of hecate"), "{checks:?}");

    let checks = build(&config(&sink, wrong.to_str().unwrap(), "")).preflight().await;
    assert_eq!(checks[0].status, CheckStatus::Failed, "{checks:?}");
    assert!(checks[0].message.starts_with("auth:"), "{checks:?}");
    assert!(!checks[0].message.contains("wr0ng-pass"), "the password is shown: {checks:?}");
    assert!(sink.new_mail().is_none(), "the preflight sent a mail");

    let n = build(&config(&sink, right.to_str().unwrap(), ""));
    drop(sink);
    let checks = n.preflight().await;
    assert_eq!(checks[0].status, CheckStatus::Failed, "{checks:?}");
}
