//! The `KafkaSource` operator: reads LOB events from a Kafka topic with `rdkafka`.
//!
//! * Partition `p` of the topic is owned by worker `p % peers` (static `assign`, no consumer-group
//!   rebalance), in every process of a cluster.
//! * Each partition has its own bounded-out-of-orderness watermark; the source's watermark (its
//!   capability) is the minimum over the partitions that are not idle. A partition is idle only when
//!   it has nothing to read: no message for [`KafkaSourceSpec::idle_timeout`] *and* the broker's high
//!   watermark of the partition is at or before its read position (asked once the partition has
//!   been silent that long, then again every idle timeout while it stays silent; the larger of the
//!   end offset the broker lists and the high watermark its last fetch response carried, because
//!   tansu 0.6 lists the base offset of the last record batch plus one). A partition with a
//!   backlog therefore always holds the watermark back, however long the source did not poll (flow
//!   control, a checkpoint barrier, librdkafka serving other partitions first), so a topic read
//!   from a backlog gives the same windows every run. An idle partition that delivers again holds
//!   the watermark back again; its records older than the watermark are late downstream.
//! * One activation reads at most [`KafkaSourceSpec::batch`] events (not messages: a message may
//!   hold many lines), so flow control bounds what is in flight by events.
//! * Payloads are JSON lines (or interchange CSV lines): one event per line, one or several lines per
//!   message (`lobsentry produce --lines-per-message`). A line that does not decode goes to the error
//!   stream with its partition, offset and line number, whole.
//! * With [`crate::checkpoint`] barriers, the source emits only records ordered before the next
//!   barrier, holds the rest, and checkpoints its offsets, watermarks and held records. Offsets are
//!   committed to Kafka (the consumer group in [`KafkaSourceSpec::group_id`]) once a checkpoint is
//!   complete.
//! * [`KafkaSourceSpec::stop_at_end`] makes it bounded: it reads up to the end offsets found at start
//!   and then finishes (replays, tests, benchmarks).

use super::decode::{decode_csv_line, decode_json_line, Format};
use super::reader::{BoundedOutOfOrderness, Rejected};
use crate::checkpoint::{decode, encode, Barrier, StateRegistry};
use crate::event::{make_seq, LobEvent, Timed};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

/// Counters a Kafka source updates (shared by the workers of a process).
#[derive(Debug, Default)]
pub struct KafkaSourceCounters {
    /// Messages consumed.
    pub messages: AtomicU64,
    /// Consumer errors (broker down, transport), each retried by librdkafka.
    pub errors: AtomicU64,
    /// Offset commits that failed (the checkpoint itself is unaffected).
    pub commit_errors: AtomicU64,
}

/// Options of [`kafka_source`].
#[derive(Clone, Debug)]
pub struct KafkaSourceSpec {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The input topic.
    pub topic: String,
    /// Its partition count (see [`partition_count`]).
    pub partitions: u32,
    /// Payload format: [`Format::JsonLines`] or [`Format::Csv`].
    pub format: Format,
    /// Out-of-orderness bound of each partition's watermark, in ns.
    pub bound_ns: u64,
    /// A partition silent this long stops holding the watermark back.
    pub idle_timeout: Duration,
    /// Read up to the end offsets found at start, then finish.
    pub stop_at_end: bool,
    /// Consumer group offsets are committed to (no group join: partitions are assigned).
    pub group_id: String,
    /// Extra librdkafka properties.
    pub properties: Vec<(String, String)>,
    /// Events (lines) per activation, and at most as many messages.
    pub batch: usize,
    /// Flow control: stop reading while the dataflow lags this many batches behind this source.
    pub max_batches_ahead: usize,
    /// Source index in `seq` (events are ordered by `(order_ts, seq)`).
    pub source_index: u32,
    /// Counters.
    pub counters: Arc<KafkaSourceCounters>,
}

