//! Single-producer single-consumer rings of variable-length records in POSIX
//! shared memory, between processes.
//!
//! * [`create`] / [`open_or_create`] make a named segment; it lives until
//!   [`remove`]d, independent of the processes using it.
//! * [`Producer::attach`] and [`Consumer::attach`] take the segment's
//!   producer or consumer role. A role is held through an OFD lock that the
//!   kernel drops when the process dies, so a restarted process re-attaches
//!   at once, and a second live process is refused ([`RingError::Busy`]).
//! * A producer resumes after the last committed record, whatever its
//!   predecessor was doing when it died. A consumer resumes at `head`:
//!   records it read but did not [`Consumer::release`] are delivered again
//!   (at least once; exactly once is the job of whoever consumes).
//! * [`inspect`], [`stale_segments`] and [`remove_stale`] find and remove
//!   segments nobody uses any more. Nothing is ever removed implicitly.

use std::time::{Duration, Instant};

use crate::core::{self, Memory, ProducerCursor, RecordMeta, Reservation};
use crate::error::{PushError, RingError};
use crate::layout::{Header, LOCK_CONSUMER, LOCK_PRODUCER, RECORD_HEADER};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::sys::{self, Segment};

/// Default data-area size: 64 MiB.
pub const DEFAULT_CAPACITY: u64 = 64 << 20;
/// Default largest record: 16 MiB.
pub const DEFAULT_MAX_RECORD: u64 = 16 << 20;
/// How long an attacher waits for a creator that is still initializing.
const INIT_WAIT: Duration = Duration::from_secs(5);
/// How long a reader polls an empty ring before it sleeps. Sleeping costs
/// the writer a futex wake-up per record while the reader is asleep; a
/// short poll first keeps a busy pipeline out of the kernel, and an idle
/// one still sleeps within microseconds.
pub(crate) const SPIN: Duration = Duration::from_micros(50);

/// Polls `ready` for up to `spin`; true as soon as it is.
pub(crate) fn spin_until(
    spin: Duration,
    mut ready: impl FnMut() -> Result<bool, RingError>,
) -> Result<bool, RingError> {
    if spin.is_zero() {
        return ready();
    }
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            if ready()? {
                return Ok(true);
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= spin {
            return Ok(false);
        }
    }
}

impl Memory for Segment {
    fn header(&self) -> &Header {
        Segment::header(self)
    }

    fn capacity(&self) -> u64 {
        Segment::capacity(self)
    }

    fn max_record(&self) -> u64 {
        Segment::max_record(self)
    }

    fn stamp(&self, off: u64) -> &AtomicU64 {
        assert!(off.is_multiple_of(8) && off < Segment::capacity(self), "stamp offset {off}");
        // SAFETY: `off` is 8-aligned and below the capacity, so the 8 bytes
        // lie in the first half of the data mapping, which lives as long as
        // `self` and is 8-aligned (page aligned base). AtomicU64 is valid for
        // any bit pattern, and every access to a stamp word is atomic.
        unsafe { &*self.data_ptr().add(off as usize).cast::<AtomicU64>() }
    }

    fn write(&self, off: u64, src: &[u8]) {
        assert!(off < Segment::capacity(self) && src.len() as u64 <= Segment::capacity(self), "write at {off}");
        // SAFETY: off + len <= 2·capacity, inside the double mapping. The
        // protocol gives the producer (our only caller) exclusive use of
        // these bytes: they are beyond every committed record and below
        // head + capacity, so no consumer reads them.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.data_ptr().add(off as usize), src.len()) }
    }

    fn read_word(&self, off: u64) -> u64 {
        assert!(off.is_multiple_of(8) && off < Segment::capacity(self), "word offset {off}");
        // SAFETY: an aligned in-bounds word of the mapping; callers read only
        // committed records (after an Acquire of their stamp), which nobody
        // writes until the consumer releases them.
        unsafe { std::ptr::read_volatile(self.data_ptr().add(off as usize).cast::<u64>()) }
    }

    fn wake(&self, bell: &AtomicU32) {
        sys::futex_wake(bell);
    }
}

impl Segment {
    /// The payload bytes of a committed record.
    fn payload(&self, meta: &RecordMeta) -> &[u8] {
        let off = meta.payload_off(self.capacity());
        assert!(u64::from(meta.len) <= self.max_record(), "record length {}", meta.len);
        // SAFETY: the record is committed (its stamp was loaded with Acquire
        // in `peek`) and not yet released, so the producer does not write
        // these bytes while the returned borrow (tied to `&self`, which the
        // consumer holds while it holds the batch) lives. off < capacity and
        // len <= max_record < capacity, inside the double mapping.
        unsafe { std::slice::from_raw_parts(self.data_ptr().add(off as usize), meta.len as usize) }
    }
}

