//! The cluster's totals, gathered on process 0 at the end of a run (each process counts its own
//! share; process 0 prints both).

use super::Shared;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use timely::dataflow::operators::vec::ToStream;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::dataflow::ProbeHandle;

/// One process's counts (or, summed, the cluster's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Processes counted.
    pub processes: u64,
    /// Events decoded.
    pub events: u64,
    /// Windows emitted.
    pub windows: u64,
    /// Late events.
    pub late: u64,
    /// Lines rejected.
    pub rejected: u64,
    /// Anomalies per detector (baseline, model, ensemble).
    pub anomalies: Vec<(String, u64)>,
}

impl Totals {
    fn of(shared: &Shared) -> Totals {
        let m = &shared.counters.metrics;
        Totals {
            processes: 1,
            events: m.events.get(),
            windows: m.windows.get(),
            late: m.late_events.get(),
            rejected: m.decode_errors.get(),
            anomalies: crate::alert::DETECTORS
                .iter()
                .map(|d| (d.to_string(), m.anomalies.with_label_values(&[d]).get()))
                .collect(),
        }
    }

    fn add(&mut self, other: &Totals) {
        self.processes += other.processes;
        self.events += other.events;
        self.windows += other.windows;
        self.late += other.late;
        self.rejected += other.rejected;
        for (name, n) in &other.anomalies {
            match self.anomalies.iter_mut().find(|(d, _)| d == name) {
                Some((_, total)) => *total += n,
                None => self.anomalies.push((name.clone(), *n)),
            }
        }
    }
}

/// Sums every process's counts on worker 0 (a small dataflow of its own, built by every worker once
/// the main dataflow is complete). `Some` on worker 0 only.
pub fn gather(worker: &mut timely::worker::Worker, shared: &Shared) -> Option<Totals> {
    let first_of_process = worker.index().is_multiple_of(shared.config.workers);
    let mine = first_of_process.then(|| Totals::of(shared));
    let sum: Rc<RefCell<Option<Totals>>> = Rc::default();
    let probe = ProbeHandle::new();
    let into = sum.clone();
    worker.dataflow::<u64, _, _>(|scope| {
        mine.to_stream(scope)
            .exchange(|_| 0)
            .inspect(move |t: &Totals| into.borrow_mut().get_or_insert_with(Totals::default).add(t))
            .probe_with(&probe);
    });
    while !probe.done() {
        worker.step_or_park(Some(std::time::Duration::from_millis(10)));
    }
    let total = sum.borrow_mut().take();
    (worker.index() == 0).then_some(total).flatten()
}
