//! The `ScoreWithModel` operator: window features -> per-instrument sequences -> ONE ONNX Runtime
//! call per batch of instruments whose sequence advanced -> [`WindowScore`]s.
//!
//! ONNX Runtime is loaded dynamically (`ort` with `load-dynamic`): call [`onnxruntime`] once per
//! process before building dataflows. Each worker opens its own session.

use crate::detect::WindowScore;
use crate::event::InstrumentId;
use crate::features::WindowFeatures;
use crate::model::{ModelError, ModelMeta, ScoringMode};
use ort::environment::Environment;
use ort::session::Session;
use ort::value::{Tensor, TensorElementType, ValueType};
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::channels::pact::Exchange as ExchangePact;
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;

static ENVIRONMENT: std::sync::OnceLock<Environment> = std::sync::OnceLock::new();

/// Loads ONNX Runtime from a library file and returns the process's environment. ONNX Runtime
/// allows one environment per process: later calls return the first one.
pub fn onnxruntime(library: &Path) -> Result<Environment, ModelError> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock();
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env.clone());
    }
    let builder = ort::init_from(library).map_err(|e| {
        ModelError::Runtime(format!(
            "cannot load ONNX Runtime from {}: {e} (point ORT_DYLIB_PATH or model.onnxruntime at libonnxruntime.so >= 1.31, e.g. from `pip install onnxruntime`)",
            library.display()
        ))
    })?;
    let env = builder.with_name("lobsentry").build().map_err(|e| ModelError::Runtime(e.to_string()))?;
    Ok(ENVIRONMENT.get_or_init(|| env).clone())
}

/// What happens per batch, for metrics: `(batch size, latency of the ONNX Runtime call)`.
pub type BatchObserver = Arc<dyn Fn(usize, Duration) + Send + Sync>;

/// Counters of an inference operator, for metrics: called with (warm-up windows, skipped windows).
pub type SkipObserver = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Options of [`ScoreWithModel::score_with_model`].
#[derive(Clone)]
pub struct InferenceSpec {
    /// The ONNX Runtime environment (from [`onnxruntime`]).
    pub env: Environment,
    /// The package directory (`model.onnx` + `model.json`).
    pub dir: PathBuf,
    /// Its metadata.
    pub meta: ModelMeta,
    /// ONNX Runtime intra-op threads per session.
    pub intra_threads: usize,
    /// Largest batch per call (bigger batches are split).
    pub max_batch: usize,
    /// Threshold override (`None`: the model's).
    pub threshold: Option<f64>,
    /// Features an alert names.
    pub top: usize,
    /// Per-batch observer.
    pub on_batch: Option<BatchObserver>,
    /// Warm-up and skip observer.
    pub on_skip: Option<SkipObserver>,
    /// Checkpointed state: the per-instrument sequences are registered here (and restored from it).
    pub state: Option<crate::checkpoint::StateRegistry>,
}

impl std::fmt::Debug for InferenceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceSpec").field("dir", &self.dir).field("model", &self.meta.name).finish_non_exhaustive()
    }
}

impl InferenceSpec {
    /// Loads a package's metadata with default options.
    pub fn load(env: Environment, dir: &Path) -> Result<InferenceSpec, ModelError> {
        Ok(InferenceSpec {
            env,
            dir: dir.to_path_buf(),
            meta: ModelMeta::load(dir)?,
            intra_threads: 1,
            max_batch: 4096,
            threshold: None,
            top: 3,
            on_batch: None,
            on_skip: None,
            state: None,
        })
    }
}

fn describe(v: &ValueType) -> String {
    match v {
        ValueType::Tensor { ty, shape, .. } => format!("{:?} {ty:?}", shape.iter().collect::<Vec<_>>()),
        other => format!("{other:?}"),
    }
}

fn check_tensor(
    model: &str,
    what: &str,
    name: &str,
    found: Option<&ValueType>,
    want: &[i64],
) -> Result<(), ModelError> {
    let shape_ok =
        |shape: &[i64]| shape.len() == want.len() && shape.iter().zip(want).all(|(s, w)| *w < 0 || *s < 0 || s == w);
    match found {
        Some(ValueType::Tensor { ty: TensorElementType::Float32, shape, .. }) if shape_ok(shape) => Ok(()),
        Some(other) => Err(ModelError::Shape {
            model: model.into(),
            message: format!(
                "model.json expects {what} `{name}` as {want:?} Float32 (-1 = any); the ONNX model has {}",
                describe(other)
            ),
        }),
        None => Err(ModelError::Shape {
            model: model.into(),
            message: format!("model.json names {what} `{name}`, which the ONNX model does not have"),
        }),
    }
}

