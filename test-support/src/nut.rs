//! A real NUT `upsd` with the `dummy-ups` driver, on a free port of 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{Daemon, log_tail};
use crate::{SETUP_HINT, Step, chmod, free_port, peer_temp_dir, poll, require_executables, write};

const UPSD: &str = "/lib/nut/upsd";
const DUMMY_UPS: &str = "/lib/nut/dummy-ups";
const UPSRW: &str = "/usr/bin/upsrw";
// Debian's upsd is built with NSS, not OpenSSL (`ldd /lib/nut/upsd` shows libnss3 and libssl3, NSS's
// TLS library): it takes its certificate from an NSS database (CERTPATH + CERTIDENT), which these
// fill from a PEM file. CERTFILE, a PEM file, is for OpenSSL builds.
const OPENSSL: &str = "/usr/bin/openssl";
const CERTUTIL: &str = "/usr/bin/certutil";
const PK12UTIL: &str = "/usr/bin/pk12util";
/// The certificate's nickname in the NSS database, and the database's password (test only).
const NSS_CERT_NAME: &str = "upsd";
const NSS_DB_PASSWORD: &str = "hecate-test-nssdb";
const DEFAULT_DEV: &str = include_str!("../../tests/peers/nut/default.dev");

const MONITOR_USER: &str = "monuser";
const MONITOR_PASSWORD: &str = "monpass";
const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "adminpass";
/// What Hecate's installer grants its own user: a upsmon primary that may also send commands and
/// set variables.
const PRIMARY_USER: &str = "hecate";
const PRIMARY_PASSWORD: &str = "hecatepass";
/// What another machine (a NAS) gets: a upsmon secondary.
const SECONDARY_USER: &str = "secmon";
const SECONDARY_PASSWORD: &str = "secpass";

/// How long the driver and upsd get to come up (upsd reports `WAIT` for about 2 s).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a value set with [`Upsd::set_var`] gets to become visible.
const SET_TIMEOUT: Duration = Duration::from_secs(15);
/// Per-request timeout of the tiny NUT client.
const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// A NUT `upsd` on 127.0.0.1 with one UPS served by `dummy-ups` (mode `dummy-once`).
///
/// Users: `monuser`/`monpass` (`upsmon primary`), `admin`/`adminpass` (`actions = SET FSD`,
/// `instcmds = ALL`), `hecate`/`hecatepass` (`upsmon primary`, `actions = SET`, `instcmds = ALL`:
/// what Hecate's installer grants) and `secmon`/`secpass` (`upsmon secondary`, as for a NAS). Config and state live in a temp dir (`NUT_CONFPATH`, `NUT_STATEPATH`,
/// `NUT_ALTPIDPATH`); both daemons run in the foreground, dropping privileges to `nut`. Dropping
/// the handle kills both and removes the dir.
///
/// ```no_run
/// let ups = hecate_test_support::Upsd::start("atlas");
/// assert_eq!(ups.get_var("ups.status").unwrap(), "OL");
/// ups.set_var("ups.status", "OB DISCHRG");
/// ```
#[derive(Debug)]
pub struct Upsd {
    ups: String,
    port: u16,
    etc: PathBuf,
    state: PathBuf,
    /// Lines added to upsd.conf (the TLS certificate).
    upsd_conf_extra: String,
    driver: Option<Daemon>,
    upsd: Option<Daemon>,
    // last, so it is removed after the daemons are killed
    dir: tempfile::TempDir,
}

impl Upsd {
    /// Starts `dummy-ups` and `upsd` serving UPS `ups_name` with the default data
    /// (`tests/peers/nut/default.dev`: `ups.status` `OL`, `battery.charge` 100, ...), and waits until
    /// `ups.status` reads as something other than `WAIT`.
    pub fn start(ups_name: &str) -> Upsd {
        Upsd::start_with_vars(ups_name, &[])
    }

    /// Like [`Upsd::start`], with some variables replaced or added in the initial data, e.g.
    /// `&[("ups.status", "OB DISCHRG"), ("battery.charge", "40")]`.
    pub fn start_with_vars(ups_name: &str, vars: &[(&str, &str)]) -> Upsd {
        Upsd::start_inner(ups_name, vars, None)
    }

