//! Alert sinks against real servers: email over SMTP with STARTTLS and a login (aiosmtpd from PyPI,
//! installed into .venv by `make test`).

use crate::util::{self, cmd, free_ports, wait_for, Guard, TempDir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn venv_python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(p.exists(), "no .venv: run `make test` (it installs aiosmtpd into .venv)");
    p
}

/// An SMTP server on a free port with STARTTLS (a fresh self-signed certificate) and one login.
fn smtp_server(dir: &TempDir, password: &str) -> (Guard, u16, PathBuf) {
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl req");
    let port = free_ports(1);
    let out = dir.path("mail.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_server.py");
    let child = Command::new(venv_python())
        .arg(script)
        .args([port.to_string().as_str(), cert.to_str().unwrap(), key.to_str().unwrap(), "desk", password])
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let guard = Guard(child);
    wait_for("the SMTP server", Duration::from_secs(30), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    (guard, port, out)
}

/// Alerts reach the analyst's mailbox over STARTTLS with a login, one per instrument per rate-limit
/// interval, with the alert in the body; the counters say so.
#[test]
fn email_alerts_arrive_over_starttls_with_a_login_and_the_rate_limit() {
    let dir = TempDir::new("email");
    let (_server, port, mailbox) = smtp_server(&dir, "s3cret");
    let input = dir.path("in.csv");
    util::write_csv(&input, &util::events(&util::market(120_000, 3, 31), 0, 0.0));
    let alerts = dir.path("alerts.jsonl");
    let run = |password: &str| {
        cmd()
            .args(["run", "--input"])
            .arg(&input)
            .envs(util::BUSY_ALERTS)
            .env("LOBSENTRY__DETECT__ALERTS", alerts.display().to_string())
            .env("LOBSENTRY__EMAIL__SERVER", "127.0.0.1")
            .env("LOBSENTRY__EMAIL__PORT", port.to_string())
            .env("LOBSENTRY__EMAIL__SECURITY", "starttls")
            .env("LOBSENTRY__EMAIL__ACCEPT_INVALID_CERTS", "true")
            .env("LOBSENTRY__EMAIL__USERNAME", "desk")
            .env("LOBSENTRY__EMAIL__PASSWORD_ENV", "LOBSENTRY_TEST_SMTP_PASSWORD")
            .env("LOBSENTRY_TEST_SMTP_PASSWORD", password)
            .env("LOBSENTRY__EMAIL__TO", r#"["Desk <desk@example.com>"]"#)
            .env("LOBSENTRY__EMAIL__PER_INSTRUMENT_INTERVAL", "10s")
            .env("LOBSENTRY__EMAIL__BACKOFF", "10ms")
            .output()
            .unwrap()
    };
    let out = run("s3cret");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    // What the rate limit lets through: per instrument, alerts at least 10 s of event time apart.
    let mut last: BTreeMap<String, u64> = BTreeMap::new();
    let mut expected = 0;
    let text = std::fs::read_to_string(&alerts).unwrap();
    for line in text.lines() {
        let a: serde_json::Value = serde_json::from_str(line).unwrap();
        let (sym, end) = (a["instrument"].as_str().unwrap().to_string(), a["window_end_ns"].as_u64().unwrap());
        if last.get(&sym).is_none_or(|&l| end >= l + 10_000_000_000) {
            last.insert(sym, end);
            expected += 1;
        }
    }
    assert!(expected >= 2, "the run raised alerts ({expected} after the rate limit)");
    assert!(!err.contains("email:"), "every email delivered: {err}");
    let mail: Vec<serde_json::Value> = std::fs::read_to_string(&mailbox)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(mail.len(), expected, "one email per alert the rate limit lets through");
    for m in &mail {
        assert_eq!(m["login"], "desk");
        assert_eq!(m["tls"], true, "STARTTLS");
        assert_eq!(m["to"][0], "desk@example.com");
        // The body is quoted-printable: join its soft line breaks before looking into the JSON.
        let data = m["data"].as_str().unwrap().replace("=\r\n", "").replace("=\n", "");
        assert!(data.contains("Subject: lobsentry alert: SYM"), "{data}");
        assert!(data.contains("\"detector\":\"ensemble\""), "the alert as JSON in the body: {data}");
    }
    // A refused login is permanent: nothing is sent, the run ends normally and says so.
    std::fs::remove_file(&mailbox).ok();
    let out = run("wrong");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("email: {expected} alerts not delivered")), "{err}");
    assert!(!mailbox.exists() || std::fs::read_to_string(&mailbox).unwrap().is_empty());
}
