//! The runtime: builds the standard dataflow from a validated [`Config`] and runs it.
//!
//! source -> (ReconstructBook) -> ExtractFeatures -> WriteWindows, with the detectors beside the
//! output, and the rejected lines, late events, scores and alerts on side outputs, each counted and
//! written when configured.
//!
//! Every fallible resource (files, the model, Kafka metadata, the checkpoint to resume from) is
//! opened before the workers start. The workers first agree on the job ([`job::handshake`]), then
//! build the same dataflow ([`dataflow::build`]) and run their loop ([`worker`]). A failure in any
//! worker stops every worker of the process with one message; in a cluster the process then exits
//! at once, so that its peers' connections fail and they stop too.

use crate::alert::AlertSink;
use crate::config::{Config, Output, SourceConfig};
use crate::error::Error;
use crate::metrics::Counters;
use crate::summary::Summary;
use control::{Control, SideFile};
use job::JobDescription;
use lobsentry_operators::book::BookStats;
use lobsentry_operators::checkpoint::CheckpointStore;
use lobsentry_operators::detect::WindowScore;
use lobsentry_operators::generator::AnomalyLabel;
use lobsentry_operators::inference::{onnxruntime, open_session, InferenceSpec};
use lobsentry_operators::source::kafka::partition_count;
use lobsentry_operators::source::Rejected;
use query::QueryHub;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod checkpoints;
pub mod control;
pub mod dataflow;
pub mod job;
pub mod query;
pub mod totals;
pub mod worker;

/// How many rejected lines a run keeps to show on stderr.
pub const KEEP_REJECTED: usize = 10;

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
    /// Windows scored by the primary detector.
    pub scored: u64,
    /// The alerts (the primary detector's anomalies), in window order.
    pub anomalies: Vec<WindowScore>,
    /// With the calibrated ensemble, per detection scale: (scale, windows scored by its detectors,
    /// windows decided). A window is decided once the instrument's detectors and their calibration
    /// on that scale have warmed up; before, it is scored and reported but cannot alert.
    pub decided: Vec<(String, u64, u64)>,
    /// Anomalies per detector (baseline, model, ensemble), as the metrics count them.
    pub anomalies_by_detector: Vec<(&'static str, u64)>,
    /// The run was stopped by a signal before its input ended.
    pub stopped: bool,
    /// Process 0 of a cluster: every process's counts summed.
    pub cluster: Option<totals::Totals>,
    /// Sink problems met while flushing at the end (undelivered webhook alerts, Kafka messages
    /// not acknowledged within the grace period).
    pub warnings: Vec<String>,
}

/// What the caller provides besides the configuration.
#[derive(Clone, Default)]
pub struct Services {
    /// Queries from the API (served by the caller; see [`crate::serve::api`]).
    pub hub: Option<Arc<QueryHub>>,
    /// Set (by a signal handler) to stop the run: reading stops, the sinks flush, the report is
    /// returned.
    pub stop: Arc<AtomicBool>,
    /// Where alerts go besides the alerts file and Kafka (the webhook: see
    /// [`crate::serve::alert_sinks`]).
    pub alert_sinks: Vec<Arc<dyn AlertSink>>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sinks: Vec<&str> = self.alert_sinks.iter().map(|s| s.name()).collect();
        f.debug_struct("Services")
            .field("hub", &self.hub)
            .field("stop", &self.stop)
            .field("alert_sinks", &sinks)
            .finish()
    }
}

/// Loads ONNX Runtime and opens the model package as the workers will (once, before they start).
pub fn open_model(config: &Config) -> Result<Option<ort::environment::Environment>, Error> {
    let Some(model) = &config.model else { return Ok(None) };
    let env = onnxruntime(&model.onnxruntime).map_err(|e| Error::Data(e.to_string()))?;
    for model in std::iter::once(model).chain(&config.extra_models) {
        let mut spec = InferenceSpec::load(env.clone(), &model.dir).map_err(|e| Error::Data(e.to_string()))?;
        spec.intra_threads = model.intra_threads;
        open_session(&spec).map_err(|e| Error::Data(e.to_string()))?;
    }
    Ok(Some(env))
}

/// The side files of this process.
#[derive(Clone, Debug, Default)]
pub struct SideFiles {
    /// Rejected lines (JSON lines).
    pub dead_letter: Option<SideFile>,
    /// Late events (CSV).
    pub late: Option<SideFile>,
    /// Alerts (JSON lines).
    pub alerts: Option<SideFile>,
    /// Every score (JSON lines).
    pub scores: Option<SideFile>,
}

