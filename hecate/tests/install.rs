//! scripts/install.sh and scripts/self-update.sh, run as an operator would, into temp roots
//! (`--root DIR`: no packages, no systemctl, no udevadm), plus the units (`systemd-analyze
//! verify`), the node sudoers rule (`visudo -cf`) and the generated upsd.users (a real `upsd`).
//!
//! Needs root (NUT's files are chowned to group `nut`) and `systemd-analyze`, `visudo`, `git` and
//! NUT's `upsd`: `./scripts/test` installs them. A missing one fails the test with a message.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hecate_test_support::{SCRIPT_KNOBS, SETUP_HINT, free_port, require_root};

const UNITS: [&str; 4] = ["hecate.service", "hecate-bootstrap.service", "hecate-update.service", "hecate-update.timer"];
const NUT_FILES: [&str; 4] = ["etc/nut/nut.conf", "etc/nut/ups.conf", "etc/nut/upsd.conf", "etc/nut/upsd.users"];
const UDEV_RULE: &str = "etc/udev/rules.d/90-hecate-nut-ups.rules";
const BOOTSTRAP_LINK: &str = "etc/systemd/system/multi-user.target.wants/hecate-bootstrap.service";
const UPDATE_LINK: &str = "etc/systemd/system/timers.target.wants/hecate-update.timer";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// Runs scripts/install.sh into `root` with the test binary, apt skipped, and `env` as the knobs.
fn install(root: &Path, env: &[(&str, &str)]) -> Output {
    require_root();
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts/install.sh"))
        .arg("--root")
        .arg(root)
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_hecate"))
        .stdin(Stdio::null());
    for k in SCRIPT_KNOBS {
        c.env_remove(k);
    }
    c.env("HECATE_SKIP_APT", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run bash scripts/install.sh")
}

/// Like [`install`], and it must succeed: returns stdout.
fn install_ok(root: &Path, env: &[(&str, &str)]) -> String {
    let o = install(root, env);
    let (out, err) = text(&o);
    assert!(o.status.success(), "install.sh failed ({}):\n{out}\n{err}", o.status);
    out
}

fn updated_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("updated")).collect()
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn mode(root: &Path, rel: &str) -> u32 {
    std::fs::symlink_metadata(root.join(rel)).unwrap_or_else(|e| panic!("stat {rel}: {e}")).permissions().mode()
        & 0o7777
}

/// The gid install.sh gives NUT's files: group `nut` where it exists, else root.
fn nut_gid() -> u32 {
    let out = Command::new("getent").args(["group", "nut"]).output().expect("run getent");
    if !out.status.success() {
        return 0;
    }
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2).and_then(|g| g.trim().parse().ok()).unwrap_or_else(|| panic!("odd getent line {line:?}"))
}

/// One entry of a tree snapshot: everything a rewrite would change.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, i64),
    size: u64,
    content: u64,
    link: Option<PathBuf>,
}

/// Every file, dir and symlink under `root`, by relative path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    fn walk(root: &Path, dir: &Path, map: &mut BTreeMap<PathBuf, Entry>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            let m = std::fs::symlink_metadata(&path).unwrap();
            let kind = if m.file_type().is_symlink() {
                "symlink"
            } else if m.is_dir() {
                "dir"
            } else {
                "file"
            };
            let content = if kind == "file" {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                std::fs::read(&path).unwrap().hash(&mut h);
                h.finish()
            } else {
                0
            };
            let entry = Entry {
                kind,
                mode: m.permissions().mode(),
                uid: m.uid(),
                gid: m.gid(),
                mtime: (m.mtime(), m.mtime_nsec()),
                size: if kind == "dir" { 0 } else { m.len() },
                content,
                link: if kind == "symlink" { Some(std::fs::read_link(&path).unwrap()) } else { None },
            };
            map.insert(path.strip_prefix(root).unwrap().to_path_buf(), entry);
            if kind == "dir" {
                walk(root, &path, map);
            }
        }
    }
    let mut map = BTreeMap::new();
    walk(root, root, &mut map);
    map
}

fn assert_same_tree(before: &BTreeMap<PathBuf, Entry>, after: &BTreeMap<PathBuf, Entry>) {
    let paths: std::collections::BTreeSet<_> = before.keys().chain(after.keys()).collect();
    let diffs: Vec<String> = paths
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| format!("{}: {:?} -> {:?}", p.display(), before.get(p), after.get(p)))
        .collect();
    assert!(diffs.is_empty(), "the re-run changed the tree:\n{}", diffs.join("\n"));
}

/// The first path of `candidates` that is an executable file, or a failure naming the package.
fn require_tool(candidates: &[&str], package: &str) -> PathBuf {
    for c in candidates {
        let p = PathBuf::from(c);
        if std::fs::metadata(&p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false) {
            return p;
        }
    }
    panic!("none of {candidates:?} exists (Debian package `{package}`): {SETUP_HINT}")
}

