//! The multivariate detector: Hotelling's T² of each window's features against the instrument's own
//! exponentially weighted mean and covariance (pure state, [`MultivariateState`]; scored by the
//! [`crate::detect::ScoreWindows::score_detector`] operator).
//!
//! The baseline ([`crate::detect`]) asks whether any one feature is far from its own history. This
//! detector asks whether the window as a whole is far from the instrument's joint history, so a
//! window whose features are each ordinary but whose combination is not (many trades without any
//! change of depth or price, depth that comes and goes without trades, activity that is moderately
//! high on several features at once) scores high. It is the textbook multivariate control chart
//! (Hotelling 1947; the exponentially weighted covariance of Lowry et al. 1992), and it knows
//! nothing of any kind of episode.
//!
//! - Each feature `x` is first put on a log-like scale, `y = asinh(x / s)` with `s` the feature's
//!   exponentially weighted mean of `|x|`: counts, volumes and depths are heavy-tailed and
//!   positive, and their covariance is dominated by a few bursts on the raw scale; `asinh` is linear
//!   near 0 and logarithmic far from it, so signed features (returns, imbalances) keep their sign.
//! - The mean and covariance of `y` are exponentially weighted over [`MultivariateSpec::span`]
//!   windows (a running mean until that many have been seen, so the first estimates are not biased
//!   towards 0; the runtime gives each time scale the same market time, [`span_at_scale`]). A
//!   window is scored against the statistics of the windows before it, then folded in.
//! - The score is `T² = r' S⁻¹ r` (`r` the deviation from the mean, `S` the covariance with a ridge
//!   of [`MultivariateSpec::ridge`] times its mean variance, so collinear features such as a depth
//!   and its maximum over the window do not make it singular); the inverse is refreshed every
//!   [`MultivariateSpec::refresh`] windows. Each feature's variance counts as at least
//!   [`MultivariateSpec::change_floor`] times its mean squared change over the windows in which it
//!   changed: a feature that seldom changes (the mid's return on an instrument whose mid moves in
//!   one window of a thousand) otherwise has a variance of a thousandth of a move's square, and one
//!   ordinary move scores about a thousand, however ordinary its size (docs/detection-history.md,
//!   fourteenth session). Its top features are those with the largest
//!   contributions `r_i (S⁻¹ r)_i` (the contributions sum to `T²`).
//!
//! A non-finite feature (no mid price, for example) counts as at its mean. Like every detector, the
//! raw score is calibrated per instrument by the ensemble ([`crate::ensemble`]); its own
//! [`MultivariateSpec::threshold`] is used only without calibration.

use crate::detect::{WindowDetector, WindowScore, SCORED_FEATURES};
use crate::features::{feature_positions, WindowFeatures, FEATURE_NAMES};
use serde::{Deserialize, Serialize};

/// The name of the multivariate detector's scores.
pub const NAME: &str = "multivariate-t2";

/// Options of the multivariate detector.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MultivariateSpec {
    /// Span of the exponentially weighted mean and covariance, in windows.
    pub span: f64,
    /// Windows an instrument must see before it is scored.
    pub warmup: u64,
    /// `T²` above which a window is an anomaly (only without calibration).
    pub threshold: f64,
    /// Features named in a score.
    pub top: usize,
    /// Windows between refreshes of the inverse covariance.
    pub refresh: u64,
    /// Ridge added to the covariance's diagonal, relative to its mean variance.
    pub ridge: f64,
    /// Each feature's variance is taken as at least this share of its mean squared change (on the
    /// transformed scale, over the windows in which it changed), so one typical change of a feature
    /// that seldom changes adds at most about `1 / change_floor` to `T²` (0: no floor).
    pub change_floor: f64,
}

impl Default for MultivariateSpec {
    fn default() -> Self {
        MultivariateSpec {
            span: 1800.0,
            warmup: 100,
            threshold: 200.0,
            top: 3,
            refresh: 20,
            ridge: 0.01,
            change_floor: 0.1,
        }
    }
}

/// Fewest windows a span is scaled down to ([`span_at_scale`]).
pub const MIN_SPAN: f64 = 30.0;

