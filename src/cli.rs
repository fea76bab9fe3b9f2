//! Command-line interface (clap derive) and the commands behind it.

use crate::config::{self, Overrides};
use crate::error::Error;
use crate::pipeline::{self, Counters};
use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Real-time limit-order-book anomaly detection on timely dataflow.
#[derive(Debug, Parser)]
#[command(name = "lobsentry", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline: source -> books -> event-time windows -> features -> sink.
    Run(RunArgs),
    /// Write every window feature as CSV for training (`run` without detectors; needs --output).
    Features(RunArgs),
    /// Evaluate scores against anomaly labels: ROC-AUC, PR-AUC, precision, recall, detection delay.
    Eval(crate::eval::EvalArgs),
    /// Validate a configuration and print the effective settings.
    CheckConfig(ConfigArgs),
    /// Write a synthetic market (interchange CSV or JSON lines) and its anomaly labels.
    Generate(crate::generate::GenerateArgs),
    /// Replay LOBSTER messages and write the top-K levels after each one, with a consistency report.
    Book(crate::replay::BookArgs),
    /// Measure throughput (events/s) and peak memory of the standard pipelines.
    Bench(crate::bench::BenchArgs),
    /// Start a local cluster of `run` processes on free loopback ports (for development).
    Launch(crate::launch::LaunchArgs),
    /// Load an event file into a Kafka topic, keyed by instrument (for demos and benchmarks).
    Produce(crate::produce::ProduceArgs),
}

/// `--config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML configuration merged over the embedded default (see config/default.toml).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration merged over the embedded default (see config/default.toml).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Worker threads (overrides pipeline.workers).
    #[arg(short = 'w', long = "workers")]
    pub workers: Option<usize>,
    /// Input file (repeatable; switches the source to files and overrides source.files).
    #[arg(long = "input", short = 'i')]
    pub inputs: Vec<PathBuf>,
    /// Window output: a file (.csv or .jsonl) or "-" for stdout (overrides sink.path).
    #[arg(long, short = 'o')]
    pub output: Option<String>,
    /// Write the run's report (counts, timings, peak memory) as JSON to this file.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
    /// Timely hostfile (one host:port per line) to run as one process of a cluster.
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
    /// Number of processes in the cluster.
    #[arg(short = 'n', long = "processes")]
    pub processes: Option<usize>,
    /// This process's index in the cluster (0-based).
    #[arg(short = 'p', long = "process")]
    pub process: Option<usize>,
    /// Serve metrics at this address (overrides metrics.address and enables metrics; port 0 = any).
    #[arg(long)]
    pub metrics_addr: Option<String>,
    /// Maintain the analytics and serve the query API at this address (overrides analytics.address
    /// and enables the analytics; port 0 = any).
    #[arg(long)]
    pub api_addr: Option<String>,
}