/// Creates a ring. `capacity` is a power of two from 64 KiB; records are at
/// most `max_record` bytes (at most half the capacity less 24).
pub fn create(name: &str, capacity: u64, max_record: u64) -> Result<(), RingError> {
    sys::check_geometry(capacity, max_record)?;
    Segment::create(name, capacity, max_record).map(drop)
}

/// Bytes of shared memory a ring of `capacity` takes at most (its header
/// page and its data area; pages are only used as records are written).
pub fn segment_len(capacity: u64) -> u64 {
    crate::layout::HEADER_LEN + capacity
}

/// Creates a ring, or checks that the existing one has this geometry.
pub fn open_or_create(name: &str, capacity: u64, max_record: u64) -> Result<(), RingError> {
    match create(name, capacity, max_record) {
        Err(RingError::Exists { .. }) => {
            let seg = Segment::open(name, INIT_WAIT)?;
            if (seg.capacity(), seg.max_record()) != (capacity, max_record) {
                return Err(RingError::Incompatible {
                    name: name.to_owned(),
                    reason: format!(
                        "exists with capacity {} and max record {}, not {capacity} and {max_record}",
                        seg.capacity(),
                        seg.max_record()
                    ),
                });
            }
            Ok(())
        }
        other => other,
    }
}

/// Whether a ring holds committed records its consumer has not released,
/// seen from outside: no role is taken, so this also works while a
/// consumer runs (it answers for that instant).
pub fn holds_records(name: &str) -> Result<bool, RingError> {
    let seg = Segment::open(name, INIT_WAIT)?;
    let head = core::load_head(&seg)?;
    Ok(core::peek(&seg, head)?.is_some())
}

/// An existing ring's capacity and largest record.
pub fn geometry(name: &str) -> Result<(u64, u64), RingError> {
    let seg = Segment::open(name, INIT_WAIT)?;
    Ok((seg.capacity(), seg.max_record()))
}

/// Names of this host's rings that start with `prefix`, sorted.
pub fn list(prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = sys::list_segments().into_iter().filter(|n| n.starts_with(prefix)).collect();
    names.sort();
    names
}

/// A ring's state as seen from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingStatus {
    /// A live process holds the producer role.
    pub producer_alive: bool,
    /// A live process holds the consumer role.
    pub consumer_alive: bool,
    /// A live process is still creating the segment.
    pub creator_alive: bool,
}

impl RingStatus {
    /// Nobody uses the segment.
    pub fn is_stale(&self) -> bool {
        !(self.producer_alive || self.consumer_alive || self.creator_alive)
    }
}

/// Which roles of a ring are held by live processes.
pub fn inspect(name: &str) -> Result<RingStatus, RingError> {
    let [producer_alive, consumer_alive, creator_alive] = sys::roles_alive(name)?;
    Ok(RingStatus { producer_alive, consumer_alive, creator_alive })
}

/// Every ring on this host that no live process uses.
pub fn stale_segments() -> Vec<String> {
    sys::list_segments().into_iter().filter(|n| inspect(n).is_ok_and(|s| s.is_stale())).collect()
}

/// Removes a ring if no live process uses it; `Ok(false)` if one does.
pub fn remove_stale(name: &str) -> Result<bool, RingError> {
    if !inspect(name)?.is_stale() {
        return Ok(false);
    }
    sys::unlink(name)?;
    Ok(true)
}

/// Removes a ring's name. Processes that have it mapped keep using their
/// mapping; new attachers get `NotFound`. Refused while a role is live.
pub fn remove(name: &str) -> Result<(), RingError> {
    let st = inspect(name)?;
    if st.producer_alive || st.consumer_alive {
        let role = if st.producer_alive { "producer" } else { "consumer" };
        return Err(RingError::Busy { name: name.to_owned(), role });
    }
    sys::unlink(name)
}

/// Filesystem path of a ring's segment (`/dev/shm/chronos-<name>`).
pub fn segment_path(name: &str) -> String {
    sys::segment_path(name)
}

fn attach(name: &str, byte: i64, role: &'static str) -> Result<Segment, RingError> {
    let seg = Segment::open(name, INIT_WAIT)?;
    if !seg.try_lock(byte)? {
        return Err(RingError::Busy { name: name.to_owned(), role });
    }
    Ok(seg)
}

/// The writing end of a ring.
#[derive(Debug)]
pub struct Producer {
    seg: Segment,
    cur: ProducerCursor,
}

