//! The order book: a pure data structure (no timely) plus the [`ReconstructBook`] operator.
//!
//! [`Book`] keeps L2 price levels per side and a map from order id to the order's remaining size.
//! It never panics on inconsistent input: unknown orders, over-cancels, reductions of levels it does
//! not hold and crossed books are counted in [`BookStats`].
//!
//! ## Books rebuilt from depth-limited message files
//! A LOBSTER level-N message file only carries messages that touch the first N levels, so an order
//! that drifts deeper than N levels can vanish without a delete and leave a *ghost level* behind. With
//! [`BookConfig::repair_ghosts`] (the default) the book removes such ghosts as soon as the data proves
//! them wrong:
//! * a resting add on one side at a price that would cross the other side proves every opposite level
//!   at or through that price is gone (an add that crossed would have executed);
//! * a visible execution at price `p` on one side proves there is no better level on that side
//!   (executions happen at the touch).
//!
//! Each removal is counted in [`BookStats::ghost_levels_removed`]. On a consistent full order flow
//! (the synthetic market) no repair ever fires, which the property tests check.
//!
//! Repair waits for proof, and until it comes a ghost sits inside the market. With
//! [`BookConfig::visible_levels`] set to the file's N the book does not wait: when an add pushes a
//! level beyond the N-th, that level and its orders are forgotten (counted in
//! [`BookStats::levels_beyond_view`]), since the file stops reporting them. A later message about
//! such an order is an unknown order; a level that comes back into view unreported stays missing,
//! which no message file can know.

pub mod operator;

pub use operator::{BookEvent, ReconstructBook, ReconstructBookSpec};

use crate::event::{EventKind, LobEvent, Price, Qty, Side};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Empty-level placeholder LOBSTER writes for asks.
pub const LOBSTER_EMPTY_ASK: i64 = 9_999_999_999;
/// Empty-level placeholder LOBSTER writes for bids.
pub const LOBSTER_EMPTY_BID: i64 = -9_999_999_999;

/// How a book treats data that contradicts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookConfig {
    /// Remove levels that the data proves stale (see the module docs).
    pub repair_ghosts: bool,
    /// The depth of the message file (LOBSTER's N of a level-N file): keep at most this many price
    /// levels per side, forgetting orders that an add pushes beyond them (see the module docs).
    /// `None`: keep every level.
    pub visible_levels: Option<usize>,
}

impl Default for BookConfig {
    fn default() -> Self {
        BookConfig { repair_ghosts: true, visible_levels: None }
    }
}

/// Counters of everything a book found inconsistent. None of these stop processing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookStats {
    /// Events applied.
    pub events: u64,
    /// Cancels, deletes and executions of an order id the book does not know.
    pub unknown_order: u64,
    /// Adds that reused an order id still resting in the book.
    pub duplicate_order: u64,
    /// Cancels or executions larger than the order's remaining size (clamped).
    pub over_cancel: u64,
    /// Reductions of a price level the book does not hold, or holds with less size (clamped).
    pub missing_level: u64,
    /// Events after which the best bid was at or above the best ask.
    pub crossed: u64,
    /// Levels forgotten because an add pushed them beyond [`BookConfig::visible_levels`].
    pub levels_beyond_view: u64,
    /// Levels removed by ghost repair.
    pub ghost_levels_removed: u64,
}

impl BookStats {
    /// Adds another set of counters into this one.
    pub fn merge(&mut self, other: &BookStats) {
        self.events += other.events;
        self.unknown_order += other.unknown_order;
        self.duplicate_order += other.duplicate_order;
        self.over_cancel += other.over_cancel;
        self.missing_level += other.missing_level;
        self.crossed += other.crossed;
        self.ghost_levels_removed += other.ghost_levels_removed;
        self.levels_beyond_view += other.levels_beyond_view;
    }

    /// Total of the inconsistency counters (everything except `events`).
    pub fn inconsistencies(&self) -> u64 {
        self.unknown_order + self.duplicate_order + self.over_cancel + self.missing_level + self.crossed
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Order {
    side: Side,
    price: Price,
    remaining: Qty,
}

/// Levels per side the top-of-book depth reads (the features' `bid_depth5`, `ask_depth5` and their
/// extremes): a message file of fewer levels cannot keep them (`book.visible-levels = "shallow"`).
pub const TOP_LEVELS: usize = 5;

/// Best prices and near-touch depth after an event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopOfBook {
    /// Best bid price and size, if any bid rests.
    pub bid: Option<(Price, Qty)>,
    /// Best ask price and size, if any ask rests.
    pub ask: Option<(Price, Qty)>,
    /// Shares resting in the best five bid levels.
    pub bid_depth5: Qty,
    /// Shares resting in the best five ask levels.
    pub ask_depth5: Qty,
}

impl TopOfBook {
    /// Mid price in ticks (as f64), when both sides are present.
    pub fn mid(&self) -> Option<f64> {
        match (self.bid, self.ask) {
            (Some((b, _)), Some((a, _))) => Some((b.0 as f64 + a.0 as f64) / 2.0),
            _ => None,
        }
    }

