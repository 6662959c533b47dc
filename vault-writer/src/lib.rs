//! The vault writer: the only process that writes the ledger's tables.
//!
//! It reads `SEQUENCED`, `DUPLICATE` and `REFUSED` records from the
//! orchestrator's ring, gathers them into flushes (bounded by batch count,
//! bytes and the age of the oldest record), commits each flush in one
//! transaction ([`chronos_vault::store::Vault::commit`]: the writer lease's
//! epoch re-checked, binary COPY into `batches` and the UNLOGGED `logs`,
//! tiles, idempotency keys), and only then releases the records and answers
//! each request on its ingest slot's ack ring (`ACK`, or `REFUSED` with an
//! audit event, at most [`AUDIT_PER_MINUTE`]). It also sends each ingest
//! process a heartbeat saying whether PostgreSQL is reachable, which
//! `/readyz` and the 503s rely on, and restores `logs` rows lost in a
//! PostgreSQL crash on a thread of its own while commits go on.
//!
//! What it does not do: decide anything about the ledger. It checks what
//! it is given (consecutive seq, each chain link recomputed, the lease
//! still ours) and stops, leaving an audit event, when that fails: it never
//! writes a batch that does not extend the stored chain. Database errors
//! are sorted by SQLSTATE: a broken connection is retried, a refusal
//! (a constraint violation: another writer's batch) stops it.
//!
//! Crash boundaries (each has a fault point, see `chronos_faults`):
//! * killed before a commit (`vault-writer.before-commit`): PostgreSQL
//!   discards the transaction, the records are still unreleased, the
//!   successor commits them;
//! * killed after a commit, before the release (`vault-writer.after-commit`):
//!   the successor re-reads them, finds their seq committed, checks that the
//!   stored batch has the record's chain value (else refuses: another
//!   writer) and acknowledges them again (ingest ignores answers it no
//!   longer waits for); a commit that failed after persisting is the same;
//! * PostgreSQL unreachable: nothing is released, flushes are retried with
//!   backoff, heartbeats say the database is down so ingest answers 503;
//!   after [`BREAKER_THRESHOLD`] failures in a row the circuit breaker
//!   opens (`Settings::breaker_file` appears: the orchestrator turns the
//!   log's mode to isolated), nothing is attempted for
//!   [`BREAKER_COOLDOWN`], then one probe (the next commit; when there is
//!   nothing to commit, a connection that migrates, reads the head and
//!   checks the lease) closes it or opens it again;
//!   after a PostgreSQL crash the missing `logs` range is recorded in
//!   `logs_rebuild` before anything new is committed, then restored in the
//!   background (`vault-writer.rebuild`), resumable after a kill.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chronos_ipc::{Consumer, Producer, PushError, RingError, ring};
use chronos_ledger::payload::EventRef;
use chronos_ledger::{BatchHeader, ChainHead, Hash, NodeId, TimeNs, TimeSource, TreeHasher, TrustedTime};
use chronos_vault::store::{BatchRecord, Vault, VaultError};
use chronos_wire::{Ack, Duplicate, Quarantined, Refused, RingNames, Sequenced, Status, Topology, tag};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// When a flush is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlushLimits {
    /// At most this many batches per transaction.
    pub max_batches: usize,
    /// Flush once this many record bytes are gathered.
    pub max_bytes: usize,
    /// Flush once the oldest gathered record is this old.
    pub max_age: Duration,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub names: RingNames,
    pub topology: Topology,
    pub hasher: TreeHasher,
    pub origin: String,
    pub database_url: String,
    pub flush: FlushLimits,
    /// Idempotency keys older than this are deleted.
    pub key_window: Duration,
    /// The writer lease's epoch taken by `chronos up`: every commit checks
    /// that the log is still ours ([`chronos_vault::lease`]).
    pub epoch: u64,
    /// Fault injection at the crash boundaries (tests only).
    pub faults: chronos_faults::Faults,
    /// Present while the circuit breaker is open (with why); the
    /// orchestrator reads it for the log's mode.
    pub breaker_file: Option<std::path::PathBuf>,
}

/// Failed commits or connections in a row that open the circuit.
pub const BREAKER_THRESHOLD: u32 = 3;
/// How long an open circuit attempts nothing before its probe.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(1);

