//! The verifier on ledgers written straight through the vault, in a real
//! PostgreSQL: keyed logs, many windows of batches, column-level edits and
//! checkpoints that do not fit the log. (Tampering of ledgers built by the
//! whole pipeline is tested with the `chronos` command, in the cli crate.)
#![allow(clippy::unwrap_used)]

use chronos_ledger::chain::{TimeNs, TimeSource, TrustedTime};
use chronos_ledger::{Checkpoint, Hash, HashAlg, HashKey};
use chronos_pg_harness::TestDb;
use chronos_verify::{Error, Kind, LogsRebuild, NoProgress, Options, RebuildCause, Report, Status, verify_database};

#[path = "../../benches/common/fixture.rs"]
mod fixture;

fn build(name: &str, spec: &fixture::Spec) -> (TestDb, chronos_ledger::NoteSigner) {
    let db = TestDb::new(name);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let signer = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        fixture::build(c, spec).await
    });
    (db, signer)
}

/// A log of one event per batch whose leaf `i` is `leaves[i]` (a control
/// record) or, past them, a fixture event.
fn build_with_control(name: &str, leaves: Vec<Vec<u8>>, events: u64) -> (TestDb, chronos_ledger::NoteSigner) {
    let db = TestDb::new(name);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let spec = fixture::Spec { events, batch: 1, alg: HashAlg::Sha256, key: None, checkpoint_every: 1 };
    let signer = rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(conn);
        fixture::build_with(c, &spec, |i| match leaves.get(i as usize) {
            Some(l) => (l.clone(), None),
            None => fixture::event(i),
        })
        .await
    });
    (db, signer)
}

fn verify(url: &str, opts: &Options) -> Report {
    verify_database(url, opts, &NoProgress).unwrap()
}

fn trusted(signer: &chronos_ledger::NoteSigner) -> Options {
    Options { trusted_key: Some(signer.verifier()), ..Options::default() }
}

#[test]
fn a_keyed_log_verifies_only_with_its_key() {
    let key = [0x5a; 32];
    let spec = fixture::Spec { events: 3000, batch: 70, alg: HashAlg::HmacSha256, key: Some(key), checkpoint_every: 2 };
    let (db, signer) = build("keyed", &spec);
    let opts = Options { hash_key: Some(HashKey::from_bytes(key)), ..trusted(&signer) };
    let r = verify(&db.url, &opts);
    assert_eq!(r.status, Status::Intact, "{:?}", r.findings);
    assert_eq!((r.summary.logs, r.summary.batches, r.summary.tree_size), (3000, 43, 3000));
    assert_eq!(r.summary.unsigned_leaves, 0);
    let none = verify_database(&db.url, &trusted(&signer), &NoProgress).unwrap_err();
    assert!(matches!(none, Error::HashKey(_)), "{none}");
    let wrong = Options { hash_key: Some(HashKey::from_bytes([0x5b; 32])), ..trusted(&signer) };
    let e = verify_database(&db.url, &wrong, &NoProgress).unwrap_err();
    assert!(e.to_string().contains("not this log's"), "{e}");
}

#[test]
fn many_windows_of_batches_and_column_edits_are_each_reported_in_place() {
    // 600 batches: more than two windows of the checker.
    let spec = fixture::Spec { events: 6000, batch: 10, alg: HashAlg::Sha256, key: None, checkpoint_every: 5 };
    let (db, signer) = build("columns", &spec);
    let r = verify(&db.url, &trusted(&signer));
    assert_eq!(r.status, Status::Intact, "{:?}", r.findings);
    assert_eq!(r.summary.batches, 600);
    assert!(r.summary.checkpoints >= 8, "{}", r.summary.checkpoints);

    let sql = |q: &str| db.cluster.psql(&db.name, q).unwrap();
    sql("UPDATE logs SET leaf_hash = set_byte(leaf_hash, 0, get_byte(leaf_hash, 0) # 1) WHERE leaf_index = 4321");
    sql("UPDATE logs SET batch_seq = batch_seq + 1 WHERE leaf_index = 4500");
    sql("UPDATE logs SET claimed_time = claimed_time + interval '1 second' WHERE leaf_index = 5001");
    let r = verify(&db.url, &trusted(&signer));
    assert_eq!(r.status, Status::Tampered);
    let got: Vec<(Kind, Option<u64>, bool)> =
        r.findings.iter().map(|f| (f.kind, f.leaf, f.detail.starts_with("column"))).collect();
    assert_eq!(
        got,
        vec![
            (Kind::Modified, Some(4321), true),
            (Kind::Modified, Some(4500), true),
            (Kind::Modified, Some(5001), true)
        ],
        "{:#?}",
        r.findings
    );
    assert!(r.findings[0].detail.contains("leaf_hash"));
    assert!(r.findings[1].detail.contains("batch_seq"));
    assert!(r.findings[2].detail.contains("claimed_time"));
    // Batch 433 holds leaves 4320..4330.
    assert_eq!(r.findings[0].seq, Some(433));
}

