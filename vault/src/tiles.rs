//! The global tree's hashes as C2SP tlog-tiles, in the `tiles` table.
//!
//! Tile `(L, N)` holds the hashes of the tree's nodes at level `8L` with
//! indices `256N .. 256N + width`: level 0 tiles hold leaf hashes, level 1
//! tiles the roots of 256-leaf subtrees, and so on. A tile is partial
//! (`width < 256`) until its last node is complete, and only ever grows.
//! Any perfect node of the tree is either in a tile or the root of up to
//! 128 consecutive hashes of one tile, so a proof needs O(log n) tile
//! reads ([`fetch`]), done as one query.

use std::collections::{BTreeMap, HashMap};

use chronos_ledger::tree::{NodeId, NodeSource};
use chronos_ledger::{Hash, TreeHasher};
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::store::VaultError;

/// Hashes per full tile.
pub const TILE_WIDTH: u64 = 256;

/// Stored nodes are those on levels that are multiples of 8.
pub fn is_stored(id: NodeId) -> bool {
    id.level.is_multiple_of(8)
}

/// Extends a tile continued from an earlier commit.
pub(crate) const UPDATE: &str =
    "UPDATE tiles SET width = width + $3, hashes = hashes || $4 WHERE level = $1 AND idx = $2 AND width = $5";
/// Inserts the tiles that start in this commit.
pub(crate) const INSERT: &str = "INSERT INTO tiles (level, idx, width, hashes) \
     SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::smallint[], $4::bytea[]) ON CONFLICT DO NOTHING";

