//! `lobsentry run` (and `features`): starts the services, runs the dataflow, prints the summary.

use super::RunArgs;
use crate::config::{self, Overrides};
use crate::error::Error;
use crate::metrics::Counters;
use crate::runtime;
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(args: RunArgs, features_only: bool) -> Result<(), Error> {
    let overrides = Overrides {
        workers: args.job.workers,
        inputs: args.job.inputs.clone(),
        output: args.output.clone(),
        hostfile: args.hostfile.clone(),
        processes: args.processes,
        process: args.process,
        metrics_addr: args.metrics_addr.clone(),
        api_addr: args.api_addr.clone(),
        features_only,
    };
    let config = config::load(args.job.config.as_deref(), &overrides)?;
    crate::runtime::control::quiet_panics();
    let registry = prometheus::Registry::new();
    let counters = Arc::new(Counters::new(&registry, config.source.kind())?);
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let _server = match config.metrics_addr {
        Some(addr) => {
            let server = crate::serve::metrics::MetricsServer::start(addr, registry.clone(), ready.clone())?;
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
    // SIGINT/SIGTERM: stop reading, flush the sinks, report, exit 0. A second signal exits at once.
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, interrupted.clone())
            .and_then(|_| signal_hook::flag::register(signal, interrupted.clone()))
            .map_err(|e| Error::Io(format!("cannot handle signal {signal}: {e}")))?;
    }
    {
        // Until the dataflow runs (a cluster's processes may still be connecting), a signal ends the
        // process at once: there is nothing to flush yet.
        let (interrupted, counters) = (interrupted.clone(), counters.clone());
        std::thread::spawn(move || {
            while !counters.ready.load(Ordering::Relaxed) {
                if interrupted.load(Ordering::Relaxed) {
                    eprintln!("lobsentry: stopped by a signal before the dataflow started");
                    std::process::exit(130);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
    }
    // The query API: its requests reach this process's first worker through the hub.
    let hub = Arc::new(crate::runtime::query::QueryHub::default());
    let _api = match &config.analytics {
        Some(a) => {
            let server = crate::serve::api::ApiServer::start(
                a.address,
                hub.clone(),
                counters.clone(),
                a.spec,
                a.query_timeout,
                config.store.clone().map(crate::serve::history::History::new),
            )?;
            eprintln!("lobsentry: analytics API on http://{}/v1/ (see /v1/openapi.json)", server.addr());
            Some(server)
        }
        None => None,
    };
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
    let alert_sinks = crate::serve::alert_sinks(&config, &counters)?;
    let services = runtime::Services { hub: Some(hub), stop: interrupted.clone(), alert_sinks };
    let result = runtime::run_with(&config, counters, services);
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
            "books: {} events applied; unknown orders {}, duplicate ids {}, over-cancels {}, missing levels {}, crossed {}, ghost levels removed {}, levels beyond view forgotten {}",
            b.events, b.unknown_order, b.duplicate_order, b.over_cancel, b.missing_level, b.crossed, b.ghost_levels_removed, b.levels_beyond_view
        );
    }
    if report.rejected > 0 {
        eprintln!("rejected lines (first {} of {}):", report.first_rejected.len(), report.rejected);
        for r in &report.first_rejected {
            eprintln!("  {r}");
        }
    }
    if let Some(c) = &report.cluster {
        let by: Vec<String> = c.anomalies.iter().filter(|(_, n)| *n > 0).map(|(d, n)| format!("{d} {n}")).collect();
        eprintln!(
            "cluster ({} processes): {} events, {} windows, {} late, {} rejected; anomalies by detector: {}",
            c.processes,
            c.events,
            c.windows,
            c.late,
            c.rejected,
            if by.is_empty() { "none".to_string() } else { by.join(", ") }
        );
    }
    for w in &report.warnings {
        eprintln!("lobsentry: warning: {w}");
    }
    if report.stopped {
        eprintln!("lobsentry: stopped by a signal before the end of the input; the counts above cover what was read");
    }
    let primary = crate::alert::primary_detector(&config);
    if config.detect.is_some() || config.model.is_some() {
        // The same numbers as lobsentry_detect_anomalies_total{detector} and /v1/anomalies (alerts).
        let by: Vec<String> = report.anomalies_by_detector.iter().map(|(d, n)| format!("{d} {n}")).collect();
        // Windows decided per scale: a window is scored from its first, but decides (can alert)
        // only after the instrument's warm-up on that scale.
        let decided: Vec<String> =
            report.decided.iter().map(|(scale, scored, n)| format!("{scale} {n} of {scored}")).collect();
        eprintln!(
            "detectors: {} windows {} by the {primary}{}; {} alerts ({primary}); anomalies by detector: {}",
            report.scored,
            // The ensemble emits a window only once it decides it (after the warm-up).
            if report.decided.is_empty() { "scored" } else { "decided" },
            if decided.is_empty() {
                String::new()
            } else {
                format!(" (windows decided, of those scored, per scale: {})", decided.join(", "))
            },
            report.anomalies.len(),
            if by.is_empty() { "none".to_string() } else { by.join(", ") }
        );
    }
    if config.output == config::Output::None {
        println!("{}", report.summary.render(&report.labels));
        if config.detect.is_some() {
            let hours = report.summary.instrument_hours();
            println!("{}", crate::summary::render_anomalies(primary, &report.anomalies, &report.labels, 25, hours));
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
    if let Some(mut path) = args.job.report_json {
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
            "stopped": report.stopped,
            "scored": report.scored,
            "alerts": report.anomalies.len(),
            "detector": primary,
            "anomalies_by_detector": report.anomalies_by_detector.iter().map(|(d, n)| (d.to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
            "warnings": report.warnings,
            "cluster": report.cluster,
        });
        std::fs::write(&path, json.to_string()).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
