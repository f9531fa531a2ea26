//! Delivers events to notifiers without ever holding up the caller.
//!
//! Each notifier has its own bounded queue and worker task, so one that hangs delays no other
//! notifier's events and never the caller: [`Delivery::enqueue`] only pushes and returns. A worker
//! sends its queue's events in order, each try under the notifier's time limit, and retries with a
//! doubling backoff while the event's `retry_for` allows; an event it gives up on, one refused by a
//! full queue, and one still waiting when the delivery is dropped each get one warning line.
//!
//! The core only queues and retries; the sending itself (HTTP, SMTP, a program) is the backends'.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::error::ErrorKind;
use crate::notify::{Event, Notifier};

/// Queue and backoff settings shared by every notifier.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Events one notifier may hold waiting; more are refused (and logged) rather than stored.
    pub queue_capacity: usize,
    /// The wait before the first retry; it doubles after each failed try.
    pub first_backoff: Duration,
    /// The longest wait between two tries.
    pub max_backoff: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        Self { queue_capacity: 64, first_backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(30) }
    }
}

/// An event a notifier did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The notifier's name.
    pub notifier: String,
    /// Why.
    pub reason: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.notifier, self.reason)
    }
}

struct Queued {
    event: Event,
    deadline: Instant,
}

#[derive(Default)]
struct LaneState {
    queue: VecDeque<Queued>,
    /// The event the worker is trying now.
    current: Option<Event>,
}

struct Shared {
    state: Mutex<LaneState>,
    /// Wakes the worker when an event is queued.
    wake: Notify,
    /// Events queued or in flight, for [`Delivery::flush`].
    pending: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, LaneState> {
        // The state is a queue and a slot; a panic elsewhere leaves both usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, st: &LaneState) {
        self.pending.send_replace(st.queue.len() + usize::from(st.current.is_some()));
    }

    fn take_next(&self) -> Option<Queued> {
        let mut st = self.lock();
        let next = st.queue.pop_front();
        st.current = next.as_ref().map(|q| q.event.clone());
        self.publish(&st);
        next
    }

    fn finish_current(&self) {
        let mut st = self.lock();
        st.current = None;
        self.publish(&st);
    }
}

struct Lane {
    notifier: Arc<dyn Notifier>,
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Lane {
    /// Starts the worker on the caller's async runtime unless it runs already: building a
    /// runtime object must not need one, and a worker whose runtime ended is replaced.
    fn ensure_worker(&self, opts: &DeliveryOptions) -> Result<(), String> {
        let mut worker = self.worker.lock().unwrap_or_else(PoisonError::into_inner);
        if worker.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(());
        }
        let handle = tokio::runtime::Handle::try_current().map_err(|_| "no async runtime to deliver on".to_string())?;
        if let Some(lost) = self.shared.lock().current.take() {
            give_up(self.notifier.name(), &lost, 0, "its worker stopped while trying it");
        }
        *worker = Some(handle.spawn(work(self.notifier.clone(), self.shared.clone(), opts.clone())));
        Ok(())
    }
}

/// Every notifier's queue and worker.
pub struct Delivery {
    lanes: Vec<Lane>,
    opts: DeliveryOptions,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery").field("notifiers", &self.names()).field("opts", &self.opts).finish()
    }
}

impl Delivery {
    /// A delivery over built notifiers. Workers start with the first event, on the runtime
    /// that queues it.
    pub fn new(notifiers: Vec<Box<dyn Notifier>>, opts: DeliveryOptions) -> Self {
        let lanes = notifiers
            .into_iter()
            .map(|n| Lane {
                notifier: Arc::from(n),
                shared: Arc::new(Shared {
                    state: Mutex::new(LaneState::default()),
                    wake: Notify::new(),
                    pending: watch::Sender::new(0),
                }),
                worker: Mutex::new(None),
            })
            .collect();
        Self { lanes, opts: DeliveryOptions { queue_capacity: opts.queue_capacity.max(1), ..opts } }
    }

    /// The notifiers' names, in config order.
    pub fn names(&self) -> Vec<String> {
        self.lanes.iter().map(|l| l.notifier.name().to_string()).collect()
    }

