//! One test per rule of the shutdown trigger, on synthetic polls.

use hecate_core::policy::{Decision, EstimateSource, Policy, PolicyConfig, PowerState, TriggerCause};
use hecate_core::power::{PowerReading, Sample, UpsStatus};

const BUDGET: f64 = 300.0;
/// 1.10 × 300 s.
const THRESHOLD: f64 = 330.0;
const POLL: f64 = 2.0;

fn reading(status: &str, charge: Option<f64>, runtime: Option<f64>, load: Option<f64>) -> Sample {
    Sample::Reading(PowerReading {
        status: UpsStatus::parse(status),
        charge_pct: charge,
        runtime_s: runtime,
        load_pct: load,
        ..PowerReading::default()
    })
}

fn no_data() -> Sample {
    Sample::NoData { reason: "connection refused".into() }
}

/// A UPS whose charge falls in proportion to load × time and reaches 0 when the battery is empty;
/// reports whole-percent charge and a firmware runtime `firmware_factor` times the truth.
struct Ups {
    charge: f64,
    /// Percent of charge per (percent load × second).
    k: f64,
    load: f64,
    firmware_factor: f64,
}

impl Ups {
    fn new(full_runtime_s: f64, load: f64) -> Self {
        Self { charge: 100.0, k: 100.0 / (full_runtime_s * load), load, firmware_factor: 1.0 }
    }

    fn remaining(&self) -> f64 {
        self.charge / (self.k * self.load)
    }

    fn drain(&mut self, dt: f64) {
        self.charge = (self.charge - self.k * self.load * dt).max(0.0);
    }

    fn sample(&self, status: &str) -> Sample {
        reading(
            status,
            Some(self.charge.round()),
            Some((self.remaining() * self.firmware_factor).round()),
            Some(self.load),
        )
    }
}

struct Run {
    policy: Policy,
    t: f64,
}

impl Run {
    fn new() -> Self {
        Self::with(PolicyConfig::default())
    }

    fn with(cfg: PolicyConfig) -> Self {
        Self { policy: Policy::new(cfg), t: 0.0 }
    }

    fn poll(&mut self, sample: &Sample) -> Decision {
        let d = self.policy.observe(self.t, sample, BUDGET);
        self.t += POLL;
        d
    }

    fn polls(&mut self, n: usize, sample: &Sample) -> Decision {
        let mut last = None;
        for _ in 0..n {
            last = Some(self.poll(sample));
        }
        last.expect("n > 0")
    }

    /// Runs the UPS on battery until the policy triggers; returns the decision and the true
    /// runtime left at that poll.
    fn until_trigger(&mut self, ups: &mut Ups, status: &str) -> (Decision, f64) {
        for _ in 0..100_000 {
            let d = self.poll(&ups.sample(status));
            if d.triggered {
                return (d, ups.remaining());
            }
            ups.drain(POLL);
            assert!(ups.charge > 0.0, "battery ran out without a trigger: {}", d.reason);
        }
        panic!("no trigger");
    }
}

#[test]
fn forced_shutdown_triggers_at_once_even_on_mains() {
    let mut run = Run::new();
    run.polls(5, &reading("OL", Some(100.0), Some(3000.0), Some(40.0)));
    let d = run.poll(&reading("OL FSD", Some(100.0), Some(3000.0), Some(40.0)));
    assert!(d.triggered);
    assert_eq!(d.cause, Some(TriggerCause::ForcedShutdown));
    assert_eq!(d.state, PowerState::Triggered);
    assert!(d.reason.contains("FSD"), "{}", d.reason);
}

#[test]
fn low_battery_on_battery_triggers_at_once() {
    let mut run = Run::new();
    run.polls(5, &reading("OL", Some(100.0), None, Some(40.0)));
    let d = run.poll(&reading("OB DISCHRG LB", Some(9.0), Some(100.0), Some(40.0)));
    assert!(d.triggered, "{}", d.reason);
    assert_eq!(d.cause, Some(TriggerCause::LowBattery));
    assert!(d.reason.contains("low battery"), "{}", d.reason);
}

#[test]
fn low_battery_while_on_mains_does_not_trigger() {
    let mut run = Run::new();
    let d = run.polls(10, &reading("OL CHRG LB", Some(5.0), Some(60.0), Some(40.0)));
    assert!(!d.triggered, "{}", d.reason);
    assert_eq!(d.state, PowerState::Online);
}

#[test]
fn debounce_needs_consecutive_low_polls() {
    let mut run = Run::new();
    let low = reading("OB DISCHRG", None, Some(200.0), Some(50.0));
    let d1 = run.poll(&low);
    let d2 = run.poll(&low);
    assert!(!d1.triggered && !d2.triggered);
    assert_eq!((d1.streak, d2.streak), (1, 2));
    assert!(d2.reason.contains("2/3"), "{}", d2.reason);
    let d3 = run.poll(&low);
    assert!(d3.triggered);
    assert_eq!(d3.cause, Some(TriggerCause::LowRuntime));
    assert!(d3.reason.contains("for 3/3 polls"), "{}", d3.reason);
    assert_eq!(d3.threshold_s, THRESHOLD);
}

