//! The `nut` source's preflight against a real NUT `upsd` (hecate_test_support::Upsd): whether
//! this host counts among the UPS's clients as configured, without changing what upsd counts.
//! Needs root and the peers installed (scripts/install-test-deps.sh).

use std::path::Path;

use hecate_backends::power::nut::{NutConfig, NutUps};
use hecate_core::duration::HumanDuration;
use hecate_core::power::{Attachment, PowerSource};
use hecate_core::preflight::{Check, CheckStatus};
use hecate_test_support::Upsd;

const UPS: &str = "atlasups";

fn source(upsd: &Upsd, dir: &Path, user: &str, pass: &str, login: Attachment) -> NutUps {
    let file = dir.join(format!("{user}.pass"));
    std::fs::write(&file, format!("{pass}\n")).expect("write the password file");
    NutUps::new(&NutConfig {
        name: "atlas".into(),
        ups: UPS.into(),
        endpoint: upsd.addr().to_string(),
        username: Some(user.to_string()),
        password_file: Some(file),
        timeout: HumanDuration::from_secs(5),
        tls: None,
        login: Some(login),
    })
    .expect("a source")
}

async fn login_check(ups: &NutUps) -> Check {
    let checks = ups.preflight().await;
    assert_eq!(checks.len(), 1, "{checks:?}");
    checks.into_iter().next().expect("one check")
}

#[tokio::test]
async fn a_fresh_check_asks_upsd_without_staying_counted() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let primary = source(&upsd, dir.path(), upsd.primary_user(), upsd.primary_password(), Attachment::Primary);
    let c = login_check(&primary).await;
    assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
    assert!(c.message.contains("PRIMARY") && c.message.contains("without logging in"), "{c:?}");
    assert_eq!(upsd.num_logins(), Ok(0), "a primary's check logs nothing in");

    let secondary = source(&upsd, dir.path(), upsd.secondary_user(), upsd.secondary_password(), Attachment::Secondary);
    let c = login_check(&secondary).await;
    assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
    assert_eq!(upsd.num_logins(), Ok(0), "a secondary's check logs out again");

    // A password that changed; a secondary's user asked to be primary.
    let wrong = source(&upsd, dir.path(), upsd.primary_user(), "not-the-password", Attachment::Primary);
    let c = login_check(&wrong).await;
    assert_eq!(c.status, CheckStatus::Failed, "{c:?}");
    assert!(c.message.contains("ACCESS-DENIED") || c.message.contains("access"), "{c:?}");
    let short = source(&upsd, dir.path(), upsd.secondary_user(), upsd.secondary_password(), Attachment::Primary);
    assert_eq!(login_check(&short).await.status, CheckStatus::Failed);
    assert_eq!(upsd.num_logins(), Ok(0));
}

#[tokio::test]
async fn the_daemons_own_connection_says_whether_it_is_logged_in() {
    let upsd = Upsd::start(UPS);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut ups = source(&upsd, dir.path(), upsd.primary_user(), upsd.primary_password(), Attachment::Primary);
    ups.read().await.expect("a reading");
    assert_eq!(upsd.num_logins(), Ok(1));
    let c = login_check(&ups).await;
    assert_eq!(c.status, CheckStatus::Ok, "{c:?}");
    assert!(c.message.contains("as its primary"), "{c:?}");
    assert_eq!(upsd.num_logins(), Ok(1), "still the one login");

    // A user without upsmon rights reads fine, and fails the check with why.
    let mut admin = source(&upsd, dir.path(), upsd.admin_user(), upsd.admin_password(), Attachment::Primary);
    admin.read().await.expect("reading needs no rights");
    let c = login_check(&admin).await;
    assert_eq!(c.status, CheckStatus::Failed, "{c:?}");
    assert!(c.message.contains("upsmon primary"), "{c:?}");
}
