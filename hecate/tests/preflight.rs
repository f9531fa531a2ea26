//! `hecate preflight` against real peers: OpenSSH sshd nodes whose user has the sudoers rule
//! Hecate ships (packaging/sudoers.d/hecate-node, on the recording shims), an `ipmi_sim` BMC, a
//! kube-apiserver 1.20.2 with RBAC, and a coordinator daemon's forwarding endpoint. Each check
//! fails for what breaks it and names it; all healthy is exit 0; and nothing is run on a node or
//! a BMC (the shims record every call, the simulator every action). Needs root and the peers
//! installed (scripts/install-test-deps.sh).

#![allow(clippy::unwrap_used)]

#[path = "../../backends/tests/kube_support/mod.rs"]
mod kube_support;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hecate_test_support::{HecateDaemon, IpmiSim, KubeApiServer, SshNodes, free_port, wait_until};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn hecate() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hecate"))
}

/// `hecate preflight --json --config FILE`: (exit code, the report).
fn preflight(config: &Path) -> (i32, Value) {
    let out = Command::new(hecate())
        .args(["preflight", "--json", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not a json report ({e}):\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}

/// One check of a report: (status, message); panics, showing the report, when it is not there.
fn check(report: &Value, target: &str, name: &str) -> (String, String) {
    let found = report["results"].as_array().unwrap().iter().find(|r| r["target"] == target && r["check"] == name);
    match found {
        Some(r) => (r["status"].as_str().unwrap().to_string(), r["message"].as_str().unwrap().to_string()),
        None => panic!("no check {target} {name} in {}", serde_json::to_string_pretty(report).unwrap()),
    }
}

/// The checks that failed, as `target check: message`.
fn failures(report: &Value) -> Vec<String> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "failed")
        .map(|r| format!("{} {}: {}", r["target"].as_str().unwrap(), r["check"].as_str().unwrap(), r["message"]))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// An ssh_systemd controller for `node` as `user`, with `extra` keys.
fn ssh(node: &hecate_test_support::SshNode, user: &str, known_hosts: &Path, extra: &str) -> String {
    format!(
        "{{ type: ssh_systemd, user: {user}, identity_file: {}, known_hosts: {}, port: {}, connect_timeout: 5s, \
         command_timeout: 10s{extra} }}",
        node.identity_file().display(),
        known_hosts.display(),
        node.port()
    )
}

#[test]
fn the_shipped_sudo_rule_a_unit_it_lacks_a_changed_host_key_and_a_wrong_bmc_password() {
    let mut nodes =
        SshNodes::start_named(&[("good", Ipv4Addr::new(127, 0, 0, 61)), ("blue", Ipv4Addr::new(127, 0, 0, 62))]);
    let bmc = IpmiSim::start();
    let dir = tempfile::tempdir().unwrap();
    let user = nodes[0].packaged_rule_user();
    let kh = nodes.known_hosts();
    let wrong_password = write(dir.path(), "wrong.pass", "not-the-password\n");
    let (good_addr, blue_addr) = (nodes[0].addr(), nodes[1].addr());
    let good_ssh = ssh(&nodes[0], user, &kh, "");
    let blue_ssh = ssh(&nodes[1], user, &kh, "");
    let blue_ssh_stop = ssh(&nodes[1], user, &kh, ", k3s_stop_command: null");
    let config = |blue_extra: &str, password: &Path| {
        format!(
            "host: preflight-test
state_dir: {state}
power_sources: [ {{ type: simulated, name: ups }} ]
nodes:
  - name: good
    address: {good_addr}
    role: server
    init: true
    controllers:
      - {good_ssh}
      - {{ type: ipmi, host: {bmc_host}, port: {bmc_port}, username: {bmc_user}, password_file: {password}, timeout: 5s }}
  - name: blue
    address: {blue_addr}
    role: agent
    {blue_extra}
    controllers:
      - {blue_ssh}
",
            state = dir.path().join("state").display(),
            good_ssh = good_ssh,
            bmc_host = bmc.host(),
            bmc_port = bmc.port(),
            bmc_user = bmc.username(),
            password = password.display(),
            blue_ssh = if blue_extra.is_empty() { &blue_ssh } else { &blue_ssh_stop },
        )
    };

    // A node whose k3s unit has another name: the shipped rule allows neither its start nor its
    // stop, and the check names both commands as the plans send them.
    let path = write(dir.path(), "lacking.yaml", &config("unit: k3s-blue", &bmc.password_file()));
    let (code, report) = preflight(&path);
    assert_eq!(code, 1, "{report:#}");
    let (status, message) = check(&report, "node/blue", "ssh_systemd:sudo");
    assert_eq!(status, "failed", "{message}");
    for command in ["`systemctl start --no-block k3s-blue`", "`systemctl stop k3s-blue`"] {
        assert!(message.contains(command), "{command} not named: {message}");
    }
    assert!(message.contains(&format!("user {user}")), "{message}");
    assert_eq!(failures(&report).len(), 1, "only that fails: {:#?}", failures(&report));
    let (status, message) = check(&report, "node/good", "ssh_systemd:sudo");
    assert_eq!(status, "ok", "{message}");
    for command in ["hecate-k3s-stop k3s 60", "systemctl poweroff", "systemctl start --no-block k3s"] {
        assert!(message.contains(command), "{command} not checked: {message}");
    }
    assert_eq!(check(&report, "node/good", "ipmi:login").0, "ok");
    assert_eq!(check(&report, "node/good", "ipmi:power_state").0, "ok");
    // The same for a person: a line per check under each target, and the verdict last.
    let text = Command::new(hecate()).args(["preflight", "--config"]).arg(&path).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    println!("{text}");
    assert!(text.contains("node/blue\n") && text.contains("FAILED  ssh_systemd:sudo"), "{text}");
    assert!(text.trim_end().lines().last().unwrap().starts_with("preflight FAILED: "), "{text}");

    // The plans' own units: everything passes.
    let healthy = write(dir.path(), "healthy.yaml", &config("", &bmc.password_file()));
    let (code, report) = preflight(&healthy);
    assert_eq!((code, failures(&report)), (0, Vec::<String>::new()), "{report:#}");

    // Nothing ran on the nodes: sudo -l answers without running, and no systemctl, poweroff or
    // hecate-k3s-stop was called; the BMC was asked its power state, never to act.
    for n in nodes.iter() {
        assert_eq!(n.calls(), Vec::new(), "node {} ran something", n.name());
    }
    assert!(bmc.actions().is_empty(), "the bmc was told to act: {:?}", bmc.actions());

    // A reinstalled node: its host key changed. The login is not tried with it.
    nodes.by_name_mut("good").unwrap().change_host_key();
    let (code, report) = preflight(&healthy);
    assert_eq!(code, 1);
    let (status, message) = check(&report, "node/good", "ssh_systemd:host_key");
    assert_eq!(status, "failed", "{message}");
    assert!(message.contains("changed"), "{message}");
    assert_eq!(check(&report, "node/good", "ssh_systemd:reachable").0, "ok");
    assert_eq!(check(&report, "node/good", "ssh_systemd:login").0, "skipped");
    assert_eq!(check(&report, "node/blue", "ssh_systemd:host_key").0, "ok");
    // The operator confirms the new key and lists it (what `hecate nodes keyscan --write` does).
    let lines: String = nodes.iter().map(|n| n.known_hosts_line() + "\n").collect();
    std::fs::write(&kh, lines).unwrap();

    // A BMC password that changed.
    let path = write(dir.path(), "wrong-bmc.yaml", &config("", &wrong_password));
    let (code, report) = preflight(&path);
    assert_eq!(code, 1);
    let (status, message) = check(&report, "node/good", "ipmi:login");
    assert_eq!(status, "failed", "{message}");
    assert!(message.starts_with("auth:"), "{message}");
    assert_eq!(check(&report, "node/good", "ipmi:power_state").0, "skipped");
    assert_eq!(failures(&report).len(), 1, "{:#?}", failures(&report));
    assert!(bmc.actions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_eviction_rights_fails_naming_the_verb() {
    let server = KubeApiServer::shared();
    let c = kube_support::client(server).await;
    let role = "hecate-preflight-test";
    let rules = |eviction: bool| {
        let mut rules = vec![
            json!({ "apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "patch"] }),
            json!({ "apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"] }),
        ];
        if eviction {
            rules.push(json!({ "apiGroups": [""], "resources": ["pods/eviction"], "verbs": ["create"] }));
        }
        json!(rules)
    };
    let roles: Api<ClusterRole> = Api::all(c.clone());
    let cr: ClusterRole =
        serde_json::from_value(json!({ "metadata": { "name": role }, "rules": rules(false) })).unwrap();
    roles.create(&PostParams::default(), &cr).await.unwrap();
    let bindings: Api<ClusterRoleBinding> = Api::all(c.clone());
    let crb: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": role },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KubeApiServer::LIMITED_USER }],
    }))
    .unwrap();
    bindings.create(&PostParams::default(), &crb).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = |kubeconfig: &Path| {
        format!(
            "host: preflight-kube\nstate_dir: {}\npower_sources: [ {{ type: simulated, name: ups }} ]\n\
             cluster: {{ type: kube, kubeconfig: {} }}\n",
            dir.path().join("state").display(),
            kubeconfig.display()
        )
    };
    let path = write(dir.path(), "limited.yaml", &config(server.limited_kubeconfig()));
    let run = move |path: PathBuf| async move { tokio::task::spawn_blocking(move || preflight(&path)).await.unwrap() };

    // RBAC takes a moment to see a new binding: the checks it grants pass once it has.
    let report = kube_support::wait_for("the binding's rights to show", Duration::from_secs(30), || {
        let path = path.clone();
        async move {
            let (code, report) = run(path).await;
            match check(&report, "cluster", "kube:rbac:patch nodes").0.as_str() {
                "ok" => Ok((code, report)),
                other => Err(format!("patch nodes {other}")),
            }
        }
    })
    .await;
    let (code, report) = report;
    assert_eq!(code, 1, "{report:#}");
    let (status, message) = check(&report, "cluster", "kube:rbac:create pods/eviction");
    assert_eq!(status, "failed");
    assert!(message.contains("may not create pods/eviction"), "{message}");
    assert_eq!(failures(&report).len(), 1, "{:#?}", failures(&report));
    assert_eq!(check(&report, "cluster", "kube:credentials").0, "ok");
    assert_eq!(check(&report, "cluster", "kube:api").0, "ok");
    assert_eq!(check(&report, "cluster", "kube:credential_expiry").0, "ok");

    // Granted: all healthy.
    roles.patch(role, &PatchParams::default(), &Patch::Merge(json!({ "rules": rules(true) }))).await.unwrap();
    kube_support::wait_for("eviction rights to show", Duration::from_secs(30), || {
        let path = path.clone();
        async move {
            match run(path).await {
                (0, _) => Ok(()),
                (code, report) => Err(format!("exit {code}: {:?}", failures(&report))),
            }
        }
    })
    .await;

    // A token the server does not know: the credentials fail, and nothing else is asked.
    let forged = std::fs::read_to_string(server.limited_kubeconfig()).unwrap().replace("-limited", "-forged");
    let forged = write(dir.path(), "forged.kubeconfig", &forged);
    let path = write(dir.path(), "forged.yaml", &config(&forged));
    let (code, report) = run(path).await;
    assert_eq!(code, 1);
    let (status, message) = check(&report, "cluster", "kube:credentials");
    assert_eq!(status, "failed", "{message}");
    assert!(message.contains("401"), "{message}");
    assert_eq!(check(&report, "cluster", "kube:rbac:create pods/eviction").0, "skipped");
}

#[test]
fn a_forwarder_checks_that_its_coordinator_takes_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "tethys.key", "tethys-forwarding-key-0123456789\n");
    let wrong = write(dir.path(), "wrong.key", "another-forwarding-key-987654321\n");
    let port = free_port(Ipv4Addr::LOCALHOST);
    let coordinator = HecateDaemon::start(
        hecate(),
        &format!(
            "host: titan-db
role:
  coordinator: {{ listen: \"127.0.0.1:{port}\", forwarders: [ {{ name: tethys, key_file: {} }} ] }}
daemon: {{ poll_interval: 200ms, metrics_listen: null }}
power_sources: [ {{ type: simulated, name: main-ups }} ]
",
            key.display()
        ),
    );
    wait_until("the coordinator's forwarding endpoint", Duration::from_secs(30), || {
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map(|_| ()).map_err(|e| e.to_string())
    });
    let forwarder = |key: &Path| {
        write(
            dir.path(),
            "forwarder.yaml",
            &format!(
                "host: tethys\nstate_dir: {}\nrole:\n  forwarder: {{ coordinator_url: \"http://127.0.0.1:{port}\", \
                 key_file: {} }}\npower_sources: [ {{ type: simulated, name: tethys-ups }} ]\n",
                dir.path().join("fwd-state").display(),
                key.display()
            ),
        )
    };
    let (code, report) = preflight(&forwarder(&key));
    assert_eq!(code, 0, "{report:#}");
    let (status, message) = check(&report, "coordinator", "forwarding");
    assert_eq!(status, "ok", "{message}");
    let (code, report) = preflight(&forwarder(&wrong));
    assert_eq!(code, 1);
    let (status, message) = check(&report, "coordinator", "forwarding");
    assert_eq!(status, "failed");
    assert!(message.contains("401") && message.contains("signature"), "{message}");
    // A check is no trigger: the coordinator still watches and counted nothing.
    let status = coordinator.status();
    assert_eq!(status["phase"], "watching", "{status:#}");
    assert!(!coordinator.log().contains("forwarded by"), "{}", coordinator.log());
}

/// `GET /metrics`, the text.
fn scrape(port: u16) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)) else { return String::new() };
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The value of the metric line of `name` carrying every label of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn the_daemon_reports_a_broken_and_a_repaired_host_key_once_each() {
    let mut nodes = SshNodes::start_named(&[("n1", Ipv4Addr::new(127, 0, 0, 63))]);
    let kh = nodes.known_hosts();
    let port = free_port(Ipv4Addr::LOCALHOST);
    let daemon = HecateDaemon::start(
        hecate(),
        &format!(
            "host: preflight-daemon
daemon: {{ poll_interval: 500ms, metrics_listen: \"127.0.0.1:{port}\" }}
preflight: {{ interval: 10s, timeout: 10s }}
power_sources: [ {{ type: simulated, name: ups }} ]
nodes:
  - {{ name: n1, address: {addr}, role: server, init: true, controllers: [ {ssh} ] }}
notifiers: [ {{ type: log }} ]
",
            addr = nodes[0].addr(),
            ssh = ssh(&nodes[0], nodes[0].user(), &kh, ""),
        ),
    );
    let host_key = ["target=\"node/n1\"", "check=\"ssh_systemd:host_key\""];
    let at = |text: &str| metric(text, "hecate_preflight_last_check_timestamp_seconds", &[]);
    // waits for the host key's metric to read `want` at a preflight after `after`; returns when that ran
    let wait_for = |want: f64, after: f64| {
        wait_until(&format!("hecate_preflight_ok {want} after {after}"), Duration::from_secs(60), || {
            let text = scrape(port);
            match (metric(&text, "hecate_preflight_ok", &host_key), at(&text)) {
                (Some(v), Some(t)) if v == want && t > after => Ok(t),
                other => Err(format!("{other:?}")),
            }
        })
    };
    let first = wait_for(1.0, 0.0);
    let failed_events = || daemon.log().matches("\"kind\":\"preflight_failed\"").count();
    let recovered_events = || daemon.log().matches("\"kind\":\"preflight_recovered\"").count();
    assert_eq!((failed_events(), recovered_events()), (0, 0), "a first pass is no news:\n{}", daemon.log());

    // Broken: the node was reinstalled (new host key). Two preflights see it; one event.
    nodes.by_name_mut("n1").unwrap().change_host_key();
    let broken = wait_for(0.0, first);
    let again = wait_for(0.0, broken);
    assert!(again > broken);
    assert_eq!(failed_events(), 1, "{}", daemon.log());
    let line = daemon.log().lines().find(|l| l.contains("\"kind\":\"preflight_failed\"")).unwrap().to_string();
    assert!(line.contains("node/n1 ssh_systemd:host_key fails") && line.contains("changed"), "{line}");
    // status says so, and the health check is degraded
    let status = daemon.status();
    assert_eq!(status["preflight"]["failing"], 1, "{status:#}");
    let out = Command::new(hecate()).args(["status", "--config"]).arg(daemon.config()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("preflight: 1 failing") && text.contains("node/n1 ssh_systemd:host_key"), "{text}");

    // Repaired: the operator lists the new key. One recovery.
    std::fs::write(&kh, nodes[0].known_hosts_line() + "\n").unwrap();
    let repaired = wait_for(1.0, again);
    wait_for(1.0, repaired);
    assert_eq!((failed_events(), recovered_events()), (1, 1), "{}", daemon.log());
    assert_eq!(daemon.status()["preflight"]["failing"], 0);
    // and it changed nothing on the node
    assert_eq!(nodes[0].calls(), Vec::new());
}

/// `hecate nodes keyscan --config FILE ARGS...`: (exit code, stdout and stderr).
fn keyscan(config: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(hecate())
        .args(["nodes", "keyscan", "--config"])
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), text)
}

