//! Configuration: raw TOML layers (embedded default, user file, environment) -> a validated [`Config`].
//!
//! Every validation error is collected and reported at once.

use crate::error::Error;
use lobsentry_operators::book::TOP_LEVELS;
use lobsentry_operators::generator::MarketSpec;
use lobsentry_operators::sink::WindowFormat;
use lobsentry_operators::source::decode::LobsterName;
use lobsentry_operators::source::{Format, InputFile};
use lobsentry_operators::window::WindowSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod email;
mod secret;
mod store;
mod webhook;
pub use email::{EmailConfig, EmailSecurity};
pub use secret::{redact, redact_url, Secret, REDACTED};
pub use store::StoreConfig;
pub use webhook::{check_template, fill_plain, fill_template, WebhookConfig};

/// The embedded base layer.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Prefix of environment overrides: `LOBSENTRY__SECTION__KEY=value`.
pub const ENV_PREFIX: &str = "LOBSENTRY__";

/// The raw file, as written.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawConfig {
    /// `[pipeline]`.
    pub pipeline: RawPipeline,
    /// `[source]`.
    pub source: RawSource,
    /// `[generator]`.
    pub generator: RawGenerator,
    /// `[window]`.
    pub window: RawWindow,
    /// `[book]`.
    pub book: RawBook,
    /// `[sink]`.
    pub sink: RawSink,
    /// `[metrics]`.
    pub metrics: RawMetrics,
    /// `[detect]`.
    pub detect: RawDetect,
    /// `[model]`.
    pub model: RawModel,
    /// `[cluster]`.
    pub cluster: RawCluster,
    /// `[kafka]`.
    pub kafka: RawKafka,
    /// `[checkpoint]`.
    pub checkpoint: RawCheckpoint,
    /// `[analytics]`.
    pub analytics: RawAnalytics,
    /// `[webhook]`.
    pub webhook: RawWebhook,
    /// `[email]`.
    pub email: RawEmail,
    /// `[store]`.
    pub store: RawStore,
}

/// `[store]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawStore {
    /// `postgresql://user@host:port/database` ("" = off).
    pub url: String,
    /// Environment variable holding the password.
    pub password_env: String,
    /// Keep every score.
    pub scores: bool,
    /// Keep every window's features.
    pub features: bool,
    /// Rows waiting at most.
    pub queue: i64,
    /// Rows per insert.
    pub batch: i64,
    /// Connection attempts at start.
    pub connect_attempts: i64,
    /// Pause between attempts.
    pub connect_backoff: String,
    /// Timeout of one attempt.
    pub connect_timeout: String,
}

/// `[email]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawEmail {
    /// SMTP server host ("" = off).
    pub server: String,
    /// Port (0 = the usual one for `security`).
    pub port: i64,
    /// "starttls", "tls" or "none".
    pub security: String,
    /// Login ("" = none).
    pub username: String,
    /// Environment variable holding the password.
    pub password_env: String,
    /// Sender.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject template.
    pub subject: String,
    /// Body template.
    pub template: String,
    /// Per-instrument rate limit, in event time.
    pub per_instrument_interval: String,
    /// Attempts per alert.
    pub max_attempts: i64,
    /// First retry pause (doubles).
    pub backoff: String,
    /// Timeout of one SMTP exchange.
    pub timeout: String,
    /// Alerts waiting at most.
    pub queue: i64,
    /// Accept certificates that do not verify (self-signed test servers only).
    pub accept_invalid_certs: bool,
}

/// `[analytics]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawAnalytics {
    /// Maintain the analytics and serve the query API.
    pub enabled: bool,
    /// API address of process 0.
    pub address: String,
    /// Granularity.
    pub tick: String,
    /// How long data stays queryable.
    pub retention: String,
    /// Sliding top-volume window.
    pub sliding: String,
    /// Largest top-N.
    pub top_max: i64,
    /// Serving after the input ended ("forever" or a duration).
    pub serve_after_input: String,
    /// Longest wait for an answer.
    pub query_timeout: String,
}

/// `[webhook]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawWebhook {
    /// Endpoint ("" = off).
    pub url: String,
    /// JSON body template.
    pub template: String,
    /// Environment variable holding the secret ("" = none).
    pub secret_env: String,
    /// Header the secret is sent in.
    pub secret_header: String,
    /// Per-instrument rate limit, in event time.
    pub per_instrument_interval: String,
    /// Attempts per alert.
    pub max_attempts: i64,
    /// First retry pause (doubles).
    pub backoff: String,
    /// Request timeout.
    pub timeout: String,
    /// Alerts waiting at most.
    pub queue: i64,
}

/// The analytics and their query API.
#[derive(Clone, Debug)]
pub struct AnalyticsConfig {
    /// The dataflow's options.
    pub spec: lobsentry_operators::analytics::AnalyticsSpec,
    /// Where this process serves the API.
    pub address: std::net::SocketAddr,
    /// How long to serve after the input ended (`None`: until stopped).
    pub serve_after_input: Option<Duration>,
    /// Longest wait for an answer.
    pub query_timeout: Duration,
}

/// `[kafka]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawKafka {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Input topic.
    pub topic: String,
    /// "json-lines" or "csv".
    pub format: String,
    /// Consumer group offsets are committed to.
    pub group_id: String,
    /// Idle partition timeout.
    pub idle_timeout: String,
    /// Stop at the end offsets found at start.
    pub stop_at_end: bool,
    /// Metadata attempts at start.
    pub connect_attempts: i64,
    /// Pause between them.
    pub connect_backoff: String,
    /// Alerts topic ("" = none).
    pub alerts_topic: String,
    /// Scores topic ("" = none).
    pub scores_topic: String,
    /// Window features topic ("" = none).
    pub features_topic: String,
    /// Dead-letter topic ("" = none).
    pub dead_letter_topic: String,
    /// librdkafka's delivery timeout per attempt.
    pub message_timeout: String,
    /// librdkafka properties for every Kafka client (TLS, SASL, tuning).
    pub properties: std::collections::BTreeMap<String, toml::Value>,
    /// librdkafka properties read from environment variables (property -> variable name): secrets.
    pub properties_env: std::collections::BTreeMap<String, String>,
}

/// `[checkpoint]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawCheckpoint {
    /// Directory ("" = checkpoints off).
    pub dir: String,
    /// Event time between checkpoints.
    pub interval: String,
    /// Longest wall-clock time between checkpoints ("0s" = no bound).
    pub max_wait: String,
    /// Complete checkpoints kept.
    pub retain: i64,
}

/// Where alerts, scores and rejected records go in Kafka.
#[derive(Clone, Debug, Default)]
pub struct KafkaSinks {
    /// Alerts.
    pub alerts: Option<lobsentry_operators::sink::kafka::KafkaWriterSpec>,
    /// Every score.
    pub scores: Option<lobsentry_operators::sink::kafka::KafkaWriterSpec>,
    /// Every window's features.
    pub features: Option<lobsentry_operators::sink::kafka::KafkaWriterSpec>,
    /// Rejected input records.
    pub dead_letter: Option<lobsentry_operators::sink::kafka::KafkaWriterSpec>,
}

/// `[checkpoint]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// Directory.
    pub dir: PathBuf,
    /// Event time between barriers, ns.
    pub interval_ns: u64,
    /// Longest wall-clock time between checkpoints (`None`: no bound).
    pub max_wait: Option<Duration>,
    /// Complete checkpoints kept.
    pub retain: usize,
}

impl Config {
    /// The event-time grid a barrier pulled in by `checkpoint.max-wait` lands on (`k * grid + 1`): a
    /// multiple of the window size and slide, every detection scale and the analytics tick, so no
    /// window or tick ends at it; the checkpoint interval itself when that does not divide it.
    pub fn pull_grid_ns(&self) -> u64 {
        fn gcd(a: u64, b: u64) -> u64 {
            if b == 0 {
                a
            } else {
                gcd(b, a % b)
            }
        }
        let lcm = |a: u64, b: u64| if a == 0 || b == 0 { a.max(b) } else { (a / gcd(a, b)).saturating_mul(b) };
        let mut grid = lcm(self.window.size_ns, self.window.slide_ns);
        for (ns, _) in &self.scales.scales {
            grid = lcm(grid, *ns);
        }
        if let Some(a) = &self.analytics {
            grid = lcm(grid, a.spec.tick_ns);
        }
        let interval = self.checkpoint.as_ref().map_or(0, |c| c.interval_ns);
        if grid == 0 || interval == 0 || !interval.is_multiple_of(grid) {
            interval
        } else {
            grid
        }
    }
}

