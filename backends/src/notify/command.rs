//! `command`: runs a program for each event, the event as JSON on its standard input and the
//! essentials in environment variables. No shell: the program and its arguments are a list, so
//! nothing in an event can be interpreted as shell syntax.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::notify::{DeliveryPolicy, Event, EventKind, Notifier, NotifierConfig};
use hecate_core::preflight::Check;
use hecate_core::{BackendError, BuildContext, ErrorKind};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{default_retry_for, default_timeout};

/// Runs a program for each event.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandConfig {
    /// A name for this notifier in logs and reports.
    #[serde(default = "default_name")]
    pub name: String,
    /// The program and its arguments, run directly (no shell): `[/usr/local/bin/page, --team,
    /// ops]`. The event's JSON is on its standard input; `HECATE_EVENT_KIND`, `HECATE_HOST` and
    /// `HECATE_MESSAGE` are set. Exit status 0 means delivered.
    pub argv: Vec<String>,
    /// The working directory; Hecate's own if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<PathBuf>,
    /// Time limit of one run; a program still running then is killed and the try counts as
    /// failed. 1ms to 10m; default 10s.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How long an event is retried, with growing pauses, before it is given up (and logged).
    /// From `timeout` to 1 day; default 2m.
    #[serde(default = "default_retry_for")]
    pub retry_for: HumanDuration,
    /// Only these event kinds are sent; empty or absent means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<EventKind>,
}

fn default_name() -> String {
    "command".to_string()
}

#[typetag::serde(name = "command")]
impl NotifierConfig for CommandConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        match self.argv.first() {
            None => p.push("`argv` must name a program".into()),
            Some(prog) if prog.is_empty() => p.push("`argv[0]` (the program) must not be empty".into()),
            Some(_) => {}
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            p.push("`argv` must not contain NUL characters".into());
        }
        p.extend(super::delivery_problems(self.timeout, self.retry_for));
        p
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn Notifier>, BackendError> {
        if self.argv.first().is_none_or(String::is_empty) {
            return Err(BackendError::new(ErrorKind::Config, "`argv` must name a program"));
        }
        Ok(Box::new(CommandNotifier {
            name: self.name.clone(),
            argv: self.argv.clone(),
            working_dir: self.working_dir.clone(),
            timeout: *self.timeout,
            policy: super::policy(self.timeout, self.retry_for, &self.events),
        }))
    }
}

hecate_core::register_backend!(
    Notifier,
    "command",
    "runs a program with the event as JSON on stdin (no shell)",
    CommandConfig
);

/// The runtime side of [`CommandConfig`].
pub struct CommandNotifier {
    name: String,
    argv: Vec<String>,
    working_dir: Option<PathBuf>,
    timeout: std::time::Duration,
    policy: DeliveryPolicy,
}

impl fmt::Debug for CommandNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommandNotifier")
            .field("name", &self.name)
            .field("program", &self.argv.first())
            .finish_non_exhaustive()
    }
}

/// How much of the program's output is kept for the error message.
const OUTPUT_KEPT: usize = 4096;

impl CommandNotifier {
    async fn run(&self, event: &Event) -> Result<(), BackendError> {
        let program = &self.argv[0];
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&self.argv[1..])
            .env("HECATE_EVENT_KIND", event.kind.as_str())
            .env("HECATE_HOST", &event.host)
            .env("HECATE_MESSAGE", &event.message)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // A try abandoned by a time limit (ours or the delivery's) must not leave it running.
            .kill_on_drop(true);
        if let Some(dir) = &self.working_dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => ErrorKind::Config,
                _ => ErrorKind::Failed,
            };
            BackendError::with_source(kind, format!("cannot run {program}"), e)
        })?;
        let input = event.to_json();
        let mut stdin = child.stdin.take();
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let feed = async move {
            if let Some(s) = stdin.as_mut() {
                // A program that does not read its input closes the pipe: not an error.
                let _ = s.write_all(input.as_bytes()).await;
                let _ = s.write_all(b"\n").await;
            }
            drop(stdin);
        };
        let (_, out, err, status) =
            tokio::join!(feed, read_limited(stdout.as_mut()), read_limited(stderr.as_mut()), child.wait());
        let status =
            status.map_err(|e| BackendError::with_source(ErrorKind::Failed, format!("waiting for {program}"), e))?;
        if status.success() {
            if !out.trim().is_empty() {
                tracing::debug!(notifier = %self.name, output = %out.trim(), "notification command output");
            }
            return Ok(());
        }
        let said = if err.trim().is_empty() { out.trim() } else { err.trim() };
        let said = if said.is_empty() { String::new() } else { format!(": {said}") };
        Err(BackendError::new(ErrorKind::Failed, format!("{program} exited with {status}{said}")))
    }
}

/// Where `program` would be run from, as the spawn finds it: a path with a `/` as it is (below
/// `working_dir` when relative, since the child changes there before it starts the program), a
/// bare name on the `PATH`; and whether that is an executable file.
fn find_program(program: &str, working_dir: Option<&Path>) -> Result<String, BackendError> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |p: &Path| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let path = match working_dir {
            Some(dir) if Path::new(program).is_relative() => dir.join(program),
            _ => PathBuf::from(program),
        };
        return match path.metadata() {
            Err(e) => Err(BackendError::with_source(ErrorKind::Config, format!("{} cannot be run", path.display()), e)),
            Ok(_) if !executable(&path) => {
                Err(BackendError::new(ErrorKind::Config, format!("{} is not an executable file", path.display())))
            }
            Ok(_) => Ok(format!("{} is an executable file", path.display())),
        };
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(program))
        .find(|p| executable(p))
        .map(|p| format!("{program} is {}", p.display()))
        .ok_or_else(|| BackendError::new(ErrorKind::Config, format!("{program} is not an executable file on the PATH")))
}

/// Reads a pipe to its end, keeping the first [`OUTPUT_KEPT`] bytes; reading on past them keeps
/// a chatty program from blocking on a full pipe.
async fn read_limited<R: tokio::io::AsyncRead + Unpin>(r: Option<&mut R>) -> String {
    let Some(r) = r else { return String::new() };
    let mut kept = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[async_trait]
impl Notifier for CommandNotifier {
    fn name(&self) -> &str {
        &self.name
    }

    async fn notify(&self, event: &Event) -> Result<(), BackendError> {
        match tokio::time::timeout(self.timeout, self.run(event)).await {
            Ok(r) => r,
            // Dropping the run kills the program (kill_on_drop).
            Err(_) => Err(BackendError::new(
                ErrorKind::Timeout,
                format!("{} still running after {}: killed", self.argv[0], humantime::format_duration(self.timeout)),
            )),
        }
    }

    /// The program is there and executable; it is not run (that would send a notification).
    async fn preflight(&self) -> Vec<Check> {
        vec![Check::from_result("program", find_program(&self.argv[0], self.working_dir.as_deref()))]
    }

    fn policy(&self) -> DeliveryPolicy {
        self.policy.clone()
    }
}
