//! Restoring at start, checked against the newest checkpoint saved outside
//! the database: a database restored from an older backup, or holding
//! another history, is refused instead of being extended into a fork.

use chronos_ledger::NoteSigner;
use chronos_orchestrator::saved;

use crate::{Log, Rig, refusal};

/// The kind of the newest audit event, and how many there are.
fn last_audit(rig: &mut Rig) -> (String, usize) {
    let all = rig.sql.audit();
    (all.last().map(|(k, _)| k.clone()).unwrap_or_default(), all.len())
}

#[test]
fn a_saved_checkpoint_ahead_of_the_database_is_refused_and_one_the_database_reaches_is_accepted() {
    let mut rig = Rig::new("orch_behind");
    let mut log = Log::empty();
    let mut signed = Vec::new();
    for b in 0..3 {
        log.commit(&mut rig.sql, &format!("b{b}"), 4);
        signed.push(log.checkpoint());
    }
    // A checkpoint was handed out for a fourth batch, and then the
    // database was restored from a backup taken before it.
    let mut lost = log.clone();
    lost.grow("b3", 4);
    let ahead = lost.checkpoint();
    saved::write(&rig.saved(), &ahead).unwrap();
    let reason = refusal(rig.restore());
    assert!(reason.contains("the database is behind the checkpoint saved outside it"), "{reason}");
    assert!(reason.contains("tree size 16, batch 4; the database holds tree size 12, batch 3"), "{reason}");
    assert_eq!(last_audit(&mut rig), ("database_behind_saved_checkpoint".into(), 1));
    assert_eq!(saved::read(&rig.saved()).unwrap().as_deref(), Some(ahead.as_str()), "the evidence is kept");

    // The checkpoint of the stored head, or any older one, is extended.
    for note in signed.iter().rev() {
        saved::write(&rig.saved(), note).unwrap();
        let restored = rig.restore().unwrap();
        assert_eq!((restored.head, restored.root), (log.head, log.root()));
        assert_eq!(saved::read(&rig.saved()).unwrap().as_ref(), Some(note));
    }
    assert_eq!(last_audit(&mut rig).1, 1, "no refusal");

    // A saved checkpoint older than the database's newest one is brought up
    // to it, so that a later rollback of the database is still caught.
    let newest = signed.last().unwrap();
    rig.sql.rt.block_on(rig.sql.vault.store_checkpoint(12, 3, newest)).unwrap();
    saved::write(&rig.saved(), &signed[0]).unwrap();
    let restored = rig.restore().unwrap();
    assert_eq!(restored.last_signed.map(|l| l.size), Some(12));
    assert_eq!(saved::read(&rig.saved()).unwrap().as_deref(), Some(newest.as_str()));
}

#[test]
fn a_saved_checkpoint_of_another_history_is_refused() {
    let mut rig = Rig::new("orch_fork");
    let mut log = Log::empty();
    log.commit(&mut rig.sql, "b0", 4);
    let after_first = log.clone();
    let first_signed = log.checkpoint();
    log.commit(&mut rig.sql, "b1", 4);
    log.commit(&mut rig.sql, "b2", 4);

    // Batch 2 as signed is not batch 2 as stored, at the same sizes.
    let mut fork = after_first.clone();
    fork.grow("another b1", 4);
    saved::write(&rig.saved(), &fork.checkpoint()).unwrap();
    let reason = refusal(rig.restore());
    assert!(reason.contains("batch 2 differs from the one the checkpoint saved in"), "{reason}");
    assert!(reason.contains("the database holds another history"), "{reason}");
    assert_eq!(last_audit(&mut rig), ("database_behind_saved_checkpoint".into(), 1));

    // The chain still matches, but a leaf under the signed checkpoint was
    // altered in the stored tree: no consistency proof leads from the
    // signed root to the stored one.
    saved::write(&rig.saved(), &first_signed).unwrap();
    rig.restore().unwrap();
    rig.sql.execute(
        "UPDATE tiles SET hashes = overlay(hashes PLACING '\\x00000000'::bytea FROM 33) WHERE level = 0 AND idx = 0",
    );
    let reason = refusal(rig.restore());
    assert!(reason.contains("does not extend the checkpoint saved in"), "{reason}");
    assert!(reason.contains("no consistency proof"), "{reason}");
    assert_eq!(last_audit(&mut rig), ("database_behind_saved_checkpoint".into(), 2));
}

#[test]
fn a_saved_checkpoint_that_does_not_verify_with_the_logs_key_is_refused() {
    let mut rig = Rig::new("orch_unverified");
    let mut log = Log::empty();
    log.commit(&mut rig.sql, "b0", 4);
    let genuine = log.checkpoint();
    saved::write(&rig.saved(), &genuine).unwrap();
    rig.restore().unwrap();

    // A key that calls itself by the log's name.
    let impostor = NoteSigner::from_seed(crate::ORIGIN, &[8; 32]).unwrap();
    // The genuine note with its tree size changed.
    let altered = genuine.replacen("\n4\n", "\n5\n", 1);
    assert_ne!(altered, genuine);
    // Another log's checkpoint, under its own key (a data directory mixed up).
    let other = NoteSigner::from_seed("example.com/another-log", &[9; 32]).unwrap();
    let cases = [
        ("impostor key", log.checkpoint_by(&impostor)),
        ("altered note", altered),
        ("another log", log.checkpoint_by(&other)),
        ("not a note", "hello\n".to_owned()),
    ];
    for (n, (case, note)) in cases.iter().enumerate() {
        saved::write(&rig.saved(), note).unwrap();
        let reason = refusal(rig.restore());
        assert!(reason.contains(rig.saved().to_str().unwrap()), "{case}: the reason names the file: {reason}");
        let (kind, count) = last_audit(&mut rig);
        // Another log's checkpoint fails verification with this log's key
        // before its origin is looked at, so it is "unreadable" too.
        assert_eq!((kind.as_str(), count), ("saved_checkpoint_unreadable", n + 1), "{case}: {reason}");
        assert_eq!(saved::read(&rig.saved()).unwrap().as_ref(), Some(note), "{case}: the file is kept as it is");
    }
}
