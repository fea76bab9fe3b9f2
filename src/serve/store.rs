//! History in PostgreSQL: alerts (every one the run raises, with its features and detectors), and
//! optionally every score and every window's features, written by a thread of its own in batched
//! multi-row inserts.
//!
//! * **Schema**: created and migrated by the program (`lobsentry_schema` records the version);
//!   tables indexed for the desk's questions (an instrument's alerts between two times, the windows
//!   around an alert, counts per day, detector and instrument) with BRIN indexes on event time so
//!   months stay fast.
//! * **Exactly once**: alerts and scores are keyed by their id (instrument | window end | model),
//!   windows by (instrument, window end); rows are inserted `ON CONFLICT DO NOTHING`, so a run
//!   restarted from a checkpoint (which sends its last alerts again) leaves each row once.
//! * **Backpressure**: rows wait in a bounded queue (`store.queue`); when it is full the dataflow
//!   waits for the writer (the stated policy: block, never drop). With the database down mid-run the
//!   writer keeps its batch and retries with backoff; the queue fills and the run pauses until the
//!   database is back. Nothing is lost silently.
//! * **Rejected rows**: a batch the database refuses for its content is retried row by row; a row
//!   refused alone is counted (`lobsentry_store_rejected_total`) and goes to the run's dead-letter
//!   output (`sink.dead-letter`: `{"file": "store", "table", "id", "reason", "row"}`) with the
//!   database's reason; the first ten are also in the run's warnings.

use crate::alert::{Alert, AlertSink, DeadLetters};
use crate::config::StoreConfig;
use crate::metrics::Counters;
use lobsentry_operators::features::{WindowFeatures, FEATURE_NAMES};
use postgres::{Client, NoTls};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i32 = 1;

/// One row for the database.
#[derive(Debug)]
enum Row {
    Alert(Alert),
    Score(Alert),
    Window(Box<WindowFeatures>),
    /// Commit everything queued before this, then answer.
    Sync(SyncSender<()>),
}

/// The migrations, by version.
fn migrations() -> Vec<(i32, String)> {
    let feature_columns: Vec<String> = FEATURE_NAMES.iter().map(|n| format!("{n} double precision")).collect();
    let v1 = format!(
        "CREATE TABLE alerts (
            id text PRIMARY KEY,
            instrument text NOT NULL,
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL,
            scale text NOT NULL,
            detector text NOT NULL,
            model text NOT NULL,
            score double precision,
            threshold double precision,
            p_value double precision,
            top_features jsonb NOT NULL,
            detectors jsonb NOT NULL,
            body jsonb NOT NULL,
            inserted_at timestamptz NOT NULL DEFAULT now());
         CREATE INDEX alerts_instrument_end ON alerts (instrument, window_end);
         CREATE INDEX alerts_end_brin ON alerts USING brin (window_end);
         CREATE TABLE scores (
            id text PRIMARY KEY,
            instrument text NOT NULL,
            window_end timestamptz NOT NULL,
            detector text NOT NULL,
            model text NOT NULL,
            score double precision,
            threshold double precision,
            p_value double precision,
            is_anomaly boolean NOT NULL);
         CREATE INDEX scores_instrument_end ON scores (instrument, window_end);
         CREATE INDEX scores_end_brin ON scores USING brin (window_end);
         CREATE TABLE window_features (
            instrument text NOT NULL,
            window_start timestamptz NOT NULL,
            window_end timestamptz NOT NULL,
            {},
            PRIMARY KEY (instrument, window_end));
         CREATE INDEX window_features_end_brin ON window_features USING brin (window_end);",
        feature_columns.join(",\n            ")
    );
    vec![(1, v1)]
}

