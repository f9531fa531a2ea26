//! The Debian package, built by `scripts/build-deb`: from this test's own binary (the debug
//! build), or from the binary `HECATE_TEST_DEB_BINARY` names, which is how CI checks the release
//! build it packages (`scripts/test` with `CI` set); packed with gzip (xz takes twenty seconds on a
//! debug binary).
//!
//! Checked: the control data and the files (`dpkg-deb --info`, `--contents`), `lintian` with no
//! errors, and dpkg installing it into a root of the test's own with its own dpkg database. The
//! maintainer scripts run outside a chroot (`--force-script-chrootless`, which builds no Debian
//! system in the root), so dpkg hands them the root in `DPKG_ROOT` and they must act below it;
//! `systemctl`, `deb-systemd-invoke`, `invoke-rc.d`, `service` and `udevadm` are recording shims
//! first on the PATH, and the root has a policy-rc.d that refuses every start: nothing may start,
//! and nothing does. The package is then installed over itself and upgraded with an edited
//! conffile, which survives, and purged. The packaged binary answers `--version` and `config
//! check` on the installed config.
//!
//! The root's dpkg database knows none of the package's dependencies (libc6, nut-client): dpkg
//! is told `--force-depends`; the binary runs on the host's libraries. Where a test needs
//! nut-server "installed", its record in the root's database is a stand-in written by the test
//! (the files a fresh nut-server leaves in /etc/nut, and a status entry), since the real package
//! cannot be installed into the root without its own dependencies.
//!
//! Needs root (dpkg), dpkg-deb, dpkg-shlibdeps, strip, lintian and deb-systemd-helper:
//! `./scripts/test` installs them.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use hecate_test_support::{SCRIPT_KNOBS, SETUP_HINT, require_root};

/// What would start or reload something on the running system.
const SHIMS: [&str; 5] = ["systemctl", "deb-systemd-invoke", "invoke-rc.d", "service", "udevadm"];

const TOOLS: [&str; 6] = [
    "/usr/bin/dpkg",
    "/usr/bin/dpkg-deb",
    "/usr/bin/dpkg-shlibdeps",
    "/usr/bin/strip",
    "/usr/bin/lintian",
    "/usr/bin/deb-systemd-helper",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn require_tools() {
    require_root();
    for t in TOOLS {
        let ok = std::fs::metadata(t).map(|m| m.permissions().mode() & 0o111 != 0).unwrap_or(false);
        assert!(ok, "{t} is missing: {SETUP_HINT}");
    }
}

/// The binary to package: `HECATE_TEST_DEB_BINARY` (CI's release build), else this test's own.
fn binary() -> PathBuf {
    match std::env::var_os("HECATE_TEST_DEB_BINARY") {
        Some(path) => std::fs::canonicalize(&path)
            .unwrap_or_else(|e| panic!("HECATE_TEST_DEB_BINARY={}: {e}", Path::new(&path).display())),
        None => PathBuf::from(env!("CARGO_BIN_EXE_hecate")),
    }
}

/// The version the binary reports (`hecate X`), which the package takes by default.
fn binary_version() -> String {
    let o = Command::new(binary()).arg("--version").output().unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    out.trim().strip_prefix("hecate ").unwrap().to_owned()
}

/// Runs scripts/build-deb on the test binary into `out`; returns the .deb.
fn build_deb(out: &Path, version: Option<&str>) -> PathBuf {
    require_tools();
    let mut c = Command::new("bash");
    c.arg(repo().join("scripts/build-deb"))
        .arg("--binary")
        .arg(binary())
        .arg("--out")
        .arg(out)
        .args(["--compression", "gzip"])
        .stdin(Stdio::null());
    if let Some(v) = version {
        c.args(["--version", v]);
    }
    for k in SCRIPT_KNOBS {
        c.env_remove(k);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "scripts/build-deb failed ({}):\n{}", o.status, text(&o));
    let deb = PathBuf::from(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or_default());
    assert!(deb.is_file(), "scripts/build-deb did not say where the package is:\n{}", text(&o));
    deb
}

/// The package as the binary's version gives it, built once for all the tests here.
fn package() -> &'static Path {
    static DEB: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DEB.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let deb = build_deb(dir.path(), None);
        (dir, deb)
    })
    .1
}

