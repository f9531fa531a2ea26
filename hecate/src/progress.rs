//! What a person at a terminal sees while a run goes on (`startup`/`shutdown --execute`,
//! `demo`): on a terminal, one live area that updates in place (the battery and the threshold in
//! the demo, the run's stages and the steps of the one in progress, each with its state and
//! elapsed time), with finished runs, failures and the story of the demo printed above it; not on
//! a terminal, one plain line per change; with `--json`, one JSON object per change. The
//! daemon's own path never uses this: it logs ([`crate::run::log_sink`]).

use std::io::IsTerminal as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hecate_core::engine::{EngineEvent, EventSink, StepOutcome};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A live display that updates in place (a terminal).
    Live,
    /// One line per change (a pipe, a file, a dumb terminal).
    Plain,
    /// One JSON object per change (`--json`).
    Json,
}

impl Style {
    /// `Json` when asked for; `Live` when standard output is a terminal that can move its cursor;
    /// `Plain` otherwise.
    pub fn choose(json: bool) -> Style {
        let dumb = std::env::var("TERM").map_or(true, |t| t.is_empty() || t == "dumb");
        if json {
            Style::Json
        } else if std::io::stdout().is_terminal() && !dumb {
            Style::Live
        } else {
            Style::Plain
        }
    }
}

/// A run's display.
pub struct Progress {
    style: Style,
    t0: Instant,
    live: Option<Live>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("style", &self.style).finish_non_exhaustive()
    }
}

/// The live area: a battery line (the demo), then the current run's stages, the running stage's
/// steps under it.
struct Live {
    mp: MultiProgress,
    battery: Mutex<Option<ProgressBar>>,
    run: Mutex<LiveRun>,
}

#[derive(Default)]
struct LiveRun {
    /// What runs (`shutdown: why`), shown above its stages.
    title: Option<String>,
    /// Each stage so far: its bar, and what it said when it ended.
    stages: Vec<ProgressBar>,
    /// The running stage's steps: (step id, bar).
    steps: Vec<(String, ProgressBar)>,
    /// The running stage: name, steps done, steps in all, failed.
    current: Option<(String, usize, usize, usize)>,
    /// The last stage's line, to put the steps after.
    last_line: Option<ProgressBar>,
    header: Option<ProgressBar>,
    /// The running stage is the plan's last.
    last_stage: bool,
}

/// Above this many steps in a stage, finished steps leave the live area at once (the stage's
/// line counts them): a screen holds a few dozen lines.
const MAX_STEP_LINES: usize = 12;

fn style(template: &str) -> ProgressStyle {
    // The templates are constants of this file; one that does not parse is a bug here.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|e| unreachable!("progress template {template:?}: {e}"))
        .tick_strings(&["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏", "·"])
}

const RUNNING_STAGE: &str = "{spinner} {msg} {elapsed:>4}";
const RUNNING_STEP: &str = "    {spinner} {msg} {elapsed:>4}";
const DONE: &str = "{msg}";
const BATTERY: &str = "{prefix} [{bar:24}] {msg}";

