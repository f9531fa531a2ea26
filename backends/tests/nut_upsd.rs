//! The `nut` backend against a real NUT `upsd` fed by `dummy-ups` (hecate_test_support::Upsd),
//! on a free loopback port. Needs root and the peers installed (scripts/install-test-deps.sh).

use std::path::Path;
use std::time::{Duration, Instant};

use hecate_backends::power::nut::client::NutClient;
use hecate_backends::power::nut::{NutConfig, NutUps};
use hecate_core::duration::HumanDuration;
use hecate_core::power::{Attachment, PowerReading, PowerSource, StatusFlag};
use hecate_core::{BackendError, ErrorKind};
use hecate_test_support::{Upsd, Upsmon, UpsmonRole, wait_until};

const UPS: &str = "atlasups";
/// How long a test waits for something upsd does by itself (notice a dead driver, restart).
const DEADLINE: Duration = Duration::from_secs(60);

fn config(upsd: &Upsd, login: Option<(&Path, &str, &str)>) -> NutConfig {
    let (username, password_file) = match login {
        Some((dir, user, pass)) => {
            let file = dir.join("nut.pass");
            std::fs::write(&file, format!("{pass}\n")).expect("write the password file");
            (Some(user.to_string()), Some(file))
        }
        None => (None, None),
    };
    NutConfig {
        name: "atlas".into(),
        ups: UPS.into(),
        endpoint: upsd.addr().to_string(),
        username,
        password_file,
        timeout: HumanDuration::from_secs(5),
        tls: None,
        // Tests of logging in set it; the others only read or send commands.
        login: Some(Attachment::None),
    }
}

/// Reads until `done` accepts the outcome, polling every 100 ms up to [`DEADLINE`]; returns
/// every outcome seen on the way.
async fn read_until(
    ups: &mut NutUps,
    what: &str,
    mut done: impl FnMut(&Result<PowerReading, BackendError>) -> bool,
) -> Vec<Result<PowerReading, BackendError>> {
    let deadline = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    loop {
        let outcome = ups.read().await;
        let finished = done(&outcome);
        seen.push(outcome);
        if finished {
            return seen;
        }
        assert!(Instant::now() < deadline, "waited {DEADLINE:?} for {what}; last: {:?}", seen.last());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn reads_online_values() {
    let upsd = Upsd::start(UPS);
    let mut ups = NutUps::new(&config(&upsd, None)).unwrap();
    let r = ups.read().await.unwrap();
    assert!(r.status.online(), "{r:?}");
    assert_eq!(r.charge_pct, Some(100.0));
    assert_eq!(r.runtime_s, Some(3600.0));
    assert_eq!(r.load_pct, Some(23.0));
    assert_eq!(r.input_voltage, Some(230.0));
    assert_eq!(r.output_voltage, Some(230.0));
    assert_eq!(r.battery_voltage, None, "dummy data has no battery.voltage");
}

#[tokio::test]
async fn changes_are_seen_through_the_same_connection() {
    let upsd = Upsd::start(UPS);
    let mut ups = NutUps::new(&config(&upsd, None)).unwrap();
    assert!(ups.read().await.unwrap().status.online());

    upsd.set_var("ups.status", "OB DISCHRG");
    upsd.set_var("battery.runtime", "1200");
    let r = ups.read().await.unwrap();
    assert!(r.status.on_battery() && !r.status.online(), "{r:?}");
    assert_eq!(r.runtime_s, Some(1200.0));
    assert_eq!(ups.connections_opened(), 1, "one persistent connection");
}

#[tokio::test]
async fn killed_upsd_is_never_online_and_a_restart_is_picked_up() {
    let mut upsd = Upsd::start(UPS);
    let mut ups = NutUps::new(&config(&upsd, None)).unwrap();
    assert!(ups.read().await.unwrap().status.online());

    upsd.kill_upsd();
    for _ in 0..3 {
        let err = ups.read().await.expect_err("upsd is dead");
        assert!(matches!(err.kind, ErrorKind::NoData | ErrorKind::Unreachable), "{err}");
    }

    upsd.restart_upsd();
    let seen = read_until(&mut ups, "a reading after the restart", Result::is_ok).await;
    for outcome in &seen[..seen.len() - 1] {
        let err = outcome.as_ref().expect_err("only the last outcome is a reading");
        assert!(matches!(err.kind, ErrorKind::NoData | ErrorKind::Unreachable), "{err}");
    }
    assert!(seen.last().unwrap().as_ref().unwrap().status.online());
    assert!(ups.connections_opened() >= 2);
}

#[tokio::test]
async fn killed_driver_is_no_data() {
    let mut upsd = Upsd::start(UPS);
    let mut ups = NutUps::new(&config(&upsd, None)).unwrap();
    assert!(ups.read().await.unwrap().status.online());

    upsd.kill_driver();
    // upsd 2.8.0 first reports `ups.status` WAIT (no data too), then DRIVER-NOT-CONNECTED, or
    // DATA-STALE once the data ages; a read racing the kill may still see the last values.
    let seen = read_until(&mut ups, "an ERR answer after the driver died", |r| {
        r.as_ref().is_err_and(|e| e.message.contains("DATA-STALE") || e.message.contains("DRIVER-NOT-CONNECTED"))
    })
    .await;
    for outcome in &seen {
        if let Err(e) = outcome {
            assert_eq!(e.kind, ErrorKind::NoData, "{e}");
        }
    }
    assert_eq!(ups.connections_opened(), 1, "an ERR answer keeps the connection");
}

#[tokio::test]
async fn load_off_is_accepted_for_the_admin() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let login = (dir.path(), upsd.admin_user(), upsd.admin_password());
    let mut ups = NutUps::new(&config(&upsd, Some(login))).unwrap();
    ups.instant_command("load.off", None).await.unwrap();

    // dummy-ups knows no other command; upsd says so before it looks at rights.
    let err = ups.instant_command("load.off.delay", Some("120")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err}");
    assert!(err.message.contains("CMD-NOT-SUPPORTED"), "{err}");
    // Reads share the connection with the commands.
    assert!(ups.read().await.unwrap().status.online());
    assert_eq!(ups.connections_opened(), 1);
}

#[tokio::test]
async fn wrong_password_is_an_auth_error() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let login = (dir.path(), upsd.admin_user(), "not-the-password");
    let mut ups = NutUps::new(&config(&upsd, Some(login))).unwrap();
    // upsd stores USERNAME/PASSWORD unchecked, and reads need no rights...
    assert!(ups.read().await.unwrap().status.online());
    // ...so the wrong password shows when a command needs it.
    let err = ups.instant_command("load.off", None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert!(!err.to_string().contains("not-the-password"), "{err}");
}

#[tokio::test]
async fn unknown_ups_is_a_config_error() {
    let upsd = Upsd::start(UPS);
    let mut cfg = config(&upsd, None);
    cfg.ups = "nosuchups".into();
    let mut ups = NutUps::new(&cfg).unwrap();
    let err = ups.read().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config, "{err}");
}

