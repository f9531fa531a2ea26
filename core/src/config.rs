//! The YAML configuration: model, loading with file:line errors, and validation that collects
//! every problem before Hecate refuses to start.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::budget::BudgetConfig;
use crate::cluster::{ClusterApiConfig, DrainFallback};
use crate::duration::limits::{MAX_CONCURRENCY, MIN_TIMEOUT, ONE_DAY, ONE_STEP, ONE_TRY};
use crate::duration::{HumanDuration, count_out_of_range};
use crate::gitops::GitOpsConfig;
use crate::node::{NodeControllerConfig, NodeRole};
use crate::notify::NotifierConfig;
use crate::policy::PolicyConfig;
use crate::power::PowerSourceConfig;

/// What this Hecate instance is in a multi-UPS setup, with the settings of that role.
///
/// ```yaml
/// role: standalone            # the default
/// role:
///   coordinator:
///     listen: 10.10.0.5:9561
///     forwarders: [ { name: tethys, key_file: /etc/hecate/forwarders/tethys.key } ]
/// role:
///   forwarder: { coordinator_url: https://10.10.0.5:9561, key_file: /etc/hecate/forwarding.key }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Watches its UPS and runs the cluster's shutdown itself.
    #[default]
    Standalone,
    /// Runs the cluster's shutdown and accepts triggers forwarded by other instances.
    Coordinator(CoordinatorConfig),
    /// Watches its own UPS and forwards triggers to the coordinator, acting locally if that fails.
    Forwarder(ForwarderConfig),
}

impl Role {
    /// `standalone`, `coordinator` or `forwarder`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Coordinator(_) => "coordinator",
            Self::Forwarder(_) => "forwarder",
        }
    }
}

/// A coordinator: accepts forwarded triggers and clears on `listen` (`POST /v1/trigger`,
/// `/v1/clear`) and shuts the whole cluster down.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    /// The address to accept forwarded triggers on (e.g. `10.10.0.5:9561`): one the forwarders
    /// reach, not `0.0.0.0` unless firewalled.
    pub listen: SocketAddr,
    /// The forwarders allowed to send triggers and clears, each by name (its `host`) with its own
    /// secret. A request is accepted only from a name listed here, signed with that name's key;
    /// anything else is refused before it is stored. At most 64.
    pub forwarders: Vec<ForwarderKey>,
    /// How far a request's signed time may be from this host's clock, either way. Requests
    /// outside it are refused (the forwarder logs why and shows it in its status); a request seen
    /// once within it is refused when sent again. 1s to 10m; default 1m.
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew: HumanDuration,
    /// Serve the endpoint over TLS with this certificate chain (PEM)...
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// ... and this private key (PEM).
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
}

/// One forwarder a coordinator accepts.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwarderKey {
    /// The forwarder's name: its `host`. Letters, digits, `.`, `_` and `-`, at most 64.
    pub name: String,
    /// This forwarder's secret (one line, at least 16 characters; `openssl rand -hex 32`), the
    /// same file as the forwarder's own `key_file`. Requests are signed with it (HMAC-SHA256); it
    /// never crosses the network.
    pub key_file: PathBuf,
}

/// The longest forwarder name: it is a metric label and appears in logs and status.
pub const MAX_FORWARDER_NAME: usize = 64;

/// Most forwarders a coordinator lists: its waiting list, status and metric labels are bounded by
/// this list.
pub const MAX_FORWARDERS: usize = 64;

/// Whether `name` can be a forwarder's name: 1 to [`MAX_FORWARDER_NAME`] letters, digits, `.`,
/// `_` or `-` (it travels in a request header and becomes a metric label).
pub fn is_forwarder_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FORWARDER_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The shortest `role.coordinator.max_clock_skew`: clocks kept by NTP agree far better, but a
/// tighter window only refuses real forwarders for nothing.
pub const MIN_CLOCK_SKEW: HumanDuration = HumanDuration::from_secs(1);
/// The longest `role.coordinator.max_clock_skew`: every accepted request is remembered this long
/// (twice, as the window goes both ways), and a captured request stays replayable until then
/// against a coordinator that restarted.
pub const MAX_CLOCK_SKEW: HumanDuration = HumanDuration::from_secs(600);

fn default_max_clock_skew() -> HumanDuration {
    HumanDuration::from_secs(60)
}

/// A forwarder (a host on another UPS): sends its shutdown trigger to the coordinator, which
/// shuts the whole cluster down; if the coordinator cannot be reached within `timeout`, it runs
/// its own shutdown plan instead.
#[derive(Debug, Clone, PartialEq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwarderConfig {
    /// The coordinator's forwarding endpoint, `http(s)://HOST:PORT` (its `/v1/trigger` and
    /// `/v1/clear` are used).
    pub coordinator_url: String,
    /// This forwarder's own secret (one line, at least 16 characters; `openssl rand -hex 32`):
    /// the same file as its entry in the coordinator's `forwarders`, under this host's name.
    /// Requests are signed with it (HMAC-SHA256); it never crosses the network.
    pub key_file: PathBuf,
    /// How long to keep trying the coordinator before shutting down locally.
    #[serde(default = "default_forward_timeout")]
    pub timeout: HumanDuration,
    /// Trust only this CA (PEM) for an `https` coordinator_url; the system's roots when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// With `shutdown.power_off_self: true`: once the coordinator has taken the trigger, power
    /// this host off when this long has passed without its mains coming back. Longer than the
    /// coordinator needs for this host's own machines (if it stops any here), shorter than this
    /// host's UPS lasts. Absent: after a handover this host stays up until its mains return or
    /// its UPS runs out.
    #[serde(default)]
    pub power_off_self_after: Option<HumanDuration>,
}

/// The whole configuration file.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This host's name, used in logs, notifications and run records.
    pub host: String,
    /// What this instance is in a multi-UPS setup: `standalone` (the default), or
    /// `coordinator:`/`forwarder:` with that role's settings.
    #[serde(default)]
    pub role: Role,
    /// Where runs.json, the journal and the lock live.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The daemon's loop and endpoints.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// When to trigger a shutdown.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// How long a shutdown takes, learned from runs.json.
    #[serde(default)]
    pub budget: BudgetConfig,
    /// The UPSes this host watches. Selected by `type:` (`nut`, `simulated`, ...).
    pub power_sources: Vec<Box<dyn PowerSourceConfig>>,
    /// The Kubernetes API. Selected by `type:` (`kube`, `simulated`).
    #[serde(default)]
    pub cluster: Option<Box<dyn ClusterApiConfig>>,
    /// The GitOps bootstrap. Selected by `type:` (`flux_gitea`, `simulated`).
    #[serde(default)]
    pub gitops: Option<Box<dyn GitOpsConfig>>,
    /// The cluster's machines.
    #[serde(default)]
    pub nodes: Vec<NodeConfig>,
    /// Where events go. Selected by `type:` (`log`, `webhook`, ...).
    #[serde(default)]
    pub notifiers: Vec<Box<dyn NotifierConfig>>,
    /// How the shutdown plan is built.
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    /// How the startup plan is built.
    #[serde(default)]
    pub startup: StartupConfig,
    /// The daemon's checks of the shutdown and startup path (`hecate preflight` runs them on
    /// demand).
    #[serde(default)]
    pub preflight: PreflightConfig,
}

