//! Model packages (`models/<name>/model.onnx` + `model.json`): metadata, feature encoding and score
//! maths. Pure: no ONNX Runtime here, so everything is unit-testable; [`crate::inference`] runs the
//! network.
//!
//! `model.json` names the window features the network reads, in order, each with a transform and
//! the normalisation (`(transform(x) - mean) / std`) fitted on the training data; the sequence
//! length; the ONNX input and output names; the scoring mode; the threshold and how it was
//! calibrated; the training data and metrics.

use crate::features::{features_in_schema, WindowFeatures, FEATURE_NAMES, FEATURE_SCHEMA_VERSION};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a raw feature is transformed before normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transform {
    /// `x`.
    Identity,
    /// `ln(1 + x)` (counts, volumes, depths; `x >= 0`).
    Log1p,
    /// `sign(x) ln(1 + |x|)` (signed flows).
    SignedLog1p,
    /// `x / mid_close * 10_000` (a price distance in basis points of the mid).
    BpsOfMid,
}

impl Transform {
    /// Applies the transform; `mid` is the window's closing mid price.
    #[inline]
    pub fn apply(self, x: f64, mid: f64) -> f64 {
        match self {
            Transform::Identity => x,
            Transform::Log1p => x.max(0.0).ln_1p(),
            Transform::SignedLog1p => x.signum() * x.abs().ln_1p(),
            Transform::BpsOfMid => x / mid * 10_000.0,
        }
    }
}

/// One input feature of a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InputFeature {
    /// A name from [`FEATURE_NAMES`].
    pub name: String,
    /// Its transform.
    pub transform: Transform,
    /// Mean of the transformed feature on the training data.
    pub mean: f64,
    /// Standard deviation of the transformed feature on the training data.
    pub std: f64,
}

/// What the network does and how its error becomes a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoringMode {
    /// An autoencoder: the output reconstructs the input sequence.
    Reconstruction,
    /// A forecaster: the output predicts the next window's features; the error is taken against
    /// the window that then arrives.
    Forecast,
}

/// Which steps of a reconstruction the score averages over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreOn {
    /// The last step only (the window being scored).
    LastStep,
    /// Every step of the sequence.
    Sequence,
}

/// How per-feature errors become one score.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// The mean of the per-feature squared errors.
    #[default]
    Mean,
    /// The largest per-feature squared error, each divided by that feature's typical squared error on
    /// held-out normal data ([`ModelMeta::error_scales`]): one badly reconstructed feature is enough,
    /// and features the network always reconstructs poorly do not dominate.
    MaxScaled,
}

/// Per-instrument running standardisation (see [`ModelMeta::running`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunningNorm {
    /// Span of the exponentially weighted statistics, in windows.
    pub span: f64,
    /// Floor of the running standard deviation (in globally normalised units).
    pub floor: f64,
    /// Per-feature floors, in input order, overriding `floor` (for features that are mostly exactly
    /// zero in quiet instruments, such as returns).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floors: Option<Vec<f64>>,
    /// A floor that follows the instrument: the running standard deviation is at least this share
    /// of the root mean squared deviation from the running mean over the last `slow.span` windows
    /// (2026-12-07, twelfth session). Over a quiet spell the short-span deviation of a feature
    /// that is mostly exactly zero (the mid's return on a large-tick book, where the mid stays put
    /// for a minute at a time) falls to `floor`, and the next ordinary one-tick move then reads as
    /// an extreme; the slow deviation remembers how large such moves are on this instrument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow: Option<SlowFloor>,
}

/// The instrument-relative floor of [`RunningNorm::slow`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlowFloor {
    /// Span of the slow mean squared deviation, in windows.
    pub span: f64,
    /// The share of the slow deviation that the running deviation is floored at.
    pub share: f64,
}

/// Running statistics of one instrument's encoded features.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunningState {
    mean: Vec<f64>,
    var: Vec<f64>,
    seen: Vec<u64>,
    /// The slow mean squared deviation ([`RunningNorm::slow`]); empty without it.
    slow: Vec<f64>,
}

