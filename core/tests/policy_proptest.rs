//! Arbitrary poll sequences never make the policy panic, and a trigger is never taken back.

use hecate_core::discharge::{CurvePoint, DischargeRecord};
use hecate_core::policy::{Policy, PolicyConfig, PowerState};
use hecate_core::power::{PowerReading, Sample, UpsStatus};
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Option<f64>> {
    prop_oneof![
        3 => (0.0f64..120.0).prop_map(Some),
        3 => (0.0f64..10_000.0).prop_map(Some),
        1 => Just(None),
        1 => prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(-1.0),
            Just(0.0),
            Just(1e300),
            Just(f64::MIN_POSITIVE),
        ]
        .prop_map(Some),
    ]
}

fn status() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        4 => Just("OL"),
        4 => Just("OB DISCHRG"),
        1 => Just("OL CHRG"),
        1 => Just("OB DISCHRG LB"),
        1 => Just("OL LB"),
        1 => Just("FSD OB"),
        1 => Just(""),
        1 => Just("BYPASS"),
        1 => Just("OL OB"),
    ]
}

fn sample() -> impl Strategy<Value = Sample> {
    prop_oneof![
        8 => (status(), value(), value(), value()).prop_map(|(s, charge, runtime, load)| {
            Sample::Reading(PowerReading {
                status: UpsStatus::parse(s),
                charge_pct: charge,
                runtime_s: runtime,
                load_pct: load,
                ..PowerReading::default()
            })
        }),
        1 => Just(Sample::NoData { reason: "timeout".into() }),
    ]
}

fn step() -> impl Strategy<Value = f64> {
    prop_oneof![8 => 0.5f64..10.0, 1 => Just(0.0), 1 => -5.0f64..0.0, 1 => 100.0f64..10_000.0]
}

fn config() -> impl Strategy<Value = PolicyConfig> {
    (0u32..6, 0u32..6, 0u32..8, 0u32..20, 0.0f64..50.0, 0.0f64..10.0, any::<bool>(), 0.5f64..2.5).prop_map(
        |(debounce, mains_back, spike, median, memory, drop, blind, peukert)| PolicyConfig {
            runtime_safety_factor: 1.1,
            debounce_polls: debounce,
            mains_back_polls: mains_back,
            spike_filter_polls: spike,
            runtime_median_polls: median,
            slope_memory_pct: memory,
            slope_min_drop_pct: drop,
            peukert_exponent: peukert,
            blind_countdown_when_online: blind,
        },
    )
}

/// A discharge history as a daemon might hand it over, from a file or a stretch of its own: any
/// numbers at all.
fn history() -> impl Strategy<Value = Vec<DischargeRecord>> {
    let point = (value(), value(), value()).prop_map(|(t, c, l)| CurvePoint {
        t_s: t.unwrap_or(0.0),
        charge_pct: c.unwrap_or(50.0),
        load_pct: l.unwrap_or(50.0),
    });
    let record = (prop::collection::vec(point, 0..60), value()).prop_map(|(points, q)| DischargeRecord {
        ended_at: String::new(),
        quantum_pct: q.unwrap_or(1.0),
        points,
    });
    prop::collection::vec(record, 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_and_a_trigger_stays(
        cfg in prop_oneof![Just(PolicyConfig::default()), config()],
        polls in prop::collection::vec((step(), sample()), 1..400),
        budget in prop_oneof![Just(298.1), 0.0f64..5000.0, Just(f64::NAN), Just(-1.0)],
        records in history(),
    ) {
        let mut policy = Policy::new(cfg);
        policy.set_discharge_history(&records);
        let mut t = 0.0;
        let mut triggered_at = None;
        for (dt, s) in &polls {
            t += dt;
            let d = policy.observe(t, s, budget);
            prop_assert!(!d.reason.is_empty());
            prop_assert!(d.t.is_finite());
            if let Some(e) = d.estimate_s {
                prop_assert!(e >= 0.0 && !e.is_nan(), "estimate {e}");
            }
            if let Some(at) = triggered_at {
                prop_assert!(d.triggered, "trigger taken back: {}", d.reason);
                prop_assert_eq!(d.state, PowerState::Triggered);
                prop_assert_eq!(d.triggered_at, Some(at));
            } else if d.triggered {
                triggered_at = d.triggered_at;
                prop_assert!(triggered_at.is_some());
            }
            if matches!(s, Sample::NoData { .. }) && !d.triggered {
                prop_assert_eq!(d.state, PowerState::Unknown);
            }
            if let Some(m) = &d.charge_model {
                prop_assert!(m.runtime_low_s <= m.runtime_s + 1e-6 && m.runtime_s <= m.runtime_high_s + 1e-6, "{m:?}");
            }
            if let Some(rec) = policy.take_discharge() {
                prop_assert!(rec.is_sane(), "{rec:?}");
            }
        }
    }
}
