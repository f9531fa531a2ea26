//! A real NUT `upsmon` (Debian `nut-client`) as another client of a test [`Upsd`]: the machine (a
//! NAS, a desktop) that shares Hecate's UPS. Its `SHUTDOWNCMD` and `NOTIFYCMD` only record.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::nut::Upsd;
use crate::process::{Daemon, log_tail};
use crate::{SETUP_HINT, Step, chmod, peer_temp_dir, poll, require_executables, write};

const UPSMON: &str = "/lib/nut/upsmon";
const UNSHARE: &str = "/usr/bin/unshare";
/// How long upsmon gets to log in (about 1 s here).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether a [`Upsmon`] monitors as the UPS's primary or as a secondary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpsmonRole {
    /// `primary`: raises `FSD` when the UPS is critical and waits up to `HOSTSYNC` for the
    /// secondaries to log out before it shuts its own host down.
    Primary,
    /// `secondary`: shuts its host down when the UPS shows `FSD` (or `OB LB`), then logs out.
    Secondary,
}

/// A running `upsmon` monitoring a [`Upsd`]'s UPS, with a recording `SHUTDOWNCMD` (one line with
/// a unix timestamp each time it runs) and `NOTIFYCMD` (one line per notification: timestamp and
/// `NOTIFYTYPE`). `POLLFREQ` and `POLLFREQALERT` are 1 s, `DEADTIME` 15 s, `FINALDELAY` 0.
///
/// Gotchas (found while writing tests/peers/nut/start-upsmon.sh): upsmon 2.8.0 writes
/// `/run/nut/upsmon.pid` whatever `NUT_ALTPIDPATH` says and refuses to start while it exists, so
/// each one runs in its own mount namespace with a private `/run/nut`; `-p` keeps it one process
/// (without it a privileged parent forks a child that outlives a SIGTERM to the parent);
/// upsmon.conf must be 0600. Dropping the handle kills it by PID and removes its dir.
#[derive(Debug)]
pub struct Upsmon {
    daemon: Daemon,
    dir: tempfile::TempDir,
}

impl Upsmon {
    /// Starts upsmon as `role`, logged in to `upsd` as `user`/`password` (a user with
    /// `upsmon primary` or `upsmon secondary` in upsd.users), with `HOSTSYNC hostsync_s`, and
    /// waits until upsd counts its login.
    pub fn start(upsd: &Upsd, user: &str, password: &str, role: UpsmonRole, hostsync_s: u32) -> Upsmon {
        crate::require_root();
        require_executables(&[UPSMON, UNSHARE]);
        let dir = peer_temp_dir("hecate-upsmon-");
        let d = dir.path();
        let state = d.join("state");
        std::fs::create_dir(&state).unwrap_or_else(|e| panic!("mkdir {}: {e}", state.display()));
        let record = |name: &str, what: &str| {
            let script = d.join(format!("{name}.sh"));
            let log = d.join(format!("{name}.log"));
            write(&script, format!("#!/bin/sh\necho \"$(date +%s.%N) {what}\" >> {}\n", log.display()));
            chmod(&script, 0o755);
            write(&log, "");
            script
        };
        let shutdown = record("shutdown", "SHUTDOWNCMD");
        let notify = record("notify", "$NOTIFYTYPE $*");
        write(&d.join("nut.conf"), "MODE=netclient\n");
        let role_word = match role {
            UpsmonRole::Primary => "primary",
            UpsmonRole::Secondary => "secondary",
        };
        let mut conf = format!(
            "MONITOR {}@{} 1 {user} {password} {role_word}\nMINSUPPLIES 1\nSHUTDOWNCMD \"{}\"\n\
             NOTIFYCMD \"{}\"\nPOLLFREQ 1\nPOLLFREQALERT 1\nHOSTSYNC {hostsync_s}\nDEADTIME 15\n\
             FINALDELAY 0\nPOWERDOWNFLAG {}\n",
            upsd.ups_name(),
            upsd.addr(),
            shutdown.display(),
            notify.display(),
            state.join("killpower").display()
        );
        for kind in ["ONLINE", "ONBATT", "LOWBATT", "FSD", "COMMOK", "COMMBAD", "SHUTDOWN", "NOCOMM"] {
            conf.push_str(&format!("NOTIFYFLAG {kind} SYSLOG+EXEC\n"));
        }
        let conf_path = d.join("upsmon.conf");
        write(&conf_path, conf);
        chmod(&conf_path, 0o600);

        let before = upsd.num_logins().unwrap_or_else(|e| panic!("NUMLOGINS before upsmon starts: {e}"));
        let mut command = Command::new(UNSHARE);
        command
            .args(["-m", "sh", "-c", "mkdir -p /run/nut && mount -t tmpfs tmpfs /run/nut && exec \"$0\" -p -D"])
            .arg(UPSMON)
            .env("NUT_CONFPATH", d)
            .env("NUT_STATEPATH", &state)
            .env("NUT_ALTPIDPATH", &state);
        let log = d.join("upsmon.log");
        let mut daemon = Daemon::spawn("upsmon", command, &log);
        let ready = poll(START_TIMEOUT, || {
            if let Some(status) = daemon.exited() {
                return Step::Fail(daemon.describe_exit(status));
            }
            match upsd.num_logins() {
                Ok(n) if n > before => Step::Ready(()),
                other => Step::Wait(format!("NUMLOGINS reads {other:?}, {before} before upsmon started")),
            }
        });
        if let Err(why) = ready {
            panic!("upsmon did not log in to {}@{}: {why}\n{SETUP_HINT}", upsd.ups_name(), upsd.addr());
        }
        Upsmon { daemon, dir }
    }

    /// When its `SHUTDOWNCMD` ran (unix time, seconds), each time.
    pub fn shutdowns(&self) -> Vec<f64> {
        stamps(&self.dir.path().join("shutdown.log"))
    }

    /// Its notifications so far: (unix time, `NOTIFYTYPE`).
    pub fn notifications(&self) -> Vec<(f64, String)> {
        read(&self.dir.path().join("notify.log"))
            .lines()
            .filter_map(|l| {
                let (at, rest) = l.split_once(' ')?;
                Some((at.parse().ok()?, rest.split_whitespace().next()?.to_owned()))
            })
            .collect()
    }

    /// Whether the process has ended (a secondary does once its `SHUTDOWNCMD` ran).
    pub fn exited(&mut self) -> bool {
        self.daemon.exited().is_some()
    }

    /// Its own log (`-D`), for failure messages.
    pub fn log(&self) -> String {
        log_tail(&self.dir.path().join("upsmon.log"))
    }

    /// Its process id (upsmon itself: `unshare` and `sh` exec it), for the benchmark's RSS and CPU.
    pub fn pid(&self) -> u32 {
        self.daemon.pid()
    }

    /// The dir holding its config and recordings.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn stamps(path: &PathBuf) -> Vec<f64> {
    read(path).lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
}

/// Now as unix time in seconds, to compare with the recordings.
pub fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default()
}
