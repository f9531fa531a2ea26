//! Whole outage stories through the supervisor on virtual time (`hecate_core::lifecycle`): each
//! runs in milliseconds. The first ones are the scenarios of issue 12 that the daemon before the
//! supervisor got wrong.

mod common;

use hecate_core::engine::{JournalSummary, Outcome};
use hecate_core::lifecycle::{Happening, Replay, StoryUps};
use hecate_core::notify::EventKind;
use hecate_core::plan::PlanKind;
use hecate_core::policy::PolicyConfig;
use hecate_core::power::{PowerReading, Sample, UpsStatus};
use hecate_core::supervisor::{
    Effect, Input, LockHolder, PeerMessage, PhaseKind, Role, RunEnd, Supervisor, SupervisorConfig,
};

fn config(role: Role, startup_on_power_return: bool) -> SupervisorConfig {
    SupervisorConfig {
        role,
        policy: PolicyConfig::default(),
        power_return_settle_s: 60.0,
        startup_on_power_return,
        restart_min_charge_pct: None,
        power_off_self: false,
        deadtime_s: 15.0,
    }
}

/// A coordinator that accepts these forwarders.
fn coordinator() -> Role {
    Role::Coordinator { forwarders: ["tethys", "a", "b", "c"].into_iter().map(String::from).collect() }
}

/// A replay of one UPS lasting 1200 s on a full battery, with these outages.
fn replay(cfg: SupervisorConfig, outages: Vec<(f64, f64)>) -> Replay {
    Replay::new(cfg, vec![("ups".into(), StoryUps::new(outages, 1200.0).into_fn())])
}

fn shutdowns(r: &Replay) -> Vec<(f64, bool)> {
    r.runs_started()
        .into_iter()
        .filter(|(_, k, _)| *k == PlanKind::Shutdown)
        .map(|(t, _, resume)| (t, resume))
        .collect()
}

fn startups(r: &Replay) -> usize {
    r.runs_started().iter().filter(|(_, k, _)| *k == PlanKind::Startup).count()
}

fn happened(r: &Replay, f: impl Fn(&Happening) -> bool) -> usize {
    r.timeline.iter().filter(|e| f(&e.what)).count()
}

fn phase(r: &Replay) -> PhaseKind {
    r.sup.phase().kind()
}

fn timeline(r: &Replay) -> String {
    r.timeline.iter().map(|e| format!("{:7.1} {:?}\n", e.t, e.what)).collect()
}

/// Issue 12, scenario 1: with `startup_on_power_return: false`, an operator brings the cluster
/// back by hand between two outages; the second outage must shut it down again.
#[test]
fn a_second_outage_after_a_manual_startup_is_not_ignored() {
    let mut r = replay(config(Role::Standalone, false), vec![(100.0, 1300.0), (3000.0, f64::INFINITY)]);
    r.run_until(1500.0);
    assert_eq!(shutdowns(&r).len(), 1, "{}", timeline(&r));
    assert_eq!(phase(&r), PhaseKind::Watching, "mains back and stable: watching again\n{}", timeline(&r));
    assert!(!r.cluster_up);
    r.operator_startup();
    r.run_until(4000.0);
    let s = shutdowns(&r);
    assert_eq!(s.len(), 2, "the second outage shut the cluster down again\n{}", timeline(&r));
    assert!(s[1].0 > 3000.0 && !s[1].1, "{s:?}");
    assert!(!r.cluster_up, "{}", timeline(&r));
}

/// The same with `startup_on_power_return`: the daemon brings the cluster back itself, and the
/// second outage is caught too.
#[test]
fn back_to_back_outages_with_automatic_startup() {
    let mut r = replay(config(Role::Standalone, true), vec![(100.0, 1300.0), (3000.0, f64::INFINITY)]);
    r.run_until(4000.0);
    assert_eq!(shutdowns(&r).len(), 2, "{}", timeline(&r));
    assert_eq!(startups(&r), 1, "{}", timeline(&r));
    let runs = r.runs_started();
    assert!(runs[1].0 >= 1300.0 + 60.0, "the startup waited for the settle time: {runs:?}");
}

