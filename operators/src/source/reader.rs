//! Streaming file readers (no timely): one file, or every `stride`-th chunk of it, decoded into
//! [`Timed`] events with an exact per-file bounded-out-of-orderness watermark.
//!
//! A file read by several workers is cut into chunks of [`ReaderSpec::chunk_lines`] lines; worker
//! `offset` of `stride` decodes chunks `offset, offset + stride, ...` and only scans the event time of
//! the other lines (the first field), so the watermark each event sees is the same as if one reader
//! had read the whole file. Memory is one read buffer, whatever the file size.

use super::decode::{
    decode_csv_line, decode_json_line, decode_lobster_line, midnight_ns, parse_i64, scan_csv_ts, scan_lobster_ts,
    trim_line, DecodeError, Format, LobsterContext, LobsterName,
};
use crate::event::{make_seq, EventKind, EventTime, InstrumentId, LobEvent, Price, Qty, Side, Timed};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// A rejected input record: where it came from, why, and its text. Goes to the error stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// File path (or topic/partition for streaming sources).
    pub origin: String,
    /// 1-based line number (or offset).
    pub line: u64,
    /// Why it was rejected.
    pub reason: String,
    /// The raw text (truncated to 200 bytes).
    pub text: String,
    /// The whole original bytes, where the source keeps them (Kafka: the message or line, for the
    /// dead-letter topic); `None` = `text` is all there is. Not sent between workers (error streams
    /// stay on the worker that read them).
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {} ({:?})", self.origin, self.line, self.reason, self.text)
    }
}

/// Bounded out-of-orderness: the watermark is the largest event time seen minus a bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundedOutOfOrderness {
    bound_ns: u64,
    max_seen: Option<EventTime>,
}

impl BoundedOutOfOrderness {
    /// A generator with a bound in ns.
    pub fn new(bound_ns: u64) -> Self {
        BoundedOutOfOrderness { bound_ns, max_seen: None }
    }

    /// The current watermark: no later event with a smaller `order_ts` will be produced.
    #[inline]
    pub fn watermark(&self) -> EventTime {
        self.max_seen.map_or(0, |m| m.saturating_sub(self.bound_ns))
    }

    /// Records an event time and returns its `order_ts` (`max(ts, watermark before it)`).
    ///
    /// ```
    /// use lobsentry_operators::source::reader::BoundedOutOfOrderness;
    /// let mut wm = BoundedOutOfOrderness::new(10);
    /// assert_eq!(wm.observe(100), 100);
    /// assert_eq!(wm.observe(95), 95);  // within the bound: on time
    /// assert_eq!(wm.observe(80), 90);  // behind the watermark 90: ordered at 90
    /// assert_eq!(wm.watermark(), 90);
    /// ```
    #[inline]
    pub fn observe(&mut self, ts: EventTime) -> EventTime {
        let order_ts = ts.max(self.watermark());
        self.max_seen = Some(self.max_seen.map_or(ts, |m| m.max(ts)));
        order_ts
    }

    /// The largest event time seen.
    pub fn max_seen(&self) -> Option<EventTime> {
        self.max_seen
    }

    /// Moves the watermark forward as if an event at `ts` had been seen, without producing one
    /// (used by idle sources that advance with the clock).
    pub fn advance_to(&mut self, ts: EventTime) {
        self.max_seen = Some(self.max_seen.map_or(ts, |m| m.max(ts)));
    }
}

/// One input file and how to read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Path to the file.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// LOBSTER only: instrument override (default: the ticker in the file name).
    pub instrument: Option<String>,
    /// LOBSTER only: trading day override `YYYY-MM-DD` (default: the date in the file name).
    pub date: Option<String>,
    /// LOBSTER only: seed the book from the matching `_orderbook_` file when it exists.
    pub seed_from_orderbook: bool,
}