impl KafkaSourceSpec {
    /// Defaults for a topic.
    pub fn new(brokers: &str, topic: &str, partitions: u32) -> Self {
        KafkaSourceSpec {
            brokers: brokers.into(),
            topic: topic.into(),
            partitions,
            format: Format::JsonLines,
            bound_ns: 0,
            idle_timeout: Duration::from_secs(5),
            stop_at_end: false,
            group_id: "lobsentry".into(),
            properties: Vec::new(),
            batch: 1 << 14,
            max_batches_ahead: 8,
            source_index: 0,
            counters: Arc::default(),
        }
    }

    /// The partitions worker `index` of `peers` owns.
    ///
    /// ```
    /// # use lobsentry_operators::source::kafka::KafkaSourceSpec;
    /// let spec = KafkaSourceSpec::new("localhost:9092", "lob", 5);
    /// assert_eq!(spec.owned(1, 2), vec![1, 3]);
    /// assert_eq!(spec.owned(0, 2), vec![0, 2, 4]);
    /// ```
    pub fn owned(&self, index: usize, peers: usize) -> Vec<i32> {
        (0..self.partitions as i32).filter(|p| *p as usize % peers == index).collect()
    }

    /// The consumer configuration.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "50")
            .set("queued.max.messages.kbytes", "65536");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

/// The partition count of `topic`, asking the brokers up to `attempts` times (`backoff` apart):
/// an unreachable broker or a missing topic is a clear error.
pub fn partition_count(
    config: &ClientConfig,
    topic: &str,
    attempts: u32,
    timeout: Duration,
    backoff: Duration,
) -> Result<u32, String> {
    let consumer: BaseConsumer = config.create().map_err(|e| format!("Kafka client: {e}"))?;
    let servers = config.get("bootstrap.servers").unwrap_or("?").to_string();
    let mut last = String::new();
    for attempt in 1..=attempts.max(1) {
        match consumer.fetch_metadata(Some(topic), timeout) {
            Ok(md) => match md.topics().iter().find(|t| t.name() == topic) {
                Some(t) if t.error().is_none() && !t.partitions().is_empty() => return Ok(t.partitions().len() as u32),
                Some(t) => last = format!("topic {topic:?}: {:?}", t.error()),
                None => last = format!("topic {topic:?} not found"),
            },
            Err(e) => last = e.to_string(),
        }
        if attempt < attempts {
            std::thread::sleep(backoff);
        }
    }
    Err(format!("cannot reach Kafka at {servers} for topic {topic:?} after {attempts} attempts: {last}"))
}

/// One partition's read position and watermark.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct PartitionState {
    partition: i32,
    /// The next offset to read (`-1`: the beginning).
    next: i64,
    watermark: BoundedOutOfOrderness,
    #[serde(skip)]
    end: Option<i64>,
    /// `end` was raised once to the high watermark fetches reported (see [`SourceState::extend_ends`]).
    #[serde(skip)]
    extended: bool,
    #[serde(skip)]
    last_message: Option<Instant>,
    /// Silent for the idle timeout with nothing left to read at the last look (see the module
    /// documentation).
    #[serde(skip)]
    idle: bool,
}

/// Bits of an event's position that number the lines of its message (`seq` is (offset, line)); a
/// message's lines past [`MAX_LINE`] share the last number (and keep their order by arrival).
const LINE_BITS: u32 = 10;
const MAX_LINE: u64 = (1 << LINE_BITS) - 1;

/// A bounded partition is done once it has reached its end offset and then been quiet this long:
/// some Kafka-compatible brokers report end offsets that lag behind what a fetch returns.
const DRAIN: Duration = Duration::from_millis(500);

impl PartitionState {
    fn done(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end) && self.last_message.is_some_and(|t| t.elapsed() >= DRAIN)
    }
}

/// What the source checkpoints.
#[derive(Debug, Default, Serialize, Deserialize)]
struct SourceState {
    partitions: Vec<PartitionState>,
    /// Records ordered at or after the barrier, waiting for it to pass.
    held: Vec<Timed<LobEvent>>,
    /// The capability's time when the state was saved.
    frontier: u64,
    /// Offsets of the last snapshot, committed once its checkpoint is complete.
    #[serde(skip)]
    to_commit: Option<(u64, Vec<(i32, i64)>)>,
}

