//! The ring algorithm, independent of where the memory comes from: a shared
//! memory segment in production, loom-tracked cells under the model checker.
//!
//! One producer, one consumer. The producer owns `[head, head + capacity)`
//! beyond the committed records; the consumer owns the committed records in
//! `[head, tail)` until it moves `head` past them.

use crate::error::{PushError, RingError};
use crate::layout::{ALIGN, Header, RECORD_HEADER, record_size};
use crate::sync::{AtomicU64, Ordering, fence};

/// Access to one ring's memory.
pub(crate) trait Memory {
    /// The header (only its atomics are used after the segment is opened).
    fn header(&self) -> &Header;
    /// Data-area size, as validated when the segment was opened (never
    /// re-read from shared memory, where another process could change it).
    fn capacity(&self) -> u64;
    /// Largest payload, as validated when the segment was opened.
    fn max_record(&self) -> u64;
    /// The stamp word of the record at data offset `off` (8-aligned, below capacity).
    fn stamp(&self, off: u64) -> &AtomicU64;
    /// Plain write of `src` at data offset `off`, continuing past the end
    /// of the data area at its start. Producer only, into space it owns.
    fn write(&self, off: u64, src: &[u8]);
    /// Plain read of the 8 bytes at `off` (8-aligned). Consumer only, of a
    /// committed record, or producer only, of its own records.
    fn read_word(&self, off: u64) -> u64;
    /// Wake whoever sleeps on `bell` (a futex word in the header).
    fn wake(&self, bell: &crate::sync::AtomicU32);
}

/// What the producer keeps in its own memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerCursor {
    /// Position of the next record.
    pub tail: u64,
    /// Seq of the next record.
    pub seq: u64,
    /// Last `head` seen; refreshed only when space seems short.
    pub cached_head: u64,
}

/// A record the producer has room for but has not committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reservation {
    pub pos: u64,
    pub len: u32,
    pub size: u64,
}

/// A committed record as the consumer found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordMeta {
    pub pos: u64,
    pub seq: u64,
    pub len: u32,
    pub tag: u32,
    pub size: u64,
}

impl RecordMeta {
    /// Data offset of the payload.
    pub(crate) fn payload_off(&self, capacity: u64) -> u64 {
        off(self.pos.wrapping_add(RECORD_HEADER), capacity)
    }
}

/// Data offset of position `pos` (capacity is a power of two).
pub(crate) fn off(pos: u64, capacity: u64) -> u64 {
    pos & (capacity - 1)
}

fn corrupt_head(head: u64) -> RingError {
    RingError::corrupt(format!("head position {head} is not 8-byte aligned"))
}

/// The consumer's head, checked for alignment (a misaligned one would make
/// every stamp access misaligned).
pub(crate) fn load_head<M: Memory>(mem: &M) -> Result<u64, RingError> {
    // Acquire pairs with the consumer's Release store in `release`.
    let head = mem.header().head.load(Ordering::Acquire);
    if !head.is_multiple_of(ALIGN) {
        return Err(corrupt_head(head));
    }
    Ok(head)
}

/// Finds where a (re)starting producer continues: from the hints, past any
/// record committed after them. Nobody else writes the ring while no
/// producer is attached, so the committed records found are stable.
pub(crate) fn recover_producer<M: Memory>(mem: &M) -> Result<ProducerCursor, RingError> {
    let h = mem.header();
    let cap = mem.capacity();
    // Order: seq_hint is stored before tail_hint (see `commit`), so a hint
    // pair read here is either consistent, or seq is ahead of a tail that
    // still points at the record holding seq - 1; the scan settles both.
    let mut tail = h.tail_hint.load(Ordering::Acquire);
    let mut seq = h.seq_hint.load(Ordering::Acquire);
    let head = load_head(mem)?;
    let inconsistent = |tail: u64| {
        RingError::corrupt(format!("producer position {tail} is inconsistent with head {head} and capacity {cap}"))
    };
    // Committed records lie in [head, head + capacity); the scan cannot
    // leave that window, so it ends within one lap whatever the contents.
    if !tail.is_multiple_of(ALIGN) || tail.checked_add(cap).is_none_or(|end| head > end) {
        return Err(inconsistent(tail));
    }
    while let Some(rec) = peek(mem, tail)? {
        seq = rec.seq.checked_add(1).ok_or_else(|| inconsistent(tail))?;
        tail = tail.checked_add(rec.size).ok_or_else(|| inconsistent(tail))?;
        if tail > head.saturating_add(cap) {
            return Err(inconsistent(tail));
        }
    }
    if tail < head {
        return Err(inconsistent(tail));
    }
    let cur = ProducerCursor { tail, seq, cached_head: head };
    // The word where the next record's stamp goes must not hold bytes that
    // could pass for a stamp (see `commit`); the dead producer cleared it
    // unless it died before its first commit.
    clear_next_stamp(mem, &cur, tail);
    Ok(cur)
}

