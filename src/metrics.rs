//! The pipeline's Prometheus metrics (Materialize's pattern): one struct whose `register_into`
//! registers every metric in a registry created per run and passed down; never a global registry.
//!
//! Names are `lobsentry_<subsystem>_<what>_{total,seconds,bytes}`; label names are constants and take
//! a bounded set of values (no per-instrument labels).

use lobsentry_operators::book::BookStats;
use lobsentry_operators::sink::kafka::KafkaSinkCounters;
use lobsentry_operators::source::kafka::KafkaSourceCounters;
use prometheus::{Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

/// Label: the kind of source ("files", "synthetic").
pub const LABEL_SOURCE: &str = "source";
/// Label: the kind of book inconsistency.
pub const LABEL_KIND: &str = "kind";

/// Metrics of one run of the standard pipeline, in one process.
#[derive(Debug)]
pub struct PipelineMetrics {
    /// Events decoded, by source kind.
    pub events: IntCounter,
    /// Lines rejected by the decoders.
    pub decode_errors: IntCounter,
    /// Events that arrived after every window they belong to had fired.
    pub late_events: IntCounter,
    /// Windows emitted.
    pub windows: IntCounter,
    /// Events applied to books.
    pub book_events: IntCounter,
    /// Book inconsistencies by kind.
    pub book_inconsistencies: IntCounterVec,
    /// Event-time watermark of this process (the slowest worker's frontier), as Unix seconds.
    pub watermark: Gauge,
    /// Wall clock minus the watermark, in seconds.
    pub watermark_lag: Gauge,
    /// Wall clock at emission minus the window's end (event time), in seconds.
    pub window_emission_latency: Histogram,
    /// Worker threads in this process.
    pub workers: IntGauge,
    /// Windows scored, by detector ("baseline", "model").
    pub scored_windows: IntCounterVec,
    /// Windows flagged as anomalous, by detector.
    pub anomalies: IntCounterVec,
    /// Windows the calibrated ensemble decided, by detection scale: none until the scale's warm-up
    /// is over (each configured scale's series starts at 0).
    pub decided_windows: IntCounterVec,
    /// Windows per ONNX Runtime call.
    pub inference_batch_size: Histogram,
    /// Latency of an ONNX Runtime call.
    pub inference_latency: Histogram,
    /// Windows not scored yet because their instrument's sequence is not full.
    pub inference_warmup: IntCounter,
    /// Windows skipped by the model (too many missing features, NaN/inf outputs, failed calls).
    pub inference_skipped: IntCounter,
    /// Kafka: messages consumed.
    pub kafka_messages: IntCounter,
    /// Kafka: consumer errors (each retried by librdkafka).
    pub kafka_consumer_errors: IntCounter,
    /// Kafka: messages acknowledged by the brokers (alerts, scores, dead letters).
    pub kafka_delivered: IntCounter,
    /// Kafka: deliveries that failed and were queued again.
    pub kafka_delivery_retries: IntCounter,
    /// Kafka: messages not written again after a restart (already in the topic).
    pub kafka_deduplicated: IntCounter,
    /// Kafka: offset commits that failed.
    pub kafka_commit_errors: IntCounter,
    /// Kafka: messages refused for good (too large, unknown topic, not authorized).
    pub kafka_refused: IntCounter,
    /// Kafka: dead letters cut to the size limit.
    pub kafka_truncated: IntCounter,
    /// Checkpoints this process's workers completed (one per worker and checkpoint).
    pub checkpoints: IntCounter,
    /// Checkpoint attempts that failed (retried at the same barrier).
    pub checkpoint_failures: IntCounter,
    /// Bytes of this process's part of the last checkpoint, per worker (the last writer wins).
    pub checkpoint_bytes: IntGauge,
    /// Time a worker spent serialising and writing its part.
    pub checkpoint_write: Histogram,
    /// Barrier of the last complete checkpoint (event time, Unix seconds).
    pub checkpoint_barrier: Gauge,
    /// Analytics: events that arrived after their analytics tick closed (not in the analytics).
    pub analytics_late: IntCounter,
    /// Webhook: alerts delivered (2xx).
    pub webhook_sent: IntCounter,
    /// Webhook: alerts given up on (attempts exhausted or a 4xx answer).
    pub webhook_failed: IntCounter,
    /// Webhook: attempts that failed and were retried.
    pub webhook_retries: IntCounter,
    /// Webhook: alerts not sent because of the per-instrument rate limit.
    pub webhook_suppressed: IntCounter,
    /// Webhook: alerts dropped because the delivery queue was full.
    pub webhook_dropped: IntCounter,
    /// Email: alerts delivered to the SMTP server.
    pub email_sent: IntCounter,
    /// Email: alerts given up on.
    pub email_failed: IntCounter,
    /// Email: attempts retried.
    pub email_retries: IntCounter,
    /// Email: alerts not sent because of the per-instrument rate limit.
    pub email_suppressed: IntCounter,
    /// Email: alerts dropped because the delivery queue was full.
    pub email_dropped: IntCounter,
    /// Store: rows written (alerts, scores, windows), duplicates included.
    pub store_rows: IntCounter,
    /// Store: rows already in the database (a restarted run), left as they were.
    pub store_duplicates: IntCounter,
    /// Store: rows the database refused.
    pub store_rejected: IntCounter,
    /// Store: writes retried after a connection error.
    pub store_retries: IntCounter,
    /// API: requests answered, by status class ("2xx", "4xx", "5xx").
    pub api_requests: IntCounterVec,
    /// API: time from a query's arrival to its answer.
    pub api_query: Histogram,
    book_seen: Mutex<BookStats>,
    kafka_seen: Mutex<[u64; 8]>,
}

impl PipelineMetrics {
    /// Creates and registers every metric; `source` is the source kind label value.
    pub fn register_into(registry: &Registry, source: &str) -> prometheus::Result<Self> {
        let events_vec = IntCounterVec::new(
            Opts::new("lobsentry_source_events_total", "Events decoded by the sources."),
            &[LABEL_SOURCE],
        )?;
        registry.register(Box::new(events_vec.clone()))?;
        let counter = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<Gauge> {
            let g = Gauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let book_inconsistencies = IntCounterVec::new(
            Opts::new("lobsentry_book_inconsistencies_total", "Book inconsistencies (never fatal), by kind."),
            &[LABEL_KIND],
        )?;
        registry.register(Box::new(book_inconsistencies.clone()))?;
        for kind in BOOK_KINDS {
            book_inconsistencies.with_label_values(&[kind]);
        }
        let window_emission_latency = Histogram::with_opts(
            HistogramOpts::new(
                "lobsentry_window_emission_latency_seconds",
                "Wall clock at emission minus the window's end in event time (meaningful for live sources).",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0]),
        )?;
        registry.register(Box::new(window_emission_latency.clone()))?;
        let workers = IntGauge::new("lobsentry_workers", "Worker threads in this process.")?;
        registry.register(Box::new(workers.clone()))?;
        Ok(PipelineMetrics {
            events: events_vec.with_label_values(&[source]),
            decode_errors: counter("lobsentry_source_decode_errors_total", "Input lines rejected by the decoders.")?,
            late_events: counter(
                "lobsentry_window_late_events_total",
                "Events that arrived after every window they belong to had fired.",
            )?,
            windows: counter("lobsentry_window_emitted_total", "Windows emitted.")?,
            book_events: counter("lobsentry_book_events_total", "Events applied to order books.")?,
            book_inconsistencies,
            watermark: gauge("lobsentry_watermark_seconds", "Event-time watermark of this process, Unix seconds.")?,
            watermark_lag: gauge("lobsentry_watermark_lag_seconds", "Wall clock minus the watermark, seconds.")?,
            window_emission_latency,
            workers,
            scored_windows: vec_counter(
                registry,
                "lobsentry_detect_scored_windows_total",
                "Windows scored, by detector.",
                LABEL_DETECTOR,
                &DETECTORS,
            )?,
            anomalies: vec_counter(
                registry,
                "lobsentry_detect_anomalies_total",
                "Windows flagged as anomalous, by detector.",
                LABEL_DETECTOR,
                &DETECTORS,
            )?,
            decided_windows: vec_counter(
                registry,
                "lobsentry_detect_decided_windows_total",
                "Windows the calibrated ensemble decided (past the warm-up), by detection scale.",
                LABEL_SCALE,
                &[],
            )?,
            inference_batch_size: histogram(
                registry,
                "lobsentry_inference_batch_size",
                "Windows per ONNX Runtime call.",
                vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0],
            )?,
            inference_latency: histogram(
                registry,
                "lobsentry_inference_batch_seconds",
                "Latency of one ONNX Runtime call.",
                prometheus::exponential_buckets(0.0001, 2.0, 16)?,
            )?,
            inference_warmup: counter(
                "lobsentry_inference_warmup_windows_total",
                "Windows not scored because their instrument's sequence is not full yet.",
            )?,
            inference_skipped: counter(
                "lobsentry_inference_skipped_windows_total",
                "Windows the model skipped (missing features, NaN/inf outputs, failed calls).",
            )?,
            kafka_messages: counter("lobsentry_kafka_messages_total", "Kafka messages consumed.")?,
            kafka_consumer_errors: counter(
                "lobsentry_kafka_consumer_errors_total",
                "Kafka consumer errors (broker down, transport); librdkafka retries them.",
            )?,
            kafka_delivered: counter("lobsentry_kafka_delivered_total", "Messages acknowledged by Kafka.")?,
            kafka_delivery_retries: counter(
                "lobsentry_kafka_delivery_retries_total",
                "Kafka deliveries that failed and were queued again with backoff.",
            )?,
            kafka_deduplicated: counter(
                "lobsentry_kafka_deduplicated_total",
                "Messages not written again after a restart because the topic already had them.",
            )?,
            kafka_commit_errors: counter("lobsentry_kafka_commit_errors_total", "Kafka offset commits that failed.")?,
            kafka_refused: counter(
                "lobsentry_kafka_refused_total",
                "Messages Kafka refused for good (too large, unknown topic, not authorized); they go to the dead-letter file.",
            )?,
            kafka_truncated: counter(
                "lobsentry_kafka_truncated_total",
                "Dead letters cut to the producer's size limit (with a truncated header).",
            )?,
            checkpoints: counter(
                "lobsentry_checkpoints_total",
                "Checkpoint parts completed by this process's workers.",
            )?,
            checkpoint_failures: counter(
                "lobsentry_checkpoint_failures_total",
                "Checkpoint attempts that failed (retried at the same barrier).",
            )?,
            checkpoint_bytes: {
                let g = IntGauge::new("lobsentry_checkpoint_part_bytes", "Size of the last checkpoint part written.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            checkpoint_write: histogram(
                registry,
                "lobsentry_checkpoint_write_seconds",
                "Time a worker spent serialising and writing its checkpoint part.",
                prometheus::exponential_buckets(0.0005, 2.0, 16)?,
            )?,
            checkpoint_barrier: gauge(
                "lobsentry_checkpoint_barrier_seconds",
                "Event time of the last complete checkpoint's barrier, Unix seconds.",
            )?,
            analytics_late: counter(
                "lobsentry_analytics_late_events_total",
                "Events that arrived after their analytics tick closed (counted, not in the analytics).",
            )?,
            webhook_sent: counter("lobsentry_webhook_sent_total", "Alerts delivered to the webhook (2xx).")?,
            webhook_failed: counter(
                "lobsentry_webhook_failed_total",
                "Alerts the webhook sink gave up on (attempts exhausted, or a 4xx answer).",
            )?,
            webhook_retries: counter(
                "lobsentry_webhook_retries_total",
                "Webhook attempts that failed and were retried.",
            )?,
            webhook_suppressed: counter(
                "lobsentry_webhook_suppressed_total",
                "Alerts not posted because of the per-instrument rate limit.",
            )?,
            webhook_dropped: counter(
                "lobsentry_webhook_dropped_total",
                "Alerts dropped because the webhook delivery queue was full.",
            )?,
            email_sent: counter("lobsentry_email_sent_total", "Alert emails accepted by the SMTP server.")?,
            email_failed: counter(
                "lobsentry_email_failed_total",
                "Alert emails given up on (attempts exhausted, or a permanent SMTP error).",
            )?,
            email_retries: counter("lobsentry_email_retries_total", "Email attempts that failed and were retried.")?,
            email_suppressed: counter(
                "lobsentry_email_suppressed_total",
                "Alerts not emailed because of the per-instrument rate limit.",
            )?,
            email_dropped: counter(
                "lobsentry_email_dropped_total",
                "Alerts dropped because the email delivery queue was full.",
            )?,
            store_rows: counter("lobsentry_store_rows_total", "Rows sent to PostgreSQL (alerts, scores, windows).")?,
            store_duplicates: counter(
                "lobsentry_store_duplicate_rows_total",
                "Rows PostgreSQL already held (ON CONFLICT DO NOTHING), e.g. after a restart.",
            )?,
            store_rejected: counter(
                "lobsentry_store_rejected_total",
                "Rows PostgreSQL refused (reported with the reason).",
            )?,
            store_retries: counter(
                "lobsentry_store_retries_total",
                "PostgreSQL writes retried after a connection error (the run waits meanwhile).",
            )?,
            api_requests: vec_counter(
                registry,
                "lobsentry_api_requests_total",
                "Query API requests answered, by status class.",
                LABEL_STATUS,
                &["2xx", "4xx", "5xx"],
            )?,
            api_query: histogram(
                registry,
                "lobsentry_api_query_seconds",
                "Time from a query's arrival to its answer.",
                prometheus::exponential_buckets(0.0005, 2.0, 16)?,
            )?,
            book_seen: Mutex::new(BookStats::default()),
            kafka_seen: Mutex::new([0; 8]),
        })
    }

    /// Brings the Kafka counters up to the totals of the process's sources and writers.
    pub fn sync_kafka(
        &self,
        source: &lobsentry_operators::source::kafka::KafkaSourceCounters,
        sink: &lobsentry_operators::sink::kafka::KafkaSinkCounters,
    ) {
        use std::sync::atomic::Ordering::Relaxed;
        let Ok(mut seen) = self.kafka_seen.lock() else { return };
        let now = [
            source.messages.load(Relaxed),
            source.errors.load(Relaxed),
            sink.delivered.load(Relaxed),
            sink.retries.load(Relaxed),
            sink.deduplicated.load(Relaxed),
            source.commit_errors.load(Relaxed),
            sink.refused.load(Relaxed),
            sink.truncated.load(Relaxed),
        ];
        let counters = [
            &self.kafka_messages,
            &self.kafka_consumer_errors,
            &self.kafka_delivered,
            &self.kafka_delivery_retries,
            &self.kafka_deduplicated,
            &self.kafka_commit_errors,
            &self.kafka_refused,
            &self.kafka_truncated,
        ];
        for ((c, n), s) in counters.iter().zip(now).zip(seen.iter()) {
            c.inc_by(n.saturating_sub(*s));
        }
        *seen = now;
    }

    /// Brings the book counters up to `totals` (the sum over this process's workers).
    pub fn sync_book(&self, totals: &BookStats) {
        let Ok(mut seen) = self.book_seen.lock() else { return };
        self.book_events.inc_by(totals.events.saturating_sub(seen.events));
        let pairs = [
            ("unknown_order", totals.unknown_order, seen.unknown_order),
            ("duplicate_order", totals.duplicate_order, seen.duplicate_order),
            ("over_cancel", totals.over_cancel, seen.over_cancel),
            ("missing_level", totals.missing_level, seen.missing_level),
            ("crossed", totals.crossed, seen.crossed),
            ("ghost_level_removed", totals.ghost_levels_removed, seen.ghost_levels_removed),
            ("level_beyond_view", totals.levels_beyond_view, seen.levels_beyond_view),
        ];
        for (kind, now, before) in pairs {
            if now > before {
                self.book_inconsistencies.with_label_values(&[kind]).inc_by(now - before);
            }
        }
        *seen = *totals;
    }

    /// Sets the watermark gauges from an event time in ns (`u64::MAX`: input finished).
    pub fn set_watermark(&self, watermark_ns: u64) {
        if watermark_ns == u64::MAX {
            return;
        }
        let wm = watermark_ns as f64 / 1e9;
        self.watermark.set(wm);
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        self.watermark_lag.set(now - wm);
    }
}

/// Label: the status class of an API answer.
pub const LABEL_STATUS: &str = "status";

/// Label: a detection scale ("1s", "10s": the configured `detect.scales`).
pub const LABEL_SCALE: &str = "scale";

/// Label: which detector scored a window.
pub const LABEL_DETECTOR: &str = "detector";
/// Values of the `detector` label.
pub use crate::alert::DETECTORS;

fn vec_counter(
    registry: &Registry,
    name: &str,
    help: &str,
    label: &str,
    values: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
    registry.register(Box::new(c.clone()))?;
    for v in values {
        c.with_label_values(&[v]);
    }
    Ok(c)
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> prometheus::Result<Histogram> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

/// Values of the `kind` label of `lobsentry_book_inconsistencies_total`.
pub const BOOK_KINDS: [&str; 7] = [
    "unknown_order",
    "duplicate_order",
    "over_cancel",
    "missing_level",
    "crossed",
    "ghost_level_removed",
    "level_beyond_view",
];

/// The text exposition of a registry.
pub fn render(registry: &Registry) -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let _ = prometheus::TextEncoder::new().encode(&registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

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
    pub fn new(registry: &Registry, source: &str) -> Result<Counters, crate::Error> {
        let metrics =
            PipelineMetrics::register_into(registry, source).map_err(|e| crate::Error::Io(format!("metrics: {e}")))?;
        Ok(Counters {
            metrics,
            watermarks: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
            kafka_source: Arc::default(),
            kafka_sink: Arc::default(),
        })
    }

    /// Counters with a private registry (for tests and embedding without a metrics endpoint).
    pub fn standalone(config: &crate::config::Config) -> Counters {
        Self::new(&Registry::new(), config.source.kind()).expect("a fresh registry accepts every metric")
    }

    /// The smallest worker watermark of this process.
    pub fn watermark(&self) -> u64 {
        self.watermarks.lock().map(|w| w.iter().copied().min().unwrap_or(0)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_syncs() {
        let registry = Registry::new();
        let m = PipelineMetrics::register_into(&registry, "files").unwrap();
        m.events.inc_by(5);
        m.sync_book(&BookStats { events: 10, unknown_order: 2, ..Default::default() });
        m.sync_book(&BookStats { events: 12, unknown_order: 3, ..Default::default() });
        let text = render(&registry);
        assert!(text.contains("lobsentry_source_events_total{source=\"files\"} 5"), "{text}");
        assert!(text.contains("lobsentry_book_events_total 12"), "{text}");
        assert!(text.contains("lobsentry_book_inconsistencies_total{kind=\"unknown_order\"} 3"), "{text}");
        assert!(PipelineMetrics::register_into(&registry, "files").is_err(), "a registry takes each metric once");
    }
}
