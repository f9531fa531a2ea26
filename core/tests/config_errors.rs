//! A config Hecate refuses names the file, the line and the field, and lists every problem.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use hecate_core::config::{Config, ConfigError, Role};

// The core alone links no backends; a tiny power source lets these documents parse.
mod stub {
    use hecate_core::power::{PowerReading, PowerSource, PowerSourceConfig};
    use hecate_core::{BackendError, BuildContext};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct StubUps {
        pub name: String,
        #[serde(default)]
        pub poll_timeout: Option<hecate_core::duration::HumanDuration>,
    }

    #[typetag::serde(name = "stub_ups")]
    impl PowerSourceConfig for StubUps {
        fn name(&self) -> &str {
            &self.name
        }
        fn build(&self, _: &BuildContext) -> Result<Box<dyn PowerSource>, BackendError> {
            Err(BackendError::unsupported("stub"))
        }
    }

    #[allow(dead_code)]
    fn _unused(_: PowerReading) {}
}

fn load(yaml: &str) -> Result<Config, ConfigError> {
    Config::from_yaml(yaml, Path::new("/etc/hecate/test.yaml")).map(|(c, _)| c)
}

fn err(yaml: &str) -> (ConfigError, String) {
    let e = load(yaml).expect_err("config should be refused");
    let s = e.to_string();
    (e, s)
}

#[test]
fn a_valid_config_loads() {
    let c = load("host: a\npower_sources:\n  - { type: stub_ups, name: u1 }\n").unwrap();
    assert_eq!(c.host, "a");
    assert_eq!(c.power_sources.len(), 1);
}

#[test]
fn unknown_type_names_file_line_and_field() {
    let (e, s) = err("host: a\npower_sources:\n  - { type: nutt, name: u1 }\n");
    assert_eq!(e.problems.len(), 1);
    let p = &e.problems[0];
    assert_eq!(p.line, Some(3), "{s}");
    assert!(p.field.starts_with("power_sources[0]"), "{s}");
    assert!(p.message.contains("nutt"), "{s}");
    assert!(s.contains("/etc/hecate/test.yaml:3:"), "{s}");
}

#[test]
fn misspelt_field_names_the_field_and_its_line() {
    let (e, s) = err("host: a\npower_sources:\n  - type: stub_ups\n    name: u1\n    pol_timeout: 2s\n");
    let p = &e.problems[0];
    assert!(p.message.contains("unknown field `pol_timeout`"), "{s}");
    assert!(p.line == Some(3) || p.line == Some(5), "{s}");
    assert!(s.contains("/etc/hecate/test.yaml:"), "{s}");
}

#[test]
fn misspelt_top_level_field() {
    let (e, s) = err("host: a\npowr_sources: []\n");
    assert_eq!(e.problems[0].line, Some(2), "{s}");
    assert!(e.problems[0].message.contains("powr_sources"), "{s}");
}

#[test]
fn bad_duration_is_refused_with_its_line_and_field() {
    let (e, s) =
        err("host: a\ndaemon:\n  poll_interval: 2 parsecs\npower_sources:\n  - { type: stub_ups, name: u1 }\n");
    let p = &e.problems[0];
    assert_eq!(p.line, Some(3), "{s}");
    assert_eq!(p.field, "daemon.poll_interval", "{s}");
    assert!(p.message.contains("invalid duration"), "{s}");
}

#[test]
fn a_bare_number_is_not_a_duration() {
    let (e, s) = err("host: a\ndaemon:\n  poll_interval: 2\npower_sources:\n  - { type: stub_ups, name: u1 }\n");
    assert!(e.problems[0].message.contains("a unit is required"), "{s}");
}

