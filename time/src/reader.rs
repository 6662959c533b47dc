//! Reading trusted time: what a batch or a checkpoint is stamped with.
//!
//! With sources configured, the time service's published agreement,
//! carried from its instant to now on `CLOCK_BOOTTIME` and widened by the
//! maximum drift: two atomic loads and some arithmetic, no system call
//! but the clock read. Without sources, the host kernel's clock and its
//! maximum error (`adjtimex`).

use std::sync::OnceLock;

use chronos_ipc::clock::{ClockReader, ClockState, boottime_ns, host_clock};
use chronos_quorum::Interval;
use chronos_quorum::evidence::quorum_source;

use crate::config::{Policy, Settings};

/// Status codes on the clock page.
pub(crate) const STATUS_UNSYNCHRONIZED: u64 = 0;
pub(crate) const STATUS_QUORUM: u64 = 2;

/// A stamp: the interval true time was in when it was read, and what it
/// is worth.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub interval: Interval,
    /// The time source to record: `quorum:K/N:<evidence digest>`, `host`,
    /// `host-unsynchronized` or `untrusted`.
    pub source: String,
    /// Whether it is quorum time.
    pub quorum: bool,
}

/// Configured sources have no quorum and the policy refuses writes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("no time quorum: {0}")]
pub struct NoQuorum(pub String);

/// The reader. Cheap to call from the hot path.
#[derive(Debug)]
pub struct TimeReader {
    quorum: Option<(String, Policy)>,
    page: OnceLock<ClockReader>,
}

impl TimeReader {
    /// A reader for `settings`: host time without sources, the published
    /// clock with them.
    pub fn new(settings: &Settings) -> TimeReader {
        let quorum = (!settings.sources.is_empty()).then(|| (settings.page.clone(), settings.policy));
        TimeReader { quorum, page: OnceLock::new() }
    }

    /// Host time only (tests, tools without a configuration).
    pub fn host() -> TimeReader {
        TimeReader { quorum: None, page: OnceLock::new() }
    }

    /// Whether time sources are configured (else there is no quorum to lose).
    pub fn has_sources(&self) -> bool {
        self.quorum.is_some()
    }

    /// Whether writes need a quorum that may be missing (the refuse policy).
    pub fn gates_writes(&self) -> bool {
        matches!(self.quorum, Some((_, Policy::Refuse)))
    }

    /// The time to stamp a batch with. `Err` only under the refuse policy
    /// when there is no quorum.
    pub fn stamp(&self) -> Result<Stamp, NoQuorum> {
        let Some((_, policy)) = &self.quorum else { return Ok(host_stamp()) };
        match self.quorum_now() {
            Ok(s) => Ok(s),
            Err(why) if *policy == Policy::Refuse => Err(NoQuorum(why)),
            Err(_) => Ok(untrusted_stamp()),
        }
    }

    /// Like [`stamp`](Self::stamp), but never refused: a checkpoint is
    /// signed whatever the quorum, with the time it can honestly claim.
    pub fn stamp_always(&self) -> Stamp {
        match &self.quorum {
            None => host_stamp(),
            Some(_) => self.quorum_now().unwrap_or_else(|_| untrusted_stamp()),
        }
    }

    /// Quorum time now, or why there is none.
    pub fn quorum_now(&self) -> Result<Stamp, String> {
        let state = self.published()?;
        carry(&state, boottime_ns())
    }

    /// The published state, as it is (for `chronos time` and tests).
    pub fn published(&self) -> Result<ClockState, String> {
        let Some((name, _)) = &self.quorum else { return Err("no time source is configured".into()) };
        let page = match self.page.get() {
            Some(p) => p,
            None => {
                let p = ClockReader::open(name).map_err(|e| format!("the time service has not published yet ({e})"))?;
                self.page.get_or_init(|| p)
            }
        };
        page.read().ok_or_else(|| "the time service has not published a state yet".to_owned())
    }
}

/// The published agreement carried to boot-time instant `now`.
pub(crate) fn carry(state: &ClockState, now: u64) -> Result<Stamp, String> {
    if state.status != STATUS_QUORUM {
        return Err(format!("{} of {} configured sources agree in the last round", state.agreeing, state.configured));
    }
    let age = now.saturating_sub(state.anchor_ns);
    if age > state.holdover_ns {
        return Err(format!(
            "the last agreement is {:.1} s old (hold-over {:.1} s): is the time service running?",
            age as f64 / 1e9,
            state.holdover_ns as f64 / 1e9
        ));
    }
    let interval = Interval { earliest: state.earliest_ns, latest: state.latest_ns }.carried(age, state.max_drift_ppm);
    Ok(Stamp {
        interval,
        source: quorum_source(state.agreeing as usize, state.configured as usize, &state.evidence),
        quorum: true,
    })
}

/// The host clock with the kernel's maximum error; `host-unsynchronized`
/// when no daemon keeps it (its error is then unknown; the kernel's bound
/// has grown to its 16 s cap or towards it).
pub fn host_stamp() -> Stamp {
    match host_clock() {
        Ok(h) => Stamp {
            interval: Interval::around(h.now_ns, h.max_error_ns),
            source: if h.synchronized { "host" } else { "host-unsynchronized" }.to_owned(),
            quorum: false,
        },
        Err(_) => Stamp {
            interval: Interval::around(system_now_ns(), 16_000_000_000),
            source: "host-unsynchronized".to_owned(),
            quorum: false,
        },
    }
}

/// Host time under the accept policy when there is no quorum.
fn untrusted_stamp() -> Stamp {
    let h = host_stamp();
    let radius = if h.source == "host" { h.interval.radius() } else { 16_000_000_000 };
    Stamp { interval: Interval::around(h.interval.midpoint(), radius), source: "untrusted".to_owned(), quorum: false }
}

fn system_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_agreement_is_carried_and_goes_stale() {
        let s = ClockState {
            status: STATUS_QUORUM,
            earliest_ns: 1_000,
            latest_ns: 3_000,
            anchor_ns: 10_000_000_000,
            max_drift_ppm: 100,
            holdover_ns: 5_000_000_000,
            agreeing: 2,
            configured: 3,
            round: 1,
            evidence: [7; 32],
        };
        let st = carry(&s, 11_000_000_000).unwrap();
        assert_eq!(
            st.interval,
            Interval { earliest: 1_000_000_000 + 1_000 - 100_000, latest: 1_000_003_000 + 100_000 }
        );
        assert!(st.source.starts_with("quorum:2/3:"));
        assert!(carry(&s, 16_000_000_001).unwrap_err().contains("old"));
        let none = ClockState { status: STATUS_UNSYNCHRONIZED, agreeing: 1, ..s };
        assert!(carry(&none, 11_000_000_000).unwrap_err().contains("1 of 3"));
    }
}
