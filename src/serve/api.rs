//! The HTTP JSON query API over the analytics dataflow.
//!
//! A request is parsed and validated here, then handed to this process's first worker through the
//! [`QueryHub`]; the worker inserts it into the dataflow's query collection
//! ([`QueryDriver`](lobsentry_operators::analytics::queries::QueryDriver)), and the rows the dataflow
//! computes come back here to be rendered. Every answer states the market clock and logical time it
//! reflects. Any process of a cluster answers for every instrument: the query travels through the
//! dataflow to whichever worker holds the data.

use crate::error::Error;
use crate::metrics::Counters;
use crate::runtime::query::{QueryHub, Reply};
use crate::serve::http::{HttpServer, Limits, Response};
use lobsentry_operators::analytics::queries::Answer;
use lobsentry_operators::analytics::{
    stat_hours, trade_minutes, AnalyticsSpec, Query, Row, Volume, NS_PER_HOUR, NS_PER_MINUTE,
};
use lobsentry_operators::event::{InstrumentId, Price, Qty};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The running API server; stops when dropped.
#[derive(Debug)]
pub struct ApiServer(HttpServer);

struct Shared {
    hub: Arc<QueryHub>,
    counters: Arc<Counters>,
    spec: AnalyticsSpec,
    timeout: Duration,
    history: Option<super::history::History>,
}

impl ApiServer {
    /// Binds `addr` and serves queries through `hub`: at most 64 connections at a time, each
    /// waiting for its answer on a bounded pool of threads.
    pub fn start(
        addr: SocketAddr,
        hub: Arc<QueryHub>,
        counters: Arc<Counters>,
        spec: AnalyticsSpec,
        timeout: Duration,
        history: Option<super::history::History>,
    ) -> Result<ApiServer, Error> {
        let shared = Shared { hub, counters, spec, timeout, history };
        let handler = Arc::new(move |method: &str, target: &str| handle(method, target, &shared));
        let limits = Limits { blocking: true, ..Limits::default() };
        HttpServer::start(addr, "lobsentry-api", limits, handler).map(ApiServer).map_err(|e| {
            Error::Io(format!("analytics API: cannot listen on {addr}: {e} (set analytics.address or --api-addr)"))
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.0.addr()
    }
}

/// An HTTP error answer.
#[derive(Debug, PartialEq)]
pub struct ApiError {
    /// Status line, e.g. "400 Bad Request".
    pub status: &'static str,
    /// What went wrong.
    pub message: String,
}

pub(crate) fn bad(message: impl Into<String>) -> ApiError {
    ApiError { status: "400 Bad Request", message: message.into() }
}

/// Percent-decodes a URL component (`%20` -> space); malformed escapes stay as they are.
pub(crate) fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) fn param(query: &str, name: &str) -> Option<String> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| decode(k) == name).map(|(_, v)| decode(v))
}

