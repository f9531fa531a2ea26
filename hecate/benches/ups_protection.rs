//! Benchmark (not a test): detection latency from a `upsrw` change to the trigger, the daemon's
//! RSS and CPU at 1 s polling over a minute beside NUT's own `upsmon` watching the same upsd the
//! same way, and `hecate simulate` over both trace corpora.
//!
//! Run as root with the test peers installed: `cargo bench -p hecate --bench ups_protection`.
//! `HECATE_BENCH_SECONDS` shortens the RSS/CPU window (default 60); `HECATE_TRACES_DIR` and
//! `HECATE_PHYSICS_TRACES_DIR` name the corpora (default ../shared/traces, traces-physics).
//! `HECATE_BENCH_ONLY=footprint` measures only the RSS and CPU (for trying release profiles);
//! `HECATE_BENCH_INSPECT=PROGRAM` runs `PROGRAM PID` on the daemon before it is stopped (to read
//! its /proc/PID/pagemap, say).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hecate_test_support::{Upsd, Upsmon, UpsmonRole};

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

/// CPU time the process has used, in ns: the scheduler's own count (/proc/PID/schedstat), not the
/// 10 ms ticks of /proc/PID/stat, which are too coarse for a process using 0.05 % of a CPU.
fn proc_cpu_ns(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
    s.split_whitespace().next().unwrap().parse().unwrap()
}

/// (Pss, private) in kB: the share of the RSS that is the process's own.
fn proc_pss_kb(pid: u32) -> (u64, u64) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    let field = |name: &str| -> u64 {
        s.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).sum()
    };
    (field("Pss:"), field("Private_Clean:") + field("Private_Dirty:"))
}

/// Resident kB per mapped file (and "[anon]" for the rest), the largest first: where the RSS is.
fn rss_by_mapping(pid: u32) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut by: std::collections::BTreeMap<String, u64> = Default::default();
    let mut current = String::new();
    for line in s.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && first.chars().next().is_some_and(|c| c.is_ascii_hexdigit()) {
            let path = line.split_whitespace().nth(5).unwrap_or("[anon]");
            current = Path::new(path).file_name().map_or(path.to_string(), |f| f.to_string_lossy().into_owned());
        } else if first == "Rss:" {
            *by.entry(current.clone()).or_default() += words.next().and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    let mut v: Vec<(String, u64)> = by.into_iter().filter(|(_, kb)| *kb > 0).collect();
    v.sort_by_key(|(_, kb)| std::cmp::Reverse(*kb));
    v.iter().map(|(name, kb)| format!("{name} {kb} kB")).collect::<Vec<_>>().join(", ")
}

/// One process's memory and CPU over the window.
struct Footprint {
    /// VmRSS, VmHWM, RssAnon, RssFile, Pss, private (kB)
    kb: [u64; 6],
    cpu_pct: f64,
}

impl Footprint {
    fn line(&self, what: &str, secs: u64) -> String {
        let mib = |kb: u64| kb as f64 / 1024.0;
        let [rss, hwm, anon, file, pss, private] = self.kb;
        format!(
            "{what} at 1 s polling over {secs} s: RSS {:.1} MiB (peak {:.1} MiB; own memory {:.1} MiB, \
             mapped from files {:.1} MiB; Pss {:.1} MiB, private {:.1} MiB), CPU {:.3} %",
            mib(rss),
            mib(hwm),
            mib(anon),
            mib(file),
            mib(pss),
            mib(private),
            self.cpu_pct
        )
    }
}

/// Hecate's daemon and NUT's upsmon, each polling the same real upsd every second, measured over
/// the same window: RSS as the kernel counts it, CPU time over wall time.
fn rss_cpu(seconds: u64) -> (Footprint, Footprint) {
    let ups = Upsd::start("atlasups");
    let dir = tempfile::tempdir().unwrap();
    let mut child = daemon(&ups, dir.path(), "1s");
    wait_state(dir.path(), "online", Duration::from_secs(30)).expect("daemon never saw online");
    // upsmon as a NAS would run it: POLLFREQ 1 (the helper's), a secondary of the same UPS
    let upsmon = Upsmon::start(&ups, ups.secondary_user(), ups.secondary_password(), UpsmonRole::Secondary, 15);
    let pids = [child.id(), upsmon.pid()];
    let c0 = pids.map(proc_cpu_ns);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let c1 = pids.map(proc_cpu_ns);
    let wall = t0.elapsed().as_secs_f64();
    let measure = |i: usize| {
        let (rss, hwm, anon, file) = proc_rss_kb(pids[i]);
        let (pss, private) = proc_pss_kb(pids[i]);
        Footprint { kb: [rss, hwm, anon, file, pss, private], cpu_pct: (c1[i] - c0[i]) as f64 / 1e9 / wall * 100.0 }
    };
    let (hecate, nut) = (measure(0), measure(1));
    println!("hecate daemon's resident memory by mapping: {}", rss_by_mapping(pids[0]));
    // HECATE_BENCH_INSPECT=PROGRAM: run PROGRAM PID while the daemon still runs (e.g. a pagemap reader).
    if let Some(program) = std::env::var_os("HECATE_BENCH_INSPECT") {
        let _ = Command::new(program).arg(pids[0].to_string()).status();
    }
    let _ = child.kill();
    let _ = child.wait();
    (hecate, nut)
}

/// The two trace corpora, as scripts/score-traces takes them.
fn trace_dirs() -> [PathBuf; 2] {
    let dir = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(default))
    };
    [dir("HECATE_TRACES_DIR", "shared/traces"), dir("HECATE_PHYSICS_TRACES_DIR", "shared/traces-physics")]
}

/// `hecate simulate` over every trace of both corpora, one whole process per corpus as
/// scripts/score-traces runs it: the best of 5 of the total, and the number of traces.
fn simulate_time() -> (f64, usize) {
    let dirs = trace_dirs();
    let n: usize = dirs
        .iter()
        .map(|dir| {
            std::fs::read_dir(dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "csv"))
                .count()
        })
        .sum();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t0 = Instant::now();
        for dir in &dirs {
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
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        best = best.min(t0.elapsed().as_secs_f64());
    }
    (best, n)
}

fn main() {
    hecate_test_support::require_root();
    // HECATE_BENCH_ONLY=footprint: the RSS/CPU part alone (profile experiments).
    if std::env::var("HECATE_BENCH_ONLY").as_deref() != Ok("footprint") {
        latency_and_simulate();
    }
    let secs = std::env::var("HECATE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let (hecate, upsmon) = rss_cpu(secs);
    println!("{}", hecate.line("hecate daemon", secs));
    println!("{}", upsmon.line("NUT upsmon", secs));
}

fn latency_and_simulate() {
    let (sim_s, n) = simulate_time();
    println!("simulate: {n} traces of both corpora in {:.3} s (best of 5, one whole process per corpus)", sim_s);
    for poll in [1.0, 2.0] {
        let runs: Vec<f64> = (0..3).map(|_| detection(poll)).collect();
        let max = runs.iter().copied().fold(0.0, f64::max);
        println!(
            "detection latency at {poll} s polling, debounce 3: {} s (max {max:.2} s; target ≤ poll + debounce = {:.1} s)",
            runs.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
            poll * 4.0
        );
    }
}