#[test]
fn validation_collects_every_problem_with_lines() {
    let yaml = "\
host: a
daemon:
  poll_interval: 0s
power_sources:
  - { type: stub_ups, name: u1 }
  - { type: stub_ups, name: u1 }
shutdown:
  concurrency: 0
  ups_off: { source: nope }
";
    let (e, s) = err(yaml);
    let fields: Vec<&str> = e.problems.iter().map(|p| p.field.as_str()).collect();
    assert!(fields.contains(&"daemon.poll_interval"), "{s}");
    assert!(fields.contains(&"power_sources[1].name"), "{s}");
    assert!(fields.contains(&"shutdown.concurrency"), "{s}");
    assert!(fields.contains(&"shutdown.ups_off.source"), "{s}");
    let line_of = |f: &str| e.problems.iter().find(|p| p.field == f).and_then(|p| p.line);
    assert_eq!(line_of("daemon.poll_interval"), Some(3), "{s}");
    assert_eq!(line_of("power_sources[1].name"), Some(6), "{s}");
    assert_eq!(line_of("shutdown.concurrency"), Some(8), "{s}");
    assert_eq!(line_of("shutdown.ups_off.source"), Some(9), "{s}");
}

#[test]
fn a_yaml_syntax_error_has_a_line() {
    let (e, s) = err("host: a\npower_sources: [\n");
    assert!(e.problems[0].line.is_some(), "{s}");
}

#[test]
fn policy_problems_are_reported() {
    let (e, s) =
        err("host: a\npolicy:\n  runtime_safety_factor: 0.5\npower_sources:\n  - { type: stub_ups, name: u1 }\n");
    assert!(
        e.problems.iter().any(|p| p.field.starts_with("policy") && p.message.contains("runtime_safety_factor")),
        "{s}"
    );
}

#[test]
fn each_role_carries_its_own_settings() {
    let ups = "power_sources:\n  - { type: stub_ups, name: u1 }\n";
    // A role without its settings, or settings of the wrong role, do not parse: the type says so.
    let (e, s) = err(&format!("host: a\nrole: forwarder\n{ups}"));
    assert!(e.problems.iter().any(|p| p.field.starts_with("role")), "{s}");
    let (e, s) =
        err(&format!("host: a\nrole:\n  coordinator: {{ forwarders: [ {{ name: b, key_file: /t }} ] }}\n{ups}"));
    assert!(e.problems.iter().any(|p| p.field.starts_with("role") && p.message.contains("listen")), "{s}");
    let (e, s) = err(&format!(
        "host: a\nrole:\n  coordinator: {{ listen: \"127.0.0.1:1\", forwarders: [ {{ name: b, key_file: /t }} ], power_off_self_after: 2m }}\n{ups}"
    ));
    assert!(e.problems.iter().any(|p| p.message.contains("power_off_self_after")), "{s}");
    // The old `forwarding:` block is refused by name.
    let (e, s) = err(&format!("host: a\nforwarding: {{ key_file: /t }}\n{ups}"));
    assert!(e.problems.iter().any(|p| p.message.contains("forwarding")), "{s}");

    let (e, s) = err(&format!(
        "host: a\nrole:\n  forwarder: {{ coordinator_url: titan-db:9561, key_file: /t, timeout: 0s }}\n{ups}"
    ));
    assert!(
        e.problems.iter().any(|p| p.field == "role.forwarder.coordinator_url" && p.message.contains("http")),
        "{s}"
    );
    assert!(e.problems.iter().any(|p| p.field == "role.forwarder.timeout"), "{s}");
    assert!(s.contains("test.yaml:3"), "the line of the forwarder's settings: {s}");

    let ok = format!("host: a\nrole:\n  forwarder: {{ coordinator_url: http://titan-db:9561, key_file: /t }}\n{ups}");
    let (c, warnings) = Config::from_yaml(&ok, Path::new("t.yaml")).unwrap();
    let Role::Forwarder(f) = c.role else { panic!("a forwarder: {:?}", c.role) };
    assert_eq!(f.timeout.as_secs(), 30);
    assert!(warnings.is_empty(), "{warnings:?}");

    let (e, s) = err(&format!(
        "host: a\nrole:\n  coordinator: {{ listen: \"127.0.0.1:9561\", forwarders: [ {{ name: b, key_file: /t }} ], tls_cert_file: /c }}\n{ups}"
    ));
    assert!(e.problems.iter().any(|p| p.message.contains("go together")), "{s}");
    let (e, s) = err(&format!(
        "host: a\nrole:\n  forwarder: {{ coordinator_url: http://c:1, key_file: /t, ca_file: /ca }}\n{ups}"
    ));
    assert!(e.problems.iter().any(|p| p.field == "role.forwarder.ca_file"), "{s}");
    let plain = format!(
        "host: a\nrole:\n  coordinator: {{ listen: \"127.0.0.1:9561\", forwarders: [ {{ name: b, key_file: /t }} ] }}\n{ups}"
    );
    let (c, warnings) = Config::from_yaml(&plain, Path::new("t.yaml")).unwrap();
    assert!(matches!(c.role, Role::Coordinator(_)));
    assert!(warnings.iter().any(|w| w.contains("plain http")), "{warnings:?}");
}

