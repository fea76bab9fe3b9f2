//! The shipped ONNX model through the real ONNX Runtime: batched scoring, warm-up accounting, shape
//! and library errors, and `lobsentry eval`.

use crate::util::{self, TempDir};
use lobsentry::config::SourceConfig;
use lobsentry::metrics::Counters;
use lobsentry::runtime as pipeline;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn repo(p: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn model_env(dir: &Path) -> String {
    format!("{:?}", dir.display().to_string())
}

/// An 80,000-event market of 8 instruments (seed `seed`) and the configuration that scores it with
/// the model package `package` alone, 2 workers; returns the directory, the configuration and the
/// paths of its features and scores files.
fn one_model_run(tag: &str, seed: u64, package: &str) -> (TempDir, lobsentry::config::Config, PathBuf, PathBuf) {
    let dir = TempDir::new(tag);
    let spec = util::market(80_000, 8, seed);
    let input = dir.path("in.csv");
    util::write_csv(&input, &util::events(&spec, 0, 0.0));
    let (out, scores) = (dir.path("features.csv"), dir.path("scores.jsonl"));
    let scores_env = model_env(&scores);
    let model = model_env(&repo(package));
    let config = util::config(
        None,
        2,
        vec![input],
        &out,
        vec![
            ("LOBSENTRY__DETECT__SCORES", scores_env.as_str()),
            ("LOBSENTRY__MODEL__PATH", model.as_str()),
            ("LOBSENTRY__MODEL__EXTRA", "[]"),
        ],
    );
    (dir, config, out, scores)
}

#[test]
fn the_shipped_model_scores_batches_after_warm_up() {
    let (_dir, config, out, scores) = one_model_run("model-scores", 21, "models/lobsentry-ae");
    let meta = config.model.as_ref().expect("the model is configured").meta.clone();
    let counters = Arc::new(Counters::standalone(&config));
    let report = pipeline::run(&config, counters.clone()).unwrap();
    // Windows per instrument, from the features file.
    let text = std::fs::read_to_string(&out).unwrap();
    let mut per_instrument: std::collections::HashMap<String, u64> = Default::default();
    for line in text.lines().skip(1) {
        *per_instrument.entry(line.split(',').next().unwrap().to_string()).or_default() += 1;
    }
    let l = meta.sequence_length as u64;
    let expected: u64 = per_instrument.values().map(|n| n.saturating_sub(l - 1)).sum();
    let m = &counters.metrics;
    let scored = m.scored_windows.with_label_values(&["model"]).get();
    let skipped = m.inference_skipped.get();
    assert!(scored > 100, "{scored}");
    assert_eq!(scored + skipped, expected, "every full sequence is scored or counted as skipped");
    assert_eq!(m.inference_warmup.get() + skipped + scored, report.windows, "warm-up is counted, not hidden");
    // One ONNX Runtime call per batch of instruments, never one per window.
    let calls = m.inference_batch_size.get_sample_count();
    assert_eq!(m.inference_batch_size.get_sample_sum() as u64, scored + skipped);
    assert!(calls * 3 <= scored, "{calls} calls for {scored} windows");
    // Every score names the model and its most anomalous features.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&scores).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let model_scores: Vec<_> =
        lines.iter().filter(|v| v["model"].as_str().unwrap().starts_with("lobsentry-ae@")).collect();
    assert_eq!(model_scores.len() as u64, scored);
    for v in &model_scores {
        assert!(v["score"].as_f64().unwrap().is_finite());
        assert_eq!(v["top_features"].as_array().unwrap().len(), 3);
        assert_eq!(v["threshold"].as_f64().unwrap(), meta.threshold);
    }
}

#[test]
fn the_ensembles_decided_windows_per_scale_agree_in_the_report_the_metric_and_the_scores() {
    // 300 s of two instruments: the 1 s scale decides after its warm-up, the 10 s scale never.
    let dir = TempDir::new("model-decided");
    let spec = lobsentry_operators::generator::MarketSpec { rate_per_sec: 200.0, ..util::market(60_000, 2, 5) };
    let input = dir.path("in.csv");
    util::write_csv(&input, &util::events(&spec, 0, 0.0));
    let scores = dir.path("scores.jsonl");
    let scores_env = model_env(&scores);
    let config = util::config(
        None,
        2,
        vec![input],
        &dir.path("features.csv"),
        vec![("LOBSENTRY__DETECT__SCORES", scores_env.as_str())],
    );
    let counters = Arc::new(Counters::standalone(&config));
    let report = pipeline::run(&config, counters.clone()).unwrap();
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&scores).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(report.decided.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(), ["1s", "10s"]);
    for (scale, scored, decided) in &report.decided {
        let ensemble = |v: &&serde_json::Value| v["model"].as_str().unwrap().starts_with("ensemble");
        let in_file = lines.iter().filter(ensemble).filter(|v| v["scale"] == scale.as_str()).count() as u64;
        assert_eq!(counters.metrics.decided_windows.with_label_values(&[scale]).get(), in_file, "{scale}");
        assert_eq!(*decided, in_file, "{scale}");
        assert!(decided <= scored, "{scale}: {decided} of {scored}");
    }
    let (one, ten) = (&report.decided[0], &report.decided[1]);
    assert!(one.2 > 0 && one.2 < one.1, "the 1 s scale warms up, then decides: {one:?}");
    assert_eq!(ten.2, 0, "{ten:?}");
    assert!(report.warnings.iter().any(|w| w.starts_with("the 10s scale decided no window")), "{:?}", report.warnings);
    assert!(!report.warnings.iter().any(|w| w.starts_with("the 1s scale")), "{:?}", report.warnings);
}

