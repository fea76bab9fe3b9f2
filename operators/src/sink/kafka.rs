//! A Kafka writer for alerts, scores and dead letters: an idempotent `rdkafka` producer whose failed
//! deliveries are retried with exponential backoff and counted, never dropped.
//!
//! librdkafka already retries inside `message.timeout.ms`; a message that still fails (broker gone
//! for longer) comes back through the delivery report and is queued again here, so a broker outage
//! delays output but loses none of it. [`KafkaWriter::flush`] waits until everything is acknowledged
//! (checkpoints call it before recording the topic's end offsets).
//!
//! Errors are classified: a full local queue waits; a message the broker or librdkafka refuses for
//! good (too large, unknown topic, not authorized, invalid) is taken out of the queue, counted
//! (`refused`) and handed to the writer's [`KafkaWriter::on_refused`] callback with the reason, so
//! one bad record never blocks the ones behind it. A writer made with
//! [`KafkaWriterSpec::truncate_oversized`] (the dead-letter topic) cuts a value over the size limit
//! instead, keeping its first bytes, and says so in `truncated` / `original-bytes` headers.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Counters of a writer (shared by the writers of a process).
#[derive(Debug, Default)]
pub struct KafkaSinkCounters {
    /// Messages acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Deliveries that failed and were queued again.
    pub retries: AtomicU64,
    /// Messages skipped because an earlier run already wrote them (restart de-duplication).
    pub deduplicated: AtomicU64,
    /// Messages refused for good (too large, unknown topic, not authorized), never retried.
    pub refused: AtomicU64,
    /// Dead letters cut to the size limit.
    pub truncated: AtomicU64,
}

/// What is done with a message refused for good: `(topic, key, value, reason)`.
pub type OnRefused = Arc<dyn Fn(&str, &[u8], &[u8], &str) + Send + Sync>;

/// Headroom kept under the size limit for the record's framing (a record batch header, lengths).
const FRAMING_BYTES: usize = 512;

/// Whether a produce error is for good (retrying the same message cannot succeed), as opposed to a
/// transient one (a broker down, a leader moving, a timeout) that a retry outlives.
///
/// ```
/// use lobsentry_operators::sink::kafka::is_permanent;
/// use rdkafka::types::RDKafkaErrorCode;
/// assert!(is_permanent(RDKafkaErrorCode::MessageSizeTooLarge));
/// assert!(is_permanent(RDKafkaErrorCode::TopicAuthorizationFailed));
/// assert!(!is_permanent(RDKafkaErrorCode::QueueFull));
/// assert!(!is_permanent(RDKafkaErrorCode::MessageTimedOut));
/// ```
pub fn is_permanent(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        code,
        C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::InvalidMessage
            | C::InvalidRecord
            | C::UnknownTopic
            | C::UnknownPartition
            | C::InvalidTopic
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication
            | C::UnsupportedForMessageFormat
            | C::MessageBatchTooLarge
            | C::InvalidRequiredAcks
            | C::PolicyViolation
    )
}

/// One message, kept until the broker acknowledges it.
#[derive(Clone, Debug)]
struct Outgoing {
    key: Vec<u8>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
    attempts: u32,
    not_before: Instant,
}

struct Ctx {
    failed: Arc<Mutex<Vec<Outgoing>>>,
    refused: Arc<Mutex<Vec<(Outgoing, String)>>>,
    counters: Arc<KafkaSinkCounters>,
}

impl ClientContext for Ctx {}

impl ProducerContext for Ctx {
    type DeliveryOpaque = Box<Outgoing>;
    fn delivery(&self, result: &DeliveryResult<'_>, msg: Box<Outgoing>) {
        match result {
            Ok(_) => {
                self.counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) if e.rdkafka_error_code().is_some_and(is_permanent) => {
                if let Ok(mut r) = self.refused.lock() {
                    r.push((*msg, e.to_string()));
                }
            }
            Err(_) => {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut f) = self.failed.lock() {
                    f.push(*msg);
                }
            }
        }
    }
}

/// Options of a [`KafkaWriter`].
#[derive(Clone, Debug)]
pub struct KafkaWriterSpec {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// The topic written.
    pub topic: String,
    /// librdkafka's own retry window per attempt (`message.timeout.ms`).
    pub message_timeout: Duration,
    /// First backoff of a failed delivery (doubled per attempt, at most 30 s).
    pub backoff: Duration,
    /// Extra librdkafka properties.
    pub properties: Vec<(String, String)>,
    /// Cut a value over the size limit (keeping its first bytes, with `truncated` and
    /// `original-bytes` headers) instead of refusing it: for the dead-letter topic, whose records
    /// are whatever arrived.
    pub truncate_oversized: bool,
}