/// Issue 12, scenario 2: the host loses power in the middle of a shutdown and boots with mains
/// on. The shutdown is not resumed: it is closed as interrupted and notified.
#[test]
fn an_interrupted_shutdown_is_not_resumed_when_mains_are_on() {
    let mut r = replay(config(Role::Standalone, false), vec![(100.0, 1100.0)]);
    r.run_until(1100.0);
    assert_eq!(shutdowns(&r).len(), 1, "{}", timeline(&r));
    assert_eq!(phase(&r), PhaseKind::ShuttingDown);
    r.restart(300.0);
    r.run_until(2000.0);
    assert_eq!(shutdowns(&r).len(), 1, "no phantom shutdown at boot\n{}", timeline(&r));
    assert_eq!(happened(&r, |h| matches!(h, Happening::JournalClosed { .. })), 1, "{}", timeline(&r));
    assert_eq!(
        happened(&r, |h| matches!(h, Happening::Notified { kind: EventKind::RunInterrupted, .. })),
        1,
        "{}",
        timeline(&r)
    );
    assert_eq!(phase(&r), PhaseKind::Watching, "{}", timeline(&r));
}

/// With `startup_on_power_return`, the startup then brings back what the interrupted shutdown
/// had stopped.
#[test]
fn an_interrupted_shutdown_is_followed_by_a_startup_when_configured() {
    let mut r = replay(config(Role::Standalone, true), vec![(100.0, 1100.0)]);
    r.run_until(1100.0);
    r.restart(300.0);
    r.run_until(2000.0);
    assert_eq!(shutdowns(&r).len(), 1, "{}", timeline(&r));
    assert_eq!(startups(&r), 1, "{}", timeline(&r));
}

/// A restart in the middle of a shutdown while power is still failing resumes it.
#[test]
fn an_interrupted_shutdown_is_resumed_while_power_is_failing() {
    let mut r = replay(config(Role::Standalone, false), vec![(100.0, f64::INFINITY)]);
    r.run_until(1150.0);
    assert_eq!(phase(&r), PhaseKind::ShuttingDown, "{}", timeline(&r));
    r.restart(20.0);
    r.run_until(1600.0);
    let s = shutdowns(&r);
    assert_eq!(s.len(), 2, "{}", timeline(&r));
    assert!(s[1].1, "the second start resumes the journal: {s:?}");
    assert!(!r.cluster_up);
    assert_eq!(phase(&r), PhaseKind::ShutDown);
}

/// At boot the UPS may not answer for a while: silence is not power failing until it lasts.
#[test]
fn recovery_waits_for_data_before_deciding() {
    let mut ups = StoryUps::new(vec![(100.0, 1100.0)], 1200.0);
    ups.silent = vec![(1100.0, 1420.0)];
    let mut r = Replay::new(config(Role::Standalone, false), vec![("ups".into(), ups.into_fn())]);
    r.run_until(1100.0);
    r.restart(300.0); // back at 1400: silent until 1420, then online
    r.run_until(2000.0);
    assert_eq!(shutdowns(&r).len(), 1, "{}", timeline(&r));
    assert_eq!(happened(&r, |h| matches!(h, Happening::JournalClosed { .. })), 1, "{}", timeline(&r));

    // Silent for longer than the recovery wait: taken as power failing, resumed.
    let mut ups = StoryUps::new(vec![(100.0, 1100.0)], 1200.0);
    ups.silent = vec![(1100.0, 5000.0)];
    let mut r = Replay::new(config(Role::Standalone, false), vec![("ups".into(), ups.into_fn())]);
    r.run_until(1100.0);
    r.restart(300.0);
    r.run_until(1500.0);
    let s = shutdowns(&r);
    assert_eq!(s.len(), 2, "{}", timeline(&r));
    assert!(s[1].1 && s[1].0 >= 1400.0 + 60.0, "{s:?}");
}

/// A journal last written hours ago is not resumed even if power is failing now: what it stopped
/// may have been started since. The new outage gets a fresh shutdown from the policy.
#[test]
fn an_old_journal_is_never_resumed() {
    let mut r = replay(config(Role::Standalone, false), vec![(100.0, 1100.0), (9000.0, f64::INFINITY)]);
    r.run_until(1100.0);
    r.restart(8000.0); // back at 9100, on battery again
    r.run_until(10500.0);
    let s = shutdowns(&r);
    assert_eq!(s.len(), 2, "{}", timeline(&r));
    assert!(!s[1].1, "a fresh shutdown, not a resume: {s:?}");
    assert_eq!(happened(&r, |h| matches!(h, Happening::JournalClosed { .. })), 1, "{}", timeline(&r));
}