/// The daemon's preflight: every `interval`, while it watches (never during a run, nor once the
/// cluster is shut down), each part of the shutdown and startup path is checked without changing
/// anything (see `hecate preflight`). A check that starts failing is notified
/// (`preflight_failed`), and again when it passes (`preflight_recovered`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PreflightConfig {
    /// Run the checks in the daemon. Default true.
    pub enabled: bool,
    /// How often. The first run comes a minute after the daemon starts (or `interval` after,
    /// if shorter). 10s to 1 day; default 10m.
    pub interval: HumanDuration,
    /// The longest one backend's checks may take (a node's SSH login and sudo checks, the
    /// cluster's permission checks); one that runs out fails. 1s to 10m; default 30s.
    pub timeout: HumanDuration,
}

/// The shortest `preflight.interval`: every run logs in to every node and BMC, and asks the API
/// server a handful of questions; more often only loads them.
pub const MIN_PREFLIGHT_INTERVAL: HumanDuration = HumanDuration::from_secs(10);

impl Default for PreflightConfig {
    fn default() -> Self {
        Self { enabled: true, interval: HumanDuration::from_secs(600), timeout: HumanDuration::from_secs(30) }
    }
}

/// The shortest `daemon.poll_interval`: faster polling only loads the UPS's firmware and upsd.
pub const MIN_POLL_INTERVAL: HumanDuration = HumanDuration::from_millis(100);
/// The longest `daemon.poll_interval`: a slower poll sees an outage too late (the trigger waits
/// `debounce_polls` polls), and the daemon tells the watchdog it is alive only while polls arrive.
pub const MAX_POLL_INTERVAL: HumanDuration = HumanDuration::from_secs(60);

fn default_forward_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/hecate")
}

/// The daemon's loop.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// How often every power source is polled. 100ms to 1m; default 2s.
    pub poll_interval: HumanDuration,
    /// Where `/metrics` listens; `null` turns it off.
    pub metrics_listen: Option<SocketAddr>,
    /// Run the startup plan when mains power is back after a shutdown this daemon ran (for a
    /// coordinator that stays up through the outage). Boot-time startup is the bootstrap unit's job.
    pub startup_on_power_return: bool,
    /// How long mains must be back before that startup begins. At most 1 day; default 1m.
    pub power_return_settle: HumanDuration,
    /// How long a power source may give no data before it is reported lost (`comm_lost`, once;
    /// `comm_restored` when data is back), like upsmon's `DEADTIME`. It changes no decision: the
    /// policy never reads silence as online. 1s to 1h; default 15s.
    pub deadtime: HumanDuration,
    /// With `startup_on_power_return`: the startup waits, after the settle time, until every
    /// UPS that reports its charge holds at least this many percent, so that a second outage
    /// soon after does not find an empty battery under a running cluster (whose shutdown then
    /// has no time). 0 to 100; absent (the default): no wait.
    #[schemars(range(min = CHARGE_RANGE.0, max = CHARGE_RANGE.1))]
    pub restart_min_charge: Option<f64>,
}

/// `daemon.restart_min_charge`, percent: from, to (the schema and `validate` read it).
pub const CHARGE_RANGE: (f64, f64) = (0.0, 100.0);

/// The fewest steps at once in a stage (`concurrency`), the most being
/// [`MAX_CONCURRENCY`].
pub const MIN_CONCURRENCY: u64 = 1;

impl Default for DaemonConfig {
    fn default() -> Self {
        Self {
            poll_interval: HumanDuration::from_secs(2),
            metrics_listen: Some(SocketAddr::from(([0, 0, 0, 0], 9560))),
            startup_on_power_return: false,
            power_return_settle: HumanDuration::from_secs(60),
            deadtime: HumanDuration::from_secs(15),
            restart_min_charge: None,
        }
    }
}

/// One machine of the cluster.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The Kubernetes node name.
    pub name: String,
    /// The OS address (host name or IP) used by SSH.
    pub address: String,
    /// `server` runs `k3s`, `agent` runs `k3s-agent`.
    pub role: NodeRole,
    /// The first (init) server: stopped last at shutdown. (The startup starts every server at
    /// once: with embedded etcd none comes up without a quorum of the others.)
    #[serde(default)]
    pub init: bool,
    /// The systemd unit to start and stop; defaults to `k3s` for servers, `k3s-agent` for agents.
    #[serde(default)]
    pub unit: Option<String>,
    /// Power the machine off at the end of a shutdown.
    #[serde(default = "yes")]
    pub power_off: bool,
    /// Controllers in fallback order. Selected by `type:` (`ssh_systemd`, `redfish`, `ipmi`, `wol`, `simulated`).
    pub controllers: Vec<Box<dyn NodeControllerConfig>>,
}

impl NodeConfig {
    /// The k3s unit this node runs.
    pub fn unit_name(&self) -> &str {
        match (&self.unit, self.role) {
            (Some(u), _) => u,
            (None, NodeRole::Server) => "k3s",
            (None, NodeRole::Agent) => "k3s-agent",
        }
    }
}

fn yes() -> bool {
    true
}

