//! Nothing on the network can starve the daemon (issue 12, part 4): a real `hecate daemon`
//! coordinator, with the 1,024 descriptors systemd gives a unit by default, shuts a simulated
//! cluster down while 2,000 idle, half-sent connections are held against `/metrics` and 2,000
//! against the forwarding endpoint; a real scrape and a real forwarded trigger are answered.

#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hecate_test_support::{HecateDaemon, free_port, wait_until};

const TETHYS_KEY: &str = "tethys-forwarding-key-0123456789";

/// Connections held against each port.
const HELD: usize = 2000;

/// The soft descriptor limit systemd gives a unit that does not set `LimitNOFILE`.
const UNIT_DEFAULT_NOFILE: u64 = 1024;

/// How long the attackers try to open their connections at most. Against an unguarded daemon
/// that is out of descriptors connects time out once its backlog is full; then the attacker
/// holds what it got.
const OPEN_FOR: Duration = Duration::from_secs(10);

/// When the simulated UPS loses mains, since the daemon started: after the attack is in place
/// (the test checks it).
const MAINS_LOST_AT_S: u64 = 20;

/// The daemon under test, with what this test needs to know of its process.
struct Daemon {
    daemon: HecateDaemon,
    _key_dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `hecate daemon` with the unit's default soft descriptor limit (through `prlimit`,
    /// which sets it and then execs, so the child is the daemon itself).
    fn start(yaml_body: &str, nofile_hard: u64) -> Daemon {
        let key_dir = tempfile::tempdir().unwrap();
        let key = key_dir.path().join("tethys.key");
        std::fs::write(&key, format!("{TETHYS_KEY}\n")).unwrap();
        let yaml = yaml_body.replace("KEY_FILE", key.to_str().unwrap());
        let prlimit = ["prlimit".to_string(), format!("--nofile={UNIT_DEFAULT_NOFILE}:{nofile_hard}")];
        let daemon = HecateDaemon::start_wrapped(&prlimit, Path::new(env!("CARGO_BIN_EXE_hecate")), &yaml, |_| {});
        Daemon { daemon, _key_dir: key_dir }
    }

    fn status(&self) -> serde_json::Value {
        self.daemon.status()
    }

    fn shutdowns(&self) -> Vec<serde_json::Value> {
        self.daemon.runs_of("shutdown")
    }

    fn log(&self) -> String {
        self.daemon.log()
    }

    /// For failure messages: the log's errors and its last lines (a daemon out of descriptors
    /// logs a warning per poll, which would bury the error that matters).
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let errors: Vec<&str> = lines.iter().copied().filter(|l| l.contains(" ERROR ")).take(20).collect();
        format!("errors:\n{}\nlast lines:\n{}", errors.join("\n"), lines[lines.len().saturating_sub(20)..].join("\n"))
    }

    /// The daemon's soft descriptor limit, as the kernel sees it.
    fn soft_nofile(&self) -> Option<u64> {
        nofile_limits(&format!("/proc/{}/limits", self.daemon.pid())).map(|(soft, _)| soft)
    }

    /// How many descriptors the daemon has open.
    fn open_descriptors(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.daemon.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// Panics with the log if the daemon has exited.
    fn assert_running(&mut self) {
        if let Some(status) = self.daemon.exit_status() {
            panic!("the daemon exited ({status}); log:\n{}", self.log_tail());
        }
    }
}

/// (soft, hard) "Max open files" from a `/proc/*/limits` file.
fn nofile_limits(path: &str) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line.trim_start_matches("Max open files").split_whitespace();
    let mut number = || fields.next().and_then(|f| f.parse::<u64>().ok()).unwrap_or(u64::MAX);
    Some((number(), number()))
}

/// Raises this test process's soft descriptor limit to its hard limit (it holds 4,000 sockets)
/// and returns the hard limit. Done with `prlimit --pid`, as the crate forbids `unsafe`.
fn raise_own_nofile_limit(need: u64) -> u64 {
    let (soft, hard) = nofile_limits("/proc/self/limits").expect("reading /proc/self/limits");
    assert!(
        hard >= need,
        "this test holds {need} sockets but the hard limit on open files is {hard}: raise it (e.g. `ulimit -Hn \
         {need}` as root, or LimitNOFILE= for the CI service) and run it again"
    );
    if soft < need {
        let out = Command::new("prlimit")
            .args(["--pid", &std::process::id().to_string(), &format!("--nofile={hard}:{hard}")])
            .output()
            .expect("running prlimit (util-linux)");
        assert!(out.status.success(), "prlimit: {}", String::from_utf8_lossy(&out.stderr));
        let (soft, _) = nofile_limits("/proc/self/limits").unwrap();
        assert!(soft >= need, "the soft limit on open files is still {soft} after prlimit");
    }
    hard
}