/// The Kafka input, validated (the partition count is found at start).
#[derive(Clone, Debug)]
pub struct KafkaInput {
    /// Source options.
    pub spec: lobsentry_operators::source::kafka::KafkaSourceSpec,
    /// Metadata attempts at start.
    pub connect_attempts: u32,
    /// Pause between them.
    pub connect_backoff: Duration,
}

/// `[detect]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawDetect {
    /// Score windows.
    pub enabled: bool,
    /// EWMA span in windows.
    pub span: f64,
    /// Warm-up windows.
    pub warmup: i64,
    /// Anomaly threshold.
    pub threshold: f64,
    /// Alerts path.
    pub alerts: String,
    /// Scores path.
    pub scores: String,
    /// Expected false alarms per instrument-hour of the calibrated ensemble (0 = no calibration).
    pub alarms_per_hour: f64,
    /// Window lengths the detectors run on.
    pub scales: Vec<String>,
    /// Each scale's share of alarms-per-hour, in the order of `scales` ([] = equal shares).
    pub scale_shares: Vec<f64>,
    /// Each scale's slide (a new window every ...), in the order of `scales` ([] = tumbling).
    #[serde(default)]
    pub scale_slides: Vec<String>,
    /// Scores of history per (instrument, detector) in the calibration.
    pub calibration_history: i64,
    /// Scores a calibration needs before it decides.
    pub calibration_warmup: i64,
    /// Empty windows given to an instrument that falls silent while the market trades (per gap).
    pub silent_windows: i64,
    /// How long an alert holds: flagged windows of the instrument starting within it belong to it.
    pub alert_hold: String,
    /// Score windows with the multivariate detector (Hotelling's T²) too.
    pub multivariate: bool,
    /// Its span of the exponentially weighted mean and covariance, in windows of `window.size`
    /// (longer scales cover the same market time).
    pub multivariate_span: f64,
    /// Windows an instrument must see before it scores them.
    pub multivariate_warmup: i64,
    /// T²'s floor of each feature's variance, as a share of its mean squared change (0: none).
    pub multivariate_change_floor: f64,
    /// Detectors whose p-values the ensemble combines ("baseline", "multivariate", "model"); the
    /// others are calibrated and decide on their own only.
    pub combine: Vec<String>,
    /// Weights in the combination by detector name (as in `combine`); a detector not named weighs 1.
    #[serde(default)]
    pub combine_weights: std::collections::BTreeMap<String, f64>,
}

/// The detectors `detect.combine` can name.
const COMBINABLE: [&str; 3] = ["baseline", "multivariate", "model"];

/// The detection time scales and the calibrated ensemble over them.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectScales {
    /// Window lengths (ns) the detectors run on, each with its label (`""` for `window.size`).
    pub scales: Vec<(u64, String)>,
    /// The ensemble (`None`: each detector decides alone with its raw threshold).
    pub ensemble: Option<lobsentry_operators::ensemble::EnsembleSpec>,
    /// Empty windows per silent gap of an instrument (0 = none; only with the ensemble).
    pub silent_windows: u64,
    /// The scales whose windows slide: (window length, slide) in ns; the others are tumbling.
    pub slides: Vec<(u64, u64)>,
}

impl DetectScales {
    /// The slide of the scale of windows of `size_ns` (`size_ns` itself for a tumbling scale).
    pub fn slide(&self, size_ns: u64) -> u64 {
        self.slides.iter().find(|(ns, _)| *ns == size_ns).map_or(size_ns, |s| s.1)
    }

    /// The windows of the scale of windows of `size_ns`: sliding when listed, else tumbling.
    pub fn window(&self, size_ns: u64) -> lobsentry_operators::window::WindowSpec {
        lobsentry_operators::window::WindowSpec::sliding(size_ns, self.slide(size_ns))
    }
}

/// `[model]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawModel {
    /// Package directory ("" = none).
    pub path: String,
    /// ONNX Runtime library.
    pub onnxruntime: String,
    /// Intra-op threads.
    pub intra_threads: i64,
    /// Largest batch.
    pub max_batch: i64,
    /// Threshold override (0 = the model's).
    pub threshold: f64,
    /// Further model packages scored side by side with `path` (each on the scale it was trained for)
    /// and combined with it by the ensemble.
    pub extra: Vec<String>,
}

/// A validated model section.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Package directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: lobsentry_operators::model::ModelMeta,
    /// The ONNX Runtime library.
    pub onnxruntime: PathBuf,
    /// Intra-op threads.
    pub intra_threads: usize,
    /// Largest batch.
    pub max_batch: usize,
    /// Threshold override.
    pub threshold: Option<f64>,
}

/// Finds libonnxruntime: the configured path, then `$ORT_DYLIB_PATH`, then the onnxruntime wheel in
/// `./.venv` or next to the binary's repository.
pub fn find_onnxruntime(configured: &str) -> Result<PathBuf, String> {
    let fix = "install it with `make onnxruntime` (pip installs the onnxruntime wheel into .venv), or point ORT_DYLIB_PATH or model.onnxruntime at libonnxruntime.so";
    if !configured.is_empty() {
        let p = PathBuf::from(configured);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("model.onnxruntime: {} does not exist; {fix}", p.display()))
        };
    }
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        if !p.is_empty() {
            let p = PathBuf::from(p);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(format!("ORT_DYLIB_PATH: {} does not exist; {fix}", p.display()))
            };
        }
    }
    let mut roots = vec![PathBuf::from(".venv")];
    if let Ok(exe) = std::env::current_exe() {
        // target/{release,debug}/lobsentry -> the repository root.
        if let Some(repo) = exe.parent().and_then(|p| p.parent()).and_then(|p| p.parent()) {
            roots.push(repo.join(".venv"));
        }
    }
    for root in roots {
        let Ok(libs) = std::fs::read_dir(root.join("lib")) else { continue };
        for python in libs.flatten() {
            let capi = python.path().join("site-packages/onnxruntime/capi");
            let Ok(files) = std::fs::read_dir(&capi) else { continue };
            let mut found: Vec<PathBuf> = files
                .flatten()
                .map(|f| f.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
                .collect();
            found.sort();
            if let Some(p) = found.pop() {
                return Ok(p);
            }
        }
    }
    Err(format!("ONNX Runtime library not found; {fix}"))
}

/// `[metrics]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawMetrics {
    /// Serve metrics.
    pub enabled: bool,
    /// Address of process 0 (process I adds I to the port).
    pub address: String,
}

/// `[cluster]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawCluster {
    /// Hostfile path ("" = single process).
    pub hostfile: String,
    /// Processes.
    pub processes: i64,
    /// This process.
    pub process: i64,
}

/// `[pipeline]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawPipeline {
    /// Worker threads.
    pub workers: i64,
    /// Rebuild books.
    pub book: bool,
    /// Progress on stderr.
    pub progress: bool,
    /// On SIGINT/SIGTERM (or a finished run), the longest wait for the sinks to flush.
    pub shutdown_grace: String,
}

/// `[source]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawSource {
    /// "synthetic" or "files".
    pub kind: String,
    /// Input files.
    pub files: Vec<PathBuf>,
    /// Format of every file: "" (from each name), "lobster", "csv" or "jsonl".
    pub format: String,
    /// Watermark bound.
    pub out_of_orderness: String,
    /// Split files over workers.
    pub split_files: bool,
    /// Lines per chunk.
    pub chunk_lines: i64,
    /// Lines per activation.
    pub batch_lines: i64,
    /// Seed LOBSTER books from order-book files.
    pub seed_from_orderbook: bool,
    /// LOBSTER instrument override.
    pub instrument: String,
    /// LOBSTER date override.
    pub date: String,
    /// Longest line, bytes.
    pub max_line_length: i64,
    /// Time jump that holds a line.
    pub max_time_jump: String,
    /// Lines that confirm a jump.
    pub time_jump_confirm: i64,
}

/// `[generator]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawGenerator {
    /// Instruments.
    pub instruments: i64,
    /// Events (0 = endless).
    pub events: i64,
    /// Events per second of event time.
    pub rate: f64,
    /// Seed.
    pub seed: i64,
    /// Disorder bound.
    pub disorder: String,
    /// Late fraction.
    pub late_fraction: f64,
    /// Late delay.
    pub late_delay: String,
    /// Episodes per instrument-hour.
    pub anomalies_per_instrument_hour: f64,
    /// Wall-clock pacing speed-up (0 = none).
    pub realtime_speed: f64,
    /// Idle timeout.
    pub idle_timeout: String,
    /// Kinds of episode ("standard", "held-out", "held-out-2" to "held-out-5", or a list of names).
    pub kinds: String,
}

/// `[window]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawWindow {
    /// Window length.
    pub size: String,
    /// Window slide.
    pub slide: String,
}

/// `[book]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawBook {
    /// Ghost repair.
    pub repair_ghosts: bool,
    /// Levels kept per side: "shallow", "auto", "all" or a number.
    pub visible_levels: String,
}

