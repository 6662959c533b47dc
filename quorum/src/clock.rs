//! The trusted clock between rounds of selection.
//!
//! After each round the agreed interval is anchored to the monotonic
//! instant it was computed for. Read later, it has moved with the
//! monotonic clock and widened by the maximum drift on each side, so it
//! still contains true time if the monotonic clock's rate is off by no
//! more than that drift. What the clock serves never moves backwards: the
//! time it serves is never below one it served before, and its earliest
//! end never below the floor, the greatest earliest end it served (a
//! bound true time has passed, so raising later intervals to it keeps them
//! true), also across restarts when the service restores the floor it
//! kept. A restored floor is not trust: the clock serves nothing until a
//! fresh round anchors it.

use crate::interval::Interval;

/// What the clock answers at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Served {
    /// Contains true time (if the sources that agreed were honest).
    pub interval: Interval,
    /// The time to record: the interval's midpoint, never below an earlier
    /// one served (so it can lie above the interval's latest end when a
    /// round moved the interval down; record `max(time - earliest, latest -
    /// time)` as its uncertainty).
    pub time: u64,
    /// Nanoseconds since the interval was last anchored by agreement.
    pub age_ns: u64,
}

/// Why the clock serves nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsynchronized {
    /// No round has agreed since the start (or since it was reset).
    #[error("no time quorum yet")]
    NeverAgreed,
    /// The last agreement is older than the hold-over allows.
    #[error("the last time quorum is {age_s} s old (the hold-over is {holdover_s} s)")]
    Stale { age_s: u64, holdover_s: u64 },
}

/// A round's agreement the clock refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The agreed interval ends before what the clock has already served:
    /// accepting it would move time backwards.
    #[error("the agreed interval ends at {latest} ns, before the {floor} ns already served")]
    BeforeFloor { latest: u64, floor: u64 },
    /// An anchor's instant earlier than the current anchor's.
    #[error("a round for monotonic instant {at} ns, older than the current one")]
    OutOfOrder { at: u64 },
}

/// The trusted clock: the last agreement, carried forward.
#[derive(Clone, Debug)]
pub struct Clock {
    max_drift_ppm: u64,
    holdover_ns: u64,
    anchor: Option<(u64, Interval)>,
    /// The greatest earliest end served so far (restored across restarts).
    floor: u64,
    /// The greatest time served so far.
    last_time: u64,
}

impl Clock {
    /// A clock whose monotonic source drifts at most `max_drift_ppm`, that
    /// serves an agreement for `holdover_ns` after it was made, and never
    /// serves below `floor` (0 for a new log).
    pub fn new(max_drift_ppm: u64, holdover_ns: u64, floor: u64) -> Clock {
        Clock { max_drift_ppm, holdover_ns, anchor: None, floor, last_time: 0 }
    }

    /// The greatest earliest end served so far: keep it to restore it.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Anchors the clock to a round's agreed interval for monotonic instant
    /// `mono_ns`. Its earliest end is raised to the floor.
    pub fn anchor(&mut self, mono_ns: u64, agreed: Interval) -> Result<(), Refused> {
        if let Some((at, _)) = self.anchor
            && mono_ns < at
        {
            return Err(Refused::OutOfOrder { at: mono_ns });
        }
        if agreed.latest < self.floor {
            return Err(Refused::BeforeFloor { latest: agreed.latest, floor: self.floor });
        }
        let interval = Interval { earliest: agreed.earliest.max(self.floor), latest: agreed.latest };
        self.anchor = Some((mono_ns, interval));
        Ok(())
    }

    /// Forgets the agreement (for example when the sources lost their
    /// quorum and the policy refuses to hold over).
    pub fn forget(&mut self) {
        self.anchor = None;
    }

    /// What the clock serves at monotonic instant `mono_ns`, and records it
    /// as served (the floor rises).
    pub fn now(&mut self, mono_ns: u64) -> Result<Served, Unsynchronized> {
        let s = self.peek(mono_ns)?;
        self.floor = self.floor.max(s.interval.earliest);
        self.last_time = self.last_time.max(s.time);
        Ok(s)
    }

    /// What the clock would serve at `mono_ns`, without serving it.
    pub fn peek(&self, mono_ns: u64) -> Result<Served, Unsynchronized> {
        let (at, agreed) = self.anchor.ok_or(Unsynchronized::NeverAgreed)?;
        let age_ns = mono_ns.saturating_sub(at);
        if age_ns > self.holdover_ns {
            return Err(Unsynchronized::Stale {
                age_s: age_ns / 1_000_000_000,
                holdover_s: self.holdover_ns / 1_000_000_000,
            });
        }
        let carried = agreed.carried(age_ns, self.max_drift_ppm);
        let interval = Interval { earliest: carried.earliest.max(self.floor), latest: carried.latest.max(self.floor) };
        let time = interval.midpoint().max(self.last_time);
        Ok(Served { interval, time, age_ns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_interval_moves_and_widens_between_rounds() {
        let mut c = Clock::new(100, 60 * S, 0);
        assert_eq!(c.now(0), Err(Unsynchronized::NeverAgreed));
        c.anchor(10 * S, Interval::new(1_000 * S, 1_000 * S + 2_000_000).unwrap()).unwrap();
        let s = c.now(12 * S).unwrap();
        assert_eq!(s.age_ns, 2 * S);
        assert_eq!(s.interval.earliest, 1_002 * S - 200_000);
        assert_eq!(s.interval.latest, 1_002 * S + 2_000_000 + 200_000);
        assert!(matches!(c.now(71 * S), Err(Unsynchronized::Stale { .. })));
    }

    #[test]
    fn time_never_moves_backwards() {
        let mut c = Clock::new(0, 60 * S, 0);
        c.anchor(0, Interval::new(100 * S, 102 * S).unwrap()).unwrap();
        let first = c.now(0).unwrap().time;
        assert_eq!(first, 101 * S);
        // A later round agrees on an earlier (still consistent) interval.
        c.anchor(S, Interval::new(99 * S, 101 * S + 5).unwrap()).unwrap();
        let second = c.now(S).unwrap();
        assert!(second.time >= first && second.interval.earliest >= 100 * S, "{second:?}");
        // One that ends before what was served is refused.
        assert_eq!(
            c.anchor(2 * S, Interval::new(90 * S, 95 * S).unwrap()),
            Err(Refused::BeforeFloor { latest: 95 * S, floor: 100 * S })
        );
        // A restart restores the floor, but not trust.
        let mut again = Clock::new(0, 60 * S, c.floor());
        assert_eq!(again.now(0), Err(Unsynchronized::NeverAgreed));
    }
}