/// What one attacker did.
#[derive(Debug, Default)]
struct AttackReport {
    /// Connections open when the attack was in place.
    held_at_start: usize,
    /// Connections the daemon closed and the attacker opened again.
    reopened: usize,
    /// Connects that failed or timed out.
    failed: usize,
}

/// Holds `HELD` connections to `port`, each having sent `head` (a request head without its
/// final blank line) and nothing more. Connections the daemon closes are opened again, a few
/// per round, so the daemon meets a full set of quiet connections whenever a real client comes.
/// Sends the number held once the set is open, then runs until `stop`.
fn attack(
    port: u16,
    head: &'static [u8],
    stop: Arc<AtomicBool>,
    opened: mpsc::Sender<usize>,
) -> JoinHandle<AttackReport> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    std::thread::spawn(move || {
        let mut report = AttackReport::default();
        let open = |report: &mut AttackReport| -> Option<TcpStream> {
            let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok().and_then(|mut s| {
                s.write_all(head).ok()?;
                s.set_nonblocking(true).ok()?;
                Some(s)
            });
            if s.is_none() {
                report.failed += 1;
            }
            s
        };
        let mut held: Vec<TcpStream> = Vec::with_capacity(HELD);
        let until = Instant::now() + OPEN_FOR;
        while held.len() < HELD && Instant::now() < until {
            if let Some(s) = open(&mut report) {
                held.push(s);
            }
        }
        report.held_at_start = held.len();
        let _ = opened.send(held.len());
        let mut byte = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            let mut budget = 50;
            for s in &mut held {
                let closed = match s.read(&mut byte) {
                    Ok(0) => true,
                    Ok(_) => false,
                    Err(e) => e.kind() != ErrorKind::WouldBlock,
                };
                if closed && budget > 0 {
                    budget -= 1;
                    if let Some(fresh) = open(&mut report) {
                        *s = fresh;
                        report.reopened += 1;
                    }
                }
            }
            // Pacing, not synchronisation: a load generator that reconnects flat out would
            // only measure how fast two shared cores can churn loopback connections.
            std::thread::sleep(Duration::from_millis(100));
        }
        report
    })
}

/// Sends `request` on a fresh connection and returns the whole answer (the request says
/// `Connection: close`). Every step is bounded.
fn exchange(port: u16, request: &[u8]) -> Result<String, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| format!("send: {e}"))?;
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => {}
        // Some answer came and then the read timed out or the peer reset: judge what came.
        Err(_) if !out.is_empty() => {}
        Err(e) => return Err(format!("no answer: {e}")),
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn scrape(port: u16) -> Result<String, String> {
    let answer = exchange(port, b"GET /metrics HTTP/1.1\r\nHost: hecate\r\nConnection: close\r\n\r\n")?;
    if answer.starts_with("HTTP/1.1 200") && answer.contains("hecate_shutdown_triggered") {
        Ok(answer)
    } else {
        Err(format!("answered {answer:?}"))
    }
}

