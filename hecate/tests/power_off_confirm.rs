//! A node counts as off only when confirmed, and the UPS is told to cut its load only after every
//! node's power-off has ended. Real peers: `ipmi_sim` as the BMC (its "OS" takes 60 s to honour
//! a soft off), a real `upsd` with `dummy-ups` as the UPS (its log records the instant command),
//! OpenSSH `sshd` nodes. The simulated controller stands in for a controller that can only ask
//! for a power-off (no power state, no probe).

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use hecate_core::config::Config;
use hecate_core::engine::{Outcome, RunReport};
use hecate_core::plan::{Plan, shutdown_plan};
use hecate_core::runtime::Runtime;
use hecate_test_support::{IpmiSim, SshNode, Upsd};

fn load(yaml: &str) -> Config {
    hecate::init_process();
    Config::from_yaml(yaml, Path::new("power-off.yaml")).map_err(|e| e.to_string()).unwrap().0
}

/// The shutdown plan's stages that act on power (these nodes run no k3s).
fn power_stages(cfg: &Config, rt: &Runtime) -> Plan {
    let mut plan = shutdown_plan(cfg, rt, "test");
    plan.stages.retain(|s| s.name == "power-off" || s.name == "ups-off");
    plan
}

async fn run(cfg: &Config) -> RunReport {
    let rt = Arc::new(Runtime::build(cfg).unwrap());
    let plan = power_stages(cfg, &rt);
    hecate::run::execute(cfg, rt, &plan, false, hecate::run::log_sink()).await
}

fn ipmi_controller(bmc: &IpmiSim) -> String {
    format!(
        "{{ type: ipmi, host: {}, port: {}, username: {}, password_file: {}, cipher_suite: 3, poll_interval: 1s }}",
        bmc.host(),
        bmc.port(),
        bmc.username(),
        bmc.password_file().display()
    )
}

fn ssh_controller(node: &SshNode) -> String {
    format!(
        "{{ type: ssh_systemd, user: {}, identity_file: {}, known_hosts: {}, port: {}, connect_timeout: 2s }}",
        node.user(),
        node.identity_file().display(),
        node.known_hosts().display(),
        node.port()
    )
}

