//! The plan and the engine for a UPS shared with other NUT clients: as primary, `FSD` at the
//! configured moment and a wait for the other clients before the load is cut; as secondary, a
//! logout once the machines are down. The NUT side is tested against a real upsd and upsmon in
//! backends/tests/nut_upsd.rs and hecate/tests/nut_clients.rs; here a STAND-IN power source
//! records what the engine asks of it, in order, with other clients that leave when scripted
//! (as a upsmon secondary logs out once it has run its SHUTDOWNCMD, clients/upsmon.c).

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hecate_core::cluster::{DrainFallback, DrainOptions};
use hecate_core::config::Config;
use hecate_core::delivery::{Delivery, DeliveryOptions};
use hecate_core::engine::{Engine, EngineOptions, Outcome, RunReport};
use hecate_core::plan::{self, Action, Plan};
use hecate_core::power::{Attachment, OtherClients, PowerReading, PowerSource};
use hecate_core::runtime::{PowerHandle, Runtime};
use hecate_core::{BackendError, ErrorKind};

mod stub {
    use hecate_core::power::{Attachment, PowerSource, PowerSourceConfig};
    use hecate_core::{BackendError, BuildContext};
    use serde::{Deserialize, Serialize};

    /// A power source config that only parses, attached as configured.
    #[derive(Debug, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct SharedUps {
        pub name: String,
        #[serde(default)]
        pub login: Attachment,
    }

    #[typetag::serde(name = "shared_ups")]
    impl PowerSourceConfig for SharedUps {
        fn name(&self) -> &str {
            &self.name
        }
        fn build(&self, _: &BuildContext) -> Result<Box<dyn PowerSource>, BackendError> {
            Err(BackendError::unsupported("stub"))
        }
        fn attachment(&self) -> Attachment {
            self.login
        }
    }
}

/// What the stand-in was asked, in order.
type Calls = Arc<Mutex<Vec<String>>>;

/// A STAND-IN for a NUT UPS with other clients: `leave_after` looks at the other clients after
/// `FSD` and they are gone (`None`: they never leave).
#[derive(Debug)]
struct SharedUpsSource {
    attachment: Attachment,
    calls: Calls,
    others: u32,
    leave_after: Option<usize>,
    fsd: bool,
    looks_after_fsd: usize,
    fsd_error: Option<ErrorKind>,
}

#[async_trait]
impl PowerSource for SharedUpsSource {
    fn name(&self) -> &str {
        "atlas"
    }
    async fn read(&mut self) -> Result<PowerReading, BackendError> {
        Err(BackendError::new(ErrorKind::NoData, "not read here"))
    }
    async fn instant_command(&mut self, command: &str, param: Option<&str>) -> Result<(), BackendError> {
        let gone = self.fsd && self.leave_after.is_some_and(|n| self.looks_after_fsd >= n);
        let remaining = if gone { 0 } else { self.others };
        self.calls.lock().unwrap().push(format!("INSTCMD {command} {param:?} with {remaining} other(s)"));
        Ok(())
    }
    fn attachment(&self) -> Attachment {
        self.attachment
    }
    async fn raise_fsd(&mut self) -> Result<(), BackendError> {
        self.calls.lock().unwrap().push("FSD".into());
        if let Some(kind) = self.fsd_error {
            return Err(BackendError::new(kind, "refused"));
        }
        self.fsd = true;
        Ok(())
    }
    async fn other_clients(&mut self) -> Result<OtherClients, BackendError> {
        if self.fsd {
            self.looks_after_fsd += 1;
        }
        let gone = self.fsd && self.leave_after.is_some_and(|n| self.looks_after_fsd >= n);
        let count = if gone { 0 } else { self.others };
        let mut calls = self.calls.lock().unwrap();
        if calls.last().map(String::as_str) != Some("look") {
            calls.push("look".into());
        }
        Ok(OtherClients { count, addresses: (0..count).map(|i| format!("10.0.0.{}", i + 7)).collect() })
    }
    async fn detach(&mut self) -> Result<String, BackendError> {
        self.calls.lock().unwrap().push("LOGOUT".into());
        Ok("logged out".into())
    }
}

