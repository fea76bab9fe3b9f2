//! `/v1/history/...`: the desk's questions answered from the PostgreSQL history (`[store]`), over
//! months of alerts and windows rather than the analytics' last hours.
//!
//! * `GET /v1/history/alerts?instrument=S&from=NS&to=NS&limit=L&offset=O`: alerts in event-time
//!   order (all instruments without `instrument`), paginated (`next_offset`).
//! * `GET /v1/history/alerts/{id}/windows?count=L`: the L windows up to an alert, with their features.
//! * `GET /v1/history/counts?from=NS&to=NS`: alerts per day, detector and instrument.
//! * `GET /v1/history/top?from=NS&to=NS&limit=L`: instruments with the most alerts.
//!
//! Times are ns of event time; `to` is exclusive. Bad parameters are 400, an unknown alert 404, the
//! database unreachable 503.

use super::api::{decode, number, param, ApiError};
use crate::config::StoreConfig;
use lobsentry_operators::features::FEATURE_NAMES;
use postgres::Client;
use serde_json::{json, Value};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The history's connection (opened when first asked, reopened after an error).
pub struct History {
    config: StoreConfig,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("History").field("url", &crate::config::redact_url(&self.config.url)).finish()
    }
}

fn at(ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.min(i64::MAX as u64))
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError { status: "503 Service Unavailable", message: format!("the history database: {e}") }
}

impl History {
    /// The history of `config` (nothing is opened yet).
    pub fn new(config: StoreConfig) -> History {
        History { config, client: Mutex::new(None) }
    }

    fn with_client<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>) -> Result<T, ApiError> {
        let mut slot = self.client.lock().map_err(|_| unavailable("lock poisoned"))?;
        if slot.as_ref().is_none_or(|c| c.is_closed()) {
            let once = StoreConfig { connect_attempts: 1, ..self.config.clone() };
            *slot = Some(super::store::connect(&once).map_err(unavailable)?);
        }
        let client = slot.as_mut().ok_or_else(|| unavailable("no connection"))?;
        f(client).map_err(|e| {
            slot.take();
            unavailable(e)
        })
    }

    /// Answers `/v1/history/{rest}`.
    pub fn answer(&self, rest: &[&str], query: &str) -> Result<Value, ApiError> {
        let from = at(number(query, "from", 0, 0..=u64::MAX)?);
        let to = at(number(query, "to", u64::MAX, 0..=u64::MAX)?);
        match rest {
            ["alerts"] => {
                let limit = number(query, "limit", 100, 1..=1000)? as i64;
                let offset = number(query, "offset", 0, 0..=1_000_000_000)? as i64;
                let instrument = param(query, "instrument");
                let rows = self.with_client(|c| {
                    c.query(
                        "SELECT body FROM alerts WHERE ($1::text IS NULL OR instrument = $1) AND window_end >= $2 \
                         AND window_end < $3 ORDER BY window_end, id LIMIT $4 OFFSET $5",
                        &[&instrument, &from, &to, &limit, &offset],
                    )
                })?;
                let alerts: Vec<Value> = rows.iter().map(|r| r.get::<_, Value>(0)).collect();
                let next = (alerts.len() as i64 == limit).then_some(offset + limit);
                Ok(
                    json!({"count": alerts.len(), "limit": limit, "offset": offset, "next_offset": next, "alerts": alerts}),
                )
            }
            ["alerts", id, "windows"] => {
                let id = decode(id);
                let count = number(query, "count", 10, 1..=1000)? as i64;
                let columns = FEATURE_NAMES.join(", ");
                let (alert, windows) = self.with_client(|c| {
                    let Some(a) =
                        c.query_opt("SELECT body, instrument, window_end FROM alerts WHERE id = $1", &[&id])?
                    else {
                        return Ok((None, Vec::new()));
                    };
                    let (instrument, end): (String, SystemTime) = (a.get(1), a.get(2));
                    let sql = format!(
                        "SELECT (extract(epoch FROM window_end) * 1000000000)::bigint, {columns} FROM window_features \
                         WHERE instrument = $1 AND window_end <= $2 ORDER BY window_end DESC LIMIT $3"
                    );
                    Ok((Some(a.get::<_, Value>(0)), c.query(sql.as_str(), &[&instrument, &end, &count])?))
                })?;
                let Some(alert) = alert else {
                    return Err(ApiError {
                        status: "404 Not Found",
                        message: format!("no alert {id:?} in the history"),
                    });
                };
                let mut list: Vec<Value> = windows
                    .iter()
                    .map(|r| {
                        let features: serde_json::Map<String, Value> = FEATURE_NAMES
                            .iter()
                            .enumerate()
                            .map(|(i, n)| (n.to_string(), json!(r.get::<_, Option<f64>>(i + 1))))
                            .collect();
                        json!({"window_end_ns": r.get::<_, i64>(0), "features": features})
                    })
                    .collect();
                list.reverse();
                Ok(json!({"alert": alert, "windows": list}))
            }
            ["counts"] => {
                let rows = self.with_client(|c| {
                    c.query(
                        "SELECT to_char(date_trunc('day', window_end AT TIME ZONE 'UTC'), 'YYYY-MM-DD'), detector, instrument, \
                         count(*) FROM alerts WHERE window_end >= $1 AND window_end < $2 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
                        &[&from, &to],
                    )
                })?;
                let counts: Vec<Value> = rows
                    .iter()
                    .map(|r| {
                        json!({"day": r.get::<_, String>(0), "detector": r.get::<_, String>(1),
                               "instrument": r.get::<_, String>(2), "alerts": r.get::<_, i64>(3)})
                    })
                    .collect();
                Ok(json!({"counts": counts}))
            }
            ["top"] => {
                let limit = number(query, "limit", 10, 1..=1000)? as i64;
                let rows = self.with_client(|c| {
                    c.query(
                        "SELECT instrument, count(*) FROM alerts WHERE window_end >= $1 AND window_end < $2 \
                         GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT $3",
                        &[&from, &to, &limit],
                    )
                })?;
                let top: Vec<Value> = rows
                    .iter()
                    .map(|r| json!({"instrument": r.get::<_, String>(0), "alerts": r.get::<_, i64>(1)}))
                    .collect();
                Ok(json!({"top": top}))
            }
            _ => Err(ApiError {
                status: "404 Not Found",
                message: "try /v1/history/alerts, /v1/history/alerts/{id}/windows, /v1/history/counts, /v1/history/top"
                    .into(),
            }),
        }
    }
}
