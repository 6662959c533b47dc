//! n of 3, 4, 5 and 7 sources, f < n/2 of them lying with each strategy,
//! thousands of seeded trials each: the agreed interval contains true
//! time, stays within the honest sources' span, and no honest source is
//! called a falseticker. Without enough answers there is no agreement.

use chronos_quorum::{Interval, Rules, Verdict, select};
use proptest::prelude::*;

const MS: u64 = 1_000_000;
const TRUE_TIME: u64 = 1_800_000_000_000_000_000;

/// How the liars answer.
#[derive(Clone, Copy, Debug)]
enum Lie {
    /// Each a constant offset of its own, far or near.
    Offsets,
    /// All on the same wrong time, to outvote the honest ones.
    Colluding,
    /// Overlapping the honest intervals' edge, pulling the result aside.
    Straddling,
    /// An old answer replayed: true time some seconds ago.
    Replayed,
    /// Very wide intervals that cover everything.
    Wide,
}

fn lie() -> impl Strategy<Value = Lie> {
    prop_oneof![Just(Lie::Offsets), Just(Lie::Colluding), Just(Lie::Straddling), Just(Lie::Replayed), Just(Lie::Wide)]
}

/// An honest interval: contains true time, its midpoint anywhere within
/// its radius of it (asymmetric paths put it off centre).
fn honest(radius: u64, skew: f64) -> Interval {
    let off = (radius as f64 * skew) as i64;
    let mid = TRUE_TIME.checked_add_signed(off).unwrap();
    Interval::around(mid, radius)
}

