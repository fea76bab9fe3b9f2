//! The webhook alert sink: each alert POSTed as JSON (a configurable template, e.g. Slack-compatible),
//! from its own thread so that the dataflow never waits on the network.
//!
//! * Rate limit per instrument, in event time: at most one alert per instrument per
//!   `per-instrument-interval`; the others are counted (`lobsentry_webhook_suppressed_total`).
//! * Connection errors, timeouts, 5xx, 408 and 429 are retried with exponential backoff up to
//!   `max-attempts`; other 4xx answers are not (the request is wrong). Alerts given up on are counted
//!   (`lobsentry_webhook_failed_total`), as are alerts dropped when the queue is full.
//! * A secret read from an environment variable at start-up is sent in a header.

use crate::config::{parse_duration, RawWebhook};
use crate::pipeline::Counters;
use lobsentry_operators::detect::WindowScore;
use lobsentry_operators::event::InstrumentId;
use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A validated `[webhook]`.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Endpoint.
    pub url: String,
    /// Body template (see `config/default.toml`).
    pub template: String,
    /// Header name and secret value.
    pub secret: Option<(String, String)>,
    /// Per-instrument rate limit in event time (0 = none).
    pub interval_ns: u64,
    /// Attempts per alert.
    pub max_attempts: u32,
    /// First retry pause (doubles, at most 30 s).
    pub backoff: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Queue capacity.
    pub queue: usize,
}

impl WebhookConfig {
    /// Validates `raw`, adding problems to `errors`; `None` when the webhook is off (or invalid).
    pub fn from_raw(raw: &RawWebhook, errors: &mut Vec<String>) -> Option<WebhookConfig> {
        if raw.url.is_empty() {
            return None;
        }
        let before = errors.len();
        if !(raw.url.starts_with("http://") || raw.url.starts_with("https://")) {
            errors.push(format!("webhook.url: {:?} is not an http:// or https:// URL", raw.url));
        }
        let mut duration = |key: &str, text: &str| {
            parse_duration(text).map_err(|e| errors.push(format!("webhook.{key}: {e}"))).unwrap_or_default()
        };
        let interval = duration("per-instrument-interval", &raw.per_instrument_interval);
        let backoff = duration("backoff", &raw.backoff);
        let timeout = duration("timeout", &raw.timeout);
        if raw.max_attempts < 1 {
            errors.push(format!("webhook.max-attempts: {} is not positive", raw.max_attempts));
        }
        if raw.queue < 1 {
            errors.push(format!("webhook.queue: {} is not positive", raw.queue));
        }
        if let Err(e) = check_template(&raw.template) {
            errors.push(format!("webhook.template: {e}"));
        }
        let secret = if raw.secret_env.is_empty() {
            None
        } else {
            match std::env::var(&raw.secret_env) {
                Ok(v) if !v.is_empty() => Some((raw.secret_header.clone(), v)),
                _ => {
                    errors.push(format!(
                        "webhook.secret-env: environment variable {} is not set (export it, or set secret-env = \"\")",
                        raw.secret_env
                    ));
                    None
                }
            }
        };
        (errors.len() == before).then(|| WebhookConfig {
            url: raw.url.clone(),
            template: raw.template.clone(),
            secret,
            interval_ns: interval.as_nanos() as u64,
            max_attempts: raw.max_attempts.max(1) as u32,
            backoff: backoff.max(Duration::from_millis(1)),
            timeout: timeout.max(Duration::from_millis(10)),
            queue: raw.queue.max(1) as usize,
        })
    }
}

fn escape(text: &str) -> String {
    let quoted = serde_json::Value::String(text.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// The body for `alert`: the template with its placeholders filled in.
pub fn render(template: &str, alert: &WindowScore) -> String {
    let features = alert.top_features.iter().map(|(n, z)| format!("{n} ({z:.2})")).collect::<Vec<_>>().join(", ");
    template
        .replace("{{alert}}", &crate::pipeline::alert_json(alert).to_string())
        .replace("{{instrument}}", &escape(alert.instrument.as_str()))
        .replace("{{score}}", &format!("{:.4}", alert.score))
        .replace("{{threshold}}", &format!("{:.4}", alert.threshold))
        .replace("{{window_start_ns}}", &alert.window.start.to_string())
        .replace("{{window_end_ns}}", &alert.window.end.to_string())
        .replace("{{model}}", &escape(&alert.model))
        .replace("{{features}}", &escape(&features))
}

/// Renders the template for a sample alert and checks that the result is JSON.
pub fn check_template(template: &str) -> Result<(), String> {
    let sample = WindowScore {
        instrument: InstrumentId::new("SAMPLE").unwrap_or_default(),
        window: lobsentry_operators::window::Window { start: 0, end: 1 },
        score: 1.0,
        threshold: 0.5,
        is_anomaly: true,
        top_features: vec![("spread \"mean\"".into(), 3.0)],
        model: "m".into(),
        p_value: Some(1e-6),
        detectors: vec![("zscore-baseline".into(), 5.0)],
    };
    let body = render(template, &sample);
    serde_json::from_str::<serde_json::Value>(&body)
        .map(|_| ())
        .map_err(|e| format!("{template:?} does not render to JSON ({e}): {body}"))
}

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
        let thread = std::thread::Builder::new()
            .name("lobsentry-webhook".into())
            .spawn(move || deliver(c, m, rx))
            .map_err(|e| crate::Error::Io(format!("webhook: cannot start its thread: {e}")))?;
        Ok(Webhook {
            config,
            counters,
            tx: Mutex::new(Some(tx)),
            last: Mutex::new(HashMap::new()),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Offers an alert: rate-limited per instrument (event time), then queued without blocking.
    pub fn offer(&self, alert: &WindowScore) {
        if self.config.interval_ns > 0 {
            let Ok(mut last) = self.last.lock() else { return };
            match last.get(&alert.instrument) {
                Some(&end) if alert.window.end < end.saturating_add(self.config.interval_ns) => {
                    self.counters.metrics.webhook_suppressed.inc();
                    return;
                }
                _ => {
                    last.insert(alert.instrument, alert.window.end);
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

    /// Stops taking alerts and waits for the queued ones (each up to its attempts).
    pub fn finish(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

fn deliver(config: WebhookConfig, counters: Arc<Counters>, rx: std::sync::mpsc::Receiver<Job>) {
    let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
    let mut retry: VecDeque<Job> = VecDeque::new();
    let mut open = true;
    while open || !retry.is_empty() {
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
            std::thread::sleep(wait);
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
            request = request.set(header, value);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_to_json() {
        assert!(check_template("{{alert}}").is_ok());
        assert!(check_template(r#"{"text": "{{instrument}} score {{score}}: {{features}}"}"#).is_ok());
        assert!(check_template(r#"{"text": {{instrument}}}"#).is_err());
    }
}
