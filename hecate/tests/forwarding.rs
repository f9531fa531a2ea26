//! Multi-UPS forwarding between real `hecate daemon` processes over loopback HTTP: forwarders
//! (`tethys`, its UPS failing; `rhea`) and a coordinator (`titan-db`, its UPS fine). The UPSes
//! and machines are simulated; the daemons, the endpoint, the keys and the signatures are real.
//! A forwarder's clock is put off with libfaketime (`faketime`, installed by
//! scripts/install-test-deps.sh); a captured request is taken by a recording proxy between the
//! forwarder and the coordinator, as an attacker on the LAN would take it.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use hecate::forward::{Key, Signer};
use hecate_test_support::{HecateDaemon, free_port, wait_until};

const TETHYS_KEY: &str = "tethys-forwarding-key-0123456789";
const RHEA_KEY: &str = "rhea-forwarding-key-0123456789ab";

type Daemon = HecateDaemon;

fn hecate() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hecate"))
}

/// A forwarder's key file, mode 0600.
fn key_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(format!("{name}.key"));
    std::fs::write(&p, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// The coordinator: its own UPS stays on mains; it runs the cluster's shutdown when told.
/// `forwarders` are (name, key file); `daemon` and `role` add settings to those sections.
fn coordinator_with(port: u16, forwarders: &[(&str, &Path)], daemon: &str, role: &str) -> Daemon {
    let list: Vec<String> =
        forwarders.iter().map(|(n, k)| format!("{{ name: {n}, key_file: {} }}", k.display())).collect();
    HecateDaemon::start(
        hecate(),
        &format!(
            "host: titan-db
role:
  coordinator: {{ listen: \"127.0.0.1:{port}\", forwarders: [ {} ]{role} }}
daemon: {{ poll_interval: 200ms{daemon} }}
power_sources: [ {{ type: simulated, name: main-ups }} ]
cluster: {{ type: simulated }}
nodes:
  - {{ name: s1, address: x, role: server, init: true, controllers: [ {{ type: simulated, step_duration: 50ms }} ] }}
notifiers: [ {{ type: log }} ]
",
            list.join(", ")
        ),
    )
}

fn coordinator(port: u16, tethys: &Path) -> Daemon {
    coordinator_with(port, &[("tethys", tethys)], ", metrics_listen: null", "")
}

/// A forwarder whose UPS loses mains at once and runs low within seconds.
struct Fwd<'a> {
    url: String,
    key: &'a Path,
    host: &'a str,
    /// More `daemon:` settings.
    daemon: &'a str,
    /// More UPS script steps.
    script: &'a str,
    /// More `role.forwarder` settings.
    forwarding: &'a str,
    /// More top-level YAML.
    extra: String,
    /// A program (and its arguments) that execs the daemon, such as faketime.
    wrapper: Vec<String>,
}

impl<'a> Fwd<'a> {
    fn new(url: &str, key: &'a Path) -> Fwd<'a> {
        Fwd {
            url: url.into(),
            key,
            host: "tethys",
            daemon: "",
            script: "",
            forwarding: "",
            extra: String::new(),
            wrapper: Vec::new(),
        }
    }

    fn start(self) -> Daemon {
        let yaml = format!(
            "host: {host}
role:
  forwarder: {{ coordinator_url: \"{url}\", key_file: {key}, timeout: 3s{forwarding} }}
daemon: {{ poll_interval: 200ms, metrics_listen: null{daemon} }}
policy: {{ debounce_polls: 1 }}
budget: {{ default_shutdown_budget: 10s }}
power_sources:
  - {{ type: simulated, name: tethys-ups, battery_runtime: 12s, script: [ {{ at: 0s, event: mains_lost }}{script} ] }}
cluster: {{ type: simulated }}
nodes:
  - {{ name: t1, address: x, role: server, init: true, controllers: [ {{ type: simulated, step_duration: 50ms }} ] }}
notifiers: [ {{ type: log }} ]
{extra}",
            host = self.host,
            url = self.url,
            key = self.key.display(),
            forwarding = self.forwarding,
            daemon = self.daemon,
            script = self.script,
            extra = self.extra
        );
        HecateDaemon::start_wrapped(&self.wrapper, hecate(), &yaml, |_| {})
    }
}

fn forwarder(url: &str, key: &Path) -> Daemon {
    Fwd::new(url, key).start()
}

/// Runs the daemon with its wall clock `offset` (`+300s`) off, its monotonic clock left alone.
fn faketime(offset: &str) -> Vec<String> {
    assert!(
        Path::new("/usr/bin/faketime").exists(),
        "faketime is not installed: run scripts/install-test-deps.sh as root"
    );
    ["env", "FAKETIME_DONT_FAKE_MONOTONIC=1", "faketime", "-f", offset].iter().map(|s| s.to_string()).collect()
}

/// `shutdown:` for a forwarder that powers itself off with a recording command (no real
/// poweroff): `touch MARK`.
fn power_off_self_by_touching(mark: &Path) -> String {
    format!("shutdown: {{ power_off_self: true, power_off_self_command: [ /usr/bin/touch, {} ] }}\n", mark.display())
}

/// `GET /metrics` over a plain socket.
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of one metric line (`name{labels}`), 0 when absent.
fn metric(text: &str, line: &str) -> f64 {
    text.lines().find_map(|l| l.strip_prefix(line).and_then(|rest| rest.trim().parse().ok())).unwrap_or(0.0)
}

fn wait_for_listen(port: u16) {
    wait_until("the coordinator's forwarding endpoint", Duration::from_secs(30), || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map(|_| ()).map_err(|e| e.to_string())
    });
}

/// Reads one HTTP message (head, then a body of its Content-Length) from `s`.
fn read_message(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Ok(buf);
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:").and_then(|v| v.trim().parse::<usize>().ok()))
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    buf.extend(body);
    Ok(buf)
}

/// Sends raw request bytes to `port` and returns the answer.
fn send_raw(port: u16, request: &[u8]) -> String {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    String::from_utf8_lossy(&read_message(&mut s).unwrap()).into_owned()
}

/// A signed POST to endpoint `what`, as raw bytes.
fn signed_request(signer: &Signer, what: &str, body: &str) -> Vec<u8> {
    let signed = signer.sign(what, body.as_bytes(), SystemTime::now());
    let mut head = format!("POST /v1/{what} HTTP/1.1\r\nHost: hecate\r\nContent-Type: application/json\r\n");
    for (h, v) in signed.headers() {
        head.push_str(&format!("{h}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()));
    head.into_bytes()
}

/// A proxy on loopback that records every request it passes to the coordinator on `target`,
/// one request per connection: what an attacker on the forwarder's path captures.
struct Recorder {
    port: u16,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    fn start(target: u16) -> Recorder {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!hecate_test_support::RESERVED_PORTS.contains(&port), "kernel picked reserved port {port}");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { return };
                let recorded = recorded.clone();
                std::thread::spawn(move || {
                    let _ = client.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(request) = read_message(&mut client) else { return };
                    if request.is_empty() {
                        return;
                    }
                    recorded.lock().unwrap().push(request.clone());
                    let Ok(mut upstream) = TcpStream::connect((Ipv4Addr::LOCALHOST, target)) else { return };
                    let _ = upstream.set_read_timeout(Some(Duration::from_secs(10)));
                    if upstream.write_all(&request).is_ok()
                        && let Ok(answer) = read_message(&mut upstream)
                    {
                        let _ = client.write_all(&answer);
                    }
                });
            }
        });
        Recorder { port, requests }
    }

    fn requests(&self) -> Vec<Vec<u8>> {
        self.requests.lock().unwrap().clone()
    }
}

#[test]
fn the_coordinator_runs_the_shutdown_a_forwarder_sends() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "tethys", TETHYS_KEY);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let metrics_port = free_port(Ipv4Addr::LOCALHOST);
    let coord =
        coordinator_with(port, &[("tethys", &key)], &format!(", metrics_listen: \"127.0.0.1:{metrics_port}\""), "");
    wait_for_listen(port);
    let fwd = forwarder(&format!("http://127.0.0.1:{port}"), &key);

    let runs = wait_until("the coordinator's shutdown", Duration::from_secs(60), || {
        let s = coord.runs_of("shutdown");
        if s.is_empty() { Err(format!("no shutdown yet; coordinator log:\n{}", coord.log())) } else { Ok(s) }
    });
    let reason = runs[0]["trigger_reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.starts_with("forwarded by tethys: ups tethys-ups:"), "{reason}");
    wait_until("the forwarder to record the handover", Duration::from_secs(30), || {
        let phase = fwd.status()["phase"].clone();
        if phase == "forwarded" { Ok(()) } else { Err(format!("phase {phase}; forwarder log:\n{}", fwd.log())) }
    });
    assert!(
        fwd.runs_of("shutdown").is_empty(),
        "the forwarder must not run its own shutdown when the coordinator took it"
    );
    let metrics = scrape(metrics_port);
    assert!(metrics.contains("hecate_forwarded_triggers_total{forwarder=\"tethys\"} 1"), "{metrics}");
    assert!(metrics.contains("hecate_forwarders_waiting 1"), "tethys has not cleared yet:\n{metrics}");
    assert!(!fwd.log().contains(TETHYS_KEY) && !coord.log().contains(TETHYS_KEY), "the key is never logged");
}

#[test]
fn a_refused_forward_falls_back_to_the_local_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let good = key_file(dir.path(), "tethys", TETHYS_KEY);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let coord = coordinator(port, &good);
    wait_for_listen(port);
    let wrong_dir = tempfile::tempdir().unwrap();
    let wrong = key_file(wrong_dir.path(), "tethys", "a-different-key-of-enough-length");
    let fwd = forwarder(&format!("http://127.0.0.1:{port}"), &wrong);

    let runs = wait_until("the forwarder's own shutdown", Duration::from_secs(60), || {
        let s = fwd.runs_of("shutdown");
        if s.is_empty() { Err(format!("no local shutdown yet; forwarder log:\n{}", fwd.log())) } else { Ok(s) }
    });
    let reason = runs[0]["trigger_reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("forwarding failed: coordinator answered 401"), "{reason}");
    assert!(reason.contains("the signature does not match forwarder tethys's key"), "{reason}");
    assert!(fwd.log().contains("\"kind\":\"forwarder_fallback\""), "the fallback event:\n{}", fwd.log());
    assert!(coord.runs_of("shutdown").is_empty(), "a wrong key must not shut the cluster down");
    assert!(coord.log().contains("forwarded request refused: the signature does not match"), "{}", coord.log());
}

#[test]
fn an_unreachable_coordinator_falls_back_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "tethys", TETHYS_KEY);
    // Nothing listens there.
    let port = free_port(Ipv4Addr::LOCALHOST);
    let fwd = forwarder(&format!("http://127.0.0.1:{port}"), &key);
    let runs = wait_until("the forwarder's own shutdown", Duration::from_secs(60), || {
        let s = fwd.runs_of("shutdown");
        if s.is_empty() { Err(format!("no local shutdown yet; forwarder log:\n{}", fwd.log())) } else { Ok(s) }
    });
    let reason = runs[0]["trigger_reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("forwarding failed"), "{reason}");
    assert!(fwd.log().contains("\"kind\":\"forwarder_fallback\""), "{}", fwd.log());
}

#[test]
fn the_coordinator_starts_the_cluster_only_once_the_forwarder_has_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "tethys", TETHYS_KEY);
    let port = free_port(Ipv4Addr::LOCALHOST);
    // The coordinator's own mains never fail: without the forwarder's clear it would start the
    // cluster a second after its shutdown, onto machines whose UPS is still failing.
    let coord = coordinator_with(
        port,
        &[("tethys", &key)],
        ", metrics_listen: null, startup_on_power_return: true, power_return_settle: 1s",
        "",
    );
    wait_for_listen(port);
    let fwd = Fwd {
        daemon: ", power_return_settle: 1s",
        script: ", { at: 8s, event: mains_back }",
        ..Fwd::new(&format!("http://127.0.0.1:{port}"), &key)
    }
    .start();

    wait_until("the coordinator to wait for tethys", Duration::from_secs(60), || {
        let st = coord.status();
        let waiting = st["waiting_for_forwarders"].clone();
        let done = !coord.runs_of("shutdown").is_empty();
        if done && waiting == serde_json::json!(["tethys"]) && st["phase"] == "shut_down" {
            Ok(())
        } else {
            Err(format!("phase {}, waiting {waiting}; coordinator log:\n{}", st["phase"], coord.log()))
        }
    });
    wait_until("the coordinator's startup", Duration::from_secs(60), || {
        let log = coord.log();
        if log.contains("stage started stage=") && coord.status()["phase"] == "watching" {
            Ok(())
        } else {
            Err(format!("phase {}; forwarder log:\n{}", coord.status()["phase"], fwd.log()))
        }
    });
    let log = coord.log();
    let cleared = log.find("forwarder tethys: mains are back").expect("the clear arrived");
    let started = log.find("mains power is back and stable: starting the cluster").expect("the startup began");
    assert!(cleared < started, "no startup before the forwarder cleared:\n{log}");
    assert!(fwd.runs_of("shutdown").is_empty());
    assert_eq!(fwd.status()["phase"], "watching", "the forwarder watches again");
}

