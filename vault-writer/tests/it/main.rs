//! The vault writer at its crash boundaries, against a real PostgreSQL (a
//! private throwaway cluster) and real shared-memory rings. `run` works on
//! a thread of its own; the test plays the orchestrator (it writes the
//! `seq` ring) and ingest (it reads the ack ring), and builds its records
//! with the ledger and wire crates alone. Every wait is on something the
//! test can see (an answer on the ack ring, a row, a metric, the thread's
//! result), with a deadline.
#![allow(clippy::unwrap_used)]

mod committed;
mod lease;
mod outage;
mod refusals;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chronos_faults::Faults;
use chronos_ipc::{Consumer, Producer, ring};
use chronos_ledger::payload::{self, EventRef};
use chronos_ledger::{
    BatchHeader, ChainHead, Hash, HashAlg, NodeId, TimeNs, TimeSource, TreeHasher, TrustedTime, tree,
};
use chronos_pg_harness::TestDb;
use chronos_vault::store::{BatchRecord, Vault};
use chronos_vault_writer::{FlushLimits, Metrics, Settings, VaultWriterError};
use chronos_wire::{Ack, EventMeta, Hashed, Ingest, Refused, Reply, RingNames, Sequenced, Status, Topology, tag};
use tokio_postgres::NoTls;

pub const ORIGIN: &str = "example.com/vault-writer-test";

/// Deadline of every wait: generous, so that a loaded machine is slow, not failing.
pub const WITHIN: Duration = Duration::from_secs(30);

pub fn hasher() -> TreeHasher {
    TreeHasher::unkeyed(HashAlg::Sha256)
}

fn topology() -> Topology {
    Topology { ingests: 1, hashers: 1, max_decoded: 1 << 16, max_events: 64 }
}

/// Polls `f` every 10 ms until it returns `Some`, failing after [`WITHIN`].
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WITHIN:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The test's own connection to the log's database (migrated), with a
/// runtime whose worker drives it.
#[derive(Debug)]
pub struct Sql {
    pub rt: tokio::runtime::Runtime,
    pub vault: Vault,
    url: String,
}

impl Sql {
    fn open(url: &str) -> Sql {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let mut client = rt.block_on(connect(url));
        rt.block_on(chronos_vault::schema::migrate(&mut client)).unwrap();
        Sql { rt, vault: Vault::new(client), url: url.to_owned() }
    }

    /// Another connection to the same database.
    pub fn connect(&self) -> tokio_postgres::Client {
        self.rt.block_on(connect(&self.url))
    }

    pub fn i64(&mut self, sql: &str) -> i64 {
        let c = self.vault.client();
        self.rt.block_on(c.query_one(sql, &[])).unwrap_or_else(|e| panic!("{sql}: {e:?}")).get(0)
    }

    /// The stored chain values, by seq.
    pub fn chains(&mut self) -> Vec<Hash> {
        let c = self.vault.client();
        let rows = self.rt.block_on(c.query("SELECT chain FROM batches ORDER BY seq", &[])).unwrap();
        rows.iter().map(|r| Hash::from_slice(r.get::<_, &[u8]>(0)).unwrap()).collect()
    }

    /// Details of the audit events of `kind`, oldest first.
    pub fn audit(&mut self, kind: &str) -> Vec<serde_json::Value> {
        let c = self.vault.client();
        let rows = self
            .rt
            .block_on(c.query("SELECT detail::text FROM audit_events WHERE kind = $1 ORDER BY id", &[&kind]))
            .unwrap();
        rows.iter().map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap()).collect()
    }

    /// Commits `b` as another writer (or an earlier run) would have.
    pub fn commit(&mut self, b: &Batch) {
        self.rt.block_on(self.vault.commit(&[b.record()], &b.tile_nodes())).unwrap();
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        // Tests cut connections on purpose: an error here is not a failure.
        let _ = conn.await;
    });
    client
}

/// What the vault writer put on the ack ring, heartbeats left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Ack(Ack),
    Refused(Refused),
}

/// A database, the rings of one instance, and the test's ends of them.
#[derive(Debug)]
pub struct Rig {
    pub sql: Sql,
    pub db: TestDb,
    names: RingNames,
    seq: Option<Producer>,
    acks: Option<Consumer>,
    answers: VecDeque<Answer>,
    /// Whether any heartbeat read from the ack ring said the database was up.
    pub db_ok_seen: bool,
}