fn dpkg_deb(args: &[&str], deb: &Path) -> String {
    let o = Command::new("dpkg-deb").args(args).arg(deb).output().unwrap();
    assert!(o.status.success(), "dpkg-deb {args:?} failed:\n{}", text(&o));
    String::from_utf8(o.stdout).unwrap()
}

fn field(deb: &Path, name: &str) -> String {
    dpkg_deb(&["--field"], deb)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no {name} field in {}", deb.display()))
}

/// `dpkg-deb --contents`: path (without the leading ".") -> (mode, owner).
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    dpkg_deb(&["--contents"], deb)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').trim_end_matches('/').to_owned();
            (path, (f[0].to_owned(), f[1].to_owned()))
        })
        .collect()
}

/// Files under `packaging/<dir>` of the checkout, as paths below /usr/share/hecate.
fn repo_files_under(dir: &str) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let base = repo().join("packaging");
    let mut out = Vec::new();
    if base.join(dir).is_dir() {
        walk(&base, &base.join(dir), &mut out);
    }
    out.into_iter().map(|p| format!("/usr/share/hecate/{p}")).collect()
}

#[test]
fn the_package_holds_the_binary_units_conffile_node_files_completions_and_man_pages() {
    let deb = package();
    let version = binary_version();
    let arch = String::from_utf8(Command::new("dpkg").arg("--print-architecture").output().unwrap().stdout).unwrap();
    assert_eq!(
        deb.file_name().unwrap().to_str().unwrap(),
        format!("hecate_{version}_{}.deb", arch.trim()),
        "the file name"
    );

    let info = dpkg_deb(&["--info"], deb);
    for script in ["postinst", "prerm", "postrm", "conffiles", "md5sums"] {
        let listed = info.lines().any(|l| l.contains(" lines ") && l.split_whitespace().any(|w| w == script));
        assert!(listed, "no {script}:\n{info}");
    }
    assert_eq!(field(deb, "Package"), "hecate");
    assert_eq!(field(deb, "Version"), version);
    assert_eq!(field(deb, "Architecture"), arch.trim());
    let depends = field(deb, "Depends");
    for d in ["libc6 (>= ", "nut-client"] {
        assert!(depends.contains(d), "Depends lacks {d}: {depends}");
    }
    // A binary with packed relative relocations starts only with glibc 2.36 or later, which
    // dpkg-shlibdeps alone does not see.
    let dynamic = Command::new("readelf").arg("-d").arg(binary()).output().unwrap();
    if String::from_utf8_lossy(&dynamic.stdout).contains("(RELR)") {
        assert!(depends.contains("libc6 (>= 2.36)"), "a DT_RELR binary needs glibc 2.36: {depends}");
    }
    let recommends = field(deb, "Recommends");
    for r in ["nut-server", "ipmitool", "openssh-client"] {
        assert!(recommends.split(", ").any(|x| x == r), "Recommends lacks {r}: {recommends}");
    }
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new("dpkg-deb").arg("--control").arg(deb).arg(dir.path()).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read_to_string(dir.path().join("conffiles")).unwrap(), "/etc/hecate/hecate.yaml\n");

    let files = contents(deb);
    let mut want: Vec<(String, &str)> = [
        ("/usr/bin/hecate", "-rwxr-xr-x"),
        ("/lib/systemd/system/hecate.service", "-rw-r--r--"),
        ("/lib/systemd/system/hecate-bootstrap.service", "-rw-r--r--"),
        ("/etc/hecate", "drwxr-x---"),
        ("/etc/hecate/hecate.yaml", "-rw-r-----"),
        ("/usr/lib/hecate/install.sh", "-rwxr-xr-x"),
        ("/usr/share/hecate/sudoers.d/hecate-node", "-rw-r--r--"),
        ("/usr/share/hecate/node/hecate-k3s-stop", "-rwxr-xr-x"),
        ("/usr/share/bash-completion/completions/hecate", "-rw-r--r--"),
        ("/usr/share/zsh/vendor-completions/_hecate", "-rw-r--r--"),
        ("/usr/share/fish/vendor_completions.d/hecate.fish", "-rw-r--r--"),
        ("/usr/share/man/man1/hecate.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/hecate-daemon.1.gz", "-rw-r--r--"),
        ("/usr/share/man/man1/hecate-config-check.1.gz", "-rw-r--r--"),
        ("/usr/share/doc/hecate/copyright", "-rw-r--r--"),
        ("/usr/share/doc/hecate/changelog.gz", "-rw-r--r--"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_owned(), m))
    .collect();
    // The dashboards and alert rules, whatever packaging/grafana and packaging/prometheus hold
    for p in repo_files_under("grafana").into_iter().chain(repo_files_under("prometheus")) {
        want.push((p, "-rw-r--r--"));
    }
    for (path, mode) in &want {
        let got = files.get(path).unwrap_or_else(|| panic!("{path} is not in the package:\n{files:#?}"));
        assert_eq!(&got.0, mode, "{path}'s mode");
    }
    for (path, (_, owner)) in &files {
        assert_eq!(owner, "root/root", "{path}'s owner");
    }
    // The self-update is the source install's; the package is upgraded with apt.
    assert!(!files.keys().any(|p| p.contains("hecate-update") || p.contains("self-update")), "{files:#?}");
    assert!(!files.keys().any(|p| p.starts_with("/usr/local")), "{files:#?}");

    // The files' contents: the units run the packaged binary and are otherwise systemd/'s; the
    // config and node files are the checkout's; a man page for every subcommand.
    let x = tempfile::tempdir().unwrap();
    let o = Command::new("dpkg-deb").arg("-x").arg(deb).arg(x.path()).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for unit in ["hecate.service", "hecate-bootstrap.service"] {
        let packaged = std::fs::read_to_string(x.path().join("lib/systemd/system").join(unit)).unwrap();
        let source = std::fs::read_to_string(repo().join("systemd").join(unit)).unwrap();
        assert!(packaged.lines().any(|l| l.starts_with("ExecStart=/usr/bin/hecate ")), "{unit}:\n{packaged}");
        assert_eq!(packaged, source.replace("/usr/local/bin/hecate", "/usr/bin/hecate"), "{unit}");
    }
    for (inside, source) in [
        ("etc/hecate/hecate.yaml", "configs/hecate.example.yaml"),
        ("usr/share/hecate/sudoers.d/hecate-node", "packaging/sudoers.d/hecate-node"),
        ("usr/share/hecate/node/hecate-k3s-stop", "packaging/node/hecate-k3s-stop"),
        ("usr/lib/hecate/install.sh", "scripts/install.sh"),
    ] {
        assert_eq!(
            std::fs::read(x.path().join(inside)).unwrap(),
            std::fs::read(repo().join(source)).unwrap(),
            "{inside} is not {source}"
        );
    }
    let help = String::from_utf8(Command::new(binary()).arg("--help").output().unwrap().stdout).unwrap();
    let subcommands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(subcommands.contains(&"daemon"), "{help}");
    for c in subcommands {
        assert!(files.contains_key(&format!("/usr/share/man/man1/hecate-{c}.1.gz")), "no man page for {c}");
    }
    // The stripped binary is the test binary's code: it answers as the test binary does.
    let o = Command::new(x.path().join("usr/bin/hecate")).arg("--version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("hecate {version}"));
}

