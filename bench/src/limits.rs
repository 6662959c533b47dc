//! The machine's own limits, measured on the same data in the same run:
//! raw binary COPY of the rows Chronos stored, leaf hashing and batch
//! roots with the log's hash function, ring throughput and memcpy.
//!
//! Each is measured `reps` times and the median kept.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chronos_ledger::{Hash, TreeHasher, payload, tree};
use futures_util::{SinkExt as _, StreamExt as _, pin_mut};
use rayon::prelude::*;

/// A measured rate.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rate {
    /// Events (rows, leaves) per second.
    pub events: f64,
    /// Bytes per second (what the row counts: see each measurement).
    pub bytes: f64,
    pub secs: f64,
}

impl Rate {
    fn of(events: u64, bytes: u64, secs: f64) -> Rate {
        Rate { events: events as f64 / secs, bytes: bytes as f64 / secs, secs }
    }
}

/// The median of `reps` runs of `f`, by time.
fn median_of(reps: usize, mut f: impl FnMut() -> Rate) -> Rate {
    let mut v: Vec<Rate> = (0..reps.max(1)).map(|_| f()).collect();
    v.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    v[v.len() / 2]
}

/// Most rows the raw COPY copies (it holds them in memory, ~0.7 GB).
pub const MAX_COPY_ROWS: u64 = 2_000_000;

/// Schema the raw COPY's tables live in, dropped at the end.
pub const SCRATCH_SCHEMA: &str = "chronos_bench";

/// Raw binary COPY of the rows in leaves `lo..hi` (and their batches),
/// best of `reps` runs,
/// copied out of the log first, into tables built `LIKE` the log's (same
/// columns, constraints, indexes, partitioning and logging): one client,
/// one transaction per run, no hashing. `logs` is the limit for the
/// end-to-end rate; `logs_and_batches` adds the batch rows (their
/// payloads are written to the WAL) as the vault writer writes both.
#[derive(Debug, Clone, Copy, Default)]
pub struct CopyLimits {
    pub rows: u64,
    pub batches: u64,
    /// Rate in rows of `logs`; bytes are event bytes.
    pub logs: Rate,
    pub logs_and_batches: Rate,
}

async fn copy_out(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<Bytes>, tokio_postgres::Error> {
    let stream = client.copy_out(sql).await?;
    pin_mut!(stream);
    let mut chunks = Vec::new();
    while let Some(c) = stream.next().await {
        chunks.push(c?);
    }
    Ok(chunks)
}

async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &str,
    chunks: &[Bytes],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in::<_, Bytes>(sql).await?;
    pin_mut!(sink);
    for c in chunks {
        sink.feed(c.clone()).await?;
    }
    sink.finish().await
}

