//! The hasher: the pipeline's CPU-heavy stage, one process per core.
//!
//! It reads `INGEST` records from its ring of every ingest slot, computes
//! each event's leaf hash, the batch's Merkle root (rayon-parallel for big
//! batches) and the batch's canonical payload (zstd, spec/ledger.md), and
//! writes one `HASHED` record per batch to its ring to the orchestrator.
//!
//! What it does not do: decide order, seq or time (the orchestrator does),
//! touch the database, or drop anything: when its output ring is full it
//! waits, so backpressure reaches ingest, which answers 503.
//!
//! Crash boundary: input records are released only after their outputs are
//! committed to the output ring. A hasher killed in between leaves them
//! unreleased; its successor hashes them again, and the orchestrator drops
//! the second copy by its idempotency key (at least once here, exactly
//! once after the orchestrator).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chronos_ipc::{Consumer, Producer, PushError, RingError, RingSet, ring};
use chronos_ledger::{Hash, TreeHasher, payload, tree};
use chronos_wire::{Hashed, Ingest, IngestRef, Refused, RingNames, Topology, WireError, tag};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rayon::prelude::*;

/// Batches at least this large hash their leaves on the rayon pool.
const PARALLEL_FROM: usize = 256;

/// A hasher's validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub names: RingNames,
    pub topology: Topology,
    /// This hasher's index, `0..topology.hashers`.
    pub index: u16,
    pub hasher: TreeHasher,
    /// Threads hashing one big batch's leaves: cores / hashers (at least
    /// one). With a hasher per core the processes are the parallelism, and
    /// a thread pool in each would only spin for work on a busy core.
    pub threads: usize,
}

/// Why the hasher stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HasherError {
    /// A ring could not be opened or is corrupt: the supervisor restarts us.
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// The output ring is corrupt.
    #[error("output ring: {0}")]
    Push(#[from] PushError),
    /// The operating system refused the hashing threads.
    #[error("{0}")]
    Threads(String),
}

/// Counters served on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub batches: Counter,
    pub events: Counter,
    pub bytes: Counter,
    pub rejected: Counter,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("chronos_hasher_batches", "Batches hashed", self.batches.clone());
        r.register("chronos_hasher_events", "Events hashed", self.events.clone());
        r.register("chronos_hasher_event_bytes", "Event bytes hashed", self.bytes.clone());
        r.register(
            "chronos_hasher_rejected_records",
            "Ring records that did not decode (dropped, logged)",
            self.rejected.clone(),
        );
    }
}

/// Leaf hashes and root of a batch's events; big batches on `pool`'s
/// threads if there is one.
pub fn hash_batch(hasher: &TreeHasher, events: &[&[u8]], pool: Option<&rayon::ThreadPool>) -> (Vec<Hash>, Hash) {
    let leaves: Vec<Hash> = if let Some(pool) = pool.filter(|_| events.len() >= PARALLEL_FROM) {
        pool.install(|| events.par_iter().with_min_len(64).map(|e| hasher.leaf(e)).collect())
    } else {
        events.iter().map(|e| hasher.leaf(e)).collect()
    };
    let root = tree::root(hasher, &leaves);
    (leaves, root)
}

/// Opens (creating if needed) this hasher's rings.
fn open(settings: &Settings) -> Result<(RingSet, Producer), RingError> {
    let t = &settings.topology;
    let g = t.ingest_ring();
    let mut inputs = Vec::with_capacity(usize::from(t.ingests));
    for slot in 0..t.ingests {
        let name = settings.names.ingest(slot, settings.index);
        ring::open_or_create(&name, g.capacity, g.max_record)?;
        inputs.push(Consumer::attach(&name)?);
    }
    let g = t.hashed_ring();
    let out = settings.names.hashed(settings.index);
    ring::open_or_create(&out, g.capacity, g.max_record)?;
    Ok((RingSet::new(inputs), Producer::attach(&out)?))
}

