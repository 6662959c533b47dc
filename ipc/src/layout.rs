//! The bytes of a ring segment, shared by every process that maps it.
//!
//! ```text
//! offset 0      Header (this file), one page
//! offset 4096   data: `capacity` bytes, a power of two, records back to back
//! ```
//!
//! Every value in the segment is an offset or a position, never a pointer:
//! each process maps the segment at its own address. Positions are monotonic
//! byte counts (u64, never wrapping in practice: 2^64 bytes); the byte offset
//! of position `p` in the data area is `p % capacity`.
//!
//! A record at position `p` (8-byte aligned):
//!
//! ```text
//! +0   stamp  u64  !p once the record is committed (the commit marker)
//! +8   seq    u64  the record's number in the ring, from 0
//! +16  len    u32  payload length
//! +20  tag    u32  caller's record type
//! +24  payload, padded to a multiple of 8
//! ```
//!
//! The stamp is written last, with release ordering, after everything else
//! of the record; a reader that sees `stamp == !p` (acquire) sees the whole
//! record. A writer killed before its stamp leaves no record: whatever it
//! wrote is overwritten by the next writer.
//!
//! The word where the *next* record's stamp will go could hold anything:
//! payload bytes of an older lap, or of a reservation that was abandoned or
//! cut short by a crash. Payloads come from outside (HTTP bodies), so they
//! could hold `!p` on purpose. Every commit therefore zeroes that next word
//! (before its own release store), and a restarted producer does the same;
//! the only word it cannot zero, at `head + capacity`, is the head record's
//! own stamp `!head`. So the word at a record boundary the reader reaches
//! holds 0 or the real stamp, never a forgery.

use crate::sync::{AtomicU32, AtomicU64};

/// "CHRNRING", little-endian.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"CHRNRING");
/// Layout version; bumped on any change to this file.
pub(crate) const VERSION: u32 = 1;
/// Size of the header area; the data area starts here, page aligned.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const HEADER_LEN: u64 = 4096;
/// Size of a record's header.
pub(crate) const RECORD_HEADER: u64 = 24;
/// Records start on multiples of this.
pub(crate) const ALIGN: u64 = 8;

/// `Header::state` once the segment is usable; before that it is 0, the
/// zero fill of a new segment.
pub(crate) const STATE_READY: u32 = 1;

/// Byte of the segment locked (OFD lock) by the live producer.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const LOCK_PRODUCER: i64 = 0;
/// Byte locked by the live consumer.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const LOCK_CONSUMER: i64 = 1;
/// Byte locked by the creator while it initializes the header.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) const LOCK_CREATOR: i64 = 2;

/// The segment header. Written by the creator before `state` becomes
/// READY; after that only the atomics change, each on the cache line of the
/// side that writes it.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Header {
    // magic, version, capacity, max_record: written by the creator before
    // READY, then read once by each attacher (volatile) and never again.
    pub magic: u64,
    pub version: u32,
    /// INITIALIZING until the creator has written every field, then READY.
    /// Stored with Release by the creator; loaded with Acquire by attachers.
    pub state: AtomicU32,
    pub capacity: u64,
    pub max_record: u64,
    _pad0: [u64; 4],

    // Producer's line: written on every commit, read by nobody in steady
    // state (only by a restarting producer).
    /// Position after the last record the producer has committed, as far as
    /// it got to record it. A restarted producer scans forward from here.
    pub tail_hint: AtomicU64,
    /// Seq of the next record, stored before `tail_hint` (see `core`).
    pub seq_hint: AtomicU64,
    _pad1: [u64; 6],

    // Consumer's line: written on every release, read by the producer only
    // when its cached copy says the ring is full.
    /// Everything below this position is consumed; the producer may reuse
    /// it. Stored with Release by the consumer, loaded with Acquire by the
    /// producer (so the consumer's reads happen before the reuse).
    pub head: AtomicU64,
    _pad2: [u64; 7],

    // The reader's sleep flag: read by the producer after every commit,
    // written by the consumer only when it goes to sleep or wakes. On its
    // own line so that neither side's hot writes bounce it.
    /// 1 while the consumer sleeps for data (pairs with the producer's
    /// fence + load in `commit`).
    pub reader_sleeping: AtomicU32,
    /// Futex the producer bumps to wake a consumer sleeping for data.
    pub data_bell: AtomicU32,
    _pad3: [u64; 7],

    // The writer's sleep flag: read by the consumer after every release.
    /// 1 while the producer sleeps for space (pairs with the consumer's
    /// fence + load in `release`).
    pub writer_sleeping: AtomicU32,
    /// Futex the consumer bumps to wake a producer sleeping for space.
    pub space_bell: AtomicU32,
    _pad4: [u64; 7],
}

impl Header {
    /// A fresh header (for loom models, which keep it on the heap).
    #[cfg(loom)]
    pub(crate) fn new(capacity: u64, max_record: u64) -> Header {
        Header {
            magic: MAGIC,
            version: VERSION,
            state: AtomicU32::new(STATE_READY),
            capacity,
            max_record,
            _pad0: [0; 4],
            tail_hint: AtomicU64::new(0),
            seq_hint: AtomicU64::new(0),
            _pad1: [0; 6],
            head: AtomicU64::new(0),
            _pad2: [0; 7],
            reader_sleeping: AtomicU32::new(0),
            data_bell: AtomicU32::new(0),
            _pad3: [0; 7],
            writer_sleeping: AtomicU32::new(0),
            space_bell: AtomicU32::new(0),
            _pad4: [0; 7],
        }
    }
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Header>() as u64 <= HEADER_LEN);
#[cfg(not(loom))]
const _: () = assert!(std::mem::offset_of!(Header, head) == 128);

/// Space a record of `len` payload bytes takes.
pub(crate) fn record_size(len: u64) -> u64 {
    RECORD_HEADER + len.div_ceil(ALIGN) * ALIGN
}
