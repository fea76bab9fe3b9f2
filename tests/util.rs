//! Shared helpers: temp dirs per test, the binary, generated markets.

use lobsentry::config::{self, Config, Overrides};
use lobsentry::metrics::Counters;
use lobsentry::runtime::{self as pipeline, RunReport};
use lobsentry_operators::event::LobEvent;
use lobsentry_operators::generator::{Disorder, Market, MarketSpec};
use lobsentry_operators::source::decode::{write_csv_line, CSV_HEADER};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A fresh directory for one test (removed when dropped).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("lobsentry-it-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lobsentry binary built for these tests.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lobsentry")
}

/// A small market: `events` events over `instruments` instruments.
pub fn market(events: u64, instruments: usize, seed: u64) -> MarketSpec {
    MarketSpec {
        instruments,
        events: Some(events),
        rate_per_sec: 2_000.0,
        seed,
        anomalies_per_instrument_hour: 60.0,
        ..MarketSpec::default()
    }
}

/// The events of a market, reordered within `disorder_ns` and with a fraction delayed by 5 s.
pub fn events(spec: &MarketSpec, disorder_ns: u64, late_fraction: f64) -> Vec<LobEvent> {
    Disorder::new(Market::new(spec), spec.seed, disorder_ns, late_fraction, 5_000_000_000).collect()
}

/// Writes events as interchange CSV.
pub fn write_csv(path: &Path, events: &[LobEvent]) {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "{CSV_HEADER}").unwrap();
    let mut line = String::new();
    for e in events {
        line.clear();
        write_csv_line(e, &mut line);
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
}

/// Loads a configuration file (relative to the repository) with overrides.
pub fn config(
    file: Option<&str>,
    workers: usize,
    inputs: Vec<PathBuf>,
    output: &Path,
    env: Vec<(&str, &str)>,
) -> Config {
    let path = file.map(|f| Path::new(env!("CARGO_MANIFEST_DIR")).join(f));
    let env = env.into_iter().map(|(k, v)| (k.to_string(), v.to_string()));
    let overrides = Overrides {
        workers: Some(workers),
        inputs,
        output: Some(output.display().to_string()),
        ..Overrides::default()
    };
    config::load_raw(path.as_deref(), env).unwrap().validate(&overrides).unwrap()
}

/// Runs a configuration to completion.
pub fn run(config: &Config) -> RunReport {
    pipeline::run(config, Arc::new(Counters::standalone(config))).unwrap()
}

/// Unzips one of the LOBSTER sample archives into `dir` (with the system's unzip).
pub fn unzip_sample(archive: &str, dir: &Path) -> Option<PathBuf> {
    let zip = shared_data().join("lobster").join(archive);
    if !zip.exists() {
        return None;
    }
    let status = std::process::Command::new("unzip").arg("-qo").arg(&zip).arg("-d").arg(dir).status().ok()?;
    assert!(status.success(), "unzip {}", zip.display());
    Some(dir.to_path_buf())
}

/// ../shared/data (next to the repository).
pub fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// A calibration that alerts often, for tests of where alerts go (not of how good they are): 300
/// expected false alarms per instrument-hour after 20 windows of warm-up.
pub const BUSY_ALERTS: [(&str, &str); 2] =
    [("LOBSENTRY__DETECT__ALARMS_PER_HOUR", "300.0"), ("LOBSENTRY__DETECT__CALIBRATION_WARMUP", "20")];

/// The lobsentry binary as a command, with the metrics endpoint off (tests run in parallel and must
/// not compete for the default port).
pub fn cmd() -> std::process::Command {
    let mut c = std::process::Command::new(bin());
    c.env("LOBSENTRY__METRICS__ENABLED", "false");
    c
}

/// Kills a child process (SIGTERM, then SIGKILL) when dropped.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        #[allow(unsafe_code)]
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port `p` such that `p + 1 .. p + n` are free too.
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let base = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if base > 65000 {
            continue;
        }
        let held: Vec<_> = (0..n).map(|i| TcpListener::bind(("127.0.0.1", base + i))).collect();
        if held.iter().all(|l| l.is_ok()) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports");
}

pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    // Prometheus answers with chunked encoding; de-chunk.
    let body = if text.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(&body) } else { body };
    Some((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}
