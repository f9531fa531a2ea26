//! `ipmi`: a machine's power through its BMC over IPMI 2.0 LAN (RMCP+), driving `ipmitool -I
//! lanplus`.
//!
//! ipmitool is the mature client here (the pure-Rust `ipmi` crate never raises the session
//! privilege, so chassis control fails with completion code 0xD4). The password goes to ipmitool
//! as a file (`-f`), never on its command line, where `ps` would show it. Off is `chassis power
//! soft` (the ACPI power button), then `chassis power off` if the machine is still on after
//! `soft_timeout`; on is `chassis power on`; nothing is sent when the machine is already there.
//! Each action is checked by reading `chassis power status` until it shows.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::{MIN_TIMEOUT, ONE_STEP, ONE_TRY};
use hecate_core::node::{Capability, NodeController, NodeControllerConfig, NodeInfo, NodeOp, NodeOpOutput, PowerState};
use hecate_core::{BackendError, BuildContext, ErrorKind};
use serde::{Deserialize, Serialize};

use super::bmc::{self, BMC_CAPABILITIES, BmcPower, PowerDriver, Timing};

/// The RMCP+ port.
pub const DEFAULT_PORT: u16 = 623;
/// IPMI 2.0 passwords are at most 20 bytes; ipmitool silently cuts longer ones from a file.
const MAX_PASSWORD_BYTES: usize = 20;

/// The session privilege asked for (`ipmitool -L`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IpmiPrivilege {
    /// Enough for chassis power control: for a user that has no more.
    Operator,
    /// ipmitool's default.
    #[default]
    Administrator,
}

/// A machine whose BMC speaks IPMI 2.0 over LAN.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IpmiConfig {
    /// The BMC's host name or address.
    pub host: String,
    /// The BMC's UDP port.
    #[serde(default = "default_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
    /// The BMC user; chassis control needs operator or administrator privilege.
    pub username: String,
    /// A file holding the user's password on one line (at most 20 bytes, the IPMI limit), given
    /// to ipmitool with `-f` so it never shows on a command line. Checked when Hecate starts (a
    /// missing file stops the start, not `config check`); keep it readable by Hecate only (mode 0600).
    pub password_file: PathBuf,
    /// The session privilege to ask for: `administrator` (ipmitool's default) or `operator`.
    #[serde(default)]
    pub privilege: IpmiPrivilege,
    /// The RMCP+ cipher suite (`ipmitool -C`): 3 (HMAC-SHA1, AES-128; offered by nearly every BMC,
    /// and the one OpenIPMI's simulator answers) or 17 (HMAC-SHA256, AES-128; newer BMCs).
    #[serde(default = "default_cipher_suite")]
    #[schemars(range(max = 17))]
    pub cipher_suite: u8,
    /// Time limit of each ipmitool run (a BMC that does not answer is given up on after it). 1ms
    /// to 10m; default 10s.
    #[serde(default = "bmc::default_timeout")]
    pub timeout: HumanDuration,
    /// How long the OS gets to shut down after `chassis power soft` before `chassis power off`
    /// cuts the power; `0s` cuts it at once. Minutes by default, not seconds: a node cut while it
    /// still writes loses what it had not flushed. `soft_timeout` + `verify_timeout` must fit
    /// within `shutdown.power_off_timeout` (10m by default), which bounds the whole power off. At
    /// most 1h; default 5m.
    #[serde(default = "bmc::default_soft_off_timeout")]
    pub soft_timeout: HumanDuration,
    /// How long an accepted power off or on gets to show in `chassis power status` before the
    /// controller reports the BMC as not acting (and the node's next controller is tried). 1ms
    /// to 1h; default 15s.
    #[serde(default = "bmc::default_verify_timeout")]
    pub verify_timeout: HumanDuration,
    /// How often the power status is read while waiting for a change. 1ms to 10m; default 1s.
    #[serde(default = "bmc::default_poll_interval")]
    pub poll_interval: HumanDuration,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}

fn default_cipher_suite() -> u8 {
    3
}