#[test]
fn after_the_handover_the_forwarder_powers_itself_off_when_its_mains_stay_out() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "tethys", TETHYS_KEY);
    let mark = dir.path().join("tethys-powered-off");
    let port = free_port(Ipv4Addr::LOCALHOST);
    let coord = coordinator(port, &key);
    wait_for_listen(port);
    let fwd = Fwd {
        forwarding: ", power_off_self_after: 1s",
        extra: power_off_self_by_touching(&mark),
        ..Fwd::new(&format!("http://127.0.0.1:{port}"), &key)
    }
    .start();

    wait_until("the forwarder's power-off command", Duration::from_secs(60), || {
        if mark.exists() { Ok(()) } else { Err(format!("not powered off; forwarder log:\n{}", fwd.log())) }
    });
    let log = fwd.log();
    let handed = log.find("the coordinator took the trigger").expect("the handover is logged");
    let off = log.find("powering this host off").expect("the power-off is logged");
    assert!(handed < off, "the host is powered off only after the handover:\n{log}");
    assert!(fwd.runs_of("shutdown").is_empty(), "no local plan ran: the coordinator took the cluster's shutdown");
    assert!(!coord.runs_of("shutdown").is_empty() || coord.status()["phase"] == "shutting_down", "{}", coord.log());
}