#[test]
fn checkpoints_that_the_log_does_not_match_are_named() {
    let spec = fixture::Spec { events: 500, batch: 50, alg: HashAlg::Blake3, key: None, checkpoint_every: 100 };
    let (db, signer) = build("checkpoints", &spec);
    let time = TrustedTime { time: TimeNs(1), uncertainty_ns: 0, source: TimeSource::local() };
    let store = |cp: &Checkpoint| {
        let note = cp.sign(&signer).unwrap().replace('\'', "''");
        db.cluster
            .psql(
                &db.name,
                &format!(
                    "INSERT INTO checkpoints (tree_size, chain_seq, note) VALUES ({}, {}, '{note}')",
                    cp.size, cp.chain_seq
                ),
            )
            .unwrap();
    };
    let chain_of = |seq: u64| -> Hash {
        let hex =
            db.cluster.psql(&db.name, &format!("SELECT encode(chain, 'hex') FROM batches WHERE seq = {seq}")).unwrap();
        Hash::from_hex(&hex).unwrap()
    };
    // Validly signed, but of a tree the log does not have: a root that is
    // not the tree's at 100 leaves, and a size inside batch 3 (100..150).
    let wrong_root = Checkpoint {
        origin: fixture::ORIGIN.into(),
        size: 100,
        root: Hash([7; 32]),
        hash: HashAlg::Blake3,
        chain_seq: 2,
        chain_hash: chain_of(2),
        time: time.clone(),
    };
    store(&wrong_root);
    let inside =
        Checkpoint { size: 120, root: Hash([8; 32]), chain_seq: 3, chain_hash: chain_of(3), ..wrong_root.clone() };
    store(&inside);
    let r = verify(&db.url, &trusted(&signer));
    let got: Vec<(Kind, Option<u64>)> = r.findings.iter().map(|f| (f.kind, f.checkpoint)).collect();
    assert_eq!(
        got,
        vec![(Kind::RootMismatch, Some(100)), (Kind::RootMismatch, Some(120)), (Kind::ChainBroken, Some(120))],
        "{:#?}",
        r.findings
    );
    // A saved checkpoint of the same size with another root is a fork.
    let saved = Options { saved_checkpoint: Some(wrong_root.sign(&signer).unwrap()), ..trusted(&signer) };
    let r = verify(&db.url, &saved);
    assert!(r.findings.iter().any(|f| f.kind == Kind::Forked && f.checkpoint == Some(100)), "{:#?}", r.findings);
    // One signed by another key is refused before reading anything.
    let other = chronos_ledger::NoteSigner::generate(fixture::ORIGIN).unwrap();
    let foreign = Options { saved_checkpoint: Some(wrong_root.sign(&other).unwrap()), ..trusted(&signer) };
    assert!(matches!(verify_database(&db.url, &foreign, &NoProgress), Err(Error::SavedCheckpoint(_))));
}

/// A copy of the built ledger, changed by `sql`, verified.
fn verify_copy(db: &TestDb, copy: &str, sql: &str, opts: &Options) -> Report {
    db.cluster.psql("template1", &format!("CREATE DATABASE {copy} TEMPLATE {} STRATEGY FILE_COPY", db.name)).unwrap();
    db.cluster.psql(copy, sql).unwrap();
    verify(&db.cluster.url(copy), opts)
}

fn deleted_logs_leaves(r: &Report) -> Vec<u64> {
    r.findings.iter().filter(|f| (f.kind, f.table) == (Kind::Deleted, "logs")).filter_map(|f| f.leaf).collect()
}

