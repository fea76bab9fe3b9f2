//! Market analytics maintained incrementally with differential dataflow, and queried from the same
//! dataflow.
//!
//! The event stream is first folded into one [`TickStats`] per (instrument, tick) by the ordinary
//! [`WindowAggregate`](crate::window::WindowAggregate) operator (tumbling event-time windows of
//! [`AnalyticsSpec::tick_ns`], 1 s by default). Those ticks become differential collections:
//!
//! * per-instrument per-minute and per-hour [`Volume`] (trades, shares, notional), and market-wide
//!   hourly totals: `explode` + `count_total`, with the volume as the difference type, so an update
//!   costs O(1) however many ticks a bucket holds;
//! * per-instrument volume over the last hour (sliding): each tick enters, and leaves again one hour
//!   later as a retraction (`negate().delay(+1h)`); a `reduce` keeps the top
//!   [`AnalyticsSpec::top_max`] instruments;
//! * every tick and anomaly leaves the collections again after [`AnalyticsSpec::retention_ns`]
//!   (24 h by default), so state stays bounded;
//! * the latest price (VWAP of the last tick with trades) and best bid/ask per instrument, and the
//!   market clock (end of the latest tick with any event), as collections holding one current value.
//!
//! Queries are a collection too ([`Query`] with an id): each query is joined with the arrangements
//! above at one logical time and retracted at the next, and its answer [`Row`]s are routed back to the
//! worker that asked ([`query_worker`]). [`queries::QueryDriver`] runs that protocol from a worker's
//! loop. Because every answer is computed at one logical time, it states exactly what it reflects:
//! the market clock it saw and whether the input had ended.

pub mod operator;
pub mod queries;

use crate::book::{BookEvent, TopOfBook};
use crate::event::{EventTime, InstrumentId, LobEvent, Price, Qty, Timed};
use crate::window::{Aggregate, Window, WindowRecord};
use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use serde::{Deserialize, Serialize};

pub use operator::{answer_rows, Analytics, AnswerUpdate, MarketAnalytics};

/// Nanoseconds in a minute.
pub const NS_PER_MINUTE: u64 = 60_000_000_000;
/// Nanoseconds in an hour.
pub const NS_PER_HOUR: u64 = 3_600_000_000_000;
/// Query ids carry the global index of the worker that asked in their bits from here up.
pub const QUERY_WORKER_SHIFT: u32 = 40;

/// The worker that issued query `id` (where its answer rows are routed).
pub fn query_worker(id: u64) -> u64 {
    id >> QUERY_WORKER_SHIFT
}

/// Options of [`MarketAnalytics::market_analytics`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalyticsSpec {
    /// Granularity of the analytics in event time (ns): trades and quotes are folded per tick.
    /// Must divide a minute.
    pub tick_ns: u64,
    /// How long ticks and anomalies stay queryable (ns); they are retracted afterwards.
    pub retention_ns: u64,
    /// Length of the sliding top-volume window (ns), one hour by default.
    pub sliding_ns: u64,
    /// How many instruments the top-volume ranking keeps (the largest `n` a query may ask for).
    pub top_max: usize,
}

impl Default for AnalyticsSpec {
    fn default() -> Self {
        AnalyticsSpec { tick_ns: 1_000_000_000, retention_ns: 24 * NS_PER_HOUR, sliding_ns: NS_PER_HOUR, top_max: 100 }
    }
}

impl AnalyticsSpec {
    /// Checks the spec: a tick that divides a minute, retention at least the sliding window.
    pub fn validate(&self) -> Result<(), String> {
        if self.tick_ns == 0 || !NS_PER_MINUTE.is_multiple_of(self.tick_ns) {
            return Err(format!("analytics tick {} ns must divide a minute", self.tick_ns));
        }
        if self.sliding_ns == 0 || self.retention_ns < self.sliding_ns {
            return Err(format!(
                "analytics retention {} ns must be at least the sliding window {} ns (and both positive)",
                self.retention_ns, self.sliding_ns
            ));
        }
        if self.top_max == 0 {
            return Err("analytics top-max must be positive".into());
        }
        Ok(())
    }
}

/// Traded volume: the difference type of the volume collections (a commutative group, so
/// differential accumulates it like a count).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Volume {
    /// Executions.
    pub trades: i64,
    /// Shares executed.
    pub shares: i64,
    /// Sum of price (ticks) x shares, for VWAP.
    pub notional: i128,
}

impl Volume {
    /// One execution of `size` shares at `price`.
    pub fn trade(price: Price, size: Qty) -> Volume {
        Volume { trades: 1, shares: size as i64, notional: price.0 as i128 * size as i128 }
    }

    /// Volume-weighted average price in ticks, when anything traded.
    pub fn vwap_ticks(&self) -> Option<f64> {
        (self.shares > 0).then(|| self.notional as f64 / self.shares as f64)
    }
}

impl IsZero for Volume {
    fn is_zero(&self) -> bool {
        self.trades == 0 && self.shares == 0 && self.notional == 0
    }
}