fn config(login: &str, ups_off: &str) -> Config {
    let yaml = format!(
        "host: h\npower_sources:\n  - {{ type: shared_ups, name: atlas, login: {login} }}\n  - {{ type: shared_ups, name: other }}\n\
         shutdown:\n  ups_off: {ups_off}\n"
    );
    Config::from_yaml(&yaml, Path::new("t.yaml")).map(|(c, _)| c).unwrap()
}

fn runtime(source: SharedUpsSource) -> Arc<Runtime> {
    Arc::new(Runtime {
        host: "h".into(),
        power: vec![Arc::new(PowerHandle {
            name: "atlas".into(),
            kind: "shared_ups".into(),
            source: tokio::sync::Mutex::new(Box::new(source)),
        })],
        nodes: BTreeMap::new(),
        cluster: None,
        gitops: None,
        notifiers: Delivery::new(Vec::new(), DeliveryOptions::default()),
        controller_timeout: Duration::from_secs(1),
        unavailable: Vec::new(),
    })
}

fn source(attachment: Attachment, others: u32, leave_after: Option<usize>) -> (SharedUpsSource, Calls) {
    let calls = Calls::default();
    let s = SharedUpsSource {
        attachment,
        calls: calls.clone(),
        others,
        leave_after,
        fsd: false,
        looks_after_fsd: 0,
        fsd_error: None,
    };
    (s, calls)
}

async fn run(plan: &Plan, rt: Arc<Runtime>) -> RunReport {
    let drain = DrainOptions { timeout: Duration::from_secs(1), fallback: DrainFallback::Leave, ..Default::default() };
    let opts = EngineOptions { wait_poll: Duration::from_millis(10), drain, ..Default::default() };
    let report = Engine::new(rt, opts, Arc::new(|_| {})).execute(plan, None).await;
    assert_eq!(report.outcome, Outcome::Success, "{report:#?}");
    report
}

fn stage_names(plan: &Plan) -> Vec<&str> {
    plan.stages.iter().map(|s| s.name.as_str()).collect()
}

fn message<'a>(report: &'a RunReport, id: &str) -> &'a str {
    report.stages.iter().flat_map(|s| &s.steps).find(|s| s.id == id).map(|s| s.message.as_str()).unwrap()
}

#[test]
fn a_primary_tells_the_others_before_cutting_the_load_by_default() {
    let cfg = config("primary", "{ source: atlas, command: shutdown.return, hostsync: 20s }");
    let plan = plan::shutdown_plan(&cfg, &Runtime::unbuilt(&cfg), "test");
    assert_eq!(stage_names(&plan), ["notify", "ups-off"]);
    let step = &plan.stages[1].steps[0];
    assert!(matches!(&step.action, Action::UpsCommand { hostsync: Some(h), .. } if h.as_secs() == 20));
    assert_eq!(step.timeout.as_secs(), 80, "the wait and the requests fit in the step's time");
    assert!(step.describe().contains("(FSD), wait up to 20s"), "{}", step.describe());
}

#[test]
fn at_trigger_adds_an_fsd_stage_right_after_the_notification() {
    let cfg = config("primary", "{ source: atlas, fsd: at_trigger }");
    let plan = plan::shutdown_plan(&cfg, &Runtime::unbuilt(&cfg), "test");
    assert_eq!(stage_names(&plan), ["notify", "fsd", "ups-off"]);
    assert!(matches!(&plan.stages[1].steps[0].action, Action::UpsFsd { source } if source == "atlas"));
    // a message, not work: the budget compares runs with and without it
    let before = plan::shutdown_plan(&config("primary", "{ source: atlas }"), &Runtime::unbuilt(&cfg), "t");
    assert_eq!(plan.fingerprint(), before.fingerprint());
}

