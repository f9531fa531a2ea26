//! Proves the `IpmiSim` harness with ipmitool itself: power status, on, off and soft off change the
//! chassis state file, an ignored soft off leaves the power on, and a killed BMC stops answering.

use std::process::{Command, Output};

use hecate_test_support::{IpmiSim, RESERVED_PORTS};

/// `ipmitool -I lanplus -H 127.0.0.1 -p PORT -U admin -f PASSWORD_FILE -C 3 ARGS...`
fn ipmitool(bmc: &IpmiSim, args: &[&str]) -> Output {
    Command::new("ipmitool")
        .args(["-I", "lanplus", "-H", bmc.host(), "-p", &bmc.port().to_string(), "-U", bmc.username()])
        .arg("-f")
        .arg(bmc.password_file())
        // one retry of one second: a dead BMC fails fast
        .args(["-C", "3", "-N", "1", "-R", "1"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ipmitool")
}

fn power_status(bmc: &IpmiSim) -> String {
    let out = ipmitool(bmc, &["chassis", "power", "status"]);
    assert!(out.status.success(), "ipmitool chassis power status: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn chassis_power_follows_ipmitool() {
    let bmc = IpmiSim::start();
    assert!(bmc.addr().ip().is_loopback());
    assert!(!RESERVED_PORTS.contains(&bmc.port()));
    assert!(bmc.calls().is_empty(), "the readiness ping must not touch the chassis: {:?}", bmc.calls());
    assert!(bmc.power_is_on());
    assert_eq!(power_status(&bmc), "Chassis Power is on");

    assert!(ipmitool(&bmc, &["chassis", "power", "off"]).status.success());
    assert!(!bmc.power_is_on());
    assert_eq!(power_status(&bmc), "Chassis Power is off");

    assert!(ipmitool(&bmc, &["chassis", "power", "on"]).status.success());
    assert!(bmc.power_is_on());

    assert!(ipmitool(&bmc, &["chassis", "power", "soft"]).status.success());
    assert_eq!(power_status(&bmc), "Chassis Power is off");
    assert_eq!(bmc.actions(), ["set power 0", "set power 1", "set shutdown 1"]);
}

#[test]
fn ignored_soft_off_leaves_the_power_on() {
    let bmc = IpmiSim::start();
    bmc.ignore_soft_off();
    assert!(ipmitool(&bmc, &["chassis", "power", "soft"]).status.success());
    assert_eq!(power_status(&bmc), "Chassis Power is on");
    bmc.set_power(false);
    assert_eq!(power_status(&bmc), "Chassis Power is off");
    bmc.ignore_commands(true);
    assert!(ipmitool(&bmc, &["chassis", "power", "on"]).status.success(), "acknowledged");
    assert_eq!(power_status(&bmc), "Chassis Power is off");
    bmc.ignore_commands(false);
    assert!(ipmitool(&bmc, &["chassis", "power", "on"]).status.success());
    assert_eq!(power_status(&bmc), "Chassis Power is on");
    assert_eq!(bmc.actions(), ["set shutdown 1", "set power 1", "set power 1"]);
}

#[test]
fn wrong_password_is_refused_and_a_killed_bmc_is_silent() {
    let mut bmc = IpmiSim::start();
    let wrong = bmc.dir().join("wrong.pass");
    std::fs::write(&wrong, "not-the-password\n").expect("write wrong password file");
    let out = Command::new("ipmitool")
        .args(["-I", "lanplus", "-H", bmc.host(), "-p", &bmc.port().to_string(), "-U", "admin", "-C", "3"])
        .arg("-f")
        .arg(&wrong)
        .args(["chassis", "power", "status"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ipmitool");
    assert!(!out.status.success(), "a wrong password must be refused: {out:?}");

    bmc.kill();
    let out = ipmitool(&bmc, &["chassis", "power", "status"]);
    assert!(!out.status.success(), "a killed bmc must not answer: {out:?}");
}