    /// Spread in ticks, when both sides are present.
    pub fn spread(&self) -> Option<i64> {
        match (self.bid, self.ask) {
            (Some((b, _)), Some((a, _))) => Some(a.0 - b.0),
            _ => None,
        }
    }
}

/// A price-level order book for one instrument.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Book {
    bids: BTreeMap<Price, Qty>,
    asks: BTreeMap<Price, Qty>,
    orders: FxHashMap<u64, Order>,
    config: BookConfig,
    stats: BookStats,
    /// `top()` as of the last change that could move it.
    #[serde(skip)]
    top_cache: Option<TopOfBook>,
    /// The fifth-best price of each side (bids, asks) when `top_cache` was filled; a change beyond it
    /// cannot move the top five levels.
    #[serde(skip)]
    fifth: [Option<Price>; 2],
}

impl Book {
    /// An empty book with the default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty book with a configuration.
    pub fn with_config(config: BookConfig) -> Self {
        Book { config, ..Self::default() }
    }

    /// The counters so far.
    pub fn stats(&self) -> &BookStats {
        &self.stats
    }

    /// Adds anonymous displayed liquidity at a level (seeding from a snapshot): no order id is
    /// tracked for it, and later messages of unknown orders reduce it.
    pub fn seed_level(&mut self, side: Side, price: Price, qty: Qty) {
        self.top_cache = None;
        if qty > 0 {
            *self.side_mut(side).entry(price).or_insert(0) += qty;
        }
    }

    /// Applies one event. Never panics; inconsistencies are counted.
    ///
    /// ```
    /// use lobsentry_operators::book::Book;
    /// use lobsentry_operators::event::{EventKind, InstrumentId, LobEvent, Price, Side};
    /// let ev = |kind, order_id, size, price, side| LobEvent {
    ///     ts_ns: 0, instrument: InstrumentId::new("X").unwrap(), kind, order_id, size,
    ///     price: Price(price), side,
    /// };
    /// let mut book = Book::new();
    /// book.apply(&ev(EventKind::Add, 1, 100, 10_000, Side::Buy));
    /// book.apply(&ev(EventKind::Add, 2, 50, 10_100, Side::Sell));
    /// book.apply(&ev(EventKind::ExecuteVisible, 1, 30, 10_000, Side::Buy));
    /// assert_eq!(book.best_bid(), Some((Price(10_000), 70)));
    /// assert_eq!(book.best_ask(), Some((Price(10_100), 50)));
    /// book.apply(&ev(EventKind::Delete, 99, 10, 10_000, Side::Buy)); // unknown order: counted
    /// assert_eq!(book.stats().unknown_order, 1);
    /// ```
    pub fn apply(&mut self, e: &LobEvent) {
        self.stats.events += 1;
        match e.kind {
            EventKind::Add => self.add(e),
            EventKind::PartialCancel | EventKind::Delete | EventKind::ExecuteVisible => self.reduce(e),
            EventKind::ExecuteHidden | EventKind::Cross | EventKind::Halt => {}
        }
        // Only an add can cross the book (reductions never move a side towards the other).
        if e.kind == EventKind::Add {
            if let (Some((b, _)), Some((a, _))) = (self.best_bid(), self.best_ask()) {
                if b >= a {
                    self.stats.crossed += 1;
                }
            }
        }
    }

    fn add(&mut self, e: &LobEvent) {
        if self.config.repair_ghosts {
            // A resting add proves that no opposite level sits at or through its price.
            let removed = match e.side {
                Side::Buy => remove_at_or_below(&mut self.asks, e.price),
                Side::Sell => remove_at_or_above(&mut self.bids, e.price),
            };
            self.forget_levels(e.side.opposite(), &removed);
        }
        if e.order_id != 0 {
            let order = Order { side: e.side, price: e.price, remaining: e.size };
            if let Some(old) = self.orders.insert(e.order_id, order) {
                self.stats.duplicate_order += 1;
                self.reduce_level(old.side, old.price, old.remaining);
            }
        }
        self.touch(e.side, e.price);
        *self.side_mut(e.side).entry(e.price).or_insert(0) += e.size;
        if let Some(n) = self.config.visible_levels {
            // The level pushed beyond the file's depth: messages about it stop, so its orders can
            // leave without a delete. It is forgotten now rather than left to turn stale.
            let levels = self.side_mut(e.side);
            if levels.len() > n.max(1) {
                let beyond = match e.side {
                    Side::Buy => levels.keys().next().copied(),
                    Side::Sell => levels.keys().next_back().copied(),
                };
                if let Some(p) = beyond {
                    levels.remove(&p);
                    self.stats.levels_beyond_view += 1;
                    self.forget_orders(e.side, &[p]);
                }
            }
        }
    }