#[test]
fn no_fsd_and_no_wait_where_hecate_is_not_the_primary() {
    for login in ["secondary", "none"] {
        let cfg = config(login, "{ source: atlas, fsd: at_trigger }");
        let plan = plan::shutdown_plan(&cfg, &Runtime::unbuilt(&cfg), "test");
        assert!(!stage_names(&plan).contains(&"fsd"), "{login}");
        let ups_off = plan.stages.iter().find(|s| s.name == "ups-off").unwrap();
        assert!(matches!(&ups_off.steps[0].action, Action::UpsCommand { hostsync: None, .. }), "{login}");
    }
}

#[test]
fn a_secondary_leaves_after_the_machines_are_down_and_before_the_load_is_cut() {
    let cfg = config("secondary", "{ source: atlas }");
    let plan = plan::shutdown_plan(&cfg, &Runtime::unbuilt(&cfg), "test");
    assert_eq!(stage_names(&plan), ["notify", "leave-ups", "ups-off"]);
    let ids: Vec<&str> = plan.stages[1].steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["leave-ups/atlas"], "only the source hecate is a secondary of");
    let cfg = config("none", "{ source: atlas }");
    assert!(!stage_names(&plan::shutdown_plan(&cfg, &Runtime::unbuilt(&cfg), "t")).contains(&"leave-ups"));
}

#[tokio::test]
async fn the_load_is_cut_only_once_the_other_clients_have_left() {
    let cfg = config("primary", "{ source: atlas, command: shutdown.return, hostsync: 20s }");
    let (src, calls) = source(Attachment::Primary, 2, Some(3));
    let rt = runtime(src);
    let plan = plan::shutdown_plan(&cfg, &rt, "test");
    let report = run(&plan, rt).await;
    assert_eq!(*calls.lock().unwrap(), ["FSD", "look", "INSTCMD shutdown.return None with 0 other(s)"]);
    let m = message(&report, "ups-off/atlas");
    assert!(
        m.starts_with("FSD set; waited ") && m.contains("for 2 other client(s) (10.0.0.7, 10.0.0.8) to log out"),
        "{m}"
    );
}

#[tokio::test]
async fn with_nobody_else_attached_the_load_is_cut_at_once() {
    let cfg = config("primary", "{ source: atlas, command: load.off.delay, delay: 2m }");
    let (src, calls) = source(Attachment::Primary, 0, None);
    let rt = runtime(src);
    let report = run(&plan::shutdown_plan(&cfg, &rt, "test"), rt).await;
    assert_eq!(*calls.lock().unwrap(), ["FSD", "look", "INSTCMD load.off.delay Some(\"120\") with 0 other(s)"]);
    assert!(message(&report, "ups-off/atlas").contains("no other client was attached"));
}

#[tokio::test]
async fn a_client_that_never_leaves_is_waited_for_hostsync_then_the_load_is_cut() {
    let cfg = config("primary", "{ source: atlas, command: shutdown.return, hostsync: 300ms }");
    let (src, calls) = source(Attachment::Primary, 1, None);
    let rt = runtime(src);
    let plan = plan::shutdown_plan(&cfg, &rt, "test");
    let t0 = std::time::Instant::now();
    let report = run(&plan, rt).await;
    assert!(t0.elapsed() >= Duration::from_millis(300), "hostsync was not waited: {:?}", t0.elapsed());
    assert_eq!(*calls.lock().unwrap(), ["FSD", "look", "INSTCMD shutdown.return None with 1 other(s)"]);
    let m = message(&report, "ups-off/atlas");
    assert!(m.contains("hostsync 300ms passed with 1 other client(s) (10.0.0.7) still attached"), "{m}");
}

#[tokio::test]
async fn a_refused_fsd_is_reported_and_the_clients_still_get_their_wait() {
    let cfg = config("primary", "{ source: atlas, command: shutdown.return, hostsync: 200ms }");
    let (mut src, calls) = source(Attachment::Primary, 1, None);
    src.fsd_error = Some(ErrorKind::Auth);
    let rt = runtime(src);
    let report = run(&plan::shutdown_plan(&cfg, &rt, "test"), rt).await;
    assert_eq!(*calls.lock().unwrap(), ["FSD", "look", "INSTCMD shutdown.return None with 1 other(s)"]);
    let m = message(&report, "ups-off/atlas");
    assert!(m.starts_with("FSD not set (auth: refused)") && m.contains("hostsync 200ms passed"), "{m}");
}

