//! Stage 3, the sequencer: what must be checked in order, on the calling
//! thread: the chain, the global tree (a compact range, O(log n) memory)
//! and the signed checkpoints at their sizes (signatures checked in
//! parallel blocks ahead of need).

use std::collections::VecDeque;

use chronos_ledger::chain::link;
use chronos_ledger::tree::{self, CompactRange};
use chronos_ledger::{BatchHeader, Checkpoint, Hash, HashAlg, NoteVerifier, Span, TreeHasher, VerifyError};
use rayon::prelude::*;

use super::checker::Checked;
use super::findings::Findings;
use super::rows::{CheckpointRow, u64_of};
use crate::Error;
use crate::report::{Finding, Kind, Summary};

const CHECKPOINT_BLOCK: usize = 256;

/// Extends `tree` to `size` leaves with the global subtrees of `span`.
fn extend(hasher: &TreeHasher, tree: &mut CompactRange, span: &Span, size: u64) {
    for id in tree::subtree_ids(tree.size(), size) {
        // Every such subtree lies inside the span: the caller checked that
        // the tree ends at the span's start and `size` is within it.
        let pushed = span.subtree(id).is_some_and(|h| tree.push_subtree(hasher, id.level, h));
        debug_assert!(pushed, "subtree {id:?} of a span");
    }
}

/// A signed checkpoint waiting for the tree to reach its size.
#[derive(Debug)]
pub(super) struct Target {
    cp: Checkpoint,
    /// The user's saved checkpoint rather than a stored one.
    saved: bool,
}

/// The stored checkpoints, in tree-size order, signatures checked in
/// parallel blocks ahead of need.
pub(super) struct Checkpoints<C> {
    pub(super) rows: C,
    pub(super) exhausted: bool,
    pub(super) staged: VecDeque<Target>,
    pub(super) read: u64,
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
pub(super) struct Sequencer<'a, C> {
    pub(super) hasher: &'a TreeHasher,
    pub(super) trusted: &'a NoteVerifier,
    pub(super) alg: HashAlg,
    pub(super) checkpoints: Checkpoints<C>,
    pub(super) findings: Findings,
    /// The previous batch's chain value, when it can be relied on.
    pub(super) prev_chain: Option<Hash>,
    pub(super) last_seq: u64,
    /// The global tree so far; `None` once a gap or an unusable batch
    /// makes it unknowable.
    pub(super) tree: Option<CompactRange>,
    /// One past the last leaf of the batches seen.
    pub(super) tree_end: u64,
    pub(super) saved: Option<Checkpoint>,
    /// Largest stored checkpoint that checked out.
    pub(super) signed_upto: u64,
    /// Checkpoints the tree could not be compared with.
    pub(super) unchecked: u64,
    pub(super) summary: Summary,
}

impl<C: Iterator<Item = Result<CheckpointRow, Error>>> Sequencer<'_, C> {
    fn push(&mut self, pos: u64, f: Finding) {
        self.findings.push(pos, f);
    }

    pub(super) fn batch(&mut self, c: Checked) -> Result<(), Error> {
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
    pub(super) fn genesis(&mut self, genesis: Hash) -> Result<(), Error> {
        for t in self.targets_upto(0)? {
            self.check_target(&t, Some(self.hasher.empty_root()), Some((0, Some(genesis))), 0);
        }
        Ok(())
    }

    /// After the last batch: checkpoints beyond the end mean a rollback.
    pub(super) fn finish(mut self) -> Result<(Findings, Summary, Vec<String>), Error> {
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
