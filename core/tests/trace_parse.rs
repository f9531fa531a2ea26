//! The trace format: comments ignored, columns by name, clear errors with line numbers.

use hecate_core::policy::PolicyConfig;
use hecate_core::power::Sample;
use hecate_core::trace::{self, Trace, TraceError};

#[test]
fn comments_are_ignored_and_columns_are_found_by_name() {
    let text = "# hecate-trace v1\n# battery_exhausted: 10\n\
                ups.load,t,extra,ups.status,battery.runtime\n\
                40,0,x,OL,1200\n\
                # a comment in the middle\n\
                41,1,y,OB DISCHRG,\n\
                ,2,,,\n";
    let trace = Trace::parse(text).unwrap();
    assert_eq!(trace.rows.len(), 3);
    let Sample::Reading(r) = &trace.rows[1].sample else { panic!("{:?}", trace.rows[1]) };
    assert!(r.status.on_battery());
    assert_eq!(r.load_pct, Some(41.0));
    assert_eq!(r.runtime_s, None);
    assert_eq!(r.charge_pct, None, "no battery.charge column");
    assert!(matches!(trace.rows[2].sample, Sample::NoData { .. }));
    assert_eq!(trace.at(1.5).unwrap().t, 1.0);
    assert!(trace.at(-1.0).is_none());
}

#[test]
fn errors_name_the_line() {
    let err = |text: &str| Trace::parse(text).unwrap_err().to_string();
    assert_eq!(err("# c\nt,ups.status\n0,OL\nx,OL\n"), "line 4: t: \"x\" is not a number");
    assert_eq!(err("t,ups.status,battery.charge\n0,OL\n"), "line 2: 2 fields where the header has 3");
    assert_eq!(err("t,battery.charge\n0,1\n"), "line 1: header has no \"ups.status\" column");
    assert_eq!(err("t,ups.status\n5,OL\n4,OL\n"), "line 3: t goes backwards (4 after 5)");
    assert_eq!(err("t,ups.status\n,OL\n"), "line 2: t is empty");
    assert_eq!(err("# only comments\n"), "line 1: no header row (expected t,ups.status,...)");
    assert!(matches!(Trace::parse("t,ups.status\n0,\"OL\n"), Err(TraceError::Parse { line: 2, .. })));
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "t,ups.status\n0,OL\n1,OL,extra\n").unwrap();
    let e = Trace::load(&path).unwrap_err().to_string();
    assert!(e.ends_with("bad.csv: line 3: 3 fields where the header has 2"), "{e}");
    assert!(Trace::load(&dir.path().join("missing.csv")).unwrap_err().to_string().starts_with("cannot read"));
    std::fs::write(dir.path().join("b.csv"), "").unwrap();
    std::fs::write(dir.path().join("a.csv"), "").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "").unwrap();
    let names: Vec<_> = trace::trace_files(dir.path())
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["a.csv", "b.csv", "bad.csv"]);
}

#[test]
fn replay_polls_on_a_virtual_clock_and_stops_at_the_first_trigger() {
    // one row a second; LB at t = 7 only: a 2 s poll sees rows 0, 2, 4, 6, 8 and misses it (the
    // firmware stops reporting a runtime on battery, so nothing contradicts the LB)
    let mut text = String::from("t,ups.status,battery.runtime\n");
    for t in 0..20 {
        let status = if t == 7 {
            "OB LB"
        } else if t >= 3 {
            "OB"
        } else {
            "OL"
        };
        let runtime = if t < 3 { "3000" } else { "" };
        text.push_str(&format!("{t},{status},{runtime}\n"));
    }
    let trace = Trace::parse(&text).unwrap();
    let cfg = PolicyConfig::default();
    assert_eq!(trace::replay(&trace, &cfg, 300.0, 2.0).triggered_at, None);
    let r = trace::replay(&trace, &cfg, 300.0, 1.0);
    assert_eq!(r.triggered_at, Some(7.0));
    assert!(r.reason.unwrap().contains("low battery"));
    // sparse rows: a 2 s poll takes the row at or just before its time
    let sparse = Trace::parse("t,ups.status,battery.runtime\n0,OL,3000\n5,OB LB,100\n9,OB LB,90\n").unwrap();
    assert_eq!(trace::replay(&sparse, &cfg, 300.0, 2.0).triggered_at, Some(6.0));
    // a non-positive interval replays every row
    assert_eq!(trace::replay(&sparse, &cfg, 300.0, 0.0).triggered_at, Some(5.0));
    assert_eq!(trace::replay(&Trace::default(), &cfg, 300.0, 2.0).triggered_at, None);
}

#[test]
fn a_trace_spanning_more_than_a_week_is_refused_at_its_line() {
    // Replayed, this would visit 5e14 polls: it must be refused, not replayed.
    let text = "t,ups.status,battery.runtime\n0,OL,1200\n1,OB DISCHRG,1100\n1e15,OB DISCHRG,1000\n";
    let e = Trace::parse(text).unwrap_err().to_string();
    assert!(e.starts_with("line 4: t = 1000000000000000 s is more than a week"), "{e}");
    let week = trace::MAX_SPAN_S;
    assert!(Trace::parse(&format!("t,ups.status\n0,OL\n{week},OL\n")).is_ok(), "a week is still a trace");
}