/// Most audit events of refused bodies written per minute.
pub const AUDIT_PER_MINUTE: u32 = 60;

/// Why the vault writer stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultWriterError {
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// PostgreSQL is unreachable or failed: retried with backoff.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// What it was given does not extend the stored ledger: refuse.
    #[error("refusing to write: {0}")]
    Refused(String),
}

/// Metrics served on `/metrics`.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub flushes: Counter,
    pub batches: Counter,
    pub events: Counter,
    pub bytes: Counter,
    pub flush_seconds: Histogram,
    pub commit_failures: Counter,
    pub acks_dropped: Counter,
    pub committed_seq: Gauge,
    pub db_up: Gauge,
    /// 1 while the circuit breaker is open.
    pub breaker_open: Gauge,
    /// Leaves whose `logs` rows are still being restored after a crash.
    pub rebuild_remaining: Gauge,
    /// Audit events of refused bodies left out by the rate limit.
    pub audit_dropped: Counter,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            flushes: Counter::default(),
            batches: Counter::default(),
            events: Counter::default(),
            bytes: Counter::default(),
            flush_seconds: Histogram::new([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0]),
            commit_failures: Counter::default(),
            acks_dropped: Counter::default(),
            committed_seq: Gauge::default(),
            db_up: Gauge::default(),
            breaker_open: Gauge::default(),
            rebuild_remaining: Gauge::default(),
            audit_dropped: Counter::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        r.register("chronos_vault_writer_flushes", "Transactions committed", self.flushes.clone());
        r.register("chronos_vault_writer_batches", "Batches committed", self.batches.clone());
        r.register("chronos_vault_writer_events", "Events committed", self.events.clone());
        r.register("chronos_vault_writer_event_bytes", "Event bytes committed", self.bytes.clone());
        r.register("chronos_vault_writer_flush_seconds", "Time to commit one flush", self.flush_seconds.clone());
        r.register(
            "chronos_vault_writer_commit_failures",
            "Flushes that failed and were retried",
            self.commit_failures.clone(),
        );
        r.register(
            "chronos_vault_writer_acks_dropped",
            "Acknowledgements not delivered because an ingest slot's ring was full (its client retries)",
            self.acks_dropped.clone(),
        );
        r.register("chronos_vault_writer_committed_seq", "Highest committed batch seq", self.committed_seq.clone());
        r.register(
            "chronos_vault_writer_logs_rebuild_remaining",
            "Leaves whose logs rows are still being restored from the batches after a PostgreSQL crash",
            self.rebuild_remaining.clone(),
        );
        r.register(
            "chronos_vault_writer_audit_events_dropped",
            "Audit events of refused bodies not written because of the rate limit (AUDIT_PER_MINUTE)",
            self.audit_dropped.clone(),
        );
        r.register(
            "chronos_vault_writer_database_up",
            "1 when the last database operation succeeded",
            self.db_up.clone(),
        );
        r.register(
            "chronos_vault_writer_circuit_open",
            "1 while the circuit breaker is open (the log's mode is isolated)",
            self.breaker_open.clone(),
        );
    }
}

/// What an ingest request is told.
enum Answer {
    Ack(Ack),
    Refused(Refused),
}

/// What a committed flush leaves to do.
struct Flushed {
    answers: Vec<(u16, Answer)>,
    /// Reasons of the refused bodies, for the audit trail.
    refusals: Vec<String>,
}

/// A record copied out of the ring, awaiting its flush.
struct Pending {
    tag: u32,
    bytes: Vec<u8>,
}

