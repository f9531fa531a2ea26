//! The small commands: `config check`, `config schema`, `backends`, `completions`, `manpages`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::CommandFactory;
use hecate_core::config::{Config, ConfigError};
use hecate_core::registry;
use hecate_core::runtime::Runtime;

use crate::cli::Cli;

/// `hecate config check FILE...`: the same loading code the daemon uses, then every backend is
/// built as the daemon would build it (files present and readable, keys parse; no network).
/// Every problem is listed with its file, line and field; any problem fails the check, so the
/// installer's and the self-update's gates refuse what would leave the daemon degraded. With
/// `build` false, only parsing and validation.
pub fn config_check(files: &[PathBuf], build: bool) -> anyhow::Result<ExitCode> {
    crate::init_process();
    let mut failed = false;
    for f in files {
        let checked = std::fs::read_to_string(f)
            .map_err(|e| ConfigError::located("", f, vec![(String::new(), format!("cannot read: {e}"))]))
            .and_then(|text| {
                let (cfg, mut warnings) = Config::from_yaml(&text, f)?;
                if !build {
                    return Ok((cfg, warnings));
                }
                let rt = Runtime::build_degraded(&cfg);
                // The kubeconfig need not be on this machine (it is read at the first request):
                // what cannot be read is said, never a problem.
                if let Some(c) = crate::status::credential_status(&rt) {
                    let line = format!("cluster: kubernetes credentials: {}", c.summary);
                    if c.warning || c.days_left.is_none() {
                        warnings.push(line);
                    } else {
                        println!("  {line}");
                    }
                }
                let mut problems: Vec<(String, String)> = rt
                    .unavailable
                    .iter()
                    .map(|b| (b.field.clone(), format!("cannot be built: {}: {}", b.error.kind, b.error.detail())))
                    .collect();
                problems.extend(crate::forward::key_problems(&cfg));
                if problems.is_empty() { Ok((cfg, warnings)) } else { Err(ConfigError::located(&text, f, problems)) }
            });
        match checked {
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

/// `hecate manpages DIR`: hecate.1 and hecate-SUBCOMMAND.1 (hidden ones left out), rendered from
/// the same definition the command line is parsed with, so they cannot drift from it.
pub fn manpages(dir: &Path) -> anyhow::Result<ExitCode> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
