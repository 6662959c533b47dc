//! `run` between real rings: what a crash of the orchestrator leaves, and
//! what its successor makes of it; and a signer that stops takes the
//! sequencer down with it.

use chronos_faults::Faults;
use chronos_ipc::ring;
use chronos_ledger::ChainHead;
use chronos_orchestrator::OrchestratorError;
use chronos_wire::{Duplicate, Reply, Sequenced, tag};

use crate::{Log, Orchestrator, Rig, hashed, hasher, wait_for};

#[test]
fn an_input_re_read_after_a_crash_is_answered_from_its_committed_batch_not_sequenced_again() {
    let mut rig = Rig::new("orch_reread");
    let mut rings = rig.rings();
    let key = [5; 32];
    rings.push_hashed(&hashed(Reply { slot: 0, request: 7 }, &key, &[r#"{"a":1}"#, r#"{"a":2}"#, r#"{"a":3}"#]));

    // The first orchestrator hands batch 1 on and dies before releasing
    // its input.
    let mut first = Orchestrator::start(rig.settings(Faults::parse("orchestrator.after-publish@1=fail").unwrap()));
    let (t, record) = rings.next_handed_on();
    assert_eq!(t, tag::SEQUENCED);
    let decided = Sequenced::decode(t, &record).unwrap().decided;
    assert_eq!((decided.seq, decided.first_leaf), (1, 0));
    assert!(matches!(first.exited(), Err(OrchestratorError::Injected(_))));
    assert!(!rings.hashed_released(), "the input stays until its output is handed on");

    // Its successor starts before the vault writer has committed batch 1,
    // so it must wait for that before it believes the database.
    let second = Orchestrator::start(rig.settings(Faults::none()));
    let seq_ring = rings.names[1].clone();
    wait_for("the successor takes the producer role", || {
        ring::inspect(&seq_ring).unwrap().producer_alive.then_some(())
    });
    rig.sql.commit_sequenced(&ChainHead::genesis(&hasher(), crate::ORIGIN), &record);
    rings.release_handed_on();

    // It reads the input again: the body is answered with batch 1's answer.
    let (t, record) = rings.next_handed_on();
    assert_eq!(t, tag::DUPLICATE, "the input must not be sequenced a second time");
    let want = Duplicate { reply: Reply { slot: 0, request: 7 }, seq: 1, first_leaf: 0, leaf_count: 3 };
    assert_eq!(Duplicate::decode(t, &record).unwrap(), want);
    rings.release_handed_on();
    wait_for("the input released", || rings.hashed_released().then_some(()));
    second.stop().unwrap();
    assert_eq!(rig.sql.i64("SELECT count(*) FROM batches"), 1);
    // Stopping signed the committed head.
    assert_eq!(rig.sql.i64("SELECT coalesce(max(tree_size), 0) FROM checkpoints"), 3);
}

#[test]
fn a_batch_committed_behind_the_sequencers_back_stops_the_signer_and_the_sequencer_with_it() {
    let mut rig = Rig::new("orch_signer");
    let _rings = rig.rings();
    let mut o = Orchestrator::start(rig.settings(Faults::none()));
    let ready = rig.ready_file();
    wait_for("the orchestrator is sequencing", || ready.exists().then_some(()));

    // Someone else writes batch 1 (a second writer without the lease, a
    // bug): the committed head is one the sequencer never handed on.
    Log::empty().commit(&mut rig.sql, "intruder", 2);
    match o.exited() {
        Err(OrchestratorError::Signer(_)) => {}
        other => panic!("expected the signer's end to stop the orchestrator, got {other:?}"),
    }
    let audit = rig.sql.audit();
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0].0, "checkpoint_refused");
    assert!(audit[0].1.contains("committed batch unknown to the sequencer"), "{audit:?}");
    assert_eq!(rig.sql.i64("SELECT count(*) FROM checkpoints WHERE tree_size > 0"), 0, "batch 1 is never signed");
    assert!(!ready.exists(), "no longer announced as sequencing");
}

#[test]
fn a_checkpoint_saved_outside_but_lost_before_the_database_stored_it_is_stored_after_a_restart() {
    let mut rig = Rig::new("orch_unstored");
    let _rings = rig.rings();
    let mut log = Log::empty();
    log.commit(&mut rig.sql, "b0", 2);
    let stored = log.checkpoint();
    rig.sql.rt.block_on(rig.sql.vault.store_checkpoint(2, 1, &stored)).unwrap();
    log.commit(&mut rig.sql, "b1", 3);
    // The signer wrote the checkpoint of size 5 to its file and died before
    // the database stored it (fault point `checkpoint.before-store`).
    chronos_orchestrator::saved::write(&rig.saved(), &log.checkpoint()).unwrap();

    // Its successor has nothing new to sequence; the database must still
    // come to hold a checkpoint of its committed head, or the last batches
    // stay unprovable (`chronos prove` reads checkpoints from the database)
    // until the log grows again. (Regression: the signer started from the
    // newest checkpoint of the database *or the file*, took this head for
    // signed, and never stored a checkpoint of it, not even at shutdown.)
    let o = Orchestrator::start(rig.settings(Faults::none()));
    let newest = "SELECT coalesce(max(tree_size), 0) FROM checkpoints";
    wait_for("a stored checkpoint of the committed head", || (rig.sql.i64(newest) == 5).then_some(()));
    o.stop().unwrap();
}