#[test]
fn a_second_install_changes_nothing_and_says_so() {
    let root = tempfile::tempdir().unwrap();
    let out = install_ok(root.path(), &[]);
    for what in [
        "updated   /usr/local/bin/hecate",
        "updated   /etc/hecate/hecate.yaml",
        "updated   /etc/systemd/system/hecate.service",
        "updated   /etc/nut/upsd.users",
        "packages: skipped (--root)",
    ] {
        assert!(out.contains(what), "first run should say {what:?}:\n{out}");
    }
    assert!(out.trim_end().ends_with("change(s) made"), "{out}");

    // what landed, with which modes
    let bin = std::fs::read(root.path().join("usr/local/bin/hecate")).unwrap();
    assert!(bin == std::fs::read(env!("CARGO_BIN_EXE_hecate")).unwrap(), "installed binary differs from the source");
    assert!(!root.path().join("usr/local/bin/hecate.previous").exists(), "nothing to keep on a first install");
    assert_eq!(mode(root.path(), "usr/local/bin/hecate"), 0o755);
    assert_eq!(mode(root.path(), "etc/hecate"), 0o750);
    assert_eq!(mode(root.path(), "var/lib/hecate"), 0o750);
    for u in UNITS {
        let rel = format!("etc/systemd/system/{u}");
        assert_eq!(read(root.path(), &rel), read(&repo(), &format!("systemd/{u}")), "{rel}");
        assert_eq!(mode(root.path(), &rel), 0o644, "{rel}");
    }
    assert_eq!(read(root.path(), "usr/local/lib/hecate/self-update.sh"), read(&repo(), "scripts/self-update.sh"));
    assert_eq!(mode(root.path(), "usr/local/lib/hecate/self-update.sh"), 0o755);
    assert_eq!(
        read(root.path(), "usr/local/share/hecate/sudoers.d/hecate-node"),
        read(&repo(), "packaging/sudoers.d/hecate-node")
    );
    assert_eq!(
        read(root.path(), "usr/local/share/hecate/node/hecate-k3s-stop"),
        read(&repo(), "packaging/node/hecate-k3s-stop")
    );
    assert_eq!(mode(root.path(), "usr/local/share/hecate/node/hecate-k3s-stop"), 0o755);
    let daemon_link = root.path().join("etc/systemd/system/multi-user.target.wants/hecate.service");
    assert_eq!(std::fs::read_link(&daemon_link).unwrap(), Path::new("/etc/systemd/system/hecate.service"));
    // a first install leaves the boot-time startup and the self-update off (auto keeps "off")
    assert!(!root.path().join(BOOTSTRAP_LINK).exists() && !root.path().join(UPDATE_LINK).exists());

    let before = snapshot(root.path());
    std::thread::sleep(Duration::from_millis(50)); // any rewrite now gets a later mtime
    let again = install_ok(root.path(), &[]);
    assert!(again.trim_end().ends_with("nothing to change"), "second run:\n{again}");
    assert!(updated_lines(&again).is_empty(), "second run reports changes:\n{again}");
    assert!(again.contains("unchanged /usr/local/bin/hecate\n"), "{again}");
    assert!(again.contains("unchanged /etc/hecate/hecate.yaml (exists: never overwritten)"), "{again}");
    assert_same_tree(&before, &snapshot(root.path()));
}

#[test]
fn an_edited_config_survives_a_rerun_and_a_deleted_one_comes_back() {
    let root = tempfile::tempdir().unwrap();
    install_ok(root.path(), &[]);
    let config = root.path().join("etc/hecate/hecate.yaml");
    let mine = "# mine\nhost: by-hand\npower_sources:\n  - { type: simulated, name: ups-by-hand }\n";
    std::fs::write(&config, mine).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mtime = std::fs::metadata(&config).unwrap().modified().unwrap();

    // even with knobs that change what a fresh config would hold
    let out = install_ok(root.path(), &[("HECATE_NUT_UPS_NAME", "otherups"), ("HECATE_NUT_MONITOR_USER", "other")]);
    assert!(out.contains("unchanged /etc/hecate/hecate.yaml (exists: never overwritten)"), "{out}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), mine);
    assert_eq!(mode(root.path(), "etc/hecate/hecate.yaml"), 0o600, "not even its mode is touched");
    assert_eq!(std::fs::metadata(&config).unwrap().modified().unwrap(), mtime);
    assert!(out.contains("config check: ") && out.contains(": ok (1 power source(s)"), "{out}");

    std::fs::remove_file(&config).unwrap();
    let out = install_ok(root.path(), &[]);
    assert!(out.contains("updated   /etc/hecate/hecate.yaml"), "{out}");
    assert_eq!(read(root.path(), "etc/hecate/hecate.yaml"), read(&repo(), "configs/hecate.example.yaml"));
}

#[test]
fn a_broken_existing_config_is_kept_and_reported() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/hecate")).unwrap();
    std::fs::write(root.path().join("etc/hecate/hecate.yaml"), "host: x\npower_sources: []\nbogus: 1\n").unwrap();
    let o = install(root.path(), &[]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "the install itself succeeds:\n{out}\n{err}");
    assert!(err.contains("rejects /etc/hecate/hecate.yaml") && err.contains("bogus"), "{err}");
    assert_eq!(read(root.path(), "etc/hecate/hecate.yaml"), "host: x\npower_sources: []\nbogus: 1\n");
}