impl KafkaWriterSpec {
    /// Defaults for a topic.
    pub fn new(brokers: &str, topic: &str) -> Self {
        KafkaWriterSpec {
            brokers: brokers.into(),
            topic: topic.into(),
            message_timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(200),
            properties: Vec::new(),
            truncate_oversized: false,
        }
    }

    /// A client configuration with the brokers and the extra properties (for metadata look-ups and
    /// reading the topic back).
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers).set("allow.auto.create.topics", "false");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }

    /// The largest record this producer sends: librdkafka's `message.max.bytes` (1,000,000 unless
    /// set in the properties). Brokers accept 1,048,588 by default.
    pub fn max_message_bytes(&self) -> usize {
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == "message.max.bytes")
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(1_000_000)
    }
}

/// An idempotent producer for one topic with a retry queue.
pub struct KafkaWriter {
    producer: BaseProducer<Ctx>,
    spec: KafkaWriterSpec,
    queue: VecDeque<Outgoing>,
    failed: Arc<Mutex<Vec<Outgoing>>>,
    refused: Arc<Mutex<Vec<(Outgoing, String)>>>,
    on_refused: Option<OnRefused>,
    counters: Arc<KafkaSinkCounters>,
    skip: HashSet<Vec<u8>>,
}

impl std::fmt::Debug for KafkaWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaWriter").field("topic", &self.spec.topic).field("queued", &self.queue.len()).finish()
    }
}

impl KafkaWriter {
    /// A writer (no connection is made until the first message).
    pub fn new(spec: KafkaWriterSpec, counters: Arc<KafkaSinkCounters>) -> Result<KafkaWriter, String> {
        let failed: Arc<Mutex<Vec<Outgoing>>> = Arc::default();
        let refused: Arc<Mutex<Vec<(Outgoing, String)>>> = Arc::default();
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &spec.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", spec.message_timeout.as_millis().to_string())
            .set("queue.buffering.max.messages", "1000000");
        for (k, v) in &spec.properties {
            c.set(k, v);
        }
        let producer = c
            .create_with_context(Ctx { failed: failed.clone(), refused: refused.clone(), counters: counters.clone() })
            .map_err(|e| format!("Kafka producer for {:?}: {e}", spec.topic))?;
        Ok(KafkaWriter {
            producer,
            spec,
            queue: VecDeque::new(),
            failed,
            refused,
            on_refused: None,
            counters,
            skip: HashSet::new(),
        })
    }

    /// What to do with a message refused for good (it is counted in any case).
    pub fn on_refused(&mut self, f: OnRefused) {
        self.on_refused = Some(f);
    }

    /// Takes a message out for good: counted, and handed to the callback with the reason.
    fn refuse(&self, m: &Outgoing, reason: &str) {
        self.counters.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(f) = &self.on_refused {
            f(&self.spec.topic, &m.key, &m.value, reason);
        }
    }

    /// Message ids (the `id` header) an earlier run already wrote: messages with these ids are
    /// skipped, once each.
    pub fn skip_ids(&mut self, ids: HashSet<Vec<u8>>) {
        self.skip = ids;
    }

    /// Queues a message (`id`, when given, goes into the `id` header and is checked against
    /// [`KafkaWriter::skip_ids`]).
    pub fn send(&mut self, key: &[u8], value: Vec<u8>, id: Option<&[u8]>, mut headers: Vec<(String, Vec<u8>)>) {
        if let Some(id) = id {
            if self.skip.remove(id) {
                self.counters.deduplicated.fetch_add(1, Ordering::Relaxed);
                return;
            }
            headers.push(("id".into(), id.to_vec()));
        }
        let limit = self.spec.max_message_bytes().saturating_sub(FRAMING_BYTES);
        let size = |key: &[u8], value: &[u8], headers: &[(String, Vec<u8>)]| {
            key.len() + value.len() + headers.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
        };
        let mut value = value;
        if size(key, &value, &headers) > limit {
            let original = value.len();
            if !self.spec.truncate_oversized {
                let m = Outgoing { key: key.to_vec(), value, headers, attempts: 0, not_before: Instant::now() };
                self.refuse(&m, &format!("{original}-byte message over the {limit}-byte limit (message.max.bytes)"));
                return;
            }
            headers.push(("truncated".into(), b"true".to_vec()));
            headers.push(("original-bytes".into(), original.to_string().into_bytes()));
            let keep = limit.saturating_sub(size(key, &[], &headers));
            value.truncate(keep);
            self.counters.truncated.fetch_add(1, Ordering::Relaxed);
        }
        self.queue.push_back(Outgoing { key: key.to_vec(), value, headers, attempts: 0, not_before: Instant::now() });
        self.pump();
    }

