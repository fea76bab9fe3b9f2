//! The `Ensemble` operator: every detector's scores, on every time scale, calibrated per instrument
//! into tail probabilities ([`crate::calibrate`]) and combined into one alert decision with reasons.
//!
//! For each (instrument, detector) the raw score becomes `p = P(score >= x)` against that
//! instrument's own recent scores of that detector. The windows of one scale that end together are
//! combined by the Cauchy combination test over the K detectors that scored the window (those of
//! [`EnsembleSpec::left_out`] excepted: they are calibrated and decide on their own only)
//! ([`cauchy_combination`]: valid whatever their dependence, so correlated detectors cannot add false
//! alarms; one detector alone gives about `K * p`, several moderately out give less), weighted by
//! [`EnsembleSpec::weights`] when given ([`weighted_cauchy_combination`]: one detector alone then gives
//! about `p / w`, `w` its share of the weights). A window is an alert when
//! `p_ensemble <= N * size / 1 h / S`: with S scales, at most N expected false alarms per
//! instrument-hour in all. The ensemble's score is `-log10 p_ensemble` (its threshold
//! `-log10` of the bound), its reasons name each detector at fault with its `-log10 p`, and its top
//! features are those of the most significant detector.
//!
//! Each detector's own score is passed on with its `p_value` and its own decision at the same bound
//! (without the factor K). Every score then enters its calibration history, capped at a high level
//! ([`crate::calibrate::TailSpec::cap`]), so an episode does not teach the calibration that
//! episodes are normal.
//!
//! An alert holds for [`EnsembleSpec::hold_ns`] after its window ends: a window of the same
//! instrument (any scale) that the bound flags and that starts before the hold runs out belongs to
//! that alert instead of raising another (its score and `p_value` are kept, `is_anomaly` is not set;
//! the hold is not extended, so an event longer than the hold alerts again after it). One event seen
//! by several windows and scales is then one alert, and the false-alarm budget counts events, as an
//! analyst does. Each detector's own decision holds the same way, on its own.
//!
//! Windows cut short by the end of the input (their end is after the input's last event) are passed
//! on undecided, without an ensemble score: they are not complete windows (see [`Ensemble::ensemble`]).

use crate::calibrate::{TailCalibrator, TailSpec};
use crate::detect::WindowScore;
use crate::event::InstrumentId;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

/// The name of the ensemble's scores on the scale `scale` (`""` for the primary scale).
pub fn ensemble_name(scale: &str) -> String {
    if scale.is_empty() {
        "ensemble".into()
    } else {
        format!("ensemble/{scale}")
    }
}

/// Options of the ensemble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleSpec {
    /// Expected false alarms per instrument-hour, all scales together.
    pub alarms_per_hour: f64,
    /// Number of time scales the budget is shared by.
    pub scales: usize,
    /// The calibration.
    pub tail: TailSpec,
    /// Window lengths (ns) mapped to their scale label (`""` for the primary scale), for names; with
    /// no labels every scale's ensemble is named `ensemble`.
    pub labels: Vec<(u64, String)>,
    /// How long (ns) an alert holds after its window's end: flagged windows of the instrument that
    /// start before then belong to it rather than raise new alerts (0: every flagged window alerts).
    #[serde(default)]
    pub hold_ns: u64,
    /// Detectors that are calibrated and decide on their own (their `p_value` and `is_anomaly`) but
    /// do not enter the combination: a score whose name starts with one of these. Empty: every
    /// detector is combined.
    #[serde(default)]
    pub left_out: Vec<String>,
    /// Each scale's share of the hourly budget, by window length (ns); a scale not listed gets
    /// `1 / scales`. The shares need not sum to 1: they are set so that the realised false alarms
    /// of the scales, whose calibrations err in opposite directions, stay within the budget
    /// (`detect.scale-shares`).
    #[serde(default)]
    pub shares: Vec<(u64, f64)>,
    /// The scales whose windows slide, by window length (ns): (length, slide). An instrument has at
    /// most one window every slide (every window length for a scale not listed: tumbling), which
    /// caps the hourly windows its per-window bound is shared by (`detect.scale-slides`).
    #[serde(default)]
    pub slides: Vec<(u64, u64)>,
    /// Weights of the detectors in the combination, by score-name prefix (`detect.combine-weights`);
    /// a detector not listed weighs 1. Only their ratios matter: the weights of a window's combined
    /// detectors are normalised to sum to 1 (the weighted Cauchy combination of Liu and Xie), so
    /// one detector alone far out gives about `p / w` with `w` its normalised weight.
    #[serde(default)]
    pub weights: Vec<(String, f64)>,
}

impl EnsembleSpec {
    /// The per-window bound on `p` for windows of `size_ns`.
    pub fn bound(&self, size_ns: u64) -> f64 {
        self.bound_every(size_ns as f64, size_ns)
    }

    /// The share of the hourly budget of the scale of windows of `size_ns` ([`EnsembleSpec::shares`]).
    pub fn share(&self, size_ns: u64) -> f64 {
        self.shares.iter().find(|(ns, _)| *ns == size_ns).map_or(1.0 / self.scales.max(1) as f64, |s| s.1)
    }