/// Opens a session and checks its input and output against the metadata.
pub fn open_session(spec: &InferenceSpec) -> Result<Session, ModelError> {
    let rt = |e: ort::Error| ModelError::Runtime(e.to_string());
    let path = spec.dir.join("model.onnx");
    if !path.exists() {
        return Err(ModelError::Io { path, source: std::io::Error::from(std::io::ErrorKind::NotFound) });
    }
    let session = Session::builder(&spec.env)
        .map_err(rt)?
        .with_intra_threads(spec.intra_threads.max(1))
        .map_err(|e| ModelError::Runtime(e.to_string()))?
        .with_inter_threads(1)
        .map_err(|e| ModelError::Runtime(e.to_string()))?
        .commit_from_file(&path)
        .map_err(rt)?;
    let m = &spec.meta;
    let (l, f) = (m.sequence_length as i64, m.width() as i64);
    let input = session.inputs().iter().find(|o| o.name() == m.input_name).map(|o| o.dtype());
    check_tensor(&m.name, "input", &m.input_name, input, &[-1, l, f])?;
    let output = session.outputs().iter().find(|o| o.name() == m.output_name).map(|o| o.dtype());
    let want: Vec<i64> = match m.mode {
        ScoringMode::Reconstruction => vec![-1, l, f],
        ScoringMode::Forecast => vec![-1, f],
    };
    check_tensor(&m.name, "output", &m.output_name, output, &want)?;
    Ok(session)
}

/// Per-instrument state: the last `L` encoded windows and, in forecast mode, the last prediction.
/// One ONNX Runtime call on `rows` standardised sequences (`input` holds `rows * L * F` values, row
/// major): the model's output, flattened (`rows * L * F` values for reconstruction, `rows * F` for
/// forecast models). The operator makes one such call per batch.
pub fn run_batch(session: &mut Session, meta: &ModelMeta, rows: usize, input: &[f32]) -> Result<Vec<f32>, String> {
    let shape = [rows, meta.sequence_length, meta.width()];
    let tensor = Tensor::from_array((shape, input.to_vec())).map_err(|e| e.to_string())?;
    let outputs = session.run(ort::inputs![meta.input_name.as_str() => tensor]).map_err(|e| e.to_string())?;
    outputs[meta.output_name.as_str()]
        .try_extract_tensor::<f32>()
        .map(|(_, data)| data.to_vec())
        .map_err(|e| e.to_string())
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Sequence {
    steps: VecDeque<Vec<f32>>,
    running: crate::model::RunningState,
    last_end: u64,
    prediction: Option<Vec<f32>>,
}

/// Scores windows with an ONNX model.
pub trait ScoreWithModel<'scope> {
    /// Routes windows by instrument, keeps each instrument's last `sequence_length` encoded windows,
    /// and for every batch of windows that closed together runs one ONNX Runtime call over all
    /// instruments whose sequence advanced. No score is produced until a sequence is full.
    fn score_with_model(self, spec: InferenceSpec) -> Result<StreamVec<'scope, u64, WindowScore>, ModelError>;
}