impl Progress {
    /// A display in `style`.
    pub fn new(style: Style) -> Arc<Progress> {
        let live = (style == Style::Live).then(|| Live {
            mp: MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10)),
            battery: Mutex::new(None),
            run: Mutex::default(),
        });
        Arc::new(Progress { style, t0: Instant::now(), live })
    }

    /// The style in use.
    pub fn style(&self) -> Style {
        self.style
    }

    /// The live display, for log lines to be printed above it.
    pub fn multi(&self) -> Option<MultiProgress> {
        self.live.as_ref().map(|l| l.mp.clone())
    }

    fn stamp(&self) -> String {
        format!("[{:6.1}s]", self.t0.elapsed().as_secs_f64())
    }

    /// A line of the story (the demo), printed above the live area, or as a line of its own.
    pub fn say(&self, line: &str) {
        match (&self.live, self.style) {
            (Some(l), _) => {
                let _ = l.mp.println(line);
            }
            (None, Style::Json) => println!("{}", serde_json::json!({ "event": "note", "text": line })),
            (None, _) => println!("{} {line}", self.stamp()),
        }
    }

    /// A run begins: `kind: reason` heads its stages.
    pub fn begin_run(&self, title: &str) {
        match &self.live {
            Some(l) => {
                let Ok(mut run) = l.run.lock() else { return };
                run.title = Some(title.to_string());
            }
            None if self.style == Style::Json => {
                println!("{}", serde_json::json!({ "event": "run_started", "title": title }))
            }
            None => println!("{} {title}", self.stamp()),
        }
    }

    /// The battery line of the demo: always current on a terminal (the caller decides which
    /// readings make a line of their own elsewhere).
    pub fn battery(&self, ups: &str, charge_pct: Option<f64>, text: &str) {
        let Some(l) = &self.live else { return };
        let Ok(mut bar) = l.battery.lock() else { return };
        let pb = bar.get_or_insert_with(|| {
            let pb = l.mp.insert(0, ProgressBar::new(100));
            pb.set_style(style(BATTERY));
            pb.set_prefix(format!("ups {ups}"));
            pb
        });
        if let Some(c) = charge_pct.filter(|c| c.is_finite()) {
            // Whole percents: the bar is 0-100.
            pb.set_position(c.clamp(0.0, 100.0).round() as u64);
        }
        pb.set_message(text.to_string());
    }

    /// Everything shown is final: the live area stays as it is on the screen.
    pub fn finish(&self) {
        let Some(l) = &self.live else { return };
        if let Ok(mut b) = l.battery.lock()
            && let Some(pb) = b.take()
        {
            // As it was last, not filled up.
            pb.abandon();
        }
        self.end_run();
    }

    /// The sink the engine reports to.
    pub fn sink(self: &Arc<Self>) -> EventSink {
        let me = self.clone();
        Arc::new(move |ev| me.event(ev))
    }

    fn event(&self, ev: EngineEvent) {
        match self.style {
            Style::Live => self.live_event(ev),
            Style::Plain => self.plain_event(&ev),
            Style::Json => println!("{}", event_json(&ev)),
        }
    }

    fn plain_event(&self, ev: &EngineEvent) {
        let t = self.stamp();
        match ev {
            EngineEvent::StageStarted { index, total, name, steps } => {
                println!("{t} stage {index}/{total}: {name} ({steps} step(s))")
            }
            EngineEvent::StepStarted { description, .. } => println!("{t}   … {description}"),
            EngineEvent::StepFinished(o) => println!("{t}   {}", step_line(o)),
            EngineEvent::StageFinished { name, duration_s, failed } => {
                let f = if *failed > 0 { format!(", {failed} failed") } else { String::new() };
                println!("{t} stage {name} done in {duration_s:.1}s{f}");
            }
        }
    }

    fn live_event(&self, ev: EngineEvent) {
        let Some(l) = &self.live else { return };
        let Ok(mut run) = l.run.lock() else { return };
        match ev {
            EngineEvent::StageStarted { index, total, name, steps } => {
                if index == 1 {
                    // A run that stopped before its last stage (a failed step it depends on)
                    // is put above now.
                    let title = run.title.take();
                    drop(run);
                    self.end_run();
                    let Ok(r) = l.run.lock() else { return };
                    run = r;
                    run.title = title;
                    if let Some(title) = run.title.clone() {
                        let header = l.mp.add(ProgressBar::new_spinner());
                        header.set_style(style(DONE));
                        header.set_message(title);
                        header.tick();
                        run.header = Some(header);
                    }
                }
                let pb = l.mp.add(ProgressBar::new_spinner());
                pb.set_style(style(RUNNING_STAGE));
                pb.set_message(format!("{index}/{total} {name}  0/{steps} steps"));
                pb.enable_steady_tick(Duration::from_millis(100));
                run.stages.push(pb.clone());
                run.last_line = Some(pb);
                run.current = Some((format!("{index}/{total} {name}"), 0, steps, 0));
                run.last_stage = index == total;
            }
            EngineEvent::StepStarted { id, description } => {
                let after = run.steps.last().map(|(_, b)| b.clone()).or_else(|| run.last_line.clone());
                let pb = ProgressBar::new_spinner();
                let pb = match after {
                    Some(a) => l.mp.insert_after(&a, pb),
                    None => l.mp.add(pb),
                };
                pb.set_style(style(RUNNING_STEP));
                pb.set_message(description);
                pb.tick();
                run.steps.push((id, pb));
            }
            EngineEvent::StepFinished(o) => {
                let many = run.current.as_ref().is_some_and(|c| c.2 > MAX_STEP_LINES);
                if let Some(c) = run.current.as_mut() {
                    c.1 += 1;
                    c.3 += usize::from(!o.ok);
                }
                if !o.ok {
                    let _ = l.mp.println(format!("  {}", step_line(&o)));
                }
                let i = run.steps.iter().position(|(id, _)| *id == o.id);
                match i {
                    Some(i) if many || !o.ok => {
                        let (_, pb) = run.steps.remove(i);
                        pb.finish_and_clear();
                        l.mp.remove(&pb);
                    }
                    Some(i) => {
                        let pb = &run.steps[i].1;
                        pb.set_style(style(DONE));
                        pb.finish_with_message(format!("    {}", step_line(&o)));
                    }
                    // Done in an earlier, interrupted run: counted, not shown.
                    None => {}
                }
                if let (Some((name, done, all, failed)), Some(pb)) = (&run.current, run.stages.last()) {
                    let f = if *failed > 0 { format!(", {failed} failed") } else { String::new() };
                    pb.set_message(format!("{name}  {done}/{all} steps{f}"));
                }
            }
            EngineEvent::StageFinished { name: _, duration_s, failed } => {
                for (_, pb) in run.steps.drain(..) {
                    pb.finish_and_clear();
                    l.mp.remove(&pb);
                }
                let (label, all) = run.current.take().map(|c| (c.0, c.2)).unwrap_or_default();
                if let Some(pb) = run.stages.last() {
                    let mark = if failed > 0 { "✗" } else { "✓" };
                    let f = if failed > 0 { format!(", {failed} failed") } else { String::new() };
                    pb.set_style(style(DONE));
                    pb.finish_with_message(format!("{mark} {label}  {all} step(s){f}  {duration_s:.1}s"));
                }
                if run.last_stage {
                    drop(run);
                    self.end_run();
                }
            }
        }
    }

    /// The run's lines leave the live area and are printed above it, where they stay: when a
    /// run has ended (its last stage did, or the caller knows it ended earlier).
    pub fn end_run(&self) {
        let Some(l) = &self.live else { return };
        let Ok(mut run) = l.run.lock() else { return };
        let run = std::mem::take(&mut *run);
        let mut lines = Vec::new();
        if let Some(h) = &run.header {
            lines.push(h.message());
        }
        for pb in run.steps.iter().map(|(_, b)| b).chain(run.stages.iter()).chain(run.header.iter()) {
            pb.finish_and_clear();
            l.mp.remove(pb);
        }
        lines.extend(run.stages.iter().map(|pb| format!("  {}", pb.message())));
        if !lines.is_empty() {
            let _ = l.mp.println(lines.join("\n"));
        }
    }
}

