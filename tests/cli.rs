//! The commands as a user types them.

use crate::util::{self, TempDir};

#[test]
fn generate_then_w1_with_two_workers() {
    let dir = TempDir::new("cli-w1");
    let input = dir.path("market.csv");
    let out = dir.path("out.csv");
    let status = util::cmd()
        .args(["generate", "--events", "20000", "--instruments", "4", "--rate", "1000", "--disorder", "1s", "--out"])
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(dir.path("market.labels.csv").exists());
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/w1.toml");
    let output = util::cmd()
        .args(["run", "--config"])
        .arg(&config)
        .args(["-w", "2", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&out)
        // W1 needs no model: a missing ONNX Runtime does not matter, and nothing is scored.
        .env("LOBSENTRY__MODEL__ONNXRUNTIME", "/nonexistent/libonnxruntime.so")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("20000 events"), "{stderr}");
    assert!(!stderr.contains("detectors:") && !stderr.contains("books:"), "W1 computes W1 only: {stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("instrument,window_start_ns,events,"));
    let total: u64 = text.lines().skip(1).map(|l| l.split(',').nth(2).unwrap().parse::<u64>().unwrap()).sum();
    assert_eq!(total, 20_000);
}

#[test]
fn embedded_default_prints_a_summary() {
    let output = util::cmd().args(["run"]).env("LOBSENTRY__GENERATOR__EVENTS", "30000").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("windows over 10 instruments"), "{stdout}");
    assert!(stdout.contains("busiest windows"), "{stdout}");
}

#[test]
fn check_config_lists_every_error() {
    let dir = TempDir::new("cli-config");
    let bad = dir.path("bad.toml");
    std::fs::write(&bad, "[window]\nsize = \"1 fortnight\"\nslide = \"3s\"\n[pipeline]\nworkers = 0\n").unwrap();
    let output = util::cmd().args(["check-config", "--config"]).arg(&bad).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("window.size"), "{stderr}");
    assert!(stderr.contains("pipeline.workers"), "{stderr}");
    let ok = util::cmd().args(["check-config"]).output().unwrap();
    assert!(ok.status.success());
}

#[test]
fn missing_input_is_a_clear_error() {
    let output = util::cmd().args(["run", "--input", "/nonexistent/x.csv"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/x.csv does not exist"), "{stderr}");
}

#[test]
fn book_command_writes_lobster_rows() {
    let dir = TempDir::new("cli-book");
    let input = util::shared_data().join("lobster/AMZN_2021-04-12_34200000_57600000_message_10.csv");
    let out = dir.path("book.csv");
    let output = util::cmd()
        .args(["book", "--messages"])
        .arg(&input)
        .args(["--levels", "3", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("visible executions at the reconstructed best price"), "{stdout}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(text.lines().count(), 40_674);
    assert!(text.lines().all(|l| l.split(',').count() == 12));
}

/// (scale, decided, scored) from the run's `detectors:` line.
fn decided_per_scale(stderr: &str) -> Vec<(String, u64, u64)> {
    let line = stderr.lines().find(|l| l.starts_with("detectors: ")).unwrap_or_else(|| panic!("{stderr}"));
    let inner = line.split("per scale: ").nth(1).and_then(|r| r.split(')').next()).unwrap_or_else(|| panic!("{line}"));
    inner
        .split(", ")
        .map(|part| {
            let f: Vec<&str> = part.split_whitespace().collect();
            assert_eq!((f.len(), f[2]), (4, "of"), "{line}");
            (f[0].to_string(), f[1].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn a_scale_that_never_warms_up_is_named_with_the_settings_that_fix_it() {
    let dir = TempDir::new("cli-warmup");
    let run = |events: &str, instruments: &str, rate: &str| {
        let input = dir.path(&format!("market-{events}.csv"));
        let status = util::cmd()
            .args([
                "generate",
                "--events",
                events,
                "--instruments",
                instruments,
                "--rate",
                rate,
                "--seed",
                "5",
                "--out",
            ])
            .arg(&input)
            .status()
            .unwrap();
        assert!(status.success());
        let output = util::cmd().arg("run").arg("--input").arg(&input).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    // 300 s of market: the 1 s scale decides after its warm-up, the 10 s scale (30 windows an
    // instrument, against warm-ups of 100 + 100) never does, and the run says so.
    let short = run("60000", "2", "200");
    let scales = decided_per_scale(&short);
    assert_eq!(scales.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), ["1s", "10s"], "{short}");
    let (_, decided, scored) = scales[0];
    assert!(decided > 0 && decided < scored, "the 1 s scale warms up, then decides: {short}");
    assert_eq!(scales[1].1, 0, "{short}");
    let warning = short
        .lines()
        .find(|l| l.contains("warning: the 10s scale decided no window"))
        .unwrap_or_else(|| panic!("{short}"));
    for setting in ["detect.multivariate-warmup = 100", "detect.calibration-warmup = 100"] {
        assert!(warning.contains(setting), "{warning}");
    }
    assert!(!short.contains("the 1s scale decided no window"), "{short}");
    // 2,400 s of one instrument: both scales decide, and nothing is said.
    let long = run("120000", "1", "50");
    let scales = decided_per_scale(&long);
    assert!(scales.iter().all(|(_, decided, scored)| *decided > 0 && decided <= scored), "{long}");
    assert!(!long.contains("decided no window"), "{long}");
}
