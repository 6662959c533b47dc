//! chronos-bench: measures a running Chronos the way a user sees it, next
//! to the machine's own limits measured in the same run.
//!
//! What it does: generates realistic log events ([`events`]), sends them to
//! `POST /ingest` like Vector's http sink ([`load`]) at maximum load, at
//! half of it and in overload, records durable-ack throughput and latency,
//! samples every process's CPU time and memory ([`procs`]), measures raw
//! binary COPY of the same rows, hashing on one and all cores, ring and
//! memcpy throughput ([`limits`]), varies the topology and traffic shape,
//! checks that every acknowledged event is stored exactly once, and
//! renders one report ([`report`]).
//!
//! What it does not do: start or stop Chronos. A [`Launcher`] does (the
//! `chronos bench` command starts `chronos up` as a child), so the harness
//! sees Chronos only from outside: HTTP, `/proc` and SQL.

pub mod events;
pub mod limits;
pub mod load;
pub mod procs;
pub mod report;
pub mod serve;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chronos_ledger::TreeHasher;

use crate::events::{Corpus, Framing};
use crate::load::{Pace, Run, Shape, Target};
use crate::procs::{Members, Sampler, Usage};

/// The harness's own process in the CPU and memory table: it renders and
/// sends the load, and holds the rows of the raw COPY (up to ~0.7 GB).
pub const LOAD_GENERATOR: &str = "chronos bench (load generator, raw COPY rows)";

