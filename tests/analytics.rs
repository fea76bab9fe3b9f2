//! The analytics API against a naive oracle over the same input (1 worker, 2 workers, a 2-process
//! cluster where each process answers for every instrument), bad requests, and the webhook sink
//! against a local HTTP server (retries, rate limit, secret header).

use crate::util::{self, free_ports, http_get, wait_for, Guard, TempDir};
use lobsentry_operators::event::LobEvent;
use lobsentry_operators::generator::MarketSpec;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TICK: u64 = 1_000_000_000;
const MINUTE: u64 = 60 * TICK;
const HOUR: u64 = 60 * MINUTE;

/// A test directory holding about 1 h 40 min of event time over 8 instruments (crossing two hour
/// boundaries) as `in.csv`, and the oracle of those events.
fn market(name: &str) -> (TempDir, String, Oracle) {
    let dir = TempDir::new(name);
    let spec = MarketSpec { rate_per_sec: 5.0, ..util::market(30_000, 8, 23) };
    let events: Vec<LobEvent> = util::events(&spec, 0, 0.0);
    let input = dir.path("in.csv");
    util::write_csv(&input, &events);
    (dir, input.display().to_string(), Oracle::new(&events))
}

/// What the API must answer, computed naively from the events.
struct Oracle {
    clock: u64,
    trades: Vec<(String, u64, u64, u64)>, // instrument, ts, size, price
}

impl Oracle {
    fn new(events: &[LobEvent]) -> Oracle {
        let clock = events.iter().map(|e| (e.ts_ns / TICK + 1) * TICK).max().unwrap();
        let trades = events
            .iter()
            .filter(|e| e.kind.is_execution())
            .map(|e| (e.instrument.as_str().to_string(), e.ts_ns, e.size, e.price.0 as u64))
            .collect();
        Oracle { clock, trades }
    }

    /// (trades, shares) per minute start over the last `n` minutes, the current one excluded.
    fn trades(&self, sym: &str, n: u64) -> BTreeMap<u64, (i64, i64)> {
        let current = self.clock / MINUTE;
        let mut out = BTreeMap::new();
        for (s, ts, size, _) in &self.trades {
            let m = ts / MINUTE;
            if s == sym && m + n >= current && m < current {
                let e = out.entry(m * MINUTE).or_insert((0, 0));
                e.0 += 1;
                e.1 += *size as i64;
            }
        }
        out
    }

    /// (instrument, shares) by shares descending (ties by symbol) over the last hour.
    fn top(&self, n: usize) -> Vec<(String, i64)> {
        let mut by: BTreeMap<&str, i64> = BTreeMap::new();
        for (s, ts, size, _) in &self.trades {
            if *ts >= self.clock - HOUR {
                *by.entry(s).or_default() += *size as i64;
            }
        }
        let mut v: Vec<(String, i64)> = by.into_iter().map(|(s, v)| (s.to_string(), v)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v.truncate(n);
        v
    }

    /// (hour start, trades, shares) for the last `h` hours, the current one included, market-wide or
    /// of one instrument; None = missing.
    fn hours(&self, h: u64, sym: Option<&str>) -> Vec<(u64, Option<(i64, i64)>)> {
        let current = self.clock / HOUR;
        ((current + 1).saturating_sub(h)..=current)
            .map(|hour| {
                let mut t = (0, 0);
                for (s, ts, size, _) in &self.trades {
                    if ts / HOUR == hour && sym.is_none_or(|sym| sym == s) {
                        t.0 += 1;
                        t.1 += *size as i64;
                    }
                }
                (hour * HOUR, (t.0 > 0).then_some(t))
            })
            .collect()
    }

    /// The VWAP (dollars) of the instrument's last tick with trades, and that tick's end.
    fn price(&self, sym: &str) -> (f64, u64) {
        let last = self.trades.iter().filter(|t| t.0 == sym).map(|t| t.1 / TICK).max().unwrap();
        let (mut notional, mut shares) = (0i128, 0i64);
        for (_, ts, size, price) in self.trades.iter().filter(|t| t.0 == sym && t.1 / TICK == last) {
            let _ = ts;
            notional += *price as i128 * *size as i128;
            shares += *size as i64;
        }
        (notional as f64 / shares as f64 / 10_000.0, (last + 1) * TICK)
    }
}

fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http_get(port, path).unwrap_or_else(|| panic!("GET {path}: no answer"));
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
    (status, value)
}

/// Waits until the API answers with the whole input in.
fn wait_complete(port: u16) {
    wait_for("the analytics to reflect the whole input", Duration::from_secs(120), || {
        http_get(port, "/v1/top-volume?n=1")
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .is_some_and(|v| v["watermark"]["input_complete"] == Value::Bool(true))
    });
}

