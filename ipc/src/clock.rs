//! The published clock: one small shared-memory page through which the
//! time service tells every other process on the host what time it is
//! worth, and the host kernel's own clock state.
//!
//! One writer (the time service) and any number of readers. The page is a
//! seqlock: the writer makes the sequence word odd, writes the fields,
//! then makes it even again; a reader copies the fields between two reads
//! of the sequence word and keeps the copy only if both are the same even
//! number. Reading costs two loads and a copy (nanoseconds), never a
//! system call or a lock, and a reader can never slow the writer. A writer
//! killed mid-write leaves the word odd: readers then see no state (the
//! same as a stale one) until the restarted writer publishes again.
//!
//! Every field is an atomic word, so a torn read is a discarded copy, not
//! undefined behaviour. What the fields mean is the writer's business; the
//! instants are on `CLOCK_BOOTTIME` ([`boottime_ns`]), which is the same
//! for every process of the host and keeps counting through a suspend, so
//! a reader can carry the published interval to its own instant.

use std::ffi::CString;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering, fence};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::mman::shm_open;
use nix::sys::stat::Mode;

use crate::error::RingError;

const MAGIC: u64 = u64::from_le_bytes(*b"CHRCLOCK");
const VERSION: u64 = 1;
/// Words of a [`ClockState`] on the page: nine numbers and the 32-byte digest.
const FIELDS: usize = 13;
/// Word offsets: magic, version, sequence, then the fields.
const SEQ: usize = 2;
const FIRST_FIELD: usize = 3;
const PAGE_LEN: usize = 8 * (FIRST_FIELD + FIELDS);

/// What the time service publishes. Plain data; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockState {
    /// The writer's status code (for the time service: unsynchronized,
    /// host, quorum).
    pub status: u64,
    /// Earliest and latest Unix time (ns) at [`Self::anchor_ns`].
    pub earliest_ns: u64,
    pub latest_ns: u64,
    /// The `CLOCK_BOOTTIME` instant the interval was true at.
    pub anchor_ns: u64,
    /// How fast the interval widens as it is carried (ppm of the elapsed time).
    pub max_drift_ppm: u64,
    /// How long after the anchor the state may still be used.
    pub holdover_ns: u64,
    /// Sources that agreed, and sources configured.
    pub agreeing: u64,
    pub configured: u64,
    /// The round that anchored the interval, and its evidence's digest.
    pub round: u64,
    pub evidence: [u8; 32],
}

fn encode(s: &ClockState) -> [u64; FIELDS] {
    let mut w = [
        s.status,
        s.earliest_ns,
        s.latest_ns,
        s.anchor_ns,
        s.max_drift_ppm,
        s.holdover_ns,
        s.agreeing,
        s.configured,
        s.round,
        0,
        0,
        0,
        0,
    ];
    for (i, chunk) in s.evidence.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        w[9 + i] = u64::from_le_bytes(b);
    }
    w
}

fn decode(w: &[u64; FIELDS]) -> ClockState {
    let mut evidence = [0u8; 32];
    for (i, chunk) in evidence.chunks_exact_mut(8).enumerate() {
        chunk.copy_from_slice(&w[9 + i].to_le_bytes());
    }
    ClockState {
        status: w[0],
        earliest_ns: w[1],
        latest_ns: w[2],
        anchor_ns: w[3],
        max_drift_ppm: w[4],
        holdover_ns: w[5],
        agreeing: w[6],
        configured: w[7],
        round: w[8],
        evidence,
    }
}

fn page_name(name: &str) -> Result<CString, RingError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(RingError::Invalid(format!("clock page name {name:?} must be 1..=200 of [A-Za-z0-9._-]")));
    }
    CString::new(format!("/chronos-clock-{name}")).map_err(|_| RingError::Invalid(format!("clock page {name:?}")))
}

/// Path of a clock page in the filesystem (for tools and tests).
pub fn page_path(name: &str) -> String {
    format!("/dev/shm/chronos-clock-{name}")
}

/// A mapped page, viewed as atomic words.
#[derive(Debug)]
struct Page {
    map: memmap2::MmapRaw,
    // Kept open for the mapping's life (fstat checks were made on it).
    _fd: OwnedFd,
}

impl Page {
    fn words(&self) -> &[AtomicU64] {
        crate::sys::atomic_words(&self.map, PAGE_LEN / 8)
    }
}

/// The time service's end: publishes states.
#[derive(Debug)]
pub struct ClockWriter {
    page: Page,
}