#[test]
fn the_nut_knobs_shape_the_nut_files() {
    let root = tempfile::tempdir().unwrap();
    let password = "Pa55-w0rd!x";
    let env = [
        ("HECATE_NUT_UPS_NAME", "eaton5p"),
        ("HECATE_NUT_VENDOR_ID", "0463"),
        ("HECATE_NUT_PRODUCT_ID", "FFFF"),
        ("HECATE_NUT_MONITOR_USER", "hecmon"),
        ("HECATE_NUT_MONITOR_PASSWORD", password),
    ];
    let o = install(root.path(), &env);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(!out.contains(password) && !err.contains(password), "the password was printed:\n{out}\n{err}");

    let r = root.path();
    let nut = read(r, "etc/nut/nut.conf");
    assert!(nut.lines().any(|l| l == "MODE=standalone"), "{nut}");
    let ups = read(r, "etc/nut/ups.conf");
    for line in [
        "[eaton5p]",
        "  driver = usbhid-ups",
        "  port = auto",
        "  vendorid = 0463",
        "  productid = ffff",
        "  offdelay = 120",
        "  ondelay = 180",
    ] {
        assert!(ups.lines().any(|l| l == line), "ups.conf lacks {line:?}:\n{ups}");
    }
    let upsd = read(r, "etc/nut/upsd.conf");
    assert_eq!(
        upsd.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect::<Vec<_>>(),
        ["LISTEN 127.0.0.1 3493"]
    );
    let users = read(r, "etc/nut/upsd.users");
    for line in ["[hecmon]", "  password = \"Pa55-w0rd!x\"", "  upsmon primary"] {
        assert!(users.lines().any(|l| l == line), "upsd.users lacks {line:?}:\n{users}");
    }
    assert_eq!(users.matches('[').count(), 1, "one user only:\n{users}");
    for f in NUT_FILES {
        assert_eq!(mode(r, f), 0o640, "{f}");
        let m = std::fs::metadata(r.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (0, nut_gid()), "{f}: owner root, group nut (root without nut)");
    }
    assert_eq!(read(r, "etc/hecate/nut.pass"), format!("{password}\n"));
    assert_eq!(mode(r, "etc/hecate/nut.pass"), 0o640);
    let rule = read(r, UDEV_RULE);
    let rules: Vec<&str> = rule.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert_eq!(
        rules,
        [r#"SUBSYSTEM=="usb", ATTR{idVendor}=="0463", ATTR{idProduct}=="ffff", MODE="0660", GROUP="nut""#]
    );
    // the fresh config's (commented) NUT source names the same UPS and user
    let config = read(r, "etc/hecate/hecate.yaml");
    for line in ["  #   ups: eaton5p", "  #   username: hecmon", "  #   password_file: /etc/hecate/nut.pass"] {
        assert!(config.lines().any(|l| l == line), "hecate.yaml lacks {line:?}");
    }

    // the defaults
    let root = tempfile::tempdir().unwrap();
    install_ok(root.path(), &[]);
    let ups = read(root.path(), "etc/nut/ups.conf");
    for line in ["[atlasups]", "  vendorid = 0764", "  productid = 0601"] {
        assert!(ups.lines().any(|l| l == line), "ups.conf lacks {line:?}:\n{ups}");
    }
    assert!(read(root.path(), "etc/nut/upsd.users").lines().any(|l| l == "[monuser]"));
    assert!(read(root.path(), UDEV_RULE).contains(r#"ATTR{idVendor}=="0764", ATTR{idProduct}=="0601""#));
}

/// The monitor user's password as upsd.users holds it.
fn users_password(root: &Path) -> String {
    let users = read(root, "etc/nut/upsd.users");
    let line = users.lines().find(|l| l.trim_start().starts_with("password = ")).expect("a password line");
    line.trim().trim_start_matches("password = ").trim_matches('"').to_owned()
}

#[test]
fn the_monitor_password_is_generated_then_kept_then_replaced_on_request() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let out = install_ok(r, &[]);
    assert!(out.contains("generated a new password"), "{out}");
    let generated = users_password(r);
    assert!(generated.len() >= 20 && generated.chars().all(|c| c.is_ascii_alphanumeric()), "{generated:?}");
    assert_eq!(read(r, "etc/hecate/nut.pass"), format!("{generated}\n"));
    assert!(!out.contains(&generated), "the password was printed:\n{out}");

    let out = install_ok(r, &[]);
    assert!(out.trim_end().ends_with("nothing to change"), "{out}");
    assert_eq!(users_password(r), generated, "kept");

    // nut.pass alone (upsd.users lost) is enough to keep it too
    std::fs::remove_file(r.join("etc/nut/upsd.users")).unwrap();
    install_ok(r, &[]);
    assert_eq!(users_password(r), generated, "taken from nut.pass");

    let o = install(r, &[("HECATE_NUT_MONITOR_PASSWORD", "n3w-s3cret")]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(!out.contains("n3w-s3cret") && !err.contains("n3w-s3cret"), "the password was printed:\n{out}\n{err}");
    assert!(out.contains("updated   /etc/nut/upsd.users") && out.contains("updated   /etc/hecate/nut.pass"), "{out}");
    assert_eq!(users_password(r), "n3w-s3cret");
    assert_eq!(read(r, "etc/hecate/nut.pass"), "n3w-s3cret\n");

    let out = install_ok(r, &[]);
    assert!(out.trim_end().ends_with("nothing to change"), "{out}");
    assert_eq!(users_password(r), "n3w-s3cret", "the new one is kept");
}

/// Kills the process on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Sends lines over one connection and returns each first answer line.
fn converse(port: u16, lines: &[String]) -> Vec<String> {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut answers = Vec::new();
    for l in lines {
        (&stream).write_all(format!("{l}\n").as_bytes()).unwrap();
        let mut a = String::new();
        reader.read_line(&mut a).unwrap();
        answers.push(a.trim_end().to_owned());
    }
    answers
}

/// A real upsd on the NUT files installed under `root` as they are, but listening on one free
/// loopback port (whatever LISTEN lines they hold) with its state in a temp dir: (port, the
/// process, the dir). No driver runs; upsd answers for the UPSes of ups.conf all the same.
fn real_upsd(root: &Path, _ups: &str) -> (u16, Killed, tempfile::TempDir) {
    const UPSD: &str = "/lib/nut/upsd";
    let upsd = require_tool(&[UPSD], "nut-server");
    // upsd drops privileges to nut, so everything must be reachable for it
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let (etc, state) = (dir.path().join("etc"), dir.path().join("state"));
    std::fs::create_dir(&state).unwrap();
    let status = Command::new("cp").arg("-a").arg(root.join("etc/nut")).arg(&etc).status().unwrap();
    assert!(status.success());
    let port = free_port(Ipv4Addr::LOCALHOST);
    let conf: String = read(&etc, "upsd.conf")
        .lines()
        .filter(|l| !l.starts_with("LISTEN"))
        .map(|l| format!("{l}\n"))
        .chain([format!("LISTEN 127.0.0.1 {port}\n")])
        .collect();
    std::fs::write(etc.join("upsd.conf"), conf).unwrap();
    let status = Command::new("chgrp").arg("nut").arg(&state).status().unwrap();
    assert!(status.success(), "chgrp nut: {SETUP_HINT}");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o770)).unwrap();
    let log = std::fs::File::create(dir.path().join("upsd.log")).unwrap();
    let process = Killed(
        Command::new(upsd)
            .args(["-F", "-u", "nut"])
            .env("NUT_CONFPATH", &etc)
            .env("NUT_STATEPATH", &state)
            .env("NUT_ALTPIDPATH", &state)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        let log = std::fs::read_to_string(dir.path().join("upsd.log")).unwrap_or_default();
        assert!(start.elapsed() < Duration::from_secs(20), "upsd did not listen on {port}:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (port, process, dir)
}

#[test]
fn a_real_upsd_accepts_the_generated_user_and_password() {
    let root = tempfile::tempdir().unwrap();
    install_ok(root.path(), &[("HECATE_NUT_UPS_NAME", "testups"), ("HECATE_NUT_MONITOR_USER", "hecate-mon")]);
    let password = read(root.path(), "etc/hecate/nut.pass").trim_end().to_owned();
    let (port, _upsd, _dir) = real_upsd(root.path(), "testups");
    // PRIMARY needs the UPS (from ups.conf), the user, its password and `upsmon primary`; no
    // driver is needed for it
    let login =
        |pw: &str| converse(port, &["USERNAME hecate-mon".into(), format!("PASSWORD {pw}"), "PRIMARY testups".into()]);
    assert_eq!(login(&password), ["OK", "OK", "OK PRIMARY-GRANTED"]);
    assert_eq!(login("wrong"), ["OK", "OK", "ERR ACCESS-DENIED"]);
}

#[test]
fn manage_nut_0_writes_and_touches_no_nut_file() {
    let root = tempfile::tempdir().unwrap();
    let out = install_ok(root.path(), &[("HECATE_MANAGE_NUT", "0")]);
    assert!(out.contains("nut: skipped (HECATE_MANAGE_NUT=0)"), "{out}");
    for rel in ["etc/nut", "etc/udev", "etc/hecate/nut.pass"] {
        assert!(!root.path().join(rel).exists(), "{rel} written with HECATE_MANAGE_NUT=0");
    }
    assert!(root.path().join("etc/hecate/hecate.yaml").exists() && root.path().join("usr/local/bin/hecate").exists());

    // files managed before are left alone once it is 0, whatever the other knobs say
    let root = tempfile::tempdir().unwrap();
    install_ok(root.path(), &[]);
    let before = snapshot(root.path());
    std::thread::sleep(Duration::from_millis(50));
    let out = install_ok(
        root.path(),
        &[("HECATE_MANAGE_NUT", "0"), ("HECATE_NUT_UPS_NAME", "other"), ("HECATE_NUT_MONITOR_PASSWORD", "changed")],
    );
    assert!(out.trim_end().ends_with("nothing to change"), "{out}");
    assert_same_tree(&before, &snapshot(root.path()));
}

#[test]
fn the_enable_knobs_create_remove_or_keep_the_wants_symlinks() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    install_ok(r, &[]);
    for (knob, link, unit) in [
        ("HECATE_ENABLE_BOOTSTRAP", BOOTSTRAP_LINK, "hecate-bootstrap.service"),
        ("HECATE_ENABLE_UPDATE", UPDATE_LINK, "hecate-update.timer"),
    ] {
        let enabled = || std::fs::symlink_metadata(r.join(link)).is_ok();
        assert!(!enabled(), "{unit}: off after a first install");

        let out = install_ok(r, &[(knob, "1")]);
        assert_eq!(std::fs::read_link(r.join(link)).unwrap(), Path::new("/etc/systemd/system").join(unit));
        assert!(out.contains(&format!("updated   {unit}: enabled")), "{out}");
        // the link, and at most its .wants dir
        assert!(
            updated_lines(&out).iter().all(|l| l.contains(unit) || l.ends_with(".wants/ (created, mode 0755)")),
            "{out}"
        );

        let out = install_ok(r, &[(knob, "1")]);
        assert!(out.trim_end().ends_with("nothing to change"), "{knob}=1 twice:\n{out}");
        let out = install_ok(r, &[(knob, "auto")]);
        assert!(enabled() && out.trim_end().ends_with("nothing to change"), "{knob}=auto keeps it on:\n{out}");
        let out = install_ok(r, &[]);
        assert!(enabled() && out.trim_end().ends_with("nothing to change"), "auto is the default:\n{out}");

        let out = install_ok(r, &[(knob, "0")]);
        assert!(!enabled(), "{knob}=0 removes {link}");
        assert!(out.contains(&format!("updated   {unit}: disabled")), "{out}");
        let out = install_ok(r, &[(knob, "auto")]);
        assert!(!enabled() && out.trim_end().ends_with("nothing to change"), "{knob}=auto keeps it off:\n{out}");
    }
    // the daemon itself is always enabled
    assert!(std::fs::symlink_metadata(r.join("etc/systemd/system/multi-user.target.wants/hecate.service")).is_ok());
}

#[test]
fn bad_knobs_are_refused_before_anything_is_written() {
    for (knob, value) in [
        ("HECATE_NUT_VENDOR_ID", "07640"),
        ("HECATE_NUT_PRODUCT_ID", "xyz1"),
        ("HECATE_NUT_UPS_NAME", "bad name"),
        ("HECATE_NUT_MONITOR_USER", "a]b"),
        ("HECATE_ENABLE_BOOTSTRAP", "yes"),
        ("HECATE_ENABLE_UPDATE", "true"),
        ("HECATE_MANAGE_NUT", "no"),
        ("HECATE_NUT_OFFDELAY", "10"),
        ("HECATE_NUT_OFFDELAY", "2m"),
        ("HECATE_NUT_ONDELAY", "100"),
        ("HECATE_NUT_LISTEN", "nas.lan"),
        ("HECATE_NUT_SECONDARIES_FILE", "/nonexistent/secondaries"),
        ("HECATE_NUT_MONITOR_PASSWORD", "has space"),
        ("HECATE_NUT_MONITOR_PASSWORD", "has\"quote"),
    ] {
        let root = tempfile::tempdir().unwrap();
        let o = install(root.path(), &[(knob, value)]);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{knob}={value:?} accepted:\n{out}\n{err}");
        assert!(err.contains(knob), "{knob}={value:?}: the error should name the knob:\n{err}");
        if knob == "HECATE_NUT_MONITOR_PASSWORD" {
            assert!(!err.contains(value) && !out.contains(value), "the password was printed:\n{err}");
        }
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "{knob}={value:?}: something was written");
    }
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let analyze = require_tool(&["/usr/bin/systemd-analyze", "/bin/systemd-analyze"], "systemd");
    let root = tempfile::tempdir().unwrap();
    install_ok(root.path(), &[]);
    // verify insists that ExecStart= binaries exist: point them at the temp root's copies
    let dir = tempfile::tempdir().unwrap();
    let bin = root.path().join("usr/local/bin/hecate");
    let script = root.path().join("usr/local/lib/hecate/self-update.sh");
    let mut files = Vec::new();
    for u in UNITS {
        let unit = read(root.path(), &format!("etc/systemd/system/{u}"));
        for line in unit.lines().filter_map(|l| l.strip_prefix("ExecStart=")) {
            let exe = line.split_whitespace().next().unwrap();
            assert!(
                ["/usr/local/bin/hecate", "/usr/local/lib/hecate/self-update.sh"].contains(&exe),
                "{u}: ExecStart runs {exe}, which the installer does not install"
            );
        }
        let unit = unit
            .replace("/usr/local/bin/hecate ", &format!("{} ", bin.display()))
            .replace("/usr/local/lib/hecate/self-update.sh", &script.display().to_string());
        let path = dir.path().join(u);
        std::fs::write(&path, unit).unwrap();
        files.push(path);
    }
    let o = Command::new(&analyze).arg("verify").arg("--man=no").args(&files).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "systemd-analyze verify failed ({}):\n{out}\n{err}", o.status);
    // unknown keys and bad values are only warnings: any output fails the test
    assert!(out.trim().is_empty() && err.trim().is_empty(), "systemd-analyze verify complains:\n{out}\n{err}");

    // what the issue asks of the daemon's unit
    let unit = read(&repo(), "systemd/hecate.service");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=30s",
        "Restart=on-failure",
        "StateDirectory=hecate",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK",
        "ExecStart=/usr/local/bin/hecate daemon --config /etc/hecate/hecate.yaml",
        // issue 12: idle LAN connections must not leave a run without descriptors
        "LimitNOFILE=65536",
    ] {
        assert!(unit.lines().any(|l| l == line), "hecate.service lacks {line:?}");
    }
    let caps = unit.lines().find(|l| l.starts_with("CapabilityBoundingSet=")).unwrap();
    assert!(caps.contains("CAP_SYS_BOOT"), "power_off_self needs CAP_SYS_BOOT: {caps}");
    let boot = read(&repo(), "systemd/hecate-bootstrap.service");
    for line in [
        "Type=oneshot",
        "Wants=network-online.target",
        "ExecStart=/usr/local/bin/hecate startup --execute --config /etc/hecate/hecate.yaml",
        "WantedBy=multi-user.target",
    ] {
        assert!(boot.lines().any(|l| l == line), "hecate-bootstrap.service lacks {line:?}");
    }
    let timer = read(&repo(), "systemd/hecate-update.timer");
    assert!(
        timer.lines().any(|l| l.starts_with("OnBootSec=")) && timer.lines().any(|l| l.starts_with("OnUnitActiveSec="))
    );
}

