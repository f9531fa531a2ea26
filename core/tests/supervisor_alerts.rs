//! The per-source alerts NUT users get from upsmon's NOTIFYFLAG, decided by the supervisor from
//! each poll: `comm_lost` after `deadtime` without data and `comm_restored`, `low_battery`,
//! `overload`, `replace_battery` (at most daily), and the log levels of `on_battery` and
//! `power_restored`. Each is raised once per occurrence, never every poll; each is counted.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use hecate_core::notify::EventKind;
use hecate_core::power::{PowerReading, Sample, UpsStatus};
use hecate_core::supervisor::{Effect, Input, Level, REPLACE_BATTERY_EVERY_S, Supervisor, SupervisorConfig};

const DEADTIME: f64 = 15.0;

fn supervisor() -> Supervisor {
    let cfg = SupervisorConfig { deadtime_s: DEADTIME, ..SupervisorConfig::default() };
    let mut sup = Supervisor::new(cfg, ["atlas".to_string()]);
    sup.step(0.0, Input::Start { interrupted: None, startup_interrupted: false });
    sup
}

fn reading(status: &str) -> Sample {
    Sample::Reading(PowerReading {
        status: UpsStatus::parse(status),
        charge_pct: Some(100.0),
        runtime_s: Some(3600.0),
        load_pct: Some(40.0),
        ..PowerReading::default()
    })
}

fn no_data() -> Sample {
    Sample::NoData { reason: "connection refused".into() }
}

/// Polls once at `t`, returning the kinds notified and the log lines with their levels.
fn poll(sup: &mut Supervisor, t: f64, sample: Sample) -> (Vec<EventKind>, Vec<(Level, String)>) {
    let fx = sup.step(t, Input::Poll { samples: vec![sample], budget_s: 300.0 });
    let kinds =
        fx.iter().filter_map(|e| if let Effect::Notify { kind, .. } = e { Some(*kind) } else { None }).collect();
    let logs = fx
        .iter()
        .filter_map(|e| if let Effect::Log { level, message } = e { Some((*level, message.clone())) } else { None })
        .collect();
    (kinds, logs)
}

/// Every kind notified over these polls, in order.
fn notified(sup: &mut Supervisor, polls: impl IntoIterator<Item = (f64, Sample)>) -> Vec<EventKind> {
    polls.into_iter().flat_map(|(t, s)| poll(sup, t, s).0).collect()
}

fn count(sup: &Supervisor, kind: EventKind) -> u64 {
    sup.counters().alerts.get("atlas").and_then(|k| k.get(kind.as_str())).copied().unwrap_or(0)
}

#[test]
fn comm_lost_once_after_the_deadtime_and_comm_restored_once_with_the_next_reading() {
    let mut sup = supervisor();
    assert!(notified(&mut sup, [(0.0, reading("OL")), (2.0, reading("OL"))]).is_empty());
    // Silent from t=2 (the last data): nothing before the deadtime has passed.
    let quiet: Vec<(f64, Sample)> = (2..=8).map(|i| (f64::from(i) * 2.0, no_data())).collect();
    assert!(notified(&mut sup, quiet).is_empty(), "14 s without data is inside the deadtime");
    let (kinds, logs) = poll(&mut sup, 17.0, no_data());
    assert_eq!(kinds, [EventKind::CommLost]);
    assert!(
        logs.iter().any(|(l, m)| *l == Level::Error && m.contains("lost contact with ups atlas: no data for 15 s")),
        "{logs:?}"
    );
    assert_eq!(sup.sources()[0].active_alerts(), ["comm_lost"]);
    // Not again while the silence lasts, however long.
    let more: Vec<(f64, Sample)> = (9..200).map(|i| (f64::from(i) * 2.0, no_data())).collect();
    assert!(notified(&mut sup, more).is_empty());
    let (kinds, logs) = poll(&mut sup, 400.0, reading("OL"));
    assert_eq!(kinds, [EventKind::CommRestored]);
    assert!(logs.iter().any(|(l, m)| *l == Level::Warn && m.contains("contact with ups atlas is back")), "{logs:?}");
    assert!(notified(&mut sup, [(402.0, reading("OL"))]).is_empty());
    assert!(sup.sources()[0].active_alerts().is_empty());
    assert_eq!((count(&sup, EventKind::CommLost), count(&sup, EventKind::CommRestored)), (1, 1));
}