#[test]
fn mains_back_before_the_delay_keep_the_forwarder_up() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "tethys", TETHYS_KEY);
    let mark = dir.path().join("tethys-powered-off");
    let port = free_port(Ipv4Addr::LOCALHOST);
    let _coord = coordinator(port, &key);
    wait_for_listen(port);
    let fwd = Fwd {
        daemon: ", power_return_settle: 1s",
        script: ", { at: 5s, event: mains_back }",
        forwarding: ", power_off_self_after: 30s",
        extra: power_off_self_by_touching(&mark),
        ..Fwd::new(&format!("http://127.0.0.1:{port}"), &key)
    }
    .start();

    // While it waits, its status says when it will power itself off.
    let at = wait_until("the forwarder's power-off time in its status", Duration::from_secs(60), || {
        let st = fwd.status();
        match st["power_off_self_at"].as_str() {
            Some(at) if st["phase"] == "forwarded" => Ok(at.to_string()),
            _ => Err(format!("status {st}; forwarder log:\n{}", fwd.log())),
        }
    });
    let at = humantime::parse_rfc3339(&at).unwrap();
    let ahead = at.duration_since(SystemTime::now()).unwrap_or_default();
    assert!(ahead > Duration::from_secs(20) && ahead <= Duration::from_secs(30), "{ahead:?} ahead");
    wait_until("the forwarder to watch again after the handover", Duration::from_secs(60), || {
        let log = fwd.log();
        if log.contains("the coordinator took the trigger") && fwd.status()["phase"] == "watching" {
            Ok(())
        } else {
            Err(format!("phase {}; forwarder log:\n{log}", fwd.status()["phase"]))
        }
    });
    assert!(!mark.exists(), "mains came back within power_off_self_after: no power-off\n{}", fwd.log());
    assert!(fwd.status().get("power_off_self_at").is_none(), "nothing scheduled once watching: {}", fwd.status());
    assert!(!fwd.log().contains("powering this host off"), "{}", fwd.log());
}

