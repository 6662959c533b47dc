//! Stage 1, the assembler: merges the `batches` stream (by seq) with the
//! `logs` stream (by leaf index) into windows of units, one batch and its
//! rows each.

use std::sync::mpsc::SyncSender;

use super::MAX_BATCH_LEAVES;
use super::rows::{BatchRow, LogRow, u64_of};
use crate::Error;
use crate::report::{Finding, Kind, MAX_FINDINGS};

const WINDOW_BYTES: usize = 16 << 20;
const WINDOW_UNITS: usize = 256;

/// One batch with the `logs` rows in its leaf range.
pub(super) struct Unit {
    pub(super) batch: BatchRow,
    pub(super) rows: Vec<LogRow>,
}

/// A window of units, with the findings the assembler made before them.
pub(super) struct Window {
    pub(super) units: Vec<Unit>,
    pub(super) findings: Vec<(u64, Finding)>,
    pub(super) stray_rows: u64,
}

/// Stage 1: merges the two ordered streams into windows of units.
pub(super) fn assemble<B, L>(batches: B, logs: L, tx: &SyncSender<Result<Window, Error>>)
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