#[typetag::serde(name = "ipmi")]
impl NodeControllerConfig for IpmiConfig {
    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !bmc::plausible_host(&self.host) {
            p.push(format!("`host` {:?} is not a host name or address", self.host));
        }
        if self.port == 0 {
            p.push("`port` must be from 1 to 65535".into());
        }
        if self.username.is_empty() || self.username.chars().any(char::is_control) {
            p.push("`username` must be non-empty, without control characters".into());
        }
        if self.password_file.as_os_str().is_empty() {
            p.push("`password_file` must not be empty".into());
        }
        if self.cipher_suite > 17 {
            p.push(format!(
                "`cipher_suite` {} is not an ipmi 2.0 cipher suite (0 to 17; usually 3 or 17)",
                self.cipher_suite
            ));
        }
        for (key, value, min, max) in [
            ("timeout", self.timeout, MIN_TIMEOUT, ONE_TRY),
            ("soft_timeout", self.soft_timeout, HumanDuration::ZERO, ONE_STEP),
            ("verify_timeout", self.verify_timeout, MIN_TIMEOUT, ONE_STEP),
            ("poll_interval", self.poll_interval, MIN_TIMEOUT, ONE_TRY),
        ] {
            if let Some(m) = value.out_of_range(min, max) {
                p.push(format!("`{key}` {m}"));
            }
        }
        p
    }

    fn warnings(&self) -> Vec<String> {
        if self.cipher_suite == 0 {
            vec!["`cipher_suite: 0` authenticates nothing: anyone on the network can send this bmc commands".into()]
        } else {
            Vec::new()
        }
    }

    fn build(&self, node: &NodeInfo, _ctx: &BuildContext) -> Result<Box<dyn NodeController>, BackendError> {
        Ok(Box::new(IpmiNode::new(node, self)?))
    }
}

hecate_core::register_backend!(
    NodeController,
    "ipmi",
    "bmc power over ipmi 2.0 lan (ipmitool lanplus): state, on, soft then hard off",
    IpmiConfig
);

/// The runtime side of [`IpmiConfig`].
#[derive(Debug)]
pub struct IpmiNode {
    node: String,
    /// `host:port`, for messages.
    target: String,
    ipmitool: PathBuf,
    /// Everything before the command: interface, host, port, user, password file, cipher suite.
    session_args: Vec<OsString>,
    timeout: Duration,
    timing: Timing,
}

impl IpmiNode {
    fn new(node: &NodeInfo, cfg: &IpmiConfig) -> Result<Self, BackendError> {
        check_password_file(&cfg.password_file)?;
        let ipmitool = find_on_path("ipmitool").ok_or_else(|| {
            BackendError::new(ErrorKind::Config, "ipmitool is not on PATH; install the ipmitool package")
        })?;
        let privilege = match cfg.privilege {
            IpmiPrivilege::Operator => "OPERATOR",
            IpmiPrivilege::Administrator => "ADMINISTRATOR",
        };
        let mut session_args: Vec<OsString> =
            ["-I", "lanplus", "-H", &cfg.host, "-p", &cfg.port.to_string()].iter().map(OsString::from).collect();
        session_args
            .extend(["-U", &cfg.username, "-L", privilege, "-C", &cfg.cipher_suite.to_string()].map(OsString::from));
        session_args.push("-f".into());
        session_args.push(cfg.password_file.clone().into_os_string());
        // -v: without it ipmitool says "unable to establish session" for both a wrong password
        // and a silent BMC; with it the reason (RAKP 2 HMAC invalid, ...) is on stderr
        session_args.push("-v".into());
        let target = if cfg.host.contains(':') {
            format!("[{}]:{}", cfg.host, cfg.port)
        } else {
            format!("{}:{}", cfg.host, cfg.port)
        };
        Ok(Self {
            node: node.name.clone(),
            target,
            ipmitool,
            session_args,
            timeout: *cfg.timeout,
            timing: Timing { soft: *cfg.soft_timeout, verify: *cfg.verify_timeout, poll: *cfg.poll_interval },
        })
    }

