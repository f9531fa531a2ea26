//! `simulated`: a UPS in memory. Either a scripted battery model (mains lost and back, telemetry
//! link lost, load steps) or a replay of a recorded outage trace (the `hecate-trace v1` CSV format
//! of `../shared/traces`) in real time. Backs the embedded demo.

use std::time::Instant;

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::ONE_DAY;
use hecate_core::power::{PowerReading, PowerSource, PowerSourceConfig, UpsStatus};
use hecate_core::{BackendError, BuildContext, ErrorKind};
use serde::{Deserialize, Serialize};

/// A simulated UPS.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SimulatedUpsConfig {
    /// The source's name.
    pub name: String,
    /// Runtime of a full battery at `load` percent. 1s to 1 day; default 30m.
    #[serde(default = "default_runtime")]
    pub battery_runtime: HumanDuration,
    /// Time to recharge from empty on mains. 1s to 1 day; default 1h.
    #[serde(default = "default_recharge")]
    pub recharge_time: HumanDuration,
    /// Load in percent at the start. More than 0, at most 200.
    #[serde(default = "default_load")]
    #[schemars(range(max = 200.0), extend("exclusiveMinimum" = 0.0))]
    pub load: f64,
    /// Charge in percent at the start. 0 to 100.
    #[serde(default = "default_charge")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub initial_charge: f64,
    /// The UPS raises `LB` below this charge (percent). 0 to 100.
    #[serde(default = "default_low")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub low_battery_charge: f64,
    /// Factor on the reported `battery.runtime`: above 1 models optimistic firmware (aged cells).
    /// More than 0, at most 10; default 1.
    #[serde(default = "one")]
    #[schemars(range(max = 10.0), extend("exclusiveMinimum" = 0.0))]
    pub firmware_optimism: f64,
    /// Events, by time since the source started.
    #[serde(default)]
    pub script: Vec<ScriptStep>,
    /// Replay this trace file instead of the battery model: each read returns the trace's row in
    /// force at the time since the source started (an empty `ups.status` row is a poll without
    /// data). The trace's `#` ground-truth header is never read.
    #[serde(default)]
    pub trace: Option<std::path::PathBuf>,
    /// Trace seconds per real second when replaying (10 plays a 20-minute outage in 2 minutes).
    /// More than 0, at most 10000; default 1.
    #[serde(default = "one")]
    #[schemars(range(max = 10_000.0), extend("exclusiveMinimum" = 0.0))]
    pub speed: f64,
}

/// One scripted event.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptStep {
    /// When, since the source started. At most 1 day.
    pub at: HumanDuration,
    /// What happens.
    pub event: SimEvent,
    /// The new load in percent, for `event: load`. More than 0, at most 200.
    #[serde(default)]
    #[schemars(range(max = 200.0), extend("exclusiveMinimum" = 0.0))]
    pub percent: Option<f64>,
}

/// A scripted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SimEvent {
    /// Mains power fails: on battery.
    MainsLost,
    /// Mains power returns.
    MainsBack,
    /// Telemetry stops (reads fail with no data).
    LinkLost,
    /// Telemetry returns.
    LinkBack,
    /// The load changes to `percent`.
    Load,
}

fn default_runtime() -> HumanDuration {
    HumanDuration::from_secs(1800)
}
fn default_recharge() -> HumanDuration {
    HumanDuration::from_secs(3600)
}
fn default_load() -> f64 {
    40.0
}
fn default_charge() -> f64 {
    100.0
}
fn default_low() -> f64 {
    10.0
}
fn one() -> f64 {
    1.0
}

