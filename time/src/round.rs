//! One round: the NTP sources asked at once, the Roughtime sources one
//! after the other with each nonce chained to the previous answer (so that
//! a server whose answer contradicts an earlier one is caught with a
//! malfeasance report), every interval carried to one instant, the
//! selection, and the round's evidence.

use chronos_quorum::Interval;
use chronos_quorum::evidence::{Evidence, Outcome, SourceRecord, VerdictRecord};
use chronos_quorum::roughtime::{Round as Chain, check_chain};

use crate::config::{Settings, SourceKind};

/// A finished round.
#[derive(Debug)]
pub struct Finished {
    pub evidence: Evidence,
    /// `CLOCK_BOOTTIME` instant the intervals (and the agreement) are true at.
    pub at_boot_ns: u64,
}

/// One source's usable answer, before carrying.
struct Answer {
    interval: Interval,
    at_boot_ns: u64,
    offset_ns: i64,
    delay_ns: u64,
    /// Kept as evidence: an NTP reply in hex, a Roughtime exchange as its
    /// chain link (JSON: request, answer, blind, key).
    answer: String,
}

async fn ask_ntp(address: &str, settings: &Settings) -> Result<Answer, String> {
    let e = crate::ntp_client::exchange(address, settings.timeout, settings.max_drift_ppm).await?;
    Ok(Answer {
        interval: e.measurement.interval,
        at_boot_ns: e.at_boot_ns,
        offset_ns: e.measurement.offset_ns,
        delay_ns: e.measurement.delay_ns,
        answer: e.reply_hex,
    })
}

/// The Roughtime sources, in configuration order, each request chained to
/// the answer before it. Returns each one's answer (by index into the
/// sources) and the malfeasance report if two answers contradict their order.
async fn ask_roughtime(settings: &Settings) -> (Vec<(usize, Result<Answer, String>)>, Option<String>) {
    let mut out = Vec::new();
    let mut links = Vec::new();
    let mut previous: Option<Vec<u8>> = None;
    for (i, s) in settings.sources.iter().enumerate() {
        let Some((key, versions)) = s.kind.roughtime() else { continue };
        let r =
            crate::roughtime_client::exchange(&s.address, key, versions, previous.as_deref(), settings.timeout).await;
        let answer = r.map(|e| {
            previous = Some(e.link.response.clone());
            links.push(e.link.clone());
            let round_trip = e.arrived_unix_ns.saturating_sub(e.sent_unix_ns);
            let local_mid = e.sent_unix_ns / 2 + e.arrived_unix_ns / 2;
            Answer {
                interval: e.verified.at_arrival(round_trip),
                at_boot_ns: e.at_boot_ns,
                offset_ns: (i128::from(e.verified.midpoint_ns) - i128::from(local_mid))
                    .clamp(i64::MIN.into(), i64::MAX.into()) as i64,
                delay_ns: round_trip,
                answer: serde_json::to_string(&e.link).unwrap_or_default(),
            }
        });
        out.push((i, answer));
    }
    let report = match check_chain(&links) {
        Ok(Chain::Malfeasance { report, .. }) => Some(report.to_json()),
        _ => None,
    };
    (out, report)
}

/// Asks every source, then selects. (The time service runs this every
/// poll; tests run it against servers of their own.)
pub async fn run(settings: &Settings, round: u64) -> Finished {
    let ntp = futures_util::future::join_all(
        settings
            .sources
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s.kind, SourceKind::Ntp))
            .map(|(i, s)| async move { (i, ask_ntp(&s.address, settings).await) }),
    );
    let (ntp, (rough, malfeasance)) = tokio::join!(ntp, ask_roughtime(settings));
    let mut answers: Vec<Option<Result<Answer, String>>> = settings.sources.iter().map(|_| None).collect();
    for (i, a) in ntp.into_iter().chain(rough) {
        answers[i] = Some(a);
    }
    let answers: Vec<Result<Answer, String>> =
        answers.into_iter().map(|a| a.unwrap_or_else(|| Err("not asked".into()))).collect();
    // The latest arrival: every interval is carried forward to it.
    let at = answers
        .iter()
        .filter_map(|a| a.as_ref().ok().map(|e| e.at_boot_ns))
        .max()
        .unwrap_or_else(chronos_ipc::clock::boottime_ns);
    let carried: Vec<Option<Interval>> = answers
        .iter()
        .map(|a| a.as_ref().ok().map(|e| e.interval.carried(at.saturating_sub(e.at_boot_ns), settings.max_drift_ppm)))
        .collect();
    let measured: Vec<(bool, Interval)> = settings
        .sources
        .iter()
        .zip(&carried)
        .filter_map(|(s, c)| c.map(|c| (matches!(s.kind, SourceKind::Peer { .. }), c)))
        .collect();
    let (agreed, verdicts) = chronos_quorum::evidence::decide(&measured, &settings.rules(), &settings.peer_rules());
    let mut verdicts = verdicts.into_iter();
    let sources = settings
        .sources
        .iter()
        .zip(answers.into_iter().zip(&carried))
        .map(|(s, (answer, interval))| {
            let outcome = match (answer, interval) {
                (Ok(e), Some(interval)) => Outcome::Measured {
                    interval: *interval,
                    verdict: verdicts.next().map_or(VerdictRecord::NoQuorum, VerdictRecord::from),
                    offset_ns: e.offset_ns,
                    delay_ns: e.delay_ns,
                    answer: e.answer,
                },
                (Err(reason), _) => Outcome::Unreachable { reason },
                (Ok(_), None) => Outcome::Unreachable { reason: "no interval".into() },
            };
            SourceRecord { name: s.name.clone(), kind: s.kind.as_str().into(), address: s.address.clone(), outcome }
        })
        .collect();
    let rules = settings.rules();
    Finished {
        evidence: Evidence {
            round,
            configured: settings.sources.len(),
            min_agreeing: rules.min_agreeing,
            max_distance_ns: rules.max_distance_ns,
            max_drift_ppm: settings.max_drift_ppm,
            holdover_ns: settings.holdover().as_nanos() as u64,
            sources,
            agreed,
            malfeasance,
        },
        at_boot_ns: at,
    }
}
