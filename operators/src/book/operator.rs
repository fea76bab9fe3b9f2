//! The `ReconstructBook` operator: per-instrument books, keyed by instrument, applied in event-time
//! order as the frontier passes.

use super::{Book, BookConfig, BookStats, TopOfBook};
use crate::checkpoint::{decode, encode, StateRegistry};
use crate::event::{sort_timed, InstrumentId, LobEvent, Timed};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

/// An event after it was applied to its instrument's book.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BookEvent {
    /// The event, with its ordering stamp.
    pub timed: Timed<LobEvent>,
    /// Best prices and depth after the event.
    pub top: TopOfBook,
    /// The event's order-flow-imbalance contribution (Cont, Kukanov & Stoikov 2014), in shares.
    pub ofi: i64,
}

/// Book statistics shared with whoever reports them (summed over this worker's instruments).
pub type SharedBookStats = Arc<Mutex<BookStats>>;

/// Options of [`ReconstructBook::reconstruct_book_with`].
#[derive(Clone, Debug, Default)]
pub struct ReconstructBookSpec {
    /// How books treat inconsistent data.
    pub book: BookConfig,
    /// Where to add this worker's book counters (updated after each batch).
    pub stats: Option<SharedBookStats>,
    /// Checkpointed state: the books are registered here (and restored from it).
    pub state: Option<StateRegistry>,
    /// Per instrument, the depth of its message file ([`BookConfig::visible_levels`]) where it
    /// differs from `book`'s: a LOBSTER level-N file's N, from its name.
    pub visible_levels: Vec<(InstrumentId, usize)>,
}

/// The order-flow-imbalance contribution of moving from `prev` to `next`.
///
/// ```
/// use lobsentry_operators::book::{operator::ofi, TopOfBook};
/// use lobsentry_operators::event::Price;
/// let before = TopOfBook { bid: Some((Price(100), 10)), ask: Some((Price(101), 10)), ..Default::default() };
/// let more_bid = TopOfBook { bid: Some((Price(100), 15)), ..before };
/// assert_eq!(ofi(&before, &more_bid), 5);
/// let ask_lifted = TopOfBook { ask: Some((Price(102), 7)), ..before };
/// assert_eq!(ofi(&before, &ask_lifted), 10);
/// ```
pub fn ofi(prev: &TopOfBook, next: &TopOfBook) -> i64 {
    let mut e = 0i64;
    if let (Some((pb0, qb0)), Some((pb1, qb1))) = (prev.bid, next.bid) {
        if pb1 >= pb0 {
            e += qb1 as i64;
        }
        if pb1 <= pb0 {
            e -= qb0 as i64;
        }
    }
    if let (Some((pa0, qa0)), Some((pa1, qa1))) = (prev.ask, next.ask) {
        if pa1 <= pa0 {
            e -= qa1 as i64;
        }
        if pa1 >= pa0 {
            e += qa0 as i64;
        }
    }
    e
}

/// Per-instrument book state inside the operator.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Keyed {
    book: Book,
    top: TopOfBook,
}

/// Applies events to per-instrument books.
pub trait ReconstructBook<'scope> {
    /// Rebuilds each instrument's book, with default options.
    ///
    /// Events are routed by instrument, held until the frontier passes their `order_ts`, and then
    /// applied in `(order_ts, seq)` order, so the result does not depend on arrival order or on the
    /// number of workers.
    ///
    /// # Examples
    /// ```
    /// use lobsentry_operators::book::ReconstructBook;
    /// use lobsentry_operators::event::{EventKind, InstrumentId, LobEvent, Price, Side, Timed};
    /// use lobsentry_operators::testing::captured;
    /// use timely::dataflow::operators::{Capture, ToStream};
    ///
    /// let ev = |ts, kind, id, size, price, side| Timed { order_ts: ts, seq: ts, event: LobEvent {
    ///     ts_ns: ts, instrument: InstrumentId::new("X").unwrap(), kind, order_id: id, size,
    ///     price: Price(price), side } };
    /// // Arrives out of order: the add at t=1 comes after the execution at t=2.
    /// let input = vec![
    ///     ev(2, EventKind::ExecuteVisible, 7, 40, 100, Side::Buy),
    ///     ev(1, EventKind::Add, 7, 100, 100, Side::Buy),
    /// ];
    /// let rx = timely::example(move |scope| input.to_stream(scope).reconstruct_book().capture());
    /// let out: Vec<_> = captured(rx).into_iter().collect();
    /// assert_eq!(out.len(), 2);
    /// assert_eq!(out[0].top.bid, Some((Price(100), 100)));
    /// assert_eq!(out[1].top.bid, Some((Price(100), 60)));
    /// ```
    fn reconstruct_book(self) -> StreamVec<'scope, u64, BookEvent>;

    /// Rebuilds each instrument's book with explicit options.
    fn reconstruct_book_with(self, spec: ReconstructBookSpec) -> StreamVec<'scope, u64, BookEvent>;
}