pub(crate) fn number(
    query: &str,
    name: &str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ApiError> {
    let Some(text) = param(query, name) else { return Ok(default) };
    let value: u64 = text.parse().map_err(|_| bad(format!("{name}={text:?} is not a non-negative integer")))?;
    if !range.contains(&value) {
        return Err(bad(format!("{name}={value} is out of range {}..={}", range.start(), range.end())));
    }
    Ok(value)
}

/// The `limit` of `/v1/anomalies`: the most recent anomalies to return (default 100).
fn anomaly_limit(query: &str) -> Result<usize, ApiError> {
    Ok(number(query, "limit", 100, 1..=u64::MAX)? as usize)
}

/// Parses a request line's method and target into a query (or the OpenAPI document).
pub fn route(method: &str, target: &str, spec: &AnalyticsSpec) -> Result<Option<Query>, ApiError> {
    if method != "GET" {
        return Err(ApiError {
            status: "405 Method Not Allowed",
            message: format!("{method} is not supported: use GET"),
        });
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let retention_minutes = (spec.retention_ns / NS_PER_MINUTE).max(1);
    let retention_hours = spec.retention_ns.div_ceil(NS_PER_HOUR).max(1);
    let instrument = |sym: &str| {
        let sym = decode(sym);
        InstrumentId::new(&sym).map_err(|e| bad(format!("instrument {sym:?}: {e}")))
    };
    match segments.as_slice() {
        ["v1", "openapi.json"] => Ok(None),
        ["v1", "instruments", sym, "price"] => Ok(Some(Query::Price { instrument: instrument(sym)? })),
        ["v1", "instruments", sym, "trades"] => Ok(Some(Query::Trades {
            instrument: instrument(sym)?,
            minutes: number(query, "minutes", 5, 1..=retention_minutes)?,
        })),
        ["v1", "top-volume"] => {
            Ok(Some(Query::TopVolume { n: number(query, "n", 10, 1..=spec.top_max as u64)? as usize }))
        }
        ["v1", "hourly-stats"] => Ok(Some(Query::HourlyStats {
            hours: number(query, "hours", retention_hours.min(24), 1..=retention_hours)?,
            instrument: None,
        })),
        ["v1", "instruments", sym, "hourly-stats"] => Ok(Some(Query::HourlyStats {
            hours: number(query, "hours", retention_hours.min(24), 1..=retention_hours)?,
            instrument: Some(instrument(sym)?),
        })),
        ["v1", "anomalies"] => {
            anomaly_limit(query)?;
            Ok(Some(Query::Anomalies { since_ns: number(query, "since", 0, 0..=u64::MAX)? }))
        }
        _ => Err(ApiError {
            status: "404 Not Found",
            message: format!("no such endpoint {path:?}: see /v1/openapi.json"),
        }),
    }
}

fn dollars(p: Price) -> f64 {
    p.as_f64()
}

fn level(l: Option<(Price, Qty)>) -> Value {
    match l {
        Some((p, q)) => json!({"price": dollars(p), "price_ticks": p.0, "size": q}),
        None => Value::Null,
    }
}

fn volume(v: &Volume) -> Value {
    json!({
        "trades": v.trades,
        "shares": v.shares,
        "vwap": v.vwap_ticks().map(|t| t / 10_000.0),
    })
}

/// Renders an answer as the endpoint's JSON (or a 404 for an instrument without data).
pub fn render(query: &Query, answer: &Answer, target: &str) -> Result<Value, ApiError> {
    let clock = answer.rows.iter().find_map(|r| if let Row::Clock(c) = r { Some(*c) } else { None });
    let watermark = json!({
        "market_clock_ns": clock,
        "query_time_ns": answer.time,
        "input_complete": answer.input_complete,
    });
    let body = match query {
        Query::Price { instrument } => {
            let Some(p) = answer.rows.iter().find_map(|r| if let Row::Price(p) = r { Some(*p) } else { None }) else {
                return Err(ApiError {
                    status: "404 Not Found",
                    message: match clock {
                        Some(ns) => format!(
                            "no data for instrument {} as of market clock {} UTC ({ns} ns)",
                            instrument.as_str(),
                            crate::summary::clock(ns)
                        ),
                        None => format!("no data for instrument {}: the market has no events yet", instrument.as_str()),
                    },
                });
            };
            json!({
                "instrument": instrument.as_str(),
                "price": p.trade.and_then(|(_, v)| v.vwap_ticks()).map(|t| t / 10_000.0),
                "last_trade_tick_end_ns": p.trade.map(|(t, _)| t),
                "last_trade_tick": p.trade.map(|(_, v)| volume(&v)),
                "bid": p.quote.map_or(Value::Null, |(_, (b, _))| level(b)),
                "ask": p.quote.map_or(Value::Null, |(_, (_, a))| level(a)),
                "quote_tick_end_ns": p.quote.map(|(t, _)| t),
                "watermark": watermark,
            })
        }
        Query::Trades { instrument, minutes } => {
            let range = trade_minutes(clock.unwrap_or(0), *minutes);
            let mut total = Volume::default();
            let mut per_minute = Vec::new();
            for r in &answer.rows {
                if let Row::Minute(m, v) = r {
                    total.trades += v.trades;
                    total.shares += v.shares;
                    total.notional += v.notional;
                    per_minute
                        .push(json!({"minute_start_ns": m * NS_PER_MINUTE, "trades": v.trades, "shares": v.shares}));
                }
            }
            json!({
                "instrument": instrument.as_str(),
                "minutes": minutes,
                "from_ns": range.start * NS_PER_MINUTE,
                "to_ns": range.end * NS_PER_MINUTE,
                "trades": total.trades,
                "shares": total.shares,
                "vwap": total.vwap_ticks().map(|t| t / 10_000.0),
                "per_minute": per_minute,
                "watermark": watermark,
            })
        }
        Query::TopVolume { n } => {
            let mut rows: Vec<(usize, InstrumentId, Volume)> = answer
                .rows
                .iter()
                .filter_map(|r| if let Row::Top(k, i, v) = r { Some((*k, *i, *v)) } else { None })
                .collect();
            rows.sort();
            json!({
                "n": n,
                "instruments": rows.iter().map(|(rank, i, v)| json!({
                    "rank": rank + 1, "instrument": i.as_str(), "trades": v.trades, "shares": v.shares,
                    "vwap": v.vwap_ticks().map(|t| t / 10_000.0),
                })).collect::<Vec<_>>(),
                "watermark": watermark,
            })
        }
        Query::HourlyStats { hours, instrument } => {
            let c = clock.unwrap_or(0);
            let present: std::collections::BTreeMap<u64, Volume> = answer
                .rows
                .iter()
                .filter_map(|r| if let Row::Hour(h, v) = r { Some((*h, *v)) } else { None })
                .collect();
            let list: Vec<Value> = if clock.is_none() {
                Vec::new()
            } else {
                stat_hours(c, *hours)
                    .map(|h| {
                        let start = h * NS_PER_HOUR;
                        let complete = start + NS_PER_HOUR <= c;
                        match present.get(&h) {
                            Some(v) => json!({"hour_start_ns": start, "missing": false, "complete": complete,
                                "trades": v.trades, "shares": v.shares, "vwap": v.vwap_ticks().map(|t| t / 10_000.0)}),
                            None => json!({"hour_start_ns": start, "missing": true, "complete": complete,
                                "trades": 0, "shares": 0, "vwap": null}),
                        }
                    })
                    .collect()
            };
            let mut body = json!({"hours": list, "watermark": watermark});
            if let Some(i) = instrument {
                body["instrument"] = json!(i.as_str());
            }
            body
        }
        Query::Anomalies { since_ns } => {
            let limit = anomaly_limit(target.split_once('?').map_or("", |(_, q)| q)).unwrap_or(100);
            let mut list: Vec<&lobsentry_operators::analytics::AlertRecord> =
                answer.rows.iter().filter_map(|r| if let Row::Anomaly(a) = r { Some(a) } else { None }).collect();
            list.sort();
            let skip = list.len().saturating_sub(limit);
            let items: Vec<Value> =
                list[skip..].iter().map(|a| serde_json::from_str(&a.body).unwrap_or(Value::Null)).collect();
            json!({"since_ns": since_ns, "count": list.len(), "anomalies": items, "watermark": watermark})
        }
    };
    Ok(body)
}

/// The OpenAPI 3 description of the API.
pub fn openapi() -> Value {
    let watermark = json!({"type": "object", "description": "What the answer reflects: the market clock (end of the latest analytics tick with any event, ns), the logical time of the query, and whether the input had ended.", "properties": {
        "market_clock_ns": {"type": ["integer", "null"]}, "query_time_ns": {"type": "integer"}, "input_complete": {"type": "boolean"}}});
    let error = json!({"description": "Bad request (4xx) or no answer in time (503)", "content": {"application/json": {"schema": {"type": "object", "properties": {"error": {"type": "string"}}}}}});
    let ok = |description: &str| json!({"200": {"description": description, "content": {"application/json": {"schema": {"type": "object", "properties": {"watermark": watermark.clone()}}}}}, "400": error.clone(), "404": error.clone(), "503": error.clone()});
    let int = |name: &str, description: &str| json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "integer", "minimum": 0}});
    let sym = json!({"name": "sym", "in": "path", "required": true, "schema": {"type": "string"}});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "lobsentry analytics", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Market analytics maintained by differential dataflow. Prices in dollars; times in ns of event time."},
        "paths": {
            "/v1/instruments/{sym}/price": {"get": {"summary": "Latest price (VWAP of the last tick with trades) and best bid/ask",
                "parameters": [sym.clone()], "responses": ok("Latest price")}},
            "/v1/instruments/{sym}/trades": {"get": {"summary": "Trades over the last N minutes, the current minute excluded",
                "parameters": [sym, int("minutes", "N (default 5)")], "responses": ok("Trades and volume, per minute")}},
            "/v1/top-volume": {"get": {"summary": "Top N instruments by shares traded over the sliding window (1 h)",
                "parameters": [int("n", "N (default 10)")], "responses": ok("Ranking")}},
            "/v1/hourly-stats": {"get": {"summary": "Market-wide totals of the last H hours, hours without data listed as missing",
                "parameters": [int("hours", "H (default 24)")], "responses": ok("Hours")}},
            "/v1/instruments/{sym}/hourly-stats": {"get": {"summary": "One instrument's totals of the last H hours, hours without trades listed as missing",
                "parameters": [sym.clone(), int("hours", "H (default 24)")], "responses": ok("Hours")}},
            "/v1/anomalies": {"get": {"summary": "Anomalies whose window ended at or after `since` (ns of event time)",
                "parameters": [int("since", "event time, ns (default 0)"), int("limit", "most recent L (default 100)")], "responses": ok("Anomalies")}},
            "/v1/history/alerts": {"get": {"summary": "Alerts from the PostgreSQL history ([store]), in event-time order, paginated",
                "parameters": [
                    {"name": "instrument", "in": "query", "schema": {"type": "string"}},
                    int("from", "event time, ns (default 0)"), int("to", "event time, ns, exclusive"),
                    int("limit", "1..1000 (default 100)"), int("offset", "rows to skip (next_offset of the previous page)")],
                "responses": {"200": {"description": "alerts"}, "400": {"description": "bad parameter"}, "503": {"description": "database unreachable"}}}},
            "/v1/history/alerts/{id}/windows": {"get": {"summary": "The windows up to an alert, with their features",
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}, int("count", "1..1000 (default 10)")],
                "responses": {"200": {"description": "the alert and its windows"}, "404": {"description": "no such alert"}}}},
            "/v1/history/counts": {"get": {"summary": "Alerts per day (UTC), detector and instrument",
                "parameters": [int("from", "event time, ns"), int("to", "event time, ns, exclusive")], "responses": {"200": {"description": "counts"}}}},
            "/v1/history/top": {"get": {"summary": "Instruments with the most alerts over a period",
                "parameters": [int("from", "event time, ns"), int("to", "event time, ns, exclusive"), int("limit", "1..1000 (default 10)")],
                "responses": {"200": {"description": "instruments"}}}},
            "/v1/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3"}}}},
        }
    })
}

