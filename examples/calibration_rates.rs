//! Alarm rates of the tail calibration on stationary streams, against the configured rate.
//!
//! `cargo run --release --example calibration_rates`
//!
//! Five score distributions (light to heavy tails), three seeds each, 200,000 scores, alarms at tail
//! probability 1/1000. Four history policies: the default (every score winsorised at the 1/1000
//! level), no cap (every score whole: what is left is the fit's own estimation error), winsorising at
//! 1/200, and SPOT's (flagged scores left out, the rest kept whole).

use lobsentry_operators::calibrate::{TailCalibrator, TailSpec};
use lobsentry_operators::generator::Rng;
use lobsentry_operators::testing::{stationary_score, STATIONARY_SCORES};

/// Alarms per scored score; `spot`: flagged scores are not observed.
fn rate(kind: usize, seed: u64, alpha: f64, spec: &TailSpec, spot: bool) -> f64 {
    let mut rng = Rng::new(seed);
    let mut c = TailCalibrator::default();
    let (mut scored, mut flagged) = (0usize, 0usize);
    for _ in 0..200_000 {
        let x = stationary_score(kind, &mut rng);
        if let Some(p) = c.tail_probability(x, spec) {
            scored += 1;
            if p <= alpha {
                flagged += 1;
                if spot {
                    continue;
                }
            }
        }
        c.observe(x, spec);
    }
    flagged as f64 / scored as f64
}

fn main() {
    let alpha = 1e-3;
    let policies = [
        ("winsorised at 1/1000 (default)", TailSpec::default(), false),
        ("no cap (every score whole)", TailSpec { cap: 1e-300, ..TailSpec::default() }, false),
        ("winsorised at 1/200", TailSpec { cap: 0.005, ..TailSpec::default() }, false),
        // SPOT keeps unflagged scores whole: a cap far out in the tail changes nothing.
        ("SPOT: flagged left out", TailSpec { cap: 1e-300, ..TailSpec::default() }, true),
    ];
    println!("alarm rate / configured rate ({alpha}), seeds 1, 2, 3");
    for (policy, spec, spot) in &policies {
        println!("{policy}");
        for (kind, name) in STATIONARY_SCORES.iter().enumerate() {
            let r: Vec<String> = (1..=3).map(|s| format!("{:.2}", rate(kind, s, alpha, spec, *spot) / alpha)).collect();
            println!("  {name:<20} {}", r.join("  "));
        }
    }
}