/// The span, in windows of a scale of `scale_ns`, that covers the market time `span` windows of
/// `base_ns` cover (at least [`MIN_SPAN`]): every scale then learns its mean and covariance over the
/// same stretch of the day (30 minutes by default), where the same number of windows would be five
/// hours at 10 s, long enough for the day's own rhythm (busy open and close, quiet midday) to look
/// like a deviation.
///
/// ```
/// use lobsentry_operators::multivariate::span_at_scale;
/// assert_eq!(span_at_scale(1800.0, 1_000_000_000, 1_000_000_000), 1800.0);
/// assert_eq!(span_at_scale(1800.0, 1_000_000_000, 10_000_000_000), 180.0);
/// assert_eq!(span_at_scale(1800.0, 1_000_000_000, 600_000_000_000), 30.0, "at least MIN_SPAN");
/// ```
pub fn span_at_scale(span: f64, base_ns: u64, scale_ns: u64) -> f64 {
    if scale_ns <= base_ns {
        return span;
    }
    (span * base_ns as f64 / scale_ns as f64).max(MIN_SPAN.min(span))
}

/// Per-instrument state of the multivariate detector.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MultivariateState {
    seen: u64,
    last_end: u64,
    /// Per feature: the exponentially weighted mean of `|x|` (the scale of the transform).
    scale: Vec<f64>,
    /// Per feature: its last finite value (NaN before one).
    last: Vec<f64>,
    /// Per feature: windows in which it differed from the last (the count of `jump`'s running mean).
    changes: Vec<u64>,
    /// Per feature: the exponentially weighted mean of the squared change of its transformed value,
    /// over the windows in which it changed.
    jump: Vec<f64>,
    /// Mean of the transformed features.
    mean: Vec<f64>,
    /// Their covariance, row-major `d x d`; only its lower triangle (`j <= i`) is kept, the only
    /// part the Cholesky factorisation reads (the rest stays 0).
    cov: Vec<f64>,
    /// The inverse of the (ridged) covariance when last refreshed; empty before.
    inverse: Vec<f64>,
    /// Windows since the inverse was refreshed.
    since_refresh: u64,
    /// Positions of [`SCORED_FEATURES`] in [`FEATURE_NAMES`] (derived, not saved).
    #[serde(skip)]
    features: Vec<usize>,
}

impl WindowDetector for MultivariateState {
    type Spec = MultivariateSpec;
    const KIND: &'static str = "multivariate";

    fn score_window(&mut self, w: &WindowFeatures, spec: &MultivariateSpec) -> Option<WindowScore> {
        self.score(w, spec)
    }
}