#[test]
fn the_node_sudoers_rule_passes_visudo_and_allows_only_the_k3s_and_poweroff_commands() {
    let visudo = require_tool(&["/usr/sbin/visudo", "/sbin/visudo"], "sudo");
    let file = repo().join("packaging/sudoers.d/hecate-node");
    let o = Command::new(&visudo).arg("-cf").arg(&file).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "visudo -cf {}:\n{out}\n{err}", file.display());

    let text = std::fs::read_to_string(&file).unwrap();
    let rules: String = text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
    assert!(rules.lines().any(|l| l == "Defaults:hecate !requiretty"), "{rules}");
    let mut commands: Vec<&str> =
        rules.split(['=', ',', '\\', '\n']).map(str::trim).filter(|s| s.starts_with('/')).collect();
    commands.sort_unstable();
    assert_eq!(
        commands,
        [
            "/usr/bin/systemctl is-active k3s",
            "/usr/bin/systemctl is-active k3s-agent",
            "/usr/bin/systemctl poweroff",
            "/usr/bin/systemctl start --no-block k3s",
            "/usr/bin/systemctl start --no-block k3s-agent",
            "/usr/bin/systemctl stop k3s",
            "/usr/bin/systemctl stop k3s-agent",
            "/usr/local/sbin/hecate-k3s-stop",
        ]
    );
    assert!(rules.lines().any(|l| l == "hecate ALL=(root) NOPASSWD: HECATE_K3S, HECATE_POWER, HECATE_STOP"), "{rules}");
}

