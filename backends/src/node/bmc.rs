//! What the BMC controllers (`redfish`, `ipmi`) share: the power sequence with its checks, and
//! reading secrets from files.
//!
//! A BMC that answers "ok" has only accepted a request; the machine may still refuse (an OS that
//! ignores the power button, a BMC that queues and forgets). So every action is followed by
//! polling the power state until it matches, and an action that never shows is a failure, which
//! lets the node's chain fall back to its next controller.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use hecate_core::duration::HumanDuration;
use hecate_core::duration::limits::ONE_DAY;
use hecate_core::node::{Capability, PowerState};
use hecate_core::preflight::Check;
use hecate_core::{BackendError, ErrorKind};

/// What a BMC controller can do. `Probe` is left out on purpose: the startup plan probes a node
/// to learn whether its OS is up, which a BMC that answers cannot tell.
pub(crate) const BMC_CAPABILITIES: [Capability; 3] =
    [Capability::PowerState, Capability::PowerOn, Capability::PowerOff];

/// Default time limit of one request to a BMC.
pub(crate) fn default_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

/// Default time an accepted action gets to show in the power state.
pub(crate) fn default_verify_timeout() -> HumanDuration {
    HumanDuration::from_secs(15)
}

/// Default time the OS gets to shut down after a soft off before the power is cut: minutes, not
/// seconds. A node that is cut while it still writes (a database, etcd) loses what it had not
/// flushed; the UPS's runtime is what this must fit in, and the shutdown budget learns it.
pub(crate) fn default_soft_off_timeout() -> HumanDuration {
    HumanDuration::from_secs(300)
}

/// Default pause between two reads of the power state while waiting.
pub(crate) fn default_poll_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}

/// A machine's power as a BMC reports it, transitions included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BmcPower {
    /// Powered.
    On,
    /// Not powered (soft off included).
    Off,
    /// Between off and on: already drawing power.
    PoweringOn,
    /// Between on and off: still powered.
    PoweringOff,
}

impl BmcPower {
    /// Whether the machine has power: only `Off` is off.
    pub(crate) fn state(self) -> PowerState {
        match self {
            Self::Off => PowerState::Off,
            Self::On | Self::PoweringOn | Self::PoweringOff => PowerState::On,
        }
    }
}

/// The four things the power sequence needs from a BMC.
#[async_trait]
pub(crate) trait PowerDriver: Send + Sync {
    /// Reads the power state.
    async fn read(&self) -> Result<BmcPower, BackendError>;
    /// Asks the OS to shut down (ACPI power button). An [`ErrorKind::Unsupported`] or
    /// [`ErrorKind::Failed`] error means the BMC will not do it: the sequence forces off at once.
    async fn soft_off(&self) -> Result<(), BackendError>;
    /// Cuts the power.
    async fn hard_off(&self) -> Result<(), BackendError>;
    /// Turns the power on.
    async fn on(&self) -> Result<(), BackendError>;
}

/// How long the power sequence waits for what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// How long the OS gets to shut down after a soft off before the power is cut; zero cuts
    /// it at once.
    pub soft: Duration,
    /// How long an accepted hard off or power on gets to show in the power state.
    pub verify: Duration,
    /// The pause between two reads of the power state.
    pub poll: Duration,
}

/// Powers off: nothing when already off; else a soft off, and a hard off if the machine is still
/// on after `timing.soft`; then waits until the BMC reports off.
pub(crate) async fn power_off(driver: &dyn PowerDriver, timing: Timing) -> Result<(), BackendError> {
    let now = driver.read().await?;
    if now == BmcPower::Off {
        return Ok(());
    }
    if !timing.soft.is_zero() {
        // already on its way down (someone pressed the button): give it the same time
        let asked = if now == BmcPower::PoweringOff {
            Ok(())
        } else {
            match driver.soft_off().await {
                Ok(()) => Ok(()),
                Err(e) if matches!(e.kind, ErrorKind::Unsupported | ErrorKind::Failed) => Err(e),
                // unreachable, auth, timeout: the hard off would fail the same way
                Err(e) => return Err(e),
            }
        };
        match asked {
            Ok(()) => {
                if let Waited::Reached = wait_for(driver, PowerState::Off, timing.soft, timing.poll).await {
                    return Ok(());
                }
                tracing::info!(
                    after = %humantime::format_duration(timing.soft),
                    "the machine is still on after the soft off: cutting the power"
                );
            }
            Err(e) => tracing::info!(error = %e, "the bmc will not do a soft off: cutting the power"),
        }
    }
    driver.hard_off().await?;
    verify(driver, PowerState::Off, timing, "power off").await
}