pub async fn raw_copy(url: &str, lo: u64, hi: u64, reps: usize) -> Result<CopyLimits, tokio_postgres::Error> {
    let (mut client, conn) = chronos_tls::pg::connect(url).await?;
    let driver = tokio::spawn(conn);
    let s = SCRATCH_SCHEMA;
    // Partitions as the vault writer makes them: 2^26 leaves each, UNLOGGED.
    const SPAN: u64 = 1 << 26;
    let mut ddl = format!(
        "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};
         CREATE TABLE {s}.logs (LIKE public.logs INCLUDING ALL) PARTITION BY RANGE (leaf_index);
         CREATE TABLE {s}.batches (LIKE public.batches INCLUDING ALL);"
    );
    for p in lo / SPAN..=hi.saturating_sub(1) / SPAN {
        ddl.push_str(&format!(
            "CREATE UNLOGGED TABLE {s}.logs_p{p} PARTITION OF {s}.logs FOR VALUES FROM ({}) TO ({});",
            p * SPAN,
            (p + 1) * SPAN
        ));
    }
    client.batch_execute(&ddl).await?;
    let range = |table: &str, column: &str| {
        format!(
            "COPY (SELECT * FROM public.{table} WHERE {column} >= {lo} AND {column} < {hi}) TO STDOUT (FORMAT binary)"
        )
    };
    let logs = copy_out(&client, &range("logs", "leaf_index")).await?;
    let batches = copy_out(&client, &range("batches", "first_leaf")).await?;
    let event_bytes: i64 = client
        .query_one(
            "SELECT coalesce(sum(octet_length(event)), 0)::bigint FROM public.logs WHERE leaf_index >= $1 AND leaf_index < $2",
            &[&(lo as i64), &(hi as i64)],
        )
        .await?
        .get(0);
    let event_bytes = event_bytes as u64;
    let mut rows = 0;
    let mut nbatches = 0;
    // The two variants alternate, so drift on a shared machine hits both;
    // the fastest run of each is the limit (the demanding choice: it makes
    // the end-to-end ratio smaller, never larger).
    let mut runs = [f64::MAX; 2];
    for _ in 0..reps.max(1) {
        for (i, with_batches) in [false, true].into_iter().enumerate() {
            client.batch_execute(&format!("TRUNCATE {s}.logs, {s}.batches; CHECKPOINT")).await?;
            let t = Instant::now();
            let tx = client.transaction().await?;
            rows = copy_in(&tx, &format!("COPY {s}.logs FROM STDIN (FORMAT binary)"), &logs).await?;
            if with_batches {
                nbatches = copy_in(&tx, &format!("COPY {s}.batches FROM STDIN (FORMAT binary)"), &batches).await?;
            }
            tx.commit().await?;
            runs[i] = runs[i].min(t.elapsed().as_secs_f64());
        }
    }
    client.batch_execute(&format!("DROP SCHEMA {s} CASCADE")).await?;
    drop(client);
    let _ = driver.await;
    Ok(CopyLimits {
        rows,
        batches: nbatches,
        logs: Rate::of(rows, event_bytes, runs[0]),
        logs_and_batches: Rate::of(rows, event_bytes, runs[1]),
    })
}

/// Hashing limits on batches of events.
#[derive(Debug, Clone, Copy, Default)]
pub struct HashLimits {
    /// Leaf hashes and the batch root, one core.
    pub one_core: Rate,
    /// The same on every core (rayon, one batch per task).
    pub all_cores: Rate,
    pub cores: usize,
    /// One core, plus the canonical payload (zstd), which the hasher
    /// process also makes: what a hasher can do at best.
    pub one_core_with_payload: Rate,
}

fn hash_one(h: &TreeHasher, batch: &[&[u8]]) -> Hash {
    let leaves: Vec<Hash> = batch.iter().map(|e| h.leaf(e)).collect();
    tree::root(h, &leaves)
}

pub fn hashing(h: &TreeHasher, events: &[Vec<u8>], batch: usize, reps: usize) -> HashLimits {
    let refs: Vec<&[u8]> = events.iter().map(|e| e.as_slice()).collect();
    let batches: Vec<&[&[u8]]> = refs.chunks(batch.max(1)).collect();
    let n = refs.len() as u64;
    let bytes: u64 = refs.iter().map(|e| e.len() as u64).sum();
    let timed = |f: &dyn Fn()| {
        let t = Instant::now();
        f();
        Rate::of(n, bytes, t.elapsed().as_secs_f64())
    };
    let one_core = median_of(reps, || {
        timed(&|| {
            for b in &batches {
                std::hint::black_box(hash_one(h, b));
            }
        })
    });
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let pool = rayon::ThreadPoolBuilder::new().num_threads(cores).build().expect("building a thread pool");
    let all_cores = median_of(reps, || {
        timed(&|| {
            pool.install(|| {
                batches.par_iter().for_each(|b| {
                    std::hint::black_box(hash_one(h, b));
                })
            })
        })
    });
    let one_core_with_payload = median_of(reps, || {
        timed(&|| {
            for b in &batches {
                std::hint::black_box(hash_one(h, b));
                let refs: Vec<payload::EventRef<'_>> =
                    b.iter().map(|e| payload::EventRef { bytes: e, claimed_time_ns: Some(1) }).collect();
                std::hint::black_box(payload::encode(&refs));
            }
        })
    });
    HashLimits { one_core, all_cores, cores, one_core_with_payload }
}

