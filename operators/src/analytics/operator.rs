//! The `MarketAnalytics` operator: ticks -> differential arrangements -> query answers.

use super::{
    query_worker, stat_hours, trade_minutes, AlertRecord, AnalyticsRecord, AnalyticsSpec, LatestPrice, Query, Row,
    TickAggregate, TickPartial, TickStats, Volume,
};
use crate::event::InstrumentId;
use crate::window::{WindowAggregate, WindowSpec};
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::{AsCollection, VecCollection};
use rustc_hash::FxHashMap;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use timely::dataflow::channels::pact::{Exchange as ExchangePact, Pipeline};
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Concatenate, Exchange, Inspect, Operator};
use timely::dataflow::StreamVec;
use timely::ExchangeData;

/// What [`MarketAnalytics::market_analytics`] returns.
pub struct Analytics<'scope> {
    /// Answer updates `((query id, row), time, diff)`, each on the worker that issued the query; the
    /// answer to a query asked at `q` is [`answer_rows`] of its updates at `q`.
    pub answers: StreamVec<'scope, u64, AnswerUpdate>,
    /// Records that arrived after their tick closed (not in the analytics), one partial each.
    pub late: StreamVec<'scope, u64, TickPartial>,
    /// The largest logical time of any analytics update seen by any worker (shared with the worker's
    /// [`QueryDriver`](super::queries::QueryDriver): once the input has ended, queries are asked just
    /// after it, so sliding windows still cover the end of the data).
    pub max_time: Rc<Cell<u64>>,
    /// The stream that updates `max_time`: probe it together with the data, so that `max_time` is
    /// final once that probe's frontier is empty.
    pub max_time_progress: StreamVec<'scope, u64, u64>,
}

/// Incrementally maintained market analytics, answering [`Query`]s.
pub trait MarketAnalytics<'scope, R: AnalyticsRecord> {
    /// Maintains the analytics of the module documentation over this stream (and `alerts`), and answers
    /// `queries`: a collection of `(id, query)`, each inserted at one time and retracted at the next.
    ///
    /// # Examples
    /// ```
    /// use differential_dataflow::input::Input;
    /// use lobsentry_operators::analytics::{answer_rows, AnalyticsSpec, MarketAnalytics, Query, Row, NS_PER_MINUTE};
    /// use lobsentry_operators::event::{EventKind, InstrumentId, LobEvent, Price, Side, Timed};
    /// use lobsentry_operators::testing::captured;
    /// use timely::dataflow::operators::{Capture, ToStream};
    ///
    /// let x = InstrumentId::new("X").unwrap();
    /// let trade = |ts: u64, size| Timed { order_ts: ts, seq: ts, event: LobEvent {
    ///     ts_ns: ts, instrument: x, kind: EventKind::ExecuteVisible, order_id: 1, size,
    ///     price: Price(100), side: Side::Buy } };
    /// // Two trades in minute 0, one in minute 1, one in minute 2 (the current minute).
    /// let input = vec![trade(1_000, 5), trade(2_000, 7), trade(NS_PER_MINUTE + 1, 1), trade(2 * NS_PER_MINUTE + 1, 9)];
    /// let answers = timely::example(move |scope| {
    ///     let (mut queries, collection) = scope.new_collection();
    ///     let a = input.to_stream(scope).market_analytics(None, collection, AnalyticsSpec::default());
    ///     // Asked once all data is in: at a time after the last tick.
    ///     let t = 3 * NS_PER_MINUTE;
    ///     queries.advance_to(t);
    ///     queries.insert((7, Query::Trades { instrument: x, minutes: 5 }));
    ///     queries.advance_to(t + 1);
    ///     queries.close();
    ///     a.answers.capture()
    /// });
    /// let rows = answer_rows(captured(answers).into_iter().map(|((_, r), t, d)| (r, t, d)), 3 * NS_PER_MINUTE);
    /// // The clock: end of the latest tick; the minutes before the current one, with their volume.
    /// assert_eq!(rows[0], Row::Clock(2 * NS_PER_MINUTE + 1_000_000_000));
    /// assert!(matches!(rows[1], Row::Minute(0, v) if v.trades == 2 && v.shares == 12));
    /// assert!(matches!(rows[2], Row::Minute(1, v) if v.trades == 1));
    /// assert_eq!(rows.len(), 3);
    /// ```
    fn market_analytics(
        self,
        alerts: Option<StreamVec<'scope, u64, AlertRecord>>,
        queries: VecCollection<'scope, u64, (u64, Query)>,
        spec: AnalyticsSpec,
    ) -> Analytics<'scope>;
}