#[test]
fn over_tls_the_forwarder_trusts_only_its_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "tethys", TETHYS_KEY);
    hecate_test_support::make_certificates(dir.path());
    let (ca, cert, tls_key) = (dir.path().join("ca.pem"), dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let port = free_port(Ipv4Addr::LOCALHOST);
    let tls = format!(", tls_cert_file: {}, tls_key_file: {}", cert.display(), tls_key.display());
    let coord = coordinator_with(port, &[("tethys", &key)], ", metrics_listen: null", &tls);
    wait_for_listen(port);
    let url = format!("https://127.0.0.1:{port}");

    // Without the CA the coordinator's certificate is not trusted: the forwarder acts locally.
    let untrusting = forwarder(&url, &key);
    wait_until("the untrusting forwarder's own shutdown", Duration::from_secs(60), || {
        if untrusting.runs_of("shutdown").is_empty() { Err(untrusting.log()) } else { Ok(()) }
    });
    assert!(coord.runs_of("shutdown").is_empty(), "nothing reached the coordinator:\n{}", coord.log());

    let ca_file = format!(", ca_file: {}", ca.display());
    let fwd = Fwd { forwarding: &ca_file, ..Fwd::new(&url, &key) }.start();
    let runs = wait_until("the coordinator's shutdown", Duration::from_secs(60), || {
        let s = coord.runs_of("shutdown");
        if s.is_empty() {
            Err(format!("coordinator log:\n{}\nforwarder log:\n{}", coord.log(), fwd.log()))
        } else {
            Ok(s)
        }
    });
    assert!(runs[0]["trigger_reason"].as_str().unwrap_or_default().starts_with("forwarded by tethys"));
    assert!(fwd.runs_of("shutdown").is_empty());
}