impl SourceState {
    /// The source watermark: the minimum over busy partitions; when every partition is idle, the
    /// largest; `None` when all are done.
    fn watermark(&self) -> Option<u64> {
        let live = || self.partitions.iter().filter(|p| !p.done());
        let busy = live().filter(|p| !p.idle);
        busy.map(|p| p.watermark.watermark()).min().or_else(|| live().map(|p| p.watermark.watermark()).max())
    }

    /// Bounded partitions that reached their end offset (listed at start) read on, once, up to the
    /// high watermark their fetch responses carried then (`fetched`): tansu 0.6 lists the base offset
    /// of a partition's last record batch plus one, not its end.
    fn extend_ends(&mut self, mut fetched: impl FnMut(i32) -> i64) {
        for p in self.partitions.iter_mut().filter(|p| !p.extended) {
            if let Some(end) = p.end.filter(|&end| p.next >= end) {
                p.end = Some(end.max(fetched(p.partition)));
                p.extended = true;
            }
        }
    }

    /// Marks idle the partitions silent for `idle` whose high watermark (`high`, asked of the broker)
    /// is at or before their read position; a silent partition with a backlog, or whose high
    /// watermark cannot be had, restarts its silence instead (it keeps holding the watermark back).
    /// (`low`, `high`: the partition's offsets; a position before the start reads from `low`.)
    fn update_idle(&mut self, idle: Duration, mut offsets: impl FnMut(i32) -> Option<(i64, i64)>) {
        for p in self.partitions.iter_mut().filter(|p| !p.idle && !p.done()) {
            if p.last_message.is_some_and(|t| t.elapsed() >= idle) {
                match offsets(p.partition) {
                    Some((low, high)) if p.next.max(low) >= high => p.idle = true,
                    _ => p.last_message = Some(Instant::now()),
                }
            }
        }
    }
}

