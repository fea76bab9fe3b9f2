//! Assembles the standard dataflow from a validated [`Config`] and runs it.
//!
//! source -> (ReconstructBook) -> ExtractFeatures -> WriteWindows, with the rejected lines and the late
//! events on side streams, each counted (and written when configured).

use crate::config::{Config, Output, SourceConfig};
use crate::error::Error;
use crate::metrics::PipelineMetrics;
use crate::summary::Summary;
use crate::webhook::Webhook;
use differential_dataflow::input::{Input as _, InputSession};
use lobsentry_operators::analytics::queries::{collect_answers, AnswerRows, QueryDriver};
use lobsentry_operators::analytics::{AlertRecord, AnalyticsRecord, AnalyticsSpec, MarketAnalytics, Query};
use lobsentry_operators::book::{BookStats, ReconstructBook, ReconstructBookSpec};
use lobsentry_operators::checkpoint::{decode, encode, Barrier, CheckpointStore, Coordinator, Part, StateRegistry};
use lobsentry_operators::detect::{ScoreWindows, WindowScore};
use lobsentry_operators::ensemble::Ensemble;
use lobsentry_operators::event::{LobEvent, Timed};
use lobsentry_operators::features::{ExtractFeatures, WindowFeatures};
use lobsentry_operators::generator::AnomalyLabel;
use lobsentry_operators::inference::{onnxruntime, open_session, InferenceSpec, ScoreWithModel};
use lobsentry_operators::rollup::{FillSilent, RollUp};
use lobsentry_operators::sink::kafka::{read_ids, KafkaSinkCounters, KafkaWriter, KafkaWriterSpec};
use lobsentry_operators::sink::{WriteWindows, WriterFactory};
use lobsentry_operators::source::kafka::{kafka_source, partition_count, KafkaSourceCounters};
use lobsentry_operators::source::{file_source, synthetic_source, Rejected};
use lobsentry_operators::window::WindowSpec;
use prometheus::Registry;
use std::cell::Cell;
use std::cell::RefCell;
use std::io::{BufWriter, Write};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::vec::Map as _;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{ProbeHandle, StreamVec};

/// How many rejected lines a run keeps to show on stderr.
pub const KEEP_REJECTED: usize = 10;

/// Live state of a run, readable from other threads (progress display, metrics server).
#[derive(Debug)]
pub struct Counters {
    /// The run's metrics (registered in the run's registry).
    pub metrics: PipelineMetrics,
    /// Per-worker watermark of this process (the probe's frontier; `u64::MAX` when done).
    pub watermarks: Mutex<Vec<u64>>,
    /// Set once the dataflow is built and running (`/readyz`).
    pub ready: AtomicBool,
    /// Kafka source counters (all workers of this process).
    pub kafka_source: Arc<KafkaSourceCounters>,
    /// Kafka writer counters (all workers of this process).
    pub kafka_sink: Arc<KafkaSinkCounters>,
}

impl Counters {
    /// Counters whose metrics are registered into `registry`.
    pub fn new(registry: &Registry, source: &str) -> Result<Counters, Error> {
        let metrics =
            PipelineMetrics::register_into(registry, source).map_err(|e| Error::Io(format!("metrics: {e}")))?;
        Ok(Counters {
            metrics,
            watermarks: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            kafka_source: Arc::default(),
            kafka_sink: Arc::default(),
        })
    }

    /// Counters with a private registry (for tests and embedding without a metrics endpoint).
    pub fn standalone(config: &Config) -> Counters {
        Self::new(&Registry::new(), config.source.kind()).expect("a fresh registry accepts every metric")
    }

    /// The smallest worker watermark of this process.
    pub fn watermark(&self) -> u64 {
        self.watermarks.lock().map(|w| w.iter().copied().min().unwrap_or(0)).unwrap_or(0)
    }
}

/// What a finished run reports.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Events decoded.
    pub events: u64,
    /// Lines rejected.
    pub rejected: u64,
    /// Late events.
    pub late: u64,
    /// Windows emitted.
    pub windows: u64,
    /// Book counters, all workers.
    pub book: BookStats,
    /// Wall time of the dataflow.
    pub elapsed: Duration,
    /// The first rejected lines.
    pub first_rejected: Vec<Rejected>,
    /// Injected episodes (synthetic source).
    pub labels: Vec<AnomalyLabel>,
    /// Notable windows (when there is no output).
    pub summary: Summary,
    /// Windows scored by the detector.
    pub scored: u64,
    /// Anomalies, in window order.
    pub anomalies: Vec<WindowScore>,
}