/// Creates or migrates the schema; refuses a database written by a newer build.
fn migrate(client: &mut Client) -> Result<i32, String> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS lobsentry_schema (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
        .map_err(|e| format!("creating lobsentry_schema: {e}"))?;
    let current: i32 = client
        .query_one("SELECT coalesce(max(version), 0) FROM lobsentry_schema", &[])
        .map_err(|e| format!("reading the schema version: {e}"))?
        .get(0);
    if current > SCHEMA_VERSION {
        return Err(format!(
            "the database holds schema version {current}, written by a newer lobsentry (this one writes {SCHEMA_VERSION})"
        ));
    }
    for (version, sql) in migrations().into_iter().filter(|(v, _)| *v > current) {
        let mut tx = client.transaction().map_err(|e| e.to_string())?;
        tx.batch_execute(&sql).map_err(|e| format!("migration {version}: {e}"))?;
        tx.execute("INSERT INTO lobsentry_schema (version) VALUES ($1)", &[&version])
            .map_err(|e| format!("migration {version}: {e}"))?;
        tx.commit().map_err(|e| format!("migration {version}: {e}"))?;
    }
    Ok(SCHEMA_VERSION)
}

/// Connects with the configured attempts.
pub(crate) fn connect(config: &StoreConfig) -> Result<Client, String> {
    let mut pg = config.url.parse::<postgres::Config>().map_err(|e| format!("store.url: {e}"))?;
    if let Some(p) = &config.password {
        pg.password(p.expose());
    }
    pg.connect_timeout(config.connect_timeout);
    let mut last = String::new();
    for attempt in 1..=config.connect_attempts.max(1) {
        match pg.connect(NoTls) {
            Ok(c) => return Ok(c),
            Err(e) => last = e.to_string(),
        }
        if attempt < config.connect_attempts {
            std::thread::sleep(config.connect_backoff);
        }
    }
    Err(format!(
        "cannot reach PostgreSQL at {} after {} attempts: {last}",
        crate::config::redact_url(&config.url),
        config.connect_attempts
    ))
}

fn ts(ns: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_nanos(ns)
}

/// Inserts rows of one kind in one statement (`ON CONFLICT DO NOTHING`).
fn insert(client: &mut Client, rows: &[Row]) -> Result<u64, postgres::Error> {
    let Some(first) = rows.first() else { return Ok(0) };
    let mut params: Vec<Box<dyn postgres::types::ToSql + Sync>> = Vec::new();
    let mut tuples = Vec::new();
    let mut tuple = |n: usize, params: &mut Vec<Box<dyn postgres::types::ToSql + Sync>>| {
        let start = params.len() - n;
        let list: Vec<String> = (start + 1..=start + n).map(|i| format!("${i}")).collect();
        tuples.push(format!("({})", list.join(",")));
    };
    let sql_head = match first {
        Row::Alert(_) => "INSERT INTO alerts (id, instrument, window_start, window_end, scale, detector, model, score, threshold, p_value, top_features, detectors, body) VALUES ".to_string(),
        Row::Score(_) => "INSERT INTO scores (id, instrument, window_end, detector, model, score, threshold, p_value, is_anomaly) VALUES ".to_string(),
        Row::Window(_) => format!("INSERT INTO window_features (instrument, window_start, window_end, {}) VALUES ", FEATURE_NAMES.join(", ")),
        Row::Sync(_) => return Ok(0),
    };
    for row in rows {
        match row {
            Row::Alert(a) => {
                let top = serde_json::to_value(&a.top_features).unwrap_or_default();
                let det = serde_json::to_value(&a.detectors).unwrap_or_default();
                let body = serde_json::to_value(a).unwrap_or_default();
                params.push(Box::new(a.id()));
                params.push(Box::new(a.instrument.clone()));
                params.push(Box::new(ts(a.window_start_ns)));
                params.push(Box::new(ts(a.window_end_ns)));
                params.push(Box::new(a.scale.clone()));
                params.push(Box::new(a.detector.clone()));
                params.push(Box::new(a.model.clone()));
                params.push(Box::new(a.score));
                params.push(Box::new(a.threshold));
                params.push(Box::new(a.p_value));
                params.push(Box::new(top));
                params.push(Box::new(det));
                params.push(Box::new(body));
                tuple(13, &mut params);
            }
            Row::Score(a) => {
                params.push(Box::new(a.id()));
                params.push(Box::new(a.instrument.clone()));
                params.push(Box::new(ts(a.window_end_ns)));
                params.push(Box::new(a.detector.clone()));
                params.push(Box::new(a.model.clone()));
                params.push(Box::new(a.score));
                params.push(Box::new(a.threshold));
                params.push(Box::new(a.p_value));
                params.push(Box::new(a.is_anomaly));
                tuple(9, &mut params);
            }
            Row::Window(w) => {
                params.push(Box::new(w.instrument.as_str().to_string()));
                params.push(Box::new(ts(w.window.start)));
                params.push(Box::new(ts(w.window.end)));
                for v in w.values.iter() {
                    params.push(Box::new(v.is_finite().then_some(*v)));
                }
                tuple(3 + FEATURE_NAMES.len(), &mut params);
            }
            Row::Sync(_) => {}
        }
    }
    let sql = format!("{sql_head}{} ON CONFLICT DO NOTHING", tuples.join(","));
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = params.iter().map(|p| p.as_ref()).collect();
    client.execute(sql.as_str(), &refs)
}

