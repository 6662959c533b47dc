//! The circuit breaker around the vault's commits, without I/O (the
//! caller gives the instant and reports each commit's outcome).
//!
//! Closed: commits go ahead. After `threshold` consecutive failures it
//! opens: callers answer 503 at once (the mode machine's `vault failing`)
//! and nothing is attempted until `cooldown` has passed; then it is
//! half-open: one probe commit goes ahead. Its success closes the circuit
//! (`vault back`); its failure opens it for another `cooldown`. The breaker
//! only reports; it never touches a hold or a recovery (the mode table
//! keeps those whatever the vault does).

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed {
        failures: u32,
    },
    Open {
        since_ns: u64,
    },
    /// A probe is allowed (or in flight).
    HalfOpen,
}

/// What a reported outcome changed, for the mode machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    None,
    /// The circuit opened: `vault failing`.
    Opened,
    /// The probe committed: `vault back`.
    Closed,
}

/// A circuit breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    threshold: u32,
    cooldown_ns: u64,
    state: State,
}

impl Breaker {
    pub fn new(threshold: u32, cooldown_ns: u64) -> Breaker {
        Breaker { threshold: threshold.max(1), cooldown_ns, state: State::Closed { failures: 0 } }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a commit may be attempted at `now_ns` (an open circuit turns
    /// half-open once its cooldown has passed, allowing one probe).
    pub fn allow(&mut self, now_ns: u64) -> bool {
        match self.state {
            State::Closed { .. } | State::HalfOpen => true,
            State::Open { since_ns } if now_ns.saturating_sub(since_ns) >= self.cooldown_ns => {
                self.state = State::HalfOpen;
                true
            }
            State::Open { .. } => false,
        }
    }

    /// Reports a commit's outcome at `now_ns`.
    pub fn report(&mut self, ok: bool, now_ns: u64) -> Change {
        match (self.state, ok) {
            (State::Closed { .. }, true) => {
                self.state = State::Closed { failures: 0 };
                Change::None
            }
            (State::Closed { failures }, false) if failures + 1 >= self.threshold => {
                self.state = State::Open { since_ns: now_ns };
                Change::Opened
            }
            (State::Closed { failures }, false) => {
                self.state = State::Closed { failures: failures + 1 };
                Change::None
            }
            (State::HalfOpen, true) => {
                self.state = State::Closed { failures: 0 };
                Change::Closed
            }
            (State::HalfOpen, false) => {
                self.state = State::Open { since_ns: now_ns };
                Change::None
            }
            // An outcome of a commit started before the circuit opened.
            (State::Open { .. }, _) => Change::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn opens_after_the_threshold_probes_after_the_cooldown_and_closes_on_success() {
        let mut b = Breaker::new(3, 5 * S);
        assert_eq!(b.report(false, 0), Change::None);
        assert_eq!(b.report(true, 0), Change::None, "a success resets the count");
        assert_eq!(b.report(false, 1), Change::None);
        assert_eq!(b.report(false, 2), Change::None);
        assert_eq!(b.report(false, 3), Change::Opened);
        assert!(!b.allow(3 + S), "open: nothing attempted");
        assert!(b.allow(3 + 5 * S), "half-open after the cooldown");
        assert_eq!(b.state(), State::HalfOpen);
        assert_eq!(b.report(false, 4 * S + 3), Change::None, "the probe failed: open again");
        assert!(!b.allow(5 * S + 3));
        assert!(b.allow(9 * S + 3));
        assert_eq!(b.report(true, 9 * S + 4), Change::Closed);
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }

    #[test]
    fn late_outcomes_of_an_open_circuit_change_nothing() {
        let mut b = Breaker::new(1, S);
        assert_eq!(b.report(false, 0), Change::Opened);
        assert_eq!(b.report(true, 1), Change::None);
        assert!(!b.allow(2));
    }
}