/// The SHA-256 fingerprint of a node's host key as OpenSSH's own `ssh-keygen -lf` prints it.
fn openssh_fingerprint(node: &hecate_test_support::SshNode) -> String {
    let out = Command::new("ssh-keygen").arg("-lf").arg(node.dir().join("ssh_host_ed25519_key.pub")).output().unwrap();
    String::from_utf8_lossy(&out.stdout).split_whitespace().nth(1).unwrap().to_string()
}

#[test]
fn keyscan_shows_the_fingerprints_and_writes_only_when_told() {
    let mut nodes =
        SshNodes::start_named(&[("k1", Ipv4Addr::new(127, 0, 0, 64)), ("k2", Ipv4Addr::new(127, 0, 0, 65))]);
    let dir = tempfile::tempdir().unwrap();
    // k1 is listed already; k2 is not
    let kh = write(dir.path(), "known_hosts", &(nodes[0].known_hosts_line() + "\n"));
    let node = |n: &hecate_test_support::SshNode, role: &str| {
        format!(
            "  - {{ name: {}, address: {}, role: {role}, controllers: [ {} ] }}\n",
            n.name(),
            n.addr(),
            ssh(n, n.user(), &kh, "")
        )
    };
    let config = write(
        dir.path(),
        "hecate.yaml",
        &format!(
            "host: keyscan\nstate_dir: {}\npower_sources: [ {{ type: simulated, name: ups }} ]\nnodes:\n{}{}",
            dir.path().join("state").display(),
            node(&nodes[0], "server"),
            node(&nodes[1], "agent")
        ),
    );
    let before = std::fs::read_to_string(&kh).unwrap();
    let (code, out) = keyscan(&config, &[]);
    println!("{out}");
    assert_eq!(code, 1, "{out}");
    for n in nodes.iter() {
        assert!(out.contains(&openssh_fingerprint(n)), "{}'s fingerprint missing:\n{out}", n.name());
    }
    let line_of = |name: &str| out.lines().skip_while(|l| !l.starts_with(name)).nth(1).unwrap_or_default().to_string();
    assert!(line_of("k1").contains("listed") && !line_of("k1").contains("NOT"), "{out}");
    assert!(line_of("k2").contains("NOT LISTED"), "{out}");
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), before, "written without --write");
    // --write asks first; with nobody at a terminal to answer, it writes nothing
    let (code, out) = keyscan(&config, &["--write"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("--yes"), "{out}");
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), before);

    let (code, out) = keyscan(&config, &["--write", "--yes"]);
    assert_eq!(code, 0, "{out}");
    let (status, _) = check(&preflight(&config).1, "node/k2", "ssh_systemd:host_key");
    assert_eq!(status, "ok", "the written key is the one the node presents");
    let (code, out) = keyscan(&config, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("every key is listed"), "{out}");

    // A changed key is shown and never written over the listed one.
    nodes.by_name_mut("k1").unwrap().change_host_key();
    let listed = std::fs::read_to_string(&kh).unwrap();
    let (code, out) = keyscan(&config, &["--write", "--yes"]);
    assert_eq!(code, 1, "{out}");
    assert!(line_of_text(&out, "k1").contains("CHANGED"), "{out}");
    assert!(out.contains(&openssh_fingerprint(&nodes[0])), "{out}");
    assert_eq!(std::fs::read_to_string(&kh).unwrap(), listed);
}