#[test]
fn lintian_finds_no_error() {
    let deb = package();
    let o = Command::new("lintian")
        .args(["--fail-on", "error", "--pedantic", "--no-tag-display-limit"])
        .arg(deb)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "lintian fails the package ({}):\n{out}", o.status);
    assert!(!out.lines().any(|l| l.starts_with("E: ")), "lintian errors:\n{out}");
}

/// A root of the test's own with an empty dpkg database, a policy-rc.d that refuses every start,
/// and a directory of recording shims for whatever could start or reload something.
struct DpkgRoot {
    root: tempfile::TempDir,
    shims: tempfile::TempDir,
}

impl DpkgRoot {
    fn new() -> DpkgRoot {
        require_tools();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log", "usr/sbin"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
        std::fs::write(r.join("var/lib/dpkg/available"), "").unwrap();
        let policy = r.join("usr/sbin/policy-rc.d");
        std::fs::write(&policy, "#!/bin/sh\n# the package test's root: nothing starts\nexit 101\n").unwrap();
        std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o755)).unwrap();
        let shims = tempfile::tempdir().unwrap();
        let log = shims.path().join("calls.log");
        std::fs::write(&log, "").unwrap();
        for s in SHIMS {
            let p = shims.path().join(s);
            std::fs::write(&p, format!("#!/bin/sh\necho \"{s} $*\" >> {}\nexit 0\n", log.display())).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        DpkgRoot { root, shims }
    }

    fn path(&self) -> &Path {
        self.root.path()
    }

    /// dpkg on this root; `env` are the installer's knobs. Returns its output, stdout and stderr.
    fn dpkg(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
        let r = self.path();
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", r.display()))
            .arg(format!("--log={}", r.join("var/log/dpkg.log").display()))
            .args(["--force-script-chrootless", "--force-depends", "--force-confold"])
            .args(args)
            .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", self.shims.path().display()))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        for k in SCRIPT_KNOBS {
            c.env_remove(k);
        }
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        (o.status.success(), text(&o))
    }

    fn install(&self, deb: &Path, env: &[(&str, &str)]) -> String {
        let (ok, out) = self.dpkg(&["-i", deb.to_str().unwrap()], env);
        assert!(ok, "dpkg -i {} failed:\n{out}", deb.display());
        out
    }

    /// What dpkg's database says of the package: (status, version).
    fn status(&self) -> (String, String) {
        let o = Command::new("dpkg-query")
            .arg(format!("--root={}", self.path().display()))
            .args(["-W", "-f=${db:Status-Status} ${Version}", "hecate"])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        let (a, b) = s.split_once(' ').unwrap_or((&s, ""));
        (a.to_owned(), b.to_owned())
    }

    /// Everything the shims recorded: what would have touched the running system.
    fn shim_calls(&self) -> String {
        std::fs::read_to_string(self.shims.path().join("calls.log")).unwrap()
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    /// Stand-in: nut-server recorded as installed in this root's database, with the files a fresh
    /// nut-server leaves in /etc/nut (configuring no UPS).
    fn with_nut_server(&self) {
        let r = self.path();
        let mut status = std::fs::read_to_string(r.join("var/lib/dpkg/status")).unwrap();
        status.push_str(
            "Package: nut-server\nStatus: install ok installed\nPriority: optional\nSection: admin\n\
             Maintainer: stand-in <test@example.invalid>\nArchitecture: all\nVersion: 2.8.0-7\n\
             Description: stand-in record written by the package test\n\n",
        );
        std::fs::write(r.join("var/lib/dpkg/status"), status).unwrap();
        std::fs::write(r.join("var/lib/dpkg/info/nut-server.list"), "").unwrap();
        std::fs::create_dir_all(r.join("etc/nut")).unwrap();
        std::fs::write(r.join("etc/nut/nut.conf"), "# Network UPS Tools: example nut.conf\nMODE=none\n").unwrap();
        std::fs::write(
            r.join("etc/nut/ups.conf"),
            "# Network UPS Tools: example ups.conf\n#[myups]\n#\tdriver = dummy\n",
        )
        .unwrap();
    }
}

