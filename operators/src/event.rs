//! Domain types: prices in integer ticks, instruments as inline symbols, and the LOBSTER event model.
//!
//! Everything here is plain data, free of any timely runtime, so it can be unit- and property-tested
//! without a worker.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Event time in nanoseconds (since the epoch, or since midnight for LOBSTER replays).
pub type EventTime = u64;

/// A price in integer ticks of 1/10000 dollar (LOBSTER's convention). Never a float.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Price(pub i64);

impl Price {
    /// The price in dollars, for reporting only.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 10_000.0
    }
}

/// A quantity of shares. Negative sizes are rejected when decoding.
pub type Qty = u64;

/// An instrument symbol stored inline (up to 16 bytes of ASCII), so events are `Copy` and hash cheaply.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstrumentId([u8; 16]);

impl InstrumentId {
    /// The longest symbol accepted, in bytes.
    pub const MAX_LEN: usize = 16;

    /// Builds a symbol from text: 1 to 16 bytes of printable ASCII without commas, quotes or spaces.
    ///
    /// ```
    /// use lobsentry_operators::event::InstrumentId;
    /// assert_eq!(InstrumentId::new("GOOG").unwrap().as_str(), "GOOG");
    /// assert!(InstrumentId::new("").is_err());
    /// assert!(InstrumentId::new("WAY-TOO-LONG-SYMBOL").is_err());
    /// ```
    pub fn new(symbol: &str) -> Result<Self, String> {
        Self::from_bytes(symbol.as_bytes())
    }

    /// Same as [`InstrumentId::new`] on raw bytes.
    #[inline]
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.is_empty() {
            return Err("empty instrument symbol".into());
        }
        if bytes.len() > Self::MAX_LEN {
            return Err(format!(
                "instrument symbol longer than {} bytes: {:?}",
                Self::MAX_LEN,
                String::from_utf8_lossy(bytes)
            ));
        }
        // One branch-free pass on the hot path; the error path finds the culprit.
        let bad = bytes
            .iter()
            .fold(false, |bad, &b| bad | !(0x21..0x7f).contains(&b) | (b == b',') | (b == b'"') | (b == b'\''));
        if let Some(b) =
            bad.then(|| bytes.iter().find(|b| !b.is_ascii_graphic() || matches!(b, b',' | b'"' | b'\''))).flatten()
        {
            return Err(format!(
                "instrument symbol {:?} holds a forbidden byte {:?}",
                String::from_utf8_lossy(bytes),
                *b as char
            ));
        }
        let mut out = [0u8; 16];
        out[..bytes.len()].copy_from_slice(bytes);
        Ok(InstrumentId(out))
    }

    /// The symbol as text.
    pub fn as_str(&self) -> &str {
        let len = self.0.iter().position(|&b| b == 0).unwrap_or(16);
        // Only ASCII bytes are ever stored.
        std::str::from_utf8(&self.0[..len]).unwrap_or("?")
    }

    /// A stable 64-bit hash (identical in every process), used to route an instrument to a worker.
    #[inline]
    pub fn route(&self) -> u64 {
        let a = u64::from_le_bytes(self.0[..8].try_into().unwrap_or_default());
        let b = u64::from_le_bytes(self.0[8..].try_into().unwrap_or_default());
        let mut h = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^ (h >> 32)
    }
}

impl fmt::Display for InstrumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for InstrumentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The side of an order: LOBSTER's direction, +1 buy and -1 sell. For executions it is the side of the
/// resting order that was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Side {
    /// A bid (+1).
    Buy,
    /// An ask (-1).
    Sell,
}

impl Side {
    /// Decodes LOBSTER's direction code.
    #[inline]
    pub fn from_code(code: i64) -> Option<Side> {
        match code {
            1 => Some(Side::Buy),
            -1 => Some(Side::Sell),
            _ => None,
        }
    }

    /// LOBSTER's direction code.
    pub fn code(self) -> i8 {
        match self {
            Side::Buy => 1,
            Side::Sell => -1,
        }
    }
}

/// LOBSTER event types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// 1: submission of a new limit order.
    Add,
    /// 2: cancellation of part of an order.
    PartialCancel,
    /// 3: deletion of an order.
    Delete,
    /// 4: execution of a visible order.
    ExecuteVisible,
    /// 5: execution of a hidden order (does not touch the visible book).
    ExecuteHidden,
    /// 6: cross trade (auction); does not touch the book.
    Cross,
    /// 7: trading halt indicator.
    Halt,
}

impl EventKind {
    /// Decodes LOBSTER's type code.
    #[inline]
    pub fn from_code(code: i64) -> Option<EventKind> {
        Some(match code {
            1 => EventKind::Add,
            2 => EventKind::PartialCancel,
            3 => EventKind::Delete,
            4 => EventKind::ExecuteVisible,
            5 => EventKind::ExecuteHidden,
            6 => EventKind::Cross,
            7 => EventKind::Halt,
            _ => return None,
        })
    }

    /// LOBSTER's type code.
    pub fn code(self) -> u8 {
        match self {
            EventKind::Add => 1,
            EventKind::PartialCancel => 2,
            EventKind::Delete => 3,
            EventKind::ExecuteVisible => 4,
            EventKind::ExecuteHidden => 5,
            EventKind::Cross => 6,
            EventKind::Halt => 7,
        }
    }

    /// Types 2 and 3.
    pub fn is_cancel(self) -> bool {
        matches!(self, EventKind::PartialCancel | EventKind::Delete)
    }

    /// Types 4 and 5.
    pub fn is_execution(self) -> bool {
        matches!(self, EventKind::ExecuteVisible | EventKind::ExecuteHidden)
    }
}

