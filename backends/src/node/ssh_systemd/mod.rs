//! `ssh_systemd`: stops and starts k3s units and powers a node off over SSH, with `systemctl`.
//!
//! One connection per node, opened on first use and reused by every later step (reopened if it
//! died). Host keys are checked against a known_hosts file: an unknown key is refused unless
//! `accept_new_host_keys` is set (then it is recorded), a changed one always is.
//!
//! Which checks happen when: `hecate config check` (and the config loader) check the shape of
//! every field; the files themselves are read when the backends are built, which `hecate
//! shutdown`/`startup` (dry runs included) and the daemon's start do. So a config can be checked
//! on a machine without the key, and a daemon whose key is missing refuses to start instead of
//! failing at the moment a shutdown is needed.

pub mod keyscan;
mod known_hosts;
mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::{MIN_TIMEOUT, ONE_STEP, ONE_TRY};
use hecate_core::node::{Capability, NodeController, NodeControllerConfig, NodeInfo, NodeOp, NodeOpOutput};
use hecate_core::preflight::Check;
use hecate_core::{BackendError, BuildContext, ErrorKind};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use self::session::{Connection, ExecError, Exit, Target};

/// Controls a node's k3s unit and power through SSH and systemd.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SshSystemdConfig {
    /// The login user on the node. Unless `sudo: false`, it needs password-less `sudo` for
    /// `systemctl` (and the poweroff command), e.g. a sudoers line
    /// `hecate ALL=(root) NOPASSWD: /usr/bin/systemctl`.
    pub user: String,
    /// Absolute path of the private key to log in with: OpenSSH format, ed25519 or ecdsa, without a
    /// passphrase (Hecate runs unattended). Read when the backends are built, never logged.
    pub identity_file: PathBuf,
    /// Absolute path of the known_hosts file the node's host key is checked against, read at each
    /// new connection. Lines are `NAME KEYTYPE KEY` with NAME the node's `address` (or
    /// `[address]:port` when `port` is not 22), as `ssh-keyscan` prints them; hashed names work.
    /// May be missing only with `accept_new_host_keys: true` (it is then created).
    pub known_hosts: PathBuf,
    /// The SSH port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// Trust a host key known_hosts does not list yet, and append it there (trust on first use).
    /// A key that differs from the listed one is refused even so.
    #[serde(default)]
    pub accept_new_host_keys: bool,
    /// Time limit on opening a connection: TCP connect, SSH handshake and login. 1ms to 10m;
    /// default 10s.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Time limit on one remote command (`systemctl stop k3s` can take a while). The shutdown's
    /// `controller_timeout` and the step's timeout still apply on top. 1ms to 1h; default 1m.
    #[serde(default = "default_command_timeout")]
    pub command_timeout: HumanDuration,
    /// Run `systemctl start|stop` and the poweroff command through `sudo -n` (never prompts: a
    /// missing sudo rule fails at once). Turn off when logging in as root.
    #[serde(default = "yes")]
    pub sudo: bool,
    /// The command that powers the node off (after `sudo -n` when `sudo` is on). The connection
    /// dropping while it runs counts as the request made, not as the node off: that is confirmed
    /// by a BMC in the node's chain, or without one by SSH staying unanswered
    /// (`shutdown.off_silence`).
    #[serde(default = "default_poweroff_command")]
    pub poweroff_command: String,
    /// The node's last step before its power is cut, run (after `sudo -n`) as `COMMAND UNIT
    /// GRACE_SECONDS`: `packaging/node/hecate-k3s-stop`, installed on the node as
    /// `/usr/local/sbin/hecate-k3s-stop`, stops the unit, gives every container SIGTERM and its
    /// grace (`shutdown.max_pod_grace`), then runs `k3s-killall.sh`. `null`: only `systemctl stop
    /// UNIT`, which leaves the containers running (k3s's unit has `KillMode=process`) to be
    /// killed hard at power-off; `config check` warns.
    #[serde(default = "default_k3s_stop_command")]
    pub k3s_stop_command: Option<String>,
}