/// Runs the installed binary of `root` with `args`.
fn installed_hecate(root: &DpkgRoot, args: &[&str]) -> (bool, String) {
    let o = Command::new(root.path().join("usr/bin/hecate")).args(args).output().unwrap();
    (o.status.success(), text(&o))
}

#[test]
fn dpkg_installs_it_into_a_root_starts_nothing_and_an_upgrade_keeps_the_edited_config() {
    let deb = package();
    let version = binary_version();
    let root = DpkgRoot::new();
    let r = root.path();

    let out = root.install(deb, &[]);
    assert_eq!(root.status(), ("installed".to_owned(), version.clone()), "{out}");
    // the postinst ran the installer's host setup below the root
    assert!(out.contains("config check: "), "{out}");
    let state = std::fs::metadata(r.join("var/lib/hecate")).unwrap();
    assert!(state.is_dir() && state.mode() & 0o7777 == 0o750, "/var/lib/hecate: {:o}", state.mode());
    // hecate.service enabled the Debian way, the boot-time startup left to the admin
    let link = r.join("etc/systemd/system/multi-user.target.wants/hecate.service");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("/lib/systemd/system/hecate.service"));
    assert!(r.join("var/lib/systemd/deb-systemd-helper-enabled/hecate.service.dsh-also").is_file());
    assert!(!r.join("etc/systemd/system/multi-user.target.wants/hecate-bootstrap.service").exists());
    // no nut-server in this root: /etc/nut is not written, and the way to do it later is said
    assert!(!r.join("etc/nut").exists() && !r.join("etc/hecate/nut.pass").exists(), "{out}");
    assert!(out.contains("dpkg-reconfigure hecate"), "{out}");
    assert!(out.contains("edit /etc/hecate/hecate.yaml"), "{out}");

    // The installed binary, on the installed config
    let (ok, v) = installed_hecate(&root, &["--version"]);
    assert!(ok && v.trim() == format!("hecate {version}"), "{v}");
    let config = r.join("etc/hecate/hecate.yaml");
    let (ok, check) = installed_hecate(&root, &["config", "check", config.to_str().unwrap()]);
    assert!(ok && check.contains(": ok"), "config check of the installed config:\n{check}");

    // The admin edits the config; the package is installed over itself, then upgraded
    let shipped = root.read("etc/hecate/hecate.yaml");
    let edited = shipped.replacen("host: hecate-host ", "host: edited-host ", 1);
    assert_ne!(edited, shipped, "the example config's host line moved: adapt this test");
    std::fs::write(&config, &edited).unwrap();
    let out = root.install(deb, &[]);
    assert_eq!(root.read("etc/hecate/hecate.yaml"), edited, "reinstalling replaced the edited config:\n{out}");

    let dir = tempfile::tempdir().unwrap();
    let next = format!("{version}+test1");
    let upgrade = build_deb(dir.path(), Some(&next));
    let out = root.install(&upgrade, &[]);
    assert!(out.contains(&format!("Unpacking hecate ({next}) over ({version})")), "{out}");
    assert_eq!(root.status(), ("installed".to_owned(), next.clone()));
    assert_eq!(root.read("etc/hecate/hecate.yaml"), edited, "the upgrade replaced the edited config:\n{out}");
    assert!(
        !r.join("etc/hecate/hecate.yaml.dpkg-new").exists() && !r.join("etc/hecate/hecate.yaml.dpkg-dist").exists()
    );
    assert!(std::fs::read_link(&link).is_ok(), "the upgrade lost hecate.service's enablement");
    let (ok, check) = installed_hecate(&root, &["config", "check", config.to_str().unwrap()]);
    assert!(ok, "config check of the edited config after the upgrade:\n{check}");

    // Nothing on the running system was asked to start, stop or reload anything
    assert_eq!(root.shim_calls(), "", "the maintainer scripts reached for the running system");

    // Purge: the package's files, its config, its state and its unit state are gone
    let (ok, out) = root.dpkg(&["--purge", "hecate"], &[]);
    assert!(ok, "{out}");
    for gone in ["usr/bin/hecate", "etc/hecate", "var/lib/hecate", "lib/systemd/system/hecate.service"] {
        assert!(!r.join(gone).exists(), "{gone} survived the purge:\n{out}");
    }
    assert!(std::fs::symlink_metadata(&link).is_err(), "the enablement survived the purge");
    assert_eq!(root.shim_calls(), "", "the purge reached for the running system");
}