#[tokio::test]
async fn client_get_var_and_logout() {
    let upsd = Upsd::start(UPS);
    let addr = upsd.addr();
    let mut client = NutClient::connect(&addr.ip().to_string(), addr.port(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(client.get_var(UPS, "ups.status").await.unwrap(), "OL");
    assert_eq!(client.get_var(UPS, "device.model").await.unwrap(), "Hecate Test UPS 1500");
    let err = client.get_var(UPS, "no.such.var").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err}");
    let vars = client.list_vars(UPS).await.unwrap();
    assert!(vars.iter().any(|(n, v)| n == "battery.charge" && v == "100"));
    client.logout().await.unwrap();
}

#[tokio::test]
async fn refused_connection_is_unreachable() {
    // A port upsd listened on and no longer does.
    let mut upsd = Upsd::start(UPS);
    let cfg = config(&upsd, None);
    upsd.kill_upsd();
    let mut ups = NutUps::new(&cfg).unwrap();
    let err = ups.read().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unreachable, "{err}");
}

/// [`config`] for `user` with `login` (None: the default for a loopback endpoint).
fn login_config(upsd: &Upsd, dir: &Path, user: &str, pass: &str, login: Option<Attachment>) -> NutConfig {
    NutConfig { login, ..config(upsd, Some((dir, user, pass))) }
}

#[tokio::test]
async fn logs_in_as_primary_by_default_and_upsd_counts_it() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let cfg = login_config(&upsd, dir.path(), upsd.primary_user(), upsd.primary_password(), None);
    assert_eq!(cfg.effective_login(), Attachment::Primary, "a upsd on loopback is this host's");
    let mut ups = NutUps::new(&cfg).unwrap();
    assert_eq!(upsd.num_logins().unwrap(), 0);
    assert!(ups.read().await.unwrap().status.online());
    assert_eq!(upsd.num_logins().unwrap(), 1, "NUMLOGINS counts hecate");
    assert!(ups.logged_in() && ups.primary_granted());
    assert_eq!(ups.attachment(), Attachment::Primary);
    assert!(upsd.upsd_log().contains("User hecate@127.0.0.1 logged into UPS [atlasups]"), "{}", upsd.upsd_log());
    // The login lives as long as the connection: more reads, still one.
    ups.read().await.unwrap();
    assert_eq!(upsd.num_logins().unwrap(), 1);
    assert_eq!(ups.connections_opened(), 1);
}

