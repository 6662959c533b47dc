//! Several rings at once.
//!
//! The pipeline connects N ingest processes to M hasher processes with one
//! ring per (ingest, hasher) pair instead of one shared multi-producer ring:
//! * each ring keeps the single-writer commit protocol, so a producer killed
//!   mid-write can never block or corrupt a ring another process writes;
//! * no compare-and-swap on a shared tail, so producers never contend;
//! * a [`Distributor`] (producer side) sends each record to the next ring
//!   with room, which spreads work over consumers and routes around a slow
//!   or dead one; a [`RingSet`] (consumer side) drains its rings fairly and
//!   sleeps on all of them at once (`futex_waitv`).
//!
//! BENCHMARKS.md has the measurements behind the choice.

use std::time::{Duration, Instant};

use crate::error::{PushError, RingError};
use crate::ring::{Batch, Consumer, Producer};
use crate::sys;

/// A consumer of several rings, served round-robin.
#[derive(Debug)]
pub struct RingSet {
    rings: Vec<Consumer>,
    next: usize,
}

impl RingSet {
    /// Reads these rings.
    pub fn new(rings: Vec<Consumer>) -> RingSet {
        RingSet { rings, next: 0 }
    }

    /// The rings.
    pub fn rings(&self) -> &[Consumer] {
        &self.rings
    }

    /// Up to `max` records from the next ring (in turn) that has any:
    /// `(ring index, batch)`, or `None` if all are empty. Release with
    /// [`RingSet::release`].
    pub fn poll(&mut self, max: usize) -> Result<Option<(usize, Batch<'_>)>, RingError> {
        let n = self.rings.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.rings[i].has_records()? {
                self.next = (i + 1) % n;
                return Ok(Some((i, self.rings[i].poll(max)?)));
            }
        }
        Ok(None)
    }

    /// Releases what was polled from ring `i`.
    pub fn release(&mut self, i: usize) {
        self.rings[i].release();
    }

    /// Sleeps until any ring has a record or `deadline`; true if one has.
    pub fn wait(&mut self, deadline: Option<Instant>) -> Result<bool, RingError> {
        if crate::ring::spin_until(crate::ring::SPIN, || self.any_ready())? {
            return Ok(true);
        }
        loop {
            if self.any_ready()? {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            let bells: Vec<_> = self.rings.iter().map(Consumer::announce_sleep).collect();
            let ready = self.any_ready();
            if matches!(ready, Ok(false)) && !sys::futex_waitv(&bells, deadline) {
                // Kernel without futex_waitv (before 5.16): nap and re-check.
                std::thread::sleep(Duration::from_micros(200));
            }
            self.rings.iter().for_each(Consumer::awake);
            ready?;
        }
    }

    fn any_ready(&self) -> Result<bool, RingError> {
        for r in &self.rings {
            if r.has_records()? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A producer over several rings: each record goes to the next ring in
/// turn that has room.
#[derive(Debug)]
pub struct Distributor {
    rings: Vec<Producer>,
    next: usize,
}

impl Distributor {
    /// Writes to these rings.
    pub fn new(rings: Vec<Producer>) -> Distributor {
        Distributor { rings, next: 0 }
    }

    /// Pushes into the first ring with room, starting after the last one
    /// used; `Full` only when every ring is full. Returns the ring's index.
    pub fn try_push(&mut self, tag: u32, payload: &[u8]) -> Result<usize, PushError> {
        let n = self.rings.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            match self.rings[i].try_push(tag, payload) {
                Ok(()) => {
                    self.next = (i + 1) % n;
                    return Ok(i);
                }
                Err(PushError::Full) => {}
                Err(e) => return Err(e),
            }
        }
        Err(PushError::Full)
    }

    /// The rings.
    pub fn rings_mut(&mut self) -> &mut [Producer] {
        &mut self.rings
    }
}
