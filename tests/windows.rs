//! Windows against a sort-and-group oracle, late accounting, and determinism across workers and
//! permutations within the bound.

use crate::util::{self, TempDir};
use lobsentry_operators::event::{EventKind, LobEvent};
use std::collections::BTreeMap;

const SECOND: u64 = 1_000_000_000;
const BOUND: u64 = 2 * SECOND;

/// One W1 row: events, adds, cancels, execs, exec_volume, vwap text, min, max.
type Row = (u64, u64, u64, u64, u64, String, String, String);

/// The oracle: walk the file in order with watermark = max seen - 2 s; an event is late when its
/// window's end is at or before the watermark; group the rest by (instrument, floor(ts / 1 s)).
fn oracle(events: &[LobEvent]) -> (BTreeMap<(String, u64), Row>, u64) {
    let mut max_seen: Option<u64> = None;
    let mut late = 0;
    let mut groups: BTreeMap<(String, u64), Vec<LobEvent>> = BTreeMap::new();
    for e in events {
        let wm = max_seen.map_or(0, |m| m.saturating_sub(BOUND));
        let start = e.ts_ns / SECOND * SECOND;
        if start + SECOND <= wm {
            late += 1;
        } else {
            groups.entry((e.instrument.to_string(), start)).or_default().push(*e);
        }
        max_seen = Some(max_seen.map_or(e.ts_ns, |m| m.max(e.ts_ns)));
    }
    let rows = groups
        .into_iter()
        .map(|(k, evs)| {
            let count = |f: &dyn Fn(EventKind) -> bool| evs.iter().filter(|e| f(e.kind)).count() as u64;
            let execs: Vec<_> = evs.iter().filter(|e| e.kind.is_execution()).collect();
            let volume: u64 = execs.iter().map(|e| e.size).sum();
            let (vwap, lo, hi) = if execs.is_empty() {
                (String::new(), String::new(), String::new())
            } else {
                let notional: i128 = execs.iter().map(|e| e.price.0 as i128 * e.size as i128).sum();
                (
                    format!("{:.4}", notional as f64 / volume as f64),
                    execs.iter().map(|e| e.price.0).min().unwrap().to_string(),
                    execs.iter().map(|e| e.price.0).max().unwrap().to_string(),
                )
            };
            let row = (
                evs.len() as u64,
                count(&|k| k == EventKind::Add),
                count(&|k| k.is_cancel()),
                count(&|k| k.is_execution()),
                volume,
                vwap,
                lo,
                hi,
            );
            (k, row)
        })
        .collect();
    (rows, late)
}

fn parse_w1(path: &std::path::Path) -> BTreeMap<(String, u64), Row> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("instrument,window_start_ns,events,adds,cancels,execs,exec_volume,vwap,min_exec_price,max_exec_price")
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 10, "{l}");
            let n = |i: usize| f[i].parse::<u64>().unwrap();
            (
                (f[0].to_string(), n(1)),
                (n(2), n(3), n(4), n(5), n(6), f[7].to_string(), f[8].to_string(), f[9].to_string()),
            )
        })
        .collect()
}

#[test]
fn w1_matches_the_oracle_with_late_events_for_1_and_2_workers() {
    let dir = TempDir::new("w1-oracle");
    let spec = util::market(60_000, 7, 11);
    let events = util::events(&spec, SECOND, 0.01);
    let input = dir.path("in.csv");
    util::write_csv(&input, &events);
    let (expected, expected_late) = oracle(&events);
    assert!(expected_late > 100, "the input has late events: {expected_late}");
    for workers in [1, 2] {
        let out = dir.path(&format!("w1-{workers}.csv"));
        let report = util::run(&util::config(Some("config/w1.toml"), workers, vec![input.clone()], &out, vec![]));
        assert_eq!(report.events, events.len() as u64);
        assert_eq!(report.late, expected_late, "{workers} workers");
        let got = parse_w1(&out);
        assert_eq!(got.len(), expected.len());
        for (k, v) in &expected {
            assert_eq!(got.get(k), Some(v), "{k:?} with {workers} workers");
        }
        let counted: u64 = got.values().map(|r| r.0).sum();
        assert_eq!(counted + report.late, report.events, "every event is in a window or late");
    }
}

#[test]
fn features_identical_for_1_and_2_workers_and_within_bound_permutations() {
    let dir = TempDir::new("determinism");
    let spec = util::market(40_000, 5, 3);
    let ordered = dir.path("ordered.csv");
    let shuffled = dir.path("shuffled.csv");
    util::write_csv(&ordered, &util::events(&spec, 0, 0.0));
    let permuted = util::events(&spec, BOUND, 0.0);
    util::write_csv(&shuffled, &permuted);
    assert_ne!(std::fs::read(&ordered).unwrap(), std::fs::read(&shuffled).unwrap());
    let mut outputs = Vec::new();
    for (input, workers) in [(&ordered, 1), (&ordered, 2), (&shuffled, 1), (&shuffled, 2)] {
        let out = dir.path(&format!("f-{}-{workers}.csv", outputs.len()));
        let report = util::run(&util::config(None, workers, vec![input.clone()], &out, vec![]));
        assert_eq!(report.late, 0);
        assert_eq!(report.book.inconsistencies(), 0, "{:?}", report.book);
        outputs.push(std::fs::read_to_string(&out).unwrap());
    }
    assert!(outputs[0].lines().count() > 100);
    assert!(outputs[0].contains("SYM0004"));
    for (i, o) in outputs.iter().enumerate().skip(1) {
        assert!(o == &outputs[0], "output {i} differs from the 1-worker in-order run");
    }
}

#[test]
fn sliding_windows_hold_each_event_size_over_slide_times() {
    let dir = TempDir::new("sliding");
    let spec = util::market(20_000, 3, 5);
    let input = dir.path("in.csv");
    let events = util::events(&spec, 0, 0.0);
    util::write_csv(&input, &events);
    let out = dir.path("sliding.csv");
    let env = vec![("LOBSENTRY__WINDOW__SIZE", "\"3s\""), ("LOBSENTRY__WINDOW__SLIDE", "\"1s\"")];
    let report = util::run(&util::config(Some("config/w1.toml"), 2, vec![input], &out, env));
    let rows = parse_w1(&out);
    let total: u64 = rows.values().map(|r| r.0).sum();
    // Each event is in 3 windows, except those within 2 s of the epoch-aligned start (none here).
    assert_eq!(total, 3 * report.events);
    assert_eq!(report.late, 0);
}