    /// Hands queued messages to librdkafka, takes back failed ones (with backoff) and serves
    /// delivery reports. Never blocks.
    pub fn pump(&mut self) {
        let refused = self.refused.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();
        for (m, reason) in refused {
            self.refuse(&m, &reason);
        }
        let failed: Vec<Outgoing> = self.failed.lock().map(|mut f| std::mem::take(&mut *f)).unwrap_or_default();
        for mut m in failed {
            let backoff = self.spec.backoff.saturating_mul(1 << m.attempts.min(8)).min(Duration::from_secs(30));
            m.attempts += 1;
            m.not_before = Instant::now() + backoff;
            self.queue.push_back(m);
        }
        let now = Instant::now();
        let mut waiting = VecDeque::new();
        while let Some(m) = self.queue.pop_front() {
            if m.not_before > now {
                waiting.push_back(m);
                continue;
            }
            let mut headers = OwnedHeaders::new();
            for (k, v) in &m.headers {
                headers = headers.insert(Header { key: k, value: Some(v) });
            }
            let (key, value) = (m.key.clone(), m.value.clone());
            let record =
                BaseRecord::with_opaque_to(&self.spec.topic, Box::new(m)).key(&key).payload(&value).headers(headers);
            match self.producer.send(record) {
                Ok(()) => {}
                Err((e, record)) if e.rdkafka_error_code().is_some_and(is_permanent) => {
                    self.refuse(&record.delivery_opaque, &e.to_string());
                }
                Err((_, record)) => {
                    // Queue full (or another transient refusal): keep it and the rest for the next call.
                    waiting.push_back(*record.delivery_opaque);
                    waiting.extend(self.queue.drain(..));
                    break;
                }
            }
        }
        self.queue = waiting;
        self.producer.poll(Duration::ZERO);
    }

    /// Messages not yet acknowledged (queued here or in flight).
    pub fn pending(&self) -> usize {
        self.queue.len() + self.producer.in_flight_count().max(0) as usize
    }

    /// Waits until every message is acknowledged, up to `timeout`.
    pub fn flush(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump();
            let settled = |v: &Arc<Mutex<Vec<_>>>| v.lock().map(|f| f.is_empty()).unwrap_or(true);
            if self.pending() == 0 && self.failed.lock().map(|f| f.is_empty()).unwrap_or(true) && settled(&self.refused)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} messages to {:?} not acknowledged after {timeout:?}",
                    self.pending(),
                    self.spec.topic
                ));
            }
            self.producer.poll(Duration::from_millis(20));
        }
    }

    /// The topic's end offsets, per partition.
    pub fn end_offsets(&self, timeout: Duration) -> Result<Vec<(i32, i64)>, String> {
        let client = self.producer.client();
        let md = client.fetch_metadata(Some(&self.spec.topic), timeout).map_err(|e| e.to_string())?;
        let parts = md.topics().first().map(|t| t.partitions().len()).unwrap_or(0);
        (0..parts as i32)
            .map(|p| {
                client
                    .fetch_watermarks(&self.spec.topic, p, timeout)
                    .map(|(_, high)| (p, high))
                    .map_err(|e| e.to_string())
            })
            .collect()
    }
}

/// The `id` headers of the messages of `topic` from `from` (per partition) to its current end: what
/// an earlier run wrote after a checkpoint.
pub fn read_ids(spec: &KafkaWriterSpec, from: &[(i32, i64)], timeout: Duration) -> Result<HashSet<Vec<u8>>, String> {
    let topic = spec.topic.as_str();
    let consumer: BaseConsumer = spec
        .client_config()
        .set("group.id", "lobsentry-dedup")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    let mut ends = Vec::new();
    for &(p, offset) in from {
        let (_, high) = consumer.fetch_watermarks(topic, p, timeout).map_err(|e| e.to_string())?;
        tpl.add_partition_offset(topic, p, Offset::Offset(offset)).map_err(|e| e.to_string())?;
        if high > offset {
            ends.push((p, high));
        }
    }
    let mut ids = HashSet::new();
    if tpl.count() == 0 {
        return Ok(ids);
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    // Read past the reported end offsets and then until the topic has been quiet for a second: some
    // Kafka-compatible brokers report end offsets that lag behind what a fetch returns.
    let deadline = Instant::now() + timeout;
    let mut remaining: Vec<(i32, i64)> = ends;
    let mut last = Instant::now();
    while !remaining.is_empty() || last.elapsed() < Duration::from_secs(1) {
        if Instant::now() > deadline {
            return Err(format!("reading {topic:?} back timed out; partitions left: {remaining:?}"));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                last = Instant::now();
                if let Some(h) = m.headers() {
                    for h in h.iter() {
                        if h.key == "id" {
                            if let Some(v) = h.value {
                                ids.insert(v.to_vec());
                            }
                        }
                    }
                }
                let (p, o) = (m.partition(), m.offset());
                remaining.retain(|(rp, end)| !(*rp == p && o + 1 >= *end));
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => {}
        }
    }
    Ok(ids)
}
