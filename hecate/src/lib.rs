//! Hecate's binary crate as a library, so a third-party build can link extra backends and call
//! [`main_with_backends`]-style wiring, and so integration tests can drive the pieces.

pub mod cli;
pub mod commands;
pub mod daemon;
pub mod logging;
pub mod metrics;
pub mod run;
pub mod simulate;
pub mod status;

use std::path::Path;

use anyhow::Context as _;
use hecate_core::config::{Config, Warnings};

/// Must run before anything builds a TLS client: both kube and reqwest panic without a
/// process-wide crypto provider. (No TLS client is linked yet; this is where it goes.)
pub fn init_process() {
    hecate_backends::link();
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