/// The `detector` label of a score: "model" for ONNX models, "baseline" for the z-score baseline.
pub fn detector_label(s: &WindowScore) -> &'static str {
    if s.model.starts_with("zscore") {
        "baseline"
    } else if s.model.starts_with("ensemble") {
        "ensemble"
    } else {
        "model"
    }
}

/// Names a detector's scores on a scale other than the output windows' (`zscore-baseline/10s`).
fn rename<'s>(stream: StreamVec<'s, u64, WindowScore>, label: &str) -> StreamVec<'s, u64, WindowScore> {
    if label.is_empty() {
        return stream;
    }
    let suffix = format!("/{label}");
    stream.map(move |mut s: WindowScore| {
        s.model.push_str(&suffix);
        s
    })
}

/// The detector whose decisions are the run's alerts (alerts file, Kafka alerts topic, webhook, API,
/// summary): the calibrated ensemble when it is on, else the model, else the baseline.
pub fn primary_detector(config: &Config) -> &'static str {
    if config.scales.ensemble.is_some() {
        "ensemble"
    } else if config.model.is_some() {
        "model"
    } else {
        "baseline"
    }
}

/// An alert as a JSON line: instrument, window, score, threshold and the most anomalous features.
pub fn alert_json(s: &WindowScore) -> serde_json::Value {
    serde_json::json!({
        "instrument": s.instrument.as_str(),
        "window_start_ns": s.window.start,
        "window_end_ns": s.window.end,
        "scale": lobsentry_operators::features::human_len(s.window.end - s.window.start),
        "score": s.score,
        "threshold": s.threshold,
        "p_value": s.p_value,
        "detectors": s.detectors.iter().map(|(n, l)| serde_json::json!({"name": n, "log10_p": -l})).collect::<Vec<_>>(),
        "is_anomaly": s.is_anomaly,
        "top_features": s.top_features.iter().map(|(n, z)| serde_json::json!({"name": n, "z": z})).collect::<Vec<_>>(),
        "model": s.model,
    })
}

type SharedWriter = Arc<Mutex<Option<BufWriter<std::fs::File>>>>;

fn open_shared(path: &Option<std::path::PathBuf>, header: Option<&str>) -> Result<Option<SharedWriter>, Error> {
    match path {
        None => Ok(None),
        Some(p) => {
            let file = std::fs::File::create(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))?;
            let mut w = BufWriter::new(file);
            if let Some(h) = header {
                writeln!(w, "{h}").map_err(|e| Error::Io(format!("{}: {e}", p.display())))?;
            }
            Ok(Some(Arc::new(Mutex::new(Some(w)))))
        }
    }
}

/// The id of a score in Kafka (`id` header): the same in every run that scores the same window.
pub fn score_id(s: &WindowScore) -> String {
    format!("{}|{}|{}", s.instrument.as_str(), s.window.end, s.model)
}

/// What identifies a job's checkpoints: a checkpoint only restores into the same dataflow.
fn job_fingerprint(config: &Config, peers: usize) -> String {
    let source = match &config.source {
        SourceConfig::Kafka(k) => {
            format!("kafka {}:{} partitions {}", k.spec.topic, k.spec.format as u8, k.spec.partitions)
        }
        other => other.kind().to_string(),
    };
    format!(
        "{source}; workers {peers}; window {:?}; book {}; detect {}; model {}",
        config.window,
        config.book,
        config.detect.is_some(),
        config.model.as_ref().map_or("none".to_string(), |m| format!("{}@{}", m.meta.name, m.meta.version))
    )
}

/// The latest complete checkpoint's parts for this process's workers, checked against the job.
fn restore_point(
    config: &Config,
    store: &CheckpointStore,
    peers: usize,
) -> Result<Option<(u64, u64, Vec<Part>)>, Error> {
    let Some(barrier) = store.latest().map_err(|e| Error::Io(format!("{}: {e}", store.dir().display())))? else {
        return Ok(None);
    };
    let process = config.cluster.as_ref().map_or(0, |c| c.process);
    let job = job_fingerprint(config, peers);
    let mut parts = Vec::new();
    for w in process * config.workers..(process + 1) * config.workers {
        let part = store.read_part(barrier, w).map_err(Error::Data)?;
        if part.peers != peers || part.job != job {
            return Err(Error::Data(format!(
                "checkpoint {} in {} was taken by another job ({}, {} workers); this run is {job}, {peers} workers. \
                 Use an empty checkpoint.dir (or the same settings).",
                barrier,
                store.dir().display(),
                part.job,
                part.peers
            )));
        }
        parts.push(part);
    }
    let next = store.next_after(barrier).unwrap_or(u64::MAX);
    Ok(Some((barrier, next, parts)))
}

type SharedKafkaWriter = Rc<RefCell<KafkaWriter>>;