struct Writer<'s> {
    s: &'s Settings,
    metrics: &'s Metrics,
    vault: Option<Vault>,
    /// The committed head.
    head: Option<ChainHead>,
    acks: Vec<Producer>,
    db_ok: bool,
    seq_ring: String,
    audit_limit: chronos_vault::audit::RateLimit,
    breaker: chronos_control::breaker::Breaker,
    /// The background restore of `logs` rows lost in a PostgreSQL crash.
    rebuild: Option<std::thread::JoinHandle<Result<(), VaultError>>>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Runs until `stop` is set and the ring is empty (or `stop` is set and
/// the database stays down for 10 s).
pub fn run(settings: &Settings, stop: &AtomicBool, metrics: &Metrics) -> Result<(), VaultWriterError> {
    // One thread: the connection task runs between the flush's own steps
    // instead of on a second thread that every COPY chunk and reply had to
    // wake (futex round trips showed in profiles). It is polled only inside
    // `block_on`, which is where the writer talks to PostgreSQL.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| VaultWriterError::Refused(format!("cannot start the async runtime: {e}")))?;
    let t = &settings.topology;
    let g = t.sequenced_ring();
    let seq_ring = settings.names.sequenced();
    ring::open_or_create(&seq_ring, g.capacity, g.max_record)?;
    let mut input = Consumer::attach(&seq_ring)?;
    let g = t.ack_ring();
    let mut acks = Vec::new();
    for slot in 0..t.ingests {
        let name = settings.names.ack(slot);
        ring::open_or_create(&name, g.capacity, g.max_record)?;
        acks.push(Producer::attach(&name)?);
    }
    let mut w = Writer {
        s: settings,
        metrics,
        vault: None,
        head: None,
        acks,
        db_ok: false,
        seq_ring,
        audit_limit: chronos_vault::audit::RateLimit::new(AUDIT_PER_MINUTE),
        rebuild: None,
        breaker: chronos_control::breaker::Breaker::new(BREAKER_THRESHOLD, BREAKER_COOLDOWN.as_nanos() as u64),
    };
    // A circuit opened by a predecessor is not ours: this writer starts
    // closed and opens it again if the database is still down.
    if let Some(f) = &settings.breaker_file {
        let _ = std::fs::remove_file(f);
    }
    let mut pending: Vec<Pending> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut first_at = Instant::now();
    // Records that arrived while the last flush was being committed have
    // waited since (at least) its start: they are flushed as soon as the
    // writer is free, not after another `max_age` (group commit). Waiting
    // again idled PostgreSQL for up to max_age between busy flushes.
    let mut waited_since: Option<Instant> = None;
    let mut last_beat = Instant::now() - Duration::from_secs(1);
    let mut last_prune = Instant::now();
    let mut last_ping = Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut down_since: Option<Instant> = None;
    loop {
        if last_beat.elapsed() >= Duration::from_millis(200) {
            w.heartbeat();
            last_beat = Instant::now();
        }
        if w.vault.is_none() {
            let since = *down_since.get_or_insert_with(Instant::now);
            if !w.breaker.allow(now_ns()) {
                // Open: nothing is attempted until the cooldown has passed.
                if stop.load(Ordering::Relaxed) && since.elapsed() > Duration::from_secs(10) {
                    tracing::error!(
                        pending = pending.len(),
                        "stopping with the circuit open; the records stay in the ring"
                    );
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            match rt.block_on(w.connect()) {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    down_since = None;
                    // A connection is the half-open probe only when there is
                    // nothing to commit; otherwise the commit is (a database
                    // that connects but cannot commit keeps the circuit open).
                    if pending.is_empty() && matches!(w.breaker.state(), chronos_control::breaker::State::HalfOpen) {
                        w.report(Ok(()));
                    }
                }
                Err(e @ VaultWriterError::Refused(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "database unavailable");
                    w.report(Err(&e.to_string()));
                    if stop.load(Ordering::Relaxed) && since.elapsed() > Duration::from_secs(10) {
                        tracing::error!(
                            pending = pending.len(),
                            "stopping with the database down; the records stay in the ring"
                        );
                        return Ok(());
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            }
        }
        if let Err(reason) = w.check_rebuild() {
            rt.block_on(w.audit("logs_rebuild_refused", &reason));
            return Err(VaultWriterError::Refused(reason));
        }
        if last_prune.elapsed() >= Duration::from_secs(60) {
            rt.block_on(w.prune());
            last_prune = Instant::now();
        }
        // An idle connection learns that PostgreSQL restarted only when it
        // is used: ask, so heartbeats tell the truth and a crash's `logs`
        // rebuild starts without waiting for the next request.
        if pending.is_empty() && last_ping.elapsed() >= Duration::from_secs(1) {
            last_ping = Instant::now();
            if let Err(e) = rt.block_on(w.ping()) {
                tracing::warn!(error = %e, "database connection lost; reconnecting");
                w.report(Err(&e.to_string()));
                w.vault = None;
                w.db_ok = false;
                metrics.db_up.set(0);
                continue;
            }
        }
        // Gather.
        let full = pending.len() >= settings.flush.max_batches || pending_bytes >= settings.flush.max_bytes;
        let due = !pending.is_empty() && (full || first_at.elapsed() >= settings.flush.max_age);
        if !due {
            let deadline = if pending.is_empty() {
                // Stop only with nothing gathered and nothing left to read.
                if stop.load(Ordering::Relaxed) && !input.has_records()? {
                    return Ok(());
                }
                Instant::now() + Duration::from_millis(200)
            } else {
                first_at + settings.flush.max_age
            };
            if input.wait(Some(deadline))? {
                let room = settings.flush.max_batches - pending.len();
                let batch = input.poll(room)?;
                if pending.is_empty() && !batch.is_empty() {
                    first_at = waited_since.take().unwrap_or_else(Instant::now);
                }
                for rec in batch.iter() {
                    pending_bytes += rec.payload.len();
                    pending.push(Pending { tag: rec.tag, bytes: rec.payload.to_vec() });
                }
            }
            continue;
        }
        // Flush.
        let flush_started = Instant::now();
        match rt.block_on(w.flush(&pending)) {
            Ok(flushed) => {
                // Committed: the records can go, and their requests be answered.
                input.release();
                w.report(Ok(()));
                w.answer(&flushed.answers);
                if !flushed.refusals.is_empty() {
                    rt.block_on(w.audit_refusals(&flushed.refusals));
                }
                pending.clear();
                pending_bytes = 0;
                waited_since = input.has_records()?.then_some(flush_started);
            }
            Err(FlushError::Injected(e)) => {
                // As a real failure would: reconnect, re-read the head, retry.
                metrics.commit_failures.inc();
                tracing::warn!(error = %e, "commit failed (injected); will reconnect and retry");
                w.vault = None;
            }
            Err(FlushError::Unavailable(e)) => {
                metrics.commit_failures.inc();
                w.report(Err(&e.to_string()));
                tracing::warn!(error = %e, batches = pending.len(), "commit failed; will reconnect and retry");
                w.vault = None;
                w.db_ok = false;
                metrics.db_up.set(0);
            }
            Err(FlushError::Refused(reason)) => {
                rt.block_on(w.audit("vault_writer_refused", &reason));
                return Err(VaultWriterError::Refused(reason));
            }
        }
    }
}

enum FlushError {
    Unavailable(VaultError),
    Refused(String),
    Injected(chronos_faults::Injected),
}

impl From<VaultError> for FlushError {
    /// By SQLSTATE ([`VaultError::is_transient`]): a broken connection is
    /// retried; a constraint violation (another writer's batch at our seq)
    /// or a fenced epoch is a refusal that stops the writer and alerts.
    fn from(e: VaultError) -> FlushError {
        if e.is_transient() { FlushError::Unavailable(e) } else { FlushError::Refused(e.to_string()) }
    }
}

impl Writer<'_> {
    /// Tells the circuit breaker how a commit, connection or ping went,
    /// and publishes its opening and closing.
    fn report(&mut self, outcome: Result<(), &str>) {
        use chronos_control::breaker::Change;
        let change = self.breaker.report(outcome.is_ok(), now_ns());
        let Some(file) = &self.s.breaker_file else { return };
        match (change, outcome) {
            (Change::Opened, Err(why)) => {
                tracing::error!(why, failures = BREAKER_THRESHOLD, "circuit open: the vault cannot commit");
                self.metrics.breaker_open.set(1);
                let text =
                    format!("PostgreSQL is unreachable: {BREAKER_THRESHOLD} failures in a row, the last: {why}\n");
                if let Err(e) = std::fs::write(file, text) {
                    tracing::error!(file = %file.display(), error = %e, "cannot publish the open circuit");
                }
            }
            (Change::Closed, _) => {
                tracing::warn!("circuit closed: the probe reached the database");
                self.metrics.breaker_open.set(0);
                let _ = std::fs::remove_file(file);
            }
            _ => {}
        }
    }

    async fn connect(&mut self) -> Result<(), VaultWriterError> {
        let (mut client, conn) = chronos_tls::pg::connect(&self.s.database_url)
            .await
            .map_err(|e| VaultWriterError::Unavailable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "database connection closed");
            }
        });
        if let Err(e) = chronos_vault::schema::migrate(&mut client).await {
            return Err(VaultWriterError::Unavailable(format!("schema: {e}")));
        }
        let mut vault = Vault::new(client).fenced(self.s.epoch);
        let head = vault.head().await.map_err(db_err)?;
        let head = match head {
            Some((seq, hash, size)) => ChainHead { seq, hash, size },
            None => ChainHead::genesis(&self.s.hasher, &self.s.origin),
        };
        match chronos_vault::lease::check(vault.client(), self.s.epoch).await {
            Ok(()) => {}
            Err(e @ VaultError::Fenced { .. }) => {
                let detail = serde_json::json!({ "reason": e.to_string() }).to_string();
                if let Err(a) = vault.audit("vault_writer", "vault_writer_refused", &detail).await {
                    tracing::error!(error = %a, "could not record the audit event");
                }
                return Err(VaultWriterError::Refused(e.to_string()));
            }
            Err(e) => return Err(db_err(e)),
        }
        // Rows of `logs` lost in a PostgreSQL crash are restored in the
        // background: `batches` is the truth and new batches do not need
        // the old rows, so commits go on meanwhile (above the gap, which
        // `logs_gap` records before anything is committed).
        if let Some((from, to)) = vault.logs_gap().await.map_err(db_err)?
            && self.rebuild.as_ref().is_none_or(|h| h.is_finished())
        {
            self.start_rebuild(from, to)?;
        }
        tracing::info!(seq = head.seq, size = head.size, "vault writer connected");
        self.metrics.committed_seq.set(head.seq as i64);
        self.metrics.db_up.set(1);
        self.head = Some(head);
        self.vault = Some(vault);
        self.db_ok = true;
        Ok(())
    }

    /// Starts restoring `logs` rows `[from, to)` on a thread of its own
    /// with its own connection; it retries through database outages and
    /// ends with an error only when a stored batch contradicts itself.
    fn start_rebuild(&mut self, from: u64, to: u64) -> Result<(), VaultWriterError> {
        tracing::warn!(
            from,
            to,
            "the logs table lacks these leaves' rows (PostgreSQL crashed?): restoring them in the background"
        );
        let (url, hasher, gauge) =
            (self.s.database_url.clone(), self.s.hasher.clone(), self.metrics.rebuild_remaining.clone());
        let faults = self.s.faults.clone();
        let epoch = self.s.epoch;
        gauge.set((to - from) as i64);
        let thread = std::thread::Builder::new().name("logs-rebuild".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| VaultError::Range(e.to_string()))?;
            rt.block_on(rebuild(&url, epoch, &hasher, &gauge, &faults))
        });
        match thread {
            Ok(h) => {
                self.rebuild = Some(h);
                Ok(())
            }
            Err(e) => Err(VaultWriterError::Refused(format!("cannot start the logs rebuild thread: {e}"))),
        }
    }

    /// Fails if the background rebuild ended with an error.
    fn check_rebuild(&mut self) -> Result<(), String> {
        if !self.rebuild.as_ref().is_some_and(|h| h.is_finished()) {
            return Ok(());
        }
        match self.rebuild.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Ok(()))) | None => Ok(()),
            Some(Ok(Err(e))) => Err(format!("rebuilding the logs table: {e}")),
            Some(Err(_)) => Err("the logs rebuild thread panicked".into()),
        }
    }

    async fn ping(&mut self) -> Result<(), tokio_postgres::Error> {
        match self.vault.as_mut() {
            Some(v) => v.client().simple_query("SELECT 1").await.map(drop),
            None => Ok(()),
        }
    }

    async fn prune(&mut self) {
        if let Some(v) = self.vault.as_mut() {
            match v.prune_keys(self.s.key_window).await {
                Ok(n) if n > 0 => tracing::debug!(deleted = n, "pruned idempotency keys"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed"),
            }
        }
    }

    async fn audit(&mut self, kind: &str, reason: &str) {
        tracing::error!(kind, reason, "refusing to write");
        if let Some(v) = self.vault.as_mut() {
            let detail = serde_json::json!({ "reason": reason }).to_string();
            if let Err(e) = v.audit("vault_writer", kind, &detail).await {
                tracing::error!(error = %e, "could not record the audit event");
            }
        }
    }

    /// Commits the sequenced batches of `pending` that are not committed
    /// yet; returns the answers to send.
    async fn flush(&mut self, pending: &[Pending]) -> Result<Flushed, FlushError> {
        let started = Instant::now();
        let mut head = self.head.ok_or_else(|| FlushError::Refused("flush before connecting".into()))?;
        let mut answers = Vec::with_capacity(pending.len());
        let mut decoded = Vec::with_capacity(pending.len());
        // Records at or below the committed head were committed before
        // (by us, before a crash lost their release): answered again only
        // if the stored batch is the very one sequenced (same chain value).
        let mut committed: Vec<(u64, [u8; 32])> = Vec::new();
        let mut refusals = Vec::new();
        for p in pending {
            match p.tag {
                tag::SEQUENCED => {
                    let s = Sequenced::decode(p.tag, &p.bytes).map_err(|e| FlushError::Refused(e.to_string()))?;
                    let ack = Ack {
                        request: s.hashed.reply.request,
                        seq: s.decided.seq,
                        first_leaf: s.decided.first_leaf,
                        leaf_count: s.hashed.len() as u64,
                        replay: false,
                    };
                    answers.push((s.hashed.reply.slot, Answer::Ack(ack)));
                    if s.decided.seq > head.seq {
                        decoded.push(s);
                    } else {
                        committed.push((s.decided.seq, s.decided.chain));
                    }
                }
                tag::DUPLICATE => {
                    let d = Duplicate::decode(p.tag, &p.bytes).map_err(|e| FlushError::Refused(e.to_string()))?;
                    let ack = Ack {
                        request: d.reply.request,
                        seq: d.seq,
                        first_leaf: d.first_leaf,
                        leaf_count: d.leaf_count,
                        replay: true,
                    };
                    answers.push((d.reply.slot, Answer::Ack(ack)));
                }
                tag::REFUSED => match Refused::decode(p.tag, &p.bytes) {
                    Ok(r) => {
                        refusals.push(r.reason.clone());
                        answers.push((r.reply.slot, Answer::Refused(r)));
                    }
                    // Nothing to store and no one to answer: the client times
                    // out and retries. Stopping here would stop the log.
                    Err(e) => {
                        tracing::error!(error = %e, "dropping a refusal that does not decode");
                        refusals.push(format!("a refusal record that does not decode was dropped: {e}"));
                    }
                },
                tag::QUARANTINED => {
                    let q = Quarantined::decode(p.tag, &p.bytes).map_err(|e| FlushError::Refused(e.to_string()))?;
                    let vault = self
                        .vault
                        .as_mut()
                        .ok_or_else(|| FlushError::Unavailable(VaultError::Range("not connected".into())))?;
                    // Kept before its client hears of it (the same body
                    // again, after a crash here, is the same row).
                    let id = chronos_vault::store::quarantine(
                        vault.client(),
                        &q.hashed.key,
                        q.reason,
                        q.hashed.len() as u64,
                        q.hashed.payload,
                    )
                    .await?;
                    let reason = format!(
                        "quarantined as #{id}: {}; nothing was written to the log, and a retry is quarantined \
                         again: an operator may release it (`chronos control quarantine release {id}`)",
                        q.reason
                    );
                    refusals.push(reason.clone());
                    answers.push((q.hashed.reply.slot, Answer::Refused(Refused::new(q.hashed.reply, 422, &reason))));
                }
                other => {
                    return Err(FlushError::Refused(format!("unexpected record tag {other} in the sequenced ring")));
                }
            }
        }
        if !committed.is_empty() {
            self.check_committed(&committed).await?;
        }
        let mut batches = Vec::with_capacity(decoded.len());
        let mut level0 = Vec::new();
        let mut upper = Vec::new();
        let mut events = 0u64;
        let mut bytes = 0u64;
        for s in &decoded {
            let d = &s.decided;
            let source =
                TimeSource::new(&d.source).map_err(|e| FlushError::Refused(format!("batch {}: {e}", d.seq)))?;
            let header = BatchHeader {
                seq: d.seq,
                first_leaf: d.first_leaf,
                leaf_count: s.hashed.len() as u64,
                root: Hash(s.hashed.root),
                time: TrustedTime { time: TimeNs(d.time_ns), uncertainty_ns: d.uncertainty_ns, source },
            };
            // The chain must extend what is stored: recompute the link.
            let next =
                head.next(&self.s.hasher, &header).map_err(|e| FlushError::Refused(format!("batch {}: {e}", d.seq)))?;
            if next.hash.0 != d.chain {
                return Err(FlushError::Refused(format!(
                    "batch {}: its chain value does not link to batch {}",
                    d.seq, head.seq
                )));
            }
            head = next;
            let leaves: Vec<Hash> = s.hashed.leaves().map(Hash).collect();
            for (i, l) in leaves.iter().enumerate() {
                level0.push((NodeId { level: 0, index: d.first_leaf + i as u64 }, *l));
            }
            upper.extend(d.nodes.iter().map(|n| (NodeId { level: n.level, index: n.index }, Hash(n.hash))));
            let evs: Vec<EventRef<'_>> =
                s.hashed.events().map(|e| EventRef { bytes: e.bytes, claimed_time_ns: e.claimed_time_ns }).collect();
            events += evs.len() as u64;
            bytes += evs.iter().map(|e| e.bytes.len() as u64).sum::<u64>();
            batches.push(BatchRecord {
                header,
                chain: next.hash,
                events: evs,
                leaf_hashes: leaves,
                payload: Some(s.hashed.payload),
                key: Some(s.hashed.key),
            });
        }
        if !batches.is_empty() {
            level0.extend(upper);
            let vault = self
                .vault
                .as_mut()
                .ok_or_else(|| FlushError::Unavailable(VaultError::Range("not connected".into())))?;
            self.s.faults.check("vault-writer.before-commit").map_err(FlushError::Injected)?;
            // If we crash during this call, PostgreSQL keeps all of it or
            // none of it; the records stay unreleased either way.
            vault.commit(&batches, &level0).await?;
            // Committed, not yet acknowledged: a failure here is "failed,
            // but persisted"; the retry finds the batches stored.
            self.s.faults.check("vault-writer.after-commit").map_err(FlushError::Injected)?;
            self.head = Some(head);
            self.metrics.flushes.inc();
            self.metrics.batches.inc_by(batches.len() as u64);
            self.metrics.events.inc_by(events);
            self.metrics.bytes.inc_by(bytes);
            self.metrics.committed_seq.set(head.seq as i64);
            self.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
        }
        Ok(Flushed { answers, refusals })
    }

    /// Leaves an audit event per refused body, at most
    /// [`AUDIT_PER_MINUTE`] a minute (a client must not be able to fill the
    /// table); the next event written says how many were left out.
    async fn audit_refusals(&mut self, reasons: &[String]) {
        let Some(v) = self.vault.as_mut() else { return };
        for reason in reasons {
            let Some(skipped) = self.audit_limit.admit() else {
                self.metrics.audit_dropped.inc();
                continue;
            };
            let detail = serde_json::json!({ "reason": reason, "not_recorded_before": skipped }).to_string();
            if let Err(e) = v.audit("vault_writer", "batch_refused", &detail).await {
                tracing::warn!(error = %e, "could not record the audit event of a refused body");
            }
        }
    }

    /// Refuses unless every `(seq, chain)` is stored with that chain value.
    async fn check_committed(&mut self, committed: &[(u64, [u8; 32])]) -> Result<(), FlushError> {
        let vault =
            self.vault.as_mut().ok_or_else(|| FlushError::Unavailable(VaultError::Range("not connected".into())))?;
        let seqs: Vec<u64> = committed.iter().map(|c| c.0).collect();
        let stored: std::collections::HashMap<u64, Hash> = vault.chains(&seqs).await?.into_iter().collect();
        for (seq, chain) in committed {
            match stored.get(seq) {
                Some(h) if h.0 == *chain => {}
                Some(_) => {
                    return Err(FlushError::Refused(format!(
                        "batch {seq} is stored with another chain value than the one sequenced: another writer \
                         committed this log (refusing to acknowledge its requests). If this instance was fenced \
                         out, its rings hold only records never acknowledged: remove /dev/shm/chronos-{}-* \
                         before starting it again",
                        self.s.names.sequenced().trim_end_matches("-seq")
                    )));
                }
                None => {
                    return Err(FlushError::Refused(format!(
                        "batch {seq} is at or below the committed head but is not stored (batches deleted?)"
                    )));
                }
            }
        }
        Ok(())
    }

    fn answer(&mut self, answers: &[(u16, Answer)]) {
        for (slot, answer) in answers {
            if *slot == chronos_wire::Reply::CONTROL_SLOT {
                // The orchestrator's own batch: it reads the commit from
                // the database, nobody waits on a ring.
                continue;
            }
            let Some(ring) = self.acks.get_mut(usize::from(*slot)) else {
                tracing::warn!(slot, "answer for an ingest slot outside the topology");
                continue;
            };
            let pushed = match answer {
                Answer::Ack(ack) => ring.try_push(tag::ACK, &ack.encode()),
                Answer::Refused(r) => {
                    let mut buf = vec![0u8; r.encoded_len()];
                    r.encode(&mut buf);
                    ring.try_push(tag::REFUSED, &buf)
                }
            };
            match pushed {
                Ok(()) => {}
                Err(PushError::Full) => {
                    self.metrics.acks_dropped.inc();
                }
                Err(e) => tracing::warn!(slot, error = %e, "ack ring failed"),
            }
        }
    }

    fn heartbeat(&mut self) {
        let upstream_ok = ring::inspect(&self.seq_ring).is_ok_and(|s| s.producer_alive);
        let status = Status {
            db_ok: self.db_ok,
            upstream_ok,
            committed_seq: self.head.map_or(0, |h| h.seq),
            sent_at_ns: now_ns(),
        };
        for ring in &mut self.acks {
            // A full ack ring means that ingest process is gone or stuck;
            // its next heartbeat gets through once it reads again.
            let _ = ring.try_push(tag::STATUS, &status.encode());
        }
    }
}

