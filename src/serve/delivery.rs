//! Delivery of alerts to a remote endpoint (the webhook, email) from a thread of its own, so the
//! dataflow never waits on the network:
//!
//! * a per-instrument rate limit in event time (at most one alert per instrument per interval; the
//!   others are counted as suppressed);
//! * a bounded queue (alerts offered while it is full are counted as dropped);
//! * retries with exponential backoff (at most 30 s) for errors the sender calls transient, up to
//!   `max_attempts`; alerts given up on are counted as failed;
//! * at the end, a grace period: what is still queued when it ends is counted as failed and reported.

use crate::alert::Alert;
use lobsentry_operators::event::InstrumentId;
use prometheus::IntCounter;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How one attempt went.
#[derive(Debug, PartialEq, Eq)]
pub enum Attempt {
    /// Delivered.
    Sent,
    /// Failed in a way worth retrying (connection, timeout, server busy).
    Transient(String),
    /// Failed for good (the request is wrong).
    Permanent(String),
}

/// The delivery policy.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// Per-instrument rate limit in event time (0 = none).
    pub interval_ns: u64,
    /// Attempts per alert.
    pub max_attempts: u32,
    /// First retry pause (doubles, at most 30 s).
    pub backoff: Duration,
    /// Queue capacity.
    pub queue: usize,
}

/// The counters of one sink (registered by the caller).
#[derive(Clone, Debug)]
pub struct DeliveryCounters {
    /// Delivered.
    pub sent: IntCounter,
    /// Given up on.
    pub failed: IntCounter,
    /// Attempts retried.
    pub retries: IntCounter,
    /// Not sent because of the rate limit.
    pub suppressed: IntCounter,
    /// Dropped because the queue was full.
    pub dropped: IntCounter,
}

struct Job {
    body: String,
    attempts: u32,
    due: Instant,
}

/// When delivery must end, and what it left undelivered.
#[derive(Debug, Default)]
struct End {
    deadline: Mutex<Option<Instant>>,
    abandoned: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl End {
    fn passed(&self) -> bool {
        self.deadline.lock().ok().and_then(|d| *d).is_some_and(|d| Instant::now() >= d)
    }
}

/// A running delivery thread.
pub struct Delivery {
    policy: Policy,
    counters: DeliveryCounters,
    tx: Mutex<Option<SyncSender<Job>>>,
    last: Mutex<HashMap<InstrumentId, u64>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    end: Arc<End>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery").field("policy", &self.policy).finish()
    }
}

/// What [`Delivery::finish`] reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Finished {
    /// Alerts given up on in the whole run (including `left`).
    pub failed: u64,
    /// Alerts still queued when the grace period ended.
    pub left: u64,
    /// The last error an attempt met.
    pub last_error: Option<String>,
}

impl Delivery {
    /// Starts a thread named `name` that delivers with `send`.
    pub fn start(
        name: &str,
        policy: Policy,
        counters: DeliveryCounters,
        send: impl FnMut(&str) -> Attempt + Send + 'static,
    ) -> std::io::Result<Delivery> {
        let (tx, rx) = sync_channel::<Job>(policy.queue.max(1));
        let end = Arc::new(End::default());
        let (e, c) = (end.clone(), counters.clone());
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || deliver(policy, c, rx, e, send))?;
        Ok(Delivery {
            policy,
            counters,
            tx: Mutex::new(Some(tx)),
            last: Mutex::new(HashMap::new()),
            thread: Mutex::new(Some(thread)),
            end,
        })
    }

    /// Offers an alert's message: rate-limited per instrument (event time), then queued without
    /// blocking.
    pub fn offer(&self, alert: &Alert, body: impl FnOnce() -> String) {
        if self.policy.interval_ns > 0 {
            let Ok(mut last) = self.last.lock() else { return };
            let instrument = alert.instrument_id();
            match last.get(&instrument) {
                Some(&end) if alert.window_end_ns < end.saturating_add(self.policy.interval_ns) => {
                    self.counters.suppressed.inc();
                    return;
                }
                _ => {
                    last.insert(instrument, alert.window_end_ns);
                }
            }
        }
        let job = Job { body: body(), attempts: 0, due: Instant::now() };
        let sent = match self.tx.lock().as_deref() {
            Ok(Some(tx)) => !matches!(tx.try_send(job), Err(TrySendError::Full(_) | TrySendError::Disconnected(_))),
            _ => false,
        };
        if !sent {
            self.counters.dropped.inc();
        }
    }

    /// Stops taking alerts and delivers the queued ones (each up to its attempts) for at most
    /// `grace` (plus one attempt's timeout); what is left is counted as failed.
    pub fn finish(&self, grace: Duration) -> Finished {
        if let Ok(mut d) = self.end.deadline.lock() {
            *d = Some(Instant::now() + grace);
        }
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
        Finished {
            failed: self.counters.failed.get(),
            left: self.end.abandoned.load(Ordering::Relaxed),
            last_error: self.end.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

fn deliver(
    policy: Policy,
    counters: DeliveryCounters,
    rx: Receiver<Job>,
    end: Arc<End>,
    mut send: impl FnMut(&str) -> Attempt,
) {
    let mut retry: VecDeque<Job> = VecDeque::new();
    let mut open = true;
    while open || !retry.is_empty() {
        if end.passed() {
            let left = retry.len() as u64 + rx.try_iter().count() as u64;
            end.abandoned.fetch_add(left, Ordering::Relaxed);
            counters.failed.inc_by(left);
            return;
        }
        let now = Instant::now();
        let wait = retry.iter().map(|j| j.due.saturating_duration_since(now)).min().unwrap_or(Duration::from_secs(1));
        let mut job = if open {
            match rx.recv_timeout(wait.min(Duration::from_millis(200))) {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            }
        } else {
            std::thread::sleep(wait.min(Duration::from_millis(100)));
            None
        };
        if job.is_none() {
            let now = Instant::now();
            if let Some(i) = retry.iter().position(|j| j.due <= now) {
                job = retry.remove(i);
            }
        }
        let Some(mut job) = job else { continue };
        job.attempts += 1;
        let attempt = send(&job.body);
        if let (Attempt::Transient(e) | Attempt::Permanent(e), Ok(mut slot)) = (&attempt, end.last_error.lock()) {
            *slot = Some(e.clone());
        }
        match attempt {
            Attempt::Sent => counters.sent.inc(),
            Attempt::Transient(_) if job.attempts < policy.max_attempts => {
                counters.retries.inc();
                let pause = policy.backoff.saturating_mul(1 << (job.attempts - 1).min(16)).min(Duration::from_secs(30));
                job.due = Instant::now() + pause;
                retry.push_back(job);
            }
            Attempt::Transient(_) | Attempt::Permanent(_) => counters.failed.inc(),
        }
    }
}
