//! Event-time windows: tumbling and sliding window assignment (pure), and the `WindowAggregate`
//! operator that folds records into per-(instrument, window) accumulators and emits each window once
//! the frontier (the watermark) passes its end.
//!
//! Lateness follows Flink's rule: a record belongs to a window `[start, end)` only while that window
//! has not fired. With [`Timed::order_ts`] (`max(ts, watermark at arrival)`) this is the test
//! `order_ts < end`, decided per record and therefore deterministic. A record that no window accepts
//! leaves on the late stream.

use crate::book::BookEvent;
use crate::checkpoint::{decode, encode, StateRegistry};
use crate::event::{EventTime, InstrumentId, LobEvent, Timed};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

/// A window `[start, end)` in event time (ns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive start.
    pub start: EventTime,
    /// Exclusive end.
    pub end: EventTime,
}

/// Window shape: `size` long, a new window every `slide`, aligned to `offset` (0 = the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Length of a window in ns.
    pub size_ns: u64,
    /// Distance between window starts in ns (`== size_ns` for tumbling windows).
    pub slide_ns: u64,
    /// Alignment of window starts in ns.
    pub offset_ns: u64,
}

impl WindowSpec {
    /// Tumbling windows of `size_ns`, aligned to the epoch.
    pub fn tumbling(size_ns: u64) -> Self {
        WindowSpec { size_ns, slide_ns: size_ns, offset_ns: 0 }
    }

    /// Sliding windows.
    pub fn sliding(size_ns: u64, slide_ns: u64) -> Self {
        WindowSpec { size_ns, slide_ns, offset_ns: 0 }
    }

    /// Checks the spec: positive sizes, `slide <= size`, and `size` a multiple of `slide`.
    pub fn validate(&self) -> Result<(), String> {
        if self.size_ns == 0 || self.slide_ns == 0 {
            return Err("window size and slide must be positive".into());
        }
        if self.slide_ns > self.size_ns {
            return Err(format!(
                "window slide {} exceeds its size {} (gaps are not supported)",
                crate::features::human_len(self.slide_ns),
                crate::features::human_len(self.size_ns)
            ));
        }
        if !self.size_ns.is_multiple_of(self.slide_ns) {
            return Err(format!(
                "window size {} is not a multiple of the slide {}",
                crate::features::human_len(self.size_ns),
                crate::features::human_len(self.slide_ns)
            ));
        }
        Ok(())
    }

    /// Start of the latest window that contains `ts`.
    #[inline]
    pub fn last_start(&self, ts: EventTime) -> EventTime {
        let shifted = ts.wrapping_sub(self.offset_ns % self.slide_ns);
        ts - shifted % self.slide_ns
    }

    /// Every window containing `ts`, latest first.
    ///
    /// ```
    /// use lobsentry_operators::window::{Window, WindowSpec};
    /// let w: Vec<_> = WindowSpec::sliding(10, 5).windows_of(12).collect();
    /// assert_eq!(w, vec![Window { start: 10, end: 20 }, Window { start: 5, end: 15 }]);
    /// ```
    pub fn windows_of(&self, ts: EventTime) -> impl Iterator<Item = Window> + '_ {
        let last = self.last_start(ts);
        let count = self.size_ns / self.slide_ns;
        (0..count).map_while(move |i| {
            let start = last.checked_sub(i * self.slide_ns)?;
            Some(Window { start, end: start + self.size_ns })
        })
    }
}

/// What the window operator needs to know about a record.
pub trait WindowRecord: ExchangeData {
    /// The key the record is grouped by.
    fn instrument(&self) -> InstrumentId;
    /// The event time that places it in windows.
    fn event_ts(&self) -> EventTime;
    /// `max(event time, watermark at arrival)`: a window accepts the record only if this is before its end.
    fn order_ts(&self) -> EventTime;
    /// Position in its source, to order records with equal `order_ts`.
    fn seq(&self) -> u64;
}