#[test]
fn the_shipped_lstm_forecaster_scores_in_forecast_mode() {
    use lobsentry_operators::model::ScoringMode;
    let (_dir, config, _, scores) = one_model_run("model-lstm", 22, "models/lobsentry-lstm");
    let meta = config.model.as_ref().expect("the forecaster is configured").meta.clone();
    assert_eq!(meta.mode, ScoringMode::Forecast);
    // Both shipped packages floor their running deviation at the instrument's own slow one (large-tick
    // instruments: docs/detection-history.md, thirteenth session).
    let autoencoder = lobsentry_operators::model::ModelMeta::load(&repo("models/lobsentry-ae")).unwrap();
    for running in [&meta.running, &autoencoder.running] {
        let slow = running.as_ref().and_then(|r| r.slow).expect("a slow floor");
        assert_eq!((slow.span, slow.share), (1800.0, 0.15));
    }
    let counters = Arc::new(Counters::standalone(&config));
    pipeline::run(&config, counters.clone()).unwrap();
    let m = &counters.metrics;
    let scored = m.scored_windows.with_label_values(&["model"]).get();
    assert!(scored > 100, "{scored}");
    assert!(m.inference_batch_size.get_sample_count() * 3 <= scored, "one call per batch");
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&scores).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let lstm: Vec<_> = lines.iter().filter(|v| v["model"].as_str().unwrap().starts_with("lobsentry-lstm@")).collect();
    assert_eq!(lstm.len() as u64, scored);
    assert!(lstm
        .iter()
        .all(|v| v["score"].as_f64().unwrap().is_finite() && v["top_features"].as_array().unwrap().len() == 3));
}

