//! The job every process of a cluster must agree on, and the handshake that checks it.
//!
//! The description lists the settings that shape the dataflow or its checkpoints. Per-process settings
//! (side-file paths, metrics and API addresses, the webhook) are left out. The window output is
//! process 0's choice: every process builds the same output stage, whatever its own flags.

use crate::config::{Config, Output, SourceConfig};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use timely::dataflow::operators::vec::{Broadcast, ToStream};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::ProbeHandle;

/// The settings a job's processes must share, as (setting, value) pairs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobDescription {
    /// (setting, value), in a fixed order.
    pub entries: Vec<(String, String)>,
}

impl JobDescription {
    /// The description of `config`.
    pub fn of(config: &Config) -> JobDescription {
        let processes = config.cluster.as_ref().map_or(1, |c| c.addresses.len());
        let source = match &config.source {
            SourceConfig::Kafka(k) => {
                format!(
                    "kafka topic {:?} format {} partitions {}",
                    k.spec.topic, k.spec.format as u8, k.spec.partitions
                )
            }
            SourceConfig::Files(f) => format!("files {:?}", f),
            SourceConfig::Synthetic(s) => {
                // A real-time market starts at each process's own clock.
                let mut s = s.clone();
                if s.realtime_speed.is_some() {
                    s.market.start_ns = 0;
                }
                format!("synthetic {s:?}")
            }
        };
        let models: Vec<String> = config
            .model
            .iter()
            .chain(&config.extra_models)
            .map(|m| format!("{}@{} window {} ns", m.meta.name, m.meta.version, m.meta.window_ns))
            .collect();
        let model = if models.is_empty() { "none".to_string() } else { models.join(", ") };
        let sinks = &config.kafka_sinks;
        let entries = vec![
            ("processes", processes.to_string()),
            ("pipeline.workers", config.workers.to_string()),
            ("source", source),
            ("window", format!("{:?}", config.window)),
            ("book", format!("{} {:?} {:?}", config.book, config.book_config, config.book_levels)),
            ("detect", format!("{:?}", config.detect)),
            ("detect.scales", format!("{:?}", config.scales.scales)),
            ("detect.ensemble", format!("{:?} silent {}", config.scales.ensemble, config.scales.silent_windows)),
            ("model", model),
            ("analytics", format!("{:?}", config.analytics.as_ref().map(|a| a.spec))),
            (
                "kafka sinks",
                format!(
                    "alerts {} scores {} dead-letter {} features {}",
                    sinks.alerts.is_some(),
                    sinks.scores.is_some(),
                    sinks.dead_letter.is_some(),
                    sinks.features.is_some()
                ),
            ),
            ("checkpoint", format!("{:?}", config.checkpoint.as_ref().map(|c| c.interval_ns))),
            // Every process must answer barrier pulls; a restart may change the bound.
            (MAX_WAIT, format!("{:?}", config.checkpoint.as_ref().and_then(|c| c.max_wait))),
        ];
        JobDescription { entries: entries.into_iter().map(|(k, v)| (k.to_string(), v)).collect() }
    }

    /// One line, stored in every checkpoint part: a checkpoint restores only into the same job.
    pub fn fingerprint(&self) -> String {
        self.entries
            .iter()
            .filter(|(k, _)| k != MAX_WAIT)
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The first setting in which `other` differs, as "setting: VALUE here, OTHER there".
    pub fn difference(&self, other: &JobDescription) -> Option<(String, String, String)> {
        let keys: Vec<&String> = self.entries.iter().chain(other.entries.iter()).map(|(k, _)| k).collect();
        keys.into_iter().find_map(|k| {
            let mine = self.entries.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str()).unwrap_or("(none)");
            let theirs = other.entries.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str()).unwrap_or("(none)");
            (mine != theirs).then(|| (k.clone(), mine.to_string(), theirs.to_string()))
        })
    }
}

/// The job setting the processes must agree on that a checkpoint does not record.
const MAX_WAIT: &str = "checkpoint.max-wait";

/// What a worker announces at start.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Hello {
    worker: usize,
    process: usize,
    job: JobDescription,
    /// Whether this process was given a window output (only process 0's counts).
    output: bool,
}

/// What the handshake settles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Agreed {
    /// Process 0 writes a window output: every process builds the output stage.
    pub output: bool,
}

/// Exchanges every worker's job description (a small dataflow of its own, the same on every
/// process whatever the configuration) and compares each with worker 0's. Every worker reaches the
/// same verdict, so a mismatched job stops on every process with the same message.
pub fn handshake(worker: &mut timely::worker::Worker, config: &Config, job: &JobDescription) -> Result<Agreed, String> {
    let process = config.cluster.as_ref().map_or(0, |c| c.process);
    let hello =
        Hello { worker: worker.index(), process, job: job.clone(), output: !matches!(config.output, Output::None) };
    let heard: Rc<RefCell<Vec<Hello>>> = Rc::default();
    let probe = ProbeHandle::new();
    let sink = heard.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        Some(hello)
            .to_stream(scope)
            .broadcast()
            .inspect(move |h: &Hello| sink.borrow_mut().push(h.clone()))
            .probe_with(&probe);
    });
    while !probe.done() {
        worker.step_or_park(Some(std::time::Duration::from_millis(10)));
    }
    let mut heard = heard.take();
    heard.sort_by_key(|h| h.worker);
    let first = heard.first().ok_or("job handshake: no worker answered")?;
    for h in &heard {
        if let Some((setting, theirs, ours)) = h.job.difference(&first.job) {
            return Err(format!(
                "process {} runs a different job from process {}: {setting} is {theirs} there but {ours} on process {}. \
                 Start every process of a cluster with the same configuration and inputs.",
                h.process, first.process, first.process
            ));
        }
    }
    Ok(Agreed { output: first.output })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named() {
        let a = JobDescription { entries: vec![("x".into(), "1".into()), ("y".into(), "2".into())] };
        let mut b = a.clone();
        assert_eq!(a.difference(&b), None);
        b.entries[1].1 = "3".into();
        assert_eq!(a.difference(&b), Some(("y".into(), "2".into(), "3".into())));
        assert!(a.fingerprint().contains("y: 2"));
    }
}
