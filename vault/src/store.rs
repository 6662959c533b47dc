//! Writing batches into PostgreSQL, and rebuilding the UNLOGGED `logs`
//! table from the logged `batches` table after a PostgreSQL crash.
//!
//! Durability contract: when [`Vault::commit`] returns `Ok`, the batches'
//! rows in `batches` are committed (WAL-logged and, with PostgreSQL's
//! default `synchronous_commit`, flushed), so they survive any crash; their
//! `logs` rows survive everything but a PostgreSQL crash, after which
//! [`Vault::rebuild_logs`] restores them from `batches` (the range being
//! restored is recorded in `logs_rebuild`, and new batches can be committed
//! meanwhile). When it returns
//! `Err`, nothing of the call was committed: every flush is one transaction.

use std::pin::pin;

use bytes::{BufMut as _, Bytes, BytesMut};
use futures_util::SinkExt as _;
use std::time::Duration;

use chronos_ledger::tree::NodeId;
use chronos_ledger::{BatchHeader, Hash, TreeHasher, tree};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement, ToStatement, Transaction};

use chronos_ledger::payload::{self, CODEC_ZSTD_V1, EventRef};

/// Leaves per partition of `logs` (2^26, as in migration 1).
pub const PARTITION_LEAVES: u64 = 1 << 26;
/// Largest decoded payload accepted when reading batches back.
pub const MAX_PAYLOAD: usize = 256 << 20;

/// Why the vault could not do its job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// PostgreSQL failed or is unreachable; nothing of this call was
    /// committed. Retry with backoff (ingest answers 503 meanwhile).
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    /// A value does not fit the schema (a u64 above 2^63-1).
    #[error("value out of range for PostgreSQL: {0}")]
    Range(String),
    /// Stored data contradicts itself: stop and alert (tampering or a bug).
    #[error("corrupt batch {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
    /// Another instance took this log's writer lease: nothing was
    /// committed, and nothing more may be (see [`crate::lease`]).
    #[error("fenced out: this writer holds epoch {ours} of the log's writer lease, {holder} now holds epoch {found}")]
    Fenced { ours: u64, found: u64, holder: String },
}

impl VaultError {
    /// Whether retrying later (on a new connection) may succeed: the
    /// connection broke, the server is shutting down or out of resources,
    /// or the transaction lost a serialization race. Decided by SQLSTATE,
    /// never by the variant alone: a constraint violation, a data error, a
    /// permission or schema error is a refusal that a retry only repeats
    /// (and a unique-key violation on `batches` means another writer).
    pub fn is_transient(&self) -> bool {
        match self {
            VaultError::Database(e) => match e.code() {
                // No SQLSTATE: the connection or the socket failed.
                None => true,
                Some(code) => {
                    let c = code.code();
                    c.starts_with("08") // connection exception
                        || c.starts_with("53") // insufficient resources
                        || c.starts_with("57P") // admin/crash shutdown, cannot connect now
                        || c.starts_with("58") // system error (I/O)
                        || c == "25006" // read-only transaction (a standby during failover)
                        || c == "40001" // serialization failure
                        || c == "40P01" // deadlock detected
                        || c == "55P03" // lock not available
                        || c == "57014" // query cancelled (statement timeout)
                }
            },
            VaultError::Range(_) | VaultError::Corrupt { .. } | VaultError::Fenced { .. } => false,
        }
    }
}

/// One batch to store: its chained header, chain value, events and their
/// leaf hashes (computed by the hasher).
#[derive(Debug, Clone)]
pub struct BatchRecord<'a> {
    pub header: BatchHeader,
    pub chain: Hash,
    pub events: Vec<EventRef<'a>>,
    pub leaf_hashes: Vec<Hash>,
    /// The canonical payload of `events` if already encoded (the hasher
    /// does it, off the writer's path); `None` encodes it here.
    pub payload: Option<&'a [u8]>,
    /// The idempotency key of the body this batch came from, remembered in
    /// `ingest_keys` in the same transaction.
    pub key: Option<[u8; 32]>,
}

fn i64_of(what: &str, v: u64) -> Result<i64, VaultError> {
    i64::try_from(v).map_err(|_| VaultError::Range(format!("{what} = {v}")))
}