    /// Runs `ipmitool <session> <args>` and returns its stdout, or an error classified from its
    /// stderr. The process is killed when `timeout` passes or the caller gives up.
    async fn ipmitool(&self, args: &[&str]) -> Result<String, BackendError> {
        let what = format!("ipmitool {} at {}", args.join(" "), self.target);
        let child = tokio::process::Command::new(&self.ipmitool)
            .args(&self.session_args)
            .args(args)
            .env("LC_ALL", "C")
            // ipmitool prompts for a password it cannot read from the file: never let it wait
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                BackendError::with_source(ErrorKind::Config, format!("cannot run {}", self.ipmitool.display()), e)
            })?;
        let out = match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                return Err(BackendError::with_source(ErrorKind::Failed, format!("{what}: lost ipmitool"), e));
            }
            Err(_) => {
                return Err(BackendError::new(
                    ErrorKind::Timeout,
                    format!("{what}: no answer within {}", humantime::format_duration(self.timeout)),
                ));
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let (kind, why) = classify(&stderr);
        let said = significant_lines(&stderr);
        let said = if said.is_empty() { stdout.trim().to_owned() } else { said };
        // What the BMC (through ipmitool) said: cut and cleaned before it reaches a message.
        let said = hecate_core::text::untrusted(&said, hecate_core::text::PEER_TEXT_CHARS, &[]);
        Err(BackendError::new(kind, format!("{what}: {why} ({}): {said}", out.status)))
    }

    async fn chassis_power(&self, action: &str) -> Result<(), BackendError> {
        tracing::info!(node = %self.node, bmc = %self.target, action, "ipmi chassis power");
        self.ipmitool(&["chassis", "power", action]).await.map(drop)
    }
}

#[async_trait]
impl PowerDriver for IpmiNode {
    async fn read(&self) -> Result<BmcPower, BackendError> {
        let out = self.ipmitool(&["chassis", "power", "status"]).await?;
        parse_power_status(&out).ok_or_else(|| {
            BackendError::new(
                ErrorKind::Protocol,
                format!(
                    "ipmitool chassis power status at {}: unexpected answer {:?}",
                    self.target,
                    hecate_core::text::cut(out.trim(), hecate_core::text::PEER_TEXT_CHARS)
                ),
            )
        })
    }

    async fn soft_off(&self) -> Result<(), BackendError> {
        self.chassis_power("soft").await
    }

    async fn hard_off(&self) -> Result<(), BackendError> {
        self.chassis_power("off").await
    }

    async fn on(&self) -> Result<(), BackendError> {
        self.chassis_power("on").await
    }
}

#[async_trait]
impl NodeController for IpmiNode {
    fn kind(&self) -> &str {
        "ipmi"
    }

    fn capabilities(&self) -> &[Capability] {
        &BMC_CAPABILITIES
    }

    async fn run(&self, op: &NodeOp) -> Result<NodeOpOutput, BackendError> {
        match op {
            NodeOp::PowerState => Ok(NodeOpOutput::Power(self.read().await?.state())),
            NodeOp::PowerOn => bmc::power_on(self, self.timing).await.map(|()| NodeOpOutput::Done),
            // returns only once the bmc shows the machine off: confirmed
            NodeOp::PowerOff => bmc::power_off(self, self.timing).await.map(|()| NodeOpOutput::Power(PowerState::Off)),
            NodeOp::ForceOff => bmc::force_off(self, self.timing).await.map(|()| NodeOpOutput::Power(PowerState::Off)),
            // not advertised (see BMC_CAPABILITIES), but answers if asked: the BMC answers
            NodeOp::Probe => self.read().await.map(|_| NodeOpOutput::Done),
            other => Err(BackendError::unsupported(format!("ipmi cannot {other}"))),
        }
    }
    async fn preflight(&self, _ops: &[NodeOp]) -> Vec<hecate_core::preflight::Check> {
        bmc::preflight(self, &format!("the ipmi bmc at {}", self.target)).await
    }
}

/// `Chassis Power is on|off` → the state.
fn parse_power_status(out: &str) -> Option<BmcPower> {
    out.lines().find_map(|l| match l.trim().strip_prefix("Chassis Power is ")? {
        "on" => Some(BmcPower::On),
        "off" => Some(BmcPower::Off),
        _ => None,
    })
}

/// The kind of an ipmitool failure and a short reason, from its (verbose) stderr.
fn classify(stderr: &str) -> (ErrorKind, &'static str) {
    let has = |needle: &str| stderr.contains(needle);
    if has("HMAC is invalid") || has("unauthorized name") || has("Invalid user name") {
        (ErrorKind::Auth, "the bmc refused the user or password")
    } else if has("nsufficient privilege") || has("requested privilege level") {
        (ErrorKind::Auth, "the user lacks the privilege")
    } else if has("invalid authentication algorithm")
        || has("invalid integrity algorithm")
        || has("invalid confidentiality algorithm")
    {
        (ErrorKind::Protocol, "the bmc does not offer this cipher_suite")
    } else if has("Unable to read password") || has("Unable to open password file") {
        (ErrorKind::Config, "ipmitool cannot read password_file")
    } else if has("Unable to establish") || has("No response") || has("Get Auth Capabilities error") {
        (ErrorKind::Unreachable, "no session with the bmc")
    } else {
        (ErrorKind::Failed, "the bmc refused")
    }
}