/// Zeroes the stamp word at `next` if the producer owns it, so that stale
/// payload bytes there (from an earlier lap, or an abandoned reservation)
/// can never pass for the commit stamp `!next`. When the producer does not
/// own it, `next == head + capacity` exactly, and the word holds the head
/// record's own stamp, `!head`, which is not `!next` either.
fn clear_next_stamp<M: Memory>(mem: &M, cur: &ProducerCursor, next: u64) {
    let cap = mem.capacity();
    if next < cur.cached_head.saturating_add(cap) {
        // Relaxed: ordered before the consumer's view by the Release store
        // of the stamp that follows it in `commit`; the consumer peeks at
        // `next` only after acquiring that stamp.
        mem.stamp(off(next, cap)).store(0, Ordering::Relaxed);
    }
}

/// Room for a record of `len` bytes at the cursor, or why not.
pub(crate) fn reserve<M: Memory>(mem: &M, cur: &mut ProducerCursor, len: usize) -> Result<Reservation, PushError> {
    let (cap, max) = (mem.capacity(), mem.max_record());
    let len_u64 = len as u64;
    if len_u64 > max {
        return Err(PushError::TooLarge { len, max: max as usize });
    }
    let size = record_size(len_u64);
    // cached_head <= tail always holds (checked when head is loaded).
    if cur.tail + size - cur.cached_head > cap {
        // Acquire (in load_head) pairs with the consumer's Release store of
        // head: its reads of the records below head are done before we
        // overwrite them.
        let head = load_head(mem).map_err(|e| PushError::Corrupt(e.to_string()))?;
        if head < cur.cached_head || head > cur.tail {
            return Err(PushError::Corrupt(format!(
                "head moved to {head}, outside [{}, {}]",
                cur.cached_head, cur.tail
            )));
        }
        cur.cached_head = head;
        if cur.tail + size - cur.cached_head > cap {
            return Err(PushError::Full);
        }
    }
    // `len <= max_record <= capacity / 2 < 2^32` by the segment's validation.
    Ok(Reservation { pos: cur.tail, len: len as u32, size })
}

/// Writes the record header fields (not the stamp) of a reservation.
pub(crate) fn write_header<M: Memory>(mem: &M, cur: &ProducerCursor, res: &Reservation, tag: u32) {
    let cap = mem.capacity();
    let mut meta = [0u8; 16];
    meta[..8].copy_from_slice(&cur.seq.to_le_bytes());
    meta[8..12].copy_from_slice(&res.len.to_le_bytes());
    meta[12..].copy_from_slice(&tag.to_le_bytes());
    mem.write(off(res.pos + 8, cap), &meta);
}

/// Commits a reservation whose header and payload are written.
pub(crate) fn commit<M: Memory>(mem: &M, cur: &mut ProducerCursor, res: Reservation) {
    let h = mem.header();
    let cap = mem.capacity();
    clear_next_stamp(mem, cur, res.pos + res.size);
    // The commit marker. Release pairs with the consumer's Acquire load of
    // the stamp in `peek`: the header and payload written above, and the
    // cleared next stamp, are visible to a consumer that sees the stamp.
    mem.stamp(off(res.pos, cap)).store(!res.pos, Ordering::Release);
    cur.tail = res.pos + res.size;
    cur.seq += 1;
    // Hints for a restarted producer; seq first (see `recover_producer`).
    h.seq_hint.store(cur.seq, Ordering::Release);
    h.tail_hint.store(cur.tail, Ordering::Release);
    wake_consumer(mem);
}

