//! The validate stage's idempotency window: a retried body gets its first
//! answer within the window, among a bounded number of keys.

use std::time::Duration;

use chronos_orchestrator::Metrics;
use chronos_orchestrator::stages::{Candidate, Stage, Validate, Verdict};
use chronos_vault::store::RecentKey;
use chronos_wire::{Duplicate, Hashed, Reply, tag};

use crate::hashed;

const EVENTS: [&str; 2] = [r#"{"n":1}"#, r#"{"n":2}"#];

fn key(n: u8) -> [u8; 32] {
    [n; 32]
}

/// What validate says of a body with `key`, sent as request `request`.
fn verdict(v: &mut Validate, request: u64, key: [u8; 32]) -> Verdict {
    let bytes = hashed(Reply { slot: 0, request }, &key, &EVENTS);
    let mut c = Candidate::new(Hashed::decode(tag::HASHED, &bytes).unwrap());
    v.apply(&mut c).unwrap()
}

/// Hands a body on as batch `seq` (what the spine does once every stage
/// let it through and the record is in the vault writer's ring).
fn pass(v: &mut Validate, key: [u8; 32], seq: u64) {
    let bytes = hashed(Reply { slot: 0, request: 0 }, &key, &EVENTS);
    let mut c = Candidate::new(Hashed::decode(tag::HASHED, &bytes).unwrap());
    assert_eq!(v.apply(&mut c).unwrap(), Verdict::Continue);
    c.seq = seq;
    c.first_leaf = 2 * (seq - 1);
    v.passed(&c);
}

fn duplicate(request: u64, seq: u64) -> Verdict {
    Verdict::Duplicate(Duplicate { reply: Reply { slot: 0, request }, seq, first_leaf: 2 * (seq - 1), leaf_count: 2 })
}

#[test]
fn a_body_sequenced_within_the_window_is_answered_with_its_first_answer() {
    let metrics = Metrics::default();
    let mut v = Validate::new(Duration::from_secs(900), 100, 64, &[], metrics.clone());
    pass(&mut v, key(1), 1);
    assert_eq!(verdict(&mut v, 7, key(1)), duplicate(7, 1), "the retry is answered, not sequenced again");
    assert_eq!(verdict(&mut v, 8, key(2)), Verdict::Continue, "another body goes on");
    assert_eq!(metrics.keys.get(), 1);
}

#[test]
fn keys_restored_from_the_database_keep_their_age() {
    let metrics = Metrics::default();
    let restored = |k: u8, seq: u64, age: u64| RecentKey {
        key: key(k),
        seq,
        first_leaf: 2 * (seq - 1),
        leaf_count: 2,
        age: Duration::from_secs(age),
    };
    // Oldest first, as `Vault::recent_keys` returns them. (`Validate::new`
    // places them at `now - age` on the monotonic clock: at least a minute
    // of uptime is assumed here.)
    let recent = [restored(1, 1, 61), restored(2, 2, 1)];
    let mut v = Validate::new(Duration::from_secs(60), 100, 64, &recent, metrics.clone());
    assert_eq!(verdict(&mut v, 5, key(1)), Verdict::Continue, "its window ended while no orchestrator ran");
    assert_eq!(verdict(&mut v, 6, key(2)), duplicate(6, 2));
    assert_eq!(metrics.keys.get(), 1);
}

#[test]
fn past_the_key_limit_the_oldest_key_is_forgotten_early_and_counted() {
    let metrics = Metrics::default();
    let mut v = Validate::new(Duration::from_secs(900), 3, 64, &[], metrics.clone());
    for k in 1..=4 {
        pass(&mut v, key(k), u64::from(k));
    }
    assert_eq!(verdict(&mut v, 10, key(1)), Verdict::Continue, "forgotten before its window ended");
    for k in 2..=4 {
        assert_eq!(verdict(&mut v, 10 + u64::from(k), key(k)), duplicate(10 + u64::from(k), u64::from(k)));
    }
    assert_eq!((metrics.keys.get(), metrics.keys_evicted.get()), (3, 1));
    for k in 5..=14 {
        pass(&mut v, key(k), u64::from(k));
    }
    assert_eq!((metrics.keys.get(), metrics.keys_evicted.get(), v.remembered()), (3, 11, 3), "memory stays bounded");
}

#[test]
fn a_body_over_the_event_limit_is_refused_before_it_is_sequenced() {
    let mut v = Validate::new(Duration::from_secs(900), 100, 1, &[], Metrics::default());
    let Verdict::Reject(reason) = verdict(&mut v, 1, key(1)) else { panic!("not refused") };
    assert_eq!(reason, "2 events, over the limit of 1");
}
