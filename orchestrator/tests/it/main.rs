//! The orchestrator at its crash boundaries: restoring from a real
//! PostgreSQL (a private throwaway cluster) checked against the checkpoint
//! saved outside it, the idempotency window, and `run` on a thread of its
//! own between real shared-memory rings, the test playing the hashers (it
//! writes the `hashed` ring) and the vault writer (it reads the `seq` ring
//! and commits what it reads with `chronos_vault`). Every wait is on
//! something the test can see, with a deadline.
#![allow(clippy::unwrap_used)]

mod restore;
mod run;
mod validate;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chronos_faults::Faults;
use chronos_ipc::{Consumer, Producer, ring};
use chronos_ledger::payload::{self, EventRef};
use chronos_ledger::{
    BatchHeader, ChainHead, Checkpoint, CompactRange, Hash, HashAlg, NodeId, NoteSigner, TimeNs, TimeSource,
    TreeHasher, TrustedTime, tree,
};
use chronos_orchestrator::restore::Restored;
use chronos_orchestrator::{Metrics, OrchestratorError, Settings};
use chronos_pg_harness::TestDb;
use chronos_vault::store::{BatchRecord, Vault};
use chronos_wire::{EventMeta, Hashed, Ingest, Reply, RingNames, Sequenced, Topology, tag};
use tokio_postgres::NoTls;

pub const ORIGIN: &str = "example.com/orchestrator-test";

/// Deadline of every wait: generous, so that a loaded machine is slow, not failing.
pub const WITHIN: Duration = Duration::from_secs(30);

pub fn hasher() -> TreeHasher {
    TreeHasher::unkeyed(HashAlg::Sha256)
}

/// The log's signing key.
pub fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[7; 32]).unwrap()
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

/// A `HASHED` record as a hasher writes it, for request `reply`.
pub fn hashed(reply: Reply, key: &[u8; 32], events: &[&str]) -> Vec<u8> {
    let h = hasher();
    let metas: Vec<EventMeta<'_>> =
        events.iter().map(|e| EventMeta { bytes: e.as_bytes(), claimed_time_ns: None }).collect();
    let mut ingest = vec![0u8; Ingest::encoded_len(&metas)];
    Ingest::encode(&mut ingest, reply, key, &metas);
    let input = Ingest::decode(tag::INGEST, &ingest).unwrap();
    let leaves: Vec<Hash> = events.iter().map(|e| h.leaf(e.as_bytes())).collect();
    let refs: Vec<EventRef<'_>> =
        events.iter().map(|e| EventRef { bytes: e.as_bytes(), claimed_time_ns: None }).collect();
    let payload = payload::encode(&refs);
    let raw: Vec<[u8; 32]> = leaves.iter().map(|l| l.0).collect();
    let mut out = vec![0u8; Hashed::encoded_len(&input, payload.len())];
    Hashed::encode(&mut out, &input, &raw, &tree::root(&h, &leaves).0, &payload);
    out
}

/// The test's own connection to the log's database (migrated), with a
/// runtime whose worker drives it.
#[derive(Debug)]
pub struct Sql {
    pub rt: tokio::runtime::Runtime,
    pub vault: Vault,
}

