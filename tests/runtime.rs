//! The runtime's faults, as a user or an adversary meets them: clusters whose processes were started
//! differently, a process that dies, a sink that cannot write, a stop signal with a dead webhook and
//! the API on, secrets in the printed configuration.

use crate::util::{self, cmd, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A hostfile for `n` processes on free loopback ports.
fn hostfile(dir: &TempDir, n: u16) -> PathBuf {
    let base = util::free_ports(n);
    let path = dir.path("hosts.txt");
    let lines: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

/// `lobsentry run` as process `p` of 2 (stdout and stderr captured).
fn process(hosts: &Path, p: usize, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut c = cmd();
    c.args(["run", "--hostfile"]).arg(hosts).args(["-n", "2", "-p", &p.to_string()]).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits for a child at most `limit`; kills it and fails past that.
fn finish(mut child: Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("{what} did not end within {limit:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn market(dir: &TempDir) -> PathBuf {
    let input = dir.path("in.csv");
    util::write_csv(&input, &util::events(&util::market(40_000, 6, 23), 1_000_000_000, 0.001));
    input
}

/// The README's by-hand commands: process 0 has `--output`, process 1 has not. Both build the same
/// dataflow (process 0's output stage), and the cluster writes what one process writes.
#[test]
fn a_by_hand_cluster_with_the_output_on_process_0_only_writes_what_one_process_writes() {
    let dir = TempDir::new("by-hand");
    let input = market(&dir);
    let (single, clustered) = (dir.path("single.csv"), dir.path("cluster.csv"));
    let s = |p: &Path| p.display().to_string();
    let (one, all) = (dir.path("one.json"), dir.path("all.json"));
    let out = cmd()
        .args(["run", "-w", "2", "--input", &s(&input), "--output", &s(&single), "--report-json", &s(&one)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let hosts = hostfile(&dir, 2);
    let p1 = process(&hosts, 1, &["-w", "2", "--input", &s(&input)], &[]);
    let p0 = process(
        &hosts,
        0,
        &["-w", "2", "--input", &s(&input), "--output", &s(&clustered), "--report-json", &s(&all)],
        &[],
    );
    let (o0, o1) =
        (finish(p0, Duration::from_secs(120), "process 0"), finish(p1, Duration::from_secs(120), "process 1"));
    assert!(o0.status.success() && o1.status.success(), "{}\n{}", stderr(&o0), stderr(&o1));
    let want = std::fs::read_to_string(&single).unwrap();
    assert!(want.lines().count() > 100);
    assert!(want == std::fs::read_to_string(&clustered).unwrap(), "the by-hand cluster's output differs");
    // Process 0 reports the cluster's totals: the single process's counts.
    let read = |p: &Path| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap() };
    let (one, all) = (read(&one), read(&all));
    assert_eq!(all["cluster"]["processes"], 2);
    for key in ["events", "windows", "late", "rejected"] {
        assert_eq!(all["cluster"][key], one[key], "{key}: {all}");
    }
    let anomalies: u64 = all["cluster"]["anomalies"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).sum();
    let single_anomalies: u64 =
        one["anomalies_by_detector"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(anomalies, single_anomalies);
    assert!(stderr(&o0).contains("cluster (2 processes)"), "{}", stderr(&o0));
}

/// Processes started with different detection settings refuse to run, each naming the setting.
#[test]
fn processes_of_different_jobs_refuse_to_run_naming_the_difference() {
    let dir = TempDir::new("mismatch");
    let input = market(&dir);
    let s = input.display().to_string();
    let hosts = hostfile(&dir, 2);
    let one_scale = [("LOBSENTRY__DETECT__SCALES", r#"["1s"]"#), ("LOBSENTRY__DETECT__SCALE_SHARES", "[]")];
    let p1 = process(&hosts, 1, &["--input", &s], &one_scale);
    let p0 = process(&hosts, 0, &["--input", &s], &[]);
    for (out, name) in
        [(finish(p0, Duration::from_secs(60), "process 0"), 0), (finish(p1, Duration::from_secs(60), "process 1"), 1)]
    {
        let err = stderr(&out);
        assert!(!out.status.success(), "process {name} ran a mismatched job: {err}");
        assert!(err.contains("runs a different job") && err.contains("detect.scales"), "process {name}: {err}");
    }
}

/// A process that dies (SIGKILL) takes the rest of the job down promptly, with one clear message,
/// instead of leaving it waiting for its peer forever.
#[test]
fn a_killed_process_stops_its_peer_promptly() {
    let dir = TempDir::new("peer-killed");
    let hosts = hostfile(&dir, 2);
    let live = repo("config/live.toml").display().to_string();
    let env = [("LOBSENTRY__METRICS__ENABLED", "false")];
    let p0 = process(&hosts, 0, &["--config", &live], &env);
    let mut p1 = process(&hosts, 1, &["--config", &live], &env);
    std::thread::sleep(Duration::from_secs(3));
    p1.kill().unwrap();
    let _ = p1.wait();
    let out = finish(p0, Duration::from_secs(30), "the surviving process");
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("lost the connection to another process"), "{err}");
    assert!(err.matches("lobsentry: error").count() == 1 && !err.contains("panicked"), "one message: {err}");
}

/// An alerts file that cannot be written (a full disk) fails the run, naming the file.
#[test]
fn a_full_disk_under_the_alerts_file_fails_the_run_naming_it() {
    let dir = TempDir::new("full-disk");
    let input = dir.path("in.csv");
    util::write_csv(&input, &util::events(&util::market(200_000, 4, 23), 1_000_000_000, 0.0));
    let out = cmd()
        .args(["run", "--input"])
        .arg(&input)
        .envs(util::BUSY_ALERTS)
        .env("LOBSENTRY__DETECT__ALERTS", "/dev/full")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("alerts file /dev/full") && err.contains("No space left"), "{err}");
}

/// SIGTERM with the API on and a webhook that never answers: reading stops, the webhook gets its
/// grace period, the summary and the report are written, and the exit status is 0.
#[test]
fn sigterm_with_the_api_on_and_a_dead_webhook_flushes_reports_and_exits_0() {
    let dir = TempDir::new("sigterm");
    // A webhook that accepts connections (the backlog) and never answers.
    let hook = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", hook.local_addr().unwrap());
    let (alerts, report) = (dir.path("alerts.jsonl"), dir.path("report.json"));
    let child = cmd()
        .args(["run", "--config"])
        .arg(repo("config/live.toml"))
        .args(["--api-addr", "127.0.0.1:0", "--report-json"])
        .arg(&report)
        .envs(util::BUSY_ALERTS)
        .env("LOBSENTRY__METRICS__ENABLED", "false")
        .env("LOBSENTRY__GENERATOR__REALTIME_SPEED", "10")
        .env("LOBSENTRY__DETECT__ALERTS", alerts.display().to_string())
        .env("LOBSENTRY__WEBHOOK__URL", &url)
        .env("LOBSENTRY__WEBHOOK__TIMEOUT", "1s")
        .env("LOBSENTRY__WEBHOOK__PER_INSTRUMENT_INTERVAL", "0s")
        .env("LOBSENTRY__PIPELINE__SHUTDOWN_GRACE", "2s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    util::wait_for("alerts", Duration::from_secs(120), || {
        std::fs::metadata(&alerts).map(|m| m.len() > 0).unwrap_or(false)
    });
    let signalled = Instant::now();
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = finish(child, Duration::from_secs(30), "the stopped run");
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(signalled.elapsed() < Duration::from_secs(20), "stopped in {:?}", signalled.elapsed());
    assert!(err.contains("stopped by a signal"), "{err}");
    assert!(err.contains("alerts not delivered") && !err.contains("/hook"), "{err}");
    assert!(err.contains("events in"), "the summary: {err}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(report["stopped"], true);
    assert!(report["events"].as_u64().unwrap() > 0);
    let text = std::fs::read_to_string(&alerts).unwrap();
    assert!(text.lines().count() > 0);
    for line in text.lines() {
        let a: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(a["detector"], "ensemble");
    }
    // The summary counts alerts as the file holds them.
    assert!(err.contains(&format!("{} alerts (ensemble)", text.lines().count())), "{err}");
    drop(hook);
}

/// `check-config` prints the effective configuration as TOML with secrets redacted; environment
/// values take the type of their setting.
#[test]
fn check_config_prints_toml_with_secrets_redacted() {
    let out = cmd()
        .arg("check-config")
        .env("LOBSENTRY__WEBHOOK__URL", "https://hooks.example.com/services/T0/B0/SECRETTOKEN")
        .env("LOBSENTRY__WEBHOOK__SECRET_ENV", "LOBSENTRY_TEST_HOOK_SECRET")
        .env("LOBSENTRY_TEST_HOOK_SECRET", "hunter2-value")
        .env("LOBSENTRY__KAFKA__TOPIC", "123")
        .output()
        .unwrap();
    let (text, err) = (String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out));
    assert!(out.status.success(), "{err}");
    assert!(!text.contains("SECRETTOKEN") && !text.contains("hunter2"), "{text}");
    let value: toml::Value = toml::from_str(&text).unwrap_or_else(|e| panic!("not TOML ({e}): {text}"));
    assert_eq!(value["webhook"]["url"].as_str(), Some("https://hooks.example.com/<redacted>"));
    assert_eq!(value["webhook"]["secret-env"].as_str(), Some("LOBSENTRY_TEST_HOOK_SECRET"));
    assert_eq!(value["kafka"]["topic"].as_str(), Some("123"));
    assert_eq!(value["window"]["size"].as_str(), Some("1s"));
}

fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// 300 connections that never send a request cost no thread each, and once the header timeout
/// drops them the API answers again.
#[test]
fn idle_api_connections_are_bounded_and_dropped() {
    let port = util::free_ports(1);
    let child = cmd()
        .args(["run", "--config"])
        .arg(repo("config/live.toml"))
        .args(["--api-addr", &format!("127.0.0.1:{port}")])
        .env("LOBSENTRY__METRICS__ENABLED", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = util::Guard(child);
    let pid = guard.0.id();
    util::wait_for("the API", Duration::from_secs(60), || util::http_get(port, "/v1/openapi.json").is_some());
    let before = threads(pid);
    let idle: Vec<std::net::TcpStream> =
        (0..300).filter_map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).ok()).collect();
    assert!(idle.len() >= 250, "connected {}", idle.len());
    std::thread::sleep(Duration::from_secs(1));
    let during = threads(pid);
    assert!(during <= before + 4, "threads: {before} before, {during} with 300 idle connections");
    util::wait_for("an answer after the idle connections were dropped", Duration::from_secs(60), || {
        util::http_get(port, "/v1/openapi.json").is_some_and(|(status, _)| status == 200)
    });
    drop(idle);
}