impl<'scope, R: AnalyticsRecord> MarketAnalytics<'scope, R> for StreamVec<'scope, u64, R> {
    fn market_analytics(
        self,
        alerts: Option<StreamVec<'scope, u64, AlertRecord>>,
        queries: VecCollection<'scope, u64, (u64, Query)>,
        spec: AnalyticsSpec,
    ) -> Analytics<'scope> {
        let tick_ns = spec.tick_ns;
        let (ticks, late) = combine_ticks(self, tick_ns).window_aggregate(WindowSpec::tumbling(tick_ns), TickAggregate);

        // Logical times seen, broadcast: the queries' anchor once the input has ended.
        let max_time = Rc::new(Cell::new(0u64));
        let mut time_streams = vec![max_times(ticks.clone(), |t: &TickStats| t.tick_end)];
        if let Some(a) = &alerts {
            time_streams.push(max_times(a.clone(), |a: &AlertRecord| a.window_end));
        }
        let seen = max_time.clone();
        let max_time_progress =
            ticks.scope().concatenate(time_streams).broadcast().inspect(move |t| seen.set(seen.get().max(*t)));

        // The market clock and each instrument's latest price: collections of one current value.
        let clock = latest_by(
            ticks.clone(),
            |_| (),
            |t| t.tick_end,
            |old: Option<&u64>, t: &TickStats| old.map_or(t.tick_end, |o| t.tick_end.max(*o)),
        )
        .arrange_by_key();
        let prices = latest_by(
            ticks.clone(),
            |t| t.instrument,
            |t| t.tick_end,
            |old: Option<&LatestPrice>, t: &TickStats| old.copied().unwrap_or_default().update(t),
        )
        .arrange_by_key();

        let trades = to_updates(ticks, |t: &TickStats| t.tick_end).filter(|t| t.volume.trades > 0);
        // Ticks leave everything after the retention, and the ranking after the sliding window.
        let retention = spec.retention_ns;
        let kept = trades.clone().concat(trades.clone().negate().delay(move |t| t.saturating_add(retention)));
        let sliding = spec.sliding_ns;
        let recent = trades.clone().concat(trades.negate().delay(move |t| t.saturating_add(sliding)));

        let minutes = volume_by(kept.clone(), move |t| (t.instrument, t.minute(tick_ns)));
        let instrument_hours = volume_by(kept.clone(), move |t| (t.instrument, t.hour(tick_ns)));
        let hours = volume_by(kept, move |t| ((), t.hour(tick_ns)));
        let top_max = spec.top_max;
        let top = recent
            .explode(|t| Some((t.instrument, t.volume)))
            .count_total()
            .map(|(instrument, v)| ((), (v.shares, std::cmp::Reverse(instrument), v)))
            .reduce(move |_key, input, output| {
                // Values arrive in ascending order: the most shares last (ties: the smaller symbol).
                for (rank, ((_, std::cmp::Reverse(instrument), v), _)) in input.iter().rev().take(top_max).enumerate() {
                    output.push(((rank, *instrument, *v), 1isize));
                }
            })
            .arrange_by_key();
        let anomalies = alerts.map(|a| {
            let a = to_updates(a, |a: &AlertRecord| a.window_end);
            a.clone().concat(a.negate().delay(move |t| t.saturating_add(retention))).map(|a| ((), a)).arrange_by_key()
        });

        // Queries: the clock first (every answer states it), then each kind against its arrangement.
        let with_clock = queries
            .clone()
            .map(|(id, q)| ((), (id, q)))
            .join_core(clock, |_, (id, q), clock| Some((*id, q.clone(), *clock)));
        let mut answers = vec![with_clock.clone().map(|(id, _, clock)| (id, Row::Clock(clock)))];
        answers.push(
            queries
                .clone()
                .flat_map(|(id, q)| match q {
                    Query::Price { instrument } => Some((instrument, id)),
                    _ => None,
                })
                .join_core(prices, |_, id, p| Some((*id, Row::Price(*p)))),
        );
        answers.push(
            with_clock
                .clone()
                .flat_map(|(id, q, clock)| match q {
                    Query::Trades { instrument, minutes } => {
                        let r = trade_minutes(clock, minutes);
                        Some((instrument, (id, r.start, r.end)))
                    }
                    _ => None,
                })
                .join_core(minutes, |_, (id, lo, hi), (minute, v)| {
                    (lo <= minute && minute < hi).then_some((*id, Row::Minute(*minute, *v)))
                }),
        );
        answers.push(
            queries
                .clone()
                .flat_map(|(id, q)| match q {
                    Query::TopVolume { n } => Some(((), (id, n))),
                    _ => None,
                })
                .join_core(top, |_, (id, n), (rank, instrument, v)| {
                    (rank < n).then_some((*id, Row::Top(*rank, *instrument, *v)))
                }),
        );
        answers.push(
            with_clock
                .clone()
                .flat_map(|(id, q, clock)| match q {
                    Query::HourlyStats { hours, instrument: None } => {
                        let r = stat_hours(clock, hours);
                        Some(((), (id, *r.start(), *r.end())))
                    }
                    _ => None,
                })
                .join_core(hours, |_, (id, lo, hi), (hour, v)| {
                    (lo <= hour && hour <= hi).then_some((*id, Row::Hour(*hour, *v)))
                }),
        );
        answers.push(
            with_clock
                .flat_map(|(id, q, clock)| match q {
                    Query::HourlyStats { hours, instrument: Some(instrument) } => {
                        let r = stat_hours(clock, hours);
                        Some((instrument, (id, *r.start(), *r.end())))
                    }
                    _ => None,
                })
                .join_core(instrument_hours, |_, (id, lo, hi), (hour, v)| {
                    (lo <= hour && hour <= hi).then_some((*id, Row::Hour(*hour, *v)))
                }),
        );
        if let Some(anomalies) = anomalies {
            answers.push(
                queries
                    .flat_map(|(id, q)| match q {
                        Query::Anomalies { since_ns } => Some(((), (id, since_ns))),
                        _ => None,
                    })
                    .join_core(anomalies, |_, (id, since), a| {
                        (a.window_end >= *since).then(|| (*id, Row::Anomaly(a.clone())))
                    }),
            );
        }
        let mut all = answers.pop().expect("at least the clock answers");
        for a in answers {
            all = all.concat(a);
        }
        // To the asking worker, as updates: it keeps those at its query's time (see `answer_rows`).
        let answers = all.inner.exchange(|((id, _), _, _): &((u64, Row), u64, isize)| query_worker(*id));
        Analytics { answers, late, max_time, max_time_progress }
    }
}

