//! Every (phase, input) pair of the supervisor's transition table (see the module doc of
//! `hecate_core::supervisor`), and a property test over arbitrary input sequences.

use hecate_core::engine::{JournalSummary, Outcome};
use hecate_core::plan::PlanKind;
use hecate_core::policy::PolicyConfig;
use hecate_core::power::{PowerReading, Sample, UpsStatus};
use hecate_core::supervisor::{
    Effect, Input, LockHolder, PeerMessage, PhaseKind, Role, RunEnd, Supervisor, SupervisorConfig,
};
use proptest::prelude::*;

fn config(role: Role) -> SupervisorConfig {
    SupervisorConfig {
        role,
        policy: PolicyConfig::default(),
        power_return_settle_s: 60.0,
        startup_on_power_return: true,
        restart_min_charge_pct: None,
        power_off_self: false,
        deadtime_s: 15.0,
    }
}

/// A coordinator that accepts these forwarders.
fn coordinator() -> Role {
    Role::Coordinator { forwarders: ["tethys", "rhea", "a", "b"].into_iter().map(String::from).collect() }
}

fn reading(status: &str, charge: f64, runtime: f64) -> Sample {
    Sample::Reading(PowerReading {
        status: UpsStatus::parse(status),
        charge_pct: Some(charge),
        runtime_s: Some(runtime),
        load_pct: Some(40.0),
        ..PowerReading::default()
    })
}

fn online() -> Sample {
    reading("OL CHRG", 100.0, 3000.0)
}

fn fsd() -> Sample {
    reading("OB FSD", 40.0, 900.0)
}

fn poll(sample: Sample) -> Input {
    Input::Poll { samples: vec![sample], budget_s: 240.0 }
}

fn journal() -> JournalSummary {
    JournalSummary {
        kind: PlanKind::Shutdown,
        reason: Some("ups ups: low runtime".into()),
        started_at: Some("2026-11-30T02:00:00Z".into()),
        steps_started: 4,
        steps_finished: 3,
        age_s: Some(120.0),
        readable: true,
    }
}

fn started_run(fx: &[Effect]) -> Option<u64> {
    fx.iter().find_map(|e| match e {
        Effect::StartRun { run, .. } => Some(*run),
        _ => None,
    })
}

/// A supervisor brought into `phase` through its inputs only, at time 10.
fn in_phase(phase: PhaseKind) -> (Supervisor, f64) {
    let forwarder = matches!(phase, PhaseKind::Forwarding | PhaseKind::Forwarded);
    let role = if forwarder { Role::Forwarder { power_off_self_after_s: Some(600.0) } } else { coordinator() };
    let mut s = Supervisor::new(config(role), ["ups".to_string()]);
    let mut t = 0.0;
    let interrupted = (phase == PhaseKind::Recovering).then(journal);
    s.step(t, Input::Start { interrupted, startup_interrupted: false });
    let mut step = |s: &mut Supervisor, input: Input| {
        t += 2.0;
        s.step(t, input)
    };
    match phase {
        PhaseKind::Recovering | PhaseKind::Watching => {}
        PhaseKind::Forwarding => {
            step(&mut s, poll(fsd()));
        }
        PhaseKind::Forwarded => {
            step(&mut s, poll(fsd()));
            step(&mut s, Input::Forwarded(Ok("accepted".into())));
        }
        PhaseKind::ShuttingDown | PhaseKind::ShutdownQueued | PhaseKind::ShutDown | PhaseKind::StartingUp => {
            let run = started_run(&step(&mut s, poll(fsd()))).expect("a shutdown starts on FSD");
            if phase == PhaseKind::ShutdownQueued {
                step(
                    &mut s,
                    Input::RunEnded { run, end: RunEnd::NotStarted { error: "disk full".into(), lock_holder: None } },
                );
            }
            if matches!(phase, PhaseKind::ShutDown | PhaseKind::StartingUp) {
                step(&mut s, Input::RunEnded { run, end: RunEnd::Finished(Outcome::Success) });
            }
            if phase == PhaseKind::StartingUp {
                for _ in 0..40 {
                    step(&mut s, poll(online()));
                }
            }
        }
    }
    assert_eq!(s.phase().kind(), phase, "setting up {phase}");
    (s, t)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    Start,
    PollOnline,
    PollFsd,
    PollNoData,
    PeerTrigger,
    PeerClear,
    EndSuccess,
    EndNotStarted,
    EndCrashed,
    EndStale,
    ForwardOk,
    ForwardErr,
    ClearOk,
    ClearErr,
}

