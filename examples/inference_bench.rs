//! Inference benchmark: scored windows/s and per-call ONNX Runtime latency (p50, p99) when every one
//! of N instruments closes a window at once, the way the `ScoreWithModel` operator batches them (one
//! call per batch of at most `max-batch` sequences, then scoring and per-feature contributions).
//!
//! ```text
//! make onnxruntime
//! cargo run --release --example inference_bench -- [MODEL_DIR] [INSTRUMENTS,...] [INTRA_THREADS]
//! cargo run --release --example inference_bench -- models/lobsentry-ae 100,1000,10000 1
//! ```
//! Inputs are deterministic pseudo-random standardised sequences of the model's shape, so the
//! figures measure ONNX Runtime and scoring, not the dataflow.

use lobsentry_operators::inference::{onnxruntime, open_session, run_batch, InferenceSpec};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Largest batch per call, as `model.max-batch` in config/default.toml.
const MAX_BATCH: usize = 4096;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(args.first().map(String::as_str).unwrap_or("models/lobsentry-ae"));
    let sizes: Vec<usize> = args
        .get(1)
        .map(String::as_str)
        .unwrap_or("100,1000,10000")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let threads: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let library = lobsentry::config::find_onnxruntime("")?;
    let env = onnxruntime(&library)?;
    let mut spec = InferenceSpec::load(env, &dir)?;
    spec.intra_threads = threads;
    let mut session = open_session(&spec)?;
    let meta = spec.meta.clone();
    let (l, f) = (meta.sequence_length, meta.width());
    println!("model {}@{} (L={l}, F={f}), intra-threads {threads}, max batch {MAX_BATCH}", meta.name, meta.version);
    println!(
        "{:>11} {:>7} {:>9} {:>12} {:>12} {:>16}",
        "instruments", "rounds", "calls", "p50 call ms", "p99 call ms", "scored windows/s"
    );
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for &n in &sizes {
        let input: Vec<f32> = (0..n * l * f)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 3.0
            })
            .collect();
        let mut latencies = Vec::new();
        let mut scored = 0usize;
        let mut rounds = 0usize;
        let started = Instant::now();
        // At least 20 rounds and 2 s, after one warm-up round.
        while rounds < 21 || started.elapsed() < Duration::from_secs(2) {
            let warm = rounds == 0;
            for chunk in input.chunks(MAX_BATCH * l * f) {
                let rows = chunk.len() / (l * f);
                let t0 = Instant::now();
                let out = run_batch(&mut session, &meta, rows, chunk)?;
                for r in 0..rows {
                    let row = &chunk[r * l * f..(r + 1) * l * f];
                    if meta.score(row, &out[r * l * f..(r + 1) * l * f], None).is_some() && !warm {
                        scored += 1;
                    }
                }
                if !warm {
                    latencies.push(t0.elapsed());
                }
            }
            rounds += 1;
        }
        let busy: Duration = latencies.iter().sum();
        latencies.sort();
        println!(
            "{n:>11} {:>7} {:>9} {:>12.3} {:>12.3} {:>16.0}",
            rounds - 1,
            latencies.len(),
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99),
            scored as f64 / busy.as_secs_f64()
        );
    }
    Ok(())
}
