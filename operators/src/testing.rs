//! Helpers for tests and doc examples.

use std::sync::mpsc::Receiver;
use timely::dataflow::operators::capture::Event;

/// Everything a `capture()` received, in arrival order (timely's `extract` sorts and needs `Ord`).
pub fn captured<T, D>(rx: Receiver<Event<T, Vec<D>>>) -> Vec<D> {
    let mut out = Vec::new();
    for event in rx.try_iter() {
        if let Event::Messages(_, data) = event {
            out.extend(data);
        }
    }
    out
}

/// Like [`captured`], with each record's timestamp.
pub fn captured_timed<T: Clone, D>(rx: Receiver<Event<T, Vec<D>>>) -> Vec<(T, D)> {
    let mut out = Vec::new();
    for event in rx.try_iter() {
        if let Event::Messages(stamp, data) = event {
            let time = stamp.into_elements().into_iter().next();
            if let Some(time) = time {
                out.extend(data.into_iter().map(|d| (time.clone(), d)));
            }
        }
    }
    out
}

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut crate::generator::Rng) -> f64 {
    let (u, v) = (rng.unit().max(1e-300), rng.unit());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// Names of the stationary score distributions of [`stationary_score`], by kind.
pub const STATIONARY_SCORES: [&str; 5] = ["|normal|", "max of 12 |normal|", "exponential", "log-normal", "Pareto(4)"];

/// A draw from one of five stationary score distributions, for calibration tests: |normal| (light
/// tail), the largest |normal| of 12 (a z-score detector), exponential, log-normal and Pareto (heavy
/// tails).
pub fn stationary_score(kind: usize, rng: &mut crate::generator::Rng) -> f64 {
    match kind {
        0 => normal(rng).abs(),
        1 => (0..12).map(|_| normal(rng).abs()).fold(0.0, f64::max),
        2 => rng.exp(3.0),
        3 => (0.8 * normal(rng)).exp(),
        _ => (1.0 - rng.unit()).powf(-1.0 / 4.0),
    }
}
