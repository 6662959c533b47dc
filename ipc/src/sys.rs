//! The operating-system side of a ring, and every `unsafe` block of the
//! crate but the record accessors in `ring` and the socket hand-over in
//! `inherit`: POSIX shared-memory objects,
//! the double mapping of the data area, OFD locks and futexes.
//!
//! Why `nix` + `memmap2` and not the `shared_memory` crate: that crate is
//! unmaintained since 2022 and its handle is not `Send`. `nix` gives
//! `shm_open`/`ftruncate`/`mmap` and OFD locks directly; `memmap2` owns the
//! mappings' lifetimes. The data area is mapped twice, back to back, into
//! one reserved range (MAP_FIXED, which memmap2 does not offer, so that part
//! goes through nix): a record that runs past the end of the data area
//! continues at its start in physical memory and is still one contiguous
//! slice in our address space, so readers borrow records in place.

use std::ffi::CString;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::mman::{MapFlags, ProtFlags, mmap, shm_open, shm_unlink};
use nix::sys::stat::{Mode, fstat};

use crate::error::RingError;
use crate::layout::{HEADER_LEN, Header, LOCK_CREATOR, MAGIC, STATE_READY, VERSION};
use crate::sync::{AtomicU32, Ordering};

/// A mapped ring segment.
#[derive(Debug)]
pub(crate) struct Segment {
    name: String,
    fd: OwnedFd,
    header: memmap2::MmapRaw,
    // Reservation of 2·capacity bytes whose halves are both remapped onto
    // the segment's data area. Dropping it unmaps the whole range.
    data: memmap2::MmapMut,
    // Read once from the header and validated; never re-read, since another
    // process could change the shared copy.
    capacity: u64,
    max_record: u64,
}

fn shm_name(name: &str) -> Result<CString, RingError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(RingError::Invalid(format!("ring name {name:?} must be 1..=200 of [A-Za-z0-9._-]")));
    }
    CString::new(format!("/chronos-{name}")).map_err(|_| RingError::Invalid(format!("ring name {name:?}")))
}

/// Refuses a segment that another user owns or that its group or others
/// may open. /dev/shm is writable by everyone and ring names are
/// predictable, so another local user could create a ring before Chronos
/// does, then read every record in it or write records that pass for
/// ingest's. Segments Chronos creates are 0600 and owned by its user.
fn check_trusted(fd: &OwnedFd, name: &str) -> Result<(), RingError> {
    check_owner(fd, &segment_path(name))
}

/// [`check_trusted`] for any segment, named by its path.
pub(crate) fn check_owner(fd: &OwnedFd, path: &str) -> Result<(), RingError> {
    let st = fstat(fd).map_err(RingError::os(format!("fstat {path}")))?;
    let me = nix::unistd::geteuid().as_raw();
    let untrusted = |reason: String| RingError::Untrusted { path: path.to_owned(), reason };
    if st.st_uid != me {
        return Err(untrusted(format!("it is owned by uid {}, not by this process's uid {me}", st.st_uid)));
    }
    let open_to = st.st_mode & 0o077;
    if open_to != 0 {
        return Err(untrusted(format!(
            "its mode {:04o} lets its group or others open it (expected 0600)",
            st.st_mode & 0o7777
        )));
    }
    Ok(())
}

/// A mapping's first `n` words as atomics.
pub(crate) fn atomic_words(map: &memmap2::MmapRaw, n: usize) -> &[std::sync::atomic::AtomicU64] {
    assert!(map.len() >= n * 8, "mapping shorter than {n} words");
    // SAFETY: the mapping is page aligned (so 8-byte aligned) and at least
    // n * 8 bytes long (asserted), and lives as long as the borrow of `map`.
    // AtomicU64 has the size and alignment of u64; every access to these
    // bytes, in this process and the others mapping the page, goes through
    // atomics, so there is no data race. A read-only mapping is only ever
    // loaded from (the reader never stores), which atomics allow.
    unsafe { std::slice::from_raw_parts(map.as_ptr().cast::<std::sync::atomic::AtomicU64>(), n) }
}

/// The kernel clock's state, read with `adjtimex` (modes 0: read only).
pub(crate) fn host_clock() -> Result<crate::clock::HostClock, RingError> {
    // SAFETY: timex is plain data for which all-zero bytes are valid.
    let mut tx: libc::timex = unsafe { std::mem::zeroed() };
    // SAFETY: `tx` is a valid, exclusively borrowed timex; with modes 0 the
    // kernel only writes the current state into it.
    let state = unsafe { libc::adjtimex(&raw mut tx) };
    if state < 0 {
        return Err(RingError::os("adjtimex")(Errno::last()));
    }
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME).map_err(RingError::os("clock_gettime"))?;
    let synchronized = state != libc::TIME_ERROR && tx.status & libc::STA_UNSYNC == 0;
    Ok(crate::clock::HostClock {
        now_ns: now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64,
        synchronized,
        max_error_ns: (tx.maxerror.max(0) as u64).saturating_mul(1_000),
    })
}

