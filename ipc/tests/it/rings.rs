//! One process, both ends: the record protocol itself.

use std::time::{Duration, Instant};

use chronos_ipc::ring::{self, Consumer, Producer};
use chronos_ipc::{Distributor, PushError, RingError, RingSet};

use crate::TestRing;

const KIB64: u64 = 64 << 10;

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seed as u8).wrapping_mul(13).wrapping_add(i as u8)).collect()
}

#[test]
fn records_round_trip_across_many_wraps() {
    let r = TestRing::new("wraps", KIB64, 20_000);
    let mut p = Producer::attach(&r.0).unwrap();
    let mut c = Consumer::attach(&r.0).unwrap();
    let mut sent = 0u64;
    let mut got = 0u64;
    // Sizes chosen so records straddle the end of the data area often.
    let sizes = [0usize, 1, 7, 8, 9, 150, 4096, 19_999, 20_000, 333];
    while got < 2_000 {
        while sent < 2_000 {
            let len = sizes[(sent % sizes.len() as u64) as usize];
            match p.try_push(sent as u32, &bytes(sent, len)) {
                Ok(()) => sent += 1,
                Err(PushError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        let batch = c.poll(7).unwrap();
        assert!(!batch.is_empty());
        for rec in batch.iter() {
            assert_eq!(rec.seq, got);
            assert_eq!(rec.tag, got as u32);
            let len = sizes[(got % sizes.len() as u64) as usize];
            assert_eq!(rec.payload, &bytes(got, len)[..], "record {got}");
            got += 1;
        }
        c.release();
    }
    assert!(p.is_drained());
}

#[test]
fn a_full_ring_pushes_back_and_frees_on_release() {
    let r = TestRing::new("full", KIB64, 4096);
    let mut p = Producer::attach(&r.0).unwrap();
    let mut c = Consumer::attach(&r.0).unwrap();
    let rec = vec![7u8; 4000];
    let mut n = 0;
    while p.try_push(1, &rec).is_ok() {
        n += 1;
    }
    assert_eq!(p.try_push(1, &rec), Err(PushError::Full));
    assert!(n >= 15, "a 64 KiB ring holds at least 15 records of 4000 bytes, held {n}");
    // Blocking push with a deadline times out while nobody reads.
    assert_eq!(p.push(1, &rec, Instant::now() + Duration::from_millis(20)), Err(PushError::Timeout));
    // Polled but not released: still no room.
    assert_eq!(c.poll(1).unwrap().len(), 1);
    assert_eq!(p.try_push(1, &rec), Err(PushError::Full));
    c.release();
    p.try_push(1, &rec).unwrap();
    assert_eq!(p.try_push(1, &vec![0; 4097]), Err(PushError::TooLarge { len: 4097, max: 4096 }));
}

#[test]
fn an_abandoned_reservation_leaves_no_record() {
    let r = TestRing::new("abandon", KIB64, 1024);
    let mut p = Producer::attach(&r.0).unwrap();
    let mut c = Consumer::attach(&r.0).unwrap();
    {
        let mut g = p.try_reserve(9, 100).unwrap();
        g.payload_mut().fill(0xee);
        // dropped, not committed
    }
    assert!(!c.has_records().unwrap());
    p.try_push(1, b"real").unwrap();
    let batch = c.poll(10).unwrap();
    let recs: Vec<_> = batch.iter().collect();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].seq, recs[0].tag, recs[0].payload), (0, 1, &b"real"[..]));
}

#[test]
fn a_restarted_consumer_gets_unreleased_records_again() {
    let r = TestRing::new("redeliver", KIB64, 1024);
    let mut p = Producer::attach(&r.0).unwrap();
    for i in 0..10u8 {
        p.try_push(0, &[i]).unwrap();
    }
    {
        let mut c = Consumer::attach(&r.0).unwrap();
        assert_eq!(c.poll(4).unwrap().len(), 4);
        c.release();
        assert_eq!(c.poll(3).unwrap().len(), 3); // not released
    }
    let mut c = Consumer::attach(&r.0).unwrap();
    let batch = c.poll(100).unwrap();
    let seqs: Vec<u64> = batch.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (4..10).collect::<Vec<_>>());
}

#[test]
fn a_restarted_producer_continues_after_the_last_committed_record() {
    let r = TestRing::new("reprod", KIB64, 1024);
    {
        let mut p = Producer::attach(&r.0).unwrap();
        p.try_push(0, b"a").unwrap();
        p.try_push(0, b"b").unwrap();
        let mut half = p.try_reserve(0, 50).unwrap();
        half.payload_mut()[..25].fill(0xff); // dies mid-write
    }
    let mut p = Producer::attach(&r.0).unwrap();
    assert_eq!(p.next_seq(), 2);
    p.try_push(0, b"c").unwrap();
    let mut c = Consumer::attach(&r.0).unwrap();
    let batch = c.poll(10).unwrap();
    let got: Vec<_> = batch.iter().map(|r| (r.seq, r.payload.to_vec())).collect();
    assert_eq!(got, vec![(0, b"a".to_vec()), (1, b"b".to_vec()), (2, b"c".to_vec())]);
}

