//! The network services of a run: the query API, the metrics / health endpoints, the webhook and
//! email alert sinks, and the PostgreSQL history.

pub mod api;
pub mod delivery;
pub mod email;
pub mod history;
pub mod http;
pub mod metrics;
pub mod store;
pub mod webhook;

use crate::alert::AlertSink;
use crate::config::Config;
use crate::metrics::Counters;
use std::sync::Arc;

/// The alert sinks a configuration asks for beyond the alerts file (started here: the webhook's
/// delivery thread).
pub fn alert_sinks(config: &Config, counters: &Arc<Counters>) -> Result<Vec<Arc<dyn AlertSink>>, crate::Error> {
    let mut sinks: Vec<Arc<dyn AlertSink>> = Vec::new();
    if let Some(w) = &config.webhook {
        sinks.push(Arc::new(webhook::Webhook::start(w.clone(), counters.clone())?));
    }
    if let Some(e) = &config.email {
        sinks.push(Arc::new(email::Email::start(e.clone(), counters.clone())?));
    }
    if let Some(s) = &config.store {
        sinks.push(Arc::new(store::Store::start(s.clone(), counters.clone())?));
    }
    Ok(sinks)
}
