//! `lobsentry eval`: detectors against anomaly labels.
//!
//! A window is positive when it overlaps a labelled episode of its instrument. Every detector is
//! evaluated on the same windows (those every detector in the file scored), so warm-up differences do
//! not favour one; each instrument's last window, cut short by the end of the input, is left out. Reported per detector, overall and per anomaly type: ROC-AUC, PR-AUC (average
//! precision), precision and recall at the detector's threshold, episodes detected, and detection delay
//! (end of the first anomalous window overlapping an episode minus the episode's start).

use crate::error::{io_at, Error};
use clap::Args;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::BufRead;
use std::path::PathBuf;

/// Arguments of `eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Scores as JSON lines (`detect.scores` of a run).
    #[arg(long)]
    pub scores: PathBuf,
    /// Labels CSV (`instrument,kind,start_ns,end_ns`, as `lobsentry generate` writes).
    #[arg(long)]
    pub labels: PathBuf,
    /// The run's window features (`lobsentry run --output F.csv`): adds the reference detector
    /// `reference-zscore5`, a plain rolling z-score over five simple features
    /// ([`lobsentry_operators::detect::REFERENCE_FEATURES`]), and every 1 s detector's PR-AUC over
    /// the reference's.
    #[arg(long)]
    pub features: Option<PathBuf>,
}

/// The name of the reference detector `--features` adds.
pub const REFERENCE: &str = "reference-zscore5";

/// Scores a features CSV (`instrument,window_start_ns,window_end_ns,` then feature names) with the
/// plain rolling z-score over [`lobsentry_operators::detect::REFERENCE_FEATURES`] (the baseline's
/// span, warm-up and threshold).
pub fn reference_scores(path: &PathBuf) -> Result<Vec<Scored>, Error> {
    use lobsentry_operators::detect::{ZScoreSpec, ZScoreState, REFERENCE_FEATURES};
    use lobsentry_operators::event::InstrumentId;
    use lobsentry_operators::features::{WindowFeatures, FEATURE_COUNT, FEATURE_NAMES};
    use lobsentry_operators::window::Window;
    let file = std::fs::File::open(path).map_err(io_at(path))?;
    let mut lines = std::io::BufReader::new(file).lines();
    let header = lines.next().transpose().map_err(io_at(path))?.unwrap_or_default();
    let columns: Vec<Option<usize>> =
        header.split(',').map(|name| FEATURE_NAMES.iter().position(|f| *f == name.trim())).collect();
    if header.split(',').take(3).collect::<Vec<_>>() != ["instrument", "window_start_ns", "window_end_ns"]
        || !REFERENCE_FEATURES.iter().all(|n| header.split(',').any(|h| h == *n))
    {
        return Err(Error::Data(format!(
            "{}: want a features CSV (instrument,window_start_ns,window_end_ns,{} ...)",
            path.display(),
            REFERENCE_FEATURES.join(",")
        )));
    }
    let mut windows: Vec<WindowFeatures> = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line.map_err(io_at(path))?;
        let bad = |what: &str| Error::Data(format!("{}:{}: {what}", path.display(), n + 2));
        let f: Vec<&str> = line.split(',').collect();
        if f.len() != columns.len() {
            return Err(bad("wrong number of fields"));
        }
        let mut values = [f64::NAN; FEATURE_COUNT];
        for (text, column) in f.iter().zip(&columns) {
            if let (Some(i), false) = (column, text.is_empty()) {
                values[*i] = text.parse().map_err(|_| bad("a feature is not a number"))?;
            }
        }
        windows.push(WindowFeatures {
            instrument: InstrumentId::new(f[0]).map_err(|e| bad(&e))?,
            window: Window {
                start: f[1].parse().map_err(|_| bad("bad window_start_ns"))?,
                end: f[2].parse().map_err(|_| bad("bad window_end_ns"))?,
            },
            exec_price_range: None,
            vwap_ticks: None,
            values,
        });
    }
    windows.sort_by(|a, b| (a.instrument.as_str(), a.window.end).cmp(&(b.instrument.as_str(), b.window.end)));
    let spec = ZScoreSpec::default();
    let mut states: HashMap<InstrumentId, ZScoreState> = HashMap::new();
    Ok(windows
        .iter()
        .filter_map(|w| states.entry(w.instrument).or_default().score_features(w, &spec, &REFERENCE_FEATURES))
        .map(|s| Scored {
            instrument: s.instrument.as_str().to_string(),
            start: s.window.start,
            end: s.window.end,
            score: s.score,
            alert: s.is_anomaly,
        })
        .collect())
}

