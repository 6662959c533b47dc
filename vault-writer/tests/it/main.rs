//! The schema against a real PostgreSQL (private throwaway cluster).
#![allow(clippy::unwrap_used)]

use chronos_ledger::chain::{BatchHeader, ChainHead, TimeNs, TimeSource, TrustedTime};
use chronos_ledger::{HashAlg, TreeHasher, tree};
use chronos_pg_harness::TestDb;
use chronos_vault_writer::schema::{self, SchemaError};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            panic!("connection: {e}");
        }
    });
    client
}

#[tokio::test]
async fn first_migration_round_trips_a_batch() {
    let db = TestDb::new("vault");
    let mut c = connect(&db.url).await;
    let report = schema::migrate(&mut c).await.unwrap();
    assert_eq!(report.applied, vec![1]);
    assert_eq!(report.version, schema::latest_version());
    // Idempotent.
    let again = schema::migrate(&mut c).await.unwrap();
    assert!(again.applied.is_empty());

    // Persistence: the logs table and its partition are UNLOGGED, the rest logged.
    for (table, want) in [("logs", "u"), ("logs_p0", "u"), ("batches", "p"), ("tiles", "p"), ("checkpoints", "p")] {
        let row = c.query_one("SELECT relpersistence::text FROM pg_class WHERE relname = $1", &[&table]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), want, "{table}");
    }

    // A batch built with the ledger crate, written and read back byte-exact.
    let h = TreeHasher::unkeyed(HashAlg::Blake3);
    let events: Vec<Vec<u8>> = (0..5).map(|i| format!("{{\"message\":\"event {i}\",\"n\":{i}}}").into_bytes()).collect();
    let leaves: Vec<_> = events.iter().map(|e| h.leaf(e)).collect();
    let header = BatchHeader {
        seq: 1,
        first_leaf: 0,
        leaf_count: events.len() as u64,
        root: tree::root(&h, &leaves),
        time: TrustedTime { time: TimeNs(1_763_700_000_000_000_000), uncertainty_ns: 1_000_000, source: TimeSource::local() },
    };
    let genesis = ChainHead::genesis(&h, "example.com/vault");
    let head = genesis.next(&h, &header).unwrap();
    c.execute(
        "INSERT INTO chronos_log (origin, hash_alg, verifier_key, genesis) VALUES ($1, $2, $3, $4)",
        &[&"example.com/vault", &"blake3", &"example.com/vault+00000000+AQ==", &genesis.hash.0.as_slice()],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO batches (seq, first_leaf, leaf_count, root, chain, time_ns, uncertainty_ns, time_source, payload_codec, payload)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
        &[
            &1i64,
            &0i64,
            &(events.len() as i64),
            &header.root.0.as_slice(),
            &head.hash.0.as_slice(),
            &(header.time.time.0 as i64),
            &(header.time.uncertainty_ns as i64),
            &header.time.source.as_str(),
            &events.concat(),
        ],
    )
    .await
    .unwrap();
    // The logs table takes binary COPY, as the vault writer will use it.
    let sink = c.copy_in("COPY logs (leaf_index, batch_seq, leaf_hash, event) FROM STDIN BINARY").await.unwrap();
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT8, Type::BYTEA, Type::BYTEA]);
    futures_util::pin_mut!(writer);
    for (i, (e, l)) in events.iter().zip(&leaves).enumerate() {
        writer.as_mut().write(&[&(i as i64), &1i64, &l.0.as_slice(), &e.as_slice()]).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 5);

    // Read back and re-verify with the ledger crate.
    let rows = c.query("SELECT leaf_index, leaf_hash, event FROM logs ORDER BY leaf_index", &[]).await.unwrap();
    let stored: Vec<Vec<u8>> = rows.iter().map(|r| r.get::<_, Vec<u8>>(2)).collect();
    assert_eq!(stored, events);
    let hashes: Vec<_> = stored.iter().map(|e| h.leaf(e)).collect();
    assert_eq!(hashes, leaves);
    let b = c.query_one("SELECT root, chain FROM batches WHERE seq = 1", &[]).await.unwrap();
    assert_eq!(b.get::<_, Vec<u8>>(0), tree::root(&h, &hashes).0.to_vec());
    assert_eq!(b.get::<_, Vec<u8>>(1), head.hash.0.to_vec());

    // Constraints hold: no second log row, no malformed hash, no duplicate leaf.
    assert!(c.execute("INSERT INTO chronos_log (id, origin, hash_alg, verifier_key, genesis) VALUES (2, 'x', 'blake3', 'k', $1)", &[&genesis.hash.0.as_slice()]).await.is_err());
    assert!(c.execute("INSERT INTO tiles (level, idx, width, hashes) VALUES (0, 0, 2, $1)", &[&vec![0u8; 32]]).await.is_err());
    assert!(c.execute("INSERT INTO logs (leaf_index, batch_seq, leaf_hash, event) VALUES (0, 1, '\\x00', '\\x00')", &[]).await.is_err());
    drop(db);
}

#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let db = TestDb::new("race");
    let mut a = connect(&db.url).await;
    let mut b = connect(&db.url).await;
    let (ra, rb) = tokio::join!(schema::migrate(&mut a), schema::migrate(&mut b));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    let mut applied = [ra.applied, rb.applied].concat();
    applied.sort();
    assert_eq!(applied, vec![1], "exactly one of the two applies migration 1");
}

#[tokio::test]
async fn changed_or_newer_schemas_are_refused() {
    let db = TestDb::new("drift");
    let mut c = connect(&db.url).await;
    schema::migrate(&mut c).await.unwrap();

    c.execute("UPDATE chronos_schema_migrations SET sha256 = '\\x00' WHERE version = 1", &[]).await.unwrap();
    let e = schema::migrate(&mut c).await.unwrap_err();
    assert!(matches!(e, SchemaError::Changed { version: 1, .. }), "{e}");

    let sum = {
        use sha2::Digest as _;
        sha2::Sha256::digest(schema::MIGRATIONS[0].sql.as_bytes()).to_vec()
    };
    c.execute("UPDATE chronos_schema_migrations SET sha256 = $1 WHERE version = 1", &[&sum]).await.unwrap();
    c.execute("INSERT INTO chronos_schema_migrations (version, name, sha256) VALUES (999, 'future', '\\x00')", &[]).await.unwrap();
    let e = schema::migrate(&mut c).await.unwrap_err();
    assert!(matches!(e, SchemaError::NewerSchema { found: 999, .. }), "{e}");
    assert!(e.to_string().contains("upgrade chronos"));
}
