//! Coarser windows rolled up from finer ones: the `RollUp` operator turns an instrument's tumbling
//! windows of one length into tumbling or sliding windows of a multiple of it, without looking at
//! events again.
//!
//! Detectors that watch several time scales need, say, 10 s windows next to the 1 s ones. A second
//! window operator over every book event costs about an eighth of the pipeline's throughput; rolling
//! the 1 s feature vectors up costs a few operations per window. [`RollUpAcc`] merges feature vectors:
//!
//! - exact: counts and volumes (sums), VWAP (volume-weighted), lowest and highest execution price,
//!   mid open/high/low/close, log return, realized volatility (the squared log mid changes inside the
//!   finer windows plus those between them), book state at the last event (depths, imbalance),
//!   order-flow imbalance (sum), cancel/add ratio, message rate;
//! - approximate: the mean spread (weighted by events, not by events with a two-sided book) and the
//!   time-weighted spread (weighted by each finer window's length).
//!
//! A rolled-up window is emitted once the frontier passes its end; its time is its end, as for
//! [`crate::window::WindowAggregate`]. Its state is checkpointed.

use crate::checkpoint::{decode, encode, StateRegistry};
use crate::event::InstrumentId;
use crate::features::{WindowFeatures, FEATURE_COUNT};
use crate::window::{Window, WindowSpec};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

