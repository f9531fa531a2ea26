//! A real three-member etcd cluster (Debian's `etcd-server` 3.4) on loopback, for the tests of a
//! k3s cluster with embedded etcd: the test initialises it once, stops it, and then lets stand-ins
//! for the servers' k3s units start and stop its members. Whether a member is healthy is etcd's
//! own answer (`/health` is true only while the cluster has a leader, so a quorum): one member
//! started alone after all three stopped never becomes healthy, as a restarted k3s server with
//! embedded etcd never sends `READY=1` alone.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::Daemon;
use crate::{free_port, peer_temp_dir, poll, require_executables, write};

const MEMBER_SCRIPT: &str = include_str!("../../tests/peers/etcd/member.sh");
const ETCD: &str = "/usr/bin/etcd";

/// The first election of a new cluster takes 2–4 s on two cores.
const FORM_TIMEOUT: Duration = Duration::from_secs(60);

/// Three etcd members on free loopback ports, their data in a temp dir. Dropping it kills every
/// member still running (by the PIDs their starters recorded) and removes the dir.
#[derive(Debug)]
pub struct EtcdQuorum {
    members: Vec<Member>,
    // last, so it is removed after the members are killed
    dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Member {
    name: String,
    client: u16,
    peer: u16,
}

impl EtcdQuorum {
    /// Forms a new three-member cluster (all three started together, as `initial-cluster-state
    /// new` needs), waits until every member is healthy, then stops all three: the cluster is
    /// initialised and down, as after a power cut.
    pub fn initialise() -> EtcdQuorum {
        require_executables(&[ETCD, "/usr/bin/curl", "/usr/bin/setsid"]);
        let dir = peer_temp_dir("hecate-etcd-");
        write(&dir.path().join("member.sh"), MEMBER_SCRIPT);
        let lo = Ipv4Addr::LOCALHOST;
        let members: Vec<Member> =
            (1..=3).map(|i| Member { name: format!("m{i}"), client: free_port(lo), peer: free_port(lo) }).collect();
        let quorum = EtcdQuorum { members, dir };
        let mut running: Vec<Daemon> = (0..quorum.members.len())
            .map(|i| {
                let mut command = Command::new("/bin/sh");
                command.args(quorum.member_args(i));
                Daemon::spawn(&format!("etcd member {}", quorum.members[i].name), command, &quorum.log(i))
            })
            .collect();
        let formed = poll(FORM_TIMEOUT, || {
            for (i, d) in running.iter_mut().enumerate() {
                if let Some(status) = d.exited() {
                    return crate::Step::Fail(d.describe_exit(status));
                }
                if !quorum.is_healthy(i) {
                    return crate::Step::Wait(format!("member {} not healthy yet", quorum.members[i].name));
                }
            }
            crate::Step::Ready(())
        });
        if let Err(why) = formed {
            panic!("the etcd cluster did not form: {why}");
        }
        for d in &mut running {
            d.kill();
        }
        quorum
    }

    /// How many members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Never empty (three members).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Member `i`'s client port (0-based).
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client
    }

    /// Whether member `i` answers `/health` with `"health":"true"` (it runs and the cluster has a
    /// leader).
    pub fn is_healthy(&self, i: usize) -> bool {
        health(SocketAddr::from((Ipv4Addr::LOCALHOST, self.members[i].client)))
    }

    /// A `/bin/sh` script for a stand-in of a k3s server's `systemctl` whose k3s unit is member
    /// `i` (see the module docs): `start --no-block k3s` starts the member in the background and
    /// returns at once; `start k3s` starts it and returns only once it is healthy, as a
    /// `Type=notify` unit whose process sends `READY=1` only once etcd is ready (k3s
    /// `pkg/cli/server/server.go`); its unit has `TimeoutStartSec=0`, so systemd waits forever:
    /// the stand-in gives up after ten minutes only so that a test cannot leak it. `is-active
    /// k3s` says `active` while the member is healthy and `activating` (status 3) before;
    /// `stop k3s` stops it. Other calls are only recorded.
    pub fn k3s_stand_in(&self, i: usize) -> String {
        let m = &self.members[i];
        let dir = self.dir.path().display();
        let args: Vec<String> = self.member_args(i).iter().map(|a| format!("'{a}'")).collect();
        format!(
            "# stand-in for k3s's unit on a server with embedded etcd member {name} (test-support/src/etcd.rs)
pidfile={dir}/{name}.pid
running() {{ [ -f \"$pidfile\" ] && kill -0 \"$(cat \"$pidfile\")\" 2>/dev/null; }}
healthy() {{ curl -fsS --max-time 1 http://127.0.0.1:{client}/health 2>/dev/null | grep -q '\"health\":\"true\"'; }}
start() {{
  running && return 0
  setsid /bin/sh {args} >>{dir}/{name}.log 2>&1 </dev/null &
  echo $! >\"$pidfile\"
}}
case \"$*\" in
  'start --no-block k3s') start ;;
  'start k3s')
    start
    echo $$ >{dir}/{name}.waiting.pid
    n=0
    until healthy; do n=$((n+1)); [ $n -gt 3000 ] && exit 1; sleep 0.2; done ;;
  'is-active k3s') if healthy; then echo active; else echo activating; exit 3; fi ;;
  'stop k3s') if running; then kill \"$(cat \"$pidfile\")\"; fi ;;
esac
exit 0
",
            name = m.name,
            client = m.client,
            args = args.join(" "),
        )
    }

    /// Stops every member and every blocking start still waiting, by the PIDs the stand-ins
    /// recorded, and waits until they are gone.
    pub fn stop_all(&self) {
        for pid in self.recorded_pids() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let still = poll(Duration::from_secs(20), || {
            let alive: Vec<u32> =
                self.recorded_pids().into_iter().filter(|p| Path::new(&format!("/proc/{p}")).exists()).collect();
            if alive.is_empty() {
                crate::Step::Ready(())
            } else {
                crate::Step::Wait(format!("still running: {alive:?}"))
            }
        });
        if let Err(why) = still {
            for pid in self.recorded_pids() {
                let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            }
            panic!("etcd members did not stop: {why}");
        }
        for path in self.pid_files() {
            let _ = std::fs::remove_file(path);
        }
    }

    fn member_args(&self, i: usize) -> Vec<String> {
        let m = &self.members[i];
        let cluster: Vec<String> =
            self.members.iter().map(|x| format!("{}=http://127.0.0.1:{}", x.name, x.peer)).collect();
        vec![
            self.dir.path().join("member.sh").display().to_string(),
            m.name.clone(),
            m.client.to_string(),
            m.peer.to_string(),
            cluster.join(","),
            self.dir.path().join(format!("{}.data", m.name)).display().to_string(),
        ]
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("{}.log", self.members[i].name))
    }

    fn pid_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else { return Vec::new() };
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "pid")).collect()
    }

    fn recorded_pids(&self) -> Vec<u32> {
        self.pid_files()
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|t| t.trim().parse().ok())
            .filter(|p: &u32| *p > 1)
            .collect()
    }
}

impl Drop for EtcdQuorum {
    fn drop(&mut self) {
        for pid in self.recorded_pids() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// GET /health on an etcd client port: true only for `"health":"true"`.
fn health(addr: SocketAddr) -> bool {
    let timeout = Duration::from_secs(1);
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, timeout) else { return false };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    if stream.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = stream.take(64 * 1024).read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).contains("\"health\":\"true\"")
}
