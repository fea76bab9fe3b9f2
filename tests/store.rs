//! The PostgreSQL history (and the Grafana dashboard's queries over it) against a real server: Debian's PostgreSQL started here (`initdb` +
//! `pg_ctl` on a free loopback port in a temporary directory, as the `postgres` user when the tests
//! run as root).

use crate::util::{self, cmd, free_ports, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The directory of `initdb` and `pg_ctl`.
fn pg_bin() -> PathBuf {
    if let Ok(out) = Command::new("sh").args(["-c", "command -v initdb"]).output() {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            return Path::new(&std::fs::canonicalize(&p).unwrap_or(p.clone().into())).parent().unwrap().to_path_buf();
        }
    }
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .find(|b| b.join("initdb").exists());
    found.expect("no PostgreSQL: `make test` installs it (apt-get install postgresql)")
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

/// A command as the owner of the data directory (`postgres` when we are root).
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL server with user `lobsentry` (password authentication); stopped when dropped.
pub struct Postgres {
    data: PathBuf,
    pub port: u16,
}

impl Postgres {
    pub fn start(dir: &TempDir, password: &str) -> Postgres {
        let bin = pg_bin();
        let home = dir.path("pg");
        std::fs::create_dir_all(&home).unwrap();
        let (data, pwfile) = (home.join("data"), home.join("pw"));
        std::fs::write(&pwfile, password).unwrap();
        if is_root() {
            let status = Command::new("chown").args(["-R", "postgres"]).arg(&home).status().unwrap();
            assert!(status.success());
            // The test's temporary directory must be enterable by postgres.
            let _ = Command::new("chmod").arg("755").arg(&dir.0).status();
        }
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "lobsentry", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_ports(1);
        let out = as_owner(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(data.join("log"))
            .arg("-o")
            .arg(format!("-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off", data.display()))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&out.stderr));
        Postgres { data, port }
    }

    pub fn url(&self) -> String {
        format!("postgresql://lobsentry@127.0.0.1:{}/postgres", self.port)
    }

    pub fn client(&self, password: &str) -> postgres::Client {
        postgres::Client::connect(
            &format!("host=127.0.0.1 port={} user=lobsentry password={password} dbname=postgres", self.port),
            postgres::NoTls,
        )
        .unwrap()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_owner(&pg_bin().join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Alerts, scores and windows reach the tables; the desk's questions have answers; a second run of
/// the same job adds nothing (each alert once); an unreachable database is a clear error.
#[test]
fn history_in_postgres_answers_the_desk_and_holds_each_alert_once() {
    let dir = TempDir::new("store");
    let pg = Postgres::start(&dir, "pw-store");
    let input = dir.path("in.csv");
    util::write_csv(&input, &util::events(&util::market(120_000, 3, 41), 0, 0.0));
    let (alerts, report) = (dir.path("alerts.jsonl"), dir.path("report.json"));
    let run = |url: &str| {
        cmd()
            .args(["run", "--input"])
            .arg(&input)
            .arg("--report-json")
            .arg(&report)
            .envs(util::BUSY_ALERTS)
            .env("LOBSENTRY__DETECT__ALERTS", alerts.display().to_string())
            .env("LOBSENTRY__STORE__URL", url)
            .env("LOBSENTRY__STORE__PASSWORD_ENV", "LOBSENTRY_TEST_PG_PASSWORD")
            .env("LOBSENTRY_TEST_PG_PASSWORD", "pw-store")
            .env("LOBSENTRY__STORE__SCORES", "true")
            .env("LOBSENTRY__STORE__FEATURES", "true")
            .env("LOBSENTRY__STORE__CONNECT_ATTEMPTS", "2")
            .env("LOBSENTRY__STORE__CONNECT_BACKOFF", "100ms")
            .output()
            .unwrap()
    };
    let out = run(&pg.url());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    let file: Vec<serde_json::Value> =
        std::fs::read_to_string(&alerts).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(file.len() >= 2, "the run raised alerts");
    let mut db = pg.client("pw-store");
    let count = |db: &mut postgres::Client, sql: &str| -> i64 { db.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(count(&mut db, "SELECT max(version)::bigint FROM lobsentry_schema"), 1);
    assert_eq!(count(&mut db, "SELECT count(*) FROM alerts") as usize, file.len());
    assert_eq!(count(&mut db, "SELECT count(*) FROM window_features"), report["windows"].as_i64().unwrap());
    assert!(count(&mut db, "SELECT count(*) FROM scores") > file.len() as i64);
    // The desk's questions: an instrument's alerts between two times, the windows before an alert,
    // daily counts per detector and instrument, top instruments over a period.
    let first = &file[0];
    let sym = first["instrument"].as_str().unwrap().to_string();
    let rows = db
        .query(
            "SELECT id, score, top_features FROM alerts WHERE instrument = $1 AND window_end >= to_timestamp(0) \
             AND window_end < now() + interval '100 years' ORDER BY window_end",
            &[&sym],
        )
        .unwrap();
    assert_eq!(rows.len(), file.iter().filter(|a| a["instrument"] == sym.as_str()).count());
    let id: String = rows[0].get(0);
    assert_eq!(id, format!("{}|{}|{}", sym, first["window_end_ns"], first["model"].as_str().unwrap()));
    let before = db
        .query(
            "SELECT w.window_end, w.spread_mean FROM window_features w JOIN alerts a ON a.instrument = w.instrument \
             WHERE a.id = $1 AND w.window_end <= a.window_end ORDER BY w.window_end DESC LIMIT 5",
            &[&id],
        )
        .unwrap();
    assert_eq!(before.len(), 5, "the five windows up to the alert");
    let daily = db
        .query(
            "SELECT date_trunc('day', window_end) AS day, detector, instrument, count(*) FROM alerts GROUP BY 1, 2, 3",
            &[],
        )
        .unwrap();
    assert!(!daily.is_empty());
    let top = db
        .query("SELECT instrument, count(*) AS n FROM alerts GROUP BY instrument ORDER BY n DESC LIMIT 10", &[])
        .unwrap();
    let total: i64 = top.iter().map(|r| r.get::<_, i64>(1)).sum();
    assert_eq!(total as usize, file.len());
    dashboard_queries_return_rows(&mut db);
    api_answers_from_the_history(&pg, &input, &file);
    // The same job again (a restart that replays): each alert stays once.
    let out = run(&pg.url());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(count(&mut db, "SELECT count(*) FROM alerts") as usize, file.len());
    assert_eq!(count(&mut db, "SELECT count(*) FROM window_features"), report["windows"].as_i64().unwrap());
    // Rows the database refuses (here a constraint a DBA added) go to the dead-letter output with
    // the reason, counted; the other rows are stored.
    db.batch_execute(&format!(
        "TRUNCATE alerts; ALTER TABLE alerts ADD CONSTRAINT desk_rule CHECK (instrument <> '{sym}')"
    ))
    .unwrap();
    let dead = dir.path("dead.jsonl");
    let out = cmd()
        .args(["run", "--input"])
        .arg(&input)
        .arg("--report-json")
        .arg(dir.path("report2.json"))
        .envs(util::BUSY_ALERTS)
        .env("LOBSENTRY__SINK__DEAD_LETTER", dead.display().to_string())
        .env("LOBSENTRY__STORE__URL", pg.url())
        .env("LOBSENTRY__STORE__PASSWORD_ENV", "LOBSENTRY_TEST_PG_PASSWORD")
        .env("LOBSENTRY_TEST_PG_PASSWORD", "pw-store")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let refused: Vec<serde_json::Value> =
        std::fs::read_to_string(&dead).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of_sym: Vec<&serde_json::Value> = file.iter().filter(|a| a["instrument"] == sym.as_str()).collect();
    assert_eq!(refused.len(), of_sym.len(), "{refused:?}");
    for r in &refused {
        assert_eq!((r["file"].as_str(), r["table"].as_str()), (Some("store"), Some("alerts")));
        assert!(r["reason"].as_str().unwrap().contains("desk_rule"), "{r}");
        assert_eq!(r["row"]["instrument"], sym.as_str());
        assert!(r["id"].as_str().unwrap().starts_with(&format!("{sym}|")));
    }
    assert_eq!(count(&mut db, "SELECT count(*) FROM alerts") as usize, file.len() - of_sym.len());
    let report2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path("report2.json")).unwrap()).unwrap();
    let warnings = report2.to_string();
    assert!(warnings.contains("was refused") && warnings.contains("desk_rule"), "{warnings}");
    // No database: a clear error after the configured attempts, promptly.
    let started = Instant::now();
    let closed = format!("postgresql://lobsentry@127.0.0.1:{}/postgres", free_ports(1));
    let out = run(&closed);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("cannot reach PostgreSQL") && err.contains("after 2 attempts"), "{err}");
    assert!(!err.contains("pw-store"), "no password in messages: {err}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Every SQL query of the history dashboard (panels, annotations, variables), with Grafana's macros
/// expanded the way its PostgreSQL data source does, returns rows from a real run's tables.
fn dashboard_queries_return_rows(db: &mut postgres::Client) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/lobsentry-history.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queries: Vec<(String, String)> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        assert_eq!(p["datasource"]["type"], "grafana-postgresql-datasource", "{}", p["title"]);
        for t in p["targets"].as_array().unwrap() {
            queries.push((p["title"].as_str().unwrap().to_string(), t["rawSql"].as_str().unwrap().to_string()));
        }
    }
    for a in dash["annotations"]["list"].as_array().unwrap() {
        queries.push((a["name"].as_str().unwrap().to_string(), a["target"]["rawSql"].as_str().unwrap().to_string()));
    }
    for v in dash["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        queries.push((v["name"].as_str().unwrap().to_string(), v["query"].as_str().unwrap().to_string()));
    }
    assert!(queries.len() >= 7, "{queries:?}");
    let instruments: Vec<String> = db
        .query("SELECT DISTINCT instrument FROM window_features", &[])
        .unwrap()
        .iter()
        .map(|r| format!("'{}'", r.get::<_, String>(0)))
        .collect();
    let expand = |sql: &str| -> String {
        let mut out = sql.replace("$instrument", &instruments.join(","));
        while let Some(start) = out.find("$__timeFilter(") {
            let end = start + out[start..].find(')').unwrap();
            let column = &out[start + "$__timeFilter(".len()..end];
            let expanded = format!("{column} BETWEEN to_timestamp(0) AND now() + interval '100 years'");
            out.replace_range(start..=end, &expanded);
        }
        while let Some(start) = out.find("$__timeGroupAlias(") {
            let end = start + out[start..].find(')').unwrap();
            let args: Vec<&str> = out[start + "$__timeGroupAlias(".len()..end].split(',').collect();
            let unit = if args[1].contains('h') { "hour" } else { "minute" };
            let expanded = format!("date_trunc('{unit}', {}) AS time", args[0].trim());
            out.replace_range(start..=end, &expanded);
        }
        assert!(!out.contains('$'), "an unexpanded macro: {out}");
        out
    };
    for (title, sql) in queries {
        let rows = db.query(expand(&sql).as_str(), &[]).unwrap_or_else(|e| panic!("{title}: {e}\n{sql}"));
        assert!(!rows.is_empty(), "{title}: no rows\n{sql}");
    }
}

/// The API's `/v1/history/...` endpoints answer from the database: pagination, the windows before an
/// alert, daily counts, top instruments, and 4xx for bad input.
fn api_answers_from_the_history(pg: &Postgres, input: &Path, file: &[serde_json::Value]) {
    let port = free_ports(1);
    let child = cmd()
        .args(["run", "--input"])
        .arg(input)
        .args(["--api-addr", &format!("127.0.0.1:{port}")])
        .envs(util::BUSY_ALERTS)
        .env("LOBSENTRY__STORE__URL", pg.url())
        .env("LOBSENTRY__STORE__PASSWORD_ENV", "LOBSENTRY_TEST_PG_PASSWORD")
        .env("LOBSENTRY_TEST_PG_PASSWORD", "pw-store")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = util::Guard(child);
    let get = |path: &str| -> (u16, serde_json::Value) {
        let (status, body) = util::http_get(port, path).unwrap_or((0, String::new()));
        (status, serde_json::from_str(&body).unwrap_or_default())
    };
    util::wait_for("the API", Duration::from_secs(60), || get("/v1/history/top").0 == 200);
    let sym = file[0]["instrument"].as_str().unwrap();
    let mine: Vec<&serde_json::Value> = file.iter().filter(|a| a["instrument"] == sym).collect();
    let (status, page) = get(&format!("/v1/history/alerts?instrument={sym}&limit=1"));
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["alerts"][0]["window_end_ns"], mine[0]["window_end_ns"], "{page}");
    let mut seen = 0;
    let mut offset = Some(0);
    while let Some(o) = offset.and_then(|o: u64| (o < 1000).then_some(o)) {
        let (_, page) = get(&format!("/v1/history/alerts?instrument={sym}&limit=1&offset={o}"));
        seen += page["count"].as_u64().unwrap();
        offset = page["next_offset"].as_u64();
    }
    assert_eq!(seen as usize, mine.len(), "pages cover every alert once");
    let id = format!("{}%7C{}%7C{}", sym, mine[0]["window_end_ns"], mine[0]["model"].as_str().unwrap());
    let (status, context) = get(&format!("/v1/history/alerts/{id}/windows?count=3"));
    assert_eq!(status, 200, "{context}");
    let windows = context["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 3);
    assert_eq!(windows[2]["window_end_ns"], mine[0]["window_end_ns"], "the last window is the alert's");
    assert!(windows[2]["features"]["events"].as_f64().is_some());
    let (_, counts) = get("/v1/history/counts");
    let total: u64 = counts["counts"].as_array().unwrap().iter().map(|c| c["alerts"].as_u64().unwrap()).sum();
    assert_eq!(total as usize, file.len());
    let (_, top) = get("/v1/history/top?limit=1");
    assert_eq!(top["top"].as_array().unwrap().len(), 1);
    for bad in ["/v1/history/alerts?limit=0", "/v1/history/alerts?from=x", "/v1/history/top?limit=5000"] {
        assert_eq!(get(bad).0, 400, "{bad}");
    }
    assert_eq!(get("/v1/history/alerts/nope/windows").0, 404);
    assert_eq!(get("/v1/history/nothing").0, 404);
}

impl Postgres {
    fn pg_ctl(&self, action: &str) {
        let mut c = as_owner(&pg_bin().join("pg_ctl"));
        c.arg("-D").arg(&self.data).arg("-l").arg(self.data.join("log"));
        if action == "start" {
            c.arg("-o").arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
                self.port,
                self.data.display()
            ));
        }
        let out = c.args(["-w", "-m", "fast", action]).stdout(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "pg_ctl {action}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// The database going away mid-run pauses the writer (retries with backoff), nothing is lost: once
/// it is back, the table holds every alert of the run, each once.
#[test]
fn a_database_outage_mid_run_loses_no_alert() {
    let dir = TempDir::new("store-outage");
    let pg = Postgres::start(&dir, "pw-outage");
    let alerts = dir.path("alerts.jsonl");
    let child = cmd()
        .args(["run", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/live.toml"))
        .envs(util::BUSY_ALERTS)
        .env("LOBSENTRY__METRICS__ENABLED", "false")
        .env("LOBSENTRY__GENERATOR__REALTIME_SPEED", "20")
        .env("LOBSENTRY__GENERATOR__INSTRUMENTS", "6")
        .env("LOBSENTRY__DETECT__ALERTS", alerts.display().to_string())
        .env("LOBSENTRY__STORE__URL", pg.url())
        .env("LOBSENTRY__STORE__PASSWORD_ENV", "LOBSENTRY_TEST_PG_PASSWORD")
        .env("LOBSENTRY_TEST_PG_PASSWORD", "pw-outage")
        .env("LOBSENTRY__STORE__CONNECT_BACKOFF", "200ms")
        .env("LOBSENTRY__STORE__BATCH", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = util::Guard(child);
    let lines = || std::fs::read_to_string(&alerts).map(|t| t.lines().count()).unwrap_or(0);
    util::wait_for("alerts", Duration::from_secs(120), || lines() >= 2);
    pg.pg_ctl("stop");
    let during = lines();
    util::wait_for("alerts while the database is down", Duration::from_secs(120), || lines() >= during + 2);
    pg.pg_ctl("start");
    std::thread::sleep(Duration::from_secs(2));
    let pid = guard.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut guard = guard;
    let started = Instant::now();
    while guard.0.try_wait().unwrap().is_none() {
        assert!(started.elapsed() < Duration::from_secs(60), "the run did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut err = String::new();
    use std::io::Read;
    guard.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("store:") && err.contains("retrying"), "the outage was seen and retried: {err}");
    let want: std::collections::BTreeSet<String> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| {
            let a: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{}|{}|{}", a["instrument"].as_str().unwrap(), a["window_end_ns"], a["model"].as_str().unwrap())
        })
        .collect();
    let mut db = pg.client("pw-outage");
    let got: std::collections::BTreeSet<String> =
        db.query("SELECT id FROM alerts", &[]).unwrap().iter().map(|r| r.get::<_, String>(0)).collect();
    assert_eq!(got, want, "every alert of the run is in the table");
}