/// One scored window.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Instrument.
    pub instrument: String,
    /// Window start (ns).
    pub start: u64,
    /// Window end (ns).
    pub end: u64,
    /// Score.
    pub score: f64,
    /// Flagged.
    pub alert: bool,
}

/// One labelled episode.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    /// Instrument.
    pub instrument: String,
    /// Kind name.
    pub kind: String,
    /// Start (ns).
    pub start: u64,
    /// End (ns).
    pub end: u64,
}

/// Metrics of one detector on one set of windows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Windows evaluated.
    pub windows: usize,
    /// Positive windows.
    pub positives: usize,
    /// ROC-AUC.
    pub roc_auc: f64,
    /// PR-AUC (average precision).
    pub pr_auc: f64,
    /// Precision at the threshold.
    pub precision: f64,
    /// Recall at the threshold.
    pub recall: f64,
    /// Episodes with at least one alert.
    pub detected: usize,
    /// Episodes.
    pub episodes: usize,
    /// Median detection delay of detected episodes, seconds.
    pub median_delay_s: f64,
}

/// ROC-AUC by ranks (ties share their average rank).
pub fn roc_auc(scores: &[(f64, bool)]) -> f64 {
    let pos = scores.iter().filter(|s| s.1).count() as f64;
    let neg = scores.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return f64::NAN;
    }
    let mut sorted: Vec<(f64, bool)> = scores.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg * sorted[i..=j].iter().filter(|s| s.1).count() as f64;
        i = j + 1;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// Average precision (area under the precision-recall curve, step-wise; tied scores form one step).
pub fn average_precision(scores: &[(f64, bool)]) -> f64 {
    let pos = scores.iter().filter(|s| s.1).count() as f64;
    if pos == 0.0 {
        return f64::NAN;
    }
    let mut sorted: Vec<(f64, bool)> = scores.to_vec();
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut seen, mut ap) = (0.0, 0.0, 0.0);
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1].0 == sorted[i].0 {
            j += 1;
        }
        let group_tp = sorted[i..=j].iter().filter(|s| s.1).count() as f64;
        tp += group_tp;
        seen += (j - i + 1) as f64;
        ap += (group_tp / pos) * (tp / seen);
        i = j + 1;
    }
    ap
}

fn by_instrument<'a>(list: &[&'a Episode]) -> HashMap<&'a str, Vec<&'a Episode>> {
    let mut m: HashMap<&str, Vec<&Episode>> = HashMap::new();
    for e in list {
        m.entry(e.instrument.as_str()).or_default().push(*e);
    }
    m
}

fn overlaps(w: &Scored, e: &Episode) -> bool {
    w.instrument == e.instrument && w.start <= e.end && w.end > e.start
}

/// Evaluates windows against episodes (`episodes` restricts positives; windows overlapping any of
/// `all_episodes` outside `episodes` are left out, so other kinds are neither positives nor negatives).
pub fn evaluate(windows: &[Scored], episodes: &[&Episode], all_episodes: &[Episode]) -> Metrics {
    let target = by_instrument(episodes);
    let all_refs: Vec<&Episode> = all_episodes.iter().collect();
    let any = by_instrument(&all_refs);
    let mut points = Vec::new();
    let (mut tp, mut fp, mut fn_) = (0usize, 0usize, 0usize);
    for w in windows {
        let positive = target.get(w.instrument.as_str()).is_some_and(|es| es.iter().any(|e| overlaps(w, e)));
        if !positive && any.get(w.instrument.as_str()).is_some_and(|es| es.iter().any(|e| overlaps(w, e))) {
            continue;
        }
        points.push((w.score, positive));
        match (positive, w.alert) {
            (true, true) => tp += 1,
            (false, true) => fp += 1,
            (true, false) => fn_ += 1,
            _ => {}
        }
    }
    let mut delays = Vec::new();
    for e in episodes {
        let first = windows.iter().filter(|w| w.alert && overlaps(w, e)).map(|w| w.end).min();
        if let Some(end) = first {
            delays.push(end.saturating_sub(e.start) as f64 / 1e9);
        }
    }
    delays.sort_by(f64::total_cmp);
    Metrics {
        windows: points.len(),
        positives: points.iter().filter(|p| p.1).count(),
        roc_auc: roc_auc(&points),
        pr_auc: average_precision(&points),
        precision: if tp + fp > 0 { tp as f64 / (tp + fp) as f64 } else { f64::NAN },
        recall: if tp + fn_ > 0 { tp as f64 / (tp + fn_) as f64 } else { f64::NAN },
        detected: delays.len(),
        episodes: episodes.len(),
        median_delay_s: delays.get(delays.len() / 2).copied().unwrap_or(f64::NAN),
    }
}

