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
//! then loses. Each is saved outside the database first ([`saved`]); if
//! the thread stops, the whole process stops (sequencing never goes on
//! unsigned) and the supervisor restarts it.
//!
//! It also runs the log's control plane: the mode machine and the
//! operators' key registry ([`plane`]), the control socket `chronos
//! control` submits signed events to ([`socket`]), and the control turn of
//! its loop (facts observed, events applied, a recovery's rejoin, a
//! quarantined body's release), whose control records it sequences like
//! any batch, so the log records its own operation. A data batch reaching
//! it while the mode refuses writes is answered 503 naming the mode.
//!
//! What it does not do: hash events (hashers do), write the database's
//! ledger tables (the vault writer does), or trust its own memory across
//! restarts: at start it restores everything from PostgreSQL ([`restore`])
//! and checks it against the latest signed checkpoint, the one saved
//! outside the database and the writer lease before it accepts a batch.
//!
//! Crash boundary (fault points `orchestrator.before-publish` and
//! `orchestrator.after-publish`): input records are released only after
//! their outputs are committed to the `sequenced` ring. A successor first waits until the
//! vault writer has committed everything in that ring, then restores from
//! the database; re-read inputs whose batches were committed are answered
//! as duplicates, the rest are sequenced anew.

pub mod checkpoint;
pub mod plane;
pub mod restore;
pub mod saved;
pub mod socket;
pub mod stages;
mod turn;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use chronos_ipc::{Consumer, Producer, PushError, RingError, RingSet, ring};
use chronos_ledger::{Hash, NoteSigner, TreeHasher};
use chronos_wire::{Duplicate, Hashed, Refused, RingNames, Sequenced, Topology, tag};
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
    /// Most idempotency keys remembered at once (older ones are forgotten
    /// first, before their window ends, and counted).
    pub key_limit: usize,
    /// Written with our pid once restored and sequencing; removed at exit.
    pub ready_file: std::path::PathBuf,
    /// The newest signed checkpoint, kept outside the database: written
    /// (atomically, fsynced) before each checkpoint is stored, and checked
    /// at start, so a database restored from a backup is refused instead of
    /// being extended into a fork ([`saved`]).
    pub checkpoint_file: std::path::PathBuf,
    /// The writer lease's epoch taken by `chronos up` ([`chronos_vault::lease`]).
    pub epoch: u64,
    /// Fault injection at the crash boundaries (tests only).
    pub faults: chronos_faults::Faults,
    /// Trusted time, for batches and checkpoints.
    pub clock: Arc<chronos_time::TimeReader>,
    /// The control plane: socket, first keys, mode file.
    pub control: plane::ControlSettings,
    /// Bodies whose events claim a time too far from the log's go to the
    /// quarantine.
    pub claimed_time: stages::ClaimedTime,
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
    /// The checkpoint signer stopped: the process stops too, so that the
    /// supervisor restarts both (sequencing without signing is not allowed).
    #[error("the checkpoint signer stopped: {0}")]
    Signer(String),
    /// A fault injected by a test.
    #[error("{0}")]
    Injected(#[from] chronos_faults::Injected),
}