impl InputFile {
    /// A file of a known format (LOBSTER: instrument and day from its name, book seeded from its
    /// order-book file).
    pub fn new(path: impl Into<PathBuf>, format: Format) -> InputFile {
        InputFile { path: path.into(), format, instrument: None, date: None, seed_from_orderbook: true }
    }

    /// A file with its format guessed from its name.
    pub fn guess(path: impl Into<PathBuf>) -> Result<InputFile, String> {
        let path = path.into();
        let format = Format::from_path(&path).ok_or_else(|| {
            format!("{}: cannot tell the format from the name (use .csv, .jsonl or a LOBSTER name)", path.display())
        })?;
        Ok(InputFile::new(path, format))
    }

    /// The LOBSTER context of this file (instrument, day).
    pub fn lobster_context(&self) -> Result<LobsterContext, String> {
        let name = self.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let parsed = LobsterName::parse(name);
        let ticker = match (&self.instrument, &parsed) {
            (Some(t), _) => t.clone(),
            (None, Some(p)) => p.ticker.clone(),
            (None, None) => {
                return Err(format!("{}: no instrument in the file name; set `instrument`", self.path.display()))
            }
        };
        let date = match (&self.date, &parsed) {
            (Some(d), _) => super::decode::parse_date(d).ok_or_else(|| format!("bad date {d:?}, want YYYY-MM-DD"))?,
            (None, Some(p)) => p.date,
            (None, None) => return Err(format!("{}: no date in the file name; set `date`", self.path.display())),
        };
        Ok(LobsterContext { instrument: InstrumentId::new(&ticker)?, day_start_ns: midnight_ns(date) })
    }

    /// The matching LOBSTER order-book file, if it exists.
    pub fn orderbook_sibling(&self) -> Option<PathBuf> {
        let name = self.path.file_name()?.to_str()?;
        let sibling = self.path.with_file_name(LobsterName::sibling(name)?);
        sibling.exists().then_some(sibling)
    }
}

/// How a reader takes its share of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaderSpec {
    /// Index of the file in the run's input list (goes into `seq`).
    pub file_index: u32,
    /// Readers sharing the file.
    pub stride: u32,
    /// This reader's position among them.
    pub offset: u32,
    /// Lines per chunk.
    pub chunk_lines: u64,
    /// Out-of-orderness bound in ns.
    pub bound_ns: u64,
    /// Line length and time-jump limits.
    pub limits: InputLimits,
}

impl ReaderSpec {
    /// A reader that owns the whole file.
    pub fn whole(file_index: u32, bound_ns: u64) -> Self {
        ReaderSpec { file_index, stride: 1, offset: 0, chunk_lines: 1 << 16, bound_ns, limits: InputLimits::default() }
    }
}

/// What a reader refuses, deterministically (every reader of a file decides the same for each line).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputLimits {
    /// Lines longer than this (bytes, without the line end) are rejected, their first 200 bytes kept.
    pub max_line_bytes: usize,
    /// A line whose time is more than this ahead of the latest time of its file so far is held.
    pub max_jump_ns: u64,
    /// Held lines are accepted when this many consecutive lines (the first included) are all that
    /// far ahead: the feed really moved on. A line back in the old time range rejects the held ones.
    pub confirm_lines: usize,
}

impl Default for InputLimits {
    fn default() -> InputLimits {
        InputLimits { max_line_bytes: 1 << 20, max_jump_ns: 3_600_000_000_000, confirm_lines: 8 }
    }
}

/// A line held by the time-jump guard: its number, time, and what decoding it gave.
#[derive(Debug)]
struct Held {
    line_no: u64,
    ts: EventTime,
    owned: Option<Result<LobEvent, Rejected>>,
}

/// The time-jump guard of one file: lines too far ahead of the file's latest time wait for
/// confirmation.
#[derive(Debug, Default)]
struct JumpGuard {
    held: Vec<Held>,
}