/// The log's identity as `chronos_log` stores it.
#[derive(Debug, Clone, Copy)]
pub struct LogIdentity<'a> {
    pub origin: &'a str,
    pub hash_alg: &'a str,
    pub key_check: Option<[u8; 8]>,
    pub verifier_key: &'a str,
    pub genesis: Hash,
}

/// An idempotency key still inside its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentKey {
    pub key: [u8; 32],
    pub seq: u64,
    pub first_leaf: u64,
    pub leaf_count: u64,
    /// How long ago it was received.
    pub age: Duration,
}

/// Progress of a rebuild, reported after each chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RebuildProgress {
    pub batches_done: u64,
    pub batches_total: u64,
    pub leaves_done: u64,
}

/// The vault: a PostgreSQL connection with the schema migrated.
#[derive(Debug)]
pub struct Vault {
    client: Client,
    /// Partitions of `logs` are known to exist below this leaf index.
    partitions_upto: u64,
    /// The commit's statements, prepared once per connection: a statement
    /// given as text is parsed anew each time, one more round trip each.
    statements: Option<Statements>,
    /// The writer lease's epoch every commit must still hold (services
    /// always set it; tools and tests that write alone may not).
    epoch: Option<u64>,
}

/// Prepared statements of [`Vault::commit`].
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    copy_batches: Statement,
    copy_logs: Statement,
    keys: Statement,
    pub(crate) tile_update: Statement,
    pub(crate) tile_insert: Statement,
}

const COPY_BATCHES: &str = "COPY batches (seq, first_leaf, leaf_count, root, chain, time_ns, uncertainty_ns, \
                            time_source, payload_codec, payload) FROM STDIN BINARY";
const COPY_LOGS: &str = "COPY logs (leaf_index, batch_seq, claimed_time, leaf_hash, event) FROM STDIN BINARY";
const INSERT_KEYS: &str = "INSERT INTO ingest_keys (key, seq) SELECT * FROM unnest($1::bytea[], $2::bigint[]) \
                           ON CONFLICT (key) DO UPDATE SET seq = EXCLUDED.seq, received_at = now()";

impl Statements {
    async fn prepare(client: &Client) -> Result<Statements, VaultError> {
        Ok(Statements {
            copy_batches: client.prepare(COPY_BATCHES).await?,
            copy_logs: client.prepare(COPY_LOGS).await?,
            keys: client.prepare(INSERT_KEYS).await?,
            tile_update: client.prepare(crate::tiles::UPDATE).await?,
            tile_insert: client.prepare(crate::tiles::INSERT).await?,
        })
    }
}

impl Vault {
    /// Wraps a connection whose schema is migrated.
    pub fn new(client: Client) -> Vault {
        Vault { client, partitions_upto: 0, statements: None, epoch: None }
    }

    /// Makes every later commit and stored checkpoint check, in its own
    /// transaction, that the log's writer lease is still at `epoch`.
    pub fn fenced(mut self, epoch: u64) -> Vault {
        self.epoch = Some(epoch);
        self
    }

    /// The connection.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Records the log's identity on first use, or checks it against the
    /// stored one: a database holding another log (or the same log under a
    /// changed hash, key or origin) is refused before anything is written.
    pub async fn ensure_identity(&mut self, id: &LogIdentity<'_>) -> Result<(), VaultError> {
        let key_check = id.key_check.map(|k| k.to_vec());
        self.client
            .execute(
                "INSERT INTO chronos_log (origin, hash_alg, key_check, verifier_key, genesis) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (id) DO NOTHING",
                &[&id.origin, &id.hash_alg, &key_check, &id.verifier_key, &id.genesis.0.as_slice()],
            )
            .await?;
        let row = self
            .client
            .query_one("SELECT origin, hash_alg, key_check, verifier_key, genesis FROM chronos_log", &[])
            .await?;
        let stored: (String, String, Option<Vec<u8>>, String, Vec<u8>) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let want = (
            id.origin.to_owned(),
            id.hash_alg.to_owned(),
            key_check,
            id.verifier_key.to_owned(),
            id.genesis.0.to_vec(),
        );
        let fields = ["origin", "hash algorithm", "hash key fingerprint", "verifier key", "genesis"];
        let differs: Vec<&str> =
            [stored.0 != want.0, stored.1 != want.1, stored.2 != want.2, stored.3 != want.3, stored.4 != want.4]
                .iter()
                .zip(fields)
                .filter_map(|(d, f)| d.then_some(f))
                .collect();
        if differs.is_empty() {
            return Ok(());
        }
        Err(VaultError::Corrupt {
            seq: 0,
            reason: format!(
                "this database holds another log (stored origin {:?}); differing: {}",
                stored.0,
                differs.join(", ")
            ),
        })
    }