fn read_scores(path: &PathBuf) -> Result<BTreeMap<String, Vec<Scored>>, Error> {
    let file = std::fs::File::open(path).map_err(io_at(path))?;
    let mut by_model: BTreeMap<String, Vec<Scored>> = BTreeMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io_at(path))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| Error::Data(format!("{}:{}: {e}", path.display(), n + 1)))?;
        let field = |k: &str| v.get(k).ok_or_else(|| Error::Data(format!("{}:{}: no `{k}`", path.display(), n + 1)));
        by_model.entry(field("model")?.as_str().unwrap_or("?").to_string()).or_default().push(Scored {
            instrument: field("instrument")?.as_str().unwrap_or("").to_string(),
            start: field("window_start_ns")?.as_u64().unwrap_or(0),
            end: field("window_end_ns")?.as_u64().unwrap_or(0),
            score: field("score")?.as_f64().unwrap_or(f64::NAN),
            alert: field("is_anomaly")?.as_bool().unwrap_or(false),
        });
    }
    Ok(by_model)
}

/// Reads a label file.
pub fn read_labels(path: &PathBuf) -> Result<Vec<Episode>, Error> {
    let text = std::fs::read_to_string(path).map_err(io_at(path))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let bad = || Error::Data(format!("{}:{}: want instrument,kind,start_ns,end_ns", path.display(), n + 1));
        if f.len() != 4 {
            return Err(bad());
        }
        out.push(Episode {
            instrument: f[0].to_string(),
            kind: f[1].to_string(),
            start: f[2].parse().map_err(|_| bad())?,
            end: f[3].parse().map_err(|_| bad())?,
        });
    }
    Ok(out)
}

/// The decision as a desk meets it: episodes with at least one alerted window, and false alarms
/// (alerted windows outside every episode) per instrument-hour.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// Episodes with at least one alerted window.
    pub detected: usize,
    /// Episodes.
    pub episodes: usize,
    /// Alerted windows outside every episode.
    pub false_alarms: usize,
    /// Instrument-hours covered by the windows.
    pub instrument_hours: f64,
    /// Median detection delay (end of the first alerted window minus the episode start), seconds.
    pub median_delay_s: f64,
}

impl Decision {
    /// False alarms per instrument-hour.
    pub fn false_alarm_rate(&self) -> f64 {
        self.false_alarms as f64 / self.instrument_hours.max(1e-9)
    }
}

/// Scores a decision (alerts of any window length) against `episodes`; `all_episodes` decide what
/// is outside every episode.
pub fn decide(windows: &[Scored], episodes: &[&Episode], all_episodes: &[Episode]) -> Decision {
    let all_refs: Vec<&Episode> = all_episodes.iter().collect();
    let any = by_instrument(&all_refs);
    let false_alarms = windows
        .iter()
        .filter(|w| w.alert && !any.get(w.instrument.as_str()).is_some_and(|es| es.iter().any(|e| overlaps(w, e))))
        .count();
    let mut span: HashMap<&str, (u64, u64)> = HashMap::new();
    for w in windows {
        let e = span.entry(w.instrument.as_str()).or_insert((w.start, w.end));
        e.0 = e.0.min(w.start);
        e.1 = e.1.max(w.end);
    }
    let instrument_hours = span.values().map(|(a, b)| (b - a) as f64 / 3600e9).sum();
    let mut delays = Vec::new();
    for e in episodes {
        if let Some(end) = windows.iter().filter(|w| w.alert && overlaps(w, e)).map(|w| w.end).min() {
            delays.push(end.saturating_sub(e.start) as f64 / 1e9);
        }
    }
    delays.sort_by(f64::total_cmp);
    Decision {
        detected: delays.len(),
        episodes: episodes.len(),
        false_alarms,
        instrument_hours,
        median_delay_s: delays.get(delays.len() / 2).copied().unwrap_or(f64::NAN),
    }
}

/// The window length of a detector's windows (the most common one).
fn scale_of(windows: &[Scored]) -> u64 {
    let mut count: HashMap<u64, usize> = HashMap::new();
    for w in windows {
        *count.entry(w.end - w.start).or_default() += 1;
    }
    count.into_iter().max_by_key(|(len, n)| (*n, *len)).map_or(0, |(len, _)| len)
}