/// Runs until `stop` is set; then finishes the records in hand (unless the
/// output ring stays full) and returns.
pub fn run(settings: &Settings, stop: &AtomicBool, metrics: &Metrics) -> Result<(), HasherError> {
    let (mut inputs, mut output) = open(settings)?;
    let pool = match settings.threads {
        0 | 1 => None,
        n => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .thread_name(|i| format!("hash-{i}"))
                .build()
                .map_err(|e| HasherError::Threads(format!("starting {n} hashing threads: {e}")))?,
        ),
    };
    tracing::info!(index = settings.index, rings = inputs.rings().len(), "hasher ready");
    while !stop.load(Ordering::Relaxed) {
        if !inputs.wait(Some(Instant::now() + Duration::from_millis(200)))? {
            continue;
        }
        let Some((ring, batch)) = inputs.poll(256)? else { continue };
        for rec in batch.iter() {
            match Ingest::decode(rec.tag, rec.payload) {
                Ok(input) => {
                    if !hash_one(settings, pool.as_ref(), &input, &mut output, stop, metrics)? {
                        // Stopping with a full output ring: nothing of this
                        // poll is released, the next hasher redoes it.
                        return Ok(());
                    }
                }
                Err(e) => {
                    if !reject(rec.seq, rec.payload, &e, &mut output, stop, metrics)? {
                        return Ok(());
                    }
                }
            }
        }
        // Every output of this poll is committed: its inputs can go.
        inputs.release(ring);
    }
    Ok(())
}

/// A record that does not decode: only a buggy or foreign writer makes
/// one (ingest validated the body). Its client is answered at once with a
/// refusal (through the orchestrator and the vault writer, which leaves an
/// audit event), not left to time out and retry for ever. `Ok(false)`:
/// asked to stop while the output ring stayed full.
fn reject(
    ring_seq: u64,
    raw: &[u8],
    e: &WireError,
    output: &mut Producer,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> Result<bool, HasherError> {
    metrics.rejected.inc();
    tracing::error!(ring_seq, error = %e, "refusing an ingest record that does not decode");
    let Some(reply) = chronos_wire::peek_reply(raw) else { return Ok(true) };
    let refused = Refused::new(
        reply,
        422,
        &format!("the pipeline could not decode this body's record ({e}); nothing was stored"),
    );
    let len = refused.encoded_len();
    loop {
        match output.reserve(tag::REFUSED, len, Instant::now() + Duration::from_millis(200)) {
            Ok(mut grant) => {
                refused.encode(grant.payload_mut());
                grant.commit();
                return Ok(true);
            }
            Err(PushError::Timeout | PushError::Full) if !stop.load(Ordering::Relaxed) => continue,
            Err(PushError::Timeout | PushError::Full) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}

fn hash_one(
    settings: &Settings,
    pool: Option<&rayon::ThreadPool>,
    input: &IngestRef<'_>,
    output: &mut Producer,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> Result<bool, HasherError> {
    let events: Vec<&[u8]> = input.events().map(|e| e.bytes).collect();
    let (leaves, root) = hash_batch(&settings.hasher, &events, pool);
    let refs: Vec<payload::EventRef<'_>> =
        input.events().map(|e| payload::EventRef { bytes: e.bytes, claimed_time_ns: e.claimed_time_ns }).collect();
    let canonical = payload::encode(&refs);
    let leaves: Vec<[u8; 32]> = leaves.into_iter().map(|h| h.0).collect();
    let len = Hashed::encoded_len(input, canonical.len());
    loop {
        // Waits while the orchestrator is behind: backpressure, never a drop.
        match output.reserve(tag::HASHED, len, Instant::now() + Duration::from_millis(200)) {
            Ok(mut grant) => {
                Hashed::encode(grant.payload_mut(), input, &leaves, &root.0, &canonical);
                grant.commit();
                break;
            }
            Err(PushError::Timeout | PushError::Full) if !stop.load(Ordering::Relaxed) => continue,
            Err(PushError::Timeout | PushError::Full) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
    metrics.batches.inc();
    metrics.events.inc_by(events.len() as u64);
    metrics.bytes.inc_by(input.event_bytes() as u64);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chronos_ledger::HashAlg;

    #[test]
    fn parallel_and_sequential_hashing_agree_with_the_tree() {
        let h = TreeHasher::unkeyed(HashAlg::Blake3);
        let owned: Vec<Vec<u8>> = (0..1000).map(|i| format!("{{\"i\":{i}}}").into_bytes()).collect();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for (n, pool) in [1, 2, 255, 256, 257, 1000].into_iter().flat_map(|n| [(n, None), (n, Some(&pool))]) {
            let events: Vec<&[u8]> = owned[..n].iter().map(|e| e.as_slice()).collect();
            let (leaves, root) = hash_batch(&h, &events, pool);
            let mut t = chronos_ledger::MemTree::new();
            for e in &events {
                t.append(&h, h.leaf(e));
            }
            assert_eq!(root, t.root(&h), "n = {n}");
            assert_eq!(leaves[n - 1], h.leaf(events[n - 1]));
        }
    }
}
