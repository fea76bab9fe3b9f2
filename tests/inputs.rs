//! Malformed input of every reader goes to the dead-letter file, with file:line and a reason, and
//! the run goes on.

use crate::util::{self, TempDir};

fn dead_letters(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn every_reader_rejects_bad_lines_with_their_location() {
    let dir = TempDir::new("malformed");
    let csv = dir.path("events.csv");
    std::fs::write(
        &csv,
        "ts_ns,instrument,type,order_id,size,price,side\n\
         1000,AAA,1,1,100,5000,1\n\
         1001,AAA,1,2,-5,5000,1\n\
         1002,AAA,9,3,5,5000,1\n\
         not,a,line\n\
         1003,AAA,3,1,100,5000,1\n",
    )
    .unwrap();
    let jsonl = dir.path("events.jsonl");
    std::fs::write(
        &jsonl,
        "{\"ts_ns\":1000,\"instrument\":\"BBB\",\"type\":1,\"order_id\":1,\"size\":10,\"price\":7,\"side\":-1}\n\
         {\"ts_ns\":1001,\"instrument\":\"BBB\",\"type\":1\n\
         {\"ts_ns\":1002,\"instrument\":\"BBB\",\"type\":1,\"order_id\":2,\"size\":10,\"price\":7,\"side\":3}\n",
    )
    .unwrap();
    let lobster = dir.path("CCC_2012-06-21_34200000_57600000_message_5.csv");
    std::fs::write(&lobster, "34200.1,1,5,100,1000000,1\n34200.2,1,6,100,abc,1\n34200.3,3,5,100,1000000,1\n").unwrap();
    let out = dir.path("out.csv");
    let dlq = dir.path("dead.jsonl");
    let dlq_text = format!("{:?}", dlq.display().to_string());
    let config = util::config(
        None,
        2,
        vec![csv.clone(), jsonl.clone(), lobster.clone()],
        &out,
        vec![("LOBSENTRY__SINK__DEAD_LETTER", dlq_text.as_str())],
    );
    let report = util::run(&config);
    assert_eq!(report.events, 2 + 1 + 2);
    assert_eq!(report.rejected, 3 + 2 + 1);
    let mut got: Vec<(String, u64, String)> = dead_letters(&dlq)
        .iter()
        .map(|v| {
            (
                v["file"].as_str().unwrap().to_string(),
                v["line"].as_u64().unwrap(),
                v["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let at = |p: &std::path::Path, line: u64| -> (String, u64) { (p.display().to_string(), line) };
    let locations: Vec<(String, u64)> = got.iter().map(|g| (g.0.clone(), g.1)).collect();
    for expected in [at(&csv, 3), at(&csv, 4), at(&csv, 5), at(&jsonl, 2), at(&jsonl, 3), at(&lobster, 2)] {
        assert!(locations.contains(&expected), "{expected:?} not in {locations:?}");
    }
    let reasons: Vec<&str> = got.iter().map(|g| g.2.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("negative size")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("expected 7 fields")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("invalid JSON")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("`price`")), "{reasons:?}");
    // The valid events still made windows: AAA, BBB and CCC each have one.
    let windows = std::fs::read_to_string(&out).unwrap();
    for sym in ["AAA,", "BBB,", "CCC,"] {
        assert!(windows.lines().any(|l| l.starts_with(sym)), "{sym} missing:\n{windows}");
    }
}

#[test]
fn unknown_orders_are_counted_not_fatal() {
    let dir = TempDir::new("unknown-orders");
    let csv = dir.path("events.csv");
    std::fs::write(
        &csv,
        "ts_ns,instrument,type,order_id,size,price,side\n\
         1000,AAA,3,77,100,5000,1\n\
         1001,AAA,1,1,100,5000,1\n\
         1002,AAA,2,1,500,5000,1\n",
    )
    .unwrap();
    let out = dir.path("out.csv");
    let report = util::run(&util::config(None, 1, vec![csv], &out, vec![]));
    assert_eq!(report.events, 3);
    assert_eq!(report.book.unknown_order, 1);
    assert_eq!(report.book.over_cancel, 1);
    assert_eq!(report.book.missing_level, 1);
}

/// Issue 13's reproducers: CR-only line endings, a byte-order mark, a LOBSTER time that overflows the
/// day, a line 10 hours in the future and an endless line.
#[test]
fn hostile_files_lose_nothing_silently() {
    let dir = TempDir::new("hostile");
    let out = dir.path("out.csv");
    // Old Mac line endings and a byte-order mark: every line is read.
    let cr = dir.path("cr.csv");
    std::fs::write(
        &cr,
        "\u{feff}ts_ns,instrument,type,order_id,size,price,side\r1000,A,1,1,10,500,1\r2000,A,1,2,10,500,1\r",
    )
    .unwrap();
    let report = util::run(&util::config(None, 1, vec![cr], &out, vec![]));
    assert_eq!((report.events, report.rejected), (2, 0));
    // A LOBSTER time past u64 nanoseconds is rejected, not wrapped.
    let lobster = dir.path("X_2012-06-21_34200000_57600000_message_5.csv");
    std::fs::write(
        &lobster,
        "34200.1,1,5,100,1000000,1\n18446744073.709551615,1,2,100,1000000,1\n34200.3,3,5,100,1000000,1\n",
    )
    .unwrap();
    let report = util::run(&util::config(None, 1, vec![lobster], &out, vec![]));
    assert_eq!((report.events, report.rejected), (2, 1));
    assert!(report.first_rejected[0].reason.contains("time"), "{}", report.first_rejected[0]);
    // One line 10 hours ahead among 10,001: it goes to the dead letters and nothing is late.
    let events = util::events(&util::market(10_000, 3, 5), 0, 0.0);
    let glitch = dir.path("glitch.csv");
    let mut text = String::from("ts_ns,instrument,type,order_id,size,price,side\n");
    for (i, e) in events.iter().enumerate() {
        let mut line = String::new();
        lobsentry_operators::source::decode::write_csv_line(e, &mut line);
        text.push_str(&line);
        text.push('\n');
        if i == 5_000 {
            let mut future = *e;
            future.ts_ns += 36_000_000_000_000;
            let mut line = String::new();
            lobsentry_operators::source::decode::write_csv_line(&future, &mut line);
            text.push_str(&line);
            text.push('\n');
        }
    }
    // And a 3 MiB line: dead-lettered (its start kept), not held in memory.
    text.push_str(&"7".repeat(3 << 20));
    text.push('\n');
    std::fs::write(&glitch, text).unwrap();
    let dlq = dir.path("dead.jsonl");
    let dlq_text = format!("{:?}", dlq.display().to_string());
    let config = util::config(None, 2, vec![glitch], &out, vec![("LOBSENTRY__SINK__DEAD_LETTER", &dlq_text)]);
    let report = util::run(&config);
    assert_eq!(report.late, 0, "one glitch must not make the rest of the file late");
    assert_eq!((report.events, report.rejected), (10_000, 2));
    let dead = dead_letters(&dlq);
    assert!(dead.iter().any(|d| d["reason"].as_str().unwrap().contains("max-time-jump")), "{dead:?}");
    assert!(dead.iter().any(|d| d["reason"].as_str().unwrap().contains("longer than")), "{dead:?}");
}

#[test]
fn a_lobster_file_named_otherwise_reads_with_a_declared_format() {
    let dir = TempDir::new("lobster-named-otherwise");
    let text =
        "34200.1,1,5,100,1000000,1\n34200.2,1,6,200,1000100,-1\n34201.3,4,5,50,1000000,1\n34202.4,3,6,200,1000100,-1\n";
    let named = dir.path("Y_2012-06-21_34200000_57600000_message_5.csv");
    let plain = dir.path("day1.csv");
    std::fs::write(&named, text).unwrap();
    std::fs::write(&plain, text).unwrap();
    let (out_named, out_plain) = (dir.path("named.csv"), dir.path("plain.csv"));
    let report = util::run(&util::config(None, 1, vec![named], &out_named, vec![]));
    assert_eq!((report.events, report.rejected), (4, 0));
    // Named otherwise it is read as interchange CSV: every line rejected, with a hint saying how.
    let report = util::run(&util::config(None, 1, vec![plain.clone()], &out_plain, vec![]));
    assert_eq!((report.events, report.rejected), (0, 4));
    assert!(report.first_rejected[0].reason.contains("source.format = \"lobster\""), "{}", report.first_rejected[0]);
    // Declared, with the instrument and the day the name would have given: the same windows.
    let env = vec![
        ("LOBSENTRY__SOURCE__FORMAT", "\"lobster\""),
        ("LOBSENTRY__SOURCE__INSTRUMENT", "\"Y\""),
        ("LOBSENTRY__SOURCE__DATE", "\"2012-06-21\""),
    ];
    let report = util::run(&util::config(None, 1, vec![plain], &out_plain, env));
    assert_eq!((report.events, report.rejected), (4, 0));
    assert_eq!(std::fs::read(&out_named).unwrap(), std::fs::read(&out_plain).unwrap());
}