/// Why a benchmark run failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Chronos could not be started or stopped.
    #[error("starting Chronos: {0}")]
    Launch(String),
    /// Chronos misbehaved under load (refused a valid body, lost an ack).
    #[error(transparent)]
    Load(#[from] load::LoadError),
    /// Acknowledged events are missing from the database, or stored twice.
    #[error("acknowledged events do not match the database: {0}")]
    Lost(String),
    #[error("PostgreSQL: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("ring: {0}")]
    Ring(#[from] chronos_ipc::RingError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running Chronos, as the launcher reports it.
#[derive(Debug, Clone)]
pub struct Stack {
    pub addr: SocketAddr,
    pub token: Option<String>,
    pub database_url: String,
    /// Named process groups to sample ("ingest-0", "postgres", …).
    pub processes: Vec<(String, Members)>,
}

/// Starts and stops Chronos for the harness.
pub trait Launcher {
    /// Starts Chronos with this many hasher and ingest processes (stopping
    /// a running one first) and returns once it is started; the harness
    /// then waits for readiness itself.
    fn start(&mut self, hashers: u16, ingests: u16) -> Result<Stack, BenchError>;
    /// Stops it in order, as Ctrl-C would.
    fn stop(&mut self) -> Result<(), BenchError>;
}

/// What to run. The first value of each list is the baseline; every other
/// value is one point of the scaling sweep, varied alone.
#[derive(Debug, Clone)]
pub struct Options {
    pub hasher: TreeHasher,
    pub hashers: Vec<u16>,
    pub ingests: Vec<u16>,
    pub batch: Vec<usize>,
    pub connections: Vec<usize>,
    /// Find the maximum load by doubling the connections from
    /// `connections[0]` up to `search_max` until two steps in a row fail to
    /// beat the best by 5% (as Vector's adaptive concurrency grows while it
    /// pays), instead of taking `connections[0]` as given.
    pub search: bool,
    pub search_max: usize,
    pub framing: Framing,
    pub gzip: bool,
    pub warmup: Duration,
    pub duration: Duration,
    /// Connections of the overload phase.
    pub overload_connections: usize,
    /// Repetitions of each limit measurement (median kept).
    pub reps: usize,
    pub retry_initial: Duration,
}

/// One phase of traffic and what every process used during its window.
#[derive(Debug, Clone)]
pub struct Phase {
    pub label: String,
    pub hashers: u16,
    pub ingests: u16,
    pub shape: Shape,
    /// Offered bodies per second (open loop), if paced.
    pub offered: Option<f64>,
    pub run: Run,
    pub usage: std::collections::BTreeMap<String, Usage>,
}

impl Phase {
    /// CPU seconds per second of the window, summed over groups whose
    /// names start with `prefix`.
    pub fn cores(&self, prefix: &str) -> f64 {
        self.usage.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(_, u)| u.cpu_secs).sum::<f64>()
            / self.run.window_secs()
    }
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Results {
    pub max: Phase,
    pub half: Phase,
    pub overload: Phase,
    pub sweep: Vec<Phase>,
    /// The search for the maximum load, if made: one shorter phase per
    /// connection count tried.
    pub search: Vec<Phase>,
    /// End-to-end / raw COPY of every (max load, raw COPY) pair, ascending.
    pub ratios: Vec<f64>,
    pub copy: limits::CopyLimits,
    pub hashing: limits::HashLimits,
    pub ring: limits::Rate,
    pub memcpy: f64,
    /// Events acknowledged over the whole run, and found in the database.
    pub acked: u64,
    pub stored: u64,
    pub postgres_version: String,
    /// What the run's events cost PostgreSQL: storage and WAL.
    pub storage: Storage,
}

/// What the events stored over a run cost PostgreSQL, for sizing: the
/// growth of the tables and of the WAL between the start of the run and
/// its end, with the number of events stored meanwhile.
#[derive(Debug, Clone, Copy, Default)]
pub struct Storage {
    pub events: u64,
    /// WAL written (`pg_current_wal_lsn`), bytes; `logs` is UNLOGGED and
    /// writes none.
    pub wal: u64,
    /// `logs` (all partitions, with indexes and TOAST), bytes.
    pub logs: u64,
    /// The logged tables: `batches` (with the compressed payloads),
    /// `tiles`, `checkpoints`, `ingest_keys`, `control_log`, bytes.
    pub logged: u64,
}

impl Storage {
    pub fn per_event(bytes: u64, events: u64) -> f64 {
        if events == 0 { 0.0 } else { bytes as f64 / events as f64 }
    }
}

/// (WAL position, `logs` bytes, logged tables' bytes) now.
async fn storage_now(url: &str) -> Result<(u64, u64, u64), BenchError> {
    let row = connect(url)
        .await?
        .query_one(
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, \
                    (SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_partition_tree('logs')), \
                    (SELECT sum(pg_total_relation_size(t))::bigint FROM unnest(ARRAY['batches', 'tiles', \
                     'checkpoints', 'ingest_keys', 'control_log']::regclass[]) AS t)",
            &[],
        )
        .await?;
    let get = |i: usize| row.get::<_, Option<i64>>(i).unwrap_or(0).max(0) as u64;
    Ok((get(0), get(1), get(2)))
}

/// Progress lines go here (the command prints them to stderr).
pub type Progress<'a> = &'a dyn Fn(&str);

fn rt() -> Result<tokio::runtime::Runtime, BenchError> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// Runs the whole benchmark.
pub fn run(launcher: &mut dyn Launcher, o: &Options, say: Progress<'_>) -> Result<Results, BenchError> {
    let rt = rt()?;
    let (h0, i0, b0, c0) = (o.hashers[0], o.ingests[0], o.batch[0], o.connections[0]);
    let t0 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let corpus = Arc::new(Corpus::new(200_000, t0, 0xc0ffee));
    let shape = |batch: usize, connections: usize| Shape {
        batch,
        framing: o.framing,
        gzip: o.gzip,
        connections,
        retry_initial: o.retry_initial,
    };
    let mut phase_no = 0u64;
    let mut all_acks = Vec::new();
    let mut phase = |label: &str, stack: &Stack, h: u16, i: u16, shape: Shape, pace: Pace| {
        phase_no += 1;
        say(&format!("{label}: {} s warm-up, {} s measured", o.warmup.as_secs(), o.duration.as_secs()));
        let (run, usage) = rt.block_on(measure(stack, &shape, corpus.clone(), pace, o, phase_no << 40))?;
        all_acks.extend(run.acks.iter().copied());
        let offered = match pace {
            Pace::Rate(r) => Some(r),
            Pace::Max => None,
        };
        say(&format!(
            "  {:.0} logs/s, p99 {:.1} ms, {} × 503",
            run.events_per_sec(),
            run.latency(99.0).as_secs_f64() * 1e3,
            run.status_503
        ));
        Ok::<Phase, BenchError>(Phase { label: label.into(), hashers: h, ingests: i, shape, offered, run, usage })
    };

    say(&format!("starting chronos up: {h0} hashers, {i0} ingest"));
    let mut stack = launcher.start(h0, i0)?;
    rt.block_on(load::wait_ready(stack.addr, Duration::from_secs(120), 20)).map_err(BenchError::Launch)?;
    let stored_before = rt.block_on(count_logs(&stack.database_url))?;
    let storage_before = rt.block_on(storage_now(&stack.database_url))?;
    let postgres_version = rt.block_on(server_version(&stack.database_url))?;

    let mut search = Vec::new();
    let c0 = if o.search {
        // A step that does not beat the best by 5% may be noise: the search
        // ends after two such steps in a row.
        let mut c = c0;
        let mut best = (c0, 0.0f64);
        let mut flat = 0;
        loop {
            let p = phase(&format!("finding max load: {c} connections"), &stack, h0, i0, shape(b0, c), Pace::Max)?;
            let rate = p.run.events_per_sec();
            search.push(p);
            if rate > best.1 * 1.05 {
                best = (c, rate);
                flat = 0;
            } else {
                flat += 1;
            }
            if flat == 2 || c * 2 > o.search_max {
                break;
            }
            c *= 2;
        }
        // Of the counts within 5% of the best, the smallest: as fast within
        // this machine's noise, with less latency and memory.
        let pick = search
            .iter()
            .filter(|p| p.run.events_per_sec() >= best.1 * 0.95)
            .map(|p| p.shape.connections)
            .min()
            .unwrap_or(best.0);
        say(&format!("max load at {pick} connections"));
        pick
    } else {
        c0
    };
    // Max load and raw COPY of the rows it stored, in pairs: the machine's
    // speed drifts (other tenants, PostgreSQL's checkpoints), so each
    // ratio compares two measurements made back to back, and the pair
    // with the median ratio is reported.
    let mut pairs = Vec::new();
    let n = o.reps.max(1);
    for k in 0..n {
        let max = phase(&format!("max load ({} of {n})", k + 1), &stack, h0, i0, shape(b0, c0), Pace::Max)?;
        let (lo, hi) =
            max.run.window_leaves().ok_or_else(|| BenchError::Lost("no body acknowledged at max load".into()))?;
        // The raw COPY holds its rows in memory: the newest of the window, at most 2 M.
        let lo = lo.max(hi.saturating_sub(limits::MAX_COPY_ROWS));
        say(&format!("raw binary COPY of the same {} rows, best of 3", hi - lo));
        let copy = rt.block_on(limits::raw_copy(&stack.database_url, lo, hi, 3))?;
        let ratio = max.run.events_per_sec() / copy.logs.events;
        say(&format!("  {:.0} rows/s: end-to-end / raw COPY {:.0}%", copy.logs.events, 100.0 * ratio));
        pairs.push((ratio, max, copy));
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let ratios: Vec<f64> = pairs.iter().map(|p| p.0).collect();
    let (_, max, copy) = pairs.swap_remove(pairs.len() / 2);
    say("hashing limits, ring, memcpy");
    let hashing = limits::hashing(&o.hasher, corpus.events(), b0, o.reps);
    let body_bytes = corpus.events().iter().take(b0).map(|e| e.len() + 16).sum::<usize>();
    let ring = limits::ring(body_bytes, b0 as u32, o.reps)?;
    let memcpy = limits::memcpy(o.reps.max(3));

    let bodies_per_sec = max.run.events_per_sec() / b0 as f64;
    let half = phase("50% load", &stack, h0, i0, shape(b0, c0), Pace::Rate(bodies_per_sec * 0.5))?;
    let overload =
        phase("overload", &stack, h0, i0, shape(b0, o.overload_connections), Pace::Rate(bodies_per_sec * 2.0))?;

    let mut sweep = Vec::new();
    let mut points: Vec<(String, u16, u16, usize, usize)> = Vec::new();
    points.extend(o.hashers.iter().skip(1).map(|&h| (format!("hashers {h}"), h, i0, b0, c0)));
    points.extend(o.ingests.iter().skip(1).map(|&i| (format!("ingest processes {i}"), h0, i, b0, c0)));
    points.extend(o.batch.iter().skip(1).map(|&b| (format!("batch {b}"), h0, i0, b, c0)));
    points.extend(o.connections.iter().skip(1).map(|&c| (format!("connections {c}"), h0, i0, b0, c)));
    let mut running = (h0, i0);
    for (label, h, i, b, c) in points {
        if running != (h, i) {
            say(&format!("restarting chronos up: {h} hashers, {i} ingest"));
            launcher.stop()?;
            stack = launcher.start(h, i)?;
            rt.block_on(load::wait_ready(stack.addr, Duration::from_secs(120), 20)).map_err(BenchError::Launch)?;
            running = (h, i);
        }
        sweep.push(phase(&label, &stack, h, i, shape(b, c), Pace::Max)?);
    }

    let stored = rt.block_on(count_logs(&stack.database_url))? - stored_before;
    let acked = check_acks(&mut all_acks, stored)?;
    // Over the whole run (the sweep's restarts keep the same database).
    let after = rt.block_on(storage_now(&stack.database_url))?;
    let storage = Storage {
        events: stored,
        wal: after.0.saturating_sub(storage_before.0),
        logs: after.1.saturating_sub(storage_before.1),
        logged: after.2.saturating_sub(storage_before.2),
    };
    say("stopping chronos up");
    launcher.stop()?;
    Ok(Results {
        max,
        half,
        overload,
        sweep,
        search,
        ratios,
        copy,
        hashing,
        ring,
        memcpy,
        acked,
        stored,
        postgres_version,
        storage,
    })
}

/// One phase: the load, with the processes sampled over its window.
async fn measure(
    stack: &Stack,
    shape: &Shape,
    corpus: Arc<Corpus>,
    pace: Pace,
    o: &Options,
    first_body: u64,
) -> Result<(Run, std::collections::BTreeMap<String, Usage>), BenchError> {
    let target = Target { addr: stack.addr, token: stack.token.clone() };
    let mut groups = stack.processes.clone();
    groups.push((LOAD_GENERATOR.into(), Members::Pid(std::process::id() as i32)));
    let (warmup, duration) = (o.warmup, o.duration);
    let sampling = async move {
        tokio::time::sleep(warmup).await;
        let s = Sampler::start(groups);
        tokio::time::sleep(duration).await;
        s.finish()
    };
    let (run, usage) = tokio::join!(load::drive(&target, shape, corpus, pace, warmup, duration, first_body), sampling);
    Ok((run?, usage))
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, BenchError> {
    let (client, conn) = chronos_tls::pg::connect(url).await?;
    tokio::spawn(conn);
    Ok(client)
}

async fn count_logs(url: &str) -> Result<u64, BenchError> {
    let n: i64 = connect(url).await?.query_one("SELECT count(*) FROM logs", &[]).await?.get(0);
    Ok(n as u64)
}

async fn server_version(url: &str) -> Result<String, BenchError> {
    let v: String = connect(url).await?.query_one("SHOW server_version", &[]).await?.get(0);
    Ok(v)
}

/// Every body is sent until acknowledged once (a replay answers a retry of
/// a body committed before), so the bodies' leaf ranges must be disjoint
/// and the events acknowledged exactly the rows added.
fn check_acks(acks: &mut [load::Ack], stored: u64) -> Result<u64, BenchError> {
    acks.sort_by_key(|a| a.first_leaf);
    let mut acked = 0u64;
    let mut end = 0u64;
    for a in acks.iter() {
        if a.first_leaf < end {
            return Err(BenchError::Lost(format!("two bodies were both given leaf {}", a.first_leaf)));
        }
        end = a.first_leaf + u64::from(a.events);
        acked += u64::from(a.events);
    }
    if acked != stored {
        return Err(BenchError::Lost(format!("{acked} events acknowledged, {stored} rows added to logs")));
    }
    Ok(acked)
}
