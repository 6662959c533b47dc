//! Stage 2, the checker: everything about one batch that needs no other
//! batch (decode the payload, hash each event, compare every `logs` row
//! with the payload, compute the batch root). Units are checked in
//! parallel.

use chronos_ledger::chain::{TimeNs, TimeSource, TrustedTime};
use chronos_ledger::payload::{self, Event};
use chronos_ledger::{BatchHeader, Hash, Span, TreeHasher};

use super::assembler::Unit;
use super::findings::Pending;
use super::rows::{BatchRow, u64_of};
use super::{MAX_BATCH_LEAVES, MAX_DECODED};
use crate::report::{Finding, Kind};

/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// What the checker learnt about one batch.
pub(super) struct Checked {
    pub(super) seq: u64,
    pub(super) first_leaf: u64,
    pub(super) leaf_count: u64,
    /// `None` when a header column is invalid.
    pub(super) header: Option<BatchHeader>,
    pub(super) chain: Option<Hash>,
    /// The leaves to put in the global tree, with the global subtrees
    /// inside them: those that hash to the stored root, else the
    /// payload's; `None` when neither copy is usable.
    pub(super) span: Option<Span>,
    /// The payload's root when neither copy hashes to the stored root;
    /// the sequencer decides with the chain which was altered.
    pub(super) unresolved_root: Option<Hash>,
    pub(super) findings: Vec<(u64, Finding)>,
    pub(super) rows: u64,
    /// Rows missing where `logs` is being rebuilt: not findings.
    pub(super) pending_rows: u64,
    pub(super) bytes: u64,
    /// The batch's control records (leaf, bytes), from its payload.
    pub(super) control: Vec<(u64, Vec<u8>)>,
    /// Events of the batch that are not control records.
    pub(super) data_events: u64,
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
pub(super) fn check_unit(hasher: &TreeHasher, unit: Unit, pending: Option<Pending>) -> Checked {
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
        control: Vec::new(),
        data_events: 0,
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
    if let Ok(ev) = &events {
        for (i, e) in ev.iter().enumerate() {
            if chronos_control::record::is_control(&e.bytes) {
                out.control.push((first + i as u64, e.bytes.clone()));
            } else {
                out.data_events += 1;
            }
        }
    }

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
