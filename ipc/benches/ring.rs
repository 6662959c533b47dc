//! Records/s and bytes/s from one process to another: through a ring, through
//! an nng `ipc://` socket, and plain memcpy bandwidth, in one run.
//!
//! `cargo bench -p chronos-ipc --bench ring`
//! The consumer is a separate process (chronos-ipc-peer) that touches every
//! cache line of every record, as a hasher would. It lingers 20 µs after
//! each wake-up before polling (`Consumer::wait_linger`, the setting for
//! throughput-minded readers); `records_no_linger` shows it without.

use std::io::Write as _;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use chronos_ipc::Distributor;
use chronos_ipc::ring::{self, Producer};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const SIZES: [usize; 2] = [150, 4096];
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

fn nng_bench(c: &mut Criterion) {
    use anng::Message;
    use anng::protocols::pipeline0::{Pull0, Push0};
    let mut g = c.benchmark_group("nng_ipc_cross_process");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for size in SIZES {
        let dir = std::env::temp_dir();
        let data = format!("ipc://{}/chronos-bench-{}-{size}.data", dir.display(), std::process::id());
        let done = format!("ipc://{}/chronos-bench-{}-{size}.done", dir.display(), std::process::id());
        let (mut push, mut pull) = rt.block_on(async {
            let mut push = Push0::listen(std::ffi::CString::new(data.clone()).expect("url")).await.expect("listen");
            // Queue up to nng's maximum locally, so the sender is not held to
            // one message per round trip: nng's best case.
            push.set_send_buffer(8192).expect("send buffer");
            let pull = Pull0::listen(std::ffi::CString::new(done.clone()).expect("url")).await.expect("listen");
            (push, pull)
        });
        let mut consumer = peer(&["nng-pull", &data, &done]);
        let payload = vec![0xa5u8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("records", size), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    push.push(Message::from(&iters.to_le_bytes()[..])).await.map_err(|(e, _)| e).expect("push count");
                    for _ in 0..iters {
                        push.push(Message::from(&payload[..])).await.map_err(|(e, _)| e).expect("push");
                    }
                    pull.pull().await.expect("done");
                    start.elapsed()
                })
            })
        });
        rt.block_on(async {
            let mut quit = Message::with_capacity(8);
            quit.write_all(&0u64.to_le_bytes()).expect("write");
            push.push(quit).await.map_err(|(e, _)| e).expect("quit");
        });
        consumer.wait().expect("consumer exit");
    }
    g.finish();
}

fn nng_sync_bench(c: &mut Criterion) {
    use chronos_ipc::nng_sync::SyncSocket;
    let mut g = c.benchmark_group("nng_ipc_blocking_cross_process");
    g.sample_size(10).measurement_time(Duration::from_secs(5));
    for size in SIZES {
        let dir = std::env::temp_dir();
        let data = format!("ipc://{}/chronos-bench-sync-{}-{size}.data", dir.display(), std::process::id());
        let done = format!("ipc://{}/chronos-bench-sync-{}-{size}.done", dir.display(), std::process::id());
        let push = SyncSocket::push_listen(&data).expect("listen");
        let pull = SyncSocket::pull_listen(&done).expect("listen");
        let mut consumer = peer(&["nng-sync-pull", &data, &done]);
        let payload = vec![0xa5u8; size];
        g.throughput(Throughput::Elements(1));
        g.bench_function(BenchmarkId::new("records", size), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                push.send(&iters.to_le_bytes()).expect("count");
                for _ in 0..iters {
                    push.send(&payload).expect("send");
                }
                pull.recv(|_| ()).expect("done");
                start.elapsed()
            })
        });
        push.send(&0u64.to_le_bytes()).expect("quit");
        consumer.wait().expect("consumer exit");
    }
    g.finish();
}

/// Round trip of one 16-byte record to another process and back: the cost
/// of waking a sleeping reader, by futex (no polling), by futex after a
/// short poll (the default), and by an nng message.
fn wake_bench(c: &mut Criterion) {
    use chronos_ipc::nng_sync::SyncSocket;
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
    let dir = std::env::temp_dir();
    let out = format!("ipc://{}/chronos-bench-echo-{}.out", dir.display(), std::process::id());
    let back = format!("ipc://{}/chronos-bench-echo-{}.back", dir.display(), std::process::id());
    let push = SyncSocket::push_listen(&out).expect("listen");
    let pull = SyncSocket::pull_listen(&back).expect("listen");
    let mut echo = peer(&["nng-echo", &out, &back]);
    g.bench_function("nng_ipc_blocking", |bench| {
        bench.iter(|| {
            push.send(&msg).expect("send");
            pull.recv(|m| assert_eq!(m.len(), 16)).expect("recv");
        })
    });
    push.send(b"").expect("quit");
    echo.wait().expect("echo exit");
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

criterion_group!(benches, ring_bench, fanout_bench, nng_bench, nng_sync_bench, wake_bench, memcpy_bench);
criterion_main!(benches);