impl Semigroup for Volume {
    fn plus_equals(&mut self, rhs: &Self) {
        self.trades += rhs.trades;
        self.shares += rhs.shares;
        self.notional += rhs.notional;
    }
}

impl Monoid for Volume {
    fn zero() -> Self {
        Volume::default()
    }
}

impl Abelian for Volume {
    fn negate(&mut self) {
        self.trades = -self.trades;
        self.shares = -self.shares;
        self.notional = -self.notional;
    }
}

impl Multiply<isize> for Volume {
    type Output = Volume;
    fn multiply(self, rhs: &isize) -> Volume {
        let k = *rhs as i64;
        Volume { trades: self.trades * k, shares: self.shares * k, notional: self.notional * k as i128 }
    }
}

/// A record the analytics can read: an event, and the book after it when books are reconstructed.
pub trait AnalyticsRecord: WindowRecord {
    /// The event.
    fn lob_event(&self) -> &LobEvent;
    /// Best bid/ask after the event, if known.
    fn top(&self) -> Option<TopOfBook>;
}

impl AnalyticsRecord for Timed<LobEvent> {
    fn lob_event(&self) -> &LobEvent {
        &self.event
    }
    fn top(&self) -> Option<TopOfBook> {
        None
    }
}

impl AnalyticsRecord for BookEvent {
    fn lob_event(&self) -> &LobEvent {
        &self.timed.event
    }
    fn top(&self) -> Option<TopOfBook> {
        Some(self.top)
    }
}

/// Best bid and ask (price, shares).
pub type Quote = (Option<(Price, Qty)>, Option<(Price, Qty)>);

/// One instrument's trades and closing quote in one tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TickStats {
    /// The instrument.
    pub instrument: InstrumentId,
    /// End of the tick (exclusive), ns.
    pub tick_end: EventTime,
    /// Executions in the tick.
    pub volume: Volume,
    /// Best bid/ask after the tick's last event (with book reconstruction only).
    pub quote: Option<Quote>,
}

impl TickStats {
    /// The minute the tick belongs to (index since time 0).
    pub fn minute(&self, tick_ns: u64) -> u64 {
        (self.tick_end - tick_ns) / NS_PER_MINUTE
    }

    /// The hour the tick belongs to (index since time 0).
    pub fn hour(&self, tick_ns: u64) -> u64 {
        (self.tick_end - tick_ns) / NS_PER_HOUR
    }
}

/// Running state of one (instrument, tick).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TickAcc {
    volume: Volume,
    // The quote after the latest event by (order_ts, seq): the book's own order.
    quote: Option<((EventTime, u64), Quote)>,
}

impl TickAcc {
    fn add_record<R: AnalyticsRecord>(&mut self, record: &R) {
        let e = record.lob_event();
        if e.kind.is_execution() && !e.is_seed() {
            self.volume.plus_equals(&Volume::trade(e.price, e.size));
        }
        if let Some(top) = record.top() {
            self.merge_quote(Some(((record.order_ts(), record.seq()), (top.bid, top.ask))));
        }
    }

    fn merge_quote(&mut self, quote: Option<((EventTime, u64), Quote)>) {
        if let Some((key, q)) = quote {
            if self.quote.is_none_or(|(k, _)| k < key) {
                self.quote = Some((key, q));
            }
        }
    }
}

/// Events of one instrument and tick combined before they are exchanged (a combiner, as in
/// MapReduce): what [`TickAggregate`] folds. Only records that their tick still accepts are combined
/// (`order_ts < tick end`), so lateness is decided exactly as for single records.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TickPartial {
    /// The instrument.
    pub instrument: InstrumentId,
    /// Start of the tick, ns.
    pub tick_start: EventTime,
    /// Largest `order_ts` of the combined records.
    pub order_ts: EventTime,
    /// Largest `seq` of the combined records.
    pub seq: u64,
    acc: TickAcc,
}

impl TickPartial {
    /// A partial holding `record` alone.
    pub fn of<R: AnalyticsRecord>(record: &R, tick_ns: u64) -> TickPartial {
        let ts = record.event_ts();
        let mut p = TickPartial {
            instrument: record.instrument(),
            tick_start: ts - ts % tick_ns,
            order_ts: record.order_ts(),
            seq: record.seq(),
            acc: TickAcc::default(),
        };
        p.acc.add_record(record);
        p
    }

    /// Adds a record of the same instrument and tick.
    pub fn add<R: AnalyticsRecord>(&mut self, record: &R) {
        self.order_ts = self.order_ts.max(record.order_ts());
        self.seq = self.seq.max(record.seq());
        self.acc.add_record(record);
    }
}

impl WindowRecord for TickPartial {
    fn instrument(&self) -> InstrumentId {
        self.instrument
    }
    fn event_ts(&self) -> EventTime {
        self.tick_start
    }
    fn order_ts(&self) -> EventTime {
        self.order_ts
    }
    fn seq(&self) -> u64 {
        self.seq
    }
}

/// Folds [`TickPartial`]s into [`TickStats`]: executions into volume, the last book top into the quote.
#[derive(Clone, Copy, Debug, Default)]
pub struct TickAggregate;