/// Cuts the power at once (nothing when already off) and waits until the BMC reports off: for
/// a machine whose OS was asked to shut down another way and did not in time.
pub(crate) async fn force_off(driver: &dyn PowerDriver, timing: Timing) -> Result<(), BackendError> {
    if driver.read().await? == BmcPower::Off {
        return Ok(());
    }
    driver.hard_off().await?;
    verify(driver, PowerState::Off, timing, "power off").await
}

/// Powers on: nothing when already on (or powering on); else turns it on and waits until the BMC
/// reports on.
pub(crate) async fn power_on(driver: &dyn PowerDriver, timing: Timing) -> Result<(), BackendError> {
    if driver.read().await?.state() == PowerState::On {
        return Ok(());
    }
    driver.on().await?;
    verify(driver, PowerState::On, timing, "power on").await
}

/// Waits up to `timing.verify` for `want`, turning "never showed" into an error.
async fn verify(driver: &dyn PowerDriver, want: PowerState, timing: Timing, what: &str) -> Result<(), BackendError> {
    let within = humantime::format_duration(timing.verify);
    let still = if want == PowerState::On { "off" } else { "on" };
    match wait_for(driver, want, timing.verify, timing.poll).await {
        Waited::Reached => Ok(()),
        Waited::Still => Err(BackendError::new(
            ErrorKind::Failed,
            format!("bmc accepted {what} but the machine is still {still} after {within}"),
        )),
        Waited::Unreadable(e) => Err(BackendError::with_source(
            e.kind,
            format!("bmc accepted {what} but its power state could not be read for {within}"),
            e,
        )),
    }
}

/// How waiting for a power state ended.
enum Waited {
    /// The state was reached.
    Reached,
    /// Time ran out; the last read gave another state.
    Still,
    /// Time ran out; the last read failed.
    Unreadable(BackendError),
}

/// Reads the power state every `poll` until it is `want` or `within` has passed (at least one
/// read, a last one at the deadline). A failed read is retried: a BMC may be busy right after
/// an action.
async fn wait_for(driver: &dyn PowerDriver, want: PowerState, within: Duration, poll: Duration) -> Waited {
    // Held to a day so that a time no config check stopped cannot overflow the clock.
    let deadline = Instant::now().checked_add(within.min(*ONE_DAY)).unwrap_or_else(Instant::now);
    loop {
        let last = match driver.read().await {
            Ok(p) if p.state() == want => return Waited::Reached,
            Ok(_) => Waited::Still,
            Err(e) => {
                tracing::debug!(error = %e, "reading the power state failed; retrying");
                Waited::Unreadable(e)
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return last;
        }
        tokio::time::sleep(poll.min(left)).await;
    }
}

/// A BMC's preflight: one read of the power state, which needs the BMC reached and the
/// credentials accepted, and changes nothing. `bmc` names it in messages.
pub(crate) async fn preflight(driver: &dyn PowerDriver, bmc: &str) -> Vec<Check> {
    let not = |name: &str, why: &str| Check::skipped(name, format!("not checked: {why}"));
    match driver.read().await {
        Ok(p) => vec![
            Check::ok("reachable", format!("{bmc} answers")),
            Check::ok("login", format!("{bmc} accepts the credentials")),
            Check::ok("power_state", format!("the machine is {}", power_word(p))),
        ],
        Err(e) => {
            let failed = |name: &str| Check::failed(name, format!("{}: {}", e.kind, e.detail()));
            match e.kind {
                ErrorKind::Unreachable | ErrorKind::Timeout => {
                    vec![failed("reachable"), not("login", "not reached"), not("power_state", "not reached")]
                }
                ErrorKind::Auth => {
                    vec![
                        Check::ok("reachable", format!("{bmc} answers")),
                        failed("login"),
                        not("power_state", "no login"),
                    ]
                }
                _ => vec![Check::ok("reachable", format!("{bmc} answers")), failed("power_state")],
            }
        }
    }
}

fn power_word(p: BmcPower) -> &'static str {
    match p {
        BmcPower::On => "on",
        BmcPower::Off => "off",
        BmcPower::PoweringOn => "powering on",
        BmcPower::PoweringOff => "powering off",
    }
}

/// Reads a one-line secret (a password, `user:password`): the project's one reader and rule.
pub(crate) fn read_secret_file(file: &Path, what: &str) -> Result<String, BackendError> {
    hecate_core::secret::read_secret_line(file, what)
}