impl MultivariateState {
    /// Scores a window against the instrument's history, then folds it in. `None` during the
    /// warm-up and for a window that does not end after the last one.
    ///
    /// ```
    /// use lobsentry_operators::event::InstrumentId;
    /// use lobsentry_operators::features::{WindowFeatures, FEATURE_COUNT, FEATURE_NAMES};
    /// use lobsentry_operators::multivariate::{MultivariateSpec, MultivariateState};
    /// use lobsentry_operators::window::Window;
    /// let at = |name: &str| FEATURE_NAMES.iter().position(|f| *f == name).unwrap();
    /// let w = |i: u64, events: f64, execs: f64| {
    ///     let mut values = [0.0; FEATURE_COUNT];
    ///     values[at("events")] = events;
    ///     values[at("execs")] = execs;
    ///     WindowFeatures { instrument: InstrumentId::new("X").unwrap(), window: Window { start: i, end: i + 1 },
    ///         exec_price_range: None, vwap_ticks: None, values }
    /// };
    /// let spec = MultivariateSpec { warmup: 50, ..Default::default() };
    /// let mut state = MultivariateState::default();
    /// // Trades are always a tenth of the messages.
    /// for i in 0..300 {
    ///     let events = 50.0 + (i % 17) as f64 * 5.0;
    ///     state.score(&w(i, events, events / 10.0), &spec);
    /// }
    /// let usual = state.score(&w(300, 90.0, 9.0), &spec).unwrap();
    /// // Both within their ranges, their relation broken.
    /// let broken = state.score(&w(301, 50.0, 13.0), &spec).unwrap();
    /// assert!(broken.score > 20.0 * usual.score, "{} vs {}", broken.score, usual.score);
    /// // The two broken features are the two named first.
    /// let mut top: Vec<&str> = broken.top_features[..2].iter().map(|(f, _)| f.as_str()).collect();
    /// top.sort();
    /// assert_eq!(top, ["events", "execs"]);
    /// ```
    pub fn score(&mut self, w: &WindowFeatures, spec: &MultivariateSpec) -> Option<WindowScore> {
        if self.seen > 0 && w.window.end <= self.last_end {
            return None;
        }
        if self.features.is_empty() {
            self.features = feature_positions(&SCORED_FEATURES);
        }
        let d = self.features.len();
        if self.mean.len() != d {
            self.scale = vec![0.0; d];
            self.last = vec![f64::NAN; d];
            self.changes = vec![0; d];
            self.jump = vec![0.0; d];
            self.mean = vec![0.0; d];
            self.cov = vec![0.0; d * d];
            self.inverse.clear();
            self.seen = 0;
        }
        // A running mean until `span` windows, then exponentially weighted.
        let alpha = (2.0 / (spec.span + 1.0)).max(1.0 / (self.seen + 1) as f64);
        let mut r = vec![0.0; d];
        for (k, &i) in self.features.iter().enumerate() {
            let x = w.values[i];
            if !x.is_finite() {
                continue;
            }
            let s = if self.scale[k] > 0.0 { self.scale[k] } else { x.abs().max(1e-12) };
            let y = (x / s).asinh();
            r[k] = if self.seen == 0 { 0.0 } else { y - self.mean[k] };
            if self.seen == 0 {
                self.mean[k] = y;
            }
            let last = self.last[k];
            if last.is_finite() && x != last {
                self.changes[k] += 1;
                let beta = (2.0 / (spec.span + 1.0)).max(1.0 / self.changes[k] as f64);
                let dy = y - (last / s).asinh();
                self.jump[k] += beta * (dy * dy - self.jump[k]);
            }
            self.last[k] = x;
            self.scale[k] += alpha * (x.abs() - self.scale[k]);
        }
        let mut score = None;
        if self.seen >= spec.warmup && self.inverse.len() == d * d {
            let sr: Vec<f64> = (0..d).map(|i| (0..d).map(|j| self.inverse[i * d + j] * r[j]).sum()).collect();
            let mut contributions: Vec<(usize, f64)> = (0..d).map(|k| (k, r[k] * sr[k])).collect();
            let t2: f64 = contributions.iter().map(|c| c.1).sum::<f64>().max(0.0);
            contributions.sort_by(|a, b| b.1.total_cmp(&a.1));
            score = Some(WindowScore {
                instrument: w.instrument,
                window: w.window,
                score: t2,
                threshold: spec.threshold,
                is_anomaly: t2 > spec.threshold,
                top_features: contributions
                    .iter()
                    .take(spec.top)
                    .map(|&(k, c)| (FEATURE_NAMES[self.features[k]].to_string(), c))
                    .collect(),
                model: NAME.into(),
                p_value: None,
                detectors: Vec::new(),
            });
        }
        // Fold the window in.
        if self.seen > 0 {
            for (m, rk) in self.mean.iter_mut().zip(&r) {
                *m += alpha * rk;
            }
            for i in 0..d {
                for j in 0..=i {
                    let c = &mut self.cov[i * d + j];
                    *c = (1.0 - alpha) * (*c + alpha * r[i] * r[j]);
                }
            }
        }
        self.seen += 1;
        self.last_end = w.window.end;
        self.since_refresh += 1;
        if self.inverse.len() != d * d || self.since_refresh >= spec.refresh.max(1) {
            let extra: Vec<f64> =
                (0..d).map(|k| (spec.change_floor * self.jump[k] - self.cov[k * d + k]).max(0.0)).collect();
            if let Some(inverse) = ridged_inverse(&self.cov, &extra, d, spec.ridge) {
                self.inverse = inverse;
            }
            self.since_refresh = 0;
        }
        score
    }
}

/// The inverse of `cov + ridge * (trace / d) * I` by Cholesky; the ridge grows tenfold (up to three
/// times) while the matrix is not positive definite. `None` when it never is (all zeros).
fn ridged_inverse(cov: &[f64], extra: &[f64], d: usize, ridge: f64) -> Option<Vec<f64>> {
    let trace: f64 = (0..d).map(|i| cov[i * d + i]).sum();
    if !(trace > 0.0 && trace.is_finite()) {
        return None;
    }
    let mut lambda = ridge.max(1e-9) * trace / d as f64;
    for _ in 0..4 {
        if let Some(l) = cholesky(cov, extra, d, lambda) {
            return Some(inverse_from_cholesky(&l, d));
        }
        lambda *= 10.0;
    }
    None
}

/// The lower-triangular `L` with `L L' = a + diag(extra) + lambda I`, if that is positive definite.
fn cholesky(a: &[f64], extra: &[f64], d: usize, lambda: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let mut sum = a[i * d + j] + if i == j { lambda + extra.get(i).copied().unwrap_or(0.0) } else { 0.0 };
            for k in 0..j {
                sum -= l[i * d + k] * l[j * d + k];
            }
            if i == j {
                // NaN fails this test too.
                if sum.is_nan() || sum <= 0.0 {
                    return None;
                }
                l[i * d + i] = sum.sqrt();
            } else {
                l[i * d + j] = sum / l[j * d + j];
            }
        }
    }
    Some(l)
}