/// Issue 12, scenario 3 (a full state dir) and 4 (descriptors used up): a shutdown that cannot
/// start is retried every poll, notified once per kind of failure, never dropped.
#[test]
fn a_shutdown_that_cannot_start_is_retried_every_poll() {
    let mut r = replay(config(Role::Standalone, false), vec![(100.0, f64::INFINITY)]);
    for error in ["journal: No space left on device (os error 28)"; 3]
        .into_iter()
        .chain(["opening run.lock: Too many open files (os error 24)"; 2])
    {
        r.start_failures.push_back(RunEnd::NotStarted { error: error.into(), lock_holder: None });
    }
    r.run_until(1300.0);
    let failed: Vec<f64> =
        r.timeline.iter().filter(|e| matches!(e.what, Happening::RunNotStarted { .. })).map(|e| e.t).collect();
    assert_eq!(failed.len(), 5, "{}", timeline(&r));
    for w in failed.windows(2) {
        assert!((w[1] - w[0] - r.poll_s).abs() < 1e-9, "one attempt per poll: {failed:?}");
    }
    let s = shutdowns(&r);
    assert_eq!(s.len(), 1, "{}", timeline(&r));
    assert!((s[0].0 - failed[4] - r.poll_s).abs() < 1e-9, "started at the poll after the last failure");
    assert_eq!(
        happened(&r, |h| matches!(h, Happening::Notified { kind: EventKind::RunNotStarted, .. })),
        2,
        "one notification per kind of failure\n{}",
        timeline(&r)
    );
    assert_eq!(r.sup.counters().run_start_failures.get("shutdown"), Some(&5));
    assert!(!r.cluster_up);
}

/// A queued shutdown is dropped only when mains come back and stay: the outage is over.
#[test]
fn a_queued_shutdown_gives_way_to_mains_back_and_stable() {
    let mut r = replay(config(Role::Standalone, false), vec![(100.0, 1200.0)]);
    for _ in 0..1000 {
        r.start_failures.push_back(RunEnd::NotStarted { error: "disk full".into(), lock_holder: None });
    }
    r.run_until(1400.0);
    assert!(shutdowns(&r).is_empty());
    assert_eq!(phase(&r), PhaseKind::Watching, "{}", timeline(&r));
    assert!(r.cluster_up, "nothing was ever shut down");
    let last = r.timeline.iter().rfind(|e| matches!(e.what, Happening::RunNotStarted { .. }));
    assert!(last.is_some_and(|e| e.t >= 1200.0 + 60.0 - r.poll_s), "retried until the settle time passed");
}

/// An empty journal (the shutdown died before its first step) is never a reason to shut
/// anything down, even with power failing: the policy decides afresh.
#[test]
fn an_empty_journal_is_never_a_reason_to_shut_down() {
    for mains_on in [true, false] {
        let mut sup = Supervisor::new(config(Role::Standalone, false), ["ups".to_string()]);
        let fx = sup.step(
            0.0,
            Input::Start {
                interrupted: Some(JournalSummary {
                    kind: PlanKind::Shutdown,
                    reason: None,
                    started_at: None,
                    steps_started: 0,
                    steps_finished: 0,
                    age_s: Some(5.0),
                    readable: true,
                }),
                startup_interrupted: false,
            },
        );
        assert!(fx.iter().any(|e| matches!(e, Effect::CloseInterrupted { .. })), "{fx:?}");
        assert_eq!(sup.phase().kind(), PhaseKind::Watching);
        let status = if mains_on { "OL" } else { "OB DISCHRG" };
        let sample = Sample::Reading(PowerReading {
            status: UpsStatus::parse(status),
            charge_pct: Some(90.0),
            runtime_s: Some(3000.0),
            ..PowerReading::default()
        });
        let fx = sup.step(2.0, Input::Poll { samples: vec![sample], budget_s: 240.0 });
        assert!(!fx.iter().any(|e| matches!(e, Effect::StartRun { .. })), "{fx:?}");
    }
}

/// Power back during the shutdown: the shutdown runs to its end; the startup (when configured)
/// follows once mains have been stable for the settle time after it.
#[test]
fn power_back_during_the_shutdown() {
    let mut r = replay(config(Role::Standalone, true), vec![(100.0, 1150.0)]);
    r.run_until(3000.0);
    let runs = r.runs_started();
    assert_eq!(runs.len(), 2, "{}", timeline(&r));
    let shutdown_end = r
        .timeline
        .iter()
        .find(|e| matches!(e.what, Happening::RunFinished { kind: PlanKind::Shutdown }))
        .map(|e| e.t)
        .unwrap_or_default();
    assert!(shutdown_end > 1150.0, "still running when mains came back");
    assert!(runs[1].0 >= shutdown_end, "the startup only after the shutdown ended: {runs:?}");
    assert!(r.cluster_up);
}