/// How the shutdown plan is built.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Steps running at once within a stage. 1 to 1024; default 8.
    #[schemars(range(min = MIN_CONCURRENCY, max = MAX_CONCURRENCY))]
    pub concurrency: usize,
    /// Default time limit of one step. 1ms to 1h; default 2m.
    pub step_timeout: HumanDuration,
    /// Suspend GitOps first so it does not fight the shutdown.
    pub suspend_gitops: bool,
    /// Drain every node, servers included, before k3s is stopped on it: what a controller
    /// manages is evicted as `kubectl drain` does it, so it stops with its grace while the
    /// cluster still runs (every node is cordoned first, so nothing is rescheduled).
    pub drain: bool,
    /// How long one node's drain may take, waiting for the evicted pods to be gone included.
    /// At most 1h; default 1m 30s.
    pub drain_timeout: HumanDuration,
    /// How long an eviction a PodDisruptionBudget refuses is asked again before
    /// `drain_fallback`. With every node going down a budget may never be met, so this is short:
    /// a long wait would only be learned into the shutdown budget. At most 1h; default 30s.
    pub pdb_timeout: HumanDuration,
    /// What to do with pods a PodDisruptionBudget still protects after `pdb_timeout`: `leave`
    /// them (their containers get their grace when k3s stops on the node) or `delete` them.
    pub drain_fallback: DrainFallback,
    /// Evict pods no controller manages (`kubectl drain --force`). Off: they are kept, and
    /// exist again after the power cycle (evicted, they would be gone for good).
    pub evict_unmanaged: bool,
    /// Evict pods with `emptyDir` volumes (`kubectl drain --delete-emptydir-data`). Off: they
    /// are kept, and so is their data.
    pub delete_emptydir_data: bool,
    /// The longest termination grace period a pod gets, evicted or stopped on its node (its own
    /// `terminationGracePeriodSeconds` when shorter): a pod asking for an hour must not eat the
    /// battery. At most 1h; default 1m.
    pub max_pod_grace: HumanDuration,
    /// Time limit of one controller's try at an operation. 1ms to 1h; default 30s.
    pub controller_timeout: HumanDuration,
    /// Power nodes off at the end. A node counts as off only when confirmed: its BMC reads
    /// `Off`, or, for a node no controller can read the power of, SSH has stayed silent for
    /// `off_silence`.
    pub power_off_nodes: bool,
    /// The whole power-off of one node: the request, the wait for its OS, a forced off if it did
    /// not finish, and the confirmation. Longer than `soft_off_timeout` and a BMC's own
    /// `graceful_timeout`/`soft_timeout`. 1ms to 1h; default 10m.
    pub power_off_timeout: HumanDuration,
    /// How long a node whose OS was asked to power off (`systemctl poweroff` over SSH) gets to
    /// be seen off before a BMC in its chain cuts the power (or, with none, it is reported as not
    /// confirmed). Minutes, not seconds: a node cut while it still writes loses what it had not
    /// flushed. At most 1h; default 5m.
    pub soft_off_timeout: HumanDuration,
    /// For a node no controller can read the power of: how long SSH (the node's probe) must stay
    /// unanswered for the node to count as off. The OS stops sshd early in its shutdown, so this
    /// covers the rest of it. 1ms to 1h; default 30s.
    pub off_silence: HumanDuration,
    /// Finally power off the host Hecate runs on, after the run is recorded in runs.json (a
    /// coordinator on the same UPS as the cluster).
    pub power_off_self: bool,
    /// The program (and its arguments, no shell) that powers this host off.
    pub power_off_self_command: Vec<String>,
    /// Finally tell the UPS to cut its load after a delay (and return when mains come back). It
    /// is the plan's very last step: it goes out only once every node's power-off has ended,
    /// confirmed or timed out. Without it, `power_off_self` risks the power race: if mains come
    /// back while the cluster shuts down, halted machines stay off (`config check` warns).
    pub ups_off: Option<UpsOffConfig>,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            step_timeout: HumanDuration::from_secs(120),
            suspend_gitops: true,
            drain: true,
            drain_timeout: HumanDuration::from_secs(90),
            pdb_timeout: HumanDuration::from_secs(30),
            drain_fallback: DrainFallback::Leave,
            evict_unmanaged: false,
            delete_emptydir_data: false,
            max_pod_grace: HumanDuration::from_secs(60),
            controller_timeout: HumanDuration::from_secs(30),
            power_off_nodes: true,
            power_off_timeout: HumanDuration::from_secs(600),
            soft_off_timeout: HumanDuration::from_secs(300),
            off_silence: HumanDuration::from_secs(30),
            power_off_self: false,
            power_off_self_command: vec!["systemctl".into(), "poweroff".into()],
            ups_off: None,
        }
    }
}

/// Telling the UPS to switch its outlets off at the end of a shutdown.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsOffConfig {
    /// The power source (by name) to command.
    pub source: String,
    /// The NUT instant command that cuts the load. `auto` (the default) takes what the UPS
    /// offers (`LIST CMD`): `shutdown.return` (the load comes back when mains do), else
    /// `load.off.delay`; never `load.off`, which cuts at once. Or a command's name, used as is.
    #[serde(default = "default_ups_off_command")]
    pub command: String,
    /// How long after the command the UPS cuts its load: long enough for every machine on the
    /// UPS that is still going down, this host's own shutdown included with `power_off_self`.
    /// For `shutdown.return` (which usbhid-ups and most drivers run with `ups.delay.shutdown`,
    /// ups.conf's `offdelay`, ignoring any parameter) Hecate sets `ups.delay.shutdown` with
    /// `SET VAR` first (the upsd user needs `actions = SET`); for `load.off.delay` it is the
    /// command's parameter. Unset, or where the driver refuses the change: the driver's own
    /// (`offdelay`, 20s by default for usbhid-ups), and the step says which. At most 1h.
    #[serde(default)]
    pub delay: Option<HumanDuration>,
    /// Where Hecate is the primary of this UPS (`login: primary`), when its other NUT clients (a
    /// NAS's upsmon) are told to shut down with `FSD`: `before_ups_off` (the default: right
    /// before the load is cut, so a NAS serving the cluster's storage stays up until the cluster
    /// is down) or `at_trigger` (as the shutdown starts, giving them the whole shutdown's time).
    /// Either way Hecate then waits for them before cutting the load. upsd keeps `FSD` until it
    /// restarts (cutting the load restarts a upsd powered by this UPS).
    #[serde(default)]
    pub fsd: FsdMoment,
    /// Where Hecate is the primary: how long to wait, after `FSD`, for the other clients to log
    /// out (upsd's `NUMLOGINS` back to Hecate's own) before cutting the load anyway, like
    /// upsmon's `HOSTSYNC`. A upsmon logs out once it has started its host's shutdown, so the
    /// UPS's own delay must also cover their shutdown. 0s to 1h; default 15s.
    #[serde(default = "default_hostsync")]
    pub hostsync: HumanDuration,
}

/// When a primary tells the UPS's other clients to shut down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FsdMoment {
    /// Right before cutting the load.
    #[default]
    BeforeUpsOff,
    /// As the shutdown starts.
    AtTrigger,
}

fn default_hostsync() -> HumanDuration {
    HumanDuration::from_secs(15)
}

fn default_ups_off_command() -> String {
    UPS_OFF_AUTO.to_string()
}

/// `shutdown.ups_off.command` when the UPS's own offer decides.
pub const UPS_OFF_AUTO: &str = "auto";