/// Counters served on `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub batches: Counter,
    pub events: Counter,
    pub duplicates: Counter,
    pub rejected: Counter,
    pub unavailable: Counter,
    pub quarantined: Counter,
    pub checkpoints: Counter,
    pub seq: Gauge,
    pub tree_size: Gauge,
    /// Seconds since the newest signed checkpoint was signed.
    pub checkpoint_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Idempotency keys remembered now.
    pub keys: Gauge,
    /// Keys forgotten before their window ended because the window held
    /// `pipeline.key_window_max_keys`.
    pub keys_evicted: Counter,
    pub control: plane::ControlMetrics,
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
        r.register(
            "chronos_orchestrator_unavailable",
            "Batches answered 503 by a stage (no time quorum under the refuse policy)",
            self.unavailable.clone(),
        );
        r.register(
            "chronos_orchestrator_quarantined",
            "Bodies quarantined for a policy reason",
            self.quarantined.clone(),
        );
        r.register("chronos_orchestrator_checkpoints", "Checkpoints signed", self.checkpoints.clone());
        r.register("chronos_orchestrator_seq", "Seq of the last sequenced batch", self.seq.clone());
        r.register("chronos_orchestrator_tree_size", "Leaves sequenced", self.tree_size.clone());
        r.register(
            "chronos_orchestrator_checkpoint_age_seconds",
            "Seconds since the newest signed checkpoint was signed",
            self.checkpoint_age.clone(),
        );
        r.register(
            "chronos_orchestrator_idempotency_keys",
            "Idempotency keys remembered now (bounded by pipeline.key_window_max_keys)",
            self.keys.clone(),
        );
        r.register(
            "chronos_orchestrator_idempotency_keys_evicted",
            "Keys forgotten before their window ended, to stay within pipeline.key_window_max_keys",
            self.keys_evicted.clone(),
        );
        self.control.register(r);
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
    let plane =
        plane::Plane::restore(&settings.origin, &restored.control, settings.control.clone(), metrics.control.clone())
            .map_err(|e| OrchestratorError::Refused(format!("the log's control records do not replay: {e}")))?;
    let mut spine = restore::spine(settings, &restored, metrics);
    metrics.seq.set(restored.head.seq as i64);
    metrics.tree_size.set(restored.head.size as i64);
    tracing::info!(
        seq = restored.head.seq,
        size = restored.head.size,
        keys = restored.keys.len(),
        "orchestrator ready"
    );

    let signed_at = Arc::new(AtomicU64::new(restored.last_signed.map_or(0, |l| l.time_ns)));
    let signer = checkpoint::Signer::new(
        settings,
        restored.last_signed.map(|l| (l.size, l.seq)),
        history.clone(),
        metrics.clone(),
        signed_at.clone(),
    );
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
    let (to_loop, requests) = mpsc::sync_channel(16);
    let listener = {
        let _in_runtime = rt.enter();
        socket::bind(&settings.control.socket).map_err(|e| {
            OrchestratorError::Refused(format!(
                "cannot bind the control socket {}: {e}",
                settings.control.socket.display()
            ))
        })?
    };
    let socket_stop = Arc::new(AtomicBool::new(false));
    let cx = socket::Context {
        to_loop,
        snapshot: plane.snapshot(),
        database_url: settings.database_url.clone(),
        limit: Arc::new(Mutex::new(chronos_vault::audit::RateLimit::new(socket::AUDIT_PER_MINUTE))),
    };
    rt.spawn(socket::serve(listener, cx, socket_stop.clone()));
    let mut out =
        Output { ring: &mut output, stop, faults: &settings.faults, last: (restored.head.seq, restored.head.hash) };
    let watch = Watch { signer: &cp, signed_at: &signed_at, metrics };
    let mut ctl =
        turn::Control { plane, requests, settings, rt: &rt, observed: None, recovery_tried: None, nonce: 0, db: None };
    let result = sequence_loop(&mut spine, &mut inputs, &mut out, &history, &watch, &mut ctl);
    socket_stop.store(true, Ordering::Relaxed);
    // The mode file stays: the log's mode outlives this process (a hold is
    // still a hold while the orchestrator restarts).
    let _ = std::fs::remove_file(&settings.control.socket);
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
    let signer_result = match cp.join() {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(OrchestratorError::Signer(e.to_string())),
        Err(_) => Err(OrchestratorError::Signer("it panicked".into())),
    };
    result.and(signer_result)
}

/// The sequenced ring, with what a push needs.
struct Output<'a> {
    ring: &'a mut Producer,
    stop: &'a AtomicBool,
    faults: &'a chronos_faults::Faults,
    /// Seq and chain value of the last batch handed on.
    last: (u64, Hash),
}