const INPUTS: [In; 14] = [
    In::Start,
    In::PollOnline,
    In::PollFsd,
    In::PollNoData,
    In::PeerTrigger,
    In::PeerClear,
    In::EndSuccess,
    In::EndNotStarted,
    In::EndCrashed,
    In::EndStale,
    In::ForwardOk,
    In::ForwardErr,
    In::ClearOk,
    In::ClearErr,
];

fn input(i: In, current_run: Option<u64>) -> Input {
    let run = current_run.unwrap_or(1);
    match i {
        In::Start => Input::Start { interrupted: Some(journal()), startup_interrupted: false },
        In::PollOnline => poll(online()),
        In::PollFsd => poll(fsd()),
        In::PollNoData => poll(Sample::NoData { reason: "driver not connected".into() }),
        In::PeerTrigger => Input::Peer {
            from: "tethys".into(),
            address: "192.0.2.7:5000".into(),
            message: PeerMessage::Trigger { outage: "i-1".into(), reason: "ups tethys-ups: low runtime".into() },
        },
        In::PeerClear => Input::Peer {
            from: "tethys".into(),
            address: "192.0.2.7:5000".into(),
            message: PeerMessage::Clear { outage: Some("i-1".into()) },
        },
        In::EndSuccess => Input::RunEnded { run, end: RunEnd::Finished(Outcome::Success) },
        In::EndNotStarted => Input::RunEnded {
            run,
            end: RunEnd::NotStarted {
                error: "run.lock is held".into(),
                lock_holder: Some(LockHolder { pid: 77, kind: PlanKind::Startup, ours: false }),
            },
        },
        In::EndCrashed => Input::RunEnded { run, end: RunEnd::Crashed("the task panicked".into()) },
        In::EndStale => Input::RunEnded { run: 9999, end: RunEnd::Finished(Outcome::Success) },
        In::ForwardOk => Input::Forwarded(Ok("accepted".into())),
        In::ForwardErr => Input::Forwarded(Err("connection refused".into())),
        In::ClearOk => Input::Cleared(Ok("accepted".into())),
        In::ClearErr => Input::Cleared(Err("connection refused".into())),
    }
}

