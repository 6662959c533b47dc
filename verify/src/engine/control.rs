//! The log's control records, replayed in order: every signed event must
//! be one the log could accept (its key registered by the log's own
//! records, with the role, not revoked, its seq beyond the key's last,
//! legal in the recorded mode), every transition one the table gives, and
//! no data batch may sit where the recorded mode refuses writes (hold,
//! recovery, isolated). An edited control record breaks its batch's root
//! and chain like any event; a deleted one leaves a gap in the chain; a
//! forged but well-hashed history (rewritten by whoever holds the log's
//! signing key) is what this replay catches.

use chronos_control::record::{Record, Replay};

use super::checker::Checked;
use super::findings::Findings;
use crate::report::{Finding, Kind};

/// Whether a batch is a release of a quarantined body: its control
/// records lead, and the last of them is a signed quarantine-release.
fn is_release(c: &Checked) -> bool {
    let leading = c.control.iter().enumerate().all(|(i, (leaf, _))| *leaf == c.first_leaf + i as u64);
    let last_is_release = c.control.last().is_some_and(|(_, bytes)| {
        let Ok(Record::Event { note }) = Record::parse(bytes) else { return false };
        chronos_ledger::Note::parse(note.as_bytes())
            .ok()
            .and_then(|n| chronos_control::event::ControlEvent::parse(n.text_unverified()).ok())
            .is_some_and(|e| matches!(e.action, chronos_control::event::Action::QuarantineRelease { .. }))
    });
    leading && last_is_release
}

pub(super) struct Control {
    replay: Replay,
    pub(super) records: u64,
}

impl Control {
    pub(super) fn new(origin: &str) -> Control {
        Control { replay: Replay::new(origin), records: 0 }
    }

    /// Checks one batch, in log order.
    pub(super) fn batch(&mut self, c: &Checked, findings: &mut Findings) {
        let invalid =
            |leaf: u64, detail: String| Finding::new(Kind::ControlInvalid, "batches", detail).seq(c.seq).leaf(leaf);
        // Control records and events share a batch only in a release: the
        // records first, the last of them the quarantine-release event.
        if !c.control.is_empty() && c.data_events > 0 && !is_release(c) {
            findings.push(c.first_leaf, invalid(c.first_leaf, "a batch mixing control records and events".into()));
        }
        if c.data_events > 0 && !self.replay.data_allowed() {
            let detail = format!("events written while the log was in mode {}", self.replay.mode.name());
            findings.push(c.first_leaf, invalid(c.first_leaf, detail));
        }
        for (leaf, bytes) in &c.control {
            self.records += 1;
            let applied = Record::parse(bytes).and_then(|r| self.replay.apply(&r));
            if let Err(e) = applied {
                findings.push(*leaf, invalid(*leaf, format!("control record: {e}")));
            }
        }
    }
}