/// Checks every endpoint of the API on `port` against the oracle and the run's alert files.
fn check_against_oracle(port: u16, oracle: &Oracle, alerts: &[&Path]) {
    let symbols: BTreeSet<&str> = oracle.trades.iter().map(|t| t.0.as_str()).collect();
    for sym in &symbols {
        for n in [1, 7, 45] {
            let (status, v) = get_json(port, &format!("/v1/instruments/{sym}/trades?minutes={n}"));
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["watermark"]["market_clock_ns"].as_u64(), Some(oracle.clock));
            let got: BTreeMap<u64, (i64, i64)> = v["per_minute"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["minute_start_ns"].as_u64().unwrap(),
                        (m["trades"].as_i64().unwrap(), m["shares"].as_i64().unwrap()),
                    )
                })
                .collect();
            let want = oracle.trades(sym, n);
            assert_eq!(got, want, "{sym} trades over {n} minutes");
            assert_eq!(v["trades"].as_i64().unwrap(), want.values().map(|x| x.0).sum::<i64>());
        }
        let (status, v) = get_json(port, &format!("/v1/instruments/{sym}/price"));
        assert_eq!(status, 200, "{v}");
        let (price, tick_end) = oracle.price(sym);
        assert!((v["price"].as_f64().unwrap() - price).abs() < 1e-9, "{sym}: {v} vs {price}");
        assert_eq!(v["last_trade_tick_end_ns"].as_u64(), Some(tick_end));
        let (bid, ask) = (v["bid"]["price_ticks"].as_i64().unwrap(), v["ask"]["price_ticks"].as_i64().unwrap());
        assert!(bid < ask, "{sym}: crossed quote {v}");
    }
    for n in [1, 3, 8] {
        let (_, v) = get_json(port, &format!("/v1/top-volume?n={n}"));
        let got: Vec<(String, i64)> = v["instruments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| (i["instrument"].as_str().unwrap().to_string(), i["shares"].as_i64().unwrap()))
            .collect();
        assert_eq!(got, oracle.top(n), "top {n}");
    }
    let hourly = |path: String| -> Vec<(u64, Option<(i64, i64)>)> {
        let (_, v) = get_json(port, &path);
        v["hours"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                let start = x["hour_start_ns"].as_u64().unwrap();
                let missing = x["missing"].as_bool().unwrap();
                (start, (!missing).then(|| (x["trades"].as_i64().unwrap(), x["shares"].as_i64().unwrap())))
            })
            .collect()
    };
    for h in [1, 2, 4] {
        assert_eq!(hourly(format!("/v1/hourly-stats?hours={h}")), oracle.hours(h, None), "hourly stats over {h} hours");
    }
    for sym in &symbols {
        let got = hourly(format!("/v1/instruments/{sym}/hourly-stats?hours=3"));
        assert_eq!(got, oracle.hours(3, Some(sym)), "{sym}: hourly stats");
    }
    let (_, v) = get_json(port, "/v1/anomalies?since=0&limit=100000");
    let got: BTreeSet<(String, u64)> = v["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["instrument"].as_str().unwrap().to_string(), a["window_end_ns"].as_u64().unwrap()))
        .collect();
    let mut want = BTreeSet::new();
    for path in alerts {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let a: Value = serde_json::from_str(line).unwrap();
            if a["model"] != "zscore-baseline" {
                want.insert((a["instrument"].as_str().unwrap().to_string(), a["window_end_ns"].as_u64().unwrap()));
            }
        }
    }
    assert!(!want.is_empty(), "the run raised no alerts to compare");
    assert_eq!(got, want, "anomalies");
    let since = want.iter().map(|a| a.1).max().unwrap();
    let (_, v) = get_json(port, &format!("/v1/anomalies?since={since}"));
    assert!(v["anomalies"].as_array().unwrap().iter().all(|a| a["window_end_ns"].as_u64().unwrap() >= since));
}

fn start(args: &[&str], alerts: &Path) -> Guard {
    let child = Command::new(util::bin())
        .args(args)
        .env("LOBSENTRY__METRICS__ENABLED", "false")
        .env("LOBSENTRY__DETECT__ALERTS", format!("{:?}", alerts.display().to_string()))
        .envs(util::BUSY_ALERTS)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Guard(child)
}