impl RunningState {
    /// Standardises an encoded window in place by the statistics so far, then folds it in. Values
    /// that were missing (`missing[j]`) become 0 and do not update the statistics.
    ///
    /// ```
    /// use lobsentry_operators::model::{RunningNorm, RunningState};
    /// let norm = RunningNorm { span: 3.0, floor: 0.5, floors: None, slow: None };
    /// let mut state = RunningState::default();
    /// let mut first = vec![2.0f32];
    /// state.apply(&norm, &mut first, &[false]);
    /// assert_eq!(first, vec![0.0], "nothing to compare with yet");
    /// let mut second = vec![3.0f32];
    /// state.apply(&norm, &mut second, &[false]);
    /// assert_eq!(second, vec![2.0], "(3 - 2) / floor 0.5");
    /// // Per-feature floors override the common one.
    /// let norm = RunningNorm { span: 3.0, floor: 0.5, floors: Some(vec![0.5, 4.0]), slow: None };
    /// let mut state = RunningState::default();
    /// state.apply(&norm, &mut vec![2.0f32, 2.0], &[false, false]);
    /// let mut next = vec![3.0f32, 3.0];
    /// state.apply(&norm, &mut next, &[false, false]);
    /// assert_eq!(next, vec![2.0, 0.25]);
    /// ```
    ///
    /// With [`RunningNorm::slow`], a quiet spell does not shrink the deviation below a share of the
    /// instrument's slow one, so an ordinary move after it stays ordinary:
    ///
    /// ```
    /// use lobsentry_operators::model::{RunningNorm, RunningState, SlowFloor};
    /// let quiet_then_move = |slow: Option<SlowFloor>| {
    ///     let norm = RunningNorm { span: 10.0, floor: 0.01, floors: None, slow };
    ///     let mut state = RunningState::default();
    ///     // Moves of +-1 every other window, then 100 windows of none, then one move.
    ///     for t in 0..400 {
    ///         let x = if t < 300 && t % 2 == 0 { if t % 4 == 0 { 1.0 } else { -1.0 } } else { 0.0 };
    ///         state.apply(&norm, &mut vec![x], &[false]);
    ///     }
    ///     let mut row = vec![1.0f32];
    ///     state.apply(&norm, &mut row, &[false]);
    ///     row[0]
    /// };
    /// let short_only = quiet_then_move(None);
    /// let with_slow = quiet_then_move(Some(SlowFloor { span: 1000.0, share: 0.5 }));
    /// assert!(short_only > 50.0, "the short deviation forgot the moves: {short_only}");
    /// assert!(with_slow < 5.0, "the slow one did not: {with_slow}");
    /// ```
    pub fn apply(&mut self, norm: &RunningNorm, row: &mut [f32], missing: &[bool]) {
        if self.mean.len() != row.len() {
            self.mean = vec![0.0; row.len()];
            self.var = vec![0.0; row.len()];
            self.seen = vec![0; row.len()];
        }
        if norm.slow.is_some() && self.slow.len() != row.len() {
            self.slow = vec![0.0; row.len()];
        }
        let alpha = 2.0 / (norm.span + 1.0);
        for (j, value) in row.iter_mut().enumerate() {
            if missing.get(j).copied().unwrap_or(false) {
                *value = 0.0;
                continue;
            }
            let x = *value as f64;
            if self.seen[j] == 0 {
                self.mean[j] = x;
                *value = 0.0;
            } else {
                let d = x - self.mean[j];
                let mut floor = norm.floors.as_ref().and_then(|f| f.get(j).copied()).unwrap_or(norm.floor);
                if let Some(slow) = &norm.slow {
                    // A running mean until `span` windows, then exponentially weighted.
                    let beta = (2.0 / (slow.span + 1.0)).max(1.0 / self.seen[j] as f64);
                    floor = floor.max(slow.share * self.slow[j].sqrt());
                    self.slow[j] += beta * (d * d - self.slow[j]);
                }
                *value = (d / self.var[j].sqrt().max(floor)) as f32;
                self.mean[j] += alpha * d;
                self.var[j] = (1.0 - alpha) * (self.var[j] + alpha * d * d);
            }
            self.seen[j] += 1;
        }
    }
}