    /// The stored chain head: the last batch's seq, chain value and end
    /// leaf (the tree size); `None` for an empty log.
    pub async fn head(&mut self) -> Result<Option<(u64, Hash, u64)>, VaultError> {
        let row = self
            .client
            .query_opt("SELECT seq, chain, first_leaf + leaf_count FROM batches ORDER BY seq DESC LIMIT 1", &[])
            .await?;
        row.map(|r| {
            let seq: i64 = r.get(0);
            let chain = Hash::from_slice(r.get::<_, &[u8]>(1))
                .ok_or_else(|| VaultError::Corrupt { seq: seq as u64, reason: "chain is not 32 bytes".into() })?;
            Ok((seq as u64, chain, r.get::<_, i64>(2) as u64))
        })
        .transpose()
    }

    /// The chain value and end leaf of batch `seq`.
    pub async fn batch_chain(&mut self, seq: u64) -> Result<Option<(Hash, u64)>, VaultError> {
        let row = self
            .client
            .query_opt("SELECT chain, first_leaf + leaf_count FROM batches WHERE seq = $1", &[&i64_of("seq", seq)?])
            .await?;
        row.map(|r| {
            let chain = Hash::from_slice(r.get::<_, &[u8]>(0))
                .ok_or_else(|| VaultError::Corrupt { seq, reason: "chain is not 32 bytes".into() })?;
            Ok((chain, r.get::<_, i64>(1) as u64))
        })
        .transpose()
    }

