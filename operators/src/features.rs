//! Window features (schema version [`FEATURE_SCHEMA_VERSION`]) and the `ExtractFeatures` operator.
//!
//! The feature vector, in this order ([`FEATURE_NAMES`]); prices in dollars, sizes in shares:
//!
//! | # | name | meaning |
//! |---|------|---------|
//! | 0 | events | messages in the window |
//! | 1 | adds | type 1 |
//! | 2 | cancels | types 2 and 3 |
//! | 3 | execs | types 4 and 5 |
//! | 4 | exec_volume | shares executed (types 4, 5) |
//! | 5 | vwap | volume-weighted execution price |
//! | 6 | min_exec_price | lowest execution price |
//! | 7 | max_exec_price | highest execution price |
//! | 8..11 | mid_open, mid_high, mid_low, mid_close | mid price after each event |
//! | 12 | log_return | ln(mid_close / mid_open) |
//! | 13 | realized_vol | sqrt of the sum of squared log mid changes between events |
//! | 14 | spread_mean | mean spread after each event |
//! | 15 | spread_twa | spread weighted by how long it held before the window's next event |
//! | 16, 17 | bid_depth1, ask_depth1 | best-level size at the last event |
//! | 18, 19 | bid_depth5, ask_depth5 | five-level size at the last event |
//! | 20 | queue_imbalance | (bid_depth1 - ask_depth1) / (bid_depth1 + ask_depth1) |
//! | 21 | ofi | order-flow imbalance, Cont, Kukanov & Stoikov (2014), summed over events |
//! | 22 | cancel_add_ratio | cancels / adds |
//! | 23 | msg_rate | events per second of window length |
//! | 24 | add_volume | shares added (type 1) |
//! | 25 | cancel_volume | shares cancelled or deleted (types 2, 3) |
//! | 26, 27 | bid_depth5_max, ask_depth5_max | largest five-level size after any event of the window |
//! | 28, 29 | bid_depth5_min, ask_depth5_min | smallest five-level size after any event of the window |
//!
//! Features 24-29 (schema 2) see liquidity that is posted and pulled, or pulled and refilled, inside
//! one window, which the sizes at the window's last event (16-19) miss. Schema 2 appends to schema 1,
//! so a model trained on schema 1 reads the same values ([`features_in_schema`]).
//! Undefined values (no executions, one-sided book) are NaN: empty in CSV, `null` in JSON.
//! Book features (8..21, 26..29) need [`crate::book::ReconstructBook`] upstream; without a book they are NaN.

use crate::book::BookEvent;
use crate::event::{EventKind, InstrumentId, LobEvent, Timed};
use crate::window::{Aggregate, Window, WindowAggregate, WindowRecord, WindowSpec};
use serde::{Deserialize, Serialize};
use timely::dataflow::StreamVec;

/// Version of the feature order and meaning; bump on any change to [`FEATURE_NAMES`].
pub const FEATURE_SCHEMA_VERSION: u32 = 2;

/// Number of features.
pub const FEATURE_COUNT: usize = 30;

/// How many features (a prefix of [`FEATURE_NAMES`]) schema `version` had; `None` for a schema this
/// build does not know. Each schema only appended to the one before, so a model trained on an
/// earlier schema reads the values it was trained on.
///
/// ```
/// use lobsentry_operators::features::{features_in_schema, FEATURE_COUNT, FEATURE_SCHEMA_VERSION};
/// assert_eq!(features_in_schema(1), Some(24));
/// assert_eq!(features_in_schema(FEATURE_SCHEMA_VERSION), Some(FEATURE_COUNT));
/// assert_eq!(features_in_schema(FEATURE_SCHEMA_VERSION + 1), None);
/// ```
pub fn features_in_schema(version: u32) -> Option<usize> {
    match version {
        1 => Some(24),
        2 => Some(30),
        _ => None,
    }
}

