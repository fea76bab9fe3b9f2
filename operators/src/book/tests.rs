//! Book vs a naive oracle: replay every event into a map of orders and sum it per level.

use super::*;
use crate::event::InstrumentId;
use crate::generator::{Market, MarketSpec};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};

/// The oracle: orders by id; levels are derived by summing, from scratch, every time.
#[derive(Default)]
struct Oracle {
    orders: HashMap<u64, (Side, Price, Qty)>,
}

impl Oracle {
    fn apply(&mut self, e: &LobEvent) {
        match e.kind {
            EventKind::Add => {
                self.orders.insert(e.order_id, (e.side, e.price, e.size));
            }
            EventKind::PartialCancel | EventKind::ExecuteVisible => {
                let o = self.orders.get_mut(&e.order_id).expect("consistent flow");
                o.2 -= e.size;
                if o.2 == 0 {
                    self.orders.remove(&e.order_id);
                }
            }
            EventKind::Delete => {
                self.orders.remove(&e.order_id).expect("consistent flow");
            }
            _ => {}
        }
    }

    fn levels(&self, side: Side) -> Vec<(Price, Qty)> {
        let mut map: BTreeMap<Price, Qty> = BTreeMap::new();
        for (s, p, q) in self.orders.values() {
            if *s == side {
                *map.entry(*p).or_default() += q;
            }
        }
        let mut v: Vec<_> = map.into_iter().collect();
        if side == Side::Buy {
            v.reverse();
        }
        v
    }
}