    fn reduce(&mut self, e: &LobEvent) {
        let (side, price, amount) = match self.orders.get_mut(&e.order_id) {
            Some(order) => {
                let wanted = if e.kind == EventKind::Delete { order.remaining } else { e.size };
                let amount = if wanted > order.remaining {
                    self.stats.over_cancel += 1;
                    order.remaining
                } else {
                    wanted
                };
                order.remaining -= amount;
                let found = (order.side, order.price, amount);
                if order.remaining == 0 {
                    self.orders.remove(&e.order_id);
                }
                found
            }
            None => {
                self.stats.unknown_order += 1;
                (e.side, e.price, e.size)
            }
        };
        if self.config.repair_ghosts && e.kind == EventKind::ExecuteVisible {
            // Executions happen at the touch: better levels on the hit side are stale.
            let removed = match side {
                Side::Buy => remove_at_or_above(&mut self.bids, Price(price.0 + 1)),
                Side::Sell => remove_at_or_below(&mut self.asks, Price(price.0 - 1)),
            };
            self.forget_levels(side, &removed);
        }
        self.reduce_level(side, price, amount);
    }

    fn forget_levels(&mut self, side: Side, removed: &[Price]) {
        self.stats.ghost_levels_removed += removed.len() as u64;
        self.forget_orders(side, removed);
    }

    /// Forgets the orders of levels already taken out of the book (`removed` sorted).
    fn forget_orders(&mut self, side: Side, removed: &[Price]) {
        if removed.is_empty() {
            return;
        }
        self.top_cache = None;
        self.orders.retain(|_, o| !(o.side == side && removed.binary_search(&o.price).is_ok()));
    }

    fn reduce_level(&mut self, side: Side, price: Price, amount: Qty) {
        self.touch(side, price);
        let levels = self.side_mut(side);
        match levels.get_mut(&price) {
            Some(q) if *q > amount => *q -= amount,
            Some(q) => {
                let short = *q < amount;
                levels.remove(&price);
                if short {
                    self.stats.missing_level += 1;
                }
            }
            None => {
                if amount > 0 {
                    self.stats.missing_level += 1;
                }
            }
        }
    }

    /// Notes a change at `price`: drops the cached top when the change is within the top five levels.
    #[inline]
    fn touch(&mut self, side: Side, price: Price) {
        if self.top_cache.is_some() {
            let within = match (side, self.fifth) {
                (Side::Buy, [Some(floor), _]) => price >= floor,
                (Side::Sell, [_, Some(ceiling)]) => price <= ceiling,
                _ => true,
            };
            if within {
                self.top_cache = None;
            }
        }
    }

    fn side_mut(&mut self, side: Side) -> &mut BTreeMap<Price, Qty> {
        match side {
            Side::Buy => &mut self.bids,
            Side::Sell => &mut self.asks,
        }
    }

    /// Takes levels that enter the visible range from beyond it from a LOBSTER snapshot.
    ///
    /// A level-N message file says nothing about levels deeper than N, so when the book moves and a
    /// deeper level becomes visible the messages alone cannot know it. Prices at or inside the
    /// previous row's N-th level were visible, so every message about them was seen: those levels
    /// are left alone (and are what a comparison with the snapshot checks). Prices beyond the
    /// previous row's N-th level that the new row shows are set from the new row, and levels of the
    /// book there that the new row does not show are removed. Returns the number of levels changed.
    pub fn refill_entering_levels(&mut self, prev: &[i64], row: &[i64]) -> u64 {
        self.top_cache = None;
        let mut changed = 0;
        for side in [Side::Buy, Side::Sell] {
            let visible = |r: &[i64]| -> Vec<(Price, Qty)> {
                let (pi, qi, empty) = match side {
                    Side::Sell => (0, 1, LOBSTER_EMPTY_ASK),
                    Side::Buy => (2, 3, LOBSTER_EMPTY_BID),
                };
                r.chunks_exact(4)
                    .filter(|c| c[qi] > 0 && c[pi] != empty)
                    .map(|c| (Price(c[pi]), c[qi] as Qty))
                    .collect()
            };
            let depth = row.len() / 4;
            let before = visible(prev);
            // A side with fewer than N levels shows everything: nothing lies beyond it.
            let Some(&(prev_deep, _)) = before.last().filter(|_| before.len() == depth) else { continue };
            let now = visible(row);
            let now_deep = if now.len() == depth { now.last().map(|l| l.0) } else { None };
            let beyond = |p: Price| match side {
                Side::Buy => p < prev_deep && now_deep.is_none_or(|d| p >= d),
                Side::Sell => p > prev_deep && now_deep.is_none_or(|d| p <= d),
            };
            let levels = self.side_mut(side);
            let stale: Vec<Price> =
                levels.keys().copied().filter(|p| beyond(*p) && !now.iter().any(|l| l.0 == *p)).collect();
            for p in stale {
                levels.remove(&p);
                changed += 1;
            }
            for (p, q) in now.into_iter().filter(|l| beyond(l.0)) {
                if levels.insert(p, q) != Some(q) {
                    changed += 1;
                }
            }
        }
        changed
    }