/// A finished step in one line: mark, what, how long, what it said.
fn step_line(o: &StepOutcome) -> String {
    let mark = if o.resumed {
        "↷ (done before resume)"
    } else if o.ok {
        "✓"
    } else {
        "✗"
    };
    let msg = if o.message.is_empty() { String::new() } else { format!(": {}", o.message) };
    format!("{mark} {} ({:.1}s){msg}", o.description, o.duration_s)
}

/// An engine event as one JSON object.
pub fn event_json(ev: &EngineEvent) -> serde_json::Value {
    match ev {
        EngineEvent::StageStarted { index, total, name, steps } => serde_json::json!({
            "event": "stage_started", "index": index, "total": total, "stage": name, "steps": steps,
        }),
        EngineEvent::StepStarted { id, description } => {
            serde_json::json!({ "event": "step_started", "step": id, "description": description })
        }
        EngineEvent::StepFinished(o) => serde_json::json!({
            "event": "step_finished", "step": o.id, "description": o.description, "ok": o.ok,
            "message": o.message, "duration_s": o.duration_s, "resumed": o.resumed,
        }),
        EngineEvent::StageFinished { name, duration_s, failed } => serde_json::json!({
            "event": "stage_finished", "stage": name, "duration_s": duration_s, "failed": failed,
        }),
    }
}