impl Producer {
    /// Takes the producer role and finds where to continue.
    pub fn attach(name: &str) -> Result<Producer, RingError> {
        let seg = attach(name, LOCK_PRODUCER, "producer")?;
        let cur = core::recover_producer(&seg)?;
        // The previous producer may have died between a commit and its
        // wake-up call: ring the bell for a consumer that may be asleep.
        core::wake_consumer(&seg);
        Ok(Producer { seg, cur })
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Largest payload accepted.
    pub fn max_record(&self) -> usize {
        self.seg.max_record() as usize
    }

    /// Seq the next record will get.
    pub fn next_seq(&self) -> u64 {
        self.cur.seq
    }

    /// Bytes of data area not holding unconsumed records (as of the last look at head).
    pub fn free_bytes(&self) -> u64 {
        let head = self.seg.header().head.load(Ordering::Acquire);
        self.seg.capacity().saturating_sub(self.cur.tail.saturating_sub(head))
    }

    /// Reserves room for a record of `len` bytes, to be filled in place and
    /// committed; `Full` if the consumer has not made room.
    pub fn try_reserve(&mut self, tag: u32, len: usize) -> Result<Grant<'_>, PushError> {
        let res = core::reserve(&self.seg, &mut self.cur, len)?;
        Ok(Grant { producer: self, res, tag })
    }

    /// Like [`Producer::try_reserve`], sleeping (not spinning) until the
    /// consumer makes room or `deadline` passes.
    pub fn reserve(&mut self, tag: u32, len: usize, deadline: Instant) -> Result<Grant<'_>, PushError> {
        loop {
            match core::reserve(&self.seg, &mut self.cur, len) {
                Ok(res) => return Ok(Grant { producer: self, res, tag }),
                Err(PushError::Full) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(PushError::Timeout);
            }
            let bell = core::announce_writer_sleep(&self.seg);
            if core::reserve(&self.seg, &mut self.cur, len).is_err() {
                sys::futex_wait(&self.seg.header().space_bell, bell, Some(deadline));
            }
            core::writer_awake(&self.seg);
        }
    }

    /// Copies `payload` into the ring as one record, or says why not.
    pub fn try_push(&mut self, tag: u32, payload: &[u8]) -> Result<(), PushError> {
        let mut g = self.try_reserve(tag, payload.len())?;
        g.payload_mut().copy_from_slice(payload);
        g.commit();
        Ok(())
    }

    /// Like [`Producer::try_push`], waiting for room until `deadline`.
    pub fn push(&mut self, tag: u32, payload: &[u8], deadline: Instant) -> Result<(), PushError> {
        let mut g = self.reserve(tag, payload.len(), deadline)?;
        g.payload_mut().copy_from_slice(payload);
        g.commit();
        Ok(())
    }

    /// Whether the consumer has released every committed record.
    pub fn is_drained(&self) -> bool {
        self.seg.header().head.load(Ordering::Acquire) == self.cur.tail
    }

    /// Sleeps until the consumer has released everything or `deadline`.
    pub fn wait_drained(&mut self, deadline: Instant) -> bool {
        loop {
            if self.is_drained() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let bell = core::announce_writer_sleep(&self.seg);
            if !self.is_drained() {
                sys::futex_wait(&self.seg.header().space_bell, bell, Some(deadline));
            }
            core::writer_awake(&self.seg);
        }
    }
}

/// Room for one record, reserved by [`Producer::try_reserve`]. Fill it with
/// [`Grant::payload_mut`] and [`Grant::commit`] it; dropping it uncommitted
/// leaves no record (the space is reused).
#[derive(Debug)]
pub struct Grant<'a> {
    producer: &'a mut Producer,
    res: Reservation,
    tag: u32,
}

impl Grant<'_> {
    /// The record's payload, to write in place.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let seg = &self.producer.seg;
        let off = core::off(self.res.pos + RECORD_HEADER, seg.capacity());
        // SAFETY: the reservation lies beyond every committed record and
        // within head + capacity, so only this producer touches these bytes
        // (the consumer reads only committed records); off + len is inside
        // the double mapping; the &mut borrow of the grant (and through it
        // of the producer) makes this the only live reference to them.
        unsafe { std::slice::from_raw_parts_mut(seg.data_ptr().add(off as usize), self.res.len as usize) }
    }

    /// Publishes the record to the consumer (and wakes it if it sleeps).
    pub fn commit(self) {
        let p = self.producer;
        core::write_header(&p.seg, &p.cur, &self.res, self.tag);
        core::commit(&p.seg, &mut p.cur, self.res);
    }
}

/// One committed record, borrowed from the ring.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// The record's number in the ring (from 0, consecutive).
    pub seq: u64,
    /// The producer's record type.
    pub tag: u32,
    /// The payload, in shared memory (no copy).
    pub payload: &'a [u8],
}

/// Records returned by one [`Consumer::poll`].
#[derive(Debug)]
pub struct Batch<'a> {
    seg: &'a Segment,
    metas: &'a [RecordMeta],
}

