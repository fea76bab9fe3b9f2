//! `lobsentry book`: replay a LOBSTER message file through [`Book`] and measure its consistency.

use crate::error::{io_at, Error};
use clap::Args;
use lobsentry_operators::book::{Book, BookConfig, BookStats};
use lobsentry_operators::event::{EventKind, Side};
use lobsentry_operators::source::decode::decode_lobster_line;
use lobsentry_operators::source::reader::{parse_snapshot_row, seed_levels, InputFile};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;

/// Arguments of `book`.
#[derive(Debug, Args)]
pub struct BookArgs {
    /// LOBSTER message file.
    #[arg(long)]
    pub messages: PathBuf,
    /// Matching LOBSTER order-book file: seeds the book and is compared against after every message.
    #[arg(long)]
    pub orderbook: Option<PathBuf>,
    /// Levels per side to write.
    #[arg(long, default_value_t = 10)]
    pub levels: usize,
    /// Output: the top levels after each message in LOBSTER's order-book layout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Keep ghost levels instead of repairing them (to measure the naive replay).
    #[arg(long)]
    pub no_repair: bool,
    /// With --orderbook: do not take levels that enter the visible range from beyond it from the
    /// order-book file (measures messages alone after the seed).
    #[arg(long)]
    pub no_refill: bool,
    /// Keep at most this many levels per side, forgetting orders an add pushes beyond them (the
    /// file's depth, e.g. 10 for a `_message_10` file; see `book.visible-levels`). Default: every level.
    #[arg(long)]
    pub visible_levels: Option<usize>,
    /// Instrument (default: the ticker in the file name).
    #[arg(long)]
    pub instrument: Option<String>,
    /// Trading day YYYY-MM-DD (default: the date in the file name).
    #[arg(long)]
    pub date: Option<String>,
}

/// Consistency of a replay.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReplayReport {
    /// Messages applied.
    pub messages: u64,
    /// Lines rejected.
    pub rejected: u64,
    /// Visible executions (type 4).
    pub visible_execs: u64,
    /// Visible executions at the reconstructed best price of their side.
    pub execs_at_best: u64,
    /// Rows after which the book was crossed.
    pub crossed_rows: u64,
    /// Rows compared with the order-book file.
    pub compared_rows: u64,
    /// Rows whose best bid and ask (price and size) equal LOBSTER's.
    pub top_matches: u64,
    /// Rows whose every written level equals LOBSTER's.
    pub all_level_matches: u64,
    /// Levels taken from the order-book file as they entered the visible range.
    pub refilled_levels: u64,
    /// The book's own counters.
    pub book: BookStats,
}

fn pct(a: u64, b: u64) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        100.0 * a as f64 / b as f64
    }
}

impl ReplayReport {
    /// A human summary.
    pub fn render(&self, name: &str) -> String {
        let mut s = format!(
            "{name}: {} messages, {} rejected\n  visible executions at the reconstructed best price: {}/{} = {:.3}%\n  rows with a crossed book: {}/{} = {:.3}%\n",
            self.messages,
            self.rejected,
            self.execs_at_best,
            self.visible_execs,
            pct(self.execs_at_best, self.visible_execs),
            self.crossed_rows,
            self.messages,
            pct(self.crossed_rows, self.messages)
        );
        if self.compared_rows > 0 {
            s.push_str(&format!(
                "  rows whose best bid/ask (price and size) equal LOBSTER's: {}/{} = {:.3}%\n  rows whose every level equals LOBSTER's: {}/{} = {:.3}%\n",
                self.top_matches,
                self.compared_rows,
                pct(self.top_matches, self.compared_rows),
                self.all_level_matches,
                self.compared_rows,
                pct(self.all_level_matches, self.compared_rows)
            ));
        }
        let b = &self.book;
        s.push_str(&format!(
            "  book: unknown orders {}, over-cancels {}, missing levels {}, ghost levels removed {}, levels beyond view forgotten {}, levels refilled from the order book {}\n",
            b.unknown_order, b.over_cancel, b.missing_level, b.ghost_levels_removed, b.levels_beyond_view, self.refilled_levels
        ));
        s
    }
}

