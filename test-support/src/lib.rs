//! Dev-only harness that runs Hecate's real peers on loopback for tests.
//!
//! Each peer is a real daemon started by the test, on a free loopback port, with its state in a
//! temp dir: a NUT `upsd` fed by the `dummy-ups` driver ([`Upsd`]), OpenSSH `sshd` "nodes" whose
//! `systemctl`/`shutdown`/`poweroff`/`reboot`/`halt` are recording shims ([`SshNode`],
//! [`SshNodes`]), an IPMI BMC `ipmi_sim` ([`IpmiSim`]), a Redfish BMC `sushy-emulator` ([`Sushy`]),
//! a Kubernetes API server with etcd ([`KubeApiServer`]) and a three-member etcd cluster whose
//! members stand-ins for k3s servers start and stop ([`EtcdQuorum`]); a NUT `upsmon` ([`Upsmon`])
//! is another client of a [`Upsd`], as a NAS sharing the UPS would be. Starting waits until the peer answers
//! (polling with a timeout, never a fixed sleep); dropping the handle kills the processes it
//! spawned, by PID, and removes the temp dir.
//!
//! The peers need root and some Debian packages plus a one-time setup (test user `hecate`, client
//! key, shims, a sudoers rule). `./scripts/test` does all of that (through
//! `scripts/install-test-deps.sh`) before running the tests. Without it the tests fail with a
//! message saying so: they never skip silently, since a test that does not run proves nothing.
//!
//! Ports are always loopback and never 22, 623, 3493 or 9560 (the real services' ports), TCP or UDP.

mod daemon;
mod etcd;
mod ipmi;
mod kube;
mod nut;
mod process;
mod redfish;
mod smtp;
mod ssh;
mod tls;
mod upsmon;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use daemon::HecateDaemon;
pub use etcd::EtcdQuorum;
pub use ipmi::IpmiSim;
pub use kube::{KUBE_APISERVER, KubeApiServer};
pub use nut::Upsd;
pub use redfish::{REDFISH_VENV, SUSHY_SYSTEMS, Sushy, SushyOptions};
pub use smtp::{Mail, Smtpd};
pub use ssh::{Call, SHIM_COMMANDS, SSH_SETUP_DIR, STOP_SSHD_SH, SshNode, SshNodes, read_calls};
pub use tls::{make_ca, make_certificates};
pub use upsmon::{Upsmon, UpsmonRole, unix_now};

/// What to run to get root and the installed peers; part of every "not set up" failure.
pub const SETUP_HINT: &str = "these tests need root and the peers installed: run ./scripts/test as root \
     (or, to set up only, scripts/install-test-deps.sh as root)";

/// Every environment variable scripts/install.sh, its self-update and scripts/build-deb read (the
/// package's postinst runs the installer): tests that run them remove these all, so that only a
/// test's own settings count, never the developer's shell.
pub const SCRIPT_KNOBS: &[&str] = &[
    "HECATE_BINARY",
    "HECATE_ENABLE_BOOTSTRAP",
    "HECATE_ENABLE_UPDATE",
    "HECATE_MANAGE_NUT",
    "HECATE_NUT_UPS_NAME",
    "HECATE_NUT_VENDOR_ID",
    "HECATE_NUT_PRODUCT_ID",
    "HECATE_NUT_MONITOR_USER",
    "HECATE_NUT_MONITOR_PASSWORD",
    "HECATE_NUT_OFFDELAY",
    "HECATE_NUT_ONDELAY",
    "HECATE_NUT_LISTEN",
    "HECATE_NUT_SECONDARIES_FILE",
    "HECATE_SKIP_APT",
    "HECATE_SRC_DIR",
    "HECATE_UPDATE_REMOTE",
    "HECATE_UPDATE_BRANCH",
    "HECATE_DEB_MAINTAINER",
    "CARGO_TARGET_DIR",
];

/// Ports the real services use; [`free_port`] never returns them.
pub const RESERVED_PORTS: [u16; 4] = [22, 623, 3493, 9560];

/// Panics with [`SETUP_HINT`] unless the process runs as root (effective uid 0).
///
/// Every peer's `start` calls this (and checks its binaries) itself; call it directly in a test
/// that needs root for another reason.
pub fn require_root() {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => panic!("running as uid {uid}, not root: {SETUP_HINT}"),
        None => panic!("cannot read the effective uid from /proc/self/status: {SETUP_HINT}"),
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved fs
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Panics with [`SETUP_HINT`] unless every path exists and is executable.
pub(crate) fn require_executables(paths: &[&str]) {
    use std::os::unix::fs::PermissionsExt;
    for path in paths {
        let ok = std::fs::metadata(path).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
        assert!(ok, "{path} is missing or not executable: {SETUP_HINT}");
    }
}

/// Where `promtool` (Prometheus's rule checker, from Debian's `prometheus` package) is:
/// `$HECATE_PROMTOOL`, else the copy scripts/install-test-deps.sh extracts, else `promtool` on
/// the PATH. Panics with [`SETUP_HINT`] when there is none. Only the binary is used: no test
/// starts a Prometheus server.
pub fn promtool() -> std::path::PathBuf {
    let candidates = std::env::var_os("HECATE_PROMTOOL")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain([std::path::PathBuf::from(PROMTOOL)])
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(|d| d.join("promtool")),
        );
    for c in candidates {
        if c.is_file() {
            return c;
        }
    }
    panic!("promtool is missing (looked at $HECATE_PROMTOOL, {PROMTOOL} and the PATH): {SETUP_HINT}")
}

