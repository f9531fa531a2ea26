//! Real OpenSSH `sshd` "nodes" on loopback whose power and service commands are recording shims.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::process::{Daemon, log_tail};
use crate::{SETUP_HINT, Step, chmod, free_port, peer_temp_dir, poll, require_executables, write};

/// Where `tests/peers/ssh/setup.sh` (run by `scripts/install-test-deps.sh`) puts the test user's
/// home, the client key and the shims. Fixed, outside the clone: the sudoers rule
/// `/etc/sudoers.d/hecate-test` names the shims by absolute path.
pub const SSH_SETUP_DIR: &str = "/var/lib/hecate-test/ssh";

/// The commands the nodes replace with recording shims (on PATH before the real ones, and the only
/// commands the test user may run with `sudo -n`).
pub const SHIM_COMMANDS: [&str; 7] =
    ["systemctl", "shutdown", "poweroff", "reboot", "halt", "timedatectl", "hecate-k3s-stop"];

const SSHD: &str = "/usr/sbin/sshd";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";
const SUDOERS: &str = "/etc/sudoers.d/hecate-test";
const TEST_USER: &str = "hecate";
/// The second test user, whose sudoers rule is the one Hecate ships for real nodes
/// (`packaging/sudoers.d/hecate-node`) on the shims' paths.
const PKG_USER: &str = "hecate-pkg";
const PKG_SUDOERS: &str = "/etc/sudoers.d/hecate-test-pkg";
/// The project's copies that setup.sh installs; a mismatch means the setup is stale.
const SHIM_SOURCE: &str = include_str!("../../tests/peers/ssh/shim.sh");
const SUDO_ROOT_SOURCE: &str = include_str!("../../tests/peers/ssh/sudo-root.sh");

/// How long sshd gets to answer with its banner.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// One OpenSSH `sshd` on a free port of a loopback address, acting as a cluster node.
///
/// Logins as `hecate` (or root) with the key [`SshNode::identity_file`]; the host key is fresh and
/// listed in [`SshNode::known_hosts`]. Sessions get `PATH` with the shim dir first, so
/// `systemctl`, `shutdown`, `poweroff`, `reboot` and `halt` (also through `sudo -n`, which the
/// test user may use for exactly those) only append a line to the node's `calls.log`
/// ([`SshNode::calls`]). Root sessions get a fake `sudo` first on PATH that records itself and
/// runs the shim. Dropping the handle kills sshd and removes the node's temp dir.
#[derive(Debug)]
pub struct SshNode {
    name: String,
    addr: Ipv4Addr,
    port: u16,
    sshd: Option<Daemon>,
    // last, so it is removed after sshd is killed
    dir: tempfile::TempDir,
}

/// One line of a node's `calls.log`: a shim (or root's fake `sudo`) was run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// When the call started (the shim records before its delay, if any).
    pub timestamp: SystemTime,
    /// The node's name (`HECATE_NODE`).
    pub node: String,
    /// The user the command ran as: `root` under `sudo`, else the login user.
    pub user: String,
    /// `SUDO_USER` when run through real sudo (`hecate`), else `None`.
    pub sudo_user: Option<String>,
    /// The command's name: one of [`SHIM_COMMANDS`], or `sudo` for root's fake sudo.
    pub command: String,
    /// The arguments, split on spaces (the log joins them with spaces, so an argument that
    /// itself contains a space comes back split).
    pub args: Vec<String>,
    /// The raw log line.
    pub line: String,
}

impl Call {
    /// The command and its arguments joined with spaces, e.g. `systemctl stop k3s`.
    pub fn command_line(&self) -> String {
        std::iter::once(self.command.as_str()).chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }

    fn parse(line: &str) -> Option<Call> {
        let (ts, rest) = line.split_once(' ')?;
        let (secs, nanos) = ts.split_once('.').unwrap_or((ts, "0"));
        let timestamp = UNIX_EPOCH
            + Duration::from_secs(secs.parse().ok()?)
            + Duration::from_nanos(format!("{nanos:0<9.9}").parse().ok()?);
        let (node, rest) = rest.strip_prefix("node=")?.split_once(' ')?;
        let (user, rest) = rest.strip_prefix("user=")?.split_once(' ')?;
        let (sudo_user, rest) = rest.strip_prefix("sudo_user=")?.split_once(' ')?;
        let rest = rest.strip_prefix("cmd=")?;
        let (command, args) = rest.split_once(' ').unwrap_or((rest, ""));
        Some(Call {
            timestamp,
            node: node.to_owned(),
            user: user.to_owned(),
            sudo_user: (!sudo_user.is_empty()).then(|| sudo_user.to_owned()),
            command: command.to_owned(),
            args: args.split_whitespace().map(str::to_owned).collect(),
            line: line.to_owned(),
        })
    }
}

impl SshNode {
    /// Starts sshd for node `name` on a free port of `addr` (any 127.x.y.z works on Linux without
    /// configuration) and waits until it sends its SSH banner.
    ///
    /// Needs root and the one-time setup done by `scripts/install-test-deps.sh`; panics with
    /// [`SETUP_HINT`] if either is missing.
    pub fn start(name: &str, addr: Ipv4Addr) -> SshNode {
        require_ssh_setup();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "node name {name:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"
        );
        std::fs::create_dir_all("/run/sshd").expect("create sshd's privilege separation dir");
        let dir = peer_temp_dir("hecate-sshd-");
        new_host_key(dir.path(), name);
        // the shims run as hecate (no sudo) or root and append here
        let calls = dir.path().join("calls.log");
        write(&calls, "");
        chmod(&calls, 0o666);