/// Mains flapping: short outages never trigger, and nothing runs.
#[test]
fn flapping_mains_start_nothing() {
    let outages = (0..20).map(|i| (100.0 + 100.0 * f64::from(i), 130.0 + 100.0 * f64::from(i))).collect();
    let mut r = replay(config(Role::Standalone, true), outages);
    r.run_until(2500.0);
    assert!(r.runs_started().is_empty(), "{}", timeline(&r));
    assert_eq!(phase(&r), PhaseKind::Watching);
}

/// A startup overtaken by a new outage is abandoned for a shutdown.
#[test]
fn an_outage_during_the_startup_abandons_it() {
    let mut r = replay(config(Role::Standalone, true), vec![(100.0, 1300.0), (1400.0, f64::INFINITY)]);
    r.startup_s = 3600.0;
    r.run_until(3000.0);
    let runs = r.runs_started();
    assert_eq!(
        runs.iter().map(|(_, k, _)| *k).collect::<Vec<_>>(),
        [PlanKind::Shutdown, PlanKind::Startup, PlanKind::Shutdown]
    );
    assert_eq!(happened(&r, |h| matches!(h, Happening::RunAborted { kind: PlanKind::Startup })), 1);
    assert!(!r.cluster_up, "{}", timeline(&r));
}

/// A startup of another process holding the run lock while power fails is asked to stop, and the
/// shutdown starts at the next poll.
#[test]
fn a_startup_holding_the_lock_is_stopped() {
    let mut r = replay(config(Role::Standalone, false), vec![(100.0, f64::INFINITY)]);
    r.start_failures.push_back(RunEnd::NotStarted {
        error: "run.lock is held".into(),
        lock_holder: Some(LockHolder { pid: 4242, kind: PlanKind::Startup, ours: false }),
    });
    r.run_until(1400.0);
    assert_eq!(happened(&r, |h| matches!(h, Happening::StoppedOtherRun)), 1, "{}", timeline(&r));
    assert_eq!(shutdowns(&r).len(), 1);
}

/// A forwarder whose coordinator is down falls back to its own shutdown plan; with the
/// coordinator up it hands over, waits for mains, clears, and forwards the next outage too.
#[test]
fn a_forwarder_falls_back_when_its_coordinator_is_down() {
    let role = Role::Forwarder { power_off_self_after_s: None };
    let mut r = replay(config(role.clone(), false), vec![(100.0, f64::INFINITY)]);
    r.coordinator_up = false;
    r.run_until(1300.0);
    assert_eq!(happened(&r, |h| matches!(h, Happening::Forwarded { .. })), 1);
    assert_eq!(
        happened(&r, |h| matches!(h, Happening::Notified { kind: EventKind::ForwarderFallback, .. })),
        1,
        "{}",
        timeline(&r)
    );
    assert_eq!(shutdowns(&r).len(), 1, "{}", timeline(&r));
    assert_eq!(r.sup.counters().forwarder_fallbacks, 1);

    let mut r = replay(config(role, false), vec![(100.0, 1300.0), (3000.0, f64::INFINITY)]);
    r.run_until(4000.0);
    assert!(shutdowns(&r).is_empty(), "the coordinator runs the shutdown\n{}", timeline(&r));
    assert_eq!(happened(&r, |h| matches!(h, Happening::Forwarded { .. })), 2, "{}", timeline(&r));
    let clears: Vec<f64> = r.timeline.iter().filter(|e| matches!(e.what, Happening::ClearSent)).map(|e| e.t).collect();
    // One at start (this host may have gone down with its UPS), one after the first outage.
    assert_eq!(clears.len(), 2, "{}", timeline(&r));
    assert!(clears[1] >= 1300.0 + 60.0, "{clears:?}");
}