    /// Idempotency keys received within `window`, with their batch's seq,
    /// first leaf and leaf count, oldest first.
    pub async fn recent_keys(&mut self, window: Duration) -> Result<Vec<RecentKey>, VaultError> {
        let secs = window.as_secs_f64();
        let rows = self
            .client
            .query(
                "SELECT k.key, k.seq, b.first_leaf, b.leaf_count, extract(epoch FROM now() - k.received_at)::float8 \
                 FROM ingest_keys k JOIN batches b USING (seq) \
                 WHERE k.received_at > now() - make_interval(secs => $1) ORDER BY k.received_at",
                &[&secs],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.get(1);
                let key: [u8; 32] = r.get::<_, &[u8]>(0).try_into().map_err(|_| VaultError::Corrupt {
                    seq: seq as u64,
                    reason: "idempotency key is not 32 bytes".into(),
                })?;
                Ok(RecentKey {
                    key,
                    seq: seq as u64,
                    first_leaf: r.get::<_, i64>(2) as u64,
                    leaf_count: r.get::<_, i64>(3) as u64,
                    age: Duration::from_secs_f64(r.get::<_, f64>(4).max(0.0)),
                })
            })
            .collect()
    }

    /// Deletes idempotency keys older than `window`; returns how many.
    pub async fn prune_keys(&mut self, window: Duration) -> Result<u64, VaultError> {
        let secs = window.as_secs_f64();
        Ok(self
            .client
            .execute("DELETE FROM ingest_keys WHERE received_at < now() - make_interval(secs => $1)", &[&secs])
            .await?)
    }

    /// Leaves an audit event (`detail` is a JSON object's text).
    pub async fn audit(&mut self, source: &str, kind: &str, detail: &str) -> Result<(), VaultError> {
        self.client
            .execute(
                "INSERT INTO audit_events (source, kind, detail) VALUES ($1, $2, $3::text::jsonb)",
                &[&source, &kind, &detail],
            )
            .await?;
        Ok(())
    }

    /// Stores a signed checkpoint (the exact note text).
    pub async fn store_checkpoint(&mut self, tree_size: u64, chain_seq: u64, note: &str) -> Result<(), VaultError> {
        let tx = self.client.transaction().await?;
        if let Some(epoch) = self.epoch {
            crate::lease::check(&tx, epoch).await?;
        }
        tx.execute(
            "INSERT INTO checkpoints (tree_size, chain_seq, note) VALUES ($1, $2, $3)",
            &[&i64_of("tree_size", tree_size)?, &i64_of("chain_seq", chain_seq)?, &note],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The stored chain values of batches `seqs` (those that exist).
    pub async fn chains(&mut self, seqs: &[u64]) -> Result<Vec<(u64, Hash)>, VaultError> {
        let seqs: Vec<i64> = seqs.iter().map(|&s| i64_of("seq", s)).collect::<Result<_, _>>()?;
        let rows = self.client.query("SELECT seq, chain FROM batches WHERE seq = ANY($1)", &[&seqs]).await?;
        rows.iter()
            .map(|r| {
                let seq = r.get::<_, i64>(0) as u64;
                let chain = Hash::from_slice(r.get::<_, &[u8]>(1))
                    .ok_or_else(|| VaultError::Corrupt { seq, reason: "chain is not 32 bytes".into() })?;
                Ok((seq, chain))
            })
            .collect()
    }

    /// The latest stored checkpoint note, if any.
    pub async fn latest_checkpoint(&mut self) -> Result<Option<String>, VaultError> {
        let row = self.client.query_opt("SELECT note FROM checkpoints ORDER BY id DESC LIMIT 1", &[]).await?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Commits batches in one transaction: their `batches` rows with the
    /// canonical payload, and their `logs` rows, both by binary COPY, and
    /// the tree nodes they completed on tile levels (`tile_nodes`, in the
    /// order the compact range completed them; see [`crate::tiles`]).
    pub async fn commit(
        &mut self,
        batches: &[BatchRecord<'_>],
        tile_nodes: &[(NodeId, Hash)],
    ) -> Result<(), VaultError> {
        let Some(last) = batches.last() else { return Ok(()) };
        let end = last.header.end_leaf().ok_or_else(|| VaultError::Range("leaf index overflow".into()))?;
        let st = match &self.statements {
            Some(st) => st.clone(),
            None => self.statements.insert(Statements::prepare(&self.client).await?).clone(),
        };
        let tx = self.client.transaction().await?;
        if let Some(epoch) = self.epoch {
            crate::lease::check(&tx, epoch).await?;
        }
        let upto = ensure_partitions(&tx, self.partitions_upto, end).await?;
        copy_batches(&tx, &st.copy_batches, batches).await?;
        copy_logs(&tx, &st.copy_logs, batches.iter().flat_map(|b| rows_of(b))).await?;
        crate::tiles::append(&tx, &st, tile_nodes).await?;
        insert_keys(&tx, &st.keys, batches).await?;
        insert_control(&tx, batches).await?;
        // If we crash here, before the commit, PostgreSQL discards all of it;
        // the caller has acknowledged nothing yet and sends it again.
        tx.commit().await?;
        self.partitions_upto = upto;
        Ok(())
    }

    /// The leaf index after the last stored batch, and the one after the
    /// last row of `logs` (they differ after a PostgreSQL crash emptied it).
    pub async fn ends(&mut self) -> Result<(u64, u64), VaultError> {
        let last =
            self.client.query_opt("SELECT first_leaf + leaf_count FROM batches ORDER BY seq DESC LIMIT 1", &[]).await?;
        let batches_end = last.map_or(0, |row| row.get::<_, i64>(0) as u64);
        let logs_end: Option<i64> = self.client.query_one("SELECT max(leaf_index) + 1 FROM logs", &[]).await?.get(0);
        Ok((batches_end, logs_end.map_or(0, |v| v as u64)))
    }

    /// Whether `logs` lacks rows that `batches` holds.
    pub async fn logs_need_rebuild(&mut self) -> Result<bool, VaultError> {
        Ok(self.logs_gap().await?.is_some())
    }

    /// The leaves `[from, to)` whose `logs` rows are missing, recorded in
    /// `logs_rebuild` so that the range survives a restart of the writer
    /// (new batches are committed above `to` meanwhile, so the end of
    /// `logs` no longer shows the gap) and so that readers know it.
    ///
    /// Call before committing anything on this connection. A `logs` table
    /// with no row at all while batches hold leaves was emptied by a
    /// PostgreSQL crash (crash recovery resets UNLOGGED tables, rows being
    /// restored included): everything is missing, whatever the row said.
    pub async fn logs_gap(&mut self) -> Result<Option<(u64, u64)>, VaultError> {
        let (batches_end, logs_end) = self.ends().await?;
        let recorded = self
            .client
            .query_opt("SELECT from_leaf, to_leaf FROM logs_rebuild WHERE id = 1 AND from_leaf < to_leaf", &[])
            .await?
            .map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64));
        let gap = if logs_end == 0 && batches_end > 0 {
            Some((0, batches_end))
        } else if recorded.is_some() {
            recorded
        } else if logs_end < batches_end {
            Some((logs_end, batches_end))
        } else {
            None
        };
        if let Some((from, to)) = gap
            && recorded != gap
        {
            self.client
                .execute(
                    "INSERT INTO logs_rebuild (id, from_leaf, to_leaf) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO UPDATE SET from_leaf = $1, to_leaf = $2, started_at = now()",
                    &[&i64_of("from", from)?, &i64_of("to", to)?],
                )
                .await?;
        }
        Ok(gap)
    }

    /// Restores the `logs` rows missing after a PostgreSQL crash (see
    /// [`Vault::logs_gap`]).
    pub async fn rebuild_logs(
        &mut self,
        hasher: &TreeHasher,
        progress: impl FnMut(RebuildProgress),
    ) -> Result<RebuildProgress, VaultError> {
        match self.logs_gap().await? {
            Some((from, to)) => self.rebuild_logs_range(hasher, from, to, progress).await,
            None => Ok(RebuildProgress { batches_done: 0, batches_total: 0, leaves_done: 0 }),
        }
    }

    /// Restores the `logs` rows of the batches in leaves `[from, to)` from
    /// their canonical payloads, checking each batch's root on the way.
    /// Works in chunks of batches, each its own transaction that also
    /// advances `logs_rebuild.from_leaf`; calls `progress` after each; safe
    /// to interrupt and run again, and to run beside commits above `to`.
    pub async fn rebuild_logs_range(
        &mut self,
        hasher: &TreeHasher,
        from: u64,
        to: u64,
        mut progress: impl FnMut(RebuildProgress),
    ) -> Result<RebuildProgress, VaultError> {
        let (mut from, to) = (i64_of("leaf", from)?, i64_of("leaf", to)?);
        let total: i64 = self
            .client
            .query_one("SELECT count(*) FROM batches WHERE first_leaf >= $1 AND first_leaf < $2", &[&from, &to])
            .await?
            .get(0);
        let mut done = RebuildProgress { batches_done: 0, batches_total: total as u64, leaves_done: 0 };
        loop {
            let rows = self
                .client
                .query(
                    "SELECT seq, first_leaf, leaf_count, root, payload_codec, payload FROM batches \
                     WHERE first_leaf >= $1 AND first_leaf < $2 ORDER BY first_leaf LIMIT 64",
                    &[&from, &to],
                )
                .await?;
            if rows.is_empty() {
                self.client.execute("DELETE FROM logs_rebuild WHERE id = 1 AND from_leaf >= to_leaf", &[]).await?;
                return Ok(done);
            }
            let mut chunk: Vec<(i64, i64, Vec<payload::Event>, Vec<Hash>)> = Vec::with_capacity(rows.len());
            let mut end = 0u64;
            for row in &rows {
                let (seq, first, count): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
                let corrupt = |reason: String| VaultError::Corrupt { seq: seq as u64, reason };
                if first != from {
                    return Err(corrupt(format!("the batches leave leaves {from}..{first} uncovered")));
                }
                let events = payload::decode(row.get(4), row.get::<_, &[u8]>(5), count as u64, MAX_PAYLOAD)
                    .map_err(|e| corrupt(e.to_string()))?;
                let leaves: Vec<Hash> = events.iter().map(|e| hasher.leaf(&e.bytes)).collect();
                let root =
                    Hash::from_slice(row.get::<_, &[u8]>(3)).ok_or_else(|| corrupt("root is not 32 bytes".into()))?;
                if tree::root(hasher, &leaves) != root {
                    return Err(corrupt("its payload does not hash to its stored root".into()));
                }
                from = first + count;
                end = from as u64;
                chunk.push((seq, first, events, leaves));
            }
            let tx = self.client.transaction().await?;
            if let Some(epoch) = self.epoch {
                crate::lease::check(&tx, epoch).await?;
            }
            self.partitions_upto = ensure_partitions(&tx, self.partitions_upto, end).await?;
            let rows = chunk.iter().flat_map(|(seq, first, events, leaves)| {
                events.iter().zip(leaves).enumerate().map(move |(i, (e, h))| LogRow {
                    leaf_index: first + i as i64,
                    batch_seq: *seq,
                    claimed_time_ns: e.claimed_time_ns,
                    leaf_hash: *h,
                    event: &e.bytes,
                })
            });
            copy_logs(&tx, COPY_LOGS, rows).await?;
            tx.execute("UPDATE logs_rebuild SET from_leaf = $1 WHERE id = 1", &[&from]).await?;
            tx.commit().await?;
            done.batches_done += chunk.len() as u64;
            done.leaves_done += chunk.iter().map(|c| c.2.len() as u64).sum::<u64>();
            progress(done);
        }
    }
}

/// Creates the UNLOGGED partitions of `logs` needed below leaf `end`.
async fn ensure_partitions(tx: &Transaction<'_>, known: u64, end: u64) -> Result<u64, VaultError> {
    let mut upto = known;
    while upto < end {
        let n = upto / PARTITION_LEAVES;
        let (lo, hi) = (n * PARTITION_LEAVES, (n + 1) * PARTITION_LEAVES);
        tx.batch_execute(&format!(
            "CREATE UNLOGGED TABLE IF NOT EXISTS logs_p{n} PARTITION OF logs FOR VALUES FROM ({lo}) TO ({hi})"
        ))
        .await?;
        upto = hi;
    }
    Ok(upto)
}

/// Remembers the batches' idempotency keys. A key already present (its
/// window passed in the sequencer's memory, but not yet pruned here) now
/// names the newer batch.
async fn insert_keys(tx: &Transaction<'_>, sql: &Statement, batches: &[BatchRecord<'_>]) -> Result<(), VaultError> {
    let (keys, seqs): (Vec<&[u8]>, Vec<i64>) =
        batches.iter().filter_map(|b| b.key.as_ref().map(|k| (k.as_slice(), b.header.seq as i64))).unzip();
    if keys.is_empty() {
        return Ok(());
    }
    tx.execute(sql, &[&keys, &seqs]).await?;
    Ok(())
}