/// Issue 15: the captured bytes of a real trigger, sent again within the window (its nonce was
/// seen) and after it (its time is too old), are refused and change nothing.
#[test]
fn a_captured_request_replayed_inside_or_outside_the_window_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "tethys", TETHYS_KEY);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let metrics_port = free_port(Ipv4Addr::LOCALHOST);
    // A short window, so "outside" comes within seconds.
    let coord = coordinator_with(
        port,
        &[("tethys", &key)],
        &format!(", metrics_listen: \"127.0.0.1:{metrics_port}\""),
        ", max_clock_skew: 2s",
    );
    wait_for_listen(port);
    let recorder = Recorder::start(port);
    let _fwd = forwarder(&format!("http://127.0.0.1:{}", recorder.port), &key);

    wait_until("the coordinator's shutdown", Duration::from_secs(60), || {
        if coord.runs_of("shutdown").is_empty() { Err(coord.log()) } else { Ok(()) }
    });
    let captured = recorder
        .requests()
        .into_iter()
        .find(|r| r.starts_with(b"POST /v1/trigger"))
        .expect("the forwarder's trigger went through the recorder");
    let before = scrape(metrics_port);
    assert_eq!(metric(&before, "hecate_forwarded_triggers_total{forwarder=\"tethys\"}"), 1.0, "{before}");
    let waiting = coord.status()["waiting_for_forwarders"].clone();

    // Inside the window: the nonce was seen.
    let answer = send_raw(port, &captured);
    assert!(answer.starts_with("HTTP/1.1 409"), "{answer}");
    assert!(answer.contains("already received"), "{answer}");
    // Outside it: the time is too old, whatever the nonce.
    let answer = wait_until("the replay to fall outside the window", Duration::from_secs(30), || {
        let answer = send_raw(port, &captured);
        if answer.starts_with("HTTP/1.1 401") && answer.contains("outside_window") {
            Ok(answer)
        } else if answer.starts_with("HTTP/1.1 409") {
            Err(answer)
        } else {
            panic!("a replay must be refused: {answer}")
        }
    });
    assert!(answer.contains("behind the coordinator's clock"), "{answer}");

    let after = scrape(metrics_port);
    assert_eq!(
        metric(&after, "hecate_forwarded_triggers_total{forwarder=\"tethys\"}"),
        1.0,
        "a replay is never counted:\n{after}"
    );
    assert!(metric(&after, "hecate_forwarding_refused_total{reason=\"replayed\"}") >= 1.0, "{after}");
    assert_eq!(metric(&after, "hecate_forwarding_refused_total{reason=\"outside_window\"}"), 1.0, "{after}");
    assert_eq!(coord.status()["waiting_for_forwarders"], waiting);
    assert_eq!(coord.runs_of("shutdown").len(), 1, "{}", coord.log());
    assert_eq!(coord.log().matches("trigger forwarded by another instance").count(), 1, "{}", coord.log());
}

