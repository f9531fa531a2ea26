//! The `nut` backend's STARTTLS against a real NUT `upsd` (hecate_test_support::Upsd), on a free
//! loopback port. Debian's upsd 2.8 is built with NSS and answers `STARTTLS` once it has a
//! certificate; the harness loads one into an NSS database for it. Each test makes a throwaway CA
//! and a certificate for 127.0.0.1 and localhost with the openssl CLI. Needs root and the peers
//! installed (scripts/install-test-deps.sh).

use std::path::{Path, PathBuf};
use std::time::Duration;

use hecate_backends::power::nut::client::{NutClient, TlsSettings};
use hecate_backends::power::nut::{NutConfig, NutTlsConfig, NutUps};
use hecate_core::ErrorKind;
use hecate_core::duration::HumanDuration;
use hecate_core::power::PowerSource;
use hecate_test_support::Upsd;

const UPS: &str = "atlasups";
/// Bounds every test past upsd's start, so a hang fails instead of blocking the suite.
const TEST_LIMIT: Duration = Duration::from_secs(30);

/// A test CA (`ca.pem`) and a certificate it signed for 127.0.0.1 and localhost, with its key
/// after it in one file (`server.pem`), as upsd's certificate.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir for certificates");
        let pki = Self { dir };
        hecate_test_support::make_certificates(pki.dir.path());
        let cert = std::fs::read_to_string(pki.path("cert.pem")).expect("read cert.pem");
        let key = std::fs::read_to_string(pki.path("key.pem")).expect("read key.pem");
        std::fs::write(pki.path("server.pem"), cert + &key).expect("write server.pem");
        pki
    }

    fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    fn server_pem(&self) -> PathBuf {
        self.path("server.pem")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn config(upsd: &Upsd, ca_file: &Path, server_name: Option<&str>) -> NutConfig {
    NutConfig {
        name: "atlas".into(),
        ups: UPS.into(),
        endpoint: upsd.addr().to_string(),
        username: None,
        password_file: None,
        timeout: HumanDuration::from_secs(5),
        tls: Some(NutTlsConfig {
            ca_file: Some(ca_file.to_owned()),
            server_name: server_name.map(str::to_owned),
            required: true,
        }),
        login: None,
    }
}

async fn bounded<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(TEST_LIMIT, f).await.expect("test took longer than its limit")
}

#[tokio::test]
async fn reads_and_commands_go_over_starttls() {
    let pki = Pki::new();
    let upsd = Upsd::start_with_tls(UPS, &pki.server_pem());
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&upsd, &pki.ca(), None);
        let password_file = dir.path().join("nut.pass");
        std::fs::write(&password_file, upsd.admin_password()).unwrap();
        (cfg.username, cfg.password_file) = (Some(upsd.admin_user().into()), Some(password_file));
        let mut ups = NutUps::new(&cfg).unwrap();

        let r = ups.read().await.unwrap();
        assert!(r.status.online(), "{r:?}");
        assert_eq!(r.charge_pct, Some(100.0));
        assert_eq!(r.runtime_s, Some(3600.0));
        assert!(ups.connected_over_tls());
        // The login went over the same encrypted connection: the password checks out.
        ups.instant_command("load.off", None).await.unwrap();
        upsd.set_var("ups.status", "OB DISCHRG");
        assert!(ups.read().await.unwrap().status.on_battery());
        assert_eq!(ups.connections_opened(), 1, "one persistent tls connection");
    })
    .await;
}

#[tokio::test]
async fn server_name_can_differ_from_the_endpoint_host() {
    let pki = Pki::new();
    let upsd = Upsd::start_with_tls(UPS, &pki.server_pem());
    bounded(async {
        // Connected by address, checked against the certificate's DNS name.
        let mut ups = NutUps::new(&config(&upsd, &pki.ca(), Some("localhost"))).unwrap();
        assert!(ups.read().await.unwrap().status.online());
        assert!(ups.connected_over_tls());

        // A name the certificate does not carry is refused like an unknown CA.
        let mut ups = NutUps::new(&config(&upsd, &pki.ca(), Some("ups.example"))).unwrap();
        let err = ups.read().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth, "{err}");
        assert!(err.message.contains("ups.example"), "{err}");

        // The client on its own, as a library user would drive it.
        let addr = upsd.addr();
        let tls = TlsSettings::from_ca_file(&pki.ca(), "127.0.0.1").unwrap();
        let client = NutClient::connect(&addr.ip().to_string(), addr.port(), Duration::from_secs(5)).await.unwrap();
        let mut client = client.start_tls(&tls).await.unwrap();
        assert!(client.is_tls());
        assert_eq!(client.get_var(UPS, "ups.status").await.unwrap(), "OL");
        client.logout().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_an_auth_error_never_a_reading() {
    let pki = Pki::new();
    let other_ca = hecate_test_support::make_ca(pki.dir.path(), "other-ca");
    let upsd = Upsd::start_with_tls(UPS, &pki.server_pem());
    bounded(async {
        let mut ups = NutUps::new(&config(&upsd, &other_ca, None)).unwrap();
        let err = ups.read().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Auth, "{err}");
        assert!(err.message.contains("certificate"), "{err}");
        // Backing off repeats the failure; a reading never slips through in plaintext.
        let again = ups.read().await.unwrap_err();
        assert_eq!(again.kind, ErrorKind::Auth, "{again}");
        assert!(!ups.connected_over_tls());
    })
    .await;
}

#[tokio::test]
async fn upsd_without_a_certificate_is_a_config_error_without_plaintext_fallback() {
    let pki = Pki::new();
    let upsd = Upsd::start(UPS);
    bounded(async {
        let mut ups = NutUps::new(&config(&upsd, &pki.ca(), None)).unwrap();
        // This upsd serves LIST VAR in plaintext: a fallback would have read the UPS as online.
        let err = ups.read().await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{err}");
        for needle in ["STARTTLS", "FEATURE-NOT-CONFIGURED", "plaintext"] {
            assert!(err.message.contains(needle), "no {needle} in {err}");
        }
        assert_eq!(ups.connections_opened(), 1);
    })
    .await;
}

#[tokio::test]
async fn a_restarted_upsd_is_picked_up_over_tls_again() {
    let pki = Pki::new();
    let mut upsd = Upsd::start_with_tls(UPS, &pki.server_pem());
    let mut ups = NutUps::new(&config(&upsd, &pki.ca(), None)).unwrap();
    bounded(async { assert!(ups.read().await.unwrap().status.online()) }).await;

    upsd.restart_upsd();
    bounded(async {
        // The kept tls connection is found dead and replaced within the same read.
        let r = ups.read().await.unwrap();
        assert!(r.status.online(), "{r:?}");
        assert!(ups.connected_over_tls());
        assert_eq!(ups.connections_opened(), 2);
    })
    .await;
}