impl<'a> Batch<'a> {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.metas.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    /// The records, in ring order.
    pub fn iter(&self) -> impl Iterator<Item = Record<'a>> + '_ {
        let seg = self.seg;
        self.metas.iter().map(move |m| Record { seq: m.seq, tag: m.tag, payload: seg.payload(m) })
    }

    /// Payload bytes in the batch.
    pub fn bytes(&self) -> u64 {
        self.metas.iter().map(|m| u64::from(m.len)).sum()
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub struct Consumer {
    seg: Segment,
    /// Read cursor: position after the last polled record (>= head).
    pos: u64,
    /// Seq the next record must have, once known.
    next_seq: Option<u64>,
    metas: Vec<RecordMeta>,
}

impl Consumer {
    /// Takes the consumer role; reading starts at the ring's head.
    pub fn attach(name: &str) -> Result<Consumer, RingError> {
        let seg = attach(name, LOCK_CONSUMER, "consumer")?;
        let pos = core::load_head(&seg)?;
        Ok(Consumer { seg, pos, next_seq: None, metas: Vec::new() })
    }

    /// The ring's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    fn peek(&self, pos: u64, expect: Option<u64>) -> Result<Option<RecordMeta>, RingError> {
        let Some(m) = core::peek(&self.seg, pos)? else { return Ok(None) };
        if let Some(want) = expect
            && m.seq != want
        {
            return Err(RingError::corrupt(format!(
                "record at position {pos} has seq {}, expected {want}: records were lost or overwritten",
                m.seq
            )));
        }
        Ok(Some(m))
    }

    /// Whether a record is ready to poll.
    pub fn has_records(&self) -> Result<bool, RingError> {
        Ok(self.peek(self.pos, self.next_seq)?.is_some())
    }

    /// Up to `max` committed records after the last ones polled, borrowed in
    /// place. They stay valid (and are not overwritten) until [`Consumer::release`].
    pub fn poll(&mut self, max: usize) -> Result<Batch<'_>, RingError> {
        self.metas.clear();
        while self.metas.len() < max {
            let Some(m) = self.peek(self.pos, self.next_seq)? else { break };
            let (Some(pos), Some(seq)) = (self.pos.checked_add(m.size), m.seq.checked_add(1)) else {
                return Err(RingError::corrupt(format!("record at {} overflows the position or seq space", self.pos)));
            };
            self.pos = pos;
            self.next_seq = Some(seq);
            self.metas.push(m);
        }
        Ok(Batch { seg: &self.seg, metas: &self.metas })
    }

    /// Hands every polled record's space back to the producer. Until this is
    /// called, a restarted consumer gets those records again.
    pub fn release(&mut self) {
        if self.seg.header().head.load(Ordering::Relaxed) != self.pos {
            core::release(&self.seg, self.pos);
        }
    }

    /// Waits until a record is ready or `deadline` passes; true if ready.
    /// Polls for a few microseconds, then sleeps on the ring's futex.
    pub fn wait(&mut self, deadline: Option<Instant>) -> Result<bool, RingError> {
        self.wait_spin(deadline, SPIN)
    }

    /// Waits like [`Consumer::wait`], then, once a record is there, lets
    /// the producer run ahead for `linger` before returning, so that the
    /// next poll takes a batch instead of following the producer record by
    /// record. Following closely makes both processes fight over the same
    /// cache lines; on the benchmark machine a 20 µs linger took a
    /// consumer of 150-byte records from 3.6-8.6 M to 15-17 M records/s
    /// (BENCHMARKS.md). For throughput-minded readers such as hashers;
    /// latency-minded ones use `wait`.
    pub fn wait_linger(&mut self, deadline: Option<Instant>, linger: Duration) -> Result<bool, RingError> {
        if !self.wait(deadline)? {
            return Ok(false);
        }
        let start = Instant::now();
        while start.elapsed() < linger {
            std::hint::spin_loop();
        }
        Ok(true)
    }

    /// [`Consumer::wait`] with a chosen polling time before sleeping
    /// (`Duration::ZERO` sleeps at once).
    pub fn wait_spin(&mut self, deadline: Option<Instant>, spin: Duration) -> Result<bool, RingError> {
        if spin_until(spin, || self.has_records())? {
            return Ok(true);
        }
        loop {
            if self.has_records()? {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            let bell = core::announce_reader_sleep(&self.seg);
            let ready = self.has_records();
            if matches!(ready, Ok(false)) {
                sys::futex_wait(&self.seg.header().data_bell, bell, deadline);
            }
            core::reader_awake(&self.seg);
            ready?;
        }
    }

    pub(crate) fn announce_sleep(&self) -> (&AtomicU32, u32) {
        let bell = core::announce_reader_sleep(&self.seg);
        (&self.seg.header().data_bell, bell)
    }

    pub(crate) fn awake(&self) {
        core::reader_awake(&self.seg);
    }
}
