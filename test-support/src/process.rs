//! A daemon process spawned by the harness, killed by PID when dropped.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

/// A running child process whose stdout and stderr go to a log file.
#[derive(Debug)]
pub(crate) struct Daemon {
    what: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Spawns `command` with stdin from /dev/null and stdout+stderr appended to `log`.
    pub(crate) fn spawn(what: &str, mut command: Command, log: &Path) -> Daemon {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("{what}: cannot open log {}: {e}", log.display()));
        let err = out.try_clone().unwrap_or_else(|e| panic!("{what}: cannot dup log handle: {e}"));
        command.stdin(Stdio::null()).stdout(Stdio::from(out)).stderr(Stdio::from(err));
        let child = command.spawn().unwrap_or_else(|e| panic!("{what}: cannot start {command:?}: {e}"));
        Daemon { what: what.to_owned(), child, log: log.to_owned() }
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// "`what` (pid N) exited with S; log tail: ..." for failure messages.
    pub(crate) fn describe_exit(&mut self, status: ExitStatus) -> String {
        format!("{} (pid {}) exited with {status}; {}", self.what, self.child.id(), log_tail(&self.log))
    }

    /// Kills the process (SIGKILL, by the PID we spawned) and reaps it.
    pub(crate) fn kill(&mut self) {
        if self.exited().is_none() {
            // fails only if it already exited; either way wait() reaps it
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a log file, for failure messages.
pub(crate) fn log_tail(log: &Path) -> String {
    match std::fs::read_to_string(log) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n  ");
            format!("last lines of {}:\n  {tail}", log.display())
        }
        Err(e) => format!("(cannot read {}: {e})", log.display()),
    }
}
