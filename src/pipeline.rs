//! Assembles the standard dataflow from a validated [`Config`] and runs it.
//!
//! source -> (ReconstructBook) -> ExtractFeatures -> WriteWindows, with the rejected lines and the late
//! events on side streams, each counted (and written when configured).

use crate::config::{Config, Output, SourceConfig};
use crate::error::Error;
use crate::summary::Summary;
use lobsentry_operators::book::{BookStats, ReconstructBook, ReconstructBookSpec};
use lobsentry_operators::event::{LobEvent, Timed};
use lobsentry_operators::features::{ExtractFeatures, WindowFeatures};
use lobsentry_operators::generator::AnomalyLabel;
use lobsentry_operators::sink::{WriteWindows, WriterFactory};
use lobsentry_operators::source::{file_source, synthetic_source, Rejected};
use std::io::{BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::dataflow::operators::generic::operator::empty;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{ProbeHandle, StreamVec};

/// How many rejected lines a run keeps to show on stderr.
pub const KEEP_REJECTED: usize = 10;

/// Live counters of a run, readable from another thread (progress display, metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// Events decoded.
    pub events: AtomicU64,
    /// Lines rejected.
    pub rejected: AtomicU64,
    /// Late events.
    pub late: AtomicU64,
    /// Windows emitted.
    pub windows: AtomicU64,
    /// Per-worker watermark (the probe's frontier; `u64::MAX` when done).
    pub watermarks: Mutex<Vec<u64>>,
}

impl Counters {
    /// The smallest worker watermark.
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

/// Runs the pipeline to completion (or forever for endless sources), updating `counters`.
pub fn run(config: &Config, counters: Arc<Counters>) -> Result<RunReport, Error> {
    let started = Instant::now();
    if let Ok(mut w) = counters.watermarks.lock() {
        *w = vec![0; config.workers];
    }
    let output_error: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
    let book_stats = Arc::new(Mutex::new(BookStats::default()));
    let rejected_keep: Arc<Mutex<Vec<Rejected>>> = Arc::new(Mutex::new(Vec::new()));
    let labels: Arc<Mutex<Vec<AnomalyLabel>>> = Arc::new(Mutex::new(Vec::new()));
    let summary = Arc::new(Mutex::new(Summary::default()));
    let dead_letter = open_shared(&config.dead_letter, None)?;
    let late_writer = open_shared(&config.late, Some(lobsentry_operators::source::decode::CSV_HEADER))?;
    if let Output::File(p) = &config.output {
        // Fail before starting when the output cannot be created.
        std::fs::File::create(p).map_err(|e| Error::Io(format!("{}: {e}", p.display())))?;
    }

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
    );
    let guards = timely::execute(timely::Config::process(config.workers), move |worker| {
        let (config, counters, output_error, book_stats, rejected_keep, labels, summary, dead_letter, late_writer) =
            shared.clone();
        let index = worker.index();
        let probe = ProbeHandle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let (events, errors): (StreamVec<'_, u64, Timed<LobEvent>>, StreamVec<'_, u64, Rejected>) = match &config.source {
                SourceConfig::Files(spec) => file_source(scope, spec.clone(), Some(probe.clone())),
                SourceConfig::Synthetic(spec) => {
                    (synthetic_source(scope, spec.clone(), Some(labels.clone())), empty(scope))
                }
            };
            let events_counter = counters.clone();
            let events = events.inspect_core(move |batch| {
                if let Ok((_, data)) = batch {
                    let real = data.iter().filter(|t| !t.event.is_seed()).count();
                    events_counter.events.fetch_add(real as u64, Ordering::Relaxed);
                }
            });
            let rejected_counter = counters.clone();
            errors.inspect(move |r: &Rejected| {
                rejected_counter.rejected.fetch_add(1, Ordering::Relaxed);
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
            });
            let late_counter = counters.clone();
            let count_late = move |e: &LobEvent| {
                late_counter.late.fetch_add(1, Ordering::Relaxed);
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
            let features: StreamVec<'_, u64, WindowFeatures> = if config.book {
                let spec = ReconstructBookSpec { book: config.book_config, stats: Some(book_stats.clone()) };
                let (features, late) = events.reconstruct_book_with(spec).extract_features(config.window);
                late.inspect(move |b| count_late(&b.timed.event));
                features
            } else {
                let (features, late) = events.extract_features(config.window);
                late.inspect(move |t| count_late(&t.event));
                features
            };
            let windows_counter = counters.clone();
            let features = features.inspect_core(move |batch| {
                if let Ok((_, data)) = batch {
                    windows_counter.windows.fetch_add(data.len() as u64, Ordering::Relaxed);
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
            features.probe_with(&probe);
        });
        let mut last_report = Instant::now();
        while worker.step_or_park(Some(Duration::from_millis(100))) {
            if last_report.elapsed() >= Duration::from_millis(200) {
                last_report = Instant::now();
                let wm = probe.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
                if let Ok(mut w) = counters.watermarks.lock() {
                    if let Some(slot) = w.get_mut(index) {
                        *slot = wm;
                    }
                }
            }
        }
    })
    .map_err(Error::Timely)?;
    for result in guards.join() {
        result.map_err(Error::Timely)?;
    }
    for w in [&dead_letter, &late_writer].into_iter().flatten() {
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
    Ok(RunReport {
        events: counters.events.load(Ordering::Relaxed),
        rejected: counters.rejected.load(Ordering::Relaxed),
        late: counters.late.load(Ordering::Relaxed),
        windows: counters.windows.load(Ordering::Relaxed),
        book: book_stats.lock().map(|s| *s).unwrap_or_default(),
        elapsed: started.elapsed(),
        first_rejected: take(&rejected_keep),
        labels,
        summary: summary.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default(),
    })
}