/// `model.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Model name.
    pub name: String,
    /// Model version.
    pub version: String,
    /// The feature schema version it was trained on ([`FEATURE_SCHEMA_VERSION`]).
    pub feature_schema_version: u32,
    /// Input features in network order.
    pub features: Vec<InputFeature>,
    /// Windows per sequence.
    pub sequence_length: usize,
    /// ONNX input name (shape `[batch, sequence_length, features]`, float32).
    pub input_name: String,
    /// ONNX output name (`[batch, sequence_length, features]` for reconstruction, `[batch,
    /// features]` for forecast).
    pub output_name: String,
    /// Scoring mode.
    pub mode: ScoringMode,
    /// Steps scored (reconstruction only).
    pub score_on: ScoreOn,
    /// Scores above this are anomalies.
    pub threshold: f64,
    /// How per-feature errors become the score (default: their mean).
    #[serde(default)]
    pub reduction: Reduction,
    /// Per-feature error scales for [`Reduction::MaxScaled`] (one positive value per input feature).
    #[serde(default)]
    pub error_scales: Option<Vec<f64>>,
    /// When set, each sequence is standardised again by its context (the steps before the last):
    /// per feature, minus the context mean, divided by the context standard deviation floored at this
    /// value. The network then sees, and the score measures, deviations from the instrument's own
    /// recent behaviour.
    #[serde(default)]
    pub context_std_floor: Option<f64>,
    /// When set, each instrument's globally normalised features are standardised again by their own
    /// running (exponentially weighted) mean and variance before they enter a sequence, so the network
    /// sees how unusual each window is for that instrument.
    #[serde(default)]
    pub running: Option<RunningNorm>,
    /// Length (ns) of the windows the network was trained on. Required: a model only scores windows of
    /// this length, and a run whose time scales do not include it refuses to start.
    #[serde(default)]
    pub window_ns: u64,
    /// How the threshold was chosen (free-form, for people).
    #[serde(default)]
    pub calibration: serde_json::Value,
    /// What it was trained on (free-form, for people).
    #[serde(default)]
    pub training: serde_json::Value,
    /// Training metrics (free-form, for people).
    #[serde(default)]
    pub metrics: serde_json::Value,
}

/// Errors of model packages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `model.json` does not parse.
    #[error("{path}: {message}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The network's inputs or outputs disagree with `model.json`.
    #[error("model {model}: {message}")]
    Shape {
        /// The model.
        model: String,
        /// Both sides of the mismatch.
        message: String,
    },
    /// ONNX Runtime failed.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
}