/// `book.visible-levels`: the depth every book keeps ("all": `None`; a number: that many levels),
/// and with "auto" the depth of each LOBSTER message file's instrument, from its name (`_message_10`:
/// 10), with "shallow" (the default) that depth only where it is below the [`TOP_LEVELS`] levels the
/// depth features read; other inputs keep every level.
fn book_levels(
    text: &str,
    source: &SourceConfig,
    errors: &mut Vec<String>,
) -> (Option<usize>, Vec<(lobsentry_operators::event::InstrumentId, usize)>) {
    match text.trim() {
        "all" => (None, Vec::new()),
        which @ ("auto" | "shallow") => {
            let mut levels = Vec::new();
            if let SourceConfig::Files(spec) = source {
                for f in spec.files.iter().filter(|f| f.format == Format::Lobster) {
                    let name = f.path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                    if let (Some(parsed), Ok(ctx)) = (LobsterName::parse(name), f.lobster_context()) {
                        if which == "auto" || parsed.levels < TOP_LEVELS {
                            levels.push((ctx.instrument, parsed.levels));
                        }
                    }
                }
            }
            (None, levels)
        }
        n => match n.parse::<usize>() {
            Ok(n) if n > 0 => (Some(n), Vec::new()),
            _ => {
                errors.push(format!(
                    "book.visible-levels: {n:?}: want \"shallow\", \"auto\", \"all\" or a positive number of levels"
                ));
                (None, Vec::new())
            }
        },
    }
}

/// `[sink]`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct RawSink {
    /// Output path, "-" or "".
    pub path: String,
    /// Output format.
    pub format: String,
    /// Dead-letter path.
    pub dead_letter: String,
    /// Late-event path.
    pub late: String,
}

/// Where events come from.
#[derive(Clone, Debug)]
pub enum SourceConfig {
    /// The synthetic market.
    Synthetic(lobsentry_operators::source::SyntheticSpec),
    /// Files.
    Files(lobsentry_operators::source::FileSourceSpec),
    /// A Kafka topic.
    Kafka(KafkaInput),
}

impl SourceConfig {
    /// The `source` label value of the metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Synthetic(_) => "synthetic",
            SourceConfig::Files(_) => "files",
            SourceConfig::Kafka(_) => "kafka",
        }
    }
}

/// This process's place in a timely cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `host:port` of every process, in process order.
    pub addresses: Vec<String>,
    /// This process's index.
    pub process: usize,
}

/// Where window records go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Nowhere: the run prints a summary.
    None,
    /// Standard output.
    Stdout,
    /// A file.
    File(PathBuf),
}

/// A validated configuration: only this reaches the pipeline.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker threads.
    pub workers: usize,
    /// Rebuild books.
    pub book: bool,
    /// Progress on stderr.
    pub progress: bool,
    /// The longest wait for the sinks (webhook, Kafka) at the end of a run or on a stop signal.
    pub shutdown_grace: Duration,
    /// The source.
    pub source: SourceConfig,
    /// The windows.
    pub window: WindowSpec,
    /// Book options.
    pub book_config: lobsentry_operators::book::BookConfig,
    /// Per instrument, the depth of its LOBSTER message file (`book.visible-levels = "auto"`).
    pub book_levels: Vec<(lobsentry_operators::event::InstrumentId, usize)>,
    /// Window output.
    pub output: Output,
    /// Window output format.
    pub output_format: WindowFormat,
    /// Dead-letter file.
    pub dead_letter: Option<PathBuf>,
    /// Late-event file.
    pub late: Option<PathBuf>,
    /// The cluster, when running as one process of several.
    pub cluster: Option<ClusterConfig>,
    /// Where this process serves metrics (`None`: disabled).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The baseline detector (`None`: disabled).
    pub detect: Option<lobsentry_operators::detect::ZScoreSpec>,
    /// The multivariate detector (`None`: disabled).
    pub multivariate: Option<lobsentry_operators::multivariate::MultivariateSpec>,
    /// Time scales and the calibrated ensemble.
    pub scales: DetectScales,
    /// Where anomalies go (JSON lines).
    pub alerts: Option<PathBuf>,
    /// Where every score goes (JSON lines).
    pub scores: Option<PathBuf>,
    /// The ONNX model.
    pub model: Option<ModelConfig>,
    /// Further ONNX models (`model.extra`), with the same runtime options.
    pub extra_models: Vec<ModelConfig>,
    /// Kafka outputs.
    pub kafka_sinks: KafkaSinks,
    /// Checkpoints (`None`: off).
    pub checkpoint: Option<CheckpointConfig>,
    /// Analytics and the query API (`None`: off).
    pub analytics: Option<AnalyticsConfig>,
    /// The webhook alert sink (`None`: off).
    pub webhook: Option<WebhookConfig>,
    /// The email alert sink (`None`: off).
    pub email: Option<EmailConfig>,
    /// The PostgreSQL history (`None`: off).
    pub store: Option<StoreConfig>,
}

/// Command-line overrides.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `-w`.
    pub workers: Option<usize>,
    /// `--input` (switches the source to files).
    pub inputs: Vec<PathBuf>,
    /// `--output`.
    pub output: Option<String>,
    /// `--hostfile`.
    pub hostfile: Option<PathBuf>,
    /// `-n`.
    pub processes: Option<usize>,
    /// `-p`.
    pub process: Option<usize>,
    /// `--metrics-addr`.
    pub metrics_addr: Option<String>,
    /// `--api-addr` (turns the analytics on).
    pub api_addr: Option<String>,
    /// Training-data mode (`lobsentry features`): no detectors, no model, every feature as CSV.
    pub features_only: bool,
}

/// Parses "250ms", "2s", "1m", "1h", "500us", "100ns" (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("{text:?} is not a duration (try \"250ms\" or \"2s\")"))?;
    let ns_per = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "" | "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        other => return Err(format!("{text:?}: unknown unit {other:?} (ns, us, ms, s, m, h)")),
    };
    if !value.is_finite() || value < 0.0 {
        return Err(format!("{text:?} is not a non-negative duration"));
    }
    Ok(Duration::from_nanos((value * ns_per).round() as u64))
}

/// `[kafka.properties]` and `[kafka.properties-env]` as librdkafka `(key, value)` pairs. A secret
/// (a key naming a password, a private key ...) must come from the environment.
fn kafka_properties(k: &RawKafka, errors: &mut Vec<String>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (key, value) in &k.properties {
        if secret::is_secret_key(key) {
            errors.push(format!(
                "kafka.properties.{key:?}: secrets are read from the environment: put {key:?} = \"VARIABLE\" in [kafka.properties-env]"
            ));
            continue;
        }
        match value {
            toml::Value::String(v) => out.push((key.clone(), v.clone())),
            toml::Value::Integer(v) => out.push((key.clone(), v.to_string())),
            toml::Value::Float(v) => out.push((key.clone(), v.to_string())),
            toml::Value::Boolean(v) => out.push((key.clone(), v.to_string())),
            other => errors.push(format!("kafka.properties.{key:?}: {other} is not a string, number or boolean")),
        }
    }
    for (key, var) in &k.properties_env {
        match std::env::var(var) {
            Ok(v) => out.push((key.clone(), v)),
            Err(_) => errors.push(format!("kafka.properties-env.{key:?}: environment variable {var} is not set")),
        }
    }
    out
}

fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// An environment value, typed by the setting it overrides (every setting has a default, so the
/// type is known): strings are taken as written (`123` stays a string; a TOML-quoted string is
/// unquoted), numbers and booleans are parsed, arrays and tables are read as TOML.
fn typed_env_value(raw: &str, target: Option<&toml::Value>) -> Result<toml::Value, &'static str> {
    let as_toml = || toml::from_str::<toml::Table>(&format!("v = {raw}")).ok().and_then(|mut t| t.remove("v"));
    match target {
        Some(toml::Value::String(_)) => match as_toml() {
            Some(toml::Value::String(s)) if raw.trim_start().starts_with(['"', '\'']) => Ok(toml::Value::String(s)),
            _ => Ok(toml::Value::String(raw.to_string())),
        },
        Some(toml::Value::Integer(_)) => raw.trim().parse::<i64>().map(toml::Value::Integer).map_err(|_| "an integer"),
        Some(toml::Value::Float(_)) => raw.trim().parse::<f64>().map(toml::Value::Float).map_err(|_| "a number"),
        Some(toml::Value::Boolean(_)) => match raw.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err("a boolean (true or false)"),
        },
        Some(toml::Value::Array(_)) => match as_toml() {
            Some(v @ toml::Value::Array(_)) => Ok(v),
            _ => Err("a TOML array (like [\"1s\", \"10s\"])"),
        },
        _ => Ok(as_toml().unwrap_or_else(|| toml::Value::String(raw.to_string()))),
    }
}

