//! `lobsentry generate`: a synthetic market to a file, with its anomaly labels.

use crate::config::parse_duration;
use crate::error::{io_at, Error};
use clap::Args;
use lobsentry_operators::generator::{parse_kinds, AnomalyKind, Disorder, Market, MarketSpec};
use lobsentry_operators::source::decode::{write_csv_line, write_json_line, CSV_HEADER};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// Arguments of `generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Output file: interchange CSV, or JSON lines when it ends in .jsonl.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Label file (CSV: instrument,kind,start_ns,end_ns). Default: OUT with .labels.csv.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Instruments.
    #[arg(long, default_value_t = 100)]
    pub instruments: usize,
    /// Events in total.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Market-wide events per second of event time.
    #[arg(long, default_value_t = 100_000.0)]
    pub rate: f64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Shuffle events within this bound ("0ms" keeps time order).
    #[arg(long, default_value = "0ms")]
    pub disorder: String,
    /// Fraction of events delayed by --late-delay.
    #[arg(long, default_value_t = 0.0)]
    pub late_fraction: f64,
    /// Delay of the late events.
    #[arg(long, default_value = "5s")]
    pub late_delay: String,
    /// Injected episodes per instrument-hour of event time (0 = none).
    #[arg(long, default_value_t = 6.0)]
    pub anomalies_per_hour: f64,
    /// Instead of a synthetic market, copy this LOBSTER message file to --out with injected, labelled
    /// episodes (see --kinds); --out must keep a LOBSTER file name.
    #[arg(long)]
    pub inject_into: Option<PathBuf>,
    /// With --inject-into: mean seconds between injected episodes.
    #[arg(long, default_value_t = 600.0)]
    pub inject_every: f64,
    /// The kinds of episode, drawn uniformly: "standard" (the kinds the detectors' settings were
    /// chosen with: for a synthetic market liquidity_withdrawal, flash_crash, layering, quote_stuffing,
    /// spread_blowout; with --inject-into quote_stuffing, layering, flash_crash), "held-out" (spoofing,
    /// momentum_ignition, wash_trades, fleeting_quotes, phantom_depth: kinds no setting was chosen
    /// with), "held-out-2" (spoof_and_trade, pennying, feed_gap: a second such group, which informed
    /// one choice since), "held-out-3" (price_ramping, quote_flicker, pinging: a third, seen by one
    /// choice), "held-out-4" (off_market_prints, slow_layering, two_sided_spoofing: a fourth, seen by
    /// none but trials), "held-out-5" (odd_lot_flood, iceberg_refill, cancel_replace_storm: a fifth,
    /// seen by none), or a comma-separated list of names.
    #[arg(long, default_value = "standard")]
    pub kinds: String,
}

/// Writes the market.
pub fn run(args: GenerateArgs) -> Result<(), Error> {
    let mut errors = Vec::new();
    let disorder = parse_duration(&args.disorder).unwrap_or_else(|e| {
        errors.push(format!("--disorder: {e}"));
        Default::default()
    });
    let late_delay = parse_duration(&args.late_delay).unwrap_or_else(|e| {
        errors.push(format!("--late-delay: {e}"));
        Default::default()
    });
    if args.instruments == 0 {
        errors.push("--instruments must be positive".into());
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        errors.push("--rate must be positive".into());
    }
    if !(0.0..=1.0).contains(&args.late_fraction) {
        errors.push("--late-fraction must be in [0, 1]".into());
    }
    if !errors.is_empty() {
        return Err(Error::Config(errors));
    }
    if let Some(messages) = &args.inject_into {
        let labels_path = args.labels.clone().unwrap_or_else(|| args.out.with_extension("labels.csv"));
        let name = args.out.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if lobsentry_operators::source::decode::LobsterName::parse(name).is_none() {
            return Err(Error::Config(vec![format!(
                "--out {name:?}: keep a LOBSTER message file name (TICKER_DATE_start_end_message_N.csv) so it can be read back"
            )]));
        }
        let kinds = parse_kinds(&args.kinds, &AnomalyKind::INJECTED)
            .map_err(|e| Error::Config(vec![format!("--kinds: {e}")]))?;
        let n = super::inject::inject(messages, &args.out, &labels_path, args.inject_every, args.seed, &kinds)?;
        eprintln!("wrote {} with {n} injected episodes, labels in {}", args.out.display(), labels_path.display());
        return Ok(());
    }
    let kinds =
        parse_kinds(&args.kinds, &AnomalyKind::ALL).map_err(|e| Error::Config(vec![format!("--kinds: {e}")]))?;
    let spec = MarketSpec {
        instruments: args.instruments,
        events: Some(args.events),
        rate_per_sec: args.rate,
        seed: args.seed,
        anomalies_per_instrument_hour: args.anomalies_per_hour,
        kinds,
        ..MarketSpec::default()
    };
    let json = args.out.extension().is_some_and(|e| e == "jsonl" || e == "json" || e == "ndjson");

    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&args.out).map_err(io_at(&args.out))?);
    if !json {
        writeln!(out, "{CSV_HEADER}").map_err(io_at(&args.out))?;
    }
    let mut market = Disorder::new(
        Market::new(&spec),
        args.seed,
        disorder.as_nanos() as u64,
        args.late_fraction,
        late_delay.as_nanos() as u64,
    );
    let mut line = String::with_capacity(128);
    let mut count = 0u64;
    for ev in market.by_ref() {
        line.clear();
        if json {
            write_json_line(&ev, &mut line);
        } else {
            write_csv_line(&ev, &mut line);
        }
        line.push('\n');
        out.write_all(line.as_bytes()).map_err(io_at(&args.out))?;
        count += 1;
    }
    out.flush().map_err(io_at(&args.out))?;
    let mut labels = market.inner_mut().take_labels();
    labels.sort_by_key(|l| (l.start_ns, l.instrument));
    let labels_path = args.labels.unwrap_or_else(|| {
        let stem = args.out.file_stem().and_then(|s| s.to_str()).unwrap_or("market");
        args.out.with_file_name(format!("{stem}.labels.csv"))
    });
    let mut lw = BufWriter::new(std::fs::File::create(&labels_path).map_err(io_at(&labels_path))?);
    writeln!(lw, "instrument,kind,start_ns,end_ns").map_err(io_at(&labels_path))?;
    for l in &labels {
        writeln!(lw, "{},{},{},{}", l.instrument, l.kind.name(), l.start_ns, l.end_ns).map_err(io_at(&labels_path))?;
    }
    lw.flush().map_err(io_at(&labels_path))?;
    eprintln!(
        "wrote {count} events ({} instruments) to {} and {} labels to {}",
        args.instruments,
        args.out.display(),
        labels.len(),
        labels_path.display()
    );
    Ok(())
}
