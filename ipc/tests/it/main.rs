//! The rings between real processes, their crash behaviour, and their
//! refusal of damaged segments.
#![allow(clippy::unwrap_used)]

mod clock;
mod damaged;
mod processes;
mod rings;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chronos_ipc::ring;

/// A ring that is removed when the test ends.
#[derive(Debug)]
pub struct TestRing(pub String);

impl TestRing {
    pub fn new(test: &str, capacity: u64, max_record: u64) -> TestRing {
        let name = format!("test-{}-{test}", std::process::id());
        let _ = ring::remove_stale(&name);
        ring::create(&name, capacity, max_record).unwrap();
        TestRing(name)
    }
}

impl Drop for TestRing {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(ring::segment_path(&self.0));
    }
}

pub fn peer(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_chronos-ipc-peer")).args(args).stdout(Stdio::piped()).spawn().unwrap()
}

/// Waits for a child with a watchdog (a hang fails the test; never a speed assertion).
pub fn finish(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            return (status.code().unwrap_or(-1), out);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("watchdog: peer did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