impl WindowRecord for Timed<LobEvent> {
    fn instrument(&self) -> InstrumentId {
        self.event.instrument
    }
    fn event_ts(&self) -> EventTime {
        self.event.ts_ns
    }
    fn order_ts(&self) -> EventTime {
        self.order_ts
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

impl WindowRecord for BookEvent {
    fn instrument(&self) -> InstrumentId {
        self.timed.event.instrument
    }
    fn event_ts(&self) -> EventTime {
        self.timed.event.ts_ns
    }
    fn order_ts(&self) -> EventTime {
        self.timed.order_ts
    }
    fn seq(&self) -> u64 {
        self.timed.seq
    }
}

/// An incremental aggregation over the records of one (instrument, window), like Flink's
/// `AggregateFunction`.
pub trait Aggregate<R>: Clone + 'static {
    /// The running state.
    type Acc: Default + Serialize + serde::de::DeserializeOwned + 'static;
    /// What a closed window produces.
    type Output: ExchangeData;
    /// Whether `add` must see each batch in `(order_ts, seq)` order (it is sorted first when true).
    /// Order-independent aggregates (counts, sums, extrema) set it to false and skip the sort.
    const ORDERED: bool = true;
    /// Folds one record in. With [`Aggregate::ORDERED`], records arrive in `(order_ts, seq)` order
    /// within a batch.
    fn add(&self, acc: &mut Self::Acc, record: &R);
    /// Produces the window's result.
    fn finish(&self, instrument: InstrumentId, window: Window, acc: Self::Acc) -> Self::Output;
}

/// Counts records per window: the smallest [`Aggregate`], handy in tests and examples.
#[derive(Clone, Copy, Debug, Default)]
pub struct CountRecords;

impl<R> Aggregate<R> for CountRecords {
    type Acc = u64;
    type Output = (InstrumentId, Window, u64);
    const ORDERED: bool = false;
    fn add(&self, acc: &mut u64, _record: &R) {
        *acc += 1;
    }
    fn finish(&self, instrument: InstrumentId, window: Window, acc: u64) -> Self::Output {
        (instrument, window, acc)
    }
}

/// Windows closing at one end: a capability at the end and the (instrument, start) keys.
type Closing = (Capability<u64>, Vec<(InstrumentId, EventTime)>);

/// Windowed, keyed aggregation with a late side output.
pub trait WindowAggregate<'scope, R: WindowRecord> {
    /// Aggregates each (instrument, window) and emits it once the frontier reaches `window.end`,
    /// ordered by (end, instrument, start). Windows that close together share one timestamp, the
    /// earliest of their ends, so a timestamp is never after a window's end and a frontier beyond `t`
    /// still means every window ending at or before `t` has been emitted. Returns
    /// `(windows, late records)`.
    ///
    /// # Examples
    /// ```
    /// use lobsentry_operators::event::{EventKind, InstrumentId, LobEvent, Price, Side, Timed};
    /// use lobsentry_operators::window::{CountRecords, Window, WindowAggregate, WindowSpec};
    /// use lobsentry_operators::testing::captured;
    /// use timely::dataflow::operators::{Capture, ToStream};
    ///
    /// let ev = |ts, order_ts| Timed { order_ts, seq: ts, event: LobEvent {
    ///     ts_ns: ts, instrument: InstrumentId::new("X").unwrap(), kind: EventKind::Add,
    ///     order_id: ts, size: 1, price: Price(1), side: Side::Buy } };
    /// // The third record arrived when the watermark was already 25: window [0, 10) had fired.
    /// let input = vec![ev(1, 1), ev(12, 12), ev(3, 25)];
    /// let (windows, late) = timely::example(move |scope| {
    ///     let (w, l) = input.to_stream(scope).window_aggregate(WindowSpec::tumbling(10), CountRecords);
    ///     (w.capture(), l.capture())
    /// });
    /// let x = InstrumentId::new("X").unwrap();
    /// let windows: Vec<_> = captured(windows).into_iter().collect();
    /// assert_eq!(windows, vec![(x, Window { start: 0, end: 10 }, 1), (x, Window { start: 10, end: 20 }, 1)]);
    /// assert_eq!(captured(late).into_iter().count(), 1);
    /// ```
    fn window_aggregate<A: Aggregate<R>>(
        self,
        spec: WindowSpec,
        aggregate: A,
    ) -> (StreamVec<'scope, u64, A::Output>, StreamVec<'scope, u64, R>);

    /// [`WindowAggregate::window_aggregate`] with its open windows registered for checkpoints (and
    /// restored from them).
    fn window_aggregate_with<A: Aggregate<R>>(
        self,
        spec: WindowSpec,
        aggregate: A,
        state: Option<StateRegistry>,
    ) -> (StreamVec<'scope, u64, A::Output>, StreamVec<'scope, u64, R>);
}

/// Open windows and where they close.
struct WindowState<Acc> {
    open: FxHashMap<(InstrumentId, EventTime), Acc>,
    // Window ends with the keys that close there and a capability at the end.
    closing: BTreeMap<EventTime, Closing>,
}

impl<Acc: Serialize> WindowState<Acc> {
    fn snapshot(&self) -> Result<Vec<u8>, String> {
        let mut rows: Vec<(InstrumentId, EventTime, EventTime, &Acc)> = Vec::with_capacity(self.open.len());
        for (end, (_, keys)) in &self.closing {
            for key in keys {
                if let Some(acc) = self.open.get(key) {
                    rows.push((key.0, key.1, *end, acc));
                }
            }
        }
        encode(&rows)
    }
}

