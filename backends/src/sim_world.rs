//! The shared state behind the simulated backends: which simulated machines are powered, which
//! units run, which nodes are cordoned. Simulated nodes and the simulated cluster that name the
//! same `world` see each other's effects, so a simulated shutdown really takes the cluster down.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One simulated machine.
#[derive(Debug, Clone)]
pub struct SimMachine {
    /// Powered on.
    pub powered: bool,
    /// When the OS answers after the last power-on.
    pub booted_at: Instant,
    /// Units and since when each runs (`None` = stopped).
    pub units: BTreeMap<String, Option<Instant>>,
    /// Cordoned.
    pub cordoned: bool,
    /// Cordoned by Hecate (the node carries its mark).
    pub cordon_mark: bool,
    /// Runs a server unit (`k3s`).
    pub server: bool,
}

impl SimMachine {
    /// Whether the OS answers.
    pub fn reachable(&self, now: Instant) -> bool {
        self.powered && now >= self.booted_at
    }

    /// Since when any unit has been running.
    pub fn running_since(&self) -> Option<Instant> {
        self.units.values().flatten().min().copied()
    }
}

/// A set of simulated machines.
#[derive(Debug, Default)]
pub struct World {
    machines: Mutex<BTreeMap<String, SimMachine>>,
}

impl World {
    /// Locks the machines. A poisoned lock (a panic elsewhere) still yields the data: the
    /// simulation must not take the daemon down with it.
    pub fn machines(&self) -> MutexGuard<'_, BTreeMap<String, SimMachine>> {
        self.machines.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a machine, running its unit, unless it exists.
    pub fn ensure(&self, name: &str, unit: &str, server: bool) {
        let now = Instant::now();
        // Started a while ago, so a cluster that "was running" is Ready at once.
        let since = now.checked_sub(Duration::from_secs(3600)).unwrap_or(now);
        self.machines().entry(name.to_string()).or_insert_with(|| SimMachine {
            powered: true,
            booted_at: since,
            units: BTreeMap::from([(unit.to_string(), Some(since))]),
            cordoned: false,
            cordon_mark: false,
            server,
        });
    }
}

static WORLDS: LazyLock<Mutex<HashMap<String, Arc<World>>>> = LazyLock::new(Default::default);

/// The world of this name, created empty on first use.
pub fn world(name: &str) -> Arc<World> {
    let mut w = WORLDS.lock().unwrap_or_else(|e| e.into_inner());
    w.entry(name.to_string()).or_default().clone()
}

/// The default world's name.
pub fn default_world() -> String {
    "default".to_string()
}