#[typetag::serde(name = "simulated")]
impl PowerSourceConfig for SimulatedUpsConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        let second = HumanDuration::from_secs(1);
        for (field, d) in [("battery_runtime", self.battery_runtime), ("recharge_time", self.recharge_time)] {
            if let Some(m) = d.out_of_range(second, ONE_DAY) {
                p.push(format!("`{field}` {m}"));
            }
        }
        if !(self.firmware_optimism > 0.0 && self.firmware_optimism <= 10.0) {
            p.push(format!("`firmware_optimism` must be more than 0 and at most 10, got {}", self.firmware_optimism));
        }
        for (field, v) in [("initial_charge", self.initial_charge), ("low_battery_charge", self.low_battery_charge)] {
            if !(0.0..=100.0).contains(&v) {
                p.push(format!("`{field}` must be from 0 to 100 percent, got {v}"));
            }
        }
        if !(self.load > 0.0 && self.load <= 200.0) {
            p.push(format!("load {} must be in (0, 200] percent", self.load));
        }
        if self.trace.is_some() && !self.script.is_empty() {
            p.push("`trace` and `script` exclude each other: a replay follows the recording".into());
        }
        if !(self.speed > 0.0 && self.speed <= 10_000.0) {
            p.push(format!("`speed` must be more than 0 and at most 10000, got {}", self.speed));
        }
        for (i, s) in self.script.iter().enumerate() {
            if let Some(m) = s.at.out_of_range(HumanDuration::ZERO, ONE_DAY) {
                p.push(format!("script[{i}]: `at` {m}"));
            }
            match (s.event, s.percent) {
                (SimEvent::Load, None) => p.push(format!("script[{i}]: event `load` needs `percent`")),
                (SimEvent::Load, Some(v)) if !(v > 0.0 && v <= 200.0) => {
                    p.push(format!("script[{i}]: percent {v} must be in (0, 200]"))
                }
                (e, Some(_)) if e != SimEvent::Load => {
                    p.push(format!("script[{i}]: `percent` only goes with event `load`"))
                }
                _ => {}
            }
        }
        p
    }

    fn build(&self, _ctx: &BuildContext) -> Result<Box<dyn PowerSource>, BackendError> {
        if let Some(path) = &self.trace {
            let trace = hecate_core::trace::Trace::load(path).map_err(|e| {
                BackendError::with_source(ErrorKind::Config, format!("cannot load trace {}", path.display()), e)
            })?;
            return Ok(Box::new(TraceReplay {
                name: self.name.clone(),
                trace,
                speed: self.speed,
                started: Instant::now(),
            }));
        }
        let mut script = self.script.clone();
        script.sort_by_key(|s| s.at);
        Ok(Box::new(SimulatedUps {
            started: Instant::now(),
            last_s: 0.0,
            charge: self.initial_charge,
            load: self.load,
            mains: true,
            link: true,
            next: 0,
            script,
            commands: Vec::new(),
            cfg: self.clone(),
        }))
    }
}

hecate_core::register_backend!(
    PowerSource,
    "simulated",
    "in-memory UPS: scripted battery model (demo, tests)",
    SimulatedUpsConfig
);

/// The runtime side of [`SimulatedUpsConfig`].
#[derive(Debug)]
pub struct SimulatedUps {
    cfg: SimulatedUpsConfig,
    started: Instant,
    last_s: f64,
    charge: f64,
    load: f64,
    mains: bool,
    link: bool,
    next: usize,
    script: Vec<ScriptStep>,
    commands: Vec<String>,
}

impl SimulatedUps {
    /// Advances the model to `t` seconds since start, applying script events on the way.
    fn advance(&mut self, t: f64) {
        while self.last_s < t {
            let next_event = self.script.get(self.next).map(|s| s.at.secs_f64()).filter(|&at| at <= t);
            let until = next_event.unwrap_or(t).max(self.last_s);
            self.integrate(until - self.last_s);
            self.last_s = until;
            match next_event {
                Some(_) => {
                    let step = self.script[self.next].clone();
                    self.next += 1;
                    match step.event {
                        SimEvent::MainsLost => self.mains = false,
                        SimEvent::MainsBack => self.mains = true,
                        SimEvent::LinkLost => self.link = false,
                        SimEvent::LinkBack => self.link = true,
                        SimEvent::Load => self.load = step.percent.unwrap_or(self.load),
                    }
                }
                None => break,
            }
        }
    }

