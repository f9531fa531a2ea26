//! The command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Where Hecate looks for its config when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/hecate/hecate.yaml";

/// Keeps a small bare-metal k3s cluster alive through power events.
#[derive(Debug, Parser)]
#[command(name = "hecate", version, about, propagate_version = true)]
pub struct Cli {
    /// Log format: `auto` uses journald under systemd, plain text otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log: LogFormat,
    /// More detail in the log (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Log output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// journald when started by systemd, else plain.
    Auto,
    /// Plain text on stderr.
    Plain,
    /// The systemd journal.
    Journald,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Staged startup after a power-down (a dry run unless --execute).
    Startup {
        #[command(flatten)]
        run: RunArgs,
        /// Patch the Flux git source to this branch before reconciling.
        #[arg(long)]
        force_flux_branch: Option<String>,
    },
    /// Graceful shutdown of the cluster (a dry run unless --execute).
    Shutdown {
        #[command(flatten)]
        run: RunArgs,
        /// Why, for the run record and notifications.
        #[arg(long, default_value = "requested from the command line")]
        reason: String,
    },
    /// Watch the UPSes and shut the cluster down when the battery will not last.
    Daemon {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Run the daemon on the embedded simulated UPS and cluster: an outage is detected, the
    /// cluster shut down stage by stage, power returns and the cluster comes back.
    Demo {
        /// Stop after this long even if the cycle did not finish.
        #[arg(long, default_value = "3m")]
        timeout: humantime::Duration,
    },
    /// Show each UPS, the policy's state and why, and the shutdown budget.
    Status {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Replay outage traces through the trigger policy on a virtual clock (with --lifecycle,
    /// through the whole daemon's decisions).
    Simulate {
        /// A trace file, or a directory of `*.csv` traces.
        #[arg(long)]
        trace: PathBuf,
        /// A runs.json whose successful shutdowns give the budget.
        #[arg(long)]
        runs: Option<PathBuf>,
        /// Take policy, budget and poll interval from this config (default: built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// One JSON object per trace and line.
        #[arg(long)]
        json: bool,
        /// Replay through the daemon's lifecycle (the supervisor), not only the policy: the trace
        /// drives the power source and the output lists the runs started and when (a shutdown
        /// takes the budget).
        #[arg(long)]
        lifecycle: bool,
    },
    /// Check, without changing anything, each part of the shutdown and startup path: node SSH
    /// (host key, login, sudo for exactly the plans' commands), BMCs, Wake-on-LAN, the
    /// Kubernetes API and its permissions, NUT logins, a forwarder's coordinator. Exit 0 when
    /// nothing fails, 1 when something does.
    Preflight {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Rehearse an outage in a maintenance window: the real shutdown, then the startup (a dry
    /// run unless --execute). Both are recorded as drill runs that teach the shutdown budget, and
    /// a report compares each stage with the budget and earlier runs.
    Drill {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Carry the drill out. Without it, both plans are only printed.
        #[arg(long)]
        execute: bool,
    },
    /// The cluster's nodes.
    Nodes {
        #[command(subcommand)]
        command: NodesCommand,
    },
    /// Check or describe config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// List the backends linked into this binary.
    Backends {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages, hecate(1) and one per subcommand, into a directory (for packaging:
    /// scripts/build-deb).
    #[command(hide = true)]
    Manpages {
        /// The directory, created if missing.
        dir: PathBuf,
    },
}

/// Arguments shared by `startup` and `shutdown`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The config file.
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Carry the plan out. Without it, the plan is only printed.
    #[arg(long)]
    pub execute: bool,
    /// Continue an interrupted run from its journal, skipping finished steps.
    #[arg(long)]
    pub resume: bool,
    /// JSON: the plan (dry run); with --execute, one object per change and the report at the end.
    #[arg(long)]
    pub json: bool,
}

/// `hecate nodes ...`
#[derive(Debug, Subcommand)]
pub enum NodesCommand {
    /// Fetch each node's SSH host key (the `ssh_systemd` controllers' addresses and ports) and
    /// show its fingerprint, with what the known_hosts file says of it; with --write, add the
    /// keys it lacks (after a prompt, or --yes). A key that changed is shown, never replaced.
    Keyscan {
        /// The config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Add the keys known_hosts lacks to it.
        #[arg(long)]
        write: bool,
        /// With --write: do not ask.
        #[arg(long, short)]
        yes: bool,
    },
}

/// `hecate config ...`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate config files and build every backend as the daemon would (files it
    /// names present and readable, keys parse; no network); every problem is listed with file,
    /// line and field.
    Check {
        /// Parse and validate only, without building the backends: for a config meant for another
        /// machine, whose files are not here.
        #[arg(long)]
        no_build: bool,
        /// The files (default: the config the other commands read).
        #[arg(default_value = DEFAULT_CONFIG)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of the config file, for editors.
    Schema,
}