/// A forwarder with `power_off_self_after` powers its host off once, when mains stay out.
#[test]
fn a_forwarder_powers_itself_off_after_the_handover() {
    let role = Role::Forwarder { power_off_self_after_s: Some(120.0) };
    let mut r = replay(config(role, false), vec![(100.0, f64::INFINITY)]);
    r.run_until(2000.0);
    let off: Vec<f64> =
        r.timeline.iter().filter(|e| matches!(e.what, Happening::PoweredOffSelf)).map(|e| e.t).collect();
    let forwarded = r.timeline.iter().find(|e| matches!(e.what, Happening::Forwarded { .. })).map(|e| e.t);
    assert_eq!(off.len(), 1, "{}", timeline(&r));
    assert!(forwarded.is_some_and(|f| off[0] >= f + 120.0), "{off:?} {forwarded:?}");
}

/// A coordinator starts the cluster only when its own mains are back and every forwarder that
/// triggered has cleared.
#[test]
fn a_coordinator_waits_for_its_forwarders_before_the_startup() {
    let mut r = replay(config(coordinator(), true), vec![]);
    let outage = "a1b2-1".to_string();
    r.peer_at(
        200.0,
        "tethys",
        PeerMessage::Trigger { outage: outage.clone(), reason: "ups tethys-ups: low runtime".into() },
    );
    // Its retry (the answer was lost) counts once and acts once.
    r.peer_at(
        201.0,
        "tethys",
        PeerMessage::Trigger { outage: outage.clone(), reason: "ups tethys-ups: low runtime".into() },
    );
    r.peer_at(900.0, "tethys", PeerMessage::Clear { outage: Some(outage) });
    r.run_until(2000.0);
    let runs = r.runs_started();
    assert_eq!(runs.len(), 2, "{}", timeline(&r));
    assert_eq!(runs[0].1, PlanKind::Shutdown);
    assert!((200.0..201.0).contains(&runs[0].0), "{runs:?}");
    assert_eq!(runs[1].1, PlanKind::Startup);
    assert!(runs[1].0 >= 900.0, "not before tethys cleared: {runs:?}");
    assert_eq!(r.sup.counters().forwarded_triggers.get("tethys"), Some(&1));
}

/// A finished shutdown with a failed outcome does not cover a new trigger in the same outage.
#[test]
fn a_new_trigger_after_a_failed_shutdown_runs_it_again() {
    let mut sup = Supervisor::new(config(coordinator(), false), Vec::<String>::new());
    let trigger = |outage: &str| PeerMessage::Trigger { outage: outage.into(), reason: "t".into() };
    let fx = sup.step(0.0, Input::Peer { from: "a".into(), address: "x".into(), message: trigger("a-1") });
    let run = fx.iter().find_map(|e| match e {
        Effect::StartRun { run, .. } => Some(*run),
        _ => None,
    });
    let run = run.expect("a shutdown started");
    sup.step(10.0, Input::RunEnded { run, end: RunEnd::Finished(Outcome::Failed) });
    assert_eq!(sup.phase().kind(), PhaseKind::ShutDown);
    let fx = sup.step(20.0, Input::Peer { from: "b".into(), address: "y".into(), message: trigger("b-1") });
    assert!(fx.iter().any(|e| matches!(e, Effect::StartRun { kind: PlanKind::Shutdown, .. })), "{fx:?}");

    // After a successful one, a trigger in the same outage joins it.
    let run = sup.phase().run().expect("running");
    sup.step(30.0, Input::RunEnded { run, end: RunEnd::Finished(Outcome::Success) });
    let fx = sup.step(40.0, Input::Peer { from: "c".into(), address: "z".into(), message: trigger("c-1") });
    assert!(!fx.iter().any(|e| matches!(e, Effect::StartRun { .. })), "{fx:?}");
    assert_eq!(sup.phase().kind(), PhaseKind::ShutDown);
}

/// The lifecycle replay decides as the policy replay does: on every trace of the shared corpus
/// the supervisor starts its first shutdown at the poll where `trace::replay` triggers.
#[test]
fn the_lifecycle_replay_triggers_where_the_policy_replay_does() {
    use hecate_core::budget::{self, BudgetConfig};
    use hecate_core::history::History;
    use hecate_core::trace::{self, Trace};

    let dir = common::traces_dir();
    let runs = History::load(&dir.join("runs.json")).expect("runs.json").history.runs;
    let budget_s = budget::estimate(&runs, &BudgetConfig::default(), None).seconds;
    let files = trace::trace_files(&dir).expect("the shared trace corpus");
    assert!(!files.is_empty());
    for f in files {
        let tr = Trace::load(&f).expect("trace");
        let policy = trace::replay(&tr, &PolicyConfig::default(), budget_s, 2.0).triggered_at;
        let end = tr.rows.last().map_or(0.0, |r| r.t);
        let power = Box::new(move |t: f64| match tr.at(t) {
            Some(row) => row.sample.clone(),
            None => Sample::NoData { reason: "before the trace".into() },
        });
        let mut r = Replay::new(config(Role::Standalone, false), vec![("ups".into(), power)]);
        r.budget_s = budget_s;
        r.shutdown_s = budget_s;
        r.run_until(end);
        let lifecycle = shutdowns(&r).first().map(|(t, _)| *t);
        assert_eq!(lifecycle, policy, "{}\n{}", f.display(), timeline(&r));
    }
}

