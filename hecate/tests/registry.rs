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
