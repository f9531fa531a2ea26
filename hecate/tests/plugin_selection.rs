//! A backend declared outside Hecate's crates is selected purely by YAML `type:`, and the engine
//! drives it through the shutdown plan in the plan's order. The journal lets an interrupted run
//! resume without repeating finished steps.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

mod third_party {
    //! Stands for a third-party crate: it only uses Hecate's public traits.
    use std::sync::Mutex;

    use async_trait::async_trait;
    use hecate_core::node::{
        Capability, NodeController, NodeControllerConfig, NodeInfo, NodeOp, NodeOpOutput, PowerState,
    };
    use hecate_core::{BackendError, BuildContext};
    use serde::{Deserialize, Serialize};

    pub static CALLS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    /// Records every operation it is asked to run.
    #[derive(Debug, Serialize, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    pub struct RecorderConfig {
        /// A label proving the config reached the backend.
        pub tag: String,
    }

    #[typetag::serde(name = "test_recorder")]
    impl NodeControllerConfig for RecorderConfig {
        fn build(&self, node: &NodeInfo, _: &BuildContext) -> Result<Box<dyn NodeController>, BackendError> {
            Ok(Box::new(Recorder { node: node.name.clone(), tag: self.tag.clone() }))
        }
    }

    hecate_core::register_backend!(NodeController, "test_recorder", "records calls (test)", RecorderConfig);

    #[derive(Debug)]
    struct Recorder {
        node: String,
        tag: String,
    }

    #[async_trait]
    impl NodeController for Recorder {
        fn kind(&self) -> &str {
            "test_recorder"
        }
        fn capabilities(&self) -> &[Capability] {
            &[Capability::StopUnit, Capability::StartUnit, Capability::PowerOff, Capability::Probe]
        }
        async fn run(&self, op: &NodeOp) -> Result<NodeOpOutput, BackendError> {
            CALLS.lock().unwrap().push(format!("{}:{}:{op}", self.tag, self.node));
            // Like a BMC, it confirms a power-off itself.
            Ok(if *op == NodeOp::PowerOff { NodeOpOutput::Power(PowerState::Off) } else { NodeOpOutput::Done })
        }
    }
}

use std::path::Path;
use std::sync::Arc;

use hecate_core::config::Config;
use hecate_core::engine::{Engine, EngineOptions, Journal};
use hecate_core::plan::{PlanKind, shutdown_plan};
use hecate_core::runtime::Runtime;

fn config(state_dir: &Path) -> Config {
    hecate::init_process();
    let yaml = format!(
        "host: t
state_dir: {}
power_sources: [ {{ type: simulated, name: u }} ]
nodes:
  - {{ name: s1, address: a, role: server, init: true, controllers: [ {{ type: test_recorder, tag: T }} ] }}
  - {{ name: s2, address: a, role: server, controllers: [ {{ type: test_recorder, tag: T }} ] }}
  - {{ name: a1, address: a, role: agent, controllers: [ {{ type: test_recorder, tag: T }} ] }}
  - {{ name: a2, address: a, role: agent, controllers: [ {{ type: test_recorder, tag: T }} ] }}
shutdown: {{ concurrency: 1 }}
",
        state_dir.display()
    );
    Config::from_yaml(&yaml, Path::new("test.yaml")).unwrap().0
}

fn engine(cfg: &Config) -> Engine {
    let rt = Arc::new(Runtime::build(cfg).unwrap());
    Engine::new(
        rt,
        EngineOptions {
            wait_poll: std::time::Duration::from_millis(10),
            drain: hecate_core::cluster::DrainOptions {
                timeout: std::time::Duration::from_secs(1),
                ..Default::default()
            },
            ..Default::default()
        },
        Arc::new(|_| {}),
    )
}

// One test function: CALLS is process-global, and this keeps the two phases' records apart.
#[tokio::test]
async fn third_party_backend_is_selected_by_type_and_runs_in_plan_order_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let eng = engine(&cfg);
    let plan = shutdown_plan(&cfg, eng.runtime(), "test");
    let report = eng.execute(&plan, None).await;
    assert_eq!(report.outcome, hecate_core::engine::Outcome::Success, "{report:?}");
    let calls = std::mem::take(&mut *third_party::CALLS.lock().unwrap());
    assert_eq!(
        calls,
        vec![
            "T:a1:stop k3s-agent and its containers (grace 60s)",
            "T:a2:stop k3s-agent and its containers (grace 60s)",
            "T:s2:stop k3s and its containers (grace 60s)",
            "T:s1:stop k3s and its containers (grace 60s)",
            "T:s1:power off",
            "T:s2:power off",
            "T:a1:power off",
            "T:a2:power off",
        ]
    );

    // A run that died after the agents were stopped: the journal holds their ends.
    let mut j = Journal::open(dir.path(), PlanKind::Shutdown, "test", false).unwrap();
    let eng = engine(&cfg);
    let partial = hecate_core::plan::Plan { stages: plan.stages[..2].to_vec(), ..plan.clone() };
    eng.execute(&partial, Some(&mut j)).await;
    drop(j);
    third_party::CALLS.lock().unwrap().clear();
    let mut j = Journal::open(dir.path(), PlanKind::Shutdown, "test", true).unwrap();
    assert!(j.is_resumed());
    let report = eng.execute(&plan, Some(&mut j)).await;
    let calls = std::mem::take(&mut *third_party::CALLS.lock().unwrap());
    assert!(!calls.iter().any(|c| c.contains("k3s-agent")), "agent stops repeated: {calls:?}");
    assert_eq!(calls.len(), 6, "{calls:?}");
    let resumed = report.stages.iter().flat_map(|s| &s.steps).filter(|s| s.resumed).count();
    assert_eq!(resumed, 3, "notify + two agent stops come from the journal");
    j.complete().unwrap();
    assert!(!Journal::pending(dir.path(), PlanKind::Shutdown));
}