/// Volume per key and time bucket, arranged by key: values are (bucket, volume).
type VolumeArrangement<'scope, K> = Arranged<'scope, TraceAgent<ValSpine<K, (u64, Volume), u64, isize>>>;

/// Volume per (key, time bucket) of `ticks`, arranged by key with values (bucket, volume): the volume
/// is the difference type, so `count_total` keeps each bucket's sum up to date in O(1) per tick.
fn volume_by<'scope, K>(
    ticks: VecCollection<'scope, u64, TickStats, isize>,
    bucket: impl Fn(&TickStats) -> (K, u64) + 'static,
) -> VolumeArrangement<'scope, K>
where
    K: differential_dataflow::ExchangeData + Hash,
{
    ticks
        .explode(move |t| Some((bucket(&t), t.volume)))
        .count_total()
        .map(|((key, bucket), v)| (key, (bucket, v)))
        .arrange_by_key()
}

/// Combines each batch's records per (instrument, tick) before the exchange; records their tick no
/// longer accepts stay alone (and are found late by the window operator).
fn combine_ticks<'scope, R: AnalyticsRecord>(
    stream: StreamVec<'scope, u64, R>,
    tick_ns: u64,
) -> StreamVec<'scope, u64, TickPartial> {
    stream.unary(Pipeline, "CombineTicks", move |_, _| {
        let mut partials: FxHashMap<(InstrumentId, u64), TickPartial> = FxHashMap::default();
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                let Some(cap) = cap.retain_least(output.output_index()) else { return };
                let mut session = output.session(&cap);
                for batch in data {
                    for r in batch.iter() {
                        let ts = r.event_ts();
                        let start = ts - ts % tick_ns;
                        if r.order_ts() >= start + tick_ns {
                            session.give(TickPartial::of(r, tick_ns));
                            continue;
                        }
                        match partials.entry((r.instrument(), start)) {
                            std::collections::hash_map::Entry::Occupied(mut e) => e.get_mut().add(r),
                            std::collections::hash_map::Entry::Vacant(e) => {
                                e.insert(TickPartial::of(r, tick_ns));
                            }
                        }
                    }
                }
                for (_, p) in partials.drain() {
                    session.give(p);
                }
            });
        }
    })
}