/// Below this, a kill-power delay hardly covers a host's own shutdown (`config check` warns).
const MIN_SELF_SHUTDOWN_DELAY: std::time::Duration = std::time::Duration::from_secs(60);

/// How the startup plan is built.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct StartupConfig {
    /// Steps running at once within a stage. 1 to 1024; default 8.
    #[schemars(range(min = MIN_CONCURRENCY, max = MAX_CONCURRENCY))]
    pub concurrency: usize,
    /// Default time limit of one step. 1ms to 1h; default 2m.
    pub step_timeout: HumanDuration,
    /// Time limit of one controller's try at an operation. 1ms to 1h; default 30s.
    pub controller_timeout: HumanDuration,
    /// Power nodes on first.
    pub power_on_nodes: bool,
    /// How long to wait for each node to answer after power-on. 1ms to 1 day; default 5m.
    pub reachable_timeout: HumanDuration,
    /// How long to wait for the Kubernetes API. 1ms to 1 day; default 5m.
    pub api_timeout: HumanDuration,
    /// How long to wait for every node to be Ready. 1ms to 1 day; default 10m.
    pub nodes_ready_timeout: HumanDuration,
    /// How long to wait for GitOps to reconcile. 1ms to 1 day; default 10m.
    pub gitops_timeout: HumanDuration,
    /// Patch the GitOps source to this branch before reconciling.
    pub force_flux_branch: Option<String>,
    /// Off unless set: before k3s is started, wait until each node's clock is synchronized
    /// (`timedatectl show -p NTPSynchronized` says `yes`), at most this long per node. After a
    /// site-wide outage a node may boot with a wrong clock until NTP answers, and k3s (its
    /// certificates, etcd's leases) needs sane time. A node still unsynchronized when this runs
    /// out is reported and k3s is started anyway: a stuck clock must not keep the cluster down.
    /// 1ms to 1 day.
    pub clock_sync_timeout: Option<HumanDuration>,
}

impl Default for StartupConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            step_timeout: HumanDuration::from_secs(120),
            controller_timeout: HumanDuration::from_secs(30),
            power_on_nodes: true,
            reachable_timeout: HumanDuration::from_secs(300),
            api_timeout: HumanDuration::from_secs(300),
            nodes_ready_timeout: HumanDuration::from_secs(600),
            gitops_timeout: HumanDuration::from_secs(600),
            force_flux_branch: None,
            clock_sync_timeout: None,
        }
    }
}

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Line (1-based), when known.
    pub line: Option<u64>,
    /// Column (1-based), when known.
    pub column: Option<u64>,
    /// The field's path, such as `nodes[2].controllers[0].user`.
    pub field: String,
    /// What is wrong, lowercase.
    pub message: String,
}

/// A configuration Hecate refuses: every problem found, each with file, line and field.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// Every problem, in file order.
    pub problems: Vec<Problem>,
    /// The parser's source snippet for a syntax or type error.
    pub snippet: Option<String>,
    /// What was not checked and why (the parser could not go on past a problem).
    pub note: Option<String>,
}

impl ConfigError {
    /// Problems given by field path (`nodes[1].controllers[0]`), each placed at its line and
    /// column in `text`, in file order.
    pub fn located(text: &str, file: &Path, problems: Vec<(String, String)>) -> ConfigError {
        let index = crate::yaml_index::Index::build(text);
        let mut problems: Vec<Problem> = problems
            .into_iter()
            .map(|(field, message)| {
                let loc = index.as_ref().and_then(|i| i.locate(&field));
                Problem { line: loc.map(|l| l.0), column: loc.map(|l| l.1), field, message }
            })
            .collect();
        problems.sort_by_key(|p| (p.line, p.column));
        ConfigError { file: file.to_path_buf(), problems, snippet: None, note: None }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(f, "{}: {} problem{} found", self.file.display(), n, if n == 1 { "" } else { "s" })?;
        for p in &self.problems {
            let loc = match (p.line, p.column) {
                (Some(l), Some(c)) => format!("{}:{l}:{c}", self.file.display()),
                (Some(l), None) => format!("{}:{l}", self.file.display()),
                _ => self.file.display().to_string(),
            };
            let field = if p.field.is_empty() { "(document)" } else { &p.field };
            writeln!(f, "  {loc}: {field}: {}", p.message)?;
        }
        if let Some(s) = &self.snippet {
            write!(f, "{s}")?;
        }
        if let Some(n) = &self.note {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// Non-fatal remarks (an `insecure: true`, a node with a single controller, ...).
pub type Warnings = Vec<String>;

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<(Config, Warnings), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            problems: vec![Problem {
                line: None,
                column: None,
                field: String::new(),
                message: format!("cannot read: {e}"),
            }],
            snippet: None,
            note: None,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parses and validates YAML text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &Path) -> Result<(Config, Warnings), ConfigError> {
        let mut path_at_error = String::new();
        let parsed = serde_saphyr::with_deserializer_from_str(text, |de| {
            serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| {
                path_at_error = e.path().to_string();
                e.into_inner()
            })
        });
        let config = match parsed {
            Ok(c) => c,
            Err(e) => {
                let mut err = parse_error(text, file, &path_at_error, &e);
                let (more, note) = more_parse_problems(text, &err.problems[0]);
                // The first problem keeps the parser's own snippet; all are listed in file order.
                err.problems.extend(more);
                err.problems.sort_by_key(|p| (p.line, p.column));
                err.note = Some(note.unwrap_or_else(|| {
                    "the ranges and the references between sections are checked once the file parses".into()
                }));
                return Err(err);
            }
        };
        let (problems, warnings) = config.validate();
        if problems.is_empty() {
            return Ok((config, warnings));
        }
        Err(ConfigError::located(text, file, problems))
    }

