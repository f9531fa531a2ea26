//! The small commands: `config check`, `config schema`, `backends`, `completions`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::CommandFactory;
use hecate_core::config::Config;
use hecate_core::registry;

use crate::cli::Cli;

/// `hecate config check FILE...`: the same loading code the daemon uses.
pub fn config_check(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    crate::init_process();
    let mut failed = false;
    for f in files {
        match Config::load(f) {
            Ok((cfg, warnings)) => {
                println!(
                    "{}: ok ({} power source(s), {} node(s))",
                    f.display(),
                    cfg.power_sources.len(),
                    cfg.nodes.len()
                );
                for w in warnings {
                    println!("  warning: {w}");
                }
            }
            Err(e) => {
                failed = true;
                eprint!("{e}");
            }
        }
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `hecate config schema`.
pub fn config_schema() -> anyhow::Result<ExitCode> {
    crate::init_process();
    let schema = schemars::schema_for!(Config);
    println!("{}", serde_json::to_string_pretty(&schema)?);
    Ok(ExitCode::SUCCESS)
}

/// `hecate backends`.
pub fn backends(json: bool) -> anyhow::Result<ExitCode> {
    crate::init_process();
    let list = registry::backends();
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|b| serde_json::json!({"role": b.role, "type": b.type_name, "summary": b.summary}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for b in list {
            println!("{:<16} {:<12} {}", b.role.to_string(), b.type_name, b.summary);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `hecate completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> anyhow::Result<ExitCode> {
    clap_complete::generate(shell, &mut Cli::command(), "hecate", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
