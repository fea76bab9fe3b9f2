//! One worker: agree on the job, build the dataflow, then step it, with one method per duty
//! (queries, checkpoints, Kafka writers, health) until the input ends, a stop is requested or
//! something fails.

use super::dataflow::{self, Built};
use super::query::Reply;
use super::Shared;
use crate::metrics::Counters;
use lobsentry_operators::analytics::queries::QueryDriver;
use lobsentry_operators::checkpoint::Coordinator;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};
use timely::dataflow::ProbeHandle;

/// How a worker that stops because another one failed reports it.
pub const STOPPED_BY_PEER: &str = "stopped: another worker failed";

/// Why a worker stopped early.
#[derive(Debug)]
pub enum Failure {
    /// Every worker of the job reaches this verdict by itself (a mismatched job).
    Everywhere(String),
    /// This worker failed; the others must be told.
    Here(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::Here(message)
    }
}

/// A readable message for a worker's panic; a broken connection to another process says so.
pub fn describe_panic(message: &str) -> String {
    if message.contains("timely communication error") || message.contains("MergeQueue poisoned") {
        "lost the connection to another process of the job (it failed or was killed)".to_string()
    } else {
        let location = super::control::last_panic_location().map(|l| format!(" at {l}")).unwrap_or_default();
        format!("panicked{location}: {message}")
    }
}

/// Runs one worker to the end.
pub fn run(worker: &mut timely::worker::Worker, shared: &Shared) -> Result<(), Failure> {
    let agreed = super::job::handshake(worker, &shared.config, &shared.job).map_err(Failure::Everywhere)?;
    let built = dataflow::build(worker, shared, agreed)?;
    let mut duties = Duties::new(worker, shared, built);
    shared.counters.ready.store(true, Ordering::Relaxed);
    let park = if duties.busy() { 5 } else { 100 };
    while worker.step_or_park(Some(Duration::from_millis(park))) {
        if shared.control.failed() {
            return Err(Failure::Here(STOPPED_BY_PEER.into()));
        }
        if shared.control.stopping() {
            break;
        }
        duties.queries(shared);
        duties.writers();
        duties.checkpoint(&shared.counters);
        duties.health(shared).map_err(Failure::Here)?;
    }
    duties.finish(shared);
    if shared.config.cluster.as_ref().is_some_and(|c| c.addresses.len() > 1) && !shared.control.stopping() {
        if let Some(t) = super::totals::gather(worker, shared) {
            if let Ok(mut slot) = shared.cluster.lock() {
                *slot = Some(t);
            }
        }
    }
    Ok(())
}

struct Duties {
    local: usize,
    probe: ProbeHandle<u64>,
    built: Built,
    driver: Option<QueryDriver>,
    replies: HashMap<u64, Sender<Reply>>,
    input_ended: Option<Instant>,
    coordinator: Option<Coordinator>,
    failing_since: Option<Instant>,
    last_report: Instant,
}

impl Duties {
    fn new(worker: &timely::worker::Worker, shared: &Shared, mut built: Built) -> Duties {
        let local = worker.index() % shared.config.workers;
        let driver = built.query_parts.take().map(|(input, max_time)| {
            QueryDriver::new(worker.index(), input, built.answers_probe.clone(), built.answer_rows.clone(), max_time)
        });
        let coordinator = match (&shared.checkpoint, &built.registry) {
            (Some(plan), Some(registry)) => {
                let c = Coordinator::new(
                    plan.store.clone(),
                    registry.clone(),
                    worker.index(),
                    worker.peers(),
                    shared.job.fingerprint(),
                );
                Some(match plan.max_wait {
                    Some((wait, grid)) => c.with_max_wait(wait, grid, plan.restore.as_ref().map_or(0, |r| r.barrier)),
                    None => c,
                })
            }
            _ => None,
        };
        Duties {
            local,
            probe: built.probe.clone(),
            built,
            driver,
            replies: HashMap::new(),
            input_ended: None,
            coordinator,
            failing_since: None,
            last_report: Instant::now(),
        }
    }

    fn busy(&self) -> bool {
        self.coordinator.is_some() || !self.built.writers.is_empty() || self.driver.is_some()
    }