/// Reads a Kafka topic into `(events, rejected records)`; see the module documentation. With a
/// `state` registry the source checkpoints its offsets and follows the registry's barrier.
///
/// Fails when the consumer cannot be created or assigned (bad configuration); an unreachable broker
/// is not an error here: librdkafka reconnects, errors are counted and the source waits.
#[allow(clippy::type_complexity)]
pub fn kafka_source<'scope>(
    scope: Scope<'scope, u64>,
    spec: KafkaSourceSpec,
    state_registry: Option<StateRegistry>,
    probe: Option<ProbeHandle<u64>>,
) -> Result<(StreamVec<'scope, u64, Timed<LobEvent>>, StreamVec<'scope, u64, Rejected>), KafkaError> {
    let mut builder = OperatorBuilder::new("KafkaSource".to_owned(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let (events_out, events) = builder.new_output();
    let (errors_out, errors) = builder.new_output();
    let mut events_out = OutputBuilder::from(events_out);
    let mut errors_out = OutputBuilder::from(errors_out);
    let owned = spec.owned(scope.index(), scope.peers());
    let consumer: BaseConsumer = spec.client_config().create()?;

    let state: Rc<RefCell<SourceState>> = Rc::new(RefCell::new(SourceState {
        partitions: owned
            .iter()
            .map(|&partition| PartitionState {
                partition,
                next: -1,
                watermark: BoundedOutOfOrderness::new(spec.bound_ns),
                end: None,
                last_message: None,
                idle: false,
                extended: false,
            })
            .collect(),
        ..Default::default()
    }));
    let barrier: Rc<Barrier> =
        state_registry.as_ref().map(|r| r.barrier()).unwrap_or_else(|| Rc::new(Barrier::disabled()));
    if let Some(registry) = &state_registry {
        let saved = state.clone();
        let saved_barrier = barrier.clone();
        let restored = registry.register("kafka-source", move || {
            let mut s = saved.borrow_mut();
            s.to_commit = Some((saved_barrier.next(), s.partitions.iter().map(|p| (p.partition, p.next)).collect()));
            encode(&*s)
        });
        if let Some(bytes) = restored {
            let r: SourceState = decode(&bytes).map_err(|e| KafkaError::Subscription(format!("checkpoint: {e}")))?;
            let ours: Vec<i32> = r.partitions.iter().map(|p| p.partition).collect();
            if ours != owned {
                return Err(KafkaError::Subscription(format!(
                    "checkpoint: worker {} owned partitions {ours:?}, now {owned:?} (same workers and partitions needed)",
                    scope.index()
                )));
            }
            *state.borrow_mut() = r;
        }
    }
    let mut tpl = TopicPartitionList::new();
    for p in state.borrow_mut().partitions.iter_mut() {
        // Idleness counts from the start: a partition that never delivers stops holding the
        // watermark back after the idle timeout.
        p.last_message = Some(Instant::now());
        if spec.stop_at_end {
            let (low, high) = consumer.fetch_watermarks(&spec.topic, p.partition, Duration::from_secs(30))?;
            p.end = Some(high);
            if p.next < 0 {
                p.next = low; // an empty partition is done at once
            }
        }
        let offset = if p.next >= 0 { Offset::Offset(p.next) } else { Offset::Beginning };
        tpl.add_partition_offset(&spec.topic, p.partition, offset)?;
    }
    consumer.assign(&tpl)?;

    builder.build(move |mut caps| {
        let mut errors_cap: Option<Capability<u64>> = caps.pop();
        let mut events_cap: Option<Capability<u64>> = caps.pop();
        let restored_frontier = state.borrow().frontier;
        if restored_frontier > 0 {
            for cap in [&mut events_cap, &mut errors_cap].into_iter().flatten() {
                cap.downgrade(&restored_frontier);
            }
        }
        let mut batch: Vec<Timed<LobEvent>> = Vec::new();
        let mut rejected: Vec<Rejected> = Vec::new();
        let mut flow = super::FlowControl::new(probe, spec.max_batches_ahead);
        let origin_prefix = spec.topic.clone();
        let topic_c = std::ffi::CString::new(spec.topic.clone()).unwrap_or_default();
        move |_frontiers| {
            let (Some(ev_cap), Some(err_cap)) = (events_cap.as_mut(), errors_cap.as_mut()) else { return };
            let mut st = state.borrow_mut();
            let next_barrier = barrier.next();
            // A completed checkpoint: commit the offsets it recorded.
            if let Some((b, offsets)) = st.to_commit.take() {
                if next_barrier > b {
                    let mut tpl = TopicPartitionList::new();
                    for (p, o) in &offsets {
                        if *o >= 0 {
                            let _ = tpl.add_partition_offset(&spec.topic, *p, Offset::Offset(*o));
                        }
                    }
                    if tpl.count() > 0 && consumer.commit(&tpl, CommitMode::Async).is_err() {
                        spec.counters.commit_errors.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    st.to_commit = Some((b, offsets));
                }
            }
            // Held records the barrier now lets through.
            batch.extend(st.held.extract_if(.., |t| t.order_ts < next_barrier));
            // Idleness: a silent partition is asked for its high watermark (a broker round trip, at
            // most once per idle timeout and partition while it stays silent).
            st.update_idle(spec.idle_timeout, |partition| {
                let (low, listed) = consumer.fetch_watermarks(&spec.topic, partition, Duration::from_secs(1)).ok()?;
                Some((low, listed.max(fetched_high(&consumer, &topic_c, partition))))
            });
            st.extend_ends(|partition| fetched_high(&consumer, &topic_c, partition));
            let cap_time = *ev_cap.time();
            let throttled = flow.throttled();
            let at_barrier = st.watermark().is_some_and(|w| w >= next_barrier);
            let mut polled = 0;
            if !throttled && !at_barrier {
                // One clock read per activation, not per message (a message may hold one event).
                let now = Instant::now();
                while polled < spec.batch && batch.len() < spec.batch {
                    match consumer.poll(Duration::ZERO) {
                        None => break,
                        Some(Err(_)) => {
                            spec.counters.errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Some(Ok(msg)) => {
                            polled += 1;
                            let (partition, offset) = (msg.partition(), msg.offset());
                            let st = &mut *st;
                            let Some(p) = st.partitions.iter_mut().find(|p| p.partition == partition) else { continue };
                            if offset < p.next {
                                continue; // already read (a re-fetch after a reconnect)
                            }
                            p.next = offset + 1;
                            p.last_message = Some(now);
                            p.idle = false;
                            let payload = msg.payload().unwrap_or(&[]);
                            // A message holds one event or several, one per line (JSON lines / CSV).
                            let lines = payload.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
                            let lines = lines.filter(|l| !l.iter().all(|b| b.is_ascii_whitespace()));
                            let mut read = 0;
                            for (index, line) in (0u64..).zip(lines) {
                                read += 1;
                                let decoded = match spec.format {
                                    Format::Csv => decode_csv_line(line),
                                    _ => decode_json_line(line),
                                };
                                match decoded {
                                    Ok(event) => {
                                        let order_ts = p.watermark.observe(event.ts_ns).max(cap_time);
                                        let position = ((offset as u64) << LINE_BITS) | index.min(MAX_LINE);
                                        let timed = Timed {
                                            order_ts,
                                            seq: make_seq(spec.source_index * 4096 + partition as u32, position),
                                            event,
                                        };
                                        if order_ts >= next_barrier {
                                            st.held.push(timed);
                                        } else {
                                            batch.push(timed);
                                        }
                                    }
                                    Err(e) => {
                                        let reason = if index == 0 && !payload.contains(&b'\n') {
                                            e.to_string()
                                        } else {
                                            format!("line {}: {e}", index + 1)
                                        };
                                        rejected.push(reject(&origin_prefix, partition, offset, &reason, line));
                                    }
                                }
                            }
                            if read == 0 {
                                rejected.push(reject(&origin_prefix, partition, offset, "empty message", payload));
                            }
                        }
                    }
                    // Records past the barrier wait in the checkpoint: stop reading as soon as the
                    // watermark reaches it, so a checkpoint holds a few messages, not a whole poll.
                    if !st.held.is_empty() && polled % 16 == 0 && st.watermark().is_some_and(|w| w >= next_barrier) {
                        break;
                    }
                }
            }
            spec.counters.messages.fetch_add(polled as u64, Ordering::Relaxed);
            if let Some(last) = batch.iter().map(|t| t.order_ts).max() {
                barrier.note_reached(last.saturating_add(1));
            }
            if !batch.is_empty() {
                events_out.activate().session(&*ev_cap).give_container(&mut batch);
                batch.clear();
            }
            if !rejected.is_empty() {
                errors_out.activate().session(&*err_cap).give_container(&mut rejected);
                rejected.clear();
            }
            let wm = st.watermark();
            barrier.report_watermark(wm.unwrap_or(u64::MAX));
            match wm {
                None if st.held.is_empty() => {
                    events_cap = None;
                    errors_cap = None;
                }
                wm => {
                    let target = wm.unwrap_or(u64::MAX).min(next_barrier);
                    if target > *ev_cap.time() {
                        ev_cap.downgrade(&target);
                        err_cap.downgrade(&target);
                    }
                    st.frontier = *ev_cap.time();
                    barrier.note_reached(st.frontier);
                    if polled > 0 {
                        flow.sent(*ev_cap.time());
                        activator.activate();
                    } else {
                        activator.activate_after(Duration::from_millis(5));
                    }
                }
            }
        }
    });
    Ok((events, errors))
}

/// The high watermark of `partition` that the consumer's last fetch response carried (librdkafka's
/// cache, no broker round trip); `-1` before any fetch.
fn fetched_high(consumer: &BaseConsumer, topic: &std::ffi::CStr, partition: i32) -> i64 {
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, `topic` is NUL-terminated and
    // outlives the call, and librdkafka only writes the two offsets it is given
    // (`rd_kafka_get_watermark_offsets`, which the rdkafka crate does not wrap).
    #[allow(unsafe_code)]
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    if err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        high
    } else {
        -1
    }
}

fn reject(topic: &str, partition: i32, offset: i64, reason: &str, payload: &[u8]) -> Rejected {
    Rejected {
        origin: format!("{topic}/{partition}"),
        line: offset.max(0) as u64,
        reason: reason.to_string(),
        text: String::from_utf8_lossy(&payload[..payload.len().min(200)]).into_owned(),
        raw: Some(payload.to_vec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(partition: i32, next: i64, max_ts: u64, silent_for: Duration) -> PartitionState {
        let mut watermark = BoundedOutOfOrderness::new(0);
        watermark.observe(max_ts);
        PartitionState {
            partition,
            next,
            watermark,
            end: None,
            last_message: Instant::now().checked_sub(silent_for),
            idle: false,
            extended: false,
        }
    }

    /// A bounded partition at its listed end reads on to the high watermark its fetches reported
    /// (once: a topic still being written to does not keep a bounded read going), and is done only
    /// there; a partition short of its end is left alone.
    #[test]
    fn a_bounded_partition_reads_to_the_end_its_fetches_reported() {
        let quiet = DRAIN + Duration::from_millis(10);
        let mut st = SourceState {
            partitions: vec![partition(0, 8, 1_000, quiet), partition(1, 3, 500, quiet)],
            ..Default::default()
        };
        st.partitions[0].end = Some(8); // listed 8, fetches say 20
        st.partitions[1].end = Some(9);
        assert!(st.partitions[0].done());
        st.extend_ends(|p| if p == 0 { 20 } else { 30 });
        assert_eq!((st.partitions[0].end, st.partitions[1].end), (Some(20), Some(9)));
        assert!(!st.partitions[0].done(), "records 8..20 are still to be read");
        assert_eq!(st.watermark(), Some(500));
        st.partitions[0].next = 20;
        st.extend_ends(|_| 40);
        assert_eq!(st.partitions[0].end, Some(20), "extended once only");
        assert!(st.partitions[0].done());
        // No fetch yet (-1): the listed end stands.
        st.partitions[1].next = 9;
        st.extend_ends(|_| -1);
        assert!(st.partitions[1].done() && st.watermark().is_none());
    }

    /// A silent partition with a backlog holds the watermark back however long it was silent; one
    /// that has read everything stops holding it back; one that delivers again holds it back again;
    /// an unanswered offset look-up is taken as a backlog.
    #[test]
    fn only_a_partition_with_nothing_to_read_is_idle() {
        let idle = Duration::from_millis(100);
        let long = Duration::from_secs(60);
        let mut st = SourceState {
            partitions: vec![partition(0, 10, 1_000, Duration::ZERO), partition(1, 5, 200, long)],
            ..Default::default()
        };
        // Partition 1 is far behind and silent for a minute, but the broker holds offsets 5..50.
        st.update_idle(idle, |_| Some((0, 50)));
        assert_eq!(st.watermark(), Some(200), "the backlog holds the watermark back");
        assert!(!st.partitions[1].idle);
        // Its silence restarted: no new look-up until it has been silent for the timeout again.
        let mut asked = 0;
        st.update_idle(idle, |_| {
            asked += 1;
            Some((0, 5))
        });
        assert_eq!((asked, st.watermark()), (0, Some(200)));
        // Silent again, and now caught up: idle.
        st.partitions[1].last_message = Instant::now().checked_sub(long);
        st.update_idle(idle, |_| Some((0, 5)));
        assert_eq!(st.watermark(), Some(1_000), "a caught-up silent partition stops holding it back");
        // A partition never read (next = -1) is caught up when it is empty (low = high).
        let mut fresh = SourceState {
            partitions: vec![partition(0, 10, 1_000, Duration::ZERO), partition(1, -1, 0, long)],
            ..Default::default()
        };
        fresh.update_idle(idle, |_| Some((7, 7)));
        assert_eq!(fresh.watermark(), Some(1_000));
        // The broker does not answer: not idle.
        let mut unknown = SourceState {
            partitions: vec![partition(0, 10, 1_000, Duration::ZERO), partition(1, 5, 200, long)],
            ..Default::default()
        };
        unknown.update_idle(idle, |_| None);
        assert_eq!(unknown.watermark(), Some(200));
    }
}