#[test]
fn two_models_score_side_by_side_and_one_configured_twice_is_refused() {
    let dir = TempDir::new("model-both");
    let spec = util::market(60_000, 6, 23);
    let input = dir.path("in.csv");
    util::write_csv(&input, &util::events(&spec, 0, 0.0));
    let scores = dir.path("scores.jsonl");
    let scores_env = model_env(&scores);
    let extra = format!("[{}]", model_env(&repo("models/lobsentry-lstm")));
    let config = util::config(
        None,
        2,
        vec![input],
        &dir.path("f.csv"),
        vec![("LOBSENTRY__DETECT__SCORES", scores_env.as_str()), ("LOBSENTRY__MODEL__EXTRA", extra.as_str())],
    );
    let names: Vec<String> = config
        .model
        .iter()
        .chain(&config.extra_models)
        .map(|m| format!("{}@{}", m.meta.name, m.meta.version))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let counters = Arc::new(Counters::standalone(&config));
    pipeline::run(&config, counters.clone()).unwrap();
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&scores).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let per_model = |name: &str| lines.iter().filter(|v| v["model"] == name).count() as u64;
    let (ae, lstm) = (per_model(&names[0]), per_model(&names[1]));
    assert!(ae > 100 && lstm > 100, "{ae} and {lstm} scores");
    assert_eq!(ae + lstm, counters.metrics.scored_windows.with_label_values(&["model"]).get());
    // The same package twice would share its calibration and checkpoint names: refused.
    let twice = model_env(&repo("models/lobsentry-ae"));
    let extra = format!("[{twice}]");
    let err = lobsentry::config::load_raw(None, [("LOBSENTRY__MODEL__EXTRA".to_string(), extra)])
        .unwrap()
        .validate(&Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("configured twice") && err.contains("lobsentry-ae@"), "{err}");
}

#[test]
fn a_model_that_disagrees_with_its_metadata_is_refused_naming_both() {
    let dir = TempDir::new("model-shape");
    let pkg = dir.path("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::copy(repo("models/lobsentry-ae/model.onnx"), pkg.join("model.onnx")).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("models/lobsentry-ae/model.json")).unwrap()).unwrap();
    let real_len = meta["sequence_length"].as_u64().unwrap();
    let width = meta["features"].as_array().unwrap().len();
    meta["sequence_length"] = serde_json::json!(real_len + 3);
    std::fs::write(pkg.join("model.json"), meta.to_string()).unwrap();
    let out = util::cmd()
        .args(["run", "--input"])
        .arg(repo("../shared/data/lobster/AMZN_2021-04-12_34200000_57600000_message_10.csv"))
        .env("LOBSENTRY__MODEL__PATH", model_env(&pkg))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("[-1, {}, {width}]", real_len + 3)), "{stderr}");
    assert!(stderr.contains(&format!("[-1, {real_len}, {width}]")), "{stderr}");

    meta["sequence_length"] = serde_json::json!(real_len);
    meta["input_name"] = serde_json::json!("windows");
    std::fs::write(pkg.join("model.json"), meta.to_string()).unwrap();
    let out = util::cmd().args(["run"]).env("LOBSENTRY__MODEL__PATH", model_env(&pkg)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`windows`, which the ONNX model does not have"), "{stderr}");
}