/// Reads one file (or its share of it).
#[derive(Debug)]
pub struct FileReader {
    input: InputFile,
    origin: String,
    spec: ReaderSpec,
    lobster: Option<LobsterContext>,
    seed: Option<Vec<i64>>,
    reader: Option<BufReader<File>>,
    line_buf: Vec<u8>,
    /// The line being assembled is longer than the limit (only its start is kept).
    overlong: bool,
    /// The line terminator: `\n` (LF and CRLF files; the `\r` is trimmed), or `\r` for files
    /// whose first read holds a `\r` and no `\n` (old Mac files). Chosen at the first read.
    terminator: Option<u8>,
    line_no: u64,
    watermark: BoundedOutOfOrderness,
    jumps: JumpGuard,
    done: bool,
}

impl FileReader {
    /// Opens a file.
    pub fn open(input: InputFile, spec: ReaderSpec) -> io::Result<FileReader> {
        let file =
            File::open(&input.path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", input.path.display())))?;
        let lobster = match input.format {
            Format::Lobster => Some(input.lobster_context().map_err(io::Error::other)?),
            _ => None,
        };
        let seed = match (&lobster, input.seed_from_orderbook, spec.offset) {
            (Some(_), true, 0) => match input.orderbook_sibling() {
                Some(path) => read_first_snapshot(&path)?,
                None => None,
            },
            _ => None,
        };
        Ok(FileReader {
            origin: input.path.display().to_string(),
            input,
            spec,
            lobster,
            seed,
            reader: Some(BufReader::with_capacity(1 << 20, file)),
            line_buf: Vec::with_capacity(256),
            overlong: false,
            terminator: None,
            line_no: 0,
            watermark: BoundedOutOfOrderness::new(spec.bound_ns),
            jumps: JumpGuard::default(),
            done: false,
        })
    }

    /// The file this reader reads.
    pub fn input(&self) -> &InputFile {
        &self.input
    }

    /// The watermark after everything read so far.
    pub fn watermark(&self) -> EventTime {
        self.watermark.watermark()
    }

    /// True once the end of the file was reached.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Reads up to `max_lines` lines (owned or scanned); decoded events go to `out`, rejected lines
    /// to `errors`. I/O errors end the file and are reported as a rejected record. Lines end with
    /// `\n`, `\r\n`, or a lone `\r` in files without `\n` (old Mac files).
    pub fn read_batch(&mut self, max_lines: usize, out: &mut Vec<Timed<LobEvent>>, errors: &mut Vec<Rejected>) {
        // Lines are decoded straight from the read buffer; only a line that straddles two buffer
        // fills is copied (into `line_buf`).
        let Some(mut reader) = self.reader.take() else { return };
        let max = self.spec.limits.max_line_bytes;
        let mut n = 0;
        while n < max_lines && !self.done {
            let buf = match reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) => {
                    self.done = true;
                    errors.push(Rejected {
                        origin: self.origin.clone(),
                        line: self.line_no + 1,
                        reason: format!("read error: {e}"),
                        text: String::new(),
                        raw: None,
                    });
                    break;
                }
            };
            if buf.is_empty() {
                self.done = true;
                if !self.line_buf.is_empty() || self.overlong {
                    let line = std::mem::take(&mut self.line_buf);
                    self.end_line(&line, out, errors);
                }
                self.release_held(false, out, errors);
                break;
            }
            let mut pos = 0;
            let terminator = *self.terminator.get_or_insert_with(|| {
                if memchr::memchr(b'\n', buf).is_none() && memchr::memchr(b'\r', buf).is_some() {
                    b'\r'
                } else {
                    b'\n'
                }
            });
            while n < max_lines {
                match memchr::memchr(terminator, &buf[pos..]) {
                    Some(i) => {
                        let end = pos + i;
                        n += 1;
                        if self.line_buf.is_empty() && !self.overlong {
                            if end - pos > max {
                                self.overlong = true;
                                self.line_buf.extend_from_slice(&buf[pos..pos + 200.min(end - pos)]);
                                let line = std::mem::take(&mut self.line_buf);
                                self.end_line(&line, out, errors);
                            } else {
                                self.end_line(&buf[pos..end], out, errors);
                            }
                        } else {
                            let mut line = std::mem::take(&mut self.line_buf);
                            self.append(&mut line, &buf[pos..end]);
                            self.end_line(&line, out, errors);
                            line.clear();
                            self.line_buf = line;
                        }
                        pos = end + 1;
                    }
                    None => {
                        let mut line = std::mem::take(&mut self.line_buf);
                        self.append(&mut line, &buf[pos..]);
                        self.line_buf = line;
                        pos = buf.len();
                        break;
                    }
                }
            }
            reader.consume(pos);
        }
        self.reader = Some(reader);
    }

    /// Appends to a line being assembled, keeping only the start of one longer than the limit.
    fn append(&mut self, line: &mut Vec<u8>, more: &[u8]) {
        if self.overlong {
            return;
        }
        if line.len() + more.len() > self.spec.limits.max_line_bytes {
            self.overlong = true;
            let keep = 200usize.saturating_sub(line.len()).min(more.len());
            line.extend_from_slice(&more[..keep]);
            line.truncate(200);
        } else {
            line.extend_from_slice(more);
        }
    }

    /// A complete line: counted, then decoded (or rejected when it was too long).
    fn end_line(&mut self, line: &[u8], out: &mut Vec<Timed<LobEvent>>, errors: &mut Vec<Rejected>) {
        self.line_no += 1;
        if std::mem::take(&mut self.overlong) {
            // No reader takes its time: every reader of the file skips it alike.
            if self.owns(self.line_no) {
                let reason = format!(
                    "line longer than {} bytes (source.max-line-length); the first 200 bytes are kept",
                    self.spec.limits.max_line_bytes
                );
                let text = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                errors.push(Rejected { origin: self.origin.clone(), line: self.line_no, reason, text, raw: None });
            }
            return;
        }
        self.process_line(line, out, errors);
    }

    #[inline]
    fn owns(&self, line_no: u64) -> bool {
        self.spec.stride <= 1
            || ((line_no - 1) / self.spec.chunk_lines) % self.spec.stride as u64 == self.spec.offset as u64
    }

    #[inline]
    fn process_line(&mut self, raw: &[u8], out: &mut Vec<Timed<LobEvent>>, errors: &mut Vec<Rejected>) {
        let mut line = trim_line(raw);
        if self.line_no == 1 {
            // A UTF-8 byte-order mark is not part of the first field.
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() || (self.line_no == 1 && self.input.format == Format::Csv && line.starts_with(b"ts_ns")) {
            return;
        }
        if !self.owns(self.line_no) {
            // Every line whose time field parses moves the watermark, so readers that only scan a
            // chunk and the reader that decodes it agree.
            if let Some(ts) = self.scan_ts(line) {
                self.guarded(ts, None, out, errors);
            }
            return;
        }
        match self.decode(line) {
            Ok(event) if self.jumps.held.is_empty() && !self.ahead(event.ts_ns) => {
                self.accept(self.line_no, event.ts_ns, Some(Ok(event)), out, errors);
            }
            Ok(event) => self.guarded(event.ts_ns, Some(Ok(event)), out, errors),
            Err(e) => {
                let rejected = self.reject(line, &e);
                // A readable time field moves the watermark even when the rest does not decode.
                match self.scan_ts(line) {
                    Some(ts) => self.guarded(ts, Some(Err(rejected)), out, errors),
                    None => errors.push(rejected),
                }
            }
        }
    }

    /// True when `ts` is further ahead of the file's latest time than the jump limit.
    #[inline]
    fn ahead(&self, ts: EventTime) -> bool {
        self.watermark.max_seen().is_some_and(|m| ts > m.saturating_add(self.spec.limits.max_jump_ns))
    }

    /// A line through the time-jump guard: held while too far ahead (and accepted with the others
    /// once confirmed), else accepted after the held lines are rejected.
    fn guarded(
        &mut self,
        ts: EventTime,
        decoded: Option<Result<LobEvent, Rejected>>,
        out: &mut Vec<Timed<LobEvent>>,
        errors: &mut Vec<Rejected>,
    ) {
        if self.ahead(ts) {
            self.jumps.held.push(Held { line_no: self.line_no, ts, owned: decoded });
            if self.jumps.held.len() >= self.spec.limits.confirm_lines.max(1) {
                self.release_held(true, out, errors);
            }
            return;
        }
        self.release_held(false, out, errors);
        self.accept(self.line_no, ts, decoded, out, errors);
    }

    /// Takes a line's time into the watermark and emits what it decoded to.
    #[inline]
    fn accept(
        &mut self,
        line_no: u64,
        ts: EventTime,
        decoded: Option<Result<LobEvent, Rejected>>,
        out: &mut Vec<Timed<LobEvent>>,
        errors: &mut Vec<Rejected>,
    ) {
        match decoded {
            Some(Ok(event)) => {
                if let Some(seed) = self.seed.take() {
                    self.emit_seed(&seed, &event, out);
                }
                let order_ts = self.watermark.observe(event.ts_ns);
                out.push(Timed { order_ts, seq: make_seq(self.spec.file_index, line_no), event });
            }
            Some(Err(rejected)) => {
                self.watermark.observe(ts);
                errors.push(rejected);
            }
            None => {
                self.watermark.observe(ts);
            }
        }
    }

    /// Ends a run of held lines: `confirmed`, they are accepted in order; otherwise each goes to the
    /// error stream, saying why.
    fn release_held(&mut self, confirmed: bool, out: &mut Vec<Timed<LobEvent>>, errors: &mut Vec<Rejected>) {
        if self.jumps.held.is_empty() {
            return;
        }
        let latest = self.watermark.max_seen().unwrap_or(0);
        let limits = self.spec.limits;
        for held in std::mem::take(&mut self.jumps.held) {
            if confirmed {
                self.accept(held.line_no, held.ts, held.owned, out, errors);
                continue;
            }
            let Some(decoded) = held.owned else { continue };
            let mut rejected = match decoded {
                Ok(event) => {
                    let mut s = String::new();
                    match self.input.format {
                        Format::JsonLines => super::decode::write_json_line(&event, &mut s),
                        _ => super::decode::write_csv_line(&event, &mut s),
                    }
                    Rejected {
                        origin: self.origin.clone(),
                        line: held.line_no,
                        reason: String::new(),
                        text: s,
                        raw: None,
                    }
                }
                Err(r) => r,
            };
            rejected.reason = format!(
                "time {} ns jumps {:.3} s ahead of the file's latest time {} ns (source.max-time-jump {} s), and \
                 fewer than {} lines in a row follow it (source.time-jump-confirm)",
                held.ts,
                (held.ts - latest) as f64 / 1e9,
                latest,
                limits.max_jump_ns as f64 / 1e9,
                limits.confirm_lines
            );
            errors.push(rejected);
        }
    }

    /// The event time of a line from its time field alone. Every line whose time field parses moves
    /// the watermark, whether or not the rest of it decodes, so readers that only scan a chunk and
    /// the reader that decodes it agree on the watermark.
    #[inline]
    fn scan_ts(&self, line: &[u8]) -> Option<EventTime> {
        match self.input.format {
            Format::Csv => scan_csv_ts(line),
            Format::Lobster => scan_lobster_ts(line, self.lobster.map_or(0, |c| c.day_start_ns)),
            Format::JsonLines => decode_json_line(line).ok().map(|e| e.ts_ns),
        }
    }

    #[inline]
    fn decode(&self, line: &[u8]) -> Result<LobEvent, DecodeError> {
        match self.input.format {
            Format::Csv => decode_csv_line(line),
            Format::Lobster => decode_lobster_line(line, self.lobster.as_ref().expect("lobster context")),
            Format::JsonLines => decode_json_line(line),
        }
    }

    fn reject(&self, line: &[u8], e: &DecodeError) -> Rejected {
        let text = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
        Rejected { origin: self.origin.clone(), line: self.line_no, reason: e.to_string(), text, raw: None }
    }

    /// Emits the book before the first message: the first snapshot with the first message undone,
    /// as anonymous adds (order id 0) ordered before the first message.
    fn emit_seed(&mut self, snapshot: &[i64], first: &LobEvent, out: &mut Vec<Timed<LobEvent>>) {
        for (side, price, qty) in seed_levels(snapshot, first) {
            let event = LobEvent {
                ts_ns: first.ts_ns,
                instrument: first.instrument,
                kind: EventKind::Add,
                order_id: 0,
                size: qty,
                price,
                side,
            };
            out.push(Timed { order_ts: first.ts_ns, seq: make_seq(self.spec.file_index, 0), event });
        }
    }
}

