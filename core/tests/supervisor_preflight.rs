//! The supervisor's preflight rows (see the transition table in `hecate_core::supervisor`): when a
//! preflight runs, that it never runs outside `watching`, that one running is stopped when the
//! daemon stops watching, and that each change of a check is one event.

use hecate_core::engine::Outcome;
use hecate_core::notify::EventKind;
use hecate_core::power::{PowerReading, Sample, UpsStatus};
use hecate_core::preflight::{CheckResult, CheckStatus, Report};
use hecate_core::supervisor::{
    Effect, Input, PREFLIGHT_FIRST_DELAY_S, PhaseKind, PreflightOutcome, RunEnd, Supervisor, SupervisorConfig,
};

fn reading(status: &str) -> Sample {
    Sample::Reading(PowerReading {
        status: UpsStatus::parse(status),
        charge_pct: Some(if status.contains("FSD") { 40.0 } else { 100.0 }),
        runtime_s: Some(3000.0),
        load_pct: Some(40.0),
        ..PowerReading::default()
    })
}

fn poll(status: &str) -> Input {
    Input::Poll { samples: vec![reading(status)], budget_s: 240.0 }
}

fn supervisor(interval_s: f64) -> Supervisor {
    let mut s = Supervisor::new(SupervisorConfig::default(), ["ups".to_string()]).with_preflight(interval_s);
    s.step(0.0, Input::Start { interrupted: None, startup_interrupted: false });
    s
}

fn runs_preflight(fx: &[Effect]) -> bool {
    fx.contains(&Effect::RunPreflight)
}

fn report(at: &str, sudo: CheckStatus) -> Report {
    let result = |check: &str, status| CheckResult {
        target: "node/n1".into(),
        check: check.into(),
        status,
        message: format!("{check}: {status}"),
    };
    Report {
        checked_at: at.into(),
        duration_s: 0.5,
        results: vec![result("ssh_systemd:host_key", CheckStatus::Ok), result("ssh_systemd:sudo", sudo)],
    }
}

