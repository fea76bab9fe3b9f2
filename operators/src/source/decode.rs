//! Line decoders for the three input formats, and file-name conventions. Pure functions.
//!
//! * Interchange CSV: `ts_ns,instrument,type,order_id,size,price,side` (a header line is skipped).
//! * LOBSTER messages: `time,type,order_id,size,price,direction[,ignored...]`, time in seconds after
//!   midnight with up to 9 decimals; ticker and date come from the file name
//!   (`TICKER_DATE_start_end_message_N.csv`) unless overridden.
//! * JSON lines: one object per line with the interchange field names
//!   (`{"ts_ns":..,"instrument":"..","type":1,"order_id":..,"size":..,"price":..,"side":1}`).
//!
//! Every decoder validates what it reads: known type and side codes, non-negative sizes, positive
//! sizes and prices for book messages, a symbol that fits [`InstrumentId`].

use crate::event::{EventKind, EventTime, InstrumentId, LobEvent, Price, Side};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Interchange CSV with a header line.
    Csv,
    /// LOBSTER message file.
    Lobster,
    /// JSON lines with the interchange field names.
    JsonLines,
}

impl Format {
    /// Guesses a format from a path: LOBSTER file names, then `.jsonl`/`.json`/`.ndjson`, then `.csv`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_str()?;
        if LobsterName::parse(name).is_some() {
            return Some(Format::Lobster);
        }
        match path.extension()?.to_str()? {
            "jsonl" | "json" | "ndjson" => Some(Format::JsonLines),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// Why a line was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The line has the wrong number of fields.
    #[error("expected {} fields, found {}{}", .expected, .found, lobster_hint(*.expected, *.found))]
    FieldCount {
        /// Fields the format needs.
        expected: usize,
        /// Fields present.
        found: usize,
    },
    /// A field does not parse.
    #[error("field `{field}`: cannot parse {value:?}")]
    BadField {
        /// The field's name.
        field: &'static str,
        /// The text found.
        value: String,
    },
    /// The fields parse but the event is not valid.
    #[error("{0}")]
    Invalid(String),
    /// A JSON line does not parse.
    #[error("invalid JSON: {0}")]
    Json(String),
}

/// A hint for an interchange CSV line with LOBSTER's six fields: the file is most likely a LOBSTER
/// message file under another name.
fn lobster_hint(expected: usize, found: usize) -> &'static str {
    if expected == 7 && found == 6 {
        " (a LOBSTER message line? name the file TICKER_YYYY-MM-DD_START_END_message_N.csv, or set \
         source.format = \"lobster\" with source.instrument and source.date)"
    } else {
        ""
    }
}

/// The interchange CSV header.
pub const CSV_HEADER: &str = "ts_ns,instrument,type,order_id,size,price,side";

fn bad(field: &'static str, value: &[u8]) -> DecodeError {
    DecodeError::BadField { field, value: String::from_utf8_lossy(value).into_owned() }
}

/// Parses an unsigned decimal integer.
#[inline]
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(d as u64)?;
    }
    Some(v)
}