/// A Kafka writer whose end offsets are checkpointed: after a restart it skips what the topic
/// already holds past them (the messages an interrupted run wrote after its last checkpoint).
fn checkpointed_writer(
    kind: &str,
    spec: &Option<KafkaWriterSpec>,
    counters: &Arc<KafkaSinkCounters>,
    registry: &Option<StateRegistry>,
) -> Option<SharedKafkaWriter> {
    let spec = spec.clone()?;
    let writer = KafkaWriter::new(spec.clone(), counters.clone()).unwrap_or_else(|e| panic!("{e}"));
    let writer = Rc::new(RefCell::new(writer));
    if let Some(registry) = registry {
        let saved = writer.clone();
        let timeout = spec.message_timeout;
        let restored = registry.register(kind, move || {
            let mut w = saved.borrow_mut();
            w.flush(timeout)?;
            encode(&w.end_offsets(timeout)?)
        });
        if let Some(bytes) = restored {
            let from: Vec<(i32, i64)> = decode(&bytes).unwrap_or_else(|e| panic!("checkpoint: {kind}: {e}"));
            let ids = read_ids(&spec.brokers, &spec.topic, &from, Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("reading back {:?} for de-duplication: {e}", spec.topic));
            writer.borrow_mut().skip_ids(ids.into_iter().collect());
        }
    }
    Some(writer)
}

type QueryParts = (InputSession<u64, (u64, Query), isize>, Rc<Cell<u64>>);

/// Attaches the analytics to `records` (and `alerts`): late records counted, answers collected into
/// `rows`; returns the query input and the analytics' max time for this worker's [`QueryDriver`].
fn attach_analytics<'scope, R: AnalyticsRecord>(
    records: StreamVec<'scope, u64, R>,
    alerts: Option<StreamVec<'scope, u64, AlertRecord>>,
    spec: AnalyticsSpec,
    (probe, answers_probe): (&ProbeHandle<u64>, &ProbeHandle<u64>),
    rows: AnswerRows,
    counters: Arc<Counters>,
) -> QueryParts {
    let (input, queries) = records.scope().new_collection();
    let analytics = records.market_analytics(alerts, queries, spec);
    analytics.late.inspect(move |_| counters.metrics.analytics_late.inc()).probe_with(probe);
    analytics.max_time_progress.probe_with(probe);
    collect_answers(analytics.answers, rows, answers_probe);
    (input, analytics.max_time)
}

