//! The progress display of `hecate shutdown --execute` as a person sees it: in a pseudo-terminal
//! (util-linux's `script` gives the process one; the `vt100` crate turns what it drew into the
//! screen), the screen ends showing every stage of the plan done; through a pipe the output is
//! the plain form, one line per change and no terminal control sequence; with `--json`, one JSON
//! object per line.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SCRIPT: &str = "/usr/bin/script";
const ROWS: u16 = 60;
const COLS: u16 = 140;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// configs/sim.yaml with its state in `dir`.
fn sim_config(dir: &Path) -> PathBuf {
    let yaml = std::fs::read_to_string(repo().join("configs/sim.yaml")).unwrap();
    let yaml = yaml.replace("state_dir: /tmp/hecate-sim", &format!("state_dir: {}", dir.join("state").display()));
    let path = dir.join("hecate.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The stage names of the shutdown plan, from the dry run's JSON.
fn stages(cfg: &Path) -> Vec<String> {
    let o = Command::new(env!("CARGO_BIN_EXE_hecate"))
        .args(["shutdown", "--json", "--config"])
        .arg(cfg)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    plan["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap().to_string()).collect()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[test]
fn on_a_terminal_the_screen_ends_showing_every_stage_done() {
    assert!(Path::new(SCRIPT).exists(), "{SCRIPT} (util-linux's bsdutils) is missing");
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path());
    let stages = stages(&cfg);
    assert!(stages.len() >= 5, "{stages:?}");
    // `script` runs the command in a new pseudo-terminal (of no size until stty gives it one)
    // and copies everything drawn on it to its own standard output.
    let inner = format!(
        "stty cols {COLS} rows {ROWS}; exec {} shutdown --execute --reason 'test: in a terminal' --config {}",
        shell_quote(env!("CARGO_BIN_EXE_hecate")),
        shell_quote(cfg.to_str().unwrap())
    );
    let o = Command::new(SCRIPT)
        .args(["-qefc", &inner, "/dev/null"])
        .env("TERM", "xterm-256color")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let raw = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "exit {:?}:\n{raw}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
    // It drew in place: cursor movements and line clears, not one line per change.
    assert!(raw.contains("\u{1b}["), "no terminal control sequence: not the live display\n{raw}");
    let size = |n: u16| std::num::NonZeroU16::new(n).unwrap();
    let mut term = vt100::Parser::new(size(ROWS), size(COLS), 0);
    term.process(&o.stdout);
    // Row by row: a line as wide as the screen runs on into the next in `contents()`.
    let screen: String = term.screen().rows(0, COLS).map(|r| r.trim_end().to_string() + "\n").collect();
    let total = stages.len();
    for (i, name) in stages.iter().enumerate() {
        let line = format!("✓ {}/{total} {name}  ", i + 1);
        assert!(screen.contains(&line), "{line:?} not on the screen:\n{screen}");
    }
    assert!(screen.contains("shutdown: test: in a terminal"), "{screen}");
    assert!(screen.contains("shutdown finished in"), "{screen}");
    // The log went to its file, named on the screen, not over the display.
    assert!(!screen.contains(" INFO "), "{screen}");
    let log = std::fs::read_to_string(dir.path().join("state/shutdown.log")).unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(screen.contains("shutdown.log"), "{screen}");
    // Nothing still spinning.
    assert!(!screen.contains('⠋') && !screen.contains('⠙'), "{screen}");
}

#[test]
fn without_a_terminal_the_output_is_one_plain_line_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path());
    let stages = stages(&cfg);
    let o = Command::new(env!("CARGO_BIN_EXE_hecate"))
        .args(["shutdown", "--execute", "--config"])
        .arg(&cfg)
        .env("TERM", "xterm-256color")
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}{err}");
    assert!(!out.contains('\u{1b}') && !out.contains('\r'), "control characters in the plain form:\n{out:?}");
    for (i, name) in stages.iter().enumerate() {
        let started = format!("stage {}/{}: {name} (", i + 1, stages.len());
        let done = format!("stage {name} done in ");
        assert!(out.contains(&started) && out.contains(&done), "{name}:\n{out}");
    }
    // Every line stands alone, stamped; the log stays on standard error.
    for line in out.lines().filter(|l| !l.is_empty()) {
        assert!(line.starts_with('[') || line.starts_with("shutdown finished") || line.starts_with("  "), "{line:?}");
    }
    assert!(err.contains("INFO"), "{err}");
    assert!(!out.contains("INFO"), "{out}");
    // Words said once: the step names the operation and the node, its message what happened.
    assert!(out.contains("on titan-0b (") && out.contains("): simulated ok"), "{out}");
    assert!(!out.contains("on titan-0b: stop") && !out.contains("power on on"), "{out}");
}

#[test]
fn with_json_each_change_is_one_object() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sim_config(dir.path());
    let o = Command::new(env!("CARGO_BIN_EXE_hecate"))
        .args(["shutdown", "--execute", "--json", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"run_finished"), "{kinds:?}");
    assert_eq!(events.last().unwrap()["report"]["outcome"], "success");
    assert!(kinds.contains(&"stage_started") && kinds.contains(&"step_finished"), "{kinds:?}");
}
