//! Wires the standard dataflow of one worker from the job description. Nothing here reads flags
//! that may differ between processes: the window output stage follows process 0's choice.

use super::checkpoints::{checkpointed_writer, SharedKafkaWriter};
use super::job::Agreed;
use super::{Shared, KEEP_REJECTED};
use crate::alert::{detector_label, primary_detector, Alert};
use crate::config::{Output, SourceConfig};
use crate::metrics::Counters;
use differential_dataflow::input::{Input as _, InputSession};
use lobsentry_operators::analytics::queries::{collect_answers, AnswerRows};
use lobsentry_operators::analytics::{AlertRecord, AnalyticsRecord, AnalyticsSpec, MarketAnalytics, Query};
use lobsentry_operators::book::{ReconstructBook, ReconstructBookSpec};
use lobsentry_operators::checkpoint::{encode, Barrier, StateRegistry};
use lobsentry_operators::detect::{ScoreWindows, WindowScore};
use lobsentry_operators::ensemble::Ensemble;
use lobsentry_operators::event::{LobEvent, Timed};
use lobsentry_operators::features::{ExtractFeatures, WindowFeatures};
use lobsentry_operators::inference::{InferenceSpec, ScoreWithModel};
use lobsentry_operators::multivariate::MultivariateState;
use lobsentry_operators::rollup::{FillSilent, RollUp};
use lobsentry_operators::sink::{WriteWindows, WriterFactory};
use lobsentry_operators::source::kafka::kafka_source;
use lobsentry_operators::source::{file_source, synthetic_source, Rejected};
use lobsentry_operators::window::WindowSpec;
use std::cell::Cell;
use std::io::{BufWriter, Write};
use std::rc::Rc;
use std::sync::Arc;
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::vec::Map as _;
use timely::dataflow::operators::Concatenate;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{ProbeHandle, StreamVec};

/// How long a checkpoint waits for an alert sink to make what it took durable.
const ALERT_SINK_SYNC: std::time::Duration = std::time::Duration::from_secs(30);

/// The query input of the analytics and its max time, for the worker's query driver.
pub type QueryParts = (InputSession<u64, (u64, Query), isize>, Rc<Cell<u64>>);

