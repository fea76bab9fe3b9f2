//! The baseline detector: a rolling z-score of each window feature against the instrument's own
//! recent history, the score being the largest |z| over features. Pure state ([`ZScoreState`]) plus
//! the `ScoreWindows` operator.
//!
//! Each feature keeps an exponentially weighted mean and variance (span [`ZScoreSpec::span`] windows).
//! A window is scored against the statistics of the windows before it, then folded in. No score is
//! produced until an instrument has seen [`ZScoreSpec::warmup`] windows (warm-up is counted, not
//! hidden). This is the baseline the transformer model is compared against.

use crate::event::InstrumentId;
use crate::features::{WindowFeatures, FEATURE_NAMES};
use crate::window::Window;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;

/// Features the baseline scores (prices and mid levels are left out: they are not stationary).
pub const SCORED_FEATURES: [&str; 18] = [
    "events",
    "cancels",
    "execs",
    "exec_volume",
    "log_return",
    "realized_vol",
    "spread_twa",
    "bid_depth5",
    "ask_depth5",
    "queue_imbalance",
    "ofi",
    "cancel_add_ratio",
    "add_volume",
    "cancel_volume",
    "bid_depth5_max",
    "ask_depth5_max",
    "bid_depth5_min",
    "ask_depth5_min",
];

/// Options of the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZScoreSpec {
    /// Span of the exponentially weighted statistics, in windows.
    pub span: f64,
    /// Windows an instrument must see before it is scored.
    pub warmup: u64,
    /// A window whose score exceeds this is an anomaly.
    pub threshold: f64,
    /// How many features an alert names.
    pub top: usize,
}

impl Default for ZScoreSpec {
    fn default() -> Self {
        ZScoreSpec { span: 60.0, warmup: 30, threshold: 8.0, top: 3 }
    }
}

/// A scored window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WindowScore {
    /// The instrument.
    pub instrument: InstrumentId,
    /// The window.
    pub window: Window,
    /// The score (largest |z| over the scored features).
    pub score: f64,
    /// The threshold in force.
    pub threshold: f64,
    /// `score > threshold`.
    pub is_anomaly: bool,
    /// The features with the largest |z|, largest first.
    pub top_features: Vec<(String, f64)>,
    /// The scorer's name.
    pub model: String,
    /// The calibrated tail probability `P(score >= this score)` against the instrument's own recent
    /// scores of this scorer ([`crate::ensemble`]); `None` before calibration (or during its warm-up).
    #[serde(default)]
    pub p_value: Option<f64>,
    /// Ensemble scores: the detectors that scored the window, most significant first, each with its
    /// `-log10` tail probability (multiplied by the number of detectors). Empty for single detectors.
    #[serde(default)]
    pub detectors: Vec<(String, f64)>,
}

/// Rolling statistics of one instrument.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ZScoreState {
    seen: u64,
    mean: Vec<f64>,
    var: Vec<f64>,
    last_end: u64,
    /// Positions in the feature vector of the names scored, found once (not checkpointed: they
    /// follow from the names).
    #[serde(skip)]
    features: Vec<usize>,
}

/// The reference a plain rolling z-score is measured with (`lobsentry eval --features`): five simple
/// window features (activity, trading, price, cost of liquidity, book balance), scored like the
/// baseline but without anything this project chose.
pub const REFERENCE_FEATURES: [&str; 5] = ["events", "exec_volume", "log_return", "spread_twa", "queue_imbalance"];