impl ModelMeta {
    /// Reads and checks `model.json` in a package directory.
    pub fn load(dir: &Path) -> Result<ModelMeta, ModelError> {
        let path = dir.join("model.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io { path: path.clone(), source })?;
        let meta: ModelMeta = serde_json::from_str(&text)
            .map_err(|e| ModelError::Metadata { path: path.clone(), message: e.to_string() })?;
        meta.check().map_err(|message| ModelError::Metadata { path, message })?;
        Ok(meta)
    }

    /// Checks internal consistency.
    pub fn check(&self) -> Result<(), String> {
        let mut errors: Vec<String> = Vec::new();
        let positive = |x: f64| x > 0.0 && x.is_finite();
        // Later schemas only append features, so a model of an earlier one reads its own prefix.
        match features_in_schema(self.feature_schema_version) {
            None => errors.push(format!(
                "trained on feature schema {}, this build computes schema {FEATURE_SCHEMA_VERSION}",
                self.feature_schema_version
            )),
            Some(n) => {
                for f in &self.features {
                    if FEATURE_NAMES.iter().position(|x| *x == f.name).is_some_and(|i| i >= n) {
                        errors.push(format!(
                            "feature {:?} is not in schema {}, which the model records",
                            f.name, self.feature_schema_version
                        ));
                    }
                }
            }
        }
        if self.window_ns == 0 {
            errors.push(
                "does not record `window_ns`, the window length (ns) the model was trained on (1 s = 1000000000)"
                    .into(),
            );
        }
        if self.features.is_empty() {
            errors.push("no features".into());
        }
        if self.sequence_length == 0 {
            errors.push("sequence_length is 0".into());
        }
        if self.sequence_length > 4096 {
            errors.push(format!("sequence_length {} is above 4096 windows", self.sequence_length));
        }
        for f in &self.features {
            if !FEATURE_NAMES.contains(&f.name.as_str()) {
                errors.push(format!("unknown feature {:?}", f.name));
            }
            if !(positive(f.std) && f.mean.is_finite()) {
                errors.push(format!("feature {:?}: bad normalisation (mean {}, std {})", f.name, f.mean, f.std));
            }
        }
        if !positive(self.threshold) {
            errors.push(format!("threshold {} is not positive", self.threshold));
        }
        match (self.reduction, &self.error_scales) {
            (Reduction::MaxScaled, None) => errors.push("reduction max_scaled needs error_scales".into()),
            (_, Some(scales)) if scales.len() != self.features.len() => {
                errors.push(format!("{} error_scales for {} features", scales.len(), self.features.len()))
            }
            (_, Some(scales)) if scales.iter().any(|s| !positive(*s)) => {
                errors.push(format!("error_scales must be positive and finite: {scales:?}"))
            }
            _ => {}
        }
        if let Some(floor) = self.context_std_floor {
            if !positive(floor) {
                errors.push(format!("context_std_floor {floor} is not positive"));
            }
            if self.sequence_length < 3 {
                errors.push("context_std_floor needs a sequence_length of at least 3 (a context of 2 steps)".into());
            }
        }
        if let Some(r) = &self.running {
            if !(r.span >= 1.0 && r.span.is_finite()) {
                errors.push(format!("running.span {} is not at least 1 window", r.span));
            }
            if !positive(r.floor) {
                errors.push(format!("running.floor {} is not positive", r.floor));
            }
            if let Some(slow) = &r.slow {
                if !positive(slow.span) {
                    errors.push(format!("running.slow.span {} is not positive", slow.span));
                }
                if !positive(slow.share) {
                    errors.push(format!("running.slow.share {} is not positive", slow.share));
                }
            }
            match &r.floors {
                Some(f) if f.len() != self.features.len() => {
                    errors.push(format!("running.floors has {} values for {} features", f.len(), self.features.len()))
                }
                Some(f) if f.iter().any(|x| !positive(*x)) => {
                    errors.push(format!("running.floors must be positive and finite: {f:?}"))
                }
                _ => {}
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Number of input features.
    pub fn width(&self) -> usize {
        self.features.len()
    }

    /// Encodes a window into normalised inputs. Missing values (NaN) become 0 (the training mean) and
    /// are counted in the returned number; `None` when more than half are missing.
    ///
    /// ```
    /// use lobsentry_operators::model::{InputFeature, ModelMeta, ScoreOn, ScoringMode, Transform};
    /// use lobsentry_operators::features::{WindowFeatures, FEATURE_COUNT};
    /// use lobsentry_operators::event::InstrumentId;
    /// use lobsentry_operators::window::Window;
    /// let meta = ModelMeta { name: "m".into(), version: "1".into(), feature_schema_version: 1,
    ///     features: vec![InputFeature { name: "events".into(), transform: Transform::Log1p, mean: 1.0, std: 2.0 }],
    ///     sequence_length: 2, input_name: "x".into(), output_name: "y".into(), mode: ScoringMode::Reconstruction,
    ///     score_on: ScoreOn::LastStep, threshold: 1.0, reduction: Default::default(), error_scales: None, context_std_floor: None, running: None, window_ns: 1_000_000_000, calibration: Default::default(),
    ///     training: Default::default(), metrics: Default::default() };
    /// let mut values = [f64::NAN; FEATURE_COUNT];
    /// values[0] = std::f64::consts::E - 1.0; // ln(1 + x) = 1
    /// let w = WindowFeatures { instrument: InstrumentId::new("X").unwrap(), window: Window { start: 0, end: 1 },
    ///     exec_price_range: None, vwap_ticks: None, values };
    /// let mut out = Vec::new();
    /// assert_eq!(meta.encode(&w, &mut out), Some(0));
    /// assert!(out[0].abs() < 1e-6);
    /// ```
    pub fn encode(&self, w: &WindowFeatures, out: &mut Vec<f32>) -> Option<usize> {
        let mut flags = Vec::new();
        self.encode_with_missing(w, out, &mut flags)
    }

    /// [`ModelMeta::encode`], also recording which values were missing.
    pub fn encode_with_missing(&self, w: &WindowFeatures, out: &mut Vec<f32>, flags: &mut Vec<bool>) -> Option<usize> {
        let mid = w.get("mid_close").unwrap_or(f64::NAN);
        let mut missing = 0;
        flags.clear();
        for f in &self.features {
            let raw = w.get(&f.name).unwrap_or(f64::NAN);
            let z = (f.transform.apply(raw, mid) - f.mean) / f.std;
            flags.push(!z.is_finite());
            if z.is_finite() {
                out.push(z as f32);
            } else {
                missing += 1;
                out.push(0.0);
            }
        }
        (missing * 2 <= self.features.len()).then_some(missing)
    }

    /// Applies the per-sequence context standardisation (see [`ModelMeta::context_std_floor`]) to a
    /// `[sequence_length, features]` row in place.
    ///
    /// ```
    /// # use lobsentry_operators::model::*;
    /// # let mut meta: ModelMeta = serde_json::from_str(r#"{"name":"m","version":"1","feature_schema_version":1,
    /// #   "features":[{"name":"events","transform":"identity","mean":0,"std":1}],"sequence_length":3,
    /// #   "input_name":"x","output_name":"y","mode":"reconstruction","score_on":"last_step","threshold":1}"#).unwrap();
    /// meta.context_std_floor = Some(0.5);
    /// let mut row = vec![1.0, 3.0, 10.0]; // context mean 2, std 1
    /// meta.standardise_sequence(&mut row);
    /// assert_eq!(row, vec![-1.0, 1.0, 8.0]);
    /// ```
    pub fn standardise_sequence(&self, row: &mut [f32]) {
        let Some(floor) = self.context_std_floor else { return };
        let (l, f) = (self.sequence_length, self.width());
        if l < 2 {
            return;
        }
        let n = (l - 1) as f64;
        for j in 0..f {
            let mean = (0..l - 1).map(|t| row[t * f + j] as f64).sum::<f64>() / n;
            let var = (0..l - 1).map(|t| (row[t * f + j] as f64 - mean).powi(2)).sum::<f64>() / n;
            let sd = var.sqrt().max(floor);
            for t in 0..l {
                row[t * f + j] = ((row[t * f + j] as f64 - mean) / sd) as f32;
            }
        }
    }

    /// The score and per-feature contributions of one sequence, from its input and the network's
    /// output. With [`Reduction::Mean`] the contributions are the squared errors per feature (summing
    /// to the score times the feature count); with [`Reduction::MaxScaled`] they are the scaled squared
    /// errors and the score is their maximum.
    pub fn score(&self, input: &[f32], output: &[f32], next: Option<&[f32]>) -> Option<(f64, Vec<f64>)> {
        let f = self.width();
        let l = self.sequence_length;
        let mut contributions = vec![0.0f64; f];
        let steps: Vec<usize> = match (self.mode, self.score_on) {
            (ScoringMode::Forecast, _) => Vec::new(),
            (ScoringMode::Reconstruction, ScoreOn::LastStep) => vec![l - 1],
            (ScoringMode::Reconstruction, ScoreOn::Sequence) => (0..l).collect(),
        };
        match self.mode {
            ScoringMode::Reconstruction => {
                for &t in &steps {
                    for (j, c) in contributions.iter_mut().enumerate() {
                        let d = (input[t * f + j] - output[t * f + j]) as f64;
                        *c += d * d / steps.len() as f64;
                    }
                }
            }
            ScoringMode::Forecast => {
                let next = next?;
                for (j, c) in contributions.iter_mut().enumerate() {
                    let d = (next[j] - output[j]) as f64;
                    *c = d * d;
                }
            }
        }
        let score = match (self.reduction, &self.error_scales) {
            (Reduction::MaxScaled, Some(scales)) => {
                for (c, s) in contributions.iter_mut().zip(scales) {
                    *c /= s;
                }
                contributions.iter().copied().fold(0.0, f64::max)
            }
            _ => contributions.iter().sum::<f64>() / f as f64,
        };
        if contributions.iter().any(|c| !c.is_finite()) {
            return None;
        }
        score.is_finite().then_some((score, contributions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(mode: ScoringMode, score_on: ScoreOn) -> ModelMeta {
        ModelMeta {
            name: "t".into(),
            version: "1".into(),
            feature_schema_version: FEATURE_SCHEMA_VERSION,
            features: vec![
                InputFeature { name: "events".into(), transform: Transform::Identity, mean: 0.0, std: 1.0 },
                InputFeature { name: "ofi".into(), transform: Transform::SignedLog1p, mean: 0.0, std: 1.0 },
            ],
            sequence_length: 2,
            input_name: "x".into(),
            output_name: "y".into(),
            mode,
            score_on,
            threshold: 1.0,
            reduction: Reduction::Mean,
            error_scales: None,
            context_std_floor: None,
            running: None,
            window_ns: 1_000_000_000,
            calibration: Default::default(),
            training: Default::default(),
            metrics: Default::default(),
        }
    }

    #[test]
    fn reconstruction_scores() {
        let m = meta(ScoringMode::Reconstruction, ScoreOn::LastStep);
        let (s, c) = m.score(&[0.0, 0.0, 1.0, 3.0], &[9.0, 9.0, 1.0, 1.0], None).unwrap();
        assert_eq!(c, vec![0.0, 4.0]);
        assert_eq!(s, 2.0);
        let m = meta(ScoringMode::Reconstruction, ScoreOn::Sequence);
        let (s, _) = m.score(&[0.0, 0.0, 1.0, 3.0], &[1.0, 1.0, 1.0, 1.0], None).unwrap();
        assert_eq!(s, (1.0 + 1.0 + 0.0 + 4.0) / 2.0 / 2.0);
        let f = meta(ScoringMode::Forecast, ScoreOn::LastStep);
        assert_eq!(f.score(&[0.0; 4], &[1.0, 2.0], Some(&[1.0, 0.0])).unwrap().0, 2.0);
        assert!(f.score(&[0.0; 4], &[1.0, 2.0], None).is_none());
        assert!(m.score(&[f32::NAN, 0.0, 1.0, 3.0], &[1.0; 4], None).is_none());
    }

    #[test]
    fn max_scaled_reduction() {
        let mut m = meta(ScoringMode::Reconstruction, ScoreOn::LastStep);
        m.reduction = Reduction::MaxScaled;
        assert!(m.check().unwrap_err().contains("error_scales"));
        m.error_scales = Some(vec![1.0]);
        assert!(m.check().unwrap_err().contains("1 error_scales for 2"));
        m.error_scales = Some(vec![1.0, 0.0]);
        assert!(m.check().unwrap_err().contains("positive"));
        m.error_scales = Some(vec![0.5, 4.0]);
        m.check().unwrap();
        // squared errors 1 and 4, scaled 2 and 1: the first feature decides
        let (s, c) = m.score(&[0.0, 0.0, 1.0, 3.0], &[9.0, 9.0, 0.0, 1.0], None).unwrap();
        assert_eq!(c, vec![2.0, 1.0]);
        assert_eq!(s, 2.0);
    }

    #[test]
    fn transforms() {
        assert_eq!(Transform::SignedLog1p.apply(-(std::f64::consts::E - 1.0), 0.0), -1.0);
        assert_eq!(Transform::BpsOfMid.apply(0.01, 100.0), 1.0);
        assert_eq!(Transform::Log1p.apply(-5.0, 0.0), 0.0);
    }

    #[test]
    fn metadata_is_checked() {
        let mut m = meta(ScoringMode::Reconstruction, ScoreOn::LastStep);
        m.features[0].name = "nope".into();
        assert!(m.check().unwrap_err().contains("nope"));
        let mut m = meta(ScoringMode::Reconstruction, ScoreOn::LastStep);
        m.feature_schema_version = 99;
        assert!(m.check().unwrap_err().contains("schema"));
        // A schema-1 model reads the schema-1 prefix; a schema-2 feature is not in it.
        let mut m = meta(ScoringMode::Reconstruction, ScoreOn::LastStep);
        m.feature_schema_version = 1;
        m.check().unwrap();
        m.features[0].name = "add_volume".into();
        assert!(m.check().unwrap_err().contains("\"add_volume\" is not in schema 1"));
        // Every numeric setting, every problem at once.
        let mut m = meta(ScoringMode::Reconstruction, ScoreOn::LastStep);
        m.running = Some(RunningNorm {
            span: 0.0,
            floor: -1.0,
            floors: None,
            slow: Some(SlowFloor { span: 1800.0, share: -0.5 }),
        });
        m.context_std_floor = Some(f64::NAN);
        m.threshold = 0.0;
        let err = m.check().unwrap_err();
        for part in
            ["running.span 0", "running.floor -1", "running.slow.share -0.5", "context_std_floor NaN", "threshold 0"]
        {
            assert!(err.contains(part), "{part}: {err}");
        }
    }
}
