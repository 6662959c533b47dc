//! The checks, independent of where the rows come from.
//!
//! Three stages run at once, joined by bounded channels, so memory stays
//! constant whatever the log's size:
//!
//! 1. the *assembler* merges the `batches` stream (by seq) with the `logs`
//!    stream (by leaf index) into units of one batch and its rows;
//! 2. the *checker* takes windows of units and checks them in parallel
//!    (rayon): decode the payload, hash each event, compare every `logs` row
//!    with the payload, compute the batch root;
//! 3. the *sequencer* (the calling thread) takes the results in order and
//!    checks what is sequential: the chain, the global tree (a compact
//!    range, O(log n) memory) and the signed checkpoints at their sizes.
//!
//! The payload and the `logs` rows are two copies of the same events; the
//! batch root and the chain decide which copy is genuine, so one altered
//! byte is reported once, where it is, with the right kind.
//!
//! `logs` is UNLOGGED: PostgreSQL empties it in crash recovery, and the
//! vault writer restores it from the payloads while new batches keep
//! coming, recording the leaves still to restore in `logs_rebuild`. Rows
//! missing there (or everywhere, when `logs` is empty) are counted as
//! pending, not reported as deleted; everything else is checked as usual.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;
use chronos_ledger::chain::{TimeNs, TimeSource, TrustedTime, genesis, link};
use chronos_ledger::payload::{self, Event};
use chronos_ledger::tree::{self, CompactRange};
use chronos_ledger::{BatchHeader, Checkpoint, Hash, HashAlg, HashKey, NoteVerifier, Span, TreeHasher, VerifyError};
use rayon::prelude::*;

use crate::Error;
use crate::report::{Finding, Kind, LogsRebuild, MAX_FINDINGS, RebuildCause, Report, Status, Summary};

/// Largest batch the verifier accepts (ingest's hard limit on events per
/// body is 2^24). A `leaf_count` above it is reported, not trusted: it
/// bounds the memory of one unit.
pub const MAX_BATCH_LEAVES: u64 = 1 << 24;
/// Largest decoded payload of one batch.
pub const MAX_DECODED: usize = 1 << 30;
const WINDOW_BYTES: usize = 16 << 20;
const WINDOW_UNITS: usize = 256;
const CHECKPOINT_BLOCK: usize = 256;
/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

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

/// What to trust, given by the user.
#[derive(Debug, Default)]
pub struct Options {
    /// The log's verifier key; `None` reads it from `chronos_log`.
    pub trusted_key: Option<NoteVerifier>,
    /// The hash key of a keyed log.
    pub hash_key: Option<HashKey>,
    /// A signed checkpoint saved earlier: the log must extend it.
    pub saved_checkpoint: Option<String>,
}

/// Receives progress from a run.
pub trait Progress: Sync {
    /// The number of leaves the run expects to check.
    fn start(&self, _total_leaves: u64) {}
    /// Leaves and bytes checked since the last call.
    fn advance(&self, _leaves: u64, _bytes: u64) {}
}

/// No progress display.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// Findings with their position in the log, kept in log order.
#[derive(Debug, Default)]
struct Findings {
    kept: Vec<(u64, u64, Finding)>,
    total: u64,
}

impl Findings {
    fn push(&mut self, pos: u64, f: Finding) {
        self.total += 1;
        if self.kept.len() < MAX_FINDINGS {
            let n = self.kept.len() as u64;
            self.kept.push((pos, n, f));
        }
    }

    fn extend(&mut self, other: Vec<(u64, Finding)>) {
        for (pos, f) in other {
            self.push(pos, f);
        }
    }

    /// Rows that are genuine but elsewhere: an event found at one place and
    /// expected at another. Two `modified` findings whose hashes cross are
    /// a move, not two edits.
    fn classify_moves(&mut self) {
        let expected: HashMap<Hash, usize> = self
            .kept
            .iter()
            .enumerate()
            .filter(|(_, (_, _, f))| f.kind == Kind::Modified && f.table == "logs")
            .filter_map(|(i, (_, _, f))| Some((f.expected?, i)))
            .collect();
        let mut moved = Vec::new();
        for (i, (_, _, f)) in self.kept.iter().enumerate() {
            if f.kind == Kind::Modified
                && f.table == "logs"
                && let Some(&j) = f.found.as_ref().and_then(|h| expected.get(h))
                && j != i
            {
                moved.push((i, j));
            }
        }
        for (i, j) in moved {
            let other = self.kept[j].2.leaf;
            let f = &mut self.kept[i].2;
            f.kind = Kind::Reordered;
            if let Some(l) = other {
                f.detail = format!("holds the event that belongs at leaf {l}");
            }
        }
    }

    fn into_sorted(mut self) -> (Vec<Finding>, u64) {
        self.classify_moves();
        self.kept.sort_by_key(|(pos, n, _)| (*pos, *n));
        (self.kept.into_iter().map(|(_, _, f)| f).collect(), self.total)
    }
}

