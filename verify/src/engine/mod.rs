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
//!
//! One file per job: `rows` (the rows as stored), `findings`, `assembler`,
//! `checker`, `sequencer` and `anchors` (what the user trusts, checked
//! before any row is read). This file runs them: [`run`].

mod anchors;
mod assembler;
mod checker;
mod control;
mod findings;
mod rows;
mod sequencer;

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use chronos_ledger::tree::CompactRange;
use rayon::prelude::*;

pub use anchors::Options;
pub use rows::{BatchRow, CheckpointRow, Identity, LogRow, LogsRebuildRow, Streams};

use crate::Error;
use crate::report::{LogsRebuild, Report, Status, Summary};
use anchors::anchors;
use assembler::{Window, assemble};
use checker::{Checked, check_unit};
use findings::{Findings, Pending};
use sequencer::{Checkpoints, Sequencer};

/// Largest batch the verifier accepts (ingest's hard limit on events per
/// body is 2^24). A `leaf_count` above it is reported, not trusted: it
/// bounds the memory of one unit.
pub const MAX_BATCH_LEAVES: u64 = 1 << 24;
/// Largest decoded payload of one batch.
pub const MAX_DECODED: usize = 1 << 30;

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
    let mut control = control::Control::new(&identity.origin);
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
                control.batch(&c, &mut seqr.findings);
                seqr.batch(c)?;
                progress.advance(leaves, bytes);
            }
        }
        Ok(())
    });
    outcome?;
    let (findings, mut summary, mut notes) = seqr.finish()?;
    summary.control_records = control.records;
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