#[test]
fn a_source_that_never_answered_is_lost_a_deadtime_after_its_first_poll() {
    let mut sup = supervisor();
    let polls: Vec<(f64, Sample)> = (0..20).map(|i| (100.0 + f64::from(i), no_data())).collect();
    assert_eq!(notified(&mut sup, polls), [EventKind::CommLost]);
    assert!(sup.sources()[0].alerts.comm_lost);
}

#[test]
fn low_battery_and_overload_once_per_occurrence() {
    let mut sup = supervisor();
    let kinds = notified(
        &mut sup,
        [
            (0.0, reading("OL")),
            (2.0, reading("OL OVER")),
            (4.0, reading("OL OVER")),
            (6.0, no_data()),
            (8.0, reading("OL OVER")),
            (10.0, reading("OL")),
            (12.0, reading("OL OVER")),
        ],
    );
    assert_eq!(kinds, [EventKind::Overload, EventKind::Overload], "a data gap is not a new occurrence");
    let mut sup = supervisor();
    let (kinds, logs) = poll(&mut sup, 0.0, reading("OL LB"));
    assert!(kinds.contains(&EventKind::LowBattery), "{kinds:?}");
    assert!(logs.iter().any(|(l, m)| *l == Level::Error && m.contains("low battery (LB")), "{logs:?}");
    assert!(!notified(&mut sup, [(2.0, reading("OL LB"))]).contains(&EventKind::LowBattery));
    assert!(sup.sources()[0].active_alerts().contains(&"low_battery"));
    assert_eq!(count(&sup, EventKind::LowBattery), 1);
}

#[test]
fn replace_battery_at_most_once_a_day() {
    let mut sup = supervisor();
    let day = REPLACE_BATTERY_EVERY_S;
    // Two days and a bit of RB, polled every minute, with RB flapping off for a poll now and then.
    let polls: Vec<(f64, Sample)> = (0..=2 * 24 * 60 + 10)
        .map(|m| {
            let t = f64::from(m) * 60.0;
            (t, if m % 97 == 50 { reading("OL") } else { reading("OL RB") })
        })
        .collect();
    let kinds = notified(&mut sup, polls);
    assert_eq!(kinds.iter().filter(|k| **k == EventKind::ReplaceBattery).count(), 3, "at 0, 1 day and 2 days");
    assert_eq!(count(&sup, EventKind::ReplaceBattery), 3);
    assert_eq!(sup.sources()[0].alerts.replace_battery_notified, Some(2.0 * day));
    assert!(sup.sources()[0].active_alerts().contains(&"replace_battery"));
}

#[test]
fn on_battery_is_a_warning_and_power_restored_information() {
    let mut sup = supervisor();
    poll(&mut sup, 0.0, reading("OL"));
    let (kinds, logs) = poll(&mut sup, 2.0, reading("OB DISCHRG"));
    assert_eq!(kinds, [EventKind::OnBattery]);
    assert!(logs.iter().any(|(l, m)| *l == Level::Warn && m == "ups atlas is on battery"), "{logs:?}");
    assert_eq!(sup.sources()[0].active_alerts(), ["on_battery"]);
    let (kinds, logs) = poll(&mut sup, 4.0, reading("OL CHRG"));
    assert_eq!(kinds, [EventKind::PowerRestored]);
    assert!(logs.iter().any(|(l, m)| *l == Level::Info && m == "ups atlas is back on mains"), "{logs:?}");
    assert_eq!((count(&sup, EventKind::OnBattery), count(&sup, EventKind::PowerRestored)), (1, 1));
}

#[test]
fn each_alert_carries_the_ups_in_its_details() {
    let mut sup = supervisor();
    let fx = sup.step(0.0, Input::Poll { samples: vec![reading("OL LB OVER RB")], budget_s: 300.0 });
    let alerts: Vec<_> = fx
        .iter()
        .filter_map(
            |e| if let Effect::Notify { kind, details, .. } = e { Some((*kind, details.clone())) } else { None },
        )
        .collect();
    let kinds: Vec<EventKind> = alerts.iter().map(|(k, _)| *k).collect();
    for k in [EventKind::LowBattery, EventKind::Overload, EventKind::ReplaceBattery] {
        assert!(kinds.contains(&k), "{kinds:?}");
    }
    for (k, d) in &alerts {
        assert_eq!(d["ups"], "atlas", "{k}");
    }
}