/// Path of a ring's segment in the filesystem (for tools and tests).
pub(crate) fn segment_path(name: &str) -> String {
    format!("/dev/shm/chronos-{name}")
}

impl Segment {
    /// Creates a new segment: zero-filled, header written, then marked ready.
    /// While it writes the header the creator holds the creator lock, so an
    /// attacher can tell "still initializing" from "creator died".
    pub(crate) fn create(name: &str, capacity: u64, max_record: u64) -> Result<Segment, RingError> {
        let cname = shm_name(name)?;
        let fd =
            shm_open(cname.as_c_str(), OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR, Mode::S_IRUSR | Mode::S_IWUSR)
                .map_err(|e| match e {
                Errno::EEXIST => RingError::Exists { name: name.to_owned() },
                e => RingError::os(format!("shm_open {name}"))(e),
            })?;
        lock(&fd, LOCK_CREATOR).map_err(RingError::os("locking a new ring"))?;
        let size = HEADER_LEN + capacity;
        nix::unistd::ftruncate(&fd, size as i64).map_err(RingError::os(format!("sizing ring {name}")))?;
        let header = map_header(&fd, name)?;
        let hp = header.as_mut_ptr().cast::<Header>();
        // SAFETY: the mapping is HEADER_LEN bytes, page aligned (so aligned
        // for Header), and only this process can have it: the segment was
        // created with O_EXCL and is not READY, so nobody else touches it.
        // The memory is zero-filled by ftruncate; we write plain fields
        // through the raw pointer before any reference is handed out.
        unsafe {
            (*hp).magic = MAGIC;
            (*hp).version = VERSION;
            (*hp).capacity = capacity;
            (*hp).max_record = max_record;
        }
        let data = map_data(&fd, name, capacity)?;
        let seg = Segment { name: name.to_owned(), fd, header, data, capacity, max_record };
        // Release pairs with the Acquire load in `open`: an attacher that sees
        // READY sees every field written above.
        seg.header().state.store(STATE_READY, Ordering::Release);
        unlock(&seg.fd, LOCK_CREATOR).map_err(RingError::os("unlocking a new ring"))?;
        Ok(seg)
    }

