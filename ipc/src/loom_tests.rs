//! The ring algorithm under the loom model checker, which runs every
//! interleaving (and every weak-memory outcome loom models) of small
//! scenarios. The memory is loom-tracked: stamps are loom atomics, record
//! bytes are loom cells, so a read of a record the producer has not
//! published, or a write over one the consumer has not released, fails.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p chronos-ipc --lib --release --target-dir target/loom`

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::core::{self, Memory, ProducerCursor};
use crate::layout::{Header, RECORD_HEADER};

/// A ring of `words` 8-byte words; offsets wrap as in the double mapping.
struct LoomMem {
    header: Header,
    words: Vec<UnsafeCell<u64>>,
    stamps: Vec<AtomicU64>,
}

impl LoomMem {
    fn new(capacity: u64, max_record: u64) -> Arc<LoomMem> {
        let n = (capacity / 8) as usize;
        Arc::new(LoomMem {
            header: Header::new(capacity, max_record),
            words: (0..n).map(|_| UnsafeCell::new(0)).collect(),
            stamps: (0..n).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn idx(&self, off: u64) -> usize {
        ((off / 8) as usize) % self.words.len()
    }

    fn read_payload(&self, off: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        for i in 0..len.div_ceil(8) {
            out.extend_from_slice(&self.read_word(off + 8 * i as u64).to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

impl Memory for LoomMem {
    fn header(&self) -> &Header {
        &self.header
    }

    fn stamp(&self, off: u64) -> &AtomicU64 {
        &self.stamps[self.idx(off)]
    }

    fn write(&self, off: u64, src: &[u8]) {
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            let v = u64::from_le_bytes(w);
            // SAFETY: loom checks that no other thread accesses this cell
            // concurrently; that is exactly the property under test.
            self.words[self.idx(off + 8 * i as u64)].with_mut(|p| unsafe { *p = v });
        }
    }

    fn read_word(&self, off: u64) -> u64 {
        // SAFETY: as in `write`, loom checks the access is ordered.
        self.words[self.idx(off)].with(|p| unsafe { *p })
    }

    fn wake(&self, _bell: &AtomicU32) {}
}

fn payload(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (seq as u8).wrapping_mul(17).wrapping_add(i as u8)).collect()
}

fn push(mem: &LoomMem, cur: &mut ProducerCursor, len: usize) {
    let res = loop {
        match core::reserve(mem, cur, len) {
            Ok(r) => break r,
            Err(crate::PushError::Full) => loom::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    };
    mem.write((res.pos + RECORD_HEADER) % mem.header.capacity, &payload(cur.seq, len));
    core::write_header(mem, cur, &res, 7);
    core::commit(mem, cur, res);
}

#[test]
fn loom_records_arrive_whole_in_order_and_space_is_reused_safely() {
    loom::model(|| {
        // 64 bytes hold one 40-byte record at a time, so every record after
        // the first reuses released space and most straddle the end.
        let mem = LoomMem::new(64, 16);
        let producer = {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                let mut cur = core::recover_producer(&*mem).unwrap();
                for _ in 0..3 {
                    push(&mem, &mut cur, 16);
                }
            })
        };
        let mut pos = 0;
        for seq in 0..3 {
            let rec = loop {
                match core::peek(&*mem, pos).unwrap() {
                    Some(r) => break r,
                    None => loom::thread::yield_now(),
                }
            };
            assert_eq!((rec.seq, rec.len, rec.tag), (seq, 16, 7));
            assert_eq!(mem.read_payload(rec.payload_off(64), 16), payload(seq, 16));
            pos += rec.size;
            core::release(&*mem, pos);
        }
        producer.join().unwrap();
    });
}

#[test]
fn loom_no_wake_up_is_lost() {
    loom::model(|| {
        let mem = LoomMem::new(64, 16);
        let producer = {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                let mut cur = core::recover_producer(&*mem).unwrap();
                push(&mem, &mut cur, 8);
            })
        };
        // The consumer finds nothing and prepares to sleep.
        let bell = core::announce_reader_sleep(&*mem);
        let found = core::peek(&*mem, 0).unwrap().is_some();
        producer.join().unwrap();
        if !found {
            // It would sleep on `bell`: the producer must have rung it, so
            // the futex wait returns instead of sleeping forever.
            assert_ne!(mem.header.data_bell.load(Ordering::Acquire), bell, "lost wake-up");
        }
        core::reader_awake(&*mem);
    });
}

#[test]
fn loom_a_restarted_producer_finds_its_place_while_the_consumer_reads() {
    loom::model(|| {
        let mem = LoomMem::new(128, 16);
        {
            let mut cur = core::recover_producer(&*mem).unwrap();
            push(&mem, &mut cur, 8);
            push(&mem, &mut cur, 8);
            // Simulate a producer killed after its second commit marker but
            // before it updated the hints: roll the hints back.
            mem.header.seq_hint.store(1, Ordering::Release);
            mem.header.tail_hint.store(32, Ordering::Release);
        }
        let consumer = {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                let mut pos = 0;
                while let Some(r) = core::peek(&*mem, pos).unwrap() {
                    pos += r.size;
                    core::release(&*mem, pos);
                }
            })
        };
        let cur = core::recover_producer(&*mem).unwrap();
        assert_eq!((cur.tail, cur.seq), (64, 2));
        consumer.join().unwrap();
    });
}