/// An update of an answer: `((query id, row), time, diff)`.
pub type AnswerUpdate = ((u64, Row), u64, isize);

/// The rows of the answer to a query asked at `time`, from its updates: those at `time`, consolidated
/// (the query's retraction one time later, and data that changed after it was asked, cancel out or
/// lie at later times), sorted.
pub fn answer_rows(updates: impl IntoIterator<Item = (Row, u64, isize)>, time: u64) -> Vec<Row> {
    let mut counts: BTreeMap<Row, isize> = BTreeMap::new();
    for (row, t, diff) in updates {
        if t == time {
            *counts.entry(row).or_insert(0) += diff;
        }
    }
    let mut rows = Vec::new();
    for (row, n) in counts {
        for _ in 0..n.max(0) {
            rows.push(row.clone());
        }
    }
    rows
}

/// Each batch's largest update time (as [`to_updates`] assigns it): what [`Analytics::max_time`] is
/// made of.
fn max_times<'scope, D: ExchangeData>(
    stream: StreamVec<'scope, u64, D>,
    time: impl Fn(&D) -> u64 + 'static,
) -> StreamVec<'scope, u64, u64> {
    stream.unary(Pipeline, "MaxTime", |_, _| {
        move |input, output| {
            input.for_each_stamp(|cap, data| {
                if let Some(cap) = cap.retain_least(output.output_index()) {
                    let mut t = *cap.time();
                    for batch in data {
                        t = batch.iter().map(&time).fold(t, u64::max);
                    }
                    output.session(&cap).give(t);
                }
            });
        }
    })
}

/// A stream as a differential collection: each record inserted at its own event time (`time`), or at
/// its batch's time if that is later.
fn to_updates<'scope, D: ExchangeData>(
    stream: StreamVec<'scope, u64, D>,
    time: impl Fn(&D) -> u64 + 'static,
) -> VecCollection<'scope, u64, D, isize> {
    stream
        .unary(Pipeline, "ToUpdates", |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    if let Some(cap) = cap.retain_least(output.output_index()) {
                        let t = *cap.time();
                        let mut session = output.session(&cap);
                        for batch in data {
                            for d in batch.drain(..) {
                                let at = time(&d).max(t);
                                session.give((d, at, 1isize));
                            }
                        }
                    }
                });
            }
        })
        .as_collection()
}

