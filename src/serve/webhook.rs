//! The webhook alert sink: each alert POSTed as JSON (a configurable template, e.g. Slack-compatible),
//! from its own thread so that the dataflow never waits on the network.
//!
//! * Rate limit per instrument, in event time: at most one alert per instrument per
//!   `per-instrument-interval`; the others are counted (`lobsentry_webhook_suppressed_total`).
//! * Connection errors, timeouts, 5xx, 408 and 429 are retried with exponential backoff up to
//!   `max-attempts`; other 4xx answers are not (the request is wrong). Alerts given up on are counted
//!   (`lobsentry_webhook_failed_total`), as are alerts dropped when the queue is full.
//! * A secret read from an environment variable at start-up is sent in a header.

use crate::alert::{render, Alert, AlertSink};
use crate::config::WebhookConfig;
use crate::metrics::Counters;
use lobsentry_operators::event::InstrumentId;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

struct Job {
    body: String,
    attempts: u32,
    due: Instant,
}

/// A running webhook sink.
pub struct Webhook {
    config: WebhookConfig,
    counters: Arc<Counters>,
    tx: Mutex<Option<SyncSender<Job>>>,
    last: Mutex<HashMap<InstrumentId, u64>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    end: Arc<End>,
}

/// When delivery must end, and what it left undelivered.
#[derive(Debug, Default)]
struct End {
    deadline: Mutex<Option<Instant>>,
    abandoned: AtomicU64,
}

impl End {
    fn passed(&self) -> bool {
        self.deadline.lock().ok().and_then(|d| *d).is_some_and(|d| Instant::now() >= d)
    }
}

impl AlertSink for Webhook {
    fn name(&self) -> &str {
        "webhook"
    }

    fn send(&self, alert: &Alert) {
        self.offer(alert);
    }

    fn finish(&self, grace: Duration) -> Result<Option<String>, String> {
        Ok(Webhook::finish(self, grace))
    }
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook").field("url", &self.config.url).finish()
    }
}

impl Webhook {
    /// Starts the delivery thread.
    pub fn start(config: WebhookConfig, counters: Arc<Counters>) -> Result<Webhook, crate::Error> {
        let (tx, rx) = sync_channel::<Job>(config.queue);
        let (c, m) = (config.clone(), counters.clone());
        let end = Arc::new(End::default());
        let e = end.clone();
        let thread = std::thread::Builder::new()
            .name("lobsentry-webhook".into())
            .spawn(move || deliver(c, m, rx, e))
            .map_err(|e| crate::Error::Io(format!("webhook: cannot start its thread: {e}")))?;
        Ok(Webhook {
            config,
            counters,
            tx: Mutex::new(Some(tx)),
            last: Mutex::new(HashMap::new()),
            thread: Mutex::new(Some(thread)),
            end,
        })
    }

    /// Offers an alert: rate-limited per instrument (event time), then queued without blocking.
    pub fn offer(&self, alert: &Alert) {
        if self.config.interval_ns > 0 {
            let Ok(mut last) = self.last.lock() else { return };
            let instrument = alert.instrument_id();
            match last.get(&instrument) {
                Some(&end) if alert.window_end_ns < end.saturating_add(self.config.interval_ns) => {
                    self.counters.metrics.webhook_suppressed.inc();
                    return;
                }
                _ => {
                    last.insert(instrument, alert.window_end_ns);
                }
            }
        }
        let job = Job { body: render(&self.config.template, alert), attempts: 0, due: Instant::now() };
        let sent = match self.tx.lock().as_deref() {
            Ok(Some(tx)) => !matches!(tx.try_send(job), Err(TrySendError::Full(_) | TrySendError::Disconnected(_))),
            _ => false,
        };
        if !sent {
            self.counters.metrics.webhook_dropped.inc();
        }
    }

    /// Stops taking alerts and delivers the queued ones (each up to its attempts) for at most
    /// `grace` (plus one request's timeout); the alerts left are counted as failed and reported.
    pub fn finish(&self, grace: Duration) -> Option<String> {
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
        let left = self.end.abandoned.load(Ordering::Relaxed);
        let failed = self.counters.metrics.webhook_failed.get();
        (failed > 0).then(|| {
            format!(
                "webhook: {failed} alerts not delivered to {} ({} given up after {} attempts or a 4xx answer, \
                 {left} left when the {grace:?} grace period ended)",
                crate::config::redact_url(&self.config.url),
                failed.saturating_sub(left),
                self.config.max_attempts
            )
        })
    }
}

fn deliver(config: WebhookConfig, counters: Arc<Counters>, rx: std::sync::mpsc::Receiver<Job>, end: Arc<End>) {
    let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
    let mut retry: VecDeque<Job> = VecDeque::new();
    let mut open = true;
    while open || !retry.is_empty() {
        if end.passed() {
            let left = retry.len() as u64 + rx.try_iter().count() as u64;
            end.abandoned.fetch_add(left, Ordering::Relaxed);
            counters.metrics.webhook_failed.inc_by(left);
            return;
        }
        let now = Instant::now();
        let wait = retry.iter().map(|j| j.due.saturating_duration_since(now)).min().unwrap_or(Duration::from_secs(1));
        let mut job = if open {
            match rx.recv_timeout(wait) {
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
        let mut request = agent.post(&config.url).set("Content-Type", "application/json");
        if let Some((header, value)) = &config.secret {
            request = request.set(header, value.expose());
        }
        let retryable = match request.send_string(&job.body) {
            Ok(_) => {
                counters.metrics.webhook_sent.inc();
                continue;
            }
            Err(ureq::Error::Status(code, _)) => code >= 500 || code == 408 || code == 429,
            Err(ureq::Error::Transport(_)) => true,
        };
        if retryable && job.attempts < config.max_attempts {
            counters.metrics.webhook_retries.inc();
            let pause = config.backoff.saturating_mul(1 << (job.attempts - 1).min(16)).min(Duration::from_secs(30));
            job.due = Instant::now() + pause;
            retry.push_back(job);
        } else {
            counters.metrics.webhook_failed.inc();
        }
    }
}
