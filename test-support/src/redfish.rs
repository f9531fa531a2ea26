//! A real Redfish BMC: `sushy-emulator` (sushy-tools 2.2.0, fake driver) on a free port of
//! 127.0.0.1, over HTTP or HTTPS, with or without basic auth.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{Daemon, log_tail};
use crate::{SETUP_HINT, Step, chmod, free_port, peer_temp_dir, poll, require_executables, write};

/// Where `scripts/install-test-deps.sh` creates the venv holding sushy-tools (pinned by
/// `tests/peers/redfish/requirements.lock`). Outside the clone, so CI runs on one machine share it.
pub const REDFISH_VENV: &str = "/var/lib/hecate-test/redfish-venv";

/// The project's copies, written into each emulator's temp dir.
const RUN_EMULATOR: &str = include_str!("../../tests/peers/redfish/run_emulator.py");
const EMULATOR_CONF: &str = include_str!("../../tests/peers/redfish/emulator.conf");

const USER: &str = "admin";
const PASSWORD: &str = "password";

/// The systems of `tests/peers/redfish/emulator.conf`: (UUID, which is also the Redfish `Id`, and
/// `Name`). Both are on at start.
pub const SUSHY_SYSTEMS: [(&str, &str); 2] =
    [("11111111-1111-1111-1111-111111111111", "node1"), ("22222222-2222-2222-2222-222222222222", "node2")];

/// How long the emulator gets to answer (it usually takes ~0.5 s).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-request timeout of the tiny HTTP client.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How to run the emulator; `SushyOptions::default()` is plain HTTP, no auth, power changes
/// visible on the next read, two systems.
#[derive(Debug, Clone, Default)]
pub struct SushyOptions {
    /// Require basic auth `admin`/`password` (sushy's `SUSHY_EMULATOR_AUTH_FILE`).
    pub auth: bool,
    /// Seconds a power change takes to show (`HECATE_FAKE_POWER_DELAY`; sushy's own fake driver
    /// picks 1–11 s at random). A large value makes a BMC that accepts resets but never acts.
    pub power_delay_s: u32,
    /// Accept `GracefulShutdown` and do nothing, like an OS that ignores the power button.
    pub ignore_graceful: bool,
    /// Serve HTTPS with a certificate for 127.0.0.1 issued by a fresh test CA ([`Sushy::ca_file`]).
    pub tls: bool,
    /// Serve only the first system (`node1`) instead of two.
    pub single_system: bool,
}

/// One `sushy-emulator` with the fake driver serving [`SUSHY_SYSTEMS`] on 127.0.0.1 and a free
/// port, its state (sqlite) in a fresh dir of its own. Dropping the handle kills it and removes
/// the dir.
///
/// ```no_run
/// use hecate_test_support::{Sushy, SushyOptions};
/// let bmc = Sushy::start_with(&SushyOptions { auth: true, ..SushyOptions::default() });
/// assert_eq!(bmc.power_state("node1"), "On");
/// ```
#[derive(Debug)]
pub struct Sushy {
    port: u16,
    options: SushyOptions,
    emulator: Option<Daemon>,
    // last, so it is removed after the emulator is killed
    dir: tempfile::TempDir,
}

impl Sushy {
    /// Starts the emulator with [`SushyOptions::default`] and waits until it answers.
    pub fn start() -> Sushy {
        Sushy::start_with(&SushyOptions::default())
    }