#[test]
fn power_off_self_after_belongs_to_a_forwarder_that_powers_itself_off() {
    let ups = "power_sources:\n  - { type: stub_ups, name: u1 }\n";
    let fwd = "role:\n  forwarder: { coordinator_url: http://c:1, key_file: /t, power_off_self_after: 2m }\n";
    let (e, s) = err(&format!("host: a\n{fwd}{ups}"));
    assert!(
        e.problems
            .iter()
            .any(|p| p.field == "role.forwarder.power_off_self_after" && p.message.contains("power_off_self")),
        "{s}"
    );

    // (with ups_off: power_off_self without it is warned about on its own, the power race)
    let off = "shutdown: { power_off_self: true, ups_off: { source: u1, delay: 2m } }\n";
    let (c, warnings) = Config::from_yaml(&format!("host: a\n{fwd}{off}{ups}"), Path::new("t.yaml")).unwrap();
    let Role::Forwarder(f) = c.role else { panic!("a forwarder") };
    assert_eq!(f.power_off_self_after.map(|d| d.as_secs()), Some(120));
    assert!(warnings.is_empty(), "{warnings:?}");
    // Without it, power_off_self on a forwarder covers only its fallback plan: say so.
    let bare = "role:\n  forwarder: { coordinator_url: http://c:1, key_file: /t }\n";
    let (_, warnings) = Config::from_yaml(&format!("host: a\n{bare}{off}{ups}"), Path::new("t.yaml")).unwrap();
    assert!(warnings.iter().any(|w| w.contains("power_off_self_after")), "{warnings:?}");
}

#[test]
fn values_that_would_panic_at_run_time_are_refused_with_their_line_and_field() {
    let yaml = "\
host: a
role:
  forwarder:
    coordinator_url: http://c:1
    key_file: /t
    timeout: 5000y
    power_off_self_after: 5000y
daemon:
  poll_interval: 1000y
shutdown:
  concurrency: 18446744073709551615
  power_off_self: true
startup:
  api_timeout: 500000000000y
budget:
  window: 100000
policy:
  debounce_polls: 4000000000
power_sources:
  - { type: stub_ups, name: u1 }
";
    let (e, s) = err(yaml);
    let at = |field: &str| e.problems.iter().find(|p| p.field == field).map(|p| (p.line, p.message.clone()));
    for (field, line) in [
        ("role.forwarder.timeout", 6),
        ("role.forwarder.power_off_self_after", 7),
        ("daemon.poll_interval", 9),
        ("shutdown.concurrency", 11),
        ("startup.api_timeout", 14),
        ("budget.window", 16),
        ("policy.debounce_polls", 18),
    ] {
        let (l, message) = at(field).unwrap_or_else(|| panic!("{field} not refused: {s}"));
        assert_eq!(l, Some(line), "{field}: {s}");
        assert!(message.contains("must be"), "{field}: {s}");
        assert!(s.contains(&format!("/etc/hecate/test.yaml:{line}:")), "{field}: {s}");
    }
    assert!(s.contains("daemon.poll_interval: must be between 100ms and 1m, got 1000years"), "{s}");
    assert!(s.contains("shutdown.concurrency: must be between 1 and 1024, got 18446744073709551615"), "{s}");

    // The limits themselves are accepted.
    let edge = "\
host: a
daemon: { poll_interval: 1m, power_return_settle: 1d }
shutdown: { concurrency: 1024, step_timeout: 1h, drain_timeout: 0s, controller_timeout: 1ms }
startup: { concurrency: 1, nodes_ready_timeout: 1d }
budget: { window: 1000, min_runs: 1000, default_shutdown_budget: 1d }
power_sources:
  - { type: stub_ups, name: u1 }
";
    load(edge).unwrap();
}

