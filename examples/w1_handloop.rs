//! The W1 baseline: a hand-written, single-threaded loop with the W1 semantics (1 s tumbling
//! windows, watermark = max event time - 2 s, fire when the watermark reaches a window's end, drop
//! late events), for comparing lobsentry's dataflow against the simplest possible program.
//!
//! ```text
//! cargo run --release --example w1_handloop -- target/bench/events-5000000-100.csv /tmp/w1-handloop.csv
//! ```
//! It prints events/s; its output file is identical to
//! `lobsentry run --config config/w1.toml --input IN --output OUT` (compare them with `cmp`).

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::time::Instant;

const SECOND: u64 = 1_000_000_000;
const BOUND: u64 = 2 * SECOND;

#[derive(Default)]
struct Acc {
    events: u64,
    adds: u64,
    cancels: u64,
    execs: u64,
    volume: u64,
    notional: i128,
    min: i64,
    max: i64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 3, "usage: w1_handloop INPUT.csv OUTPUT.csv");
    let started = Instant::now();
    let mut input = BufReader::with_capacity(1 << 20, std::fs::File::open(&args[1])?);
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&args[2])?);
    writeln!(
        out,
        "instrument,window_start_ns,events,adds,cancels,execs,exec_volume,vwap,min_exec_price,max_exec_price"
    )?;
    let mut open: HashMap<(String, u64), Acc> = HashMap::new();
    let mut by_end: BTreeMap<u64, Vec<(String, u64)>> = BTreeMap::new();
    let (mut max_seen, mut events, mut late) = (None::<u64>, 0u64, 0u64);
    let mut line = String::new();
    input.read_line(&mut line)?; // header
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        let f: Vec<&str> = line.trim_end().split(',').collect();
        if f.len() != 7 {
            continue;
        }
        let (Ok(ts), Ok(kind), Ok(size), Ok(price)) =
            (f[0].parse::<u64>(), f[2].parse::<u8>(), f[4].parse::<u64>(), f[5].parse::<i64>())
        else {
            continue;
        };
        events += 1;
        let wm = max_seen.map_or(0, |m: u64| m.saturating_sub(BOUND));
        let start = ts / SECOND * SECOND;
        if start + SECOND <= wm {
            late += 1;
        } else {
            let key = (f[1].to_string(), start);
            let acc = open.entry(key.clone()).or_insert_with(|| {
                by_end.entry(start + SECOND).or_default().push(key);
                Acc::default()
            });
            acc.events += 1;
            match kind {
                1 => acc.adds += 1,
                2 | 3 => acc.cancels += 1,
                4 | 5 => {
                    if acc.execs == 0 || price < acc.min {
                        acc.min = price;
                    }
                    if acc.execs == 0 || price > acc.max {
                        acc.max = price;
                    }
                    acc.execs += 1;
                    acc.volume += size;
                    acc.notional += price as i128 * size as i128;
                }
                _ => {}
            }
        }
        max_seen = Some(max_seen.map_or(ts, |m| m.max(ts)));
        let wm = max_seen.map_or(0, |m| m.saturating_sub(BOUND));
        while let Some(entry) = by_end.first_entry() {
            if *entry.key() > wm {
                break;
            }
            let mut keys = entry.remove();
            keys.sort();
            for key in keys {
                write_row(&mut out, &key, open.remove(&key).unwrap_or_default())?;
            }
        }
    }
    for (_, mut keys) in std::mem::take(&mut by_end) {
        keys.sort();
        for key in keys {
            write_row(&mut out, &key, open.remove(&key).unwrap_or_default())?;
        }
    }
    out.flush()?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{events} events in {secs:.3} s ({:.0} events/s), {late} late", events as f64 / secs);
    Ok(())
}

fn write_row(out: &mut impl Write, key: &(String, u64), a: Acc) -> std::io::Result<()> {
    write!(out, "{},{},{},{},{},{},{},", key.0, key.1, a.events, a.adds, a.cancels, a.execs, a.volume)?;
    if a.volume > 0 {
        writeln!(out, "{:.4},{},{}", a.notional as f64 / a.volume as f64, a.min, a.max)
    } else {
        writeln!(out, ",,")
    }
}
