//! The `hecate` binary: wires the core and the backends to the command line.

use std::process::ExitCode;

use clap::Parser;

use hecate::cli::{Cli, Command, ConfigCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    hecate::logging::init(cli.log, cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.command {
            Command::Startup { run, force_flux_branch } => hecate::run::startup(&run, force_flux_branch).await,
            Command::Shutdown { run, reason } => hecate::run::shutdown(&run, &reason).await,
            Command::Daemon { config } => hecate::daemon::run_from_file(&config).await,
            Command::Demo { timeout } => hecate::daemon::demo(timeout.into()).await,
            Command::Status { config, json } => hecate::status::show(&config, json).await,
            Command::Simulate { trace, runs, config, json } => {
                hecate::simulate::run(&trace, runs.as_deref(), config.as_deref(), json)
            }
            Command::Config { command: ConfigCommand::Check { files } } => hecate::commands::config_check(&files),
            Command::Config { command: ConfigCommand::Schema } => hecate::commands::config_schema(),
            Command::Backends { json } => hecate::commands::backends(json),
            Command::Completions { shell } => hecate::commands::completions(shell),
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