/// The running store.
pub struct Store {
    config: StoreConfig,
    tx: Mutex<Option<SyncSender<Row>>>,
    thread: Mutex<Option<JoinHandle<Result<(), String>>>>,
    report: Arc<Mutex<Vec<String>>>,
    dead_letters: Arc<OnceLock<DeadLetters>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &crate::config::redact_url(&self.config.url)).finish()
    }
}

impl Store {
    /// Connects (a clear error after the configured attempts), migrates the schema and starts the
    /// writer.
    pub fn start(config: StoreConfig, counters: Arc<Counters>) -> Result<Store, crate::Error> {
        let mut client = connect(&config).map_err(crate::Error::Data)?;
        migrate(&mut client).map_err(|e| crate::Error::Data(format!("store: {e}")))?;
        let (tx, rx) = sync_channel::<Row>(config.queue.max(1));
        let report: Arc<Mutex<Vec<String>>> = Arc::default();
        let dead_letters: Arc<OnceLock<DeadLetters>> = Arc::default();
        let (c, r, d) = (config.clone(), report.clone(), dead_letters.clone());
        let thread = std::thread::Builder::new()
            .name("lobsentry-store".into())
            .spawn(move || write(client, c, counters, rx, Refused { report: r, dead_letters: d }))
            .map_err(|e| crate::Error::Io(format!("store: cannot start its thread: {e}")))?;
        Ok(Store { config, tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), report, dead_letters })
    }

    /// Queues a row, waiting while the queue is full (backpressure).
    fn push(&self, row: Row) {
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        if let Some(tx) = tx {
            let _ = tx.send(row);
        }
    }
}

/// Where the writer reports rows the database refuses.
struct Refused {
    report: Arc<Mutex<Vec<String>>>,
    dead_letters: Arc<OnceLock<DeadLetters>>,
}

impl Refused {
    fn row(&self, row: &Row, reason: String) {
        let (table, id, body) = match row {
            Row::Alert(a) => ("alerts", a.id(), serde_json::to_value(a)),
            Row::Score(a) => ("scores", a.id(), serde_json::to_value(a)),
            Row::Window(w) => {
                ("window_features", format!("{}|{}", w.instrument, w.window.end), serde_json::to_value(w))
            }
            Row::Sync(_) => return,
        };
        if let Some(to) = self.dead_letters.get() {
            to(serde_json::json!({"file": "store", "table": table, "id": id, "reason": reason,
                "row": body.unwrap_or_default()}));
        }
        if let Ok(mut r) = self.report.lock() {
            if r.len() < 10 {
                r.push(format!("{table} row {id} was refused: {reason}"));
            }
        }
    }
}