fn check_market(spec: &MarketSpec) {
    let mut books: HashMap<InstrumentId, Book> = HashMap::new();
    let mut oracles: HashMap<InstrumentId, Oracle> = HashMap::new();
    for (n, e) in Market::new(spec).enumerate() {
        let book = books.entry(e.instrument).or_default();
        let oracle = oracles.entry(e.instrument).or_default();
        book.apply(&e);
        oracle.apply(&e);
        // Full comparison every 7th event and at every execution (cheap enough, catches drift early).
        if n % 7 == 0 || e.kind.is_execution() {
            for side in [Side::Buy, Side::Sell] {
                assert_eq!(book.levels(side, usize::MAX), oracle.levels(side), "event {n}: {e:?}");
            }
            assert_eq!(book.order_count(), oracle.orders.len());
        }
    }
    for (id, book) in &books {
        for side in [Side::Buy, Side::Sell] {
            assert_eq!(book.levels(side, usize::MAX), oracles[id].levels(side));
        }
        assert_eq!(book.stats().inconsistencies(), 0);
        assert_eq!(book.stats().ghost_levels_removed, 0);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn book_equals_oracle_on_generated_flow(seed in any::<u64>(), instruments in 1usize..4, anomalies in 0.0f64..200.0) {
        check_market(&MarketSpec {
            instruments,
            events: Some(20_000),
            rate_per_sec: 200.0 * instruments as f64,
            seed,
            anomalies_per_instrument_hour: anomalies,
            ..MarketSpec::default()
        });
    }

    /// Arbitrary (mostly inconsistent) messages never panic, and every message is counted.
    #[test]
    fn arbitrary_messages_are_counted_not_fatal(ops in proptest::collection::vec((1i64..=7, 0u64..20, 1u64..500, 90i64..110, any::<bool>()), 1..400)) {
        let mut book = Book::new();
        for (kind, id, size, price, buy) in &ops {
            let e = LobEvent {
                ts_ns: 0,
                instrument: InstrumentId::new("X").unwrap(),
                kind: EventKind::from_code(*kind).unwrap(),
                order_id: *id,
                size: *size,
                price: Price(*price),
                side: if *buy { Side::Buy } else { Side::Sell },
            };
            book.apply(&e);
            if let (Some(b), Some(a)) = (book.best_bid(), book.best_ask()) {
                prop_assert!(b.0 < a.0, "ghost repair keeps the book uncrossed");
            }
        }
        prop_assert_eq!(book.stats().events, ops.len() as u64);
    }
}

/// An event of instrument "X" at time 0.
fn ev(kind: EventKind, order_id: u64, size: Qty, price: i64, side: Side) -> LobEvent {
    LobEvent { ts_ns: 0, instrument: InstrumentId::new("X").unwrap(), kind, order_id, size, price: Price(price), side }
}

#[test]
fn ghost_levels_are_repaired_by_crossing_adds_and_executions() {
    let mut book = Book::new();
    book.apply(&ev(EventKind::Add, 1, 10, 100, Side::Buy)); // becomes a ghost: its delete is never seen
    book.apply(&ev(EventKind::Add, 2, 10, 95, Side::Buy));
    book.apply(&ev(EventKind::Add, 3, 10, 99, Side::Sell)); // rests at 99: the bid at 100 cannot exist
    assert_eq!(book.best_bid(), Some((Price(95), 10)));
    assert_eq!(book.stats().ghost_levels_removed, 1);
    assert_eq!(book.order_count(), 2, "the ghost's order is forgotten too");
    book.apply(&ev(EventKind::Add, 4, 10, 97, Side::Sell)); // a better ask
    book.apply(&ev(EventKind::ExecuteVisible, 3, 5, 99, Side::Sell)); // executes at 99: the ask at 97 is stale
    assert_eq!(book.best_ask(), Some((Price(99), 5)));
    assert_eq!(book.stats().ghost_levels_removed, 2);
    let mut naive = Book::with_config(BookConfig { repair_ghosts: false, ..BookConfig::default() });
    naive.apply(&ev(EventKind::Add, 1, 10, 100, Side::Buy));
    naive.apply(&ev(EventKind::Add, 3, 10, 99, Side::Sell));
    assert_eq!(naive.stats().crossed, 1);
}

#[test]
fn refill_takes_only_levels_entering_from_beyond_the_visible_range() {
    // Two visible levels per side (N = 2). Row layout: ask p, ask s, bid p, bid s per level.
    let prev = [101, 5, 100, 5, 102, 5, 99, 5];
    // The best bid left; bid level 2 is now 97 (was beyond N, unknown to the messages).
    let row = [101, 5, 99, 5, 102, 5, 97, 7];
    let mut book = Book::new();
    book.seed_level(Side::Sell, Price(101), 5);
    book.seed_level(Side::Sell, Price(102), 5);
    book.seed_level(Side::Buy, Price(99), 4); // wrong on purpose: inside the old range, must stay
    book.seed_level(Side::Buy, Price(98), 1); // a ghost in the entering range, absent from the row
    book.seed_level(Side::Buy, Price(90), 1); // still beyond the visible range: left alone
    assert_eq!(book.refill_entering_levels(&prev, &row), 2);
    assert_eq!(book.levels(Side::Buy, 5), vec![(Price(99), 4), (Price(97), 7), (Price(90), 1)]);
}

#[test]
fn a_level_pushed_beyond_the_files_depth_is_forgotten() {
    // A level-2 file: two bid levels are visible.
    let mut book = Book::with_config(BookConfig { visible_levels: Some(2), ..BookConfig::default() });
    book.apply(&ev(EventKind::Add, 1, 10, 98, Side::Buy));
    book.apply(&ev(EventKind::Add, 2, 10, 99, Side::Buy));
    book.apply(&ev(EventKind::Add, 3, 10, 100, Side::Buy)); // pushes 98 to the third level
    assert_eq!(book.levels(Side::Buy, 5), vec![(Price(100), 10), (Price(99), 10)]);
    assert_eq!(book.stats().levels_beyond_view, 1);
    assert_eq!(book.order_count(), 2, "the order at 98 is forgotten with its level");
    // Its delete, if the file ever carries one, is an unknown order and changes nothing.
    book.apply(&ev(EventKind::Delete, 1, 10, 98, Side::Buy));
    assert_eq!(book.stats().unknown_order, 1);
    assert_eq!(book.levels(Side::Buy, 5), vec![(Price(100), 10), (Price(99), 10)]);
    // An add deeper than the visible levels is itself beyond them; the asks are untouched.
    book.apply(&ev(EventKind::Add, 4, 10, 97, Side::Buy));
    book.apply(&ev(EventKind::Add, 5, 10, 101, Side::Sell));
    assert_eq!(book.levels(Side::Buy, 5).len(), 2);
    assert_eq!(book.stats().levels_beyond_view, 2);
    assert_eq!(book.best_ask(), Some((Price(101), 10)));
    // Without the option every level stays.
    let mut all = Book::new();
    for (id, p) in [(1, 98), (2, 99), (3, 100), (4, 97)] {
        all.apply(&ev(EventKind::Add, id, 10, p, Side::Buy));
    }
    assert_eq!(all.levels(Side::Buy, 5).len(), 4);
    assert_eq!(all.stats().levels_beyond_view, 0);
}