    fn frontier(&self) -> Option<u64> {
        self.probe.with_frontier(|f| f.first().copied())
    }

    /// API queries: the first worker takes them from the hub; every worker drives the query input.
    fn queries(&mut self, shared: &Shared) {
        let frontier = self.frontier();
        let Some(d) = self.driver.as_mut() else { return };
        if self.local == 0 {
            for request in shared.hub.drain() {
                self.replies.insert(d.submit(request.query), request.reply);
            }
        }
        for (id, answer) in d.step(frontier) {
            if let Some(tx) = self.replies.remove(&id) {
                let _ = tx.send(Reply::Answer(answer));
            }
        }
        if frontier.is_some() {
            return;
        }
        if self.input_ended.is_none() && self.local == 0 {
            // The input is done: make the side files complete while the API keeps serving.
            for f in shared.sides.all() {
                f.flush();
            }
        }
        let since = *self.input_ended.get_or_insert_with(Instant::now);
        let serve_after_input = shared.config.analytics.as_ref().and_then(|a| a.serve_after_input);
        if serve_after_input.is_some_and(|s| since.elapsed() >= s) {
            // Serving is over: refuse new queries, fail the waiting ones, let the dataflow end.
            if self.local == 0 {
                shared.hub.close();
            }
            for (_, tx) in self.replies.drain() {
                let _ = tx.send(Reply::Stopped);
            }
            if let Some(d) = self.driver.take() {
                d.close();
            }
        }
    }

    fn writers(&mut self) {
        for w in &self.built.writers {
            w.borrow_mut().pump();
        }
    }

    fn checkpoint(&mut self, counters: &Counters) {
        let frontier = self.frontier();
        let Some(c) = self.coordinator.as_mut() else { return };
        match c.poll(frontier) {
            Ok(Some(done)) => {
                self.failing_since = None;
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
                if self.failing_since.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    eprintln!("lobsentry: checkpoint failed, retrying: {e}");
                    self.failing_since = Some(Instant::now());
                }
            }
        }
    }

    /// Watermarks and book counters for the metrics; the window output's error fails the run.
    fn health(&mut self, shared: &Shared) -> Result<(), String> {
        if self.last_report.elapsed() < Duration::from_millis(200) {
            return Ok(());
        }
        self.last_report = Instant::now();
        self.report(shared);
        if let Some(e) = shared.output_error.lock().ok().and_then(|e| e.clone()) {
            return Err(format!("window output: {e}"));
        }
        Ok(())
    }

    fn report(&self, shared: &Shared) {
        let counters = &shared.counters;
        let wm = self.probe.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX));
        let min = match counters.watermarks.lock() {
            Ok(mut w) => {
                if let Some(slot) = w.get_mut(self.local) {
                    *slot = wm;
                }
                w.iter().copied().min().unwrap_or(wm)
            }
            Err(_) => wm,
        };
        if self.local == 0 {
            counters.metrics.sync_kafka(&counters.kafka_source, &counters.kafka_sink);
            counters.metrics.set_watermark(min);
            if let Ok(stats) = shared.book_stats.lock() {
                counters.metrics.sync_book(&stats);
            }
        }
    }

    /// Everything the run produced must reach Kafka. At the end of the input the writers wait
    /// (librdkafka and the retry queue keep retrying while a broker is down); on a stop request
    /// they wait at most the grace period and report what was left (the next run resends it
    /// from the last checkpoint).
    fn finish(self, shared: &Shared) {
        let grace = shared.config.shutdown_grace;
        for w in &self.built.writers {
            let mut w = w.borrow_mut();
            if shared.control.stopping() {
                if let Err(e) = w.flush(grace) {
                    if let Ok(mut warnings) = shared.warnings.lock() {
                        warnings.push(format!("Kafka: {e} (stopped; the next run resends from its checkpoint)"));
                    }
                }
                continue;
            }
            while let Err(e) = w.flush(Duration::from_secs(30)) {
                if shared.control.stopping() {
                    break;
                }
                eprintln!("lobsentry: waiting for Kafka: {e}");
            }
        }
        self.report(shared);
    }
}