/// Issue 15: the coordinator lists each forwarder with its own key; the old shared `token_file`
/// is refused with a message saying exactly what to change.
#[test]
fn forwarders_are_listed_each_with_its_own_key() {
    let ups = "power_sources:\n  - { type: stub_ups, name: u1 }\n";
    // The layout before issue 15, on either side: refused, saying what to write instead.
    for old in [
        "role:\n  coordinator: { listen: \"127.0.0.1:9561\", token_file: /etc/hecate/forwarding.token }\n",
        "role:\n  forwarder: { coordinator_url: http://c:1, token_file: /etc/hecate/forwarding.token }\n",
    ] {
        let (e, s) = err(&format!("host: tethys\n{old}{ups}"));
        assert!(
            e.problems.iter().any(|p| p.message.contains("no longer uses a shared token")
                && p.message.contains("forwarders: [ { name: FORWARDER_HOST, key_file: FILE } ]")
                && p.message.contains("rename `token_file` to `key_file`")),
            "{s}"
        );
        assert!(s.contains("test.yaml:3"), "the line of the old key: {s}");
    }

    let coordinator = |list: &str, more: &str| {
        format!("host: a\nrole:\n  coordinator:\n    listen: \"127.0.0.1:9561\"\n    forwarders: {list}\n{more}{ups}")
    };
    let (e, s) = err(&coordinator("[]", ""));
    assert!(e.problems.iter().any(|p| p.field == "role.coordinator.forwarders"), "{s}");
    let (e, s) = err(&coordinator(
        "[ { name: tethys, key_file: /a }, { name: tethys, key_file: /b }, { name: \"bad name\", key_file: /c }, { name: x, key_file: \"\" } ]",
        "    max_clock_skew: 2h\n",
    ));
    for (field, needle) in [
        ("role.coordinator.forwarders[1].name", "duplicate forwarder `tethys`"),
        ("role.coordinator.forwarders[2].name", "letters, digits"),
        ("role.coordinator.forwarders[3].key_file", "must not be empty"),
        ("role.coordinator.max_clock_skew", "10m"),
    ] {
        assert!(e.problems.iter().any(|p| p.field == field && p.message.contains(needle)), "{field}: {s}");
    }
    let many: Vec<String> = (0..65).map(|i| format!("{{ name: f{i}, key_file: /k{i} }}")).collect();
    let (e, s) = err(&coordinator(&format!("[ {} ]", many.join(", ")), ""));
    assert!(e.problems.iter().any(|p| p.message.contains("at most 64")), "{s}");

    let (c, warnings) = Config::from_yaml(
        &coordinator("[ { name: tethys, key_file: /k }, { name: rhea, key_file: /k } ]", ""),
        Path::new("t.yaml"),
    )
    .unwrap();
    let Role::Coordinator(k) = c.role else { panic!("a coordinator") };
    assert_eq!(k.max_clock_skew.as_secs(), 60, "the default window");
    assert!(warnings.iter().any(|w| w.contains("share the key file")), "{warnings:?}");

    // A forwarder's host is its name at the coordinator.
    let (e, s) =
        err(&format!("host: \"tethys 2\"\nrole:\n  forwarder: {{ coordinator_url: http://c:1, key_file: /k }}\n{ups}"));
    assert!(e.problems.iter().any(|p| p.field == "host" && p.message.contains("its name at the coordinator")), "{s}");
}

