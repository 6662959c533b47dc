//! The cost of reading trusted time, per call: quorum time from the
//! published clock page, host time from the kernel (`adjtimex`), and the
//! plain system clock as the floor of what any time read costs.

use std::time::{Duration, SystemTime};

use chronos_ipc::clock::{ClockState, ClockWriter, boottime_ns};
use chronos_time::{Policy, Settings, Source, SourceKind, TimeReader};
use criterion::{Criterion, criterion_group, criterion_main};

fn reads(c: &mut Criterion) {
    let page = format!("bench-{}", std::process::id());
    let mut w = ClockWriter::open(&page).expect("clock page");
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    w.publish(&ClockState {
        status: 2,
        earliest_ns: now - 1_000_000,
        latest_ns: now + 1_000_000,
        anchor_ns: boottime_ns(),
        max_drift_ppm: 100,
        holdover_ns: 3_600_000_000_000,
        agreeing: 2,
        configured: 3,
        round: 1,
        evidence: [1; 32],
    });
    let settings = Settings {
        sources: vec![Source { name: "a".into(), kind: SourceKind::Ntp, address: "127.0.0.1:123".into() }],
        min_agreeing: 1,
        max_distance: Duration::from_secs(1),
        max_drift_ppm: 100,
        poll: Duration::from_secs(16),
        timeout: Duration::from_secs(1),
        policy: Policy::Refuse,
        page: page.clone(),
    };
    let quorum = TimeReader::new(&settings);
    assert!(quorum.stamp().expect("quorum time").quorum);
    let host = TimeReader::host();
    let mut g = c.benchmark_group("read time");
    g.bench_function("quorum time (clock page)", |b| b.iter(|| quorum.stamp()));
    g.bench_function("host time (adjtimex)", |b| b.iter(|| host.stamp()));
    g.bench_function("SystemTime::now (peer)", |b| b.iter(SystemTime::now));
    g.finish();
    let _ = chronos_ipc::clock::remove(&page);
}

criterion_group!(benches, reads);
criterion_main!(benches);