#[test]
fn answers_equal_a_naive_oracle_with_one_and_two_workers_and_bad_requests_get_json_errors() {
    let (dir, input, oracle) = market("analytics-oracle");
    for workers in ["1", "2"] {
        let port = free_ports(1);
        let alerts = dir.path(&format!("alerts-{workers}.jsonl"));
        let api = format!("127.0.0.1:{port}");
        let _run = start(&["run", "-w", workers, "--input", &input, "--api-addr", &api], &alerts);
        wait_complete(port);
        check_against_oracle(port, &oracle, &[&alerts]);
        if workers == "1" {
            for (path, status) in [
                ("/v1/top-volume?n=0", 400),
                ("/v1/top-volume?n=many", 400),
                ("/v1/instruments/SYM0000/trades?minutes=-3", 400),
                ("/v1/instruments/NOT%20A%20SYMBOL/price", 400),
                ("/v1/instruments/NOPE/price", 404),
                ("/v1/nothing", 404),
            ] {
                let (got, v) = get_json(port, path);
                assert_eq!(got, status, "{path}: {v}");
                assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{path}: {v}");
            }
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            write!(s, "POST /v1/top-volume HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            assert!(out.starts_with("HTTP/1.1 405"), "{out}");
            let (status, doc) = get_json(port, "/v1/openapi.json");
            assert_eq!(status, 200);
            for p in [
                "/v1/instruments/{sym}/price",
                "/v1/instruments/{sym}/trades",
                "/v1/top-volume",
                "/v1/hourly-stats",
                "/v1/anomalies",
            ] {
                assert!(doc["paths"][p]["get"].is_object(), "openapi lacks {p}");
            }
        }
    }
}

#[test]
fn each_process_of_a_cluster_answers_for_every_instrument() {
    let (dir, input, oracle) = market("analytics-cluster");
    let base = free_ports(2);
    let alerts = dir.path("alerts.jsonl");
    let api = format!("127.0.0.1:{base}");
    let _run = start(&["launch", "-n", "2", "--", "--input", &input, "--api-addr", &api], &alerts);
    let alerts_p1 = alerts.with_extension("p1");
    for port in [base, base + 1] {
        wait_complete(port);
        check_against_oracle(port, &oracle, &[&alerts, &alerts_p1]);
    }
}

/// Requests a receiver saw: (head, body).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A webhook receiver: answers 500 to the first `failures` requests, then 200; keeps every request.
fn receiver(failures: usize) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let keep = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let n = {
                let mut seen = keep.lock().unwrap();
                seen.push((head, String::from_utf8_lossy(&body).into_owned()));
                seen.len()
            };
            let status = if n <= failures { "500 Internal Server Error" } else { "200 OK" };
            let _ = write!(reader.get_mut(), "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

#[test]
fn webhook_retries_rate_limits_per_instrument_and_sends_the_secret() {
    let (dir, input, _) = market("webhook");
    let (port, seen) = receiver(2);
    let alerts = dir.path("alerts.jsonl");
    let out = Command::new(util::bin())
        .args(["run", "-w", "1", "--input"])
        .arg(&input)
        .env("LOBSENTRY__METRICS__ENABLED", "false")
        .env("LOBSENTRY__DETECT__ALERTS", format!("{:?}", alerts.display().to_string()))
        .env("LOBSENTRY__DETECT__ALARMS_PER_HOUR", "0")
        .env("LOBSENTRY__WEBHOOK__URL", format!("\"http://127.0.0.1:{port}/hook\""))
        .env(
            "LOBSENTRY__WEBHOOK__TEMPLATE",
            r#"'{"text": "{{instrument}}: score {{score}} ({{features}})", "alert": {{alert}}}'"#,
        )
        .env("LOBSENTRY__WEBHOOK__SECRET_ENV", "\"LOBSENTRY_IT_SECRET\"")
        .env("LOBSENTRY__WEBHOOK__PER_INSTRUMENT_INTERVAL", "\"5m\"")
        .env("LOBSENTRY__WEBHOOK__BACKOFF", "\"20ms\"")
        .env("LOBSENTRY_IT_SECRET", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The oracle: the run's model alerts, at most one per instrument per 5 minutes of event time.
    let mut by: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for line in std::fs::read_to_string(&alerts).unwrap().lines() {
        let a: Value = serde_json::from_str(line).unwrap();
        if a["model"] != "zscore-baseline" {
            by.entry(a["instrument"].as_str().unwrap().into()).or_default().push(a["window_end_ns"].as_u64().unwrap());
        }
    }
    let mut want: BTreeSet<(String, u64)> = BTreeSet::new();
    let mut total = 0;
    for (sym, mut ends) in by {
        ends.sort();
        total += ends.len();
        let mut last: Option<u64> = None;
        for end in ends {
            if last.is_none_or(|l| end >= l + 5 * MINUTE) {
                want.insert((sym.clone(), end));
                last = Some(end);
            }
        }
    }
    assert!(want.len() >= 2 && want.len() < total, "the rate limit is not exercised: {} of {total}", want.len());
    let seen = seen.lock().unwrap();
    // Two failed attempts were retried: every alert arrived, the first one three times.
    assert_eq!(seen.len(), want.len() + 2, "requests received");
    let mut got = BTreeSet::new();
    for (head, body) in seen.iter() {
        assert!(head.to_ascii_lowercase().contains("x-lobsentry-secret: s3cret"), "{head}");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        let sym = v["alert"]["instrument"].as_str().unwrap().to_string();
        assert!(v["text"].as_str().unwrap().starts_with(&format!("{sym}: score ")), "{v}");
        got.insert((sym, v["alert"]["window_end_ns"].as_u64().unwrap()));
    }
    assert_eq!(got, want);
}