/// Leaves whose missing `logs` rows are not findings: the table is being
/// rebuilt from the batches. `to` is `u64::MAX` when `logs` is empty (the
/// whole log, whatever its end).
#[derive(Debug, Clone, Copy)]
struct Pending {
    cause: RebuildCause,
    from: u64,
    to: u64,
}

impl Pending {
    /// The pending leaves, if any, and a note when the `logs_rebuild` row
    /// is not a range of leaves (it is then ignored: it excuses nothing).
    fn new(row: Option<LogsRebuildRow>, logs_empty: bool) -> (Option<Pending>, Option<String>) {
        if logs_empty {
            return (Some(Pending { cause: RebuildCause::LogsEmpty, from: 0, to: u64::MAX }), None);
        }
        let Some(r) = row else { return (None, None) };
        match (u64_of(r.from_leaf), u64_of(r.to_leaf)) {
            (Some(from), Some(to)) if from < to => {
                (Some(Pending { cause: RebuildCause::LogsRebuildRow, from, to }), None)
            }
            (Some(from), Some(to)) if from == to => (None, None),
            _ => (
                None,
                Some(format!(
                    "the logs_rebuild row ({}, {}) is not a range of leaves: ignored",
                    r.from_leaf, r.to_leaf
                )),
            ),
        }
    }

    fn covers(&self, leaf: u64) -> bool {
        (self.from..self.to).contains(&leaf)
    }
}

/// One batch with the `logs` rows in its leaf range.
struct Unit {
    batch: BatchRow,
    rows: Vec<LogRow>,
}

/// A window of units, with the findings the assembler made before them.
struct Window {
    units: Vec<Unit>,
    findings: Vec<(u64, Finding)>,
    stray_rows: u64,
}

/// What the checker learnt about one batch.
struct Checked {
    seq: u64,
    first_leaf: u64,
    leaf_count: u64,
    /// `None` when a header column is invalid.
    header: Option<BatchHeader>,
    chain: Option<Hash>,
    /// The leaves to put in the global tree, with the global subtrees
    /// inside them: those that hash to the stored root, else the
    /// payload's; `None` when neither copy is usable.
    span: Option<Span>,
    /// The payload's root when neither copy hashes to the stored root;
    /// the sequencer decides with the chain which was altered.
    unresolved_root: Option<Hash>,
    findings: Vec<(u64, Finding)>,
    rows: u64,
    /// Rows missing where `logs` is being rebuilt: not findings.
    pending_rows: u64,
    bytes: u64,
}

fn u64_of(v: i64) -> Option<u64> {
    u64::try_from(v).ok()
}

/// A claimed time as the vault stores it: nanoseconds since 1970 to
/// `timestamptz` microseconds since 2000, truncated toward 2000 as the
/// PostgreSQL client library does.
fn pg_micros(ns: i64) -> i64 {
    let from_2000 = i128::from(ns) - i128::from(PG_EPOCH_US) * 1000;
    (from_2000 / 1000) as i64
}

fn header_of(b: &BatchRow) -> Result<(BatchHeader, Hash), Box<Finding>> {
    let bad = |col: &str, why: &str| {
        let f = Finding::new(Kind::Modified, "batches", format!("column {col} {why}"));
        Box::new(match u64_of(b.seq) {
            Some(s) => f.seq(s),
            None => f,
        })
    };
    let seq = u64_of(b.seq).filter(|&s| s >= 1).ok_or_else(|| bad("seq", "is below 1"))?;
    let first_leaf = u64_of(b.first_leaf).ok_or_else(|| bad("first_leaf", "is negative"))?;
    let leaf_count = u64_of(b.leaf_count)
        .filter(|&c| (1..=MAX_BATCH_LEAVES).contains(&c))
        .ok_or_else(|| bad("leaf_count", &format!("{} is not in 1..={MAX_BATCH_LEAVES}", b.leaf_count)))?;
    let root = Hash::from_slice(&b.root).ok_or_else(|| bad("root", "is not 32 bytes"))?;
    let chain = Hash::from_slice(&b.chain).ok_or_else(|| bad("chain", "is not 32 bytes"))?;
    let time = u64_of(b.time_ns).ok_or_else(|| bad("time_ns", "is negative"))?;
    let uncertainty_ns = u64_of(b.uncertainty_ns).ok_or_else(|| bad("uncertainty_ns", "is negative"))?;
    let source = std::str::from_utf8(&b.time_source)
        .ok()
        .and_then(|s| TimeSource::new(s).ok())
        .ok_or_else(|| bad("time_source", "is not 1..=64 printable ASCII characters"))?;
    let header = BatchHeader {
        seq,
        first_leaf,
        leaf_count,
        root,
        time: TrustedTime { time: TimeNs(time), uncertainty_ns, source },
    };
    Ok((header, chain))
}

