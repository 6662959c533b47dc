//! The control plane's turn in the sequencing loop: what changed in the
//! facts (time quorum, the vault's circuit), the signed events waiting on
//! the control socket, a pending recovery's rejoin, and the release of a
//! quarantined body. Each produces batches the orchestrator writes itself,
//! sequenced at once through the same spine as every other batch.

use std::sync::{Mutex, mpsc};
use std::time::{Duration, Instant};

use chronos_control::record::Record;
use chronos_ledger::Hash;
use chronos_vault::store::QuarantineRow;
use chronos_wire::{EventMeta, Hashed, HashedRef, tag};

use crate::checkpoint::History;
use crate::stages::{Candidate, Verdict};
use crate::{Metrics, OrchestratorError, Output, Settings, Spine, hand_on, plane, restore, socket};

/// How often a pending recovery's rejoin is checked again after a failed
/// check (each failure is logged, and the start's checks it runs leave
/// their audit events).
const REJOIN_RETRY: Duration = Duration::from_secs(30);

/// The control plane as the sequencing loop drives it.
pub(crate) struct Control<'a> {
    pub(crate) plane: plane::Plane,
    pub(crate) requests: mpsc::Receiver<socket::Request>,
    pub(crate) settings: &'a Settings,
    pub(crate) rt: &'a tokio::runtime::Runtime,
    /// When the facts were last observed.
    pub(crate) observed: Option<Instant>,
    /// When a recovery's rejoin was last checked.
    pub(crate) recovery_tried: Option<Instant>,
    pub(crate) nonce: u64,
    /// For reading quarantined bodies (opened when first needed).
    pub(crate) db: Option<tokio_postgres::Client>,
}

impl Control<'_> {
    /// Time quorum (always, without configured sources) and the vault
    /// writer's circuit.
    fn facts(&self) -> (bool, bool) {
        let clock = &self.settings.clock;
        let quorum = !clock.has_sources() || clock.quorum_now().is_ok();
        (quorum, !self.settings.control.breaker_file.exists())
    }

    /// Quarantined body `id` (at most 5 s: the sequencing thread waits).
    fn quarantined(
        rt: &tokio::runtime::Runtime,
        db: &mut Option<tokio_postgres::Client>,
        url: &str,
        id: u64,
    ) -> Result<Option<QuarantineRow>, String> {
        // The timer is made inside the runtime (it needs its clock).
        let read = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), async {
                if db.as_ref().is_none_or(|c| c.is_closed()) {
                    let (client, conn) = chronos_tls::pg::connect(url).await?;
                    tokio::spawn(conn);
                    *db = Some(client);
                }
                let client =
                    db.as_ref().ok_or_else(|| chronos_vault::store::VaultError::Range("not connected".into()))?;
                chronos_vault::store::quarantined(client, Some(id)).await
            })
            .await
        });
        match read {
            Ok(Ok(rows)) => Ok(rows.into_iter().next()),
            Ok(Err(e)) => {
                *db = None;
                Err(format!("the quarantine table cannot be read: {e}"))
            }
            Err(_) => {
                *db = None;
                Err("the quarantine table did not answer within 5 s".into())
            }
        }
    }
}

/// `Ok(false)`: asked to stop.
pub(crate) fn control_tick(
    ctl: &mut Control<'_>,
    spine: &mut Spine,
    out: &mut Output<'_>,
    history: &Mutex<History>,
    metrics: &Metrics,
) -> Result<bool, OrchestratorError> {
    if ctl.observed.is_none_or(|t| t.elapsed() >= Duration::from_millis(100)) {
        ctl.observed = Some(Instant::now());
        let (quorum, vault_ok) = ctl.facts();
        let records = ctl.plane.observe(quorum, vault_ok);
        if !records.is_empty() && sequence_control(ctl, &records, spine, out, history, metrics)?.is_none() {
            return Ok(false);
        }
    }
    while let Ok(req) = ctl.requests.try_recv() {
        let (rt, url) = (ctl.rt, ctl.settings.database_url.as_str());
        let db = &mut ctl.db;
        // A body that was in a HASHED record fits in one again.
        let max_decoded = usize::try_from(ctl.settings.topology.hashed_ring().max_record).unwrap_or(usize::MAX);
        let submitted = ctl
            .plane
            .submit(&req.note, crate::stages::now_ns(), max_decoded, |id| Control::quarantined(rt, db, url, id));
        let answer = match submitted {
            Err(r) => socket::Answer::Refused(r),
            Ok(s) => {
                let sequenced = match &s.release {
                    Some(row) => release(ctl, &s.records, row, spine, out, history, metrics)?,
                    None => sequence_control(ctl, &s.records, spine, out, history, metrics)?,
                };
                let Some(seq) = sequenced else { return Ok(false) };
                socket::Answer::Sequenced { seq, mode: ctl.plane.mode().name() }
            }
        };
        // The requester may have given up; the records stand either way.
        let _ = req.answer.send(answer);
    }
    if ctl.plane.recovering()
        && ctl.recovery_tried.is_none_or(|t| t.elapsed() >= REJOIN_RETRY)
        && out.ring.wait_drained(Instant::now())
    {
        ctl.recovery_tried = Some(Instant::now());
        match check_rejoin(ctl, out.last) {
            Ok(()) => {
                // A later recovery is checked at once again.
                ctl.recovery_tried = None;
                let records = ctl.plane.rejoin();
                if sequence_control(ctl, &records, spine, out, history, metrics)?.is_none() {
                    return Ok(false);
                }
            }
            Err(why) => tracing::error!(why, "recovery: the stored state does not verify yet; writes stay refused"),
        }
    }
    Ok(true)
}

