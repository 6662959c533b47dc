//! The read path: what is served to readers of the log (the bridge, and
//! `chronos prove`): checkpoints, tiles, entry bundles, events and proofs.
//!
//! Everything here reads logged tables only (`chronos_log`, `checkpoints`,
//! `tiles`, `batches`), never the UNLOGGED `logs` table, so that it
//! answers the same on a physical replica, where `logs` is empty. The one
//! exception, finding a leaf by its hash ([`leaf_by_hash`]), says so.
//!
//! Nothing here checks signatures or proofs: the callers check what they
//! serve against the log's verifier key with `ledger`, so that a damaged
//! row is refused, not handed out.

use chronos_ledger::tree::{self, NodeId, NodeSource};
use chronos_ledger::{Hash, HashAlg, TreeHasher};
use tokio_postgres::GenericClient;

use crate::store::VaultError;
use crate::tiles::TILE_WIDTH;

/// The log's identity, as `chronos init` stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogInfo {
    pub origin: String,
    pub alg: HashAlg,
    /// The checkpoint verifier key string stored with the log (readers
    /// should check against a key they got elsewhere).
    pub verifier_key: String,
}

/// A stored checkpoint: the signed note's text and where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub id: i64,
    pub tree_size: u64,
    pub note: String,
}

fn corrupt(reason: String) -> VaultError {
    VaultError::Corrupt { seq: 0, reason }
}

fn to_i64(v: u64, what: &str) -> Result<i64, VaultError> {
    i64::try_from(v).map_err(|_| VaultError::Range(format!("{what} {v} is above 2^63-1")))
}

/// The log's identity row.
pub async fn log_info(c: &impl GenericClient) -> Result<LogInfo, VaultError> {
    let row = c.query_one("SELECT origin, hash_alg, verifier_key FROM chronos_log WHERE id = 1", &[]).await?;
    let alg: String = row.get(1);
    let alg = HashAlg::from_name(&alg).ok_or_else(|| corrupt(format!("chronos_log.hash_alg {alg:?} is unknown")))?;
    Ok(LogInfo { origin: row.get(0), alg, verifier_key: row.get(2) })
}

fn checkpoint_row(r: &tokio_postgres::Row) -> StoredCheckpoint {
    StoredCheckpoint { id: r.get(0), tree_size: r.get::<_, i64>(1).max(0) as u64, note: r.get(2) }
}

/// The newest checkpoint (largest tree, then latest signed).
pub async fn newest_checkpoint(c: &impl GenericClient) -> Result<Option<StoredCheckpoint>, VaultError> {
    let row = c
        .query_opt("SELECT id, tree_size, note FROM checkpoints ORDER BY tree_size DESC, id DESC LIMIT 1", &[])
        .await?;
    Ok(row.as_ref().map(checkpoint_row))
}

/// The log's mode as its newest committed control record of a transition
/// says (`None`: never changed, so `active`).
pub async fn recorded_mode(c: &impl GenericClient) -> Result<Option<&'static str>, VaultError> {
    let row = c
        .query_opt("SELECT record FROM control_log WHERE kind = 'transition' ORDER BY leaf_index DESC LIMIT 1", &[])
        .await?;
    let Some(row) = row else { return Ok(None) };
    let bytes: Vec<u8> = row.get(0);
    match chronos_control::record::Record::parse(&bytes) {
        Ok(chronos_control::record::Record::Transition { to, .. }) => Ok(Some(to.name())),
        Ok(_) | Err(_) => Err(VaultError::Range("control_log: a transition row that is not one".into())),
    }
}

/// Checkpoints stored after the one with id `after`, oldest first, at most `limit`.
pub async fn checkpoints_after(
    c: &impl GenericClient,
    after: i64,
    limit: i64,
) -> Result<Vec<StoredCheckpoint>, VaultError> {
    let rows = c
        .query("SELECT id, tree_size, note FROM checkpoints WHERE id > $1 ORDER BY id LIMIT $2", &[&after, &limit])
        .await?;
    Ok(rows.iter().map(checkpoint_row).collect())
}