    /// Checks everything the types cannot: returns (problems as (field path, message), warnings).
    pub fn validate(&self) -> (Vec<(String, String)>, Warnings) {
        let mut p: Vec<(String, String)> = Vec::new();
        let mut w = Vec::new();
        if self.host.trim().is_empty() {
            p.push(("host".into(), "must not be empty".into()));
        }
        let mut range = |field: &str, value: HumanDuration, min: HumanDuration, max: HumanDuration| {
            if let Some(m) = value.out_of_range(min, max) {
                p.push((field.to_string(), m));
            }
        };
        range("daemon.poll_interval", self.daemon.poll_interval, MIN_POLL_INTERVAL, MAX_POLL_INTERVAL);
        range("daemon.power_return_settle", self.daemon.power_return_settle, HumanDuration::ZERO, ONE_DAY);
        range("daemon.deadtime", self.daemon.deadtime, HumanDuration::from_secs(1), ONE_STEP);
        let (s, u) = (&self.shutdown, &self.startup);
        range("shutdown.step_timeout", s.step_timeout, MIN_TIMEOUT, ONE_STEP);
        range("shutdown.drain_timeout", s.drain_timeout, HumanDuration::ZERO, ONE_STEP);
        range("shutdown.pdb_timeout", s.pdb_timeout, HumanDuration::ZERO, ONE_STEP);
        range("shutdown.max_pod_grace", s.max_pod_grace, HumanDuration::ZERO, ONE_STEP);
        range("shutdown.power_off_timeout", s.power_off_timeout, MIN_TIMEOUT, ONE_STEP);
        range("shutdown.soft_off_timeout", s.soft_off_timeout, HumanDuration::ZERO, ONE_STEP);
        range("shutdown.off_silence", s.off_silence, MIN_TIMEOUT, ONE_STEP);
        range("shutdown.controller_timeout", s.controller_timeout, MIN_TIMEOUT, ONE_STEP);
        if let Some(delay) = s.ups_off.as_ref().and_then(|o| o.delay) {
            range("shutdown.ups_off.delay", delay, HumanDuration::ZERO, ONE_STEP);
        }
        if let Some(o) = &s.ups_off {
            range("shutdown.ups_off.hostsync", o.hostsync, HumanDuration::ZERO, ONE_STEP);
        }
        range("startup.step_timeout", u.step_timeout, MIN_TIMEOUT, ONE_STEP);
        range("preflight.interval", self.preflight.interval, MIN_PREFLIGHT_INTERVAL, ONE_DAY);
        range("preflight.timeout", self.preflight.timeout, HumanDuration::from_secs(1), ONE_TRY);
        range("startup.controller_timeout", u.controller_timeout, MIN_TIMEOUT, ONE_STEP);
        for (field, value) in [
            ("startup.reachable_timeout", u.reachable_timeout),
            ("startup.api_timeout", u.api_timeout),
            ("startup.nodes_ready_timeout", u.nodes_ready_timeout),
            ("startup.gitops_timeout", u.gitops_timeout),
        ] {
            range(field, value, MIN_TIMEOUT, ONE_DAY);
        }
        if let Role::Coordinator(c) = &self.role {
            range("role.coordinator.max_clock_skew", c.max_clock_skew, MIN_CLOCK_SKEW, MAX_CLOCK_SKEW);
        }
        if let Some(t) = u.clock_sync_timeout {
            range("startup.clock_sync_timeout", t, MIN_TIMEOUT, ONE_DAY);
        }
        if let Role::Forwarder(f) = &self.role {
            range("role.forwarder.timeout", f.timeout, MIN_TIMEOUT, ONE_STEP);
            if let Some(after) = f.power_off_self_after {
                range("role.forwarder.power_off_self_after", after, HumanDuration::ZERO, ONE_DAY);
            }
        }
        let (lo, hi) = CHARGE_RANGE;
        if let Some(c) = self.daemon.restart_min_charge
            && !(lo..=hi).contains(&c)
        {
            p.push(("daemon.restart_min_charge".into(), format!("must be between {lo} and {hi} (percent), got {c}")));
        }
        if self.daemon.restart_min_charge.is_some() && !self.daemon.startup_on_power_return {
            w.push("daemon.restart_min_charge has no effect without daemon.startup_on_power_return".into());
        }
        for (field, c) in [("shutdown.concurrency", s.concurrency), ("startup.concurrency", u.concurrency)] {
            if let Some(m) = count_out_of_range(u64::try_from(c).unwrap_or(u64::MAX), MIN_CONCURRENCY, MAX_CONCURRENCY)
            {
                p.push((field.into(), m));
            }
        }
        if self.power_sources.is_empty() {
            p.push(("power_sources".into(), "at least one power source is needed".into()));
        }
        let mut names = BTreeSet::new();
        for (i, s) in self.power_sources.iter().enumerate() {
            if !names.insert(s.name().to_string()) {
                p.push((format!("power_sources[{i}].name"), format!("duplicate power source name `{}`", s.name())));
            }
            p.extend(s.validate().into_iter().map(|m| about_field(&format!("power_sources[{i}]"), m)));
        }
        if let Some(c) = &self.cluster {
            p.extend(c.validate().into_iter().map(|m| about_field("cluster", m)));
        }
        if let Some(g) = &self.gitops {
            p.extend(g.validate().into_iter().map(|m| about_field("gitops", m)));
            if self.cluster.is_none() {
                p.push(("gitops".into(), "a gitops backend needs a `cluster:` to talk to".into()));
            }
        }
        let mut node_names = BTreeSet::new();
        let mut inits = 0;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.name.trim().is_empty() {
                p.push((format!("nodes[{i}].name"), "must not be empty".into()));
            }
            if !node_names.insert(n.name.clone()) {
                p.push((format!("nodes[{i}].name"), format!("duplicate node name `{}`", n.name)));
            }
            if n.address.trim().is_empty() {
                p.push((format!("nodes[{i}].address"), "must not be empty".into()));
            }
            if n.init {
                inits += 1;
                if n.role != NodeRole::Server {
                    p.push((format!("nodes[{i}].init"), "only a server can be the init server".into()));
                }
            }
            // The unit goes into remote command lines (ssh_systemd): refuse anything a shell or
            // systemctl could read as more than a unit name, here rather than at 3 a.m.
            if let Some(u) = &n.unit
                && (u.is_empty()
                    || u.starts_with('-')
                    || !u.chars().all(|c| c.is_ascii_alphanumeric() || "@._:-".contains(c)))
            {
                p.push((
                    format!("nodes[{i}].unit"),
                    format!("`{u}` is not a unit name (letters, digits and `@._:-` only, not starting with `-`)"),
                ));
            }
            if n.controllers.is_empty() {
                p.push((format!("nodes[{i}].controllers"), "at least one controller is needed".into()));
            }
            for (j, c) in n.controllers.iter().enumerate() {
                p.extend(c.validate().into_iter().map(|m| about_field(&format!("nodes[{i}].controllers[{j}]"), m)));
                w.extend(c.warnings().into_iter().map(|m| format!("nodes[{i}].controllers[{j}] ({}): {m}", n.name)));
            }
        }
        if inits > 1 {
            p.push(("nodes".into(), format!("{inits} nodes are marked `init: true`; at most one may be")));
        }
        for (i, n) in self.notifiers.iter().enumerate() {
            p.extend(n.validate().into_iter().map(|m| about_field(&format!("notifiers[{i}]"), m)));
        }
        if self.shutdown.power_off_nodes && self.shutdown.soft_off_timeout >= self.shutdown.power_off_timeout {
            p.push((
                "shutdown.soft_off_timeout".into(),
                "must be shorter than `power_off_timeout`, which also covers the forced off and its confirmation"
                    .into(),
            ));
        }
        if self.shutdown.power_off_self && self.shutdown.ups_off.is_none() {
            w.push(
                "shutdown.power_off_self without shutdown.ups_off: if mains come back while the cluster shuts down, \
                 this host and the halted nodes stay off until someone presses their buttons (set ups_off so the \
                 UPS cuts and restores the power, with \"restore on AC power loss\" in the machines' firmware)"
                    .into(),
            );
        }
        if self.shutdown.power_off_self && self.shutdown.power_off_self_command.is_empty() {
            p.push(("shutdown.power_off_self_command".into(), "must name a program when power_off_self is on".into()));
        }
        if let Some(u) = &self.shutdown.ups_off {
            if !names.contains(&u.source) {
                p.push(("shutdown.ups_off.source".into(), format!("no power source is named `{}`", u.source)));
            }
            let c = &u.command;
            if c.is_empty() || !c.chars().all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch)) {
                p.push((
                    "shutdown.ups_off.command".into(),
                    format!("`{c}` is not a NUT instant command name (such as shutdown.return), nor `auto`"),
                ));
            }
            match u.delay {
                None => w.push(
                    "shutdown.ups_off: no `delay`: the UPS cuts its load after its driver's own delay \
                     (ups.delay.shutdown, `offdelay` in ups.conf: 20s unless set there for usbhid-ups)"
                        .into(),
                ),
                Some(d) if self.shutdown.power_off_self && *d < MIN_SELF_SHUTDOWN_DELAY => w.push(format!(
                    "shutdown.ups_off.delay: {d} may not cover this host's own shutdown (power_off_self): \
                     the UPS cuts its load that long after the command, and this host powers off after it"
                )),
                Some(_) => {}
            }
        }
        p.extend(self.policy.validate().into_iter().map(|m| about_field("policy", m)));
        p.extend(self.budget.validate().into_iter().map(|m| about_field("budget", m)));
        match &self.role {
            Role::Standalone => {}
            Role::Coordinator(c) => {
                if c.tls_cert_file.is_some() != c.tls_key_file.is_some() {
                    p.push(("role.coordinator".into(), "`tls_cert_file` and `tls_key_file` go together".into()));
                }
                if c.tls_cert_file.is_none() {
                    w.push(
                        "role.coordinator: the forwarding endpoint is plain http: requests are signed and cannot \
                         be replayed, but anyone on the path sees them and can hold them back (set tls_cert_file \
                         and tls_key_file)"
                            .into(),
                    );
                }
                validate_forwarders(&c.forwarders, &mut p, &mut w);
            }
            Role::Forwarder(f) => {
                if !is_forwarder_name(&self.host) {
                    p.push((
                        "host".into(),
                        format!(
                            "a forwarder's host is its name at the coordinator: 1 to {MAX_FORWARDER_NAME} letters, \
                             digits, `.`, `_` or `-`, not {:?}",
                            self.host
                        ),
                    ));
                }
                if f.key_file.as_os_str().is_empty() {
                    p.push(("role.forwarder.key_file".into(), "must not be empty".into()));
                }
                let u = &f.coordinator_url;
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    p.push(("role.forwarder.coordinator_url".into(), format!("must be an http(s) url, not {u:?}")));
                }
                if f.ca_file.is_some() && !u.starts_with("https://") {
                    p.push(("role.forwarder.ca_file".into(), "only used with an https `coordinator_url`".into()));
                }
                match (f.power_off_self_after.is_some(), self.shutdown.power_off_self) {
                    (true, false) => p.push((
                        "role.forwarder.power_off_self_after".into(),
                        "has no effect without `shutdown.power_off_self: true`".into(),
                    )),
                    (false, true) => w.push(
                        "role.forwarder: shutdown.power_off_self covers only this host's own fallback plan; after \
                         a handover to the coordinator the host stays up until its UPS runs out (set \
                         role.forwarder.power_off_self_after)"
                            .into(),
                    ),
                    _ => {}
                }
            }
        }
        if !self.nodes.is_empty() && self.cluster.is_none() {
            w.push("nodes are listed but no `cluster:` is configured: no cordon, drain or readiness checks".into());
        }
        (p, w)
    }

    /// Nodes in the config's order with the given role.
    pub fn nodes_with_role(&self, role: NodeRole) -> impl Iterator<Item = &NodeConfig> {
        self.nodes.iter().filter(move |n| n.role == role)
    }
}

