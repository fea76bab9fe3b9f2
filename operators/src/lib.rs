//! # lobsentry-operators
//!
//! Embeddable [timely dataflow](https://docs.rs/timely) operators for limit-order-book (LOB)
//! surveillance, and the runtime-free domain logic behind them.
//!
//! * [`event`]: prices in integer ticks, instruments, LOBSTER event types, [`event::Timed`] records.
//! * [`source`]: decoders for LOBSTER, interchange CSV and JSON lines; [`source::file_source`] and
//!   [`source::synthetic_source`], whose capabilities are the watermark.
//! * [`book`]: the pure [`book::Book`] and the [`book::ReconstructBook`] operator.
//! * [`window`]: tumbling/sliding event-time windows and the [`window::WindowAggregate`] operator with
//!   a late side output.
//! * [`features`]: the versioned window feature vector and [`features::ExtractFeatures`].
//! * [`rollup`]: coarser windows rolled up from finer ones (the detectors' longer time scales).
//! * [`sink`]: CSV / JSON-lines window writers and the [`sink::WriteWindows`] operator.
//! * [`calibrate`]: online per-instrument calibration of scores into tail probabilities (SPOT).
//! * [`detect`]: the rolling z-score baseline detector and the [`detect::ScoreWindows`] operator.
//! * [`multivariate`]: Hotelling's T² of each window against the instrument's joint history.
//! * [`model`] and [`inference`]: ONNX model packages and the [`inference::ScoreWithModel`] operator
//!   (ONNX Runtime through `ort`, loaded dynamically).
//! * [`generator`]: a synthetic market with labelled anomalies.
//! * [`checkpoint`]: aligned event-time checkpoints of operator state (serde + bincode 1.3).
//! * [`analytics`]: market analytics on differential dataflow (volumes per minute/hour, sliding
//!   top-volume, latest prices, anomalies) and the query protocol that answers from them.
//!
//! The frontier is the watermark: a source holds a capability at `max event time seen - bound`, a
//! window fires when the frontier reaches its end, and a record that arrives after its window fired is
//! late. Every operator is deterministic: the same input gives the same output for any number of
//! workers.
#![forbid(missing_docs)]

#[cfg(feature = "analytics")]
pub mod analytics;
pub mod book;
pub mod calibrate;
pub mod checkpoint;
pub mod detect;
pub mod ensemble;
pub mod event;
pub mod features;
pub mod generator;
#[cfg(feature = "onnx")]
pub mod inference;
pub mod model;
pub mod multivariate;
pub mod rollup;
pub mod sink;
pub mod source;
pub mod testing;
pub mod window;
