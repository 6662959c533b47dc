//! The verifier on ledgers written straight through the vault, in a real
//! PostgreSQL: keyed logs, many windows of batches, column-level edits and
//! checkpoints that do not fit the log. (Tampering of ledgers built by the
//! whole pipeline is tested with the `chronos` command, in the cli crate.)
#![allow(clippy::unwrap_used)]

use chronos_ledger::chain::{TimeNs, TimeSource, TrustedTime};
use chronos_ledger::{Checkpoint, Hash, HashAlg, HashKey};
use chronos_pg_harness::TestDb;
use chronos_verify::{Error, Kind, NoProgress, Options, Report, Status, verify_database};

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