/// Parses a signed decimal integer.
#[inline]
pub fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.first() {
        Some(b'-') => {
            parse_u64(&s[1..])
                .and_then(|v| if v <= i64::MAX as u64 + 1 { Some((v as i64).wrapping_neg()) } else { None })
        }
        Some(b'+') => parse_u64(&s[1..]).and_then(|v| i64::try_from(v).ok()),
        _ => parse_u64(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Parses LOBSTER's `seconds.fraction` into nanoseconds.
#[inline]
pub fn parse_seconds_ns(s: &[u8]) -> Option<u64> {
    let (int, frac) = match memchr::memchr(b'.', s) {
        Some(dot) => (&s[..dot], &s[dot + 1..]),
        None => (s, &s[..0]),
    };
    let secs = parse_u64(int)?;
    // LOBSTER sometimes prints more than 9 decimals (float noise): keep nanoseconds, check the rest.
    let (frac, rest) = frac.split_at(frac.len().min(9));
    if !rest.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut ns = if frac.is_empty() { 0 } else { parse_u64(frac)? };
    for _ in frac.len()..9 {
        ns *= 10;
    }
    secs.checked_mul(1_000_000_000)?.checked_add(ns)
}

/// Splits a line into up to `N` comma-separated fields; returns the number of fields found (which may
/// exceed `N`: the extra ones are not stored).
#[inline]
fn split_fields<'a, const N: usize>(line: &'a [u8], out: &mut [&'a [u8]; N]) -> usize {
    let mut count = 0;
    let mut start = 0;
    for pos in memchr::memchr_iter(b',', line) {
        if count < N {
            out[count] = &line[start..pos];
        }
        count += 1;
        start = pos + 1;
    }
    if count < N {
        out[count] = &line[start..];
    }
    count + 1
}

/// Strips a trailing `\r`.
#[inline]
pub fn trim_line(line: &[u8]) -> &[u8] {
    match line.last() {
        Some(b'\r') => &line[..line.len() - 1],
        _ => line,
    }
}

/// Checks the fields that make an event meaningful.
#[inline]
pub fn validate(kind: EventKind, size: i64, price: i64) -> Result<(), DecodeError> {
    if size < 0 {
        return Err(DecodeError::Invalid(format!("negative size {size}")));
    }
    if kind != EventKind::Halt {
        if size == 0 {
            return Err(DecodeError::Invalid(format!("zero size for a type {} message", kind.code())));
        }
        if price <= 0 {
            return Err(DecodeError::Invalid(format!("non-positive price {price} for a type {} message", kind.code())));
        }
    }
    Ok(())
}

#[inline]
fn kind_side(kind: &[u8], side: &[u8]) -> Result<(EventKind, Side), DecodeError> {
    let kind = parse_i64(kind).and_then(EventKind::from_code).ok_or_else(|| bad("type", kind))?;
    let side = parse_i64(side).and_then(Side::from_code).ok_or_else(|| bad("side", side))?;
    Ok((kind, side))
}

/// Decodes one interchange CSV line.
///
/// ```
/// use lobsentry_operators::source::decode::decode_csv_line;
/// let ev = decode_csv_line(b"1000,AAPL,1,7,100,1500000,1").unwrap();
/// assert_eq!((ev.ts_ns, ev.instrument.as_str(), ev.order_id, ev.size), (1000, "AAPL", 7, 100));
/// assert!(decode_csv_line(b"1000,AAPL,1,7,-100,1500000,1").is_err());
/// ```
#[inline]
pub fn decode_csv_line(line: &[u8]) -> Result<LobEvent, DecodeError> {
    let line = trim_line(line);
    let mut f: [&[u8]; 7] = [&[]; 7];
    let n = split_fields(line, &mut f);
    if n != 7 {
        return Err(DecodeError::FieldCount { expected: 7, found: n });
    }
    let ts_ns = parse_u64(f[0]).ok_or_else(|| bad("ts_ns", f[0]))?;
    let instrument = InstrumentId::from_bytes(f[1]).map_err(DecodeError::Invalid)?;
    let (kind, side) = kind_side(f[2], f[6])?;
    let order_id = parse_u64(f[3]).ok_or_else(|| bad("order_id", f[3]))?;
    let size = parse_i64(f[4]).ok_or_else(|| bad("size", f[4]))?;
    let price = parse_i64(f[5]).ok_or_else(|| bad("price", f[5]))?;
    validate(kind, size, price)?;
    Ok(LobEvent { ts_ns, instrument, kind, order_id, size: size as u64, price: Price(price), side })
}

/// The event time of an interchange CSV line, parsed cheaply (the first field only).
#[inline]
pub fn scan_csv_ts(line: &[u8]) -> Option<EventTime> {
    let end = memchr::memchr(b',', line)?;
    parse_u64(&line[..end])
}

/// What a LOBSTER line needs from outside the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LobsterContext {
    /// The instrument (the ticker from the file name unless overridden).
    pub instrument: InstrumentId,
    /// Midnight of the trading day, in ns since the epoch (LOBSTER times are seconds after midnight).
    pub day_start_ns: u64,
}

/// Decodes one LOBSTER message line.
///
/// ```
/// use lobsentry_operators::event::{EventKind, InstrumentId};
/// use lobsentry_operators::source::decode::{decode_lobster_line, LobsterContext};
/// let ctx = LobsterContext { instrument: InstrumentId::new("AMZN").unwrap(), day_start_ns: 0 };
/// let ev = decode_lobster_line(b"34200.000376608,5,0,10,33578400,1,null", &ctx).unwrap();
/// assert_eq!(ev.ts_ns, 34_200_000_376_608);
/// assert_eq!(ev.kind, EventKind::ExecuteHidden);
/// ```
#[inline]
pub fn decode_lobster_line(line: &[u8], ctx: &LobsterContext) -> Result<LobEvent, DecodeError> {
    let line = trim_line(line);
    let mut f: [&[u8]; 6] = [&[]; 6];
    let n = split_fields(line, &mut f);
    if n < 6 {
        return Err(DecodeError::FieldCount { expected: 6, found: n });
    }
    let t = parse_seconds_ns(f[0]).ok_or_else(|| bad("time", f[0]))?;
    let (kind, side) = kind_side(f[1], f[5])?;
    let order_id = lobster_order_id(kind, f[2])?;
    let size = parse_i64(f[3]).ok_or_else(|| bad("size", f[3]))?;
    let price = parse_i64(f[4]).ok_or_else(|| bad("price", f[4]))?;
    validate(kind, size, price)?;
    Ok(LobEvent {
        ts_ns: ctx.day_start_ns.checked_add(t).ok_or_else(|| bad("time", f[0]))?,
        instrument: ctx.instrument,
        kind,
        order_id,
        size: size as u64,
        price: Price(price),
        side,
    })
}

/// LOBSTER writes order id -1 for cross trades and halts, which name no order: read as 0.
#[inline]
fn lobster_order_id(kind: EventKind, field: &[u8]) -> Result<u64, DecodeError> {
    match parse_i64(field) {
        Some(id) if id >= 0 => Ok(id as u64),
        Some(-1) if matches!(kind, EventKind::Cross | EventKind::Halt | EventKind::ExecuteHidden) => Ok(0),
        _ => Err(bad("order_id", field)),
    }
}

/// The event time of a LOBSTER line, parsed cheaply.
#[inline]
pub fn scan_lobster_ts(line: &[u8], day_start_ns: u64) -> Option<EventTime> {
    let end = memchr::memchr(b',', line)?;
    parse_seconds_ns(&line[..end]).and_then(|t| t.checked_add(day_start_ns))
}

#[derive(Deserialize)]
struct JsonEvent<'a> {
    ts_ns: u64,
    #[serde(borrow)]
    instrument: &'a str,
    #[serde(rename = "type")]
    kind: i64,
    order_id: u64,
    size: i64,
    price: i64,
    side: i64,
}

