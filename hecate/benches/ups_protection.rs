//! Benchmark (not a test): detection latency from a `upsrw` change to the trigger, the daemon's
//! RSS and CPU at 1 s polling over a minute, and `hecate simulate` over the trace corpus.
//!
//! Run as root with the test peers installed: `cargo bench -p hecate --bench ups_protection`.
//! `HECATE_BENCH_SECONDS` shortens the RSS/CPU window (default 60).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hecate_test_support::Upsd;

fn daemon(ups: &Upsd, dir: &Path, poll: &str) -> Child {
    let yaml = format!(
        "host: bench
state_dir: {}
daemon: {{ poll_interval: {poll}, metrics_listen: null }}
budget: {{ default_shutdown_budget: 10s }}
power_sources:
  - {{ type: nut, name: atlas, ups: {}, endpoint: \"{}\" }}
nodes:
  - {{ name: s1, address: x, role: server, controllers: [ {{ type: simulated, step_duration: 10ms }} ] }}
",
        dir.join("state").display(),
        ups.ups_name(),
        ups.addr()
    );
    let cfg = dir.join("hecate.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_hecate"))
        .args(["daemon", "--config", cfg.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn state_of(dir: &Path) -> Option<String> {
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/status.json")).ok()?).ok()?;
    s["sources"][0]["decision"]["state"].as_str().map(str::to_string)
}

fn wait_state(dir: &Path, want: &str, timeout: Duration) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if state_of(dir).as_deref() == Some(want) {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn detection(poll_s: f64) -> f64 {
    let ups = Upsd::start("atlasups");
    let dir = tempfile::tempdir().unwrap();
    let mut child = daemon(&ups, dir.path(), &format!("{}ms", (poll_s * 1000.0) as u64));
    wait_state(dir.path(), "online", Duration::from_secs(30)).expect("daemon never saw online");
    ups.set_var("battery.runtime", "5");
    // Measured from the moment upsd serves the on-battery status.
    ups.set_var("ups.status", "OB DISCHRG");
    let t0 = Instant::now();
    let t1 = wait_state(dir.path(), "triggered", Duration::from_secs(60)).expect("no trigger");
    let _ = child.kill();
    let _ = child.wait();
    (t1 - t0).as_secs_f64()
}

/// (VmRSS, VmHWM, RssAnon, RssFile) in kB. RssFile is the binary's (and libc's) code pages
/// mapped from the page cache: clean and shared, reclaimable under memory pressure. RssAnon is
/// the process's own memory.
fn proc_rss_kb(pid: u32) -> (u64, u64, u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("RssAnon:"), field("RssFile:"))
}

fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// RSS, peak RSS, anonymous and file-backed RSS (MiB), CPU (%).
fn rss_cpu(seconds: u64) -> (f64, f64, f64, f64, f64) {
    let ups = Upsd::start("atlasups");
    let dir = tempfile::tempdir().unwrap();
    let mut child = daemon(&ups, dir.path(), "1s");
    wait_state(dir.path(), "online", Duration::from_secs(30)).expect("daemon never saw online");
    let pid = child.id();
    let c0 = proc_cpu_ticks(pid);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let c1 = proc_cpu_ticks(pid);
    let wall = t0.elapsed().as_secs_f64();
    let (rss, hwm, anon, file) = proc_rss_kb(pid);
    let _ = child.kill();
    let _ = child.wait();
    // /proc ticks are USER_HZ, 100 on Linux.
    let cpu_pct = (c1 - c0) as f64 / 100.0 / wall * 100.0;
    let mib = |kb: u64| kb as f64 / 1024.0;
    (mib(rss), mib(hwm), mib(anon), mib(file), cpu_pct)
}

fn traces_dir() -> PathBuf {
    std::env::var_os("HECATE_TRACES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces"))
}

fn simulate_time() -> (f64, usize) {
    let dir = traces_dir();
    let n = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "csv"))
        .count();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        let o = Command::new(env!("CARGO_BIN_EXE_hecate"))
            .args([
                "simulate",
                "--trace",
                dir.to_str().unwrap(),
                "--runs",
                dir.join("runs.json").to_str().unwrap(),
                "--json",
            ])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        assert!(o.status.success());
        best = best.min(t0.elapsed().as_secs_f64());
    }
    (best, n)
}

fn main() {
    hecate_test_support::require_root();
    let (sim_s, n) = simulate_time();
    println!("simulate: {n} traces in {:.3} s (best of 5, whole process)", sim_s);
    for poll in [1.0, 2.0] {
        let runs: Vec<f64> = (0..3).map(|_| detection(poll)).collect();
        let max = runs.iter().copied().fold(0.0, f64::max);
        println!(
            "detection latency at {poll} s polling, debounce 3: {} s (max {max:.2} s; target ≤ poll + debounce = {:.1} s)",
            runs.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
            poll * 4.0
        );
    }
    let secs = std::env::var("HECATE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let (rss, hwm, anon, file, cpu) = rss_cpu(secs);
    println!(
        "daemon at 1 s polling over {secs} s: RSS {rss:.1} MiB (peak {hwm:.1} MiB; own memory {anon:.1} MiB, \
         code pages from the page cache {file:.1} MiB), CPU {cpu:.3} %"
    );
}