/// Issue 12: crash recovery empties the UNLOGGED `logs`; that was reported
/// as 300 deleted rows.
#[test]
fn a_logs_table_emptied_by_crash_recovery_is_incomplete_not_deleted_even_before_schema_version_4() {
    let spec = fixture::Spec { events: 300, batch: 20, alg: HashAlg::Blake3, key: None, checkpoint_every: 2 };
    let (db, signer) = build("emptied", &spec);
    let opts = trusted(&signer);
    let untouched = verify(&db.url, &opts);
    assert_eq!((untouched.status, untouched.logs_rebuild.as_ref()), (Status::Intact, None), "{:?}", untouched.findings);

    // Schema version 3 has no logs_rebuild table: an empty `logs` alone
    // says that the restore has not begun.
    let r = verify_copy(&db, "emptied_v3", "DROP TABLE logs_rebuild; TRUNCATE logs", &opts);
    assert_eq!(r.status, Status::IntactLogsIncomplete, "{:#?}", r.findings);
    assert_eq!(
        r.logs_rebuild,
        Some(LogsRebuild { cause: RebuildCause::LogsEmpty, from_leaf: 0, to_leaf: 300, rows_missing: 300 })
    );
    // Everything the batches hold was still checked.
    assert_eq!(r.findings_total, 0);
    assert_eq!((r.summary.batches, r.summary.logs, r.summary.tree_size), (15, 0, 300));
    assert_eq!((r.summary.checkpoints, r.summary.unsigned_leaves), (untouched.summary.checkpoints, 0));

    // A crash in the middle of a restore empties `logs` again: every leaf
    // is pending, whatever the row says.
    let r = verify_copy(
        &db,
        "emptied_again",
        "TRUNCATE logs; INSERT INTO logs_rebuild (from_leaf, to_leaf) VALUES (120, 300)",
        &opts,
    );
    assert_eq!(r.status, Status::IntactLogsIncomplete, "{:#?}", r.findings);
    assert_eq!(
        r.logs_rebuild,
        Some(LogsRebuild { cause: RebuildCause::LogsEmpty, from_leaf: 0, to_leaf: 300, rows_missing: 300 })
    );

    // Findings win: the batches are checked in full, and a changed one is
    // tampering however incomplete `logs` is.
    let r = verify_copy(
        &db,
        "emptied_tampered",
        "TRUNCATE logs; UPDATE batches SET time_ns = time_ns - 1 WHERE seq = 7",
        &opts,
    );
    assert_eq!(r.status, Status::Tampered);
    assert_eq!(
        (r.findings_total, r.findings[0].kind, r.findings[0].seq),
        (1, Kind::ChainBroken, Some(7)),
        "{:#?}",
        r.findings
    );
    assert_eq!(r.logs_rebuild.map(|l| l.rows_missing), Some(300));
}

#[test]
fn a_logs_rebuild_row_excuses_missing_rows_only_in_its_range() {
    let spec = fixture::Spec { events: 300, batch: 20, alg: HashAlg::Sha256, key: None, checkpoint_every: 3 };
    let (db, signer) = build("rebuild_row", &spec);
    let opts = trusted(&signer);
    let restoring = |from: u64, to: u64| {
        format!(
            "DELETE FROM logs WHERE leaf_index >= 100; INSERT INTO logs_rebuild (from_leaf, to_leaf) VALUES ({from}, {to})"
        )
    };

    let r = verify_copy(&db, "row_covers", &restoring(100, 300), &opts);
    assert_eq!(r.status, Status::IntactLogsIncomplete, "{:#?}", r.findings);
    assert_eq!(
        r.logs_rebuild,
        Some(LogsRebuild { cause: RebuildCause::LogsRebuildRow, from_leaf: 100, to_leaf: 300, rows_missing: 200 })
    );
    assert_eq!(r.summary.logs, 100);

    // Rows of 100..150 are missing where nothing restores them: deleted.
    let r = verify_copy(&db, "row_short", &restoring(150, 300), &opts);
    assert_eq!(r.status, Status::Tampered);
    assert_eq!(deleted_logs_leaves(&r), (100..150).collect::<Vec<_>>());
    assert_eq!(r.findings_total, 50);
    assert_eq!(r.logs_rebuild.map(|l| (l.from_leaf, l.rows_missing)), Some((150, 150)));

    // A row reaching past the log's end is cut at the end.
    let r = verify_copy(&db, "row_long", &restoring(100, 1 << 40), &opts);
    assert_eq!(r.status, Status::IntactLogsIncomplete, "{:#?}", r.findings);
    assert_eq!(r.logs_rebuild.map(|l| (l.from_leaf, l.to_leaf, l.rows_missing)), Some((100, 300, 200)));

    // A restore that is done (from_leaf reached to_leaf): nothing pending.
    let r = verify_copy(
        &db,
        "row_done",
        "DELETE FROM logs WHERE leaf_index = 42; INSERT INTO logs_rebuild (from_leaf, to_leaf) VALUES (300, 300)",
        &opts,
    );
    assert_eq!((r.status, deleted_logs_leaves(&r), r.logs_rebuild), (Status::Tampered, vec![42], None));

    // A row that is not a range (its CHECKs dropped) excuses nothing.
    let r = verify_copy(
        &db,
        "row_backwards",
        "ALTER TABLE logs_rebuild DROP CONSTRAINT logs_rebuild_check; DELETE FROM logs WHERE leaf_index = 250; \
         INSERT INTO logs_rebuild (from_leaf, to_leaf) VALUES (280, 200)",
        &opts,
    );
    assert_eq!((r.status, deleted_logs_leaves(&r), r.logs_rebuild), (Status::Tampered, vec![250], None));
    assert!(r.notes.iter().any(|n| n.contains("logs_rebuild row (280, 200)")), "{:?}", r.notes);

    // Rows present in the range are checked as usual.
    let r = verify_copy(
        &db,
        "row_modified",
        "DELETE FROM logs WHERE leaf_index >= 100; \
         UPDATE logs SET event = set_byte(event, 3, get_byte(event, 3) # 1) WHERE leaf_index = 99; \
         INSERT INTO logs_rebuild (from_leaf, to_leaf) VALUES (90, 300)",
        &opts,
    );
    assert_eq!(r.status, Status::Tampered);
    assert_eq!(
        (r.findings_total, r.findings[0].kind, r.findings[0].leaf),
        (1, Kind::Modified, Some(99)),
        "{:#?}",
        r.findings
    );
    assert_eq!(r.logs_rebuild.map(|l| (l.from_leaf, l.rows_missing)), Some((90, 200)));
}