/// The next phase for each (phase, input), in the order of [`INPUTS`].
fn expected(phase: PhaseKind) -> [PhaseKind; 14] {
    use PhaseKind::*;
    match phase {
        Recovering => [
            Recovering,
            ShutDown,
            ShuttingDown,
            Recovering,
            ShuttingDown,
            Recovering,
            Recovering,
            Recovering,
            Recovering,
            Recovering,
            Recovering,
            Recovering,
            Recovering,
            Recovering,
        ],
        Watching => [
            Watching,
            Watching,
            ShuttingDown,
            Watching,
            ShuttingDown,
            Watching,
            Watching,
            Watching,
            Watching,
            Watching,
            Watching,
            Watching,
            Watching,
            Watching,
        ],
        Forwarding => [
            Forwarding,
            Forwarding,
            Forwarding,
            Forwarding,
            Forwarding,
            Forwarding,
            Forwarding,
            Forwarding,
            Forwarding,
            Forwarding,
            Forwarded,
            ShuttingDown,
            Forwarding,
            Forwarding,
        ],
        Forwarded => [
            Forwarded, Forwarded, Forwarded, Forwarded, Forwarded, Forwarded, Forwarded, Forwarded, Forwarded,
            Forwarded, Forwarded, Forwarded, Forwarded, Forwarded,
        ],
        ShutdownQueued => [
            ShutdownQueued,
            ShuttingDown,
            ShuttingDown,
            ShuttingDown,
            ShutdownQueued,
            ShutdownQueued,
            ShutdownQueued,
            ShutdownQueued,
            ShutdownQueued,
            ShutdownQueued,
            ShutdownQueued,
            ShutdownQueued,
            ShutdownQueued,
            ShutdownQueued,
        ],
        ShuttingDown => [
            ShuttingDown,
            ShuttingDown,
            ShuttingDown,
            ShuttingDown,
            ShuttingDown,
            ShuttingDown,
            ShutDown,
            ShutdownQueued,
            ShutdownQueued,
            ShuttingDown,
            ShuttingDown,
            ShuttingDown,
            ShuttingDown,
            ShuttingDown,
        ],
        ShutDown => [
            ShutDown, ShutDown, ShutDown, ShutDown, ShutDown, ShutDown, ShutDown, ShutDown, ShutDown, ShutDown,
            ShutDown, ShutDown, ShutDown, ShutDown,
        ],
        StartingUp => [
            StartingUp,
            StartingUp,
            ShuttingDown,
            StartingUp,
            ShuttingDown,
            StartingUp,
            Watching,
            Watching,
            Watching,
            StartingUp,
            StartingUp,
            StartingUp,
            StartingUp,
            StartingUp,
        ],
    }
}

fn has(fx: &[Effect], f: impl Fn(&Effect) -> bool) -> bool {
    fx.iter().any(f)
}