/// One limit-order-book message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LobEvent {
    /// Event time in nanoseconds.
    pub ts_ns: EventTime,
    /// The instrument.
    pub instrument: InstrumentId,
    /// The LOBSTER event type.
    pub kind: EventKind,
    /// The order id (0 for hidden executions without one).
    pub order_id: u64,
    /// Shares added, cancelled or executed.
    pub size: Qty,
    /// Price in ticks.
    pub price: Price,
    /// Side of the (resting) order.
    pub side: Side,
}

impl LobEvent {
    /// True for anonymous liquidity that seeds a book from a snapshot (an add with order id 0):
    /// it shapes the book but is not a market message, so features and event counts skip it.
    #[inline]
    pub fn is_seed(&self) -> bool {
        self.kind == EventKind::Add && self.order_id == 0
    }
}

/// An event as it travels through the dataflow: the event plus the two numbers that make event-time
/// processing deterministic.
///
/// * `order_ts` is `max(ts_ns, watermark when the event was read)`. For on-time events it equals
///   `ts_ns`; for events behind their source's watermark it is that watermark. Books apply events in
///   `(order_ts, seq)` order and a window `[start, end)` accepts an event only if `order_ts < end`,
///   which is exactly "late = the window had already fired when the event arrived".
/// * `seq` is the event's position in its source (file index in the high 24 bits, line number below),
///   the tie-breaker that makes the order independent of how many workers read the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timed<E> {
    /// `max(event time, source watermark at arrival)`.
    pub order_ts: EventTime,
    /// Position in the source, for deterministic tie-breaking.
    pub seq: u64,
    /// The payload.
    pub event: E,
}

impl<E> Timed<E> {
    /// True when the event arrived behind its source's watermark.
    pub fn is_behind_watermark(&self, ts: EventTime) -> bool {
        self.order_ts > ts
    }
}

/// Sorts events by `(order_ts, seq)` exactly as a stable sort does (equal keys keep their order),
/// by sorting small `(order_ts, seq, position)` keys and then moving each event once: a stable sort
/// of the events themselves moves every one of them through a scratch buffer several times.
///
/// ```
/// use lobsentry_operators::event::{sort_timed, Timed};
/// let t = |order_ts, seq, event| Timed { order_ts, seq, event };
/// let mut v = vec![t(2, 0, 'a'), t(1, 5, 'b'), t(1, 5, 'c'), t(1, 3, 'd')];
/// sort_timed(&mut v);
/// assert_eq!(v.iter().map(|x| x.event).collect::<String>(), "dbca", "ties keep their order");
/// ```
pub fn sort_timed<E: Copy>(items: &mut Vec<Timed<E>>) {
    if items.len() < 2 {
        return;
    }
    let mut keys: Vec<(EventTime, u64, usize)> =
        items.iter().enumerate().map(|(i, t)| (t.order_ts, t.seq, i)).collect();
    keys.sort_unstable();
    if keys.iter().enumerate().all(|(i, k)| k.2 == i) {
        return;
    }
    let old = std::mem::take(items);
    items.extend(keys.iter().map(|k| old[k.2]));
}

/// Builds a `seq` from a source index and a position in it.
#[inline]
pub fn make_seq(source: u32, position: u64) -> u64 {
    ((source as u64) << 40) | (position & ((1 << 40) - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Equal to the stable sort it replaces, ties and all.
        #[test]
        fn sort_timed_is_the_stable_sort(keys in proptest::collection::vec((0u64..20, 0u64..5), 0..300)) {
            let items: Vec<Timed<usize>> =
                keys.iter().enumerate().map(|(i, (ts, seq))| Timed { order_ts: *ts, seq: *seq, event: i }).collect();
            let mut stable = items.clone();
            stable.sort_by_key(|t| (t.order_ts, t.seq));
            let mut fast = items;
            sort_timed(&mut fast);
            proptest::prop_assert_eq!(fast, stable);
        }
    }

    #[test]
    fn codes_round_trip() {
        for c in 1..=7 {
            assert_eq!(EventKind::from_code(c).unwrap().code() as i64, c);
        }
        assert!(EventKind::from_code(0).is_none());
        assert!(EventKind::from_code(8).is_none());
        assert_eq!(Side::from_code(1), Some(Side::Buy));
        assert_eq!(Side::from_code(-1), Some(Side::Sell));
        assert_eq!(Side::from_code(0), None);
    }

    #[test]
    fn instrument_routes_are_stable_and_spread() {
        let a = InstrumentId::new("AAPL").unwrap();
        assert_eq!(a.route(), InstrumentId::new("AAPL").unwrap().route());
        let buckets: std::collections::HashSet<u64> =
            (0..100).map(|i| InstrumentId::new(&format!("S{i}")).unwrap().route() % 2).collect();
        assert_eq!(buckets.len(), 2);
        assert!(InstrumentId::new("A B").is_err());
    }

    #[test]
    fn seq_orders_by_source_then_position() {
        assert!(make_seq(0, 5) < make_seq(0, 6));
        assert!(make_seq(0, 1 << 39) < make_seq(1, 0));
    }
}

/// Appends `text` escaped for use inside a JSON string (quotes, backslashes and control characters).
pub fn push_json_escaped(text: &str, out: &mut String) {
    if !text.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod json_tests {
    #[test]
    fn escaped_symbols_parse_back() {
        for text in ["PLAIN", "A\\B", "Q\"T", "tab\there", "\u{1}x"] {
            let mut s = String::from("\"");
            super::push_json_escaped(text, &mut s);
            s.push('"');
            let back: String = serde_json::from_str(&s).unwrap();
            assert_eq!(back, text);
        }
    }
}
