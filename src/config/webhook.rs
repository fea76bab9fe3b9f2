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
        if let Err(e) = check_template(&raw.template) {
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

fn escape(text: &str) -> String {
    let quoted = serde_json::Value::String(text.to_string()).to_string();
    quoted[1..quoted.len() - 1].to_string()
}

/// Fills a webhook template: `{{alert}}` with `alert_json`, each `{{name}}` with its value escaped for
/// use inside a JSON string.
pub fn fill_template(template: &str, alert_json: &str, values: &[(&str, String)]) -> String {
    let mut out = template.replace("{{alert}}", alert_json);
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), &escape(value));
    }
    out
}

/// Fills a plain-text template (email): `{{alert}}` with `alert_json`, each `{{name}}` with its value
/// as is.
pub fn fill_plain(template: &str, alert_json: &str, values: &[(&str, String)]) -> String {
    let mut out = template.replace("{{alert}}", alert_json);
    for (name, value) in values {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    out
}

/// The placeholders a template may use besides `{{alert}}`.
pub const PLACEHOLDERS: [&str; 7] =
    ["instrument", "score", "threshold", "window_start_ns", "window_end_ns", "model", "features"];

/// Fills the template with awkward sample values and checks that the result is JSON.
pub fn check_template(template: &str) -> Result<(), String> {
    let sample: Vec<(&str, String)> = PLACEHOLDERS.iter().map(|p| (*p, format!("{p} \"sample\" \\ 1.0"))).collect();
    let body = fill_template(template, r#"{"instrument":"SAMPLE","score":1.0}"#, &sample);
    serde_json::from_str::<serde_json::Value>(&body)
        .map(|_| ())
        .map_err(|e| format!("{template:?} does not render to JSON ({e}): {body}"))
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