/// What the sequencing loop watches besides its input.
struct Watch<'a> {
    signer: &'a std::thread::JoinHandle<Result<(), chronos_vault::store::VaultError>>,
    signed_at: &'a AtomicU64,
    metrics: &'a Metrics,
}

impl Watch<'_> {
    /// Fails once the checkpoint signer has stopped on its own: sequencing
    /// without signing would grow a log nobody can check.
    fn check(&self) -> Result<(), OrchestratorError> {
        if self.signer.is_finished() {
            return Err(OrchestratorError::Signer("its thread ended (see the error above)".into()));
        }
        let at = self.signed_at.load(Ordering::Relaxed);
        if at > 0 {
            let age = crate::stages::now_ns().saturating_sub(at);
            self.metrics.checkpoint_age.set(age as f64 / 1e9);
        }
        Ok(())
    }
}

fn sequence_loop(
    spine: &mut Spine,
    inputs: &mut RingSet,
    out: &mut Output<'_>,
    history: &Mutex<History>,
    watch: &Watch<'_>,
    ctl: &mut turn::Control<'_>,
) -> Result<(), OrchestratorError> {
    let metrics = watch.metrics;
    while !out.stop.load(Ordering::Relaxed) {
        watch.check()?;
        if !turn::control_tick(ctl, spine, out, history, metrics)? {
            return Ok(());
        }
        if !inputs.wait(Some(Instant::now() + Duration::from_millis(100)))? {
            continue;
        }
        let Some((ring, batch)) = inputs.poll(256)? else { continue };
        for rec in batch.iter() {
            if rec.tag == tag::REFUSED {
                // A hasher refused it: on to the vault writer, which answers.
                if !push(out, tag::REFUSED, rec.payload.len(), |buf| buf.copy_from_slice(rec.payload))? {
                    return Ok(());
                }
                continue;
            }
            let input = match Hashed::decode(rec.tag, rec.payload) {
                Ok(i) => i,
                Err(e) => {
                    metrics.rejected.inc();
                    tracing::error!(ring, ring_seq = rec.seq, error = %e, "refusing a hashed record that does not decode");
                    if let Some(reply) = chronos_wire::peek_reply(rec.payload) {
                        let reason =
                            format!("the pipeline could not decode this body's record ({e}); nothing was stored");
                        if !refuse(out, Refused::new(reply, 422, &reason))? {
                            return Ok(());
                        }
                    }
                    continue;
                }
            };
            if let Some(reason) = ctl.plane.refusal() {
                metrics.unavailable.inc();
                if !refuse(out, Refused::new(input.reply, 503, &format!("{reason}; nothing was stored")))? {
                    return Ok(());
                }
                continue;
            }
            let mut c = Candidate::new(input);
            // An injected refusal stands in for the first stage's, before
            // any stage changed its state.
            let verdict = match out.faults.check("orchestrator.reject") {
                Err(e) => Verdict::Reject(e.to_string()),
                Ok(()) => spine.apply(&mut c)?,
            };
            match verdict {
                Verdict::Continue => {
                    if !hand_on(spine, &mut c, out, history, metrics)? {
                        return Ok(());
                    }
                }
                Verdict::Duplicate(d) => {
                    metrics.duplicates.inc();
                    if !push(out, tag::DUPLICATE, Duplicate::LEN, |buf| buf.copy_from_slice(&d.encode()))? {
                        return Ok(());
                    }
                }
                Verdict::Quarantine(reason) if c.seq == 0 => {
                    metrics.quarantined.inc();
                    tracing::warn!(reason, "body quarantined");
                    let raw = input.raw();
                    let len = chronos_wire::Quarantined::encoded_len(&reason, raw);
                    let reply = input.reply;
                    if !push(out, tag::QUARANTINED, len, |buf| {
                        chronos_wire::Quarantined::encode(buf, reply, &reason, raw)
                    })? {
                        return Ok(());
                    }
                }
                Verdict::Unavailable(reason) if c.seq == 0 => {
                    metrics.unavailable.inc();
                    tracing::warn!(reason, "batch refused for now");
                    if !refuse(out, Refused::new(input.reply, 503, &format!("{reason}; nothing was stored")))? {
                        return Ok(());
                    }
                }
                Verdict::Reject(_) | Verdict::Unavailable(_) | Verdict::Quarantine(_) if c.seq != 0 => {
                    // A seq was given out: refusing now would leave a gap
                    // in the chain. Stop; the successor restores from the
                    // database, where that seq was never used.
                    return Err(
                        StageError::OutOfOrder { stage: "a refusing stage", needs: "to run before sequence" }.into()
                    );
                }
                Verdict::Reject(reason) | Verdict::Unavailable(reason) | Verdict::Quarantine(reason) => {
                    metrics.rejected.inc();
                    tracing::error!(reason, "stage refused a batch");
                    let reason = format!("refused by the sequencer: {reason}; nothing was stored");
                    if !refuse(out, Refused::new(input.reply, 422, &reason))? {
                        return Ok(());
                    }
                }
            }
        }
        inputs.release(ring);
    }
    Ok(())
}

