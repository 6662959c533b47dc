//! Damaged segments are refused with errors that say what is wrong, never
//! undefined behaviour.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;

use chronos_ipc::RingError;
use chronos_ipc::ring::{self, Consumer, Producer};

use crate::TestRing;

fn poke(name: &str, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new().write(true).open(ring::segment_path(name)).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

fn open_error(name: &str) -> String {
    match Consumer::attach(name) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a damaged segment was accepted"),
    }
}

#[test]
fn wrong_magic() {
    let r = TestRing::new("magic", 64 << 10, 1024);
    poke(&r.0, 0, b"NOTARING");
    let e = open_error(&r.0);
    assert!(e.contains("bad magic"), "{e}");
}

#[test]
fn wrong_version() {
    let r = TestRing::new("version", 64 << 10, 1024);
    poke(&r.0, 8, &99u32.to_le_bytes());
    let e = open_error(&r.0);
    assert!(e.contains("layout version 99"), "{e}");
}

#[test]
fn truncated_segment() {
    let r = TestRing::new("trunc", 64 << 10, 1024);
    OpenOptions::new().write(true).open(ring::segment_path(&r.0)).unwrap().set_len(4096 + 1000).unwrap();
    let e = open_error(&r.0);
    assert!(e.contains("truncated"), "{e}");
    OpenOptions::new().write(true).open(ring::segment_path(&r.0)).unwrap().set_len(100).unwrap();
    assert!(matches!(Consumer::attach(&r.0), Err(RingError::Incompatible { .. })));
}

#[test]
fn corrupted_geometry_in_the_header() {
    let r = TestRing::new("geomcorrupt", 64 << 10, 1024);
    poke(&r.0, 16, &12345u64.to_le_bytes()); // capacity
    let e = open_error(&r.0);
    assert!(e.contains("capacity 12345"), "{e}");
}

#[test]
fn corrupted_length_field() {
    let r = TestRing::new("len", 64 << 10, 1024);
    let mut p = Producer::attach(&r.0).unwrap();
    p.try_push(0, b"fine").unwrap();
    // The record at position 0: its len field is at data offset 16.
    poke(&r.0, 4096 + 16, &u32::MAX.to_le_bytes());
    let mut c = Consumer::attach(&r.0).unwrap();
    let e = c.poll(1).unwrap_err();
    assert!(matches!(e, RingError::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("claims a length of 4294967295"), "{e}");
}

#[test]
fn corrupted_sequence_is_caught_as_loss() {
    let r = TestRing::new("seq", 64 << 10, 1024);
    let mut p = Producer::attach(&r.0).unwrap();
    p.try_push(0, b"one").unwrap();
    p.try_push(0, b"two").unwrap();
    // Second record starts at 24 + 8 = 32; its seq field is at +8.
    poke(&r.0, 4096 + 32 + 8, &7u64.to_le_bytes());
    let mut c = Consumer::attach(&r.0).unwrap();
    let e = c.poll(10).unwrap_err();
    assert!(e.to_string().contains("has seq 7, expected 1"), "{e}");
}

#[test]
fn a_segment_whose_creator_died_is_uninitialized_until_removed() {
    let name = format!("test-{}-uninit", std::process::id());
    let path = ring::segment_path(&name);
    // A segment of the right size whose header was never written.
    let f = std::os::unix::fs::OpenOptionsExt::mode(OpenOptions::new().create_new(true).write(true), 0o600)
        .open(&path)
        .unwrap();
    f.set_len(4096 + (64 << 10)).unwrap();
    let e = Consumer::attach(&name).unwrap_err();
    assert!(matches!(e, RingError::Uninitialized { .. }), "{e}");
    assert!(e.to_string().contains("remove it with remove_stale"));
    assert!(ring::remove_stale(&name).unwrap());
    assert!(!std::path::Path::new(&path).exists());
}

#[test]
fn a_misaligned_head_is_refused() {
    let r = TestRing::new("head", 64 << 10, 1024);
    // head is at header offset 128.
    poke(&r.0, 128, &3u64.to_le_bytes());
    let e = Consumer::attach(&r.0).unwrap_err();
    assert!(e.to_string().contains("not 8-byte aligned"), "{e}");
    let e = Producer::attach(&r.0).unwrap_err();
    assert!(e.to_string().contains("not 8-byte aligned"), "{e}");
}

#[test]
fn geometry_changed_after_attach_is_not_believed() {
    let r = TestRing::new("live", 64 << 10, 1024);
    let mut p = Producer::attach(&r.0).unwrap();
    let mut c = Consumer::attach(&r.0).unwrap();
    // Another process rewrites capacity and max record size in the header.
    poke(&r.0, 16, &(1u64 << 40).to_le_bytes());
    poke(&r.0, 24, &(1u64 << 39).to_le_bytes());
    // Both ends keep the geometry they validated: no out-of-bounds access.
    assert!(matches!(p.try_push(0, &vec![0; 2000]), Err(chronos_ipc::PushError::TooLarge { max: 1024, .. })));
    for i in 0..200u32 {
        while p.try_push(i, &[i as u8; 1000]).is_err() {
            c.poll(64).unwrap();
            c.release();
        }
    }
}

#[test]
fn a_head_moved_backwards_by_someone_else_stops_the_producer() {
    let r = TestRing::new("headback", 64 << 10, 1024);
    let mut p = Producer::attach(&r.0).unwrap();
    let mut c = Consumer::attach(&r.0).unwrap();
    while p.try_push(0, &[1; 1000]).is_ok() {}
    c.poll(10).unwrap();
    c.release();
    // The producer sees the released space, and fills it.
    p.try_push(0, &[1; 1000]).unwrap();
    while p.try_push(0, &[1; 1000]).is_ok() {}
    // Rewind head to 0 behind the consumer's back: the producer's next look
    // at head sees it move backwards, which no consumer does.
    poke(&r.0, 128, &0u64.to_le_bytes());
    let e = p.try_push(0, &[1; 1000]).unwrap_err();
    assert!(matches!(e, chronos_ipc::PushError::Corrupt(_)), "{e:?}");
}

/// Another local user could create a ring's segment before Chronos does
/// (/dev/shm is writable by everyone, the names are predictable) and then
/// read or inject records: a segment owned by another user is refused by
/// every way in, with its path in the error.
#[test]
fn a_segment_owned_by_another_user_is_refused() {
    let r = TestRing::new("foreign", 64 << 10, 1024);
    let path = ring::segment_path(&r.0);
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).expect("chown (the tests run as root)");
    for e in [
        Consumer::attach(&r.0).err().map(|e| e.to_string()),
        Producer::attach(&r.0).err().map(|e| e.to_string()),
        ring::open_or_create(&r.0, 64 << 10, 1024).err().map(|e| e.to_string()),
    ] {
        let e = e.expect("a foreign segment was accepted");
        assert!(e.contains(&path) && e.contains("owned by uid 65534"), "{e}");
    }
}

#[test]
fn a_segment_others_may_open_is_refused() {
    use std::os::unix::fs::PermissionsExt as _;
    let r = TestRing::new("open-to-all", 64 << 10, 1024);
    let path = ring::segment_path(&r.0);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = open_error(&r.0);
    assert!(e.contains(&path) && e.contains("mode 0644"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    Consumer::attach(&r.0).expect("the same segment, 0600 again, is used");
}