/// Reads the layers: embedded default, the user file, then `LOBSENTRY__SECTION__KEY` variables.
pub fn load_raw(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<RawConfig, Error> {
    let mut value: toml::Value =
        toml::from_str(DEFAULT_TOML).map_err(|e| Error::Config(vec![format!("embedded default: {e}")]))?;
    if let Some(path) = path {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        let user: toml::Value =
            toml::from_str(&text).map_err(|e| Error::Config(vec![format!("{}: {e}", path.display())]))?;
        merge(&mut value, user);
    }
    let mut errors = Vec::new();
    for (key, raw) in env {
        let Some(rest) = key.strip_prefix(ENV_PREFIX) else { continue };
        let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase().replace('_', "-")).collect();
        if parts.len() != 2 {
            errors.push(format!("{key}: want {ENV_PREFIX}SECTION__KEY"));
            continue;
        }
        let target = value.get(&parts[0]).and_then(|t| t.get(&parts[1]));
        let parsed = match typed_env_value(&raw, target) {
            Ok(v) => v,
            Err(want) => {
                errors.push(format!("{key}: {raw:?} is not {want} (the type of {}.{})", parts[0], parts[1]));
                continue;
            }
        };
        let mut table = toml::Table::new();
        let mut inner = toml::Table::new();
        inner.insert(parts[1].clone(), parsed);
        table.insert(parts[0].clone(), toml::Value::Table(inner));
        merge(&mut value, toml::Value::Table(table));
    }
    if !errors.is_empty() {
        return Err(Error::Config(errors));
    }
    value.try_into().map_err(|e: toml::de::Error| Error::Config(vec![e.to_string()]))
}