impl Aggregate<TickPartial> for TickAggregate {
    type Acc = TickAcc;
    type Output = TickStats;
    const ORDERED: bool = false;

    fn add(&self, acc: &mut TickAcc, partial: &TickPartial) {
        acc.volume.plus_equals(&partial.acc.volume);
        acc.merge_quote(partial.acc.quote);
    }

    fn finish(&self, instrument: InstrumentId, window: Window, acc: TickAcc) -> TickStats {
        TickStats { instrument, tick_end: window.end, volume: acc.volume, quote: acc.quote.map(|(_, q)| q) }
    }
}

/// An anomaly as the analytics keep it: ordered, with its JSON rendering.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertRecord {
    /// End of the anomalous window, ns.
    pub window_end: EventTime,
    /// The instrument.
    pub instrument: InstrumentId,
    /// The alert as a JSON object.
    pub body: String,
}

/// The latest price and quote of one instrument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LatestPrice {
    /// End of the latest tick with trades, and its volume (its VWAP is the latest price).
    pub trade: Option<(EventTime, Volume)>,
    /// End of the latest tick with a known book, and the best bid/ask then.
    pub quote: Option<(EventTime, Quote)>,
}

impl LatestPrice {
    /// Folds a newer tick in.
    pub fn update(mut self, tick: &TickStats) -> LatestPrice {
        if tick.volume.trades > 0 && self.trade.is_none_or(|(t, _)| t <= tick.tick_end) {
            self.trade = Some((tick.tick_end, tick.volume));
        }
        if let Some(q) = tick.quote {
            if self.quote.is_none_or(|(t, _)| t <= tick.tick_end) {
                self.quote = Some((tick.tick_end, q));
            }
        }
        self
    }
}

/// A question to the analytics.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Query {
    /// Latest price (VWAP of the last tick with trades) and best bid/ask.
    Price {
        /// The instrument.
        instrument: InstrumentId,
    },
    /// Per-minute trades over the last `minutes` complete minutes (the current minute excluded).
    Trades {
        /// The instrument.
        instrument: InstrumentId,
        /// How many minutes back.
        minutes: u64,
    },
    /// The `n` instruments with the most shares traded over the sliding window (the last hour).
    TopVolume {
        /// How many.
        n: usize,
    },
    /// Totals of the last `hours` hours, the current (partial) hour included: market-wide, or of one
    /// instrument.
    HourlyStats {
        /// How many hours.
        hours: u64,
        /// The instrument (`None`: the whole market).
        instrument: Option<InstrumentId>,
    },
    /// Anomalies whose window ended at or after `since_ns`.
    Anomalies {
        /// Event time lower bound, ns.
        since_ns: EventTime,
    },
}

/// One row of an answer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Row {
    /// The market clock the answer reflects: end of the latest tick with any event.
    Clock(EventTime),
    /// The latest price of the asked instrument.
    Price(LatestPrice),
    /// One minute of the asked instrument (minutes without trades have no row).
    Minute(u64, Volume),
    /// One instrument of the ranking, by rank (0 = most shares).
    Top(usize, InstrumentId, Volume),
    /// One hour of market-wide totals (hours without trades have no row).
    Hour(u64, Volume),
    /// One anomaly.
    Anomaly(AlertRecord),
}

/// The minute range a [`Query::Trades`] covers at market clock `clock`: `[current - minutes, current)`.
pub fn trade_minutes(clock: EventTime, minutes: u64) -> std::ops::Range<u64> {
    let current = clock / NS_PER_MINUTE;
    current.saturating_sub(minutes)..current
}

/// The hour range a [`Query::HourlyStats`] covers at market clock `clock`: the last `hours` hours up
/// to and including the current one.
pub fn stat_hours(clock: EventTime, hours: u64) -> std::ops::RangeInclusive<u64> {
    let current = clock / NS_PER_HOUR;
    (current + 1).saturating_sub(hours)..=current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_is_a_group() {
        let mut v = Volume::trade(Price(100), 3);
        v.plus_equals(&Volume::trade(Price(200), 1));
        assert_eq!(v, Volume { trades: 2, shares: 4, notional: 500 });
        assert_eq!(v.vwap_ticks(), Some(125.0));
        let mut neg = v;
        neg.negate();
        neg.plus_equals(&v);
        assert!(neg.is_zero());
        assert_eq!(v.multiply(&-1).trades, -2);
    }

    #[test]
    fn ranges_exclude_the_current_minute_and_include_the_current_hour() {
        assert_eq!(trade_minutes(3 * NS_PER_MINUTE + 5, 2), 1..3);
        assert_eq!(trade_minutes(NS_PER_MINUTE, 5), 0..1);
        assert_eq!(stat_hours(2 * NS_PER_HOUR + 1, 2), 1..=2);
        assert_eq!(stat_hours(0, 3), 0..=0);
    }

    #[test]
    fn spec_validation() {
        assert!(AnalyticsSpec::default().validate().is_ok());
        assert!(AnalyticsSpec { tick_ns: 7_000_000_000, ..Default::default() }.validate().is_err());
        assert!(AnalyticsSpec { retention_ns: 1, ..Default::default() }.validate().is_err());
    }
}
