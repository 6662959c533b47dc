//! The NTP server's I/O: one thread on a blocking UDP socket (no task
//! wake-ups), datagrams in and out by the batch (`recvmmsg`, `sendmmsg`),
//! each answer built by `chronos_quorum::ntp_server` from the published
//! clock.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chronos_quorum::ntp_server::{self, Serving};

use crate::Shared;
use crate::metrics::ReasonLabel;
use crate::rate::Limiter;
use crate::udp::Batch;

fn system_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The served interval now, with the state's reference time and id;
/// `None` without quorum.
fn trusted(shared: &Shared) -> Option<(chronos_quorum::Interval, u64, [u8; 4])> {
    let stamp = shared.time.quorum_now().ok()?;
    let state = shared.time.published().ok()?;
    let reference = state.earliest_ns / 2 + state.latest_ns / 2;
    let id = [state.evidence[0], state.evidence[1], state.evidence[2], state.evidence[3]];
    Some((stamp.interval, reference, id))
}

/// Serves until `stop` is set: what has queued on the socket (32
/// datagrams at most) is read and answered with one system call each way.
/// Malformed packets are dropped and counted by reason (a log line at
/// most once a minute per reason, so that a flood cannot fill the log).
pub(crate) fn serve(shared: Arc<Shared>, sock: UdpSocket, stop: Arc<AtomicBool>) {
    // A timeout so that `stop` is seen within 100 ms on an idle socket.
    if let Err(e) = sock.set_read_timeout(Some(Duration::from_millis(100))) {
        tracing::error!(error = %e, "NTP socket: cannot set a read timeout; not serving NTP");
        return;
    }
    let mut limiter = Limiter::new(shared.settings.ntp_rate);
    let started = std::time::Instant::now();
    let mut last_logged: std::collections::HashMap<&'static str, std::time::Instant> = Default::default();
    let mut batch = Batch::<32, 1024>::new();
    let mut answers: Vec<([u8; 48], SocketAddr)> = Vec::with_capacity(32);
    while !stop.load(Ordering::Relaxed) {
        let got = match batch.recv(&sock) {
            Ok(g) => g,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "NTP socket receive failed");
                continue;
            }
        };
        // Every datagram of the batch had arrived by now.
        let host_rx = system_ns();
        let rx = trusted(&shared);
        answers.clear();
        for &(i, n, from) in &got {
            let req = match ntp_server::check_request(batch.packet(i, n)) {
                Ok(r) => r,
                Err(why) => {
                    shared.metrics.ntp_dropped.get_or_create(&ReasonLabel { reason: why.label().into() }).inc();
                    let now = std::time::Instant::now();
                    let due =
                        last_logged.get(why.label()).is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
                    if due {
                        last_logged.insert(why.label(), now);
                        tracing::info!(client = %from, reason = %why, "NTP packet dropped (logged once a minute per reason)");
                    }
                    continue;
                }
            };
            let answer = if limiter.allow(from.ip(), started.elapsed().as_nanos() as u64) {
                let tx = trusted(&shared);
                let serving = Serving {
                    received: rx.map(|t| t.0),
                    transmit: tx.map(|t| t.0),
                    host_received_ns: host_rx,
                    host_transmit_ns: system_ns(),
                    reference_ns: tx.map_or(0, |t| t.1),
                    reference_id: tx.map_or([0; 4], |t| t.2),
                };
                shared.metrics.ntp_answers.inc();
                if serving.received.is_none() || serving.transmit.is_none() {
                    shared.metrics.ntp_unsynchronized.inc();
                }
                ntp_server::answer(&req, &serving)
            } else {
                shared.metrics.ntp_rate_limited.inc();
                ntp_server::kiss_rate(&req)
            };
            answers.push((answer, from));
        }
        let out: Vec<(&[u8], SocketAddr)> = answers.iter().map(|(a, to)| (&a[..], *to)).collect();
        batch.send(&sock, &out);
    }
}