fn events(fx: &[Effect]) -> Vec<(EventKind, String)> {
    fx.iter()
        .filter_map(|e| match e {
            Effect::Notify { kind, message, .. } => Some((*kind, message.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn the_first_preflight_comes_a_minute_after_start_then_every_interval_after_the_last_ended() {
    let mut s = supervisor(600.0);
    assert!(!runs_preflight(&s.step(2.0, poll("OL"))));
    assert!(!runs_preflight(&s.step(PREFLIGHT_FIRST_DELAY_S - 1.0, poll("OL"))));
    assert!(runs_preflight(&s.step(PREFLIGHT_FIRST_DELAY_S, poll("OL"))));
    assert!(s.preflight_running());
    // one at a time: polls while it runs start none
    assert!(!runs_preflight(&s.step(PREFLIGHT_FIRST_DELAY_S + 700.0, poll("OL"))));
    let done = s.step(
        PREFLIGHT_FIRST_DELAY_S + 710.0,
        Input::PreflightDone(PreflightOutcome::Ran(report("t1", CheckStatus::Ok))),
    );
    assert!(!runs_preflight(&done), "the next one is an interval after this one ended");
    assert!(!runs_preflight(&s.step(PREFLIGHT_FIRST_DELAY_S + 710.0 + 599.0, poll("OL"))));
    assert!(runs_preflight(&s.step(PREFLIGHT_FIRST_DELAY_S + 710.0 + 600.0, poll("OL"))));

    // a short interval comes first, off (the default) never
    let mut s = supervisor(10.0);
    assert!(runs_preflight(&s.step(10.0, poll("OL"))));
    let mut off = Supervisor::new(SupervisorConfig::default(), ["ups".to_string()]);
    off.step(0.0, Input::Start { interrupted: None, startup_interrupted: false });
    for t in 1..100 {
        assert!(!runs_preflight(&off.step(f64::from(t) * 60.0, poll("OL"))));
    }
}

#[test]
fn each_change_is_one_event_and_a_repeat_is_none() {
    let mut s = supervisor(10.0);
    let mut t = 10.0;
    let mut cycle = |s: &mut Supervisor, sudo: CheckStatus| {
        assert!(runs_preflight(&s.step(t, poll("OL"))), "due at {t}");
        t += 1.0;
        let fx = s.step(t, Input::PreflightDone(PreflightOutcome::Ran(report(&format!("t{t}"), sudo))));
        t += 10.0;
        events(&fx)
    };
    assert!(cycle(&mut s, CheckStatus::Ok).is_empty(), "a first pass is no news");
    let failed = cycle(&mut s, CheckStatus::Failed);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, EventKind::PreflightFailed);
    assert!(failed[0].1.contains("node/n1 ssh_systemd:sudo fails"), "{failed:?}");
    assert!(cycle(&mut s, CheckStatus::Failed).is_empty(), "still failing: no second event");
    assert!(cycle(&mut s, CheckStatus::Skipped).is_empty(), "not checked: no news either way");
    assert_eq!(s.preflight().failing().count(), 1, "a skipped check keeps its last state");
    let recovered = cycle(&mut s, CheckStatus::Ok);
    assert_eq!(recovered.iter().map(|e| e.0).collect::<Vec<_>>(), [EventKind::PreflightRecovered]);
    assert!(cycle(&mut s, CheckStatus::Ok).is_empty());
    assert_eq!(s.preflight().failing().count(), 0);
}

#[test]
fn never_outside_watching_and_a_running_one_is_stopped_when_a_shutdown_starts() {
    let mut s = supervisor(10.0);
    assert!(runs_preflight(&s.step(10.0, poll("OL"))));
    // FSD: a shutdown starts, and the preflight running is stopped in the same step
    let fx = s.step(12.0, poll("OB FSD"));
    assert_eq!(s.phase().kind(), PhaseKind::ShuttingDown);
    assert!(fx.contains(&Effect::AbortPreflight), "{fx:?}");
    assert!(!s.preflight_running());
    let run = fx
        .iter()
        .find_map(|e| match e {
            Effect::StartRun { run, .. } => Some(*run),
            _ => None,
        })
        .expect("a shutdown");
    // its late answer changes nothing
    let late = s.step(13.0, Input::PreflightDone(PreflightOutcome::Ran(report("late", CheckStatus::Failed))));
    assert!(events(&late).is_empty(), "{late:?}");
    assert_eq!(s.preflight().states().count(), 0);
    // no preflight while shutting down, nor once the cluster is down
    for t in 14..200 {
        let fx = s.step(f64::from(t), poll("OB"));
        assert!(!runs_preflight(&fx), "at {t} in {}", s.phase().kind());
    }
    s.step(200.0, Input::RunEnded { run, end: RunEnd::Finished(Outcome::Success) });
    assert_eq!(s.phase().kind(), PhaseKind::ShutDown);
    for t in 201..230 {
        assert!(!runs_preflight(&s.step(f64::from(t), poll("OB"))), "shut down at {t}");
    }
    // mains back and stable (no automatic startup by default): watching again, and it runs again
    let mut t = 230.0;
    let mut ran = false;
    while t < 400.0 && !ran {
        ran = runs_preflight(&s.step(t, poll("OL")));
        t += 1.0;
    }
    assert!(ran, "no preflight once watching again ({})", s.phase().kind());
    assert_eq!(s.phase().kind(), PhaseKind::Watching);
}

#[test]
fn one_not_run_is_logged_and_the_next_comes_an_interval_later() {
    let mut s = supervisor(10.0);
    assert!(runs_preflight(&s.step(10.0, poll("OL"))));
    let fx = s.step(11.0, Input::PreflightDone(PreflightOutcome::NotRun("a drill holds the run lock".into())));
    assert!(events(&fx).is_empty());
    assert!(
        fx.iter().any(|e| matches!(e, Effect::Log { message, .. } if message.contains("drill holds the run lock")))
    );
    assert!(!runs_preflight(&s.step(20.0, poll("OL"))));
    assert!(runs_preflight(&s.step(21.0, poll("OL"))));
}