/// The coordinator's list of forwarders: names valid and unique, each with a key file, at most
/// [`MAX_FORWARDERS`]; two names sharing a key file can speak for each other (a warning).
fn validate_forwarders(list: &[ForwarderKey], p: &mut Vec<(String, String)>, w: &mut Warnings) {
    if list.is_empty() {
        p.push((
            "role.coordinator.forwarders".into(),
            "list at least one forwarder (`- { name: HOST, key_file: FILE }`): a coordinator accepts requests only \
             from the forwarders listed"
                .into(),
        ));
    }
    if list.len() > MAX_FORWARDERS {
        p.push((
            "role.coordinator.forwarders".into(),
            format!("{} forwarders are listed; at most {MAX_FORWARDERS} are allowed", list.len()),
        ));
    }
    let mut names = BTreeSet::new();
    let mut files = std::collections::BTreeMap::new();
    for (i, f) in list.iter().enumerate() {
        if !is_forwarder_name(&f.name) {
            p.push((
                format!("role.coordinator.forwarders[{i}].name"),
                format!(
                    "`name` must be the forwarder's host: 1 to {MAX_FORWARDER_NAME} letters, digits, `.`, `_` or `-`, \
                     not {:?}",
                    f.name
                ),
            ));
        }
        if !names.insert(f.name.as_str()) {
            p.push((format!("role.coordinator.forwarders[{i}].name"), format!("duplicate forwarder `{}`", f.name)));
        }
        if f.key_file.as_os_str().is_empty() {
            p.push((format!("role.coordinator.forwarders[{i}].key_file"), "`key_file` must not be empty".into()));
        } else if let Some(other) = files.insert(f.key_file.as_path(), f.name.as_str()) {
            w.push(format!(
                "role.coordinator.forwarders[{i}]: {} and {other} share the key file {}, so each can send in the \
                 other's name; give every forwarder its own",
                f.name,
                f.key_file.display()
            ));
        }
    }
}