#[test]
fn the_installed_config_passes_check_and_so_does_its_nut_source_uncommented() {
    let root = tempfile::tempdir().unwrap();
    install_ok(root.path(), &[]);
    let check = |path: &Path| {
        let o = Command::new(env!("CARGO_BIN_EXE_hecate")).args(["config", "check"]).arg(path).output().unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "config check {}:\n{out}\n{err}", path.display());
        out
    };
    let installed = root.path().join("etc/hecate/hecate.yaml");
    let out = check(&installed);
    assert!(out.contains("ok (1 power source(s), 0 node(s))"), "{out}");

    // what the comments tell the operator to do: drop the placeholder, uncomment the NUT source
    let yaml = std::fs::read_to_string(&installed).unwrap();
    let mut edited = Vec::new();
    let mut in_nut = false;
    for line in yaml.lines() {
        if line.contains("placeholder-not-a-real-ups") {
            continue;
        }
        if line == "  # - type: nut" {
            in_nut = true;
        } else if !line.starts_with("  #   ") {
            in_nut = false;
        }
        edited.push(if in_nut { line.replacen("# ", "", 1) } else { line.to_owned() });
    }
    let edited = edited.join("\n") + "\n";
    assert!(edited.contains("\n  - type: nut\n    name: atlasups\n    ups: atlasups\n"), "{edited}");
    // `config check` builds the source, which reads its password file: the one the installer
    // wrote, here under the temp root.
    let pass = root.path().join("etc/hecate/nut.pass");
    assert!(edited.contains("/etc/hecate/nut.pass") && pass.exists(), "{edited}");
    let edited = edited.replace("/etc/hecate/nut.pass", &pass.display().to_string());
    let path = root.path().join("nut.yaml");
    std::fs::write(&path, edited).unwrap();
    let out = check(&path);
    assert!(out.contains("ok (1 power source(s), 0 node(s))"), "{out}");
}