/// Runs the CLI.
pub fn main(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Run(args) => run(args, false),
        Command::Features(args) => {
            if args.output.is_none() {
                return Err(Error::Config(vec!["features: --output FILE.csv is required".into()]));
            }
            run(args, true)
        }
        Command::Eval(args) => crate::eval::run(args),
        Command::CheckConfig(args) => {
            let config = config::load(args.config.as_deref(), &Overrides::default())?;
            println!("configuration is valid:\n{config:#?}");
            Ok(())
        }
        Command::Generate(args) => crate::generate::run(args),
        Command::Book(args) => crate::replay::run(args),
        Command::Bench(args) => crate::bench::run(args),
        Command::Launch(args) => crate::launch::run(args),
        Command::Produce(args) => crate::produce::run(args),
    }
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn run(args: RunArgs, features_only: bool) -> Result<(), Error> {
    let overrides = Overrides {
        workers: args.workers,
        inputs: args.inputs.clone(),
        output: args.output.clone(),
        hostfile: args.hostfile.clone(),
        processes: args.processes,
        process: args.process,
        metrics_addr: args.metrics_addr.clone(),
        api_addr: args.api_addr.clone(),
        features_only,
    };
    let config = config::load(args.config.as_deref(), &overrides)?;
    let registry = prometheus::Registry::new();
    let counters = Arc::new(Counters::new(&registry, config.source.kind())?);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _server = match config.metrics_addr {
        Some(addr) => {
            let server = crate::metrics_server::MetricsServer::start(addr, registry.clone(), ready.clone())?;
            eprintln!("lobsentry: metrics on http://{}/metrics", server.addr());
            Some(server)
        }
        None => None,
    };
    {
        // /readyz follows the dataflow's readiness.
        let (counters, ready) = (counters.clone(), ready.clone());
        std::thread::spawn(move || {
            while !counters.ready.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            ready.store(true, Ordering::Relaxed);
        });
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = (config.progress && std::io::stderr().is_terminal()).then(|| {
        let (counters, stop) = (counters.clone(), stop.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let events = counters.metrics.events.get();
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                let wm = counters.watermark();
                let wm = if wm == u64::MAX { "done".to_string() } else { format!("{wm}") };
                eprint!("\r{events:>12} events  {:>10.0} events/s  watermark {wm:<22}", events as f64 / secs);
            }
            eprintln!();
        })
    });
    let result = pipeline::run(&config, counters);
    stop.store(true, Ordering::Relaxed);
    if let Some(handle) = progress {
        let _ = handle.join();
    }
    let report = result?;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let rss = peak_rss_bytes().unwrap_or(0);
    eprintln!(
        "lobsentry: {} events in {:.3} s ({:.0} events/s), {} windows, {} late, {} rejected, peak RSS {:.1} MiB",
        report.events,
        secs,
        report.events as f64 / secs,
        report.windows,
        report.late,
        report.rejected,
        rss as f64 / (1 << 20) as f64
    );
    if config.book {
        let b = &report.book;
        eprintln!(
            "books: {} events applied; unknown orders {}, duplicate ids {}, over-cancels {}, missing levels {}, crossed {}, ghost levels removed {}",
            b.events, b.unknown_order, b.duplicate_order, b.over_cancel, b.missing_level, b.crossed, b.ghost_levels_removed
        );
    }
    if report.rejected > 0 {
        eprintln!("rejected lines (first {} of {}):", report.first_rejected.len(), report.rejected);
        for r in &report.first_rejected {
            eprintln!("  {r}");
        }
    }
    if config.detect.is_some() {
        eprintln!("detector: {} windows scored, {} anomalies", report.scored, report.anomalies.len());
    }
    if config.output == config::Output::None {
        println!("{}", report.summary.render(&report.labels));
        if config.detect.is_some() {
            let hours = report.summary.instrument_hours();
            println!("{}", crate::summary::render_anomalies(&report.anomalies, &report.labels, 25, hours));
        }
        if !report.labels.is_empty() {
            println!("injected episodes: {}", report.labels.len());
            for l in report.labels.iter().take(20) {
                println!(
                    "  {:<10} {:<22} {} .. {} UTC",
                    l.instrument.as_str(),
                    l.kind.name(),
                    crate::summary::clock(l.start_ns),
                    crate::summary::clock(l.end_ns)
                );
            }
        }
    }
    if let Some(mut path) = args.report_json {
        if let Some(c) = config.cluster.as_ref().filter(|c| c.process > 0) {
            path = path.with_extension(format!("p{}", c.process));
        }
        let json = serde_json::json!({
            "events": report.events,
            "rejected": report.rejected,
            "late": report.late,
            "windows": report.windows,
            "elapsed_s": secs,
            "events_per_s": report.events as f64 / secs,
            "peak_rss_bytes": rss,
            "workers": config.workers,
            "process": config.cluster.as_ref().map_or(0, |c| c.process),
            "processes": config.cluster.as_ref().map_or(1, |c| c.addresses.len()),
            "book": report.book,
        });
        std::fs::write(&path, json.to_string()).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
