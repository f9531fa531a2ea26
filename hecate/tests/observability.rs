//! What operators look at, shipped in packaging/: the Grafana dashboard
//! (`packaging/grafana/hecate.json`) and the Prometheus alert rules
//! (`packaging/prometheus/hecate-rules.yaml`). Every metric they query must be one the real
//! daemon exports (checked against a live scrape), the rules must pass `promtool check rules`,
//! and each alert must fire on a synthetic series (`promtool test rules` on
//! `tests/prometheus/hecate-rules.test.yaml`). Only promtool's binary runs: no Prometheus server.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hecate_test_support::{HecateDaemon, free_port, promtool, wait_until};

/// Series that are Prometheus's own, not the daemon's.
const PROMETHEUS_OWN: &[&str] = &["up"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every `expr` (and templating `query`/`definition`) in a JSON or YAML document.
fn expressions(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains('(') => out.push(s.clone()),
                    _ => expressions(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// The metric names in PromQL expressions: identifiers followed by `{`, `[`, a space, `)` or the
/// end that are not functions, keywords or label names.
fn metric_names(exprs: &[String]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for e in exprs {
        // Label matchers and strings are no metric names: drop what is inside {...} and "...".
        let mut plain = String::new();
        let (mut depth, mut quoted) = (0, false);
        for c in e.chars() {
            match c {
                '"' => quoted = !quoted,
                '{' if !quoted => depth += 1,
                '}' if !quoted => depth -= 1,
                _ if quoted || depth > 0 => {}
                c => plain.push(c),
            }
        }
        let words = plain.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        for w in words {
            if w.starts_with("hecate_") || PROMETHEUS_OWN.contains(&w) {
                names.insert(w.to_string());
            }
        }
    }
    names
}

fn dashboard() -> serde_json::Value {
    let path = repo().join("packaging/grafana/hecate.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rules() -> serde_json::Value {
    let path = repo().join("packaging/prometheus/hecate-rules.yaml");
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn queried_names() -> BTreeSet<String> {
    let mut exprs = Vec::new();
    expressions(&dashboard(), &mut exprs);
    expressions(&rules(), &mut exprs);
    metric_names(&exprs)
}

#[test]
fn the_metric_names_are_read_out_of_promql() {
    let names = metric_names(&[
        r#"(hecate_a < 1.5 * hecate_b) and on (instance, job, ups) (hecate_c{flag="OB", x="hecate_not"} == 1)"#.into(),
        "increase(hecate_d_total[10m]) > 0".into(),
        "up{job=\"hecate\"} == 0".into(),
        "time() - hecate_e".into(),
    ]);
    let want: BTreeSet<String> =
        ["hecate_a", "hecate_b", "hecate_c", "hecate_d_total", "hecate_e", "up"].map(String::from).into();
    assert_eq!(names, want);
}

fn scrape(port: u16) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

/// The names with at least one sample in a text exposition (a `# HELP` line alone is none).
fn scraped_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| n.starts_with("hecate_"))
        .map(String::from)
        .collect()
}

/// Standard base64 with padding, for the token's claims.
fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The daemon set up so that every series the dashboard and the rules use has a sample: a
/// simulated UPS that goes on battery (the own runtime estimate needs a falling charge), a
/// coordinator with one forwarder, a node controller that cannot be built (its SSH key is
/// missing), a kubeconfig whose token expires in 20 days, and a runs.json with a shutdown and a
/// startup in it.
#[test]
fn every_metric_the_dashboard_and_the_rules_query_is_in_a_live_scrape_of_the_daemon() {
    let queried = queried_names();
    assert!(queried.len() > 20, "too few names found, the extraction broke: {queried:?}");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("tethys.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let exp = hecate_test_support::unix_now() as u64 + 20 * 86_400;
    let claims = base64(format!("{{\"iss\":\"kubernetes/serviceaccount\",\"exp\":{exp}}}").as_bytes());
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  \
             user:\n    token: eyJhbGciOiJSUzI1NiJ9.{}.c2ln\n",
            claims.trim_end_matches('=')
        ),
    )
    .unwrap();
    let (metrics_port, listen_port) =
        (free_port(std::net::Ipv4Addr::LOCALHOST), free_port(std::net::Ipv4Addr::LOCALHOST));
    let yaml = format!(
        r#"host: observed
role:
  coordinator:
    listen: 127.0.0.1:{listen_port}
    forwarders: [ {{ name: tethys, key_file: {key} }} ]
daemon: {{ poll_interval: 200ms, metrics_listen: "127.0.0.1:{metrics_port}" }}
# The preflight metrics exist once a preflight has run: the first comes after one interval.
preflight: {{ interval: 10s }}
budget: {{ default_shutdown_budget: 1s }}
power_sources:
  - type: simulated
    name: obs-ups
    battery_runtime: 2m
    load: 40
    script: [ {{ at: 1s, event: mains_lost }} ]
cluster: {{ type: kube, kubeconfig: {kubeconfig} }}
nodes:
  - name: n1
    address: 127.0.0.1
    role: server
    controllers:
      - {{ type: ssh_systemd, user: hecate, identity_file: {missing}, known_hosts: {missing} }}
notifiers: [ {{ type: log }} ]
"#,
        key = key.display(),
        kubeconfig = kubeconfig.display(),
        missing = dir.path().join("missing").display(),
    );
    let runs = r#"[
  {"kind": "shutdown", "started_at": "2026-01-04T02:11:09Z", "duration_s": 95.5, "outcome": "partial",
   "stages": [{"name": "cordon", "duration_s": 0.5}, {"name": "drain", "duration_s": 60.0}, {"name": "power-off", "duration_s": 35.0}]},
  {"kind": "startup", "started_at": "2026-01-04T03:00:00Z", "duration_s": 120.0, "outcome": "success",
   "stages": [{"name": "power-on", "duration_s": 20.0}, {"name": "wait-ready", "duration_s": 100.0}]}
]"#;
    let daemon = HecateDaemon::start_with(Path::new(env!("CARGO_BIN_EXE_hecate")), &yaml, |state| {
        std::fs::write(state.join("runs.json"), runs).unwrap();
    });
    let want: BTreeSet<&String> = queried.iter().filter(|n| !PROMETHEUS_OWN.contains(&n.as_str())).collect();
    let mut last = String::new();
    let missing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until("every queried metric in the scrape", Duration::from_secs(60), || {
            last = scrape(metrics_port)?;
            let have = scraped_names(&last);
            let missing: Vec<&&String> = want.iter().filter(|n| !have.contains(n.as_str())).collect();
            if missing.is_empty() { Ok(()) } else { Err(format!("missing {missing:?}")) }
        })
    }));
    let log = daemon.stop(Duration::from_secs(5));
    if let Err(e) = missing {
        panic!(
            "{}\n--- last scrape:\n{last}\n--- daemon log:\n{log}",
            e.downcast_ref::<String>().cloned().unwrap_or_default()
        );
    }
    // The series that say what the operator looks for, with their values.
    for line in [
        "hecate_build_info{version=\"",
        "hecate_last_run_outcome{kind=\"shutdown\",outcome=\"partial\"} 1",
        "hecate_last_run_outcome{kind=\"shutdown\",outcome=\"success\"} 0",
        "hecate_last_run_stage_duration_seconds{kind=\"shutdown\",stage=\"drain\"} 60",
        "hecate_last_run_duration_seconds{kind=\"startup\"} 120",
        // 2026-01-04T03:00:00Z + 120 s
        "hecate_last_run_timestamp_seconds{kind=\"startup\"} 1767495720",
        "hecate_ups_output_voltage_volts{ups=\"obs-ups\"} 230",
        "hecate_shutdown_budget_learned 0",
        "hecate_backend_unavailable{backend=\"nodes[0].controllers[0]\"} 1",
        "hecate_forwarded_triggers_total{forwarder=\"tethys\"} 0",
        "hecate_kube_credential_expiry_days{credential=\"token\"} 19.9",
    ] {
        assert!(last.contains(line), "{line:?} not in the scrape:\n{last}");
    }
}

