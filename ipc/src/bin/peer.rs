//! Test and benchmark peer: one end of a ring in its
//! own process, so that tests and benchmarks cross a real process boundary.
//!
//! ```text
//! chronos-ipc-peer produce <ring> <count> [--slow] [--stop]
//! chronos-ipc-peer consume <ring>
//! chronos-ipc-peer drain <ring> <linger-µs>
//! chronos-ipc-peer echo <in-ring> <out-ring> <spin-µs>
//! ```
//! `produce` writes records whose length and bytes are a function of their
//! seq, resuming wherever the ring's last producer stopped; `--slow` pauses
//! between the two halves of every payload, so a kill lands mid-write;
//! `--stop` ends with a STOP record. `consume` checks every record against
//! that function and the seq order until STOP, then prints `ok <count>
//! <last seq>`. `drain` reads and releases forever (benchmarks).
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::io::Write as _;
use std::time::{Duration, Instant};

use chronos_ipc::ring::{Consumer, Producer};

const DATA: u32 = 1;
const STOP: u32 = 2;

/// Length of record `seq`'s payload: 1 to 600 bytes.
fn payload_len(seq: u64) -> usize {
    1 + (seq.wrapping_mul(7919) % 600) as usize
}

fn payload_byte(seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_add((i as u8).wrapping_mul(31)) ^ 0x5a
}

fn produce(ring: &str, count: u64, slow: bool, stop: bool) {
    let mut p = Producer::attach(ring).unwrap();
    for _ in 0..count {
        let seq = p.next_seq();
        let len = payload_len(seq);
        let mut g = p.reserve(DATA, len, Instant::now() + Duration::from_secs(60)).unwrap();
        let buf = g.payload_mut();
        let half = len / 2;
        for (i, b) in buf[..half].iter_mut().enumerate() {
            *b = payload_byte(seq, i);
        }
        if slow {
            std::thread::sleep(Duration::from_micros(20));
        }
        for (i, b) in buf[half..].iter_mut().enumerate() {
            *b = payload_byte(seq, half + i);
        }
        g.commit();
    }
    if stop {
        p.push(STOP, b"", Instant::now() + Duration::from_secs(60)).unwrap();
    }
    println!("produced {}", p.next_seq());
}

fn consume(ring: &str) -> i32 {
    let mut c = Consumer::attach(ring).unwrap();
    let (mut count, mut last) = (0u64, None::<u64>);
    loop {
        c.wait(Some(Instant::now() + Duration::from_secs(120))).unwrap();
        let batch = match c.poll(256) {
            Ok(b) => b,
            Err(e) => {
                println!("error {e}");
                return 1;
            }
        };
        let mut stopped = false;
        for r in batch.iter() {
            if r.tag == STOP {
                stopped = true;
                break;
            }
            let want = payload_len(r.seq);
            let ok = r.tag == DATA
                && r.payload.len() == want
                && r.payload.iter().enumerate().all(|(i, &b)| b == payload_byte(r.seq, i));
            if !ok {
                println!("error torn or wrong record seq {} len {} (want {want})", r.seq, r.payload.len());
                return 1;
            }
            if let Some(l) = last
                && r.seq != l + 1
            {
                println!("error seq {} after {l}", r.seq);
                return 1;
            }
            last = Some(r.seq);
            count += 1;
        }
        c.release();
        if stopped {
            println!("ok {count} {}", last.map_or(-1, |l| l as i64));
            return 0;
        }
    }
}

fn drain(ring: &str, linger: Duration) {
    let mut c = Consumer::attach(ring).unwrap();
    let mut fold = 0u64;
    loop {
        c.wait_linger(None, linger).unwrap();
        let batch = c.poll(1024).unwrap();
        for r in batch.iter() {
            if r.tag == STOP {
                println!("{fold}");
                return;
            }
            // Touch every byte, as a real consumer (a hasher) would.
            fold = r.payload.chunks(8).fold(fold, |a, c| a.rotate_left(5) ^ u64::from(c[0]) ^ (c.len() as u64));
        }
        c.release();
    }
}

/// Sends every record of `input` back on `output` until STOP.
fn echo(input: &str, output: &str, spin: Duration) {
    let mut c = Consumer::attach(input).unwrap();
    let mut p = Producer::attach(output).unwrap();
    loop {
        c.wait_spin(None, spin).unwrap();
        let batch = c.poll(64).unwrap();
        for r in batch.iter() {
            if r.tag == STOP {
                return;
            }
            p.push(r.tag, r.payload, Instant::now() + Duration::from_secs(60)).unwrap();
        }
        c.release();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let code = match a.as_slice() {
        ["produce", ring, count, flags @ ..] => {
            produce(ring, count.parse().unwrap(), flags.contains(&"--slow"), flags.contains(&"--stop"));
            0
        }
        ["consume", ring] => consume(ring),
        ["drain", ring, linger] => {
            drain(ring, Duration::from_micros(linger.parse().unwrap()));
            0
        }
        ["echo", input, output, spin] => {
            echo(input, output, Duration::from_micros(spin.parse().unwrap()));
            0
        }
        _ => {
            eprintln!("usage: see the source of chronos-ipc-peer");
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