/// Stage 2, for one batch: everything that needs no other batch.
fn check_unit(hasher: &TreeHasher, unit: Unit, pending: Option<Pending>) -> Checked {
    let b = &unit.batch;
    let mut out = Checked {
        seq: u64_of(b.seq).unwrap_or(0),
        first_leaf: u64_of(b.first_leaf).unwrap_or(0),
        leaf_count: u64_of(b.leaf_count).unwrap_or(0).min(MAX_BATCH_LEAVES),
        header: None,
        chain: None,
        span: None,
        unresolved_root: None,
        findings: Vec::new(),
        rows: unit.rows.len() as u64,
        pending_rows: 0,
        bytes: b.payload.len() as u64 + unit.rows.iter().map(|r| r.event.len() as u64).sum::<u64>(),
    };
    let (seq, first, count) = (out.seq, out.first_leaf, out.leaf_count);
    match header_of(b) {
        Ok((h, c)) => {
            out.header = Some(h);
            out.chain = Some(c);
        }
        Err(f) => out.findings.push((first, *f)),
    }
    let events: Result<Vec<Event>, String> =
        payload::decode(b.payload_codec, &b.payload, count, MAX_DECODED).map_err(|e| e.to_string());
    let p: Option<Vec<Hash>> = events.as_ref().ok().map(|ev| ev.iter().map(|e| hasher.leaf(&e.bytes)).collect());

    // The rows, against the payload.
    let mut row_findings = Vec::new();
    // Reports the batch's rows `rows` (indices within it) as missing.
    // Inside the pending range they are not findings: crash recovery emptied `logs` and the vault
    // writer restores it from these very payloads. Whoever can write the
    // database could insert a `logs_rebuild` row (or empty `logs`) to hide
    // rows deleted there, but only as far as "intact, logs incomplete"
    // (exit 3), never "intact": the run's status says rows are missing,
    // and the batches, which hold every event, are checked in full anyway.
    let mut pending_rows = 0u64;
    let mut missing = |rows: std::ops::Range<u64>, findings: &mut Vec<(u64, Finding)>| {
        for i in rows {
            let leaf = first + i;
            if pending.is_some_and(|r| r.covers(leaf)) {
                pending_rows += 1;
            } else {
                findings.push(deleted_row(seq, leaf, p.as_ref().map(|p| p[i as usize])));
            }
        }
    };
    let mut l: Vec<Option<Hash>> = vec![None; count as usize];
    let mut next = 0u64;
    for row in &unit.rows {
        let Some(i) = u64_of(row.leaf_index).and_then(|x| x.checked_sub(first)).filter(|&i| i < count) else {
            continue; // the assembler only gives rows in range
        };
        let leaf = first + i;
        if i < next {
            row_findings.push((
                leaf,
                Finding::new(Kind::Inserted, "logs", "a second row with this leaf index").seq(seq).leaf(leaf),
            ));
            continue;
        }
        missing(next..i, &mut row_findings);
        next = i + 1;
        let ev = events.as_ref().ok().map(|e| &e[i as usize]);
        let rh = match (ev, &p) {
            (Some(e), Some(p)) if e.bytes == row.event => p[i as usize],
            _ => hasher.leaf(&row.event),
        };
        l[i as usize] = Some(rh);
        let Some(p) = &p else {
            if row.leaf_hash[..] != rh.0 {
                row_findings.push((leaf, column(seq, leaf, "leaf_hash", "is not the hash of the row's event")));
            }
            continue;
        };
        let want = p[i as usize];
        if rh != want {
            let f = Finding::new(Kind::Modified, "logs", "the event differs from the one the batch root commits to")
                .seq(seq)
                .leaf(leaf)
                .hashes(rh, want);
            row_findings.push((leaf, f));
            continue;
        }
        if row.leaf_hash[..] != want.0 {
            row_findings.push((leaf, column(seq, leaf, "leaf_hash", "is not the leaf's hash")));
        }
        if row.batch_seq != b.seq {
            row_findings.push((leaf, column(seq, leaf, "batch_seq", &format!("is {}, not {}", row.batch_seq, b.seq))));
        }
        let claimed = ev.and_then(|e| e.claimed_time_ns).map(pg_micros);
        if row.claimed_time_pg_us != claimed {
            row_findings.push((leaf, column(seq, leaf, "claimed_time", "differs from the batch payload's")));
        }
    }
    missing(next..count, &mut row_findings);
    out.pending_rows = pending_rows;

    let p_span = p.map(|p| Span::new(hasher, first, p));
    let Some(header) = &out.header else {
        out.findings.extend(row_findings);
        out.span = p_span;
        return out;
    };
    let stored = header.root;
    let p_root = p_span.as_ref().map(|s| s.root(hasher));
    if p_root == Some(stored) {
        out.span = p_span;
        out.findings.extend(row_findings);
        return out;
    }
    let l_span = l.iter().copied().collect::<Option<Vec<Hash>>>().map(|lh| Span::new(hasher, first, lh));
    if let Some(ls) = l_span.filter(|ls| ls.root(hasher) == stored) {
        let lh = ls.leaves();
        // The rows reproduce the root and the payload does not: the
        // payload is the altered copy. The row findings only restate it.
        let f = match (&events, p_span.as_ref().map(Span::leaves)) {
            (Err(e), _) => Finding::new(Kind::Modified, "batches", format!("the payload cannot be decoded: {e}")),
            (Ok(_), Some(p)) => {
                let i = (0..count as usize).find(|&i| p[i] != lh[i]).unwrap_or(0);
                Finding::new(
                    Kind::Modified,
                    "batches",
                    "the payload's event differs from the logs row, which the batch root vouches for",
                )
                .leaf(first + i as u64)
                .hashes(p[i], lh[i])
            }
            (Ok(_), None) => Finding::new(Kind::Modified, "batches", "the payload does not match the batch root"),
        };
        out.findings.push((first, f.seq(seq)));
        out.span = Some(ls);
        return out;
    }
    out.findings.extend(row_findings);
    match (events, p_root) {
        (Ok(_), Some(r)) => {
            out.unresolved_root = Some(r);
            out.span = p_span;
        }
        (Err(e), _) => out.findings.push((
            first,
            Finding::new(
                Kind::Modified,
                "batches",
                format!("the payload cannot be decoded ({e}), and the logs rows do not hash to the batch root either"),
            )
            .seq(seq),
        )),
        (Ok(_), None) => {} // p_root is Some whenever the payload decodes
    }
    out
}