#[test]
fn a_poll_above_the_threshold_restarts_the_count() {
    let low = reading("OB DISCHRG", None, Some(200.0), Some(50.0));
    let high = reading("OB DISCHRG", None, Some(2000.0), Some(50.0));
    // with a 1-poll median the firmware value follows every reading
    let mut run = Run::with(PolicyConfig { runtime_median_polls: 1, ..PolicyConfig::default() });
    run.polls(2, &low);
    assert_eq!(run.poll(&high).streak, 0);
    let d = run.polls(2, &low);
    assert!(!d.triggered, "{}", d.reason);
    assert!(run.poll(&low).triggered);
}

#[test]
fn mains_back_before_the_trigger_cancels_it() {
    let mut run = Run::new();
    let low = reading("OB DISCHRG", None, Some(200.0), Some(50.0));
    let mains = reading("OL CHRG", None, Some(200.0), Some(50.0));
    run.polls(2, &low);
    let d = run.polls(3, &mains);
    assert_eq!(d.streak, 0, "{}", d.reason);
    assert!(!run.polls(2, &low).triggered);
    assert!(run.poll(&low).triggered);
}

#[test]
fn brief_mains_between_battery_polls_does_not_cancel() {
    let mut run = Run::new();
    let low = reading("OB DISCHRG", None, Some(200.0), Some(50.0));
    let mains = reading("OL CHRG", None, Some(200.0), Some(50.0));
    run.polls(2, &low);
    let d = run.polls(2, &mains);
    assert_eq!(d.streak, 2);
    assert!(d.reason.contains("cancelled after mains is back for 3 polls (2/3)"), "{}", d.reason);
    assert!(run.poll(&low).triggered);
}

#[test]
fn once_triggered_nothing_cancels_it_until_reset() {
    let mut run = Run::new();
    run.polls(3, &reading("OB DISCHRG", None, Some(100.0), Some(50.0)));
    let mains = reading("OL CHRG", Some(100.0), Some(5000.0), Some(50.0));
    let d = run.polls(50, &mains);
    assert!(d.triggered);
    assert_eq!(d.state, PowerState::Triggered);
    assert_eq!(d.triggered_at, Some(4.0));
    assert!(d.reason.starts_with("shutdown triggered at t=4 s (low runtime)"), "{}", d.reason);
    let d = run.polls(5, &no_data());
    assert!(d.triggered);

    run.policy.reset();
    assert!(!run.policy.is_triggered());
    let d = run.poll(&mains);
    assert!(!d.triggered);
    assert_eq!(d.state, PowerState::Online);
}

#[test]
fn lost_data_on_battery_counts_down_and_triggers() {
    let mut run = Run::new();
    run.polls(10, &reading("OL", Some(100.0), Some(400.0), Some(50.0)));
    // 400 s left on battery, then silence: never online, and the countdown must cross 330 s
    let d = run.poll(&reading("OB DISCHRG", Some(100.0), Some(400.0), Some(50.0)));
    let start = d.t;
    let mut trigger = None;
    for _ in 0..100 {
        let d = run.poll(&no_data());
        assert_ne!(d.state, PowerState::Online);
        if d.triggered {
            trigger = Some(d);
            break;
        }
        assert_eq!(d.state, PowerState::Unknown);
        assert_eq!(d.estimate_source, Some(EstimateSource::Countdown));
    }
    let d = trigger.expect("countdown never triggered");
    assert_eq!(d.cause, Some(TriggerCause::BlindCountdown));
    let elapsed = d.t - start;
    // crosses 330 s after 70 s, then two more polls of debounce
    assert!((70.0..=76.0).contains(&elapsed), "triggered after {elapsed} s: {}", d.reason);
    assert!(d.reason.contains("no data while on battery"), "{}", d.reason);
}

#[test]
fn lost_data_on_battery_without_any_estimate_triggers() {
    let mut run = Run::new();
    run.poll(&reading("OB", None, None, None));
    let d = run.polls(3, &no_data());
    assert!(d.triggered, "{}", d.reason);
}