    /// Opens and validates an existing segment. Waits up to `init_wait` for
    /// a creator that is still writing the header.
    pub(crate) fn open(name: &str, init_wait: Duration) -> Result<Segment, RingError> {
        let cname = shm_name(name)?;
        let fd = shm_open(cname.as_c_str(), OFlag::O_RDWR, Mode::empty()).map_err(|e| match e {
            Errno::ENOENT => RingError::NotFound { name: name.to_owned() },
            e => RingError::os(format!("shm_open {name}"))(e),
        })?;
        check_trusted(&fd, name)?;
        let incompatible = |reason: String| RingError::Incompatible { name: name.to_owned(), reason };
        let start = Instant::now();
        let deadline = start + init_wait;
        // A creator's window between O_EXCL and its creator lock is tiny;
        // wait that long for it to show up before calling a segment dead.
        let grace = Duration::from_millis(50);
        let (header, size) = loop {
            let size = fstat(&fd).map_err(RingError::os(format!("fstat ring {name}")))?.st_size as u64;
            if size >= HEADER_LEN {
                let header = map_header(&fd, name)?;
                // SAFETY: the mapping is HEADER_LEN bytes and page aligned;
                // `state` is an atomic, so a creator's concurrent store is not
                // a data race.
                let state = unsafe { &(*header.as_ptr().cast::<Header>()).state };
                // Acquire pairs with the Release store in `create`.
                if state.load(Ordering::Acquire) == STATE_READY {
                    break (header, size);
                }
            }
            let creator_alive =
                lock_holder(&fd, LOCK_CREATOR).map_err(RingError::os("checking the creator lock"))?.is_some();
            let now = Instant::now();
            if now > deadline || (!creator_alive && now > start + grace) {
                if size < HEADER_LEN && !creator_alive {
                    return Err(incompatible(format!(
                        "segment is {size} bytes, smaller than the {HEADER_LEN}-byte header"
                    )));
                }
                return Err(RingError::Uninitialized { name: name.to_owned() });
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let hp = header.as_ptr().cast::<Header>();
        // SAFETY: READY was acquired above, so the creator's writes of these
        // plain fields happened before; volatile reads of an aligned mapping
        // of HEADER_LEN bytes. They are read once and kept in the Segment.
        let (magic, version, capacity, max_record) = unsafe {
            (
                std::ptr::read_volatile(std::ptr::addr_of!((*hp).magic)),
                std::ptr::read_volatile(std::ptr::addr_of!((*hp).version)),
                std::ptr::read_volatile(std::ptr::addr_of!((*hp).capacity)),
                std::ptr::read_volatile(std::ptr::addr_of!((*hp).max_record)),
            )
        };
        if magic != MAGIC {
            return Err(incompatible(format!("bad magic {magic:#018x}")));
        }
        if version != VERSION {
            return Err(incompatible(format!("layout version {version} (this build reads {VERSION})")));
        }
        check_geometry(capacity, max_record).map_err(|e| incompatible(e.to_string()))?;
        if size != HEADER_LEN + capacity {
            return Err(incompatible(format!(
                "segment is {size} bytes but its header says {} (truncated or resized)",
                HEADER_LEN + capacity
            )));
        }
        let data = map_data(&fd, name, capacity)?;
        Ok(Segment { name: name.to_owned(), fd, header, data, capacity, max_record })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The header. Only its atomics may be used: the plain fields were read
    /// once at open (`capacity`, `max_record`), and another process writing
    /// them later must not be a data race in this one.
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: a live, aligned, HEADER_LEN-byte mapping of a type valid
        // for any bits. Once READY, the ring code mutates only its atomics
        // and reads no plain field through this reference.
        unsafe { &*self.header.as_ptr().cast::<Header>() }
    }

    pub(crate) fn max_record(&self) -> u64 {
        self.max_record
    }

    /// Start of the doubly mapped data area: `2·capacity` addressable bytes.
    pub(crate) fn data_ptr(&self) -> *mut u8 {
        self.data.as_ptr().cast_mut()
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Takes the lock of a role; `false` if a live process holds it.
    pub(crate) fn try_lock(&self, byte: i64) -> Result<bool, RingError> {
        match lock(&self.fd, byte) {
            Ok(()) => Ok(true),
            Err(Errno::EAGAIN | Errno::EACCES) => Ok(false),
            Err(e) => Err(RingError::os("locking a ring role")(e)),
        }
    }
}

/// Validates capacity and maximum record size.
pub(crate) fn check_geometry(capacity: u64, max_record: u64) -> Result<(), RingError> {
    let page = 4096;
    if !capacity.is_power_of_two() || capacity < 16 * page || capacity > 1 << 40 {
        return Err(RingError::Invalid(format!("capacity {capacity} must be a power of two between 64 KiB and 1 TiB")));
    }
    if max_record == 0 || max_record > capacity / 2 - crate::layout::RECORD_HEADER || max_record > u64::from(u32::MAX) {
        return Err(RingError::Invalid(format!(
            "max record size {max_record} must be between 1 and half the capacity less {} bytes",
            crate::layout::RECORD_HEADER
        )));
    }
    Ok(())
}

fn map_header(fd: &OwnedFd, name: &str) -> Result<memmap2::MmapRaw, RingError> {
    memmap2::MmapOptions::new()
        .len(HEADER_LEN as usize)
        .map_raw(fd.as_raw_fd())
        .map_err(|e| RingError::Os { context: format!("mapping the header of ring {name}"), source: e })
}

fn map_data(fd: &OwnedFd, name: &str, capacity: u64) -> Result<memmap2::MmapMut, RingError> {
    let cap = capacity as usize;
    let reservation = memmap2::MmapOptions::new()
        .len(2 * cap)
        .map_anon()
        .map_err(|e| RingError::Os { context: format!("reserving address space for ring {name}"), source: e })?;
    let base = reservation.as_ptr() as usize;
    let len = NonZeroUsize::new(cap).ok_or_else(|| RingError::Invalid("zero capacity".into()))?;
    for half in [base, base + cap] {
        // SAFETY: [half, half + cap) lies inside `reservation`, which this
        // function owns and nothing else references yet; MAP_FIXED replaces
        // those pages with a shared mapping of the segment's data area. The
        // reservation's Drop later unmaps the whole range, both halves.
        let at = unsafe {
            mmap(
                NonZeroUsize::new(half),
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED | MapFlags::MAP_FIXED,
                fd.as_fd(),
                HEADER_LEN as i64,
            )
        }
        .map_err(RingError::os(format!("mapping the data of ring {name}")))?;
        if at.as_ptr() as usize != half {
            return Err(RingError::corrupt("the kernel ignored MAP_FIXED".into()));
        }
    }
    Ok(reservation)
}

fn flock_for(byte: i64, kind: i16) -> libc::flock {
    // SAFETY: libc::flock is a plain C struct; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = byte;
    fl.l_len = 1;
    fl
}

/// Takes a write lock on one byte (open-file-description lock: held until
/// this open is closed, which the kernel does when the process dies).
fn lock(fd: &OwnedFd, byte: i64) -> Result<(), Errno> {
    fcntl(fd, FcntlArg::F_OFD_SETLK(&flock_for(byte, libc::F_WRLCK as i16))).map(drop)
}

fn unlock(fd: &OwnedFd, byte: i64) -> Result<(), Errno> {
    fcntl(fd, FcntlArg::F_OFD_SETLK(&flock_for(byte, libc::F_UNLCK as i16))).map(drop)
}

/// Whether another open file description holds a lock on `byte`.
fn lock_holder(fd: &OwnedFd, byte: i64) -> Result<Option<()>, Errno> {
    let mut fl = flock_for(byte, libc::F_WRLCK as i16);
    fcntl(fd, FcntlArg::F_OFD_GETLK(&mut fl))?;
    Ok((fl.l_type != libc::F_UNLCK as i16).then_some(()))
}

/// Removes a segment's name (mapped segments live on until unmapped).
pub(crate) fn unlink(name: &str) -> Result<(), RingError> {
    let cname = shm_name(name)?;
    shm_unlink(cname.as_c_str()).map_err(|e| match e {
        Errno::ENOENT => RingError::NotFound { name: name.to_owned() },
        e => RingError::os(format!("shm_unlink {name}"))(e),
    })
}

/// Opens a segment only to check its role locks (no validation, no mapping).
pub(crate) fn roles_alive(name: &str) -> Result<[bool; 3], RingError> {
    let cname = shm_name(name)?;
    let fd = shm_open(cname.as_c_str(), OFlag::O_RDWR, Mode::empty()).map_err(|e| match e {
        Errno::ENOENT => RingError::NotFound { name: name.to_owned() },
        e => RingError::os(format!("shm_open {name}"))(e),
    })?;
    let mut out = [false; 3];
    for (i, byte) in [crate::layout::LOCK_PRODUCER, crate::layout::LOCK_CONSUMER, LOCK_CREATOR].into_iter().enumerate()
    {
        out[i] = lock_holder(&fd, byte).map_err(RingError::os("checking role locks"))?.is_some();
    }
    Ok(out)
}

/// Names of all Chronos ring segments on this host.
pub(crate) fn list_segments() -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("chronos-").map(str::to_owned))
        .collect()
}

/// Sleeps while `*word == expected`, at most until `deadline`. Returns on a
/// wake-up, a changed value, a timeout or a signal; callers re-check.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) {
    let ts = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long }
    });
    let tp = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT (shared, not PRIVATE: the word lives in a
    // MAP_SHARED mapping seen by other processes) reads the 4-byte aligned
    // word through its address and sleeps; `word` outlives the call. The
    // relative timeout points to a live timespec or is null.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAIT, expected, tp, 0usize, 0u32);
    }
}