// ---------------------------------------------------------------------------------------------
// self-update.sh, with tests/install/fake-cargo.sh standing in for cargo

/// A fake `hecate` for the fake build: `--version` and `config check FILE` (failing if `rejects`).
fn fake_hecate(version: &str, rejects: bool) -> String {
    format!(
        "#!/bin/sh\n# fake hecate for the self-update tests\ncase \"$1\" in\n  --version) echo 'hecate {version}' ;;\n  \
         config) [ \"$2\" = check ] && [ -f \"$3\" ] || exit 2\n    {} ;;\n  *) exit 2 ;;\nesac\n",
        if rejects { "echo \"$3: 1 problem found (fake)\" >&2; exit 1" } else { "echo \"$3: ok (fake)\"" }
    )
}

struct Updater {
    _dir: tempfile::TempDir,
    upstream: PathBuf,
    src: PathBuf,
    root: PathBuf,
    bin_dir: PathBuf,
}

fn git(dir: &Path, args: &[&str]) {
    let git = require_tool(&["/usr/bin/git", "/bin/git"], "git");
    let o = Command::new(git)
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "git {args:?} in {}:\n{out}\n{err}", dir.display());
}

impl Updater {
    /// An upstream repo whose `main` holds fake hecate `v1`, a clone of it as the checkout, and
    /// a root where v1 is installed with a config.
    fn new() -> Updater {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let upstream = dir.path().join("upstream");
        let src = dir.path().join("src");
        let root = dir.path().join("root");
        let bin_dir = dir.path().join("bin");
        for d in [&upstream, &root.join("usr/local/bin"), &root.join("etc/hecate"), &bin_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::os::unix::fs::symlink(repo().join("tests/install/fake-cargo.sh"), bin_dir.join("cargo")).unwrap();
        git(&upstream, &["init", "-q", "-b", "main"]);
        let u = Updater { _dir: dir, upstream, src, root, bin_dir };
        u.commit("v1", &fake_hecate("v1", false), false);
        git(u.src.parent().unwrap(), &["clone", "-q", u.upstream.to_str().unwrap(), "src"]);
        let installed = u.root.join("usr/local/bin/hecate");
        std::fs::write(&installed, fake_hecate("v1", false)).unwrap();
        std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(u.root.join("etc/hecate/hecate.yaml"), "host: x\n").unwrap();
        u
    }

    fn commit(&self, msg: &str, fake: &str, build_fails: bool) {
        std::fs::write(self.upstream.join("fake-hecate"), fake).unwrap();
        let marker = self.upstream.join("BUILD_FAILS");
        if build_fails {
            std::fs::write(&marker, "").unwrap();
        } else if marker.exists() {
            std::fs::remove_file(&marker).unwrap();
        }
        git(&self.upstream, &["add", "-A"]);
        git(&self.upstream, &["commit", "-q", "--allow-empty", "-m", msg]);
    }

    fn run(&self) -> Output {
        let mut c = Command::new("bash");
        c.arg(repo().join("scripts/self-update.sh")).arg("--root").arg(&self.root).stdin(Stdio::null());
        for k in SCRIPT_KNOBS {
            c.env_remove(k);
        }
        let path = format!("{}:{}", self.bin_dir.display(), std::env::var("PATH").unwrap_or_default());
        c.env("PATH", path).env("HECATE_SRC_DIR", &self.src).env("GIT_CONFIG_NOSYSTEM", "1");
        c.output().expect("run bash scripts/self-update.sh")
    }

    fn run_ok(&self) -> String {
        let o = self.run();
        let (out, err) = text(&o);
        assert!(o.status.success(), "self-update failed ({}):\n{out}\n{err}", o.status);
        out
    }

    fn installed(&self) -> String {
        read(&self.root, "usr/local/bin/hecate")
    }

    fn previous(&self) -> Option<String> {
        std::fs::read_to_string(self.root.join("usr/local/bin/hecate.previous")).ok()
    }
}

#[test]
fn self_update_installs_a_checked_new_binary_and_keeps_the_previous_one() {
    let u = Updater::new();
    let out = u.run_ok();
    assert!(out.contains("already at") && out.contains("unchanged"), "same source, same binary:\n{out}");
    assert_eq!(u.previous(), None);

    u.commit("v2", &fake_hecate("v2", false), false);
    let out = u.run_ok();
    assert!(out.contains("new binary: hecate v2"), "{out}");
    assert!(out.contains("updated") && out.contains("--root: no restart"), "{out}");
    assert_eq!(u.installed(), fake_hecate("v2", false));
    assert_eq!(mode(&u.root, "usr/local/bin/hecate"), 0o755);
    assert_eq!(u.previous().as_deref(), Some(fake_hecate("v1", false).as_str()));

    let mtime = std::fs::metadata(u.root.join("usr/local/bin/hecate")).unwrap().modified().unwrap();
    let out = u.run_ok();
    assert!(out.contains("unchanged"), "{out}");
    assert_eq!(std::fs::metadata(u.root.join("usr/local/bin/hecate")).unwrap().modified().unwrap(), mtime);
    assert_eq!(u.previous().as_deref(), Some(fake_hecate("v1", false).as_str()));
}

#[test]
fn self_update_changes_nothing_when_the_build_or_the_check_fails() {
    let u = Updater::new();
    let before = snapshot(&u.root);
    let fails = |why: &str| {
        let o = u.run();
        let (out, err) = text(&o);
        assert!(!o.status.success(), "self-update succeeded:\n{out}\n{err}");
        assert!(err.contains(why) && err.contains("the installed binary is unchanged"), "{out}\n{err}");
        assert_same_tree(&before, &snapshot(&u.root));
    };

    // the new binary refuses the config
    u.commit("v2 rejects the config", &fake_hecate("v2", true), false);
    fails("rejects");
    // the build breaks
    u.commit("v3 does not build", &fake_hecate("v3", false), true);
    fails("cargo build failed");
    // local changes in the checkout
    u.commit("v4", &fake_hecate("v4", false), false);
    std::fs::write(u.src.join("fake-hecate"), "local edit").unwrap();
    fails("local changes");
    git(&u.src, &["checkout", "-q", "--", "fake-hecate"]);
    // no config to check against
    std::fs::remove_file(u.root.join("etc/hecate/hecate.yaml")).unwrap();
    let o = u.run();
    assert!(!o.status.success() && text(&o).1.contains("no config at"), "{:?}", text(&o));
    assert_eq!(u.installed(), fake_hecate("v1", false));
    assert_eq!(u.previous(), None);

    // and once everything is fine again, v4 goes in
    std::fs::write(u.root.join("etc/hecate/hecate.yaml"), "host: x\n").unwrap();
    u.run_ok();
    assert_eq!(u.installed(), fake_hecate("v4", false));
    assert_eq!(u.previous().as_deref(), Some(fake_hecate("v1", false).as_str()));
}

// ---------------------------------------------------------------------------------------------
// an existing NUT setup

/// A NUT setup as a NAS owner would have it before Hecate: netserver, two UPSes, a LAN LISTEN,
/// a upsmon secondary user for the NAS. Not written by Hecate.
const FOREIGN: [(&str, &str); 4] = [
    ("etc/nut/nut.conf", "MODE=netserver\n"),
    (
        "etc/nut/ups.conf",
        "[rackups]\n  driver = usbhid-ups\n  port = auto\n\n[deskups]\n  driver = blazer_usb\n  port = auto\n",
    ),
    ("etc/nut/upsd.conf", "LISTEN 127.0.0.1 3493\nLISTEN 192.168.1.2 3493\n"),
    ("etc/nut/upsd.users", "[nas]\n  password = nas-secret\n  upsmon secondary\n"),
];

fn write_foreign_setup(root: &Path) {
    std::fs::create_dir_all(root.join("etc/nut")).unwrap();
    for (rel, content) in FOREIGN {
        std::fs::write(root.join(rel), content).unwrap();
    }
}

#[test]
fn an_existing_nut_setup_is_left_alone_and_the_lines_to_add_are_printed() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write_foreign_setup(r);
    let before = snapshot(&r.join("etc/nut"));
    std::thread::sleep(Duration::from_millis(50));