fn write(
    mut client: Client,
    config: StoreConfig,
    counters: Arc<Counters>,
    rx: Receiver<Row>,
    refused: Refused,
) -> Result<(), String> {
    let m = &counters.metrics;
    let mut pending: Vec<Row> = Vec::new();
    let mut syncs: Vec<SyncSender<()>> = Vec::new();
    let mut open = true;
    let mut last_flush = Instant::now();
    while open || !pending.is_empty() {
        if open {
            let mut take = |row: Row| match row {
                Row::Sync(ack) => syncs.push(ack),
                row => pending.push(row),
            };
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(row) => {
                    take(row);
                    for row in rx.try_iter().take(config.batch.saturating_sub(1)) {
                        take(row);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
        }
        let full = pending.len() >= config.batch;
        if pending.is_empty() && !syncs.is_empty() {
            for ack in syncs.drain(..) {
                let _ = ack.send(());
            }
        }
        let due = full || !open || !syncs.is_empty() || last_flush.elapsed() >= Duration::from_millis(500);
        if pending.is_empty() || !due {
            continue;
        }
        // One statement per kind of row.
        let mut groups: [Vec<Row>; 3] = Default::default();
        for row in pending.drain(..) {
            let i = match row {
                Row::Alert(_) | Row::Sync(_) => 0,
                Row::Score(_) => 1,
                Row::Window(_) => 2,
            };
            groups[i].push(row);
        }
        for group in groups.iter().filter(|g| !g.is_empty()) {
            let mut backoff = config.connect_backoff;
            loop {
                match insert(&mut client, group) {
                    Ok(n) => {
                        m.store_rows.inc_by(group.len() as u64);
                        m.store_duplicates.inc_by(group.len() as u64 - n);
                        break;
                    }
                    Err(e) if e.as_db_error().is_some() => {
                        // Refused for its content: row by row, and report the rows refused alone.
                        for row in group.chunks(1) {
                            match insert(&mut client, row) {
                                Ok(n) => {
                                    m.store_rows.inc();
                                    m.store_duplicates.inc_by(1 - n);
                                }
                                Err(e) => {
                                    m.store_rejected.inc();
                                    let reason = e.as_db_error().map_or_else(|| e.to_string(), |d| d.to_string());
                                    refused.row(&row[0], reason);
                                }
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        // The connection: retry (the queue fills meanwhile and the dataflow waits).
                        m.store_retries.inc();
                        eprintln!("lobsentry: store: {e}; retrying in {backoff:?}");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        if client.is_closed() {
                            if let Ok(c) = connect(&config) {
                                client = c;
                            }
                        }
                    }
                }
            }
        }
        last_flush = Instant::now();
        // The rows before each sync marker taken so far are committed.
        for ack in syncs.drain(..) {
            let _ = ack.send(());
        }
    }
    Ok(())
}

impl AlertSink for Store {
    fn name(&self) -> &str {
        "store"
    }

    fn send(&self, alert: &Alert) {
        self.push(Row::Alert(alert.clone()));
    }

    fn wants_scores(&self) -> bool {
        self.config.scores
    }

    fn score(&self, score: &Alert) {
        self.push(Row::Score(score.clone()));
    }

    fn wants_windows(&self) -> bool {
        self.config.features
    }

    fn window(&self, window: &WindowFeatures) {
        self.push(Row::Window(Box::new(window.clone())));
    }

    fn sync(&self, timeout: Duration) -> Result<(), String> {
        let (ack, done) = sync_channel(1);
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        let Some(tx) = tx else { return Ok(()) };
        tx.send(Row::Sync(ack)).map_err(|_| "the writer has stopped".to_string())?;
        done.recv_timeout(timeout).map_err(|_| format!("rows not committed after {timeout:?}"))
    }

    fn dead_letters(&self, to: DeadLetters) {
        let _ = self.dead_letters.set(to);
    }

    fn finish(&self, _grace: Duration) -> Result<Option<String>, String> {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread {
            t.join().map_err(|_| "store: the writer thread panicked".to_string())??;
        }
        let refused = self.report.lock().map(|r| r.clone()).unwrap_or_default();
        Ok((!refused.is_empty()).then(|| format!("store: {}", refused.join("; "))))
    }
}
