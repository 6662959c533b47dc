//! The orchestrator: the single execution spine of a Chronos log.
//!
//! Every batch passes its ordered stages ([`stages`]): validate (and answer
//! retries), sequence (batch seq, global leaf indices), timestamp, chain,
//! tree; then it is handed to the vault writer through the `sequenced`
//! ring. There is one orchestrator per log: it is the only sequencer.
//!
//! A [`checkpoint`] thread signs a checkpoint for the *committed* head
//! every interval (when it moved) and at shutdown: never for batches only
//! sequenced, so a signed checkpoint can never name a batch that a crash
//! then loses.
//!
//! What it does not do: hash events (hashers do), write the database's
//! ledger tables (the vault writer does), or trust its own memory across
//! restarts: at start it restores everything from PostgreSQL ([`restore`])
//! and checks it against the latest signed checkpoint before it accepts a
//! batch.
//!
//! Crash boundary: input records are released only after their outputs are
//! committed to the `sequenced` ring. A successor first waits until the
//! vault writer has committed everything in that ring, then restores from
//! the database; re-read inputs whose batches were committed are answered
//! as duplicates, the rest are sequenced anew.

pub mod checkpoint;
pub mod restore;
pub mod stages;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chronos_ipc::{Consumer, Producer, PushError, RingError, RingSet, ring};
use chronos_ledger::{Hash, NoteSigner, TreeHasher};
use chronos_wire::{Duplicate, Hashed, RingNames, Sequenced, Topology, tag};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::checkpoint::History;
use crate::stages::{Candidate, Stage, StageError, Verdict};

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub names: RingNames,
    pub topology: Topology,
    pub hasher: TreeHasher,
    pub origin: String,
    /// Shared, not cloned: it holds the private key.
    pub signer: Arc<NoteSigner>,
    /// The verifier key string, as `chronos_log` records it.
    pub verifier_key: String,
    pub key_check: Option<[u8; 8]>,
    pub database_url: String,
    pub checkpoint_interval: Duration,
    /// How long a body's idempotency key is remembered.
    pub key_window: Duration,
    /// Written with our pid once restored and sequencing; removed at exit.
    pub ready_file: std::path::PathBuf,
}

/// Why the orchestrator stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorError {
    /// A ring failed: restart.
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    #[error("sequenced ring: {0}")]
    Push(#[from] PushError),
    /// PostgreSQL is unreachable at start: restart with backoff.
    #[error("database: {0}")]
    Database(#[from] chronos_vault::store::VaultError),
    /// The stored ledger contradicts the latest signed checkpoint, or
    /// another broken invariant: refuse to run (fail closed).
    #[error("refusing to sequence: {0}")]
    Refused(String),
    #[error("stage: {0}")]
    Stage(#[from] StageError),
}

/// Counters served on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub batches: Counter,
    pub events: Counter,
    pub duplicates: Counter,
    pub rejected: Counter,
    pub checkpoints: Counter,
    pub seq: Gauge,
    pub tree_size: Gauge,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("chronos_orchestrator_batches", "Batches sequenced", self.batches.clone());
        r.register("chronos_orchestrator_events", "Events sequenced", self.events.clone());
        r.register(
            "chronos_orchestrator_duplicates",
            "Bodies answered from the idempotency window",
            self.duplicates.clone(),
        );
        r.register("chronos_orchestrator_rejected", "Records refused by a stage or undecodable", self.rejected.clone());
        r.register("chronos_orchestrator_checkpoints", "Checkpoints signed", self.checkpoints.clone());
        r.register("chronos_orchestrator_seq", "Seq of the last sequenced batch", self.seq.clone());
        r.register("chronos_orchestrator_tree_size", "Leaves sequenced", self.tree_size.clone());
    }
}

/// The spine: stages in order.
pub struct Spine {
    stages: Vec<Box<dyn Stage>>,
}

impl std::fmt::Debug for Spine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.stages.iter().map(|s| s.name())).finish()
    }
}

impl Spine {
    pub fn new(stages: Vec<Box<dyn Stage>>) -> Spine {
        Spine { stages }
    }

    /// Runs `c` through every stage until one answers it.
    pub fn apply(&mut self, c: &mut Candidate<'_>) -> Result<Verdict, StageError> {
        for s in &mut self.stages {
            match s.apply(c)? {
                Verdict::Continue => {}
                other => return Ok(other),
            }
        }
        Ok(Verdict::Continue)
    }

    /// Tells every stage that `c` was handed on.
    pub fn passed(&mut self, c: &Candidate<'_>) {
        for s in &mut self.stages {
            s.passed(c);
        }
    }
}

fn open_rings(settings: &Settings) -> Result<(RingSet, Producer), RingError> {
    let t = &settings.topology;
    let g = t.hashed_ring();
    let mut inputs = Vec::new();
    for h in 0..t.hashers {
        let name = settings.names.hashed(h);
        ring::open_or_create(&name, g.capacity, g.max_record)?;
        inputs.push(Consumer::attach(&name)?);
    }
    let g = t.sequenced_ring();
    let out = settings.names.sequenced();
    ring::open_or_create(&out, g.capacity, g.max_record)?;
    Ok((RingSet::new(inputs), Producer::attach(&out)?))
}