#[test]
fn a_missing_or_wrong_onnxruntime_is_a_one_line_error_saying_how_to_fix_it() {
    let out = util::cmd()
        .args(["run"])
        .env("LOBSENTRY__MODEL__ONNXRUNTIME", "\"/nonexistent/libonnxruntime.so\"")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/libonnxruntime.so does not exist") && stderr.contains("make onnxruntime"),
        "{stderr}"
    );
    // Not a shared library at all.
    let dir = TempDir::new("bad-ort");
    let fake = dir.path("libonnxruntime.so");
    std::fs::write(&fake, "not a library").unwrap();
    let out = util::cmd().args(["run"]).env("LOBSENTRY__MODEL__ONNXRUNTIME", model_env(&fake)).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot load ONNX Runtime from"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn eval_reports_both_detectors_per_anomaly_type() {
    let dir = TempDir::new("eval");
    let input = dir.path("market.csv");
    let status = util::cmd()
        .args([
            "generate",
            "--events",
            "150000",
            "--instruments",
            "6",
            "--rate",
            "1500",
            "--anomalies-per-hour",
            "120",
            "--out",
        ])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let scores = dir.path("scores.jsonl");
    let features = dir.path("features.csv");
    let out = util::cmd()
        .args(["run", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&features)
        .env("LOBSENTRY__DETECT__SCORES", model_env(&scores))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = util::cmd()
        .args(["eval", "--scores"])
        .arg(&scores)
        .arg("--labels")
        .arg(dir.path("market.labels.csv"))
        .arg("--features")
        .arg(&features)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // The reference rolling z-score over five simple features, and every 1 s detector against it.
    let section = text.split("PR-AUC over reference-zscore5's").nth(1).expect("the reference section");
    // (The market is too short for the calibration's warm-up: the 1 s detectors here are the model
    // and the baseline.)
    let baseline = section.lines().find(|l| l.trim_start().starts_with("zscore-baseline ")).expect("ratios");
    let ratio: f64 = baseline.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(ratio.is_finite() && ratio > 0.0, "{baseline}");
    for detector in ["zscore-baseline", "lobsentry-ae@", "reference-zscore5"] {
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with(detector)).collect();
        assert!(rows.len() >= 2, "{text}");
        let all = rows.iter().find(|l| l.split_whitespace().nth(1) == Some("all")).expect("an `all` row");
        let roc: f64 = all.split_whitespace().nth(4).unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&roc), "{all}");
    }
    let _ = SourceConfig::kind; // the config API used by embedding callers stays public
}

#[test]
fn a_model_trained_for_other_windows_is_a_start_up_error() {
    // The shipped model records 1 s windows: detectors on 5 s windows only cannot use it.
    let out = util::cmd().args(["check-config"]).env("LOBSENTRY__DETECT__SCALES", r#"["5s"]"#).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("was trained on 1s windows") && stderr.contains("5s"), "{stderr}");
    // The same with the output windows at 5 s and no scales listed: the detectors run on 5 s.
    let out = util::cmd()
        .args(["check-config"])
        .env("LOBSENTRY__WINDOW__SIZE", "5s")
        .env("LOBSENTRY__WINDOW__SLIDE", "5s")
        .env("LOBSENTRY__DETECT__SCALES", "[]")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was trained on 1s windows"));
    // A package that does not record its window length is refused, saying what is missing.
    let dir = TempDir::new("model-window");
    let pkg = dir.path("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::copy(repo("models/lobsentry-ae/model.onnx"), pkg.join("model.onnx")).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("models/lobsentry-ae/model.json")).unwrap()).unwrap();
    meta.as_object_mut().unwrap().remove("window_ns");
    std::fs::write(pkg.join("model.json"), meta.to_string()).unwrap();
    let out = util::cmd().args(["check-config"]).env("LOBSENTRY__MODEL__PATH", model_env(&pkg)).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("window_ns"));
}

/// Every numeric setting of a package is checked, every problem reported at once (issue 13: a
/// `running` of span 0 and floor -1 used to be accepted and flag clean data).
#[test]
fn a_package_with_impossible_settings_is_refused_listing_each() {
    let dir = TempDir::new("model-settings");
    let pkg = dir.path("pkg");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::copy(repo("models/lobsentry-ae/model.onnx"), pkg.join("model.onnx")).unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("models/lobsentry-ae/model.json")).unwrap()).unwrap();
    meta["running"] = serde_json::json!({"span": 0, "floor": -1});
    meta["threshold"] = serde_json::json!(-2.0);
    std::fs::write(pkg.join("model.json"), meta.to_string()).unwrap();
    let out = util::cmd().args(["check-config"]).env("LOBSENTRY__MODEL__PATH", model_env(&pkg)).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for part in ["running.span 0", "running.floor -1", "threshold -2"] {
        assert!(stderr.contains(part), "{part}: {stderr}");
    }
}
