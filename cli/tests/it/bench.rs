//! `chronos bench` end to end, briefly: the harness starts `chronos up`,
//! drives it, measures the limits and checks nothing was lost.

use chronos_pg_harness::PgCluster;

#[test]
fn a_short_bench_prints_the_table_and_finds_every_acknowledged_event() {
    let pg = PgCluster::start().unwrap();
    let dir = tempfile::Builder::new().prefix("chronos-bench-it-").tempdir_in("/tmp").unwrap();
    let data = dir.path().join("data");
    let report = dir.path().join("report.md");
    let out = super::chronos(
        &[
            "bench",
            "--data-dir",
            data.to_str().unwrap(),
            "--database-url",
            &pg.url("postgres"),
            "--hashers",
            "2,1",
            "--ingests",
            "1",
            "--batch",
            "200",
            "--connections",
            "4",
            "--duration",
            "1",
            "--warmup",
            "0",
            "--reps",
            "1",
            "--overload-connections",
            "16",
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let md = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(std::fs::read_to_string(&report).unwrap(), md);
    for row in [
        "Log hash: sha256.",
        "| raw binary COPY into `logs` (1 client, no hashing) |",
        "| leaf hashes + batch roots, 1 core |",
        "| ring, 1 producer → 1 consumer thread |",
        "| **end-to-end, max load** (200 events/body, 4 connections) |",
        "| end-to-end / raw COPY into `logs` |",
        "| p99 ack latency at 50% load |",
        "| hashers 1 | 1 | 1 | 200 | 4 |",
        "| hasher-1 |",
        "| vault-writer |",
    ] {
        assert!(md.contains(row), "no {row:?} in\n{md}");
    }
    // The harness compared what it was told against the database: every
    // acknowledged event is one new row. Some were sent, so the count is real.
    let line = md.lines().find(|l| l.starts_with("Nothing lost:")).unwrap_or_else(|| panic!("{md}"));
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_eq!(numbers[0], numbers[1], "{line}");
    assert!(numbers[0] >= 200, "{line}");
    // Sizing: each stored event grew `logs` and wrote WAL (its payload in
    // `batches` at least), measured, not zero.
    for what in ["| `logs` (UNLOGGED: rows, index) |", "| WAL |"] {
        let row = md.lines().find(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what:?} in\n{md}"));
        let bytes: f64 = row.split('|').nth(2).and_then(|c| c.trim().parse().ok()).unwrap_or_else(|| panic!("{row}"));
        assert!(bytes > 50.0, "{row}");
    }
    // A data directory that was given is kept.
    assert!(data.join("chronos.toml").exists());
}

#[test]
fn a_short_bridge_bench_measures_each_server_with_every_request_answered() {
    let dir = tempfile::Builder::new().prefix("chronos-bench-bridge-it-").tempdir_in("/tmp").unwrap();
    let report = dir.path().join("bridge.md");
    let out = super::chronos(
        &[
            "bench-bridge",
            "--duration",
            "1",
            "--threads",
            "2",
            "--events",
            "2000",
            "--report",
            report.to_str().unwrap(),
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let md = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(std::fs::read_to_string(&report).unwrap(), md);
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| NTP") || l.starts_with("| Roughtime") || l.starts_with("| inclusion"))
        .collect();
    assert_eq!(rows.len(), 9, "{md}");
    for server in ["| Chronos bridge |", "| chronyd", "| roughenough-server 2.2"] {
        assert!(rows.iter().any(|r| r.contains(server)), "{server} in\n{md}");
    }
    for r in rows {
        let cells: Vec<&str> = r.split('|').map(str::trim).collect();
        // | what | server | load | answers/s | per CPU-s | busy | p50 | p99 | unanswered |
        let answers: f64 = cells[4].parse().unwrap_or_else(|_| panic!("{r}"));
        assert!(answers > 0.0, "no answers: {r}");
        assert_eq!(cells[9], "0", "every request answered: {r}");
    }
}