/// Merges consecutive finer windows of one instrument into one coarser window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RollUpAcc {
    sums: [f64; 5],
    notional: f64,
    notional_ticks: f64,
    exec_range: Option<(i64, i64)>,
    exec_min: f64,
    exec_max: f64,
    mid: Option<(f64, f64, f64, f64)>,
    sum_sq_ret: f64,
    spread_weighted: (f64, f64),
    twa_weighted: (f64, f64),
    last_book: Option<[f64; 5]>,
    ofi: Option<f64>,
    /// Shares added and cancelled (features 24, 25).
    volumes: [f64; 2],
    /// Five-level size extremes (features 26-29: bid max, ask max, bid min, ask min).
    depth5: Option<[f64; 4]>,
    windows: u64,
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl RollUpAcc {
    /// Folds in the next finer window (windows must come in time order).
    pub fn add(&mut self, w: &WindowFeatures) {
        let v = &w.values;
        for (k, sum) in self.sums.iter_mut().enumerate() {
            *sum += v[k];
        }
        if let (Some(vwap), true) = (finite(v[5]), v[4] > 0.0) {
            self.notional += vwap * v[4];
        }
        if let (Some(vwap), true) = (w.vwap_ticks, v[4] > 0.0) {
            self.notional_ticks += vwap * v[4];
        }
        if let Some((lo, hi)) = w.exec_price_range {
            self.exec_range = Some(self.exec_range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            self.exec_min = if self.windows == 0 || self.exec_min.is_nan() { v[6] } else { self.exec_min.min(v[6]) };
            self.exec_max = if self.windows == 0 || self.exec_max.is_nan() { v[7] } else { self.exec_max.max(v[7]) };
        }
        if let (Some(open), Some(high), Some(low), Some(close)) =
            (finite(v[8]), finite(v[9]), finite(v[10]), finite(v[11]))
        {
            self.mid = Some(match self.mid {
                None => (open, high, low, close),
                Some((o, h, l, c)) => {
                    // The mid change between the finer windows (from the last event of one to the
                    // first of the next) is part of the coarser window's volatility.
                    self.sum_sq_ret += (open / c).ln().powi(2);
                    (o, h.max(high), l.min(low), close)
                }
            });
            if let Some(rv) = finite(v[13]) {
                self.sum_sq_ret += rv * rv;
            }
        }
        if let Some(s) = finite(v[14]) {
            self.spread_weighted.0 += s * v[0];
            self.spread_weighted.1 += v[0];
        }
        if let Some(s) = finite(v[15]) {
            let span = (w.window.end - w.window.start) as f64;
            self.twa_weighted.0 += s * span;
            self.twa_weighted.1 += span;
        }
        if v[16..20].iter().all(|x| x.is_finite()) {
            self.last_book = Some([v[16], v[17], v[18], v[19], v[20]]);
        }
        if let Some(ofi) = finite(v[21]) {
            self.ofi = Some(self.ofi.unwrap_or(0.0) + ofi);
        }
        self.volumes[0] += v[24];
        self.volumes[1] += v[25];
        if v[26..30].iter().all(|x| x.is_finite()) {
            let d = [v[26], v[27], v[28], v[29]];
            self.depth5 = Some(match self.depth5 {
                None => d,
                Some(e) => [e[0].max(d[0]), e[1].max(d[1]), e[2].min(d[2]), e[3].min(d[3])],
            });
        }
        self.windows += 1;
    }

    /// The coarser window's features.
    pub fn finish(&self, instrument: InstrumentId, window: Window) -> WindowFeatures {
        let nan = f64::NAN;
        let mut v = [nan; FEATURE_COUNT];
        v[..5].copy_from_slice(&self.sums);
        let volume = self.sums[4];
        if volume > 0.0 {
            v[5] = self.notional / volume;
        }
        if self.exec_range.is_some() {
            v[6] = self.exec_min;
            v[7] = self.exec_max;
        }
        if let Some((o, h, l, c)) = self.mid {
            v[8] = o;
            v[9] = h;
            v[10] = l;
            v[11] = c;
            v[12] = (c / o).ln();
            v[13] = self.sum_sq_ret.sqrt();
        }
        if self.spread_weighted.1 > 0.0 {
            v[14] = self.spread_weighted.0 / self.spread_weighted.1;
        }
        if self.twa_weighted.1 > 0.0 {
            v[15] = self.twa_weighted.0 / self.twa_weighted.1;
        }
        if let Some(book) = self.last_book {
            v[16..21].copy_from_slice(&book);
        }
        if let Some(ofi) = self.ofi {
            v[21] = ofi;
        }
        v[22] = if self.sums[1] > 0.0 { self.sums[2] / self.sums[1] } else { nan };
        v[23] = self.sums[0] / ((window.end - window.start) as f64 / 1e9);
        v[24..26].copy_from_slice(&self.volumes);
        if let Some(d) = self.depth5 {
            v[26..30].copy_from_slice(&d);
        }
        let vwap_ticks = (volume > 0.0 && self.notional_ticks > 0.0).then(|| self.notional_ticks / volume);
        WindowFeatures { instrument, window, exec_price_range: self.exec_range, vwap_ticks, values: v }
    }
}

/// Rolls windows up into coarser tumbling or sliding windows.
pub trait RollUp<'scope> {
    /// Merges each instrument's windows into the windows of `spec` (tumbling or sliding, aligned to
    /// the epoch; its size and slide multiples of the input windows' length, as checked by
    /// [`WindowSpec::validate`]): each input window is merged into every window of `spec` that holds
    /// it. State is checkpointed in `state`.
    fn roll_up(self, spec: WindowSpec, state: Option<StateRegistry>) -> StreamVec<'scope, u64, WindowFeatures>;
}

type Open = FxHashMap<(InstrumentId, u64), RollUpAcc>;