/// Wakes the consumer if it announced it is going to sleep.
pub(crate) fn wake_consumer<M: Memory>(mem: &M) {
    let h = mem.header();
    // SeqCst fence between our stamp store and the load of reader_sleeping;
    // pairs with the consumer's fence between its store of reader_sleeping
    // and its re-check of the stamp (`announce_sleep` + `peek`). At least
    // one side sees the other's store, so no wake-up is lost.
    fence(Ordering::SeqCst);
    if h.reader_sleeping.load(Ordering::Relaxed) != 0 {
        h.data_bell.fetch_add(1, Ordering::Release);
        mem.wake(&h.data_bell);
    }
}

/// The committed record at `pos`, if any, validated.
/// `pos` must be 8-aligned (positions start at an aligned head and advance
/// by record sizes, which are multiples of 8).
pub(crate) fn peek<M: Memory>(mem: &M, pos: u64) -> Result<Option<RecordMeta>, RingError> {
    let (cap, max) = (mem.capacity(), mem.max_record());
    let o = off(pos, cap);
    // Acquire pairs with the producer's Release store in `commit`.
    if mem.stamp(o).load(Ordering::Acquire) != !pos {
        return Ok(None);
    }
    let seq = mem.read_word(off(o + 8, cap));
    let word = mem.read_word(off(o + 16, cap));
    let len = (word & 0xffff_ffff) as u32;
    let tag = (word >> 32) as u32;
    if u64::from(len) > max {
        return Err(RingError::corrupt(format!(
            "record at position {pos} claims a length of {len} bytes; the ring's maximum is {max}"
        )));
    }
    Ok(Some(RecordMeta { pos, seq, len, tag, size: record_size(u64::from(len)) }))
}

/// Hands the space below `new_head` back to the producer.
pub(crate) fn release<M: Memory>(mem: &M, new_head: u64) {
    let h = mem.header();
    // Release pairs with the producer's Acquire load of head in `reserve`.
    h.head.store(new_head, Ordering::Release);
    // SeqCst fence pairs with the producer's fence in `announce_sleep_for_space`.
    fence(Ordering::SeqCst);
    if h.writer_sleeping.load(Ordering::Relaxed) != 0 {
        h.space_bell.fetch_add(1, Ordering::Release);
        mem.wake(&h.space_bell);
    }
}

/// The consumer is about to sleep: returns the data bell's value to sleep on.
/// The caller re-checks for a record after this and sleeps only if none.
pub(crate) fn announce_reader_sleep<M: Memory>(mem: &M) -> u32 {
    let h = mem.header();
    // Read before announcing, so that any wake-up after our re-check changes
    // it and the futex wait returns at once.
    let bell = h.data_bell.load(Ordering::Acquire);
    h.reader_sleeping.store(1, Ordering::Relaxed);
    // Pairs with the fence in `wake_consumer` (see there).
    fence(Ordering::SeqCst);
    bell
}

/// The consumer is awake again.
pub(crate) fn reader_awake<M: Memory>(mem: &M) {
    mem.header().reader_sleeping.store(0, Ordering::Relaxed);
}

/// The producer is about to sleep for space: returns the space bell's value.
/// The caller re-checks for space after this and sleeps only if none.
pub(crate) fn announce_writer_sleep<M: Memory>(mem: &M) -> u32 {
    let h = mem.header();
    let bell = h.space_bell.load(Ordering::Acquire);
    h.writer_sleeping.store(1, Ordering::Relaxed);
    // Pairs with the fence in `release`.
    fence(Ordering::SeqCst);
    bell
}

/// The producer is awake again.
pub(crate) fn writer_awake<M: Memory>(mem: &M) {
    mem.header().writer_sleeping.store(0, Ordering::Relaxed);
}