struct LogRow<'a> {
    leaf_index: i64,
    batch_seq: i64,
    claimed_time_ns: Option<i64>,
    leaf_hash: Hash,
    event: &'a [u8],
}

/// Copies the batches' control records into `control_log` (rare: only
/// the orchestrator's own batches hold them; one byte compared per event).
async fn insert_control(tx: &Transaction<'_>, batches: &[BatchRecord<'_>]) -> Result<(), VaultError> {
    for b in batches {
        for (i, e) in b.events.iter().enumerate() {
            if !chronos_control::record::is_control(e.bytes) {
                continue;
            }
            let record = chronos_control::record::Record::parse(e.bytes).map_err(|err| {
                VaultError::Range(format!("batch {}: a control record that does not parse: {err}", b.header.seq))
            })?;
            tx.execute(
                "INSERT INTO control_log (leaf_index, batch_seq, kind, record) VALUES ($1, $2, $3, $4)",
                &[
                    &i64_of("leaf index", b.header.first_leaf + i as u64)?,
                    &i64_of("seq", b.header.seq)?,
                    &record.kind(),
                    &e.bytes,
                ],
            )
            .await?;
        }
    }
    Ok(())
}

/// A quarantined body.
#[derive(Debug, Clone, PartialEq)]
pub struct QuarantineRow {
    pub id: u64,
    pub digest: [u8; 32],
    pub reason: String,
    pub event_count: u64,
    /// The events as a canonical payload (codec 1).
    pub payload: Vec<u8>,
    /// Seconds since the Unix epoch.
    pub received_at: f64,
}