    fn integrate(&mut self, dt: f64) {
        if self.mains {
            self.charge = (self.charge + dt * 100.0 / self.cfg.recharge_time.secs_f64()).min(100.0);
        } else {
            // Drain scales with load relative to the load the runtime was rated at.
            let full_s = self.cfg.battery_runtime.secs_f64() * self.cfg.load / self.load;
            self.charge = (self.charge - dt * 100.0 / full_s).max(0.0);
        }
    }

    fn reading(&self) -> PowerReading {
        let full_s = self.cfg.battery_runtime.secs_f64() * self.cfg.load / self.load;
        let mut status = if self.mains { "OL".to_string() } else { "OB DISCHRG".to_string() };
        if self.mains && self.charge < 100.0 {
            status.push_str(" CHRG");
        }
        if self.charge < self.cfg.low_battery_charge {
            status.push_str(" LB");
        }
        PowerReading {
            status: UpsStatus::parse(&status),
            charge_pct: Some((self.charge * 10.0).round() / 10.0),
            runtime_s: Some((self.charge / 100.0 * full_s * self.cfg.firmware_optimism).round()),
            load_pct: Some(self.load),
            input_voltage: Some(if self.mains { 230.0 } else { 0.0 }),
            output_voltage: Some(230.0),
            battery_voltage: Some(24.0 + 3.2 * self.charge / 100.0),
        }
    }
}

#[async_trait]
impl PowerSource for SimulatedUps {
    fn name(&self) -> &str {
        &self.cfg.name
    }

    async fn read(&mut self) -> Result<PowerReading, BackendError> {
        self.advance(self.started.elapsed().as_secs_f64());
        if !self.link {
            return Err(BackendError::new(ErrorKind::NoData, "simulated telemetry link is down"));
        }
        Ok(self.reading())
    }

    async fn instant_command(&mut self, command: &str, param: Option<&str>) -> Result<(), BackendError> {
        match command {
            "load.off" | "load.off.delay" | "shutdown.return" | "shutdown.stayoff" | "beeper.mute" => {
                self.commands.push(match param {
                    Some(p) => format!("{command} {p}"),
                    None => command.to_string(),
                });
                tracing::info!(ups = %self.cfg.name, command, param, "simulated ups accepted instant command");
                Ok(())
            }
            other => Err(BackendError::unsupported(format!("simulated ups does not know instant command {other}"))),
        }
    }

    /// A simulated UPS takes no login: its telemetry link is what can fail.
    fn preflight(&self) -> hecate_core::preflight::PreflightFuture {
        let check = if self.link {
            hecate_core::preflight::Check::ok("link", "the simulated telemetry link is up")
        } else {
            hecate_core::preflight::Check::failed("link", "the simulated telemetry link is down")
        };
        Box::pin(std::future::ready(vec![check]))
    }
}

/// A simulated UPS replaying a recorded trace in real time (times `speed`).
#[derive(Debug)]
pub struct TraceReplay {
    name: String,
    trace: hecate_core::trace::Trace,
    speed: f64,
    started: Instant,
}

#[async_trait]
impl PowerSource for TraceReplay {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read(&mut self) -> Result<PowerReading, BackendError> {
        let t = self.started.elapsed().as_secs_f64() * self.speed;
        // Past the end the last row stays in force: a recording ends, the UPS does not.
        match self.trace.at(t).or(self.trace.rows.first()).map(|r| &r.sample) {
            Some(hecate_core::power::Sample::Reading(r)) => Ok(r.clone()),
            Some(hecate_core::power::Sample::NoData { reason }) => {
                Err(BackendError::new(ErrorKind::NoData, format!("trace row without data: {reason}")))
            }
            None => Err(BackendError::new(ErrorKind::NoData, "the trace has no rows")),
        }
    }

    async fn instant_command(&mut self, command: &str, _param: Option<&str>) -> Result<(), BackendError> {
        tracing::info!(ups = %self.name, command, "trace replay ignores instant commands");
        Ok(())
    }
}