impl<'scope, R: WindowRecord> WindowAggregate<'scope, R> for StreamVec<'scope, u64, R> {
    fn window_aggregate<A: Aggregate<R>>(
        self,
        spec: WindowSpec,
        aggregate: A,
    ) -> (StreamVec<'scope, u64, A::Output>, StreamVec<'scope, u64, R>) {
        self.window_aggregate_with(spec, aggregate, None)
    }

    fn window_aggregate_with<A: Aggregate<R>>(
        self,
        spec: WindowSpec,
        aggregate: A,
        registry: Option<StateRegistry>,
    ) -> (StreamVec<'scope, u64, A::Output>, StreamVec<'scope, u64, R>) {
        let scope = self.scope();
        let mut builder = OperatorBuilder::new("WindowAggregate".to_owned(), scope);
        let mut input = builder.new_input(self, ExchangePact::new(|r: &R| r.instrument().route()));
        let (windows_out, windows) = builder.new_output();
        let (late_out, late) = builder.new_output();
        let mut windows_out = OutputBuilder::from(windows_out);
        let mut late_out = OutputBuilder::from(late_out);

        builder.build(move |caps| {
            let state: Rc<RefCell<WindowState<A::Acc>>> =
                Rc::new(RefCell::new(WindowState { open: FxHashMap::default(), closing: BTreeMap::new() }));
            if let Some(registry) = &registry {
                let saved = state.clone();
                if let Some(bytes) = registry.register("window", move || saved.borrow().snapshot()) {
                    let rows: Vec<(InstrumentId, EventTime, EventTime, A::Acc)> =
                        decode(&bytes).unwrap_or_else(|e| panic!("checkpoint: window state does not decode: {e}"));
                    let mut st = state.borrow_mut();
                    for (instrument, start, end, acc) in rows {
                        let entry = st.closing.entry(end).or_insert_with(|| (caps[0].delayed(&end), Vec::new()));
                        entry.1.push((instrument, start));
                        st.open.insert((instrument, start), acc);
                    }
                }
            }
            drop(caps);
            let mut staged: Vec<R> = Vec::new();
            move |frontiers| {
                let mut st = state.borrow_mut();
                let WindowState { open, closing } = &mut *st;
                let mut windows_handle = windows_out.activate();
                let mut late_handle = late_out.activate();
                input.for_each_stamp(|cap, data| {
                    for batch in data {
                        staged.append(batch);
                    }
                    if A::ORDERED {
                        staged.sort_by_key(|r| (r.order_ts(), r.seq()));
                    }
                    let mut late_records = Vec::new();
                    for record in staged.drain(..) {
                        let mut accepted = false;
                        for window in spec.windows_of(record.event_ts()) {
                            if record.order_ts() >= window.end {
                                continue;
                            }
                            accepted = true;
                            let key = (record.instrument(), window.start);
                            let acc = open.entry(key).or_insert_with(|| {
                                let entry = closing
                                    .entry(window.end)
                                    .or_insert_with(|| (cap.delayed(&window.end, 0), Vec::new()));
                                entry.1.push(key);
                                A::Acc::default()
                            });
                            aggregate.add(acc, &record);
                        }
                        if !accepted {
                            late_records.push(record);
                        }
                    }
                    if !late_records.is_empty() {
                        late_handle.session(&cap).give_container(&mut late_records);
                    }
                });
                // Fire every window whose end the frontier has reached, all in one session at the
                // earliest end's capability (one container instead of one per end).
                let frontier = &frontiers[0];
                let mut first_cap: Option<Capability<u64>> = None;
                let mut fired: Vec<(EventTime, InstrumentId, EventTime)> = Vec::new();
                while let Some(entry) = closing.first_entry() {
                    let end = *entry.key();
                    if frontier.less_than(&end) {
                        break;
                    }
                    let (cap, keys) = entry.remove();
                    first_cap.get_or_insert(cap);
                    fired.extend(keys.into_iter().map(|(instrument, start)| (end, instrument, start)));
                }
                if let Some(cap) = first_cap {
                    fired.sort_unstable();
                    let mut session = windows_handle.session(&cap);
                    for (end, instrument, start) in fired {
                        if let Some(acc) = open.remove(&(instrument, start)) {
                            session.give(aggregate.finish(instrument, Window { start, end }, acc));
                        }
                    }
                }
            }
        });
        (windows, late)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tumbling_assignment() {
        let w = WindowSpec::tumbling(1_000);
        assert_eq!(w.windows_of(0).collect::<Vec<_>>(), vec![Window { start: 0, end: 1000 }]);
        assert_eq!(w.windows_of(999).collect::<Vec<_>>(), vec![Window { start: 0, end: 1000 }]);
        assert_eq!(w.windows_of(1000).collect::<Vec<_>>(), vec![Window { start: 1000, end: 2000 }]);
    }

    #[test]
    fn sliding_near_zero_and_offsets() {
        let w = WindowSpec::sliding(30, 10);
        assert_eq!(w.windows_of(5).count(), 1, "windows may not start before 0");
        assert_eq!(w.windows_of(25).count(), 3);
        let shifted = WindowSpec { size_ns: 10, slide_ns: 10, offset_ns: 3 };
        assert_eq!(shifted.windows_of(12).next(), Some(Window { start: 3, end: 13 }));
        assert_eq!(shifted.windows_of(13).next(), Some(Window { start: 13, end: 23 }));
        assert!(WindowSpec::sliding(10, 20).validate().is_err());
        assert!(WindowSpec::sliding(10, 3).validate().is_err());
        assert!(WindowSpec::sliding(10, 5).validate().is_ok());
    }
}