    /// Like [`Upsd::start`], with `STARTTLS` on: upsd presents the certificate in
    /// `cert_and_key_pem`, one PEM file holding the server certificate (then any intermediate
    /// CAs) and its unencrypted private key. Plain connections are still served, as upsd does.
    ///
    /// Debian's upsd is built with NSS: the PEM goes into an NSS database (`openssl pkcs12`,
    /// `pk12util`) that upsd.conf names with `CERTPATH` and `CERTIDENT`.
    pub fn start_with_tls(ups_name: &str, cert_and_key_pem: &Path) -> Upsd {
        Upsd::start_inner(ups_name, &[], Some(cert_and_key_pem))
    }

    fn start_inner(ups_name: &str, vars: &[(&str, &str)], tls: Option<&Path>) -> Upsd {
        crate::require_root();
        require_executables(&[UPSD, DUMMY_UPS, UPSRW]);
        let nut_gid = nut_gid();
        assert!(
            !ups_name.is_empty() && ups_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "UPS name {ups_name:?} must be non-empty ASCII letters, digits, '-' or '_'"
        );

        let dir = peer_temp_dir("hecate-upsd-");
        chmod(dir.path(), 0o711);
        let etc = dir.path().join("etc");
        let state = dir.path().join("state");
        for d in [&etc, &state] {
            std::fs::create_dir(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        write(&etc.join(format!("{ups_name}.dev")), dev_file(vars));
        write(&etc.join("nut.conf"), "MODE=standalone\n");
        write(
            &etc.join("ups.conf"),
            format!(
                "[{ups_name}]\n  driver = dummy-ups\n  port = {ups_name}.dev\n  mode = dummy-once\n  \
                 desc = \"Hecate test UPS {ups_name}\"\n"
            ),
        );
        write(
            &etc.join("upsd.users"),
            format!(
                "[{MONITOR_USER}]\n  password = {MONITOR_PASSWORD}\n  upsmon primary\n\
                 [{ADMIN_USER}]\n  password = {ADMIN_PASSWORD}\n  actions = SET FSD\n  instcmds = ALL\n\
                 [{PRIMARY_USER}]\n  password = {PRIMARY_PASSWORD}\n  upsmon primary\n  actions = SET\n  \
                 instcmds = ALL\n\
                 [{SECONDARY_USER}]\n  password = {SECONDARY_PASSWORD}\n  upsmon secondary\n"
            ),
        );
        // the daemons drop privileges to 'nut': it must read the config and write the state
        for entry in std::fs::read_dir(&etc).expect("read back the config dir just written") {
            let path = entry.expect("config dir entry").path();
            chown_root_nut(&path, nut_gid);
            chmod(&path, 0o640);
        }
        chown_root_nut(&etc, nut_gid);
        chmod(&etc, 0o750);
        chown_root_nut(&state, nut_gid);
        chmod(&state, 0o770);
        let upsd_conf_extra = match tls {
            Some(pem) => {
                let db = etc.join("nssdb");
                nss_database(pem, &db, dir.path());
                // readable by 'nut' like the rest of the config: upsd runs as 'nut'
                for entry in std::fs::read_dir(&db).expect("read back the NSS database just made") {
                    let path = entry.expect("NSS database entry").path();
                    chown_root_nut(&path, nut_gid);
                    chmod(&path, 0o640);
                }
                chown_root_nut(&db, nut_gid);
                chmod(&db, 0o750);
                format!("CERTPATH {}\nCERTIDENT \"{NSS_CERT_NAME}\" \"{NSS_DB_PASSWORD}\"\n", db.display())
            }
            None => String::new(),
        };

        let mut upsd =
            Upsd { ups: ups_name.to_owned(), port: 0, etc, state, upsd_conf_extra, driver: None, upsd: None, dir };
        upsd.restart_driver();
        upsd.start_upsd_on_free_port();
        upsd
    }

    /// Where upsd listens: 127.0.0.1 and a free port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The UPS name, as in `ups@127.0.0.1:port`.
    pub fn ups_name(&self) -> &str {
        &self.ups
    }

    /// The monitoring user (`upsmon primary`): `monuser`.
    pub fn monitor_user(&self) -> &'static str {
        MONITOR_USER
    }

    /// The monitoring user's password: `monpass`.
    pub fn monitor_password(&self) -> &'static str {
        MONITOR_PASSWORD
    }