impl<'scope> ScoreWithModel<'scope> for StreamVec<'scope, u64, WindowFeatures> {
    fn score_with_model(self, spec: InferenceSpec) -> Result<StreamVec<'scope, u64, WindowScore>, ModelError> {
        let mut session = open_session(&spec)?;
        let pact = ExchangePact::new(|w: &WindowFeatures| w.instrument.route());
        let stream = self.unary(pact, "ScoreWithModel", move |_cap, _info| {
            let meta = spec.meta.clone();
            let (l, f) = (meta.sequence_length, meta.width());
            let threshold = spec.threshold.unwrap_or(meta.threshold);
            let model_name = format!("{}@{}", meta.name, meta.version);
            let sequences: std::rc::Rc<std::cell::RefCell<FxHashMap<InstrumentId, Sequence>>> = Default::default();
            if let Some(registry) = &spec.state {
                let saved = sequences.clone();
                let bytes = registry.register("model", move || crate::checkpoint::encode(&*saved.borrow()));
                if let Some(bytes) = bytes {
                    *sequences.borrow_mut() = crate::checkpoint::decode(&bytes)
                        .unwrap_or_else(|e| panic!("checkpoint: model sequences do not decode: {e}"));
                }
            }
            let mut staged: Vec<WindowFeatures> = Vec::new();
            let mut rows: Vec<(InstrumentId, crate::window::Window)> = Vec::new();
            let mut input: Vec<f32> = Vec::new();
            let mut encoded: Vec<f32> = Vec::with_capacity(f);
            let mut missing: Vec<bool> = Vec::with_capacity(f);
            move |input_handle, output| {
                let mut sequences = sequences.borrow_mut();
                input_handle.for_each_stamp(|cap, data| {
                    for batch in data {
                        staged.append(batch);
                    }
                    staged.sort_by_key(|w| (w.window.end, w.instrument));
                    rows.clear();
                    input.clear();
                    let (mut warmup, mut skipped) = (0u64, 0u64);
                    for w in staged.drain(..) {
                        let seq = sequences.entry(w.instrument).or_default();
                        if w.window.end <= seq.last_end {
                            continue;
                        }
                        encoded.clear();
                        if meta.encode_with_missing(&w, &mut encoded, &mut missing).is_none() {
                            skipped += 1;
                            continue;
                        }
                        if let Some(norm) = &meta.running {
                            seq.running.apply(norm, &mut encoded, &missing);
                        }
                        seq.last_end = w.window.end;
                        seq.steps.push_back(encoded.clone());
                        if seq.steps.len() > l {
                            seq.steps.pop_front();
                        }
                        if seq.steps.len() < l {
                            warmup += 1;
                            continue;
                        }
                        rows.push((w.instrument, w.window));
                        let from = input.len();
                        for step in &seq.steps {
                            input.extend_from_slice(step);
                        }
                        meta.standardise_sequence(&mut input[from..]);
                    }
                    let mut session_out = output.session(&cap);
                    for (chunk, chunk_rows) in
                        input.chunks(spec.max_batch.max(1) * l * f).zip(rows.chunks(spec.max_batch.max(1)))
                    {
                        let started = Instant::now();
                        let result = run_batch(&mut session, &meta, chunk_rows.len(), chunk);
                        if let Some(observe) = &spec.on_batch {
                            observe(chunk_rows.len(), started.elapsed());
                        }
                        let out = match result {
                            Ok(out) => out,
                            Err(e) => {
                                // A failed call skips its windows (counted); the run goes on.
                                eprintln!(
                                    "lobsentry: ONNX Runtime call failed, {} windows skipped: {e}",
                                    chunk_rows.len()
                                );
                                skipped += chunk_rows.len() as u64;
                                continue;
                            }
                        };
                        let per_row = match meta.mode {
                            ScoringMode::Reconstruction => l * f,
                            ScoringMode::Forecast => f,
                        };
                        for (r, (instrument, window)) in chunk_rows.iter().enumerate() {
                            let x = &chunk[r * l * f..(r + 1) * l * f];
                            let y = &out[r * per_row..(r + 1) * per_row];
                            let scored = match meta.mode {
                                ScoringMode::Reconstruction => meta.score(x, y, None),
                                ScoringMode::Forecast => {
                                    let seq = sequences.entry(*instrument).or_default();
                                    let previous = seq.prediction.replace(y.to_vec());
                                    match previous {
                                        Some(p) => meta.score(x, &p, Some(&x[(l - 1) * f..])),
                                        None => {
                                            warmup += 1;
                                            continue;
                                        }
                                    }
                                }
                            };
                            let Some((score, contributions)) = scored else {
                                skipped += 1;
                                continue;
                            };
                            let mut named: Vec<(String, f64)> =
                                meta.features.iter().map(|f| f.name.clone()).zip(contributions).collect();
                            named.sort_by(|a, b| b.1.total_cmp(&a.1));
                            named.truncate(spec.top);
                            session_out.give(WindowScore {
                                instrument: *instrument,
                                window: *window,
                                score,
                                threshold,
                                is_anomaly: score > threshold,
                                top_features: named,
                                model: model_name.clone(),
                                p_value: None,
                                detectors: Vec::new(),
                            });
                        }
                    }
                    if let Some(observe) = &spec.on_skip {
                        observe(warmup, skipped);
                    }
                });
            }
        });
        Ok(stream)
    }
}
