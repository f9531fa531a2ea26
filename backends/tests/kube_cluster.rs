//! The `kube` cluster backend against a real kube-apiserver 1.20.2 with etcd (one per test
//! process, a namespace and nodes per test). No kubelet or controller-manager runs there, so the
//! tests play them: a stand-in kubelet writes node status and finishes pod deletions, a stand-in
//! disruption controller writes PodDisruptionBudget status.

#![allow(clippy::unwrap_used)]

mod kube_support;

use std::time::Duration;

use hecate_backends::cluster::kube::KubeClusterConfig;
use hecate_core::cluster::{
    CORDON_MARK, ClusterApi, ClusterApiConfig, Cordoned, DrainFallback, DrainOptions, Uncordoned,
};
use hecate_core::{BuildContext, ErrorKind};
use hecate_test_support::KubeApiServer;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube_support::*;
use serde_json::json;

fn backend(server: &KubeApiServer, extra: &str) -> Box<dyn ClusterApi> {
    let yaml = format!("{}eviction_retry: 200ms\n{extra}", kubeconfig_yaml(server));
    let cfg: KubeClusterConfig = serde_saphyr::from_str(&yaml).unwrap();
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let ctx = BuildContext { host: "test".into(), state_dir: std::env::temp_dir() };
    cfg.build(&ctx).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_nodes_cordon_and_uncordon() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let (ready, not_ready) = (unique("ready"), unique("down"));
    node(&c, &ready, true).await;
    node(&c, &not_ready, false).await;
    let api = backend(server, "");

    api.health().await.unwrap();
    let nodes = api.nodes().await.unwrap();
    let find = |n: &str| nodes.iter().find(|x| x.name == n).cloned().unwrap();
    assert!(find(&ready).ready);
    assert!(!find(&not_ready).ready);
    assert!(!find(&ready).unschedulable);

    let marked = |name: &str| {
        let c = c.clone();
        let name = name.to_string();
        async move {
            let n = Api::<Node>::all(c).get(&name).await.unwrap();
            n.metadata.annotations.unwrap_or_default().contains_key(CORDON_MARK)
        }
    };
    assert_eq!(api.cordon(&ready).await.unwrap(), Cordoned::Marked);
    assert!(api.nodes().await.unwrap().iter().any(|n| n.name == ready && n.unschedulable));
    assert!(marked(&ready).await, "hecate's cordon carries its mark");
    assert_eq!(api.cordon(&ready).await.unwrap(), Cordoned::AlreadyMarked, "a second run changes nothing");
    assert_eq!(api.uncordon(&ready).await.unwrap(), Uncordoned::Uncordoned);
    assert!(api.nodes().await.unwrap().iter().any(|n| n.name == ready && !n.unschedulable));
    assert!(!marked(&ready).await, "the mark goes with the cordon");
    assert_eq!(api.uncordon(&ready).await.unwrap(), Uncordoned::NotCordoned);

    // A node the operator cordoned is neither marked nor uncordoned.
    let patch = serde_json::json!({ "spec": { "unschedulable": true } });
    Api::<Node>::all(c.clone()).patch(&not_ready, &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    assert_eq!(api.cordon(&not_ready).await.unwrap(), Cordoned::ByOthers);
    assert!(!marked(&not_ready).await);
    assert_eq!(api.uncordon(&not_ready).await.unwrap(), Uncordoned::LeftCordoned);
    assert!(api.nodes().await.unwrap().iter().any(|n| n.name == not_ready && n.unschedulable), "still cordoned");

    let e = api.cordon("no-such-node").await.unwrap_err();
    assert!(e.message.contains("no-such-node") && e.message.contains("404"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_waits_for_a_blocking_pdb_and_leaves_daemonset_and_mirror_pods() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let (ns, worker) = (unique("drain"), unique("worker"));
    namespace(&c, &ns).await;
    node(&c, &worker, true).await;
    let kubelet = stand_in_kubelet(c.clone(), &ns);

    // Listed in name order: the PDB-protected pod is asked (and refused) before the plain one.
    pod(&c, &ns, "a-db", &worker, managed(&[("app", "db")])).await;
    pod(&c, &ns, "b-web", &worker, managed(&[])).await;
    let ds_owner = json!({ "ownerReferences": [{
        "apiVersion": "apps/v1", "kind": "DaemonSet", "name": "node-exporter",
        "uid": "00000000-0000-0000-0000-000000000001", "controller": true,
    }] });
    pod(&c, &ns, "c-exporter", &worker, ds_owner).await;
    let mirror = json!({ "annotations": { "kubernetes.io/config.mirror": "abc" } });
    pod(&c, &ns, "d-static", &worker, mirror).await;
    pod(&c, &ns, "e-elsewhere", "another-node", json!({})).await;
    pdb(&c, &ns, "db", "db").await;

    // Stand-in disruption controller: allows one disruption only once the drain has been refused
    // (b-web, asked after a-db, is being deleted).
    let controller = {
        let c = c.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            wait_for("the drain to evict b-web", Duration::from_secs(30), || async {
                match get_pod(&c, &ns, "b-web").await {
                    Some(p) if p.metadata.deletion_timestamp.is_none() => Err("b-web not evicted yet".to_string()),
                    _ => Ok(()),
                }
            })
            .await;
            assert!(get_pod(&c, &ns, "a-db").await.unwrap().metadata.deletion_timestamp.is_none());
            set_disruptions_allowed(&c, &ns, "db", 1).await;
        })
    };

    let api = backend(server, "");
    let opts =
        DrainOptions { timeout: Duration::from_secs(30), pdb_timeout: Duration::from_secs(30), ..Default::default() };
    let report = api.drain(&worker, &opts).await.unwrap();
    controller.await.unwrap();
    kubelet.abort();

    let mut evicted = report.evicted.clone();
    evicted.sort();
    assert_eq!(evicted, [format!("{ns}/a-db"), format!("{ns}/b-web")]);
    assert!(report.left.is_empty() && report.deleted.is_empty() && report.terminating.is_empty(), "{report:?}");
    assert!(get_pod(&c, &ns, "a-db").await.is_none(), "evicted and gone");
    for untouched in ["c-exporter", "d-static", "e-elsewhere"] {
        let p = get_pod(&c, &ns, untouched).await.unwrap();
        assert!(p.metadata.deletion_timestamp.is_none(), "{untouched} must be left alone");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdb_that_never_allows_is_left_or_deleted_at_the_deadline() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let (ns, worker) = (unique("deadline"), unique("worker"));
    namespace(&c, &ns).await;
    node(&c, &worker, true).await;
    pod(&c, &ns, "db-0", &worker, managed(&[("app", "db")])).await;
    pdb(&c, &ns, "db", "db").await;
    let api = backend(server, "");

    // The drain's own limit is ten minutes; the budget's refusals are asked again for two
    // seconds only (with every node going down it is never met). The outer bound makes a drain
    // that waited the ten minutes fail instead of hanging the suite.
    let bounded = |fallback| DrainOptions {
        timeout: Duration::from_secs(600),
        pdb_timeout: Duration::from_secs(2),
        fallback,
        ..Default::default()
    };
    let within = Duration::from_secs(60);
    let report =
        tokio::time::timeout(within, api.drain(&worker, &bounded(DrainFallback::Leave))).await.unwrap().unwrap();
    assert_eq!(report.left, [format!("{ns}/db-0")]);
    assert!(report.evicted.is_empty() && report.deleted.is_empty());
    assert!(get_pod(&c, &ns, "db-0").await.unwrap().metadata.deletion_timestamp.is_none(), "left running");

    // Without a kubelet the deleted pod stays terminating until the drain's limit: a short one here.
    let delete = DrainOptions { timeout: Duration::from_secs(4), ..bounded(DrainFallback::Delete) };
    let report = tokio::time::timeout(within, api.drain(&worker, &delete)).await.unwrap().unwrap();
    assert_eq!(report.deleted, [format!("{ns}/db-0")]);
    assert_eq!(report.terminating, [format!("{ns}/db-0")]);
    assert!(get_pod(&c, &ns, "db-0").await.unwrap().metadata.deletion_timestamp.is_some(), "deleted with grace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_and_emptydir_pods_are_kept_unless_opted_in_and_the_grace_is_capped() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let (ns, worker) = (unique("kept"), unique("worker"));
    namespace(&c, &ns).await;
    node(&c, &worker, true).await;
    let scratch = json!({ "volumes": [{ "name": "scratch", "emptyDir": {} }] });
    pod(&c, &ns, "bare", &worker, json!({})).await;
    pod_with(&c, &ns, "cache", &worker, managed(&[]), scratch).await;
    pod_with(&c, &ns, "slow", &worker, managed(&[]), json!({ "terminationGracePeriodSeconds": 600 })).await;
    pod_with(&c, &ns, "quick", &worker, managed(&[]), json!({ "terminationGracePeriodSeconds": 3 })).await;
    let api = backend(server, "");

    // No kubelet runs: evicted pods stay terminating, with the grace they were given.
    let opts =
        DrainOptions { timeout: Duration::from_secs(2), max_grace: Duration::from_secs(45), ..Default::default() };
    let report = api.drain(&worker, &opts).await.unwrap();
    let mut evicted = report.evicted.clone();
    evicted.sort();
    assert_eq!(evicted, [format!("{ns}/quick"), format!("{ns}/slow")]);
    assert_eq!(report.kept, [format!("{ns}/bare (no controller)"), format!("{ns}/cache (emptyDir data)")]);
    let grace = |p: Option<k8s_openapi::api::core::v1::Pod>| p.unwrap().metadata.deletion_grace_period_seconds;
    assert_eq!(grace(get_pod(&c, &ns, "slow").await), Some(45), "capped at max_grace");
    assert_eq!(grace(get_pod(&c, &ns, "quick").await), Some(3), "its own, shorter");
    for kept in ["bare", "cache"] {
        assert!(get_pod(&c, &ns, kept).await.unwrap().metadata.deletion_timestamp.is_none(), "{kept} untouched");
    }

    // The operator's opt-ins (kubectl's --force and --delete-emptydir-data).
    let opts = DrainOptions { evict_unmanaged: true, delete_emptydir_data: true, ..opts };
    let report = api.drain(&worker, &opts).await.unwrap();
    let mut evicted = report.evicted.clone();
    evicted.sort();
    assert_eq!(evicted, [format!("{ns}/bare"), format!("{ns}/cache")]);
    assert!(report.kept.is_empty(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_nothing_to_evict_drains_at_once() {
    let server = KubeApiServer::shared();
    let c = client(server).await;
    let worker = unique("empty");
    node(&c, &worker, true).await;
    let report = backend(server, "")
        .drain(&worker, &DrainOptions { timeout: Duration::from_secs(5), ..Default::default() })
        .await
        .unwrap();
    assert!(report.evicted.is_empty() && report.left.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_api_is_an_error_not_a_panic() {
    let server = KubeApiServer::shared();
    // The same credentials, pointed at a loopback port nothing listens on.
    let port = hecate_test_support::free_port(std::net::Ipv4Addr::LOCALHOST);
    let api = backend(server, &format!("server: https://127.0.0.1:{port}\nrequest_timeout: 2s\n"));
    let e = api.health().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(api.nodes().await.is_err());
}

#[tokio::test]
async fn a_missing_kubeconfig_is_a_config_error_naming_it() {
    let cfg: KubeClusterConfig = serde_saphyr::from_str("kubeconfig: /nonexistent/k3s.yaml\n").unwrap();
    let ctx = BuildContext { host: "test".into(), state_dir: std::env::temp_dir() };
    // Building does not read it (a dry run must not need it); the first request does.
    let api = cfg.build(&ctx).unwrap();
    let e = api.health().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains("/nonexistent/k3s.yaml"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_api_servers_are_tried_in_order() {
    let server = KubeApiServer::shared();
    let dead = || format!("https://127.0.0.1:{}", hecate_test_support::free_port(std::net::Ipv4Addr::LOCALHOST));
    // The first is down (an HA cluster with one server off): the next that answers is used.
    let api = backend(server, &format!("servers: [ {}, {}, {} ]\nrequest_timeout: 2s\n", dead(), server.url(), dead()));
    api.health().await.unwrap();
    api.nodes().await.unwrap();
    // None answers: an error naming each, and the next call tries them all again.
    let api = backend(server, &format!("servers: [ {}, {} ]\nrequest_timeout: 2s\n", dead(), dead()));
    let e = api.health().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unreachable, "{e}");
    assert!(e.message.contains("no api server answers"), "{e}");
    assert_eq!(e.message.matches("api server https://127.0.0.1:").count(), 2, "{e}");
    assert!(api.health().await.is_err());

    let bad: KubeClusterConfig = serde_saphyr::from_str("servers: [ 10.0.0.1:6443 ]\n").unwrap();
    assert!(bad.validate().iter().any(|p| p.contains("`servers` must be an http(s) url")), "{:?}", bad.validate());
}

/// A certificate valid for `days` from now, made by openssl, with its `notAfter` as openssl
/// prints it turned into Unix time by `date`: the expected answer comes from other code.
fn certificate(dir: &std::path::Path, days: u32) -> (String, i64) {
    let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
    let out = std::process::Command::new("/usr/bin/openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj"])
        .args(["/CN=system:admin", "-days", &days.to_string(), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let script =
        format!("date -u -d \"$(/usr/bin/openssl x509 -noout -enddate -in {} | cut -d= -f2)\" +%s", cert.display());
    let out = std::process::Command::new("/bin/sh").args(["-c", &script]).output().unwrap();
    let unix: i64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (std::fs::read_to_string(&cert).unwrap(), unix)
}

fn kubeconfig_with_user(dir: &std::path::Path, user: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n- name: other\n  context:\n    cluster: c\n    user: missing\n\
             current-context: c\nusers:\n- name: u\n  user:\n{user}"
        ),
    )
    .unwrap();
    path
}

fn expiry_of(
    kubeconfig: &std::path::Path,
    context: Option<&str>,
) -> Result<Option<hecate_core::cluster::CredentialExpiry>, hecate_core::BackendError> {
    let mut yaml = format!("kubeconfig: {}\n", kubeconfig.display());
    if let Some(c) = context {
        yaml += &format!("context: {c}\n");
    }
    let cfg: KubeClusterConfig = serde_saphyr::from_str(&yaml).unwrap();
    let ctx = BuildContext { host: "test".into(), state_dir: std::env::temp_dir() };
    cfg.build(&ctx).unwrap().credential_expiry()
}

#[test]
fn the_kubeconfigs_client_certificate_or_token_expiry_is_read_locally() {
    use base64_for_test::encode;
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now();

    // k3s.yaml's way: the certificate inline, base64 of its PEM.
    let (pem, unix) = certificate(dir.path(), 12);
    let kc = kubeconfig_with_user(
        dir.path(),
        &format!("    client-certificate-data: {}\n    client-key-data: eA==\n", encode(pem.as_bytes())),
    );
    let e = expiry_of(&kc, None).unwrap().unwrap();
    assert_eq!((e.what.as_str(), e.not_after_unix), ("client certificate", unix));
    assert!((e.days_left(now) - 12.0).abs() < 0.1, "{}", e.days_left(now));
    assert!(e.warn(now), "fewer than 30 days");
    assert!(e.describe(now).starts_with("the client certificate expires in 11 day(s) ("), "{}", e.describe(now));

    // A certificate file, relative to the kubeconfig; a year left is no warning.
    let (_, unix) = certificate(dir.path(), 365);
    let kc = kubeconfig_with_user(dir.path(), "    client-certificate: client.crt\n    client-key: client.key\n");
    let e = expiry_of(&kc, None).unwrap().unwrap();
    assert_eq!(e.not_after_unix, unix);
    assert!(!e.warn(now));

    // A service account token (a JWT) carries its expiry; a static token has none.
    let claims = encode(b"{\"iss\":\"kubernetes/serviceaccount\",\"exp\":1798761600}");
    let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{}.c2ln", claims.trim_end_matches('='));
    let kc = kubeconfig_with_user(dir.path(), &format!("    token: {jwt}\n"));
    assert_eq!(expiry_of(&kc, None).unwrap().unwrap().not_after_unix, 1_798_761_600);
    let kc = kubeconfig_with_user(dir.path(), "    token: K10abcdef::server:0123456789\n");
    assert_eq!(expiry_of(&kc, None).unwrap(), None);

    // What cannot be read is a config error naming the file, never its content.
    let e = expiry_of(&kc, Some("other")).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Config);
    assert!(e.message.contains("no user \"missing\""), "{e}");
    let kc = kubeconfig_with_user(dir.path(), "    client-certificate-data: bm90IGEgY2VydA==\n");
    let e = expiry_of(&kc, None).unwrap_err();
    assert!(e.message.contains("is not a pem certificate") && !e.message.contains("not a cert"), "{e}");
    let e = expiry_of(&dir.path().join("absent"), None).unwrap_err();
    assert!(e.message.contains("cannot read kubeconfig"), "{e}");
}

mod base64_for_test {
    //! Standard base64 with padding, for the test's own kubeconfigs.
    pub fn encode(data: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
