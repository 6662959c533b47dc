//! Source selection: which instants enough sources agree on, and which
//! sources are falsetickers.
//!
//! The rule (RFC 5905 Appendix A and chrony's majority rule, made to hold
//! against liars): let `n` be the number of *configured* sources and
//! `required` the larger of a strict majority of `n` and `min_agreeing`.
//! An instant is agreed when at least `required` usable intervals contain
//! it. The agreed interval is the smallest interval holding every agreed
//! instant. If at most `n - required` sources lie, true time is in every
//! honest interval, so at least `required` intervals contain it: it is
//! agreed, and the agreed interval contains it. And since `required`
//! exceeds the number of liars, every agreed instant lies in some honest
//! interval, so the agreed interval lies within the honest intervals'
//! span: liars cannot widen it beyond what honest sources allow.
//!
//! The majority counts configured sources, not reachable ones: someone who
//! can silence honest sources must not shrink the count a lie has to beat.
//! RFC 5905 instead looks for the deepest overlap first, which lets a liar
//! whose interval overlaps the honest ones pull the result off true time
//! within their width; the rule here gives that up for the guarantee.

use crate::interval::Interval;

/// The selection's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Sources configured (reachable or not).
    pub configured: usize,
    /// The fewest sources that must agree, whatever the majority.
    pub min_agreeing: usize,
    /// A source whose interval is wider than twice this (its root
    /// distance larger) is unusable.
    pub max_distance_ns: u64,
}

impl Rules {
    /// How many usable sources must contain an instant for it to be agreed.
    pub fn required(&self) -> usize {
        (self.configured / 2 + 1).max(self.min_agreeing)
    }

    /// The rules of a group of peer Chronos nodes, judged as the replicas
    /// of a Byzantine system are: `n = 3f + 1` peers, an instant agreed
    /// when `n - f` of them hold it. With at most `f` liars, the `n - f`
    /// honest peers always agree on true time when they all answer; and
    /// even when `f` honest peers are silent (partitioned, slow), every
    /// agreed instant is held by at least `f + 1` honest peers, so the
    /// liars cannot move the agreement outside what honest peers allow. A
    /// plain majority would need only `n/2 + 1 - f` honest peers beside
    /// the liars.
    pub fn peers(configured: usize, max_distance_ns: u64) -> Rules {
        let f = configured.saturating_sub(1) / 3;
        Rules { configured, min_agreeing: configured - f, max_distance_ns }
    }

    /// How many lying sources the rules withstand: `configured - required`
    /// (for peers, `f` of `3f + 1`).
    pub fn tolerated(&self) -> usize {
        self.configured.saturating_sub(self.required())
    }
}

/// The agreement of several groups selected apart (external sources and
/// peers): the instants every configured group agreed on. `None` when a
/// group has no agreement, or when the groups' agreements do not meet
/// (one group's bound on its liars does not hold).
pub fn combine(groups: &[Option<Interval>]) -> Option<Interval> {
    let mut it = groups.iter();
    let first = (*it.next()?)?;
    it.try_fold(first, |acc, g| acc.intersection(&(*g)?))
}

/// What the selection made of one source's interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Shares an agreed instant.
    Agreeing,
    /// Shares no agreed instant: its interval is evidence against it.
    Falseticker,
    /// Wider than the maximum distance allows: not used.
    TooFar,
    /// Usable, but there was no agreement to judge it against.
    NoQuorum,
}

/// The outcome of one round of selection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Round {
    /// The agreed interval, if enough sources agree.
    pub agreed: Option<Interval>,
    /// One verdict per input interval, in input order.
    pub verdicts: Vec<Verdict>,
    /// How many sources had to agree.
    pub required: usize,
    /// The most sources that contain one instant (0 if none are usable).
    pub depth: usize,
}

impl Round {
    /// How many sources agree.
    pub fn agreeing(&self) -> usize {
        self.verdicts.iter().filter(|v| **v == Verdict::Agreeing).count()
    }
}