/// Whether a host name or address can be passed to a tool as one argument: not empty, no
/// whitespace or control characters, not starting with `-`.
pub(crate) fn plausible_host(host: &str) -> bool {
    !host.is_empty() && !host.starts_with('-') && !host.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A scripted BMC: each read pops the next state (the last one repeats); actions are recorded.
    #[derive(Default)]
    struct Script {
        reads: Mutex<Vec<BmcPower>>,
        actions: Mutex<Vec<&'static str>>,
        refuse_soft: bool,
    }

    impl Script {
        fn new(reads: &[BmcPower]) -> Self {
            Self { reads: Mutex::new(reads.iter().rev().copied().collect()), ..Self::default() }
        }
        fn actions(&self) -> Vec<&'static str> {
            self.actions.lock().expect("lock").clone()
        }
        fn act(&self, what: &'static str) {
            self.actions.lock().expect("lock").push(what);
        }
    }

    #[async_trait]
    impl PowerDriver for Script {
        async fn read(&self) -> Result<BmcPower, BackendError> {
            let mut reads = self.reads.lock().expect("lock");
            Ok(if reads.len() > 1 { reads.pop().expect("non-empty") } else { reads[0] })
        }
        async fn soft_off(&self) -> Result<(), BackendError> {
            self.act("soft");
            if self.refuse_soft { Err(BackendError::unsupported("no graceful shutdown")) } else { Ok(()) }
        }
        async fn hard_off(&self) -> Result<(), BackendError> {
            self.act("hard");
            Ok(())
        }
        async fn on(&self) -> Result<(), BackendError> {
            self.act("on");
            Ok(())
        }
    }

    const FAST: Timing =
        Timing { soft: Duration::from_millis(50), verify: Duration::from_millis(50), poll: Duration::from_millis(5) };
    use BmcPower::{Off, On, PoweringOff, PoweringOn};

    #[tokio::test]
    async fn already_in_the_target_state_sends_nothing() {
        let off = Script::new(&[Off]);
        power_off(&off, FAST).await.expect("off");
        let on = Script::new(&[PoweringOn]);
        power_on(&on, FAST).await.expect("on");
        assert!(off.actions().is_empty() && on.actions().is_empty());
    }

    #[tokio::test]
    async fn soft_off_that_works_needs_no_hard_off() {
        let s = Script::new(&[On, On, PoweringOff, Off]);
        power_off(&s, FAST).await.expect("off");
        assert_eq!(s.actions(), ["soft"]);
    }

    #[tokio::test]
    async fn ignored_soft_off_is_followed_by_a_hard_off() {
        let s = Script::new(&[On]);
        let err = power_off(&s, FAST).await.expect_err("never turns off");
        assert_eq!(s.actions(), ["soft", "hard"]);
        assert_eq!(err.kind, ErrorKind::Failed);
        assert_eq!(err.message, "bmc accepted power off but the machine is still on after 50ms");
    }

    #[tokio::test]
    async fn refused_soft_off_and_zero_soft_timeout_go_straight_to_hard_off() {
        let refusing = Script { refuse_soft: true, ..Script::new(&[On, Off]) };
        power_off(&refusing, FAST).await.expect("off");
        assert_eq!(refusing.actions(), ["soft", "hard"]);
        let no_soft = Script::new(&[On, Off]);
        power_off(&no_soft, Timing { soft: Duration::ZERO, ..FAST }).await.expect("off");
        assert_eq!(no_soft.actions(), ["hard"]);
    }

    #[tokio::test]
    async fn power_on_that_never_shows_fails() {
        let s = Script::new(&[Off]);
        let err = power_on(&s, FAST).await.expect_err("stays off");
        assert_eq!(err.message, "bmc accepted power on but the machine is still off after 50ms");
        assert_eq!(s.actions(), ["on"]);
    }

    #[test]
    fn secret_files_are_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s");
        std::fs::write(&path, "admin:pa:ss\r\n").expect("write");
        assert_eq!(read_secret_file(&path, "credentials_file").expect("read"), "admin:pa:ss");
        std::fs::write(&path, "first\nsecond-secret\n").expect("write");
        let err = read_secret_file(&path, "password_file").expect_err("two lines");
        assert!(err.message.contains("more than one line") && !err.message.contains("secret"), "{err}");
        std::fs::write(&path, "\n").expect("write");
        assert!(read_secret_file(&path, "password_file").expect_err("empty").message.ends_with("is empty"));
        let err = read_secret_file(&dir.path().join("missing"), "password_file").expect_err("missing");
        assert_eq!(err.kind, ErrorKind::Config);
    }
}
