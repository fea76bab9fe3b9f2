//! The webhook alert sink: each alert POSTed as JSON (a configurable template, e.g. Slack-compatible),
//! from its own thread so that the dataflow never waits on the network.
//!
//! * Rate limit per instrument, in event time: at most one alert per instrument per
//!   `per-instrument-interval`; the others are counted (`lobsentry_webhook_suppressed_total`).
//! * Connection errors, timeouts, 5xx, 408 and 429 are retried with exponential backoff up to
//!   `max-attempts`; other 4xx answers are not (the request is wrong). Alerts given up on are counted
//!   (`lobsentry_webhook_failed_total`), as are alerts dropped when the queue is full.
//! * A secret read from an environment variable at start-up is sent in a header.

use super::delivery::{Attempt, Delivery, DeliveryCounters, Policy};
use crate::alert::{render, Alert, AlertSink};
use crate::config::WebhookConfig;
use crate::metrics::Counters;
use std::sync::Arc;
use std::time::Duration;

/// A running webhook sink.
#[derive(Debug)]
pub struct Webhook {
    config: WebhookConfig,
    delivery: Delivery,
}

impl Webhook {
    /// Starts the delivery thread.
    pub fn start(config: WebhookConfig, counters: Arc<Counters>) -> Result<Webhook, crate::Error> {
        let m = &counters.metrics;
        let tallies = DeliveryCounters {
            sent: m.webhook_sent.clone(),
            failed: m.webhook_failed.clone(),
            retries: m.webhook_retries.clone(),
            suppressed: m.webhook_suppressed.clone(),
            dropped: m.webhook_dropped.clone(),
        };
        let policy = Policy {
            interval_ns: config.interval_ns,
            max_attempts: config.max_attempts,
            backoff: config.backoff,
            queue: config.queue,
        };
        let agent = ureq::AgentBuilder::new().timeout(config.timeout).build();
        let c = config.clone();
        let send = move |body: &str| {
            let mut request = agent.post(&c.url).set("Content-Type", "application/json");
            if let Some((header, value)) = &c.secret {
                request = request.set(header, value.expose());
            }
            match request.send_string(body) {
                Ok(_) => Attempt::Sent,
                Err(ureq::Error::Status(code, _)) if code >= 500 || code == 408 || code == 429 => {
                    Attempt::Transient(format!("HTTP {code}"))
                }
                Err(ureq::Error::Status(code, _)) => Attempt::Permanent(format!("HTTP {code}")),
                // The URL's path may be the secret (Slack-style hooks): never in a message.
                Err(ureq::Error::Transport(t)) => {
                    Attempt::Transient(t.to_string().replace(&c.url, &crate::config::redact_url(&c.url)))
                }
            }
        };
        let delivery = Delivery::start("lobsentry-webhook", policy, tallies, send)
            .map_err(|e| crate::Error::Io(format!("webhook: cannot start its thread: {e}")))?;
        Ok(Webhook { config, delivery })
    }

    /// Offers an alert: rate-limited per instrument (event time), then queued without blocking.
    pub fn offer(&self, alert: &Alert) {
        self.delivery.offer(alert, || render(&self.config.template, alert));
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
        let done = self.delivery.finish(grace);
        Ok((done.failed > 0).then(|| {
            format!(
                "webhook: {} alerts not delivered to {} ({} given up after {} attempts or a 4xx answer, \
                 {} left when the {grace:?} grace period ended); last error: {}",
                done.failed,
                crate::config::redact_url(&self.config.url),
                done.failed.saturating_sub(done.left),
                self.config.max_attempts,
                done.left,
                done.last_error.as_deref().unwrap_or("none")
            )
        }))
    }
}