impl ClockWriter {
    /// Opens the page `name`, creating it (mode 0600) if needed. A page
    /// left by a writer that died is taken over: its state is replaced at
    /// the first [`publish`](Self::publish). There must be one writer per
    /// page (the supervisor starts one time service per instance).
    pub fn open(name: &str) -> Result<ClockWriter, RingError> {
        let cname = page_name(name)?;
        let fd = shm_open(cname.as_c_str(), OFlag::O_CREAT | OFlag::O_RDWR, Mode::S_IRUSR | Mode::S_IWUSR)
            .map_err(RingError::os(format!("shm_open clock page {name}")))?;
        crate::sys::check_owner(&fd, &page_path(name))?;
        nix::unistd::ftruncate(&fd, PAGE_LEN as i64).map_err(RingError::os(format!("sizing clock page {name}")))?;
        let map = memmap2::MmapOptions::new()
            .len(PAGE_LEN)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| RingError::Os { context: format!("mapping clock page {name}"), source: e })?;
        let page = Page { map, _fd: fd };
        let w = page.words();
        // Pairs with the Acquire loads in `ClockReader::open`.
        w[1].store(VERSION, Ordering::Relaxed);
        w[0].store(MAGIC, Ordering::Release);
        Ok(ClockWriter { page })
    }

    /// Publishes `state`: readers see either the previous state or this
    /// one, never a mix.
    pub fn publish(&mut self, state: &ClockState) {
        let w = self.page.words();
        let seq = w[SEQ].load(Ordering::Relaxed);
        // Odd whatever a dead predecessor left: from here readers discard.
        let writing = (seq | 1).wrapping_add(if seq & 1 == 1 { 2 } else { 0 });
        w[SEQ].store(writing, Ordering::Relaxed);
        // Orders the odd sequence word before the field stores (pairs with
        // the reader's Acquire fence before its second sequence load).
        fence(Ordering::Release);
        for (slot, v) in w[FIRST_FIELD..].iter().zip(encode(state)) {
            slot.store(v, Ordering::Relaxed);
        }
        // Release: a reader that sees the even word sees every field above.
        w[SEQ].store(writing.wrapping_add(1), Ordering::Release);
    }
}

/// A reader's end: cheap, consistent copies of the published state.
#[derive(Debug)]
pub struct ClockReader {
    page: Page,
}

impl ClockReader {
    /// Maps the page `name` read-only. `NotFound` until a time service
    /// created it.
    pub fn open(name: &str) -> Result<ClockReader, RingError> {
        let cname = page_name(name)?;
        let fd = shm_open(cname.as_c_str(), OFlag::O_RDONLY, Mode::empty()).map_err(|e| match e {
            Errno::ENOENT => RingError::NotFound { name: page_path(name) },
            e => RingError::os(format!("shm_open clock page {name}"))(e),
        })?;
        crate::sys::check_owner(&fd, &page_path(name))?;
        let len = nix::sys::stat::fstat(&fd).map_err(RingError::os(format!("fstat clock page {name}")))?.st_size;
        if len != PAGE_LEN as i64 {
            return Err(RingError::Incompatible {
                name: page_path(name),
                reason: format!("{len} bytes, expected {PAGE_LEN}"),
            });
        }
        let map = memmap2::MmapOptions::new()
            .len(PAGE_LEN)
            .map_raw_read_only(fd.as_raw_fd())
            .map_err(|e| RingError::Os { context: format!("mapping clock page {name}"), source: e })?;
        let page = Page { map, _fd: fd };
        let w = page.words();
        let (magic, version) = (w[0].load(Ordering::Acquire), w[1].load(Ordering::Relaxed));
        if magic != MAGIC || version != VERSION {
            return Err(RingError::Incompatible {
                name: page_path(name),
                reason: format!("magic {magic:#x} version {version} (expected a version {VERSION} clock page)"),
            });
        }
        Ok(ClockReader { page })
    }

    /// The published state, or `None` if nothing was published yet or the
    /// writer is (or died) in the middle of a write.
    pub fn read(&self) -> Option<ClockState> {
        let w = self.page.words();
        for _ in 0..64 {
            // Acquire pairs with the writer's final Release store.
            let before = w[SEQ].load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut copy = [0u64; FIELDS];
            for (c, slot) in copy.iter_mut().zip(&w[FIRST_FIELD..]) {
                *c = slot.load(Ordering::Relaxed);
            }
            // Orders the field loads before the second sequence load (pairs
            // with the writer's Release fence after its odd store).
            fence(Ordering::Acquire);
            if w[SEQ].load(Ordering::Relaxed) == before {
                return Some(decode(&copy));
            }
        }
        None
    }
}

/// Removes a clock page's name (for `chronos up` when the time service
/// is no longer configured, and for tests).
pub fn remove(name: &str) -> Result<(), RingError> {
    let cname = page_name(name)?;
    nix::sys::mman::shm_unlink(cname.as_c_str()).map_err(|e| match e {
        Errno::ENOENT => RingError::NotFound { name: page_path(name) },
        e => RingError::os(format!("shm_unlink clock page {name}"))(e),
    })
}

/// Now on `CLOCK_BOOTTIME`, in ns: the host-wide clock that the published
/// anchors are on.
pub fn boottime_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
}

/// The kernel's view of its own clock, as chronyd or ntpd keep it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostClock {
    /// Unix time now, ns.
    pub now_ns: u64,
    /// Whether a synchronization daemon keeps the clock (`STA_UNSYNC` clear
    /// and the state not `TIME_ERROR`).
    pub synchronized: bool,
    /// The kernel's maximum error, ns: true time is within this of `now_ns`
    /// when synchronized. It grows by 500 ppm while no daemon updates it and
    /// is capped at 16 s.
    pub max_error_ns: u64,
}

/// Reads the host clock's state (`adjtimex` with no modes: read only, no
/// privilege needed).
pub fn host_clock() -> Result<HostClock, RingError> {
    crate::sys::host_clock()
}