/// Feature names in vector order.
pub const FEATURE_NAMES: [&str; FEATURE_COUNT] = [
    "events",
    "adds",
    "cancels",
    "execs",
    "exec_volume",
    "vwap",
    "min_exec_price",
    "max_exec_price",
    "mid_open",
    "mid_high",
    "mid_low",
    "mid_close",
    "log_return",
    "realized_vol",
    "spread_mean",
    "spread_twa",
    "bid_depth1",
    "ask_depth1",
    "bid_depth5",
    "ask_depth5",
    "queue_imbalance",
    "ofi",
    "cancel_add_ratio",
    "msg_rate",
    "add_volume",
    "cancel_volume",
    "bid_depth5_max",
    "ask_depth5_max",
    "bid_depth5_min",
    "ask_depth5_min",
];

/// A window length in ns the way the configuration writes durations ("1s", "250ms", "10s").
pub fn human_len(ns: u64) -> String {
    for (unit, per) in
        [("h", 3_600_000_000_000u64), ("m", 60_000_000_000), ("s", 1_000_000_000), ("ms", 1_000_000), ("us", 1_000)]
    {
        if ns >= per && ns.is_multiple_of(per) {
            return format!("{}{unit}", ns / per);
        }
    }
    format!("{ns}ns")
}

/// The features of one (instrument, window).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowFeatures {
    /// The instrument.
    pub instrument: InstrumentId,
    /// The window.
    pub window: Window,
    /// Integer execution statistics in ticks, for exact CSV output: (min, max) execution price.
    pub exec_price_range: Option<(i64, i64)>,
    /// VWAP in ticks.
    pub vwap_ticks: Option<f64>,
    /// The feature vector in [`FEATURE_NAMES`] order.
    pub values: [f64; FEATURE_COUNT],
}

/// Positions in [`FEATURE_NAMES`] of the features `names`, in their order (unknown names are
/// skipped): what a detector scoring a subset of the features looks up once per instrument.
pub fn feature_positions(names: &[&str]) -> Vec<usize> {
    names.iter().filter_map(|n| FEATURE_NAMES.iter().position(|f| f == n)).collect()
}

impl WindowFeatures {
    /// A feature by name.
    pub fn get(&self, name: &str) -> Option<f64> {
        FEATURE_NAMES.iter().position(|n| *n == name).map(|i| self.values[i])
    }

    /// The event count.
    pub fn events(&self) -> u64 {
        self.values[0] as u64
    }
}

/// Running state of one (instrument, window).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FeatureAcc {
    events: u64,
    adds: u64,
    cancels: u64,
    execs: u64,
    exec_volume: u64,
    notional: i128,
    min_exec: i64,
    max_exec: i64,
    mid_open: f64,
    mid_high: f64,
    mid_low: f64,
    mid_close: f64,
    mids: u64,
    sum_sq_ret: f64,
    spread_sum: f64,
    spreads: u64,
    twa_num: f64,
    twa_den: f64,
    last_spread: Option<(u64, f64)>,
    last_top: Option<crate::book::TopOfBook>,
    ofi: i64,
    has_book: bool,
    add_volume: u64,
    cancel_volume: u64,
    /// Five-level sizes (bid max, ask max, bid min, ask min) over the window's events.
    depth5: Option<[u64; 4]>,
}

impl FeatureAcc {
    #[inline]
    fn add_event(&mut self, e: &LobEvent) {
        if e.is_seed() {
            return;
        }
        self.events += 1;
        match e.kind {
            EventKind::Add => {
                self.adds += 1;
                self.add_volume += e.size;
            }
            k if k.is_cancel() => {
                self.cancels += 1;
                self.cancel_volume += e.size;
            }
            k if k.is_execution() => {
                if self.execs == 0 {
                    self.min_exec = e.price.0;
                    self.max_exec = e.price.0;
                } else {
                    self.min_exec = self.min_exec.min(e.price.0);
                    self.max_exec = self.max_exec.max(e.price.0);
                }
                self.execs += 1;
                self.exec_volume += e.size;
                self.notional += e.price.0 as i128 * e.size as i128;
            }
            _ => {}
        }
    }