fn deleted_row(seq: u64, leaf: u64, expected: Option<Hash>) -> (u64, Finding) {
    let mut f = Finding::new(Kind::Deleted, "logs", "the row of this leaf is missing").seq(seq).leaf(leaf);
    f.expected = expected;
    (leaf, f)
}

fn column(seq: u64, leaf: u64, col: &str, why: &str) -> Finding {
    Finding::new(Kind::Modified, "logs", format!("column {col} {why}")).seq(seq).leaf(leaf)
}

/// Extends `tree` to `size` leaves with the global subtrees of `span`.
fn extend(hasher: &TreeHasher, tree: &mut CompactRange, span: &Span, size: u64) {
    for id in tree::subtree_ids(tree.size(), size) {
        // Every such subtree lies inside the span: the caller checked that
        // the tree ends at the span's start and `size` is within it.
        let pushed = span.subtree(id).is_some_and(|h| tree.push_subtree(hasher, id.level, h));
        debug_assert!(pushed, "subtree {id:?} of a span");
    }
}

/// Stage 1: merges the two ordered streams into windows of units.
fn assemble<B, L>(batches: B, logs: L, tx: &SyncSender<Result<Window, Error>>)
where
    B: Iterator<Item = Result<BatchRow, Error>>,
    L: Iterator<Item = Result<LogRow, Error>>,
{
    let new_window = || Window { units: Vec::new(), findings: Vec::new(), stray_rows: 0 };
    let mut logs = logs.peekable();
    let mut covered_end = 0u64;
    let mut window = new_window();
    let mut bytes = 0usize;
    // Bounded: a report keeps MAX_FINDINGS anyway.
    let note = |w: &mut Window, pos: u64, f: Finding| {
        if w.findings.len() < MAX_FINDINGS {
            w.findings.push((pos, f));
        }
    };
    macro_rules! fail {
        ($e:expr) => {{
            let _ = tx.send(Err($e));
            return;
        }};
    }
    for b in batches {
        let b = match b {
            Ok(b) => b,
            Err(e) => fail!(e),
        };
        let start = u64_of(b.first_leaf).unwrap_or(0);
        let end = start.saturating_add(u64_of(b.leaf_count).unwrap_or(0).min(MAX_BATCH_LEAVES));
        let mut rows = Vec::new();
        loop {
            let idx = match logs.peek() {
                None => break,
                Some(Err(_)) => match logs.next() {
                    Some(Err(e)) => fail!(e),
                    _ => unreachable!("peeked an error"),
                },
                Some(Ok(r)) => r.leaf_index,
            };
            if u64_of(idx).is_some_and(|i| i >= end) {
                break;
            }
            let Some(Ok(r)) = logs.next() else { unreachable!("peeked a row") };
            bytes += r.event.len();
            match u64_of(idx) {
                Some(i) if i >= start => rows.push(r),
                // Between the batches seen so far and this one: the leaves
                // of missing batches, reported by the sequencer as deleted.
                Some(i) if i >= covered_end => window.stray_rows += 1,
                _ => note(
                    &mut window,
                    u64_of(idx).unwrap_or(0),
                    Finding::new(Kind::Inserted, "logs", format!("a row with leaf index {idx}, which no batch covers"))
                        .leaf(u64_of(idx).unwrap_or(0)),
                ),
            }
        }
        covered_end = covered_end.max(end);
        bytes += b.payload.len();
        window.units.push(Unit { batch: b, rows });
        if window.units.len() >= WINDOW_UNITS || bytes >= WINDOW_BYTES {
            if tx.send(Ok(std::mem::replace(&mut window, new_window()))).is_err() {
                return;
            }
            bytes = 0;
        }
    }
    let mut beyond = 0u64;
    for r in logs {
        let r = match r {
            Ok(r) => r,
            Err(e) => fail!(e),
        };
        beyond += 1;
        let leaf = u64_of(r.leaf_index).unwrap_or(0);
        note(
            &mut window,
            leaf,
            Finding::new(
                Kind::Inserted,
                "logs",
                format!("a row beyond the last batch, which ends at leaf {covered_end}: no batch commits to it"),
            )
            .leaf(leaf),
        );
    }
    if beyond > MAX_FINDINGS as u64 {
        note(
            &mut window,
            covered_end,
            Finding::new(Kind::Inserted, "logs", format!("{beyond} rows in all lie beyond the last batch"))
                .leaf(covered_end),
        );
    }
    let _ = tx.send(Ok(window));
}

