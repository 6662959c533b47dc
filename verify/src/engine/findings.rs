//! The findings of a run, kept in log order, and the leaves whose missing
//! `logs` rows are pending (the table is being rebuilt), not findings.

use std::collections::HashMap;

use chronos_ledger::Hash;

use super::rows::{LogsRebuildRow, u64_of};
use crate::report::{Finding, Kind, MAX_FINDINGS, RebuildCause};

/// Findings with their position in the log, kept in log order.
#[derive(Debug, Default)]
pub(super) struct Findings {
    kept: Vec<(u64, u64, Finding)>,
    total: u64,
}

impl Findings {
    pub(super) fn push(&mut self, pos: u64, f: Finding) {
        self.total += 1;
        if self.kept.len() < MAX_FINDINGS {
            let n = self.kept.len() as u64;
            self.kept.push((pos, n, f));
        }
    }

    pub(super) fn extend(&mut self, other: Vec<(u64, Finding)>) {
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

    pub(super) fn into_sorted(mut self) -> (Vec<Finding>, u64) {
        self.classify_moves();
        self.kept.sort_by_key(|(pos, n, _)| (*pos, *n));
        (self.kept.into_iter().map(|(_, _, f)| f).collect(), self.total)
    }
}

/// Leaves whose missing `logs` rows are not findings: the table is being
/// rebuilt from the batches. `to` is `u64::MAX` when `logs` is empty (the
/// whole log, whatever its end).
#[derive(Debug, Clone, Copy)]
pub(super) struct Pending {
    pub(super) cause: RebuildCause,
    pub(super) from: u64,
    pub(super) to: u64,
}

impl Pending {
    /// The pending leaves, if any, and a note when the `logs_rebuild` row
    /// is not a range of leaves (it is then ignored: it excuses nothing).
    pub(super) fn new(row: Option<LogsRebuildRow>, logs_empty: bool) -> (Option<Pending>, Option<String>) {
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

    pub(super) fn covers(&self, leaf: u64) -> bool {
        (self.from..self.to).contains(&leaf)
    }
}