/// Selects among `intervals` (one per source that answered this round,
/// all carried to the same instant).
pub fn select(intervals: &[Interval], rules: &Rules) -> Round {
    let required = rules.required();
    let usable = |i: &Interval| i.radius() <= rules.max_distance_ns;
    // Endpoints; at one instant starts come before ends, so intervals that
    // touch share that instant.
    let mut events: Vec<(u64, u8)> = Vec::with_capacity(2 * intervals.len());
    for i in intervals.iter().filter(|i| usable(i)) {
        events.push((i.earliest, 0));
        events.push((i.latest, 1));
    }
    events.sort_unstable();
    // The runs of instants held by at least `required` intervals.
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut runs: Vec<Interval> = Vec::new();
    let mut run_start = 0;
    for (at, kind) in events {
        if kind == 0 {
            depth += 1;
            deepest = deepest.max(depth);
            if depth == required {
                run_start = at;
            }
        } else {
            if depth == required {
                runs.push(Interval { earliest: run_start, latest: at });
            }
            depth -= 1;
        }
    }
    let agreed = match (runs.first(), runs.last()) {
        (Some(first), Some(last)) => Some(Interval { earliest: first.earliest, latest: last.latest }),
        _ => None,
    };
    let verdicts = intervals
        .iter()
        .map(|i| {
            if !usable(i) {
                Verdict::TooFar
            } else if agreed.is_none() {
                Verdict::NoQuorum
            } else if runs.iter().any(|r| r.intersection(i).is_some()) {
                Verdict::Agreeing
            } else {
                Verdict::Falseticker
            }
        })
        .collect();
    Round { agreed, verdicts, required, depth: deepest }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(a: u64, b: u64) -> Interval {
        Interval::new(a, b).unwrap()
    }

    const RULES: Rules = Rules { configured: 3, min_agreeing: 2, max_distance_ns: 1_000 };

    #[test]
    fn two_of_three_agree_and_the_third_is_a_falseticker() {
        let r = select(&[iv(100, 200), iv(150, 260), iv(5_000, 5_100)], &RULES);
        assert_eq!(r.agreed, Some(iv(150, 200)));
        assert_eq!(r.verdicts, [Verdict::Agreeing, Verdict::Agreeing, Verdict::Falseticker]);
        assert_eq!((r.required, r.depth), (2, 2));
    }

    #[test]
    fn touching_intervals_share_their_common_instant() {
        let r = select(&[iv(100, 200), iv(200, 300)], &RULES);
        assert_eq!(r.agreed, Some(iv(200, 200)));
    }

    #[test]
    fn a_silenced_majority_is_no_quorum_and_too_wide_is_unusable() {
        // Three configured, one answers: one is not a majority of three.
        let r = select(&[iv(100, 200)], &RULES);
        assert_eq!(r.agreed, None);
        assert_eq!(r.verdicts, [Verdict::NoQuorum]);
        let r = select(&[iv(100, 200), iv(0, 10_000), iv(120, 180)], &RULES);
        assert_eq!(r.verdicts[1], Verdict::TooFar);
        assert_eq!(r.agreed, Some(iv(120, 180)));
    }

    #[test]
    fn agreement_in_two_places_is_served_as_their_hull() {
        // A wide honest source, and two that each agree with it in a
        // different place: true time may be in either, so both are served.
        let r = select(&[iv(0, 1_000), iv(0, 100), iv(900, 1_000)], &RULES);
        assert_eq!(r.agreed, Some(iv(0, 1_000)));
        assert_eq!(r.agreeing(), 3);
    }

    #[test]
    fn peers_need_all_but_f_of_3f_plus_1_and_groups_combine_by_intersection() {
        let p = Rules::peers(4, 1_000);
        assert_eq!((p.required(), p.tolerated()), (3, 1));
        let p = Rules::peers(7, 1_000);
        assert_eq!((p.required(), p.tolerated()), (5, 2));
        assert_eq!(Rules::peers(3, 1_000).required(), 3, "3 peers tolerate no liar");
        assert_eq!(combine(&[Some(iv(0, 100)), Some(iv(50, 200))]), Some(iv(50, 100)));
        assert_eq!(combine(&[Some(iv(0, 100)), None]), None);
        assert_eq!(combine(&[Some(iv(0, 10)), Some(iv(50, 200))]), None, "groups that contradict each other");
        assert_eq!(combine(&[]), None);
    }

    #[test]
    fn min_agreeing_raises_the_bar_above_the_majority() {
        let rules = Rules { min_agreeing: 3, ..RULES };
        let r = select(&[iv(100, 200), iv(150, 260), iv(5_000, 5_100)], &rules);
        assert_eq!(r.agreed, None);
        assert_eq!(r.required, 3);
    }
}
