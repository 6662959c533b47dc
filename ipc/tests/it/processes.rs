//! Producer and consumer in separate processes, and producers killed with
//! SIGKILL in the middle of writing.

use std::time::Duration;

use chronos_ipc::ring::{self, Consumer};

use crate::{TestRing, finish, peer};

#[test]
fn records_cross_processes_in_order_and_intact() {
    let r = TestRing::new("xproc", 1 << 20, 4096);
    let consumer = peer(&["consume", &r.0]);
    let producer = peer(&["produce", &r.0, "200000", "--stop"]);
    let (code, out) = finish(producer);
    assert_eq!((code, out.trim()), (0, "produced 200001"));
    let (code, out) = finish(consumer);
    assert_eq!((code, out.trim()), (0, "ok 200000 199999"));
}

#[test]
fn producers_killed_mid_write_lose_and_tear_nothing() {
    // A small ring wraps often; --slow pauses inside every payload, so most
    // kills land between a record's first bytes and its commit marker.
    let r = TestRing::new("kill", 64 << 10, 1024);
    let consumer = peer(&["consume", &r.0]);
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let kills = 60u64;
    for _ in 0..kills {
        let mut p = peer(&["produce", &r.0, "100000000", "--slow"]);
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(2_000 + rng % 20_000));
        p.kill().unwrap(); // SIGKILL
        p.wait().unwrap();
        assert!(ring::inspect(&r.0).unwrap().consumer_alive);
    }
    // The killed producers made progress (on average at least a record each).
    let killed_wrote = chronos_ipc::Producer::attach(&r.0).unwrap().next_seq();
    assert!(killed_wrote >= kills, "only {killed_wrote} records before the last producer");
    let (code, out) = finish(peer(&["produce", &r.0, "1000", "--stop"]));
    assert_eq!(code, 0, "{out}");
    let total: u64 = out.trim().strip_prefix("produced ").unwrap().parse().unwrap();
    let (code, out) = finish(consumer);
    // Every committed record arrived exactly once, in order, intact; the
    // consumer checked each one's length and bytes against its seq.
    assert_eq!((code, out.trim().to_owned()), (0, format!("ok {} {}", total - 1, total - 2)));
    assert_eq!(total, killed_wrote + 1001);
}

#[test]
fn the_role_of_a_killed_process_is_free_at_once_and_its_ring_detected_stale() {
    let r = TestRing::new("stale", 64 << 10, 1024);
    let mut p = peer(&["produce", &r.0, "100000000", "--slow"]);
    // Wait until the producer holds its role.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !ring::inspect(&r.0).unwrap().producer_alive {
        assert!(std::time::Instant::now() < deadline, "watchdog: producer never attached");
        std::thread::sleep(Duration::from_millis(1));
    }
    p.kill().unwrap();
    p.wait().unwrap();
    let st = ring::inspect(&r.0).unwrap();
    assert!(st.is_stale(), "{st:?}");
    assert!(ring::stale_segments().contains(&r.0));
    // Explicit clean-up only.
    assert!(ring::remove_stale(&r.0).unwrap());
    assert!(matches!(Consumer::attach(&r.0), Err(chronos_ipc::RingError::NotFound { .. })));
}