/// Wakes every process sleeping on `word`.
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key; `word` is live.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX, 0usize, 0usize, 0u32);
    }
}

#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}

const SYS_FUTEX_WAITV: libc::c_long = 449;
const FUTEX2_SIZE_U32: u32 = 0x02;

/// Sleeps until any of `words` differs from its expected value or is woken,
/// at most until `deadline` (Linux 5.16+ futex_waitv). Returns false if it
/// could not wait at all (the caller then falls back to short naps).
pub(crate) fn futex_waitv(words: &[(&AtomicU32, u32)], deadline: Option<Instant>) -> bool {
    if words.is_empty() || words.len() > 128 {
        return false;
    }
    let waiters: Vec<FutexWaitv> = words
        .iter()
        .map(|(w, v)| FutexWaitv { val: u64::from(*v), uaddr: w.as_ptr() as u64, flags: FUTEX2_SIZE_U32, reserved: 0 })
        .collect();
    // futex_waitv takes an absolute CLOCK_MONOTONIC deadline.
    let abs = deadline.map(|d| {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec into `now`.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let left = d.saturating_duration_since(Instant::now());
        let total = Duration::new(now.tv_sec as u64, now.tv_nsec as u32) + left;
        libc::timespec { tv_sec: total.as_secs() as libc::time_t, tv_nsec: total.subsec_nanos() as libc::c_long }
    });
    let tp = abs.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `waiters` is a live array of `len` futex_waitv structs whose
    // addresses point at live, aligned u32 words in shared mappings; `tp` is
    // null or a live timespec.
    let r = unsafe {
        libc::syscall(SYS_FUTEX_WAITV, waiters.as_ptr(), waiters.len() as libc::c_uint, 0u32, tp, libc::CLOCK_MONOTONIC)
    };
    // A wake-up, a changed value, a timeout or a signal are normal; anything
    // else (no such call, refused by a seccomp filter) means it did not wait.
    r >= 0 || matches!(Errno::last(), Errno::EAGAIN | Errno::ETIMEDOUT | Errno::EINTR)
}