    /// The admin user (`actions = SET FSD`, `instcmds = ALL`): `admin`.
    pub fn admin_user(&self) -> &'static str {
        ADMIN_USER
    }

    /// The admin user's password: `adminpass`.
    pub fn admin_password(&self) -> &'static str {
        ADMIN_PASSWORD
    }

    /// Hecate's own user as the installer makes it (`upsmon primary`, `actions = SET`,
    /// `instcmds = ALL`): `hecate`.
    pub fn primary_user(&self) -> &'static str {
        PRIMARY_USER
    }

    /// Its password: `hecatepass`.
    pub fn primary_password(&self) -> &'static str {
        PRIMARY_PASSWORD
    }

    /// A `upsmon secondary` user, as for a NAS: `secmon`.
    pub fn secondary_user(&self) -> &'static str {
        SECONDARY_USER
    }

    /// Its password: `secpass`.
    pub fn secondary_password(&self) -> &'static str {
        SECONDARY_PASSWORD
    }

    /// `GET NUMLOGINS`: how many clients upsd counts as logged in to the UPS.
    pub fn num_logins(&self) -> Result<u32, String> {
        let line = request(self.addr(), &format!("GET NUMLOGINS {}\n", self.ups))?;
        let prefix = format!("NUMLOGINS {} ", self.ups);
        line.strip_prefix(&prefix).and_then(|n| n.parse().ok()).ok_or(line)
    }

    /// upsd's log so far. upsd handles one request at a time, so the order of its lines is the
    /// order things happened: `User USER@ADDR logged into UPS [..]`, `.. logged out from UPS ..`,
    /// `Client USER@ADDR set FSD on UPS [..]`, `Set variable: ..`, `Instant command: USER@ADDR did
    /// CMD on UPS ..`.
    pub fn upsd_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("upsd.log")).unwrap_or_default()
    }

    /// The temp dir holding `etc/` (config, `.dev` data) and `state/`, plus the daemons' logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Reads a variable over the NUT protocol (`GET VAR`); `Err` holds upsd's `ERR ...` answer
    /// or the I/O error.
    pub fn get_var(&self, name: &str) -> Result<String, String> {
        get_var(self.addr(), &self.ups, name)
    }

    /// Sets a variable as the admin user with `upsrw -s NAME=VALUE -w` (any variable works with
    /// dummy-ups, `ups.status` included) and waits until `GET VAR` returns the new value.
    pub fn set_var(&self, name: &str, value: &str) {
        self.set_var_until(name, value, |seen| seen == value);
    }

    /// Like [`Upsd::set_var`], waiting until `GET VAR` returns what `done` accepts: for a value
    /// someone else changes at once (a upsmon primary adds `FSD` to an `OB LB` status).
    pub fn set_var_until(&self, name: &str, value: &str, done: impl Fn(&str) -> bool) {
        let target = format!("{}@{}", self.ups, self.addr());
        let out = Command::new(UPSRW)
            .arg("-s")
            .arg(format!("{name}={value}"))
            .args(["-u", ADMIN_USER, "-p", ADMIN_PASSWORD, "-w", &target])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {UPSRW}: {e}"));
        assert!(
            out.status.success(),
            "upsrw -s {name}={value:?} {target} failed with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let waited = poll(SET_TIMEOUT, || match self.get_var(name) {
            Ok(v) if done(&v) => Step::Ready(()),
            other => Step::Wait(format!("{name} reads {other:?}")),
        });
        if let Err(why) = waited {
            panic!("{name}={value:?} set with upsrw never became visible: {why}");
        }
    }

    /// Kills `upsd` (the driver keeps running), as if it had crashed: connections are refused
    /// until [`Upsd::restart_upsd`].
    pub fn kill_upsd(&mut self) {
        if let Some(mut upsd) = self.upsd.take() {
            upsd.kill();
        }
    }

    /// Starts `upsd` again on the same port (after [`Upsd::kill_upsd`]) and waits until it serves
    /// `ups.status`.
    pub fn restart_upsd(&mut self) {
        self.kill_upsd();
        if let Err(why) = self.spawn_upsd_and_wait() {
            panic!("restarting upsd on {}: {why}", self.addr());
        }
    }

    /// Kills the `dummy-ups` driver (upsd keeps running and soon answers `ERR DATA-STALE` or
    /// `ERR DRIVER-NOT-CONNECTED`), as if the UPS link had been lost.
    pub fn kill_driver(&mut self) {
        if let Some(mut driver) = self.driver.take() {
            driver.kill();
        }
    }

    /// Starts the driver again (after [`Upsd::kill_driver`]) and waits for its socket. upsd
    /// reconnects to it by itself, within a few seconds.
    pub fn restart_driver(&mut self) {
        self.kill_driver();
        let socket = self.state.join(format!("dummy-ups-{}", self.ups));
        let _ = std::fs::remove_file(&socket);
        let mut command = Command::new(DUMMY_UPS);
        command.args(["-a", &self.ups, "-F", "-u", "nut"]);
        let mut driver = Daemon::spawn("dummy-ups", self.nut_env(command), &self.dir.path().join("driver.log"));
        let ready = poll(START_TIMEOUT, || {
            if let Some(status) = driver.exited() {
                Step::Fail(driver.describe_exit(status))
            } else if socket.exists() {
                Step::Ready(())
            } else {
                Step::Wait(format!("no driver socket {} yet", socket.display()))
            }
        });
        self.driver = Some(driver);
        if let Err(why) = ready {
            panic!("dummy-ups for {} did not start: {why}", self.ups);
        }
    }

    fn start_upsd_on_free_port(&mut self) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            self.port = free_port(Ipv4Addr::LOCALHOST);
            write(
                &self.etc.join("upsd.conf"),
                format!("LISTEN 127.0.0.1 {}\nMAXAGE 15\n{}", self.port, self.upsd_conf_extra),
            );
            match self.spawn_upsd_and_wait() {
                Ok(()) => return,
                Err(why) if attempt < ATTEMPTS && lost_port_race(&why) => self.kill_upsd(),
                Err(why) => panic!("upsd for {} did not start: {why}", self.ups),
            }
        }
    }

    fn spawn_upsd_and_wait(&mut self) -> Result<(), String> {
        let mut command = Command::new(UPSD);
        command.args(["-F", "-u", "nut"]);
        let log = self.dir.path().join("upsd.log");
        self.upsd = Some(Daemon::spawn("upsd", self.nut_env(command), &log));
        let (addr, ups) = (self.addr(), self.ups.clone());
        let result = poll(START_TIMEOUT, || {
            if let Some(upsd) = self.upsd.as_mut()
                && let Some(status) = upsd.exited()
            {
                return Step::Fail(upsd.describe_exit(status));
            }
            if let Some(driver) = self.driver.as_mut()
                && let Some(status) = driver.exited()
            {
                return Step::Fail(driver.describe_exit(status));
            }
            match get_var(addr, &ups, "ups.status") {
                Ok(status) if status != "WAIT" => Step::Ready(()),
                other => Step::Wait(format!("ups.status reads {other:?}")),
            }
        });
        result.map_err(|why| format!("{why}\n{}", log_tail(&log)))
    }

    fn nut_env(&self, mut command: Command) -> Command {
        command.env("NUT_CONFPATH", &self.etc).env("NUT_STATEPATH", &self.state).env("NUT_ALTPIDPATH", &self.state);
        command
    }
}

