//! Honest NTP servers on loopback ports, answering with this host's clock:
//! the time sources of `chronos bench --time quorum`, so that quorum time
//! is measured with real UDP exchanges and the whole time service running,
//! without depending on the network.

use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chronos_quorum::ntp::{Packet, ns_to_short, unix_ns_to_ntp};

/// One server; it stops when dropped.
#[derive(Debug)]
pub struct LoopbackNtp {
    pub addr: String,
    stop: Arc<AtomicBool>,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl LoopbackNtp {
    pub fn start() -> std::io::Result<LoopbackNtp> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(100)))?;
        let addr = sock.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::Builder::new().name("loopback-ntp".into()).spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                let Ok(req) = Packet::decode(&buf[..n]) else { continue };
                if req.mode != 3 {
                    continue;
                }
                let received = now_ns();
                let reply = Packet {
                    leap: 0,
                    version: 4,
                    mode: 4,
                    stratum: 2,
                    poll: req.poll,
                    precision: -20,
                    root_delay: ns_to_short(100_000),
                    root_dispersion: ns_to_short(100_000),
                    reference_id: *b"LOOP",
                    reference: unix_ns_to_ntp(received.saturating_sub(1_000_000_000)),
                    origin: req.transmit,
                    receive: unix_ns_to_ntp(received),
                    transmit: unix_ns_to_ntp(now_ns()),
                };
                let _ = sock.send_to(&reply.encode(), from);
            }
        })?;
        Ok(LoopbackNtp { addr, stop })
    }
}

impl Drop for LoopbackNtp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