/// A signed checkpoint waiting for the tree to reach its size.
#[derive(Debug)]
struct Target {
    cp: Checkpoint,
    /// The user's saved checkpoint rather than a stored one.
    saved: bool,
}

/// The stored checkpoints, in tree-size order, signatures checked in
/// parallel blocks ahead of need.
struct Checkpoints<C> {
    rows: C,
    exhausted: bool,
    staged: VecDeque<Target>,
    read: u64,
}

impl<C: Iterator<Item = Result<CheckpointRow, Error>>> Checkpoints<C> {
    /// Stages every valid checkpoint of size up to `upto`.
    fn fill(&mut self, upto: u64, trusted: &NoteVerifier, alg: HashAlg, findings: &mut Findings) -> Result<(), Error> {
        while !self.exhausted && self.staged.back().is_none_or(|t| t.cp.size <= upto) {
            let block: Vec<CheckpointRow> = self.rows.by_ref().take(CHECKPOINT_BLOCK).collect::<Result<_, _>>()?;
            self.exhausted = block.len() < CHECKPOINT_BLOCK;
            self.read += block.len() as u64;
            let opened: Vec<Result<Checkpoint, Box<(u64, Finding)>>> =
                block.par_iter().map(|row| open_stored(row, trusted, alg)).collect();
            for o in opened {
                match o {
                    Ok(cp) => self.staged.push_back(Target { cp, saved: false }),
                    Err(e) => findings.push(e.0, e.1),
                }
            }
        }
        Ok(())
    }
}

fn open_stored(row: &CheckpointRow, trusted: &NoteVerifier, alg: HashAlg) -> Result<Checkpoint, Box<(u64, Finding)>> {
    let size = u64_of(row.tree_size).unwrap_or(0);
    let f = |kind: Kind, detail: String| {
        Box::new((size, Finding::new(kind, "checkpoints", format!("id {}: {detail}", row.id)).checkpoint(size)))
    };
    let cp = match Checkpoint::open(&row.note, trusted) {
        Ok((cp, _)) => cp,
        Err(e @ (VerifyError::BadSignature { .. } | VerifyError::NoTrustedSignature { .. })) => {
            return Err(f(Kind::BadSignature, e.to_string()));
        }
        Err(e) => return Err(f(Kind::Modified, format!("the note does not open: {e}"))),
    };
    if cp.size != size {
        return Err(f(Kind::Modified, format!("column tree_size is {size}, but the signed note says {}", cp.size)));
    }
    if cp.hash != alg {
        return Err(f(Kind::Modified, format!("signed for hash {}, but the log says {alg}", cp.hash)));
    }
    Ok(cp)
}

/// Stage 3: what must be checked in order.
struct Sequencer<'a, C> {
    hasher: &'a TreeHasher,
    trusted: &'a NoteVerifier,
    alg: HashAlg,
    checkpoints: Checkpoints<C>,
    findings: Findings,
    /// The previous batch's chain value, when it can be relied on.
    prev_chain: Option<Hash>,
    last_seq: u64,
    /// The global tree so far; `None` once a gap or an unusable batch
    /// makes it unknowable.
    tree: Option<CompactRange>,
    /// One past the last leaf of the batches seen.
    tree_end: u64,
    saved: Option<Checkpoint>,
    /// Largest stored checkpoint that checked out.
    signed_upto: u64,
    /// Checkpoints the tree could not be compared with.
    unchecked: u64,
    summary: Summary,
}

