//! Records at or below the committed head: answered again when the stored
//! batch is the one sequenced (a crash lost their release), refused when
//! another writer stored another batch under that seq.

use chronos_faults::Faults;
use chronos_ledger::ChainHead;

use crate::{Batch, Rig, Writer, hasher, refusal};

#[test]
fn a_batch_committed_before_a_crash_lost_its_release_is_acknowledged_again_and_stored_once() {
    let mut rig = Rig::new("vw_replay");
    let genesis = ChainHead::genesis(&hasher(), crate::ORIGIN);
    let first = Batch::after(&genesis, &[r#"{"n":1}"#, r#"{"n":2}"#], 1_000);
    rig.push_sequenced(&first, 11);
    // The first commit succeeds and then "fails": as after a crash between
    // the commit and the release, the record is still in the ring and
    // nobody was answered.
    let w = Writer::start(rig.settings(0, Faults::parse("vault-writer.after-commit@1=fail").unwrap()));
    assert_eq!(rig.next_answer(), first.ack(11));
    assert_eq!(w.metrics.commit_failures.get(), 1, "the answer came from the retry");
    assert_eq!(rig.sql.chains(), vec![first.chain], "stored once");

    // And the log goes on from there.
    let second = Batch::after(&first.head(), &[r#"{"n":3}"#], 2_000);
    rig.push_sequenced(&second, 12);
    assert_eq!(rig.next_answer(), second.ack(12));
    w.stop().unwrap();
    assert_eq!(rig.sql.chains(), vec![first.chain, second.chain]);
    assert_eq!(rig.remaining_answers(), vec![]);
}

#[test]
fn a_seq_another_writer_committed_with_another_chain_value_is_refused_and_never_acknowledged() {
    let mut rig = Rig::new("vw_other");
    let genesis = ChainHead::genesis(&hasher(), crate::ORIGIN);
    // Two sequencers gave out seq 1 (a split brain); the other one's batch
    // reached the database first.
    let theirs = Batch::after(&genesis, &[r#"{"theirs":1}"#, r#"{"theirs":2}"#], 1_000);
    let ours = Batch::after(&genesis, &[r#"{"ours":1}"#], 1_000);
    assert_ne!(theirs.chain, ours.chain);
    rig.sql.commit(&theirs);
    let mut w = Writer::start(rig.settings(0, Faults::none()));

    // The stored batch itself, sequenced again, is answered: it is committed.
    rig.push_sequenced(&theirs, 1);
    assert_eq!(rig.next_answer(), theirs.ack(1));

    // Ours is not: acknowledging it would tell its client that events
    // were stored that are not.
    rig.push_sequenced(&ours, 2);
    let reason = refusal(w.exited());
    assert!(reason.contains("batch 1 is stored with another chain value"), "{reason}");
    let audit = rig.sql.audit("vault_writer_refused");
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["reason"], reason.as_str());
    assert_eq!(rig.remaining_answers(), vec![], "request 2 must get no answer");
    assert_eq!(rig.sql.chains(), vec![theirs.chain]);
}