    /// The notifiers themselves, in config order (for their preflight).
    pub fn notifiers(&self) -> Vec<Arc<dyn Notifier>> {
        self.lanes.iter().map(|l| l.notifier.clone()).collect()
    }

    /// The number of notifiers.
    pub fn len(&self) -> usize {
        self.lanes.len()
    }

    /// Whether there is no notifier.
    pub fn is_empty(&self) -> bool {
        self.lanes.is_empty()
    }

    /// Queues `event` for every notifier that wants its kind and returns at once; never waits
    /// for a notifier. Returns the notifiers that refused it (each also logged).
    pub fn enqueue(&self, event: &Event) -> Vec<Refusal> {
        let mut refused = Vec::new();
        for lane in &self.lanes {
            let policy = lane.notifier.policy();
            if !policy.wants(event.kind) {
                continue;
            }
            let outcome = lane.ensure_worker(&self.opts).and_then(|()| {
                let mut st = lane.shared.lock();
                if st.queue.len() >= self.opts.queue_capacity {
                    return Err(format!("queue full ({} events waiting)", st.queue.len()));
                }
                st.queue.push_back(Queued { event: event.clone(), deadline: deadline_after(policy.retry_for) });
                lane.shared.publish(&st);
                Ok(())
            });
            match outcome {
                Ok(()) => lane.shared.wake.notify_one(),
                Err(reason) => {
                    give_up(lane.notifier.name(), event, 0, &reason);
                    refused.push(Refusal { notifier: lane.notifier.name().to_string(), reason });
                }
            }
        }
        refused
    }

    /// Events queued or in flight, over every notifier.
    pub fn pending(&self) -> usize {
        self.lanes.iter().map(|l| *l.shared.pending.borrow()).sum()
    }

    /// Waits until every queue is empty or `timeout` has passed, and returns how many events
    /// are still waiting. For a process about to exit; what is left is logged when the delivery
    /// is dropped.
    pub async fn flush(&self, timeout: Duration) -> usize {
        let deadline = deadline_after(timeout);
        for lane in &self.lanes {
            let mut rx = lane.shared.pending.subscribe();
            // A timeout only means the wait is over: what is left is counted below.
            let _ = tokio::time::timeout_at(deadline, rx.wait_for(|n| *n == 0)).await;
        }
        self.pending()
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        for lane in &self.lanes {
            if let Some(h) = lane.worker.lock().unwrap_or_else(PoisonError::into_inner).take() {
                h.abort();
            }
            let mut st = lane.shared.lock();
            let mut left: Vec<Event> = st.current.take().into_iter().collect();
            left.extend(st.queue.drain(..).map(|q| q.event));
            for ev in &left {
                give_up(lane.notifier.name(), ev, 0, "hecate stopped before it could be sent");
            }
        }
    }
}

/// The longest anything is retried or waited for here. Notifier configs are checked to stay far
/// below it; a policy built in code with a larger one (`Duration::MAX`) gets this instead of a
/// clock overflow.
const LONGEST_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Now plus `wait`, at most [`LONGEST_WAIT`] ahead.
fn deadline_after(wait: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(wait.min(LONGEST_WAIT)).unwrap_or(now)
}

/// The one line for an event a notifier did not get.
fn give_up(notifier: &str, event: &Event, tries: u32, why: &str) {
    tracing::warn!(
        notifier,
        event = %event.kind,
        at = %event.at,
        tries,
        error = %why,
        "notification not delivered: {}",
        event.message
    );
}

async fn work(notifier: Arc<dyn Notifier>, shared: Arc<Shared>, opts: DeliveryOptions) {
    loop {
        let Some(item) = shared.take_next() else {
            // A notify_one() between take_next() and here leaves a permit, so nothing is missed.
            shared.wake.notified().await;
            continue;
        };
        deliver(notifier.as_ref(), &item, &opts).await;
        shared.finish_current();
    }
}