    /// Starts the emulator with `options` and waits until `/redfish/v1/` answers (over HTTPS, until
    /// the port accepts connections).
    pub fn start_with(options: &SushyOptions) -> Sushy {
        crate::require_root();
        let python = format!("{REDFISH_VENV}/bin/python");
        require_executables(&[&python]);
        let dir = peer_temp_dir("hecate-sushy-");
        let path = dir.path();
        let state = path.join("state");
        std::fs::create_dir(&state).unwrap_or_else(|e| panic!("mkdir {}: {e}", state.display()));
        write(&path.join("run_emulator.py"), RUN_EMULATOR);

        // emulator.conf is Python: later assignments replace the shared file's values
        let mut conf = format!("{EMULATOR_CONF}\nSUSHY_EMULATOR_STATE_DIR = {:?}\n", state.display().to_string());
        if options.single_system {
            conf.push_str("SUSHY_EMULATOR_FAKE_SYSTEMS = SUSHY_EMULATOR_FAKE_SYSTEMS[:1]\n");
        }
        if options.auth {
            let htpasswd = path.join("htpasswd");
            let hashed = Command::new(&python)
                .arg("-c")
                .arg(format!(
                    "import bcrypt; print('{USER}:' + bcrypt.hashpw(b'{PASSWORD}', bcrypt.gensalt(4)).decode())"
                ))
                .output()
                .unwrap_or_else(|e| panic!("cannot run {python}: {e}: {SETUP_HINT}"));
            assert!(hashed.status.success(), "hashing the test password with bcrypt failed: {hashed:?}");
            write(&htpasswd, &hashed.stdout);
            conf.push_str(&format!("SUSHY_EMULATOR_AUTH_FILE = {:?}\n", htpasswd.display().to_string()));
        }
        write(&path.join("emulator.conf"), conf);
        let credentials = path.join("credentials");
        write(&credentials, format!("{USER}:{PASSWORD}\n"));
        chmod(&credentials, 0o600);
        if options.tls {
            crate::tls::make_certificates(path);
        }

        let mut sushy = Sushy { port: 0, options: options.clone(), emulator: None, dir };
        sushy.spawn_and_wait(&python);
        sushy
    }