/// Decodes one JSON line.
///
/// ```
/// use lobsentry_operators::source::decode::decode_json_line;
/// let ev = decode_json_line(br#"{"ts_ns":5,"instrument":"X","type":3,"order_id":9,"size":1,"price":2,"side":-1}"#).unwrap();
/// assert_eq!(ev.order_id, 9);
/// assert!(decode_json_line(b"{not json").is_err());
/// ```
pub fn decode_json_line(line: &[u8]) -> Result<LobEvent, DecodeError> {
    let raw: JsonEvent<'_> = serde_json::from_slice(trim_line(line)).map_err(|e| DecodeError::Json(e.to_string()))?;
    let instrument = InstrumentId::new(raw.instrument).map_err(DecodeError::Invalid)?;
    let kind = EventKind::from_code(raw.kind).ok_or_else(|| bad("type", raw.kind.to_string().as_bytes()))?;
    let side = Side::from_code(raw.side).ok_or_else(|| bad("side", raw.side.to_string().as_bytes()))?;
    validate(kind, raw.size, raw.price)?;
    Ok(LobEvent {
        ts_ns: raw.ts_ns,
        instrument,
        kind,
        order_id: raw.order_id,
        size: raw.size as u64,
        price: Price(raw.price),
        side,
    })
}

/// Writes an event as an interchange CSV line (without the newline).
pub fn write_csv_line(ev: &LobEvent, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(
        out,
        "{},{},{},{},{},{},{}",
        ev.ts_ns,
        ev.instrument,
        ev.kind.code(),
        ev.order_id,
        ev.size,
        ev.price.0,
        ev.side.code()
    );
}

/// Writes an event as a JSON line (without the newline).
pub fn write_json_line(ev: &LobEvent, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(out, r#"{{"ts_ns":{},"instrument":""#, ev.ts_ns);
    crate::event::push_json_escaped(ev.instrument.as_str(), out);
    let _ = write!(
        out,
        r#"","type":{},"order_id":{},"size":{},"price":{},"side":{}}}"#,
        ev.kind.code(),
        ev.order_id,
        ev.size,
        ev.price.0,
        ev.side.code()
    );
}

/// The parts of a LOBSTER file name: `TICKER_YYYY-MM-DD_start_end_(message|orderbook)_N.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LobsterName {
    /// The ticker.
    pub ticker: String,
    /// The trading day.
    pub date: (i32, u32, u32),
    /// `true` for a message file, `false` for an order-book file.
    pub is_message: bool,
    /// The number of levels N.
    pub levels: usize,
}

impl LobsterName {
    /// Parses a file name (not a path).
    pub fn parse(name: &str) -> Option<LobsterName> {
        let stem = name.strip_suffix(".csv")?;
        let parts: Vec<&str> = stem.split('_').collect();
        if parts.len() < 6 {
            return None;
        }
        let n = parts.len();
        let levels: usize = parts[n - 1].parse().ok()?;
        let is_message = match parts[n - 2] {
            "message" => true,
            "orderbook" => false,
            _ => return None,
        };
        parts[n - 3].parse::<u64>().ok()?;
        parts[n - 4].parse::<u64>().ok()?;
        let date = parse_date(parts[n - 5])?;
        let ticker = parts[..n - 5].join("_");
        if ticker.is_empty() {
            return None;
        }
        Some(LobsterName { ticker, date, is_message, levels })
    }