/// Runs until `stop` is set, then signs a final checkpoint once the vault
/// writer has committed everything.
pub fn run(settings: &Settings, stop: &AtomicBool, metrics: &Metrics) -> Result<(), OrchestratorError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| OrchestratorError::Refused(format!("cannot start the async runtime: {e}")))?;
    let (mut inputs, mut output) = open_rings(settings)?;
    // Taking the producer role first means nobody else sequences; then
    // everything a predecessor handed on must be committed before the
    // database tells the truth about the head.
    let mut waited = Instant::now();
    while !output.wait_drained(Instant::now() + Duration::from_millis(200)) {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if waited.elapsed() > Duration::from_secs(5) {
            tracing::info!("waiting for the vault writer to commit what the previous orchestrator handed on");
            waited = Instant::now();
        }
    }
    let restored = rt.block_on(restore::restore(settings))?;
    let history = Arc::new(Mutex::new(History::new(restored.head, restored.root)));
    let mut spine = restore::spine(settings, &restored);
    metrics.seq.set(restored.head.seq as i64);
    metrics.tree_size.set(restored.head.size as i64);
    tracing::info!(
        seq = restored.head.seq,
        size = restored.head.size,
        keys = restored.keys.len(),
        "orchestrator ready"
    );

    let signer = checkpoint::Signer::new(settings, restored.last_signed, history.clone(), metrics.clone());
    let cp_stop = Arc::new(AtomicBool::new(false));
    let cp = {
        let cp_stop = cp_stop.clone();
        let interval = settings.checkpoint_interval;
        let url = settings.database_url.clone();
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("checkpoint".into())
            .spawn(move || handle.block_on(signer.run(url, interval, cp_stop)))
            .map_err(|e| OrchestratorError::Refused(format!("cannot start the checkpoint thread: {e}")))?
    };

    let tmp = settings.ready_file.with_extension("tmp");
    let announced = std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&tmp, &settings.ready_file));
    if let Err(e) = announced {
        tracing::warn!(file = %settings.ready_file.display(), error = %e, "cannot announce readiness");
    }
    let result = sequence_loop(&mut spine, &mut inputs, &mut output, &history, stop, metrics);
    let _ = std::fs::remove_file(&settings.ready_file);
    if result.is_ok() {
        // Final checkpoint: once the vault writer committed all we handed on.
        let deadline = Instant::now() + Duration::from_secs(30);
        if !output.wait_drained(deadline) {
            tracing::warn!(
                "the vault writer did not commit everything within 30 s; the final checkpoint covers what it did"
            );
        }
    }
    cp_stop.store(true, Ordering::Relaxed);
    match cp.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "checkpoint signer failed"),
        Err(_) => tracing::error!("checkpoint signer panicked"),
    }
    result
}

fn sequence_loop(
    spine: &mut Spine,
    inputs: &mut RingSet,
    output: &mut Producer,
    history: &Mutex<History>,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> Result<(), OrchestratorError> {
    while !stop.load(Ordering::Relaxed) {
        if !inputs.wait(Some(Instant::now() + Duration::from_millis(200)))? {
            continue;
        }
        let Some((ring, batch)) = inputs.poll(256)? else { continue };
        for rec in batch.iter() {
            let input = match Hashed::decode(rec.tag, rec.payload) {
                Ok(i) => i,
                Err(e) => {
                    metrics.rejected.inc();
                    tracing::error!(ring, ring_seq = rec.seq, error = %e, "dropping a hashed record that does not decode");
                    continue;
                }
            };
            let mut c = Candidate::new(input);
            match spine.apply(&mut c)? {
                Verdict::Continue => {
                    let decided = Sequenced {
                        seq: c.seq,
                        first_leaf: c.first_leaf,
                        time_ns: c.time.as_ref().map_or(0, |t| t.time.0),
                        uncertainty_ns: c.time.as_ref().map_or(0, |t| t.uncertainty_ns),
                        source: c.time.as_ref().map_or_else(String::new, |t| t.source.as_str().to_owned()),
                        chain: c.chain.map_or([0; 32], |h| h.0),
                        nodes: std::mem::take(&mut c.nodes),
                    };
                    let len = decided.encoded_len(input.raw().len());
                    if !push(output, tag::SEQUENCED, len, stop, |buf| decided.encode(buf, input.raw()))? {
                        return Ok(());
                    }
                    spine.passed(&c);
                    let size = c.first_leaf + input.len() as u64;
                    let root = c.tree_root.unwrap_or(Hash([0; 32]));
                    // The mutex is shared with the checkpoint thread only.
                    if let Ok(mut h) = history.lock() {
                        h.push(c.seq, size, root, Hash(decided.chain));
                    }
                    metrics.batches.inc();
                    metrics.events.inc_by(input.len() as u64);
                    metrics.seq.set(c.seq as i64);
                    metrics.tree_size.set(size as i64);
                }
                Verdict::Duplicate(d) => {
                    metrics.duplicates.inc();
                    if !push(output, tag::DUPLICATE, Duplicate::LEN, stop, |buf| buf.copy_from_slice(&d.encode()))? {
                        return Ok(());
                    }
                }
                Verdict::Reject(reason) => {
                    metrics.rejected.inc();
                    tracing::error!(reason, "stage refused a batch");
                }
            }
        }
        inputs.release(ring);
    }
    Ok(())
}

/// Writes one record, waiting while the ring is full. `Ok(false)`: asked
/// to stop while it stayed full (nothing of the current poll is released).
fn push(
    output: &mut Producer,
    tag: u32,
    len: usize,
    stop: &AtomicBool,
    fill: impl FnOnce(&mut [u8]),
) -> Result<bool, OrchestratorError> {
    let mut fill = Some(fill);
    loop {
        match output.reserve(tag, len, Instant::now() + Duration::from_millis(200)) {
            Ok(mut grant) => {
                if let Some(f) = fill.take() {
                    f(grant.payload_mut());
                }
                grant.commit();
                return Ok(true);
            }
            Err(PushError::Full | PushError::Timeout) if !stop.load(Ordering::Relaxed) => {}
            Err(PushError::Full | PushError::Timeout) => return Ok(false),
            Err(e) => return Err(e.into()),
        }
    }
}
