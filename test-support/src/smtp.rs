//! A real SMTP server for the `email` notifier's tests: aiosmtpd (Debian's `python3-aiosmtpd`)
//! on a free loopback port, recording every mail it takes (`smtpd.py`).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde::Deserialize;

use crate::process::{Daemon, log_tail};
use crate::{SETUP_HINT, Step, free_port, peer_temp_dir, poll, require_executables, write};

/// Debian's Python, which has `python3-aiosmtpd` (a pyenv or venv python first on the PATH would not).
const PYTHON: &str = "/usr/bin/python3";
const SCRIPT: &str = include_str!("smtpd.py");
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// One mail as the server took it.
#[derive(Debug, Clone, Deserialize)]
pub struct Mail {
    /// The name the client gave in EHLO.
    pub ehlo: String,
    /// The user and password it logged in with, if it did.
    pub login: Option<(String, String)>,
    /// The envelope's sender (`MAIL FROM`), without angle brackets.
    pub from: String,
    /// The envelope's recipients (`RCPT TO`).
    pub to: Vec<String>,
    /// The message: headers and body.
    pub data: String,
}

/// A running aiosmtpd; killed when dropped.
#[derive(Debug)]
pub struct Smtpd {
    port: u16,
    server: Option<Daemon>,
    taken: usize,
    // last, so it is removed after the server is killed
    dir: tempfile::TempDir,
}

impl Smtpd {
    /// Starts the server and waits until it listens. `password`: the only password AUTH accepts
    /// (any, if `None`).
    pub fn start(password: Option<&str>) -> Smtpd {
        require_executables(&[PYTHON]);
        let dir = peer_temp_dir("hecate-smtpd-");
        write(&dir.path().join("smtpd.py"), SCRIPT);
        let mut smtpd = Smtpd { port: 0, server: None, taken: 0, dir };
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            smtpd.port = free_port(Ipv4Addr::LOCALHOST);
            match smtpd.spawn(password) {
                Ok(()) => return smtpd,
                Err(why) if attempt < ATTEMPTS && why.contains("Address already in use") => {}
                Err(why) => panic!("aiosmtpd did not start: {why}\n{SETUP_HINT}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn(&mut self, password: Option<&str>) -> Result<(), String> {
        let path = self.dir.path();
        let ready = path.join("ready");
        let _ = std::fs::remove_file(&ready);
        let log = path.join("smtpd.log");
        let mut command = Command::new(PYTHON);
        command.arg(path.join("smtpd.py")).arg("--port").arg(self.port.to_string());
        command.arg("--mails").arg(self.mails_file()).arg("--ready").arg(&ready);
        if let Some(p) = password {
            command.arg("--password").arg(p);
        }
        // a pyenv's or venv's settings must not reach Debian's python
        command.env_remove("PYTHONPATH").env_remove("PYTHONHOME").env("PYTHONUNBUFFERED", "1");
        self.server = Some(Daemon::spawn("aiosmtpd", command, &log));
        let result = poll(START_TIMEOUT, || {
            if let Some(server) = self.server.as_mut()
                && let Some(status) = server.exited()
            {
                return Step::Fail(server.describe_exit(status));
            }
            if ready.exists() { Step::Ready(()) } else { Step::Wait(format!("{} not written yet", ready.display())) }
        });
        result.map_err(|why| format!("{why}\n{}", log_tail(&log)))
    }

    fn mails_file(&self) -> PathBuf {
        self.dir.path().join("mails.jsonl")
    }

    /// Where it listens: 127.0.0.1 and a free port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Every mail taken so far, in order.
    pub fn mails(&self) -> Vec<Mail> {
        let text = std::fs::read_to_string(self.mails_file()).unwrap_or_default();
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("aiosmtpd recorded {l:?}: {e}")))
            .collect()
    }

    /// The next mail not yet returned, if one came.
    pub fn new_mail(&mut self) -> Option<Mail> {
        let mail = self.mails().into_iter().nth(self.taken)?;
        self.taken += 1;
        Some(mail)
    }

    /// The next mail not yet returned, waiting up to 10 s for it.
    pub fn wait_mail(&mut self) -> Mail {
        let mail = crate::wait_until("a mail at aiosmtpd", Duration::from_secs(10), || {
            self.mails().into_iter().nth(self.taken).ok_or_else(|| "none yet".to_string())
        });
        self.taken += 1;
        mail
    }
}
