//! The time service: polls the sources every `poll`, stores each round's
//! evidence, and publishes the clock.
//!
//! Crash boundary: an agreement is published only after its evidence and
//! the raised floor are committed, so a batch can never name evidence that
//! is not stored. A restarted service publishes "unsynchronized" first:
//! what it restored (the floor) is not trust until a fresh round agrees.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chronos_ipc::clock::{ClockState, ClockWriter};
use chronos_quorum::Clock;
use chronos_quorum::evidence::{Outcome, VerdictRecord};

use crate::config::Settings;
use crate::metrics::{Metrics, SourceLabel, StateLabel};
use crate::reader::{STATUS_QUORUM, STATUS_UNSYNCHRONIZED};
use crate::round::Finished;
use crate::store::Store;

/// Why the service stopped.
#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    /// The clock page could not be created or opened (the environment).
    #[error("clock page: {0}")]
    Page(#[from] chronos_ipc::RingError),
    #[error("cannot start a runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// Runs until `stop` is raised.
pub fn run(settings: &Settings, database_url: &str, stop: &AtomicBool, metrics: &Metrics) -> Result<(), TimeError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut page = ClockWriter::open(&settings.page)?;
    let configured = settings.sources.len() as u64;
    page.publish(&ClockState { status: STATUS_UNSYNCHRONIZED, configured, ..ClockState::default() });
    metrics.configured.set(configured as i64);
    rt.block_on(async {
        let mut store: Option<Store> = None;
        let mut state: Option<(u64, Clock)> = None;
        let mut was = Remembered::default();
        while !stop.load(Ordering::Relaxed) {
            if store.as_ref().is_none_or(Store::is_closed) {
                store = match Store::connect(database_url).await {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(error = e, "time service: no database; publishing no agreement until it is back");
                        page.publish(&ClockState { status: STATUS_UNSYNCHRONIZED, configured, ..ClockState::default() });
                        pause(stop, Duration::from_secs(1)).await;
                        continue;
                    }
                };
            }
            let Some(db) = store.as_mut() else { continue };
            if state.is_none() {
                match db.load().await {
                    Ok((round, floor)) => {
                        tracing::info!(last_round = round, floor_ns = floor, "time service: floor restored");
                        let holdover = settings.holdover().as_nanos() as u64;
                        state = Some((round, Clock::new(settings.max_drift_ppm, holdover, floor)));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "time service: cannot read the floor");
                        store = None;
                        pause(stop, Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            let Some((round, clock)) = state.as_mut() else { continue };
            *round += 1;
            let started = tokio::time::Instant::now();
            let finished = crate::round::run(settings, *round).await;
            let published = settle(clock, &finished);
            let (text, digest) = finished.evidence.seal();
            if let Err(e) = db.record(*round, &digest, finished.evidence.agreed, &text, clock.floor()).await {
                tracing::warn!(error = %e, round = *round, "time service: cannot store the round's evidence; not publishing it");
                page.publish(&ClockState { status: STATUS_UNSYNCHRONIZED, configured, ..ClockState::default() });
                store = None;
                continue;
            }
            let agreeing = finished
                .evidence
                .sources
                .iter()
                .filter(|s| matches!(s.outcome, Outcome::Measured { verdict: VerdictRecord::Agreeing, .. }))
                .count() as u64;
            let mut out = ClockState {
                status: STATUS_UNSYNCHRONIZED,
                agreeing,
                configured,
                round: *round,
                evidence: digest,
                max_drift_ppm: settings.max_drift_ppm,
                holdover_ns: settings.holdover().as_nanos() as u64,
                anchor_ns: finished.at_boot_ns,
                ..ClockState::default()
            };
            if let Some(served) = published {
                out.status = STATUS_QUORUM;
                out.earliest_ns = served.earliest;
                out.latest_ns = served.latest;
            }
            page.publish(&out);
            observe(metrics, &finished, published);
            was.audit(db, &finished, published.is_some()).await;
            let next = started + settings.poll;
            while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < next {
                tokio::time::sleep(Duration::from_millis(50).min(next - tokio::time::Instant::now())).await;
            }
        }
    });
    page.publish(&ClockState { status: STATUS_UNSYNCHRONIZED, configured, ..ClockState::default() });
    Ok(())
}

async fn pause(stop: &AtomicBool, d: Duration) {
    let end = tokio::time::Instant::now() + d;
    while !stop.load(Ordering::Relaxed) && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Anchors the clock to the round's agreement; the interval to publish.
fn settle(clock: &mut Clock, f: &Finished) -> Option<chronos_quorum::Interval> {
    let Some(agreed) = f.evidence.agreed else {
        // Fail closed at once: without a majority this round, nothing is
        // served from the previous one.
        clock.forget();
        return None;
    };
    if let Err(e) = clock.anchor(f.at_boot_ns, agreed) {
        tracing::error!(error = %e, round = f.evidence.round, "time service: the agreement contradicts the clock; not serving it");
        clock.forget();
        return None;
    }
    clock.now(f.at_boot_ns).ok().map(|s| s.interval)
}

fn observe(m: &Metrics, f: &Finished, served: Option<chronos_quorum::Interval>) {
    m.rounds.inc();
    m.synchronized.set(i64::from(served.is_some()));
    m.uncertainty_ns.set(served.map_or(0, |s| s.radius() as i64));
    let mut agreeing = 0;
    for s in &f.evidence.sources {
        let label = SourceLabel { source: s.name.clone() };
        let state = match &s.outcome {
            Outcome::Measured { interval, verdict, offset_ns, .. } => {
                m.source_offset_ns.get_or_create(&label).set(*offset_ns);
                m.source_distance_ns.get_or_create(&label).set(interval.radius() as i64);
                if *verdict == VerdictRecord::Agreeing {
                    agreeing += 1;
                }
                verdict_name(*verdict)
            }
            Outcome::Unreachable { .. } => "unreachable",
        };
        for st in ["agreeing", "falseticker", "too_far", "no_quorum", "unreachable"] {
            m.source_state
                .get_or_create(&StateLabel { source: s.name.clone(), state: st.into() })
                .set(i64::from(st == state));
        }
    }
    m.agreeing.set(agreeing);
}

pub(crate) fn verdict_name(v: VerdictRecord) -> &'static str {
    match v {
        VerdictRecord::Agreeing => "agreeing",
        VerdictRecord::Falseticker => "falseticker",
        VerdictRecord::TooFar => "too_far",
        VerdictRecord::NoQuorum => "no_quorum",
    }
}

/// What the last round said, to audit changes only (a flapping source
/// leaves at most one event per poll).
#[derive(Default)]
struct Remembered {
    synchronized: Option<bool>,
    falsetickers: BTreeSet<String>,
    malfeasance: bool,
}

impl Remembered {
    async fn audit(&mut self, db: &Store, f: &Finished, synchronized: bool) {
        let mut events = Vec::new();
        if self.synchronized != Some(synchronized) {
            let kind = if synchronized { "time.quorum" } else { "time.no_quorum" };
            let agreed =
                f.evidence.agreed.map(|a| serde_json::json!({ "earliest_ns": a.earliest, "latest_ns": a.latest }));
            events.push((
                kind,
                serde_json::json!({ "round": f.evidence.round, "agreed": agreed, "configured": f.evidence.configured }),
            ));
            self.synchronized = Some(synchronized);
        }
        let mut now = BTreeSet::new();
        for s in &f.evidence.sources {
            if let Outcome::Measured { interval, verdict: VerdictRecord::Falseticker, offset_ns, .. } = &s.outcome {
                now.insert(s.name.clone());
                if !self.falsetickers.contains(&s.name) {
                    events.push((
                        "time.falseticker",
                        serde_json::json!({
                            "round": f.evidence.round,
                            "source": s.name,
                            "address": s.address,
                            "interval": { "earliest_ns": interval.earliest, "latest_ns": interval.latest },
                            "offset_ns": offset_ns,
                            "agreed": f.evidence.agreed.map(|a| serde_json::json!({ "earliest_ns": a.earliest, "latest_ns": a.latest })),
                        }),
                    ));
                }
            }
        }
        self.falsetickers = now;
        // A Roughtime server caught contradicting an earlier answer: the
        // report is in the round's evidence; audited when it first appears.
        let caught = f.evidence.malfeasance.is_some();
        if caught && !self.malfeasance {
            events.push((
                "time.malfeasance",
                serde_json::json!({ "round": f.evidence.round, "report": f.evidence.malfeasance }),
            ));
        }
        self.malfeasance = caught;
        for (kind, detail) in events {
            tracing::warn!(kind, %detail, "time");
            if let Err(e) = db.audit(kind, &detail).await {
                tracing::warn!(error = %e, kind, "time service: cannot leave an audit event");
            }
        }
    }
}