/// Where scripts/install-test-deps.sh puts `promtool`.
pub const PROMTOOL: &str = "/var/lib/hecate-test/promtool/promtool";

/// A free TCP port on `addr` (a loopback address such as 127.0.0.1 or 127.0.0.23).
///
/// Binds port 0 on `addr` and reads the port the kernel picked; never one of [`RESERVED_PORTS`],
/// and never the same `(addr, port)` twice in one test process, so peers started by parallel tests
/// do not race for it. The port is free when returned; starting a peer on it can still lose to
/// another process, so the peers retry on a new port when binding fails.
pub fn free_port(addr: Ipv4Addr) -> u16 {
    pick_port("free_port", addr, || {
        let listener = TcpListener::bind((addr, 0)).unwrap_or_else(|e| panic!("free_port: cannot bind {addr}:0: {e}"));
        listener.local_addr().expect("free_port: bound listener has no local address").port()
    })
}

/// A free UDP port on `addr` (a loopback address), like [`free_port`] for UDP peers (an IPMI BMC,
/// a Wake-on-LAN listener). Never one of [`RESERVED_PORTS`], never handed out twice in one test
/// process, whether as a TCP or a UDP port.
pub fn free_udp_port(addr: Ipv4Addr) -> u16 {
    pick_port("free_udp_port", addr, || {
        let socket = UdpSocket::bind((addr, 0)).unwrap_or_else(|e| panic!("free_udp_port: cannot bind {addr}:0: {e}"));
        socket.local_addr().expect("free_udp_port: bound socket has no local address").port()
    })
}

fn pick_port(what: &str, addr: Ipv4Addr, mut bind_any: impl FnMut() -> u16) -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<(Ipv4Addr, u16)>> = Mutex::new(BTreeSet::new());
    assert!(addr.is_loopback(), "{what}: {addr} is not a loopback address; test peers only listen on loopback");
    for _ in 0..1000 {
        let port = bind_any();
        if RESERVED_PORTS.contains(&port) {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|poison| poison.into_inner());
        if handed_out.insert((addr, port)) {
            return port;
        }
    }
    panic!("{what}: no free port found on {addr}")
}

/// Polls `probe` every 20 ms until it returns `Ok`, and returns that value.
///
/// Panics after `timeout` with `what` and the last `Err` message, so a test that waits for
/// something that never happens fails with a reason instead of hanging.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    match poll(timeout, || match probe() {
        Ok(value) => Step::Ready(value),
        Err(why) => Step::Wait(why),
    }) {
        Ok(value) => value,
        Err(why) => panic!("timed out waiting for {what}: {why}"),
    }
}

/// One look at something being waited for.
pub(crate) enum Step<T> {
    /// Done, with the result.
    Ready(T),
    /// Not yet, and why not.
    Wait(String),
    /// Will never happen (for example the daemon exited), and why.
    Fail(String),
}

/// Calls `probe` every 20 ms until it is ready or fails, or `timeout` passes.
pub(crate) fn poll<T>(timeout: Duration, mut probe: impl FnMut() -> Step<T>) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match probe() {
            Step::Ready(value) => return Ok(value),
            Step::Fail(why) => return Err(why),
            Step::Wait(why) if start.elapsed() >= timeout => {
                return Err(format!("still not ready after {timeout:?}; last: {why}"));
            }
            Step::Wait(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sets a path's permission bits, panicking with the path on failure.
pub(crate) fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Writes a file, panicking with the path on failure.
pub(crate) fn write(path: &Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A temp dir (under `$TMPDIR`, usually /tmp) that unprivileged daemons can traverse.
///
/// `tempfile` makes it 0700; the peers drop privileges to `nut` or run as `hecate`, so it is made
/// 0755, and every parent must be searchable by others too.
pub(crate) fn peer_temp_dir(prefix: &str) -> tempfile::TempDir {
    let dir =
        tempfile::Builder::new().prefix(prefix).tempdir().unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    chmod(dir.path(), 0o755);
    for parent in dir.path().ancestors().skip(1) {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(parent).map(|m| m.permissions().mode()).unwrap_or(0);
        assert!(
            mode & 0o001 != 0,
            "{} (a parent of the temp dir) is not searchable by other users, so the unprivileged \
             peer daemons could not reach their files; point TMPDIR somewhere like /tmp",
            parent.display()
        );
    }
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_never_repeats_nor_reserved() {
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let port = free_port(Ipv4Addr::LOCALHOST);
            assert!(!RESERVED_PORTS.contains(&port));
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }

    #[test]
    fn free_udp_port_is_bindable_and_never_repeats() {
        let mut seen = BTreeSet::new();
        for _ in 0..50 {
            let port = free_udp_port(Ipv4Addr::LOCALHOST);
            assert!(!RESERVED_PORTS.contains(&port));
            assert!(seen.insert(port), "port {port} handed out twice");
            UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).expect("the port is free");
        }
    }

    #[test]
    #[should_panic(expected = "not a loopback address")]
    fn free_port_refuses_non_loopback() {
        free_port(Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn wait_until_returns_value_and_times_out_with_reason() {
        let mut n = 0;
        let got = wait_until("counter", Duration::from_secs(5), || {
            n += 1;
            if n >= 3 { Ok(n) } else { Err(format!("n={n}")) }
        });
        assert_eq!(got, 3);
        let err =
            std::panic::catch_unwind(|| wait_until::<()>("never", Duration::from_millis(50), || Err("nope".into())))
                .expect_err("must time out");
        let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("never") && msg.contains("nope"), "{msg}");
    }
}