/// The levels of a LOBSTER snapshot row with `first` undone (the book just before `first`).
pub fn seed_levels(snapshot: &[i64], first: &LobEvent) -> Vec<(Side, Price, Qty)> {
    let mut levels = Vec::new();
    for chunk in snapshot.chunks_exact(4) {
        let (ap, asz, bp, bsz) = (chunk[0], chunk[1], chunk[2], chunk[3]);
        if asz > 0 && ap != crate::book::LOBSTER_EMPTY_ASK {
            levels.push((Side::Sell, Price(ap), asz as Qty));
        }
        if bsz > 0 && bp != crate::book::LOBSTER_EMPTY_BID {
            levels.push((Side::Buy, Price(bp), bsz as Qty));
        }
    }
    let delta: i64 = match first.kind {
        EventKind::Add => -(first.size as i64),
        EventKind::PartialCancel | EventKind::Delete | EventKind::ExecuteVisible => first.size as i64,
        _ => 0,
    };
    if delta != 0 {
        match levels.iter_mut().find(|(s, p, _)| *s == first.side && *p == first.price) {
            Some(level) => level.2 = (level.2 as i64 + delta).max(0) as Qty,
            None if delta > 0 => levels.push((first.side, first.price, delta as Qty)),
            None => {}
        }
    }
    levels.retain(|l| l.2 > 0);
    levels
}

