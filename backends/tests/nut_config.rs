//! The `nut` config: YAML keys and defaults, validation collecting every problem, building with
//! a password file, the registry row, and configs/nut.yaml staying valid.

use std::path::{Path, PathBuf};

use hecate_backends::power::nut::{NutConfig, parse_endpoint};
use hecate_core::config::Config;
use hecate_core::power::PowerSourceConfig;
use hecate_core::{BuildContext, ErrorKind};

fn ctx() -> BuildContext {
    BuildContext { host: "test".into(), state_dir: std::env::temp_dir() }
}

fn parse(yaml: &str) -> Result<Box<dyn PowerSourceConfig>, String> {
    serde_saphyr::from_str::<Box<dyn PowerSourceConfig>>(yaml).map_err(|e| e.to_string())
}

fn nut(yaml: &str) -> NutConfig {
    serde_saphyr::from_str::<NutConfig>(yaml).unwrap_or_else(|e| panic!("{yaml:?}: {e}"))
}

#[test]
fn minimal_yaml_gets_defaults() {
    let cfg = parse("type: nut\nname: atlas\nups: atlasups\n").unwrap();
    assert_eq!(cfg.name(), "atlas");
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["type"], "nut");
    assert_eq!(json["endpoint"], "127.0.0.1:3493");
    assert_eq!(json["timeout"], "5s");
    assert!(json.get("username").is_none());
}

#[test]
fn unknown_keys_are_refused() {
    let err = parse("type: nut\nname: a\nups: u\nstarttls: true\n").unwrap_err();
    assert!(err.contains("starttls"), "{err}");
    // There is no way to turn certificate checks off.
    let err = parse("type: nut\nname: a\nups: u\ntls:\n  ca_file: /ca.pem\n  insecure: true\n").unwrap_err();
    assert!(err.contains("insecure"), "{err}");
}

#[test]
fn tls_block_defaults_and_round_trip() {
    let cfg = nut("name: a\nups: u\ntls:\n  ca_file: /etc/hecate/nut-ca.pem\n");
    let tls = cfg.tls.as_ref().expect("a tls block");
    assert_eq!(tls.ca_file.as_deref(), Some(Path::new("/etc/hecate/nut-ca.pem")));
    assert_eq!(tls.server_name, None);
    assert!(tls.required);
    assert_eq!(tls.effective_server_name(&cfg.endpoint).unwrap(), "127.0.0.1");
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let json = serde_json::to_value(&cfg).unwrap();
    assert_eq!(json["tls"]["ca_file"], "/etc/hecate/nut-ca.pem");
    assert_eq!(json["tls"]["required"], true);

    let cfg = nut("name: a\nups: u\nendpoint: 10.0.0.5\ntls: {ca_file: /ca.pem, server_name: ups.lan}\n");
    assert_eq!(cfg.tls.as_ref().unwrap().effective_server_name(&cfg.endpoint).unwrap(), "ups.lan");
    assert!(nut("name: a\nups: u\n").tls.is_none(), "no block: plain tcp");
}

#[test]
fn bare_tls_key_is_refused_not_read_as_plaintext() {
    // `tls:` with every line below it commented out must not quietly mean "no tls".
    let err = parse("type: nut\nname: a\nups: u\ntls:\n#  ca_file: /ca.pem\n").unwrap_err();
    assert!(err.contains("`tls` is empty"), "{err}");
}

#[test]
fn validate_reports_tls_problems() {
    let cfg = nut("name: a\nups: u\ntls: {}\n");
    let problems = cfg.validate();
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("`tls.ca_file` is required"), "{problems:?}");

    let cfg = nut("name: a\nups: u\ntls: {ca_file: '', server_name: 'not a name', required: false}\n");
    let all = cfg.validate().join("\n");
    assert_eq!(cfg.validate().len(), 3, "{all}");
    for needle in ["`tls.ca_file` must not be empty", "`tls.server_name` `not a name`", "`tls.required: false`"] {
        assert!(all.contains(needle), "no {needle} in {all}");
    }
}

#[test]
fn build_reads_the_tls_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let with_ca = |content: Option<&str>| {
        let file = dir.path().join("ca.pem");
        match content {
            Some(text) => std::fs::write(&file, text).expect("write the CA file"),
            None => drop(std::fs::remove_file(&file)),
        }
        nut(&format!("name: a\nups: u\ntls:\n  ca_file: {}\n", file.display())).build(&ctx())
    };
    for (content, needle) in [
        (None, "cannot read tls ca_file"),
        (Some(""), "holds no certificate"),
        (Some("not a certificate\n"), "holds no certificate"),
        (Some("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"), "not valid PEM"),
        (Some("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), "not a usable CA certificate"),
    ] {
        let err = with_ca(content).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config, "{content:?}: {err}");
        assert!(err.message.contains(needle), "{content:?}: no {needle} in {err}");
        assert!(err.message.contains(&dir.path().join("ca.pem").display().to_string()), "{err}");
    }
}