/// A section's or backend's problem as (field path, message). A message that starts with the
/// name of one of the section's fields (`` `retry_for` must … ``, `user: …`, `window must …`) is
/// about that field, so `config check` points at the field's own line rather than the section's.
fn about_field(section: &str, message: String) -> (String, String) {
    match leading_field(&message) {
        Some(name) => (format!("{section}.{name}"), message),
        None => (section.to_string(), message),
    }
}

fn leading_field(message: &str) -> Option<&str> {
    let is_name = |s: &str| {
        s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
    };
    if let Some(rest) = message.strip_prefix('`') {
        let (name, _) = rest.split_once('`')?;
        return is_name(name).then_some(name);
    }
    let (name, rest) = message.split_once(' ')?;
    if let Some(name) = name.strip_suffix(':') {
        return is_name(name).then_some(name);
    }
    (is_name(name) && rest.starts_with("must ")).then_some(name)
}

fn parse_error(text: &str, file: &Path, path: &str, e: &serde_saphyr::Error) -> ConfigError {
    let full = e.to_string();
    let head = full.lines().next().unwrap_or_default();
    // The parser's first line is "error: line L column C: MESSAGE"; errors raised inside a
    // value (a typetag'd backend, a duration) carry "at line L, column C" of the value itself,
    // which is more precise than the enclosing mapping the parser points at.
    let mut message = head
        .trim_start_matches("error: ")
        .split_once(": ")
        .filter(|(pre, _)| pre.starts_with("line "))
        .map(|(_, m)| m.to_string())
        .unwrap_or_else(|| head.to_string());
    let inner = inner_locations(&message);
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    if let Some(hint) = migration_hint(path, &message) {
        message = format!("{message}; {hint}");
    }
    let loc = e.location().map(|l| (l.line(), l.column()));
    // serde_path_to_error names the field; the index gives that field's own line when the
    // error is about its value (an unknown field is best shown where the parser saw it).
    let own = crate::yaml_index::Index::build(text).and_then(|i| i.locate(path));
    let located = inner.last().copied().or(if message.contains("unknown field") { None } else { own }).or(loc).or(own);
    let field = if path == "." { String::new() } else { path.to_string() };
    let message = with_suggestion(message);
    let snippet = located.map(|(l, c)| snippet_at(text, file, l, c, &message));
    ConfigError {
        file: file.to_path_buf(),
        problems: vec![Problem { line: located.map(|l| l.0), column: located.map(|l| l.1), field, message }],
        snippet,
        note: None,
    }
}

/// At most this many problems are reported from a file that does not parse.
const MAX_PARSE_PROBLEMS: usize = 50;

/// The problems after the parser's first: the file is read as plain YAML, the part the first
/// problem is in left out, and the config read again, until it reads or nothing more can be left
/// out. A required field left out takes the list item that holds it (a node, a backend) with
/// it. A file that is not YAML at all (a bad indent, an unclosed quote) cannot be read past its
/// first problem: the second value says so, and what else was not checked.
fn more_parse_problems(text: &str, first: &Problem) -> (Vec<Problem>, Option<String>) {
    let Ok(mut tree) = serde_saphyr::from_str::<serde_json::Value>(text) else {
        return (
            Vec::new(),
            Some(
                "this is a YAML syntax error: the parser cannot read past it, so any later problem shows once it \
                 is fixed"
                    .into(),
            ),
        );
    };
    let index = crate::yaml_index::Index::build(text);
    let mut gone = Removed::default();
    let mut problems: Vec<Problem> = Vec::new();
    let mut at = precise_path(&first.field, &first.message);
    for _ in 0..MAX_PARSE_PROBLEMS {
        // Only a misspelt key is renamed; a misspelt value (an unknown variant) is left out.
        let last = problems.last().map_or(first.message.as_str(), |p| p.message.as_str());
        let rename = last
            .strip_prefix("unknown field `")
            .and_then(|m| m.rsplit_once("did you mean `"))
            .and_then(|(_, r)| r.split_once('`'))
            .map(|(name, _)| name);
        if at.is_empty() || !gone.remove(&mut tree, &at, rename) {
            let what = if at.is_empty() { "a problem at its top level".to_string() } else { format!("`{at}`") };
            return (problems, Some(format!("the file could not be read past {what}: fix it to see what follows")));
        }
        let mut path = String::new();
        let result = serde_path_to_error::deserialize::<_, Config>(&tree).map_err(|e| {
            path = e.path().to_string();
            e.into_inner()
        });
        let Err(e) = result else { return (problems, None) };
        let path = if path == "." { String::new() } else { gone.original(&path) };
        let message = e.to_string();
        if let Some(field) = missing_field(&message) {
            let full = if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
            if gone.was_removed(&full) {
                // Left out by us: leave out what holds it instead, without a word.
                match enclosing_item(&path) {
                    Some(item) => {
                        at = item;
                        continue;
                    }
                    None => {
                        let note =
                            format!("the file could not be read past the missing `{full}`: fix it to see what follows");
                        return (problems, Some(note));
                    }
                }
            }
        }
        at = precise_path(&path, &message);
        if problems.iter().any(|p| p.field == at && p.message == message) || at == first.field {
            break;
        }
        let loc = index.as_ref().and_then(|i| i.locate(&at));
        problems.push(Problem {
            line: loc.map(|l| l.0),
            column: loc.map(|l| l.1),
            field: at.clone(),
            message: with_suggestion(message),
        });
    }
    (problems, None)
}

/// An unknown field inside a backend's settings is reported at the backend (its type decides
/// the fields): point at the field itself when the mapping holds it.
fn precise_path(path: &str, message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else { return path.to_string() };
    let Some((name, _)) = rest.split_once('`') else { return path.to_string() };
    if path.ends_with(&format!(".{name}")) || path == name {
        return path.to_string();
    }
    if path.is_empty() { name.to_string() } else { format!("{path}.{name}") }
}

/// `missing field `x`` → `x`.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split_once('`').map(|(f, _)| f)
}

/// The list item a path is in: `nodes[1].controllers[0].user` → `nodes[1].controllers[0]`.
fn enclosing_item(path: &str) -> Option<String> {
    let end = path.rfind(']')?;
    Some(path[..=end].to_string())
}

/// What was left out of the tree, so later paths (counted in the shrunk lists) can be told in
/// the file's own numbering.
#[derive(Default)]
struct Removed {
    /// Every path left out, in the file's numbering.
    paths: Vec<String>,
    /// Per list (its path in the file's numbering): the file's indices of the items left out.
    items: std::collections::BTreeMap<String, Vec<usize>>,
}

impl Removed {
    fn was_removed(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
    }

