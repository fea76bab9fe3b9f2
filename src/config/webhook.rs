//! `[webhook]`: the validated settings of the webhook alert sink.

use super::{parse_duration, RawWebhook, Secret};
use std::time::Duration;

/// A validated `[webhook]`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct WebhookConfig {
    /// Endpoint.
    pub url: String,
    /// Body template (see `config/default.toml`).
    pub template: String,
    /// Header name and secret value.
    pub secret: Option<(String, Secret)>,
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
        if let Err(e) = crate::alert::check_template(&raw.template) {
            errors.push(format!("webhook.template: {e}"));
        }
        let secret = if raw.secret_env.is_empty() {
            None
        } else {
            match std::env::var(&raw.secret_env) {
                Ok(v) if !v.is_empty() => Some((raw.secret_header.clone(), Secret::new(v))),
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