    /// The per-window bound on `p` for windows of `size_ns` when an instrument has one every
    /// `every_ns` on average (a window exists only when the instrument traded or quoted, so a quiet
    /// instrument has fewer windows an hour, and each may carry more of the hourly budget).
    pub fn bound_every(&self, every_ns: f64, size_ns: u64) -> f64 {
        (self.alarms_per_hour * every_ns / 3600e9 * self.share(size_ns)).min(1.0)
    }

    /// The slide of the scale of windows of `size_ns` ([`EnsembleSpec::slides`]; `size_ns` when
    /// tumbling).
    pub fn slide(&self, size_ns: u64) -> u64 {
        self.slides.iter().find(|(ns, _)| *ns == size_ns).map_or(size_ns, |s| s.1)
    }

    /// The weight of the scores named `model` in the combination ([`EnsembleSpec::weights`]).
    pub fn weight(&self, model: &str) -> f64 {
        self.weights.iter().find(|(prefix, _)| model.starts_with(prefix.as_str())).map_or(1.0, |w| w.1)
    }

    /// Whether the scores named `model` enter the combination.
    pub fn combines(&self, model: &str) -> bool {
        !self.left_out.iter().any(|prefix| model.starts_with(prefix.as_str()))
    }

    fn label(&self, size_ns: u64) -> String {
        match self.labels.iter().find(|(s, _)| *s == size_ns) {
            Some((_, label)) => label.clone(),
            None if self.labels.is_empty() => String::new(),
            None => crate::features::human_len(size_ns),
        }
    }
}

/// Per-instrument calibration state: one calibrator per detector name.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct EnsembleState {
    calibrators: BTreeMap<String, TailCalibrator>,
    /// Per window length: (start of the first window, windows seen), for the windows an hour.
    #[serde(default)]
    rates: BTreeMap<u64, (u64, u64)>,
    /// Until when (ns) each decision's current alert holds, by decider (`ensemble` or a detector;
    /// the name without the scale, so a hold covers every scale): see [`EnsembleSpec::hold_ns`].
    #[serde(default)]
    holds: BTreeMap<String, u64>,
}

/// Windows an instrument must have had at a scale before its own window rate sets the bound.
const RATE_WARMUP: u64 = 100;

impl EnsembleState {
    /// A flagged window of `decider`: inside its hold it belongs to that alert (`false`: not an
    /// alert); outside, it is an alert and starts a hold of `hold_ns` after its end (`true`). The hold
    /// is not extended, so a long spell (or a false alarm just before an episode) cannot hold back
    /// the next alert for longer than the hold.
    fn hold(&mut self, decider: &str, window: crate::window::Window, hold_ns: u64) -> bool {
        let decider = decider.split('/').next().unwrap_or_default();
        if self.holds.get(decider).is_some_and(|&until| window.start < until) {
            return false;
        }
        self.holds.insert(decider.to_string(), window.end.saturating_add(hold_ns));
        true
    }

    /// Calibrates and combines the scores of one (instrument, window) from every detector. Returns
    /// the detectors' scores with their `p_value` and own decision, then the ensemble's score (when at
    /// least one detector is past its warm-up). `complete = false` (a window cut short by the end of
    /// the input): nothing is flagged or learnt.
    ///
    /// ```
    /// use lobsentry_operators::calibrate::TailSpec;
    /// use lobsentry_operators::detect::WindowScore;
    /// use lobsentry_operators::ensemble::{EnsembleSpec, EnsembleState};
    /// use lobsentry_operators::event::InstrumentId;
    /// use lobsentry_operators::window::Window;
    /// let spec = EnsembleSpec { alarms_per_hour: 1.0, scales: 1, tail: TailSpec::default(), labels: vec![], hold_ns: 0, left_out: vec![], shares: vec![], slides: vec![], weights: vec![] };
    /// let score = |i: u64, model: &str, x: f64| WindowScore {
    ///     instrument: InstrumentId::new("X").unwrap(), window: Window { start: i * 1_000_000_000, end: (i + 1) * 1_000_000_000 },
    ///     score: x, threshold: 8.0, is_anomaly: false, top_features: vec![("events".into(), x)],
    ///     model: model.into(), p_value: None, detectors: vec![] };
    /// let mut state = EnsembleState::default();
    /// for i in 0..500 {
    ///     let x = 1.0 + (i % 10) as f64 / 10.0;
    ///     state.combine(vec![score(i, "a", x), score(i, "b", x)], &spec, true);
    /// }
    /// let out = state.combine(vec![score(500, "a", 1.5), score(500, "b", 9.0)], &spec, true);
    /// let ensemble = out.last().unwrap();
    /// assert!(ensemble.is_anomaly);
    /// assert_eq!(ensemble.detectors[0].0, "b", "the detector at fault comes first");
    /// ```
    pub fn combine(&mut self, mut scores: Vec<WindowScore>, spec: &EnsembleSpec, complete: bool) -> Vec<WindowScore> {
        let Some(first) = scores.first() else { return scores };
        let (instrument, window) = (first.instrument, first.window);
        let size = window.end - window.start;
        let rate = self.rates.entry(size).or_insert((window.start, 0));
        rate.1 += 1;
        // At most one window every slide: a sliding scale's windows share the budget by their number.
        let slide = spec.slide(size) as f64;
        let every = if rate.1 >= RATE_WARMUP {
            (window.end.saturating_sub(rate.0) as f64 / rate.1 as f64).max(slide)
        } else {
            slide
        };
        let bound = spec.bound_every(every, size);
        let mut ps: Vec<Option<f64>> = Vec::with_capacity(scores.len());
        for s in scores.iter_mut() {
            let cal = self.calibrators.entry(s.model.clone()).or_default();
            let p = if complete { cal.tail_probability(s.score, &spec.tail) } else { None };
            s.p_value = p;
            // Each detector's own decisions count events too, across its scales.
            s.is_anomaly = p.is_some_and(|p| p <= bound) && self.hold(&s.model, window, spec.hold_ns);
            ps.push(p);
        }
        // The p-values that are combined (`None` for detectors left out of the combination).
        let combined: Vec<Option<f64>> =
            scores.iter().zip(&ps).map(|(s, p)| p.filter(|_| spec.combines(&s.model))).collect();
        let k = combined.iter().flatten().count();
        let mut ensemble = None;
        if complete && k > 0 {
            let weights: Vec<f64> = scores.iter().map(|s| spec.weight(&s.model)).collect();
            let total: f64 = combined.iter().zip(&weights).filter(|(p, _)| p.is_some()).map(|(_, w)| w).sum();
            let p = weighted_cauchy_combination(combined.iter().zip(&weights).filter_map(|(p, w)| p.map(|p| (p, *w))));
            // Inside the hold of an alert: the same event.
            let flagged = p <= bound && self.hold("ensemble", window, spec.hold_ns);
            let mut detectors: Vec<(String, f64, usize)> = scores
                .iter()
                .zip(&combined)
                .enumerate()
                // One detector alone far out gives about p / (its share of the weights).
                .filter_map(|(i, (s, p))| p.map(|p| (s.model.clone(), -(p * total / weights[i]).min(1.0).log10(), i)))
                .collect();
            detectors.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let lead = detectors[0].2;
            ensemble = Some(WindowScore {
                instrument,
                window,
                score: -p.log10(),
                threshold: -bound.log10(),
                is_anomaly: flagged,
                top_features: scores[lead].top_features.clone(),
                model: ensemble_name(&spec.label(window.end - window.start)),
                p_value: Some(p),
                detectors: detectors.into_iter().map(|(name, s, _)| (name, s)).collect(),
            });
        }
        if complete {
            for s in &scores {
                if let Some(cal) = self.calibrators.get_mut(&s.model) {
                    cal.observe(s.score, &spec.tail);
                }
            }
        }
        scores.extend(ensemble);
        scores
    }
}

