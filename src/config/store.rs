//! `[store]`: the validated settings of the PostgreSQL history.

use super::{parse_duration, RawStore, Secret};
use std::time::Duration;

/// A validated `[store]`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StoreConfig {
    /// `postgresql://user@host:port/database` (no password).
    pub url: String,
    /// The password, from the environment.
    pub password: Option<Secret>,
    /// Keep every score too.
    pub scores: bool,
    /// Keep every window's features too.
    pub features: bool,
    /// Rows waiting for the writer at most (then the dataflow waits).
    pub queue: usize,
    /// Rows per insert.
    pub batch: usize,
    /// Connection attempts at start.
    pub connect_attempts: u32,
    /// Pause between them (and first pause of the retries).
    pub connect_backoff: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
}

impl StoreConfig {
    /// Validates `raw`, adding problems to `errors`; `None` when the store is off (or invalid).
    pub fn from_raw(raw: &RawStore, errors: &mut Vec<String>) -> Option<StoreConfig> {
        if raw.url.is_empty() {
            return None;
        }
        let before = errors.len();
        if !(raw.url.starts_with("postgresql://") || raw.url.starts_with("postgres://")) {
            errors.push(format!("store.url: {:?} is not a postgresql:// URL", super::redact_url(&raw.url)));
        }
        if raw.url.split('@').next().is_some_and(|userinfo| userinfo.matches(':').count() > 1) {
            errors.push(
                "store.url: put the password in the environment variable named by store.password-env, not in the URL"
                    .into(),
            );
        }
        let password = if raw.password_env.is_empty() {
            None
        } else {
            match std::env::var(&raw.password_env) {
                Ok(v) if !v.is_empty() => Some(Secret::new(v)),
                _ => {
                    errors.push(format!("store.password-env: environment variable {} is not set", raw.password_env));
                    None
                }
            }
        };
        for (key, v) in [("queue", raw.queue), ("batch", raw.batch), ("connect-attempts", raw.connect_attempts)] {
            if v < 1 {
                errors.push(format!("store.{key}: {v} is not positive"));
            }
        }
        let mut duration = |key: &str, text: &str| {
            parse_duration(text).map_err(|e| errors.push(format!("store.{key}: {e}"))).unwrap_or_default()
        };
        let backoff = duration("connect-backoff", &raw.connect_backoff);
        let timeout = duration("connect-timeout", &raw.connect_timeout);
        (errors.len() == before).then(|| StoreConfig {
            url: raw.url.clone(),
            password,
            scores: raw.scores,
            features: raw.features,
            queue: raw.queue.max(1) as usize,
            batch: raw.batch.clamp(1, 4000) as usize,
            connect_attempts: raw.connect_attempts.max(1) as u32,
            connect_backoff: backoff.max(Duration::from_millis(10)),
            connect_timeout: timeout.max(Duration::from_millis(100)),
        })
    }
}