/// `(L L')^-1` from `L`.
fn inverse_from_cholesky(l: &[f64], d: usize) -> Vec<f64> {
    // M = L^-1 (lower triangular), by forward substitution on the identity.
    let mut m = vec![0.0; d * d];
    for c in 0..d {
        for i in c..d {
            let mut sum = if i == c { 1.0 } else { 0.0 };
            for k in c..i {
                sum -= l[i * d + k] * m[k * d + c];
            }
            m[i * d + c] = sum / l[i * d + i];
        }
    }
    // (L L')^-1 = M' M.
    let mut inv = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..=i {
            let s: f64 = (i.max(j)..d).map(|k| m[k * d + i] * m[k * d + j]).sum();
            inv[i * d + j] = s;
            inv[j * d + i] = s;
        }
    }
    inv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::InstrumentId;
    use crate::features::FEATURE_COUNT;
    use crate::window::Window;
    use proptest::prelude::*;

    fn window(i: u64, values: [f64; FEATURE_COUNT]) -> WindowFeatures {
        WindowFeatures {
            instrument: InstrumentId::new("X").unwrap(),
            window: Window { start: i * 1_000_000_000, end: (i + 1) * 1_000_000_000 },
            exec_price_range: None,
            vwap_ticks: None,
            values,
        }
    }

    /// A small deterministic generator (xorshift), so the tests need no seed plumbing.
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
        fn normal(&mut self) -> f64 {
            let (u, v) = (self.uniform().max(1e-300), self.uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
    }

    /// Windows whose 18 scored features are independent normals around 10 (so the transform is
    /// close to linear and T² close to chi-squared with 18 degrees of freedom).
    fn normal_windows(n: u64, seed: u64) -> Vec<WindowFeatures> {
        let mut rng = Rng(seed | 1);
        let positions = feature_positions(&SCORED_FEATURES);
        assert_eq!(positions.len(), SCORED_FEATURES.len());
        (0..n)
            .map(|i| {
                let mut v = [0.0; FEATURE_COUNT];
                for &p in &positions {
                    v[p] = 10.0 + rng.normal();
                }
                window(i, v)
            })
            .collect()
    }

    #[test]
    fn the_inverse_inverts() {
        let d = 3;
        let a = [4.0, 2.0, 0.6, 2.0, 2.0, 0.5, 0.6, 0.5, 3.0];
        let inv = ridged_inverse(&a, &[], d, 1e-12).unwrap();
        for i in 0..d {
            for j in 0..d {
                let p: f64 = (0..d).map(|k| a[i * d + k] * inv[k * d + j]).sum();
                assert!((p - if i == j { 1.0 } else { 0.0 }).abs() < 1e-6, "({i},{j}) = {p}");
            }
        }
        assert!(ridged_inverse(&[0.0; 9], &[], 3, 0.01).is_none());
    }

    #[test]
    fn independent_normal_features_score_near_their_dimension() {
        // The mean of T² over many windows of a stationary stream is about d (chi-squared, d = 18),
        // a little more because the statistics are estimated.
        let spec = MultivariateSpec::default();
        let mut state = MultivariateState::default();
        let scores: Vec<f64> =
            normal_windows(4000, 7).iter().filter_map(|w| state.score(w, &spec)).map(|s| s.score).collect();
        assert_eq!(scores.len(), 3900, "the first 100 windows are warm-up");
        let mean = scores[1000..].iter().sum::<f64>() / 2900.0;
        assert!((16.0..24.0).contains(&mean), "mean T2 {mean}");
    }

    #[test]
    fn an_ordinary_change_of_a_feature_that_seldom_changes_stays_ordinary() {
        // The mid's return moves by one tick in one window of 1,000 (alternately up and down) and is
        // 0 otherwise; the other features are normals. Without the floor its variance is a
        // thousandth of a move's square and the next ordinary move scores about 1,000 on its own;
        // with it, about 1 / change_floor. A move 100 times larger still scores more (on the asinh
        // scale, which is logarithmic far from 0: about 2.5 times as much).
        let log_return = FEATURE_NAMES.iter().position(|f| *f == "log_return").unwrap();
        let run = |change_floor: f64, size: f64| {
            let spec = MultivariateSpec { change_floor, ..Default::default() };
            let mut state = MultivariateState::default();
            let mut windows = normal_windows(6001, 13);
            for (i, w) in windows.iter_mut().enumerate() {
                w.values[log_return] = if i % 1000 == 500 {
                    if i % 2000 == 500 {
                        1e-4
                    } else {
                        -1e-4
                    }
                } else {
                    0.0
                };
            }
            windows[6000].values[log_return] = size;
            let last = windows.pop().unwrap();
            for w in &windows {
                state.score(w, &spec);
            }
            let s = state.score(&last, &spec).unwrap();
            let part = s.top_features.iter().find(|(f, _)| f == "log_return").map_or(0.0, |(_, c)| *c);
            (s.score, part)
        };
        let (_, without) = run(0.0, 1e-4);
        let (_, with) = run(0.1, 1e-4);
        let (_, large) = run(0.1, 1e-2);
        assert!(without > 300.0, "without the floor: {without}");
        assert!(with > 3.0 && with < 12.0, "with it: {with}");
        assert!(large > 2.0 * with, "a move 100 times the usual: {large} against {with}");
        // Features that change in every window are not affected: the same scores with and without.
        let spec = MultivariateSpec::default();
        let off = MultivariateSpec { change_floor: 0.0, ..spec };
        let (mut a, mut b) = (MultivariateState::default(), MultivariateState::default());
        for w in normal_windows(1000, 17) {
            assert_eq!(a.score(&w, &spec).map(|s| s.score), b.score(&w, &off).map(|s| s.score));
        }
    }

    #[test]
    fn a_window_out_of_order_or_repeated_is_not_scored_or_learnt() {
        let spec = MultivariateSpec { warmup: 10, ..Default::default() };
        let mut state = MultivariateState::default();
        let windows = normal_windows(50, 3);
        for w in &windows {
            state.score(w, &spec);
        }
        let before = state.clone();
        assert!(state.score(&windows[20], &spec).is_none());
        assert_eq!(state.mean, before.mean);
        assert_eq!(state.seen, before.seen);
    }

    #[test]
    fn a_missing_feature_counts_as_at_its_mean() {
        let spec = MultivariateSpec { warmup: 10, ..Default::default() };
        let mut state = MultivariateState::default();
        for w in normal_windows(200, 5) {
            state.score(&w, &spec);
        }
        let mut next = normal_windows(201, 5).pop().unwrap();
        let log_return = FEATURE_NAMES.iter().position(|f| *f == "log_return").unwrap();
        next.values[log_return] = f64::NAN;
        let s = state.score(&next, &spec).unwrap();
        assert!(s.score.is_finite() && s.score < 100.0, "{}", s.score);
        assert!(state.mean.iter().chain(&state.cov).all(|x| x.is_finite()));
    }

    #[test]
    fn the_state_survives_a_checkpoint() {
        let spec = MultivariateSpec { warmup: 10, ..Default::default() };
        let windows = normal_windows(300, 11);
        let mut whole = MultivariateState::default();
        let mut restored = MultivariateState::default();
        for w in &windows[..150] {
            whole.score(w, &spec);
            restored.score(w, &spec);
        }
        restored = crate::checkpoint::decode(&crate::checkpoint::encode(&restored).unwrap()).unwrap();
        for w in &windows[150..] {
            assert_eq!(whole.score(w, &spec), restored.score(w, &spec));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Scaling every feature by a constant changes no score (the transform divides by the
        /// feature's own scale), and the features named come largest contribution first.
        #[test]
        fn scores_do_not_depend_on_units(seed in 1u64..1_000_000, factor in 0.001f64..1000.0) {
            let spec = MultivariateSpec { warmup: 30, ..Default::default() };
            let (mut a, mut b) = (MultivariateState::default(), MultivariateState::default());
            for w in normal_windows(200, seed) {
                let mut scaled = w.clone();
                for v in scaled.values.iter_mut() {
                    *v *= factor;
                }
                match (a.score(&w, &spec), b.score(&scaled, &spec)) {
                    (Some(x), Some(y)) => {
                        prop_assert!((x.score - y.score).abs() <= 1e-6 * x.score.max(1.0), "{} vs {}", x.score, y.score);
                        prop_assert!(x.top_features.windows(2).all(|p| p[0].1 >= p[1].1));
                    }
                    (None, None) => {}
                    (x, y) => prop_assert!(false, "{:?} vs {:?}", x.is_some(), y.is_some()),
                }
            }
        }
    }
}