    #[inline]
    fn add_book(&mut self, b: &BookEvent) {
        self.has_book = true;
        let ts = b.timed.event.ts_ns;
        if let Some(mid) = b.top.mid() {
            if self.mids == 0 {
                self.mid_open = mid;
                self.mid_high = mid;
                self.mid_low = mid;
            } else if mid != self.mid_close {
                let r = (mid / self.mid_close).ln();
                self.sum_sq_ret += r * r;
                self.mid_high = self.mid_high.max(mid);
                self.mid_low = self.mid_low.min(mid);
            }
            self.mid_close = mid;
            self.mids += 1;
        }
        if let Some((last_ts, last_spread)) = self.last_spread {
            let dt = ts.saturating_sub(last_ts) as f64;
            self.twa_num += last_spread * dt;
            self.twa_den += dt;
        }
        match b.top.spread() {
            Some(s) => {
                let s = s as f64;
                self.spread_sum += s;
                self.spreads += 1;
                self.last_spread = Some((ts, s));
            }
            None => self.last_spread = None,
        }
        let (bid5, ask5) = (b.top.bid_depth5, b.top.ask_depth5);
        self.depth5 = Some(match self.depth5 {
            None => [bid5, ask5, bid5, ask5],
            Some([bmax, amax, bmin, amin]) => [bmax.max(bid5), amax.max(ask5), bmin.min(bid5), amin.min(ask5)],
        });
        self.last_top = Some(b.top);
        self.ofi += b.ofi;
    }

    /// The feature values for a window.
    pub fn finish(self, instrument: InstrumentId, window: Window) -> WindowFeatures {
        const TICKS: f64 = 10_000.0;
        let nan = f64::NAN;
        let exec_price_range = (self.execs > 0).then_some((self.min_exec, self.max_exec));
        let vwap_ticks = (self.exec_volume > 0).then(|| self.notional as f64 / self.exec_volume as f64);
        let mut v = [nan; FEATURE_COUNT];
        v[0] = self.events as f64;
        v[1] = self.adds as f64;
        v[2] = self.cancels as f64;
        v[3] = self.execs as f64;
        v[4] = self.exec_volume as f64;
        v[5] = vwap_ticks.map_or(nan, |x| x / TICKS);
        v[6] = exec_price_range.map_or(nan, |r| r.0 as f64 / TICKS);
        v[7] = exec_price_range.map_or(nan, |r| r.1 as f64 / TICKS);
        if self.mids > 0 {
            v[8] = self.mid_open / TICKS;
            v[9] = self.mid_high / TICKS;
            v[10] = self.mid_low / TICKS;
            v[11] = self.mid_close / TICKS;
            v[12] = (self.mid_close / self.mid_open).ln();
            v[13] = self.sum_sq_ret.sqrt();
        }
        if self.spreads > 0 {
            v[14] = self.spread_sum / self.spreads as f64 / TICKS;
            v[15] = if self.twa_den > 0.0 { self.twa_num / self.twa_den / TICKS } else { v[14] };
        }
        if let Some(top) = self.last_top {
            let b1 = top.bid.map_or(0, |b| b.1) as f64;
            let a1 = top.ask.map_or(0, |a| a.1) as f64;
            v[16] = b1;
            v[17] = a1;
            v[18] = top.bid_depth5 as f64;
            v[19] = top.ask_depth5 as f64;
            v[20] = if b1 + a1 > 0.0 { (b1 - a1) / (b1 + a1) } else { nan };
        }
        if self.has_book {
            v[21] = self.ofi as f64;
        }
        v[22] = if self.adds > 0 { self.cancels as f64 / self.adds as f64 } else { nan };
        v[23] = self.events as f64 / ((window.end - window.start) as f64 / 1e9);
        v[24] = self.add_volume as f64;
        v[25] = self.cancel_volume as f64;
        if let Some(d) = self.depth5 {
            for (k, x) in d.into_iter().enumerate() {
                v[26 + k] = x as f64;
            }
        }
        WindowFeatures { instrument, window, exec_price_range, vwap_ticks, values: v }
    }
}

/// The feature [`Aggregate`], for raw events (trade features only) and for book events (all).
#[derive(Clone, Copy, Debug, Default)]
pub struct FeatureAggregate;