/// Runs the pipeline to completion (or forever for endless sources), updating `counters`.
pub fn run(config: &Config, counters: Arc<Counters>) -> Result<RunReport, Error> {
    let mut config = config.clone();
    let peers = config.workers * config.cluster.as_ref().map_or(1, |c| c.addresses.len());
    if let SourceConfig::Kafka(k) = &mut config.source {
        // An unreachable broker or a missing topic is an error here, after the configured retries.
        k.spec.partitions = partition_count(
            &k.spec.client_config(),
            &k.spec.topic,
            k.connect_attempts,
            Duration::from_secs(5),
            k.connect_backoff,
        )
        .map_err(Error::Data)?;
        k.spec.counters = counters.kafka_source.clone();
        if config.checkpoint.is_some() && (k.spec.partitions as usize) < peers {
            return Err(Error::Data(format!(
                "checkpoints need a partition per worker: topic {:?} has {} partitions, the run has {peers} workers",
                k.spec.topic, k.spec.partitions
            )));
        }
    }
    let checkpoint = match &config.checkpoint {
        None => None,
        Some(c) => {
            let mut store = CheckpointStore::new(&c.dir).map_err(|e| Error::Io(format!("checkpoint.dir: {e}")))?;
            store.retain = c.retain;
            let restore = restore_point(&config, &store, peers)?;
            if let Some((b, _, _)) = &restore {
                eprintln!("lobsentry: resuming from checkpoint {b} in {}", c.dir.display());
            }
            Some((store, c.interval_ns, Arc::new(restore), job_fingerprint(&config, peers)))
        }
    };
    let config = &config;
    if let Ok(mut w) = counters.watermarks.lock() {
        *w = vec![0; config.workers];
    }
    counters.metrics.workers.set(config.workers as i64);
    let process = config.cluster.as_ref().map_or(0, |c| c.process);
    let output_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let book_stats = Arc::new(Mutex::new(BookStats::default()));
    let rejected_keep: Arc<Mutex<Vec<Rejected>>> = Arc::new(Mutex::new(Vec::new()));
    let labels: Arc<Mutex<Vec<AnomalyLabel>>> = Arc::new(Mutex::new(Vec::new()));
    let summary = Arc::new(Mutex::new(Summary::default()));
    // Side outputs are per process: process I > 0 of a cluster writes PATH.pI.
    let per_process = |p: &Option<std::path::PathBuf>| {
        p.as_ref().map(|p| if process == 0 { p.clone() } else { p.with_extension(format!("p{process}")) })
    };
    let dead_letter = open_shared(&per_process(&config.dead_letter), None)?;
    let alerts_writer = open_shared(&per_process(&config.alerts), None)?;
    let scores_writer = open_shared(&per_process(&config.scores), None)?;
    // ONNX Runtime: loaded and the model checked once, before any worker starts.
    let ort_env = match &config.model {
        Some(model) => {
            let env = onnxruntime(&model.onnxruntime).map_err(|e| Error::Data(e.to_string()))?;
            let mut spec = InferenceSpec::load(env.clone(), &model.dir).map_err(|e| Error::Data(e.to_string()))?;
            spec.intra_threads = model.intra_threads;
            open_session(&spec).map_err(|e| Error::Data(e.to_string()))?;
            Some(env)
        }
        None => None,
    };
    let alerts_keep: Arc<Mutex<Vec<WindowScore>>> = Arc::new(Mutex::new(Vec::new()));
    let late_writer = open_shared(&per_process(&config.late), Some(lobsentry_operators::source::decode::CSV_HEADER))?;
    if let (Output::File(p), 0) = (&config.output, process) {
        // Fail before starting when the output cannot be created (process 0 writes it).
        std::fs::File::create(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))?;
    }

    // The query API: its requests reach this process's first worker through the hub.
    let hub = Arc::new(crate::api::QueryHub::default());
    let _api = match &config.analytics {
        Some(a) => {
            let server =
                crate::api::ApiServer::start(a.address, hub.clone(), counters.clone(), a.spec, a.query_timeout)?;
            eprintln!("lobsentry: analytics API on http://{}/v1/ (see /v1/openapi.json)", server.addr());
            Some(server)
        }
        None => None,
    };
    let webhook = match &config.webhook {
        Some(w) => Some(Arc::new(Webhook::start(w.clone(), counters.clone())?)),
        None => None,
    };
    let shared = (
        config.clone(),
        counters.clone(),
        output_error.clone(),
        book_stats.clone(),
        rejected_keep.clone(),
        labels.clone(),
        summary.clone(),
        dead_letter.clone(),
        late_writer.clone(),
        alerts_writer.clone(),
        alerts_keep.clone(),
        (scores_writer.clone(), ort_env.clone(), checkpoint.clone(), hub.clone(), webhook.clone()),
    );
    let communication = match &config.cluster {
        None => timely::CommunicationConfig::Process(config.workers),
        Some(c) => timely::CommunicationConfig::Cluster {
            threads: config.workers,
            process: c.process,
            addresses: c.addresses.clone(),
            report: false,
            zerocopy: false,
        },
    };
    let timely_config = timely::Config { communication, worker: timely::WorkerConfig::default() };
    let guards = timely::execute(timely_config, move |worker| {
        let (
            config,
            counters,
            output_error,
            book_stats,
            rejected_keep,
            labels,
            summary,
            dead_letter,
            late_writer,
            alerts_writer,
            alerts_keep,
            (scores_writer, ort_env, checkpoint, hub, webhook),
        ) = shared.clone();
        let side_files: Vec<SharedWriter> =
            [&dead_letter, &late_writer, &alerts_writer, &scores_writer].into_iter().flatten().cloned().collect();
        let answers_probe = ProbeHandle::new();
        let answer_rows = AnswerRows::default();
        let local = worker.index() % config.workers;
        let probe = ProbeHandle::new();
        // Checkpoints: each stateful operator registers its state (restored from the checkpoint, if any).
        let registry: Option<StateRegistry> = checkpoint.as_ref().map(|(_, interval, restore, _)| {
            let registry = match restore.as_ref() {
                Some((_, _, parts)) => StateRegistry::restoring(&parts[local]),
                None => StateRegistry::new(),
            };
            let barrier = Barrier::every(*interval, 0);
            if let Some((_, next, _)) = restore.as_ref() {
                barrier.move_to(*next);
            }
            registry.set_barrier(barrier);
            registry
        });
        let sink_counters = counters.kafka_sink.clone();
        let kafka_alerts = checkpointed_writer("alerts-sink", &config.kafka_sinks.alerts, &sink_counters, &registry);
        let kafka_scores = checkpointed_writer("scores-sink", &config.kafka_sinks.scores, &sink_counters, &registry);
        let kafka_dlq = checkpointed_writer("dead-letter-sink", &config.kafka_sinks.dead_letter, &sink_counters, &registry);
        let kafka_features =
            checkpointed_writer("features-sink", &config.kafka_sinks.features, &sink_counters, &registry);
        let writers: Vec<SharedKafkaWriter> =
            [&kafka_alerts, &kafka_scores, &kafka_dlq, &kafka_features].into_iter().flatten().cloned().collect();
        let query_parts: Option<QueryParts> = worker.dataflow::<u64, _, _>(|scope| {
            let (events, errors): (StreamVec<'_, u64, Timed<LobEvent>>, StreamVec<'_, u64, Rejected>) = match &config.source {
                SourceConfig::Files(spec) => file_source(scope, spec.clone(), Some(probe.clone())),
                SourceConfig::Synthetic(spec) => {
                    (synthetic_source(scope, spec.clone(), Some(labels.clone())), empty(scope))
                }
                SourceConfig::Kafka(k) => kafka_source(scope, k.spec.clone(), registry.clone(), Some(probe.clone()))
                    .unwrap_or_else(|e| panic!("Kafka source: {e}")),
            };
            let events_counter = counters.clone();
            let events = events.inspect_core(move |batch| {
                if let Ok((_, data)) = batch {
                    let real = data.iter().filter(|t| !t.event.is_seed()).count();
                    events_counter.metrics.events.inc_by(real as u64);
                }
            });
            let rejected_counter = counters.clone();
            let dlq = kafka_dlq.clone();
            errors.inspect(move |r: &Rejected| {
                if let Some(w) = &dlq {
                    let id = format!("{}@{}", r.origin, r.line);
                    let headers = vec![
                        ("reason".to_string(), r.reason.clone().into_bytes()),
                        ("origin".to_string(), r.origin.clone().into_bytes()),
                        ("offset".to_string(), r.line.to_string().into_bytes()),
                    ];
                    w.borrow_mut().send(r.origin.as_bytes(), r.text.clone().into_bytes(), Some(id.as_bytes()), headers);
                }
                rejected_counter.metrics.decode_errors.inc();
                if let Ok(mut keep) = rejected_keep.lock() {
                    if keep.len() < KEEP_REJECTED {
                        keep.push(r.clone());
                    }
                }
                if let Some(w) = &dead_letter {
                    if let Ok(mut guard) = w.lock() {
                        if let Some(out) = guard.as_mut() {
                            let line = serde_json::json!({"file": r.origin, "line": r.line, "reason": r.reason, "text": r.text});
                            let _ = writeln!(out, "{line}");
                        }
                    }
                }
            })
            .probe_with(&probe);
            let late_counter = counters.clone();
            let count_late = move |e: &LobEvent| {
                late_counter.metrics.late_events.inc();
                if let Some(w) = &late_writer {
                    if let Ok(mut guard) = w.lock() {
                        if let Some(out) = guard.as_mut() {
                            let mut s = String::new();
                            lobsentry_operators::source::decode::write_csv_line(e, &mut s);
                            let _ = writeln!(out, "{s}");
                        }
                    }
                }
            };
            let mut analytics_books = None;
            let mut analytics_events = None;
            let detecting = config.detect.is_some() || config.model.is_some();
            // The input's event times, for the ensemble to tell the windows cut by the end of the input.
            let mut input_times = (detecting && config.scales.ensemble.is_some())
                .then(|| lobsentry_operators::ensemble::input_end(events.clone()));
            // The detection scales other than the output windows get their own tumbling windows,
            // from the same books (or events); their late events are the output windows' too, so
            // only the output windows count them.
            let mut scale_features: Vec<(u64, String, StreamVec<'_, u64, WindowFeatures>)> = Vec::new();
            let primary_scale = config.scales.scales.iter().any(|(_, label)| label.is_empty());
            // Scales that are multiples of tumbling output windows are rolled up from them (a few
            // operations per window); the others get their own windows over every event.
            let w = config.window;
            let rolls_up = move |ns: u64| w.size_ns == w.slide_ns && w.offset_ns == 0 && ns > w.size_ns && ns.is_multiple_of(w.size_ns);
            let features: StreamVec<'_, u64, WindowFeatures> = if config.book {
                let spec =
                    ReconstructBookSpec { book: config.book_config, stats: Some(book_stats.clone()), state: registry.clone() };
                let books = events.reconstruct_book_with(spec);
                if config.analytics.is_some() {
                    analytics_books = Some(books.clone());
                }
                for (ns, label) in config.scales.scales.iter().filter(|(ns, l)| detecting && !l.is_empty() && !rolls_up(*ns)) {
                    let (f, late) = books.clone().extract_features_with(WindowSpec::tumbling(*ns), registry.clone());
                    late.probe_with(&probe);
                    scale_features.push((*ns, label.clone(), f));
                }
                let (features, late) = books.extract_features_with(config.window, registry.clone());
                late.inspect(move |b| count_late(&b.timed.event)).probe_with(&probe);
                features
            } else {
                if config.analytics.is_some() {
                    analytics_events = Some(events.clone());
                }
                for (ns, label) in config.scales.scales.iter().filter(|(ns, l)| detecting && !l.is_empty() && !rolls_up(*ns)) {
                    let (f, late) = events.clone().extract_features_with(WindowSpec::tumbling(*ns), registry.clone());
                    late.probe_with(&probe);
                    scale_features.push((*ns, label.clone(), f));
                }
                let (features, late) = events.extract_features_with(config.window, registry.clone());
                late.inspect(move |t| count_late(&t.event)).probe_with(&probe);
                features
            };
            let windows_counter = counters.clone();
            let features_writer = kafka_features.clone();
            let features = features.inspect_core(move |batch| {
                if let Ok((_, data)) = batch {
                    if let Some(w) = &features_writer {
                        let mut w = w.borrow_mut();
                        for f in data.iter() {
                            let id = format!("{}|{}", f.instrument.as_str(), f.window.end);
                            let body = serde_json::to_vec(f).unwrap_or_default();
                            w.send(f.instrument.as_str().as_bytes(), body, Some(id.as_bytes()), Vec::new());
                        }
                    }
                    let m = &windows_counter.metrics;
                    m.windows.inc_by(data.len() as u64);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0);
                    for w in data.iter() {
                        m.window_emission_latency.observe(now.saturating_sub(w.window.end) as f64 / 1e9);
                    }
                }
            });
            let features = match &config.output {
                Output::None => features.inspect_core(move |batch| {
                    if let Ok((_, data)) = batch {
                        if let Ok(mut s) = summary.lock() {
                            for w in data.iter() {
                                s.observe(w);
                            }
                        }
                    }
                }),
                output => {
                    let factory: WriterFactory = match output.clone() {
                        Output::File(p) => Box::new(move || {
                            let f = std::fs::File::create(&p).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                            Ok(Box::new(BufWriter::with_capacity(1 << 20, f)) as Box<dyn Write>)
                        }),
                        _ => Box::new(|| Ok(Box::new(BufWriter::new(std::io::stdout())) as Box<dyn Write>)),
                    };
                    features.write_windows(config.output_format, factory, output_error.clone())
                }
            };
            // Detectors: the z-score baseline on every scale and the ONNX model on the scale it was
            // trained for, side by side; then the calibrated ensemble over all of them.
            for (ns, label) in config.scales.scales.iter().filter(|(ns, l)| detecting && !l.is_empty() && rolls_up(*ns)) {
                scale_features.push((*ns, label.clone(), features.clone().roll_up(*ns, registry.clone())));
            }
            if primary_scale && detecting {
                scale_features.insert(0, (config.window.size_ns, String::new(), features.clone()));
            }
            let mut scores: Vec<StreamVec<'_, u64, WindowScore>> = Vec::new();
            for (ns, label, scale) in scale_features {
                // Instruments that fall silent while the market trades get empty windows.
                let scale = match (&input_times, config.scales.silent_windows) {
                    (Some(times), gap) if gap > 0 => scale.fill_silent(ns, gap, times.clone(), registry.clone()),
                    _ => scale,
                };
                if let Some(spec) = config.detect {
                    scores.push(rename(scale.clone().score_zscore_with(spec, registry.clone()), &label));
                }
                let (Some(model), Some(env)) = (&config.model, &ort_env) else { continue };
                if model.meta.window_ns != ns {
                    continue;
                }
                let m = counters.clone();
                let n = counters.clone();
                let spec = InferenceSpec {
                    env: env.clone(),
                    dir: model.dir.clone(),
                    meta: model.meta.clone(),
                    intra_threads: model.intra_threads,
                    max_batch: model.max_batch,
                    threshold: model.threshold,
                    top: 3,
                    on_batch: Some(Arc::new(move |size, latency| {
                        m.metrics.inference_batch_size.observe(size as f64);
                        m.metrics.inference_latency.observe(latency.as_secs_f64());
                    })),
                    state: registry.clone(),
                    on_skip: Some(Arc::new(move |warmup, skipped| {
                        n.metrics.inference_warmup.inc_by(warmup);
                        n.metrics.inference_skipped.inc_by(skipped);
                    })),
                };
                // The model was opened and checked before the workers started; this cannot fail
                // differently on one worker than on another.
                scores.push(rename(scale.score_with_model(spec).expect("model checked at start-up"), &label));
            }
            if let (Some(spec), false) = (&config.scales.ensemble, scores.is_empty()) {
                let times = input_times.take();
                scores = vec![scope.concatenate(scores).ensemble(times, spec.clone(), registry.clone())];
            }
            let mut analytics_alerts = None;
            if !scores.is_empty() {
                let detect_counter = counters.clone();
                let webhook = webhook.clone();
                let (alerts_writer, alerts_keep, scores_writer) =
                    (alerts_writer.clone(), alerts_keep.clone(), scores_writer.clone());
                let (kafka_alerts, kafka_scores) = (kafka_alerts.clone(), kafka_scores.clone());
                let primary = primary_detector(&config);
                let scored = scope
                    .concatenate(scores)
                    .inspect_core(move |batch| {
                        let Ok((_, data)) = batch else { return };
                        let m = &detect_counter.metrics;
                        for s in data.iter() {
                            let detector = detector_label(s);
                            m.scored_windows.with_label_values(&[detector]).inc();
                            let alert = s.is_anomaly && detector == primary;
                            let to_kafka = [kafka_scores.as_ref(), kafka_alerts.as_ref().filter(|_| alert)];
                            if to_kafka.iter().any(Option::is_some) {
                                let (id, body) = (score_id(s), alert_json(s).to_string().into_bytes());
                                for w in to_kafka.into_iter().flatten() {
                                    let key = s.instrument.as_str().as_bytes();
                                    w.borrow_mut().send(key, body.clone(), Some(id.as_bytes()), Vec::new());
                                }
                            }
                            if let Some(w) = &scores_writer {
                                if let Ok(mut guard) = w.lock() {
                                    if let Some(out) = guard.as_mut() {
                                        let _ = writeln!(out, "{}", alert_json(s));
                                    }
                                }
                            }
                            if !s.is_anomaly {
                                continue;
                            }
                            m.anomalies.with_label_values(&[detector]).inc();
                            if !alert {
                                continue;
                            }
                            if let Ok(mut keep) = alerts_keep.lock() {
                                keep.push(s.clone());
                            }
                            if let Some(w) = &webhook {
                                w.offer(s);
                            }
                            if let Some(w) = &alerts_writer {
                                if let Ok(mut guard) = w.lock() {
                                    if let Some(out) = guard.as_mut() {
                                        let _ = writeln!(out, "{}", alert_json(s));
                                    }
                                }
                            }
                        }
                    });
                scored.clone().probe_with(&probe);
                if config.analytics.is_some() {
                    analytics_alerts = Some(scored.flat_map(move |s| {
                        (s.is_anomaly && detector_label(&s) == primary).then(|| AlertRecord {
                            window_end: s.window.end,
                            instrument: s.instrument,
                            body: alert_json(&s).to_string(),
                        })
                    }));
                }
            }
            features.probe_with(&probe);
            let spec = config.analytics.as_ref().map(|a| a.spec)?;
            let (alerts, rows, probes) = (analytics_alerts, answer_rows.clone(), (&probe, &answers_probe));
            match (analytics_books, analytics_events) {
                (Some(books), _) => Some(attach_analytics(books, alerts, spec, probes, rows, counters.clone())),
                (None, Some(events)) => Some(attach_analytics(events, alerts, spec, probes, rows, counters.clone())),
                (None, None) => None,
            }
        });
        if let Some(registry) = &registry {
            let unclaimed = registry.unclaimed();
            assert!(
                unclaimed.is_empty(),
                "checkpoint: state for {unclaimed:?} has no operator in this dataflow (operators: {:?})",
                registry.names()
            );
        }
        let mut coordinator = match (&checkpoint, &registry) {
            (Some((store, _, _, job)), Some(registry)) => {
                Some(Coordinator::new(store.clone(), registry.clone(), worker.index(), worker.peers(), job.clone()))
            }
            _ => None,
        };
        let mut failing_since: Option<Instant> = None;
        counters.ready.store(true, Ordering::Relaxed);
        let mut last_report = Instant::now();
        let report = |counters: &Counters| {
            let wm = probe.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
            let min = match counters.watermarks.lock() {
                Ok(mut w) => {
                    if let Some(slot) = w.get_mut(local) {
                        *slot = wm;
                    }
                    w.iter().copied().min().unwrap_or(wm)
                }
                Err(_) => wm,
            };
            if local == 0 {
                counters.metrics.sync_kafka(&counters.kafka_source, &counters.kafka_sink);
                counters.metrics.set_watermark(min);
                if let Ok(stats) = book_stats.lock() {
                    counters.metrics.sync_book(&stats);
                }
            }
        };
        let mut driver = query_parts.map(|(input, max_time)| {
            QueryDriver::new(worker.index(), input, answers_probe.clone(), answer_rows.clone(), max_time)
        });
        let mut replies: std::collections::HashMap<u64, std::sync::mpsc::Sender<crate::api::Reply>> =
            std::collections::HashMap::new();
        let mut input_ended: Option<Instant> = None;
        let serve_after_input = config.analytics.as_ref().and_then(|a| a.serve_after_input);
        let park = if coordinator.is_some() || !writers.is_empty() || driver.is_some() { 5 } else { 100 };
        while worker.step_or_park(Some(Duration::from_millis(park))) {
            if let Some(d) = driver.as_mut() {
                if local == 0 {
                    for request in hub.drain() {
                        replies.insert(d.submit(request.query), request.reply);
                    }
                }
                let frontier = probe.with_frontier(|f| f.first().copied());
                for (id, answer) in d.step(frontier) {
                    if let Some(tx) = replies.remove(&id) {
                        let _ = tx.send(crate::api::Reply::Answer(answer));
                    }
                }
                if frontier.is_none() {
                    if input_ended.is_none() && local == 0 {
                        // The input is done: make the side files complete while the API keeps serving.
                        for w in &side_files {
                            if let Ok(mut guard) = w.lock() {
                                if let Some(out) = guard.as_mut() {
                                    let _ = out.flush();
                                }
                            }
                        }
                    }
                    let since = *input_ended.get_or_insert_with(Instant::now);
                    if serve_after_input.is_some_and(|s| since.elapsed() >= s) {
                        // Serving is over: refuse new queries, fail the waiting ones, let the dataflow end.
                        if local == 0 {
                            hub.close();
                        }
                        for (_, tx) in replies.drain() {
                            let _ = tx.send(crate::api::Reply::Stopped);
                        }
                        if let Some(d) = driver.take() {
                            d.close();
                        }
                    }
                }
            }
            for w in &writers {
                w.borrow_mut().pump();
            }
            if let Some(c) = coordinator.as_mut() {
                let frontier = probe.with_frontier(|f| f.first().copied());
                match c.poll(frontier) {
                    Ok(Some(done)) => {
                        failing_since = None;
                        let m = &counters.metrics;
                        m.checkpoints.inc();
                        m.checkpoint_bytes.set(done.bytes as i64);
                        m.checkpoint_write.observe(done.write.as_secs_f64());
                        m.checkpoint_barrier.set(done.barrier as f64 / 1e9);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        // Retried at the same barrier (sources hold there): a broker outage pauses the
                        // pipeline instead of losing anything.
                        counters.metrics.checkpoint_failures.inc();
                        if failing_since.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                            eprintln!("lobsentry: checkpoint failed, retrying: {e}");
                            failing_since = Some(Instant::now());
                        }
                    }
                }
            }
            if last_report.elapsed() >= Duration::from_millis(200) {
                last_report = Instant::now();
                report(&counters);
            }
        }
        for w in &writers {
            // Everything the run produced must reach Kafka: wait for it (librdkafka and our retry
            // queue keep retrying while the broker is down).
            let mut w = w.borrow_mut();
            while let Err(e) = w.flush(Duration::from_secs(30)) {
                eprintln!("lobsentry: waiting for Kafka: {e}");
            }
        }
        report(&counters);
    })
    .map_err(Error::Timely)?;
    // Timed from here: a cluster's processes have connected, the workers are running.
    let started = Instant::now();
    for result in guards.join() {
        result.map_err(Error::Timely)?;
    }
    hub.close();
    if let Some(w) = &webhook {
        w.finish();
    }
    for w in [&dead_letter, &late_writer, &alerts_writer, &scores_writer].into_iter().flatten() {
        if let Ok(mut guard) = w.lock() {
            if let Some(mut out) = guard.take() {
                out.flush().map_err(|e| Error::Io(format!("side output: {e}")))?;
            }
        }
    }
    if let Some(e) = output_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(Error::Io(e));
    }
    let take = |m: &Arc<Mutex<Vec<Rejected>>>| m.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    let mut labels = labels.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    labels.sort_by_key(|l| (l.start_ns, l.instrument));
    let m = &counters.metrics;
    Ok(RunReport {
        events: m.events.get(),
        rejected: m.decode_errors.get(),
        late: m.late_events.get(),
        windows: m.windows.get(),
        book: book_stats.lock().map(|s| *s).unwrap_or_default(),
        elapsed: started.elapsed(),
        first_rejected: take(&rejected_keep),
        labels,
        summary: summary.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default(),
        scored: m.scored_windows.with_label_values(&[primary_detector(config)]).get(),
        anomalies: {
            let mut a = alerts_keep.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
            a.sort_by_key(|x| (x.window.end, x.instrument));
            a
        },
    })
}