    let out = install_ok(r, &[]);
    assert_same_tree(&before, &snapshot(&r.join("etc/nut")));
    assert!(!r.join(UDEV_RULE).exists(), "the udev rule belongs to a managed setup");
    assert!(
        out.contains("/etc/nut holds a NUT setup not written by Hecate (UPS: rackups deskups): left alone"),
        "{out}"
    );
    assert!(out.contains("add this user to /etc/nut/upsd.users"), "{out}");
    // The lines as upsd.users takes them (one setting a line).
    assert!(
        out.contains(
            "       [monuser]\n         password = \"<the line in /etc/hecate/nut.pass>\"\n         upsmon primary\n\
             \x20        actions = SET\n         instcmds = shutdown.return load.off.delay\n"
        ),
        "{out}"
    );
    assert!(out.contains("HECATE_MANAGE_NUT=1"), "{out}");
    // Hecate's own password file is written, for the operator to copy; never printed.
    let password = read(r, "etc/hecate/nut.pass").trim_end().to_owned();
    assert!(password.len() >= 20, "{password:?}");
    assert!(!out.contains(&password), "the password was printed:\n{out}");

    // A second run changes nothing at all.
    let whole = snapshot(r);
    std::thread::sleep(Duration::from_millis(50));
    let again = install_ok(r, &[]);
    assert!(again.trim_end().ends_with("nothing to change"), "{again}");
    assert_same_tree(&whole, &snapshot(r));

    // The operator adds what was printed, with the password from nut.pass: a real upsd takes it,
    // and Hecate's user may log in as the primary of the existing UPS.
    let block: String = out
        .lines()
        .skip_while(|l| l.trim() != "[monuser]")
        .take_while(|l| !l.starts_with("nut:"))
        .map(|l| format!("{}\n", l.trim().replace("<the line in /etc/hecate/nut.pass>", &password)))
        .collect();
    let users = r.join("etc/nut/upsd.users");
    std::fs::write(&users, read(r, "etc/nut/upsd.users") + &block).unwrap();
    let (port, _upsd, _dir) = real_upsd(r, "rackups");
    let answers = converse(
        port,
        &["USERNAME monuser".into(), format!("PASSWORD {password}"), "LOGIN rackups".into(), "PRIMARY rackups".into()],
    );
    assert_eq!(answers, ["OK", "OK", "OK", "OK PRIMARY-GRANTED"], "{block}");

    // Now the installer finds the user, says so and keeps nut.pass as it is.
    let out = install_ok(r, &[]);
    assert!(out.contains("upsd.users already has user monuser"), "{out}");
    assert_eq!(read(r, "etc/hecate/nut.pass"), format!("{password}\n"));
}

#[test]
fn manage_nut_1_takes_an_existing_setup_over_keeping_backups() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write_foreign_setup(r);
    let out = install_ok(r, &[("HECATE_MANAGE_NUT", "1")]);
    assert!(out.contains("replacing the NUT setup in /etc/nut (UPS: rackups deskups)"), "{out}");
    for (rel, content) in FOREIGN {
        let name = Path::new(rel).file_name().unwrap().to_str().unwrap();
        let backups: Vec<PathBuf> = std::fs::read_dir(r.join("etc/nut"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(&format!("{name}.hecate-backup-")))
            .collect();
        assert_eq!(backups.len(), 1, "{rel}: one backup, got {backups:?}\n{out}");
        assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), content, "{rel}: the backup holds the old file");
        assert!(read(r, rel).starts_with("# Managed by Hecate's scripts/install.sh"), "{rel} is Hecate's now");
    }
    assert!(read(r, "etc/nut/ups.conf").contains("[atlasups]"));
    assert!(r.join(UDEV_RULE).exists());

    // Hecate's now: a second run, with or without the knob, changes nothing and backs nothing up.
    for env in [&[("HECATE_MANAGE_NUT", "1")][..], &[][..]] {
        let before = snapshot(r);
        std::thread::sleep(Duration::from_millis(50));
        let again = install_ok(r, env);
        assert!(again.trim_end().ends_with("nothing to change"), "{env:?}:\n{again}");
        assert_same_tree(&before, &snapshot(r));
    }
}