/// The first moment `probe` held, checked every 100 ms from a thread until `stop`.
fn first_time(
    stop: Arc<AtomicBool>,
    probe: impl Fn() -> bool + Send + 'static,
) -> std::thread::JoinHandle<Option<SystemTime>> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if probe() {
                return Some(SystemTime::now());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_off_that_takes_a_minute_is_waited_for_and_the_ups_is_told_only_after() {
    let bmc = IpmiSim::start();
    bmc.set_soft_delay(60);
    let upsd = Upsd::start("atlasups");
    let dir = tempfile::tempdir().unwrap();
    let pass = dir.path().join("nut.pass");
    std::fs::write(&pass, format!("{}\n", upsd.admin_password())).unwrap();
    let cfg = load(&format!(
        "host: coordinator
state_dir: {state}
power_sources:
  - {{ type: nut, name: atlas, ups: atlasups, endpoint: \"{addr}\", username: {user}, password_file: {pass} }}
nodes:
  - {{ name: n1, address: {host}, role: agent, controllers: [ {ipmi} ] }}
shutdown: {{ ups_off: {{ source: atlas, command: load.off }} }}
",
        state = dir.path().join("state").display(),
        addr = upsd.addr(),
        user = upsd.admin_user(),
        pass = pass.display(),
        host = bmc.host(),
        ipmi = ipmi_controller(&bmc),
    ));

    // The NUT peer records the instant command in its log; the BMC's power file says when the
    // "OS" finished. Both watched from outside Hecate.
    let stop = Arc::new(AtomicBool::new(false));
    let power_file = bmc.dir().join("power");
    let powered_off =
        first_time(stop.clone(), move || std::fs::read_to_string(&power_file).is_ok_and(|t| t.trim() == "0"));
    let upsd_log = upsd.dir().join("upsd.log");
    let told =
        first_time(stop.clone(), move || std::fs::read_to_string(&upsd_log).is_ok_and(|t| t.contains("did load.off")));
    let report = run(&cfg).await;
    // the last thing the run did; give the watcher a moment to see it
    hecate_test_support::wait_until("upsd to log the command", Duration::from_secs(10), || {
        if std::fs::read_to_string(upsd.dir().join("upsd.log")).unwrap_or_default().contains("did load.off") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let (powered_off, told) = (powered_off.join().unwrap(), told.join().unwrap());

    assert_eq!(report.outcome, Outcome::Success, "{:#?}", report.failures().collect::<Vec<_>>());
    let step = &report.stages[0].steps[0];
    assert!(step.message.ends_with("confirmed off by ipmi"), "{}", step.message);
    assert!(step.duration_s >= 59.0, "the soft off was waited for: {step:?}");
    assert_eq!(bmc.actions(), ["set shutdown 1"], "never forced");
    let (powered_off, told) = (powered_off.unwrap(), told.unwrap());
    assert!(powered_off <= told, "the ups was told {:?} before the node was off", powered_off.duration_since(told));
    let stages: Vec<&str> = report.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, ["power-off", "ups-off"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_nothing_can_confirm_is_reported_as_not_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(&format!(
        "host: coordinator
state_dir: {}
power_sources: [ {{ type: simulated, name: ups }} ]
nodes:
  - name: blind
    address: 10.0.0.9
    role: agent
    controllers: [ {{ type: simulated, world: unconfirmed, step_duration: 10ms, capabilities: [stop_unit, power_off] }} ]
",
        dir.path().join("state").display()
    ));
    let report = run(&cfg).await;
    assert_eq!(report.outcome, Outcome::Partial);
    let failure = report.failures().next().unwrap();
    assert_eq!(failure.id, "power-off/blind");
    assert!(failure.message.contains("simulated ok; the power-off could not be confirmed"), "{}", failure.message);
    assert!(
        failure.message.contains(
            "the power-off could not be confirmed: no controller of blind can read its power state or probe it"
        ),
        "{}",
        failure.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_os_that_does_not_go_down_is_cut_by_the_bmc_and_without_one_is_not_confirmed() {
    let bmc = IpmiSim::start();
    // sshd keeps answering after `systemctl poweroff`: the OS never goes down.
    let node = SshNode::start("stuck", Ipv4Addr::new(127, 0, 0, 130));
    let lone = SshNode::start("lone", Ipv4Addr::new(127, 0, 0, 131));
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(&format!(
        "host: coordinator
state_dir: {state}
daemon: {{ poll_interval: 200ms }}
power_sources: [ {{ type: simulated, name: ups }} ]
nodes:
  - {{ name: stuck, address: {a1}, role: agent, controllers: [ {ssh1}, {ipmi} ] }}
  - {{ name: lone, address: {a2}, role: agent, controllers: [ {ssh2} ] }}
shutdown: {{ soft_off_timeout: 2s, off_silence: 1s, power_off_timeout: 1m }}
",
        state = dir.path().join("state").display(),
        a1 = node.addr(),
        a2 = lone.addr(),
        ssh1 = ssh_controller(&node),
        ssh2 = ssh_controller(&lone),
        ipmi = ipmi_controller(&bmc),
    ));
    let report = run(&cfg).await;
    let steps = &report.stages[0].steps;
    let stuck = steps.iter().find(|s| s.id == "power-off/stuck").unwrap();
    assert!(stuck.ok, "{}", stuck.message);
    assert!(stuck.message.contains("still on after 2s: forced off and confirmed"), "{}", stuck.message);
    assert_eq!(bmc.actions(), ["set power 0"], "the bmc cut the power: the os had been asked already");
    assert_eq!(node.calls().iter().filter(|c| c.command_line() == "systemctl poweroff").count(), 1);

    let lone = steps.iter().find(|s| s.id == "power-off/lone").unwrap();
    assert!(!lone.ok);
    assert!(lone.message.contains("could not be confirmed: lone still answered 2s later"), "{}", lone.message);
}