        let mut node = SshNode { name: name.to_owned(), addr, port: 0, sshd: None, dir };
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            node.port = free_port(addr);
            node.write_config();
            match node.spawn_and_wait() {
                Ok(()) => break,
                Err(why) if attempt < ATTEMPTS && why.contains("Address already in use") => {}
                Err(why) => panic!("sshd for node {name} on {addr} did not start: {why}"),
            }
        }
        let known_hosts = node.known_hosts_line();
        write(&node.known_hosts(), format!("{known_hosts}\n"));
        node
    }

    /// The node's name (`HECATE_NODE` in its sessions).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The loopback address sshd listens on.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The port sshd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `addr:port`.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::from((self.addr, self.port))
    }

    /// The unprivileged test user: `hecate` (may `sudo -n` only the shims).
    pub fn user(&self) -> &'static str {
        TEST_USER
    }

    /// A user whose only sudo rule is the one Hecate ships for real nodes
    /// (`packaging/sudoers.d/hecate-node`, installed by setup.sh with the shims' paths): exactly
    /// `systemctl start --no-block|stop|is-active` of `k3s` and `k3s-agent`, `systemctl
    /// poweroff` and `hecate-k3s-stop`. Panics with [`SETUP_HINT`] when that rule is not installed.
    pub fn packaged_rule_user(&self) -> &'static str {
        let rule = std::fs::read_to_string(PKG_SUDOERS).unwrap_or_default();
        assert!(
            rule.contains(&format!("{PKG_USER} ALL")),
            "{PKG_SUDOERS} is missing or stale (tests/peers/ssh/setup.sh makes it): {SETUP_HINT}"
        );
        PKG_USER
    }

    /// The client private key (root-only, 0600) accepted for `hecate` and root on every node.
    pub fn identity_file(&self) -> PathBuf {
        Path::new(SSH_SETUP_DIR).join("keys/id_ed25519")
    }

    /// A known_hosts file with this node's host key (`[addr]:port ssh-ed25519 KEY`).
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The known_hosts line for this node, `[addr]:port ssh-ed25519 KEY`.
    pub fn known_hosts_line(&self) -> String {
        let pub_path = self.dir.path().join("ssh_host_ed25519_key.pub");
        let text = std::fs::read_to_string(&pub_path).unwrap_or_else(|e| panic!("read {}: {e}", pub_path.display()));
        let mut fields = text.split_whitespace();
        let (Some(kind), Some(key)) = (fields.next(), fields.next()) else {
            panic!("{} is not an ssh public key: {text:?}", pub_path.display());
        };
        format!("[{}]:{} {kind} {key}", self.addr, self.port)
    }

    /// The node's temp dir (`HECATE_NODE_DIR`): `calls.log`, `exit.*`, `delay.*`, `hook.*`, `sshd.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Every shim call recorded so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        read_calls(self.dir.path())
    }

    /// From now on the shim for `command` (one of [`SHIM_COMMANDS`]) exits with `code`.
    pub fn set_exit(&self, command: &str, code: u8) {
        self.write_control("exit", command, &code.to_string());
    }

    /// From now on the shim for `command` sleeps `delay` after recording the call, before
    /// exiting (e.g. a `systemctl stop` that takes 1 s).
    pub fn set_delay(&self, command: &str, delay: Duration) {
        self.write_control("delay", command, &format!("{:.3}", delay.as_secs_f64()));
    }

    /// From now on the shim for `command` runs `script` (a shell script; `#!/bin/sh` is put
    /// first) with the call's arguments after recording the call, and the call's output and exit
    /// status are the script's: a test's stand-in for what the real command does on a node. It
    /// runs as root (under sudo) with `HECATE_NODE` and `HECATE_NODE_DIR` set.
    pub fn set_hook(&self, command: &str, script: &str) {
        check_shim_command(command);
        let path = self.dir.path().join(format!("hook.{command}"));
        write(&path, format!("#!/bin/sh\n{script}"));
        chmod(&path, 0o755);
    }

    /// A STAND-IN for the machine going down: from now on `systemctl poweroff` (through the
    /// `systemctl` hook; other `systemctl` calls are only recorded and succeed) answers and then
    /// stops the node's sshd, so the node stops answering as a machine that powered off does.
    /// [`SshNode::restart`] brings it back.
    pub fn go_down_on_poweroff(&self) {
        self.set_hook(
            "systemctl",
            &format!(
                "# stand-in for a machine powering off (test-support SshNode::go_down_on_poweroff)\n\
                 if [ \"$1\" = poweroff ]; then\n{STOP_SSHD_SH}fi\nexit 0\n"
            ),
        );
    }

    /// Undoes [`SshNode::set_exit`], [`SshNode::set_delay`] and [`SshNode::set_hook`] for `command`.
    pub fn reset(&self, command: &str) {
        check_shim_command(command);
        for kind in ["exit", "delay", "hook"] {
            let path = self.dir.path().join(format!("{kind}.{command}"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("remove {}: {e}", path.display()),
            }
        }
    }

    /// Kills sshd, as if the node were down: connections are refused until
    /// [`SshNode::restart`]. (Sessions already open keep running until they end.)
    pub fn stop(&mut self) {
        if let Some(mut sshd) = self.sshd.take() {
            sshd.kill();
        }
    }

    /// Starts sshd again on the same address, port and host key (the node came back) and waits
    /// for its banner.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(why) = self.spawn_and_wait() {
            panic!("restarting sshd for node {}: {why}", self.name);
        }
    }

    /// Gives the node a fresh host key and restarts its sshd on the same address and port: to a
    /// client, the node's key changed.
    pub fn change_host_key(&mut self) {
        let key = self.dir.path().join("ssh_host_ed25519_key");
        for path in [key.clone(), key.with_extension("pub")] {
            std::fs::remove_file(&path).unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
        }
        new_host_key(self.dir.path(), &self.name);
        self.restart();
    }

    /// Whether sshd is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        self.sshd.as_mut().is_some_and(|d| d.exited().is_none())
    }

    fn write_control(&self, kind: &str, command: &str, value: &str) {
        check_shim_command(command);
        let path = self.dir.path().join(format!("{kind}.{command}"));
        write(&path, format!("{value}\n"));
        chmod(&path, 0o644);
    }

    fn write_config(&self) {
        let d = self.dir.path().display();
        let setup = SSH_SETUP_DIR;
        let (name, addr, port) = (&self.name, self.addr, self.port);
        let path = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";
        let penalties = if sshd_has_per_source_penalties(self.dir.path()) {
            // OpenSSH >= 9.8 would lock out 127.0.0.1 after a few unauthenticated connections
            // (readiness probes, tests of failures)
            "PerSourcePenalties no\n"
        } else {
            ""
        };
        let config = format!(
            "# hecate-test-support node {name}
ListenAddress {addr}:{port}
HostKey {d}/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile {setup}/keys/authorized_keys
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers root {TEST_USER} {PKG_USER}
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
LogLevel INFO
MaxStartups 200:30:400
MaxSessions 50
KexAlgorithms curve25519-sha256
{penalties}SetEnv PATH={setup}/shim:{path} HECATE_NODE={name} HECATE_NODE_DIR={d}
# real sudo would reset PATH to secure_path and run the real systemctl: root gets a fake sudo first
Match User root
  SetEnv PATH={setup}/shim-root:{setup}/shim:{path} HECATE_NODE={name} HECATE_NODE_DIR={d}
"
        );
        write(&self.dir.path().join("sshd_config"), config);
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let mut command = Command::new(SSHD);
        command.args(["-D", "-e", "-f"]).arg(self.dir.path().join("sshd_config"));
        let log = self.dir.path().join("sshd.log");
        let sshd = Daemon::spawn(&format!("sshd for node {}", self.name), command, &log);
        // for go_down_on_poweroff's hook
        write(&self.dir.path().join("sshd.pid"), format!("{}\n", sshd.pid()));
        self.sshd = Some(sshd);
        let addr = self.socket_addr();
        let result = poll(START_TIMEOUT, || {
            if let Some(sshd) = self.sshd.as_mut()
                && let Some(status) = sshd.exited()
            {
                return Step::Fail(sshd.describe_exit(status));
            }
            match read_banner(addr) {
                Ok(()) => Step::Ready(()),
                Err(why) => Step::Wait(why),
            }
        });
        result.map_err(|why| format!("{why}\n{}", log_tail(&log)))
    }
}

