//! The typed alert every sink receives (alerts file, Kafka alerts and scores topics, webhook, API,
//! summary, `eval`), the detector names, and the [`AlertSink`] trait.

use crate::config::Config;
use lobsentry_operators::detect::WindowScore;
use lobsentry_operators::event::InstrumentId;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The detector names used in metrics (`detector` label), the summary and the API.
pub const DETECTORS: [&str; 4] = ["baseline", "multivariate", "model", "ensemble"];

/// The `detector` of a score: "model" for ONNX models, "baseline" for the z-score baseline,
/// "multivariate" for Hotelling's T², "ensemble" for the calibrated combination.
pub fn detector_label(s: &WindowScore) -> &'static str {
    if s.model.starts_with("zscore") {
        "baseline"
    } else if s.model.starts_with(lobsentry_operators::multivariate::NAME) {
        "multivariate"
    } else if s.model.starts_with("ensemble") {
        "ensemble"
    } else {
        "model"
    }
}

/// The detector whose decisions are the run's alerts (alerts file, Kafka alerts topic, webhook, API,
/// summary): the calibrated ensemble when it is on, else the model, else the baseline.
pub fn primary_detector(config: &Config) -> &'static str {
    if config.scales.ensemble.is_some() {
        "ensemble"
    } else if config.model.is_some() {
        "model"
    } else {
        "baseline"
    }
}

/// A detector's contribution to an ensemble decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorP {
    /// The detector (`zscore-baseline`, `transformer-ae/10s`, ...).
    pub name: String,
    /// log10 of its calibrated tail probability.
    pub log10_p: f64,
}

/// A feature's deviation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureZ {
    /// Feature name (the output columns' names).
    pub name: String,
    /// Its standardised deviation.
    pub z: f64,
}

/// A scored window as the sinks see it: one JSON line in the alerts and scores files and on the
/// Kafka topics (serde; strings escaped).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Instrument symbol.
    pub instrument: String,
    /// Window start, ns of event time.
    pub window_start_ns: u64,
    /// Window end (exclusive), ns of event time.
    pub window_end_ns: u64,
    /// The window length ("1s", "10s").
    pub scale: String,
    /// The detector's score.
    pub score: f64,
    /// Its decision threshold.
    pub threshold: f64,
    /// The calibrated tail probability (ensemble).
    #[serde(default)]
    pub p_value: Option<f64>,
    /// The detectors at fault, strongest first (ensemble).
    #[serde(default)]
    pub detectors: Vec<DetectorP>,
    /// The decision.
    pub is_anomaly: bool,
    /// The most anomalous features.
    #[serde(default)]
    pub top_features: Vec<FeatureZ>,
    /// The model (detector instance) that scored it.
    pub model: String,
    /// The detector kind: baseline, model or ensemble.
    #[serde(default)]
    pub detector: String,
}

impl Alert {
    /// The alert of a score.
    pub fn from_score(s: &WindowScore) -> Alert {
        Alert {
            instrument: s.instrument.as_str().to_string(),
            window_start_ns: s.window.start,
            window_end_ns: s.window.end,
            scale: lobsentry_operators::features::human_len(s.window.end - s.window.start),
            score: s.score,
            threshold: s.threshold,
            p_value: s.p_value,
            detectors: s.detectors.iter().map(|(n, l)| DetectorP { name: n.clone(), log10_p: -l }).collect(),
            is_anomaly: s.is_anomaly,
            top_features: s.top_features.iter().map(|(n, z)| FeatureZ { name: n.clone(), z: *z }).collect(),
            model: s.model.clone(),
            detector: detector_label(s).to_string(),
        }
    }

    /// The alert as one JSON line (no newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"unserialisable alert: {e}\"}}"))
    }

    /// The id (Kafka `id` header, the store's key, de-duplication): instrument | window end | model,
    /// the same in every run that scores the same window.
    pub fn id(&self) -> String {
        format!("{}|{}|{}", self.instrument, self.window_end_ns, self.model)
    }

    /// The instrument as an id (symbols longer than an id allows are cut, as the decoders do).
    pub fn instrument_id(&self) -> InstrumentId {
        InstrumentId::new(&self.instrument).unwrap_or_default()
    }
}

