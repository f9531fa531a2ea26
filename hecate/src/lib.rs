//! Hecate's binary crate as a library, so a third-party build can link extra backends and call
//! [`main_entry`], and so integration tests can drive the pieces.

pub mod cli;
pub mod cluster_view;
pub mod commands;
pub mod daemon;
pub mod drill;
pub mod forward;
pub mod http;
pub mod keyscan;
pub mod lifecycle_replay;
pub mod logging;
pub mod metrics;
pub mod observe;
pub mod preflight;
pub mod progress;
pub mod run;
pub mod simulate;
pub mod status;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser as _;
use hecate_core::config::{Config, Warnings};

use crate::cli::{Cli, Command, ConfigCommand, NodesCommand};

/// How long a process about to exit waits for queued notifications. Short: the host may be
/// losing power, and the log says what was not sent.
pub const NOTIFY_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Must run before anything builds a TLS client: both kube and reqwest panic without a
/// process-wide crypto provider. Safe to call more than once.
pub fn init_process() {
    hecate_backends::link();
    // An error only means a provider is installed already (by an earlier call or an embedder).
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Hecate's `main`: parses the command line, runs the command, returns the exit code. A build
/// that links extra backends calls this from its own `main` (see examples/notifier-plugin).
pub fn main_entry() -> ExitCode {
    main_with_args(std::env::args_os())
}

/// [`main_entry`] with explicit arguments, the program name first.
pub fn main_with_args(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    init_process();
    logging::init(cli.log, cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Startup { run, force_flux_branch } => run::startup(&run, force_flux_branch).await,
            Command::Shutdown { run, reason } => run::shutdown(&run, &reason).await,
            Command::Daemon { config } => daemon::run_from_file(&config).await,
            Command::Demo { timeout } => observe::demo(timeout.into()).await,
            Command::Status { config, json } => status::show(&config, json).await,
            Command::Simulate { trace, runs, config, json, lifecycle: true } => {
                lifecycle_replay::run(&trace, runs.as_deref(), config.as_deref(), json)
            }
            Command::Simulate { trace, runs, config, json, lifecycle: false } => {
                simulate::run(&trace, runs.as_deref(), config.as_deref(), json)
            }
            Command::Preflight { config, json } => preflight::command(&config, json).await,
            Command::Drill { config, execute } => drill::command(&config, execute).await,
            Command::Nodes { command: NodesCommand::Keyscan { config, write, yes } } => {
                keyscan::command(&config, write, yes).await
            }
            Command::Config { command: ConfigCommand::Check { files, no_build } } => {
                commands::config_check(&files, !no_build)
            }
            Command::Config { command: ConfigCommand::Schema } => commands::config_schema(),
            Command::Backends { json } => commands::backends(json),
            Command::Completions { shell } => commands::completions(shell),
            Command::Manpages { dir } => commands::manpages(&dir),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads and validates a config file; every problem is in the error, with file, line and field.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    init_process();
    let (cfg, warnings) = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    print_warnings(path, &warnings);
    Ok(cfg)
}

fn print_warnings(path: &Path, warnings: &Warnings) {
    for w in warnings {
        tracing::warn!(file = %path.display(), "{w}");
    }
}

/// The embedded simulated default config.
pub const SIM_CONFIG: &str = include_str!("../../configs/sim.yaml");

/// Parses the embedded simulated config with its state dir replaced.
pub fn sim_config(state_dir: &Path) -> anyhow::Result<Config> {
    init_process();
    let (mut cfg, _) = Config::from_yaml(SIM_CONFIG, Path::new("configs/sim.yaml"))
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("embedded sim config")?;
    cfg.state_dir = state_dir.to_path_buf();
    Ok(cfg)
}