#[test]
fn a_debian_default_nut_setup_without_a_ups_is_replaced_with_backups() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/nut")).unwrap();
    // What nut-server's package installs: nothing configured.
    std::fs::write(r.join("etc/nut/nut.conf"), "# Network UPS Tools: example nut.conf\nMODE=none\n").unwrap();
    std::fs::write(r.join("etc/nut/ups.conf"), "# Network UPS Tools: example ups.conf\n#[myups]\n#\tdriver = dummy\n")
        .unwrap();
    let out = install_ok(r, &[]);
    assert!(out.contains("/etc/nut configures no UPS yet: writing Hecate's setup"), "{out}");
    assert!(read(r, "etc/nut/nut.conf").lines().any(|l| l == "MODE=standalone"));
    let names: Vec<String> =
        std::fs::read_dir(r.join("etc/nut")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.iter().filter(|n| n.contains(".hecate-backup-")).count(), 2, "{names:?}");
}

#[test]
fn the_netserver_knobs_serve_other_machines_and_a_rerun_keeps_them() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let dir = tempfile::tempdir().unwrap();
    let secondaries = dir.path().join("secondaries");
    std::fs::write(&secondaries, "# the NAS and a desktop\nnas nas-Secret1\n\ndesk Desk-pass2\n").unwrap();
    let env = [
        ("HECATE_NUT_LISTEN", "192.0.2.10 2001:db8::5"),
        ("HECATE_NUT_SECONDARIES_FILE", secondaries.to_str().unwrap()),
    ];
    let o = install(r, &env);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    for secret in ["nas-Secret1", "Desk-pass2"] {
        assert!(!out.contains(secret) && !err.contains(secret), "a password was printed:\n{out}\n{err}");
    }
    assert!(read(r, "etc/nut/nut.conf").lines().any(|l| l == "MODE=netserver"));
    let listens: Vec<String> =
        read(r, "etc/nut/upsd.conf").lines().filter(|l| l.starts_with("LISTEN")).map(str::to_owned).collect();
    assert_eq!(listens, ["LISTEN 127.0.0.1 3493", "LISTEN 192.0.2.10 3493", "LISTEN 2001:db8::5 3493"]);
    let users = read(r, "etc/nut/upsd.users");
    for line in ["[nas]", "  password = \"nas-Secret1\"", "[desk]", "  password = \"Desk-pass2\"", "  upsmon secondary"]
    {
        assert!(users.lines().any(|l| l == line), "upsd.users lacks {line:?}:\n{users}");
    }

    // Re-run without the knobs (an upgrade): the NAS keeps its server.
    let before = snapshot(r);
    std::thread::sleep(Duration::from_millis(50));
    let again = install_ok(r, &[]);
    assert!(again.trim_end().ends_with("nothing to change"), "{again}");
    assert_same_tree(&before, &snapshot(r));

    // A real upsd takes the generated files: the NAS's user logs in as a secondary.
    let (port, _upsd, _dir) = real_upsd(r, "atlasups");
    let answers = converse(port, &["USERNAME nas".into(), "PASSWORD nas-Secret1".into(), "LOGIN atlasups".into()]);
    assert_eq!(answers, ["OK", "OK", "OK"]);

    // Empty knobs: back to loopback only, no secondaries.
    install_ok(r, &[("HECATE_NUT_LISTEN", ""), ("HECATE_NUT_SECONDARIES_FILE", "")]);
    assert!(read(r, "etc/nut/nut.conf").lines().any(|l| l == "MODE=standalone"));
    assert!(!read(r, "etc/nut/upsd.conf").contains("192.0.2.10"));
    assert!(!read(r, "etc/nut/upsd.users").contains("[nas]"));
}

#[test]
fn the_kill_power_delays_are_written_for_the_ups_and_into_a_fresh_config() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    install_ok(r, &[("HECATE_NUT_OFFDELAY", "300"), ("HECATE_NUT_ONDELAY", "360")]);
    let ups = read(r, "etc/nut/ups.conf");
    for line in ["  offdelay = 300", "  ondelay = 360"] {
        assert!(ups.lines().any(|l| l == line), "ups.conf lacks {line:?}:\n{ups}");
    }
    assert!(read(r, "etc/hecate/hecate.yaml").lines().any(|l| l == "  #   delay: 300s"));
    let users = read(r, "etc/nut/upsd.users");
    assert!(users.lines().any(|l| l == "  actions = SET"), "hecate may set ups.delay.shutdown:\n{users}");
    let o = install(r, &[("HECATE_NUT_OFFDELAY", "300"), ("HECATE_NUT_ONDELAY", "300")]);
    assert!(!o.status.success() && text(&o).1.contains("HECATE_NUT_ONDELAY"), "ondelay must be above offdelay");
}

#[test]
fn a_bad_secondaries_file_is_refused_without_showing_its_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secondaries");
    std::fs::write(&file, "nas good-Secret9\nbad user \"quoted-secret\"\n").unwrap();
    let root = tempfile::tempdir().unwrap();
    let o = install(root.path(), &[("HECATE_NUT_SECONDARIES_FILE", file.to_str().unwrap())]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{out}\n{err}");
    assert!(err.contains("HECATE_NUT_SECONDARIES_FILE line 2"), "{err}");
    assert!(!err.contains("quoted-secret") && !err.contains("good-Secret9"), "{err}");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0, "something was written");
}