/// Upper p-values above this enter the combination as this (a detector that finds a window
/// ordinary must not veto one that finds it extreme: `tan` goes to minus infinity at 1).
const P_CAP: f64 = 0.99;

/// The Cauchy combination of p-values (Liu and Xie, JASA 2020): `T = mean_i tan((1/2 - p_i) pi)`,
/// `p = 1/2 - atan(T) / pi`. Its tail is that of a standard Cauchy whatever the dependence between the
/// p-values, so it keeps the false-alarm rate of one detector where a union bound (`K * min p`) pays
/// for K; one detector alone far out gives about `K * p_min` again, and several detectors moderately
/// out give less than any of them.
///
/// ```
/// use lobsentry_operators::ensemble::cauchy_combination;
/// let one = cauchy_combination([1e-6, 0.5]);
/// assert!((one / 2e-6 - 1.0).abs() < 0.01, "one detector far out: about K * p_min ({one})");
/// let two = cauchy_combination([1e-3, 1e-3]);
/// assert!((two / 1e-3 - 1.0).abs() < 0.01 && two < 2e-3, "two alike: their p, not 2p ({two})");
/// assert!(cauchy_combination([1e-6, 1.0]) < 1e-5, "an ordinary detector does not veto");
/// ```
pub fn cauchy_combination(ps: impl IntoIterator<Item = f64>) -> f64 {
    weighted_cauchy_combination(ps.into_iter().map(|p| (p, 1.0)))
}

/// The weighted Cauchy combination: `T = sum_i w_i tan((1/2 - p_i) pi) / sum_i w_i`, whose tail is
/// again a standard Cauchy's for any positive weights (Liu and Xie, JASA 2020). One p-value alone far
/// out gives about `p_i / w_i` (weights normalised to sum to 1): a detector at a quarter of another's
/// weight must be four times as far out to raise the same alarm. Pairs of (p, weight); weights that
/// are not positive and finite leave their p-value out.
///
/// ```
/// use lobsentry_operators::ensemble::{cauchy_combination, weighted_cauchy_combination};
/// let equal = weighted_cauchy_combination([(1e-3, 2.0), (0.2, 2.0)]);
/// assert!((equal / cauchy_combination([1e-3, 0.2]) - 1.0).abs() < 1e-12, "equal weights: the plain one");
/// let light = weighted_cauchy_combination([(0.5, 1.0), (1e-6, 0.25)]);
/// assert!((light / 5e-6 - 1.0).abs() < 0.01, "alone far out at weight 0.25 of 1.25: about p / 0.2 ({light})");
/// let heavy = weighted_cauchy_combination([(1e-6, 1.0), (0.5, 0.25)]);
/// assert!((heavy / 1.25e-6 - 1.0).abs() < 0.01, "at weight 1 of 1.25: about p / 0.8 ({heavy})");
/// ```
pub fn weighted_cauchy_combination(ps: impl IntoIterator<Item = (f64, f64)>) -> f64 {
    use std::f64::consts::PI;
    let (mut sum, mut total) = (0.0, 0.0);
    for (p, w) in ps {
        if !(w > 0.0 && w.is_finite()) {
            continue;
        }
        let p = p.clamp(1e-300, P_CAP);
        // tan((1/2 - p) pi) = 1 / tan(p pi), and 1 / (p pi) where tan loses precision.
        sum += w * if p < 1e-12 { 1.0 / (p * PI) } else { 1.0 / (p * PI).tan() };
        total += w;
    }
    if total <= 0.0 {
        return 1.0;
    }
    let t = sum / total;
    // P(Cauchy >= t): 1/2 - atan(t)/pi, and 1 / (t pi) in the far tail.
    let p = if t > 1e12 { 1.0 / (t * PI) } else { 0.5 - t.atan() / PI };
    p.clamp(f64::MIN_POSITIVE, 1.0)
}

