//! Asking the analytics from a worker's loop: [`QueryDriver`].
//!
//! Every worker owns one driver (its query input must advance for any answer to complete). A query
//! submitted on a worker is inserted at one logical time `q` and retracted at `q + 1`; its answer is
//! complete once the answers' frontier has passed `q`.
//!
//! * While the input is live, `q` follows the data's frontier (`watermark - 1`): the answer reflects
//!   every tick the watermark has closed, and completes as soon as the watermark moves on.
//! * Once the input has ended, `q` is the largest time any analytics update had (known to every worker
//!   by broadcast) plus a slowly advancing offset (1 ns per ms of wall time), so that sliding windows
//!   still describe the end of the data rather than some arbitrary later time.

use super::{answer_rows, AnswerUpdate, Query, Row, QUERY_WORKER_SHIFT};
use differential_dataflow::input::InputSession;
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{ProbeHandle, StreamVec};

/// A finished answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The rows, sorted.
    pub rows: Vec<Row>,
    /// The logical time the answer was computed at.
    pub time: u64,
    /// Whether the input had ended when the query was asked.
    pub input_complete: bool,
}

/// Answer updates received by this worker, by query id (filled by the dataflow's sink, for example
/// with [`collect_answers`]).
pub type AnswerRows = Rc<RefCell<FxHashMap<u64, Vec<(Row, u64, isize)>>>>;

/// Collects the answers stream into `rows` (on the worker that asked each query).
pub fn collect_answers(answers: StreamVec<'_, u64, AnswerUpdate>, rows: AnswerRows, probe: &ProbeHandle<u64>) {
    answers
        .inspect(move |((id, row), t, d)| rows.borrow_mut().entry(*id).or_default().push((row.clone(), *t, *d)))
        .probe_with(probe);
}

/// Drives one worker's query input; see the module documentation.
pub struct QueryDriver {
    input: InputSession<u64, (u64, Query), isize>,
    probe: ProbeHandle<u64>,
    rows: AnswerRows,
    max_time: Rc<Cell<u64>>,
    worker: u64,
    next: u64,
    queued: Vec<(u64, Query)>,
    // id -> (time asked, input complete then)
    pending: FxHashMap<u64, (u64, bool)>,
    ended_at: Option<Instant>,
}

impl QueryDriver {
    /// A driver for worker `worker` (its global index) of the query `input`, whose answers are
    /// probed by `probe` and collected into `rows`; `max_time` comes from
    /// [`Analytics::max_time`](super::Analytics::max_time).
    pub fn new(
        worker: usize,
        input: InputSession<u64, (u64, Query), isize>,
        probe: ProbeHandle<u64>,
        rows: AnswerRows,
        max_time: Rc<Cell<u64>>,
    ) -> QueryDriver {
        QueryDriver {
            input,
            probe,
            rows,
            max_time,
            worker: worker as u64,
            next: 0,
            queued: Vec::new(),
            pending: FxHashMap::default(),
            ended_at: None,
        }
    }

    /// Queues a query for the next [`QueryDriver::step`]; returns its id.
    pub fn submit(&mut self, query: Query) -> u64 {
        let id = (self.worker << QUERY_WORKER_SHIFT) | (self.next & ((1 << QUERY_WORKER_SHIFT) - 1));
        self.next += 1;
        self.queued.push((id, query));
        id
    }

    /// Advances the query input given the data's frontier (`None` once the input has ended), inserts
    /// the queued queries, and returns the answers that completed.
    pub fn step(&mut self, data_frontier: Option<u64>) -> Vec<(u64, Answer)> {
        let target = match data_frontier {
            Some(w) => w.saturating_sub(1),
            None => {
                let ended = *self.ended_at.get_or_insert_with(Instant::now);
                self.max_time.get().saturating_add(ended.elapsed().as_millis() as u64)
            }
        };
        let q = (*self.input.time()).max(target);
        self.input.advance_to(q);
        if !self.queued.is_empty() {
            for (id, query) in self.queued.drain(..) {
                self.input.update_at((id, query.clone()), q, 1);
                self.input.update_at((id, query), q + 1, -1);
                self.pending.insert(id, (q, data_frontier.is_none()));
            }
            self.input.advance_to(q + 1);
        }
        self.input.flush();
        let probe = &self.probe;
        let mut rows = self.rows.borrow_mut();
        let done = self
            .pending
            .extract_if(|_, (t, _)| !probe.less_equal(t))
            .map(|(id, (time, input_complete))| {
                let updates = rows.remove(&id).unwrap_or_default();
                (id, Answer { rows: answer_rows(updates, time), time, input_complete })
            })
            .collect();
        // Updates of answered queries (their retraction) are not needed.
        let pending = &self.pending;
        rows.retain(|id, _| pending.contains_key(id));
        done
    }

    /// Closes the query input: the dataflow can then complete.
    pub fn close(self) {
        self.input.close();
    }
}