#[test]
fn lost_data_on_mains_counts_down_from_the_last_runtime_only_when_configured() {
    let mut run = Run::new();
    let mains = reading("OL", Some(100.0), Some(600.0), Some(50.0));
    run.polls(5, &mains);
    let d = run.polls(50, &no_data());
    assert!(!d.triggered, "{}", d.reason);
    assert_eq!(d.state, PowerState::Unknown);
    // 600 s of runtime, blind for longer than 600 − 330 s: an outage then could be ending now
    let d = run.polls(100, &no_data());
    assert!(d.triggered, "{}", d.reason);
    assert_eq!(d.cause, Some(TriggerCause::BlindCountdown));
    assert!(d.reason.contains("no data since last seen online"), "{}", d.reason);

    let mut run = Run::with(PolicyConfig { blind_countdown_when_online: false, ..PolicyConfig::default() });
    run.polls(5, &mains);
    let d = run.polls(1000, &no_data());
    assert!(!d.triggered, "{}", d.reason);
    assert_eq!(d.state, PowerState::Unknown);
}

#[test]
fn no_data_before_anything_was_seen_is_unknown() {
    let mut run = Run::new();
    let d = run.polls(1000, &no_data());
    assert!(!d.triggered);
    assert_eq!(d.state, PowerState::Unknown);
    assert_eq!(d.estimate_s, None);
}

#[test]
fn optimistic_firmware_is_caught_by_the_charge_slope() {
    // an aged battery: 500 s from full, the firmware says three times as much
    let mut ups = Ups::new(500.0, 60.0);
    ups.firmware_factor = 3.0;
    let mut run = Run::new();
    run.polls(10, &ups.sample("OL"));
    let (d, left) = run.until_trigger(&mut ups, "OB DISCHRG");
    assert_eq!(d.cause, Some(TriggerCause::LowRuntime));
    assert_eq!(d.estimate_source, Some(EstimateSource::ChargeSlope), "{}", d.reason);
    assert!(d.firmware_runtime_s.unwrap() > THRESHOLD, "{d:?}");
    assert!((300.0..THRESHOLD + 5.0).contains(&left), "triggered with {left:.0} s left: {}", d.reason);
    assert!(d.reason.contains("own estimate from charge slope (charge "), "{}", d.reason);
    assert!(d.reason.contains("; firmware says 1"), "{}", d.reason);
}

#[test]
fn firmware_runtime_missing_uses_the_charge_slope() {
    let mut ups = Ups::new(1200.0, 50.0);
    let mut run = Run::new();
    let mut decisions = 0;
    let (d, left) = loop {
        let sample = match ups.sample("OB DISCHRG") {
            Sample::Reading(r) => Sample::Reading(PowerReading { runtime_s: None, ..r }),
            s => s,
        };
        let d = run.poll(&sample);
        decisions += 1;
        if d.triggered {
            break (d, ups.remaining());
        }
        ups.drain(POLL);
        assert!(decisions < 10_000);
    };
    assert_eq!(d.firmware_runtime_s, None);
    assert_eq!(d.estimate_source, Some(EstimateSource::ChargeSlope));
    assert!((300.0..THRESHOLD + 5.0).contains(&left), "triggered with {left:.0} s left: {}", d.reason);
    assert!(d.reason.contains("firmware reports no battery.runtime"), "{}", d.reason);
}

#[test]
fn a_single_poll_runtime_spike_is_ignored() {
    let mut run = Run::new();
    let steady = reading("OB DISCHRG", Some(80.0), Some(1500.0), Some(40.0));
    run.polls(5, &steady);
    let d = run.poll(&reading("OB DISCHRG", Some(80.0), Some(3.0), Some(40.0)));
    assert!(!d.triggered, "{}", d.reason);
    assert!(d.estimate_s.unwrap() > THRESHOLD, "{d:?}");
    // a UPS that derives LB from that spike raises LB for the same single poll
    let d = run.poll(&reading("OB DISCHRG LB", Some(80.0), Some(0.0), Some(40.0)));
    assert!(!d.triggered, "{}", d.reason);
    assert!(d.reason.contains("counted as a low poll"), "{}", d.reason);
    let d = run.polls(20, &steady);
    assert!(!d.triggered, "{}", d.reason);
    assert_eq!(d.streak, 0);
}

#[test]
fn low_battery_that_persists_triggers_even_against_the_estimate() {
    let mut run = Run::new();
    run.polls(5, &reading("OB DISCHRG", Some(80.0), Some(1500.0), Some(40.0)));
    let lb = reading("OB DISCHRG LB", Some(80.0), Some(1500.0), Some(40.0));
    assert!(!run.polls(2, &lb).triggered);
    let d = run.poll(&lb);
    assert!(d.triggered, "{}", d.reason);
    assert_eq!(d.cause, Some(TriggerCause::LowBattery));
}