#[test]
fn promtool_accepts_the_rules_and_every_alert_fires_in_its_unit_tests() {
    let promtool = promtool();
    let rules_file = repo().join("packaging/prometheus/hecate-rules.yaml");
    let out = Command::new(&promtool).args(["check", "rules"]).arg(&rules_file).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool check rules:\n{text}");

    let tests = repo().join("tests/prometheus/hecate-rules.test.yaml");
    let out = Command::new(&promtool).args(["test", "rules"]).arg(&tests).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("SUCCESS"), "promtool test rules:\n{text}");

    // Every alert in the rules has a case in the unit tests that expects it to fire.
    let mut alerts = BTreeSet::new();
    for group in rules()["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            alerts.insert(rule["alert"].as_str().unwrap().to_string());
        }
    }
    let cases: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(&tests).unwrap()).unwrap();
    let mut fired = BTreeSet::new();
    for t in cases["tests"].as_array().unwrap() {
        for a in t["alert_rule_test"].as_array().unwrap() {
            if a["exp_alerts"].as_array().is_some_and(|e| !e.is_empty()) {
                fired.insert(a["alertname"].as_str().unwrap().to_string());
            }
        }
    }
    let untested: Vec<&String> = alerts.difference(&fired).collect();
    assert!(untested.is_empty(), "alerts no unit test fires: {untested:?}");
}

/// The dashboard is one Grafana can import: unique panel ids, every query with a datasource and
/// a unique refId within its panel, every panel on the 24-column grid.
#[test]
fn the_dashboard_is_well_formed() {
    let d = dashboard();
    assert_eq!(d["uid"], "hecate-power");
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id in {p}");
        let g = &p["gridPos"];
        assert!(g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24, "{p}");
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "a panel without queries: {}", p["title"]);
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(refs.insert(t["refId"].as_str().unwrap()), "duplicate refId in {}", p["title"]);
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    let titles: Vec<&str> =
        panels.iter().filter(|p| p["type"] == "row").map(|p| p["title"].as_str().unwrap()).collect();
    assert_eq!(titles, ["Overview", "UPS $ups", "Runs", "Preflight"]);
}