#[test]
fn the_postinst_sets_nut_up_under_the_installers_rules_once_nut_server_is_installed() {
    let deb = package();

    // nut-server installed, /etc/nut as it leaves it: Hecate's setup is written
    let root = DpkgRoot::new();
    root.with_nut_server();
    let out = root.install(deb, &[("HECATE_NUT_UPS_NAME", "pkgups")]);
    let ups = root.read("etc/nut/ups.conf");
    assert!(ups.starts_with("# Managed by Hecate's scripts/install.sh") && ups.contains("[pkgups]"), "{out}\n{ups}");
    assert!(root.read("etc/nut/nut.conf").lines().any(|l| l == "MODE=standalone"));
    let users = root.read("etc/nut/upsd.users");
    let password = root.read("etc/hecate/nut.pass");
    assert!(users.contains(&format!("password = \"{}\"", password.trim())), "{users}");
    let pass_mode = std::fs::metadata(root.path().join("etc/hecate/nut.pass")).unwrap().mode() & 0o7777;
    assert_eq!(pass_mode, 0o640);
    assert!(root.path().join("etc/udev/rules.d/90-hecate-nut-ups.rules").is_file());
    assert!(!out.contains(&password.trim().to_string()), "the password was printed:\n{out}");
    // the config as shipped is untouched: the setup never edits it
    assert_eq!(
        std::fs::read(root.path().join("etc/hecate/hecate.yaml")).unwrap(),
        std::fs::read(repo().join("configs/hecate.example.yaml")).unwrap()
    );
    // An upgrade (here, over itself) leaves the setup as it is: without the knob given at the
    // install, the installer's default UPS name would replace pkgups.
    let again = root.install(deb, &[]);
    assert!(again.contains("an upgrade leaves NUT's setup as it is"), "{again}");
    assert_eq!(root.read("etc/hecate/nut.pass"), password, "{again}");
    assert_eq!(root.read("etc/nut/ups.conf"), ups, "{again}");
    // dpkg-reconfigure (DEBCONF_RECONFIGURE=1 is how it runs the postinst) sets it up again
    let again = root.install(deb, &[("DEBCONF_RECONFIGURE", "1"), ("HECATE_NUT_UPS_NAME", "otherups")]);
    assert!(root.read("etc/nut/ups.conf").contains("[otherups]"), "{again}");
    assert_eq!(root.read("etc/hecate/nut.pass"), password, "the password is kept: {again}");
    assert_eq!(root.shim_calls(), "");

    // someone else's NUT setup (a UPS already configured) is left alone byte for byte
    let root = DpkgRoot::new();
    root.with_nut_server();
    let foreign = "[nasups]\n  driver = usbhid-ups\n  port = auto\n";
    std::fs::write(root.path().join("etc/nut/ups.conf"), foreign).unwrap();
    let out = root.install(deb, &[]);
    assert_eq!(root.read("etc/nut/ups.conf"), foreign, "{out}");
    assert_eq!(root.read("etc/nut/nut.conf"), "# Network UPS Tools: example nut.conf\nMODE=none\n");
    assert!(out.contains("left alone"), "{out}");

    // HECATE_MANAGE_NUT=0 reaches the installer through dpkg: nothing is written
    let root = DpkgRoot::new();
    root.with_nut_server();
    let out = root.install(deb, &[("HECATE_MANAGE_NUT", "0")]);
    assert!(out.contains("HECATE_MANAGE_NUT=0"), "{out}");
    assert!(!root.path().join("etc/hecate/nut.pass").exists());
    assert_eq!(root.read("etc/nut/nut.conf"), "# Network UPS Tools: example nut.conf\nMODE=none\n");
}