/// Combines detector scores into ensemble decisions.
pub trait Ensemble<'scope> {
    /// Routes scores by instrument, waits until the frontier passes a window's end (so every
    /// detector's score of it is in), then calibrates and combines them with
    /// [`EnsembleState::combine`]. Emits every detector's score (with `p_value`) and the ensemble's.
    /// The calibration state is checkpointed in `state`.
    ///
    /// `input_times` (event times of the input, any number per batch; see [`input_end`]) lets the
    /// operator tell the windows cut short by the end of the input: a window whose end the frontier
    /// passed while the input was live is complete; one released by the end of the input is complete
    /// only when some event of the input is at or after its end. Cut windows are passed on undecided
    /// (no ensemble score, nothing learnt). The rule depends on the data only, never on when the
    /// frontier moved, so restarts decide exactly as uninterrupted runs. Without `input_times` every
    /// window is decided.
    fn ensemble(
        self,
        input_times: Option<StreamVec<'scope, u64, u64>>,
        spec: EnsembleSpec,
        state: Option<crate::checkpoint::StateRegistry>,
    ) -> StreamVec<'scope, u64, WindowScore>;
}

/// Moves a batch's records into `staged` by the time each one ends (`end_of`), with a capability for
/// that time: a batch's own time is only its earliest record's end. Shared by the operators that wait
/// for the frontier to pass each window's end.
pub(crate) fn stage_by_end<'a, D>(
    staged: &mut BTreeMap<u64, (Capability<u64>, Vec<D>)>,
    cap: &timely::dataflow::operators::InputCapability<u64>,
    data: impl Iterator<Item = &'a mut Vec<D>>,
    end_of: impl Fn(&D) -> u64,
) where
    D: 'static,
{
    for batch in data {
        for record in batch.drain(..) {
            let end = end_of(&record);
            staged.entry(end).or_insert_with(|| (cap.delayed(&end, 0), Vec::new())).1.push(record);
        }
    }
}

/// The latest event time of each batch of a stream, sent to every worker: the `input_times` of
/// [`Ensemble::ensemble`].
pub fn input_end<'scope, D: crate::window::WindowRecord>(
    stream: StreamVec<'scope, u64, D>,
) -> StreamVec<'scope, u64, u64> {
    use timely::dataflow::channels::pact::Pipeline;
    use timely::dataflow::operators::vec::Broadcast;
    stream
        .unary(Pipeline, "InputEnd", |_cap, _info| {
            move |input, output| {
                input.for_each(|cap, data| {
                    let latest = data.iter().map(|r| r.event_ts()).max();
                    if let Some(t) = latest {
                        output.session(&cap).give(t);
                    }
                });
            }
        })
        .broadcast()
}

