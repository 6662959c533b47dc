//! The published clock page: whole states only, across processes' views,
//! and refused when it cannot be trusted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chronos_ipc::clock::{self, ClockReader, ClockState, ClockWriter};

struct Page(String);

impl Page {
    fn new(test: &str) -> Page {
        let name = format!("test-{}-{test}", std::process::id());
        let _ = clock::remove(&name);
        Page(name)
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        let _ = clock::remove(&self.0);
    }
}

fn state(i: u64) -> ClockState {
    // Every field derived from `i`: a copy mixing two states is detectable.
    let mut evidence = [0u8; 32];
    evidence.iter_mut().enumerate().for_each(|(k, b)| *b = (i as u8).wrapping_add(k as u8));
    ClockState {
        status: i % 3,
        earliest_ns: i,
        latest_ns: i + 7,
        anchor_ns: i * 2,
        max_drift_ppm: i + 1,
        holdover_ns: i + 2,
        agreeing: i + 3,
        configured: i + 4,
        round: i + 5,
        evidence,
    }
}

#[test]
fn readers_see_nothing_before_the_first_publication_then_exactly_what_was_published() {
    let p = Page::new("roundtrip");
    assert!(matches!(ClockReader::open(&p.0), Err(chronos_ipc::RingError::NotFound { .. })));
    let mut w = ClockWriter::open(&p.0).unwrap();
    let r = ClockReader::open(&p.0).unwrap();
    assert_eq!(r.read(), None, "nothing published yet");
    w.publish(&state(41));
    assert_eq!(r.read(), Some(state(41)));
    // A restarted writer takes the page over and keeps its state until it publishes.
    drop(w);
    let mut w = ClockWriter::open(&p.0).unwrap();
    assert_eq!(r.read(), Some(state(41)));
    w.publish(&state(42));
    assert_eq!(r.read(), Some(state(42)));
}

#[test]
fn a_reader_racing_the_writer_never_sees_a_mix_of_two_states() {
    let p = Page::new("race");
    let mut w = ClockWriter::open(&p.0).unwrap();
    w.publish(&state(1));
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let writer = std::thread::spawn(move || {
        for i in 2..200_000u64 {
            w.publish(&state(i));
        }
        d.store(true, Ordering::Relaxed);
    });
    let r = ClockReader::open(&p.0).unwrap();
    let (mut seen, mut last) = (0u64, 0u64);
    while !done.load(Ordering::Relaxed) {
        if let Some(s) = r.read() {
            assert_eq!(s, state(s.earliest_ns), "a torn copy");
            assert!(s.earliest_ns >= last, "went back from {last} to {}", s.earliest_ns);
            last = s.earliest_ns;
            seen += 1;
        }
    }
    writer.join().unwrap();
    assert!(seen > 0);
    assert_eq!(r.read(), Some(state(199_999)));
}

#[test]
fn a_page_others_may_open_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let p = Page::new("open-to-all");
    ClockWriter::open(&p.0).unwrap().publish(&state(3));
    let path = clock::page_path(&p.0);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = ClockReader::open(&p.0).unwrap_err().to_string();
    assert!(e.contains(&path) && e.contains("mode 0644"), "{e}");
    let e = ClockWriter::open(&p.0).unwrap_err().to_string();
    assert!(e.contains("mode 0644"), "{e}");
}

#[test]
fn the_host_clock_state_is_read_from_the_kernel() {
    let h = clock::host_clock().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    assert!(h.now_ns.abs_diff(now) < 1_000_000_000, "{h:?} vs {now}");
    // The kernel caps its maximum error at 16 s (NTP_PHASE_LIMIT).
    assert!(h.max_error_ns <= 16_000_000_000, "{h:?}");
    let b1 = clock::boottime_ns();
    let b2 = clock::boottime_ns();
    assert!(b1 > 0 && b2 >= b1);
}