/// Issue 15: a forwarder cannot trigger or clear in another's name, and a name the coordinator
/// does not list is refused and leaves no trace in its status or metrics.
#[test]
fn a_forwarder_cannot_speak_for_another_and_unknown_names_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let tethys = key_file(dir.path(), "tethys", TETHYS_KEY);
    let rhea = key_file(dir.path(), "rhea", RHEA_KEY);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let metrics_port = free_port(Ipv4Addr::LOCALHOST);
    let coord = coordinator_with(
        port,
        &[("tethys", &tethys), ("rhea", &rhea)],
        &format!(", metrics_listen: \"127.0.0.1:{metrics_port}\""),
        "",
    );
    wait_for_listen(port);
    let url = format!("http://127.0.0.1:{port}");

    // rhea's daemon claiming to be tethys: signed with rhea's key, refused, and so it shuts
    // down on its own.
    let impostor = Fwd::new(&url, &rhea).start();
    let runs = wait_until("the impostor's own shutdown", Duration::from_secs(60), || {
        let s = impostor.runs_of("shutdown");
        if s.is_empty() { Err(impostor.log()) } else { Ok(s) }
    });
    assert!(runs[0]["trigger_reason"].as_str().unwrap_or_default().contains("401"), "{}", runs[0]);
    assert!(coord.runs_of("shutdown").is_empty() && coord.status()["phase"] == "watching", "{}", coord.log());
    drop(impostor);

    // The real tethys: the coordinator waits for it.
    let _real = forwarder(&url, &tethys);
    wait_until("the coordinator to wait for tethys", Duration::from_secs(60), || {
        let st = coord.status();
        if st["waiting_for_forwarders"] == serde_json::json!(["tethys"]) { Ok(()) } else { Err(st.to_string()) }
    });
    // rhea's clear is rhea's: accepted, and it ends nothing of tethys's.
    let as_rhea = Signer::new("rhea", Key::from_secret(RHEA_KEY));
    let answer = send_raw(port, &signed_request(&as_rhea, "clear", r#"{"outage":null}"#));
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    // rhea signing a clear in tethys's name: refused.
    let forged = Signer::new("tethys", Key::from_secret(RHEA_KEY));
    let answer = send_raw(port, &signed_request(&forged, "clear", r#"{"outage":null}"#));
    assert!(answer.starts_with("HTTP/1.1 401") && answer.contains("bad_signature"), "{answer}");
    let answer = send_raw(port, &signed_request(&forged, "trigger", r#"{"outage":"x-1","reason":"forged"}"#));
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    wait_until("rhea's clear to be handled", Duration::from_secs(30), || {
        let log = coord.log();
        if log.contains("clear from forwarder rhea") { Ok(()) } else { Err(log) }
    });
    assert_eq!(coord.status()["waiting_for_forwarders"], serde_json::json!(["tethys"]), "{}", coord.log());

    // A name it does not list.
    let mallory = Signer::new("mallory", Key::from_secret("mallory-key-0123456789abcdef"));
    let answer = send_raw(port, &signed_request(&mallory, "trigger", r#"{"outage":"m-1","reason":"evil"}"#));
    assert!(answer.starts_with("HTTP/1.1 401") && answer.contains("unknown_forwarder"), "{answer}");
    let status = std::fs::read_to_string(coord.state_dir().join("status.json")).unwrap();
    let metrics = scrape(metrics_port);
    assert!(!status.contains("mallory") && !metrics.contains("mallory"), "{status}\n{metrics}");
    // Each listed forwarder's counter exists from the start (at 0, so increase() sees its first).
    assert_eq!(
        metric(&metrics, "hecate_forwarded_triggers_total{forwarder=\"rhea\"}"),
        0.0,
        "rhea never triggered:\n{metrics}"
    );
    assert_eq!(metric(&metrics, "hecate_forwarding_refused_total{reason=\"unknown_forwarder\"}"), 1.0, "{metrics}");
    assert!(!coord.log().contains("forged"), "{}", coord.log());
}

/// Issue 15: 3,000 invented names (before, 1.5 MB of status.json and 1.7 MB of /metrics) change
/// neither's size, and the log holds one line for them, not 3,000.
#[test]
fn three_thousand_invented_names_grow_neither_status_nor_metrics_nor_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "tethys", TETHYS_KEY);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let metrics_port = free_port(Ipv4Addr::LOCALHOST);
    let coord =
        coordinator_with(port, &[("tethys", &key)], &format!(", metrics_listen: \"127.0.0.1:{metrics_port}\""), "");
    wait_for_listen(port);
    let status_text = || std::fs::read_to_string(coord.state_dir().join("status.json")).unwrap_or_default();
    let first = wait_until("the first status", Duration::from_secs(30), || {
        let s = status_text();
        if s.is_empty() { Err("no status yet".into()) } else { Ok(s) }
    });
    let metrics_before = scrape(metrics_port);

    for i in 0..3000 {
        let signer = Signer::new(format!("host-{i}"), Key::from_secret(&format!("invented-key-{i}-0123456789")));
        let body = format!(r#"{{"outage":"o-{i}","reason":"r"}}"#);
        let answer = send_raw(port, &signed_request(&signer, "trigger", &body));
        assert!(answer.starts_with("HTTP/1.1 401"), "{i}: {answer}");
    }
    // A status written after them all.
    let updated = serde_json::from_str::<serde_json::Value>(&first).unwrap()["updated_at"].clone();
    let status_after = wait_until("a newer status", Duration::from_secs(30), || {
        let s = status_text();
        let v: serde_json::Value = serde_json::from_str(&s).map_err(|e| e.to_string())?;
        if v["updated_at"] != updated { Ok(s) } else { Err("not rewritten yet".into()) }
    });
    let metrics_after = scrape(metrics_port);
    assert!(
        status_after.len().abs_diff(first.len()) < 100,
        "status.json grew from {} to {} bytes",
        first.len(),
        status_after.len()
    );
    assert!(
        metrics_after.len().abs_diff(metrics_before.len()) < 100,
        "/metrics grew from {} to {} bytes",
        metrics_before.len(),
        metrics_after.len()
    );
    assert!(!status_after.contains("host-") && !metrics_after.contains("host-"));
    assert_eq!(
        metric(&metrics_after, "hecate_forwarding_refused_total{reason=\"unknown_forwarder\"}"),
        3000.0,
        "every refusal is counted"
    );
    let log = coord.log();
    let lines = log.lines().filter(|l| l.contains("forwarded request refused")).count();
    let summaries = log.lines().filter(|l| l.contains("more forwarded request(s) refused")).count();
    assert_eq!(lines, 1, "the first refusal is logged, the rest summed up:\n{log}");
    assert!(summaries <= 1, "{log}");
    assert!(coord.runs_of("shutdown").is_empty() && coord.status()["phase"] == "watching");
}

/// Issue 15: a forwarder whose clock is 5 minutes ahead is refused with a reason it logs and
/// shows in its status (and shuts down on its own); one 20 s ahead, within the window, is
/// accepted.
#[test]
fn a_skewed_forwarder_clock_is_refused_beyond_the_window_and_accepted_within() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "tethys", TETHYS_KEY);
    let port = free_port(Ipv4Addr::LOCALHOST);
    let coord = coordinator(port, &key);
    wait_for_listen(port);
    let url = format!("http://127.0.0.1:{port}");

    let skewed = Fwd { wrapper: faketime("+300s"), ..Fwd::new(&url, &key) }.start();
    let runs = wait_until("the skewed forwarder's own shutdown", Duration::from_secs(60), || {
        let s = skewed.runs_of("shutdown");
        if s.is_empty() { Err(skewed.log()) } else { Ok(s) }
    });
    let reason = runs[0]["trigger_reason"].as_str().unwrap_or_default().to_string();
    assert!(reason.contains("ahead of the coordinator's clock"), "{reason}");
    assert!(skewed.log().contains("ahead of the coordinator's clock"), "{}", skewed.log());
    let problem = skewed.status()["forwarding_problem"].as_str().unwrap_or_default().to_string();
    assert!(problem.contains("ahead of the coordinator's clock") && problem.contains("max_clock_skew"), "{problem}");
    let shown =
        std::process::Command::new(hecate()).args(["status", "--config"]).arg(skewed.config()).output().unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("forwarding problem: the trigger was not forwarded"), "{shown}");
    assert!(coord.runs_of("shutdown").is_empty(), "{}", coord.log());
    drop(skewed);

    let within = Fwd { wrapper: faketime("+20s"), ..Fwd::new(&url, &key) }.start();
    let runs = wait_until("the coordinator's shutdown", Duration::from_secs(60), || {
        let s = coord.runs_of("shutdown");
        if s.is_empty() { Err(format!("{}\n{}", coord.log(), within.log())) } else { Ok(s) }
    });
    assert!(runs[0]["trigger_reason"].as_str().unwrap_or_default().starts_with("forwarded by tethys"));
    assert!(within.runs_of("shutdown").is_empty(), "{}", within.log());
}
