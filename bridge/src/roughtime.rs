//! The Roughtime server's I/O: one thread on a blocking UDP socket. What
//! has queued up on the socket when a request arrives (up to
//! [`MAX_BATCH`], read with one `recvmmsg`) is answered as one batch, one
//! signature per version spoken in it, by
//! `chronos_quorum::roughtime::server`, and sent with one `sendmmsg`.
//!
//! The long-term key is the operator's (`DATA_DIR/roughtime.key`); the
//! online key that signs answers is drawn at random in memory and
//! delegated for a window around the trusted time, and a new one is
//! delegated when the window no longer covers it. Without quorum nothing
//! is answered (Roughtime has no "unsynchronized" answer: a signed wrong
//! time would be evidence against this server), and the drop is counted.
//!
//! No per-client rate limit: a request is at least 1024 bytes and an
//! answer smaller, so the server cannot amplify; signing is the cost, and
//! batching bounds it to one signature per batch.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chronos_quorum::roughtime::server::{self, Identity, MAX_BATCH};
use chronos_quorum::roughtime::{Request, Version};

use crate::Shared;
use crate::metrics::ReasonLabel;
use crate::udp::Batch;

/// How far before and after the trusted time an online key is delegated.
const DELEGATE_BEFORE: Duration = Duration::from_secs(3_600);
const DELEGATE_AFTER: Duration = Duration::from_secs(48 * 3_600);

/// The online key and its delegation, renewed when they no longer cover
/// the time served.
struct Keys {
    long_term: [u8; 32],
    identity: Option<Identity>,
}

impl Keys {
    fn for_time(&mut self, earliest: u64, latest: u64) -> Result<&Identity, String> {
        if !self.identity.as_ref().is_some_and(|id| id.covers(earliest, latest)) {
            let mut online = [0u8; 32];
            getrandom::fill(&mut online).map_err(|e| format!("no randomness for an online key: {e}"))?;
            let min = earliest.saturating_sub(DELEGATE_BEFORE.as_nanos() as u64);
            let max = latest.saturating_add(DELEGATE_AFTER.as_nanos() as u64);
            tracing::info!(from_ns = min, to_ns = max, "Roughtime: new online key delegated");
            self.identity = Some(Identity::new(&self.long_term, &online, min, max));
        }
        self.identity.as_ref().ok_or_else(|| "no delegation".into())
    }
}

/// Counts a drop and logs it at most once a minute per reason.
struct Drops {
    last_logged: std::collections::HashMap<&'static str, Instant>,
}

impl Drops {
    fn count(&mut self, shared: &Shared, reason: &'static str, from: SocketAddr, why: &dyn std::fmt::Display) {
        shared.metrics.roughtime_dropped.get_or_create(&ReasonLabel { reason: reason.into() }).inc();
        let now = Instant::now();
        if self.last_logged.get(reason).is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60)) {
            self.last_logged.insert(reason, now);
            tracing::info!(client = %from, reason = %why, "Roughtime request dropped (logged once a minute per reason)");
        }
    }
}

/// Serves until `stop` is set.
pub(crate) fn serve(shared: Arc<Shared>, sock: UdpSocket, long_term: [u8; 32], stop: Arc<AtomicBool>) {
    if let Err(e) = sock.set_read_timeout(Some(Duration::from_millis(100))) {
        tracing::error!(error = %e, "Roughtime socket: cannot set a read timeout; not serving Roughtime");
        return;
    }
    let mut keys = Keys { long_term, identity: None };
    let mut drops = Drops { last_logged: Default::default() };
    // Big enough for any request worth reading (a longer one is cut and
    // then fails its parse, counted as malformed).
    let mut batch = Batch::<MAX_BATCH, 1280>::new();
    while !stop.load(Ordering::Relaxed) {
        // Waits for the first request, then takes what else has queued.
        let got = match batch.recv(&sock) {
            Ok(g) => g,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "Roughtime socket receive failed");
                continue;
            }
        };
        let stamp = shared.time.quorum_now();
        let (earliest, latest) = match &stamp {
            Ok(s) => (s.interval.earliest, s.interval.latest),
            Err(why) => {
                for (_, _, from) in &got {
                    drops.count(&shared, "no_quorum", *from, why);
                }
                continue;
            }
        };
        let id = match keys.for_time(earliest, latest) {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(error = %e, "Roughtime: cannot delegate an online key; not answering");
                continue;
            }
        };
        let mut groups: Vec<(Version, Vec<(Request, SocketAddr)>)> = Vec::new();
        for &(i, n, ref from) in &got {
            match server::check_request(batch.packet(i, n), id) {
                Ok(req) => {
                    let v = server::version_for(&req);
                    match groups.iter_mut().find(|(g, _)| *g == v) {
                        Some((_, list)) => list.push((req, *from)),
                        None => groups.push((v, vec![(req, *from)])),
                    }
                }
                Err(why) => drops.count(&shared, why.label(), *from, &why),
            }
        }
        let mut out = Vec::with_capacity(got.len());
        for (version, list) in &groups {
            let reqs: Vec<&Request> = list.iter().map(|(r, _)| r).collect();
            let answers = server::answer_batch(id, *version, &reqs, earliest, latest);
            shared.metrics.roughtime_batches.inc();
            shared.metrics.roughtime_answers.inc_by(answers.len() as u64);
            out.extend(list.iter().zip(answers).map(|((_, to), a)| (a, *to)));
        }
        let refs: Vec<(&[u8], SocketAddr)> = out.iter().map(|(a, to)| (&a[..], *to)).collect();
        batch.send(&sock, &refs);
    }
}