/// The first `width` hashes of tile `(level, index)`, concatenated, if the
/// stored tile holds that many yet. Tiles only grow, so a prefix never
/// changes once it exists.
pub async fn tile(c: &impl GenericClient, level: u8, index: u64, width: u16) -> Result<Option<Vec<u8>>, VaultError> {
    let row = c
        .query_opt(
            "SELECT width, hashes FROM tiles WHERE level = $1 AND idx = $2",
            &[&i16::from(level), &to_i64(index, "tile index")?],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (stored, hashes): (i16, Vec<u8>) = (row.get(0), row.get(1));
    if hashes.len() != stored as usize * 32 {
        return Err(corrupt(format!("tile ({level}, {index}) holds {} bytes for width {stored}", hashes.len())));
    }
    if (stored as u16) < width {
        return Ok(None);
    }
    Ok(Some(hashes[..usize::from(width) * 32].to_vec()))
}

/// The events of leaves `first .. first + count`, in order, read from the
/// batches' payloads (`max_decoded` bounds one payload's inflated size).
/// `None` if the log does not hold them all yet.
pub async fn events(
    c: &impl GenericClient,
    first: u64,
    count: u64,
    max_decoded: usize,
) -> Result<Option<Vec<Vec<u8>>>, VaultError> {
    let end = first.checked_add(count).ok_or_else(|| VaultError::Range(format!("leaf {first} + {count}")))?;
    let rows = c
        .query(
            "SELECT seq, first_leaf, leaf_count, payload_codec, payload FROM batches \
             WHERE first_leaf < $2 AND first_leaf + leaf_count > $1 ORDER BY first_leaf",
            &[&to_i64(first, "leaf")?, &to_i64(end, "leaf")?],
        )
        .await?;
    let mut out = Vec::with_capacity(count as usize);
    let mut next = first;
    for r in &rows {
        let (seq, batch_first, n, codec, payload): (i64, i64, i64, i16, Vec<u8>) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let (batch_first, n) = (batch_first as u64, n as u64);
        if batch_first > next {
            return Err(corrupt(format!("no batch holds leaf {next} (batch {seq} starts at {batch_first})")));
        }
        let events = chronos_ledger::payload::decode(codec, &payload, n, max_decoded)
            .map_err(|e| VaultError::Corrupt { seq: seq as u64, reason: e.to_string() })?;
        for e in events.into_iter().skip((next - batch_first) as usize) {
            if next == end {
                break;
            }
            out.push(e.bytes);
            next += 1;
        }
    }
    Ok((next == end).then_some(out))
}

/// The number of leaves committed (the tree size the tiles and batches
/// reach, which may be ahead of the newest checkpoint).
pub async fn committed_leaves(c: &impl GenericClient) -> Result<u64, VaultError> {
    let n: i64 = c.query_one("SELECT coalesce(max(first_leaf + leaf_count), 0) FROM batches", &[]).await?.get(0);
    Ok(n.max(0) as u64)
}

/// The first leaf whose hash is `leaf`, if any. It scans the `logs`
/// table (an index on leaf hashes would slow every commit), so it finds
/// nothing on a physical replica, where `logs` is empty.
pub async fn leaf_by_hash(c: &impl GenericClient, leaf: &Hash) -> Result<Option<u64>, VaultError> {
    let row = match c
        .query_opt("SELECT leaf_index FROM logs WHERE leaf_hash = $1 ORDER BY leaf_index LIMIT 1", &[&&leaf.0[..]])
        .await
    {
        Ok(r) => r,
        // A hot standby refuses to read an UNLOGGED table (0A000): there
        // the leaf cannot be found by its hash, only by its index.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FEATURE_NOT_SUPPORTED) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64))
}

/// Nodes of the tree read from the tiles, in the order of `ids`.
pub async fn nodes(c: &impl GenericClient, hasher: &TreeHasher, ids: &[NodeId]) -> Result<Vec<Hash>, VaultError> {
    let set = crate::tiles::fetch(c, hasher, ids).await?;
    set.nodes(ids).map_err(|e| corrupt(format!("the tiles table: {e}")))
}

/// The leaf hash of `index` and its inclusion path in the tree of `size`
/// leaves (RFC 6962 §2.1.1), from the tiles.
pub async fn inclusion(
    c: &impl GenericClient,
    hasher: &TreeHasher,
    index: u64,
    size: u64,
) -> Result<(Hash, Vec<Hash>), VaultError> {
    let plan = tree::inclusion_plan(index, size).map_err(|e| VaultError::Range(e.to_string()))?;
    let mut ids = plan.node_ids().to_vec();
    ids.push(NodeId { level: 0, index });
    let hashes = nodes(c, hasher, &ids).await?;
    let (leaf, path) = hashes.split_last().ok_or_else(|| corrupt("no leaf hash".into()))?;
    let path = plan.assemble(hasher, path).map_err(|e| corrupt(e.to_string()))?;
    Ok((*leaf, path))
}

/// The consistency proof from the tree of `old` leaves to that of `new`
/// (RFC 6962 §2.1.2), from the tiles.
pub async fn consistency(
    c: &impl GenericClient,
    hasher: &TreeHasher,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, VaultError> {
    let plan = tree::consistency_plan(old, new).map_err(|e| VaultError::Range(e.to_string()))?;
    let hashes = nodes(c, hasher, plan.node_ids()).await?;
    plan.assemble(hasher, &hashes).map_err(|e| corrupt(e.to_string()))
}

/// Hashes per full tile, for callers that split leaf ranges into bundles.
pub const BUNDLE: u64 = TILE_WIDTH;