fn default_port() -> u16 {
    22
}

fn default_connect_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

fn default_command_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}

fn yes() -> bool {
    true
}

fn default_poweroff_command() -> String {
    "systemctl poweroff".to_string()
}

fn default_k3s_stop_command() -> Option<String> {
    Some("hecate-k3s-stop".to_string())
}

const CAPABILITIES: [Capability; 6] = [
    Capability::Probe,
    Capability::StartUnit,
    Capability::StopUnit,
    Capability::UnitStatus,
    Capability::PowerOff,
    Capability::ClockStatus,
];

/// Whether a unit name is safe to put on a remote command line: `[A-Za-z0-9@._:-]+`, not
/// starting with `-` (it would be read as an option). Shell metacharacters and spaces never pass.
pub fn valid_unit_name(unit: &str) -> bool {
    !unit.is_empty() && !unit.starts_with('-') && unit.chars().all(|c| c.is_ascii_alphanumeric() || "@._:-".contains(c))
}

fn valid_user(user: &str) -> bool {
    // POSIX portable user names (plus the `$` of machine accounts is left out on purpose)
    !user.is_empty() && !user.starts_with('-') && user.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

fn check_path(problems: &mut Vec<String>, field: &str, path: &Path) {
    if path.as_os_str().is_empty() {
        problems.push(format!("{field}: must not be empty"));
    } else if !path.is_absolute() {
        problems.push(format!(
            "{field}: `{}` must be an absolute path (the daemon's working directory is not the config's)",
            path.display()
        ));
    }
}

#[typetag::serde(name = "ssh_systemd")]
impl NodeControllerConfig for SshSystemdConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !valid_user(&self.user) {
            p.push(format!(
                "user: `{}` is not a user name (letters, digits, `.`, `_`, `-`; not starting with `-`)",
                self.user
            ));
        }
        check_path(&mut p, "identity_file", &self.identity_file);
        check_path(&mut p, "known_hosts", &self.known_hosts);
        if self.port == 0 {
            p.push("port: must be between 1 and 65535".into());
        }
        for (field, d, max) in
            [("connect_timeout", self.connect_timeout, ONE_TRY), ("command_timeout", self.command_timeout, ONE_STEP)]
        {
            if let Some(m) = d.out_of_range(MIN_TIMEOUT, max) {
                p.push(format!("{field}: {m}"));
            }
        }
        let commands =
            [("poweroff_command", Some(&self.poweroff_command)), ("k3s_stop_command", self.k3s_stop_command.as_ref())];
        for (field, command) in commands {
            let Some(command) = command else { continue };
            let cmd = command.trim();
            if cmd.is_empty() {
                p.push(format!("{field}: must not be empty"));
            } else if command.chars().any(char::is_control) {
                p.push(format!("{field}: must be a single line without control characters"));
            } else if self.sudo && (cmd == "sudo" || cmd.starts_with("sudo ")) {
                p.push(format!("{field}: already runs through `sudo -n` (sudo: true); drop the leading sudo"));
            }
        }
        p
    }

    fn warnings(&self) -> Vec<String> {
        if self.k3s_stop_command.is_some() {
            return Vec::new();
        }
        vec![
            "k3s_stop_command: null: stopping k3s leaves its containers running (its unit has KillMode=process); \
             they get no SIGTERM and are killed hard when the power goes (install packaging/node/hecate-k3s-stop)"
                .into(),
        ]
    }

    fn build(&self, node: &NodeInfo, _ctx: &BuildContext) -> Result<Box<dyn NodeController>, BackendError> {
        let key = load_identity(&self.identity_file)?;
        check_known_hosts_file(&self.known_hosts, self.accept_new_host_keys)?;
        let target = Target {
            node: node.name.clone(),
            host: node.address.clone(),
            port: self.port,
            user: self.user.clone(),
            key: Arc::new(key),
            identity_file: self.identity_file.clone(),
            known_hosts: self.known_hosts.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            connect_timeout: *self.connect_timeout,
        };
        Ok(Box::new(SshSystemd {
            target: Arc::new(target),
            command_timeout: *self.command_timeout,
            sudo: self.sudo,
            poweroff_command: self.poweroff_command.trim().to_string(),
            k3s_stop_command: self.k3s_stop_command.as_deref().map(|c| c.trim().to_string()),
            conn: Mutex::new(None),
        }))
    }
}

