//! Verification rate against the machine's own read rate, in one run.
//!
//! Builds a ledger of realistic events in a private PostgreSQL cluster,
//! then measures (1) the raw read of exactly the rows the verifier reads:
//! the same binary `COPY ... TO STDOUT` statements on two connections at
//! once, bytes counted and dropped; and (2) `chronos_verify::verify_database`
//! on the same database. Each is run several times; the table shows the
//! median and the ratio. Run with:
//!
//! ```text
//! cargo bench -p chronos-verify --bench verify
//! CHRONOS_BENCH_EVENTS=2000000 CHRONOS_BENCH_BATCH=1000 cargo bench -p chronos-verify --bench verify
//! ```
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Instant;

use chronos_ledger::HashAlg;
use chronos_pg_harness::PgCluster;
use chronos_verify::{BATCHES_COPY, LOGS_COPY, NoProgress, Options};
use futures_util::StreamExt as _;

#[path = "common/fixture.rs"]
mod fixture;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(conn);
    c
}

/// Reads one COPY to the end; returns its bytes.
async fn drain(url: String, query: &'static str) -> u64 {
    let c = connect(&url).await;
    let stream = c.copy_out(query).await.unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        n += chunk.unwrap().len() as u64;
    }
    n
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and test discovery
    }
    let events = env_u64("CHRONOS_BENCH_EVENTS", 1_000_000);
    let batch = env_u64("CHRONOS_BENCH_BATCH", 1000);
    let runs = env_u64("CHRONOS_BENCH_RUNS", 5) as usize;
    let alg = std::env::var("CHRONOS_BENCH_HASH").ok().and_then(|a| HashAlg::from_name(&a)).unwrap_or(HashAlg::Blake3);
    let pg = PgCluster::start().unwrap();
    let url = pg.url("postgres");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let t = Instant::now();
    let spec = fixture::Spec { events, batch, alg, key: None, checkpoint_every: 8 };
    let signer = rt.block_on(async { fixture::build(connect(&url).await, &spec).await });
    pg.psql("postgres", "VACUUM ANALYZE").unwrap();
    let table_mb: f64 = pg
        .psql("postgres", "SELECT (pg_table_size('batches') + pg_table_size('logs_p0')) / 1e6")
        .unwrap()
        .parse()
        .unwrap();
    eprintln!(
        "built {events} events in batches of {batch} ({table_mb:.0} MB of tables) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let opts = Options { trusted_key: Some(signer.verifier()), ..Options::default() };
    let mut raw_s = Vec::new();
    let mut verify_s = Vec::new();
    let mut raw_bytes = 0;
    let mut report = None;
    for _ in 0..runs {
        let t = Instant::now();
        let (b, l) = rt.block_on(async {
            let b = tokio::spawn(drain(url.clone(), BATCHES_COPY));
            let l = tokio::spawn(drain(url.clone(), LOGS_COPY));
            (b.await.unwrap(), l.await.unwrap())
        });
        raw_s.push(t.elapsed().as_secs_f64());
        raw_bytes = b + l;
        let t = Instant::now();
        let r = chronos_verify::verify_database(&url, &opts, &NoProgress).unwrap();
        verify_s.push(t.elapsed().as_secs_f64());
        assert_eq!(r.status, chronos_verify::Status::Intact, "{:?}", r.findings);
        assert_eq!(r.summary.logs, events);
        report = Some(r);
    }
    let r = report.unwrap();
    // Each verify run is paired with the raw read just before it: the
    // machine's state drifts, the pair shares it.
    let mut pairs: Vec<f64> = raw_s.iter().zip(&verify_s).map(|(r, v)| r / v).collect();
    let pair_median = median(&mut pairs);
    let (lo, hi) = (pairs[0], pairs[pairs.len() - 1]);
    let (raw, ver) = (median(&mut raw_s), median(&mut verify_s));
    let n = events as f64;
    println!();
    println!(
        "verification rate vs. raw binary COPY read of the same rows ({events} events, {} batches, hash {}, {runs} runs, median)",
        r.summary.batches,
        alg.name()
    );
    println!("| measure | seconds | logs/s | MB/s | vs raw |");
    println!("|---|---|---|---|---|");
    println!(
        "| raw COPY read (batches + logs, 2 connections) | {raw:.3} | {:.0} | {:.1} | 100% |",
        n / raw,
        raw_bytes as f64 / 1e6 / raw
    );
    println!(
        "| chronos verify (all checks, {} checkpoints) | {ver:.3} | {:.0} | {:.1} | {:.0}% |",
        r.summary.checkpoints,
        n / ver,
        raw_bytes as f64 / 1e6 / ver,
        100.0 * raw / ver
    );
    println!("(MB/s: bytes of the COPY streams per second, the same bytes for both rows)");
    println!(
        "verify / raw, paired runs: median {:.0}%, min {:.0}%, max {:.0}%",
        100.0 * pair_median,
        100.0 * lo,
        100.0 * hi
    );
}