/// stderr without verbose mode's chatter, on one line.
fn significant_lines(stderr: &str) -> String {
    const CHATTER: [&str; 5] = [
        "Loading IANA PEN Registry",
        "Running Get VSO Capabilities",
        "Invalid completion code received: Invalid command",
        "Discovered IPMB address",
        "Password:",
    ];
    let lines: Vec<&str> =
        stderr.lines().map(str::trim).filter(|l| !l.is_empty() && !CHATTER.iter().any(|c| l.starts_with(c))).collect();
    let mut joined = lines.join("; ");
    if joined.len() > 400 {
        let cut = (0..=400).rev().find(|&i| joined.is_char_boundary(i)).unwrap_or(0);
        joined.truncate(cut);
        joined.push('…');
    }
    joined
}

/// The password file must be readable and hold one line of at most 20 bytes; its content is
/// only checked here, ipmitool reads it itself.
fn check_password_file(file: &Path) -> Result<(), BackendError> {
    let password = bmc::read_secret_file(file, "password_file")?;
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(BackendError::new(
            ErrorKind::Config,
            format!(
                "password_file {}: ipmi 2.0 passwords are at most {MAX_PASSWORD_BYTES} bytes (ipmitool would cut it)",
                file.display()
            ),
        ));
    }
    Ok(())
}

/// The first executable file named `name` in `$PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn power_status_lines() {
        assert_eq!(parse_power_status("Chassis Power is on\n"), Some(BmcPower::On));
        assert_eq!(parse_power_status("Chassis Power is off\n"), Some(BmcPower::Off));
        assert_eq!(parse_power_status("Chassis Power Control: Up/On\n"), None);
    }

    #[test]
    fn stderr_classification() {
        let wrong = "Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n";
        assert_eq!(classify(wrong).0, ErrorKind::Auth);
        assert_eq!(
            significant_lines(wrong),
            "> RAKP 2 HMAC is invalid; Error: Unable to establish IPMI v2 / RMCP+ session"
        );
        let silent = "Get Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\n\
                      Error: Unable to establish IPMI v2 / RMCP+ session\n";
        assert_eq!(classify(silent).0, ErrorKind::Unreachable);
        let suite = "Error in open session response message : invalid authentication algorithm\n";
        assert_eq!(classify(suite).0, ErrorKind::Protocol);
        assert_eq!(
            classify("Set Chassis Power Control to Cycle failed: Command not supported in present state").0,
            ErrorKind::Failed
        );
    }

    #[test]
    fn validation() {
        let ok: IpmiConfig =
            serde_saphyr::from_str("host: 10.10.1.10\nusername: admin\npassword_file: /etc/hecate/bmc.pass\n")
                .expect("parse");
        assert!(ok.validate().is_empty(), "{:?}", ok.validate());
        assert_eq!((ok.port, ok.cipher_suite, ok.privilege), (623, 3, IpmiPrivilege::Administrator));
        let bad: IpmiConfig = serde_saphyr::from_str(
            "host: '-oProxyCommand'\nport: 0\nusername: ''\npassword_file: /x\ncipher_suite: 42\npoll_interval: 0s\n",
        )
        .expect("parse");
        assert_eq!(bad.validate().len(), 5, "{:?}", bad.validate());
        let open: IpmiConfig =
            serde_saphyr::from_str("host: h\nusername: u\npassword_file: /x\ncipher_suite: 0\n").expect("parse");
        assert_eq!(open.warnings().len(), 1);
        assert!(serde_saphyr::from_str::<IpmiConfig>("host: h\nusername: u\npassword: x\n").is_err());
    }

    #[test]
    fn password_file_checks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p");
        std::fs::write(&file, "password\n").expect("write");
        check_password_file(&file).expect("fine");
        std::fs::write(&file, "a-password-longer-than-twenty-bytes\n").expect("write");
        let e = check_password_file(&file).expect_err("too long");
        assert!(e.message.contains("20 bytes") && !e.message.contains("longer"), "{e}");
        assert_eq!(check_password_file(&dir.path().join("none")).expect_err("missing").kind, ErrorKind::Config);
    }
}
