//! The exact set of backends linked into the binary. A backend whose registration the linker
//! dropped (or that was never added to its `mod` list) fails here instead of at 3 a.m.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use hecate_core::registry::{BackendRole, backends};

#[test]
fn registered_backends_are_exactly_the_expected_set() {
    hecate::init_process();
    let mut got: Vec<(BackendRole, &str)> = backends().iter().map(|b| (b.role, b.type_name)).collect();
    got.sort();
    let mut want = vec![
        (BackendRole::PowerSource, "nut"),
        (BackendRole::PowerSource, "simulated"),
        (BackendRole::NodeController, "simulated"),
        (BackendRole::NodeController, "ssh_systemd"),
        (BackendRole::NodeController, "redfish"),
        (BackendRole::NodeController, "ipmi"),
        (BackendRole::NodeController, "wol"),
        (BackendRole::ClusterApi, "simulated"),
        (BackendRole::ClusterApi, "kube"),
        (BackendRole::GitOps, "simulated"),
        (BackendRole::GitOps, "flux_gitea"),
        (BackendRole::Notifier, "log"),
        (BackendRole::Notifier, "webhook"),
        (BackendRole::Notifier, "ntfy"),
        (BackendRole::Notifier, "command"),
        (BackendRole::Notifier, "email"),
    ];
    want.sort();
    assert_eq!(got, want);
}

/// Every registry row must also be known to typetag under the same name: a YAML document with
/// only `type: NAME` must fail for a missing field, never for an unknown variant.
#[test]
fn every_registered_name_is_known_to_yaml() {
    hecate::init_process();
    for b in backends() {
        let item = format!("{{ type: {}, zzz_probe: 1 }}", b.type_name);
        let yaml = match b.role {
            BackendRole::PowerSource => format!("host: a\npower_sources: [ {item} ]\n"),
            BackendRole::NodeController => format!(
                "host: a\npower_sources: []\nnodes: [ {{ name: n, address: x, role: agent, controllers: [ {item} ] }} ]\n"
            ),
            BackendRole::ClusterApi => format!("host: a\npower_sources: []\ncluster: {item}\n"),
            BackendRole::GitOps => format!("host: a\npower_sources: []\ngitops: {item}\n"),
            BackendRole::Notifier => format!("host: a\npower_sources: []\nnotifiers: [ {item} ]\n"),
        };
        let err = hecate_core::config::Config::from_yaml(&yaml, std::path::Path::new("probe.yaml"))
            .expect_err("probe field must be refused")
            .to_string();
        assert!(
            !err.contains("unknown variant"),
            "{} {} is listed but YAML does not know it: {err}",
            b.role,
            b.type_name
        );
        assert!(
            err.contains("zzz_probe") || err.contains("missing field"),
            "{} {}: unexpected error {err}",
            b.role,
            b.type_name
        );
    }
}

#[test]
fn the_schema_offers_every_backend() {
    hecate::init_process();
    let schema = serde_json::to_string(&schemars::schema_for!(hecate_core::config::Config)).unwrap();
    for b in backends() {
        assert!(schema.contains(&format!("\"const\":\"{}\"", b.type_name)), "schema lacks {}", b.type_name);
    }
}

/// Every number a config takes, the backends' included, has both bounds in the JSON Schema
/// (`hecate config schema`), so an editor that validates against it catches what `config check`
/// would refuse.
#[test]
fn every_number_in_the_schema_has_both_bounds() {
    hecate::init_process();
    let schema = serde_json::to_value(schemars::schema_for!(hecate_core::config::Config)).unwrap();
    let mut numbers = Vec::new();
    collect_numbers(&schema, "", &mut numbers);
    let unbounded: Vec<&String> = numbers
        .iter()
        .filter(|(_, p)| {
            let min = p.get("minimum").or_else(|| p.get("exclusiveMinimum"));
            min.is_none() || p.get("maximum").is_none()
        })
        .map(|(path, _)| path)
        .collect();
    assert!(unbounded.is_empty(), "numbers without a minimum or a maximum: {unbounded:#?}");
    // the backends' own: the ports, the cipher suite, replicas, the simulation's percentages
    assert!(numbers.len() >= 25, "only {} numbers found: {numbers:#?}", numbers.len());
}

fn collect_numbers(node: &serde_json::Value, path: &str, out: &mut Vec<(String, serde_json::Value)>) {
    match node {
        serde_json::Value::Object(map) => {
            let ty = map.get("type").map(ToString::to_string).unwrap_or_default();
            if ty.contains("integer") || ty.contains("number") {
                out.push((path.to_string(), node.clone()));
            }
            for (k, v) in map {
                collect_numbers(v, &format!("{path}/{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_numbers(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// A backend's bounds in the schema are the ones `config check` enforces: the simulated power
/// source's (exclusive minimums among them) and an SSH controller's port, at each bound and
/// just past it.
#[test]
fn backend_bounds_in_the_schema_are_the_ones_config_check_enforces() {
    use hecate_core::config::Config;
    hecate::init_process();
    let load = |ups: &str, controller: &str| {
        let yaml = format!(
            "host: a\npower_sources:\n  - {{ type: simulated, name: u1{ups} }}\nnodes:\n  - name: n1\n    address: 127.0.0.1\n    role: server\n    controllers:\n      - {{ type: ssh_systemd, user: hecate, identity_file: /etc/hecate/id, known_hosts: /etc/hecate/known_hosts{controller} }}\n"
        );
        Config::from_yaml(&yaml, std::path::Path::new("test.yaml")).map(|_| ()).map_err(|e| e.to_string())
    };
    load("", "").unwrap();
    for (field, past_min, at_min, at_max, past_max) in [
        ("load", "0", "0.01", "200", "200.01"),
        ("initial_charge", "-0.01", "0", "100", "100.01"),
        ("low_battery_charge", "-0.01", "0", "100", "100.01"),
        ("firmware_optimism", "0", "0.01", "10", "10.01"),
        ("speed", "0", "0.01", "10000", "10000.01"),
    ] {
        for v in [at_min, at_max] {
            load(&format!(", {field}: {v}"), "").unwrap_or_else(|e| panic!("{field} = {v} is refused: {e}"));
        }
        for v in [past_min, past_max] {
            let e = load(&format!(", {field}: {v}"), "").expect_err(&format!("{field} = {v} passes"));
            assert!(e.contains(field), "{field} = {v}: {e}");
        }
    }
    load("", ", port: 1").unwrap();
    load("", ", port: 65535").unwrap();
    let e = load("", ", port: 0").unwrap_err();
    assert!(e.contains("port"), "{e}");
}