impl Rig {
    /// `name`: the database's name, also naming the rings (unique per test).
    pub fn new(name: &str) -> Rig {
        let db = TestDb::new(name);
        let sql = Sql::open(&db.url);
        let names = RingNames::new(&format!("vwtest-{}-{name}", std::process::id()));
        let t = topology();
        for (ring, g) in [(names.sequenced(), t.sequenced_ring()), (names.ack(0), t.ack_ring())] {
            let _ = ring::remove_stale(&ring);
            ring::open_or_create(&ring, g.capacity, g.max_record).unwrap();
        }
        let seq = Producer::attach(&names.sequenced()).unwrap();
        let acks = Consumer::attach(&names.ack(0)).unwrap();
        Rig { sql, db, names, seq: Some(seq), acks: Some(acks), answers: VecDeque::new(), db_ok_seen: false }
    }

    pub fn settings(&self, epoch: u64, faults: Faults) -> Settings {
        Settings {
            names: self.names.clone(),
            topology: topology(),
            hasher: hasher(),
            origin: ORIGIN.into(),
            database_url: self.db.url.clone(),
            flush: FlushLimits { max_batches: 64, max_bytes: 1 << 20, max_age: Duration::from_millis(1) },
            key_window: Duration::from_secs(900),
            epoch,
            faults,
            breaker_file: None,
        }
    }

    fn push(&mut self, tag: u32, bytes: &[u8]) {
        self.seq.as_mut().unwrap().push(tag, bytes, Instant::now() + WITHIN).unwrap();
    }

    /// Hands `b` to the vault writer as the orchestrator does, answering
    /// request `request` of ingest slot 0.
    pub fn push_sequenced(&mut self, b: &Batch, request: u64) {
        self.push(tag::SEQUENCED, &b.sequenced(request));
    }

    pub fn push_refused(&mut self, r: &Refused) {
        let mut buf = vec![0u8; r.encoded_len()];
        r.encode(&mut buf);
        self.push(tag::REFUSED, &buf);
    }

    /// Reads what the ack ring holds now; true if it held anything.
    fn read_acks(&mut self) -> bool {
        let acks = self.acks.as_mut().unwrap();
        let batch = acks.poll(256).unwrap();
        let any = !batch.is_empty();
        for rec in batch.iter() {
            match rec.tag {
                tag::STATUS => self.db_ok_seen |= Status::decode(rec.tag, rec.payload).unwrap().db_ok,
                tag::ACK => self.answers.push_back(Answer::Ack(Ack::decode(rec.tag, rec.payload).unwrap())),
                tag::REFUSED => self.answers.push_back(Answer::Refused(Refused::decode(rec.tag, rec.payload).unwrap())),
                other => panic!("unexpected record tag {other} on the ack ring"),
            }
        }
        acks.release();
        any
    }

    /// The next answer on the ack ring, waiting for it.
    pub fn next_answer(&mut self) -> Answer {
        let deadline = Instant::now() + WITHIN;
        loop {
            self.read_acks();
            if let Some(a) = self.answers.pop_front() {
                return a;
            }
            assert!(Instant::now() < deadline, "no answer on the ack ring within {WITHIN:?}");
            self.acks.as_mut().unwrap().wait(Some(deadline)).unwrap();
        }
    }

    /// Every answer not read yet (call once the writer has stopped).
    pub fn remaining_answers(&mut self) -> Vec<Answer> {
        while self.read_acks() {}
        self.answers.drain(..).collect()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Our ends first: a ring is removed only when no live process (here:
        // no open description of ours) holds one of its roles.
        self.seq = None;
        self.acks = None;
        for name in [self.names.sequenced(), self.names.ack(0)] {
            if let Err(e) = ring::remove(&name) {
                eprintln!("cannot remove ring {name}: {e}");
            }
        }
    }
}

/// `chronos_vault_writer::run` on its own thread. Dropping it stops it.
#[derive(Debug)]
pub struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), VaultWriterError>>>,
    pub metrics: Metrics,
}

impl Writer {
    pub fn start(settings: Settings) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Metrics::default();
        let thread = {
            let (stop, metrics) = (stop.clone(), metrics.clone());
            std::thread::spawn(move || chronos_vault_writer::run(&settings, &stop, &metrics))
        };
        Writer { stop, thread: Some(thread), metrics }
    }

    /// Waits for `run` to return without being asked to (a refusal).
    pub fn exited(&mut self) -> Result<(), VaultWriterError> {
        wait_for("the vault writer stops on its own", || self.thread.as_ref().unwrap().is_finished().then_some(()));
        self.thread.take().unwrap().join().unwrap()
    }

    /// Asks `run` to stop (it drains its ring first) and waits for it.
    pub fn stop(mut self) -> Result<(), VaultWriterError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reason of a refusal, or a panic naming what came instead.