impl Drop for Upsd {
    fn drop(&mut self) {
        self.kill_upsd();
        self.kill_driver();
    }
}

/// upsd exits when it cannot listen; someone else may have taken the port after `free_port`.
fn lost_port_race(why: &str) -> bool {
    let why = why.to_ascii_lowercase();
    why.contains("exited") && (why.contains("listen") || why.contains("address already in use"))
}

/// The default `.dev` data with `vars` replaced or appended.
fn dev_file(vars: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = DEFAULT_DEV.lines().map(str::to_owned).collect();
    for (name, value) in vars {
        let entry = format!("{name}: {value}");
        let prefix = format!("{name}:");
        match lines.iter_mut().find(|l| l.starts_with(&prefix)) {
            Some(line) => *line = entry,
            None => lines.push(entry),
        }
    }
    lines.join("\n") + "\n"
}

/// One `GET VAR` over a fresh connection.
fn get_var(addr: SocketAddr, ups: &str, name: &str) -> Result<String, String> {
    let line = request(addr, &format!("GET VAR {ups} {name}\n"))?;
    let prefix = format!("VAR {ups} {name} \"");
    match line.strip_prefix(&prefix).and_then(|v| v.strip_suffix('"')) {
        Some(quoted) => Ok(quoted.replace("\\\"", "\"").replace("\\\\", "\\")),
        None => Err(line),
    }
}