/// A startup of ours cut short by a restart runs again once mains are stable (with
/// `startup_on_power_return`); without it the daemon just watches.
#[test]
fn an_interrupted_startup_runs_again_when_configured() {
    for startup in [true, false] {
        let mut sup = Supervisor::new(config(Role::Standalone, startup), ["ups".to_string()]);
        sup.step(0.0, Input::Start { interrupted: None, startup_interrupted: true });
        let want = if startup { PhaseKind::ShutDown } else { PhaseKind::Watching };
        assert_eq!(sup.phase().kind(), want);
        let online = Sample::Reading(PowerReading {
            status: UpsStatus::parse("OL"),
            charge_pct: Some(100.0),
            runtime_s: Some(3000.0),
            ..PowerReading::default()
        });
        let mut started = Vec::new();
        for i in 1..=40 {
            let fx = sup.step(f64::from(i) * 2.0, Input::Poll { samples: vec![online.clone()], budget_s: 240.0 });
            started.extend(fx.into_iter().filter(|e| matches!(e, Effect::StartRun { kind: PlanKind::Startup, .. })));
        }
        assert_eq!(started.len(), usize::from(startup), "{started:?}");
    }
}

/// What an outage showed of the battery is handed to the shell for the discharge history: when
/// mains come back, and (the outage so far) before the host powers itself off.
#[test]
fn the_discharge_of_an_outage_is_recorded() {
    let mut ups = StoryUps::new(vec![(10.0, 400.0)], 1200.0);
    let mut sup = Supervisor::new(config(Role::Standalone, false), ["ups".to_string()]);
    sup.step(0.0, Input::Start { interrupted: None, startup_interrupted: false });
    let mut recorded = Vec::new();
    for i in 0..=250 {
        let t = f64::from(i) * 2.0;
        let fx = sup.step(t, Input::Poll { samples: vec![ups.sample(t)], budget_s: 240.0 });
        recorded.extend(fx.into_iter().filter_map(|e| match e {
            Effect::RecordDischarge { source, record } => Some((t, source, record)),
            _ => None,
        }));
    }
    assert_eq!(recorded.len(), 1, "one stretch, recorded once: {recorded:?}");
    let (t, source, record) = &recorded[0];
    assert!(*t >= 400.0, "when mains came back: {t}");
    assert_eq!(source, "ups");
    assert!(record.drop_pct() >= 25.0, "{}", record.drop_pct());

    // A coordinator that powers itself off after its shutdown keeps the outage so far first.
    let mut cfg = config(Role::Standalone, false);
    cfg.power_off_self = true;
    let mut ups = StoryUps::new(vec![(10.0, f64::INFINITY)], 1200.0);
    let mut sup = Supervisor::new(cfg, ["ups".to_string()]);
    sup.step(0.0, Input::Start { interrupted: None, startup_interrupted: false });
    let mut t = 0.0;
    let run = loop {
        t += 2.0;
        assert!(t < 2000.0, "never triggered");
        let fx = sup.step(t, Input::Poll { samples: vec![ups.sample(t)], budget_s: 240.0 });
        if let Some(run) = fx.iter().find_map(|e| match e {
            Effect::StartRun { run, .. } => Some(*run),
            _ => None,
        }) {
            break run;
        }
    };
    let fx = sup.step(t + 240.0, Input::RunEnded { run, end: RunEnd::Finished(Outcome::Success) });
    let record_at = fx.iter().position(|e| matches!(e, Effect::RecordDischarge { .. }));
    let off_at = fx.iter().position(|e| matches!(e, Effect::PowerOffSelf { .. }));
    assert!(record_at.is_some() && record_at < off_at, "recorded before the power-off: {fx:?}");
}
