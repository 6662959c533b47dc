//! The ring fan-out: decodes and splits a body and copies it into one of
//! this slot's hasher rings, registering the request's waiter first.

use std::sync::atomic::Ordering;

use chronos_ipc::PushError;
use chronos_wire::{EventMeta, Ingest, Reply, tag};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::readiness::not_serving;
use super::{Answer, Shared};
use crate::body::{self, BodyError, Encoding, Format};

pub(super) const RINGS_FULL: &str = "overloaded: every hasher ring is full";

/// Whether some hasher ring may have room for `len` bytes (a ring being
/// written to right now counts as maybe).
pub(super) fn room_for(s: &Shared, len: usize) -> bool {
    s.producers.iter().any(|m| m.try_lock().map_or(true, |p| p.free_bytes() >= len as u64))
}

pub(super) enum Prepared {
    Queued { request: u64, rx: oneshot::Receiver<Answer> },
    Busy(String),
}

/// Decodes and splits a body and copies it into a hasher ring. `_budget`
/// is the body's share of `max_inflight_bytes`, given back on return, when
/// `raw` and the decoded copy are gone.
pub(super) fn prepare(
    s: &Shared,
    client: &[u8],
    raw: &[u8],
    encoding: Encoding,
    content_type: Option<&str>,
    _budget: OwnedSemaphorePermit,
) -> Result<Prepared, BodyError> {
    let limits = &s.settings.limits;
    let format = Format::from_content_type(content_type)?;
    let decoded = body::decode(encoding, raw, limits)?;
    let events = body::split(format, &decoded, limits)?;
    if let Some(reason) = not_serving(s) {
        return Ok(Prepared::Busy(format!("not ready: {reason}")));
    }
    let key = body::idempotency_key(client, &decoded);
    let metas: Vec<EventMeta<'_>> =
        events.iter().map(|e| EventMeta { bytes: e.bytes, claimed_time_ns: e.claimed_time_ns }).collect();
    let len = Ingest::encoded_len(&metas);
    let request = s.next_request.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    // Register before pushing: the answer can come back very fast.
    if let Ok(mut w) = s.waiters.lock() {
        w.insert(request, tx);
    }
    let reply = Reply { slot: s.settings.slot, request };
    let n = s.producers.len();
    let start = s.next_ring.fetch_add(1, Ordering::Relaxed);
    let mut pushed = false;
    // First pass: rings nobody is writing to. Second pass: wait for the
    // rings that were only busy (another request copying its body in, tens
    // of microseconds); a ring is "full" only if it has no room, never
    // because it was locked (that answered 503 under plain concurrency).
    for k in 0..2 * n {
        let m = &s.producers[(start + k) % n];
        let guard = if k < n { m.try_lock().ok() } else { m.lock().ok() };
        let Some(mut p) = guard else { continue };
        match p.try_reserve(tag::INGEST, len) {
            Ok(mut grant) => {
                Ingest::encode(grant.payload_mut(), reply, &key, &metas);
                grant.commit();
                pushed = true;
                break;
            }
            Err(PushError::Full) => continue,
            Err(e) => {
                tracing::error!(error = %e, "ingest ring refused a record");
                continue;
            }
        }
    }
    if !pushed {
        if let Ok(mut w) = s.waiters.lock() {
            w.remove(&request);
        }
        return Ok(Prepared::Busy(RINGS_FULL.into()));
    }
    s.metrics.bytes.inc_by(decoded.len() as u64);
    Ok(Prepared::Queued { request, rx })
}
