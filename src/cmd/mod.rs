//! Command-line interface (clap derive): one module per subcommand.

use crate::error::Error;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

pub mod bench;
pub mod check_config;
pub mod eval;
pub mod generate;
pub mod inject;
pub mod launch;
pub mod produce;
pub mod replay;
pub mod run;

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
    Features(FeaturesArgs),
    /// Evaluate scores against anomaly labels: ROC-AUC, PR-AUC, precision, recall, detection delay.
    Eval(eval::EvalArgs),
    /// Validate a configuration and print the effective settings.
    CheckConfig(ConfigArgs),
    /// Write a synthetic market (interchange CSV or JSON lines) and its anomaly labels.
    Generate(generate::GenerateArgs),
    /// Replay LOBSTER messages and write the top-K levels after each one, with a consistency report.
    Book(replay::BookArgs),
    /// Measure throughput (events/s) and peak memory of the standard pipelines.
    Bench(bench::BenchArgs),
    /// Start a local cluster of `run` processes on free loopback ports (for development).
    Launch(launch::LaunchArgs),
    /// Load an event file into a Kafka topic, keyed by instrument (for demos and benchmarks).
    Produce(produce::ProduceArgs),
}

/// `--config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML configuration merged over the embedded default (see config/default.toml).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

/// What `run` and `features` share.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// TOML configuration merged over the embedded default (see config/default.toml).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Worker threads (overrides pipeline.workers).
    #[arg(short = 'w', long = "workers")]
    pub workers: Option<usize>,
    /// Input file (repeatable; switches the source to files and overrides source.files).
    #[arg(long = "input", short = 'i')]
    pub inputs: Vec<PathBuf>,
    /// Write the run's report (counts, timings, peak memory) as JSON to this file.
    #[arg(long)]
    pub report_json: Option<PathBuf>,
}

/// Arguments of `features`: a run without detectors, the analytics or the API.
#[derive(Debug, Args)]
pub struct FeaturesArgs {
    /// Configuration, workers, inputs, report.
    #[command(flatten)]
    pub job: JobArgs,
    /// The feature CSV to write (required).
    #[arg(long, short = 'o')]
    pub output: String,
}

impl From<FeaturesArgs> for RunArgs {
    fn from(f: FeaturesArgs) -> RunArgs {
        RunArgs {
            job: f.job,
            output: Some(f.output),
            hostfile: None,
            processes: None,
            process: None,
            metrics_addr: None,
            api_addr: None,
        }
    }
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Configuration, workers, inputs, report.
    #[command(flatten)]
    pub job: JobArgs,
    /// Window output: a file (.csv or .jsonl) or "-" for stdout (overrides sink.path).
    #[arg(long, short = 'o')]
    pub output: Option<String>,
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
        Command::Run(args) => run::run(args, false),
        Command::Features(args) => run::run(args.into(), true),
        Command::Eval(args) => eval::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Book(args) => replay::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Launch(args) => launch::run(args),
        Command::Produce(args) => produce::run(args),
    }
}
