//! `hecate nodes keyscan`: each node's SSH host keys and their fingerprints, for the operator to
//! confirm (against the node's console, `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on
//! it), and with `--write` the ones its known_hosts file lacks added to it. A key that differs
//! from the listed one is shown and never written: replacing it is the operator's decision.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use hecate_backends::node::ssh_systemd::SshSystemdConfig;
use hecate_backends::node::ssh_systemd::keyscan::{self, HostKey, Listed};
use hecate_core::config::Config;

/// One node's SSH endpoint as a config's `ssh_systemd` controller names it.
#[derive(Debug, Clone)]
struct Endpoint {
    node: String,
    host: String,
    port: u16,
    known_hosts: PathBuf,
    timeout: Duration,
}

/// Every `ssh_systemd` controller of the config's nodes, in config order.
fn endpoints(cfg: &Config) -> Vec<Endpoint> {
    let mut out = Vec::new();
    for node in &cfg.nodes {
        for c in &node.controllers {
            // typetag writes the type first; the rest is the backend's own config
            let Ok(serde_json::Value::Object(mut v)) = serde_json::to_value(c) else { continue };
            if v.remove("type").and_then(|t| t.as_str().map(str::to_string)).as_deref() != Some("ssh_systemd") {
                continue;
            }
            let Ok(ssh) = serde_json::from_value::<SshSystemdConfig>(serde_json::Value::Object(v)) else { continue };
            out.push(Endpoint {
                node: node.name.clone(),
                host: node.address.clone(),
                port: ssh.port,
                known_hosts: ssh.known_hosts.clone(),
                timeout: *ssh.connect_timeout,
            });
        }
    }
    out
}

/// `hecate nodes keyscan [--config FILE] [--write [--yes]]`. Exit 0 when every node answered
/// and no key conflicts with known_hosts (after `--write`: every key is listed), 1 otherwise.
pub async fn command(config: &Path, write: bool, yes: bool) -> anyhow::Result<ExitCode> {
    let cfg = crate::load_config(config)?;
    let nodes = endpoints(&cfg);
    if nodes.is_empty() {
        println!("no node has an ssh_systemd controller: nothing to scan");
        return Ok(ExitCode::SUCCESS);
    }
    let scans = hecate_core::runtime::join_all(nodes.iter().map(|n| keyscan::scan(&n.host, n.port, n.timeout))).await;
    let mut trouble = false;
    // per known_hosts file: the keys to add, as (endpoint, key)
    let mut missing: BTreeMap<PathBuf, Vec<(&Endpoint, HostKey)>> = BTreeMap::new();
    for (n, scan) in nodes.iter().zip(scans) {
        let shown = if n.port == 22 { n.host.clone() } else { format!("{}:{}", n.host, n.port) };
        println!("{} ({shown}), known_hosts {}", n.node, n.known_hosts.display());
        let keys = match scan {
            Ok(keys) => keys,
            Err(e) => {
                trouble = true;
                println!("  cannot fetch its host keys: {}: {}", e.kind, e.detail());
                continue;
            }
        };
        for key in keys {
            let listed = key.listed(&n.known_hosts, &n.host, n.port);
            let verdict = match &listed {
                Ok(Listed::Known) => "listed".to_string(),
                Ok(Listed::Unknown) => "NOT LISTED".to_string(),
                Ok(Listed::Changed(was)) => {
                    trouble = true;
                    format!("CHANGED: known_hosts lists {} for this node (reinstalled, or an impostor)", was.join(", "))
                }
                Ok(Listed::Revoked(line)) => {
                    trouble = true;
                    format!("REVOKED in line {line}")
                }
                Err(e) => {
                    trouble = true;
                    format!("cannot read known_hosts: {e}")
                }
            };
            println!("  {:<21} {}  {verdict}", key.algorithm, key.fingerprint);
            if matches!(listed, Ok(Listed::Unknown)) {
                missing.entry(n.known_hosts.clone()).or_default().push((n, key));
            }
        }
    }
    let count: usize = missing.values().map(Vec::len).sum();
    if count == 0 {
        if trouble {
            println!("\nsome nodes need attention (above); known_hosts was not changed");
        } else {
            println!("\nevery key is listed");
        }
        return Ok(if trouble { ExitCode::FAILURE } else { ExitCode::SUCCESS });
    }
    if !write {
        println!(
            "\n{count} key(s) not listed. Compare each fingerprint with the node's own (`ssh-keygen -lf \
             /etc/ssh/ssh_host_ed25519_key.pub` on its console), then add them with --write."
        );
        return Ok(ExitCode::FAILURE);
    }
    for (file, keys) in &missing {
        if !yes && !confirm(&format!("\nadd these {} key(s) to {}? [y/N] ", keys.len(), file.display()))? {
            println!("{} left as it was", file.display());
            trouble = true;
            continue;
        }
        for (n, key) in keys {
            key.record(file, &n.host, n.port).map_err(|e| {
                anyhow::anyhow!("cannot add {}'s {} key to {}: {e}", n.node, key.algorithm, file.display())
            })?;
        }
        println!("added {} key(s) to {}", keys.len(), file.display());
    }
    Ok(if trouble { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Asks on the terminal; anything but `y`/`yes` (or no terminal to ask on) is no.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        anyhow::bail!(
            "--write asks before it writes, and there is no terminal to ask on: check the fingerprints, then add --yes"
        );
    }
    print!("{question}");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}