hecate_core::register_backend!(
    NodeController,
    "ssh_systemd",
    "SSH (key auth, known_hosts) + systemctl: stop/start k3s units, OS poweroff, clock sync status",
    SshSystemdConfig
);

fn config_error(message: String) -> BackendError {
    BackendError::new(ErrorKind::Config, message)
}

/// Reads and parses the private key. The key's bytes never reach a message or a log.
fn load_identity(path: &Path) -> Result<russh::keys::PrivateKey, BackendError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => config_error(format!("identity file {shown} does not exist")),
        _ => BackendError::with_source(ErrorKind::Config, format!("cannot read identity file {shown}"), e),
    })?;
    let key = russh::keys::decode_secret_key(&text, None).map_err(|e| match e {
        russh::keys::Error::KeyIsEncrypted => config_error(format!(
            "identity file {shown} is protected by a passphrase; hecate runs unattended and needs a key without one"
        )),
        // the parser's own messages never quote the key
        other => BackendError::with_source(
            ErrorKind::Config,
            format!("identity file {shown} is not an openssh private key hecate can read"),
            other,
        ),
    })?;
    if key.algorithm().is_rsa() {
        return Err(config_error(format!(
            "identity file {shown} is an rsa key; use an ed25519 or ecdsa key (hecate is built without rsa)"
        )));
    }
    hecate_core::secret::warn_if_exposed(path, "identity_file");
    Ok(key)
}

fn check_known_hosts_file(path: &Path, accept_new: bool) -> Result<(), BackendError> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(config_error(format!("known_hosts {shown} is not a file"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !accept_new {
                return Err(config_error(format!(
                    "known_hosts file {shown} does not exist (create it with the nodes' keys, or set \
                     accept_new_host_keys: true to record them on first use)"
                )));
            }
            match path.parent() {
                Some(dir) if dir.is_dir() => Ok(()),
                _ => Err(config_error(format!(
                    "known_hosts file {shown} cannot be created: its directory does not exist"
                ))),
            }
        }
        Err(e) => Err(BackendError::with_source(ErrorKind::Config, format!("cannot read known_hosts file {shown}"), e)),
    }
}

/// The runtime side of [`SshSystemdConfig`]: one node, one (lazily opened) connection.
pub struct SshSystemd {
    target: Arc<Target>,
    command_timeout: Duration,
    sudo: bool,
    poweroff_command: String,
    k3s_stop_command: Option<String>,
    // Held while connecting, so concurrent steps on one node share a single connection.
    conn: Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for SshSystemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSystemd")
            .field("target", &self.target)
            .field("command_timeout", &self.command_timeout)
            .field("sudo", &self.sudo)
            .field("poweroff_command", &self.poweroff_command)
            .field("k3s_stop_command", &self.k3s_stop_command)
            .finish_non_exhaustive()
    }
}