/// A history whose every leaf hashes and chains and whose checkpoints are
/// signed, yet impossible: only the replay of the control records sees it.
#[test]
fn the_control_history_is_replayed_and_data_written_while_held_is_found() {
    use chronos_control::event::{Action, ControlEvent, Role};
    use chronos_control::record::Record;
    use chronos_control::{Event, Mode};

    let op = chronos_ledger::NoteSigner::from_seed("op", &[7; 32]).unwrap();
    let note = |action, seq| {
        let e = ControlEvent { origin: fixture::ORIGIN.into(), action, seq, expires_ns: 1 };
        op.sign(&e.text()).unwrap()
    };
    let genesis = Record::Genesis { keys: vec![(op.verifier().to_string(), vec![Role::Operator])] }.encode();
    let hold = Record::Event { note: note(Action::Hold { reason: "audit".into() }, 1) }.encode();
    let to_hold = Record::Transition { from: Mode::Active, to: Mode::Hold, cause: Event::PlaceHold }.encode();
    let release = Record::Event { note: note(Action::Release, 2) }.encode();
    let to_active = Record::Transition { from: Mode::Hold, to: Mode::Active, cause: Event::ReleaseHold }.encode();

    // Held, released, then written: intact, every record replayed.
    let leaves = vec![genesis.clone(), hold.clone(), to_hold.clone(), release, to_active];
    let (db, signer) = build_with_control("verify_control_ok", leaves, 8);
    let r = verify(&db.url, &trusted(&signer));
    assert_eq!(r.status, Status::Intact, "{r:#?}");
    assert_eq!(r.summary.control_records, 5);

    // Held and written anyway: found, at the first event written.
    let (db, signer) = build_with_control("verify_control_held", vec![genesis.clone(), hold.clone(), to_hold], 5);
    let r = verify(&db.url, &trusted(&signer));
    assert_eq!(r.status, Status::Tampered, "{r:#?}");
    let f = r.first.unwrap();
    assert_eq!((f.kind, f.leaf), (Kind::ControlInvalid, Some(3)), "{f:?}");
    assert!(f.detail.contains("mode hold"), "{f:?}");

    // A hold's transition without its signed event, then the same event twice.
    let forged = Record::Transition { from: Mode::Active, to: Mode::Hold, cause: Event::PlaceHold }.encode();
    let (db, signer) = build_with_control("verify_control_forged", vec![genesis, forged, hold.clone(), hold], 4);
    let r = verify(&db.url, &trusted(&signer));
    let kinds: Vec<(Kind, Option<u64>)> = r.findings.iter().map(|f| (f.kind, f.leaf)).collect();
    assert_eq!(kinds, [(Kind::ControlInvalid, Some(1)), (Kind::ControlInvalid, Some(3))], "{r:#?}");
}