impl ZScoreState {
    /// Scores a window against the history, then folds it in. `None` during warm-up, for windows
    /// older than the last one seen, and when no scored feature is finite.
    ///
    /// ```
    /// use lobsentry_operators::detect::{ZScoreSpec, ZScoreState};
    /// use lobsentry_operators::features::{WindowFeatures, FEATURE_COUNT};
    /// use lobsentry_operators::event::InstrumentId;
    /// use lobsentry_operators::window::Window;
    /// let spec = ZScoreSpec { warmup: 5, ..Default::default() };
    /// let mut state = ZScoreState::default();
    /// let w = |i: u64, events: f64| {
    ///     let mut values = [1.0; FEATURE_COUNT];
    ///     values[0] = events;
    ///     WindowFeatures { instrument: InstrumentId::new("X").unwrap(), window: Window { start: i, end: i + 1 },
    ///         exec_price_range: None, vwap_ticks: None, values }
    /// };
    /// for i in 0..20 { state.score(&w(i, 100.0 + (i % 3) as f64), &spec); }
    /// let burst = state.score(&w(20, 1000.0), &spec).unwrap();
    /// assert!(burst.is_anomaly);
    /// assert_eq!(burst.top_features[0].0, "events");
    /// ```
    pub fn score(&mut self, w: &WindowFeatures, spec: &ZScoreSpec) -> Option<WindowScore> {
        self.score_features(w, spec, &SCORED_FEATURES)
    }

    /// [`ZScoreState::score`] over the features `names` (one state must always be given the same
    /// names); unknown names are skipped.
    pub fn score_features(&mut self, w: &WindowFeatures, spec: &ZScoreSpec, names: &[&str]) -> Option<WindowScore> {
        if self.seen > 0 && w.window.end <= self.last_end {
            return None;
        }
        if self.features.is_empty() {
            self.features = crate::features::feature_positions(names);
        }
        let idx = &self.features;
        if self.mean.is_empty() {
            self.mean = vec![f64::NAN; idx.len()];
            self.var = vec![0.0; idx.len()];
        }
        let alpha = 2.0 / (spec.span + 1.0);
        let mut zs: Vec<(usize, f64)> = Vec::new();
        for (k, &i) in idx.iter().enumerate() {
            let x = w.values[i];
            if !x.is_finite() {
                continue;
            }
            let (m, v) = (self.mean[k], self.var[k]);
            if m.is_finite() {
                // A floor on the deviation keeps constant features from producing infinite scores.
                let sd = v.sqrt().max(1e-3 * m.abs()).max(1e-9);
                zs.push((k, (x - m) / sd));
                let d = x - m;
                self.mean[k] = m + alpha * d;
                self.var[k] = (1.0 - alpha) * (v + alpha * d * d);
            } else {
                self.mean[k] = x;
            }
        }
        self.seen += 1;
        self.last_end = w.window.end;
        if self.seen <= spec.warmup || zs.is_empty() {
            return None;
        }
        zs.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()));
        let score = zs[0].1.abs();
        Some(WindowScore {
            instrument: w.instrument,
            window: w.window,
            score,
            threshold: spec.threshold,
            is_anomaly: score > spec.threshold,
            top_features: zs.iter().take(spec.top).map(|(k, z)| (FEATURE_NAMES[idx[*k]].to_string(), *z)).collect(),
            model: "zscore-baseline".into(),
            p_value: None,
            detectors: Vec::new(),
        })
    }
}

/// A per-instrument detector state that scores windows one at a time (the z-score baseline,
/// [`crate::multivariate`]): what [`ScoreWindows::score_detector`] keeps per instrument.
pub trait WindowDetector: Default + Serialize + serde::de::DeserializeOwned + 'static {
    /// The detector's options.
    type Spec: Copy + 'static;
    /// The name its state is checkpointed under.
    const KIND: &'static str;
    /// Scores a window against the instrument's history and folds it in (`None`: warm-up, or a
    /// window that does not end after the last one).
    fn score_window(&mut self, w: &WindowFeatures, spec: &Self::Spec) -> Option<WindowScore>;
}

impl WindowDetector for ZScoreState {
    type Spec = ZScoreSpec;
    const KIND: &'static str = "zscore";

    fn score_window(&mut self, w: &WindowFeatures, spec: &ZScoreSpec) -> Option<WindowScore> {
        self.score(w, spec)
    }
}

