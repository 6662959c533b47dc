//! The rows the checks read, as stored: one type per table, and the three
//! ordered streams of one log.

use bytes::Bytes;

/// A row of `batches`, as stored.
#[derive(Debug, Clone)]
pub struct BatchRow {
    pub seq: i64,
    pub first_leaf: i64,
    pub leaf_count: i64,
    pub root: Bytes,
    pub chain: Bytes,
    pub time_ns: i64,
    pub uncertainty_ns: i64,
    pub time_source: Bytes,
    pub payload_codec: i16,
    pub payload: Bytes,
}

/// A row of `logs`, as stored.
#[derive(Debug, Clone)]
pub struct LogRow {
    pub leaf_index: i64,
    pub batch_seq: i64,
    /// `claimed_time` in PostgreSQL's binary form: microseconds since 2000-01-01.
    pub claimed_time_pg_us: Option<i64>,
    pub leaf_hash: Bytes,
    pub event: Bytes,
}

/// A row of `checkpoints`, as stored.
#[derive(Debug, Clone)]
pub struct CheckpointRow {
    pub id: i64,
    pub tree_size: i64,
    pub note: Bytes,
}

/// The `logs_rebuild` row (schema version 4): the vault writer is
/// restoring the `logs` rows of leaves `[from_leaf, to_leaf)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogsRebuildRow {
    pub from_leaf: i64,
    pub to_leaf: i64,
}

/// The `chronos_log` row.
#[derive(Debug, Clone)]
pub struct Identity {
    pub origin: String,
    pub hash_alg: String,
    pub key_check: Option<Vec<u8>>,
    pub verifier_key: String,
    pub genesis: Vec<u8>,
}

/// The rows of one log, as three ordered streams.
#[derive(Debug)]
pub struct Streams<B, L, C> {
    /// `batches` by seq.
    pub batches: B,
    /// `logs` by leaf index.
    pub logs: L,
    /// `checkpoints` by tree size.
    pub checkpoints: C,
    /// The `logs_rebuild` row, read with the streams' snapshot; `None`
    /// when there is none (or no such table, before schema version 4).
    pub logs_rebuild: Option<LogsRebuildRow>,
    /// The leaves the run expects (for progress only).
    pub total_leaves: u64,
}

pub(super) fn u64_of(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}