#[test]
fn the_power_cycle_settings_have_ranges_and_the_power_race_is_warned() {
    let yaml = "\
host: a
daemon: { startup_on_power_return: true, restart_min_charge: 101 }
shutdown:
  pdb_timeout: 2h
  max_pod_grace: 2h
  power_off_timeout: 0s
  soft_off_timeout: 2h
  off_silence: 0s
startup:
  clock_sync_timeout: 2d
power_sources:
  - { type: stub_ups, name: u1 }
";
    let e = load(yaml).unwrap_err();
    let s = e.to_string();
    for (field, line) in [
        ("daemon.restart_min_charge", 2),
        ("shutdown.pdb_timeout", 4),
        ("shutdown.max_pod_grace", 5),
        ("shutdown.power_off_timeout", 6),
        ("shutdown.soft_off_timeout", 7),
        ("shutdown.off_silence", 8),
        ("startup.clock_sync_timeout", 10),
    ] {
        let p = e.problems.iter().find(|p| p.field == field).unwrap_or_else(|| panic!("{field} not refused: {s}"));
        assert_eq!(p.line, Some(line), "{field}: {s}");
    }

    // The soft off must leave room for the forced one within the step.
    let e = load("host: a\nshutdown: { power_off_timeout: 5m, soft_off_timeout: 5m }\npower_sources: [ { type: stub_ups, name: u1 } ]\n")
        .unwrap_err();
    assert!(e.to_string().contains("shutdown.soft_off_timeout: must be shorter than `power_off_timeout`"), "{e}");

    // The defaults hold, and the power race is warned about.
    let (cfg, warnings) = Config::from_yaml(
        "host: a\nshutdown: { power_off_self: true }\npower_sources: [ { type: stub_ups, name: u1 } ]\n",
        Path::new("/etc/hecate/test.yaml"),
    )
    .unwrap();
    let s = &cfg.shutdown;
    let secs = |d: hecate_core::duration::HumanDuration| d.as_secs();
    assert_eq!(
        [
            secs(s.pdb_timeout),
            secs(s.max_pod_grace),
            secs(s.power_off_timeout),
            secs(s.soft_off_timeout),
            secs(s.off_silence)
        ],
        [30, 60, 600, 300, 30]
    );
    assert!(!s.evict_unmanaged && !s.delete_emptydir_data);
    assert_eq!(cfg.startup.clock_sync_timeout, None, "the clock gate is off by default");
    assert!(warnings.iter().any(|w| w.contains("power_off_self without shutdown.ups_off")), "{warnings:?}");
}

/// Issue 17: four mistakes in one file are four problems, each at its line, in file order, with
/// the nearest known name for a misspelt one; what could not be checked is said.
#[test]
fn every_problem_the_parser_allows_is_listed_with_the_nearest_known_name() {
    let yaml = "host: a\n\
                daemon:\n  poll_intervall: 2s\n\
                policy:\n  debounce_polls: three\n\
                budget:\n  default_shutdown_budget: 5\n\
                power_sources:\n  - { type: stub_ups, name: u1, poll_timout: 1s }\n\
                nodes:\n  - { name: n1, address: 10.0.0.1, role: servr, controllers: [] }\n";
    let (e, s) = err(yaml);
    let got: Vec<(Option<u64>, &str)> = e.problems.iter().map(|p| (p.line, p.field.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(3), "daemon.poll_intervall"),
            (Some(5), "policy.debounce_polls"),
            (Some(7), "budget.default_shutdown_budget"),
            (Some(9), "power_sources[0].poll_timout"),
            (Some(11), "nodes[0].role"),
        ],
        "{s}"
    );
    assert!(s.starts_with("/etc/hecate/test.yaml: 5 problems found"), "{s}");
    assert!(s.contains("unknown field `poll_intervall`") && s.contains("did you mean `poll_interval`?"), "{s}");
    assert!(s.contains("did you mean `poll_timeout`?"), "{s}");
    assert!(s.contains("unknown variant `servr`") && s.contains("did you mean `server`?"), "{s}");
    assert!(s.contains("note: the ranges and the references between sections are checked once the file parses"), "{s}");
    // Nothing near enough: no guess.
    let (_, s) = err("host: a\npower_sources: []\ndaemon: { zzzzzz: 1 }\n");
    assert!(!s.contains("did you mean"), "{s}");
}

