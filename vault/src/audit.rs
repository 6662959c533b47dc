//! Audit events are written at a bounded rate: whoever provokes them (a
//! client sending refused bodies, anyone submitting forged control events)
//! must not be able to fill `audit_events`.

use std::time::{Duration, Instant};

/// At most `per_minute` admissions a minute; counts the rest, and the next
/// admitted event says how many were left out.
#[derive(Debug)]
pub struct RateLimit {
    per_minute: u32,
    window: Instant,
    admitted: u32,
    skipped: u64,
}

impl RateLimit {
    pub fn new(per_minute: u32) -> RateLimit {
        RateLimit { per_minute, window: Instant::now(), admitted: 0, skipped: 0 }
    }

    /// `Some(skipped since the last admission)` if admitted now.
    pub fn admit(&mut self) -> Option<u64> {
        if self.window.elapsed() >= Duration::from_secs(60) {
            self.window = Instant::now();
            self.admitted = 0;
        }
        if self.admitted >= self.per_minute {
            self.skipped += 1;
            return None;
        }
        self.admitted += 1;
        Some(std::mem::take(&mut self.skipped))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, Instant};

    use super::RateLimit;

    #[test]
    fn refusals_past_the_limit_are_counted_and_the_next_minutes_first_event_says_how_many() {
        let mut limit = RateLimit::new(3);
        let admitted: Vec<Option<u64>> = (0..5).map(|_| limit.admit()).collect();
        assert_eq!(admitted, [Some(0), Some(0), Some(0), None, None]);
        // A minute later (moved back rather than waited for).
        limit.window = Instant::now().checked_sub(Duration::from_secs(60)).unwrap();
        assert_eq!(limit.admit(), Some(2), "the first event of the next minute counts the two left out");
        assert_eq!(limit.admit(), Some(0));
    }
}