impl Aggregate<Timed<LobEvent>> for FeatureAggregate {
    type Acc = FeatureAcc;
    type Output = WindowFeatures;
    // Without a book every feature is a count, sum or extremum.
    const ORDERED: bool = false;
    #[inline]
    fn add(&self, acc: &mut FeatureAcc, record: &Timed<LobEvent>) {
        acc.add_event(&record.event);
    }
    fn finish(&self, instrument: InstrumentId, window: Window, acc: FeatureAcc) -> WindowFeatures {
        acc.finish(instrument, window)
    }
}

impl Aggregate<BookEvent> for FeatureAggregate {
    type Acc = FeatureAcc;
    type Output = WindowFeatures;
    #[inline]
    fn add(&self, acc: &mut FeatureAcc, record: &BookEvent) {
        acc.add_event(&record.timed.event);
        acc.add_book(record);
    }
    fn finish(&self, instrument: InstrumentId, window: Window, acc: FeatureAcc) -> WindowFeatures {
        acc.finish(instrument, window)
    }
}

/// Per-(instrument, window) features with a late side output.
pub trait ExtractFeatures<'scope, R: WindowRecord> {
    /// Windows the stream and computes [`WindowFeatures`]; returns `(features, late records)`.
    ///
    /// # Examples
    /// ```
    /// use lobsentry_operators::book::ReconstructBook;
    /// use lobsentry_operators::event::{EventKind, InstrumentId, LobEvent, Price, Side, Timed};
    /// use lobsentry_operators::features::ExtractFeatures;
    /// use lobsentry_operators::window::WindowSpec;
    /// use lobsentry_operators::testing::captured;
    /// use timely::dataflow::operators::{Capture, ToStream};
    ///
    /// let ev = |ts, kind, id, size, price, side| Timed { order_ts: ts, seq: ts, event: LobEvent {
    ///     ts_ns: ts, instrument: InstrumentId::new("X").unwrap(), kind, order_id: id, size,
    ///     price: Price(price), side } };
    /// let input = vec![
    ///     ev(1, EventKind::Add, 1, 100, 1_000_000, Side::Buy),
    ///     ev(2, EventKind::Add, 2, 100, 1_010_000, Side::Sell),
    ///     ev(3, EventKind::ExecuteVisible, 2, 40, 1_010_000, Side::Sell),
    /// ];
    /// let rx = timely::example(move |scope| {
    ///     let (features, _late) = input.to_stream(scope).reconstruct_book()
    ///         .extract_features(WindowSpec::tumbling(1_000_000_000));
    ///     features.capture()
    /// });
    /// let out: Vec<_> = captured(rx).into_iter().collect();
    /// assert_eq!(out.len(), 1);
    /// assert_eq!(out[0].get("execs"), Some(1.0));
    /// assert_eq!(out[0].get("vwap"), Some(101.0));
    /// assert_eq!(out[0].get("spread_mean"), Some(1.0)); // one-sided after event 1, $1 after 2 and 3
    /// assert_eq!(out[0].get("ask_depth1"), Some(60.0));
    /// ```
    fn extract_features(self, spec: WindowSpec) -> (StreamVec<'scope, u64, WindowFeatures>, StreamVec<'scope, u64, R>);

    /// [`ExtractFeatures::extract_features`] with its open windows checkpointed in `state`.
    fn extract_features_with(
        self,
        spec: WindowSpec,
        state: Option<crate::checkpoint::StateRegistry>,
    ) -> (StreamVec<'scope, u64, WindowFeatures>, StreamVec<'scope, u64, R>);
}

impl<'scope, R> ExtractFeatures<'scope, R> for StreamVec<'scope, u64, R>
where
    R: WindowRecord,
    FeatureAggregate: Aggregate<R, Output = WindowFeatures>,
{
    fn extract_features(self, spec: WindowSpec) -> (StreamVec<'scope, u64, WindowFeatures>, StreamVec<'scope, u64, R>) {
        self.window_aggregate(spec, FeatureAggregate)
    }

    fn extract_features_with(
        self,
        spec: WindowSpec,
        state: Option<crate::checkpoint::StateRegistry>,
    ) -> (StreamVec<'scope, u64, WindowFeatures>, StreamVec<'scope, u64, R>) {
        self.window_aggregate_with(spec, FeatureAggregate, state)
    }
}