impl RawConfig {
    /// Validates everything, listing every problem.
    pub fn validate(self, overrides: &Overrides) -> Result<Config, Error> {
        let mut errors = Vec::new();
        let mut duration = |key: &str, text: &str| -> Duration {
            parse_duration(text).unwrap_or_else(|e| {
                errors.push(format!("{key}: {e}"));
                Duration::ZERO
            })
        };
        let bound = duration("source.out-of-orderness", &self.source.out_of_orderness);
        let disorder = duration("generator.disorder", &self.generator.disorder);
        let late_delay = duration("generator.late-delay", &self.generator.late_delay);
        let idle = duration("generator.idle-timeout", &self.generator.idle_timeout);
        let size = duration("window.size", &self.window.size);
        let slide = duration("window.slide", &self.window.slide);
        let kafka_idle = duration("kafka.idle-timeout", &self.kafka.idle_timeout);
        let kafka_backoff = duration("kafka.connect-backoff", &self.kafka.connect_backoff);
        let message_timeout = duration("kafka.message-timeout", &self.kafka.message_timeout);
        let interval = duration("checkpoint.interval", &self.checkpoint.interval);
        let max_wait = duration("checkpoint.max-wait", &self.checkpoint.max_wait);
        let kafka_properties = kafka_properties(&self.kafka, &mut errors);

        let workers = overrides.workers.map(|w| w as i64).unwrap_or(self.pipeline.workers);
        if !(1..=1024).contains(&workers) {
            errors.push(format!("pipeline.workers: {workers} is not between 1 and 1024"));
        }
        let window = WindowSpec { size_ns: size.as_nanos() as u64, slide_ns: slide.as_nanos() as u64, offset_ns: 0 };
        // Only when both durations parsed: a bad duration is already reported once.
        let durations_ok = parse_duration(&self.window.size).is_ok() && parse_duration(&self.window.slide).is_ok();
        if let (true, Err(e)) = (durations_ok, window.validate()) {
            errors.push(format!("window: {e}"));
        }
        let positive = |errors: &mut Vec<String>, key: &str, v: i64| {
            if v <= 0 {
                errors.push(format!("{key}: must be positive, got {v}"));
            }
        };
        positive(&mut errors, "source.chunk-lines", self.source.chunk_lines);
        positive(&mut errors, "source.batch-lines", self.source.batch_lines);

        let files: Vec<PathBuf> =
            if overrides.inputs.is_empty() { self.source.files.clone() } else { overrides.inputs.clone() };
        let kind = if overrides.inputs.is_empty() { self.source.kind.as_str() } else { "files" };
        let bound_ns = bound.as_nanos() as u64;
        let source = match kind {
            "synthetic" => {
                let g = &self.generator;
                if g.instruments <= 0 || g.instruments > 1_000_000 {
                    errors.push(format!("generator.instruments: {} is not between 1 and 1000000", g.instruments));
                }
                if g.events < 0 {
                    errors.push(format!("generator.events: {} is negative", g.events));
                }
                if !(g.rate > 0.0 && g.rate.is_finite()) {
                    errors.push(format!("generator.rate: {} is not a positive rate", g.rate));
                }
                if !(0.0..=1.0).contains(&g.late_fraction) {
                    errors.push(format!("generator.late-fraction: {} is not in [0, 1]", g.late_fraction));
                }
                if !(g.anomalies_per_instrument_hour >= 0.0 && g.anomalies_per_instrument_hour.is_finite()) {
                    errors.push(format!(
                        "generator.anomalies-per-instrument-hour: {} is negative",
                        g.anomalies_per_instrument_hour
                    ));
                }
                if !(g.realtime_speed >= 0.0 && g.realtime_speed.is_finite()) {
                    errors.push(format!("generator.realtime-speed: {} is negative", g.realtime_speed));
                }
                let kinds = lobsentry_operators::generator::parse_kinds(
                    &g.kinds,
                    &lobsentry_operators::generator::AnomalyKind::ALL,
                )
                .unwrap_or_else(|e| {
                    errors.push(format!("generator.kinds: {e}"));
                    Vec::new()
                });
                let market = MarketSpec {
                    instruments: g.instruments.max(1) as usize,
                    events: (g.events > 0).then_some(g.events as u64),
                    rate_per_sec: g.rate,
                    seed: g.seed as u64,
                    anomalies_per_instrument_hour: g.anomalies_per_instrument_hour,
                    kinds,
                    ..MarketSpec::default()
                };
                let mut market = market;
                if g.realtime_speed > 0.0 {
                    // Paced markets start now, so the watermark tracks the wall clock.
                    market.start_ns = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(market.start_ns);
                }
                let mut spec = lobsentry_operators::source::SyntheticSpec::new(market, bound_ns);
                spec.disorder_ns = disorder.as_nanos() as u64;
                spec.late_fraction = g.late_fraction;
                spec.late_delay_ns = late_delay.as_nanos() as u64;
                spec.realtime_speed = (g.realtime_speed > 0.0).then_some(g.realtime_speed);
                spec.idle_timeout = idle;
                SourceConfig::Synthetic(spec)
            }
            "files" => {
                if files.is_empty() {
                    errors.push("source.files: the files source needs at least one file (or use --input)".into());
                }
                let forced = match self.source.format.trim() {
                    "" => None,
                    "lobster" => Some(Format::Lobster),
                    "csv" => Some(Format::Csv),
                    "jsonl" => Some(Format::JsonLines),
                    other => {
                        errors.push(format!(
                            "source.format: {other:?}: want \"\" (from each file's name), \"lobster\", \"csv\" or \"jsonl\""
                        ));
                        None
                    }
                };
                let mut inputs = Vec::new();
                for path in &files {
                    if !path.is_file() {
                        errors.push(format!("source.files: {} does not exist or is not a file", path.display()));
                        continue;
                    }
                    let input = match forced {
                        Some(format) => Ok(InputFile::new(path, format)),
                        None => InputFile::guess(path),
                    };
                    match input {
                        Ok(mut f) => {
                            f.seed_from_orderbook = self.source.seed_from_orderbook;
                            if f.format == Format::Lobster {
                                f.instrument =
                                    (!self.source.instrument.is_empty()).then(|| self.source.instrument.clone());
                                f.date = (!self.source.date.is_empty()).then(|| self.source.date.clone());
                            }
                            if f.format == Format::Lobster {
                                if let Err(e) = f.lobster_context() {
                                    errors.push(format!("source.files: {e}"));
                                }
                            }
                            inputs.push(f);
                        }
                        Err(e) => errors.push(format!("source.files: {e}")),
                    }
                }
                let mut spec = lobsentry_operators::source::FileSourceSpec::new(inputs, bound_ns);
                spec.split_files = self.source.split_files;
                spec.chunk_lines = self.source.chunk_lines.max(1) as u64;
                spec.batch_lines = self.source.batch_lines.max(1) as usize;
                if self.source.max_line_length < 64 {
                    errors.push(format!("source.max-line-length: {} is below 64 bytes", self.source.max_line_length));
                }
                if self.source.time_jump_confirm < 1 {
                    errors.push(format!("source.time-jump-confirm: {} is not positive", self.source.time_jump_confirm));
                }
                let jump = parse_duration(&self.source.max_time_jump)
                    .map_err(|e| errors.push(format!("source.max-time-jump: {e}")))
                    .unwrap_or_default();
                spec.limits = lobsentry_operators::source::InputLimits {
                    max_line_bytes: self.source.max_line_length.max(64) as usize,
                    max_jump_ns: if jump.is_zero() { u64::MAX } else { jump.as_nanos() as u64 },
                    confirm_lines: self.source.time_jump_confirm.max(1) as usize,
                };
                SourceConfig::Files(spec)
            }
            "kafka" => {
                let k = &self.kafka;
                if k.brokers.is_empty() || k.topic.is_empty() {
                    errors.push("kafka: the kafka source needs kafka.brokers and kafka.topic".into());
                }
                let mut spec = lobsentry_operators::source::kafka::KafkaSourceSpec::new(&k.brokers, &k.topic, 0);
                spec.bound_ns = bound_ns;
                spec.format = match k.format.as_str() {
                    "json-lines" => Format::JsonLines,
                    "csv" => Format::Csv,
                    other => {
                        errors.push(format!("kafka.format: {other:?} is neither \"json-lines\" nor \"csv\""));
                        Format::JsonLines
                    }
                };
                spec.group_id = k.group_id.clone();
                spec.properties = kafka_properties.clone();
                spec.idle_timeout = kafka_idle;
                spec.stop_at_end = k.stop_at_end;
                if k.connect_attempts < 1 {
                    errors.push(format!("kafka.connect-attempts: {} is not positive", k.connect_attempts));
                }
                SourceConfig::Kafka(KafkaInput {
                    spec,
                    connect_attempts: k.connect_attempts.max(1) as u32,
                    connect_backoff: kafka_backoff,
                })
            }
            other => {
                errors.push(format!("source.kind: {other:?} is not \"synthetic\", \"files\" or \"kafka\""));
                SourceConfig::Files(lobsentry_operators::source::FileSourceSpec::new(Vec::new(), bound_ns))
            }
        };

        let path = overrides.output.clone().unwrap_or_else(|| self.sink.path.clone());
        let output = match path.as_str() {
            "" => Output::None,
            "-" => Output::Stdout,
            p => Output::File(PathBuf::from(p)),
        };
        let output_format = match if overrides.features_only { "features-csv" } else { self.sink.format.as_str() } {
            "w1-csv" => WindowFormat::W1Csv,
            "features-csv" => WindowFormat::FeaturesCsv,
            "json-lines" => WindowFormat::JsonLines,
            "auto" => match &output {
                Output::File(p) => WindowFormat::from_path(p, WindowFormat::FeaturesCsv).unwrap_or_else(|| {
                    errors.push(format!(
                        "sink.path: cannot tell the format of {} (use .csv or .jsonl, or set sink.format)",
                        p.display()
                    ));
                    WindowFormat::FeaturesCsv
                }),
                _ => WindowFormat::FeaturesCsv,
            },
            other => {
                errors.push(format!("sink.format: {other:?} is not auto, w1-csv, features-csv or json-lines"));
                WindowFormat::FeaturesCsv
            }
        };
        for (key, p) in [
            ("sink.path", &output),
            ("sink.dead-letter", &Output::File(PathBuf::from(&self.sink.dead_letter))),
            ("sink.late", &Output::File(PathBuf::from(&self.sink.late))),
        ] {
            if let Output::File(p) = p {
                if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    if !p.as_os_str().is_empty() && !parent.is_dir() {
                        errors.push(format!("{key}: directory {} does not exist", parent.display()));
                    }
                }
            }
        }
        let hostfile = overrides
            .hostfile
            .clone()
            .or_else(|| (!self.cluster.hostfile.is_empty()).then(|| PathBuf::from(&self.cluster.hostfile)));
        let processes = overrides.processes.map(|n| n as i64).unwrap_or(self.cluster.processes);
        let process = overrides.process.map(|n| n as i64).unwrap_or(self.cluster.process);
        let cluster = match hostfile {
            None if processes > 1 => {
                errors.push(format!("cluster: {processes} processes need a hostfile (--hostfile)"));
                None
            }
            None => None,
            Some(path) => match std::fs::read_to_string(&path) {
                Err(e) => {
                    errors.push(format!("cluster.hostfile: {}: {e}", path.display()));
                    None
                }
                Ok(text) => {
                    let addresses: Vec<String> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty() && !l.starts_with('#'))
                        .map(String::from)
                        .collect();
                    if processes < 1 || addresses.len() < processes as usize {
                        errors.push(format!(
                            "cluster: -n {processes} needs at least that many lines in {} (it has {})",
                            path.display(),
                            addresses.len()
                        ));
                        None
                    } else if process < 0 || process >= processes {
                        errors.push(format!("cluster: process index {process} is not in 0..{processes}"));
                        None
                    } else {
                        for a in &addresses[..processes as usize] {
                            if !a.contains(':') {
                                errors.push(format!("cluster.hostfile: {a:?} is not host:port"));
                            }
                        }
                        Some(ClusterConfig {
                            addresses: addresses[..processes as usize].to_vec(),
                            process: process as usize,
                        })
                    }
                }
            },
        };
        let metrics_text = overrides.metrics_addr.clone().unwrap_or_else(|| self.metrics.address.clone());
        let metrics_addr = match (
            self.metrics.enabled || overrides.metrics_addr.is_some(),
            metrics_text.parse::<std::net::SocketAddr>(),
        ) {
            (false, _) => None,
            (true, Ok(mut addr)) => {
                let index = cluster.as_ref().map_or(0, |c| c.process) as u16;
                if addr.port() != 0 {
                    addr.set_port(addr.port().saturating_add(index));
                }
                Some(addr)
            }
            (true, Err(_)) => {
                errors.push(format!("metrics.address: {metrics_text:?} is not an ip:port address"));
                None
            }
        };
        let d = &self.detect;
        if !(d.span >= 1.0 && d.span.is_finite()) {
            errors.push(format!("detect.span: {} is not at least 1", d.span));
        }
        if d.warmup < 0 {
            errors.push(format!("detect.warmup: {} is negative", d.warmup));
        }
        if !(d.threshold > 0.0 && d.threshold.is_finite()) {
            errors.push(format!("detect.threshold: {} is not positive", d.threshold));
        }
        let detect = (d.enabled && !overrides.features_only).then_some(lobsentry_operators::detect::ZScoreSpec {
            span: d.span,
            warmup: d.warmup.max(0) as u64,
            threshold: d.threshold,
            top: 3,
        });
        if !(d.multivariate_span >= 1.0 && d.multivariate_span.is_finite()) {
            errors.push(format!("detect.multivariate-span: {} is not at least 1", d.multivariate_span));
        }
        if !(d.multivariate_change_floor >= 0.0 && d.multivariate_change_floor.is_finite()) {
            errors.push(format!(
                "detect.multivariate-change-floor: {} is not a finite number >= 0",
                d.multivariate_change_floor
            ));
        }
        if d.multivariate_warmup < 1 {
            errors.push(format!("detect.multivariate-warmup: {} is not positive", d.multivariate_warmup));
        }
        let multivariate = (d.enabled && d.multivariate && !overrides.features_only).then(|| {
            lobsentry_operators::multivariate::MultivariateSpec {
                span: d.multivariate_span,
                warmup: d.multivariate_warmup.max(1) as u64,
                change_floor: d.multivariate_change_floor,
                ..Default::default()
            }
        });
        let mut scales: Vec<(u64, String)> = Vec::new();
        let scale_texts: Vec<String> =
            if d.scales.is_empty() { vec![self.window.size.clone()] } else { d.scales.clone() };
        for text in &scale_texts {
            match parse_duration(text) {
                Ok(dur) if dur.as_nanos() > 0 => {
                    let ns = dur.as_nanos() as u64;
                    let primary = window.size_ns == ns && window.slide_ns == ns;
                    if scales.iter().any(|(s, _)| *s == ns) {
                        errors.push(format!("detect.scales: {text:?} is listed twice"));
                    } else {
                        scales.push((ns, if primary { String::new() } else { text.trim().to_string() }));
                    }
                }
                Ok(_) => errors.push(format!("detect.scales: {text:?} is not a positive duration")),
                Err(e) => errors.push(format!("detect.scales: {e}")),
            }
        }
        if !(d.alarms_per_hour >= 0.0 && d.alarms_per_hour.is_finite()) {
            errors.push(format!("detect.alarms-per-hour: {} is not a non-negative number", d.alarms_per_hour));
        }
        if d.silent_windows < 0 {
            errors.push(format!("detect.silent-windows: {} is negative", d.silent_windows));
        }
        let tail = lobsentry_operators::calibrate::TailSpec {
            history: d.calibration_history.max(0) as usize,
            warmup: d.calibration_warmup.max(0) as usize,
            ..Default::default()
        };
        for e in tail.validate() {
            errors.push(format!("detect.calibration-{e}"));
        }
        let hold_ns = match parse_duration(&d.alert_hold) {
            Ok(dur) => dur.as_nanos() as u64,
            Err(e) => {
                errors.push(format!("detect.alert-hold: {e}"));
                0
            }
        };
        let mut ensemble = (d.alarms_per_hour > 0.0).then(|| lobsentry_operators::ensemble::EnsembleSpec {
            alarms_per_hour: d.alarms_per_hour,
            scales: scales.len(),
            tail,
            labels: scales.clone(),
            hold_ns,
            left_out: Vec::new(),
            shares: Vec::new(),
            slides: Vec::new(),
            weights: Vec::new(),
        });
        if !d.scale_shares.is_empty() {
            if d.scale_shares.len() != scales.len() {
                errors.push(format!(
                    "detect.scale-shares: {:?} for detect.scales {:?}: give one share per scale, in their order, or [] for equal shares",
                    d.scale_shares, scale_texts
                ));
            } else if let Some(bad) = d.scale_shares.iter().find(|x| !(**x > 0.0 && x.is_finite())) {
                errors.push(format!("detect.scale-shares: {bad} is not a positive share"));
            } else if let Some(e) = ensemble.as_mut() {
                e.shares = scales.iter().map(|(ns, _)| *ns).zip(d.scale_shares.iter().copied()).collect();
            }
        }
        let mut slides: Vec<(u64, u64)> = Vec::new();
        if !d.scale_slides.is_empty() && d.scale_slides.len() != scales.len() {
            errors.push(format!(
                "detect.scale-slides: {:?} for detect.scales {:?}: give one slide per scale, in their order, or [] for tumbling windows",
                d.scale_slides, scale_texts
            ));
        } else {
            let tumbling_output = window.size_ns == window.slide_ns;
            for ((ns, label), text) in scales.iter().zip(&d.scale_slides) {
                let slide = match parse_duration(text) {
                    Ok(dur) if dur.as_nanos() > 0 => dur.as_nanos() as u64,
                    Ok(_) => {
                        errors.push(format!("detect.scale-slides: {text:?} is not a positive duration"));
                        continue;
                    }
                    Err(e) => {
                        errors.push(format!("detect.scale-slides: {e}"));
                        continue;
                    }
                };
                if slide == *ns {
                    continue;
                }
                let human = lobsentry_operators::features::human_len;
                // A sliding scale is rolled up from the output windows: it needs tumbling output
                // windows that divide its slide, and a slide that divides its length.
                if label.is_empty() {
                    errors.push(format!(
                        "detect.scale-slides: {text:?} for the scale of window.size ({}): its windows are the output windows, set window.slide instead",
                        human(*ns)
                    ));
                } else if slide > *ns || !ns.is_multiple_of(slide) {
                    errors.push(format!("detect.scale-slides: {text:?} does not divide the scale {label:?}"));
                } else if !tumbling_output || !slide.is_multiple_of(window.size_ns) {
                    errors.push(format!(
                        "detect.scale-slides: {text:?} for the scale {label:?} is not a multiple of the (tumbling) window.size {}: sliding scales are rolled up from the output windows",
                        human(window.size_ns)
                    ));
                } else {
                    slides.push((*ns, slide));
                }
            }
        }
        if let Some(e) = ensemble.as_mut() {
            e.slides = slides.clone();
        }
        for name in &d.combine {
            if !COMBINABLE.contains(&name.as_str()) {
                errors.push(format!("detect.combine: unknown detector {name:?} (one of {COMBINABLE:?})"));
            }
        }
        for (name, weight) in &d.combine_weights {
            if !COMBINABLE.contains(&name.as_str()) {
                errors.push(format!("detect.combine-weights: unknown detector {name:?} (one of {COMBINABLE:?})"));
            } else if !(*weight > 0.0 && weight.is_finite()) {
                errors.push(format!("detect.combine-weights: {name} = {weight} is not a positive weight"));
            }
        }
        let m = &self.model;
        if m.intra_threads < 1 {
            errors.push(format!("model.intra-threads: {} is not positive", m.intra_threads));
        }
        if m.max_batch < 1 {
            errors.push(format!("model.max-batch: {} is not positive", m.max_batch));
        }
        if !(m.threshold >= 0.0 && m.threshold.is_finite()) {
            errors.push(format!("model.threshold: {} is negative", m.threshold));
        }
        let mut load_package = |path: &str, key: &str| -> Option<ModelConfig> {
            let dir = PathBuf::from(path);
            let meta =
                lobsentry_operators::model::ModelMeta::load(&dir).map_err(|e| errors.push(format!("{key}: {e}"))).ok();
            let lib = find_onnxruntime(&m.onnxruntime).map_err(|e| errors.push(e)).ok();
            if let Some(meta) = &meta {
                if !scales.is_empty() && !scales.iter().any(|(s, _)| *s == meta.window_ns) {
                    errors.push(format!(
                        "{key}: {} was trained on {} windows, and the detectors run on {} (detect.scales): add {:?} to detect.scales or use a model trained for them",
                        meta.name,
                        lobsentry_operators::features::human_len(meta.window_ns),
                        scales.iter().map(|(s, _)| lobsentry_operators::features::human_len(*s)).collect::<Vec<_>>().join(", "),
                        lobsentry_operators::features::human_len(meta.window_ns)
                    ));
                }
            }
            match (meta, lib) {
                (Some(meta), Some(onnxruntime)) => Some(ModelConfig {
                    dir,
                    meta,
                    onnxruntime,
                    intra_threads: m.intra_threads.max(1) as usize,
                    max_batch: m.max_batch.max(1) as usize,
                    threshold: (m.threshold > 0.0).then_some(m.threshold),
                }),
                _ => None,
            }
        };
        let skip_models = m.path.is_empty() || overrides.features_only;
        let model = if skip_models { None } else { load_package(&m.path, "model.path") };
        let mut extra_models = Vec::new();
        if !m.extra.is_empty() && m.path.is_empty() {
            errors.push("model.extra: needs model.path (the first model)".into());
        } else if !skip_models {
            for (i, path) in m.extra.iter().enumerate() {
                extra_models.extend(load_package(path, &format!("model.extra[{i}]")));
            }
        }
        let mut names: Vec<String> =
            model.iter().chain(&extra_models).map(|c| format!("{}@{}", c.meta.name, c.meta.version)).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            errors.push(format!("model.extra: {} is configured twice (each model needs its own name)", w[0]));
        }
        if let Some(e) = ensemble.as_mut() {
            // Score names (prefixes) of each detector that runs, by the name `detect.combine` uses.
            let running: [(&str, Vec<String>); 3] = [
                ("baseline", detect.iter().map(|_| "zscore-baseline".to_string()).collect()),
                (
                    "multivariate",
                    multivariate.iter().map(|_| lobsentry_operators::multivariate::NAME.to_string()).collect(),
                ),
                ("model", names.clone()),
            ];
            let combined = |label: &str| d.combine.iter().any(|c| c == label);
            for (label, prefixes) in &running {
                if !combined(label) {
                    e.left_out.extend(prefixes.iter().cloned());
                }
            }
            for (label, prefixes) in &running {
                if let Some(weight) = d.combine_weights.get(*label).filter(|_| combined(label)) {
                    e.weights.extend(prefixes.iter().map(|p| (p.clone(), *weight)));
                }
            }
            let any_runs = running.iter().any(|(_, p)| !p.is_empty());
            if any_runs && !running.iter().any(|(label, p)| combined(label) && !p.is_empty()) {
                errors.push(format!(
                    "detect.combine: none of {:?} runs here (running: {}); name at least one of them",
                    d.combine,
                    running.iter().filter(|(_, p)| !p.is_empty()).map(|(l, _)| *l).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        let writer = |topic: &str| {
            (!topic.is_empty()).then(|| {
                let mut w = lobsentry_operators::sink::kafka::KafkaWriterSpec::new(&self.kafka.brokers, topic);
                w.message_timeout = message_timeout.max(Duration::from_millis(100));
                w.properties = kafka_properties.clone();
                w
            })
        };
        let kafka_sinks = KafkaSinks {
            alerts: writer(&self.kafka.alerts_topic),
            scores: writer(&self.kafka.scores_topic),
            features: writer(&self.kafka.features_topic),
            dead_letter: writer(&self.kafka.dead_letter_topic).map(|mut w| {
                // Dead letters are whatever arrived: one over the size limit is cut, not refused.
                w.truncate_oversized = true;
                w
            }),
        };
        let sink_topics = kafka_sinks.alerts.is_some()
            || kafka_sinks.scores.is_some()
            || kafka_sinks.features.is_some()
            || kafka_sinks.dead_letter.is_some();
        if sink_topics && self.kafka.brokers.is_empty() {
            errors.push("kafka.brokers: Kafka output topics are configured but no brokers".into());
        }
        let checkpoint = if self.checkpoint.dir.is_empty() {
            None
        } else {
            if !matches!(source, SourceConfig::Kafka(_)) {
                errors.push(
                    "checkpoint.dir: checkpoints need the kafka source (files and the generator replay from the start)"
                        .into(),
                );
            }
            if interval.as_nanos() < 2 {
                errors.push("checkpoint.interval: must be positive".into());
            }
            if self.checkpoint.retain < 1 {
                errors.push(format!("checkpoint.retain: {} is not positive", self.checkpoint.retain));
            }
            Some(CheckpointConfig {
                dir: PathBuf::from(&self.checkpoint.dir),
                interval_ns: interval.as_nanos() as u64,
                max_wait: (!max_wait.is_zero()).then_some(max_wait),
                retain: self.checkpoint.retain.max(1) as usize,
            })
        };
        let process_index = cluster.as_ref().map_or(0, |c| c.process) as u16;
        let a = &self.analytics;
        let analytics = if (a.enabled || overrides.api_addr.is_some()) && !overrides.features_only {
            let text = overrides.api_addr.clone().unwrap_or_else(|| a.address.clone());
            let tick =
                parse_duration(&a.tick).map_err(|e| errors.push(format!("analytics.tick: {e}"))).unwrap_or_default();
            let retention = parse_duration(&a.retention)
                .map_err(|e| errors.push(format!("analytics.retention: {e}")))
                .unwrap_or_default();
            let sliding = parse_duration(&a.sliding)
                .map_err(|e| errors.push(format!("analytics.sliding: {e}")))
                .unwrap_or_default();
            let timeout = parse_duration(&a.query_timeout)
                .map_err(|e| errors.push(format!("analytics.query-timeout: {e}")))
                .unwrap_or_default();
            let serve = match a.serve_after_input.as_str() {
                "forever" => None,
                other => Some(
                    parse_duration(other)
                        .map_err(|e| errors.push(format!("analytics.serve-after-input: {e} (or \"forever\")")))
                        .unwrap_or_default(),
                ),
            };
            let spec = lobsentry_operators::analytics::AnalyticsSpec {
                tick_ns: tick.as_nanos() as u64,
                retention_ns: retention.as_nanos() as u64,
                sliding_ns: sliding.as_nanos() as u64,
                top_max: a.top_max.max(0) as usize,
            };
            if let Err(e) = spec.validate() {
                errors.push(format!("analytics: {e}"));
            }
            match text.parse::<std::net::SocketAddr>() {
                Ok(mut address) => {
                    if address.port() != 0 {
                        address.set_port(address.port().saturating_add(process_index));
                    }
                    Some(AnalyticsConfig { spec, address, serve_after_input: serve, query_timeout: timeout })
                }
                Err(_) => {
                    errors.push(format!("analytics.address: {text:?} is not an ip:port address"));
                    None
                }
            }
        } else {
            None
        };
        let webhook = WebhookConfig::from_raw(&self.webhook, &mut errors);
        let email = EmailConfig::from_raw(&self.email, &mut errors);
        let store = StoreConfig::from_raw(&self.store, &mut errors);
        let shutdown_grace = parse_duration(&self.pipeline.shutdown_grace)
            .map_err(|e| errors.push(format!("pipeline.shutdown-grace: {e}")))
            .unwrap_or_default();
        if !errors.is_empty() {
            return Err(Error::Config(errors));
        }
        let optional = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        let (visible_levels, book_levels) = book_levels(&self.book.visible_levels, &source, &mut errors);
        if !errors.is_empty() {
            return Err(Error::Config(errors));
        }
        Ok(Config {
            workers: workers as usize,
            book: self.pipeline.book,
            progress: self.pipeline.progress,
            shutdown_grace,
            source,
            window,
            book_config: lobsentry_operators::book::BookConfig {
                repair_ghosts: self.book.repair_ghosts,
                visible_levels,
            },
            book_levels,
            output,
            output_format,
            dead_letter: optional(&self.sink.dead_letter),
            late: optional(&self.sink.late),
            cluster,
            metrics_addr,
            detect,
            multivariate,
            scales: DetectScales { scales, ensemble, silent_windows: self.detect.silent_windows.max(0) as u64, slides },
            alerts: optional(&self.detect.alerts),
            scores: optional(&self.detect.scores),
            model,
            extra_models,
            kafka_sinks,
            checkpoint,
            analytics,
            webhook,
            email,
            store,
        })
    }
}

/// Loads and validates, with the process environment.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, Error> {
    load_raw(path, std::env::vars())?.validate(overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5m").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn default_is_valid() {
        let c = load_raw(None, Vec::new()).unwrap().validate(&Overrides::default()).unwrap();
        assert_eq!(c.workers, 1);
        assert!(matches!(c.source, SourceConfig::Synthetic(_)));
        assert_eq!(c.window, WindowSpec::tumbling(1_000_000_000));
    }

    #[test]
    fn env_overrides_and_every_error_at_once() {
        let env = vec![
            ("LOBSENTRY__WINDOW__SIZE".to_string(), "3x".to_string()),
            ("LOBSENTRY__PIPELINE__WORKERS".to_string(), "0".to_string()),
            ("LOBSENTRY__SOURCE__KIND".to_string(), "kafkaa".to_string()),
            ("UNRELATED".to_string(), "1".to_string()),
        ];
        let err = load_raw(None, env).unwrap().validate(&Overrides::default()).unwrap_err();
        let Error::Config(list) = err else { panic!("not a config error") };
        assert_eq!(list.len(), 3, "{list:?}");
        assert!(list[0].contains("window.size"));
    }

    /// The default configuration with `env`'s overrides, validated.
    fn load_env(env: &[(&str, &str)]) -> Result<Config, Error> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        load_raw(None, env).unwrap().validate(&Overrides::default())
    }

    /// The errors of [`load_env`] (a panic if it loads).
    fn env_errors(env: &[(&str, &str)]) -> Vec<String> {
        match load_env(env) {
            Err(Error::Config(list)) => list,
            other => panic!("not a config error: {:?}", other.map(|c| c.scales)),
        }
    }

    #[test]
    fn the_ensemble_combines_the_detectors_named() {
        let (load, errors) = (load_env, env_errors);
        let left_out = |c: Config| c.scales.ensemble.unwrap().left_out;
        assert_eq!(left_out(load(&[]).unwrap()), ["zscore-baseline"], "the default leaves the z-score out");
        let every = r#"["baseline", "multivariate", "model"]"#;
        assert!(left_out(load(&[("LOBSENTRY__DETECT__COMBINE", every)]).unwrap()).is_empty());
        // The budget's shares between the scales: 0.4 at 1 s and 1.3 at 10 s by default, [] equal.
        let ensemble = |env: &[(&str, &str)]| load(env).unwrap().scales.ensemble.unwrap();
        let default = ensemble(&[]);
        assert_eq!(default.shares, [(1_000_000_000, 0.4), (10_000_000_000, 1.3)]);
        assert!((default.bound(1_000_000_000) - 0.4 / 3600.0).abs() < 1e-15);
        let equal = ensemble(&[("LOBSENTRY__DETECT__SCALE_SHARES", "[]")]);
        assert!(equal.shares.is_empty() && (equal.bound(10_000_000_000) - 5.0 / 3600.0).abs() < 1e-15);
        let list = errors(&[("LOBSENTRY__DETECT__SCALE_SHARES", "[0.5]")]);
        assert!(
            list.iter().any(|e| e
                .contains("detect.scale-shares: [0.5] for detect.scales [\"1s\", \"10s\"]: give one share per scale")),
            "{list:?}"
        );
        let list = errors(&[("LOBSENTRY__DETECT__SCALE_SHARES", "[0.5, -1]")]);
        assert!(list.iter().any(|e| e.contains("detect.scale-shares: -1 is not a positive share")), "{list:?}");
        let only_t2 = left_out(load(&[("LOBSENTRY__DETECT__COMBINE", r#"["multivariate"]"#)]).unwrap());
        assert_eq!(only_t2.len(), 2, "{only_t2:?}");
        assert!(only_t2[1].starts_with("lobsentry-ae@"), "{only_t2:?}");
        let list = errors(&[("LOBSENTRY__DETECT__COMBINE", r#"["model", "modle"]"#)]);
        assert!(list.iter().any(|e| e.contains(r#"detect.combine: unknown detector "modle""#)), "{list:?}");
        // Weights by detector: the model at 0.25 by default (every model package), T² at 1.
        let weights = |c: lobsentry_operators::ensemble::EnsembleSpec| c.weights;
        let w = weights(default.clone());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].0.starts_with("lobsentry-ae@") && w[0].1 == 0.25, "{w:?}");
        assert_eq!(default.weight(lobsentry_operators::multivariate::NAME), 1.0);
        let equal = ensemble(&[("LOBSENTRY__DETECT__COMBINE_WEIGHTS", "{ model = 1.0 }")]);
        assert!(equal.weights.iter().all(|(_, w)| *w == 1.0), "{:?}", equal.weights);
        let t2 = ensemble(&[("LOBSENTRY__DETECT__COMBINE", r#"["multivariate"]"#)]);
        assert!(t2.weights.is_empty(), "a weight of a detector left out is not used: {:?}", t2.weights);
        let list = errors(&[("LOBSENTRY__DETECT__COMBINE_WEIGHTS", "{ modle = 2.0, model = -1.0 }")]);
        assert!(list.iter().any(|e| e.contains(r#"detect.combine-weights: unknown detector "modle""#)), "{list:?}");
        assert!(
            list.iter().any(|e| e.contains("detect.combine-weights: model = -1 is not a positive weight")),
            "{list:?}"
        );
        // Only the z-score runs, and the ensemble would combine nothing.
        let list = errors(&[("LOBSENTRY__MODEL__PATH", "\"\""), ("LOBSENTRY__DETECT__MULTIVARIATE", "false")]);
        assert!(
            list.iter().any(|e| e.contains("detect.combine: none of") && e.contains("running: baseline")),
            "{list:?}"
        );
    }

    #[test]
    fn scales_slide_when_asked_and_bad_slides_are_named() {
        let (load, errors) = (load_env, env_errors);
        const S: u64 = 1_000_000_000;
        let slides = |value: &str| load(&[("LOBSENTRY__DETECT__SCALE_SLIDES", value)]).unwrap().scales;
        let tumbling = slides("[]");
        assert!(tumbling.slides.is_empty());
        assert_eq!(tumbling.slide(10 * S), 10 * S);
        let sliding = slides(r#"["1s", "2s"]"#);
        assert_eq!(sliding.slides, [(10 * S, 2 * S)], "the primary scale's slide equals its length: not listed");
        assert_eq!(sliding.slide(10 * S), 2 * S);
        assert_eq!(sliding.slide(S), S);
        let one = |value: &str| errors(&[("LOBSENTRY__DETECT__SCALE_SLIDES", value)]);
        let list = one(r#"["1s"]"#);
        assert!(list.iter().any(|e| e.contains("give one slide per scale")), "{list:?}");
        let list = one(r#"["1s", "3s"]"#);
        assert!(
            list.iter().any(|e| e.contains(r#"detect.scale-slides: "3s" does not divide the scale "10s""#)),
            "{list:?}"
        );
        let list = one(r#"["1s", "500ms"]"#);
        assert!(list.iter().any(|e| e.contains("is not a multiple of the (tumbling) window.size 1s")), "{list:?}");
        let list = one(r#"["500ms", "1s"]"#);
        assert!(list.iter().any(|e| e.contains("set window.slide instead")), "{list:?}");
        let list = one(r#"["1s", "0s"]"#);
        assert!(list.iter().any(|e| e.contains("is not a positive duration")), "{list:?}");
    }

    /// `names` in a fresh directory for `tag`, each holding one LOBSTER message line.
    fn lobster_lines(tag: &str, names: &[&str]) -> (PathBuf, Vec<PathBuf>) {
        let dir = std::env::temp_dir().join(format!("lobsentry-config-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = names.iter().map(|n| dir.join(n)).collect::<Vec<_>>();
        for f in &files {
            std::fs::write(f, "34200.0,1,1,100,5000000,1\n").unwrap();
        }
        (dir, files)
    }

    /// A files source over `files`, validated, with further environment variables.
    fn load_files(files: &[&std::path::Path], extra: &[(&str, &str)]) -> Result<Config, Error> {
        let list: Vec<String> = files.iter().map(|f| format!("{:?}", f.display().to_string())).collect();
        let mut env = vec![
            ("LOBSENTRY__SOURCE__KIND".to_string(), "\"files\"".to_string()),
            ("LOBSENTRY__SOURCE__FILES".to_string(), format!("[{}]", list.join(", "))),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        load_raw(None, env).unwrap().validate(&Overrides::default())
    }

    #[test]
    fn a_declared_format_reads_files_named_otherwise() {
        let (dir, files) = lobster_lines("format", &["day1.txt"]);
        let load = |extra: &[(&str, &str)]| load_files(&[&files[0]], extra);
        let errors = |r: Result<Config, Error>| match r {
            Err(Error::Config(list)) => list.join("; "),
            other => panic!("not a config error: {:?}", other.map(|_| ())),
        };
        // From the name: ".txt" is no format.
        assert!(errors(load(&[])).contains("cannot tell the format"));
        // Declared LOBSTER without the instrument and day its name does not carry: both named.
        let e = errors(load(&[("LOBSENTRY__SOURCE__FORMAT", "\"lobster\"")]));
        assert!(e.contains("set `instrument`"), "{e}");
        let c = load(&[
            ("LOBSENTRY__SOURCE__FORMAT", "\"lobster\""),
            ("LOBSENTRY__SOURCE__INSTRUMENT", "\"MSFT\""),
            ("LOBSENTRY__SOURCE__DATE", "\"2012-06-21\""),
        ])
        .unwrap();
        match &c.source {
            SourceConfig::Files(spec) => {
                assert_eq!(spec.files[0].format, Format::Lobster);
                let ctx = spec.files[0].lobster_context().unwrap();
                assert_eq!(ctx.instrument, lobsentry_operators::event::InstrumentId::new("MSFT").unwrap());
            }
            _ => panic!("not a files source"),
        }
        assert!(c.book_levels.is_empty(), "a depth the name does not give: every level");
        let c = load(&[("LOBSENTRY__SOURCE__FORMAT", "\"csv\"")]).unwrap();
        assert!(matches!(&c.source, SourceConfig::Files(spec) if spec.files[0].format == Format::Csv));
        assert!(errors(load(&[("LOBSENTRY__SOURCE__FORMAT", "\"xml\"")])).contains("source.format: \"xml\""));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn books_keep_the_depth_of_their_lobster_files() {
        let (dir, files) = lobster_lines(
            "levels",
            &["AAPL_2012-06-21_34200000_57600000_message_7.csv", "INTC_2012-06-21_34200000_57600000_message_1.csv"],
        );
        let load = |levels: Option<&str>| {
            let value = levels.map(|v| format!("{v:?}"));
            let extra: Vec<(&str, &str)> =
                value.iter().map(|v| ("LOBSENTRY__BOOK__VISIBLE_LEVELS", v.as_str())).collect();
            load_files(&[&files[0], &files[1]], &extra)
        };
        // "all" keeps every level; "auto" the file's N, for its instrument only; the default, "shallow",
        // the file's N where it is below the five levels the depth features read.
        let id = |s: &str| lobsentry_operators::event::InstrumentId::new(s).unwrap();
        let c = load(Some("all")).unwrap();
        assert!(c.book_levels.is_empty() && c.book_config.visible_levels.is_none());
        let c = load(Some("auto")).unwrap();
        assert_eq!(c.book_levels, [(id("AAPL"), 7), (id("INTC"), 1)]);
        assert_eq!(c.book_config.visible_levels, None);
        for default in [load(None).unwrap(), load(Some("shallow")).unwrap()] {
            assert_eq!(default.book_levels, [(id("INTC"), 1)]);
            assert_eq!(default.book_config.visible_levels, None);
        }
        let c = load(Some("3")).unwrap();
        assert!(c.book_levels.is_empty());
        assert_eq!(c.book_config.visible_levels, Some(3));
        for bad in ["ten", "0"] {
            match load(Some(bad)) {
                Err(Error::Config(list)) => {
                    assert!(list.iter().any(|e| e.contains("book.visible-levels")), "{list:?}")
                }
                other => panic!("{bad}: not a config error: {:?}", other.map(|c| c.book_levels)),
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = std::env::temp_dir().join(format!("lobsentry-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(&path, "[window]\nsize = \"1s\"\nsliide = \"1s\"\n").unwrap();
        let err = load_raw(Some(&path), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("sliide"), "{err}");
    }
}