/// Keeps a body refused for a policy reason; the same body (`digest`)
/// kept before gives its row's id again.
pub async fn quarantine(
    client: &tokio_postgres::Client,
    digest: &[u8; 32],
    reason: &str,
    event_count: u64,
    payload: &[u8],
) -> Result<u64, VaultError> {
    let row = client
        .query_one(
            // Looked up first, so that the same body again takes no id from
            // the sequence (ids stay dense for people); the vault writer is
            // the only writer.
            "WITH found AS (SELECT id FROM quarantine WHERE digest = $1), \
             inserted AS (INSERT INTO quarantine (digest, reason, event_count, payload) \
                          SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM found) RETURNING id) \
             SELECT id FROM found UNION ALL SELECT id FROM inserted",
            &[&&digest[..], &reason, &i64_of("event count", event_count)?, &payload],
        )
        .await?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Quarantined bodies: one by id, or all (`None`) in id order.
pub async fn quarantined(client: &tokio_postgres::Client, id: Option<u64>) -> Result<Vec<QuarantineRow>, VaultError> {
    let id = id.map(|i| i64_of("quarantine id", i)).transpose()?;
    let rows = client
        .query(
            "SELECT id, digest, reason, event_count, payload, extract(epoch FROM received_at)::float8 FROM quarantine \
             WHERE $1::bigint IS NULL OR id = $1 ORDER BY id",
            &[&id],
        )
        .await?;
    rows.iter()
        .map(|r| {
            let digest: Vec<u8> = r.get(1);
            Ok(QuarantineRow {
                id: r.get::<_, i64>(0) as u64,
                digest: digest
                    .try_into()
                    .map_err(|_| VaultError::Range("a quarantine digest is not 32 bytes".into()))?,
                reason: r.get(2),
                event_count: r.get::<_, i64>(3) as u64,
                payload: r.get(4),
                received_at: r.get(5),
            })
        })
        .collect()
}

/// The log's control records in leaf order, with their batch's time (ns).
pub async fn control_records(client: &tokio_postgres::Client) -> Result<Vec<(u64, u64, Vec<u8>)>, VaultError> {
    let rows = client
        .query(
            "SELECT c.leaf_index, b.time_ns, c.record FROM control_log c JOIN batches b ON b.seq = c.batch_seq \
             ORDER BY c.leaf_index",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64, r.get(2))).collect())
}