    /// A path counted in the shrunk lists, in the file's numbering.
    fn original(&self, path: &str) -> String {
        use crate::yaml_index::Segment;
        let mut out = String::new();
        for seg in crate::yaml_index::segments(path) {
            match seg {
                Segment::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
                Segment::Index(i) => {
                    let gone = self.items.get(&out).map(Vec::as_slice).unwrap_or_default();
                    // The i-th item still there is the file's first index past i + (items gone
                    // before it).
                    let mut original = 0;
                    let mut left = i;
                    loop {
                        if !gone.contains(&original) {
                            if left == 0 {
                                break;
                            }
                            left -= 1;
                        }
                        original += 1;
                    }
                    out.push_str(&format!("[{original}]"));
                }
            }
        }
        out
    }

    /// Leaves out what `path` (in the file's numbering) names; false when it is not there. A
    /// misspelt key whose nearest known name is not there is renamed to it instead, so what
    /// follows is read as though the slip were fixed (and a required field is not missed).
    fn remove(&mut self, tree: &mut serde_json::Value, path: &str, rename_to: Option<&str>) -> bool {
        use crate::yaml_index::Segment;
        let segs = crate::yaml_index::segments(path);
        let Some((last, parents)) = segs.split_last() else { return false };
        let mut cur = tree;
        let mut here = String::new();
        for seg in parents {
            let next = match seg {
                Segment::Key(k) => {
                    if !here.is_empty() {
                        here.push('.');
                    }
                    here.push_str(k);
                    cur.get_mut(*k)
                }
                Segment::Index(i) => {
                    let shrunk = self.shrunk_index(&here, *i);
                    here.push_str(&format!("[{i}]"));
                    shrunk.and_then(|j| cur.get_mut(j))
                }
            };
            match next {
                Some(n) => cur = n,
                None => return false,
            }
        }
        let done = match (last, cur) {
            (Segment::Key(k), serde_json::Value::Object(m)) => match m.remove(*k) {
                Some(v) => {
                    if let Some(to) = rename_to.filter(|to| !m.contains_key(*to)) {
                        m.insert(to.to_string(), v);
                    }
                    true
                }
                None => false,
            },
            (Segment::Index(i), serde_json::Value::Array(a)) => match self.shrunk_index(&here, *i) {
                Some(j) if j < a.len() => {
                    a.remove(j);
                    self.items.entry(here.clone()).or_default().push(*i);
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if done {
            self.paths.push(path.to_string());
        }
        done
    }

    /// Where the file's item `i` of the list at `list` is in the shrunk list.
    fn shrunk_index(&self, list: &str, i: usize) -> Option<usize> {
        let gone = self.items.get(list).map(Vec::as_slice).unwrap_or_default();
        if gone.contains(&i) {
            return None;
        }
        Some(i - gone.iter().filter(|g| **g < i).count())
    }
}

/// A message naming an unknown field or variant, with the known name nearest to it when one is
/// close: "unknown field `poll_intervall`, expected one of ...; did you mean `poll_interval`?".
fn with_suggestion(message: String) -> String {
    let unknown = ["unknown field `", "unknown variant `"].iter().find_map(|p| message.strip_prefix(p));
    let Some((wrong, expected)) = unknown.and_then(|r| r.split_once('`')) else { return message };
    let Some(i) = expected.find("expected ") else { return message };
    let known: Vec<&str> = expected[i + "expected ".len()..]
        .trim_start_matches("one of ")
        .split([',', ' '])
        .map(|w| w.trim_matches(|c: char| c == '`' || c == ';' || c == '.'))
        .filter(|w| !w.is_empty() && *w != "or" && *w != "and")
        .collect();
    match nearest(wrong, &known) {
        Some(best) => format!("{message}; did you mean `{best}`?"),
        None => message,
    }
}

/// The known name closest to `wrong` in edits (Levenshtein), when it is close enough to be a
/// slip: at most a third of its length, and at least 1 edit allowed.
fn nearest<'a>(wrong: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (wrong.chars().count() / 3).max(1);
    known
        .iter()
        .map(|k| (edit_distance(wrong, k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// What to change in a config written for an earlier layout.
fn migration_hint(path: &str, message: &str) -> Option<&'static str> {
    // Until issue 15 every forwarder shared one bearer token, which a captured request replayed
    // at will; each forwarder now signs with its own key.
    let shared_token = message.contains("unknown field `token_file`")
        || (path.starts_with("role.coordinator") && message.contains("missing field `forwarders`"))
        || (path.starts_with("role.forwarder") && message.contains("missing field `key_file`"));
    if shared_token {
        return Some(
            "forwarding no longer uses a shared token: each forwarder signs its requests with its own key. On the \
             coordinator replace `token_file` with `forwarders: [ { name: FORWARDER_HOST, key_file: FILE } ]`, one \
             entry per forwarder; on each forwarder rename `token_file` to `key_file`, the same file as its entry on \
             the coordinator (`openssl rand -hex 32 > FILE` makes one; see configs/forwarder.yaml)",
        );
    }
    let role_needs_settings =
        (path == "role.coordinator" || path == "role.forwarder") && message.contains("expected mapping");
    if role_needs_settings || message.contains("unknown field `forwarding`") {
        return Some(
            "a coordinator's or forwarder's settings go under its role, e.g. `role: { coordinator: { listen: \
             10.10.0.5:9561, forwarders: [ { name: tethys, key_file: /etc/hecate/forwarders/tethys.key } ] } }` \
             (what was the `forwarding:` block; see configs/forwarder.yaml)",
        );
    }
    None
}

/// Every "at line L, column C" in a message.
fn inner_locations(message: &str) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut rest = message;
    while let Some(i) = rest.find("at line ") {
        rest = &rest[i + "at line ".len()..];
        let Some((l, after)) = rest.split_once(", column ") else { break };
        let col: String = after.chars().take_while(char::is_ascii_digit).collect();
        if let (Ok(l), Ok(c)) = (l.trim().parse(), col.parse()) {
            out.push((l, c));
        }
    }
    out
}

/// The lines around (line, column) with a caret under the column.
fn snippet_at(text: &str, file: &Path, line: u64, column: u64, message: &str) -> String {
    use std::fmt::Write as _;
    let mut s = format!(" --> {}:{line}:{column}\n", file.display());
    let line = usize::try_from(line).unwrap_or(1).max(1);
    let first = line.saturating_sub(2).max(1);
    for (i, l) in text.lines().enumerate().map(|(i, l)| (i + 1, l)).skip(first - 1).take(line - first + 2) {
        let _ = writeln!(s, "{i:>4} | {l}");
        if i == line {
            let pad = " ".repeat(usize::try_from(column).unwrap_or(1).saturating_sub(1));
            let _ = writeln!(s, "     | {pad}^ {message}");
        }
    }
    s
}