/// Reads the first row of a LOBSTER order-book file.
pub fn read_first_snapshot(path: &Path) -> io::Result<Option<Vec<i64>>> {
    let mut first = String::new();
    BufReader::new(File::open(path)?).take(1 << 16).read_line(&mut first)?;
    parse_snapshot_row(first.trim_end().as_bytes())
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}:1: {e}", path.display())))
}

/// Parses one LOBSTER order-book row (`ask p, ask s, bid p, bid s, ...`).
pub fn parse_snapshot_row(line: &[u8]) -> Result<Vec<i64>, String> {
    let row: Option<Vec<i64>> = trim_line(line).split(|&b| b == b',').map(parse_i64).collect();
    match row {
        Some(row) if !row.is_empty() && row.len() % 4 == 0 => Ok(row),
        Some(row) => Err(format!("{} columns, want a multiple of 4", row.len())),
        None => Err("a column is not an integer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_tmp(name: &str, body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lobsentry-reader-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap().write_all(body.as_bytes()).unwrap();
        path
    }

    /// Three readers sharing a file in chunks of `chunk_lines`, their output merged in file order.
    fn read_striped(path: &Path, spec: ReaderSpec, chunk_lines: u64) -> (Vec<Timed<LobEvent>>, Vec<Rejected>) {
        let mut parts = Vec::new();
        let mut part_err = Vec::new();
        for offset in 0..3 {
            let (o, e) = read_all(path, ReaderSpec { stride: 3, offset, chunk_lines, ..spec });
            parts.extend(o);
            part_err.extend(e);
        }
        parts.sort_by_key(|t| t.seq);
        part_err.sort_by_key(|r| r.line);
        (parts, part_err)
    }

    fn read_all(path: &Path, spec: ReaderSpec) -> (Vec<Timed<LobEvent>>, Vec<Rejected>) {
        let mut r = FileReader::open(InputFile::guess(path).unwrap(), spec).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        while !r.is_done() {
            r.read_batch(3, &mut out, &mut err);
        }
        (out, err)
    }

    #[test]
    fn csv_with_errors_and_lateness() {
        let body = "ts_ns,instrument,type,order_id,size,price,side\n\
                    100,A,1,1,10,500,1\n\
                    garbage\n\
                    300,A,1,2,10,500,1\n\
                    150,A,3,1,10,500,1\n\
                    310,A,1,3,-1,500,1\n";
        let path = write_tmp("a.csv", body);
        let (out, err) = read_all(&path, ReaderSpec::whole(0, 100));
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].order_ts, 200, "150 is behind the watermark 300-100");
        assert_eq!(out[1].order_ts, 300);
        assert_eq!(err.len(), 2);
        assert_eq!((err[0].line, err[1].line), (3, 6));
        assert!(err[1].reason.contains("negative size"), "{}", err[1]);
    }

    #[test]
    fn striped_readers_see_the_same_watermarks_as_one() {
        let mut body = String::from("ts_ns,instrument,type,order_id,size,price,side\n");
        for i in 0..1000u64 {
            let ts = 1000 + i * 10 - (i % 7) * 40;
            body.push_str(&format!("{ts},S{},1,{i},5,100,1\n", i % 3));
            if i % 97 == 0 {
                body.push_str("bad line\n");
            }
        }
        let path = write_tmp("striped.csv", &body);
        let (whole, whole_err) = read_all(&path, ReaderSpec::whole(0, 20));
        let (parts, part_err) = read_striped(&path, ReaderSpec::whole(0, 20), 17);
        assert_eq!(parts, whole);
        assert_eq!(part_err, whole_err);
        assert!(whole.iter().any(|t| t.order_ts > t.event.ts_ns), "some events are behind the watermark");
    }

    /// CR-only (old Mac), CRLF and LF files read alike, with the same line numbers; a byte-order
    /// mark costs nothing.
    #[test]
    fn line_endings_and_byte_order_marks() {
        let lines =
            ["ts_ns,instrument,type,order_id,size,price,side", "1000,A,1,1,10,500,1", "bad", "2000,A,1,2,10,500,1"];
        let mut expect = None;
        for (name, end, bom) in
            [("lf.csv", "\n", ""), ("cr.csv", "\r", ""), ("crlf.csv", "\r\n", ""), ("bom.csv", "\n", "\u{feff}")]
        {
            let body = format!("{bom}{}{end}", lines.join(end));
            let path = write_tmp(name, &body);
            // Batches of 3 lines and a 1 MiB buffer: also read one line per batch to cross CR|LF splits.
            let (out, err) = read_all(&path, ReaderSpec::whole(0, 100));
            assert_eq!(out.len(), 2, "{name}");
            assert_eq!(err.len(), 1, "{name}");
            let got = (out.iter().map(|t| (t.seq, t.event.ts_ns)).collect::<Vec<_>>(), err[0].line);
            assert_eq!(got.1, 3, "{name}: the bad line is line 3");
            match &expect {
                None => expect = Some(got),
                Some(e) => assert_eq!(&got, e, "{name}"),
            }
        }
        // A CR at the very end of the 1 MiB read buffer and its LF at the start of the next fill.
        let header = format!("{}\r\n", lines[0]);
        let pad = "x".repeat((1 << 20) - 1 - header.len());
        let path = write_tmp("split.csv", &format!("{header}{pad}\r\n1000,A,1,1,10,500,1\r\n2000,A,1,2,10,500,1\r\n"));
        let (out, err) = read_all(&path, ReaderSpec::whole(0, 100));
        assert_eq!((out.len(), err.len(), err[0].line), (2, 1, 2));
        assert_eq!(out[1].seq, make_seq(0, 4), "no line is counted twice");
        // A header-less BOM file: the first event is not lost.
        let path = write_tmp(
            "bom-lobster.jsonl",
            "\u{feff}{\"ts_ns\":5,\"instrument\":\"A\",\"type\":1,\"order_id\":1,\"size\":1,\"price\":2,\"side\":1}\n",
        );
        assert_eq!(read_all(&path, ReaderSpec::whole(0, 100)).0.len(), 1);
    }

    /// A line longer than the limit is rejected with its start kept, whether it fits the read buffer
    /// or spans several fills; the lines around it are read.
    #[test]
    fn overlong_lines_are_rejected_with_their_start() {
        let long = "9".repeat(3 << 20);
        let body = format!(
            "ts_ns,instrument,type,order_id,size,price,side\n1000,A,1,1,10,500,1\n{long}\n2000,A,1,2,10,500,1\n"
        );
        let path = write_tmp("long.csv", &body);
        let limits = InputLimits { max_line_bytes: 4096, ..InputLimits::default() };
        let (out, err) = read_all(&path, ReaderSpec { limits, ..ReaderSpec::whole(0, 100) });
        assert_eq!(out.len(), 2);
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].line, 3);
        assert!(err[0].reason.contains("longer than 4096 bytes"), "{}", err[0]);
        assert_eq!(err[0].text.len(), 200);
    }

    /// One far-future timestamp goes to the error stream instead of making the rest of the file late;
    /// a jump that the following lines confirm is accepted. Striped readers decide alike.
    #[test]
    fn time_jumps_are_held_until_confirmed() {
        let hour = 3_600_000_000_000u64;
        let mut body = String::from("ts_ns,instrument,type,order_id,size,price,side\n");
        let mut ts = 1_000_000_000u64;
        for i in 0..200u64 {
            ts += 1_000_000;
            let t = match i {
                50 => ts + 10 * hour,           // a glitch
                51 => u64::MAX,                 // and another, right after it
                _ if i >= 150 => ts + 5 * hour, // the feed really jumps
                _ => ts,
            };
            body.push_str(&format!("{t},S{},1,{i},5,100,1\n", i % 3));
        }
        let path = write_tmp("jump.csv", &body);
        let limits = InputLimits { confirm_lines: 4, ..InputLimits::default() };
        let spec = ReaderSpec { limits, ..ReaderSpec::whole(0, 1_000_000) };
        let (out, err) = read_all(&path, spec);
        assert_eq!(err.len(), 2, "{err:?}");
        assert_eq!((err[0].line, err[1].line), (52, 53));
        assert!(err[0].reason.contains("jumps") && err[0].reason.contains("max-time-jump"), "{}", err[0]);
        assert_eq!(out.len(), 198);
        let late = out.iter().filter(|t| t.order_ts > t.event.ts_ns).count();
        assert_eq!(late, 0, "no event is behind the watermark");
        let (parts, part_err) = read_striped(&path, spec, 7);
        assert_eq!(parts, out);
        assert_eq!(part_err, err);
    }

    #[test]
    fn seed_undoes_the_first_message() {
        let first = LobEvent {
            ts_ns: 0,
            instrument: InstrumentId::new("X").unwrap(),
            kind: EventKind::Add,
            order_id: 1,
            size: 100,
            price: Price(5794000),
            side: Side::Buy,
        };
        let row = parse_snapshot_row(b"5802300,100,5794000,496,5804300,100,5787000,400").unwrap();
        let levels = seed_levels(&row, &first);
        assert!(levels.contains(&(Side::Buy, Price(5794000), 396)));
        assert!(levels.contains(&(Side::Sell, Price(5804300), 100)));
        assert_eq!(levels.len(), 4);
    }
}