/// Tries until the notifier takes the event, the error is one a retry cannot fix, or the next
/// try would start after the event's deadline.
async fn deliver(notifier: &dyn Notifier, item: &Queued, opts: &DeliveryOptions) -> bool {
    let policy = notifier.policy();
    let mut backoff = opts.first_backoff;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let (kind, error) = match tokio::time::timeout(policy.attempt_timeout, notifier.notify(&item.event)).await {
            Ok(Ok(())) => {
                tracing::debug!(notifier = notifier.name(), event = %item.event.kind, tries, "notification delivered");
                return true;
            }
            Ok(Err(e)) => (e.kind, crate::error::error_chain(&e)),
            Err(_) => {
                (ErrorKind::Timeout, format!("no answer within {}", humantime::format_duration(policy.attempt_timeout)))
            }
        };
        let wait = backoff.min(opts.max_backoff);
        let permanent = matches!(kind, ErrorKind::Config | ErrorKind::Unsupported);
        // A wait so long the clock cannot hold its end is past any deadline.
        if permanent || Instant::now().checked_add(wait).is_none_or(|next| next >= item.deadline) {
            give_up(notifier.name(), &item.event, tries, &error);
            return false;
        }
        tracing::info!(
            notifier = notifier.name(),
            event = %item.event.kind,
            tries,
            error = %error,
            retry_in = %humantime::format_duration(wait),
            "notification failed; retrying"
        );
        tokio::time::sleep(wait).await;
        backoff = wait.saturating_mul(2);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::error::BackendError;
    use crate::notify::{DeliveryPolicy, EventKind};

    /// Fails its first `fail_first` tries with `kind`, hangs if `hang`, and counts tries.
    #[derive(Debug)]
    struct Fake {
        name: &'static str,
        fail_first: u32,
        kind: ErrorKind,
        hang: bool,
        tries: Arc<AtomicU32>,
        delivered: Arc<Mutex<Vec<EventKind>>>,
        events: Vec<EventKind>,
        retry_for: Duration,
    }

    impl Fake {
        fn new(name: &'static str) -> Self {
            Self {
                name,
                fail_first: 0,
                kind: ErrorKind::Unreachable,
                hang: false,
                tries: Arc::default(),
                delivered: Arc::default(),
                events: Vec::new(),
                retry_for: Duration::from_secs(60),
            }
        }
    }

    #[async_trait]
    impl Notifier for Fake {
        fn name(&self) -> &str {
            self.name
        }
        async fn notify(&self, event: &Event) -> Result<(), BackendError> {
            let n = self.tries.fetch_add(1, Ordering::SeqCst) + 1;
            if self.hang {
                std::future::pending::<()>().await;
            }
            if n <= self.fail_first {
                return Err(BackendError::new(self.kind, "fake failure"));
            }
            self.delivered.lock().map_err(|_| BackendError::new(ErrorKind::Failed, "poisoned"))?.push(event.kind);
            Ok(())
        }
        fn policy(&self) -> DeliveryPolicy {
            DeliveryPolicy {
                attempt_timeout: Duration::from_secs(5),
                retry_for: self.retry_for,
                events: self.events.clone(),
            }
        }
    }

    fn event(kind: EventKind) -> Event {
        Event::now(kind, "h", "test")
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_backoff_until_delivered() {
        let fake = Fake { fail_first: 3, ..Fake::new("f") };
        let (tries, delivered) = (fake.tries.clone(), fake.delivered.clone());
        let d = Delivery::new(vec![Box::new(fake)], DeliveryOptions::default());
        let t0 = Instant::now();
        assert!(d.enqueue(&event(EventKind::OnBattery)).is_empty());
        assert_eq!(d.flush(Duration::from_secs(60)).await, 0);
        assert_eq!(tries.load(Ordering::SeqCst), 4);
        assert_eq!(*delivered.lock().unwrap_or_else(PoisonError::into_inner), vec![EventKind::OnBattery]);
        // 1 s + 2 s + 4 s of backoff, on the paused clock.
        assert_eq!(t0.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_when_the_retry_time_is_spent() {
        let fake = Fake { fail_first: u32::MAX, ..Fake::new("f") };
        let tries = fake.tries.clone();
        let d = Delivery::new(vec![Box::new(fake)], DeliveryOptions::default());
        d.enqueue(&event(EventKind::OnBattery));
        assert_eq!(d.flush(Duration::from_secs(600)).await, 0);
        // Tries at 0, 1, 3, 7, 15, 31 s; the next would start at 61 s, after the 60 s allowed.
        assert_eq!(tries.load(Ordering::SeqCst), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_time_or_backoff_too_long_for_the_clock_neither_panics_nor_hangs() {
        // Retried as long as a day allows: the failures are retried and the event delivered.
        let fake = Fake { fail_first: 2, retry_for: Duration::MAX, ..Fake::new("f") };
        let (tries, delivered) = (fake.tries.clone(), fake.delivered.clone());
        let opts = DeliveryOptions { max_backoff: Duration::MAX, ..DeliveryOptions::default() };
        let d = Delivery::new(vec![Box::new(fake)], opts);
        assert!(d.enqueue(&event(EventKind::OnBattery)).is_empty());
        assert_eq!(d.flush(Duration::MAX).await, 0);
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        assert_eq!(*delivered.lock().unwrap_or_else(PoisonError::into_inner), vec![EventKind::OnBattery]);

        // A first pause the clock cannot hold ends past any deadline: one try, then given up.
        let fake = Fake { fail_first: u32::MAX, retry_for: Duration::MAX, ..Fake::new("g") };
        let tries = fake.tries.clone();
        let opts =
            DeliveryOptions { first_backoff: Duration::MAX, max_backoff: Duration::MAX, ..DeliveryOptions::default() };
        let d = Delivery::new(vec![Box::new(fake)], opts);
        d.enqueue(&event(EventKind::OnBattery));
        assert_eq!(d.flush(Duration::from_secs(60)).await, 0);
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_config_error_is_not_retried() {
        let fake = Fake { fail_first: u32::MAX, kind: ErrorKind::Config, ..Fake::new("f") };
        let tries = fake.tries.clone();
        let d = Delivery::new(vec![Box::new(fake)], DeliveryOptions::default());
        d.enqueue(&event(EventKind::OnBattery));
        assert_eq!(d.flush(Duration::from_secs(600)).await, 0);
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_notifier_delays_neither_the_caller_nor_the_others() {
        let hung = Fake { hang: true, ..Fake::new("hung") };
        let ok = Fake::new("ok");
        let delivered = ok.delivered.clone();
        let d = Delivery::new(vec![Box::new(hung), Box::new(ok)], DeliveryOptions::default());
        let t0 = Instant::now();
        for kind in [EventKind::ShutdownTriggered, EventKind::StageFinished] {
            assert!(d.enqueue(&event(kind)).is_empty());
        }
        assert_eq!(t0.elapsed(), Duration::ZERO, "enqueue must not wait");
        let left = d.flush(Duration::from_secs(1)).await;
        assert_eq!(left, 2, "both events still with the hung notifier");
        assert_eq!(
            *delivered.lock().unwrap_or_else(PoisonError::into_inner),
            vec![EventKind::ShutdownTriggered, EventKind::StageFinished]
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_refuses_rather_than_waits() {
        let d = Delivery::new(
            vec![Box::new(Fake { hang: true, ..Fake::new("hung") })],
            DeliveryOptions { queue_capacity: 2, ..DeliveryOptions::default() },
        );
        // The worker has not run yet on this single thread: the queue holds exactly two.
        assert!(d.enqueue(&event(EventKind::OnBattery)).is_empty());
        assert!(d.enqueue(&event(EventKind::OnBattery)).is_empty());
        let refused = d.enqueue(&event(EventKind::ShutdownTriggered));
        assert_eq!(refused.len(), 1);
        assert!(refused[0].reason.starts_with("queue full"), "{}", refused[0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_notifier_gets_only_the_kinds_it_wants() {
        let fake = Fake { events: vec![EventKind::ShutdownDone], ..Fake::new("f") };
        let delivered = fake.delivered.clone();
        let d = Delivery::new(vec![Box::new(fake)], DeliveryOptions::default());
        d.enqueue(&event(EventKind::StageFinished));
        d.enqueue(&event(EventKind::ShutdownDone));
        assert_eq!(d.flush(Duration::from_secs(10)).await, 0);
        assert_eq!(*delivered.lock().unwrap_or_else(PoisonError::into_inner), vec![EventKind::ShutdownDone]);
    }

    #[test]
    fn without_an_async_runtime_an_event_is_refused_not_stored() {
        let d = Delivery::new(vec![Box::new(Fake::new("f"))], DeliveryOptions::default());
        let refused = d.enqueue(&event(EventKind::OnBattery));
        assert_eq!(refused.len(), 1);
        assert_eq!(d.pending(), 0);
    }
}