impl<'scope> Ensemble<'scope> for StreamVec<'scope, u64, WindowScore> {
    fn ensemble(
        self,
        input_times: Option<StreamVec<'scope, u64, u64>>,
        spec: EnsembleSpec,
        registry: Option<crate::checkpoint::StateRegistry>,
    ) -> StreamVec<'scope, u64, WindowScore> {
        use crate::checkpoint::{decode, encode};
        use timely::dataflow::channels::pact::Pipeline;
        let decide_all = input_times.is_none();
        let times = input_times.unwrap_or_else(|| timely::dataflow::operators::generic::operator::empty(self.scope()));
        let pact = ExchangePact::new(|s: &WindowScore| s.instrument.route());
        self.binary_frontier(times, pact, Pipeline, "Ensemble", move |_cap, _info| {
            let states: std::rc::Rc<std::cell::RefCell<FxHashMap<InstrumentId, EnsembleState>>> = Default::default();
            if let Some(registry) = &registry {
                let saved = states.clone();
                if let Some(bytes) = registry.register("ensemble", move || encode(&*saved.borrow())) {
                    *states.borrow_mut() =
                        decode(&bytes).unwrap_or_else(|e| panic!("checkpoint: ensemble state does not decode: {e}"));
                }
            }
            let mut stash: BTreeMap<u64, (Capability<u64>, Vec<WindowScore>)> = BTreeMap::new();
            // The latest event time of the whole input (every worker's batches are broadcast here).
            let mut latest_event = 0u64;
            move |(input, frontier), (times, times_frontier), output| {
                // Stashed by window end, so every detector's score of a window meets the others'.
                input.for_each_stamp(|cap, data| stage_by_end(&mut stash, &cap, data, |s| s.window.end));
                times.for_each(|_cap, data| latest_event = data.iter().copied().fold(latest_event, u64::max));
                let bound = frontier.frontier().iter().next().copied();
                // At the end of the input, wait until every event time is in.
                if bound.is_none() && !times_frontier.is_empty() {
                    return;
                }
                let mut states = states.borrow_mut();
                while let Some(entry) = stash.first_entry() {
                    let time = *entry.key();
                    if bound.is_some_and(|b| b <= time) {
                        break;
                    }
                    let (cap, mut scores) = entry.remove();
                    let mut session = output.session(&cap);
                    // Every score here ends at `time`: group by instrument and window start.
                    scores.sort_by(|a, b| {
                        (a.instrument, a.window.start)
                            .cmp(&(b.instrument, b.window.start))
                            .then_with(|| a.model.cmp(&b.model))
                    });
                    let mut group: Vec<WindowScore> = Vec::new();
                    let mut flush = |group: &mut Vec<WindowScore>| {
                        if group.is_empty() {
                            return;
                        }
                        let first = &group[0];
                        // Released while live: the frontier passed the end. Released by the end of
                        // the input: complete only if the input went on to the window's end.
                        let complete = decide_all || bound.is_some() || first.window.end <= latest_event;
                        let state = states.entry(first.instrument).or_default();
                        for s in state.combine(std::mem::take(group), &spec, complete) {
                            session.give(s);
                        }
                    };
                    for s in scores {
                        if group.first().is_some_and(|g| g.instrument != s.instrument || g.window != s.window) {
                            flush(&mut group);
                        }
                        group.push(s);
                    }
                    flush(&mut group);
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::Rng;
    use crate::window::Window;
    use timely::dataflow::operators::{Capture, Input, Probe};

    fn score(i: u64, model: &str, x: f64) -> WindowScore {
        WindowScore {
            instrument: InstrumentId::new("X").unwrap(),
            window: Window { start: i * 1_000_000_000, end: (i + 1) * 1_000_000_000 },
            score: x,
            threshold: 1.0,
            is_anomaly: false,
            top_features: vec![("events".into(), x)],
            model: model.into(),
            p_value: None,
            detectors: vec![],
        }
    }

    fn s_end(i: u64) -> u64 {
        (i + 1) * 1_000_000_000 + 1
    }

    fn spec(alarms_per_hour: f64) -> EnsembleSpec {
        EnsembleSpec {
            alarms_per_hour,
            scales: 1,
            tail: TailSpec::default(),
            labels: vec![],
            hold_ns: 0,
            left_out: vec![],
            shares: vec![],
            slides: vec![],
            weights: vec![],
        }
    }

    /// A scale of 10 s windows sliding every second has ten times the windows of a tumbling one,
    /// each with a tenth of the bound: the same budget per hour.
    #[test]
    fn a_sliding_scale_shares_its_budget_by_its_windows() {
        const S: u64 = 1_000_000_000;
        let mut rng = Rng::new(5);
        for (slides, every) in [(vec![], 10.0), (vec![(10 * S, S)], 1.0)] {
            let spec = EnsembleSpec { slides, ..spec(1.0) };
            let mut state = EnsembleState::default();
            let mut threshold = 0.0;
            for i in 0..300 {
                let mut s = score(i, "a", rng.exp(1.0));
                s.window = Window { start: i * S, end: i * S + 10 * S };
                threshold = state.combine(vec![s], &spec, true).last().unwrap().threshold;
            }
            // The bound is the budget times the mean spacing of the windows (here 309 s / 300).
            let spacing = 10f64.powf(-threshold) * 3600.0;
            assert!(
                (spacing / every - 1.0).abs() < 0.05,
                "a window every {every} s: the bound's spacing is {spacing} s"
            );
        }
    }

    /// Each scale's bound is its share of the hourly budget: listed shares for their scales, an
    /// equal share for the others; and a window is flagged against its own scale's bound.
    #[test]
    fn each_scale_is_bounded_by_its_share_of_the_budget() {
        let spec = EnsembleSpec { scales: 3, shares: vec![(1_000_000_000, 0.4), (10_000_000_000, 1.0)], ..spec(1.0) };
        let close = |a: f64, b: f64| (a / b - 1.0).abs() < 1e-12;
        assert!(close(spec.bound(1_000_000_000), 0.4 / 3600.0));
        assert!(close(spec.bound(10_000_000_000), 10.0 / 3600.0));
        assert!(close(spec.bound(60_000_000_000), 60.0 / 3600.0 / 3.0), "not listed: an equal share");
        assert!(close(spec.bound_every(2e9, 1_000_000_000), 0.8 / 3600.0), "a window every 2 s carries more");
        // A window whose p lies between the 1 s bound with the share (1.1e-4) and with the whole
        // budget (2.8e-4) is flagged only with the whole budget.
        let flagged = |spec: &EnsembleSpec| {
            let mut state = EnsembleState::default();
            let mut rng = Rng::new(3);
            for i in 0..2_000 {
                state.combine(vec![score(i, "a", rng.exp(1.0))], spec, true);
            }
            let x = state.calibrators["a"].fit().unwrap().level(1.9e-4);
            let out = state.combine(vec![score(2_000, "a", x)], spec, true);
            let p = out[0].p_value.unwrap();
            assert!(p > 1.2e-4 && p < 2.7e-4, "{p}");
            out.last().unwrap().is_anomaly
        };
        assert!(!flagged(&spec));
        assert!(flagged(&EnsembleSpec { shares: vec![], scales: 1, ..spec.clone() }));
    }

    /// An event that several consecutive windows see is one alert while the hold lasts; the next
    /// event after the hold is a new alert; with no hold every flagged window alerts.
    #[test]
    fn an_alert_holds_over_the_windows_of_one_event() {
        let alerts = |hold_ns: u64| {
            let spec = EnsembleSpec { hold_ns, ..spec(1.0) };
            let mut rng = Rng::new(5);
            let mut state = EnsembleState::default();
            let mut alerted = Vec::new();
            for i in 0..2_000u64 {
                // Two events of three windows each, 30 windows apart, then one of 25 windows.
                let event = (1_500..1_503).contains(&i) || (1_533..1_536).contains(&i) || (1_560..1_585).contains(&i);
                let x = if event { 1e6 } else { rng.exp(1.0) };
                let out = state.combine(vec![score(i, "a", x)], &spec, true);
                // (The stationary windows around the events may alarm at the budget's rate too.)
                if out.iter().any(|s| s.model == "ensemble" && s.is_anomaly) && (1_490..1_600).contains(&i) {
                    alerted.push(i);
                }
                // The detector's own decision holds the same way.
                let own = out.iter().any(|s| s.model == "a" && s.is_anomaly);
                let ensemble = out.iter().any(|s| s.model == "ensemble" && s.is_anomaly);
                assert!(!event || own == ensemble, "window {i}: detector {own}, ensemble {ensemble}");
            }
            alerted
        };
        // The long event alerts again once each hold (10 windows after the alerted one) is over.
        assert_eq!(alerts(10_000_000_000), vec![1_500, 1_533, 1_560, 1_571, 1_582]);
        let every = alerts(0);
        for i in [1_500, 1_501, 1_502, 1_533, 1_534, 1_535] {
            assert!(every.contains(&i), "without a hold window {i} alerts: {every:?}");
        }
    }

    #[test]
    fn stationary_detectors_alarm_at_most_at_the_budget() {
        // 36 alarms an hour on 1 s windows: a bound of 1% per window; two independent detectors,
        // with equal weights and with the second at a quarter of the first's.
        for weights in [vec![], vec![("b".to_string(), 0.25)]] {
            let spec = EnsembleSpec { weights, ..spec(36.0) };
            let mut rng = Rng::new(17);
            let mut state = EnsembleState::default();
            let (mut scored, mut alarms) = (0, 0);
            for i in 0..60_000 {
                let out = state.combine(vec![score(i, "a", rng.exp(1.0)), score(i, "b", rng.unit())], &spec, true);
                if let Some(e) = out.iter().find(|s| s.model == "ensemble") {
                    scored += 1;
                    alarms += usize::from(e.is_anomaly);
                }
            }
            let rate = alarms as f64 / scored as f64;
            assert!(rate > 0.003 && rate < 0.02, "alarm rate {rate} for a bound of 0.01 ({:?})", spec.weights);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8))]
        /// The combination keeps the level of one test: with K independent uniform p-values, and
        /// with K copies of one (the most dependent detectors), P(p_combined <= a) stays near a.
        #[test]
        fn the_cauchy_combination_keeps_its_level(seed in 0u64..1000, k in 2usize..5, level in 0.001f64..0.05) {
            let mut rng = Rng::new(seed);
            let n = 40_000;
            let (mut independent, mut identical) = (0usize, 0usize);
            for _ in 0..n {
                let ps: Vec<f64> = (0..k).map(|_| rng.unit()).collect();
                independent += usize::from(cauchy_combination(ps.iter().copied()) <= level);
                identical += usize::from(cauchy_combination(std::iter::repeat_n(ps[0], k)) <= level);
            }
            let expected = level * n as f64;
            let slack = 4.0 * expected.sqrt() + 3.0;
            proptest::prop_assert!((independent as f64) < 1.3 * expected + slack, "independent: {independent} vs {expected}");
            proptest::prop_assert!((independent as f64) > 0.7 * expected - slack, "independent: {independent} vs {expected}");
            proptest::prop_assert!((identical as f64) < 1.3 * expected + slack, "identical: {identical} vs {expected}");
        }

        /// With any positive weights too (`detect.combine-weights`): independent uniform p-values
        /// combined with weights from 0.05 to 1.05 alarm at about the level, and identical ones at
        /// most at it.
        #[test]
        fn the_weighted_combination_keeps_its_level(seed in 0u64..1000, k in 2usize..5, level in 0.001f64..0.05) {
            let mut rng = Rng::new(seed);
            let weights: Vec<f64> = (0..k).map(|_| 0.05 + rng.unit()).collect();
            let n = 40_000;
            let (mut independent, mut identical) = (0usize, 0usize);
            for _ in 0..n {
                let ps: Vec<f64> = (0..k).map(|_| rng.unit()).collect();
                independent += usize::from(weighted_cauchy_combination(ps.iter().copied().zip(weights.iter().copied())) <= level);
                identical += usize::from(weighted_cauchy_combination(weights.iter().map(|w| (ps[0], *w))) <= level);
            }
            let expected = level * n as f64;
            let slack = 4.0 * expected.sqrt() + 3.0;
            proptest::prop_assert!((independent as f64) < 1.3 * expected + slack, "independent: {independent} vs {expected} ({weights:?})");
            proptest::prop_assert!((independent as f64) > 0.7 * expected - slack, "independent: {independent} vs {expected} ({weights:?})");
            proptest::prop_assert!((identical as f64) < 1.3 * expected + slack, "identical: {identical} vs {expected} ({weights:?})");
        }
    }

    #[test]
    fn two_detectors_moderately_out_alert_where_the_union_bound_would_not() {
        // A bound of 1% per window: p = 0.008 from both detectors is 0.016 under K * min p, below
        // 0.01 under the Cauchy combination; one at 0.008 and one ordinary is neither.
        let (bound, both, one) = (0.01, cauchy_combination([0.008, 0.008]), cauchy_combination([0.008, 0.6]));
        assert!(2.0 * 0.008 > bound && both <= bound, "both moderately out: {both}");
        assert!(one > bound, "one moderately out: {one}");
    }

    #[test]
    fn an_alert_names_the_detector_at_fault_and_its_features() {
        let spec = spec(1.0);
        let mut rng = Rng::new(4);
        let mut state = EnsembleState::default();
        for i in 0..1000 {
            state.combine(vec![score(i, "a", rng.exp(1.0)), score(i, "b", rng.exp(1.0))], &spec, true);
        }
        let mut burst = score(1000, "a", 40.0);
        burst.top_features = vec![("cancels".into(), 40.0)];
        let out = state.combine(vec![burst, score(1000, "b", 0.5)], &spec, true);
        let e = out.iter().find(|s| s.model == "ensemble").unwrap();
        assert!(e.is_anomaly && e.score > e.threshold);
        assert_eq!(e.detectors.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(e.detectors[0].1 > e.threshold && e.detectors[1].1 < 1.0, "{:?}", e.detectors);
        assert_eq!(e.top_features[0].0, "cancels");
        let a = out.iter().find(|s| s.model == "a").unwrap();
        assert!(a.is_anomaly && a.p_value.unwrap() < spec.bound(1_000_000_000));
    }

    /// A detector left out of the combination is still calibrated and decides on its own, but its
    /// p-value neither raises an ensemble alert nor appears among the ensemble's reasons, and K
    /// counts only the combined detectors.
    #[test]
    fn a_detector_left_out_decides_alone_and_is_not_combined() {
        let every = spec(1.0);
        let spec = EnsembleSpec { left_out: vec!["z".into()], ..every.clone() };
        let mut rng = Rng::new(5);
        let mut state = EnsembleState::default();
        for i in 0..1000 {
            let scores = vec![score(i, "a", rng.exp(1.0)), score(i, "z/10s", rng.exp(1.0))];
            state.combine(scores, &spec, true);
        }
        let out = state.combine(vec![score(1000, "a", 0.5), score(1000, "z/10s", 40.0)], &spec, true);
        let z = out.iter().find(|s| s.model == "z/10s").unwrap();
        assert!(z.is_anomaly && z.p_value.unwrap() < spec.bound(1_000_000_000), "its own decision stands");
        let e = out.iter().find(|s| s.model == "ensemble").unwrap();
        assert!(!e.is_anomaly, "not combined: {e:?}");
        assert_eq!(e.detectors.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), ["a"]);
        let a = out.iter().find(|s| s.model == "a").unwrap();
        assert_eq!(e.p_value, a.p_value, "one combined detector: its own p");
        // The same scores with every detector combined alert.
        let mut all = EnsembleState::default();
        let mut rng = Rng::new(5);
        for i in 0..1000 {
            let scores = vec![score(i, "a", rng.exp(1.0)), score(i, "z/10s", rng.exp(1.0))];
            all.combine(scores, &every, true);
        }
        let out = all.combine(vec![score(1000, "a", 0.5), score(1000, "z/10s", 40.0)], &every, true);
        assert!(out.iter().find(|s| s.model == "ensemble").unwrap().is_anomaly);
    }

    /// A detector at a quarter of the other's weight alone far out gives about `p / 0.2` (`2p` with
    /// equal weights), so a p-value that alerts with equal weights may not; its reason is stated at
    /// that weighted strength, and its own calibration does not depend on its weight.
    #[test]
    fn a_lighter_detector_must_be_further_out_to_alert_alone() {
        let equal = spec(1.0);
        let weighted = EnsembleSpec { weights: vec![("m".into(), 0.25)], ..equal.clone() };
        assert_eq!((weighted.weight("model-x"), weighted.weight("a")), (0.25, 1.0));
        let train = |spec: &EnsembleSpec| {
            let mut rng = Rng::new(9);
            let mut state = EnsembleState::default();
            for i in 0..2000 {
                state.combine(vec![score(i, "a", rng.exp(1.0)), score(i, "m", rng.exp(1.0))], spec, true);
            }
            state
        };
        let bound = equal.bound(1_000_000_000);
        // Scores of "m" whose own p-value lies between bound / 5 and bound / 2 (in the fitted tail:
        // the level for p is about ln(fraction / p) above the threshold of an exponential stream).
        let state = train(&equal);
        let probe = |state: &EnsembleState, spec: &EnsembleSpec, x: f64| {
            let out = state.clone().combine(vec![score(2000, "a", 0.1), score(2000, "m", x)], spec, true);
            let m = out.iter().find(|s| s.model == "m").unwrap().p_value.unwrap();
            let e = out.iter().find(|s| s.model == "ensemble").unwrap().clone();
            (m, e)
        };
        let x = (0..400)
            .map(|k| 4.0 + k as f64 * 0.05)
            .find(|x| {
                let (m, _) = probe(&state, &equal, *x);
                m < bound / 3.0
            })
            .expect("a score far enough out");
        let (m, e) = probe(&state, &equal, x);
        assert!(m > bound / 5.0, "p {m} against bound {bound}");
        assert!(e.is_anomaly, "equal weights: about 2p <= bound ({e:?})");
        let (m_w, e_w) = probe(&train(&weighted), &weighted, x);
        assert_eq!(m_w, m, "the member's own calibration does not depend on its weight");
        assert!(!e_w.is_anomaly, "at weight 0.25 of 1.25: about 5p > bound ({e_w:?})");
        let reason = e_w.detectors.iter().find(|d| d.0 == "m").unwrap().1;
        assert!((reason - -(m * 5.0).min(1.0).log10()).abs() < 1e-9, "its reason at p / 0.2: {reason}");
        assert!((e_w.p_value.unwrap() / (5.0 * m) - 1.0).abs() < 0.05, "about p / 0.2: {:?} for {m}", e_w.p_value);
    }

    #[test]
    fn warm_up_and_cut_windows_are_not_decided() {
        let spec = spec(3600.0);
        let mut state = EnsembleState::default();
        let out = state.combine(vec![score(0, "a", 1e9)], &spec, true);
        assert_eq!(out.len(), 1, "no ensemble score before the calibration is warm");
        for i in 1..200 {
            state.combine(vec![score(i, "a", (i % 7) as f64)], &spec, true);
        }
        let out = state.combine(vec![score(200, "a", 1e9)], &spec, false);
        assert_eq!(out.len(), 1, "a window cut by the end of the input gets no ensemble score");
        assert!(!out[0].is_anomaly && out[0].p_value.is_none());
        let out = state.combine(vec![score(201, "a", 1e9)], &spec, true);
        assert!(out[1].is_anomaly, "the same score in a complete window is an alert");
    }

    #[test]
    fn the_operator_decides_complete_windows_and_leaves_the_cut_one_undecided() {
        let spec = spec(36.0);
        let captured = timely::execute_directly(move |worker| {
            let probe = timely::dataflow::ProbeHandle::new();
            let (mut input, mut times, rx) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<WindowScore>>();
                let (times, time_stream) = scope.new_input::<Vec<u64>>();
                let out = stream.ensemble(Some(time_stream), spec, None);
                let rx = out.clone().capture();
                out.probe_with(&probe);
                (input, times, rx)
            });
            for i in 0..300u64 {
                let s = score(i, "a", if i == 250 { 1e6 } else { (i % 5) as f64 });
                input.advance_to(s.window.end);
                times.advance_to(s.window.end);
                times.send(s.window.start + 500_000_000); // the window's events
                input.send(s);
                if i + 1 < 300 {
                    // The watermark reaches the window's end while the input is live.
                    input.advance_to(s_end(i));
                    times.advance_to(s_end(i));
                }
                worker.step_while(|| probe.less_than(input.time()));
            }
            // The last window (ends at 300 s, last event at 299.5 s) is released only by the end of
            // the input, and the input did not reach its end.
            drop(input);
            drop(times);
            worker.step_while(|| !probe.done());
            rx
        });
        let scores = crate::testing::captured(captured);
        let ensemble: Vec<&WindowScore> = scores.iter().filter(|s| s.model == "ensemble").collect();
        assert_eq!(ensemble.len(), 300 - TailSpec::default().warmup - 1);
        assert!(ensemble.iter().all(|s| s.window.end < 300_000_000_000));
        let last = scores.iter().find(|s| s.window.end == 300_000_000_000).unwrap();
        assert!(!last.is_anomaly && last.p_value.is_none(), "{last:?}");
        let alerts: Vec<u64> =
            ensemble.iter().filter(|s| s.is_anomaly).map(|s| s.window.start / 1_000_000_000).collect();
        assert!(alerts.contains(&250), "{alerts:?}");
        assert!(alerts.len() < 20, "{alerts:?}");
    }

    #[test]
    fn the_operator_waits_for_the_frontier_and_decides_every_window() {
        let spec = spec(36.0);
        let captured = timely::execute_directly(move |worker| {
            let probe = timely::dataflow::ProbeHandle::new();
            let (mut input, rx) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, stream) = scope.new_input::<Vec<WindowScore>>();
                let out = stream.ensemble(None, spec, None);
                let rx = out.clone().capture();
                out.probe_with(&probe);
                (input, rx)
            });
            for i in 0..300u64 {
                let s = score(i, "a", if i == 250 { 1e6 } else { (i % 5) as f64 });
                input.advance_to(s.window.end);
                input.send(s);
                input.advance_to(s_end(i));
                worker.step_while(|| probe.less_than(input.time()));
            }
            drop(input);
            worker.step_while(|| !probe.done());
            rx
        });
        let scores = crate::testing::captured(captured);
        let ensemble: Vec<&WindowScore> = scores.iter().filter(|s| s.model == "ensemble").collect();
        assert_eq!(ensemble.len(), 300 - TailSpec::default().warmup);
        let alerts: Vec<u64> =
            ensemble.iter().filter(|s| s.is_anomaly).map(|s| s.window.start / 1_000_000_000).collect();
        assert!(alerts.contains(&250), "{alerts:?}");
        assert!(alerts.len() < 20, "{alerts:?}");
    }
}
