//! `command` with a test script: the event as JSON on stdin, the environment variables, no shell
//! between the config and the program, failures with their output, and a time limit that kills.

#![allow(clippy::unwrap_used)]

mod notify_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hecate_core::ErrorKind;
use hecate_core::notify::{Event, EventKind};
use notify_support::{build, event, parse};

/// A script run as `/bin/sh FILE`: exec'ing a file just written can fail with "text file busy"
/// while another test thread forks.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn yaml(argv: &[&str], extra: &str) -> String {
    let argv: Vec<String> = argv.iter().map(|a| serde_json::to_string(a).unwrap()).collect();
    format!("type: command\nargv: [{}]\n{extra}", argv.join(", "))
}

#[tokio::test]
async fn runs_the_program_with_the_event_on_stdin_and_in_env() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(
        dir.path(),
        "record",
        r#"out="$1"
cat > "$out/stdin.json"
printf '%s\n%s\n%s\n' "$HECATE_EVENT_KIND" "$HECATE_HOST" "$HECATE_MESSAGE" > "$out/env.txt"
printf '%s' "$2" > "$out/arg.txt"
"#,
    );
    let d = dir.path().display().to_string();
    // Shell syntax in an argument and in the message stays text: there is no shell to run it.
    let injected = format!("$(touch {d}/pwned); `touch {d}/pwned2`");
    let n = build(&yaml(&["/bin/sh", prog.to_str().unwrap(), &d, &injected], ""));
    let ev = Event::now(EventKind::StepFailed, "titan-db", format!("stop k3s failed; $(touch {d}/pwned3)"));
    n.notify(&ev).await.unwrap();

    let stdin = std::fs::read_to_string(dir.path().join("stdin.json")).unwrap();
    assert_eq!(stdin.trim_end(), ev.to_json());
    let back: Event = serde_json::from_str(&stdin).unwrap();
    assert_eq!(back, ev);
    let env = std::fs::read_to_string(dir.path().join("env.txt")).unwrap();
    assert_eq!(env, format!("step_failed\ntitan-db\n{}\n", ev.message));
    assert_eq!(std::fs::read_to_string(dir.path().join("arg.txt")).unwrap(), injected);
    for f in ["pwned", "pwned2", "pwned3"] {
        assert!(!dir.path().join(f).exists(), "{f}: something ran a shell");
    }
}

#[tokio::test]
async fn a_non_zero_exit_is_a_failure_with_what_the_program_said() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(dir.path(), "fail", "cat >/dev/null\necho 'relay refused the page' >&2\nexit 3\n");
    let n = build(&yaml(&["/bin/sh", prog.to_str().unwrap()], ""));
    let e = n.notify(&event(EventKind::OnBattery)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Failed);
    assert!(e.message.contains("relay refused the page") && e.message.contains('3'), "{e}");
}

#[tokio::test]
async fn a_program_that_ignores_stdin_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let prog = script(dir.path(), "ignore", "exit 0\n");
    let n = build(&yaml(&["/bin/sh", prog.to_str().unwrap()], ""));
    n.notify(&event(EventKind::OnBattery)).await.unwrap();
}

#[tokio::test]
async fn a_program_past_its_time_limit_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let prog = script(dir.path(), "hang", "echo $$ > \"$1\"\nexec sleep 600\n");
    let n = build(&yaml(&["/bin/sh", prog.to_str().unwrap(), pid_file.to_str().unwrap()], "timeout: 500ms\n"));
    let t0 = Instant::now();
    let e = n.notify(&event(EventKind::OnBattery)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    // SIGKILL was sent when the run was dropped; the process is gone (or a zombie) shortly after.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()).unwrap_or("gone");
        if state == "gone" || state == "Z" {
            break;
        }
        assert!(Instant::now() < deadline, "pid {pid} still running: state {state}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_missing_program_is_a_config_error() {
    let n = build(&yaml(&["/nonexistent/hecate-notify"], ""));
    assert_eq!(n.notify(&event(EventKind::OnBattery)).await.unwrap_err().kind, ErrorKind::Config);
}

#[test]
fn validation() {
    let cfg = parse("type: command\nargv: []\ntimeout: 0s\n");
    assert_eq!(cfg.validate().len(), 2, "{:?}", cfg.validate());
    assert!(cfg.build(&notify_support::ctx()).is_err());
    // A shell string is not accepted where the argv list belongs.
    assert!(
        serde_saphyr::from_str::<Box<dyn hecate_core::notify::NotifierConfig>>("type: command\nargv: 'echo hi'\n")
            .is_err()
    );
    let cfg = parse("type: command\nargv: [/bin/true]\n");
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!((json["name"].as_str(), json["timeout"].as_str()), (Some("command"), Some("10s")));
}

/// The preflight finds the program as the spawn would (a path as it is, a bare name on the
/// PATH) and fails a missing or non-executable one; it never runs it.
#[tokio::test]
async fn preflight_finds_the_program_without_running_it() {
    use hecate_core::preflight::CheckStatus;
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let prog = script(dir.path(), "page", &format!("#!/bin/sh\ntouch {}\n", marker.display()));
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let status = |argv: &[&str], extra: &str| {
        let n = build(&yaml(argv, extra));
        async move { n.preflight().await }
    };
    let checks = status(&[prog.to_str().unwrap(), "--team", "ops"], "").await;
    assert_eq!((checks[0].name.as_str(), checks[0].status), ("program", CheckStatus::Ok), "{checks:?}");
    // relative to the working directory, as the child starts it
    let checks = status(&["./page"], &format!("working_dir: {}\n", dir.path().display())).await;
    assert_eq!(checks[0].status, CheckStatus::Ok, "{checks:?}");
    let checks = status(&["sh", "-c", "true"], "").await;
    assert_eq!(checks[0].status, CheckStatus::Ok, "{checks:?}");
    assert!(!marker.exists(), "the preflight ran the program");

    let checks = status(&["/nonexistent/page"], "").await;
    assert_eq!(checks[0].status, CheckStatus::Failed, "{checks:?}");
    assert!(checks[0].message.contains("/nonexistent/page"), "{checks:?}");
    let checks = status(&["hecate-no-such-program"], "").await;
    assert_eq!(checks[0].status, CheckStatus::Failed, "{checks:?}");
    assert!(checks[0].message.contains("not an executable file on the PATH"), "{checks:?}");
    let plain = script(dir.path(), "plain", "#!/bin/sh\n");
    let checks = status(&[plain.to_str().unwrap()], "").await;
    assert_eq!(checks[0].status, CheckStatus::Failed, "{checks:?}");
    assert!(checks[0].message.contains("is not an executable file"), "{checks:?}");
}