/// Hands on a batch that passed every stage; `Ok(false)`: asked to stop
/// while the ring stayed full.
fn hand_on(
    spine: &mut Spine,
    c: &mut Candidate<'_>,
    out: &mut Output<'_>,
    history: &Mutex<History>,
    metrics: &Metrics,
) -> Result<bool, OrchestratorError> {
    let input = c.input;
    let decided = Sequenced {
        seq: c.seq,
        first_leaf: c.first_leaf,
        time_ns: c.time.as_ref().map_or(0, |t| t.time.0),
        uncertainty_ns: c.time.as_ref().map_or(0, |t| t.uncertainty_ns),
        source: c.time.as_ref().map_or_else(String::new, |t| t.source.as_str().to_owned()),
        chain: c.chain.map_or([0; 32], |h| h.0),
        nodes: std::mem::take(&mut c.nodes),
    };
    let size = c.first_leaf + input.len() as u64;
    let root = c.tree_root.unwrap_or(Hash([0; 32]));
    // Recorded for the checkpoint signer *before* the batch can reach the
    // vault writer: the signer must never see a committed batch it does
    // not know (it would take that for tampering). An entry whose push
    // never happens is never committed, and so never looked up.
    if let Ok(mut h) = history.lock() {
        h.push(c.seq, size, root, Hash(decided.chain));
    }
    out.faults.check("orchestrator.before-publish")?;
    let len = decided.encoded_len(input.raw().len());
    if !push(out, tag::SEQUENCED, len, |buf| decided.encode(buf, input.raw()))? {
        return Ok(false);
    }
    out.faults.check("orchestrator.after-publish")?;
    out.last = (c.seq, Hash(decided.chain));
    spine.passed(c);
    metrics.batches.inc();
    metrics.events.inc_by(input.len() as u64);
    metrics.seq.set(c.seq as i64);
    metrics.tree_size.set(size as i64);
    Ok(true)
}

/// Hands a refusal to the vault writer, which answers the client at once
/// and leaves an audit event.
fn refuse(out: &mut Output<'_>, r: Refused) -> Result<bool, OrchestratorError> {
    push(out, tag::REFUSED, r.encoded_len(), |buf| r.encode(buf))
}

/// Writes one record, waiting while the ring is full. `Ok(false)`: asked
/// to stop while it stayed full (nothing of the current poll is released).
fn push(out: &mut Output<'_>, tag: u32, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<bool, OrchestratorError> {
    let stop = out.stop;
    let mut fill = Some(fill);
    loop {
        match out.ring.reserve(tag, len, Instant::now() + Duration::from_millis(200)) {
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
