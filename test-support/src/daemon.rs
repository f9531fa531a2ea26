//! A real `hecate daemon` process for end-to-end tests: its config and state in a temp dir, its
//! log in a file, its `status.json` and `runs.json` read back. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `hecate daemon`.
#[derive(Debug)]
pub struct HecateDaemon {
    child: Child,
    state: PathBuf,
    log: PathBuf,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl HecateDaemon {
    /// Writes `state_dir: <temp>/state` followed by `yaml_body` as the config and starts
    /// `binary daemon --config` on it (`RUST_LOG=info`, the log to a file).
    pub fn start(binary: &Path, yaml_body: &str) -> HecateDaemon {
        Self::start_with(binary, yaml_body, |_| {})
    }

    /// As [`HecateDaemon::start`], letting the caller prepare the state dir first (a journal
    /// left by an earlier run, say).
    pub fn start_with(binary: &Path, yaml_body: &str, prepare: impl FnOnce(&Path)) -> HecateDaemon {
        Self::start_wrapped(&[], binary, yaml_body, prepare)
    }

    /// As [`HecateDaemon::start_with`], run through `wrapper` (a program and its arguments that
    /// execs the rest, such as `prlimit --nofile=1024:4096`), so the child is still the daemon.
    pub fn start_wrapped(
        wrapper: &[String],
        binary: &Path,
        yaml_body: &str,
        prepare: impl FnOnce(&Path),
    ) -> HecateDaemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).expect("state dir");
        prepare(&state);
        let config = dir.path().join("hecate.yaml");
        std::fs::write(&config, format!("state_dir: {}\n{yaml_body}", state.display())).expect("config");
        let log = dir.path().join("daemon.log");
        let out = std::fs::File::create(&log).expect("log file");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let child = command
            .args(["daemon", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting hecate daemon{}: {e}",
                    wrapper.first().map(|w| format!(" through {w}")).unwrap_or_default()
                )
            });
        HecateDaemon { child, state, log, config, _dir: dir }
    }

    /// The state dir.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The config file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `status.json` (`null` before the first).
    pub fn status(&self) -> serde_json::Value {
        std::fs::read_to_string(self.state.join("status.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    /// Every record in `runs.json`.
    pub fn runs(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state.join("runs.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }

    /// The records of `kind` (`shutdown`, `startup`) in `runs.json`.
    pub fn runs_of(&self, kind: &str) -> Vec<serde_json::Value> {
        self.runs().into_iter().filter(|r| r["kind"] == kind).collect()
    }

    /// The log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.exit_status().is_some()
    }

    /// How the process exited, if it has.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops it with SIGTERM (SIGKILL after `grace`) and returns the whole log.
    pub fn stop(mut self, grace: Duration) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ =
            crate::poll(
                grace,
                || if self.exited() { crate::Step::Ready(()) } else { crate::Step::Wait(String::new()) },
            );
        self.log()
    }
}

impl Drop for HecateDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