impl<'scope> RollUp<'scope> for StreamVec<'scope, u64, WindowFeatures> {
    fn roll_up(self, spec: WindowSpec, registry: Option<StateRegistry>) -> StreamVec<'scope, u64, WindowFeatures> {
        let size_ns = spec.size_ns;
        let pact = ExchangePact::new(|w: &WindowFeatures| w.instrument.route());
        self.unary_frontier(pact, "RollUp", move |cap, _info| {
            let open: Rc<RefCell<Open>> = Default::default();
            // Coarser window end -> (its capability, the instruments with a window open there).
            let mut closing: BTreeMap<u64, (Capability<u64>, Vec<InstrumentId>)> = BTreeMap::new();
            if let Some(registry) = &registry {
                let saved = open.clone();
                let snapshot = move || {
                    let mut rows: Vec<(InstrumentId, u64, RollUpAcc)> =
                        saved.borrow().iter().map(|((i, s), acc)| (*i, *s, acc.clone())).collect();
                    rows.sort_by_key(|(i, s, _)| (*s, *i));
                    encode(&rows)
                };
                if let Some(bytes) = registry.register("rollup", snapshot) {
                    let rows: Vec<(InstrumentId, u64, RollUpAcc)> =
                        decode(&bytes).unwrap_or_else(|e| panic!("checkpoint: roll-up state does not decode: {e}"));
                    let mut o = open.borrow_mut();
                    for (instrument, start, acc) in rows {
                        let end = start + size_ns;
                        closing.entry(end).or_insert_with(|| (cap.delayed(&end), Vec::new())).1.push(instrument);
                        o.insert((instrument, start), acc);
                    }
                }
            }
            drop(cap);
            let mut staged: Vec<WindowFeatures> = Vec::new();
            move |(input, frontier), output| {
                let mut open = open.borrow_mut();
                input.for_each_stamp(|cap, data| {
                    for batch in data {
                        staged.append(batch);
                    }
                    staged.sort_by_key(|w| (w.window.end, w.instrument));
                    for w in staged.drain(..) {
                        // Every coarser window that holds it (each gets its finer windows in time order).
                        for Window { start, end } in spec.windows_of(w.window.start) {
                            let acc = open.entry((w.instrument, start)).or_insert_with(|| {
                                closing
                                    .entry(end)
                                    .or_insert_with(|| (cap.delayed(&end, 0), Vec::new()))
                                    .1
                                    .push(w.instrument);
                                RollUpAcc::default()
                            });
                            acc.add(&w);
                        }
                    }
                });
                while let Some(entry) = closing.first_entry() {
                    let end = *entry.key();
                    if frontier.less_equal(&end) {
                        break;
                    }
                    let (cap, mut instruments) = entry.remove();
                    instruments.sort_unstable();
                    let mut session = output.session(&cap);
                    let start = end - size_ns;
                    for instrument in instruments {
                        if let Some(acc) = open.remove(&(instrument, start)) {
                            session.give(acc.finish(instrument, Window { start, end }));
                        }
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::book::{BookConfig, ReconstructBook, ReconstructBookSpec};
    use crate::features::{ExtractFeatures, FEATURE_NAMES};
    use crate::generator::{Market, MarketSpec};
    use crate::testing::captured;
    use crate::window::WindowSpec;
    use timely::dataflow::operators::{Capture, ToStream};

    /// Rolled-up 10 s windows, tumbling and sliding every 2 s, equal the 10 s windows computed from
    /// the events (the exact features).
    #[test]
    fn rolled_up_windows_equal_direct_ones() {
        for slide in [10_000_000_000, 2_000_000_000] {
            rolled_up_equal_direct(slide);
        }
    }

    fn rolled_up_equal_direct(slide: u64) {
        let spec = MarketSpec { instruments: 3, events: Some(60_000), rate_per_sec: 300.0, ..Default::default() };
        let events: Vec<crate::event::Timed<crate::event::LobEvent>> = Market::new(&spec)
            .enumerate()
            .map(|(i, e)| crate::event::Timed { event: e, order_ts: e.ts_ns, seq: i as u64 })
            .collect();
        for workers in [1, 2] {
            let input = events.clone();
            let (direct, rolled) = timely::execute(timely::Config::process(workers), move |worker| {
                let input = if worker.index() == 0 { input.clone() } else { Vec::new() };
                worker.dataflow::<u64, _, _>(|scope| {
                    let books = input.to_stream(scope).reconstruct_book_with(ReconstructBookSpec {
                        book: BookConfig::default(),
                        stats: None,
                        state: None,
                        visible_levels: Vec::new(),
                    });
                    let (fine, _) = books.clone().extract_features(WindowSpec::tumbling(1_000_000_000));
                    let (direct, _) = books.extract_features(WindowSpec::sliding(10_000_000_000, slide));
                    (direct.capture(), fine.roll_up(WindowSpec::sliding(10_000_000_000, slide), None).capture())
                })
            })
            .unwrap()
            .join()
            .into_iter()
            .map(|r| r.unwrap())
            .fold((Vec::new(), Vec::new()), |(mut d, mut r), (dx, rx)| {
                d.extend(captured(dx));
                r.extend(captured(rx));
                (d, r)
            });
            let key = |w: &WindowFeatures| (w.instrument, w.window.start);
            let mut direct = direct;
            let mut rolled = rolled;
            direct.sort_by_key(key);
            rolled.sort_by_key(key);
            assert_eq!(direct.len(), rolled.len(), "{workers} workers, slide {slide}");
            assert!(direct.len() > 30 * 10_000_000_000 / slide as usize);
            for (d, r) in direct.iter().zip(&rolled) {
                assert_eq!(key(d), key(r));
                assert_eq!(d.exec_price_range, r.exec_price_range);
                for (k, name) in FEATURE_NAMES.iter().enumerate() {
                    if matches!(*name, "spread_mean" | "spread_twa") {
                        continue; // approximate by design
                    }
                    let (a, b) = (d.values[k], r.values[k]);
                    let same = (a.is_nan() && b.is_nan()) || (a - b).abs() <= 1e-9 * a.abs().max(1.0);
                    assert!(same, "{name} of {:?}: direct {a}, rolled up {b}", key(d));
                }
            }
        }
    }
}

/// Windows for instruments that went silent while the market traded on.
pub trait FillSilent<'scope> {
    /// Routes the windows of `spec` (tumbling or sliding, aligned to the epoch) by instrument and,
    /// for an instrument that had a window before, emits an empty window (no messages, the book as it
    /// last was) for each of up to `max_gap` window ends without one of its own. A window end is
    /// filled once the frontier passes it while the input is live (the market went on past it), or,
    /// when the input has ended, if the input's last event (`input_times`, see
    /// [`crate::ensemble::input_end`]) is at or after it: a rule of the data alone, so a restarted
    /// run fills what an uninterrupted one does. State is checkpointed in `state`.
    fn fill_silent(
        self,
        spec: WindowSpec,
        max_gap: u64,
        input_times: StreamVec<'scope, u64, u64>,
        state: Option<StateRegistry>,
    ) -> StreamVec<'scope, u64, WindowFeatures>;
}

/// The empty window that follows `last` at `window`: no messages, the book as it last was.
pub fn silent_window(last: &WindowFeatures, window: Window) -> WindowFeatures {
    let nan = f64::NAN;
    let l = &last.values;
    let mut v = [nan; FEATURE_COUNT];
    for k in [0, 1, 2, 3, 4, 23, 24, 25] {
        v[k] = 0.0; // events, adds, cancels, execs, exec_volume, msg_rate, add and cancel volume
    }
    if l[11].is_finite() {
        v[8..12].fill(l[11]); // the mid stays where it closed
        v[12] = 0.0;
        v[13] = 0.0;
    }
    v[14] = if l[15].is_finite() { l[15] } else { l[14] };
    v[15] = v[14];
    v[16..21].copy_from_slice(&l[16..21]);
    if l[18].is_finite() && l[19].is_finite() {
        v[26..30].copy_from_slice(&[l[18], l[19], l[18], l[19]]); // the book as it last was
    }
    if l[21].is_finite() {
        v[21] = 0.0;
    }
    WindowFeatures { instrument: last.instrument, window, exec_price_range: None, vwap_ticks: None, values: v }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct SilentState {
    /// Each instrument's last window (its own or filled) and how many were filled since its own.
    last: BTreeMap<InstrumentId, (WindowFeatures, u64)>,
    /// The next window end to check.
    next_end: u64,
}

impl<'scope> FillSilent<'scope> for StreamVec<'scope, u64, WindowFeatures> {
    fn fill_silent(
        self,
        spec: WindowSpec,
        max_gap: u64,
        input_times: StreamVec<'scope, u64, u64>,
        registry: Option<StateRegistry>,
    ) -> StreamVec<'scope, u64, WindowFeatures> {
        use timely::dataflow::channels::pact::Pipeline;
        let (size_ns, step) = (spec.size_ns, spec.slide_ns);
        let pact = ExchangePact::new(|w: &WindowFeatures| w.instrument.route());
        self.binary_frontier(input_times, pact, Pipeline, "FillSilent", move |cap, _info| {
            let state: Rc<RefCell<SilentState>> = Default::default();
            if let Some(registry) = &registry {
                let saved = state.clone();
                if let Some(bytes) = registry.register("fill-silent", move || encode(&*saved.borrow())) {
                    *state.borrow_mut() = decode(&bytes)
                        .unwrap_or_else(|e| panic!("checkpoint: silent-window state does not decode: {e}"));
                }
            }
            let mut held: Option<Capability<u64>> = Some(cap);
            let mut staged: BTreeMap<u64, (Capability<u64>, Vec<WindowFeatures>)> = BTreeMap::new();
            let mut latest_event = 0u64;
            move |(input, frontier), (times, times_frontier), output| {
                input.for_each_stamp(|cap, data| {
                    crate::ensemble::stage_by_end(&mut staged, &cap, data, |w| w.window.end)
                });
                times.for_each(|_cap, data| latest_event = data.iter().copied().fold(latest_event, u64::max));
                let bound = frontier.frontier().iter().next().copied();
                if bound.is_none() && !times_frontier.is_empty() {
                    return; // the input ended: wait for its last event times
                }
                let mut st = state.borrow_mut();
                // Window ends the frontier passed (live), or up to the input's last event (ended).
                let limit = match bound {
                    Some(b) => b.saturating_sub(1),
                    None => latest_event,
                };
                // Pass the windows on in time order; after the windows of an end, fill that end for
                // the instruments without one.
                loop {
                    let due = staged.first_key_value().map(|(t, _)| *t).filter(|t| bound.is_none_or(|b| *t < b));
                    if st.next_end == 0 {
                        match due {
                            Some(t) => st.next_end = t,
                            None => break,
                        }
                    }
                    if let Some(t) = due.filter(|t| *t <= st.next_end) {
                        let (cap, mut windows) = staged.remove(&t).expect("staged data");
                        windows.sort_by_key(|w| w.instrument);
                        let mut session = output.session(&cap);
                        for w in windows {
                            st.last.insert(w.instrument, (w.clone(), 0));
                            session.give(w);
                        }
                        continue;
                    }
                    if st.next_end <= limit {
                        // Skip ends where no instrument can be filled (an idle stretch, a jump in
                        // event time): the next one is right after some instrument's last window.
                        let fillable =
                            st.last.values().filter(|(_, f)| *f < max_gap).map(|(l, _)| l.window.end + step).min();
                        let target = fillable.unwrap_or(u64::MAX).max(st.next_end);
                        if target > st.next_end {
                            let beyond = limit - limit % step + step;
                            st.next_end = match due {
                                Some(t) => target.min(t).min(beyond),
                                None => target.min(beyond),
                            };
                            continue;
                        }
                        let end = st.next_end;
                        if let Some(cap) = held.as_mut().filter(|c| *c.time() <= end) {
                            cap.downgrade(&end);
                            let mut session = output.session(&*cap);
                            for (last, filled) in st.last.values_mut() {
                                if last.window.end < end && *filled < max_gap {
                                    let w = silent_window(last, Window { start: end - size_ns, end });
                                    *last = w.clone();
                                    *filled += 1;
                                    session.give(w);
                                }
                            }
                        }
                        st.next_end = end + step;
                        continue;
                    }
                    // Past what may be filled (the input ended): pass the rest on.
                    let Some(t) = due else { break };
                    let (cap, windows) = staged.remove(&t).expect("staged data");
                    let mut session = output.session(&cap);
                    for w in windows {
                        session.give(w);
                    }
                }
                // Hold a capability for the next end to fill (none once the input has ended).
                match (bound, held.as_mut()) {
                    (Some(b), Some(cap)) => {
                        let target = if st.next_end == 0 { b } else { st.next_end };
                        if *cap.time() < target {
                            cap.downgrade(&target);
                        }
                    }
                    (None, _) => held = None,
                    _ => {}
                }
            }
        })
    }
}

#[cfg(test)]
mod silent_tests {
    use super::*;
    use timely::dataflow::operators::{Capture, Input, Probe};

    const S: u64 = 1_000_000_000;

    fn window(sym: &str, i: u64) -> WindowFeatures {
        let mut values = [f64::NAN; FEATURE_COUNT];
        values[0] = 10.0;
        values[11] = 100.0 + i as f64;
        values[16..21].copy_from_slice(&[5.0, 6.0, 50.0, 60.0, -0.1]);
        WindowFeatures {
            instrument: InstrumentId::new(sym).unwrap(),
            window: Window { start: (i - 1) * S, end: i * S },
            exec_price_range: None,
            vwap_ticks: None,
            values,
        }
    }

    /// A trades every second up to 20 s (its last event at 19.5 s); B until 5 s, then again at 15 s.
    fn run(live: bool) -> Vec<WindowFeatures> {
        let rx = timely::execute_directly(move |worker| {
            let probe = timely::dataflow::ProbeHandle::new();
            let (mut input, mut times, rx) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<WindowFeatures>>();
                let (times, time_stream) = scope.new_input::<Vec<u64>>();
                let out = stream.fill_silent(WindowSpec::tumbling(S), 6, time_stream, None);
                let rx = out.clone().capture();
                out.probe_with(&probe);
                (input, times, rx)
            });
            for i in 1..=20u64 {
                input.advance_to(i * S);
                times.advance_to(i * S);
                input.send(window("A", i));
                if i <= 5 || i == 15 {
                    input.send(window("B", i));
                }
                times.send(i * S - S / 2);
                if live && i < 20 {
                    input.advance_to(i * S + 1);
                    times.advance_to(i * S + 1);
                    worker.step_while(|| probe.less_than(input.time()));
                }
            }
            drop(input);
            drop(times);
            worker.step_while(|| !probe.done());
            rx
        });
        crate::testing::captured(rx)
    }

    #[test]
    fn silent_instruments_get_empty_windows_the_same_live_or_at_the_end() {
        for live in [true, false] {
            let out = run(live);
            let b: Vec<(u64, f64)> =
                out.iter().filter(|w| w.instrument.as_str() == "B").map(|w| (w.window.end / S, w.values[0])).collect();
            // 6..=11 filled (at most 6 per silence), 15 its own, 16..=19 filled; 20 is after the
            // input's last event (19.5 s), so it is not filled.
            let want: Vec<(u64, f64)> = (1..=5)
                .map(|i| (i, 10.0))
                .chain((6..=11).map(|i| (i, 0.0)))
                .chain([(15, 10.0)])
                .chain((16..=19).map(|i| (i, 0.0)))
                .collect();
            assert_eq!(b, want, "live {live}");
            let filled = out.iter().find(|w| w.instrument.as_str() == "B" && w.window.end == 6 * S).unwrap();
            assert_eq!(filled.values[11], 105.0, "the mid stays where it closed");
            assert_eq!(filled.values[12], 0.0);
            assert_eq!(filled.values[18], 50.0, "the book as it last was");
            assert!(filled.values[5].is_nan(), "no executions");
            assert_eq!(out.iter().filter(|w| w.instrument.as_str() == "A").count(), 20, "A is passed on whole");
        }
    }
}