#[test]
fn validate_reports_every_problem() {
    let cfg = nut("name: ''\nups: atlasups@10.0.0.5\nendpoint: 'tcp://10.0.0.5'\nusername: hecate\ntimeout: 0s\n");
    let problems = cfg.validate();
    assert_eq!(problems.len(), 5, "{problems:#?}");
    let all = problems.join("\n");
    for needle in ["`name`", "`ups`", "scheme", "password_file", "`timeout`"] {
        assert!(all.contains(needle), "no {needle} in {all}");
    }
    let cfg = nut("name: a\nups: u\npassword_file: /x\n");
    assert_eq!(cfg.validate().len(), 1, "{:?}", cfg.validate());
}

#[test]
fn endpoints() {
    let ok = |s: &str| parse_endpoint(s).unwrap();
    assert_eq!(ok("10.0.0.5"), ("10.0.0.5".into(), 3493));
    assert_eq!(ok("10.0.0.5:4000"), ("10.0.0.5".into(), 4000));
    assert_eq!(ok("ups.lan"), ("ups.lan".into(), 3493));
    assert_eq!(ok("ups.lan:3494"), ("ups.lan".into(), 3494));
    assert_eq!(ok("[::1]:4000"), ("::1".into(), 4000));
    assert_eq!(ok("[::1]"), ("::1".into(), 3493));
    assert_eq!(ok("::1"), ("::1".into(), 3493));
    for bad in ["", "host:", "host:0", "host:99999", "host:abc", "a b:1", "[zz]", "http://h:1"] {
        assert!(parse_endpoint(bad).is_err(), "{bad:?} accepted");
    }
}

fn with_password(dir: &Path, content: &str) -> NutConfig {
    let file: PathBuf = dir.join("nut.pass");
    std::fs::write(&file, content).expect("write the password file");
    nut(&format!("name: a\nups: u\nusername: hecate\npassword_file: {}\n", file.display()))
}

#[test]
fn build_reads_the_password_file_and_hides_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = with_password(dir.path(), "s3cret-pass\n").build(&ctx()).unwrap();
    let debug = format!("{source:?}");
    assert!(!debug.contains("s3cret-pass"), "{debug}");
    assert!(debug.contains("***"), "{debug}");

    let err = with_password(dir.path(), "").build(&ctx()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    let err = with_password(dir.path(), "alpha\nbravo\n").build(&ctx()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(!err.to_string().contains("alpha"), "{err}");

    let missing = nut("name: a\nups: u\nusername: h\npassword_file: /nonexistent/nut.pass\n");
    let err = missing.build(&ctx()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.message.contains("/nonexistent/nut.pass"), "{err}");
}

#[test]
fn registered_as_a_power_source() {
    hecate_backends::link();
    let rows = hecate_core::registry::backends();
    let row = rows.iter().find(|b| b.type_name == "nut").expect("nut is registered");
    assert_eq!(row.role, hecate_core::registry::BackendRole::PowerSource);
}

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/nut.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let (cfg, _warnings) = Config::from_yaml(&text, &path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!cfg.power_sources.is_empty());
}

#[test]
fn login_defaults_to_primary_on_loopback_secondary_elsewhere_none_without_a_user() {
    use hecate_core::power::Attachment;
    let with_user = |endpoint: &str| {
        nut(&format!(
            "name: a\nups: u\nendpoint: \"{endpoint}\"\nusername: hecate\npassword_file: /etc/hecate/nut.pass\n"
        ))
    };
    for local in ["127.0.0.1:3493", "localhost", "[::1]:3493", "127.0.0.53"] {
        assert_eq!(with_user(local).effective_login(), Attachment::Primary, "{local}");
    }
    for remote in ["10.0.0.5", "nas.lan:3493", "[2001:db8::1]"] {
        assert_eq!(with_user(remote).effective_login(), Attachment::Secondary, "{remote}");
    }
    assert_eq!(nut("name: a\nups: u\n").effective_login(), Attachment::None, "LOGIN needs a user");
    let explicit = nut("name: a\nups: u\nusername: x\npassword_file: /p\nlogin: none\n");
    assert_eq!(explicit.effective_login(), Attachment::None);
    assert_eq!(PowerSourceConfig::attachment(&explicit), Attachment::None);
    let explicit = nut("name: a\nups: u\nendpoint: 10.0.0.5\nusername: x\npassword_file: /p\nlogin: primary\n");
    assert_eq!(explicit.effective_login(), Attachment::Primary);
    assert!(explicit.validate().is_empty(), "{:?}", explicit.validate());
}

#[test]
fn login_without_a_user_is_refused() {
    for login in ["primary", "secondary"] {
        let cfg = nut(&format!("name: a\nups: u\nlogin: {login}\n"));
        let problems = cfg.validate();
        assert!(problems.iter().any(|p| p.contains(&format!("`login: {login}` needs `username`"))), "{problems:?}");
    }
    assert!(nut("name: a\nups: u\nlogin: none\n").validate().is_empty());
    let err = parse("type: nut\nname: a\nups: u\nlogin: master\n").unwrap_err();
    assert!(err.contains("master"), "{err}");
}