/// A destination of the run's alerts (the primary detector's anomalies), shared by the workers of a
/// process: the alerts file, the webhook. (Kafka writers are per worker and checkpointed; they live
/// in the runtime.)
pub trait AlertSink: Send + Sync {
    /// A short name for messages ("alerts file", "webhook").
    fn name(&self) -> &str;
    /// Takes one alert without blocking the dataflow (a sink that must drop one counts it).
    fn send(&self, alert: &Alert);
    /// Delivers what is pending, waiting at most `grace`. `Ok(Some(..))` is a warning (alerts given
    /// up on, counted); `Err` is a failure that lost data (the run fails).
    fn finish(&self, grace: Duration) -> Result<Option<String>, String>;
    /// Whether the sink keeps every score (not only alerts).
    fn wants_scores(&self) -> bool {
        false
    }
    /// Takes one score (any detector, any decision) when [`AlertSink::wants_scores`].
    fn score(&self, _score: &Alert) {}
    /// Whether the sink keeps every window's features.
    fn wants_windows(&self) -> bool {
        false
    }
    /// Takes one window's features when [`AlertSink::wants_windows`].
    fn window(&self, _window: &lobsentry_operators::features::WindowFeatures) {}
    /// Makes everything taken so far durable, waiting at most `timeout` (called by every worker at
    /// each checkpoint, before the checkpoint is recorded; an error fails that checkpoint, which is
    /// retried).
    fn sync(&self, _timeout: Duration) -> Result<(), String> {
        Ok(())
    }
    /// Gives the sink the run's dead-letter output (`sink.dead-letter`), for records it cannot
    /// deliver for their content (a row the database refuses). Called once, before the dataflow runs.
    fn dead_letters(&self, _to: DeadLetters) {}
}

/// Where a sink sends the records it cannot deliver for their content: one JSON object per record,
/// with `reason`. Thread-safe; writes to the run's dead-letter file.
pub type DeadLetters = Arc<dyn Fn(serde_json::Value) + Send + Sync>;

/// The values of a message template's placeholders for `alert` (see
/// [`crate::config::fill_template`]).
pub fn placeholders(alert: &Alert) -> Vec<(&'static str, String)> {
    let features = alert.top_features.iter().map(|f| format!("{} ({:.2})", f.name, f.z)).collect::<Vec<_>>().join(", ");
    vec![
        ("instrument", alert.instrument.clone()),
        ("score", format!("{:.4}", alert.score)),
        ("threshold", format!("{:.4}", alert.threshold)),
        ("window_start_ns", alert.window_start_ns.to_string()),
        ("window_end_ns", alert.window_end_ns.to_string()),
        ("model", alert.model.clone()),
        ("features", features),
    ]
}

/// A JSON message body for `alert`: `template` with its placeholders filled in (`{{alert}}` is the
/// whole alert as JSON; the others are escaped for use inside JSON strings).
pub fn render(template: &str, alert: &Alert) -> String {
    crate::config::fill_template(template, &alert.to_json(), &placeholders(alert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_alerts_to_json() {
        let a = Alert {
            instrument: "A\\B".into(),
            window_start_ns: 0,
            window_end_ns: 1,
            scale: "1s".into(),
            score: 1.0,
            threshold: 0.5,
            p_value: None,
            detectors: vec![],
            is_anomaly: true,
            top_features: vec![FeatureZ { name: "spread \"mean\"".into(), z: 3.0 }],
            model: "m".into(),
            detector: "baseline".into(),
        };
        let body = render(r#"{"text": "{{instrument}}: {{features}}", "alert": {{alert}}}"#, &a);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["alert"]["instrument"], "A\\B");
        assert!(v["text"].as_str().unwrap().starts_with("A\\B: spread"));
    }

    #[test]
    fn alerts_round_trip_with_awkward_symbols() {
        let mut a = Alert {
            instrument: "A\\B\"C".into(),
            window_start_ns: 5,
            window_end_ns: 10,
            scale: "1s".into(),
            score: 2.5,
            threshold: 1.0,
            p_value: None,
            detectors: vec![],
            is_anomaly: true,
            top_features: vec![FeatureZ { name: "spread_mean".into(), z: -3.5 }],
            model: "zscore-baseline".into(),
            detector: "baseline".into(),
        };
        let back: Alert = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(back, a);
        a.p_value = Some(1e-9);
        let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
        assert_eq!(v["instrument"], "A\\B\"C");
        assert_eq!(v["p_value"], 1e-9);
    }
}
