//! A real `kube-apiserver` 1.20.2 (built from Debian's source package by
//! `tests/peers/k8s/build-apiserver.sh`) with Debian's `etcd`, on loopback.
//!
//! No controller-manager, scheduler or kubelet runs: tests write what those would (node status,
//! PodDisruptionBudget status, Flux conditions) themselves, as named stand-ins.
//!
//! Starting takes 6–7 s of the machine's 2 cores, so a test file shares one server between its
//! tests ([`KubeApiServer::shared`]), each test in its own namespace. The wrapper script
//! (`tests/peers/k8s/run.sh`) is started under `setpriv --pdeathsig TERM` from a thread that lives
//! as long as the test process: when the process ends, however it ends, the script stops both
//! servers and removes their directory.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::{SETUP_HINT, Step, free_port, poll, require_executables, require_root};

const RUN_SCRIPT: &str = include_str!("../../tests/peers/k8s/run.sh");

/// Where `build-apiserver.sh` caches the binary (outside the clone, so CI runs share it).
pub const KUBE_APISERVER: &str = "/var/lib/hecate-test/kube-apiserver-1.20.2";

/// A running API server. Dropping it stops the servers.
#[derive(Debug)]
pub struct KubeApiServer {
    child: Mutex<Child>,
    dir: PathBuf,
    port: u16,
    token: String,
    kubeconfig: PathBuf,
    limited_kubeconfig: PathBuf,
}

/// Spawns `command` from a thread that never ends, so `--pdeathsig` (which follows the thread
/// that spawned the child, not the process) fires only when the test process itself exits.
fn spawn_from_keeper(command: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::Sender<std::io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("kube-keeper".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // Every sender gone (never, it is a static): park so the thread outlives the children.
                loop {
                    std::thread::park();
                }
            })
            .expect("cannot start the kube-keeper thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    keeper.lock().unwrap_or_else(|e| e.into_inner()).send((command, tx)).expect("kube-keeper thread is gone");
    rx.recv().expect("kube-keeper thread did not answer")
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("cannot read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

impl KubeApiServer {
    /// The binary: `$HECATE_KUBE_APISERVER` or [`KUBE_APISERVER`].
    pub fn binary() -> PathBuf {
        std::env::var_os("HECATE_KUBE_APISERVER").map_or_else(|| PathBuf::from(KUBE_APISERVER), PathBuf::from)
    }

    /// One server for the whole test process, started on first use.
    pub fn shared() -> &'static KubeApiServer {
        static SHARED: OnceLock<KubeApiServer> = OnceLock::new();
        SHARED.get_or_init(KubeApiServer::start)
    }

    /// Starts etcd and the API server on free loopback ports and waits until `/readyz` is ok.
    pub fn start() -> KubeApiServer {
        require_root();
        let binary = Self::binary();
        let binary_str = binary.to_string_lossy().into_owned();
        require_executables(&[&binary_str, "/usr/bin/etcd", "/usr/bin/curl", "/usr/bin/openssl", "/usr/bin/setpriv"]);
        let base = std::env::temp_dir().join(format!("hecate-kube-{}-{}", std::process::id(), random_hex(4)));
        std::fs::create_dir_all(&base).expect("cannot create the kube peer's directory");
        let script = base.join("run.sh");
        std::fs::write(&script, RUN_SCRIPT).expect("cannot write run.sh");
        // The script removes this whole directory (itself included) when it stops.
        let dir = base.clone();
        let token = format!("hecate-test-{}", random_hex(16));
        let lo = std::net::Ipv4Addr::LOCALHOST;
        let port = free_port(lo);
        let (etcd_client, etcd_peer) = (free_port(lo), free_port(lo));

        let mut command = Command::new("/usr/bin/setpriv");
        command
            .args(["--pdeathsig", "TERM", "--", "/bin/bash"])
            .arg(&script)
            .arg(&dir)
            .arg(&binary)
            .args([port.to_string(), etcd_client.to_string(), etcd_peer.to_string(), token.clone()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn_from_keeper(command).unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));

        let ready = poll(Duration::from_secs(150), || {
            if dir.join("ready").exists() {
                return Step::Ready(());
            }
            match child.try_wait() {
                Ok(Some(status)) => {
                    let mut err = String::new();
                    if let Some(mut s) = child.stderr.take() {
                        let _ = s.read_to_string(&mut err);
                    }
                    Step::Fail(format!("exited with {status} before it was ready:\n{err}\n({SETUP_HINT})"))
                }
                _ => Step::Wait(format!("no {}/ready yet", dir.display())),
            }
        });
        if let Err(why) = ready {
            panic!("kube-apiserver peer: {why} (logs in {})", dir.display());
        }

        let ca = dir.join("ca.crt");
        let write_kubeconfig = |name: &str, token: &str| {
            let path = base.join(name);
            std::fs::write(
                &path,
                format!(
                    "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    \
                     certificate-authority: {}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: hecate\n\
                     current-context: test\nusers:\n- name: hecate\n  user:\n    token: {token}\n",
                    ca.display()
                ),
            )
            .expect("cannot write the kubeconfig");
            path
        };
        let kubeconfig = write_kubeconfig("kubeconfig", &token);
        let limited_kubeconfig = write_kubeconfig("kubeconfig-limited", &format!("{token}-limited"));
        KubeApiServer { child: Mutex::new(child), dir: base, port, token, kubeconfig, limited_kubeconfig }
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The bearer token (group `system:masters`).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// A kubeconfig for this server: its CA, the token, context `test`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The user of [`KubeApiServer::limited_kubeconfig`]: in no group, so it may do only what a
    /// test grants it with RBAC (a `ClusterRoleBinding` to this user).
    pub const LIMITED_USER: &'static str = "hecate-limited";

    /// A kubeconfig like [`KubeApiServer::kubeconfig`] for [`KubeApiServer::LIMITED_USER`]'s
    /// token instead of the admin's.
    pub fn limited_kubeconfig(&self) -> &Path {
        &self.limited_kubeconfig
    }

    /// The CA that signed the serving certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The API server's log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("apiserver.log")
    }
}

impl Drop for KubeApiServer {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        // SIGTERM, not Child::kill's SIGKILL: the script's trap stops etcd and the API server and
        // removes their directory.
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        // Whether it stopped in time or not, what follows makes sure it is gone.
        let _ = poll(Duration::from_secs(20), || match child.try_wait() {
            Ok(Some(_)) => Step::Ready(()),
            _ => Step::Wait("still stopping".into()),
        });
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