impl Drop for SshNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Shell lines for a hook: stop the node's sshd (by the PID the harness recorded) and wait until
/// it has exited, so that no connection is accepted after the hook returns (a signal alone is
/// handled whenever sshd next wakes, and a connection it accepts before that lives on in its own
/// process). The listener is the test process's child, so once gone it is a zombie until reaped.
pub const STOP_SSHD_SH: &str = r#"  pid=$(cat "$HECATE_NODE_DIR/sshd.pid")
  kill "$pid"
  n=0
  while [ $n -lt 200 ]; do
    state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null)
    if [ -z "$state" ] || [ "$state" = Z ]; then break; fi
    n=$((n + 1)); sleep 0.05
  done
"#;

/// Every shim call recorded in a node's dir ([`SshNode::dir`]) so far, oldest first: for a
/// stand-in that watches a node from another task without holding the [`SshNode`].
pub fn read_calls(node_dir: &Path) -> Vec<Call> {
    let path = node_dir.join("calls.log");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| Call::parse(l).unwrap_or_else(|| panic!("malformed line in {}: {l:?}", path.display())))
        .collect()
}

/// Many [`SshNode`]s, started in parallel, with one known_hosts file for all of them.
///
/// Derefs to `[SshNode]`: `nodes[0]`, `nodes.iter()`, `nodes.len()`.
#[derive(Debug)]
pub struct SshNodes {
    nodes: Vec<SshNode>,
    dir: tempfile::TempDir,
}