/// Keeps one current value per key, folded from the stream in time order, as a collection: each
/// change retracts the previous value and inserts the new one.
fn latest_by<'scope, D, K, V>(
    stream: StreamVec<'scope, u64, D>,
    key: impl Fn(&D) -> K + 'static,
    time: impl Fn(&D) -> u64 + 'static,
    mut fold: impl FnMut(Option<&V>, &D) -> V + 'static,
) -> VecCollection<'scope, u64, (K, V), isize>
where
    D: ExchangeData,
    K: ExchangeData + Hash + Eq + Clone,
    V: ExchangeData + PartialEq + Clone,
{
    let route_key = std::rc::Rc::new(key);
    let key = route_key.clone();
    let pact = ExchangePact::new(move |d: &D| {
        let mut h = rustc_hash::FxHasher::default();
        route_key(d).hash(&mut h);
        h.finish()
    });
    stream
        .unary_frontier(pact, "LatestBy", move |_, _| {
            let mut pending: BTreeMap<u64, (Capability<u64>, Vec<D>)> = BTreeMap::new();
            let mut current: FxHashMap<K, V> = FxHashMap::default();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    if let Some(c) = cap.retain_least(output.output_index()) {
                        let entry = pending.entry(*c.time()).or_insert_with(|| (c, Vec::new()));
                        for batch in data {
                            entry.1.append(batch);
                        }
                    }
                });
                // Times the frontier has passed are complete: fold them in order.
                while let Some((&t, _)) = pending.first_key_value() {
                    if frontier.less_equal(&t) {
                        break;
                    }
                    let Some((_, (cap, mut data))) = pending.pop_first() else { break };
                    data.sort_by_key(|d| time(d));
                    let mut session = output.session(&cap);
                    for d in &data {
                        let (k, at) = (key(d), time(d).max(t));
                        let old = current.get(&k);
                        let new = fold(old, d);
                        if old == Some(&new) {
                            continue;
                        }
                        if let Some(old) = current.insert(k.clone(), new.clone()) {
                            session.give(((k.clone(), old), at, -1isize));
                        }
                        session.give(((k, new), at, 1isize));
                    }
                }
            }
        })
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::super::{NS_PER_HOUR, NS_PER_MINUTE};
    use super::*;
    use crate::event::{EventKind, InstrumentId, LobEvent, Price, Side, Timed};
    use crate::testing::captured;
    use differential_dataflow::input::Input;
    use timely::dataflow::operators::{Capture, Inspect, ToStream};

    fn trade(sym: &str, ts: u64, size: u64) -> Timed<LobEvent> {
        Timed {
            order_ts: ts,
            seq: ts,
            event: LobEvent {
                ts_ns: ts,
                instrument: InstrumentId::new(sym).unwrap(),
                kind: EventKind::ExecuteVisible,
                order_id: 1,
                size,
                price: Price(10),
                side: Side::Buy,
            },
        }
    }

    fn ask(input: Vec<Timed<LobEvent>>, at: u64, query: Query) -> Vec<Row> {
        let answers = timely::example(move |scope| {
            let (mut queries, collection) = scope.new_collection();
            let a = input.to_stream(scope).market_analytics(None, collection, AnalyticsSpec::default());
            queries.advance_to(at);
            queries.insert((1, query));
            queries.advance_to(at + 1);
            queries.close();
            a.answers.capture()
        });
        answer_rows(captured(answers).into_iter().map(|((_, r), t, d)| (r, t, d)), at)
    }

    proptest::proptest! {
        /// Combining per batch before the exchange gives what a per-record oracle gives: each tick's
        /// volume from the records it accepted (`order_ts < end`), the rest late.
        #[test]
        fn combined_ticks_match_a_per_record_oracle(
            records in proptest::collection::vec((0u64..5_000, 0u64..3_000, 0usize..3, 1u64..50), 1..200),
            workers in 1usize..3,
        ) {
            let ms = 1_000_000u64;
            let events: Vec<Timed<LobEvent>> = records
                .iter()
                .enumerate()
                .map(|(i, (ts, delay, sym, size))| {
                    let mut t = trade(["A", "B", "C"][*sym], ts * ms, *size);
                    t.order_ts = (ts + delay) * ms;
                    t.seq = i as u64;
                    t
                })
                .collect();
            let mut want: BTreeMap<(String, u64), i64> = BTreeMap::new();
            let mut late = 0usize;
            for e in &events {
                let end = (e.event.ts_ns / 1_000_000_000 + 1) * 1_000_000_000;
                if e.order_ts < end {
                    *want.entry((e.event.instrument.as_str().to_string(), end)).or_default() += e.event.size as i64;
                } else {
                    late += 1;
                }
            }
            let shared = std::sync::Arc::new(std::sync::Mutex::new((BTreeMap::new(), 0usize)));
            let (got, got_late) = {
                let inner = shared.clone();
                timely::execute(timely::Config::process(workers), move |worker| {
                    let index = worker.index();
                    let mine: Vec<Timed<LobEvent>> = events.iter().enumerate().filter(|(i, _)| i % workers == index).map(|(_, e)| *e).collect();
                    let inner = inner.clone();
                    let inner2 = inner.clone();
                    worker.dataflow::<u64, _, _>(move |scope| {
                        let (ticks, late) = combine_ticks(mine.to_stream(scope), 1_000_000_000)
                            .window_aggregate(WindowSpec::tumbling(1_000_000_000), TickAggregate);
                        ticks.inspect(move |t: &TickStats| {
                            let mut g = inner.lock().unwrap();
                            *g.0.entry((t.instrument.as_str().to_string(), t.tick_end)).or_insert(0) += t.volume.shares;
                        });
                        late.inspect(move |_| inner2.lock().unwrap().1 += 1);
                    });
                })
                .unwrap();
                let g = shared.lock().unwrap();
                (g.0.clone(), g.1)
            };
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(got_late, late);
        }
    }

    #[test]
    fn top_volume_slides_out_after_an_hour() {
        let input = vec![trade("A", 1, 10), trade("B", 2, 5), trade("B", NS_PER_HOUR / 2, 10)];
        let rows = ask(input.clone(), NS_PER_HOUR - 1, Query::TopVolume { n: 5 });
        let top: Vec<(usize, &str, i64)> = rows
            .iter()
            .filter_map(|r| match r {
                Row::Top(rank, s, v) => Some((*rank, s.as_str(), v.shares)),
                _ => None,
            })
            .collect();
        assert_eq!(top, vec![(0, "B", 15), (1, "A", 10)]);
        // An hour after the first tick, A's trade and B's first have left the window.
        let rows = ask(input, NS_PER_HOUR + 2 * 1_000_000_000, Query::TopVolume { n: 1 });
        assert!(rows.iter().any(|r| matches!(r, Row::Top(0, s, v) if s.as_str() == "B" && v.shares == 10)));
        assert_eq!(rows.iter().filter(|r| matches!(r, Row::Top(..))).count(), 1);
    }

    #[test]
    fn hourly_stats_and_price() {
        let input = vec![trade("A", 1, 10), trade("A", NS_PER_HOUR + 5, 4), trade("B", 2 * NS_PER_HOUR + 7, 1)];
        let at = 2 * NS_PER_HOUR + NS_PER_MINUTE;
        let hour_shares = |instrument| -> Vec<(u64, i64)> {
            let rows = ask(input.clone(), at, Query::HourlyStats { hours: 3, instrument });
            rows.iter()
                .filter_map(|r| match r {
                    Row::Hour(h, v) => Some((*h, v.shares)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(hour_shares(None), vec![(0, 10), (1, 4), (2, 1)]);
        assert_eq!(hour_shares(Some(InstrumentId::new("A").unwrap())), vec![(0, 10), (1, 4)], "instrument A only");
        let rows = ask(input, at, Query::Price { instrument: InstrumentId::new("A").unwrap() });
        let price = rows.iter().find_map(|r| match r {
            Row::Price(p) => Some(*p),
            _ => None,
        });
        let (tick_end, v) = price.unwrap().trade.unwrap();
        assert_eq!((tick_end, v.shares, v.vwap_ticks()), (NS_PER_HOUR + 1_000_000_000, 4, Some(10.0)));
    }
}