#[test]
fn a_yaml_syntax_error_stops_the_parser_and_says_so() {
    let (e, s) = err("host: a\npower_sources:\n  - { type: stub_ups, name: \"u1 }\nnodes: [\n");
    assert_eq!(e.problems.len(), 1, "{s}");
    assert!(s.contains("note: this is a YAML syntax error: the parser cannot read past it"), "{s}");
}

/// The JSON Schema (`hecate config schema`) carries the ranges `validate` checks: every number
/// in the core's sections has both bounds, a value at each bound passes and one just past it is
/// refused, naming the field.
#[test]
fn the_schema_carries_the_ranges_the_checks_enforce() {
    let schema = serde_json::to_value(schemars::schema_for!(Config)).unwrap();
    let mut checked = 0;
    for (def, section) in [
        ("PolicyConfig", "policy"),
        ("BudgetConfig", "budget"),
        ("DaemonConfig", "daemon"),
        ("ShutdownConfig", "shutdown"),
        ("StartupConfig", "startup"),
    ] {
        let props = schema["$defs"][def]["properties"].as_object().unwrap_or_else(|| panic!("no {def} in the schema"));
        for (name, p) in props {
            let ty = p["type"].to_string();
            let integer = ty.contains("integer");
            if !integer && !ty.contains("number") {
                continue;
            }
            let field = format!("{section}.{name}");
            let max = p["maximum"].as_f64().unwrap_or_else(|| panic!("{field}: no maximum in the schema: {p}"));
            let (min, exclusive) = match (p["minimum"].as_f64(), p["exclusiveMinimum"].as_f64()) {
                (Some(m), None) => (m, false),
                (None, Some(m)) => (m, true),
                _ => panic!("{field}: no minimum in the schema: {p}"),
            };
            let step = if integer { 1.0 } else { 0.01 };
            let yaml = |v: f64| {
                let v = if integer { format!("{}", v as i64) } else { format!("{v}") };
                format!("host: a\npower_sources:\n  - {{ type: stub_ups, name: u1 }}\n{section}: {{ {name}: {v} }}\n")
            };
            let passes = |v: f64| load(&yaml(v)).map(|_| ()).map_err(|e| e.to_string());
            let refused = |v: f64| match load(&yaml(v)) {
                Ok(_) => Err(format!("{field} = {v} passes, the schema says it should not")),
                Err(e) if e.problems.iter().any(|p| p.field == field) => Ok(()),
                Err(e) => Err(format!("{field} = {v} refused for another reason: {e}")),
            };
            passes(max).unwrap_or_else(|e| panic!("{field} = {max} (the schema's maximum) is refused: {e}"));
            refused(max + step).unwrap();
            if exclusive {
                refused(min).unwrap();
                passes(min + step).unwrap_or_else(|e| panic!("{field} just above {min} is refused: {e}"));
            } else {
                passes(min).unwrap_or_else(|e| panic!("{field} = {min} (the schema's minimum) is refused: {e}"));
                // An unsigned count cannot be written below 0: the parser refuses it anyway.
                if !(integer && min == 0.0) {
                    refused(min - step).unwrap();
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 13, "only {checked} numbers checked");
}