impl<C: Iterator<Item = Result<CheckpointRow, Error>>> Sequencer<'_, C> {
    fn push(&mut self, pos: u64, f: Finding) {
        self.findings.push(pos, f);
    }

    fn batch(&mut self, c: Checked) -> Result<(), Error> {
        self.summary.batches += 1;
        self.summary.logs += c.rows;
        self.summary.bytes += c.bytes;
        let seq = c.seq;
        let mut link_checked = false;
        if seq > self.last_seq + 1 {
            let what = if seq == self.last_seq + 2 {
                format!("batch {} is missing", self.last_seq + 1)
            } else {
                format!("batches {} to {} are missing", self.last_seq + 1, seq - 1)
            };
            let f = Finding::new(Kind::Deleted, "batches", what).seq(self.last_seq + 1).leaf(self.tree_end);
            self.push(self.tree_end, f);
            self.prev_chain = None;
            self.tree = None;
        } else if c.header.is_some() && c.first_leaf != self.tree_end {
            let f = Finding::new(
                Kind::ChainBroken,
                "batches",
                format!("starts at leaf {}, but the previous batch ends at leaf {}", c.first_leaf, self.tree_end),
            );
            self.push(c.first_leaf, f.seq(seq).leaf(c.first_leaf));
            self.tree = None;
            link_checked = true;
        }
        self.findings.extend(c.findings);
        let mut unresolved = c.unresolved_root;
        if let (Some(prev), Some(h), Some(chain), false) = (self.prev_chain, &c.header, c.chain, link_checked) {
            let computed = link(self.hasher, &prev, h);
            if computed != chain {
                let with_leaves = unresolved.map(|r| link(self.hasher, &prev, &BatchHeader { root: r, ..h.clone() }));
                if with_leaves == Some(chain) {
                    // The chain vouches for the root of the leaves: the
                    // stored root is what changed.
                    let f = Finding::new(
                        Kind::RootMismatch,
                        "batches",
                        "the stored root is not the root of the batch's leaves, which the chain vouches for",
                    )
                    .seq(seq)
                    .hashes(h.root, unresolved.unwrap_or(h.root));
                    self.push(c.first_leaf, f);
                    unresolved = None;
                } else {
                    let f = Finding::new(
                        Kind::ChainBroken,
                        "batches",
                        format!(
                            "the chain value does not follow from batch {}'s and this header: one of the two was altered",
                            seq.saturating_sub(1)
                        ),
                    )
                    .seq(seq)
                    .hashes(chain, computed);
                    self.push(c.first_leaf, f);
                }
            }
        }
        if let (Some(r), Some(h)) = (unresolved, &c.header) {
            let f = Finding::new(
                Kind::Modified,
                "batches",
                "the batch's events (its payload and its logs rows agree) do not hash to its root: both copies were altered",
            )
            .seq(seq)
            .hashes(r, h.root);
            self.push(c.first_leaf, f);
        }
        self.prev_chain = c.chain;
        self.last_seq = seq;
        if c.span.is_none() {
            self.tree = None;
        }
        let start = c.first_leaf;
        let end = start + c.leaf_count;
        self.tree_end = end;
        self.advance(c.span.as_ref(), start, end, seq, c.chain)
    }

    /// The signed checkpoints (stored, and the saved one) of size up to
    /// `end` not checked yet, in size order.
    fn targets_upto(&mut self, end: u64) -> Result<Vec<Target>, Error> {
        self.checkpoints.fill(end, self.trusted, self.alg, &mut self.findings)?;
        let mut targets = Vec::new();
        while self.checkpoints.staged.front().is_some_and(|t| t.cp.size <= end) {
            targets.extend(self.checkpoints.staged.pop_front());
        }
        if let Some(cp) = self.saved.take_if(|cp| cp.size <= end) {
            targets.push(Target { cp, saved: true });
            targets.sort_by_key(|t| t.cp.size);
        }
        Ok(targets)
    }

    /// Extends the tree over a batch's leaves, checking every signed
    /// checkpoint whose size falls in `(start, end]` on the way.
    fn advance(
        &mut self,
        span: Option<&Span>,
        start: u64,
        end: u64,
        seq: u64,
        chain: Option<Hash>,
    ) -> Result<(), Error> {
        let targets = self.targets_upto(end)?;
        if self.tree.as_ref().is_some_and(|t| t.size() != start)
            || span.is_none_or(|s| (s.first(), s.end()) != (start, end))
        {
            self.tree = None;
        }
        for t in targets {
            let size = t.cp.size;
            let root = match (&mut self.tree, span) {
                (Some(tree), Some(span)) if size >= tree.size() => {
                    extend(self.hasher, tree, span, size);
                    Some(tree.root(self.hasher))
                }
                _ => None,
            };
            let head = (size == end).then_some((seq, chain));
            self.check_target(&t, root, head, start);
        }
        if let (Some(tree), Some(span)) = (&mut self.tree, span) {
            extend(self.hasher, tree, span, end);
        }
        Ok(())
    }

    /// Compares a signed checkpoint with the stored log at its size: the
    /// recomputed root (if the tree is known) and, at a batch end, the
    /// chain head.
    fn check_target(&mut self, t: &Target, root: Option<Hash>, head: Option<(u64, Option<Hash>)>, start: u64) {
        let size = t.cp.size;
        let (table, bad_root, bad_chain) = if t.saved {
            ("saved checkpoint", Kind::Forked, Kind::Forked)
        } else {
            ("checkpoints", Kind::RootMismatch, Kind::ChainBroken)
        };
        let mut ok = true;
        match root {
            Some(r) if r != t.cp.root => {
                let f = Finding::new(
                    bad_root,
                    table,
                    "the signed root is not the root of the stored tree at this size: the log was rewritten after it was signed",
                )
                .checkpoint(size)
                .hashes(r, t.cp.root);
                self.push(size, f);
                ok = false;
            }
            Some(_) => {}
            None => {
                self.unchecked += 1;
                ok = false;
            }
        }
        match head {
            Some((seq, Some(chain))) if (seq, chain) != (t.cp.chain_seq, t.cp.chain_hash) => {
                let f = Finding::new(
                    bad_chain,
                    table,
                    format!("signs chain head seq {}, but the stored batch ending there is seq {seq} with another chain value", t.cp.chain_seq),
                )
                .checkpoint(size)
                .seq(seq)
                .hashes(chain, t.cp.chain_hash);
                self.push(size, f);
                ok = false;
            }
            Some(_) => {}
            None if size > start => {
                let f = Finding::new(
                    bad_chain,
                    table,
                    format!("signs a tree size that falls inside a batch (leaves from {start})"),
                )
                .checkpoint(size);
                self.push(size, f);
                ok = false;
            }
            None => {}
        }
        if ok && !t.saved {
            self.signed_upto = self.signed_upto.max(size);
        }
    }

    /// The empty log, before the first batch: checkpoints of size 0.
    fn genesis(&mut self, genesis: Hash) -> Result<(), Error> {
        for t in self.targets_upto(0)? {
            self.check_target(&t, Some(self.hasher.empty_root()), Some((0, Some(genesis))), 0);
        }
        Ok(())
    }

    /// After the last batch: checkpoints beyond the end mean a rollback.
    fn finish(mut self) -> Result<(Findings, Summary, Vec<String>), Error> {
        self.checkpoints.fill(u64::MAX, self.trusted, self.alg, &mut self.findings)?;
        let end = self.tree_end;
        let beyond: Vec<Target> = self.checkpoints.staged.drain(..).collect();
        if let (Some(first), Some(last)) = (beyond.first(), beyond.last()) {
            let f = Finding::new(
                Kind::RolledBack,
                "checkpoints",
                format!(
                    "{} signed checkpoint(s) cover up to {} leaves, but the log has only {end}: history was removed from its end",
                    beyond.len(),
                    last.cp.size
                ),
            )
            .checkpoint(first.cp.size);
            self.push(end, f);
        }
        if let Some(cp) = self.saved.take() {
            let f = Finding::new(
                Kind::RolledBack,
                "saved checkpoint",
                format!("the saved checkpoint signs {} leaves, but the log has only {end}: history was removed from its end", cp.size),
            )
            .checkpoint(cp.size);
            self.push(end, f);
        }
        let mut notes = Vec::new();
        self.summary.checkpoints = self.checkpoints.read;
        self.summary.tree_size = end;
        if self.checkpoints.read == 0 {
            notes.push("no signed checkpoint is stored: the chain and tree are consistent, but nothing signed vouches for them".into());
        }
        self.summary.unsigned_leaves = end - self.signed_upto.min(end);
        if self.summary.unsigned_leaves > 0 && self.checkpoints.read > 0 {
            notes.push(format!(
                "{} leaves after the newest valid checkpoint (size {}) are not signed yet: they are consistent, but only a later checkpoint will vouch for them",
                self.summary.unsigned_leaves, self.signed_upto
            ));
        }
        if self.unchecked > 0 {
            notes.push(format!(
                "{} checkpoint(s) could not be compared with the tree, which the findings above make unknowable at their sizes",
                self.unchecked
            ));
        }
        Ok((self.findings, self.summary, notes))
    }
}

