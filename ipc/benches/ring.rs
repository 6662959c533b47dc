//! Records/s and bytes/s from one process to another through a ring, the
//! cost of waking a sleeping reader, and plain memcpy bandwidth, in one run.
//!
//! `cargo bench -p chronos-ipc --bench ring`
//! The consumer is a separate process (chronos-ipc-peer) that touches every
//! cache line of every record, as a hasher would. It lingers 20 µs after
//! each wake-up before polling (`Consumer::wait_linger`, the setting for
//! throughput-minded readers); `records_no_linger` shows it without.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chronos_ipc::Distributor;
use chronos_ipc::ring::{self, Producer};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const STOP: u32 = 2;

fn peer(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chronos-ipc-peer")).args(args).spawn().expect("spawn peer")
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(600)
}

fn ring_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_cross_process");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for (label, size, linger) in [("records", 150, "20"), ("records", 4096, "20"), ("records_no_linger", 150, "0")] {
        let name = format!("bench-{}-{size}-{linger}", std::process::id());
        let _ = ring::remove_stale(&name);
        ring::create(&name, 64 << 20, 1 << 20).expect("create ring");
        let mut consumer = peer(&["drain", &name, linger]);
        let mut p = Producer::attach(&name).expect("attach");
        let payload = vec![0xa5u8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new(label, size), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let mut grant = p.reserve(1, size, far()).expect("reserve");
                    grant.payload_mut().copy_from_slice(&payload);
                    grant.commit();
                }
                assert!(p.wait_drained(far()));
                start.elapsed()
            })
        });
        p.push(STOP, b"", far()).expect("stop");
        consumer.wait().expect("consumer exit");
        drop(p);
        ring::remove(&name).expect("remove ring");
    }
    g.finish();
}

fn fanout_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring_fanout_2_consumers");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let size = 150;
    let names: Vec<String> = (0..2).map(|i| format!("bench-{}-fan{i}", std::process::id())).collect();
    let mut consumers = Vec::new();
    for n in &names {
        let _ = ring::remove_stale(n);
        ring::create(n, 64 << 20, 1 << 20).expect("create ring");
        consumers.push(peer(&["drain", n, "20"]));
    }
    let mut d = Distributor::new(names.iter().map(|n| Producer::attach(n).expect("attach")).collect());
    let payload = vec![0xa5u8; size];
    g.throughput(Throughput::Elements(1));
    g.bench_function(BenchmarkId::new("records", size), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut i = 0;
            while i < iters {
                match d.try_push(1, &payload) {
                    Ok(_) => i += 1,
                    Err(_) => std::hint::spin_loop(),
                }
            }
            for p in d.rings_mut() {
                assert!(p.wait_drained(far()));
            }
            start.elapsed()
        })
    });
    for p in d.rings_mut() {
        p.push(STOP, b"", far()).expect("stop");
    }
    for mut c in consumers {
        c.wait().expect("consumer exit");
    }
    drop(d);
    for n in &names {
        ring::remove(n).expect("remove ring");
    }
    g.finish();
}

/// Round trip of one 16-byte record to another process and back: the cost
/// of waking a sleeping reader, by futex (no polling), by futex after a
/// short poll (the default).
fn wake_bench(c: &mut Criterion) {
    use chronos_ipc::ring::Consumer;
    let mut g = c.benchmark_group("wake_round_trip");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let msg = [7u8; 16];
    for (label, spin_us) in [("ring_futex_only", 0u64), ("ring_poll_50us_then_futex", 50)] {
        let id = std::process::id();
        let (a, b) = (format!("bench-{id}-ping-{spin_us}"), format!("bench-{id}-pong-{spin_us}"));
        for n in [&a, &b] {
            let _ = ring::remove_stale(n);
            ring::create(n, 1 << 20, 4096).expect("create");
        }
        let mut echo = peer(&["echo", &a, &b, &spin_us.to_string()]);
        let mut p = Producer::attach(&a).expect("attach");
        let mut c = Consumer::attach(&b).expect("attach");
        let spin = Duration::from_micros(spin_us);
        g.bench_function(label, |bench| {
            bench.iter(|| {
                p.push(1, &msg, far()).expect("push");
                assert!(c.wait_spin(Some(far()), spin).expect("wait"));
                assert_eq!(c.poll(1).expect("poll").len(), 1);
                c.release();
            })
        });
        p.push(STOP, b"", far()).expect("stop");
        echo.wait().expect("echo exit");
        drop((p, c));
        for n in [&a, &b] {
            ring::remove(n).expect("remove ring");
        }
    }
    g.finish();
}

fn memcpy_bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("memcpy");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let len = 64 << 20;
    let src = vec![0x5au8; len];
    let mut dst = vec![0u8; len];
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("64MiB", |b| {
        b.iter(|| {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&dst);
        })
    });
    g.finish();
}

criterion_group!(benches, ring_bench, fanout_bench, wake_bench, memcpy_bench);
criterion_main!(benches);