/// Ring throughput: one producer thread writes records of `record_bytes`
/// (a body's worth of events), one consumer thread reads each in place,
/// touching every cache line, and releases it. Events counted are
/// `events_per_record` per record.
pub fn ring(record_bytes: usize, events_per_record: u32, reps: usize) -> Result<Rate, crate::BenchError> {
    let name = format!("bench-{}", std::process::id());
    let _ = chronos_ipc::ring::remove_stale(&name);
    let max_record = (record_bytes as u64).next_power_of_two().max(4096);
    chronos_ipc::ring::create(&name, (64u64 << 20).max(8 * max_record), max_record)?;
    let result = (|| {
        let total: u64 = (512u64 << 20).max(16 * record_bytes as u64);
        let records = total / record_bytes as u64;
        let mut rates = Vec::new();
        for _ in 0..reps.max(1) {
            let mut consumer = chronos_ipc::Consumer::attach(&name)?;
            let mut producer = chronos_ipc::Producer::attach(&name)?;
            let reader = std::thread::spawn(move || -> Result<u64, chronos_ipc::RingError> {
                let mut seen = 0u64;
                let mut sum = 0u64;
                while seen < records {
                    consumer.wait_linger(Some(Instant::now() + Duration::from_secs(5)), Duration::from_micros(20))?;
                    let batch = consumer.poll(1024)?;
                    for r in batch.iter() {
                        sum = sum.wrapping_add(r.payload.iter().step_by(64).map(|&b| u64::from(b)).sum::<u64>());
                        seen += 1;
                    }
                    consumer.release();
                }
                Ok(sum)
            });
            let src = vec![0x5au8; record_bytes];
            let t = Instant::now();
            for _ in 0..records {
                let mut g = producer
                    .reserve(1, record_bytes, Instant::now() + Duration::from_secs(5))
                    .map_err(|e| std::io::Error::other(format!("bench ring: {e}")))?;
                g.payload_mut().copy_from_slice(&src);
                g.commit();
            }
            std::hint::black_box(reader.join().map_err(|_| std::io::Error::other("ring reader panicked"))??);
            let secs = t.elapsed().as_secs_f64();
            rates.push(Rate::of(records * u64::from(events_per_record), records * record_bytes as u64, secs));
        }
        rates.sort_by(|a, b| a.secs.total_cmp(&b.secs));
        Ok(rates[rates.len() / 2])
    })();
    let _ = chronos_ipc::ring::remove(&name);
    result
}

/// memcpy bandwidth on one core (64 MiB, best of `reps`): bytes per second.
pub fn memcpy(reps: usize) -> f64 {
    let src = vec![1u8; 64 << 20];
    let mut dst = vec![0u8; 64 << 20];
    let mut best = f64::MAX;
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&dst);
        best = best.min(t.elapsed().as_secs_f64());
    }
    src.len() as f64 / best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_limits_are_measured_on_every_event() {
        let c = crate::events::Corpus::new(2000, 0, 1);
        let h = TreeHasher::unkeyed(chronos_ledger::HashAlg::Blake3);
        let l = hashing(&h, c.events(), 100, 1);
        assert!(l.one_core.events > 0.0 && l.all_cores.events > 0.0 && l.one_core_with_payload.events > 0.0);
        let bytes: usize = c.events().iter().map(Vec::len).sum();
        let ratio = l.one_core.bytes / l.one_core.events;
        assert!((ratio - bytes as f64 / 2000.0).abs() < 1e-6, "bytes per event {ratio}");
    }

    #[test]
    fn the_ring_moves_every_record() {
        let r = ring(300 * 100, 100, 1).unwrap();
        assert!(r.events > 0.0 && r.bytes > 0.0);
        assert!((r.events / r.bytes - 100.0 / 30_000.0).abs() < 1e-9);
    }
}