impl SideFiles {
    fn all(&self) -> impl Iterator<Item = &SideFile> {
        [&self.dead_letter, &self.late, &self.alerts, &self.scores].into_iter().flatten()
    }
}

/// Checkpointing, as planned before the workers start.
#[derive(Debug)]
pub struct CheckpointPlan {
    /// The store.
    pub store: CheckpointStore,
    /// Event time between barriers.
    pub interval_ns: u64,
    /// Longest wall-clock time between checkpoints, and the grid a barrier pulled in lands on.
    pub max_wait: Option<(Duration, u64)>,
    /// Where to resume.
    pub restore: Option<checkpoints::RestorePoint>,
}

/// Everything a process's workers share.
#[derive(Clone)]
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The job all processes agreed on.
    pub job: Arc<JobDescription>,
    /// Metrics and live state.
    pub counters: Arc<Counters>,
    /// Failures and stop requests.
    pub control: Arc<Control>,
    /// The window output's error (set by `WriteWindows`).
    pub output_error: Arc<Mutex<Option<String>>>,
    /// Book counters.
    pub book_stats: Arc<Mutex<BookStats>>,
    /// The first rejected lines.
    pub rejected_keep: Arc<Mutex<Vec<Rejected>>>,
    /// Injected episodes.
    pub labels: Arc<Mutex<Vec<AnomalyLabel>>>,
    /// Notable windows.
    pub summary: Arc<Mutex<Summary>>,
    /// Side files.
    pub sides: SideFiles,
    /// Alerts kept for the report.
    pub alerts_keep: Arc<Mutex<Vec<WindowScore>>>,
    /// With the calibrated ensemble, per window length (ns): the windows each detector scored, and
    /// the windows the ensemble decided.
    pub decided: Arc<Mutex<BTreeMap<u64, ScaleCounts>>>,
    /// ONNX Runtime, when a model is configured.
    pub ort_env: Option<ort::environment::Environment>,
    /// Checkpoints.
    pub checkpoint: Option<Arc<CheckpointPlan>>,
    /// API queries.
    pub hub: Arc<QueryHub>,
    /// Where alerts go (the alerts file, the webhook).
    pub alert_sinks: Vec<Arc<dyn AlertSink>>,
    /// Problems met while flushing the sinks at the end.
    pub warnings: Arc<Mutex<Vec<String>>>,
    /// The cluster's totals (process 0 of a cluster).
    pub cluster: Arc<Mutex<Option<totals::Totals>>>,
}

/// Windows of one detection scale: scored by each detector, and decided by the ensemble.
pub type ScaleCounts = (BTreeMap<String, u64>, u64);

/// A warning for each detection scale of the calibrated ensemble that decided no window (so could
/// raise no alert): the input ended, or was stopped, before that scale's warm-up.
pub fn undecided_warnings(config: &Config, decided: &[(String, u64, u64)]) -> Vec<String> {
    let Some(ensemble) = &config.scales.ensemble else { return Vec::new() };
    let mut warmups = Vec::new();
    if let Some(m) = &config.multivariate {
        warmups.push(format!("T\u{b2} detect.multivariate-warmup = {} windows", m.warmup));
    }
    if let Some(z) = &config.detect {
        warmups.push(format!("the z-score detect.warmup = {}", z.warmup));
    }
    let warmups = if warmups.is_empty() { String::new() } else { format!(" ({})", warmups.join(", ")) };
    decided
        .iter()
        .filter(|(_, _, n)| *n == 0)
        .map(|(scale, scored, _)| {
            let scored = if *scored > 0 { format!(" of the {scored} its detectors scored") } else { String::new() };
            format!(
                "the {scale} scale decided no window{scored}, so it could raise no alert: per instrument, \
                 each detector on it warms up{warmups} and then its calibration (detect.calibration-warmup = {} \
                 windows) before a window is decided, and the input ended first; a longer input, or smaller \
                 warm-ups, let it decide",
                ensemble.tail.warmup
            )
        })
        .collect()
}

/// librdkafka before 2.16.0 (2.12.1 is what the rdkafka crate bundles) crashes when a broker restarts
/// (README, "A broker restart"): a warning naming the fix, given `(hex version, version string)`.
pub fn librdkafka_warning((hex, version): (i32, String)) -> Option<String> {
    (hex < 0x0210_0000).then(|| {
        format!(
            "librdkafka {version} crashes when a Kafka broker restarts (fixed in 2.16.0): build with `make build` \
             (feature system-librdkafka, librdkafka from PyPI's confluent-kafka wheel)"
        )
    })
}

/// Runs the pipeline to completion (or until stopped) with no API and no stop signal.
pub fn run(config: &Config, counters: Arc<Counters>) -> Result<RunReport, Error> {
    run_with(config, counters, Services::default())
}