/// A recovery's rejoin: the database, read afresh, must be what this
/// sequencer handed on (the same last seq and chain value), and pass the
/// start's checks (the latest signed checkpoint, the one kept outside the
/// database, the writer lease).
fn check_rejoin(ctl: &Control<'_>, last: (u64, Hash)) -> Result<(), String> {
    let restored = ctl
        .rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), restore::restore(ctl.settings)).await })
        .map_err(|_| "the database did not answer the checks within 60 s".to_owned())?
        .map_err(|e| e.to_string())?;
    if (restored.head.seq, restored.head.hash) != last {
        return Err(format!(
            "the database's head is batch {} but this sequencer handed on batch {}",
            restored.head.seq, last.0
        ));
    }
    Ok(())
}

/// Sequences `records` as one batch; `Ok(None)`: asked to stop.
fn sequence_control(
    ctl: &mut Control<'_>,
    records: &[Record],
    spine: &mut Spine,
    out: &mut Output<'_>,
    history: &Mutex<History>,
    metrics: &Metrics,
) -> Result<Option<u64>, OrchestratorError> {
    ctl.nonce += 1;
    let nonce = crate::stages::now_ns() ^ ctl.nonce;
    let bytes = plane::control_batch(&ctl.settings.hasher, records, nonce).map_err(OrchestratorError::Refused)?;
    sequence_own(&bytes, spine, out, history, metrics)
}

/// Sequences a release: one batch holding its control records (the
/// release event, after the genesis if it is the log's first) and then the
/// released body's events, so that the event and the body are committed
/// together or not at all; under the body's own idempotency key (a
/// client's retry of it is then answered with this batch). A body already
/// in the log (a retry of it passed once the log's time caught up with its
/// claimed time) is not written again: the records alone are sequenced.
/// `Ok(None)`: asked to stop.
fn release(
    ctl: &mut Control<'_>,
    records: &[Record],
    body: &plane::Release,
    spine: &mut Spine,
    out: &mut Output<'_>,
    history: &Mutex<History>,
    metrics: &Metrics,
) -> Result<Option<u64>, OrchestratorError> {
    let control: Vec<Vec<u8>> = records.iter().map(Record::encode).collect();
    let metas: Vec<EventMeta<'_>> = control
        .iter()
        .map(|b| EventMeta { bytes: b, claimed_time_ns: None })
        .chain(body.events.iter().map(|e| EventMeta { bytes: &e.bytes, claimed_time_ns: e.claimed_time_ns }))
        .collect();
    ctl.nonce += 1;
    let bytes =
        plane::own_batch(&ctl.settings.hasher, &metas, &body.digest, ctl.nonce).map_err(OrchestratorError::Refused)?;
    let mut c = Candidate::new(decode_own(&bytes)?);
    // Validate runs first and changes nothing when it answers a duplicate.
    match spine.apply(&mut c)? {
        Verdict::Continue => {
            tracing::warn!(id = body.id, events = body.events.len(), "releasing a quarantined body into the log");
            Ok(hand_on(spine, &mut c, out, history, metrics)?.then_some(c.seq))
        }
        Verdict::Duplicate(d) => {
            tracing::warn!(id = body.id, seq = d.seq, "the released body is in the log already; recording the release");
            sequence_control(ctl, records, spine, out, history, metrics)
        }
        other => Err(OrchestratorError::Refused(format!("a stage refused a release: {other:?}"))),
    }
}

/// Runs a batch of the orchestrator's own through the spine and hands it on.
fn sequence_own(
    bytes: &[u8],
    spine: &mut Spine,
    out: &mut Output<'_>,
    history: &Mutex<History>,
    metrics: &Metrics,
) -> Result<Option<u64>, OrchestratorError> {
    let mut c = Candidate::new(decode_own(bytes)?);
    match spine.apply(&mut c)? {
        Verdict::Continue => {}
        other => {
            return Err(OrchestratorError::Refused(format!("a stage refused an orchestrator's own batch: {other:?}")));
        }
    }
    Ok(hand_on(spine, &mut c, out, history, metrics)?.then_some(c.seq))
}

/// A `HASHED` record the orchestrator encoded itself, read back.
fn decode_own(bytes: &[u8]) -> Result<HashedRef<'_>, OrchestratorError> {
    Hashed::decode(tag::HASHED, bytes).map_err(|e| OrchestratorError::Refused(format!("an orchestrator's batch: {e}")))
}