fn liar(kind: Lie, radius: u64, i: usize, shift: i64, shared: i64, honest_span: &Interval) -> Interval {
    match kind {
        Lie::Offsets => Interval::around(TRUE_TIME.checked_add_signed(shift * (i as i64 + 1)).unwrap(), radius),
        Lie::Colluding => Interval::around(TRUE_TIME.checked_add_signed(shared).unwrap(), radius),
        Lie::Straddling => Interval::new(honest_span.latest - radius / 4, honest_span.latest + 30_000 * MS).unwrap(),
        Lie::Replayed => Interval::around(TRUE_TIME - shift.unsigned_abs() % (30_000 * MS), radius),
        Lie::Wide => Interval::around(TRUE_TIME.checked_add_signed(shift).unwrap(), 900 * MS),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, rng_seed: proptest::test_runner::RngSeed::Fixed(0x6368726f6e6f73), ..ProptestConfig::default() })]

    #[test]
    fn a_lying_minority_cannot_move_the_agreed_interval_off_true_time(
        n in prop::sample::select(vec![3usize, 4, 5, 7]),
        kind in lie(),
        radii in prop::collection::vec(MS..200 * MS, 7),
        skews in prop::collection::vec(-1.0f64..=1.0, 7),
        shift in -60_000i64 * MS as i64..60_000 * MS as i64,
        shared in -5_000i64 * MS as i64..5_000 * MS as i64,
        order in any::<u64>(),
    ) {
        let f = (n - 1) / 2;
        let rules = Rules { configured: n, min_agreeing: 2, max_distance_ns: 1_000 * MS };
        let honest_ivs: Vec<Interval> = (0..n - f).map(|i| honest(radii[i], skews[i])).collect();
        let span = Interval {
            earliest: honest_ivs.iter().map(|i| i.earliest).min().unwrap(),
            latest: honest_ivs.iter().map(|i| i.latest).max().unwrap(),
        };
        let mut all: Vec<(bool, Interval)> = honest_ivs.iter().map(|i| (true, *i)).collect();
        for j in 0..f {
            all.push((false, liar(kind, radii[n - f + j], j, shift, shared, &span)));
        }
        // The order sources answer in must not matter.
        let k = all.len();
        all.rotate_left((order % k as u64) as usize);
        let ivs: Vec<Interval> = all.iter().map(|(_, i)| *i).collect();
        let round = select(&ivs, &rules);
        let agreed = round.agreed.expect("an honest majority always agrees");
        prop_assert!(agreed.contains(TRUE_TIME), "{kind:?}: {agreed:?} misses true time; {ivs:?}");
        prop_assert!(span.covers(&agreed), "{kind:?}: {agreed:?} leaves the honest span {span:?}");
        for ((is_honest, iv), verdict) in all.iter().zip(&round.verdicts) {
            if *is_honest {
                prop_assert_eq!(*verdict, Verdict::Agreeing, "an honest source {:?} was rejected", iv);
            } else if iv.intersection(&span).is_none() {
                prop_assert_eq!(*verdict, Verdict::Falseticker, "a liar outside every honest interval: {:?}", iv);
            }
        }
    }

    #[test]
    fn too_few_answers_or_disagreeing_ones_are_no_agreement(
        n in prop::sample::select(vec![3usize, 4, 5, 7]),
        radii in prop::collection::vec(MS..200 * MS, 7),
        answering in 0usize..7,
    ) {
        let rules = Rules { configured: n, min_agreeing: 2, max_distance_ns: 1_000 * MS };
        // Fewer honest answers than required, and liars each on a time of
        // their own, far from everyone: no instant has enough support.
        let honest_count = answering.min(rules.required() - 1);
        let mut ivs: Vec<Interval> = (0..honest_count).map(|i| honest(radii[i], 0.0)).collect();
        for (j, r) in radii.iter().enumerate().take(n - honest_count) {
            ivs.push(Interval::around(TRUE_TIME + (j as u64 + 1) * 10_000 * MS, *r));
        }
        let round = select(&ivs, &rules);
        prop_assert_eq!(round.agreed, None);
        prop_assert!(round.verdicts.iter().all(|v| *v == Verdict::NoQuorum));
    }

    #[test]
    fn peers_withstand_f_liars_of_3f_plus_1_even_with_f_honest_ones_silent(
        n in prop::sample::select(vec![4usize, 7, 10]),
        kind in lie(),
        radii in prop::collection::vec(MS..200 * MS, 10),
        skews in prop::collection::vec(-1.0f64..=1.0, 10),
        shift in -60_000i64 * MS as i64..60_000 * MS as i64,
        shared in -5_000i64 * MS as i64..5_000 * MS as i64,
        silent in any::<bool>(),
    ) {
        let rules = Rules::peers(n, 1_000 * MS);
        let f = rules.tolerated();
        prop_assert_eq!(n, 3 * f + 1);
        // n - f honest peers, f of which may be silent (partitioned away),
        // and f liars: the n - f that answer honestly still agree.
        let honest_answering = if silent { n - 2 * f } else { n - f };
        let honest_ivs: Vec<Interval> = (0..honest_answering).map(|i| honest(radii[i], skews[i])).collect();
        let span = Interval {
            earliest: honest_ivs.iter().map(|i| i.earliest).min().unwrap(),
            latest: honest_ivs.iter().map(|i| i.latest).max().unwrap(),
        };
        let mut ivs = honest_ivs.clone();
        for j in 0..f {
            ivs.push(liar(kind, radii[n - f + j], j, shift, shared, &span));
        }
        let round = select(&ivs, &rules);
        if silent {
            // With f honest peers silent, an agreement needs the liars, but
            // each agreed instant is still held by n - 2f = f + 1 honest
            // peers: it stays within what the honest answers allow.
            if let Some(agreed) = round.agreed {
                prop_assert!(span.covers(&agreed), "{kind:?}: {agreed:?} leaves the honest span {span:?}");
            }
        } else {
            let agreed = round.agreed.expect("n - f honest peers always agree");
            prop_assert!(agreed.contains(TRUE_TIME), "{kind:?}: {agreed:?} misses true time; {ivs:?}");
            prop_assert!(span.covers(&agreed), "{kind:?}: {agreed:?} leaves the honest span {span:?}");
        }
    }
}