/// Runs the pipeline to completion, or until `services.stop` is set, updating `counters`.
pub fn run_with(config: &Config, counters: Arc<Counters>, services: Services) -> Result<RunReport, Error> {
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
    let sinks = &config.kafka_sinks;
    let uses_kafka = matches!(config.source, SourceConfig::Kafka(_))
        || [&sinks.alerts, &sinks.scores, &sinks.features, &sinks.dead_letter].iter().any(|s| s.is_some());
    if uses_kafka {
        if let Some(warning) = librdkafka_warning(rdkafka::util::get_rdkafka_version()) {
            eprintln!("lobsentry: warning: {warning}");
        }
    }
    // Output topics must exist: a producer's first message to a missing topic would have the broker
    // create it with its default partition count, which nobody chose.
    for spec in [&sinks.alerts, &sinks.scores, &sinks.features, &sinks.dead_letter].into_iter().flatten() {
        let (attempts, backoff) = match &config.source {
            SourceConfig::Kafka(k) => (k.connect_attempts, k.connect_backoff),
            _ => (3, Duration::from_secs(1)),
        };
        partition_count(&spec.client_config(), &spec.topic, attempts, Duration::from_secs(5), backoff).map_err(
            |e| {
                Error::Data(format!(
                "Kafka output topic {:?}: {e}. lobsentry does not create topics: create it with the partitions you \
                 want (for example `kafka-topics.sh --create --topic {} --partitions 2`)",
                spec.topic, spec.topic
            ))
            },
        )?;
    }
    let process = config.cluster.as_ref().map_or(0, |c| c.process);
    let job = Arc::new(JobDescription::of(&config));
    let checkpoint = match &config.checkpoint {
        None => None,
        Some(c) => {
            let mut store = CheckpointStore::new(&c.dir).map_err(|e| Error::Io(format!("checkpoint.dir: {e}")))?;
            store.retain = c.retain;
            let local = process * config.workers..(process + 1) * config.workers;
            let restore = checkpoints::restore_point(&store, &job.fingerprint(), peers, local)?;
            if let Some(r) = &restore {
                eprintln!("lobsentry: resuming from checkpoint {} in {}", r.barrier, c.dir.display());
            }
            if process == 0 {
                // Before the processes agree on the job: no worker looks for pulls until then.
                store.clear_pulls().map_err(|e| Error::Io(format!("checkpoint.dir: {e}")))?;
            }
            let max_wait = c.max_wait.map(|w| (w, config.pull_grid_ns()));
            Some(Arc::new(CheckpointPlan { store, interval_ns: c.interval_ns, max_wait, restore }))
        }
    };
    if let Ok(mut w) = counters.watermarks.lock() {
        *w = vec![0; config.workers];
    }
    counters.metrics.workers.set(config.workers as i64);
    let control = Arc::new(Control::new(services.stop.clone()));
    // Side outputs are per process: process I > 0 of a cluster writes PATH.pI.
    let side =
        |what: &'static str, p: &Option<std::path::PathBuf>, header: Option<&str>| -> Result<Option<SideFile>, Error> {
            let Some(p) = p else { return Ok(None) };
            let path = if process == 0 { p.clone() } else { p.with_extension(format!("p{process}")) };
            SideFile::create(what, &path, header, control.clone()).map(Some).map_err(Error::Io)
        };
    let sides = SideFiles {
        dead_letter: side("dead-letter file", &config.dead_letter, None)?,
        late: side("late-event file", &config.late, Some(lobsentry_operators::source::decode::CSV_HEADER))?,
        alerts: side("alerts file", &config.alerts, None)?,
        scores: side("scores file", &config.scores, None)?,
    };
    let ort_env = open_model(&config)?;
    if let (Output::File(p), 0) = (&config.output, process) {
        // Fail before starting when the output cannot be created (process 0 writes it).
        std::fs::File::create(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))?;
    }
    let hub = services.hub.clone().unwrap_or_default();
    let mut alert_sinks: Vec<Arc<dyn AlertSink>> = Vec::new();
    if let Some(file) = &sides.alerts {
        alert_sinks.push(Arc::new(file.clone()));
    }
    alert_sinks.extend(services.alert_sinks.iter().cloned());
    if let Some(file) = &sides.dead_letter {
        let file = file.clone();
        let to: crate::alert::DeadLetters = Arc::new(move |record: serde_json::Value| file.line(&record.to_string()));
        for sink in &alert_sinks {
            sink.dead_letters(to.clone());
        }
    }
    let shared = Shared {
        config: config.clone(),
        job,
        counters: counters.clone(),
        control: control.clone(),
        output_error: Arc::default(),
        book_stats: Arc::default(),
        rejected_keep: Arc::default(),
        labels: Arc::default(),
        summary: Arc::default(),
        sides: sides.clone(),
        alerts_keep: Arc::default(),
        decided: Arc::default(),
        ort_env,
        checkpoint,
        hub: hub.clone(),
        alert_sinks: alert_sinks.clone(),
        warnings: Arc::default(),
        cluster: Arc::default(),
    };
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
    let in_cluster = config.cluster.is_some();
    let worker_shared = shared.clone();
    let guards = timely::execute(timely_config, move |worker| {
        let shared = worker_shared.clone();
        let control = shared.control.clone();
        let index = worker.index();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker::run(worker, &shared)))
            .unwrap_or_else(|payload| {
                Err(worker::Failure::Here(worker::describe_panic(&control::panic_message(payload.as_ref()))))
            });
        if outcome.is_err() || control.stopping() {
            // Timely steps a worker until its dataflows complete: an endless source never does.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                for id in worker.installed_dataflows() {
                    worker.drop_dataflow(id);
                }
            }));
        }
        match outcome {
            Ok(()) => Ok(()),
            Err(worker::Failure::Everywhere(e)) => {
                control.fail(e.clone());
                Err(e)
            }
            Err(worker::Failure::Here(e)) => {
                if e != worker::STOPPED_BY_PEER {
                    control.fail(format!("worker {index}: {e}"));
                }
                if in_cluster {
                    // Leave at once: the connections to the other processes break, and they stop
                    // too (a clean return would tell them this process finished normally).
                    eprintln!("lobsentry: error: {}", control.failure().unwrap_or(e));
                    std::process::exit(1);
                }
                Err(e)
            }
        }
    })
    .map_err(Error::Timely)?;
    // Timed from here: a cluster's processes have connected, the workers are running.
    let started = Instant::now();
    let results = guards.join();
    hub.close();
    if let Some(message) = control.failure() {
        return Err(Error::Timely(message));
    }
    for result in results {
        result.map_err(Error::Timely)?.map_err(Error::Timely)?;
    }
    let mut warnings = Vec::new();
    for sink in &alert_sinks {
        if let Some(warning) = sink.finish(config.shutdown_grace).map_err(Error::Io)? {
            warnings.push(warning);
        }
    }
    for file in sides.all() {
        file.close().map_err(Error::Io)?;
    }
    if let Some(e) = shared.output_error.lock().ok().and_then(|mut e| e.take()) {
        return Err(Error::Io(e));
    }
    let take = |m: &Arc<Mutex<Vec<Rejected>>>| m.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    let mut labels = shared.labels.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
    labels.sort_by_key(|l| (l.start_ns, l.instrument));
    let m = &counters.metrics;
    let primary = crate::alert::primary_detector(&config);
    let decided: Vec<(String, u64, u64)> = match &config.scales.ensemble {
        Some(_) => {
            let counts = shared.decided.lock().map(|d| d.clone()).unwrap_or_default();
            config
                .scales
                .scales
                .iter()
                .map(|(ns, _)| {
                    // A scale's windows: the most any one detector scored (each scores every window
                    // of its scale once past its own warm-up, which is shorter than the ensemble's).
                    let (scored, decided) =
                        counts.get(ns).map_or((0, 0), |(by, n)| (by.values().copied().max().unwrap_or(0), *n));
                    (lobsentry_operators::features::human_len(*ns), scored.max(decided), decided)
                })
                .collect()
        }
        None => Vec::new(),
    };
    Ok(RunReport {
        events: m.events.get(),
        rejected: m.decode_errors.get(),
        late: m.late_events.get(),
        windows: m.windows.get(),
        book: shared.book_stats.lock().map(|s| *s).unwrap_or_default(),
        elapsed: started.elapsed(),
        first_rejected: take(&shared.rejected_keep),
        labels,
        summary: shared.summary.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default(),
        scored: m.scored_windows.with_label_values(&[primary]).get(),
        anomalies: {
            let mut a = shared.alerts_keep.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
            a.sort_by_key(|x| (x.window.end, x.instrument));
            a
        },
        anomalies_by_detector: crate::alert::DETECTORS
            .iter()
            .map(|d| (*d, m.anomalies.with_label_values(&[d]).get()))
            .filter(|(_, n)| *n > 0)
            .collect(),
        stopped: control.stopping(),
        cluster: shared.cluster.lock().ok().and_then(|mut c| c.take()),
        decided: decided.clone(),
        warnings: {
            warnings.extend(shared.warnings.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default());
            warnings.extend(undecided_warnings(&config, &decided));
            warnings
        },
    })
}
