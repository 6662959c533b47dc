//! Correctness intervals: `[earliest, latest]` in nanoseconds since the
//! Unix epoch, both ends included.

/// An interval of Unix time in nanoseconds that contains true time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    pub earliest: u64,
    pub latest: u64,
}

/// Parts per million in the unit the crate uses for drift: nanoseconds of
/// drift per second of elapsed time.
pub const NS_PER_S_PER_PPM: u64 = 1_000;

impl Interval {
    /// `[earliest, latest]`; `None` if `earliest > latest`.
    pub fn new(earliest: u64, latest: u64) -> Option<Interval> {
        (earliest <= latest).then_some(Interval { earliest, latest })
    }

    /// The interval `mid ± radius`, clamped to the representable range.
    pub fn around(mid: u64, radius: u64) -> Interval {
        Interval { earliest: mid.saturating_sub(radius), latest: mid.saturating_add(radius) }
    }

    /// Its width in nanoseconds.
    pub fn width(&self) -> u64 {
        self.latest - self.earliest
    }

    /// Half its width: the uncertainty of its midpoint.
    pub fn radius(&self) -> u64 {
        self.width().div_ceil(2)
    }

    /// Its midpoint (rounded down).
    pub fn midpoint(&self) -> u64 {
        self.earliest + self.width() / 2
    }

    /// Whether `t` lies in it.
    pub fn contains(&self, t: u64) -> bool {
        self.earliest <= t && t <= self.latest
    }

    /// Whether it holds all of `other`.
    pub fn covers(&self, other: &Interval) -> bool {
        self.earliest <= other.earliest && other.latest <= self.latest
    }

    /// The instants in both, if any.
    pub fn intersection(&self, other: &Interval) -> Option<Interval> {
        Interval::new(self.earliest.max(other.earliest), self.latest.min(other.latest))
    }

    /// The interval `elapsed_ns` later by a clock whose rate may be off by
    /// up to `max_drift_ppm`: both ends move by `elapsed_ns`, and it widens
    /// by the drift that elapsed time allows on each side (rounded up).
    pub fn carried(&self, elapsed_ns: u64, max_drift_ppm: u64) -> Interval {
        let drift = drift_ns(elapsed_ns, max_drift_ppm);
        Interval {
            earliest: self.earliest.saturating_add(elapsed_ns).saturating_sub(drift),
            latest: self.latest.saturating_add(elapsed_ns).saturating_add(drift),
        }
    }
}

/// The most a clock off by `ppm` can drift over `elapsed_ns`, rounded up.
pub fn drift_ns(elapsed_ns: u64, ppm: u64) -> u64 {
    let d = u128::from(elapsed_ns) * u128::from(ppm);
    u64::try_from(d.div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrying_moves_and_widens() {
        let i = Interval::new(1_000, 3_000).unwrap();
        let c = i.carried(1_000_000_000, 15);
        assert_eq!(c, Interval { earliest: 1_000 + 1_000_000_000 - 15_000, latest: 3_000 + 1_000_000_000 + 15_000 });
        assert_eq!(i.carried(0, 500), i);
        assert_eq!(drift_ns(1, 1), 1, "rounded up: never narrower than the bound");
        assert_eq!(Interval::around(5, 10), Interval { earliest: 0, latest: 15 });
        assert!(Interval::new(2, 1).is_none());
        assert_eq!(i.radius(), 1_000);
        assert_eq!(i.midpoint(), 2_000);
    }
}
