//! The run summary printed when windows are not written anywhere: the most extreme windows by a few
//! features, so a glance shows what the market did.

use lobsentry_operators::event::InstrumentId;
use lobsentry_operators::features::WindowFeatures;
use lobsentry_operators::generator::AnomalyLabel;
use std::collections::{HashMap, HashSet};
use std::fmt::Write;

/// Criteria a window is ranked by: (title, feature, use the absolute value).
pub const CRITERIA: [(&str, &str, bool); 4] = [
    ("busiest windows (messages/s)", "msg_rate", false),
    ("largest mid-price moves (|log return|)", "log_return", true),
    ("widest time-weighted spreads ($)", "spread_twa", false),
    ("largest order-flow imbalance (|OFI|, shares)", "ofi", true),
];

const TOP: usize = 5;

/// `HH:MM:SS.mmm` (UTC) of an event time in ns.
pub fn clock(ns: u64) -> String {
    let ms = ns / 1_000_000 % 86_400_000;
    format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
}

/// Running summary of the windows of a run.
#[derive(Debug, Default)]
pub struct Summary {
    /// Windows seen.
    pub windows: u64,
    instruments: HashSet<InstrumentId>,
    span: HashMap<InstrumentId, (u64, u64)>,
    top: [Vec<(f64, InstrumentId, u64, u64)>; CRITERIA.len()],
}

impl Summary {
    /// Takes a window into account.
    pub fn observe(&mut self, w: &WindowFeatures) {
        self.windows += 1;
        self.instruments.insert(w.instrument);
        let span = self.span.entry(w.instrument).or_insert((w.window.start, w.window.end));
        span.0 = span.0.min(w.window.start);
        span.1 = span.1.max(w.window.end);
        for (i, (_, feature, abs)) in CRITERIA.iter().enumerate() {
            let Some(mut v) = w.get(feature) else { continue };
            if !v.is_finite() {
                continue;
            }
            if *abs {
                v = v.abs();
            }
            let top = &mut self.top[i];
            if top.len() < TOP || v > top[top.len() - 1].0 {
                top.push((v, w.instrument, w.window.start, w.window.end));
                top.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
                top.truncate(TOP);
            }
        }
    }

    /// Instrument-hours of event time the windows cover (first window start to last window end, per
    /// instrument).
    pub fn instrument_hours(&self) -> f64 {
        self.span.values().map(|(a, b)| (b - a) as f64 / 3600e9).sum()
    }

    /// Renders the summary; windows overlapping an injected episode name it.
    pub fn render(&self, labels: &[AnomalyLabel]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} windows over {} instruments", self.windows, self.instruments.len());
        for (i, (title, _, _)) in CRITERIA.iter().enumerate() {
            if self.top[i].is_empty() {
                continue;
            }
            let _ = writeln!(out, "\n{title}:");
            for (v, instrument, start, end) in &self.top[i] {
                let hit: Vec<&str> = labels
                    .iter()
                    .filter(|l| l.instrument == *instrument && l.start_ns < *end && l.end_ns >= *start)
                    .map(|l| l.kind.name())
                    .collect();
                let tag = if hit.is_empty() { String::new() } else { format!("  <- injected {}", hit.join(", ")) };
                let _ = writeln!(out, "  {instrument:<10} window {} {v:>14.6}{tag}", clock(*start));
            }
        }
        out
    }
}

/// Lists anomalies (up to `limit`) with the injected episode each one overlaps, and how many
/// episodes were found.
pub fn render_anomalies(
    detector: &str,
    anomalies: &[lobsentry_operators::detect::WindowScore],
    labels: &[AnomalyLabel],
    limit: usize,
    instrument_hours: f64,
) -> String {
    let mut out = String::new();
    let overlaps = |l: &AnomalyLabel, a: &lobsentry_operators::detect::WindowScore| {
        l.instrument == a.instrument && l.start_ns < a.window.end && l.end_ns >= a.window.start
    };
    let _ = writeln!(out, "anomalies ({detector}): {}", anomalies.len());
    for a in anomalies.iter().take(limit) {
        let label: Vec<&str> = labels.iter().filter(|l| overlaps(l, a)).map(|l| l.kind.name()).collect();
        let mut features: Vec<String> = a.top_features.iter().map(|(n, z)| format!("{n} {z:+.1}")).collect();
        if !a.detectors.is_empty() {
            let by: Vec<String> =
                a.detectors.iter().take(2).map(|(d, l)| format!("{d} p={:.0e}", 10f64.powf(-l))).collect();
            features.insert(0, by.join(" "));
        }
        let tag =
            if label.is_empty() { "  (no injected episode)".to_string() } else { format!("  <- {}", label.join(", ")) };
        let _ = writeln!(
            out,
            "  {:<10} {} {:>4}  score {:>7.1}  [{}]{tag}",
            a.instrument.as_str(),
            clock(a.window.start),
            lobsentry_operators::features::human_len(a.window.end - a.window.start),
            a.score,
            features.join(", ")
        );
    }
    if anomalies.len() > limit {
        let _ = writeln!(out, "  ... and {} more", anomalies.len() - limit);
    }
    if !labels.is_empty() {
        let found = labels.iter().filter(|l| anomalies.iter().any(|a| overlaps(l, a))).count();
        let false_alarms = anomalies.iter().filter(|a| !labels.iter().any(|l| overlaps(l, a))).count();
        let _ = writeln!(
            out,
            "injected episodes with at least one anomalous window: {found}/{} ({:.0}%)",
            labels.len(),
            100.0 * found as f64 / labels.len() as f64
        );
        let _ = writeln!(
            out,
            "false alarms (anomalous windows outside every episode): {false_alarms} in {instrument_hours:.1} instrument-hours = {:.2} per instrument-hour",
            false_alarms as f64 / instrument_hours.max(1e-9)
        );
    }
    out
}
