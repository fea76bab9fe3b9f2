//! Metrics and clusters: the endpoint passes `promtool check metrics`; a real Prometheus scrapes a
//! 2-process cluster and every PromQL expression of the dashboard and the alert rules returns data;
//! a 2-process run writes the same output as one process.

use crate::util::{self, free_ports, http_get, wait_for, Guard, TempDir};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool() -> &'static str {
    assert!(
        Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success()),
        "promtool is missing: install Debian's prometheus package (.ci/run does)"
    );
    "promtool"
}

#[test]
fn metrics_endpoint_passes_promtool() {
    let port = free_ports(1);
    let _run = Guard(
        Command::new(util::bin())
            .args(["run", "--config"])
            .arg(repo("config/live.toml"))
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("/readyz", Duration::from_secs(30), || http_get(port, "/readyz").is_some_and(|r| r.0 == 200));
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    // Wait for the first windows (1 s windows, 0.5 s bound).
    let mut body = String::new();
    wait_for("windows", Duration::from_secs(30), || {
        body = http_get(port, "/metrics").map(|r| r.1).unwrap_or_default();
        body.lines().any(|l| l.starts_with("lobsentry_window_emitted_total ") && !l.ends_with(" 0"))
    });
    assert!(body.contains("lobsentry_source_events_total{source=\"synthetic\"}"), "{body}");
    // Every detection scale has its series of decided windows from the start (0 during warm-up).
    for scale in ["1s", "10s"] {
        assert!(body.contains(&format!("lobsentry_detect_decided_windows_total{{scale=\"{scale}\"}}")), "{body}");
    }
    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `expr` of the dashboard (panel targets and annotations) and of the alert rules.
fn expressions() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo("config/grafana/lobsentry.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for ann in dashboard["annotations"]["list"].as_array().unwrap() {
        exprs.push(ann["expr"].as_str().unwrap().to_string());
    }
    let rules = std::fs::read_to_string(repo("config/alert-rules.yml")).unwrap();
    exprs.extend(rules.lines().filter_map(|l| l.trim().strip_prefix("expr:")).map(|e| e.trim().to_string()));
    exprs
}

/// An alert or annotation fires only past its threshold; what must return data is its left side.
fn without_threshold(expr: &str) -> &str {
    for op in [" <= ", " >= ", " > ", " < ", " == ", " != "] {
        if let Some((lhs, rhs)) = expr.rsplit_once(op) {
            if rhs.trim().parse::<f64>().is_ok() {
                return lhs.trim();
            }
        }
    }
    expr
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query(port: u16, expr: &str) -> serde_json::Value {
    let (status, body) =
        http_get(port, &format!("/api/v1/query?query={}", urlencode(expr))).expect("prometheus answers");
    assert_eq!(status, 200, "{expr}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn prometheus_scrapes_a_two_process_cluster_and_every_expression_returns_data() {
    let check = |args: &[&str]| {
        let out = Command::new(promtool()).args(args).output().unwrap();
        assert!(out.status.success(), "promtool {args:?}: {}", String::from_utf8_lossy(&out.stdout));
    };
    check(&["check", "rules", repo("config/alert-rules.yml").to_str().unwrap()]);
    check(&["check", "config", repo("config/prometheus.yml").to_str().unwrap()]);

    let dir = TempDir::new("prometheus");
    let metrics = free_ports(2);
    let _cluster = Guard(
        Command::new(util::bin())
            .args(["launch", "-n", "2", "--", "--config"])
            .arg(repo("config/live.toml"))
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom_port = free_ports(1);
    let config = dir.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: lobsentry\n    static_configs:\n      - targets: [\"127.0.0.1:{metrics}\", \"127.0.0.1:{}\"]\n",
            repo("config/alert-rules.yml").display(),
            metrics + 1
        ),
    )
    .unwrap();
    let _prometheus = Guard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is missing: install Debian's prometheus package (.ci/run does)"),
    );
    wait_for("prometheus", Duration::from_secs(60), || http_get(prom_port, "/-/ready").is_some_and(|r| r.0 == 200));
    wait_for("both processes up", Duration::from_secs(60), || {
        let up = query(prom_port, "sum(up{job=\"lobsentry\"})");
        up["data"]["result"][0]["value"][1].as_str() == Some("2")
    });
    let exprs = expressions();
    assert!(exprs.len() >= 12, "{exprs:?}");
    // rate() over [1m] needs two scrapes of a counter that has moved; allow the market a moment.
    let mut missing = Vec::new();
    wait_for("every expression to return data", Duration::from_secs(60), || {
        missing = exprs
            .iter()
            .filter(|e| {
                let full = query(prom_port, e);
                assert_eq!(full["status"], "success", "{e}: {full}");
                let data = query(prom_port, without_threshold(e));
                data["data"]["result"].as_array().is_none_or(|r| r.is_empty())
            })
            .cloned()
            .collect();
        missing.is_empty()
    });
    assert!(missing.is_empty(), "no data: {missing:?}");
    // Both processes report their own share of the market.
    let per_instance = query(prom_port, "sum by (instance) (lobsentry_source_events_total)");
    assert_eq!(per_instance["data"]["result"].as_array().unwrap().len(), 2, "{per_instance}");
}

#[test]
fn two_processes_write_what_one_process_writes() {
    let dir = TempDir::new("cluster");
    let spec = util::market(50_000, 6, 17);
    let input = dir.path("in.csv");
    util::write_csv(&input, &util::events(&spec, 1_000_000_000, 0.001));
    let single = dir.path("single.csv");
    let clustered = dir.path("cluster.csv");
    let run = |args: Vec<String>| {
        let out = Command::new(util::bin()).args(&args).env("LOBSENTRY__METRICS__ENABLED", "false").output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let s = |p: &Path| p.display().to_string();
    run(vec!["run".into(), "--input".into(), s(&input), "--output".into(), s(&single)]);
    run(vec![
        "launch".into(),
        "-n".into(),
        "2".into(),
        "--".into(),
        "--input".into(),
        s(&input),
        "--output".into(),
        s(&clustered),
    ]);
    let a = std::fs::read_to_string(&single).unwrap();
    assert!(a.lines().count() > 100);
    assert!(a == std::fs::read_to_string(&clustered).unwrap(), "the 2-process output differs");
}

#[test]
fn launch_stops_every_process_when_one_fails() {
    // Process 1 cannot write its dead-letter file (a directory is in the way), so it fails at start;
    // the launcher must stop process 0 (which would otherwise wait for its peer forever) and say why.
    let dir = TempDir::new("launch-failure");
    std::fs::create_dir_all(dir.path("dlq.p1")).unwrap();
    let started = Instant::now();
    let out = Command::new(util::bin())
        .args(["launch", "-n", "2", "--", "--config"])
        .arg(repo("config/live.toml"))
        .env("LOBSENTRY__METRICS__ENABLED", "false")
        .env("LOBSENTRY__SINK__DEAD_LETTER", format!("{:?}", dir.path("dlq").display().to_string()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("process 1 failed (exit code 1)"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
}
