//! The `nut` backend against a FAKE upsd, for what the real upsd + dummy-ups cannot show:
//! dummy-ups knows no `load.off.delay` or `shutdown.return` (upsd answers `ERR CMD-NOT-SUPPORTED`),
//! and a real upsd cannot be told to stall, to send garbage, or to drop a connection on cue.
//! Everything the real peer can show is tested against it in nut_upsd.rs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hecate_backends::power::nut::{NutConfig, NutTlsConfig, NutUps};
use hecate_core::ErrorKind;
use hecate_core::duration::HumanDuration;
use hecate_core::power::{Attachment, PowerSource, StatusFlag};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// Bounds every test, so a hang fails instead of blocking the suite.
const TEST_LIMIT: Duration = Duration::from_secs(20);

/// What the fake does with one request line.
enum Reply {
    /// Sends these lines.
    Lines(Vec<String>),
    /// Sends these lines after a delay.
    After(Duration, Vec<String>),
    /// Sends nothing, and keeps the connection open.
    Silence,
    /// Closes the connection without answering.
    Close,
}

type Script = dyn Fn(usize, &str) -> Reply + Send + Sync;

/// A FAKE upsd standing in where dummy-ups cannot (see the file comment): a tokio listener on
/// 127.0.0.1 with a kernel-chosen port that records every line it receives and answers from a
/// script given (connection number from 0, line).
struct FakeUpsd {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
    written: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpsd {
    async fn start(script: impl Fn(usize, &str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound listener has an address");
        assert!(
            !hecate_test_support::RESERVED_PORTS.contains(&addr.port()),
            "kernel picked reserved port {}",
            addr.port()
        );
        let lines = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let written = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let task = tokio::spawn({
            let (lines, accepted, written) = (lines.clone(), accepted.clone(), written.clone());
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let conn = accepted.fetch_add(1, Ordering::SeqCst);
                    let (lines, script, written) = (lines.clone(), script.clone(), written.clone());
                    tokio::spawn(async move {
                        let (read, mut write) = stream.into_split();
                        let mut read = BufReader::new(read).lines();
                        while let Ok(Some(line)) = read.next_line().await {
                            lines.lock().expect("lines lock").push(line.clone());
                            let out = match script(conn, &line) {
                                Reply::Lines(out) => out,
                                Reply::After(delay, out) => {
                                    tokio::time::sleep(delay).await;
                                    out
                                }
                                Reply::Silence => continue,
                                Reply::Close => return,
                            };
                            for l in out {
                                if write.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                                    return;
                                }
                                written.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    });
                }
            }
        });
        Self { addr, lines, accepted, written, task }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lines lock").clone()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// How many answer lines it has written, on all connections.
    fn written(&self) -> usize {
        self.written.load(Ordering::SeqCst)
    }

    /// Polls until it has written `n` answer lines.
    async fn wait_written(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.written() < n {
            assert!(Instant::now() < deadline, "fake wrote {} of {n} lines", self.written());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeUpsd {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lines(ls: &[&str]) -> Reply {
    Reply::Lines(ls.iter().map(|l| l.to_string()).collect())
}

/// A `LIST VAR atlasups` answer.
fn var_list(vars: &[(&str, &str)]) -> Vec<String> {
    let mut out = vec!["BEGIN LIST VAR atlasups".to_string()];
    out.extend(
        vars.iter().map(|(n, v)| format!("VAR atlasups {n} \"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))),
    );
    out.push("END LIST VAR atlasups".into());
    out
}

/// What upsd answers to the requests the backend makes, with these variables.
fn upsd_like(vars: &'static [(&'static str, &'static str)]) -> impl Fn(usize, &str) -> Reply {
    move |_, line| {
        let word = line.split_whitespace().next().unwrap_or_default();
        match word {
            "USERNAME" | "PASSWORD" | "INSTCMD" => lines(&["OK"]),
            "LIST" if line == "LIST VAR atlasups" => Reply::Lines(var_list(vars)),
            "LOGOUT" => lines(&["OK Goodbye"]),
            _ => lines(&["ERR UNKNOWN-COMMAND"]),
        }
    }
}

const ONLINE: &[(&str, &str)] = &[("ups.status", "OL"), ("battery.charge", "100")];

fn config(fake: &FakeUpsd, password: Option<(&Path, &str)>, timeout: Duration) -> NutConfig {
    let (username, password_file) = match password {
        Some((dir, pass)) => {
            let file = dir.join("nut.pass");
            std::fs::write(&file, format!("{pass}\n")).expect("write the password file");
            (Some("admin".to_string()), Some(file))
        }
        None => (None, None),
    };
    NutConfig {
        name: "atlas".into(),
        ups: "atlasups".into(),
        endpoint: fake.addr.to_string(),
        username,
        password_file,
        timeout: HumanDuration(timeout),
        tls: None,
        // The login's own tests set it; the others look at the other requests.
        login: Some(Attachment::None),
    }
}

/// A CA certificate whose key was thrown away when it was made: enough to build a `tls` source,
/// and these fakes never get as far as a handshake (the real one is tested in nut_tls.rs).
const UNUSED_CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBpDCCAUugAwIBAgIUTMMcc+jF6a23j8maToyOtWS6+uQwCgYIKoZIzj0EAwIw
JzElMCMGA1UEAwwcaGVjYXRlIHRlc3QgY2Egd2l0aG91dCBhIGtleTAgFw0yNjEx
MjUwNTM1NDBaGA8yMTI2MTEwMTA1MzU0MFowJzElMCMGA1UEAwwcaGVjYXRlIHRl
c3QgY2Egd2l0aG91dCBhIGtleTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABLKM
25A6zwGxbt5qc/fRVzu8xw7oqJKQeXi/jikhtsNHzB1zYLgqk66eCexBF4+lwHP/
Sv/iqvOgMr0AYO2PCTCjUzBRMB0GA1UdDgQWBBQE9WVoDKKusnszEPhPK2kv8z6H
UTAfBgNVHSMEGDAWgBQE9WVoDKKusnszEPhPK2kv8z6HUTAPBgNVHRMBAf8EBTAD
AQH/MAoGCCqGSM49BAMCA0cAMEQCIExmY5k5uUvVAICItK/gUCQRU1rUn1AG4sXU
dZV7Dk5HAiA1BwgWkh8yibS8JfJ2qQBInE9kJww5Tbzh1IzmozrMIg==
-----END CERTIFICATE-----
";

/// [`config`] with a login and `tls` trusting [`UNUSED_CA_PEM`].
fn tls_config(fake: &FakeUpsd, dir: &Path, timeout: Duration) -> NutConfig {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, UNUSED_CA_PEM).expect("write the CA file");
    let mut cfg = config(fake, Some((dir, "s3cret")), timeout);
    cfg.tls = Some(NutTlsConfig { ca_file: Some(ca_file), server_name: None, required: true });
    cfg
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, f).await.expect("test took longer than its limit")
}

#[tokio::test]
async fn instcmd_with_parameter_is_sent_after_username_and_password() {
    bounded(async {
        let fake = FakeUpsd::start(upsd_like(ONLINE)).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&fake, Some((dir.path(), "s3cret")), Duration::from_secs(5));
        let mut ups = NutUps::new(&cfg).unwrap();

        ups.instant_command("load.off.delay", Some("120")).await.unwrap();
        ups.instant_command("shutdown.return", None).await.unwrap();

        assert_eq!(
            fake.lines(),
            [
                "USERNAME admin",
                "PASSWORD s3cret",
                "INSTCMD atlasups load.off.delay 120",
                "INSTCMD atlasups shutdown.return",
            ]
        );
        assert_eq!(fake.accepted(), 1);
        let debug = format!("{ups:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    })
    .await;
}

#[tokio::test]
async fn password_with_spaces_and_quotes_is_quoted() {
    bounded(async {
        let fake = FakeUpsd::start(upsd_like(ONLINE)).await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&fake, Some((dir.path(), r#"pa ss"w"#)), Duration::from_secs(5));
        let mut ups = NutUps::new(&cfg).unwrap();
        ups.instant_command("load.off", None).await.unwrap();
        assert_eq!(fake.lines()[1], r#"PASSWORD "pa ss\"w""#);
    })
    .await;
}

#[tokio::test]
async fn instcmd_without_credentials_is_a_config_error_and_sends_nothing() {
    bounded(async {
        let fake = FakeUpsd::start(upsd_like(ONLINE)).await;
        let mut ups = NutUps::new(&config(&fake, None, Duration::from_secs(5))).unwrap();
        let err = ups.instant_command("load.off", None).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
        assert_eq!(fake.accepted(), 0);
    })
    .await;
}

#[tokio::test]
async fn instcmd_err_answers_map_to_kinds() {
    bounded(async {
        let fake = FakeUpsd::start(|_, line: &str| match line {
            "INSTCMD atlasups beeper.mute" => lines(&["ERR CMD-NOT-SUPPORTED"]),
            "INSTCMD atlasups load.off" => lines(&["ERR ACCESS-DENIED"]),
            "INSTCMD atlasups load.on" => lines(&["ERR INSTCMD-FAILED"]),
            "INSTCMD atlasups shutdown.stayoff" => lines(&["OK TRACKING 1bd31808"]),
            _ => lines(&["OK"]),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(&fake, Some((dir.path(), "pw")), Duration::from_secs(5));
        let mut ups = NutUps::new(&cfg).unwrap();
        for (cmd, kind) in
            [("beeper.mute", ErrorKind::Unsupported), ("load.off", ErrorKind::Auth), ("load.on", ErrorKind::Failed)]
        {
            let err = ups.instant_command(cmd, None).await.unwrap_err();
            assert_eq!(err.kind, kind, "{cmd}: {err}");
        }
        ups.instant_command("shutdown.stayoff", None).await.unwrap();
        // ERR answers leave the connection in step: all on one.
        assert_eq!(fake.accepted(), 1);
    })
    .await;
}

#[tokio::test]
async fn unanswered_request_times_out_within_the_configured_timeout() {
    bounded(async {
        let fake = FakeUpsd::start(|_, _: &str| Reply::Silence).await;
        let timeout = Duration::from_millis(300);
        let mut ups = NutUps::new(&config(&fake, None, timeout)).unwrap();
        let start = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(5), ups.read())
            .await
            .expect("read must give up by itself")
            .unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
        assert!(took >= timeout && took < Duration::from_secs(3), "{took:?}");
        assert!(err.message.contains("LIST VAR atlasups"), "{err}");
    })
    .await;
}

#[tokio::test]
async fn garbage_answers_are_protocol_errors() {
    let cases: &[&[&str]] = &[
        &["HELLO WORLD"],
        &["BEGIN LIST VAR atlasups", "VAR atlasups ups.status \"OL"],
        &["BEGIN LIST VAR otherups", "END LIST VAR otherups"],
        &["BEGIN LIST VAR atlasups", "VAR atlasups ups.status", "END LIST VAR atlasups"],
        &["BEGIN LIST VAR atlasups", "VAR atlasups ups.status \"OL\" extra"],
    ];
    for case in cases {
        bounded(async {
            let answer: Vec<String> = case.iter().map(|l| l.to_string()).collect();
            let fake = FakeUpsd::start(move |_, _: &str| Reply::Lines(answer.clone())).await;
            let mut ups = NutUps::new(&config(&fake, None, Duration::from_secs(2))).unwrap();
            let err = ups.read().await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::Protocol, "{case:?}: {err}");
        })
        .await;
    }
}

#[tokio::test]
async fn values_map_to_the_reading() {
    bounded(async {
        let fake = FakeUpsd::start(upsd_like(&[
            ("device.model", r#"Smart "UPS" \ 1500"#),
            ("ups.status", "OB DISCHRG LB"),
            ("battery.charge", "41.5"),
            ("battery.runtime", "n/a"),
            ("ups.load", " 23 "),
            ("input.voltage", "0.0"),
            ("output.voltage", "NaN"),
            ("battery.voltage", "24.6"),
        ]))
        .await;
        let mut ups = NutUps::new(&config(&fake, None, Duration::from_secs(5))).unwrap();
        let r = ups.read().await.unwrap();
        assert!(r.status.on_battery() && !r.status.online());
        assert!(r.status.has(&StatusFlag::LowBattery));
        assert!(r.status.has(&StatusFlag::Discharging));
        assert_eq!(r.charge_pct, Some(41.5));
        assert_eq!(r.runtime_s, None, "unparsable numbers are left out");
        assert_eq!(r.load_pct, Some(23.0));
        assert_eq!(r.input_voltage, Some(0.0));
        assert_eq!(r.output_voltage, None, "NaN is not a reading");
        assert_eq!(r.battery_voltage, Some(24.6));
    })
    .await;
}

#[tokio::test]
async fn wait_or_missing_status_is_no_data() {
    for vars in [&[("ups.status", "WAIT")][..], &[("battery.charge", "100")][..], &[("ups.status", "")][..]] {
        bounded(async {
            let vars: &'static [(&'static str, &'static str)] = vars;
            let fake = FakeUpsd::start(upsd_like(vars)).await;
            let mut ups = NutUps::new(&config(&fake, None, Duration::from_secs(5))).unwrap();
            let err = ups.read().await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::NoData, "{vars:?}: {err}");
        })
        .await;
    }
}

#[tokio::test]
async fn backs_off_after_a_failed_connection_and_fails_fast_meanwhile() {
    bounded(async {
        // Accepts, then hangs up on every request: a upsd that is there and not working.
        let fake = FakeUpsd::start(|_, _: &str| Reply::Close).await;
        let mut ups = NutUps::new(&config(&fake, None, Duration::from_secs(5))).unwrap();

        let err = ups.read().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreachable, "{err}");
        assert_eq!(fake.accepted(), 1);

        let start = Instant::now();
        let err = ups.read().await.unwrap_err();
        assert!(start.elapsed() < Duration::from_millis(200), "{:?}", start.elapsed());
        assert_eq!(err.kind, ErrorKind::Unreachable, "{err}");
        assert!(err.message.contains("not reconnecting"), "{err}");
        assert_eq!(fake.accepted(), 1, "no new connection while backing off");

        // After the first delay (0.5 s) the next read tries again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while fake.accepted() < 2 {
            assert!(Instant::now() < deadline, "never tried again");
            let _ = ups.read().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn a_dead_kept_connection_is_replaced_within_the_same_read() {
    bounded(async {
        // Connection 0 answers one poll and then hangs up, as a restarted upsd would look.
        let polls = Arc::new(AtomicUsize::new(0));
        let fake = FakeUpsd::start(move |conn, _: &str| {
            if conn == 0 && polls.fetch_add(1, Ordering::SeqCst) >= 1 {
                Reply::Close
            } else {
                Reply::Lines(var_list(ONLINE))
            }
        })
        .await;
        let mut ups = NutUps::new(&config(&fake, None, Duration::from_secs(5))).unwrap();
        assert!(ups.read().await.unwrap().status.online());
        assert!(ups.read().await.unwrap().status.online());
        assert_eq!(fake.accepted(), 2);
        assert_eq!(ups.connections_opened(), 2);
    })
    .await;
}

#[tokio::test]
async fn a_cancelled_read_never_leaves_its_answer_for_the_next_one() {
    bounded(async {
        // The first answer is late and says on battery; every later one is prompt and online.
        let fake = FakeUpsd::start(|conn, _: &str| {
            if conn == 0 {
                Reply::After(Duration::from_millis(300), var_list(&[("ups.status", "OB")]))
            } else {
                Reply::Lines(var_list(ONLINE))
            }
        })
        .await;
        let mut ups = NutUps::new(&config(&fake, None, Duration::from_secs(5))).unwrap();
        // The daemon's own poll timeout drops the read half-way.
        let cancelled = tokio::time::timeout(Duration::from_millis(100), ups.read()).await;
        assert!(cancelled.is_err());
        // The late answer (BEGIN, VAR, END) reaches the old connection before the next read.
        fake.wait_written(3).await;
        let r = ups.read().await.unwrap();
        assert!(r.status.online(), "stale answer read: {r:?}");
        assert_eq!(fake.accepted(), 2);
    })
    .await;
}

#[tokio::test]
async fn refused_starttls_sends_neither_the_login_nor_a_request() {
    let cases = [
        ("ERR FEATURE-NOT-CONFIGURED", ErrorKind::Config, "no certificate configured"),
        ("ERR FEATURE-NOT-SUPPORTED", ErrorKind::Config, "without tls support"),
        // upsd before 2.4 knows no STARTTLS
        ("ERR UNKNOWN-COMMAND", ErrorKind::Protocol, "UNKNOWN-COMMAND"),
        ("OK", ErrorKind::Protocol, "unexpected answer"),
    ];
    for (answer, kind, needle) in cases {
        bounded(async {
            let fake = FakeUpsd::start(move |_, line: &str| match line {
                "STARTTLS" => lines(&[answer]),
                other => upsd_like(ONLINE)(0, other),
            })
            .await;
            let dir = tempfile::tempdir().unwrap();
            let mut ups = NutUps::new(&tls_config(&fake, dir.path(), Duration::from_secs(5))).unwrap();
            let err = ups.read().await.unwrap_err();
            assert_eq!(err.kind, kind, "{answer}: {err}");
            assert!(err.message.contains(needle), "{answer}: no {needle} in {err}");
            assert_eq!(fake.lines(), ["STARTTLS"], "{answer}: nothing may follow in plaintext");
        })
        .await;
    }
}

#[tokio::test]
async fn bytes_after_ok_starttls_are_refused_not_read_as_answers() {
    bounded(async {
        // One write, so the injected answer arrives with `OK STARTTLS`, as a man in the middle
        // would send it to have it read as if it had come through TLS.
        let injected = "OK STARTTLS\nBEGIN LIST VAR atlasups\nVAR atlasups ups.status \"OL\"\nEND LIST VAR atlasups";
        let fake = FakeUpsd::start(move |_, _: &str| lines(&[injected])).await;
        let dir = tempfile::tempdir().unwrap();
        let mut ups = NutUps::new(&tls_config(&fake, dir.path(), Duration::from_secs(5))).unwrap();
        let err = ups.read().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Protocol, "{err}");
        assert!(err.message.contains("after `OK STARTTLS`"), "{err}");
        assert_eq!(fake.lines(), ["STARTTLS"]);
    })
    .await;
}

#[tokio::test]
async fn unanswered_starttls_times_out() {
    bounded(async {
        let fake = FakeUpsd::start(|_, _: &str| Reply::Silence).await;
        let dir = tempfile::tempdir().unwrap();
        let timeout = Duration::from_millis(300);
        let mut ups = NutUps::new(&tls_config(&fake, dir.path(), timeout)).unwrap();
        let err = ups.read().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Timeout, "{err}");
        assert!(err.message.contains("STARTTLS"), "{err}");
        assert_eq!(fake.lines(), ["STARTTLS"]);
    })
    .await;
}

/// Issue 15: a hostile upsd's `ERR` detail reaches messages (and so logs, status, runs.json) cut
/// and without a control character.
#[tokio::test]
async fn a_hostile_err_detail_is_cut_and_cleaned() {
    bounded(async {
        let detail = format!("\u{1b}[2J\u{1b}]0;pwned\u{7}\0{}", "A".repeat(15_000));
        let fake = FakeUpsd::start(move |_, _: &str| Reply::Lines(vec![format!("ERR DATA-STALE {detail}")])).await;
        let mut ups = NutUps::new(&config(&fake, None, Duration::from_secs(5))).unwrap();
        let err = ups.read().await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind, ErrorKind::NoData, "{text}");
        assert!(text.contains("ERR DATA-STALE AAAA"), "{text}");
        assert!(text.chars().count() < 500, "{} characters: {text}", text.chars().count());
        assert!(!text.chars().any(char::is_control), "{text:?}");
        assert!(!text.contains("pwned") && !text.contains("[2J"), "the escape sequences go whole: {text:?}");
    })
    .await;
}

/// Issue 15: a 1 MB `ERR` line is not read into memory: a clear, short error.
#[tokio::test]
async fn a_one_megabyte_err_line_gives_a_short_clear_error() {
    bounded(async {
        let line = format!("ERR ACCESS-DENIED {}", "\u{1b}[31mX".repeat(200_000));
        assert!(line.len() >= 1_000_000);
        let fake = FakeUpsd::start(move |_, _: &str| Reply::Lines(vec![line.clone()])).await;
        let mut ups = NutUps::new(&config(&fake, None, Duration::from_secs(5))).unwrap();
        let err = ups.read().await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind, ErrorKind::Protocol, "{text}");
        assert!(text.contains("longer than 16384 bytes"), "{text}");
        assert!(text.len() < 300 && !text.chars().any(char::is_control), "{text:?}");
    })
    .await;
}

/// Issue 15: a `LIST VAR` answer of 200,000 variables, or of fewer but huge ones, is refused
/// once it goes over the cap, with an error that says so, and the next read opens a new
/// connection (the rest of the answer is never read).
#[tokio::test]
async fn an_oversized_list_var_answer_is_refused_clearly() {
    let many: Vec<(String, String)> = (0..200_000).map(|i| (format!("x.v{i}"), "1".to_string())).collect();
    let huge: Vec<(String, String)> = (0..2_000).map(|i| (format!("x.v{i}"), "y".repeat(1024))).collect();
    for (what, vars) in [("200,000 variables", many), ("2,000 variables of 1 KiB", huge)] {
        bounded(async {
            let mut answer = vec!["BEGIN LIST VAR atlasups".to_string()];
            answer.extend(vars.iter().map(|(n, v)| format!("VAR atlasups {n} \"{v}\"")));
            answer.push("END LIST VAR atlasups".into());
            let fake = FakeUpsd::start(move |_, _: &str| Reply::Lines(answer.clone())).await;
            let mut ups = NutUps::new(&config(&fake, None, Duration::from_secs(10))).unwrap();
            let err = ups.read().await.unwrap_err();
            let text = err.to_string();
            assert_eq!(err.kind, ErrorKind::Protocol, "{what}: {text}");
            assert!(text.contains("LIST VAR atlasups answer went over what hecate reads"), "{what}: {text}");
            assert!(text.len() < 400, "{what}: {text}");
        })
        .await;
    }
}

#[tokio::test]
async fn primary_falls_back_to_master_on_an_older_upsd() {
    bounded(async {
        // upsd before 2.8 knows MASTER, not PRIMARY (docs/net-protocol.txt: "PRIMARY (since NUT
        // 2.8.0) or MASTER (deprecated)"); upsmon tries PRIMARY, then MASTER (clients/upsmon.c,
        // apply_for_primary).
        let fake = FakeUpsd::start(|_, line: &str| match line {
            "PRIMARY atlasups" => lines(&["ERR UNKNOWN-COMMAND"]),
            "MASTER atlasups" => lines(&["OK MASTER-GRANTED"]),
            "LOGIN atlasups" => lines(&["OK"]),
            other => upsd_like(ONLINE)(0, other),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = NutConfig {
            login: Some(Attachment::Primary),
            ..config(&fake, Some((dir.path(), "pw")), Duration::from_secs(5))
        };
        let mut ups = NutUps::new(&cfg).unwrap();
        assert!(ups.read().await.unwrap().status.online());
        assert!(ups.logged_in() && ups.primary_granted());
        assert_eq!(
            fake.lines(),
            [
                "USERNAME admin",
                "PASSWORD pw",
                "LOGIN atlasups",
                "PRIMARY atlasups",
                "MASTER atlasups",
                "LIST VAR atlasups"
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn a_refused_primary_is_not_granted_and_master_is_not_tried_after_a_denial() {
    bounded(async {
        let fake = FakeUpsd::start(|_, line: &str| match line {
            "PRIMARY atlasups" | "MASTER atlasups" => lines(&["ERR ACCESS-DENIED"]),
            "LOGIN atlasups" => lines(&["OK"]),
            other => upsd_like(ONLINE)(0, other),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = NutConfig {
            login: Some(Attachment::Primary),
            ..config(&fake, Some((dir.path(), "pw")), Duration::from_secs(5))
        };
        let mut ups = NutUps::new(&cfg).unwrap();
        assert!(ups.read().await.unwrap().status.online(), "reading needs no primary");
        assert!(ups.logged_in() && !ups.primary_granted());
        // upsmon asks with MASTER after any refusal; so does hecate, and keeps the first reason.
        assert!(fake.lines().contains(&"MASTER atlasups".to_string()));
        assert_eq!(fake.accepted(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_connection_lost_during_login_is_no_reading() {
    bounded(async {
        let fake = FakeUpsd::start(|_, line: &str| match line {
            "LOGIN atlasups" => Reply::Close,
            other => upsd_like(ONLINE)(0, other),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let cfg = NutConfig {
            login: Some(Attachment::Secondary),
            ..config(&fake, Some((dir.path(), "pw")), Duration::from_secs(5))
        };
        let mut ups = NutUps::new(&cfg).unwrap();
        let err = ups.read().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unreachable, "{err}");
        assert!(!ups.logged_in());
    })
    .await;
}

/// A fake upsd whose UPS offers `cmds` and has `ups.delay.shutdown` `delay` (and `ups.mfr`
/// `mfr`); `set_var` answers `SET VAR`. Everything else as [`upsd_like`].
fn kill_power_upsd(
    cmds: &'static [&'static str],
    delay: Option<&'static str>,
    mfr: &'static str,
    set_var: &'static str,
) -> impl Fn(usize, &str) -> Reply {
    move |_, line| match line {
        "LIST CMD atlasups" => {
            let mut out = vec!["BEGIN LIST CMD atlasups".to_string()];
            out.extend(cmds.iter().map(|c| format!("CMD atlasups {c}")));
            out.push("END LIST CMD atlasups".into());
            Reply::Lines(out)
        }
        "GET VAR atlasups ups.delay.shutdown" => match delay {
            Some(d) => Reply::Lines(vec![format!("VAR atlasups ups.delay.shutdown \"{d}\"")]),
            None => lines(&["ERR VAR-NOT-SUPPORTED"]),
        },
        "GET VAR atlasups ups.mfr" => Reply::Lines(vec![format!("VAR atlasups ups.mfr \"{mfr}\"")]),
        l if l.starts_with("SET VAR ") => lines(&[set_var]),
        other => upsd_like(ONLINE)(0, other),
    }
}

/// What usbhid-ups offers for a UPS with both delays (drivers/usbhid-ups.c: load.off and
/// load.on from load.off.delay and load.on.delay, then shutdown.return and shutdown.stayoff).
const USBHID_CMDS: &[&str] = &[
    "beeper.disable",
    "load.off",
    "load.off.delay",
    "load.on",
    "load.on.delay",
    "shutdown.return",
    "shutdown.stayoff",
];

async fn kill(
    fake: &FakeUpsd,
    command: Option<&str>,
    delay_s: Option<u64>,
) -> Result<hecate_core::power::KillPower, hecate_core::BackendError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ups = NutUps::new(&config(fake, Some((dir.path(), "pw")), Duration::from_secs(5))).expect("a nut source");
    ups.kill_power(command, delay_s.map(Duration::from_secs)).await
}

fn requests(fake: &FakeUpsd) -> Vec<String> {
    fake.lines().into_iter().filter(|l| !l.starts_with("USERNAME") && !l.starts_with("PASSWORD")).collect()
}

#[tokio::test]
async fn auto_sends_shutdown_return_after_setting_the_delay_it_really_runs_with() {
    bounded(async {
        let fake = FakeUpsd::start(kill_power_upsd(USBHID_CMDS, Some("20"), "Eaton", "OK")).await;
        let sent = kill(&fake, None, Some(120)).await.unwrap();
        assert_eq!(
            requests(&fake),
            [
                "LIST CMD atlasups",
                "GET VAR atlasups ups.delay.shutdown",
                "SET VAR atlasups ups.delay.shutdown 120",
                "INSTCMD atlasups shutdown.return",
            ],
            "shutdown.return's parameter is ignored by usbhid-ups: none is sent"
        );
        assert_eq!((sent.command.as_str(), sent.param, sent.delay_s), ("shutdown.return", None, Some(120)));
        assert_eq!(sent.note, "ups.delay.shutdown set to 120 s (was 20 s)");
    })
    .await;
}

#[tokio::test]
async fn a_delay_the_driver_refuses_to_change_is_reported_as_the_one_it_uses() {
    bounded(async {
        let fake = FakeUpsd::start(kill_power_upsd(USBHID_CMDS, Some("20"), "Eaton", "ERR READONLY")).await;
        let sent = kill(&fake, None, Some(120)).await.unwrap();
        assert_eq!(requests(&fake).last().unwrap(), "INSTCMD atlasups shutdown.return", "the cut still happens");
        assert_eq!(sent.delay_s, Some(20), "what the UPS will really wait");
        assert!(
            sent.note.starts_with("could not set ups.delay.shutdown to 120 s")
                && sent.note.contains("the ups uses 20 s (offdelay in ups.conf)"),
            "{}",
            sent.note
        );

        // No delay asked: nothing set, the driver's own reported.
        let fake = FakeUpsd::start(kill_power_upsd(USBHID_CMDS, Some("120"), "Eaton", "OK")).await;
        let sent = kill(&fake, None, None).await.unwrap();
        assert!(!requests(&fake).iter().any(|l| l.starts_with("SET VAR")));
        assert_eq!(
            (sent.delay_s, sent.note.as_str()),
            (Some(120), "its own ups.delay.shutdown (offdelay in ups.conf)")
        );
    })
    .await;
}

#[tokio::test]
async fn auto_falls_back_to_load_off_delay_with_the_delay_as_its_parameter() {
    bounded(async {
        let fake = FakeUpsd::start(kill_power_upsd(&["load.off", "load.off.delay"], Some("60"), "Eaton", "OK")).await;
        let sent = kill(&fake, None, Some(90)).await.unwrap();
        assert_eq!(requests(&fake).last().unwrap(), "INSTCMD atlasups load.off.delay 90");
        assert_eq!(sent.delay_s, Some(90));
        // Without a delay, ups.delay.shutdown rather than usbhid-ups's built-in 20 s.
        let fake = FakeUpsd::start(kill_power_upsd(&["load.off", "load.off.delay"], Some("60"), "Eaton", "OK")).await;
        let sent = kill(&fake, None, None).await.unwrap();
        assert_eq!(requests(&fake).last().unwrap(), "INSTCMD atlasups load.off.delay 60");
        assert_eq!(sent.delay_s, Some(60));
    })
    .await;
}

#[tokio::test]
async fn nothing_is_sent_when_the_ups_offers_no_delayed_cut_or_not_the_one_asked_for() {
    bounded(async {
        // load.off alone (dummy-ups offers just that) would cut at once: auto never picks it.
        let fake = FakeUpsd::start(kill_power_upsd(&["load.off", "beeper.enable"], Some("20"), "Eaton", "OK")).await;
        let err = kill(&fake, None, Some(120)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unsupported, "{err}");
        assert!(
            err.message
                .contains("offers neither shutdown.return nor load.off.delay (it offers load.off, beeper.enable)"),
            "{err}"
        );
        assert!(!requests(&fake).iter().any(|l| l.starts_with("INSTCMD")), "{:?}", requests(&fake));

        let fake = FakeUpsd::start(kill_power_upsd(&["load.off.delay"], Some("20"), "Eaton", "OK")).await;
        let err = kill(&fake, Some("shutdown.return"), None).await.unwrap_err();
        assert!(err.message.contains("does not offer shutdown.return (it offers load.off.delay)"), "{err}");
        assert!(!requests(&fake).iter().any(|l| l.starts_with("INSTCMD")));

        // Asked for by name, load.off is sent, and reported as immediate.
        let fake = FakeUpsd::start(kill_power_upsd(&["load.off"], None, "Eaton", "OK")).await;
        let sent = kill(&fake, Some("load.off"), None).await.unwrap();
        assert_eq!(requests(&fake).last().unwrap(), "INSTCMD atlasups load.off");
        assert_eq!(sent.delay_s, Some(0));
    })
    .await;
}

#[tokio::test]
async fn an_upsd_without_list_cmd_gets_shutdown_return() {
    bounded(async {
        let fake = FakeUpsd::start(|_, line: &str| match line {
            "LIST CMD atlasups" => lines(&["ERR UNKNOWN-COMMAND"]),
            "GET VAR atlasups ups.delay.shutdown" => lines(&["VAR atlasups ups.delay.shutdown \"30\""]),
            other => upsd_like(ONLINE)(0, other),
        })
        .await;
        let sent = kill(&fake, None, None).await.unwrap();
        assert_eq!(requests(&fake).last().unwrap(), "INSTCMD atlasups shutdown.return");
        assert_eq!(sent.delay_s, Some(30));
    })
    .await;
}

#[tokio::test]
async fn a_cyberpower_delay_that_is_not_whole_minutes_is_flagged() {
    bounded(async {
        // docs/man/usbhid-ups.txt: many CPS models divide offdelay by 60 and round down.
        let fake = FakeUpsd::start(kill_power_upsd(USBHID_CMDS, Some("60"), "CPS", "OK")).await;
        let sent = kill(&fake, None, Some(90)).await.unwrap();
        assert!(sent.note.ends_with("a CyberPower UPS may round 90 s down to 60 s"), "{}", sent.note);
        let fake = FakeUpsd::start(kill_power_upsd(USBHID_CMDS, Some("60"), "CPS", "OK")).await;
        let sent = kill(&fake, None, Some(120)).await.unwrap();
        assert!(!sent.note.contains("round"), "{}", sent.note);
    })
    .await;
}

#[tokio::test]
async fn what_upsd_lists_is_cleaned_and_cut_before_it_reaches_a_message() {
    bounded(async {
        // Forty commands, one carrying a terminal escape and spaces (quoted, as upsd would send it).
        let fake = FakeUpsd::start(|_, line: &str| match line {
            "LIST CMD atlasups" => {
                let mut out = vec!["BEGIN LIST CMD atlasups".to_string()];
                out.push("CMD atlasups \"beep\u{1b}[31m red alert\"".into());
                out.extend((0..39).map(|i| format!("CMD atlasups test.{i}")));
                out.push("END LIST CMD atlasups".into());
                Reply::Lines(out)
            }
            "GET NUMLOGINS atlasups" => lines(&["NUMLOGINS atlasups 2"]),
            "LIST CLIENT atlasups" => lines(&[
                "BEGIN LIST CLIENT atlasups",
                "CLIENT atlasups \"10.0.0.9\u{7}\u{1b}]0;owned\"",
                "END LIST CLIENT atlasups",
            ]),
            other => upsd_like(ONLINE)(0, other),
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let mut ups = NutUps::new(&config(&fake, Some((dir.path(), "pw")), Duration::from_secs(5))).unwrap();
        let err = ups.kill_power(None, None).await.unwrap_err();
        assert!(err.message.contains("it offers beep??31m?red?alert, test.0,"), "{err}");
        assert!(err.message.contains("test.14, and 24 more)"), "{err}");
        assert!(!err.message.contains('\u{1b}'), "{err}");
        let c = ups.other_clients().await.unwrap();
        assert_eq!(c.count, 2, "not logged in: both are other clients");
        assert_eq!(c.addresses, ["10.0.0.9???0?owned"]);
    })
    .await;
}