    /// The matching order-book (or message) file name.
    pub fn sibling(name: &str) -> Option<String> {
        let parsed = LobsterName::parse(name)?;
        let (from, to) = if parsed.is_message { ("_message_", "_orderbook_") } else { ("_orderbook_", "_message_") };
        let idx = name.rfind(from)?;
        Some(format!("{}{}{}", &name[..idx], to, &name[idx + from.len()..]))
    }
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<(i32, u32, u32)> {
    let mut it = s.split('-');
    let y: i32 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some((y, m, d))
}

/// Midnight UTC of a civil date in ns since the epoch (Howard Hinnant's days-from-civil).
pub fn midnight_ns(date: (i32, u32, u32)) -> u64 {
    let (y, m, d) = date;
    let y = if m <= 2 { y - 1 } else { y } as i64;
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    (days.max(0) as u64) * 86_400 * 1_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lobster_times_that_overflow_the_day_are_rejected() {
        let ctx =
            LobsterContext { instrument: InstrumentId::new("X").unwrap(), day_start_ns: 1_340_236_800_000_000_000 };
        let line = b"18446744073.709551615,1,2,100,1000000,1";
        assert!(matches!(decode_lobster_line(line, &ctx), Err(DecodeError::BadField { field: "time", .. })));
        assert_eq!(scan_lobster_ts(line, ctx.day_start_ns), None);
        assert!(decode_lobster_line(b"34200.5,1,2,100,1000000,1", &ctx).is_ok());
    }

    #[test]
    fn integers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"1x"), None);
        assert_eq!(parse_i64(b"-5"), Some(-5));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_seconds_ns(b"34200.015105074"), Some(34_200_015_105_074));
        assert_eq!(parse_seconds_ns(b"34200.05990197"), Some(34_200_059_901_970));
        assert_eq!(parse_seconds_ns(b"1"), Some(1_000_000_000));
        assert_eq!(parse_seconds_ns(b"43002.632812672004"), Some(43_002_632_812_672));
        assert_eq!(parse_seconds_ns(b"1.00000000x1"), None);
    }

    #[test]
    fn csv_errors_are_specific() {
        let err = |l: &[u8]| decode_csv_line(l).unwrap_err().to_string();
        assert!(err(b"1,A,1,1,1,1").starts_with("expected 7 fields, found 6 (a LOBSTER message line?"));
        assert_eq!(err(b"1,A,1,1,1"), "expected 7 fields, found 5");
        assert!(err(b"x,A,1,1,1,1,1").contains("ts_ns"));
        assert!(err(b"1,A,9,1,1,1,1").contains("type"));
        assert!(err(b"1,A,1,1,1,1,0").contains("side"));
        assert!(err(b"1,A,1,1,-3,1,1").contains("negative size"));
        assert!(err(b"1,A,1,1,3,0,1").contains("price"));
        assert!(err(b"1,,1,1,3,1,1").contains("empty"));
        assert!(decode_csv_line(b"1,A,7,0,0,-1,1").is_ok(), "halts carry no size or price");
        assert!(decode_csv_line(b"1,A,1,1,1,1,1\r").is_ok());
    }

    #[test]
    fn round_trips() {
        let ev = decode_csv_line(b"123,ABC,4,99,10,5000,-1").unwrap();
        let mut s = String::new();
        write_csv_line(&ev, &mut s);
        assert_eq!(s, "123,ABC,4,99,10,5000,-1");
        s.clear();
        write_json_line(&ev, &mut s);
        assert_eq!(decode_json_line(s.as_bytes()).unwrap(), ev);
    }

    #[test]
    fn lobster_names_and_dates() {
        let n = LobsterName::parse("AMZN_2012-06-21_34200000_57600000_message_5.csv").unwrap();
        assert_eq!((n.ticker.as_str(), n.date, n.is_message, n.levels), ("AMZN", (2012, 6, 21), true, 5));
        assert_eq!(
            LobsterName::sibling("AMZN_2012-06-21_34200000_57600000_message_5.csv").unwrap(),
            "AMZN_2012-06-21_34200000_57600000_orderbook_5.csv"
        );
        assert!(LobsterName::parse("trades.csv").is_none());
        assert_eq!(midnight_ns((1970, 1, 1)), 0);
        assert_eq!(midnight_ns((2012, 6, 21)), 1_340_236_800 * 1_000_000_000);
        assert_eq!(Format::from_path(Path::new("x/a.jsonl")), Some(Format::JsonLines));
        assert_eq!(
            Format::from_path(Path::new("GOOG_2012-06-21_34200000_57600000_message_10.csv")),
            Some(Format::Lobster)
        );
    }
}