/// The trust anchors of a run, checked before any row is read.
pub(crate) struct Anchors {
    pub hasher: TreeHasher,
    pub trusted: NoteVerifier,
    pub key_source: String,
    pub saved: Option<Checkpoint>,
    pub findings: Vec<(u64, Finding)>,
    pub genesis: Hash,
}

/// Checks the log's identity against what the user trusts.
pub(crate) fn anchors(identity: &Identity, opts: &Options) -> Result<Anchors, Error> {
    let alg = HashAlg::from_name(&identity.hash_alg).ok_or_else(|| {
        Error::Identity(format!("chronos_log.hash_alg {:?} is not a known algorithm", identity.hash_alg))
    })?;
    let hasher = TreeHasher::new(alg, opts.hash_key.as_ref()).map_err(|e| Error::HashKey(e.to_string()))?;
    if hasher.key_check().map(|k| k.to_vec()) != identity.key_check {
        return Err(Error::HashKey(
            "the hash key is not this log's (its fingerprint differs from chronos_log.key_check)".into(),
        ));
    }
    let mut findings = Vec::new();
    let (trusted, key_source) = match &opts.trusted_key {
        Some(k) => {
            if k.to_string() != identity.verifier_key.trim() {
                findings.push((
                    0,
                    Finding::new(
                        Kind::BadSignature,
                        "chronos_log",
                        "the verifier key recorded with the log is not the trusted key",
                    ),
                ));
            }
            (k.clone(), "given with --key".to_owned())
        }
        None => {
            let k = NoteVerifier::parse(&identity.verifier_key).map_err(|e| {
                Error::NoKey(format!("chronos_log.verifier_key cannot be read ({e}); pass the log's key with --key"))
            })?;
            (k, "read from the database (pass --key to check against a key you hold)".to_owned())
        }
    };
    if trusted.name() != identity.origin {
        return Err(Error::OtherLog { found: identity.origin.clone(), expected: trusted.name().to_owned() });
    }
    let genesis = genesis(&hasher, &identity.origin);
    if identity.genesis[..] != genesis.0 {
        findings.push((
            0,
            Finding::new(Kind::ChainBroken, "chronos_log", "the stored genesis value is not the one of this origin")
                .seq(0),
        ));
    }
    let saved = match &opts.saved_checkpoint {
        None => None,
        Some(note) => {
            let (cp, _) = Checkpoint::open(note.as_bytes(), &trusted).map_err(|e| {
                Error::SavedCheckpoint(format!("it does not verify with the trusted key {trusted}: {e}"))
            })?;
            if cp.hash != alg {
                return Err(Error::SavedCheckpoint(format!("it is for hash {}, the log uses {alg}", cp.hash)));
            }
            cp.check_empty(&hasher).map_err(|e| Error::SavedCheckpoint(e.to_string()))?;
            Some(cp)
        }
    };
    Ok(Anchors { hasher, trusted, key_source, saved, findings, genesis })
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

/// Verifies a log from its rows. Returns `Err` only when verification
/// could not be done; tampering is in the report.
pub fn run<B, L, C>(
    identity: &Identity,
    opts: &Options,
    streams: Streams<B, L, C>,
    progress: &dyn Progress,
) -> Result<Report, Error>
where
    B: Iterator<Item = Result<BatchRow, Error>> + Send,
    L: Iterator<Item = Result<LogRow, Error>> + Send,
    C: Iterator<Item = Result<CheckpointRow, Error>>,
{
    let started = std::time::Instant::now();
    let a = anchors(identity, opts)?;
    let alg = a.hasher.alg();
    progress.start(streams.total_leaves);
    let mut seqr = Sequencer {
        hasher: &a.hasher,
        trusted: &a.trusted,
        alg,
        checkpoints: Checkpoints { rows: streams.checkpoints, exhausted: false, staged: VecDeque::new(), read: 0 },
        findings: Findings::default(),
        prev_chain: Some(a.genesis),
        last_seq: 0,
        tree: Some(CompactRange::new()),
        tree_end: 0,
        saved: a.saved,
        signed_upto: 0,
        unchecked: 0,
        summary: Summary::default(),
    };
    seqr.findings.extend(a.findings);
    seqr.genesis(a.genesis)?;
    let (batches, hasher) = (streams.batches, &a.hasher);
    // An empty `logs` (every row gone, as after crash recovery) is seen
    // before any batch is checked, so every missing row is judged alike.
    let mut logs = streams.logs.peekable();
    let (pending, rebuild_note) = Pending::new(streams.logs_rebuild, logs.peek().is_none());
    let mut rows_missing = 0u64;
    let outcome = std::thread::scope(|s| -> Result<(), Error> {
        let (wtx, wrx): (SyncSender<Result<Window, Error>>, Receiver<_>) = sync_channel(2);
        let (ctx, crx) = sync_channel::<Result<(Window, Vec<Checked>), Error>>(2);
        s.spawn(move || assemble(batches, logs, &wtx));
        s.spawn(move || {
            for w in wrx {
                let msg = w.map(|mut w| {
                    let checked =
                        std::mem::take(&mut w.units).into_par_iter().map(|u| check_unit(hasher, u, pending)).collect();
                    (w, checked)
                });
                if ctx.send(msg).is_err() {
                    return;
                }
            }
        });
        for msg in crx {
            let (w, checked) = msg?;
            seqr.summary.logs += w.stray_rows;
            seqr.findings.extend(w.findings);
            for c in checked {
                let (leaves, bytes) = (c.leaf_count, c.bytes);
                rows_missing += c.pending_rows;
                seqr.batch(c)?;
                progress.advance(leaves, bytes);
            }
        }
        Ok(())
    });
    outcome?;
    let (findings, mut summary, mut notes) = seqr.finish()?;
    let (findings, findings_total) = findings.into_sorted();
    notes.extend(rebuild_note);
    let logs_rebuild = pending.and_then(|p| {
        let to = p.to.min(summary.tree_size);
        (p.from < to).then_some(LogsRebuild { cause: p.cause, from_leaf: p.from, to_leaf: to, rows_missing })
    });
    summary.seconds = started.elapsed().as_secs_f64();
    if summary.seconds > 0.0 {
        summary.logs_per_second = summary.logs as f64 / summary.seconds;
        summary.megabytes_per_second = summary.bytes as f64 / 1e6 / summary.seconds;
    }
    // Findings always win: missing rows the rebuild excuses can make a
    // clean run "logs incomplete", never hide tampering.
    let status = if findings_total > 0 {
        Status::Tampered
    } else if rows_missing > 0 {
        Status::IntactLogsIncomplete
    } else {
        Status::Intact
    };
    Ok(Report {
        status,
        origin: identity.origin.clone(),
        hash: alg.name().to_owned(),
        key_source: a.key_source,
        first: findings.first().cloned(),
        findings,
        findings_total,
        notes,
        logs_rebuild,
        summary,
    })
}