#[tokio::test]
async fn at_trigger_the_others_are_told_first_and_again_before_the_cut() {
    let cfg = config("primary", "{ source: atlas, command: shutdown.return, fsd: at_trigger }");
    let (src, calls) = source(Attachment::Primary, 1, Some(1));
    let rt = runtime(src);
    run(&plan::shutdown_plan(&cfg, &rt, "test"), rt).await;
    assert_eq!(*calls.lock().unwrap(), ["FSD", "FSD", "look", "INSTCMD shutdown.return None with 0 other(s)"]);
}

#[tokio::test]
async fn a_secondary_logs_out_and_cuts_nothing_it_was_not_asked_to() {
    let yaml = "host: h\npower_sources:\n  - { type: shared_ups, name: atlas, login: secondary }\n";
    let cfg = Config::from_yaml(yaml, Path::new("t.yaml")).map(|(c, _)| c).unwrap();
    let (src, calls) = source(Attachment::Secondary, 1, None);
    let rt = runtime(src);
    let report = run(&plan::shutdown_plan(&cfg, &rt, "test"), rt).await;
    assert_eq!(*calls.lock().unwrap(), ["LOGOUT"]);
    assert_eq!(message(&report, "leave-ups/atlas"), "logged out");
}

fn warnings(ups_off: &str, extra: &str) -> Vec<String> {
    let yaml = format!(
        "host: h\npower_sources:\n  - {{ type: shared_ups, name: atlas }}\nshutdown:\n  ups_off: {ups_off}\n{extra}"
    );
    Config::from_yaml(&yaml, Path::new("t.yaml")).map(|(_, w)| w).unwrap()
}

#[test]
fn config_check_says_where_the_delay_comes_from() {
    let w = warnings("{ source: atlas }", "");
    assert!(w.iter().any(|w| w.contains("no `delay`") && w.contains("offdelay")), "{w:?}");
    assert!(warnings("{ source: atlas, delay: 2m }", "").is_empty());
    // With this host powering itself off after the command, a short delay is suspect.
    let w = warnings("{ source: atlas, delay: 30s }", "  power_off_self: true\n");
    assert!(w.iter().any(|w| w.contains("may not cover this host's own shutdown")), "{w:?}");
    assert!(warnings("{ source: atlas, delay: 2m }", "  power_off_self: true\n").is_empty());
}

#[test]
fn the_command_is_auto_or_a_nut_command_name() {
    let cfg = config("primary", "{ source: atlas }");
    assert_eq!(cfg.shutdown.ups_off.as_ref().unwrap().command, "auto");
    let plan = plan::shutdown_plan(&cfg, &Runtime::unbuilt(&cfg), "t");
    let step = &plan.stages.last().unwrap().steps[0];
    assert!(matches!(&step.action, Action::UpsCommand { command: None, delay: None, .. }));
    assert!(step.describe().contains("shutdown.return or load.off.delay, as offered"), "{}", step.describe());
    for bad in ["\"load off\"", "\"\"", "\"x;y\""] {
        let yaml = format!(
            "host: h\npower_sources:\n  - {{ type: shared_ups, name: atlas }}\nshutdown:\n  ups_off: {{ source: atlas, command: {bad} }}\n"
        );
        let err = Config::from_yaml(&yaml, Path::new("t.yaml")).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("shutdown.ups_off.command"), "{bad}: {err}");
    }
    let yaml = "host: h\npower_sources:\n  - { type: shared_ups, name: atlas }\nshutdown:\n  ups_off: { source: atlas, hostsync: 2h }\n";
    let err = Config::from_yaml(yaml, Path::new("t.yaml")).map(|_| ()).unwrap_err().to_string();
    assert!(err.contains("shutdown.ups_off.hostsync"), "{err}");
}