impl SshNodes {
    /// Starts `count` nodes named `{prefix}1`, `{prefix}2`, ... on 127.0.0.10, 127.0.0.11, ...
    /// (one address each, like real nodes), in parallel. At most 240 nodes.
    pub fn start(count: usize, prefix: &str) -> SshNodes {
        assert!(count <= 240, "at most 240 nodes (127.0.0.10-249), not {count}");
        let specs: Vec<(String, Ipv4Addr)> = (0..count)
            .map(|i| {
                let last = u8::try_from(10 + i).expect("count checked above");
                (format!("{prefix}{}", i + 1), Ipv4Addr::new(127, 0, 0, last))
            })
            .collect();
        let specs: Vec<(&str, Ipv4Addr)> = specs.iter().map(|(n, a)| (n.as_str(), *a)).collect();
        SshNodes::start_named(&specs)
    }

    /// Starts one node per `(name, addr)`, in parallel.
    pub fn start_named(specs: &[(&str, Ipv4Addr)]) -> SshNodes {
        require_ssh_setup();
        let started: Vec<std::thread::Result<SshNode>> = std::thread::scope(|scope| {
            let handles: Vec<_> =
                specs.iter().map(|&(name, addr)| scope.spawn(move || SshNode::start(name, addr))).collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut nodes = Vec::with_capacity(started.len());
        let mut failures = Vec::new();
        for result in started {
            match result {
                Ok(node) => nodes.push(node),
                Err(panic) => failures.push(panic_message(&panic)),
            }
        }
        if !failures.is_empty() {
            // the nodes that did start are dropped (killed) on the way out
            panic!("{} of {} nodes did not start:\n{}", failures.len(), specs.len(), failures.join("\n"));
        }
        let dir = peer_temp_dir("hecate-sshnodes-");
        let lines: String = nodes.iter().map(|n| n.known_hosts_line() + "\n").collect();
        write(&dir.path().join("known_hosts"), lines);
        SshNodes { nodes, dir }
    }

    /// A known_hosts file listing every node's host key.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.path().join("known_hosts")
    }

    /// The node named `name`, if any.
    pub fn by_name(&self, name: &str) -> Option<&SshNode> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The node named `name`, if any, mutably (to [`SshNode::stop`] it).
    pub fn by_name_mut(&mut self, name: &str) -> Option<&mut SshNode> {
        self.nodes.iter_mut().find(|n| n.name == name)
    }
}

impl Deref for SshNodes {
    type Target = [SshNode];
    fn deref(&self) -> &[SshNode] {
        &self.nodes
    }
}

impl DerefMut for SshNodes {
    fn deref_mut(&mut self) -> &mut [SshNode] {
        &mut self.nodes
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "(non-string panic)".to_owned())
}

/// Writes a new ed25519 host key `ssh_host_ed25519_key` (and `.pub`) into a node's dir.
fn new_host_key(dir: &Path, name: &str) {
    let key = dir.join("ssh_host_ed25519_key");
    let out = Command::new(SSH_KEYGEN)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {SSH_KEYGEN}: {e}"));
    assert!(out.status.success(), "ssh-keygen for node {name} failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn check_shim_command(command: &str) {
    assert!(SHIM_COMMANDS.contains(&command), "{command:?} is not a shimmed command; the shims are {SHIM_COMMANDS:?}");
}

/// Connects and reads sshd's `SSH-2.0-...` identification line.
fn read_banner(addr: SocketAddr) -> Result<(), String> {
    let timeout = Duration::from_secs(2);
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| format!("set timeout: {e}"))?;
    let mut banner = String::new();
    BufReader::new(&stream).read_line(&mut banner).map_err(|e| format!("read banner from {addr}: {e}"))?;
    if banner.starts_with("SSH-2.0-") { Ok(()) } else { Err(format!("{addr} answered {banner:?}, not an SSH banner")) }
}

/// Whether this sshd knows `PerSourcePenalties` (OpenSSH >= 9.8), asked once per process by
/// testing a config that uses it (an unknown keyword is a config error).
fn sshd_has_per_source_penalties(node_dir: &Path) -> bool {
    static KNOWN: OnceLock<bool> = OnceLock::new();
    *KNOWN.get_or_init(|| {
        let probe = node_dir.join("sshd_config.probe");
        write(&probe, format!("HostKey {}/ssh_host_ed25519_key\nPerSourcePenalties no\n", node_dir.display()));
        let ok =
            Command::new(SSHD).arg("-t").arg("-f").arg(&probe).output().map(|o| o.status.success()).unwrap_or(false);
        let _ = std::fs::remove_file(&probe);
        ok
    })
}

/// Panics with [`SETUP_HINT`] unless root, the binaries and `tests/peers/ssh/setup.sh`'s work
/// (current version) are all there. Checked once per process.
fn require_ssh_setup() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    crate::require_root();
    let result = CHECKED.get_or_init(|| {
        require_executables(&[SSHD, SSH_KEYGEN, "/usr/bin/ssh", "/usr/bin/sudo"]);
        let dir = Path::new(SSH_SETUP_DIR);
        let mut problems = Vec::new();
        for (path, want) in
            [(dir.join("shim/hecate-shim"), SHIM_SOURCE), (dir.join("shim-root/sudo"), SUDO_ROOT_SOURCE)]
        {
            match std::fs::read_to_string(&path) {
                Ok(have) if have == want => {}
                Ok(_) => problems.push(format!(
                    "{} differs from the project's copy under tests/peers/ssh (stale setup)",
                    path.display()
                )),
                Err(e) => problems.push(format!("{}: {e}", path.display())),
            }
        }
        let sudoers = std::fs::read_to_string(SUDOERS).unwrap_or_default();
        for command in SHIM_COMMANDS {
            let shim = dir.join("shim").join(command);
            match std::fs::read_link(&shim) {
                Ok(target) if target == Path::new("hecate-shim") => {}
                Ok(target) => problems.push(format!(
                    "{} points to {}, not hecate-shim (a setup of an older checkout ran since: stale setup)",
                    shim.display(),
                    target.display()
                )),
                Err(_) => problems.push(format!("{} is missing", shim.display())),
            }
            if !sudoers.contains(&shim.display().to_string()) {
                problems.push(format!("{SUDOERS} does not allow {} (stale setup)", shim.display()));
            }
        }
        for path in [
            dir.join("setup-done"),
            dir.join("keys/id_ed25519"),
            dir.join("keys/authorized_keys"),
            PathBuf::from(SUDOERS),
        ] {
            if !path.exists() {
                problems.push(format!("{} is missing", path.display()));
            }
        }
        let user =
            Command::new("getent").args(["passwd", TEST_USER]).output().map(|o| o.status.success()).unwrap_or(false);
        if !user {
            problems.push(format!("no user {TEST_USER:?}"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    });
    if let Err(problems) = result {
        panic!("the ssh test setup is not done ({problems}): {SETUP_HINT}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shim_and_fake_sudo_lines() {
        let call = Call::parse("1732500000.123456789 node=n1 user=root sudo_user=hecate cmd=systemctl stop k3s")
            .expect("valid line");
        assert_eq!(call.node, "n1");
        assert_eq!(call.user, "root");
        assert_eq!(call.sudo_user.as_deref(), Some("hecate"));
        assert_eq!(call.command_line(), "systemctl stop k3s");
        assert_eq!(call.timestamp, UNIX_EPOCH + Duration::new(1_732_500_000, 123_456_789));

        let call = Call::parse("1732500000.5 node=n1 user=root sudo_user= cmd=poweroff ").expect("valid line");
        assert_eq!(call.sudo_user, None);
        assert_eq!(call.command, "poweroff");
        assert!(call.args.is_empty());
        assert_eq!(call.timestamp, UNIX_EPOCH + Duration::new(1_732_500_000, 500_000_000));

        assert!(Call::parse("garbage").is_none());
    }
}
