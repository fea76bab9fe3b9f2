//! Where a run resumes from, and the Kafka writers whose offsets are checkpointed.

use crate::error::Error;
use lobsentry_operators::checkpoint::{decode, encode, CheckpointStore, Part, StateRegistry};
use lobsentry_operators::sink::kafka::{read_ids, KafkaSinkCounters, KafkaWriter, KafkaWriterSpec};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// The checkpoint a run resumes from.
#[derive(Debug)]
pub struct RestorePoint {
    /// Its barrier.
    pub barrier: u64,
    /// The barrier after it.
    pub next: u64,
    /// This process's workers' parts, in worker order.
    pub parts: Vec<Part>,
}

/// The latest complete checkpoint whose parts (every worker's, so that all processes choose the
/// same one) read back with intact checksums, checked against the job. A damaged checkpoint is
/// skipped for the one before it, with a warning; a checkpoint of another job is an error.
pub fn restore_point(
    store: &CheckpointStore,
    job: &str,
    peers: usize,
    local: std::ops::Range<usize>,
) -> Result<Option<RestorePoint>, Error> {
    let dir = store.dir().display().to_string();
    let complete = store.complete().map_err(|e| Error::Io(format!("{dir}: {e}")))?;
    let mut damaged = Vec::new();
    for &barrier in complete.iter().rev() {
        let mut parts = Vec::new();
        let mut problem = None;
        for w in 0..peers {
            match store.read_part(barrier, w) {
                Ok(part) => parts.push(part),
                Err(e) => {
                    problem = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = problem {
            eprintln!("lobsentry: warning: checkpoint {barrier} in {dir} is unusable ({e}); trying the one before it");
            damaged.push(format!("{barrier}: {e}"));
            continue;
        }
        if let Some(p) = parts.iter().find(|p| p.peers != peers || p.job != job) {
            return Err(Error::Data(format!(
                "checkpoint {barrier} in {dir} was taken by another job ({}, {} workers); this run is {job}, {peers} workers. \
                 Use an empty checkpoint.dir (or the same settings).",
                p.job, p.peers
            )));
        }
        let next = store.next_after(barrier).unwrap_or(u64::MAX);
        let parts = parts.into_iter().filter(|p| local.contains(&p.worker)).collect();
        return Ok(Some(RestorePoint { barrier, next, parts }));
    }
    if damaged.is_empty() {
        Ok(None)
    } else {
        Err(Error::Data(format!(
            "no usable checkpoint in {dir} ({}). Nothing was restored: move the directory away to start from the beginning.",
            damaged.join("; ")
        )))
    }
}

/// A Kafka writer shared by a worker's sink operators.
pub type SharedKafkaWriter = Rc<RefCell<KafkaWriter>>;

/// A Kafka writer whose end offsets are checkpointed: after a restart it skips what the topic
/// already holds past them (the messages an interrupted run wrote after its last checkpoint).
pub fn checkpointed_writer(
    kind: &str,
    spec: &Option<KafkaWriterSpec>,
    counters: &Arc<KafkaSinkCounters>,
    registry: &Option<StateRegistry>,
) -> Result<Option<SharedKafkaWriter>, String> {
    let Some(spec) = spec.clone() else { return Ok(None) };
    let writer = KafkaWriter::new(spec.clone(), counters.clone()).map_err(|e| format!("Kafka {kind}: {e}"))?;
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
            let from: Vec<(i32, i64)> = decode(&bytes).map_err(|e| format!("checkpoint: {kind}: {e}"))?;
            let now = writer.borrow().end_offsets(Duration::from_secs(30))?;
            if now.len() != from.len() {
                return Err(format!(
                    "output topic {:?} has {} partitions, its checkpoint recorded {}: the restart cannot tell what the \
                     interrupted run wrote. Restore the topic's partitions, or move the checkpoint directory away.",
                    spec.topic,
                    now.len(),
                    from.len()
                ));
            }
            let ids = read_ids(&spec, &from, Duration::from_secs(60))
                .map_err(|e| format!("reading back {:?} for de-duplication: {e}", spec.topic))?;
            writer.borrow_mut().skip_ids(ids.into_iter().collect());
        }
    }
    Ok(Some(writer))
}
