//! One round: every source asked at once, their intervals carried to one
//! instant, the selection, and the round's evidence.

use chronos_quorum::Interval;
use chronos_quorum::evidence::{Evidence, Outcome, SourceRecord, VerdictRecord};

use crate::config::{Settings, SourceKind};
use crate::ntp_client::{Exchange, exchange};

/// A finished round.
#[derive(Debug)]
pub(crate) struct Finished {
    pub evidence: Evidence,
    /// `CLOCK_BOOTTIME` instant the intervals (and the agreement) are true at.
    pub at_boot_ns: u64,
}

/// Asks every source, then selects.
pub(crate) async fn run(settings: &Settings, round: u64) -> Finished {
    let asks = settings.sources.iter().map(|s| async move {
        match s.kind {
            SourceKind::Ntp => exchange(&s.address, settings.timeout, settings.max_drift_ppm).await,
        }
    });
    let answers: Vec<Result<Exchange, String>> = futures_util::future::join_all(asks).await;
    // The latest arrival: every interval is carried forward to it.
    let at = answers
        .iter()
        .filter_map(|a| a.as_ref().ok().map(|e| e.at_boot_ns))
        .max()
        .unwrap_or_else(chronos_ipc::clock::boottime_ns);
    let carried: Vec<Option<Interval>> = answers
        .iter()
        .map(|a| {
            a.as_ref()
                .ok()
                .map(|e| e.measurement.interval.carried(at.saturating_sub(e.at_boot_ns), settings.max_drift_ppm))
        })
        .collect();
    let intervals: Vec<Interval> = carried.iter().flatten().copied().collect();
    let selection = chronos_quorum::select(&intervals, &settings.rules());
    let mut verdicts = selection.verdicts.iter();
    let sources = settings
        .sources
        .iter()
        .zip(answers.iter().zip(&carried))
        .map(|(s, (answer, interval))| {
            let outcome = match (answer, interval) {
                (Ok(e), Some(interval)) => Outcome::Measured {
                    interval: *interval,
                    verdict: verdicts.next().map_or(VerdictRecord::NoQuorum, |v| VerdictRecord::from(*v)),
                    offset_ns: e.measurement.offset_ns,
                    delay_ns: e.measurement.delay_ns,
                    answer: e.reply_hex.clone(),
                },
                (Err(reason), _) => Outcome::Unreachable { reason: reason.clone() },
                (Ok(_), None) => Outcome::Unreachable { reason: "no interval".into() },
            };
            SourceRecord { name: s.name.clone(), kind: s.kind.as_str().into(), address: s.address.clone(), outcome }
        })
        .collect();
    let rules = settings.rules();
    Finished {
        evidence: Evidence {
            round,
            configured: rules.configured,
            min_agreeing: rules.min_agreeing,
            max_distance_ns: rules.max_distance_ns,
            max_drift_ppm: settings.max_drift_ppm,
            holdover_ns: settings.holdover().as_nanos() as u64,
            sources,
            agreed: selection.agreed,
        },
        at_boot_ns: at,
    }
}
