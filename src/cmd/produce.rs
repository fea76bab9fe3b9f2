//! `lobsentry produce`: loads an event file (LOBSTER, interchange CSV or JSON lines) into a Kafka
//! topic, keyed (and so partitioned) by instrument, one event per message or up to
//! `--lines-per-message` events of one instrument per message (one per line), for demos and
//! benchmarks.

use crate::error::Error;
use clap::Args;
use lobsentry_operators::event::InstrumentId;
use lobsentry_operators::source::decode::{write_csv_line, write_json_line};
use lobsentry_operators::source::{FileReader, InputFile, ReaderSpec};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Event file (format from its name, as for `run --input`).
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Topic to write.
    #[arg(long, short = 't')]
    pub topic: String,
    /// bootstrap.servers.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub brokers: String,
    /// Events per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Message format: json-lines or csv.
    #[arg(long, default_value = "json-lines")]
    pub format: String,
    /// Stop after this many events (0 = the whole file).
    #[arg(long, default_value_t = 0)]
    pub limit: u64,
    /// Events of one instrument per message, one per line (1 to 1024); a message goes out when full,
    /// every 20 ms, and at the end.
    #[arg(long, default_value_t = 1)]
    pub lines_per_message: usize,
}

/// Runs `produce`.
pub fn run(args: ProduceArgs) -> Result<(), Error> {
    let csv = match args.format.as_str() {
        "json-lines" => false,
        "csv" => true,
        other => return Err(Error::Config(vec![format!("--format: {other:?} is neither json-lines nor csv")])),
    };
    if !(1..=1024).contains(&args.lines_per_message) {
        return Err(Error::Config(vec![format!("--lines-per-message: {} is not in 1..=1024", args.lines_per_message)]));
    }
    let input = InputFile::guess(&args.input).map_err(|e| Error::Config(vec![e]))?;
    let mut reader = FileReader::open(input, ReaderSpec::whole(0, 0)).map_err(|e| Error::Io(e.to_string()))?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576")
        .create()
        .map_err(|e| Error::Io(format!("Kafka producer: {e}")))?;
    let started = Instant::now();
    let (mut sent, mut rejected) = (0u64, 0u64);
    let (mut events, mut errors) = (Vec::new(), Vec::new());
    let mut line = String::new();
    // Per instrument: the lines of its next message and how many.
    let mut buffers: HashMap<InstrumentId, (String, usize)> = HashMap::new();
    let mut last_flush = Instant::now();
    'outer: while !reader.is_done() {
        reader.read_batch(4096, &mut events, &mut errors);
        rejected += errors.len() as u64;
        for r in errors.drain(..).take(5) {
            eprintln!("lobsentry produce: skipped {r}");
        }
        for timed in events.drain(..) {
            if timed.event.is_seed() {
                continue;
            }
            if args.limit > 0 && sent >= args.limit {
                break 'outer;
            }
            line.clear();
            if csv {
                write_csv_line(&timed.event, &mut line);
            } else {
                write_json_line(&timed.event, &mut line);
            }
            let instrument = timed.event.instrument;
            let pending = buffers.entry(instrument).or_default();
            if pending.1 > 0 {
                pending.0.push('\n');
            }
            pending.0.push_str(&line);
            pending.1 += 1;
            if pending.1 >= args.lines_per_message {
                send_buffer(&producer, &args.topic, &instrument, pending)?;
            }
            sent += 1;
            if args.rate > 0.0 {
                let due = started + Duration::from_secs_f64(sent as f64 / args.rate);
                let now = Instant::now();
                if due > now {
                    producer.poll(Duration::ZERO);
                    std::thread::sleep(due - now);
                }
            } else if sent.is_multiple_of(10_000) {
                producer.poll(Duration::ZERO);
            }
            if last_flush.elapsed() >= Duration::from_millis(20) {
                flush_buffers(&producer, &args.topic, &mut buffers)?;
                last_flush = Instant::now();
            }
        }
    }
    flush_buffers(&producer, &args.topic, &mut buffers)?;
    producer.flush(Duration::from_secs(120)).map_err(|e| Error::Io(format!("flushing to {:?}: {e}", args.topic)))?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    eprintln!(
        "lobsentry produce: {sent} events to {} ({:.0} events/s), {rejected} lines skipped",
        args.topic,
        sent as f64 / secs
    );
    Ok(())
}

fn send(producer: &BaseProducer, topic: &str, key: &str, payload: &str) -> Result<(), Error> {
    loop {
        match producer.send(BaseRecord::<str, str>::to(topic).key(key).payload(payload)) {
            Ok(()) => return Ok(()),
            Err((e, _)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => return Err(Error::Io(format!("producing to {topic:?}: {e}"))),
        }
    }
}

/// Sends an instrument's buffered lines as one message and empties the buffer (keeping its capacity).
fn send_buffer(
    producer: &BaseProducer,
    topic: &str,
    key: &InstrumentId,
    buffer: &mut (String, usize),
) -> Result<(), Error> {
    if buffer.1 > 0 {
        send(producer, topic, key.as_str(), &buffer.0)?;
        buffer.0.clear();
        buffer.1 = 0;
    }
    Ok(())
}

fn flush_buffers(
    producer: &BaseProducer,
    topic: &str,
    buffers: &mut HashMap<InstrumentId, (String, usize)>,
) -> Result<(), Error> {
    for (key, buffer) in buffers.iter_mut() {
        send_buffer(producer, topic, key, buffer)?;
    }
    Ok(())
}