fn line_of_text(out: &str, name: &str) -> String {
    out.lines().skip_while(|l| !l.starts_with(name)).nth(1).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flux_needs_its_apis_and_the_rights_to_suspend_and_resume() {
    let server = KubeApiServer::shared();
    let c = kube_support::client(server).await;
    kube_support::flux_crds(&c).await;
    let ns = kube_support::unique("pf");
    kube_support::namespace(&c, &ns).await;
    let dir = tempfile::tempdir().unwrap();
    let config = |kubeconfig: &Path| {
        write(
            dir.path(),
            "flux.yaml",
            &format!(
                "host: preflight-flux\nstate_dir: {}\npower_sources: [ {{ type: simulated, name: ups }} ]\n\
                 cluster: {{ type: kube, kubeconfig: {} }}\n\
                 gitops: {{ type: flux_gitea, kubeconfig: {}, source: {{ namespace: {ns}, name: flux-system }}, \
                 namespaces: [ {ns} ] }}\n",
                dir.path().join("state").display(),
                server.kubeconfig().display(),
                kubeconfig.display()
            ),
        )
    };
    let run = |path: PathBuf| async move { tokio::task::spawn_blocking(move || preflight(&path)).await.unwrap() };
    let (code, report) = run(config(server.kubeconfig())).await;
    assert_eq!((code, failures(&report)), (0, Vec::<String>::new()), "{report:#}");
    assert_eq!(check(&report, "gitops", "flux_gitea:flux_api").0, "ok");
    let (status, _) = check(&report, "gitops", &format!("flux_gitea:rbac:patch kustomizations in {ns}"));
    assert_eq!(status, "ok");
    // The user in no group may do none of it: each permission named.
    let (code, report) = run(config(server.limited_kubeconfig())).await;
    assert_eq!(code, 1);
    let (status, message) = check(&report, "gitops", &format!("flux_gitea:rbac:patch kustomizations in {ns}"));
    assert_eq!(status, "failed");
    assert!(message.contains(&format!("may not patch kustomizations in {ns}")), "{message}");
    let source = format!("flux_gitea:rbac:patch gitrepositories in {ns}");
    assert_eq!(check(&report, "gitops", &source).0, "failed");
}

#[test]
fn a_redfish_bmc_that_refuses_the_credentials_fails_the_login() {
    use hecate_test_support::{Sushy, SushyOptions};
    let bmc = Sushy::start_with(&SushyOptions { auth: true, single_system: true, ..SushyOptions::default() });
    let dir = tempfile::tempdir().unwrap();
    let wrong = write(dir.path(), "wrong.cred", &format!("{}:not-the-password\n", bmc.username()));
    let config = |credentials: &Path| {
        write(
            dir.path(),
            "redfish.yaml",
            &format!(
                "host: preflight-redfish\nstate_dir: {}\npower_sources: [ {{ type: simulated, name: ups }} ]\n\
                 nodes:\n  - {{ name: n1, address: 10.0.0.1, role: server, init: true, controllers: [ \
                 {{ type: redfish, endpoint: \"{}\", credentials_file: {} }} ] }}\n",
                dir.path().join("state").display(),
                bmc.url(),
                credentials.display()
            ),
        )
    };
    let (code, report) = preflight(&config(&bmc.credentials_file()));
    assert_eq!((code, failures(&report)), (0, Vec::<String>::new()), "{report:#}");
    assert_eq!(check(&report, "node/n1", "redfish:power_state").1, "the machine is on");
    let (code, report) = preflight(&config(&wrong));
    assert_eq!(code, 1);
    let (status, message) = check(&report, "node/n1", "redfish:login");
    assert_eq!(status, "failed", "{message}");
    assert!(message.starts_with("auth:") && message.contains("401"), "{message}");
    assert!(!message.contains("not-the-password"), "{message}");
    assert_eq!(check(&report, "node/n1", "redfish:power_state").0, "skipped");
    assert_eq!(bmc.power_state("node1"), "On");
}

/// Notifiers are checked too, without a notification going out: an SMTP login against a real
/// server (aiosmtpd) that a rotated password breaks, a program that is gone, a password file
/// that is gone, the log notifier.
#[test]
fn notifiers_are_checked_without_sending_and_a_broken_one_fails_the_preflight() {
    use hecate_test_support::Smtpd;
    let mut smtp = Smtpd::start(Some("right"));
    let dir = tempfile::tempdir().unwrap();
    let pass = write(dir.path(), "smtp.pass", "right\n");
    let page = write(dir.path(), "page", "#!/bin/sh\nexit 0\n");
    std::fs::set_permissions(&page, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = |program: &Path| {
        write(
            dir.path(),
            "notifiers.yaml",
            &format!(
                "host: preflight-notifiers\nstate_dir: {}\npower_sources: [ {{ type: simulated, name: ups }} ]\n\
                 notifiers:\n  - {{ type: log }}\n  - {{ type: command, name: pager, argv: [\"{}\"] }}\n  \
                 - {{ type: email, name: mail, server: 127.0.0.1, port: {}, tls: none, username: hecate, \
                 password_file: {}, from: hecate@example.org, to: [ops@example.org] }}\n",
                dir.path().join("state").display(),
                program.display(),
                smtp.addr().port(),
                pass.display()
            ),
        )
    };
    let cfg = config(&page);
    let (code, report) = preflight(&cfg);
    assert_eq!((code, failures(&report)), (0, Vec::<String>::new()), "{report:#}");
    assert_eq!(check(&report, "notifier/log", "log").0, "ok");
    assert_eq!(check(&report, "notifier/pager", "program").0, "ok");
    let (status, message) = check(&report, "notifier/mail", "smtp");
    assert_eq!(status, "ok", "{message}");

    // the password rotated on the server's side; the program removed
    std::fs::write(&pass, "stale\n").unwrap();
    let (code, report) = preflight(&config(&dir.path().join("gone")));
    assert_eq!(code, 1, "{report:#}");
    let (status, message) = check(&report, "notifier/mail", "smtp");
    assert_eq!(status, "failed", "{message}");
    assert!(message.starts_with("auth:") && !message.contains("stale"), "{message}");
    assert_eq!(check(&report, "notifier/pager", "program").0, "failed");

    // a password file that is gone: the email notifier reads it at each send, so it still
    // builds; the check says what is missing
    std::fs::remove_file(&pass).unwrap();
    let (_, report) = preflight(&cfg);
    let (status, message) = check(&report, "notifier/mail", "smtp");
    assert_eq!(status, "failed", "{message}");
    assert!(message.contains("smtp.pass"), "{message}");
    assert!(smtp.new_mail().is_none(), "a preflight sent a mail");
}