/// Regression: payload bytes left at a future record boundary (here by an
/// abandoned reservation) once passed for that record's commit stamp.
#[test]
fn stale_payload_bytes_never_pass_for_a_commit_stamp() {
    let r = TestRing::new("forged", KIB64, 1024);
    let mut p = Producer::attach(&r.0).unwrap();
    let mut c = Consumer::attach(&r.0).unwrap();
    {
        // Reserve 100 bytes at position 0 and write, where the record after
        // a 1-byte record will start (position 32, payload offset 8), the
        // stamp !32 followed by a plausible seq, length and tag; abandon it.
        let mut g = p.try_reserve(1, 100).unwrap();
        let buf = g.payload_mut();
        buf[8..16].copy_from_slice(&(!32u64).to_le_bytes());
        buf[16..24].copy_from_slice(&1u64.to_le_bytes());
        buf[24..32].copy_from_slice(&(5u64 | (9u64 << 32)).to_le_bytes());
    }
    p.try_push(1, b"x").unwrap();
    let batch = c.poll(10).unwrap();
    let got: Vec<_> = batch.iter().map(|r| (r.seq, r.tag, r.payload.to_vec())).collect();
    assert_eq!(got, vec![(0, 1, b"x".to_vec())], "a forged record was delivered");
    c.release();
    assert!(!c.has_records().unwrap());
    p.try_push(2, b"y").unwrap();
    let batch = c.poll(10).unwrap();
    let got: Vec<_> = batch.iter().map(|r| (r.seq, r.tag, r.payload.to_vec())).collect();
    assert_eq!(got, vec![(1, 2, b"y".to_vec())]);
}

#[test]
fn one_live_producer_and_one_live_consumer_per_ring() {
    let r = TestRing::new("roles", KIB64, 1024);
    let p = Producer::attach(&r.0).unwrap();
    assert!(matches!(Producer::attach(&r.0), Err(RingError::Busy { role: "producer", .. })));
    let c = Consumer::attach(&r.0).unwrap();
    assert!(matches!(Consumer::attach(&r.0), Err(RingError::Busy { role: "consumer", .. })));
    let st = ring::inspect(&r.0).unwrap();
    assert!(st.producer_alive && st.consumer_alive && !st.is_stale());
    assert!(!ring::remove_stale(&r.0).unwrap(), "a ring in use is never removed");
    assert!(matches!(ring::remove(&r.0), Err(RingError::Busy { .. })));
    drop((p, c));
    assert!(ring::inspect(&r.0).unwrap().is_stale());
    Producer::attach(&r.0).unwrap();
}

#[test]
fn geometry_is_validated() {
    for (cap, max) in [(1000, 10), (KIB64 + 4096, 10), (KIB64, 0), (KIB64, KIB64 / 2)] {
        assert!(matches!(ring::create("test-geometry", cap, max), Err(RingError::Invalid(_))), "{cap} {max}");
    }
    assert!(matches!(ring::create("bad/name", KIB64, 10), Err(RingError::Invalid(_))));
    let r = TestRing::new("geom", KIB64, 1000);
    assert!(matches!(ring::create(&r.0, KIB64, 1000), Err(RingError::Exists { .. })));
    ring::open_or_create(&r.0, KIB64, 1000).unwrap();
    assert!(matches!(ring::open_or_create(&r.0, 2 * KIB64, 1000), Err(RingError::Incompatible { .. })));
    assert!(matches!(Producer::attach("test-no-such-ring"), Err(RingError::NotFound { .. })));
}

#[test]
fn a_ring_set_serves_its_rings_in_turn() {
    let rings: Vec<TestRing> = (0..3).map(|i| TestRing::new(&format!("set{i}"), KIB64, 1024)).collect();
    let mut producers: Vec<Producer> = rings.iter().map(|r| Producer::attach(&r.0).unwrap()).collect();
    for (i, p) in producers.iter_mut().enumerate() {
        for k in 0..20u8 {
            p.try_push(i as u32, &[k]).unwrap();
        }
    }
    let mut set = RingSet::new(rings.iter().map(|r| Consumer::attach(&r.0).unwrap()).collect());
    let mut order = Vec::new();
    while let Some((i, batch)) = set.poll(5).unwrap() {
        assert!(batch.iter().all(|r| r.tag == i as u32));
        order.push(i);
        set.release(i);
    }
    assert_eq!(order.len(), 12);
    assert_eq!(&order[..6], &[0, 1, 2, 0, 1, 2], "round robin, not one ring drained first");
    assert!(!set.wait(Some(Instant::now() + Duration::from_millis(10))).unwrap());
    producers[1].try_push(0, b"x").unwrap();
    assert!(set.wait(Some(Instant::now() + Duration::from_secs(10))).unwrap());
}

#[test]
fn a_distributor_routes_around_full_rings() {
    let rings: Vec<TestRing> = (0..2).map(|i| TestRing::new(&format!("dist{i}"), KIB64, 8192)).collect();
    let mut d = Distributor::new(rings.iter().map(|r| Producer::attach(&r.0).unwrap()).collect());
    let mut c0 = Consumer::attach(&rings[0].0).unwrap();
    let rec = vec![1u8; 8000];
    let mut per_ring = [0usize; 2];
    loop {
        match d.try_push(0, &rec) {
            Ok(i) => per_ring[i] += 1,
            Err(PushError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(per_ring[0], per_ring[1], "spread evenly: {per_ring:?}");
    // Ring 0's consumer makes room: the next record goes there.
    assert!(c0.poll(1).unwrap().len() == 1);
    c0.release();
    assert_eq!(d.try_push(0, &rec), Ok(0));
}