#[test]
fn a_load_step_shortens_the_estimate_at_once() {
    let mut ups = Ups::new(3000.0, 30.0);
    ups.firmware_factor = 2.0; // keep the firmware out of it
    let mut run = Run::new();
    for _ in 0..200 {
        run.poll(&ups.sample("OB DISCHRG"));
        ups.drain(POLL);
    }
    let before = run.poll(&ups.sample("OB DISCHRG")).own_estimate_s.expect("slope known after 400 s");
    assert!((before / ups.remaining() - 1.0).abs() < 0.05, "{before} vs {}", ups.remaining());
    ups.load = 75.0;
    let mut after = 0.0;
    for _ in 0..4 {
        ups.drain(POLL);
        after = run.poll(&ups.sample("OB DISCHRG")).own_estimate_s.unwrap_or(f64::NAN);
    }
    assert!((after / ups.remaining() - 1.0).abs() < 0.08, "{after} vs {}", ups.remaining());
    let (_, left) = run.until_trigger(&mut ups, "OB DISCHRG");
    assert!((300.0..THRESHOLD + 5.0).contains(&left), "triggered with {left:.0} s left");
}

#[test]
fn flapping_mains_keeps_what_the_battery_has_lost() {
    let mut ups = Ups::new(900.0, 60.0);
    ups.firmware_factor = 2.5;
    let mut run = Run::new();
    // 20 s on battery, 6 s on mains, over and over: the charge keeps falling
    let left = 'outer: loop {
        for _ in 0..10 {
            let d = run.poll(&ups.sample("OB DISCHRG"));
            if d.triggered {
                break 'outer ups.remaining();
            }
            ups.drain(POLL);
            assert!(ups.charge > 0.0, "ran out: {}", d.reason);
        }
        for _ in 0..3 {
            let d = run.poll(&ups.sample("OL CHRG"));
            assert!(!d.triggered);
        }
    };
    assert!((300.0..THRESHOLD + 5.0).contains(&left), "triggered with {left:.0} s left");
}

#[test]
fn a_second_outage_starts_from_the_charge_left() {
    let mut ups = Ups::new(1000.0, 50.0);
    ups.firmware_factor = 2.0;
    let mut run = Run::new();
    for _ in 0..250 {
        assert!(!run.poll(&ups.sample("OB DISCHRG")).triggered);
        ups.drain(POLL);
    }
    // mains back for a minute with the charge at about half
    let d = run.polls(30, &ups.sample("OL CHRG"));
    assert!(!d.triggered);
    assert_eq!(d.streak, 0);
    // the second outage: the slope learnt in the first one applies from its first poll
    let d = run.poll(&ups.sample("OB DISCHRG"));
    let own = d.own_estimate_s.expect("slope known from the first outage");
    assert!((own / ups.remaining() - 1.0).abs() < 0.05, "{own} vs {}", ups.remaining());
    let (_, left) = run.until_trigger(&mut ups, "OB DISCHRG");
    assert!((300.0..THRESHOLD + 5.0).contains(&left), "triggered with {left:.0} s left");
}

#[test]
fn reason_states_the_rule_and_the_numbers() {
    let mut run = Run::new();
    let d = run.poll(&reading("OB DISCHRG", Some(90.0), Some(1200.0), Some(50.0)));
    assert_eq!(
        d.reason,
        "on battery: estimated runtime 1200 s (firmware; charge slope not known yet) ≥ 1.10 × budget 300 s = 330 s"
    );
    let d = run.poll(&reading("OL", Some(90.0), Some(1200.0), Some(50.0)));
    assert!(d.reason.starts_with("on mains: runtime if power failed now 1200 s"), "{}", d.reason);
}

#[test]
fn config_rejects_unknown_fields_and_defaults_the_rest() {
    let cfg: PolicyConfig = serde_json::from_str(r#"{"debounce_polls": 4}"#).unwrap();
    assert_eq!(cfg.debounce_polls, 4);
    assert_eq!(cfg.runtime_safety_factor, 1.10);
    assert_eq!(cfg.mains_back_polls, 3);
    assert!(serde_json::from_str::<PolicyConfig>(r#"{"debounce": 4}"#).is_err());
    assert!(PolicyConfig::default().validate().is_empty());
    let bad = PolicyConfig { runtime_safety_factor: 0.5, debounce_polls: 0, ..PolicyConfig::default() };
    assert_eq!(bad.validate().len(), 2);
    // a policy on a bad config still works on sane values
    let mut policy = Policy::new(bad);
    assert_eq!(policy.config().debounce_polls, 1);
    assert!(policy.observe(0.0, &reading("OB", None, Some(10.0), None), BUDGET).triggered);
}

#[test]
fn time_going_backwards_or_nan_does_not_break_the_policy() {
    let mut policy = Policy::new(PolicyConfig::default());
    let s = reading("OB DISCHRG", Some(50.0), Some(1000.0), Some(40.0));
    policy.observe(100.0, &s, BUDGET);
    let d = policy.observe(50.0, &s, BUDGET);
    assert_eq!(d.t, 100.0);
    let d = policy.observe(f64::NAN, &s, f64::NAN);
    assert_eq!(d.t, 100.0);
    assert!(d.threshold_s.is_infinite());
}