fn rows_of<'a>(b: &'a BatchRecord<'a>) -> impl Iterator<Item = LogRow<'a>> + 'a {
    // Lengths were checked against leaf_count in copy_batches.
    b.events.iter().zip(&b.leaf_hashes).enumerate().map(move |(i, (e, h))| LogRow {
        leaf_index: b.header.first_leaf as i64 + i as i64,
        batch_seq: b.header.seq as i64,
        claimed_time_ns: e.claimed_time_ns,
        leaf_hash: *h,
        event: e.bytes,
    })
}

async fn copy_batches(tx: &Transaction<'_>, sql: &Statement, batches: &[BatchRecord<'_>]) -> Result<(), VaultError> {
    let sink = tx.copy_in(sql).await?;
    let types = [
        Type::INT8,
        Type::INT8,
        Type::INT8,
        Type::BYTEA,
        Type::BYTEA,
        Type::INT8,
        Type::INT8,
        Type::TEXT,
        Type::INT2,
        Type::BYTEA,
    ];
    let mut w = pin!(BinaryCopyInWriter::new(sink, &types));
    for b in batches {
        let h = &b.header;
        if b.events.len() as u64 != h.leaf_count || b.leaf_hashes.len() as u64 != h.leaf_count {
            return Err(VaultError::Corrupt {
                seq: h.seq,
                reason: format!(
                    "{} events and {} hashes for {} leaves",
                    b.events.len(),
                    b.leaf_hashes.len(),
                    h.leaf_count
                ),
            });
        }
        let encoded;
        let payload = match b.payload {
            Some(p) => p,
            None => {
                encoded = payload::encode(&b.events);
                &encoded
            }
        };
        let row: [&(dyn ToSql + Sync); 10] = [
            &i64_of("seq", h.seq)?,
            &i64_of("first_leaf", h.first_leaf)?,
            &i64_of("leaf_count", h.leaf_count)?,
            &h.root.0.as_slice(),
            &b.chain.0.as_slice(),
            &i64_of("time_ns", h.time.time.0)?,
            &i64_of("uncertainty_ns", h.time.uncertainty_ns)?,
            &h.time.source.as_str(),
            &CODEC_ZSTD_V1,
            &payload,
        ];
        w.as_mut().write(&row).await?;
    }
    w.finish().await?;
    Ok(())
}

