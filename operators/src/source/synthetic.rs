//! The `SyntheticSource` operator: the synthetic market ([`crate::generator`]) as a dataflow source.

use super::reader::BoundedOutOfOrderness;
use crate::event::{make_seq, LobEvent, Timed};
use crate::generator::{AnomalyLabel, Disorder, Market, MarketSpec};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};

/// Options of [`synthetic_source`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyntheticSpec {
    /// The market.
    pub market: MarketSpec,
    /// Out-of-orderness bound of the watermark, in ns.
    pub bound_ns: u64,
    /// Events are shuffled within this bound (keep it at most `bound_ns` for no late events).
    pub disorder_ns: u64,
    /// Fraction of events delayed by `late_delay_ns` (late when that exceeds the bound).
    pub late_fraction: f64,
    /// Delay of the late events, in ns.
    pub late_delay_ns: u64,
    /// Events per activation.
    pub batch: usize,
    /// Pace event time to the wall clock at this speed-up (`None`: as fast as possible).
    pub realtime_speed: Option<f64>,
    /// With pacing: after this much wall time without events, the watermark follows the clock.
    pub idle_timeout: Duration,
}

impl SyntheticSpec {
    /// An unpaced, in-order source for a market.
    pub fn new(market: MarketSpec, bound_ns: u64) -> Self {
        SyntheticSpec {
            market,
            bound_ns,
            disorder_ns: 0,
            late_fraction: 0.0,
            late_delay_ns: 0,
            batch: 4096,
            realtime_speed: None,
            idle_timeout: Duration::from_secs(1),
        }
    }
}

/// Labels of the episodes the source injected, shared with the caller.
pub type SharedLabels = Arc<Mutex<Vec<AnomalyLabel>>>;

/// Generates the synthetic market on every worker: worker `w` simulates the instruments `i` with
/// `i % peers == w`, so each instrument's events are identical whatever the number of workers.
///
/// # Examples
/// ```
/// use lobsentry_operators::generator::MarketSpec;
/// use lobsentry_operators::source::{synthetic_source, SyntheticSpec};
/// use lobsentry_operators::testing::captured;
/// use timely::dataflow::operators::Capture;
/// let market = MarketSpec { instruments: 2, events: Some(500), ..MarketSpec::default() };
/// let rx = timely::example(move |scope| synthetic_source(scope, SyntheticSpec::new(market, 0), None).capture());
/// assert_eq!(captured(rx).into_iter().count(), 500);
/// ```
pub fn synthetic_source<'scope>(
    scope: Scope<'scope, u64>,
    spec: SyntheticSpec,
    labels: Option<SharedLabels>,
) -> StreamVec<'scope, u64, Timed<LobEvent>> {
    let (index, peers) = (scope.index(), scope.peers());
    let activator_scope = scope;
    source(scope, "SyntheticSource", move |cap, info| {
        let activator = activator_scope.activator_for(info.address);
        let market = Market::subset(&spec.market, |i| i % peers == index);
        let seed = spec.market.seed.wrapping_add(index as u64);
        let mut events = Disorder::new(market, seed, spec.disorder_ns, spec.late_fraction, spec.late_delay_ns);
        let mut next = events.next();
        let mut watermark = BoundedOutOfOrderness::new(spec.bound_ns);
        let mut cap = Some(cap);
        let mut counter = 0u64;
        let started = Instant::now();
        let mut last_event_at = Instant::now();
        let mut batch = Vec::with_capacity(spec.batch);
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            let due = spec
                .realtime_speed
                .map(|speed| spec.market.start_ns + (started.elapsed().as_nanos() as f64 * speed) as u64);
            while batch.len() < spec.batch {
                match next {
                    Some(ev) if due.is_none_or(|d| ev.ts_ns <= d) => {}
                    _ => break,
                }
                let Some(event) = std::mem::replace(&mut next, events.next()) else { break };
                let order_ts = watermark.observe(event.ts_ns);
                counter += 1;
                batch.push(Timed { order_ts, seq: make_seq(index as u32, counter), event });
            }
            if !batch.is_empty() {
                last_event_at = Instant::now();
                output.session(&*c).give_container(&mut batch);
                batch.clear();
            } else if let Some(d) = due {
                // Idle: let the watermark follow the clock so windows still close.
                if last_event_at.elapsed() >= spec.idle_timeout {
                    watermark.advance_to(d.saturating_sub(spec.idle_timeout.as_nanos() as u64));
                }
            }
            if let Some(labels) = &labels {
                let done = events.inner_mut().take_labels();
                if !done.is_empty() {
                    if let Ok(mut l) = labels.lock() {
                        l.extend(done);
                    }
                }
            }
            if next.is_none() {
                cap = None;
                return;
            }
            let wm = watermark.watermark();
            if wm > *c.time() {
                c.downgrade(&wm);
            }
            match spec.realtime_speed {
                Some(_) => activator.activate_after(Duration::from_millis(5)),
                None => activator.activate(),
            }
        }
    })
}