/// Runs `eval`.
pub fn run(args: EvalArgs) -> Result<(), Error> {
    let mut by_model = read_scores(&args.scores)?;
    if let Some(features) = &args.features {
        by_model.insert(REFERENCE.to_string(), reference_scores(features)?);
    }
    let episodes = read_labels(&args.labels)?;
    if by_model.is_empty() {
        return Err(Error::Data(format!("{}: no scores", args.scores.display())));
    }
    // The last window of each instrument and scale is cut short by the end of the input: left out.
    let mut last: HashMap<(String, u64), u64> = HashMap::new();
    for w in by_model.values().flatten() {
        let e = last.entry((w.instrument.clone(), w.end - w.start)).or_insert(0);
        *e = (*e).max(w.start);
    }
    let complete = |w: &Scored| last.get(&(w.instrument.clone(), w.end - w.start)) != Some(&w.start);
    // Detectors are compared on the windows every detector of the same window length scored.
    let scales: BTreeMap<&str, u64> = by_model.iter().map(|(m, ws)| (m.as_str(), scale_of(ws))).collect();
    let mut common: HashMap<u64, HashSet<(String, u64)>> = HashMap::new();
    for (model, windows) in &by_model {
        let scale = scales[model.as_str()];
        let keys: HashSet<(String, u64)> = windows
            .iter()
            .filter(|w| complete(w) && w.end - w.start == scale)
            .map(|w| (w.instrument.clone(), w.start))
            .collect();
        match common.get_mut(&scale) {
            Some(c) => c.retain(|k| keys.contains(k)),
            None => {
                common.insert(scale, keys);
            }
        }
    }
    let mut kinds: Vec<&str> = episodes.iter().map(|e| e.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut lengths: Vec<String> = common.iter().map(|(s, c)| format!("{} of {} ns", c.len(), s)).collect();
    lengths.sort();
    println!(
        "{} episodes; windows scored by every detector of their length: {} ({} detectors)",
        episodes.len(),
        lengths.join(", "),
        by_model.len()
    );
    println!(
        "{:<26} {:<22} {:>8} {:>6} {:>8} {:>8} {:>9} {:>7} {:>9} {:>10} {:>7} {:>9}",
        "detector",
        "episodes",
        "windows",
        "pos",
        "ROC-AUC",
        "PR-AUC",
        "precision",
        "recall",
        "detected",
        "delay p50",
        "FA",
        "FA/inst-h"
    );
    let mut rows: Vec<(String, Vec<&Episode>)> = vec![("all".into(), episodes.iter().collect())];
    for kind in &kinds {
        rows.push((kind.to_string(), episodes.iter().filter(|e| e.kind == *kind).collect()));
    }
    let mut pr_aucs: HashMap<(&str, &str), f64> = HashMap::new();
    for (model, windows) in &by_model {
        let set = &common[&scales[model.as_str()]];
        let windows: Vec<Scored> =
            windows.iter().filter(|w| set.contains(&(w.instrument.clone(), w.start))).cloned().collect();
        for (name, list) in &rows {
            let m = evaluate(&windows, list, &episodes);
            let d = decide(&windows, list, &episodes);
            pr_aucs.insert((model.as_str(), name.as_str()), m.pr_auc);
            println!(
                "{:<26} {:<22} {:>8} {:>6} {:>8.4} {:>8.4} {:>9.3} {:>7.3} {:>9} {:>9.2}s {:>7} {:>9.2}",
                model,
                name,
                m.windows,
                m.positives,
                m.roc_auc,
                m.pr_auc,
                m.precision,
                m.recall,
                format!("{}/{}", m.detected, m.episodes),
                m.median_delay_s,
                d.false_alarms,
                d.false_alarm_rate()
            );
        }
    }
    // Each detector of the reference's scale against the reference (the "2x a rolling z-score").
    if let Some(reference_scale) = scales.get(REFERENCE) {
        println!("PR-AUC over {REFERENCE}'s (same windows)");
        for model in by_model.keys().filter(|m| *m != REFERENCE && scales[m.as_str()] == *reference_scale) {
            let ratios: Vec<String> = rows
                .iter()
                .map(|(name, _)| {
                    let ratio = pr_aucs[&(model.as_str(), name.as_str())] / pr_aucs[&(REFERENCE, name.as_str())];
                    format!("{name} {ratio:.2}")
                })
                .collect();
            println!("  {model:<26} {}", ratios.join("  "));
        }
    }
    // The run's decision: the ensemble's alerts on every scale together.
    let decision: Vec<Scored> = by_model
        .iter()
        .filter(|(m, _)| m.starts_with("ensemble"))
        .flat_map(|(_, ws)| ws.iter().filter(|w| complete(w)).cloned())
        .collect();
    if !decision.is_empty() {
        println!("decision (ensemble alerts, all scales)");
        for (name, list) in &rows {
            let d = decide(&decision, list, &episodes);
            println!(
                "  {:<22} detected {:>4}/{:<4} ({:>5.1}%)  false alarms {:>5} in {:.1} instrument-hours = {:.2}/instrument-hour  delay p50 {:.2}s",
                name,
                d.detected,
                d.episodes,
                100.0 * d.detected as f64 / d.episodes.max(1) as f64,
                d.false_alarms,
                d.instrument_hours,
                d.false_alarm_rate(),
                d.median_delay_s
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference z-score reads a features CSV (any column order, empty = NaN), scores each
    /// instrument after the warm-up and finds a burst; a file that is not a features CSV is an error.
    #[test]
    fn the_reference_zscore_scores_a_features_csv() {
        let dir = std::env::temp_dir().join(format!("lobsentry-eval-ref-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.csv");
        let mut text = String::from(
            "instrument,window_start_ns,window_end_ns,exec_volume,events,log_return,spread_twa,queue_imbalance\n",
        );
        for i in 0..100u64 {
            let events = if i == 80 { 5_000 } else { 100 + i % 7 };
            for inst in ["A", "B"] {
                text.push_str(&format!("{inst},{},{},{},{events},0,0.01,\n", i * 10, i * 10 + 10, 200 + i % 5));
            }
        }
        std::fs::write(&path, text).unwrap();
        let scored = reference_scores(&path).unwrap();
        assert_eq!(scored.len(), 2 * (100 - 30), "two instruments, 30 windows of warm-up each");
        let top = scored.iter().max_by(|a, b| a.score.total_cmp(&b.score)).unwrap();
        assert_eq!(top.start, 800);
        assert!(top.alert && scored.iter().filter(|s| s.alert).count() == 2, "the burst on each instrument");
        std::fs::write(&path, "instrument,kind,start_ns,end_ns\nA,x,1,2\n").unwrap();
        assert!(reference_scores(&path).unwrap_err().to_string().contains("want a features CSV"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn auc_and_ap_against_hand_computed_values() {
        let perfect = [(0.9, true), (0.8, true), (0.1, false), (0.2, false)];
        assert_eq!(roc_auc(&perfect), 1.0);
        assert_eq!(average_precision(&perfect), 1.0);
        let inverted = [(0.1, true), (0.9, false)];
        assert_eq!(roc_auc(&inverted), 0.0);
        // Ranked: T(0.9) F(0.8) T(0.7) F(0.1) -> AP = (1/2)(1/1) + (1/2)(2/3)
        let mixed = [(0.9, true), (0.8, false), (0.7, true), (0.1, false)];
        assert!((average_precision(&mixed) - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
        assert_eq!(roc_auc(&mixed), 0.75);
        let ties = [(0.5, true), (0.5, false)];
        assert_eq!(roc_auc(&ties), 0.5);
    }

    #[test]
    fn episodes_of_other_kinds_are_left_out() {
        let w = |inst: &str, start: u64, score: f64, alert: bool| Scored {
            instrument: inst.into(),
            start,
            end: start + 10,
            score,
            alert,
        };
        let episodes = vec![
            Episode { instrument: "A".into(), kind: "x".into(), start: 12, end: 15 },
            Episode { instrument: "A".into(), kind: "y".into(), start: 32, end: 35 },
        ];
        let windows = vec![w("A", 0, 0.1, false), w("A", 10, 0.9, true), w("A", 20, 0.2, false), w("A", 30, 0.8, true)];
        let only_x: Vec<&Episode> = episodes.iter().filter(|e| e.kind == "x").collect();
        let m = evaluate(&windows, &only_x, &episodes);
        assert_eq!(m.windows, 3, "the y window is neither positive nor negative");
        assert_eq!((m.positives, m.detected), (1, 1));
        assert_eq!(m.precision, 1.0);
        assert!((m.median_delay_s - 8e-9).abs() < 1e-15);
    }
}