#[test]
fn every_phase_and_input_pair() {
    let mut failures = Vec::new();
    for phase in PhaseKind::ALL {
        for (i, want) in INPUTS.iter().zip(expected(phase)) {
            let (mut s, t) = in_phase(phase);
            let run = s.phase().run();
            let fx = s.step(t + 1.0, input(*i, run));
            let got = s.phase().kind();
            if got != want {
                failures.push(format!("{phase} + {i:?}: got {got}, want {want}; effects {fx:?}"));
            }
            // What must go with the transitions that act.
            let ok = match (phase, i) {
                (PhaseKind::Watching | PhaseKind::Recovering, In::PollFsd | In::PeerTrigger) => {
                    has(&fx, |e| matches!(e, Effect::StartRun { kind: PlanKind::Shutdown, .. }))
                }
                (PhaseKind::Recovering, In::PollOnline) => has(&fx, |e| matches!(e, Effect::CloseInterrupted { .. })),
                (PhaseKind::StartingUp, In::PollFsd | In::PeerTrigger) => {
                    has(&fx, |e| matches!(e, Effect::AbortRun { .. }))
                        && has(&fx, |e| matches!(e, Effect::StartRun { kind: PlanKind::Shutdown, .. }))
                }
                (PhaseKind::ShutdownQueued, In::PollOnline | In::PollFsd | In::PollNoData) => {
                    has(&fx, |e| matches!(e, Effect::StartRun { kind: PlanKind::Shutdown, .. }))
                }
                (PhaseKind::ShuttingDown, In::EndNotStarted) => {
                    has(&fx, |e| matches!(e, Effect::StopOtherRun { pid: 77 }))
                }
                (PhaseKind::Forwarding, In::ForwardErr) => {
                    has(&fx, |e| matches!(e, Effect::StartRun { kind: PlanKind::Shutdown, .. }))
                }
                (_, In::EndStale) | (_, In::Start) => !has(&fx, |e| !matches!(e, Effect::Log { .. })),
                _ => true,
            };
            if !ok {
                failures.push(format!("{phase} + {i:?}: missing or unexpected effects {fx:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

/// The time-driven cells: the settle time, the recovery wait and the forwarder's power-off.
#[test]
fn timers() {
    // shut_down → (settled) starting_up with startup_on_power_return; → watching without.
    for startup in [true, false] {
        let (mut s, mut t) = in_phase(PhaseKind::ShutDown);
        let mut cfg = s.config().clone();
        cfg.startup_on_power_return = startup;
        let mut fresh = Supervisor::new(cfg, ["ups".to_string()]);
        fresh.step(0.0, Input::Start { interrupted: None, startup_interrupted: false });
        let run = started_run(&fresh.step(2.0, poll(fsd()))).expect("started");
        fresh.step(4.0, Input::RunEnded { run, end: RunEnd::Finished(Outcome::Success) });
        s = fresh;
        t = t.max(4.0);
        let mut first_online = None;
        let mut moved = None;
        for _ in 0..60 {
            t += 2.0;
            s.step(t, poll(online()));
            first_online.get_or_insert(t);
            if s.phase().kind() != PhaseKind::ShutDown {
                moved = Some(t);
                break;
            }
        }
        let (first, moved) = (first_online.unwrap_or_default(), moved.expect("left shut_down"));
        assert!(moved - first >= 60.0 && moved - first <= 62.0, "settle: {first} → {moved}");
        let want = if startup { PhaseKind::StartingUp } else { PhaseKind::Watching };
        assert_eq!(s.phase().kind(), want);
    }

    // forwarded: powers off once after 600 s without mains.
    let (mut s, mut t) = in_phase(PhaseKind::Forwarded);
    let since = s.phase().since().unwrap_or_default();
    let mut offs = Vec::new();
    for _ in 0..400 {
        t += 2.0;
        if s.step(t, poll(fsd())).iter().any(|e| matches!(e, Effect::PowerOffSelf { .. })) {
            offs.push(t);
        }
    }
    assert_eq!(offs.len(), 1, "{offs:?}");
    assert!(offs[0] - since >= 600.0 && offs[0] - since <= 602.0, "{offs:?} since {since}");
}

fn arb_sample() -> impl Strategy<Value = Sample> {
    prop_oneof![
        (0.0..100.0f64, 0.0..4000.0f64).prop_map(|(c, r)| reading("OL", c, r)),
        (0.0..100.0f64, 0.0..4000.0f64).prop_map(|(c, r)| reading("OB DISCHRG", c, r)),
        (0.0..100.0f64, 0.0..400.0f64).prop_map(|(c, r)| reading("OB LB", c, r)),
        Just(fsd()),
        Just(Sample::NoData { reason: "gone".into() }),
    ]
}

fn arb_input() -> impl Strategy<Value = (f64, Input, bool)> {
    let run_end = prop_oneof![
        Just(RunEnd::Finished(Outcome::Success)),
        Just(RunEnd::Finished(Outcome::Failed)),
        Just(RunEnd::NotStarted { error: "e".into(), lock_holder: None }),
        Just(RunEnd::NotStarted {
            error: "held".into(),
            lock_holder: Some(LockHolder { pid: 9, kind: PlanKind::Startup, ours: false })
        }),
        Just(RunEnd::NotStarted {
            error: "held".into(),
            lock_holder: Some(LockHolder { pid: 9, kind: PlanKind::Startup, ours: true })
        }),
        Just(RunEnd::Crashed("boom".into())),
    ];
    let input = prop_oneof![
        8 => (prop::collection::vec(arb_sample(), 0..3), prop_oneof![Just(240.0), Just(f64::NAN), 0.0..1e6f64])
            .prop_map(|(samples, budget_s)| (Input::Poll { samples, budget_s }, false)),
        1 => (prop_oneof![Just("a"), Just("b"), Just("mallory")], prop_oneof![Just("x-1"), Just("x-2")])
            .prop_map(|(f, o)| (Input::Peer {
                from: f.into(),
                address: "x".into(),
                message: PeerMessage::Trigger { outage: o.into(), reason: "t".into() }
            }, false)),
        1 => (prop_oneof![Just("a"), Just("b"), Just("mallory")], prop::option::of(prop_oneof![Just("x-1"), Just("x-2")]))
            .prop_map(|(f, o)| (Input::Peer {
                from: f.into(),
                address: "x".into(),
                message: PeerMessage::Clear { outage: o.map(String::from) }
            }, false)),
        3 => (run_end, any::<bool>()).prop_map(|(end, current)| (Input::RunEnded { run: 0, end }, current)),
        1 => any::<bool>().prop_map(|ok| (Input::Forwarded(if ok { Ok("ok".into()) } else { Err("no".into()) }), false)),
        1 => any::<bool>().prop_map(|ok| (Input::Cleared(if ok { Ok("ok".into()) } else { Err("no".into()) }), false)),
        1 => (prop::option::of(Just(journal())), any::<bool>())
            .prop_map(|(j, s)| (Input::Start { interrupted: j, startup_interrupted: s }, false)),
    ];
    (prop_oneof![Just(0.0), 0.0..200.0f64, Just(-5.0), Just(f64::NAN)], input).prop_map(|(dt, (i, c))| (dt, i, c))
}

fn arb_role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Standalone),
        Just(coordinator()),
        Just(Role::Forwarder { power_off_self_after_s: None }),
        Just(Role::Forwarder { power_off_self_after_s: Some(100.0) }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever arrives, in whatever order: no panic; a latched policy or a forwarded trigger is
    /// never left without a shutdown running, queued, forwarded or done in the same step; a run
    /// started is the phase's run; at most one run starts per step.
    #[test]
    fn never_triggered_without_a_shutdown_in_hand(
        role in arb_role(),
        startup in any::<bool>(),
        sources in 0usize..3,
        inputs in prop::collection::vec(arb_input(), 1..120),
    ) {
        let mut cfg = config(role);
        cfg.startup_on_power_return = startup;
        let mut s = Supervisor::new(cfg, (0..sources).map(|i| format!("ups{i}")));
        let mut t = 0.0;
        for (dt, mut input, current) in inputs {
            t += dt;
            if let Input::RunEnded { run, .. } = &mut input {
                *run = if current { s.phase().run().unwrap_or(1) } else { 12345 };
            }
            let was = s.phase().kind();
            let fx = s.step(t, input);
            let phase = s.phase().kind();
            let starts: Vec<_> = fx.iter().filter(|e| matches!(e, Effect::StartRun { .. })).collect();
            prop_assert!(starts.len() <= 1, "{fx:?}");
            if let Some(Effect::StartRun { run, .. }) = starts.first() {
                prop_assert_eq!(s.phase().run(), Some(*run));
            }
            if fx.iter().any(|e| matches!(e, Effect::AbortRun { .. })) {
                prop_assert_eq!(was, PhaseKind::StartingUp);
            }
            if s.sources().iter().any(|src| src.policy.is_triggered()) {
                prop_assert!(
                    !matches!(phase, PhaseKind::Watching | PhaseKind::StartingUp | PhaseKind::Recovering),
                    "triggered but {phase} after {was}: {fx:?}"
                );
            }
        }
    }
}

fn peer(from: &str, message: PeerMessage) -> Input {
    Input::Peer { from: from.into(), address: "192.0.2.7:5000".into(), message }
}

fn peer_trigger(outage: &str) -> PeerMessage {
    PeerMessage::Trigger { outage: outage.into(), reason: "ups tethys-ups: low runtime".into() }
}

fn peer_clear(outage: Option<&str>) -> PeerMessage {
    PeerMessage::Clear { outage: outage.map(String::from) }
}

fn starts_shutdown(fx: &[Effect]) -> bool {
    has(fx, |e| matches!(e, Effect::StartRun { kind: PlanKind::Shutdown, .. }))
}

/// Issue 15: a retried trigger counts and acts once, a late one after the clear does nothing, a
/// stale clear never ends a newer outage, a clear touches only its sender's entry, and a name
/// not in the config leaves no trace.
#[test]
fn peer_outages_are_idempotent_and_bounded_by_the_config() {
    let mut s = Supervisor::new(config(coordinator()), ["ups".to_string()]);
    s.step(0.0, Input::Start { interrupted: None, startup_interrupted: false });
    let fx = s.step(1.0, peer("tethys", peer_trigger("t-1")));
    let run = started_run(&fx).expect("the first trigger starts the shutdown");
    assert_eq!(s.counters().forwarded_triggers.get("tethys"), Some(&1));
    // A shutdown that failed is not covered: any new trigger starts another one, but a retry of
    // the same outage must not.
    s.step(2.0, Input::RunEnded { run, end: RunEnd::Finished(Outcome::Failed) });
    assert_eq!(s.phase().kind(), PhaseKind::ShutDown);
    let fx = s.step(3.0, peer("tethys", peer_trigger("t-1")));
    assert!(!starts_shutdown(&fx), "a retry acts once: {fx:?}");
    assert_eq!(s.counters().forwarded_triggers.get("tethys"), Some(&1), "a retry counts once");
    assert_eq!(s.outstanding().iter().collect::<Vec<_>>(), ["tethys"]);

    // rhea's clear (its signature made it rhea's) does not end tethys's outage.
    s.step(4.0, peer("rhea", peer_clear(None)));
    assert_eq!(s.outstanding().iter().collect::<Vec<_>>(), ["tethys"]);

    // A new outage of tethys counts and acts; the clear of the old one is stale.
    let fx = s.step(5.0, peer("tethys", peer_trigger("t-2")));
    assert!(starts_shutdown(&fx), "{fx:?}");
    assert_eq!(s.counters().forwarded_triggers.get("tethys"), Some(&2));
    s.step(6.0, peer("tethys", peer_clear(Some("t-1"))));
    assert_eq!(s.outstanding().len(), 1, "a stale clear never ends a newer outage");
    s.step(7.0, peer("tethys", peer_clear(Some("t-2"))));
    assert!(s.outstanding().is_empty());
    // A late retry of the cleared outage's trigger does nothing.
    let run = s.phase().run().expect("the second shutdown runs");
    s.step(8.0, Input::RunEnded { run, end: RunEnd::Finished(Outcome::Failed) });
    let fx = s.step(9.0, peer("tethys", peer_trigger("t-2")));
    assert!(!starts_shutdown(&fx) && s.outstanding().is_empty(), "{fx:?}");
    // A restarted forwarder's clear names no outage: whatever of its own is on record.
    s.step(10.0, peer("rhea", peer_trigger("r-1")));
    s.step(11.0, peer("rhea", peer_clear(None)));
    assert!(s.outstanding().is_empty());

    // Names not in the config: nothing stored, nothing counted, nothing started.
    let before = s.counters().clone();
    for i in 0..3000 {
        let fx = s.step(12.0, peer(&format!("mallory-{i}"), peer_trigger("m-1")));
        assert!(!starts_shutdown(&fx), "{fx:?}");
    }
    assert_eq!(s.counters(), &before);
    assert!(s.outstanding().is_empty());
}

/// Issue 15: a forwarder's outages get ids that differ per outage and per daemon process, its
/// clear names the outage it forwarded (none after a restart), and a failed forward or clear is
/// kept as its forwarding problem until one succeeds.
#[test]
fn a_forwarder_names_its_outages() {
    let forwarder = Role::Forwarder { power_off_self_after_s: None };
    let mut cfg = config(forwarder);
    cfg.power_return_settle_s = 10.0;
    let mut s = Supervisor::new(cfg.clone(), ["ups".to_string()]).with_instance_id("9f3a");
    s.step(0.0, Input::Start { interrupted: None, startup_interrupted: false });
    // At start the coordinator may wait for an outage of an earlier process: a clear of "any".
    let mut t = 0.0;
    let mut clears = Vec::new();
    while clears.is_empty() && t < 60.0 {
        t += 2.0;
        clears.extend(s.step(t, poll(online())).into_iter().filter_map(|e| match e {
            Effect::SendClear { outage } => Some(outage),
            _ => None,
        }));
    }
    assert_eq!(clears, [None]);
    s.step(t, Input::Cleared(Err("coordinator answered 401: the request's time is 300 s ahead".into())));
    assert!(s.forwarding_problem().is_some_and(|p| p.contains("300 s ahead")), "{:?}", s.forwarding_problem());

    let forwarded = |fx: &[Effect]| {
        fx.iter().find_map(|e| match e {
            Effect::Forward { outage, .. } => Some(outage.clone()),
            _ => None,
        })
    };
    t += 2.0;
    let first = forwarded(&s.step(t, poll(fsd()))).expect("forwarded");
    assert_eq!(first, "9f3a-1");
    s.step(t + 1.0, Input::Forwarded(Ok("accepted".into())));
    assert_eq!(s.forwarding_problem(), None, "a success clears the problem");
    let mut sent = None;
    while sent.is_none() && t < 400.0 {
        t += 2.0;
        sent = s.step(t, poll(online())).into_iter().find_map(|e| match e {
            Effect::SendClear { outage } => Some(outage),
            _ => None,
        });
    }
    assert_eq!(sent, Some(Some(first.clone())), "the clear names the outage forwarded");
    s.step(t + 1.0, Input::Cleared(Ok("accepted".into())));
    t += 2.0;
    let second = forwarded(&s.step(t, poll(fsd()))).expect("forwarded again");
    assert_eq!(second, "9f3a-2");

    // Another process of the same forwarder: another prefix, so never the same ids.
    let mut other = Supervisor::new(cfg, ["ups".to_string()]).with_instance_id("77c1");
    other.step(0.0, Input::Start { interrupted: None, startup_interrupted: false });
    let id = forwarded(&other.step(2.0, poll(fsd()))).expect("forwarded");
    assert!(id != first && id != second, "{id}");
}

/// `restart_min_charge`: mains back and stable is not enough for the automatic startup while a
/// UPS's battery holds less; it says so once and starts once the charge is there.
#[test]
fn the_automatic_startup_waits_for_the_battery_to_hold_restart_min_charge() {
    let mut cfg = config(Role::Standalone);
    cfg.restart_min_charge_pct = Some(80.0);
    let mut s = Supervisor::new(cfg, ["ups".to_string()]);
    s.step(0.0, Input::Start { interrupted: None, startup_interrupted: false });
    let run = started_run(&s.step(2.0, poll(fsd()))).expect("started");
    s.step(4.0, Input::RunEnded { run, end: RunEnd::Finished(Outcome::Success) });
    let mut t = 4.0;
    let mut said = 0;
    // Ten minutes of mains at 50 % charge: well past the 60 s settle, no startup.
    for _ in 0..300 {
        t += 2.0;
        let fx = s.step(t, poll(reading("OL CHRG", 50.0, 1500.0)));
        assert!(started_run(&fx).is_none(), "started at {t} on a half-empty battery");
        said += fx
            .iter()
            .filter(|e| matches!(e, Effect::Log { message, .. } if message.contains("holds 80 % of charge (now 50 %)")))
            .count();
    }
    assert_eq!(s.phase().kind(), PhaseKind::ShutDown);
    assert_eq!(said, 1, "said once");
    t += 2.0;
    let fx = s.step(t, poll(reading("OL CHRG", 81.0, 2500.0)));
    assert!(started_run(&fx).is_some());
    assert_eq!(s.phase().kind(), PhaseKind::StartingUp);
}