/// Restores every missing `logs` row, reconnecting through outages.
async fn rebuild(
    url: &str,
    epoch: u64,
    hasher: &chronos_ledger::TreeHasher,
    remaining: &Gauge,
    faults: &chronos_faults::Faults,
) -> Result<(), VaultError> {
    let started = Instant::now();
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let (client, conn) = chronos_tls::pg::connect(url).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            // Fenced like every other write: a writer that lost the log
            // stops restoring rows too (its successor restores them).
            let mut vault = Vault::new(client).fenced(epoch);
            let Some((from, to)) = vault.logs_gap().await? else { return Ok::<_, VaultError>(None) };
            // A pause here holds the rebuild open (tests: commits go on).
            let _ = faults.check("vault-writer.rebuild");
            let total = to - from;
            let mut last_report = Instant::now();
            let done = vault
                .rebuild_logs_range(hasher, from, to, |p| {
                    remaining.set(total.saturating_sub(p.leaves_done) as i64);
                    if last_report.elapsed() >= Duration::from_secs(1) {
                        tracing::info!(
                            leaves = p.leaves_done,
                            of = total,
                            batches = p.batches_done,
                            "restoring logs rows"
                        );
                        last_report = Instant::now();
                    }
                })
                .await?;
            Ok(Some(done))
        };
        match attempt.await {
            Ok(done) => {
                remaining.set(0);
                let leaves = done.map_or(0, |d| d.leaves_done);
                tracing::info!(leaves, seconds = started.elapsed().as_secs_f64(), "logs table rebuilt");
                return Ok(());
            }
            Err(e @ VaultError::Fenced { .. }) => {
                tracing::warn!(error = %e, "logs rebuild stopped: another instance holds the log now");
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, retry_in = ?backoff, "logs rebuild interrupted; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}

fn db_err(e: VaultError) -> VaultWriterError {
    VaultWriterError::Unavailable(e.to_string())
}