    /// Best bid price and size.
    #[inline]
    pub fn best_bid(&self) -> Option<(Price, Qty)> {
        self.bids.last_key_value().map(|(p, q)| (*p, *q))
    }

    /// Best ask price and size.
    #[inline]
    pub fn best_ask(&self) -> Option<(Price, Qty)> {
        self.asks.first_key_value().map(|(p, q)| (*p, *q))
    }

    /// Best prices and depth over the best [`TOP_LEVELS`] levels (cached until a change within them).
    #[inline]
    pub fn top(&mut self) -> TopOfBook {
        if let Some(top) = self.top_cache {
            return top;
        }
        let mut top = TopOfBook::default();
        let mut fifth = [None, None];
        for (i, (p, q)) in self.bids.iter().rev().take(TOP_LEVELS).enumerate() {
            if i == 0 {
                top.bid = Some((*p, *q));
            }
            top.bid_depth5 += q;
            if i == TOP_LEVELS - 1 {
                fifth[0] = Some(*p);
            }
        }
        for (i, (p, q)) in self.asks.iter().take(TOP_LEVELS).enumerate() {
            if i == 0 {
                top.ask = Some((*p, *q));
            }
            top.ask_depth5 += q;
            if i == TOP_LEVELS - 1 {
                fifth[1] = Some(*p);
            }
        }
        self.top_cache = Some(top);
        self.fifth = fifth;
        top
    }

    /// Up to `k` best levels of a side, best first.
    pub fn levels(&self, side: Side, k: usize) -> Vec<(Price, Qty)> {
        match side {
            Side::Buy => self.bids.iter().rev().take(k).map(|(p, q)| (*p, *q)).collect(),
            Side::Sell => self.asks.iter().take(k).map(|(p, q)| (*p, *q)).collect(),
        }
    }

    /// Number of resting orders with a known id.
    pub fn order_count(&self) -> usize {
        self.orders.len()
    }

    /// Writes the best `k` levels in LOBSTER's order-book column layout
    /// (ask price, ask size, bid price, bid size, ... with LOBSTER's placeholders for empty levels).
    pub fn lobster_row(&self, k: usize, out: &mut Vec<i64>) {
        out.clear();
        let mut asks = self.asks.iter();
        let mut bids = self.bids.iter().rev();
        for _ in 0..k {
            match asks.next() {
                Some((p, q)) => out.extend([p.0, *q as i64]),
                None => out.extend([LOBSTER_EMPTY_ASK, 0]),
            }
            match bids.next() {
                Some((p, q)) => out.extend([p.0, *q as i64]),
                None => out.extend([LOBSTER_EMPTY_BID, 0]),
            }
        }
    }
}

impl Side {
    /// The other side.
    pub fn opposite(self) -> Side {
        match self {
            Side::Buy => Side::Sell,
            Side::Sell => Side::Buy,
        }
    }
}

/// Removes every level priced at or below `price`; returns their prices, ascending.
fn remove_at_or_below(levels: &mut BTreeMap<Price, Qty>, price: Price) -> Vec<Price> {
    match levels.first_key_value() {
        Some((low, _)) if *low <= price => {
            let keep = levels.split_off(&Price(price.0 + 1));
            let removed = std::mem::replace(levels, keep);
            removed.into_keys().collect()
        }
        _ => Vec::new(),
    }
}

/// Removes every level priced at or above `price`; returns their prices, ascending.
fn remove_at_or_above(levels: &mut BTreeMap<Price, Qty>, price: Price) -> Vec<Price> {
    match levels.last_key_value() {
        Some((high, _)) if *high >= price => levels.split_off(&price).into_keys().collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests;