/// Bytes of binary COPY data sent to PostgreSQL at a time. The generic
/// `BinaryCopyInWriter` sends every 4 KiB, one message to the connection
/// task each; `logs` is most of a flush's bytes, so its rows are encoded
/// here into large chunks (BENCHMARKS.md, "bench").
const COPY_CHUNK: usize = 1 << 20;

/// Binary COPY header: signature, flags, header extension length.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Microseconds from PostgreSQL's epoch (2000-01-01) as `timestamptz`
/// stores them, truncated toward that epoch as postgres-types does for a
/// `SystemTime` (so rows read the same as before this encoder).
fn pg_timestamp_micros(unix_ns: i64) -> i64 {
    const PG_EPOCH_NS: i128 = 946_684_800 * 1_000_000_000;
    ((i128::from(unix_ns) - PG_EPOCH_NS) / 1000) as i64
}

/// Appends one `logs` row in binary COPY format.
fn encode_log_row(buf: &mut BytesMut, r: &LogRow<'_>) {
    buf.put_i16(5);
    buf.put_i32(8);
    buf.put_i64(r.leaf_index);
    buf.put_i32(8);
    buf.put_i64(r.batch_seq);
    match r.claimed_time_ns {
        Some(ns) => {
            buf.put_i32(8);
            buf.put_i64(pg_timestamp_micros(ns));
        }
        None => buf.put_i32(-1),
    }
    buf.put_i32(32);
    buf.put_slice(&r.leaf_hash.0);
    // Events are at most ingest's limit (≤ 1 GiB), within i32.
    buf.put_i32(r.event.len() as i32);
    buf.put_slice(r.event);
}

async fn copy_logs<'a, T: ToStatement + ?Sized>(
    tx: &Transaction<'_>,
    sql: &T,
    rows: impl Iterator<Item = LogRow<'a>>,
) -> Result<(), VaultError> {
    let sink = tx.copy_in::<T, Bytes>(sql).await?;
    let mut sink = pin!(sink);
    let mut buf = BytesMut::with_capacity(COPY_CHUNK + (64 << 10));
    buf.put_slice(COPY_HEADER);
    for r in rows {
        encode_log_row(&mut buf, &r);
        if buf.len() >= COPY_CHUNK {
            sink.send(buf.split().freeze()).await?;
            buf.reserve(COPY_CHUNK + (64 << 10));
        }
    }
    buf.put_i16(-1);
    sink.send(buf.freeze()).await?;
    sink.as_mut().finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn system_time(ns: i64) -> std::time::SystemTime {
        let d = std::time::Duration::from_nanos(ns.unsigned_abs());
        if ns >= 0 { std::time::UNIX_EPOCH + d } else { std::time::UNIX_EPOCH - d }
    }

    #[test]
    fn timestamps_encode_as_postgres_types_encodes_a_system_time() {
        for ns in [
            0,
            1,
            -1,
            999,
            -999,
            1_795_000_000_123_456_789,
            946_684_800_000_000_000,
            946_684_799_999_999_999,
            946_684_800_000_000_001,
            -2_208_988_800_000_000_123,
            i64::MAX,
            i64::MIN + 1,
        ] {
            let mut want = BytesMut::new();
            system_time(ns).to_sql(&Type::TIMESTAMPTZ, &mut want).unwrap();
            assert_eq!(&want[..], &pg_timestamp_micros(ns).to_be_bytes(), "ns = {ns}");
        }
    }

    #[test]
    fn a_log_row_is_five_length_prefixed_fields() {
        let mut b = BytesMut::new();
        let row =
            |t| LogRow { leaf_index: 7, batch_seq: 3, claimed_time_ns: t, leaf_hash: Hash([9; 32]), event: b"{}" };
        encode_log_row(&mut b, &row(None));
        let mut want = vec![0, 5];
        want.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 3]);
        want.extend([0xff, 0xff, 0xff, 0xff]);
        want.extend([0, 0, 0, 32]);
        want.extend([9; 32]);
        want.extend([0, 0, 0, 2, b'{', b'}']);
        assert_eq!(&b[..], &want[..]);
        let mut t = BytesMut::new();
        encode_log_row(&mut t, &row(Some(946_684_800_000_001_000)));
        assert_eq!(&t[26..38], &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(COPY_HEADER.len(), 19);
    }
}
