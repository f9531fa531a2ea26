//! What a power source reports, and the trait every power backend implements.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::BuildContext;
use crate::error::BackendError;

/// One NUT `ups.status` flag. Unknown flags are kept verbatim so nothing a UPS says is lost.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", from = "String")]
pub enum StatusFlag {
    /// On line (mains power).
    Online,
    /// On battery.
    OnBattery,
    /// Low battery (the UPS's own judgement).
    LowBattery,
    /// Forced shutdown requested (by the primary upsmon or an operator).
    ForcedShutdown,
    /// Charging.
    Charging,
    /// Discharging.
    Discharging,
    /// Replace battery.
    ReplaceBattery,
    /// On bypass.
    Bypass,
    /// Overloaded.
    Overload,
    /// Calibrating.
    Calibrating,
    /// Output off.
    Off,
    /// Any other flag, as the UPS spelled it.
    Other(String),
}

/// Longest unknown status flag kept.
const MAX_OTHER_FLAG_CHARS: usize = 16;

/// Most unknown flags kept of one `ups.status` (real ones have two to five flags in all).
const MAX_OTHER_FLAGS: usize = 8;

impl StatusFlag {
    /// Parses one whitespace-free NUT status word.
    pub fn parse(word: &str) -> Self {
        match word {
            "OL" => Self::Online,
            "OB" => Self::OnBattery,
            "LB" => Self::LowBattery,
            "FSD" => Self::ForcedShutdown,
            "CHRG" => Self::Charging,
            "DISCHRG" => Self::Discharging,
            "RB" => Self::ReplaceBattery,
            "BYPASS" => Self::Bypass,
            "OVER" => Self::Overload,
            "CAL" => Self::Calibrating,
            "OFF" => Self::Off,
            // The UPS's own spelling reaches status and logs: cleaned and short (real flags
            // are a few letters; `TRIM`, `BOOST`, `HB`, ...).
            other => Self::Other(crate::text::clean(other, MAX_OTHER_FLAG_CHARS)),
        }
    }

    /// The NUT spelling of this flag.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Online => "OL",
            Self::OnBattery => "OB",
            Self::LowBattery => "LB",
            Self::ForcedShutdown => "FSD",
            Self::Charging => "CHRG",
            Self::Discharging => "DISCHRG",
            Self::ReplaceBattery => "RB",
            Self::Bypass => "BYPASS",
            Self::Overload => "OVER",
            Self::Calibrating => "CAL",
            Self::Off => "OFF",
            Self::Other(s) => s,
        }
    }
}

impl From<String> for StatusFlag {
    fn from(s: String) -> Self {
        Self::parse(&s)
    }
}

impl From<StatusFlag> for String {
    fn from(f: StatusFlag) -> Self {
        f.as_str().to_string()
    }
}

/// The set of flags in one `ups.status` value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpsStatus(pub BTreeSet<StatusFlag>);

impl UpsStatus {
    /// Parses a NUT status string such as `"OB DISCHRG LB"`.
    pub fn parse(s: &str) -> Self {
        let mut others = 0;
        Self(
            s.split_whitespace()
                .map(StatusFlag::parse)
                // Every known flag counts; unknown ones are kept up to a few, so a UPS cannot
                // fill status and logs with them (nor hide `OB` behind them).
                .filter(|f| match f {
                    StatusFlag::Other(o) => {
                        others += 1;
                        !o.is_empty() && others <= MAX_OTHER_FLAGS
                    }
                    _ => true,
                })
                .collect(),
        )
    }

    /// Whether the flag is present.
    pub fn has(&self, flag: &StatusFlag) -> bool {
        self.0.contains(flag)
    }

    /// On battery: `OB` present. A UPS reporting both `OL` and `OB` is treated as on battery.
    pub fn on_battery(&self) -> bool {
        self.has(&StatusFlag::OnBattery)
    }

    /// On mains: `OL` present and `OB` absent.
    pub fn online(&self) -> bool {
        self.has(&StatusFlag::Online) && !self.on_battery()
    }

    /// No flags at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for UpsStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = self.0.iter().map(StatusFlag::as_str).collect();
        f.write_str(&words.join(" "))
    }
}

/// One poll's worth of UPS data. Every value is optional: real UPSes omit some.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PowerReading {
    /// `ups.status` flags.
    pub status: UpsStatus,
    /// `battery.charge`, percent 0–100.
    pub charge_pct: Option<f64>,
    /// `battery.runtime`, seconds, as the firmware estimates it.
    pub runtime_s: Option<f64>,
    /// `ups.load`, percent of nominal.
    pub load_pct: Option<f64>,
    /// `input.voltage`, volts.
    pub input_voltage: Option<f64>,
    /// `output.voltage`, volts.
    pub output_voltage: Option<f64>,
    /// `battery.voltage`, volts.
    pub battery_voltage: Option<f64>,
}

/// The outcome of one poll, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Sample {
    /// The UPS answered.
    Reading(PowerReading),
    /// No data this poll: connection lost, `DATA-STALE`, `DRIVER-NOT-CONNECTED`, a timeout.
    /// Never to be read as "online".
    NoData {
        /// Why there is no data.
        reason: String,
    },
}