impl Sql {
    fn open(url: &str) -> Sql {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let vault = rt.block_on(async {
            let (mut client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
            tokio::spawn(async move {
                let _ = conn.await;
            });
            chronos_vault::schema::migrate(&mut client).await.unwrap();
            Vault::new(client)
        });
        Sql { rt, vault }
    }

    pub fn i64(&mut self, sql: &str) -> i64 {
        let c = self.vault.client();
        self.rt.block_on(c.query_one(sql, &[])).unwrap_or_else(|e| panic!("{sql}: {e:?}")).get(0)
    }

    pub fn execute(&mut self, sql: &str) {
        let c = self.vault.client();
        self.rt.block_on(c.batch_execute(sql)).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Kinds and reasons of the audit events, oldest first.
    pub fn audit(&mut self) -> Vec<(String, String)> {
        let c = self.vault.client();
        let rows =
            self.rt.block_on(c.query("SELECT kind, detail->>'reason' FROM audit_events ORDER BY id", &[])).unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    }

    /// Commits a `SEQUENCED` record as the vault writer does (checking its
    /// chain link against `head` first); returns the head after it.
    pub fn commit_sequenced(&mut self, head: &ChainHead, record: &[u8]) -> ChainHead {
        let s = Sequenced::decode(tag::SEQUENCED, record).unwrap();
        let d = &s.decided;
        let header = BatchHeader {
            seq: d.seq,
            first_leaf: d.first_leaf,
            leaf_count: s.hashed.len() as u64,
            root: Hash(s.hashed.root),
            time: TrustedTime {
                time: TimeNs(d.time_ns),
                uncertainty_ns: d.uncertainty_ns,
                source: TimeSource::new(&d.source).unwrap(),
            },
        };
        let next = head.next(&hasher(), &header).unwrap();
        assert_eq!(next.hash.0, d.chain, "the sequenced chain value extends the stored chain");
        let leaves: Vec<Hash> = s.hashed.leaves().map(Hash).collect();
        let mut nodes: Vec<(NodeId, Hash)> =
            leaves.iter().enumerate().map(|(i, l)| (NodeId { level: 0, index: d.first_leaf + i as u64 }, *l)).collect();
        nodes.extend(d.nodes.iter().map(|n| (NodeId { level: n.level, index: n.index }, Hash(n.hash))));
        let rec = BatchRecord {
            header,
            chain: next.hash,
            events: s
                .hashed
                .events()
                .map(|e| EventRef { bytes: e.bytes, claimed_time_ns: e.claimed_time_ns })
                .collect(),
            leaf_hashes: leaves,
            payload: Some(s.hashed.payload),
            key: Some(s.hashed.key),
        };
        self.rt.block_on(self.vault.commit(&[rec], &nodes)).unwrap();
        next
    }
}

/// A log built with the ledger crate alone: its chain, its tree, and
/// checkpoints of it signed with the log's key.
#[derive(Debug, Clone)]
pub struct Log {
    pub head: ChainHead,
    range: CompactRange,
}

impl Log {
    pub fn empty() -> Log {
        Log { head: ChainHead::genesis(&hasher(), ORIGIN), range: CompactRange::new() }
    }

    pub fn root(&self) -> Hash {
        self.range.root(&hasher())
    }

    /// Appends a batch of `events`; returns what the vault stores for it.
    fn append<'e>(&mut self, events: &'e [String]) -> (BatchRecord<'e>, Vec<(NodeId, Hash)>) {
        let h = hasher();
        let leaves: Vec<Hash> = events.iter().map(|e| h.leaf(e.as_bytes())).collect();
        let header = BatchHeader {
            seq: self.head.seq + 1,
            first_leaf: self.head.size,
            leaf_count: events.len() as u64,
            root: tree::root(&h, &leaves),
            time: TrustedTime { time: TimeNs(self.head.seq + 1), uncertainty_ns: 0, source: TimeSource::local() },
        };
        self.head = self.head.next(&h, &header).unwrap();
        let mut nodes = Vec::new();
        for l in &leaves {
            self.range.append(&h, *l, |id, hash| {
                if chronos_vault::tiles::is_stored(id) {
                    nodes.push((id, *hash));
                }
            });
        }
        let rec = BatchRecord {
            header,
            chain: self.head.hash,
            events: events.iter().map(|e| EventRef { bytes: e.as_bytes(), claimed_time_ns: None }).collect(),
            key: Some(h.leaf(events.concat().as_bytes()).0),
            leaf_hashes: leaves,
            payload: None,
        };
        (rec, nodes)
    }

    /// Appends a batch of `n` events named after `name`, without storing it.
    pub fn grow(&mut self, name: &str, n: usize) {
        let events = events(name, n);
        self.append(&events);
    }

    /// Appends a batch of `n` events named after `name` and commits it.
    pub fn commit(&mut self, sql: &mut Sql, name: &str, n: usize) {
        let events = events(name, n);
        let (rec, nodes) = self.append(&events);
        sql.rt.block_on(sql.vault.commit(&[rec], &nodes)).unwrap();
    }

    /// A checkpoint of the log as it is now, signed by `key`.
    pub fn checkpoint_by(&self, key: &NoteSigner) -> String {
        Checkpoint {
            origin: key.name().to_owned(),
            size: self.head.size,
            root: self.root(),
            hash: HashAlg::Sha256,
            chain_seq: self.head.seq,
            chain_hash: self.head.hash,
            time: TrustedTime { time: TimeNs(1_000 + self.head.seq), uncertainty_ns: 0, source: TimeSource::local() },
        }
        .sign(key)
        .unwrap()
    }

    /// A checkpoint of the log as it is now, signed by the log's key.
    pub fn checkpoint(&self) -> String {
        self.checkpoint_by(&signer())
    }
}

fn events(name: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!(r#"{{"batch":"{name}","i":{i}}}"#)).collect()
}

/// A database and a directory for the files the orchestrator keeps.
#[derive(Debug)]
pub struct Rig {
    pub sql: Sql,
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    names: RingNames,
}

impl Rig {
    /// `name`: the database's name, also naming the rings (unique per test).
    pub fn new(name: &str) -> Rig {
        let db = TestDb::new(name);
        let sql = Sql::open(&db.url);
        let dir = tempfile::tempdir().unwrap();
        let names = RingNames::new(&format!("orchtest-{}-{name}", std::process::id()));
        Rig { sql, db, dir, names }
    }

    /// The checkpoint saved outside the database.
    pub fn saved(&self) -> PathBuf {
        self.dir.path().join("latest.checkpoint")
    }

    pub fn ready_file(&self) -> PathBuf {
        self.dir.path().join("orchestrator.ready")
    }

    pub fn settings(&self, faults: Faults) -> Settings {
        let signer = signer();
        Settings {
            names: self.names.clone(),
            topology: topology(),
            hasher: hasher(),
            origin: ORIGIN.into(),
            verifier_key: signer.verifier().to_string(),
            signer: Arc::new(signer),
            key_check: None,
            database_url: self.db.url.clone(),
            checkpoint_interval: Duration::from_millis(50),
            key_window: Duration::from_secs(900),
            key_limit: 1000,
            ready_file: self.ready_file(),
            checkpoint_file: self.saved(),
            epoch: 0,
            faults,
            clock: Arc::new(chronos_time::TimeReader::host()),
            control: chronos_orchestrator::plane::ControlSettings {
                socket: self.dir.path().join("control.sock"),
                genesis: Vec::new(),
                mode_file: self.dir.path().join("mode"),
                breaker_file: self.dir.path().join("vault.breaker"),
                accept_without_quorum: false,
            },
            claimed_time: Default::default(),
        }
    }

    /// What `run` does first: restore the sequencer's state and check it.
    pub fn restore(&self) -> Result<Restored, OrchestratorError> {
        self.sql.rt.block_on(chronos_orchestrator::restore::restore(&self.settings(Faults::none())))
    }

    /// The test's ends of the rings: it writes the hasher's ring and reads
    /// the vault writer's.
    pub fn rings(&self) -> Rings {
        let t = topology();
        let names = [self.names.hashed(0), self.names.sequenced()];
        for (ring, g) in names.iter().zip([t.hashed_ring(), t.sequenced_ring()]) {
            let _ = ring::remove_stale(ring);
            ring::open_or_create(ring, g.capacity, g.max_record).unwrap();
        }
        Rings {
            hashed: Some(Producer::attach(&names[0]).unwrap()),
            seq: Some(Consumer::attach(&names[1]).unwrap()),
            names,
        }
    }
}

/// The rings of one orchestrator; removed on drop.
#[derive(Debug)]
pub struct Rings {
    hashed: Option<Producer>,
    seq: Option<Consumer>,
    pub names: [String; 2],
}

impl Rings {
    /// Writes a `HASHED` record, as a hasher does.
    pub fn push_hashed(&mut self, record: &[u8]) {
        self.hashed.as_mut().unwrap().push(tag::HASHED, record, Instant::now() + WITHIN).unwrap();
    }

    /// Whether the orchestrator released everything written to it.
    pub fn hashed_released(&self) -> bool {
        self.hashed.as_ref().unwrap().is_drained()
    }

    /// The next record the orchestrator handed on (tag, bytes), not released.
    pub fn next_handed_on(&mut self) -> (u32, Vec<u8>) {
        let deadline = Instant::now() + WITHIN;
        let seq = self.seq.as_mut().unwrap();
        loop {
            let batch = seq.poll(1).unwrap();
            if let Some(rec) = batch.iter().next() {
                return (rec.tag, rec.payload.to_vec());
            }
            assert!(Instant::now() < deadline, "nothing handed on within {WITHIN:?}");
            seq.wait(Some(deadline)).unwrap();
        }
    }

    /// Releases what was read from the `seq` ring: the vault writer's
    /// "committed".
    pub fn release_handed_on(&mut self) {
        self.seq.as_mut().unwrap().release();
    }
}

impl Drop for Rings {
    fn drop(&mut self) {
        self.hashed = None;
        self.seq = None;
        for name in &self.names {
            if let Err(e) = ring::remove(name) {
                eprintln!("cannot remove ring {name}: {e}");
            }
        }
    }
}

/// `chronos_orchestrator::run` on its own thread. Dropping it stops it.
#[derive(Debug)]
pub struct Orchestrator {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), OrchestratorError>>>,
    pub metrics: Metrics,
}

impl Orchestrator {
    pub fn start(settings: Settings) -> Orchestrator {
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Metrics::default();
        let thread = {
            let (stop, metrics) = (stop.clone(), metrics.clone());
            std::thread::spawn(move || chronos_orchestrator::run(&settings, &stop, &metrics))
        };
        Orchestrator { stop, thread: Some(thread), metrics }
    }

    /// Waits for `run` to return without being asked to.
    pub fn exited(&mut self) -> Result<(), OrchestratorError> {
        wait_for("the orchestrator stops on its own", || self.thread.as_ref().unwrap().is_finished().then_some(()));
        self.thread.take().unwrap().join().unwrap()
    }

    /// Asks `run` to stop and waits for it.
    pub fn stop(mut self) -> Result<(), OrchestratorError> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reason of a refusal, or a panic naming what came instead.
pub fn refusal<T: std::fmt::Debug>(r: Result<T, OrchestratorError>) -> String {
    match r {
        Err(OrchestratorError::Refused(reason)) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}