#[tokio::test]
async fn logs_in_again_after_upsd_restarts() {
    let mut upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let cfg = login_config(&upsd, dir.path(), upsd.primary_user(), upsd.primary_password(), None);
    let mut ups = NutUps::new(&cfg).unwrap();
    ups.read().await.unwrap();
    upsd.restart_upsd();
    assert_eq!(upsd.num_logins().unwrap(), 0, "a new upsd counts nobody");
    read_until(&mut ups, "a reading after the restart", Result::is_ok).await;
    assert_eq!(upsd.num_logins().unwrap(), 1);
    assert!(ups.primary_granted());
}

#[tokio::test]
async fn logs_in_as_secondary() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        login_config(&upsd, dir.path(), upsd.secondary_user(), upsd.secondary_password(), Some(Attachment::Secondary));
    let mut ups = NutUps::new(&cfg).unwrap();
    ups.read().await.unwrap();
    assert_eq!(upsd.num_logins().unwrap(), 1);
    assert!(ups.logged_in() && !ups.primary_granted());
}

#[tokio::test]
async fn a_user_without_upsmon_rights_still_reads_and_is_not_counted() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    // admin has instcmds and SET, not `upsmon`: LOGIN is refused.
    let cfg = login_config(&upsd, dir.path(), upsd.admin_user(), upsd.admin_password(), Some(Attachment::Primary));
    let mut ups = NutUps::new(&cfg).unwrap();
    assert!(ups.read().await.unwrap().status.online());
    assert!(ups.read().await.unwrap().status.online());
    assert!(!ups.logged_in());
    assert_eq!(upsd.num_logins().unwrap(), 0);
    assert_eq!(ups.connections_opened(), 1, "a refused LOGIN keeps the connection");

    // A secondary user asked to be primary: counted, not granted primary.
    let cfg =
        login_config(&upsd, dir.path(), upsd.secondary_user(), upsd.secondary_password(), Some(Attachment::Primary));
    let mut ups = NutUps::new(&cfg).unwrap();
    ups.read().await.unwrap();
    assert!(ups.logged_in() && !ups.primary_granted());
    assert_eq!(upsd.num_logins().unwrap(), 1);
}

#[tokio::test]
async fn login_none_only_reads() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let cfg = login_config(&upsd, dir.path(), upsd.primary_user(), upsd.primary_password(), Some(Attachment::None));
    let mut ups = NutUps::new(&cfg).unwrap();
    ups.read().await.unwrap();
    assert_eq!(upsd.num_logins().unwrap(), 0);
    assert!(!ups.logged_in());
}

/// Polls `other_clients` until `done` accepts the count.
async fn clients_until(ups: &mut NutUps, what: &str, done: impl Fn(u32) -> bool) -> hecate_core::power::OtherClients {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let c = ups.other_clients().await.expect("NUMLOGINS and LIST CLIENT");
        if done(c.count) {
            return c;
        }
        assert!(Instant::now() < deadline, "waited {DEADLINE:?} for {what}; last: {c:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn fsd_tells_a_real_upsmon_secondary_which_shuts_down_and_logs_out() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let cfg = login_config(&upsd, dir.path(), upsd.primary_user(), upsd.primary_password(), None);
    let mut ups = NutUps::new(&cfg).unwrap();
    ups.read().await.unwrap();
    let mut nas = Upsmon::start(&upsd, upsd.secondary_user(), upsd.secondary_password(), UpsmonRole::Secondary, 15);
    assert_eq!(upsd.num_logins().unwrap(), 2);

    // hecate's own login is not an other client, nor its address in LIST CLIENT
    let c = ups.other_clients().await.unwrap();
    assert_eq!(c.count, 1, "{c:?}");
    assert_eq!(c.addresses, ["127.0.0.1"], "the secondary's address, once");
    assert!(nas.shutdowns().is_empty());

    ups.raise_fsd().await.unwrap();
    assert_eq!(upsd.get_var("ups.status").unwrap(), "FSD OL");
    let c = clients_until(&mut ups, "the secondary to log out", |n| n == 0).await;
    assert!(c.addresses.is_empty(), "{c:?}");
    assert_eq!(nas.shutdowns().len(), 1, "the secondary's SHUTDOWNCMD ran once: {}", nas.log());
    wait_until("the secondary upsmon to exit", DEADLINE, || if nas.exited() { Ok(()) } else { Err(nas.log()) });
    // (upsmon closes its connection without LOGOUT; upsd logs no line for that, NUMLOGINS shows it)
    let log = upsd.upsd_log();
    assert!(log.contains("Client hecate@127.0.0.1 set FSD on UPS [atlasups]"), "{log}");

    // upsd keeps FSD until it restarts; hecate, which set it, does not read it as a new one
    let r = ups.read().await.unwrap();
    assert!(!r.status.has(&StatusFlag::ForcedShutdown) && r.status.online(), "{r:?}");
    assert_eq!(upsd.get_var("ups.status").unwrap(), "FSD OL");
}

#[tokio::test]
async fn fsd_needs_upsmon_primary_rights() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        login_config(&upsd, dir.path(), upsd.secondary_user(), upsd.secondary_password(), Some(Attachment::Primary));
    let mut ups = NutUps::new(&cfg).unwrap();
    let err = ups.raise_fsd().await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{err}");
    assert_eq!(upsd.get_var("ups.status").unwrap(), "OL");
}