impl SshSystemd {
    /// The live connection, opened if there is none or the last one died.
    async fn connection(&self) -> Result<Arc<Connection>, BackendError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref()
            && !c.is_closed()
        {
            return Ok(c.clone());
        }
        *slot = None;
        let c = Arc::new(session::connect(&self.target).await?);
        tracing::debug!(node = %self.target.node, "ssh connection opened");
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Drops `conn` from the slot if it is still the cached one.
    async fn forget(&self, conn: &Arc<Connection>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    /// Runs a command on the node. A cached connection that turns out dead before the command
    /// could start is replaced once; a connection lost while the command runs is an error
    /// (`Ok(None)` for `tolerate_loss`, as for poweroff).
    async fn run_command(&self, command: &str, tolerate_loss: bool) -> Result<Option<Exit>, BackendError> {
        self.run_command_for(command, tolerate_loss, self.command_timeout).await
    }

    /// [`Self::run_command`] with `limit` in place of `command_timeout`.
    async fn run_command_for(
        &self,
        command: &str,
        tolerate_loss: bool,
        limit: Duration,
    ) -> Result<Option<Exit>, BackendError> {
        let node = &self.target.node;
        for attempt in 0..2 {
            let conn = self.connection().await?;
            tracing::debug!(node = %node, command, "running");
            let result = tokio::time::timeout(limit, session::exec(&conn, command)).await;
            match result {
                Err(_) => {
                    return Err(BackendError::new(
                        ErrorKind::Timeout,
                        format!(
                            "`{command}` on node {node} did not finish within {} (command_timeout)",
                            humantime::format_duration(limit)
                        ),
                    ));
                }
                Ok(Err(ExecError::Open(e))) => {
                    self.forget(&conn).await;
                    if attempt == 0 {
                        tracing::debug!(node = %node, error = %e, "cached ssh connection is dead; reconnecting");
                        continue;
                    }
                    return Err(session::ssh_error(e, &format!("cannot open an ssh channel to node {node}")));
                }
                Ok(Err(ExecError::Lost(_))) if tolerate_loss => {
                    self.forget(&conn).await;
                    return Ok(None);
                }
                Ok(Err(ExecError::Lost(e))) => {
                    self.forget(&conn).await;
                    return Err(session::ssh_error(
                        e,
                        &format!("connection to node {node} lost while running `{command}`"),
                    ));
                }
                Ok(Err(ExecError::Refused)) => {
                    return Err(BackendError::new(
                        ErrorKind::Protocol,
                        format!("node {node} refused to run `{command}` over ssh"),
                    ));
                }
                Ok(Ok(exit)) if exit.status.is_none() && exit.signal.is_none() => {
                    // the channel closed without an exit status: the connection went away
                    self.forget(&conn).await;
                    if tolerate_loss {
                        return Ok(None);
                    }
                    return Err(BackendError::new(
                        ErrorKind::Unreachable,
                        format!("`{command}` on node {node} ended without an exit status (connection lost)"),
                    ));
                }
                Ok(Ok(exit)) => return Ok(Some(exit)),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn privileged(&self, command: &str) -> String {
        if self.sudo { format!("sudo -n {command}") } else { command.to_string() }
    }

    fn failed(&self, command: &str, exit: &Exit) -> BackendError {
        let how = match (exit.status, &exit.signal) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("was killed by signal {sig}"),
            (None, None) => "ended without an exit status".to_string(),
        };
        let why = exit.last_line().map(|l| format!(": {l}")).unwrap_or_default();
        BackendError::new(ErrorKind::Failed, format!("`{command}` on node {} {how}{why}", self.target.node))
    }

    async fn must_succeed(&self, command: &str) -> Result<NodeOpOutput, BackendError> {
        self.must_succeed_within(command, Duration::ZERO).await
    }

    /// [`Self::must_succeed`] with `extra` time on top of `command_timeout`.
    async fn must_succeed_within(&self, command: &str, extra: Duration) -> Result<NodeOpOutput, BackendError> {
        match self.run_command_for(command, false, self.command_timeout.saturating_add(extra)).await? {
            Some(exit) if exit.status == Some(0) => Ok(NodeOpOutput::Done),
            Some(exit) => Err(self.failed(command, &exit)),
            None => unreachable!("losses are errors unless tolerated"),
        }
    }
}

/// A command an operation runs on the node: its text (without `sudo -n`) and whether it runs
/// through sudo. The one place both [`SshSystemd::run`] and the preflight take it from, so the
/// preflight checks exactly what a run would send.
struct RemoteCommand {
    line: String,
    privileged: bool,
}

impl SshSystemd {
    /// The command `op` runs on the node; `None` for an operation this controller cannot do.
    fn remote_command(&self, op: &NodeOp) -> Result<Option<RemoteCommand>, BackendError> {
        let (line, privileged) = match op {
            NodeOp::Probe => ("true".to_string(), false),
            NodeOp::StartUnit(unit) => (format!("systemctl start {}", checked(unit)?), true),
            NodeOp::StartUnitNoBlock(unit) => (format!("systemctl start --no-block {}", checked(unit)?), true),
            NodeOp::StopUnit(unit) => (format!("systemctl stop {}", checked(unit)?), true),
            NodeOp::StopK3s { unit, grace_s } => match &self.k3s_stop_command {
                Some(stop) => (format!("{stop} {} {grace_s}", checked(unit)?), true),
                None => (format!("systemctl stop {}", checked(unit)?), true),
            },
            // reading a unit's state needs no privileges
            NodeOp::UnitActive(unit) => (format!("systemctl is-active {}", checked(unit)?), false),
            // systemd-timesyncd's (or chrony's, through timedated) view; needs no privileges
            NodeOp::ClockSynced => ("timedatectl show -p NTPSynchronized --value".to_string(), false),
            NodeOp::PowerOff => (self.poweroff_command.clone(), true),
            NodeOp::PowerOn | NodeOp::PowerState | NodeOp::ForceOff => return Ok(None),
        };
        Ok(Some(RemoteCommand { line, privileged }))
    }

    /// The command line `op` sends: through `sudo -n` when privileged and `sudo` is on.
    fn command_line(&self, op: &NodeOp) -> Result<String, BackendError> {
        match self.remote_command(op)? {
            Some(c) if c.privileged => Ok(self.privileged(&c.line)),
            Some(c) => Ok(c.line),
            None => {
                Err(BackendError::unsupported(format!("ssh_systemd cannot do {op}: that needs a bmc or wake-on-lan")))
            }
        }
    }

    /// Whether sudo lets the login user run each command without a password (`sudo -n -l
    /// COMMAND`, which runs nothing: sudo answers whether its policy allows the command with
    /// these arguments). `Ok` lists them; `Err` names each one refused and why.
    async fn sudo_allows(&self, conn: &Connection, commands: &[String]) -> Result<String, String> {
        let mut refused = Vec::new();
        for command in commands {
            let probe = format!("sudo -n -l {command}");
            let answer = tokio::time::timeout(self.command_timeout, session::exec(conn, &probe)).await;
            let why = match answer {
                Ok(Ok(exit)) if exit.status == Some(0) => continue,
                // sudo says nothing for a command its policy does not allow
                Ok(Ok(exit)) if exit.status == Some(1) && exit.last_line().is_none() => "not allowed".to_string(),
                Ok(Ok(exit)) => {
                    let how = exit.status.map_or_else(|| "no exit status".to_string(), |c| format!("status {c}"));
                    format!("{how}: {}", exit.last_line().unwrap_or_default())
                }
                Ok(Err(ExecError::Open(e) | ExecError::Lost(e))) => format!("could not ask sudo: {e}"),
                Ok(Err(ExecError::Refused)) => "could not ask sudo: the node refused to run it".to_string(),
                Err(_) => {
                    format!("sudo did not answer within {}", humantime::format_duration(self.command_timeout))
                }
            };
            refused.push(format!("`{command}` ({why})"));
        }
        if refused.is_empty() {
            Ok(format!("sudo -n allows {}", commands.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(", ")))
        } else {
            Err(format!(
                "sudo -n refuses user {} {}: the plan runs these as root (see packaging/sudoers.d/hecate-node)",
                self.target.user,
                refused.join(", ")
            ))
        }
    }
}

fn checked(unit: &str) -> Result<&str, BackendError> {
    check_unit(unit).map(|()| unit)
}

fn check_unit(unit: &str) -> Result<(), BackendError> {
    if valid_unit_name(unit) {
        Ok(())
    } else {
        Err(config_error(format!(
            "unit name {unit:?} is not allowed on a remote command line (letters, digits and `@._:-` only, \
             not starting with `-`)"
        )))
    }
}

#[async_trait]
impl NodeController for SshSystemd {
    fn kind(&self) -> &str {
        "ssh_systemd"
    }

    fn capabilities(&self) -> &[Capability] {
        &CAPABILITIES
    }

    async fn run(&self, op: &NodeOp) -> Result<NodeOpOutput, BackendError> {
        let command = self.command_line(op)?;
        match op {
            NodeOp::StopK3s { grace_s, .. } if self.k3s_stop_command.is_some() => {
                // The command waits up to the grace for the containers: give it that on top.
                let extra = Duration::from_secs((*grace_s).min(ONE_STEP.as_secs()));
                self.must_succeed_within(&command, extra).await
            }
            NodeOp::Probe
            | NodeOp::StartUnit(_)
            | NodeOp::StartUnitNoBlock(_)
            | NodeOp::StopUnit(_)
            | NodeOp::StopK3s { .. } => self.must_succeed(&command).await,
            NodeOp::UnitActive(_) => match self.run_command(&command, false).await? {
                Some(exit) if exit.status == Some(0) => Ok(NodeOpOutput::Active(true)),
                // systemd's "program is not running" (inactive, failed, ...)
                Some(exit) if exit.status == Some(3) => Ok(NodeOpOutput::Active(false)),
                Some(exit) => Err(self.failed(&command, &exit)),
                None => unreachable!("losses are errors unless tolerated"),
            },
            NodeOp::ClockSynced => match self.run_command(&command, false).await? {
                Some(exit) if exit.status == Some(0) => {
                    let out = String::from_utf8_lossy(&exit.stdout);
                    match out.trim() {
                        "yes" => Ok(NodeOpOutput::ClockSynced(true)),
                        "no" => Ok(NodeOpOutput::ClockSynced(false)),
                        _ => Err(BackendError::new(
                            ErrorKind::Protocol,
                            format!("`{command}` on node {} answered neither yes nor no", self.target.node),
                        )),
                    }
                }
                Some(exit) => Err(self.failed(&command, &exit)),
                None => unreachable!("losses are errors unless tolerated"),
            },
            NodeOp::PowerOff => {
                let outcome = self.run_command(&command, true).await?;
                // the node is going down: never reuse this connection
                *self.conn.lock().await = None;
                match outcome {
                    None => {
                        tracing::debug!(node = %self.target.node, "connection dropped during poweroff, as expected");
                        Ok(NodeOpOutput::Done)
                    }
                    Some(exit) if exit.status == Some(0) => Ok(NodeOpOutput::Done),
                    // the system killing the session on its way down
                    Some(exit) if exit.status.is_none() => Ok(NodeOpOutput::Done),
                    Some(exit) => Err(self.failed(&command, &exit)),
                }
            }
            NodeOp::PowerOn | NodeOp::PowerState | NodeOp::ForceOff => unreachable!("command_line refused it"),
        }
    }

    /// On a connection of its own (never the one runs share, and never recording a host key):
    /// the node reached, its host key as known_hosts lists it, the login accepted, and with
    /// `sudo`, `sudo -n -l` allowing each privileged command `ops` send, exactly as sent.
    async fn preflight(&self, ops: &[NodeOp]) -> Vec<Check> {
        let mut checks = Vec::new();
        let (conn, host_key) = match session::probe(&self.target).await {
            Ok(c) => c,
            Err((stage, e)) => {
                let failed = Check::failed("", format!("{}: {}", e.kind, e.detail()));
                let not_reached = |name: &str| Check::skipped(name, "not checked: the node was not reached");
                let stages = match stage {
                    session::Stage::Reach => {
                        [Check { name: "reachable".into(), ..failed }, not_reached("host_key"), not_reached("login")]
                    }
                    session::Stage::HostKey => [
                        Check::ok("reachable", "ssh answers"),
                        Check { name: "host_key".into(), ..failed },
                        Check::skipped("login", "not checked: the host key was refused"),
                    ],
                    session::Stage::Login => [
                        Check::ok("reachable", "ssh answers"),
                        Check::ok("host_key", "as known_hosts lists it"),
                        Check { name: "login".into(), ..failed },
                    ],
                };
                checks.extend(stages);
                if self.sudo {
                    checks.push(Check::skipped("sudo", "not checked: no login"));
                }
                return checks;
            }
        };
        checks.push(Check::ok("reachable", format!("ssh answers at {}", self.target.host)));
        checks.push(Check::ok("host_key", host_key));
        checks.push(Check::ok("login", format!("user {} logged in with its key", self.target.user)));
        if self.sudo {
            let mut commands = Vec::new();
            let mut problems = Vec::new();
            for op in ops {
                match self.remote_command(op) {
                    Ok(Some(c)) if c.privileged && !commands.contains(&c.line) => commands.push(c.line),
                    Ok(_) => {}
                    Err(e) => problems.push(e.detail()),
                }
            }
            let check = match (problems.is_empty(), commands.is_empty()) {
                (false, _) => Check::failed("sudo", problems.join("; ")),
                (true, true) => Check::ok("sudo", "the plans run nothing here through sudo"),
                (true, false) => match self.sudo_allows(&conn, &commands).await {
                    Ok(note) => Check::ok("sudo", note),
                    Err(why) => Check::failed("sudo", why),
                },
            };
            checks.push(check);
        }
        let _ = conn.disconnect(russh::Disconnect::ByApplication, "preflight done", "").await;
        checks
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn unit_names_that_could_reach_a_shell_are_refused() {
        for ok in ["k3s", "k3s-agent", "k3s-agent.service", "getty@tty1.service", "a:b_c"] {
            assert!(valid_unit_name(ok), "{ok}");
        }
        for bad in ["", "-k3s", "k3s; reboot", "k3s agent", "$(id)", "k3s`x`", "a|b", "a\nb", "k3s&", "a/b", "ü"] {
            assert!(!valid_unit_name(bad), "{bad:?}");
        }
    }

    fn cfg(yaml: &str) -> SshSystemdConfig {
        serde_json::from_value(serde_json::from_str::<serde_json::Value>(yaml).unwrap()).unwrap()
    }

    #[test]
    fn defaults_and_validation() {
        let c = cfg(r#"{"user":"hecate","identity_file":"/k","known_hosts":"/kh"}"#);
        assert_eq!(c.port, 22);
        assert!(!c.accept_new_host_keys && c.sudo);
        assert_eq!(*c.connect_timeout, Duration::from_secs(10));
        assert_eq!(*c.command_timeout, Duration::from_secs(60));
        assert_eq!(c.poweroff_command, "systemctl poweroff");
        assert!(c.validate().is_empty(), "{:?}", c.validate());

        let bad = cfg(r#"{"user":"-x y","identity_file":"key","known_hosts":"","port":0,"connect_timeout":"0s",
                "command_timeout":"0s","poweroff_command":"sudo poweroff"}"#);
        let p = bad.validate().join("\n");
        for want in [
            "user:",
            "identity_file: `key` must be an absolute path",
            "known_hosts: must not be empty",
            "port:",
            "connect_timeout:",
            "command_timeout:",
            "drop the leading sudo",
        ] {
            assert!(p.contains(want), "{want} missing from:\n{p}");
        }
        assert!(
            cfg(r#"{"user":"u","identity_file":"/k","known_hosts":"/kh","poweroff_command":" "}"#)
                .validate()
                .iter()
                .any(|m| m.contains("poweroff_command: must not be empty"))
        );
    }
}