fn forward_trigger(port: u16) -> Result<String, String> {
    let body = r#"{"outage":"listeners-1","reason":"ups tethys-ups: on battery"}"#;
    // Signed anew for every try: a request is accepted once.
    let signer = hecate::forward::Signer::new("tethys", hecate::forward::Key::from_secret(TETHYS_KEY));
    let signed = signer.sign("trigger", body.as_bytes(), std::time::SystemTime::now());
    let headers: String = signed.headers().iter().map(|(h, v)| format!("{h}: {v}\r\n")).collect();
    let request = format!(
        "POST /v1/trigger HTTP/1.1\r\nHost: hecate\r\n{headers}Content-Type: application/json\r\nContent-Length: \
         {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(port, request.as_bytes())?;
    if answer.starts_with("HTTP/1.1 202") { Ok(answer) } else { Err(format!("answered {answer:?}")) }
}

#[test]
fn idle_connections_on_both_listeners_starve_neither_the_shutdown_nor_real_clients() {
    // 4,000 attack sockets, the real clients' and the harness's own.
    let hard = raise_own_nofile_limit(2 * HELD as u64 + 256);
    let metrics_port = free_port(Ipv4Addr::LOCALHOST);
    let forward_port = free_port(Ipv4Addr::LOCALHOST);
    let started = Instant::now();
    let mut daemon = Daemon::start(
        &format!(
            "host: titan-db
role:
  coordinator: {{ listen: \"127.0.0.1:{forward_port}\", forwarders: [ {{ name: tethys, key_file: KEY_FILE }} ] }}
daemon: {{ poll_interval: 200ms, metrics_listen: \"127.0.0.1:{metrics_port}\" }}
policy: {{ debounce_polls: 1 }}
budget: {{ default_shutdown_budget: 10s }}
power_sources:
  - {{ type: simulated, name: main-ups, battery_runtime: 12s, script: [ {{ at: {MAINS_LOST_AT_S}s, event: mains_lost }} ] }}
cluster: {{ type: simulated }}
nodes:
  - {{ name: s1, address: x, role: server, init: true, controllers: [ {{ type: simulated, step_duration: 1s }} ] }}
  - {{ name: a1, address: y, role: agent, controllers: [ {{ type: simulated, step_duration: 1s }} ] }}
notifiers: [ {{ type: log }} ]
"
        ),
        hard,
    );
    for (what, port) in [("/metrics", metrics_port), ("the forwarding endpoint", forward_port)] {
        wait_until(what, Duration::from_secs(30), || {
            TcpStream::connect((Ipv4Addr::LOCALHOST, port))
                .map(|_| ())
                .map_err(|e| format!("{e}\n{}", daemon.log_tail()))
        });
    }
    assert_eq!(daemon.soft_nofile(), Some(UNIT_DEFAULT_NOFILE), "the daemon runs with the unit's default limit");
    // What the listeners may add to the descriptors the daemon holds before the attack (a
    // little more for the status file being rewritten and the like).
    let before = daemon.open_descriptors();
    let allowed =
        before + hecate::http::Limits::METRICS.max_connections + hecate::http::Limits::FORWARDING.max_connections + 16;
    let check_descriptors = |when: &str| {
        let open = daemon.open_descriptors();
        assert!(open <= allowed, "{when}: the daemon holds {open} descriptors, {before} before the attack");
        open
    };

    let stop = Arc::new(AtomicBool::new(false));
    let (opened_tx, opened) = mpsc::channel();
    let attackers = [
        attack(metrics_port, b"GET /metrics HTTP/1.1\r\nHost: hecate\r\n", stop.clone(), opened_tx.clone()),
        attack(
            forward_port,
            b"POST /v1/trigger HTTP/1.1\r\nHost: hecate\r\nContent-Type: application/json\r\n",
            stop.clone(),
            opened_tx,
        ),
    ];
    for _ in &attackers {
        opened.recv_timeout(Duration::from_secs(120)).expect("the attackers open their connections");
    }
    let phase = daemon.status()["phase"].clone();
    assert!(
        phase == "watching" && started.elapsed() < Duration::from_secs(MAINS_LOST_AT_S),
        "the attack must be in place before the UPS loses mains ({MAINS_LOST_AT_S} s after start), but it took \
         {:?} and the daemon is {phase}: raise MAINS_LOST_AT_S",
        started.elapsed()
    );
    let during = check_descriptors("with the attack in place");

    // The UPS loses mains and the shutdown starts.
    wait_until("the shutdown to start", Duration::from_secs(60), || {
        let phase = daemon.status()["phase"].clone();
        if phase == "shutting_down" || !daemon.shutdowns().is_empty() {
            Ok(())
        } else {
            Err(format!("phase {phase}; log:\n{}", daemon.log_tail()))
        }
    });
    // While it runs (or once it is done): a real scrape and a real forwarded trigger.
    let metrics =
        wait_until("a real scrape of /metrics to be answered", Duration::from_secs(60), || scrape(metrics_port));
    assert!(metrics.contains("hecate_shutdown_triggered 1"), "{metrics}");
    wait_until("a real forwarded trigger to be answered 202", Duration::from_secs(60), || {
        forward_trigger(forward_port)
    });
    let runs = wait_until("the shutdown to run to its end", Duration::from_secs(120), || {
        let runs = daemon.shutdowns();
        if runs.is_empty() { Err(format!("no shutdown in runs.json; log:\n{}", daemon.log_tail())) } else { Ok(runs) }
    });
    wait_until("the daemon to take the forwarded trigger", Duration::from_secs(30), || {
        let log = daemon.log();
        if log.contains("forwarded by tethys") { Ok(()) } else { Err(daemon.log_tail()) }
    });
    let after = check_descriptors("after the shutdown");
    daemon.assert_running();

    stop.store(true, Ordering::Relaxed);
    let reports: Vec<AttackReport> = attackers.into_iter().map(|a| a.join().unwrap()).collect();
    eprintln!(
        "attack on /metrics: {:?}\nattack on the forwarding endpoint: {:?}\ndaemon descriptors: {before} before, \
         {during} during, {after} after the shutdown (at most {allowed})",
        reports[0], reports[1]
    );
    assert_eq!(runs[0]["outcome"], "success", "{}\n{}", runs[0], daemon.log_tail());
    assert!(
        runs[0]["trigger_reason"].as_str().unwrap_or_default().contains("main-ups"),
        "the UPS triggered the shutdown: {}",
        runs[0]
    );
    let starved: Vec<String> =
        daemon.log().lines().filter(|l| l.contains("Too many open files")).map(String::from).collect();
    assert!(starved.is_empty(), "the daemon ran out of descriptors:\n{}", starved.join("\n"));
    for r in &reports {
        assert!(r.held_at_start >= HELD / 2, "the attack was real: {r:?}");
    }
}
