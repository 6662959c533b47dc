//! The ack thread: consumes this slot's ack ring, delivers the vault
//! writer's answers to the waiting requests, keeps its heartbeat, and
//! refreshes (and announces) readiness.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chronos_ipc::{Consumer, RingError, ring};
use chronos_wire::{Ack, Refused, Status, tag};

use super::readiness::{announced_alive, not_ready};
use super::{Answer, Shared};

fn deliver(s: &Shared, request: u64, answer: Answer) {
    let waiter = s.waiters.lock().ok().and_then(|mut w| w.remove(&request));
    if let Some(tx) = waiter {
        let _ = tx.send(answer);
    }
}

/// Why the log's published mode refuses writes, if it does.
fn mode_refusal(file: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(file).ok()?;
    let mut lines = text.lines();
    let (_mode, writes, why) = (lines.next()?, lines.next()?, lines.next().unwrap_or_default());
    (writes == "refuses").then(|| why.to_owned())
}

/// The ack thread: delivers answers and heartbeats from the vault writer.
pub(super) fn ack_loop(s: &Shared, mut acks: Consumer, stop: &AtomicBool) -> Result<(), RingError> {
    let mut last_check = Instant::now() - Duration::from_secs(1);
    let mut announced = s.settings.ready_file.is_none();
    while !stop.load(Ordering::Relaxed) {
        if !announced && not_ready(s).is_none() {
            announced = true;
            if let Some(f) = &s.settings.ready_file {
                let tmp = f.with_extension("tmp");
                let written =
                    std::fs::write(&tmp, format!("{}\n", std::process::id())).and_then(|()| std::fs::rename(&tmp, f));
                if let Err(e) = written {
                    tracing::warn!(file = %f.display(), error = %e, "cannot announce readiness");
                }
            }
        }
        if last_check.elapsed() >= Duration::from_millis(200) {
            let alive = (0..s.settings.topology.hashers)
                .any(|h| ring::inspect(&s.settings.names.ingest(s.settings.slot, h)).is_ok_and(|st| st.consumer_alive));
            s.hashers_alive.store(alive, Ordering::Relaxed);
            s.orchestrator_ready.store(announced_alive(&s.settings.orchestrator_ready), Ordering::Relaxed);
            let refusal = s
                .settings
                .refusal_files
                .iter()
                .find_map(|f| std::fs::read_to_string(f).ok())
                .or_else(|| s.settings.mode_file.as_deref().and_then(mode_refusal));
            if let Ok(mut g) = s.refusal.lock() {
                *g = refusal.map(|r| r.trim().to_owned());
            }
            last_check = Instant::now();
        }
        if !acks.wait(Some(Instant::now() + Duration::from_millis(100)))? {
            continue;
        }
        let batch = acks.poll(1024)?;
        for rec in batch.iter() {
            match rec.tag {
                tag::ACK => match Ack::decode(rec.tag, rec.payload) {
                    Ok(ack) => deliver(s, ack.request, Answer::Ack(ack)),
                    Err(e) => tracing::error!(error = %e, "undecodable ack"),
                },
                tag::REFUSED => match Refused::decode(rec.tag, rec.payload) {
                    Ok(r) => deliver(s, r.reply.request, Answer::Refused(r)),
                    Err(e) => tracing::error!(error = %e, "undecodable refusal"),
                },
                tag::STATUS => match Status::decode(rec.tag, rec.payload) {
                    Ok(st) => {
                        if let Ok(mut g) = s.status.lock() {
                            *g = Some((Instant::now(), st));
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "undecodable status"),
                },
                other => tracing::error!(tag = other, "unexpected record on the ack ring"),
            }
        }
        acks.release();
    }
    Ok(())
}
