//! `packaging/node/hecate-k3s-stop`, the nodes' last step before their power is cut, run for real
//! against STAND-INS for what only a k3s node has: a `systemctl` that records, a containerd-shim
//! (a script under `$K3S_DATA_DIR/data/*/bin/`, where k3s-killall.sh looks for shims) whose
//! children play the containers, one that exits on SIGTERM and one that ignores it, and a
//! `k3s-killall.sh` that records and then does what the real one does to what is left: SIGKILL
//! every shim's process tree (k3s install.sh, `create_killall`). No root needed.

// Tests panic on purpose: an unwrap is the assertion.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hecate_test_support::wait_until;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/node/hecate-k3s-stop");

fn executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let node = Node { dir: tempfile::tempdir().unwrap() };
        let log = node.log();
        executable(&node.path("bin/systemctl"), &format!("#!/bin/sh\necho \"systemctl $*\" >> {}\n", log.display()));
        // The stand-in shim: two "containers" as its children.
        executable(
            &node.shim(),
            &format!(
                "#!/bin/sh
sh -c 'trap \"echo graceful got TERM >> {log}; exit 0\" TERM; echo graceful up >> {log}; while :; do sleep 0.05; done' &
sh -c 'trap \"echo stubborn got TERM >> {log}\" TERM; echo stubborn up >> {log}; while :; do sleep 0.05; done' &
wait; wait
",
                log = log.display()
            ),
        );
        executable(
            &node.path("k3s-killall.sh"),
            &format!(
                "#!/bin/sh
echo killall >> {log}
tree() {{ for p in \"$@\"; do echo $p; tree $(ps -e -o ppid= -o pid= | awk -v p=$p '$1 == p {{ print $2 }}'); done; }}
shims=$(ps -e -o pid= -o args= | grep -- '{data}/data/[^/]*/bin/containerd-shim' | awk '{{ print $1 }}')
[ -n \"$shims\" ] && kill -9 $(tree $shims)
exit 0
",
                log = log.display(),
                data = node.path("k3s").display()
            ),
        );
        node
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn shim(&self) -> PathBuf {
        self.path("k3s/data/1a2b/bin/containerd-shim-runc-v2")
    }

    fn log(&self) -> PathBuf {
        self.path("log")
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.log()).unwrap_or_default().lines().map(str::to_string).collect()
    }

    fn stop(&self, args: &[&str]) -> Output {
        self.stop_with(args, &self.path("k3s-killall.sh"))
    }

    fn stop_with(&self, args: &[&str], killall: &Path) -> Output {
        let path = format!("{}:{}", self.path("bin").display(), std::env::var("PATH").unwrap_or_default());
        Command::new(SCRIPT)
            .args(args)
            .env("PATH", path)
            .env("K3S_DATA_DIR", self.path("k3s"))
            .env("K3S_KILLALL", killall)
            .output()
            .unwrap()
    }
}

impl Drop for Node {
    /// Whatever a failed assertion left running: the stand-in killall ends this node's shims.
    fn drop(&mut self) {
        let _ = Command::new(self.path("k3s-killall.sh")).output();
    }
}

#[test]
fn every_container_gets_sigterm_and_its_grace_before_killall_ends_the_rest() {
    let node = Node::new();
    let mut shim = Command::new(node.shim()).spawn().unwrap();
    wait_until("both containers run", Duration::from_secs(10), || {
        let l = node.lines();
        if l.contains(&"graceful up".into()) && l.contains(&"stubborn up".into()) {
            Ok(())
        } else {
            Err(format!("{l:?}"))
        }
    });

    let out = node.stop(&["k3s", "2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("stopped k3s; 2 container(s) got SIGTERM and up to 2s, 1 still running then were killed; 0 containerd-shim(s) left"),
        "{stdout}"
    );
    // The unit first (nothing may restart a container), SIGTERM to both, killall last.
    let lines: Vec<String> = node.lines().into_iter().filter(|l| !l.ends_with(" up")).collect();
    assert_eq!(lines[0], "systemctl stop k3s");
    let mut terms = lines[1..3].to_vec();
    terms.sort();
    assert_eq!(terms, ["graceful got TERM", "stubborn got TERM"]);
    assert_eq!(lines[3..], ["killall"]);
    // Nothing of the shim runs any more.
    let status = shim.wait().unwrap();
    assert!(!status.success(), "the shim was killed: {status:?}");
}

#[test]
fn without_a_killall_or_with_shims_left_it_fails_and_bad_arguments_do_nothing() {
    let node = Node::new();
    for args in
        [&["k3s"][..], &["-k3s", "5"], &["k3s;reboot", "5"], &["k3s", "5s"], &["k3s", "3601"], &["k3s", "99999"]]
    {
        let out = node.stop(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
    }
    assert!(node.lines().is_empty(), "refused before doing anything: {:?}", node.lines());

    // A shim a missing killall cannot end: the script says so and fails.
    let mut shim = Command::new(node.shim()).spawn().unwrap();
    wait_until("both containers run", Duration::from_secs(10), || {
        if node.lines().len() >= 2 { Ok(()) } else { Err(format!("{:?}", node.lines())) }
    });
    let out = node.stop_with(&["k3s-agent", "0"], &node.path("no-such-killall.sh"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("no-such-killall.sh is missing"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 containerd-shim(s) left"));
    Command::new(node.path("k3s-killall.sh")).output().unwrap();
    shim.wait().unwrap();
}