#[tokio::test]
async fn a_secondary_detaches_and_logs_in_again_once_mains_are_back() {
    let upsd = Upsd::start_with_vars(UPS, &[("ups.status", "OB DISCHRG")]);
    let dir = tempfile::tempdir().unwrap();
    let cfg =
        login_config(&upsd, dir.path(), upsd.secondary_user(), upsd.secondary_password(), Some(Attachment::Secondary));
    let mut ups = NutUps::new(&cfg).unwrap();
    ups.read().await.unwrap();
    assert_eq!(upsd.num_logins().unwrap(), 1);

    assert_eq!(ups.detach().await.unwrap(), "logged out");
    assert_eq!(upsd.num_logins().unwrap(), 0);
    assert!(upsd.upsd_log().contains("User secmon@127.0.0.1 logged out from UPS [atlasups]"));
    // Polls go on during the outage without counting as a client again.
    for _ in 0..3 {
        assert!(ups.read().await.unwrap().status.on_battery());
    }
    assert_eq!(upsd.num_logins().unwrap(), 0, "still detached while on battery");

    upsd.set_var("ups.status", "OL");
    ups.read().await.unwrap();
    ups.read().await.unwrap();
    assert_eq!(upsd.num_logins().unwrap(), 1, "attached again once mains are back");
}

#[tokio::test]
async fn dummy_ups_offers_only_load_off_so_auto_sends_nothing_and_load_off_is_sent_when_named() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap();
    let cfg = login_config(&upsd, dir.path(), upsd.primary_user(), upsd.primary_password(), None);
    let mut ups = NutUps::new(&cfg).unwrap();
    let err = ups.kill_power(None, Some(Duration::from_secs(120))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported, "{err}");
    assert!(err.message.contains("(it offers load.off)"), "{err}");
    assert!(!upsd.upsd_log().contains("Instant command"), "{}", upsd.upsd_log());

    let sent = ups.kill_power(Some("load.off"), None).await.unwrap();
    assert_eq!((sent.command.as_str(), sent.delay_s), ("load.off", Some(0)));
    assert!(
        upsd.upsd_log().contains("Instant command: hecate@127.0.0.1 did load.off on atlasups"),
        "{}",
        upsd.upsd_log()
    );
}

#[tokio::test]
async fn the_shutdown_delay_is_read_and_set_on_a_real_upsd() {
    let upsd = Upsd::start(UPS);
    let addr = upsd.addr();
    let mut client = NutClient::connect(&addr.ip().to_string(), addr.port(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(client.list_cmds(UPS).await.unwrap(), ["load.off"]);
    assert_eq!(client.get_var(UPS, "ups.delay.shutdown").await.unwrap(), "20");
    let err = client.set_var(UPS, "ups.delay.shutdown", "120").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "SET needs a user with the SET action: {err}");
    let pass = hecate_backends::power::nut::client::Secret::new(upsd.primary_password());
    client.authenticate(upsd.primary_user(), &pass).await.unwrap();
    client.set_var(UPS, "ups.delay.shutdown", "120").await.unwrap();
    wait_until("ups.delay.shutdown to read 120", DEADLINE, || match upsd.get_var("ups.delay.shutdown") {
        Ok(v) if v == "120" => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert!(upsd.upsd_log().contains("Set variable: hecate@127.0.0.1 set ups.delay.shutdown on atlasups to 120"));
    client.logout().await.unwrap();
}