    /// Where it listens: 127.0.0.1 and a free port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The base URL: `http://127.0.0.1:PORT` (`https://` with [`SushyOptions::tls`]).
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// The basic auth user: `admin`.
    pub fn username(&self) -> &'static str {
        USER
    }

    /// The basic auth password: `password`.
    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// A file (mode 0600) holding `admin:password` and a line break.
    pub fn credentials_file(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }

    /// The test CA that issued the HTTPS certificate (PEM); only with [`SushyOptions::tls`].
    pub fn ca_file(&self) -> PathBuf {
        assert!(self.options.tls, "ca_file: this emulator serves plain http");
        self.dir.path().join("ca.pem")
    }

    /// The temp dir: `emulator.conf`, `emulator.log`, `state/`, credentials and certificates.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A system's `PowerState` (`On`, `Off`, ...) read over Redfish; `system` is its Id or name.
    pub fn power_state(&self, system: &str) -> String {
        let id = system_id(system);
        let (status, body) = self.request("GET", &format!("/redfish/v1/Systems/{id}"), None);
        assert_eq!(status, 200, "GET system {id}: {body}");
        let json: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET system {id}: not json ({e}): {body}"));
        json["PowerState"].as_str().unwrap_or_else(|| panic!("GET system {id}: no PowerState in {body}")).to_owned()
    }

    /// Sends `ComputerSystem.Reset` with `reset_type` (`On`, `ForceOff`, `GracefulShutdown`, ...).
    /// With no power delay the new state shows on the next read (sushy applies a due change when
    /// the system is read).
    pub fn reset(&self, system: &str, reset_type: &str) {
        let id = system_id(system);
        let body = format!("{{\"ResetType\": \"{reset_type}\"}}");
        let path = format!("/redfish/v1/Systems/{id}/Actions/ComputerSystem.Reset");
        let (status, answer) = self.request("POST", &path, Some(&body));
        assert!(status == 204 || status == 200, "POST {path} {body}: {status} {answer}");
    }

    /// The `ResetType`s the emulator was asked for so far, for a known system, oldest first; the
    /// harness's own [`Sushy::reset`] calls included. Recorded by `run_emulator.py` before it
    /// answers, so a reset whose answer arrived is already listed.
    pub fn resets(&self) -> Vec<String> {
        let log = self.dir.path().join("resets.log");
        match std::fs::read_to_string(&log) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", log.display()),
        }
    }

    /// Every request the emulator served, as `METHOD /path`, oldest first (from its log).
    pub fn requests(&self) -> Vec<String> {
        let log = self.dir.path().join("emulator.log");
        let text = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("read {}: {e}", log.display()));
        // werkzeug: 127.0.0.1 - - [date] "GET /redfish/v1/ HTTP/1.1" 200 -, the request in colours
        text.lines()
            .map(strip_ansi)
            .filter_map(|l| {
                l.split_once("] \"").and_then(|(_, rest)| rest.split_once(" HTTP/")).map(|(r, _)| r.to_owned())
            })
            .collect()
    }

    /// Kills the emulator: connections are refused from now on.
    pub fn kill(&mut self) {
        if let Some(mut emulator) = self.emulator.take() {
            emulator.kill();
        }
    }

    fn spawn_and_wait(&mut self, python: &str) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            self.port = free_port(Ipv4Addr::LOCALHOST);
            match self.spawn(python) {
                Ok(()) => return,
                Err(why) if attempt < ATTEMPTS && why.contains("Address already in use") => self.kill(),
                Err(why) => panic!("sushy-emulator did not start: {why}"),
            }
        }
    }

    fn spawn(&mut self, python: &str) -> Result<(), String> {
        let path = self.dir.path();
        let log = path.join("emulator.log");
        let mut command = Command::new(python);
        command.arg(path.join("run_emulator.py")).arg("--config").arg(path.join("emulator.conf")).arg("--fake");
        command.args(["-i", "127.0.0.1", "-p", &self.port.to_string()]);
        if self.options.tls {
            command.arg("--ssl-certificate").arg(path.join("cert.pem")).arg("--ssl-key").arg(path.join("key.pem"));
        }
        command.env("HECATE_FAKE_POWER_DELAY", self.options.power_delay_s.to_string());
        command.env("HECATE_IGNORE_GRACEFUL", if self.options.ignore_graceful { "1" } else { "0" });
        command.env("HECATE_RESET_LOG", path.join("resets.log"));
        // werkzeug's request log lines reach the file before the answer reaches the client
        command.env("PYTHONUNBUFFERED", "1");
        self.emulator = Some(Daemon::spawn("sushy-emulator", command, &log));
        let result = poll(START_TIMEOUT, || {
            if let Some(emulator) = self.emulator.as_mut()
                && let Some(status) = emulator.exited()
            {
                return Step::Fail(emulator.describe_exit(status));
            }
            if self.options.tls {
                // the harness speaks no TLS; werkzeug serves as soon as it listens
                return match TcpStream::connect_timeout(&self.addr(), IO_TIMEOUT) {
                    Ok(_) => Step::Ready(()),
                    Err(e) => Step::Wait(format!("connect {}: {e}", self.addr())),
                };
            }
            match self.try_request("GET", "/redfish/v1/", None) {
                Ok((200, _)) => Step::Ready(()),
                Ok((status, body)) => Step::Wait(format!("GET /redfish/v1/ answered {status}: {body}")),
                Err(why) => Step::Wait(why),
            }
        });
        result.map_err(|why| format!("{why}\n{}", log_tail(&log)))
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.try_request(method, path, body).unwrap_or_else(|why| panic!("{method} {path}: {why}"))
    }

    /// One HTTP/1.1 request with `Connection: close` (and basic auth when the emulator wants it).
    fn try_request(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String), String> {
        assert!(!self.options.tls, "the harness's http client speaks no tls; use the controller under test");
        let addr = self.addr();
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
            .map_err(|e| format!("set timeouts: {e}"))?;
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if self.options.auth {
            head.push_str(&format!("Authorization: Basic {}\r\n", base64(format!("{USER}:{PASSWORD}").as_bytes())));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(head.as_bytes()).map_err(|e| format!("send to {addr}: {e}"))?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).map_err(|e| format!("read from {addr}: {e}"))?;
        let status = answer
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an http answer from {addr}: {answer:?}"))?;
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for Sushy {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A log line without its ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Redfish Id of a system named by Id or by name.
fn system_id(system: &str) -> &str {
    SUSHY_SYSTEMS.iter().find(|(_, name)| *name == system).map_or(system, |(uuid, _)| uuid)
}

/// Standard base64 with padding (for a basic auth header; not worth a dependency).
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain}");
        }
        assert_eq!(base64(b"admin:password"), "YWRtaW46cGFzc3dvcmQ=");
    }

    #[test]
    fn strip_ansi_keeps_the_text() {
        let line = "127.0.0.1 - - [x] \"\u{1b}[35m\u{1b}[1mPOST /a HTTP/1.1\u{1b}[0m\" 204 -";
        assert_eq!(strip_ansi(line), "127.0.0.1 - - [x] \"POST /a HTTP/1.1\" 204 -");
    }

    #[test]
    fn system_id_accepts_names_and_ids() {
        assert_eq!(system_id("node2"), SUSHY_SYSTEMS[1].0);
        assert_eq!(system_id(SUSHY_SYSTEMS[0].0), SUSHY_SYSTEMS[0].0);
    }
}