impl<'scope> ReconstructBook<'scope> for StreamVec<'scope, u64, Timed<LobEvent>> {
    fn reconstruct_book(self) -> StreamVec<'scope, u64, BookEvent> {
        self.reconstruct_book_with(ReconstructBookSpec::default())
    }

    fn reconstruct_book_with(self, spec: ReconstructBookSpec) -> StreamVec<'scope, u64, BookEvent> {
        let pact = ExchangePact::new(|t: &Timed<LobEvent>| t.event.instrument.route());
        self.unary_frontier(pact, "ReconstructBook", move |_cap, _info| {
            // Sorted runs, one per activation that brought input; drained from the front.
            let mut runs: Vec<VecDeque<Timed<LobEvent>>> = Vec::new();
            let mut incoming: Vec<Timed<LobEvent>> = Vec::new();
            let mut ready: Vec<Timed<LobEvent>> = Vec::new();
            let mut held: Option<Capability<u64>> = None;
            let books: Rc<RefCell<FxHashMap<InstrumentId, Keyed>>> = Default::default();
            let mut reported = BookStats::default();
            if let Some(registry) = &spec.state {
                let saved = books.clone();
                if let Some(bytes) = registry.register("book", move || encode(&*saved.borrow())) {
                    let restored: FxHashMap<InstrumentId, Keyed> =
                        decode(&bytes).unwrap_or_else(|e| panic!("checkpoint: book state does not decode: {e}"));
                    for keyed in restored.values() {
                        reported.merge(keyed.book.stats());
                    }
                    *books.borrow_mut() = restored;
                }
            }
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    if held.as_ref().is_none_or(|h| cap.least().is_some_and(|t| t < h.time())) {
                        held = cap.retain_least(output.output_index());
                    }
                    for batch in data {
                        incoming.append(batch);
                    }
                });
                if !incoming.is_empty() {
                    sort_timed(&mut incoming);
                    runs.push(VecDeque::from(std::mem::take(&mut incoming)));
                }
                let Some(cap) = held.as_mut() else { return };
                // Everything ordered before the frontier is complete: apply it in order.
                let bound = frontier.frontier().first().copied();
                for run in runs.iter_mut() {
                    let k = match bound {
                        Some(f) => run.partition_point(|t| t.order_ts < f),
                        None => run.len(),
                    };
                    ready.extend(run.drain(..k));
                }
                runs.retain(|r| !r.is_empty());
                if !ready.is_empty() {
                    let mut books = books.borrow_mut();
                    // A stable sort of concatenated sorted runs is a merge.
                    ready.sort_by_key(|t| (t.order_ts, t.seq));
                    let mut session = output.session(&*cap);
                    for timed in ready.drain(..) {
                        let keyed = books.entry(timed.event.instrument).or_insert_with(|| {
                            let mut config = spec.book;
                            if let Some((_, n)) = spec.visible_levels.iter().find(|(i, _)| *i == timed.event.instrument)
                            {
                                config.visible_levels = Some(*n);
                            }
                            Keyed { book: Book::with_config(config), top: TopOfBook::default() }
                        });
                        keyed.book.apply(&timed.event);
                        let top = keyed.book.top();
                        let ofi = ofi(&keyed.top, &top);
                        keyed.top = top;
                        session.give(BookEvent { timed, top, ofi });
                    }
                    drop(session);
                    if let Some(shared) = &spec.stats {
                        let mut total = BookStats::default();
                        for keyed in books.values() {
                            total.merge(keyed.book.stats());
                        }
                        if let Ok(mut s) = shared.lock() {
                            // Add only what changed since the last report.
                            s.merge(&delta(&total, &reported));
                        }
                        reported = total;
                    }
                }
                match bound {
                    Some(f) if !runs.is_empty() => {
                        if *cap.time() < f {
                            cap.downgrade(&f);
                        }
                    }
                    _ => held = None,
                }
            }
        })
    }
}

fn delta(now: &BookStats, before: &BookStats) -> BookStats {
    BookStats {
        events: now.events - before.events,
        unknown_order: now.unknown_order - before.unknown_order,
        duplicate_order: now.duplicate_order - before.duplicate_order,
        over_cancel: now.over_cancel - before.over_cancel,
        missing_level: now.missing_level - before.missing_level,
        crossed: now.crossed - before.crossed,
        ghost_levels_removed: now.ghost_levels_removed - before.ghost_levels_removed,
        levels_beyond_view: now.levels_beyond_view - before.levels_beyond_view,
    }
}