/// Replays a file and returns its report; writes the level rows to `out` when given.
pub fn replay(args: &BookArgs, mut out: Option<&mut dyn Write>) -> Result<ReplayReport, Error> {
    let mut input = InputFile::guess(&args.messages).map_err(Error::Data)?;
    input.instrument = args.instrument.clone();
    input.date = args.date.clone();
    let ctx = input.lobster_context().map_err(Error::Data)?;

    let messages =
        BufReader::with_capacity(1 << 20, std::fs::File::open(&args.messages).map_err(io_at(&args.messages))?);
    let mut snapshots = match &args.orderbook {
        Some(p) => Some(BufReader::with_capacity(1 << 20, std::fs::File::open(p).map_err(io_at(p))?).lines()),
        None => None,
    };
    let mut book =
        Book::with_config(BookConfig { repair_ghosts: !args.no_repair, visible_levels: args.visible_levels });
    let mut report = ReplayReport::default();
    let mut row = Vec::with_capacity(4 * args.levels);
    let mut text = String::new();
    let mut seeded = false;
    let mut previous: Option<Vec<i64>> = None;
    for (n, line) in messages.split(b'\n').enumerate() {
        let line = line.map_err(io_at(&args.messages))?;
        let snapshot = match snapshots.as_mut().map(|s| s.next()) {
            Some(Some(Ok(s))) => Some(
                parse_snapshot_row(s.as_bytes()).map_err(|e| Error::Data(format!("order book row {}: {e}", n + 1)))?,
            ),
            Some(Some(Err(e))) => return Err(Error::Io(format!("order book: {e}"))),
            Some(None) => {
                return Err(Error::Data(format!("the order book file has fewer rows than messages (row {})", n + 1)))
            }
            None => None,
        };
        if line.is_empty() {
            continue;
        }
        let event = match decode_lobster_line(&line, &ctx) {
            Ok(e) => e,
            Err(e) => {
                report.rejected += 1;
                eprintln!("{}:{}: {e}", args.messages.display(), n + 1);
                continue;
            }
        };
        if !seeded {
            seeded = true;
            if let Some(snapshot) = &snapshot {
                for (side, price, qty) in seed_levels(snapshot, &event) {
                    book.seed_level(side, price, qty);
                }
            }
        }
        if event.kind == EventKind::ExecuteVisible {
            report.visible_execs += 1;
            let best = match event.side {
                Side::Buy => book.best_bid(),
                Side::Sell => book.best_ask(),
            };
            if best.map(|b| b.0) == Some(event.price) {
                report.execs_at_best += 1;
            }
        }
        book.apply(&event);
        report.messages += 1;
        if let (Some(prev), Some(now), false) = (&previous, &snapshot, args.no_refill) {
            report.refilled_levels += book.refill_entering_levels(prev, now);
        }
        if let (Some((b, _)), Some((a, _))) = (book.best_bid(), book.best_ask()) {
            if b >= a {
                report.crossed_rows += 1;
            }
        }
        book.lobster_row(args.levels, &mut row);
        if let Some(snapshot) = &snapshot {
            report.compared_rows += 1;
            if snapshot.len() >= 4 && row[..4] == snapshot[..4] {
                report.top_matches += 1;
            }
            let k = snapshot.len().min(row.len());
            if row[..k] == snapshot[..k] {
                report.all_level_matches += 1;
            }
        }
        if snapshot.is_some() {
            previous = snapshot;
        }
        if let Some(w) = out.as_mut() {
            text.clear();
            for (i, v) in row.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&v.to_string());
            }
            text.push('\n');
            w.write_all(text.as_bytes()).map_err(|e| Error::Io(format!("output: {e}")))?;
        }
    }
    report.book = *book.stats();
    Ok(report)
}

/// Runs `book`.
pub fn run(args: BookArgs) -> Result<(), Error> {
    let report = match &args.out {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            let mut w = BufWriter::with_capacity(1 << 20, file);
            let report = replay(&args, Some(&mut w))?;
            w.flush().map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
            report
        }
        None => replay(&args, None)?,
    };
    let name = args.messages.file_name().and_then(|n| n.to_str()).unwrap_or("messages");
    print!("{}", report.render(name));
    Ok(())
}
