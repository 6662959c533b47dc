//! Builds a ledger straight through the vault (no services): realistic log
//! events, batches with their chain and roots, tiles, and signed
//! checkpoints. Shared by the verifier's benchmark and tests.
#![allow(clippy::unwrap_used)]

use chronos_ledger::chain::{ChainHead, TimeNs, TimeSource, TrustedTime};
use chronos_ledger::payload::EventRef;
use chronos_ledger::tree::NodeId;
use chronos_ledger::{BatchHeader, Checkpoint, CompactRange, Hash, HashAlg, HashKey, NoteSigner, TreeHasher, tree};
use chronos_vault::store::{BatchRecord, LogIdentity, Vault};

pub const ORIGIN: &str = "bench.example/verify";

/// What to build.
#[derive(Debug)]
pub struct Spec {
    pub events: u64,
    pub batch: u64,
    pub alg: HashAlg,
    pub key: Option<[u8; 32]>,
    /// Sign a checkpoint after every this many commits of 16 batches (and at the end).
    pub checkpoint_every: u64,
}

/// A syslog-like or JSON application log line of 150–400 bytes, as
/// Vector's demo_logs produces, with a claimed time on most.
pub fn event(i: u64) -> (Vec<u8>, Option<i64>) {
    let t = 1_795_000_000_000_000_000i64 + (i as i64) * 1_000_003;
    let hosts = ["web-1", "web-2", "db-1", "cache-3", "edge-7"];
    let host = hosts[(i % 5) as usize];
    let pad = "q".repeat(((i * 7919) % 200) as usize);
    let ev = if i.is_multiple_of(3) {
        format!(
            r#"{{"message":"<{}>1 2026-11-21T10:00:00.{:06}Z {host} sshd {} - - Accepted publickey for user{} from 10.0.{}.{} port {} ssh2 {pad}","host":"{host}","source_type":"syslog"}}"#,
            i % 191,
            i % 1_000_000,
            1000 + i % 30000,
            i % 97,
            i % 256,
            (i * 7) % 256,
            1024 + i % 60000
        )
    } else {
        format!(
            r#"{{"timestamp":"2026-11-21T10:00:00.{:06}Z","level":"{}","service":"checkout","host":"{host}","trace_id":"{:016x}","msg":"order {} processed in {} ms","user_id":{},"extra":"{pad}"}}"#,
            i % 1_000_000,
            ["info", "warn", "error", "debug"][(i % 4) as usize],
            i.wrapping_mul(0x9e37_79b9_7f4a_7c15),
            i,
            i % 900,
            i % 100_000
        )
    };
    (ev.into_bytes(), (!i.is_multiple_of(7)).then_some(t))
}

/// A batch built but not committed yet: header, chain value, events, leaf hashes.
type Pending = (BatchHeader, Hash, Vec<(Vec<u8>, Option<i64>)>, Vec<Hash>);

/// Builds the ledger into an empty database (migrated here); returns the
/// signer.
pub async fn build(client: tokio_postgres::Client, spec: &Spec) -> NoteSigner {
    build_with(client, spec, event).await
}

/// [`build`] with leaf `i`'s bytes and claimed time from `event_of(i)`.
pub async fn build_with(
    client: tokio_postgres::Client,
    spec: &Spec,
    event_of: impl Fn(u64) -> (Vec<u8>, Option<i64>),
) -> NoteSigner {
    let mut client = client;
    chronos_vault::schema::migrate(&mut client).await.unwrap();
    let key = spec.key.map(HashKey::from_bytes);
    let h = TreeHasher::new(spec.alg, key.as_ref()).unwrap();
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    let mut vault = Vault::new(client);
    let genesis = chronos_ledger::chain::genesis(&h, ORIGIN);
    let vkey = signer.verifier().to_string();
    vault
        .ensure_identity(&LogIdentity {
            origin: ORIGIN,
            hash_alg: spec.alg.name(),
            key_check: h.key_check(),
            verifier_key: &vkey,
            genesis,
        })
        .await
        .unwrap();
    let mut head = ChainHead::genesis(&h, ORIGIN);
    let mut range = CompactRange::new();
    let mut next = 0u64;
    let mut groups_done = 0u64;
    while next < spec.events {
        // One transaction per group of batches, as the vault writer does.
        let mut group: Vec<Pending> = Vec::new();
        let mut nodes: Vec<(NodeId, Hash)> = Vec::new();
        while group.len() < 16 && next < spec.events {
            let n = spec.batch.min(spec.events - next);
            let evs: Vec<_> = (next..next + n).map(&event_of).collect();
            let leaves: Vec<Hash> = evs.iter().map(|(e, _)| h.leaf(e)).collect();
            let header = BatchHeader {
                seq: head.seq + 1,
                first_leaf: next,
                leaf_count: n,
                root: tree::root(&h, &leaves),
                time: TrustedTime {
                    time: TimeNs(1_795_000_000_000_000_000 + next),
                    uncertainty_ns: 1_000_000,
                    source: TimeSource::local(),
                },
            };
            head = head.next(&h, &header).unwrap();
            for l in &leaves {
                range.append(&h, *l, |id, hash| {
                    if chronos_vault::tiles::is_stored(id) {
                        nodes.push((id, *hash));
                    }
                });
            }
            group.push((header, head.hash, evs, leaves));
            next += n;
        }
        let records: Vec<BatchRecord<'_>> = group
            .iter()
            .map(|(header, chain, evs, leaves)| BatchRecord {
                header: header.clone(),
                chain: *chain,
                events: evs.iter().map(|(e, t)| EventRef { bytes: e, claimed_time_ns: *t }).collect(),
                leaf_hashes: leaves.clone(),
                payload: None,
                key: None,
            })
            .collect();
        vault.commit(&records, &nodes).await.unwrap();
        groups_done += 1;
        if groups_done.is_multiple_of(spec.checkpoint_every) || next == spec.events {
            let cp = Checkpoint {
                origin: ORIGIN.to_owned(),
                size: head.size,
                root: range.root(&h),
                hash: spec.alg,
                chain_seq: head.seq,
                chain_hash: head.hash,
                time: TrustedTime {
                    time: TimeNs(1_795_000_000_000_000_000 + next),
                    uncertainty_ns: 0,
                    source: TimeSource::local(),
                },
            };
            vault.store_checkpoint(head.size, head.seq, &cp.sign(&signer).unwrap()).await.unwrap();
        }
    }
    signer
}
