//! What a verification found: findings (tampering, with its kind and
//! place), the `logs` rows that could not be compared because the table is
//! being rebuilt, and a summary of the work done.

use std::fmt;

use chronos_ledger::Hash;
use serde::Serialize;

/// The kinds of tampering the verifier names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Stored bytes differ from what the ledger commits to: an event in
    /// `logs`, a batch's payload, a column of a row.
    Modified,
    /// A row the ledger commits to is missing: a `logs` row or a batch.
    Deleted,
    /// A row the ledger does not commit to: a `logs` row outside every
    /// batch, or a batch overlapping another.
    Inserted,
    /// Rows that are each genuine but in the wrong place.
    Reordered,
    /// A batch's stored root is not the root of its leaves, or a signed
    /// checkpoint's root is not the root of the stored tree.
    RootMismatch,
    /// A batch's chain value does not follow from the previous one and its
    /// header, or a signed checkpoint names a chain head the log does not have.
    ChainBroken,
    /// A checkpoint whose signature does not verify with the trusted key,
    /// or that carries no signature by it.
    BadSignature,
    /// The log is shorter than a checkpoint it signed: history was removed
    /// from the end.
    RolledBack,
    /// The log does not extend a checkpoint it signed (same size, other
    /// root, or a tree that does not contain it).
    Forked,
    /// A batch claims quorum time that its round's evidence does not
    /// support: the evidence is missing or altered, its selection does
    /// not recompute, or the batch's time lies outside what it allows.
    TimeUnproven,
    /// The log's control records do not tell a possible history: an event
    /// the log should have refused (unknown, revoked or unauthorized key,
    /// bad signature, replay, illegal in its mode), a mode transition the
    /// table does not give, or data written in a mode that refuses writes.
    ControlInvalid,
}

impl Kind {
    /// The name used in output (`root mismatch`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Modified => "modified",
            Kind::Deleted => "deleted",
            Kind::Inserted => "inserted",
            Kind::Reordered => "reordered",
            Kind::RootMismatch => "root mismatch",
            Kind::ChainBroken => "chain broken",
            Kind::BadSignature => "bad signature",
            Kind::RolledBack => "rolled back",
            Kind::Forked => "forked",
            Kind::TimeUnproven => "time unproven",
            Kind::ControlInvalid => "control invalid",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One piece of evidence of tampering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: Kind,
    /// The table where the evidence is.
    pub table: &'static str,
    /// The batch concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The leaf concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaf: Option<u64>,
    /// The tree size of the checkpoint concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
    /// What was seen, in words.
    pub detail: String,
    /// The hash of what is stored there, when it matters.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "hex_opt")]
    pub found: Option<Hash>,
    /// The hash the ledger commits to there.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "hex_opt")]
    pub expected: Option<Hash>,
}

fn hex_opt<S: serde::Serializer>(h: &Option<Hash>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_str(&h.to_hex()),
        None => s.serialize_none(),
    }
}

impl Finding {
    pub(crate) fn new(kind: Kind, table: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            kind,
            table,
            seq: None,
            leaf: None,
            checkpoint: None,
            detail: detail.into(),
            found: None,
            expected: None,
        }
    }

    pub(crate) fn seq(mut self, seq: u64) -> Finding {
        self.seq = Some(seq);
        self
    }

    pub(crate) fn leaf(mut self, leaf: u64) -> Finding {
        self.leaf = Some(leaf);
        self
    }

    pub(crate) fn checkpoint(mut self, size: u64) -> Finding {
        self.checkpoint = Some(size);
        self
    }

    pub(crate) fn hashes(mut self, found: Hash, expected: Hash) -> Finding {
        self.found = Some(found);
        self.expected = Some(expected);
        self
    }

    /// Where, in words: `batch 12, leaf 1234`.
    pub fn place(&self) -> String {
        let mut parts = Vec::new();
        if let Some(s) = self.seq {
            parts.push(format!("batch {s}"));
        }
        if let Some(l) = self.leaf {
            parts.push(format!("leaf {l}"));
        }
        if let Some(c) = self.checkpoint {
            parts.push(format!("checkpoint of size {c}"));
        }
        if parts.is_empty() {
            parts.push(format!("table {}", self.table));
        }
        parts.join(", ")
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({}): {}", self.kind, self.place(), self.table, self.detail)
    }
}

/// Overall outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything checked out.
    Intact,
    /// No finding, but `logs` lacks rows that are being (or wait to be)
    /// restored from the batches after a PostgreSQL crash (see
    /// [`LogsRebuild`]): everything the ledger commits to checked out, and
    /// every `logs` row present matches it, but the missing rows could not
    /// be compared. Never given when there is a finding.
    IntactLogsIncomplete,
    /// At least one finding.
    Tampered,
}

/// Why `logs` rows may be missing without being a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildCause {
    /// The vault writer's `logs_rebuild` row says it is restoring these
    /// leaves.
    LogsRebuildRow,
    /// `logs` holds no row at all while the batches hold leaves: PostgreSQL
    /// emptied it in crash recovery and the restore has not begun (or began
    /// again after another crash).
    LogsEmpty,
}

/// The leaves whose missing `logs` rows are not findings because the
/// table is being rebuilt from the batches' payloads, which are the truth
/// and are checked in full. One range: an empty `logs` table makes every
/// leaf pending, which covers whatever the `logs_rebuild` row says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogsRebuild {
    pub cause: RebuildCause,
    /// First pending leaf.
    pub from_leaf: u64,
    /// One past the last pending leaf (at most the log's end).
    pub to_leaf: u64,
    /// Rows of the range missing from `logs`.
    pub rows_missing: u64,
}

/// Counts and rates of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub batches: u64,
    pub logs: u64,
    /// Bytes of events and payloads read.
    pub bytes: u64,
    pub checkpoints: u64,
    /// Batches stamped with quorum time, each checked against its round's evidence.
    pub quorum_batches: u64,
    /// Leaves in the verified tree.
    pub tree_size: u64,
    /// Of them, control records (keys, signed control events, mode
    /// transitions), replayed and checked.
    pub control_records: u64,
    /// Leaves beyond the newest valid signed checkpoint: checked for
    /// consistency, but nothing signed vouches for them yet.
    pub unsigned_leaves: u64,
    pub seconds: f64,
    pub logs_per_second: f64,
    pub megabytes_per_second: f64,
}

/// The whole result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub status: Status,
    pub origin: String,
    pub hash: String,
    /// Where the trusted key came from.
    pub key_source: String,
    /// The first finding in log order: the first bad place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first: Option<Finding>,
    /// Findings in log order (at most [`MAX_FINDINGS`]).
    pub findings: Vec<Finding>,
    /// All findings, including those not kept.
    pub findings_total: u64,
    /// Things worth knowing that are not tampering.
    pub notes: Vec<String>,
    /// The part of `logs` being rebuilt after a PostgreSQL crash, if any:
    /// its missing rows are not findings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs_rebuild: Option<LogsRebuild>,
    pub summary: Summary,
}

/// Findings kept in a report; the count goes on.
pub const MAX_FINDINGS: usize = 1000;