/// Sends one request line and returns the first answer line, without its newline.
fn request(addr: SocketAddr, line: &str) -> Result<String, String> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| format!("set timeouts: {e}"))?;
    (&stream).write_all(line.as_bytes()).map_err(|e| format!("send to {addr}: {e}"))?;
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).map_err(|e| format!("read from {addr}: {e}"))?;
    if answer.is_empty() {
        return Err(format!("{addr} closed the connection without answering"));
    }
    let _ = (&stream).write_all(b"LOGOUT\n");
    Ok(answer.trim_end_matches(['\r', '\n']).to_owned())
}

/// An NSS database in `db` (created) holding the certificate and key of `pem` under
/// [`NSS_CERT_NAME`], protected by [`NSS_DB_PASSWORD`]. `scratch` takes the intermediate files.
fn nss_database(pem: &Path, db: &Path, scratch: &Path) {
    require_executables(&[OPENSSL, CERTUTIL, PK12UTIL]);
    std::fs::create_dir(db).unwrap_or_else(|e| panic!("mkdir {}: {e}", db.display()));
    let password_file = scratch.join("nssdb.pass");
    write(&password_file, NSS_DB_PASSWORD);
    let p12 = scratch.join("upsd.p12");
    let p12_password = "hecate-test-p12";
    let nss_db = format!("sql:{}", db.display());
    run(Command::new(CERTUTIL).args(["-N", "-d", &nss_db, "-f"]).arg(&password_file));
    run(Command::new(OPENSSL)
        .args(["pkcs12", "-export", "-name", NSS_CERT_NAME, "-passout", &format!("pass:{p12_password}"), "-in"])
        .arg(pem)
        .arg("-out")
        .arg(&p12));
    run(Command::new(PK12UTIL).arg("-i").arg(&p12).args(["-d", &nss_db, "-W", p12_password, "-k"]).arg(&password_file));
}

/// Runs a setup command to completion, panicking with its output if it fails.
fn run(command: &mut Command) {
    let out =
        command.stdin(std::process::Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn nut_gid() -> u32 {
    let out =
        Command::new("getent").args(["group", "nut"]).output().unwrap_or_else(|e| panic!("cannot run getent: {e}"));
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .and_then(|gid| gid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no group 'nut' (is nut-server installed?): {SETUP_HINT}"))
}

fn chown_root_nut(path: &Path, nut_gid: u32) {
    std::os::unix::fs::chown(path, Some(0), Some(nut_gid))
        .unwrap_or_else(|e| panic!("chown root:nut {}: {e}", path.display()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_file_replaces_and_appends() {
        let dev = dev_file(&[("ups.status", "OB LB"), ("ups.test.result", "ok")]);
        assert!(dev.contains("\nups.status: OB LB\n"), "{dev}");
        assert!(!dev.contains("ups.status: OL"), "{dev}");
        assert!(dev.ends_with("ups.test.result: ok\n"), "{dev}");
        assert!(dev.contains("battery.charge: 100\n"), "{dev}");
    }
}
