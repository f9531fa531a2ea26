//! Proves the `Upsd` harness: a real upsd answers the NUT protocol on its port, values change
//! through `set_var`, and killing upsd or the driver is visible to clients.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use hecate_test_support::{RESERVED_PORTS, Upsd, wait_until};

/// A NUT session independent of the harness's own client: sends each line, returns each answer.
fn nut_session(addr: SocketAddr, lines: &[&str]) -> Vec<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect upsd");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("set read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut answers = Vec::new();
    for line in lines {
        (&stream).write_all(format!("{line}\n").as_bytes()).expect("send to upsd");
        let mut answer = String::new();
        reader.read_line(&mut answer).expect("read from upsd");
        answers.push(answer.trim_end().to_owned());
    }
    answers
}

/// `upsc UPS@addr var`: NUT's own client, a third opinion.
fn upsc(ups: &Upsd, var: &str) -> String {
    let out =
        Command::new("upsc").arg(format!("{}@{}", ups.ups_name(), ups.addr())).arg(var).output().expect("run upsc");
    assert!(out.status.success(), "upsc failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn status_reads_over_nut_protocol_and_changes_with_set_var() {
    let ups = Upsd::start("atlas");
    let addr = ups.addr();
    assert!(addr.ip().is_loopback());
    assert!(!RESERVED_PORTS.contains(&addr.port()));

    let answers = nut_session(addr, &["GET VAR atlas ups.status"]);
    assert_eq!(answers, ["VAR atlas ups.status \"OL\""]);
    assert_eq!(upsc(&ups, "ups.status"), "OL");

    ups.set_var("ups.status", "OB DISCHRG");
    let answers = nut_session(addr, &["GET VAR atlas ups.status"]);
    assert_eq!(answers, ["VAR atlas ups.status \"OB DISCHRG\""]);
    assert_eq!(upsc(&ups, "ups.status"), "OB DISCHRG");
    assert_eq!(ups.get_var("ups.status").as_deref(), Ok("OB DISCHRG"));

    ups.set_var("battery.charge", "37");
    assert_eq!(upsc(&ups, "battery.charge"), "37");
}

#[test]
fn users_and_initial_vars_are_as_documented() {
    let ups = Upsd::start_with_vars("rack2", &[("battery.charge", "55"), ("ups.status", "OB")]);
    assert_eq!(ups.get_var("battery.charge").as_deref(), Ok("55"));
    assert_eq!(ups.get_var("ups.status").as_deref(), Ok("OB"));
    assert_eq!(ups.get_var("no.such.var"), Err("ERR VAR-NOT-SUPPORTED".to_owned()));

    let session = |user: &str, password: &str, command: &str| {
        nut_session(ups.addr(), &[&format!("USERNAME {user}"), &format!("PASSWORD {password}"), command])
    };
    // the monitoring user may LOGIN (upsmon primary) but not SET; admin the other way round
    let login = "LOGIN rack2";
    let set = "SET VAR rack2 battery.charge \"60\"";
    let (mon, monpass) = (ups.monitor_user(), ups.monitor_password());
    let (admin, adminpass) = (ups.admin_user(), ups.admin_password());
    assert_eq!(session(mon, monpass, login), ["OK", "OK", "OK"]);
    assert_eq!(session(mon, monpass, set)[2], "ERR ACCESS-DENIED");
    assert_eq!(session(admin, adminpass, login)[2], "ERR ACCESS-DENIED");
    assert_eq!(session(admin, adminpass, set)[2], "OK");
    wait_until("SET VAR to take effect", Duration::from_secs(15), || match ups.get_var("battery.charge") {
        Ok(v) if v == "60" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    // a wrong password is refused, so the users file really is in use
    assert_eq!(session(mon, "not-the-password", login)[2], "ERR ACCESS-DENIED");
}

#[test]
fn killed_upsd_refuses_connections_until_restarted() {
    let mut ups = Upsd::start("dies");
    let addr = ups.addr();
    ups.kill_upsd();
    let err =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect_err("nothing may listen after kill_upsd");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(ups.get_var("ups.status").is_err());

    ups.restart_upsd();
    assert_eq!(ups.addr(), addr);
    assert_eq!(ups.get_var("ups.status").as_deref(), Ok("OL"));
}

#[test]
fn killed_driver_makes_data_stale() {
    let mut ups = Upsd::start("stale");
    ups.kill_driver();
    let err =
        wait_until("upsd to notice the driver is gone", Duration::from_secs(30), || match ups.get_var("ups.status") {
            Err(e) if e.starts_with("ERR ") => Ok(e),
            other => Err(format!("ups.status still reads {other:?}")),
        });
    assert!(err == "ERR DATA-STALE" || err == "ERR DRIVER-NOT-CONNECTED", "unexpected answer {err}");
    ups.restart_driver();
    wait_until("data to come back", Duration::from_secs(30), || {
        ups.get_var("ups.status").and_then(|s| if s == "OL" { Ok(()) } else { Err(s) })
    });
}

#[test]
fn drop_kills_daemons_and_removes_dir() {
    let ups = Upsd::start("gone");
    let (addr, dir) = (ups.addr(), ups.dir().to_owned());
    assert!(dir.join("etc/upsd.conf").exists());
    drop(ups);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_err());
}
