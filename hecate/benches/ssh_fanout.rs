//! SSH fan-out: how long the shutdown's stop stage takes over many real sshd nodes at once,
//! against the same work done one node at a time. Not a timed test: it prints figures.
//!
//! Each node is an OpenSSH sshd on its own loopback address (127.0.0.10, .11, ...) whose
//! `hecate-k3s-stop` shim (the stop step's command) takes 1 s, like a stop that has something to
//! do. Every
//! run builds fresh controllers, so each step opens its connection (handshake and login
//! included), as the first SSH stage of a real shutdown does.
//!
//! `cargo bench -p hecate --bench ssh_fanout` (root and the peers installed:
//! scripts/install-test-deps.sh). `HECATE_BENCH_NODES=50,200` picks the sizes (default: 50 and
//! 200); `HECATE_BENCH_SERIAL=measure|compute` picks how the one-by-one baseline is found
//! (default: measured for up to 50 nodes, else computed as N × the mean time of one node's stop
//! measured one at a time on 5 nodes).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hecate_core::config::Config;
use hecate_core::engine::{Engine, Outcome};
use hecate_core::plan::{Plan, shutdown_plan};
use hecate_core::runtime::Runtime;
use hecate_test_support::SshNodes;

/// What the `hecate-k3s-stop` shim takes per call.
const SHIM_DELAY: Duration = Duration::from_secs(1);

fn main() {
    hecate::init_process();
    let sizes: Vec<usize> = std::env::var("HECATE_BENCH_NODES")
        .unwrap_or_else(|_| "50,200".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("HECATE_BENCH_NODES: {s:?} is not a number")))
        .collect();
    let serial_mode = std::env::var("HECATE_BENCH_SERIAL").ok();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
    let target = 1.3 * SHIM_DELAY.as_secs_f64() + 1.0;
    println!("ssh fan-out: the stop stage, each node's stop shim taking {:.1} s", SHIM_DELAY.as_secs_f64());
    println!("target: fan-out stage <= 1.3 x {:.1} s + 1 s = {target:.1} s\n", SHIM_DELAY.as_secs_f64());
    let mut rows = Vec::new();
    for n in sizes {
        let t0 = std::time::Instant::now();
        let nodes = SshNodes::start(n, "bench");
        for node in nodes.iter() {
            node.set_delay("hecate-k3s-stop", SHIM_DELAY);
        }
        println!("{n} sshd nodes started in {:.1} s", t0.elapsed().as_secs_f64());
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));

        let (cpu0, busy0) = (own_cpu_s(), machine_busy_s());
        let fanout =
            rt.block_on(stop_stage(&nodes, &nodes.iter().map(|x| x.name()).collect::<Vec<_>>(), n, dir.path()));
        // Where the time went: Hecate's own CPU (handshakes, signatures, engine) against the whole
        // machine's, most of which goes to the sshd, sudo and shim processes standing in for the
        // nodes on the same two cores.
        let (cpu, busy) = (own_cpu_s() - cpu0, machine_busy_s() - busy0);
        println!("  fan-out (concurrency {n}): {fanout:.2} s; cpu: hecate {cpu:.2} s, whole machine {busy:.2} s");

        let measure = match serial_mode.as_deref() {
            Some("measure") => true,
            Some("compute") => false,
            _ => n <= 50,
        };
        let (serial, how) = if measure {
            let names: Vec<&str> = nodes.iter().map(|x| x.name()).collect();
            let s = rt.block_on(stop_stage(&nodes, &names, 1, dir.path()));
            (s, "measured".to_string())
        } else {
            // one node at a time on 5 nodes, fresh connections each
            let names: Vec<&str> = nodes.iter().take(5).map(|x| x.name()).collect();
            let one = rt.block_on(stop_stage(&nodes, &names, 1, dir.path())) / names.len() as f64;
            (one * n as f64, format!("computed: {n} x {one:.3} s"))
        };
        println!("  one by one (concurrency 1): {serial:.1} s ({how})");
        rows.push((n, fanout, serial, how));
    }
    println!("\nnodes | fan-out stage | target | one by one | speed-up");
    println!("------|---------------|--------|------------|---------");
    for (n, fanout, serial, how) in rows {
        let verdict = if fanout <= target { "within" } else { "OVER" };
        println!(
            "{n:>5} | {fanout:>11.2} s | {target:.1} s ({verdict}) | {serial:.1} s ({how}) | {:.1}x",
            serial / fanout
        );
    }
}

/// This process's user + system CPU time, seconds (from /proc/self/stat, in clock ticks of 1/100 s).
fn own_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // fields after the parenthesised command name; utime and stime are the 14th and 15th overall
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time all cores spent busy (not idle or waiting for I/O) since boot, seconds (/proc/stat).
fn machine_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpu: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0.0)).collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 = cpu.iter().enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum();
    busy / 100.0
}

/// Runs only the stop stage over `names` (all agents) with the given concurrency, with fresh
/// controllers; returns the stage's time in seconds.
async fn stop_stage(nodes: &SshNodes, names: &[&str], concurrency: usize, dir: &Path) -> f64 {
    let before: usize = nodes.iter().map(|n| n.calls().len()).sum();
    let mut yaml = format!(
        "host: bench
state_dir: {}
power_sources: [ {{ type: simulated, name: ups }} ]
shutdown: {{ concurrency: {concurrency}, step_timeout: 60s, controller_timeout: 60s }}
nodes:
",
        dir.display()
    );
    for name in names {
        let n = nodes.by_name(name).unwrap_or_else(|| panic!("no node {name}"));
        yaml += &format!(
            "  - {{ name: {}, address: {}, role: agent, controllers: [ {{ type: ssh_systemd, user: {}, \
             identity_file: {}, known_hosts: {}, port: {}, connect_timeout: 30s, command_timeout: 30s }} ] }}\n",
            n.name(),
            n.addr(),
            n.user(),
            n.identity_file().display(),
            nodes.known_hosts().display(),
            n.port()
        );
    }
    let (cfg, _) = Config::from_yaml(&yaml, Path::new("bench.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let rt = Arc::new(Runtime::build(&cfg).unwrap_or_else(|e| panic!("{e}")));
    let full = shutdown_plan(&cfg, &rt, "bench");
    let plan = Plan { stages: full.stages.into_iter().filter(|s| s.name == "stop-agents").collect(), ..full };
    assert_eq!(plan.stages.len(), 1, "the plan has no stop-agents stage");
    let engine = Engine::new(rt, hecate::run::engine_options(&cfg), Arc::new(|_| {}));
    let report = engine.execute(&plan, None).await;
    assert_eq!(report.outcome, Outcome::Success, "{:#?}", report.failures().collect::<Vec<_>>());
    let after: usize = nodes.iter().map(|n| n.calls().len()).sum();
    assert_eq!(after - before, names.len(), "each node must be stopped exactly once");
    report.stages[0].duration_s
}
