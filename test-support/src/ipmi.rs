//! A real OpenIPMI `ipmi_sim` BMC (IPMI 2.0 over LAN, RMCP+) on a free UDP port of 127.0.0.1,
//! whose chassis power lives in a file.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{Daemon, log_tail};
use crate::{Step, chmod, free_udp_port, peer_temp_dir, poll, require_executables, write};

const IPMI_SIM: &str = "/usr/bin/ipmi_sim";
const IPMITOOL: &str = "/usr/bin/ipmitool";
/// The project's copies, written into each BMC's temp dir so the BMC never depends on the clone's
/// file modes or location.
const BMC_EMU: &str = include_str!("../../tests/peers/ipmi/bmc.emu");
const CHASSIS_SH: &str = include_str!("../../tests/peers/ipmi/chassis.sh");

const ADMIN_USER: &str = "admin";
const ADMIN_PASSWORD: &str = "password";

/// How long ipmi_sim gets to answer an RMCP ping (it usually takes ~0.1 s).
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one RMCP ping waits for its pong.
const PING_TIMEOUT: Duration = Duration::from_millis(200);
/// An OS that ignores the ACPI soft-off request: the "later" a soft off would take effect.
const NEVER: u64 = 1_000_000;

/// One simulated BMC: `ipmi_sim` on 127.0.0.1 and a free UDP port, chassis control by
/// `tests/peers/ipmi/chassis.sh` keeping the power state in the file `power` (`1` on, `0` off;
/// on at start).
///
/// `chassis power on|off` set the state at once; `chassis power soft` turns it off after
/// [`IpmiSim::set_soft_delay`] seconds (at once by default), or never after
/// [`IpmiSim::ignore_soft_off`]; [`IpmiSim::ignore_commands`] makes a BMC that acknowledges and
/// does nothing. Every chassis call is recorded ([`IpmiSim::calls`]).
/// Users: `admin`/`password` (administrator) and `oper`/`operpass` (operator). Clients need
/// cipher suite 3 (`ipmitool -C 3`). Dropping the handle kills `ipmi_sim` and removes its dir.
///
/// ```no_run
/// let bmc = hecate_test_support::IpmiSim::start();
/// // ipmitool -I lanplus -H 127.0.0.1 -p {bmc.port()} -U admin -f {bmc.password_file()} -C 3 chassis power status
/// assert!(bmc.power_is_on());
/// ```
#[derive(Debug)]
pub struct IpmiSim {
    port: u16,
    sim: Option<Daemon>,
    // last, so it is removed after ipmi_sim is killed
    dir: tempfile::TempDir,
}

impl IpmiSim {
    /// Starts `ipmi_sim` with the power on and waits until it answers an RMCP presence ping.
    pub fn start() -> IpmiSim {
        crate::require_root();
        require_executables(&[IPMI_SIM, IPMITOOL]);
        let dir = peer_temp_dir("hecate-ipmi-");
        let path = dir.path();
        std::fs::create_dir(path.join("state")).unwrap_or_else(|e| panic!("mkdir {}/state: {e}", path.display()));
        write(&path.join("bmc.emu"), BMC_EMU);
        write(&path.join("chassis.sh"), CHASSIS_SH);
        chmod(&path.join("chassis.sh"), 0o755);
        write(&path.join("power"), "1\n");
        write(&path.join("chassis.log"), "");
        let password_file = path.join("admin.pass");
        write(&password_file, format!("{ADMIN_PASSWORD}\n"));
        chmod(&password_file, 0o600);

        let mut bmc = IpmiSim { port: 0, sim: None, dir };
        bmc.spawn_and_wait();
        bmc
    }

