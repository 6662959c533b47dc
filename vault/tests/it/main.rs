//! The schema against a real PostgreSQL (private throwaway cluster).
#![allow(clippy::unwrap_used)]

use chronos_ledger::chain::{BatchHeader, ChainHead, TimeNs, TimeSource, TrustedTime};
use chronos_ledger::{HashAlg, TreeHasher, tree};
use chronos_pg_harness::TestDb;
use chronos_vault::schema::{self, SchemaError};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls};

pub(crate) async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            panic!("connection: {e}");
        }
    });
    client
}

/// A private cluster with a migrated database `name`, and a vault on it.
pub(crate) async fn vault(name: &str) -> (TestDb, chronos_vault::store::Vault) {
    let db = TestDb::new(name);
    let mut c = connect(&db.url).await;
    schema::migrate(&mut c).await.unwrap();
    (db, chronos_vault::store::Vault::new(c))
}

#[tokio::test]
async fn first_migration_round_trips_a_batch() {
    let db = TestDb::new("vault");
    let mut c = connect(&db.url).await;
    let report = schema::migrate(&mut c).await.unwrap();
    let all: Vec<i32> = schema::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(report.applied, all);
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
    let events: Vec<Vec<u8>> =
        (0..5).map(|i| format!("{{\"message\":\"event {i}\",\"n\":{i}}}").into_bytes()).collect();
    let leaves: Vec<_> = events.iter().map(|e| h.leaf(e)).collect();
    let header = BatchHeader {
        seq: 1,
        first_leaf: 0,
        leaf_count: events.len() as u64,
        root: tree::root(&h, &leaves),
        time: TrustedTime {
            time: TimeNs(1_763_700_000_000_000_000),
            uncertainty_ns: 1_000_000,
            source: TimeSource::local(),
        },
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
    assert!(
        c.execute(
            "INSERT INTO chronos_log (id, origin, hash_alg, verifier_key, genesis) VALUES (2, 'x', 'blake3', 'k', $1)",
            &[&genesis.hash.0.as_slice()]
        )
        .await
        .is_err()
    );
    assert!(
        c.execute("INSERT INTO tiles (level, idx, width, hashes) VALUES (0, 0, 2, $1)", &[&vec![0u8; 32]])
            .await
            .is_err()
    );
    assert!(
        c.execute("INSERT INTO logs (leaf_index, batch_seq, leaf_hash, event) VALUES (0, 1, '\\x00', '\\x00')", &[])
            .await
            .is_err()
    );
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
    let all: Vec<i32> = schema::MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(applied, all, "exactly one of the two applies each migration");
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
    c.execute("INSERT INTO chronos_schema_migrations (version, name, sha256) VALUES (999, 'future', '\\x00')", &[])
        .await
        .unwrap();
    let e = schema::migrate(&mut c).await.unwrap_err();
    assert!(matches!(e, SchemaError::NewerSchema { found: 999, .. }), "{e}");
    assert!(e.to_string().contains("upgrade chronos"));
}

mod store {
    //! Committing batches and rebuilding `logs` after a PostgreSQL crash.

    use chronos_ledger::chain::{BatchHeader, ChainHead, TimeNs, TimeSource, TrustedTime};
    use chronos_ledger::payload::EventRef;
    use chronos_ledger::{Hash, HashAlg, TreeHasher, tree};
    use chronos_vault::store::{BatchRecord, PARTITION_LEAVES, Vault, VaultError};

    use tokio_postgres::error::SqlState;

    use super::connect;

    /// Events of varied sizes up to 64 KiB, some with claimed times.
    fn events(seed: u64, n: usize) -> Vec<(Vec<u8>, Option<i64>)> {
        (0..n)
            .map(|i| {
                let k = seed * 1000 + i as u64;
                let pad = "x".repeat(((k * 7919) % 65_000) as usize);
                let time = k.is_multiple_of(3).then_some(1_763_700_000_000_000_000 + k as i64);
                (format!("{{\"k\":{k},\"pad\":\"{pad}\"}}").into_bytes(), time)
            })
            .collect()
    }

    fn record<'a>(
        h: &TreeHasher,
        head: &mut ChainHead,
        first_leaf: u64,
        evs: &'a [(Vec<u8>, Option<i64>)],
    ) -> BatchRecord<'a> {
        let leaf_hashes: Vec<Hash> = evs.iter().map(|(e, _)| h.leaf(e)).collect();
        let header = BatchHeader {
            seq: head.seq + 1,
            first_leaf,
            leaf_count: evs.len() as u64,
            root: tree::root(h, &leaf_hashes),
            time: TrustedTime {
                time: TimeNs(1_763_700_000_000_000_000),
                uncertainty_ns: 0,
                source: TimeSource::local(),
            },
        };
        if first_leaf == head.size {
            *head = head.next(h, &header).unwrap();
        }
        BatchRecord {
            chain: head.hash,
            header,
            events: evs.iter().map(|(e, t)| EventRef { bytes: e, claimed_time_ns: *t }).collect(),
            leaf_hashes,
            payload: None,
            key: None,
        }
    }

    async fn logs(vault: &mut Vault) -> Vec<(i64, i64, Vec<u8>, Vec<u8>, bool)> {
        let rows = vault
            .client()
            .query("SELECT leaf_index, batch_seq, leaf_hash, event, claimed_time IS NOT NULL FROM logs ORDER BY leaf_index", &[])
            .await
            .unwrap();
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))).collect()
    }

    #[tokio::test]
    async fn committed_batches_survive_a_postgresql_crash_and_logs_are_rebuilt() {
        let (mut db, mut vault) = super::vault("vaultcrash").await;
        let h = TreeHasher::unkeyed(HashAlg::Blake3);
        let mut head = ChainHead::genesis(&h, "example.com/vault");
        let sets: Vec<_> = (0..4).map(|s| events(s, 40 + 10 * s as usize)).collect();
        let mut first = 0;
        for set in &sets {
            let rec = record(&h, &mut head, first, set);
            first += set.len() as u64;
            vault.commit(&[rec], &[]).await.unwrap();
        }
        let before = logs(&mut vault).await;
        assert_eq!(before.len() as u64, first);
        let all: Vec<&Vec<u8>> = sets.iter().flatten().map(|(e, _)| e).collect();
        for (i, row) in before.iter().enumerate() {
            assert_eq!((row.0 as usize, &row.3), (i, all[i]), "byte-exact, in order");
            assert_eq!(row.2, h.leaf(all[i]).0.to_vec());
        }
        assert!(!vault.logs_need_rebuild().await.unwrap());

        // PostgreSQL crashes: the UNLOGGED table comes back empty.
        db.cluster.crash().unwrap();
        db.cluster.restart().unwrap();
        let mut vault = Vault::new(connect(&db.url).await);
        assert_eq!(vault.ends().await.unwrap(), (first, 0));
        assert!(vault.logs_need_rebuild().await.unwrap());
        let mut seen = Vec::new();
        let done = vault.rebuild_logs(&h, |p| seen.push(p)).await.unwrap();
        assert_eq!((done.batches_done, done.batches_total, done.leaves_done), (4, 4, first));
        assert!(!seen.is_empty(), "progress was reported");
        assert_eq!(logs(&mut vault).await, before, "rebuilt byte for byte");
        assert!(!vault.logs_need_rebuild().await.unwrap());
        // Running it again finds nothing to do.
        assert_eq!(vault.rebuild_logs(&h, |_| {}).await.unwrap().batches_total, 0);
    }

    #[tokio::test]
    async fn a_rebuild_refuses_a_payload_that_does_not_match_its_root() {
        let (_db, mut vault) = super::vault("vaulttamper").await;
        let h = TreeHasher::unkeyed(HashAlg::Sha256);
        let mut head = ChainHead::genesis(&h, "example.com/vault");
        let (a, b) = (events(1, 5), events(2, 5));
        vault.commit(&[record(&h, &mut head, 0, &a), record(&h, &mut head, 5, &b)], &[]).await.unwrap();
        // Someone swaps batch 2's payload for batch 1's, and logs is empty.
        let c = vault.client();
        c.batch_execute(
            "UPDATE batches SET payload = (SELECT payload FROM batches WHERE seq = 1) WHERE seq = 2; TRUNCATE logs",
        )
        .await
        .unwrap();
        let e = vault.rebuild_logs(&h, |_| {}).await.unwrap_err();
        assert!(matches!(e, VaultError::Corrupt { seq: 2, .. }), "{e}");
        assert!(e.to_string().contains("does not hash to its stored root"), "{e}");
    }

    #[tokio::test]
    async fn a_batch_that_crosses_a_partition_boundary_creates_the_next_partition() {
        let (_db, mut vault) = super::vault("vaultpart").await;
        let h = TreeHasher::unkeyed(HashAlg::Blake3);
        let mut head = ChainHead::genesis(&h, "example.com/vault");
        let evs = events(3, 4);
        vault.commit(&[record(&h, &mut head, PARTITION_LEAVES - 2, &evs)], &[]).await.unwrap();
        let parts = vault
            .client()
            .query("SELECT tableoid::regclass::text, count(*) FROM logs GROUP BY 1 ORDER BY 1", &[])
            .await
            .unwrap();
        let got: Vec<(String, i64)> = parts.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(got, vec![("logs_p0".to_owned(), 2), ("logs_p1".to_owned(), 2)]);
        let persistence: String = vault
            .client()
            .query_one("SELECT relpersistence::text FROM pg_class WHERE relname = 'logs_p1'", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(persistence, "u");
    }

    #[tokio::test]
    async fn a_failed_commit_stores_nothing() {
        let (_db, mut vault) = super::vault("vaultatomic").await;
        let h = TreeHasher::unkeyed(HashAlg::Blake3);
        let mut head = ChainHead::genesis(&h, "example.com/vault");
        let (a, b) = (events(4, 3), events(5, 3));
        vault.commit(&[record(&h, &mut head, 0, &a)], &[]).await.unwrap();
        // A second flush whose second batch reuses seq 1: the primary key
        // refuses it, and the first batch of the flush must not stay either.
        let mut dup_head = head;
        let good = record(&h, &mut dup_head, 3, &b);
        let mut bad = record(&h, &mut dup_head, 6, &a);
        bad.header.seq = 1;
        assert!(matches!(vault.commit(&[good, bad], &[]).await, Err(VaultError::Database(_))));
        assert_eq!(vault.ends().await.unwrap(), (3, 3));
    }

    /// A connection whose errors do not fail the test (these tests cut it).
    async fn quiet_vault(url: &str) -> Vault {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Vault::new(client)
    }

    fn code(e: &VaultError) -> Option<SqlState> {
        match e {
            VaultError::Database(d) => d.code().cloned(),
            _ => None,
        }
    }

    #[tokio::test]
    async fn errors_are_transient_or_not_by_their_sqlstate() {
        let (db, _) = super::vault("transient").await;
        let mut vault = quiet_vault(&db.url).await;
        let h = TreeHasher::unkeyed(HashAlg::Sha256);
        let genesis = ChainHead::genesis(&h, "example.com/vault");
        let evs = events(6, 2);
        let mut head = genesis;
        vault.commit(&[record(&h, &mut head, 0, &evs)], &[]).await.unwrap();

        // Another writer's batch under a seq already stored: a retry can only
        // repeat the unique-key violation, so it is a refusal.
        let mut other = genesis;
        let e = vault.commit(&[record(&h, &mut other, 0, &evs)], &[]).await.unwrap_err();
        assert_eq!(code(&e), Some(SqlState::UNIQUE_VIOLATION), "{e:?}");
        assert!(!e.is_transient(), "{e:?}");

        // The connection's backend is terminated (an administrator, a
        // failover): a new connection may well succeed. Idle, the client
        // only sees its connection closed (no SQLSTATE).
        let pid: i32 = vault.client().query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        let mut admin = quiet_vault(&db.url).await;
        let terminate = "SELECT pg_terminate_backend($1, 10000)";
        assert!(admin.client().query_one(terminate, &[&pid]).await.unwrap().get::<_, bool>(0));
        let e = vault.head().await.unwrap_err();
        assert_eq!(code(&e), None, "{e:?}");
        assert!(e.is_transient(), "{e:?}");

        // In the middle of a statement, PostgreSQL says why first (57P01).
        let mut busy = quiet_vault(&db.url).await;
        let pid: i32 = busy.client().query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
        let sleep = async move { busy.client().execute("SELECT pg_sleep(60)", &[]).await.map_err(VaultError::from) };
        let sleeping = tokio::spawn(sleep);
        let active = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND wait_event = 'PgSleep'";
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while admin.client().query_one(active, &[&pid]).await.unwrap().get::<_, i64>(0) == 0 {
            assert!(std::time::Instant::now() < deadline, "the statement did not start within 30 s");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(admin.client().query_one(terminate, &[&pid]).await.unwrap().get::<_, bool>(0));
        let e = sleeping.await.unwrap().unwrap_err();
        assert_eq!(code(&e), Some(SqlState::ADMIN_SHUTDOWN), "{e:?}");
        assert!(e.is_transient(), "{e:?}");
        // And the data is still there for the retry.
        let mut retry = quiet_vault(&db.url).await;
        assert_eq!(retry.head().await.unwrap(), Some((1, head.hash, 2)));
    }
}

mod tiles {
    //! Tree nodes stored as tiles answer proofs exactly as the in-memory tree.

    use chronos_ledger::chain::{BatchHeader, TimeNs, TimeSource, TrustedTime};
    use chronos_ledger::payload::EventRef;
    use chronos_ledger::tree::{self, CompactRange, MemTree, NodeId};
    use chronos_ledger::{Hash, HashAlg, TreeHasher};
    use chronos_vault::store::{BatchRecord, VaultError};
    use chronos_vault::tiles;

    #[tokio::test]
    async fn proofs_from_tiles_equal_proofs_from_the_whole_tree() {
        let (_db, mut vault) = super::vault("tiles").await;
        let h = TreeHasher::unkeyed(HashAlg::Sha256);
        let mut mem = MemTree::new();
        let mut range = CompactRange::new();
        let total = 70_000u64; // past 256^2, so tiles of levels 0, 1 and 2 exist
        let events: Vec<Vec<u8>> = (0..total).map(|i| format!("{{\"i\":{i}}}").into_bytes()).collect();
        let mut first = 0u64;
        let mut seq = 0;
        while first < total {
            let n = (997 + seq * 13 % 500).min(total - first); // odd sizes: batches straddle tiles
            seq += 1;
            let evs = &events[first as usize..(first + n) as usize];
            let leaves: Vec<Hash> = evs.iter().map(|e| h.leaf(e)).collect();
            let mut nodes: Vec<(NodeId, Hash)> = Vec::new();
            for l in &leaves {
                mem.append(&h, *l);
                range.append(&h, *l, |id, hash| {
                    if tiles::is_stored(id) {
                        nodes.push((id, *hash));
                    }
                });
            }
            let rec = BatchRecord {
                header: BatchHeader {
                    seq,
                    first_leaf: first,
                    leaf_count: n,
                    root: tree::root(&h, &leaves),
                    time: TrustedTime { time: TimeNs(1), uncertainty_ns: 0, source: TimeSource::local() },
                },
                chain: Hash([0; 32]),
                events: evs.iter().map(|e| EventRef { bytes: e, claimed_time_ns: None }).collect(),
                leaf_hashes: leaves,
                payload: None,
                key: None,
            };
            vault.commit(&[rec], &nodes).await.unwrap();
            first += n;
        }
        let tile_rows: i64 = vault.client().query_one("SELECT count(*) FROM tiles", &[]).await.unwrap().get(0);
        assert!(tile_rows > 270, "{tile_rows} tiles");
        let mut cases = vec![(0, 1), (255, 256), (256, 257), (65_535, 65_536), (65_536, 65_537), (69_999, 70_000)];
        let mut x = 12_345u64;
        for _ in 0..40 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let size = 1 + (x >> 11) % total;
            cases.push(((x >> 3) % size, size));
        }
        for (index, size) in cases {
            let plan = tree::inclusion_plan(index, size).unwrap();
            let set = tiles::fetch(vault.client(), &h, plan.node_ids()).await.unwrap();
            let from_tiles = tree::inclusion_proof(&h, &set, index, size).unwrap();
            assert_eq!(
                from_tiles,
                tree::inclusion_proof(&h, &mem, index, size).unwrap(),
                "inclusion {index} in {size}"
            );
            let root = mem.root_at(&h, size).unwrap();
            tree::verify_inclusion(&h, index, size, &h.leaf(&events[index as usize]), &from_tiles, &root).unwrap();

            let old = index.max(1);
            let plan = tree::consistency_plan(old, size).unwrap();
            let set = tiles::fetch(vault.client(), &h, plan.node_ids()).await.unwrap();
            let from_tiles = tree::consistency_proof(&h, &set, old, size).unwrap();
            assert_eq!(
                from_tiles,
                tree::consistency_proof(&h, &mem, old, size).unwrap(),
                "consistency {old} to {size}"
            );
            // O(log n) tile reads: a handful of tiles at most per proof.
            assert!(set.tiles_fetched() <= 2 * 3 + 2, "{} tiles for one proof", set.tiles_fetched());
        }
        // The sequencer's restart path: the compact range read back from tiles.
        let restored = tiles::compact_range(vault.client(), &h, total).await.unwrap();
        assert_eq!(restored, range);
        assert_eq!(restored.root(&h), mem.root(&h));
    }

    #[tokio::test]
    async fn tiles_refuse_nodes_that_do_not_continue_them() {
        let (_db, mut vault) = super::vault("tilesgap").await;
        let h = TreeHasher::unkeyed(HashAlg::Blake3);
        let ev = b"{}".to_vec();
        let rec = |seq: u64, first: u64| BatchRecord {
            header: BatchHeader {
                seq,
                first_leaf: first,
                leaf_count: 1,
                root: h.leaf(&ev),
                time: TrustedTime { time: TimeNs(1), uncertainty_ns: 0, source: TimeSource::local() },
            },
            chain: Hash([0; 32]),
            events: vec![EventRef { bytes: &ev, claimed_time_ns: None }],
            leaf_hashes: vec![h.leaf(&ev)],
            payload: None,
            key: None,
        };
        vault.commit(&[rec(1, 0)], &[(NodeId { level: 0, index: 0 }, h.leaf(&ev))]).await.unwrap();
        // Leaf 2 without leaf 1: a hole in tile (0, 0).
        let e = vault.commit(&[rec(2, 1)], &[(NodeId { level: 0, index: 2 }, h.leaf(&ev))]).await.unwrap_err();
        assert!(matches!(e, VaultError::Corrupt { .. }), "{e}");
        // Nothing of the refused flush was stored.
        let n: i64 = vault.client().query_one("SELECT count(*) FROM batches", &[]).await.unwrap().get(0);
        assert_eq!(n, 1);
    }
}