/// How this host is attached to a UPS that other machines may share, as NUT counts its clients
/// (`LOGIN`, and `PRIMARY` for the one that may raise `FSD` and cut the power).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Attachment {
    /// Not counted: the UPS's other clients do not wait for this host.
    #[default]
    None,
    /// Counted as a client: the primary waits for this host to leave before it cuts the power.
    Secondary,
    /// Counted, and in charge: tells the other clients to shut down (`FSD`) and waits for them
    /// before cutting the power.
    Primary,
}

impl Attachment {
    /// `none`, `secondary` or `primary`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Secondary => "secondary",
            Self::Primary => "primary",
        }
    }
}

impl fmt::Display for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Configuration of a power source; implementations are selected in YAML by `type:`.
#[typetag::serde(tag = "type")]
pub trait PowerSourceConfig: fmt::Debug + Send + Sync {
    /// The source's name, unique within the config (used in logs, metrics and status).
    fn name(&self) -> &str;
    /// Checks the backend's own settings, returning every problem found.
    fn validate(&self) -> Vec<String> {
        Vec::new()
    }
    /// Builds the runtime object. Must not block on the network: connections are made lazily.
    fn build(&self, ctx: &BuildContext) -> Result<Box<dyn PowerSource>, BackendError>;
    /// How this host will attach to the UPS (the plan adds the steps that go with it).
    fn attachment(&self) -> Attachment {
        Attachment::None
    }
}

/// A live power source.
#[async_trait]
pub trait PowerSource: Send + Sync + fmt::Debug {
    /// The configured name.
    fn name(&self) -> &str;
    /// Reads the current values. Errors mean "no data", never "online".
    async fn read(&mut self) -> Result<PowerReading, BackendError>;
    /// Sends an instant command such as `load.off.delay` with an optional parameter.
    async fn instant_command(&mut self, command: &str, param: Option<&str>) -> Result<(), BackendError>;
    /// How this host is attached to the UPS.
    fn attachment(&self) -> Attachment {
        Attachment::None
    }
    /// Tells the UPS's other clients to shut down now (NUT: `FSD`), for a primary. Backends
    /// without other clients do not support it.
    async fn raise_fsd(&mut self) -> Result<(), BackendError> {
        Err(BackendError::new(crate::ErrorKind::Unsupported, "this power source has no other clients to tell"))
    }
    /// The UPS's other clients still attached (NUT: `NUMLOGINS` less this host's own login, and
    /// `LIST CLIENT`).
    async fn other_clients(&mut self) -> Result<OtherClients, BackendError> {
        Err(BackendError::new(crate::ErrorKind::Unsupported, "this power source cannot tell its other clients"))
    }
    /// Tells the UPS to cut its load after a delay. `command` is a command's name, or `None` to
    /// take what the UPS offers; `delay` is how long it should wait (`None`: its own). Returns
    /// what was sent and the delay the UPS will really use, where known. The default sends
    /// `command` (`shutdown.return` when `None`) with the delay's seconds as its parameter.
    async fn kill_power(&mut self, command: Option<&str>, delay: Option<Duration>) -> Result<KillPower, BackendError> {
        let command = command.unwrap_or("shutdown.return").to_string();
        let param = delay.map(|d| d.as_secs().to_string());
        self.instant_command(&command, param.as_deref()).await?;
        Ok(KillPower { command, param, delay_s: delay.map(|d| d.as_secs()), note: String::new() })
    }
    /// Stops counting as one of the UPS's clients (NUT: `LOGOUT`), so that its primary may cut
    /// the power, and does not attach again until the UPS is back on mains. Returns what it did.
    async fn detach(&mut self) -> Result<String, BackendError> {
        Ok("not attached".into())
    }
    /// Checks, without changing anything, that the source works as configured (for NUT: logged
    /// in as the UPS's primary or secondary). Returns a future that owns what it needs: the
    /// source's lock, which the daemon's poller also takes, is held only while this is called,
    /// never while the checks run. The default says it cannot be checked.
    fn preflight(&self) -> crate::preflight::PreflightFuture {
        Box::pin(std::future::ready(crate::preflight::not_checkable("this power source")))
    }
}

/// What a UPS was told to cut its load.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillPower {
    /// The command sent.
    pub command: String,
    /// Its parameter.
    pub param: Option<String>,
    /// The delay the UPS will use before cutting, seconds, where known.
    pub delay_s: Option<u64>,
    /// How that delay came about (set, kept, the driver's own), for the run's report.
    pub note: String,
}

/// The other clients of a UPS that are still attached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherClients {
    /// How many.
    pub count: u32,
    /// Their addresses, where the UPS's server tells them (some may be missing).
    pub addresses: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_status_cannot_hide_ob_nor_carry_escapes() {
        let junk: Vec<String> = (0..100).map(|i| format!("X{i}\u{1b}[2J")).collect();
        let st = UpsStatus::parse(&format!("{} OB LB", junk.join(" ")));
        assert!(st.on_battery() && st.has(&StatusFlag::LowBattery), "{st}");
        assert_eq!(st.0.len(), 2 + MAX_OTHER_FLAGS, "{st}");
        assert!(!st.to_string().chars().any(char::is_control), "{st}");
        let long = UpsStatus::parse(&format!("OL {}", "Z".repeat(1000)));
        assert!(long.to_string().chars().count() < 3 + MAX_OTHER_FLAG_CHARS + 1, "{long}");
    }
}