/// Scores windows with the rolling z-score baseline, or with any [`WindowDetector`].
pub trait ScoreWindows<'scope> {
    /// Scores each window against its instrument's history; returns every score (anomalies have
    /// `is_anomaly`). Windows are routed by instrument and scored in window-end order.
    ///
    /// # Examples
    /// ```
    /// use lobsentry_operators::detect::{ScoreWindows, ZScoreSpec};
    /// use lobsentry_operators::features::{WindowFeatures, FEATURE_COUNT};
    /// use lobsentry_operators::event::InstrumentId;
    /// use lobsentry_operators::testing::captured;
    /// use lobsentry_operators::window::Window;
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// let w = |i: u64, events: f64| {
    ///     let mut values = [1.0; FEATURE_COUNT];
    ///     values[0] = events;
    ///     WindowFeatures { instrument: InstrumentId::new("X").unwrap(), window: Window { start: i, end: i + 1 },
    ///         exec_price_range: None, vwap_ticks: None, values }
    /// };
    /// let mut input: Vec<_> = (0..40).map(|i| w(i, 100.0 + (i % 5) as f64)).collect();
    /// input.push(w(40, 900.0));
    /// let rx = timely::example(move |scope| {
    ///     input.to_stream(scope).score_zscore(ZScoreSpec { warmup: 10, ..Default::default() }).capture()
    /// });
    /// let scores = captured(rx);
    /// assert_eq!(scores.len(), 31, "41 windows, the first 10 are warm-up");
    /// assert_eq!(scores.iter().filter(|s| s.is_anomaly).count(), 1);
    /// ```
    fn score_zscore(self, spec: ZScoreSpec) -> StreamVec<'scope, u64, WindowScore>;

    /// [`ScoreWindows::score_zscore`] with its per-instrument statistics checkpointed in `state`.
    fn score_zscore_with(
        self,
        spec: ZScoreSpec,
        state: Option<crate::checkpoint::StateRegistry>,
    ) -> StreamVec<'scope, u64, WindowScore>;

    /// Scores every window with the detector `D`, one state per instrument (exchanged by
    /// instrument, each worker's windows taken in order of window end), checkpointed in `state`
    /// under `D::KIND`.
    fn score_detector<D: WindowDetector>(
        self,
        spec: D::Spec,
        state: Option<crate::checkpoint::StateRegistry>,
    ) -> StreamVec<'scope, u64, WindowScore>;
}

impl<'scope> ScoreWindows<'scope> for StreamVec<'scope, u64, WindowFeatures> {
    fn score_zscore(self, spec: ZScoreSpec) -> StreamVec<'scope, u64, WindowScore> {
        self.score_zscore_with(spec, None)
    }

    fn score_zscore_with(
        self,
        spec: ZScoreSpec,
        registry: Option<crate::checkpoint::StateRegistry>,
    ) -> StreamVec<'scope, u64, WindowScore> {
        self.score_detector::<ZScoreState>(spec, registry)
    }

    fn score_detector<D: WindowDetector>(
        self,
        spec: D::Spec,
        registry: Option<crate::checkpoint::StateRegistry>,
    ) -> StreamVec<'scope, u64, WindowScore> {
        use crate::checkpoint::{decode, encode};
        let pact = ExchangePact::new(|w: &WindowFeatures| w.instrument.route());
        self.unary(pact, "ScoreWindows", move |_cap, _info| {
            let states: std::rc::Rc<std::cell::RefCell<FxHashMap<InstrumentId, D>>> = Default::default();
            if let Some(registry) = &registry {
                let saved = states.clone();
                if let Some(bytes) = registry.register(D::KIND, move || encode(&*saved.borrow())) {
                    *states.borrow_mut() =
                        decode(&bytes).unwrap_or_else(|e| panic!("checkpoint: {} state does not decode: {e}", D::KIND));
                }
            }
            let mut staged: Vec<WindowFeatures> = Vec::new();
            move |input, output| {
                let mut states = states.borrow_mut();
                input.for_each_stamp(|cap, data| {
                    for batch in data {
                        staged.append(batch);
                    }
                    staged.sort_by_key(|w| (w.window.end, w.instrument));
                    let mut session = output.session(&cap);
                    for w in staged.drain(..) {
                        if let Some(score) = states.entry(w.instrument).or_default().score_window(&w, &spec) {
                            session.give(score);
                        }
                    }
                });
            }
        })
    }
}