pub fn refusal(r: Result<(), VaultWriterError>) -> String {
    match r {
        Err(VaultWriterError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A batch as the hashers and the sequencer make it, built with the ledger
/// crate alone.
#[derive(Debug, Clone)]
pub struct Batch {
    pub header: BatchHeader,
    pub chain: Hash,
    events: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    key: [u8; 32],
}

impl Batch {
    /// The batch that follows `head`, holding `events`, stamped `time_ns`.
    pub fn after(head: &ChainHead, events: &[&str], time_ns: u64) -> Batch {
        let h = hasher();
        let events: Vec<Vec<u8>> = events.iter().map(|e| e.as_bytes().to_vec()).collect();
        let leaves: Vec<Hash> = events.iter().map(|e| h.leaf(e)).collect();
        let header = BatchHeader {
            seq: head.seq + 1,
            first_leaf: head.size,
            leaf_count: events.len() as u64,
            root: tree::root(&h, &leaves),
            time: TrustedTime { time: TimeNs(time_ns), uncertainty_ns: 0, source: TimeSource::local() },
        };
        let chain = head.next(&h, &header).unwrap().hash;
        // The idempotency key ingest would compute is of no concern here;
        // any value unique to the body does.
        let key = h.leaf(&events.concat()).0;
        Batch { header, chain, events, leaves, key }
    }

    /// The chain head after this batch.
    pub fn head(&self) -> ChainHead {
        ChainHead { seq: self.header.seq, hash: self.chain, size: self.header.first_leaf + self.header.leaf_count }
    }

    fn event_refs(&self) -> Vec<EventRef<'_>> {
        self.events.iter().map(|e| EventRef { bytes: e, claimed_time_ns: None }).collect()
    }

    /// Its `SEQUENCED` record, answering request `request` of ingest slot 0.
    pub fn sequenced(&self, request: u64) -> Vec<u8> {
        let metas: Vec<EventMeta<'_>> =
            self.events.iter().map(|e| EventMeta { bytes: e, claimed_time_ns: None }).collect();
        let mut ingest = vec![0u8; Ingest::encoded_len(&metas)];
        Ingest::encode(&mut ingest, Reply { slot: 0, request }, &self.key, &metas);
        let input = Ingest::decode(tag::INGEST, &ingest).unwrap();
        let payload = payload::encode(&self.event_refs());
        let leaves: Vec<[u8; 32]> = self.leaves.iter().map(|l| l.0).collect();
        let mut hashed = vec![0u8; Hashed::encoded_len(&input, payload.len())];
        Hashed::encode(&mut hashed, &input, &leaves, &self.header.root.0, &payload);
        let decided = Sequenced {
            seq: self.header.seq,
            first_leaf: self.header.first_leaf,
            time_ns: self.header.time.time.0,
            uncertainty_ns: self.header.time.uncertainty_ns,
            source: self.header.time.source.as_str().to_owned(),
            chain: self.chain.0,
            // Fewer than 256 leaves complete no node above level 0.
            nodes: Vec::new(),
        };
        let mut out = vec![0u8; decided.encoded_len(hashed.len())];
        decided.encode(&mut out, &hashed);
        out
    }

    /// The batch as [`Vault::commit`] takes it.
    pub fn record(&self) -> BatchRecord<'_> {
        BatchRecord {
            header: self.header.clone(),
            chain: self.chain,
            events: self.event_refs(),
            leaf_hashes: self.leaves.clone(),
            payload: None,
            key: Some(self.key),
        }
    }

    /// Its leaves as level-0 tile nodes, as the vault writer stores them.
    pub fn tile_nodes(&self) -> Vec<(NodeId, Hash)> {
        let first = self.header.first_leaf;
        self.leaves.iter().enumerate().map(|(i, l)| (NodeId { level: 0, index: first + i as u64 }, *l)).collect()
    }

    /// The answer the vault writer gives for it to request `request`.
    pub fn ack(&self, request: u64) -> Answer {
        Answer::Ack(Ack {
            request,
            seq: self.header.seq,
            first_leaf: self.header.first_leaf,
            leaf_count: self.header.leaf_count,
            replay: false,
        })
    }
}