/// What the worker loop drives.
pub struct Built {
    /// The frontier of everything the dataflow computes.
    pub probe: ProbeHandle<u64>,
    /// The frontier of the analytics' answers.
    pub answers_probe: ProbeHandle<u64>,
    /// The answers.
    pub answer_rows: AnswerRows,
    /// The analytics' query input (when the analytics are on).
    pub query_parts: Option<QueryParts>,
    /// The Kafka writers to pump and flush.
    pub writers: Vec<SharedKafkaWriter>,
    /// The checkpointed state (when checkpoints are on).
    pub registry: Option<StateRegistry>,
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

/// Attaches the analytics to `records` (and `alerts`): late records counted, answers collected into
/// `rows`; returns the query input and the analytics' max time for this worker's query driver.
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

/// Builds the worker's dataflow.
pub fn build(worker: &mut timely::worker::Worker, shared: &Shared, agreed: Agreed) -> Result<Built, String> {
    let Shared { config, counters, .. } = shared;
    let local = worker.index() % config.workers;
    let probe = ProbeHandle::new();
    let answers_probe = ProbeHandle::new();
    let answer_rows = AnswerRows::default();
    // Checkpoints: each stateful operator registers its state (restored from the checkpoint, if any).
    let registry: Option<StateRegistry> = shared.checkpoint.as_ref().map(|plan| {
        let registry = match plan.restore.as_ref().and_then(|r| r.parts.get(local)) {
            Some(part) => StateRegistry::restoring(part),
            None => StateRegistry::new(),
        };
        let barrier = Barrier::every(plan.interval_ns, 0);
        if let Some(r) = plan.restore.as_ref() {
            barrier.move_to(r.next);
        }
        registry.set_barrier(barrier);
        registry
    });
    if let Some(registry) = &registry {
        // At each checkpoint every alert sink makes what it took durable (the store commits its
        // rows), so a restart from the checkpoint resends only what follows it.
        let alert_sinks = shared.alert_sinks.clone();
        registry.register("alert-sinks", move || {
            for sink in &alert_sinks {
                sink.sync(ALERT_SINK_SYNC).map_err(|e| format!("{}: {e}", sink.name()))?;
            }
            encode(&())
        });
    }
    let sink_counters = counters.kafka_sink.clone();
    let sinks = &config.kafka_sinks;
    let kafka_alerts = checkpointed_writer("alerts-sink", &sinks.alerts, &sink_counters, &registry)?;
    let kafka_scores = checkpointed_writer("scores-sink", &sinks.scores, &sink_counters, &registry)?;
    let kafka_dlq = checkpointed_writer("dead-letter-sink", &sinks.dead_letter, &sink_counters, &registry)?;
    let kafka_features = checkpointed_writer("features-sink", &sinks.features, &sink_counters, &registry)?;
    let writers: Vec<SharedKafkaWriter> =
        [&kafka_alerts, &kafka_scores, &kafka_dlq, &kafka_features].into_iter().flatten().cloned().collect();
    // A message Kafka refuses for good (too large, unknown topic, not authorized) leaves the queue so
    // that nothing waits behind it: it is counted, named in the run's warnings (the first ten) and
    // written whole to the dead-letter file when there is one.
    for w in &writers {
        let (warnings, file) = (shared.warnings.clone(), shared.sides.dead_letter.clone());
        let warned = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        w.borrow_mut().on_refused(Arc::new(move |topic: &str, key: &[u8], value: &[u8], reason: &str| {
            if warned.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < KEEP_REJECTED {
                if let Ok(mut warnings) = warnings.lock() {
                    warnings.push(format!(
                        "Kafka refused a {}-byte message to {topic:?} for good: {reason}{}",
                        value.len(),
                        if file.is_some() { " (written to the dead-letter file)" } else { "" }
                    ));
                }
            }
            if let Some(f) = &file {
                f.line(
                    &serde_json::json!({
                        "file": format!("kafka:{topic}"),
                        "reason": reason,
                        "key": String::from_utf8_lossy(key),
                        "text": String::from_utf8_lossy(value),
                    })
                    .to_string(),
                );
            }
        }));
    }
    let query_parts: Result<Option<QueryParts>, String> = worker.dataflow::<u64, _, _>(|scope| {
        let (events, errors): (StreamVec<'_, u64, Timed<LobEvent>>, StreamVec<'_, u64, Rejected>) = match &config.source
        {
            SourceConfig::Files(spec) => file_source(scope, spec.clone(), Some(probe.clone())),
            SourceConfig::Synthetic(spec) => {
                (synthetic_source(scope, spec.clone(), Some(shared.labels.clone())), empty(scope))
            }
            SourceConfig::Kafka(k) => kafka_source(scope, k.spec.clone(), registry.clone(), Some(probe.clone()))
                .map_err(|e| format!("Kafka source: {e}"))?,
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
        let (rejected_keep, dead_letter) = (shared.rejected_keep.clone(), shared.sides.dead_letter.clone());
        errors
            .inspect(move |r: &Rejected| {
                if let Some(w) = &dlq {
                    let id = format!("{}@{}", r.origin, r.line);
                    let headers = vec![
                        ("reason".to_string(), r.reason.clone().into_bytes()),
                        ("origin".to_string(), r.origin.clone().into_bytes()),
                        ("offset".to_string(), r.line.to_string().into_bytes()),
                    ];
                    // The original bytes where the source kept them (Kafka), else the text.
                    let value = r.raw.clone().unwrap_or_else(|| r.text.clone().into_bytes());
                    w.borrow_mut().send(r.origin.as_bytes(), value, Some(id.as_bytes()), headers);
                }
                rejected_counter.metrics.decode_errors.inc();
                if let Ok(mut keep) = rejected_keep.lock() {
                    if keep.len() < KEEP_REJECTED {
                        keep.push(r.clone());
                    }
                }
                if let Some(w) = &dead_letter {
                    w.line(
                        &serde_json::json!({"file": r.origin, "line": r.line, "reason": r.reason, "text": r.text})
                            .to_string(),
                    );
                }
            })
            .probe_with(&probe);
        let late_counter = counters.clone();
        let late_file = shared.sides.late.clone();
        let count_late = move |e: &LobEvent| {
            late_counter.metrics.late_events.inc();
            if let Some(w) = &late_file {
                let mut s = String::new();
                lobsentry_operators::source::decode::write_csv_line(e, &mut s);
                w.line(&s);
            }
        };
        let mut analytics_books = None;
        let mut analytics_events = None;
        let detecting = config.detect.is_some() || config.model.is_some();
        // The input's event times, for the ensemble to tell the windows cut by the end of the input.
        let mut input_times = (detecting && config.scales.ensemble.is_some())
            .then(|| lobsentry_operators::ensemble::input_end(events.clone()));
        // The detection scales other than the output windows get their own tumbling windows, from
        // the same books (or events); their late events are the output windows' too, so only the
        // output windows count them.
        let mut scale_features: Vec<(u64, String, StreamVec<'_, u64, WindowFeatures>)> = Vec::new();
        let primary_scale = config.scales.scales.iter().any(|(_, label)| label.is_empty());
        // Scales that are multiples of tumbling output windows are rolled up from them (a few
        // operations per window); the others get their own windows over every event.
        let w = config.window;
        let rolls_up = move |ns: u64| {
            w.size_ns == w.slide_ns && w.offset_ns == 0 && ns > w.size_ns && ns.is_multiple_of(w.size_ns)
        };
        let own_windows = || config.scales.scales.iter().filter(|(ns, l)| detecting && !l.is_empty() && !rolls_up(*ns));
        let features: StreamVec<'_, u64, WindowFeatures> = if config.book {
            let spec = ReconstructBookSpec {
                book: config.book_config,
                stats: Some(shared.book_stats.clone()),
                state: registry.clone(),
                visible_levels: config.book_levels.clone(),
            };
            let books = events.reconstruct_book_with(spec);
            if config.analytics.is_some() {
                analytics_books = Some(books.clone());
            }
            for (ns, label) in own_windows() {
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
            for (ns, label) in own_windows() {
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
        let window_sinks: Vec<_> = shared.alert_sinks.iter().filter(|s| s.wants_windows()).cloned().collect();
        let features = features.inspect_core(move |batch| {
            if let Ok((_, data)) = batch {
                for sink in &window_sinks {
                    for f in data.iter() {
                        sink.window(f);
                    }
                }
                if let Some(w) = &features_writer {
                    // The same JSON as the file output's `.jsonl`: the symbol as a string, named features.
                    let mut w = w.borrow_mut();
                    let mut body = String::new();
                    for f in data.iter() {
                        let id = format!("{}|{}", f.instrument.as_str(), f.window.end);
                        body.clear();
                        lobsentry_operators::sink::WindowFormat::JsonLines.write(f, &mut body);
                        let bytes = body.trim_end().as_bytes().to_vec();
                        w.send(f.instrument.as_str().as_bytes(), bytes, Some(id.as_bytes()), Vec::new());
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
        // The window output: every process builds the stage process 0 needs (it alone writes).
        if agreed.output {
            let factory: WriterFactory = match config.output.clone() {
                Output::File(p) => Box::new(move || {
                    let f = std::fs::File::create(&p)
                        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
                    Ok(Box::new(BufWriter::with_capacity(1 << 20, f)) as Box<dyn Write>)
                }),
                Output::Stdout => Box::new(|| Ok(Box::new(BufWriter::new(std::io::stdout())) as Box<dyn Write>)),
                Output::None => {
                    Box::new(|| Err(std::io::Error::other("process 0 has no --output but writes the output")))
                }
            };
            features
                .clone()
                .write_windows(config.output_format, factory, shared.output_error.clone())
                .probe_with(&probe);
        } else {
            let summary = shared.summary.clone();
            features
                .clone()
                .inspect_core(move |batch| {
                    if let (Ok((_, data)), Ok(mut s)) = (batch, summary.lock()) {
                        for w in data.iter() {
                            s.observe(w);
                        }
                    }
                })
                .probe_with(&probe);
        }
        // Detectors: the z-score baseline on every scale and the ONNX model on the scale it was
        // trained for, side by side; then the calibrated ensemble over all of them. They read the
        // windows where they were made (no detour through the output's worker).
        for (ns, label) in config.scales.scales.iter().filter(|(ns, l)| detecting && !l.is_empty() && rolls_up(*ns)) {
            scale_features.push((
                *ns,
                label.clone(),
                features.clone().roll_up(config.scales.window(*ns), registry.clone()),
            ));
        }
        if primary_scale && detecting {
            scale_features.insert(0, (config.window.size_ns, String::new(), features.clone()));
        }
        let mut scores: Vec<StreamVec<'_, u64, WindowScore>> = Vec::new();
        for (ns, label, scale) in scale_features {
            // Tumbling but for the sliding scales (the primary scale is tumbling output windows).
            let windows = config.scales.window(ns);
            // Instruments that fall silent while the market trades get empty windows.
            let scale = match (&input_times, config.scales.silent_windows) {
                (Some(times), gap) if gap > 0 => scale.fill_silent(windows, gap, times.clone(), registry.clone()),
                _ => scale,
            };
            if let Some(spec) = config.detect {
                scores.push(rename(scale.clone().score_zscore_with(spec, registry.clone()), &label));
            }
            if let Some(mut spec) = config.multivariate {
                // The same market time at every scale (multivariate-span is in windows of window.size;
                // a sliding scale has a window every slide).
                spec.span = lobsentry_operators::multivariate::span_at_scale(
                    spec.span,
                    config.window.size_ns,
                    windows.slide_ns,
                );
                let scored = scale.clone().score_detector::<MultivariateState>(spec, registry.clone());
                scores.push(rename(scored, &label));
            }
            let Some(env) = &shared.ort_env else { continue };
            for model in config.model.iter().chain(&config.extra_models) {
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
                // The model was opened and checked before the workers started.
                let scored = scale.clone().score_with_model(spec).map_err(|e| format!("model: {e}"))?;
                scores.push(rename(scored, &label));
            }
        }
        if let (Some(spec), false) = (&config.scales.ensemble, scores.is_empty()) {
            let times = input_times.take();
            scores = vec![scope.concatenate(scores).ensemble(times, spec.clone(), registry.clone())];
        }
        let mut analytics_alerts = None;
        let primary = primary_detector(config);
        if !scores.is_empty() {
            let detect_counter = counters.clone();
            let alert_sinks = shared.alert_sinks.clone();
            let score_sinks: Vec<_> = shared.alert_sinks.iter().filter(|s| s.wants_scores()).cloned().collect();
            let (alerts_keep, scores_file) = (shared.alerts_keep.clone(), shared.sides.scores.clone());
            let (decided, calibrated) = (shared.decided.clone(), config.scales.ensemble.is_some());
            // The ensemble's decided windows per scale (a series per configured scale, from 0).
            let decided_counters: Vec<(u64, prometheus::IntCounter)> = if calibrated {
                let m = &counters.metrics;
                let label = |ns: u64| lobsentry_operators::features::human_len(ns);
                config
                    .scales
                    .scales
                    .iter()
                    .map(|(ns, _)| (*ns, m.decided_windows.with_label_values(&[&label(*ns)])))
                    .collect()
            } else {
                Vec::new()
            };
            // Windows per (window length, scorer) of this batch; the names stay, the counts restart.
            let mut batch_counts: Vec<(u64, String, u64)> = Vec::new();
            let (kafka_alerts, kafka_scores) = (kafka_alerts.clone(), kafka_scores.clone());
            let scored = scope.concatenate(scores).inspect_core(move |batch| {
                let Ok((_, data)) = batch else { return };
                let m = &detect_counter.metrics;
                for s in data.iter() {
                    let detector = detector_label(s);
                    m.scored_windows.with_label_values(&[detector]).inc();
                    if calibrated {
                        let len = s.window.end - s.window.start;
                        if detector == "ensemble" {
                            if let Some((_, c)) = decided_counters.iter().find(|(l, _)| *l == len) {
                                c.inc();
                            }
                        }
                        match batch_counts.iter_mut().find(|(l, name, _)| *l == len && *name == s.model) {
                            Some((_, _, n)) => *n += 1,
                            None => batch_counts.push((len, s.model.clone(), 1)),
                        }
                    }
                    let alert = s.is_anomaly && detector == primary;
                    let to_kafka = [kafka_scores.as_ref(), kafka_alerts.as_ref().filter(|_| alert)];
                    let wanted = to_kafka.iter().any(Option::is_some)
                        || scores_file.is_some()
                        || alert
                        || !score_sinks.is_empty();
                    let record = wanted.then(|| Alert::from_score(s));
                    if let Some(record) = &record {
                        let body = record.to_json();
                        if to_kafka.iter().any(Option::is_some) {
                            let id = record.id();
                            for w in to_kafka.into_iter().flatten() {
                                let key = s.instrument.as_str().as_bytes();
                                w.borrow_mut().send(key, body.clone().into_bytes(), Some(id.as_bytes()), Vec::new());
                            }
                        }
                        if let Some(w) = &scores_file {
                            w.line(&body);
                        }
                        for sink in &score_sinks {
                            sink.score(record);
                        }
                        if alert {
                            for sink in &alert_sinks {
                                sink.send(record);
                            }
                        }
                    }
                    if !s.is_anomaly {
                        continue;
                    }
                    m.anomalies.with_label_values(&[detector]).inc();
                    if alert {
                        if let Ok(mut keep) = alerts_keep.lock() {
                            keep.push(s.clone());
                        }
                    }
                }
                if batch_counts.iter().any(|(_, _, n)| *n > 0) {
                    if let Ok(mut d) = decided.lock() {
                        for (len, name, n) in batch_counts.iter_mut().filter(|(_, _, n)| *n > 0) {
                            let ensemble = name.starts_with("ensemble");
                            let e = d.entry(*len).or_default();
                            if ensemble {
                                e.1 += std::mem::take(n);
                            } else {
                                *e.0.entry(name.clone()).or_default() += std::mem::take(n);
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
                        body: Alert::from_score(&s).to_json(),
                    })
                }));
            }
        }
        let Some(spec) = config.analytics.as_ref().map(|a| a.spec) else { return Ok(None) };
        let (alerts, rows, probes) = (analytics_alerts, answer_rows.clone(), (&probe, &answers_probe));
        Ok(match (analytics_books, analytics_events) {
            (Some(books), _) => Some(attach_analytics(books, alerts, spec, probes, rows, counters.clone())),
            (None, Some(events)) => Some(attach_analytics(events, alerts, spec, probes, rows, counters.clone())),
            (None, None) => None,
        })
    });
    let query_parts = query_parts?;
    if let Some(registry) = &registry {
        let unclaimed = registry.unclaimed();
        if !unclaimed.is_empty() {
            return Err(format!(
                "checkpoint: state for {unclaimed:?} has no operator in this dataflow (operators: {:?})",
                registry.names()
            ));
        }
    }
    Ok(Built { probe, answers_probe, answer_rows, query_parts, writers, registry })
}
