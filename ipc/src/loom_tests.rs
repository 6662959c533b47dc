//! The ring algorithm under the loom model checker, which runs every
//! interleaving (and every weak-memory outcome loom models) of small
//! scenarios. The memory is loom-tracked word by word, stamps and record
//! bytes alike, so a read of a record that is not ordered after its
//! writing (or a write over one not yet released) can see the wrong bytes
//! and fails the checks.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p chronos-ipc --lib --release --target-dir target/loom`

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::core::{self, Memory, ProducerCursor};
use crate::layout::{Header, RECORD_HEADER};

/// A ring of 8-byte words, each a loom atomic: stamps and record bytes
/// share words exactly as in the segment, and plain accesses are modelled
/// as Relaxed ones, so a read not ordered after the write it needs can
/// return an older value and fail the test's checks.
struct LoomMem {
    header: Header,
    words: Vec<AtomicU64>,
    capacity: u64,
    max_record: u64,
}

impl LoomMem {
    fn new(capacity: u64, max_record: u64) -> Arc<LoomMem> {
        Arc::new(LoomMem {
            header: Header::new(capacity, max_record),
            words: (0..capacity / 8).map(|_| AtomicU64::new(0)).collect(),
            capacity,
            max_record,
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

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn max_record(&self) -> u64 {
        self.max_record
    }

    fn stamp(&self, off: u64) -> &AtomicU64 {
        &self.words[self.idx(off)]
    }

    fn write(&self, off: u64, src: &[u8]) {
        for (i, chunk) in src.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.words[self.idx(off + 8 * i as u64)].store(u64::from_le_bytes(w), Ordering::Relaxed);
        }
    }

    fn read_word(&self, off: u64) -> u64 {
        self.words[self.idx(off)].load(Ordering::Relaxed)
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
    mem.write(core::off(res.pos + RECORD_HEADER, mem.capacity), &payload(cur.seq, len));
    core::write_header(mem, cur, &res, 7);
    core::commit(mem, cur, res);
}

/// Consumes the record at `pos` once it is committed: checks its seq and
/// payload (of `len` bytes), releases it, and returns the next position.
/// A forged or corrupt record fails the test.
fn consume(mem: &LoomMem, pos: u64, seq: u64, len: u32) -> u64 {
    let rec = loop {
        match core::peek(mem, pos) {
            Ok(Some(r)) => break r,
            Ok(None) => loom::thread::yield_now(),
            Err(e) => panic!("forged or corrupt record at {pos}: {e}"),
        }
    };
    assert_eq!((rec.seq, rec.len, rec.tag), (seq, len, 7), "record at {pos}");
    assert_eq!(mem.read_payload(rec.payload_off(mem.capacity), len as usize), payload(seq, len as usize));
    let next = pos + rec.size;
    core::release(mem, next);
    next
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
            pos = consume(&mem, pos, seq, 16);
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
fn loom_a_restarted_producer_continues_while_the_consumer_reads() {
    loom::model(|| {
        let mem = LoomMem::new(128, 16);
        let consumer = {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                let mut pos = 0;
                for seq in 0..3 {
                    pos = consume(&mem, pos, seq, 8);
                }
            })
        };
        // The first producer commits two records, then dies before it
        // records its hints for the second (roll them back to model that).
        let mut cur = core::recover_producer(&*mem).unwrap();
        push(&mem, &mut cur, 8);
        push(&mem, &mut cur, 8);
        mem.header.seq_hint.store(1, Ordering::Release);
        mem.header.tail_hint.store(32, Ordering::Release);
        // Its successor recovers while the consumer reads, and continues.
        let mut cur = core::recover_producer(&*mem).unwrap();
        assert_eq!((cur.tail, cur.seq), (64, 2));
        push(&mem, &mut cur, 8);
        consumer.join().unwrap();
    });
}

#[test]
fn loom_stale_bytes_never_pass_for_a_commit_stamp() {
    loom::model(|| {
        let mem = LoomMem::new(128, 32);
        let producer = {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                let mut cur = core::recover_producer(&*mem).unwrap();
                // An abandoned reservation of 24 bytes at position 0 whose
                // payload holds, where the next record boundary will be
                // (position 32), the stamp `!32` and a plausible header.
                let res = core::reserve(&*mem, &mut cur, 24).unwrap();
                let mut forged = Vec::new();
                forged.extend_from_slice(&[0u8; 8]);
                forged.extend_from_slice(&(!32u64).to_le_bytes());
                forged.extend_from_slice(&1u64.to_le_bytes());
                mem.write(core::off(res.pos + RECORD_HEADER, 128), &forged);
                // Then real records of 8 bytes (32 each): the second one's
                // boundary is where the forgery sits.
                push(&mem, &mut cur, 8);
                push(&mem, &mut cur, 8);
            })
        };
        let mut pos = 0;
        for seq in 0..2 {
            pos = consume(&mem, pos, seq, 8);
        }
        producer.join().unwrap();
    });
}

#[test]
fn loom_no_space_wake_up_is_lost() {
    loom::model(|| {
        let mem = LoomMem::new(64, 16);
        let mut cur = core::recover_producer(&*mem).unwrap();
        push(&mem, &mut cur, 16); // 40 of 64 bytes: the next one does not fit
        let consumer = {
            let mem = mem.clone();
            loom::thread::spawn(move || {
                let rec = core::peek(&*mem, 0).unwrap().unwrap();
                core::release(&*mem, rec.size);
            })
        };
        // The producer finds no room and prepares to sleep.
        let bell = core::announce_writer_sleep(&*mem);
        let room = core::reserve(&*mem, &mut cur, 16).is_ok();
        consumer.join().unwrap();
        if !room {
            assert_ne!(mem.header.space_bell.load(Ordering::Acquire), bell, "lost space wake-up");
        }
        core::writer_awake(&*mem);
    });
}