/// Appends newly completed nodes (all on stored levels, in the order the
/// compact range completed them) to their tiles. Each tile must grow from
/// exactly its stored width: anything else means the tiles and the tree
/// disagree, and nothing is written.
pub(crate) async fn append(
    tx: &Transaction<'_>,
    st: &crate::store::Statements,
    nodes: &[(NodeId, Hash)],
) -> Result<(), VaultError> {
    // (tile level, tile index) -> (first position, hashes)
    let mut groups: BTreeMap<(i16, i64), (u64, Vec<u8>)> = BTreeMap::new();
    for (id, h) in nodes {
        debug_assert!(is_stored(*id));
        let key = (i16::from(id.level / 8), (id.index / TILE_WIDTH) as i64);
        let pos = id.index % TILE_WIDTH;
        let g = groups.entry(key).or_insert_with(|| (pos, Vec::new()));
        if g.0 + (g.1.len() / 32) as u64 != pos {
            return Err(VaultError::Corrupt {
                seq: 0,
                reason: format!("tile nodes out of order at level {} index {}", id.level, id.index),
            });
        }
        g.1.extend_from_slice(&h.0);
    }
    // Tiles that start here go in with one statement; a tile continued
    // from an earlier commit (at most one per level: the last stored one)
    // is extended by one UPDATE each. Round trips, not bytes, dominated
    // when every tile had a statement of its own (BENCHMARKS.md).
    let (mut levels, mut idxs, mut widths, mut blobs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((level, idx), (start, hashes)) in groups {
        let added = (hashes.len() / 32) as i16;
        if start == 0 {
            levels.push(level);
            idxs.push(idx);
            widths.push(added);
            blobs.push(hashes);
            continue;
        }
        let start = start as i16;
        let n = tx.execute(&st.tile_update, &[&level, &idx, &added, &hashes, &start]).await?;
        if n != 1 {
            return Err(VaultError::Corrupt {
                seq: 0,
                reason: format!("tile ({level}, {idx}) does not end where the new nodes start ({start})"),
            });
        }
    }
    if !levels.is_empty() {
        let n = tx.execute(&st.tile_insert, &[&levels, &idxs, &widths, &blobs]).await?;
        if n != levels.len() as u64 {
            return Err(VaultError::Corrupt {
                seq: 0,
                reason: format!("{} of {} new tiles exist already", levels.len() as u64 - n, levels.len()),
            });
        }
    }
    Ok(())
}

/// The tiles needed for some nodes, fetched once; answers node lookups.
#[derive(Debug, Default)]
pub struct TileSet {
    tiles: HashMap<(u8, u64), Vec<Hash>>,
    hasher: Option<TreeHasher>,
}

/// The tile holding node `id`, or the tile whose hashes `id` is the root of.
fn tile_of(id: NodeId) -> (u8, u64, u64, u64) {
    let tl = id.level / 8;
    let below = u32::from(id.level % 8);
    // The node covers 2^below consecutive hashes of level 8·tl.
    let first = id.index << below;
    (tl, first / TILE_WIDTH, first % TILE_WIDTH, 1 << below)
}

/// Fetches, in one query, every tile needed to answer `ids`.
pub async fn fetch(client: &impl GenericClient, hasher: &TreeHasher, ids: &[NodeId]) -> Result<TileSet, VaultError> {
    let mut levels: Vec<i16> = Vec::new();
    let mut idxs: Vec<i64> = Vec::new();
    for id in ids {
        let (tl, n, _, _) = tile_of(*id);
        if !levels.iter().zip(&idxs).any(|(l, i)| *l == i16::from(tl) && *i == n as i64) {
            levels.push(i16::from(tl));
            idxs.push(n as i64);
        }
    }
    let rows = client
        .query(
            "SELECT t.level, t.idx, t.hashes FROM tiles t JOIN unnest($1::smallint[], $2::bigint[]) AS k(level, idx) \
             ON t.level = k.level AND t.idx = k.idx",
            &[&levels, &idxs],
        )
        .await?;
    let mut tiles = HashMap::new();
    for r in rows {
        let (level, idx, bytes): (i16, i64, Vec<u8>) = (r.get(0), r.get(1), r.get(2));
        let hashes = bytes.chunks_exact(32).filter_map(Hash::from_slice).collect();
        tiles.insert((level as u8, idx as u64), hashes);
    }
    Ok(TileSet { tiles, hasher: Some(hasher.clone()) })
}

/// A node the stored tiles do not (yet) hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tiles hold no node at level {} index {}", .0.level, .0.index)]
pub struct MissingTile(pub NodeId);

impl TileSet {
    /// Number of tiles fetched.
    pub fn tiles_fetched(&self) -> usize {
        self.tiles.len()
    }

    fn node(&self, id: NodeId) -> Result<Hash, MissingTile> {
        let (tl, n, pos, count) = tile_of(id);
        let tile = self.tiles.get(&(tl, n)).ok_or(MissingTile(id))?;
        let (pos, count) = (pos as usize, count as usize);
        let span = tile.get(pos..pos + count).ok_or(MissingTile(id))?;
        let hasher = self.hasher.as_ref().ok_or(MissingTile(id))?;
        // Fold the perfect subtree of `count` (a power of two) hashes.
        let mut level: Vec<Hash> = span.to_vec();
        while level.len() > 1 {
            level = level.chunks_exact(2).map(|p| hasher.node(&p[0], &p[1])).collect();
        }
        Ok(level[0])
    }
}

impl NodeSource for TileSet {
    type Error = MissingTile;
    fn nodes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MissingTile> {
        ids.iter().map(|id| self.node(*id)).collect()
    }
}

/// Reads the compact range of the tree of `size` leaves from the tiles:
/// what the sequencer restores at start.
pub async fn compact_range(
    client: &Client,
    hasher: &TreeHasher,
    size: u64,
) -> Result<chronos_ledger::CompactRange, VaultError> {
    let ids = chronos_ledger::CompactRange::node_ids_for(size);
    let set = fetch(client, hasher, &ids).await?;
    let hashes = set.nodes(&ids).map_err(|e| VaultError::Corrupt { seq: 0, reason: e.to_string() })?;
    chronos_ledger::CompactRange::from_parts(size, hashes)
        .ok_or_else(|| VaultError::Corrupt { seq: 0, reason: "compact range has the wrong number of hashes".into() })
}