fn handle(method: &str, target: &str, shared: &Shared) -> Response {
    let started = Instant::now();
    let metrics = &shared.counters.metrics;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let result = if let (["v1", "history", rest @ ..], "GET") = (segments.as_slice(), method) {
        match &shared.history {
            Some(h) => h.answer(rest, query),
            None => Err(ApiError {
                status: "404 Not Found",
                message: "no history: configure [store] (PostgreSQL) to query months of alerts".into(),
            }),
        }
    } else {
        live(method, target, shared, started)
    };
    let (status, body) = match result {
        Ok(body) => ("200 OK", body),
        Err(e) => (e.status, json!({"error": e.message})),
    };
    let class = format!("{}xx", &status[..1]);
    metrics.api_requests.with_label_values(&[class.as_str()]).inc();
    let code = status.split(' ').next().and_then(|c| c.parse().ok()).unwrap_or(500);
    Response::new(code, "application/json", body.to_string())
}

/// A query on the live analytics, through the dataflow.
fn live(method: &str, target: &str, shared: &Shared, started: Instant) -> Result<Value, ApiError> {
    let metrics = &shared.counters.metrics;
    route(method, target, &shared.spec).and_then(|query| {
        let Some(query) = query else { return Ok(openapi()) };
        let rx = shared.hub.submit(query.clone()).ok_or_else(|| ApiError {
            status: "503 Service Unavailable",
            message: "the run has ended and no longer answers queries".into(),
        })?;
        match rx.recv_timeout(shared.timeout) {
            Ok(Reply::Answer(answer)) => {
                metrics.api_query.observe(started.elapsed().as_secs_f64());
                render(&query, &answer, target)
            }
            Ok(Reply::Stopped) | Err(_) => Err(ApiError {
                status: "503 Service Unavailable",
                message: format!(
                    "no answer within {:?}: the watermark has not passed the query (a stalled source?) or the run stopped",
                    shared.timeout
                ),
            }),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_rejects() {
        let spec = AnalyticsSpec::default();
        let x = InstrumentId::new("GOOG").unwrap();
        assert_eq!(route("GET", "/v1/instruments/GOOG/price", &spec).unwrap(), Some(Query::Price { instrument: x }));
        assert_eq!(
            route("GET", "/v1/instruments/GOOG/trades?minutes=15", &spec).unwrap(),
            Some(Query::Trades { instrument: x, minutes: 15 })
        );
        assert_eq!(route("GET", "/v1/top-volume?n=3", &spec).unwrap(), Some(Query::TopVolume { n: 3 }));
        assert_eq!(route("GET", "/v1/openapi.json", &spec).unwrap(), None);
        assert_eq!(route("GET", "/v1/top-volume?n=0", &spec).unwrap_err().status, "400 Bad Request");
        assert_eq!(route("GET", "/v1/top-volume?n=abc", &spec).unwrap_err().status, "400 Bad Request");
        assert_eq!(route("GET", "/v1/anomalies?since=5&limit=x", &spec).unwrap_err().status, "400 Bad Request");
        assert_eq!(
            route("GET", "/v1/anomalies?since=5&limit=3", &spec).unwrap(),
            Some(Query::Anomalies { since_ns: 5 })
        );
        assert_eq!(
            route("GET", "/v1/instruments/WAY-TOO-LONG-SYMBOL/price", &spec).unwrap_err().status,
            "400 Bad Request"
        );
        assert_eq!(route("GET", "/v2/nothing", &spec).unwrap_err().status, "404 Not Found");
        assert_eq!(route("POST", "/v1/top-volume", &spec).unwrap_err().status, "405 Method Not Allowed");
        assert!(openapi()["paths"]["/v1/top-volume"]["get"].is_object());
    }
}