    /// Where the BMC listens (UDP): 127.0.0.1 and a free port.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The BMC's host, for `ipmitool -H`: `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The BMC's UDP port, for `ipmitool -p`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The administrator: `admin`.
    pub fn username(&self) -> &'static str {
        ADMIN_USER
    }

    /// The administrator's password: `password`.
    pub fn password(&self) -> &'static str {
        ADMIN_PASSWORD
    }

    /// A file (mode 0600) holding the administrator's password and a line break, for `ipmitool -f`.
    pub fn password_file(&self) -> PathBuf {
        self.dir.path().join("admin.pass")
    }

    /// The temp dir: `lan.conf`, `power`, `chassis.log`, `ipmi_sim.log`, the state dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Whether the chassis power file says on. A pending soft off (see
    /// [`IpmiSim::set_soft_delay`]) only shows once a client has asked the BMC again.
    pub fn power_is_on(&self) -> bool {
        let path = self.dir.path().join("power");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        match text.trim() {
            "1" => true,
            "0" => false,
            other => panic!("{} holds {other:?}, neither 1 nor 0", path.display()),
        }
    }

    /// Sets the chassis power as if the machine had been switched by hand, dropping any pending
    /// soft off.
    pub fn set_power(&self, on: bool) {
        let _ = std::fs::remove_file(self.dir.path().join("soft_off_at"));
        write(&self.dir.path().join("power"), if on { "1\n" } else { "0\n" });
    }

    /// How many seconds a `chassis power soft` takes to turn the power off (0, the default: at once).
    pub fn set_soft_delay(&self, seconds: u64) {
        write(&self.dir.path().join("soft_delay"), format!("{seconds}\n"));
    }

    /// Makes the "OS" ignore `chassis power soft`: the BMC accepts it and the power stays on.
    pub fn ignore_soft_off(&self) {
        self.set_soft_delay(NEVER);
    }

    /// Makes the BMC acknowledge every chassis command (power on, off, soft) and do nothing, or
    /// act normally again.
    pub fn ignore_commands(&self, ignore: bool) {
        let flag = self.dir.path().join("ignore_set");
        if ignore {
            write(&flag, "");
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }

    /// Every chassis control call so far, without its timestamp, oldest first:
    /// `get power`, `set power 0`, `set power 1`, `set shutdown 1`, ...
    pub fn calls(&self) -> Vec<String> {
        let path = self.dir.path().join("chassis.log");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        text.lines().filter_map(|l| l.split_once(' ').map(|(_, call)| call.to_owned())).collect()
    }

    /// The chassis calls that change something (every call but `get ...`).
    pub fn actions(&self) -> Vec<String> {
        self.calls().into_iter().filter(|c| !c.starts_with("get ")).collect()
    }

    /// Kills `ipmi_sim`: the BMC stops answering (as if unplugged) until dropped.
    pub fn kill(&mut self) {
        if let Some(mut sim) = self.sim.take() {
            sim.kill();
        }
    }

    fn spawn_and_wait(&mut self) {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            self.port = free_udp_port(Ipv4Addr::LOCALHOST);
            write(&self.dir.path().join("lan.conf"), lan_conf(self.dir.path(), self.port));
            match self.spawn() {
                Ok(()) => return,
                // ipmi_sim exits when it cannot bind; someone may have taken the port meanwhile
                Err(why) if attempt < ATTEMPTS && why.contains("exited") => self.kill(),
                Err(why) => panic!("ipmi_sim did not start: {why}"),
            }
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let path = self.dir.path();
        let log = path.join("ipmi_sim.log");
        let mut command = Command::new(IPMI_SIM);
        // -n: no interactive console on stdio; -p: nothing persisted beyond the temp dir anyway
        command.arg("-n").arg("-p").arg("-c").arg(path.join("lan.conf")).arg("-f").arg(path.join("bmc.emu"));
        command.arg("-s").arg(path.join("state"));
        self.sim = Some(Daemon::spawn("ipmi_sim", command, &log));
        let addr = self.addr();
        let result = poll(START_TIMEOUT, || {
            if let Some(sim) = self.sim.as_mut()
                && let Some(status) = sim.exited()
            {
                return Step::Fail(sim.describe_exit(status));
            }
            match rmcp_ping(addr) {
                Ok(()) => Step::Ready(()),
                Err(why) => Step::Wait(why),
            }
        });
        result.map_err(|why| format!("{why}\n{}", log_tail(&log)))
    }
}

impl Drop for IpmiSim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// ipmi_sim's LAN config: one BMC at IPMB 0x20 listening on 127.0.0.1:`port`, chassis control by
/// `chassis.sh` in `dir`.
fn lan_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "name \"hecate-test\"\n\
         set_working_mc 0x20\n\
         \x20 startlan 1\n\
         \x20   addr 127.0.0.1 {port}\n\
         \x20   priv_limit admin\n\
         \x20   allowed_auths_callback none md2 md5 straight\n\
         \x20   allowed_auths_user none md2 md5 straight\n\
         \x20   allowed_auths_operator none md2 md5 straight\n\
         \x20   allowed_auths_admin none md2 md5 straight\n\
         \x20   guid a123456789abcdefa123456789abcdef\n\
         \x20 endlan\n\
         \x20 chassis_control \"{d}/chassis.sh {d}\"\n\
         \x20 user 1 true  \"\"      \"test\"     user     10 none md2 md5 straight\n\
         \x20 user 2 true  \"{ADMIN_USER}\" \"{ADMIN_PASSWORD}\" admin    10 none md2 md5 straight\n\
         \x20 user 3 true  \"oper\"  \"operpass\" operator 10 none md2 md5 straight\n"
    )
}

/// An ASF presence ping over RMCP (UDP); ipmi_sim answers with a presence pong. Unlike an
/// ipmitool call it does not touch the chassis, so [`IpmiSim::calls`] stays empty.
fn rmcp_ping(addr: SocketAddr) -> Result<(), String> {
    // RMCP: version 6, reserved, sequence 0xff (no ack), class ASF; ASF: IANA 4542, type 0x80
    // (presence ping), tag 0x11, reserved, data length 0
    const PING: [u8; 12] = [0x06, 0x00, 0xff, 0x06, 0x00, 0x00, 0x11, 0xbe, 0x80, 0x11, 0x00, 0x00];
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind a udp socket: {e}"))?;
    socket.set_read_timeout(Some(PING_TIMEOUT)).map_err(|e| format!("set read timeout: {e}"))?;
    socket.connect(addr).map_err(|e| format!("connect to {addr}: {e}"))?;
    socket.send(&PING).map_err(|e| format!("send rmcp ping to {addr}: {e}"))?;
    let mut buf = [0u8; 64];
    let n = socket.recv(&mut buf).map_err(|e| format!("no rmcp pong from {addr}: {e}"))?;
    // the pong: same RMCP header, ASF type 0x40 with our tag
    if n >= 10 && buf[..4] == PING[..4] && buf[8] == 0x40 && buf[9] == 0x11 {
        Ok(())
    } else {
        Err(format!("unexpected answer to an rmcp ping from {addr}: {:02x?}", &buf[..n]))
    }
}
