//! One NTP exchange over UDP: a request with a random transmit timestamp
//! (the cookie), and the first reply that passes the core's checks.
//! Replies that do not carry our cookie (spoofed, late, duplicated) are
//! dropped and the wait goes on until the timeout.

use std::net::SocketAddr;
use std::time::Duration;

use chronos_ipc::clock::boottime_ns;
use chronos_quorum::ntp::{Measurement, Packet, measure};

/// A measured exchange.
#[derive(Clone, Debug)]
pub(crate) struct Exchange {
    pub measurement: Measurement,
    /// `CLOCK_BOOTTIME` when the reply arrived: the instant its interval
    /// is true at.
    pub at_boot_ns: u64,
    /// The reply as received, in hex (kept as evidence).
    pub reply_hex: String,
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// `address` (`host:port`) resolved, and a UDP socket of its family to ask it from.
pub(crate) async fn udp_to(address: &str) -> Result<(tokio::net::UdpSocket, SocketAddr), String> {
    let addr: SocketAddr = tokio::net::lookup_host(address)
        .await
        .map_err(|e| format!("cannot resolve {address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))?;
    let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let sock = tokio::net::UdpSocket::bind(local).await.map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    Ok((sock, addr))
}

/// Asks `address` (`host:port`) for the time.
pub(crate) async fn exchange(address: &str, timeout: Duration, drift_ppm: u64) -> Result<Exchange, String> {
    tokio::time::timeout(timeout, exchange_inner(address, drift_ppm))
        .await
        .map_err(|_| format!("no valid answer within {} ms", timeout.as_millis()))?
}

async fn exchange_inner(address: &str, drift_ppm: u64) -> Result<Exchange, String> {
    let (sock, addr) = crate::ntp_client::udp_to(address).await?;
    let mut cookie = [0u8; 8];
    getrandom::fill(&mut cookie).map_err(|e| format!("random cookie: {e}"))?;
    let cookie = u64::from_le_bytes(cookie);
    let request = Packet::request(cookie).encode();
    let t1 = unix_now_ns();
    sock.send_to(&request, addr).await.map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut buf = [0u8; 1024];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await.map_err(|e| format!("receiving from {addr}: {e}"))?;
        let (t4, at_boot_ns) = (unix_now_ns(), boottime_ns());
        if from != addr {
            continue;
        }
        // Garbage from the server's address may be spoofed: not a reason
        // to give up on the real answer.
        let Ok(reply) = Packet::decode(&buf[..n]) else { continue };
        match reply.check_reply(cookie) {
            Ok(()) => {}
            // Not an answer to this request: keep waiting for the real one.
            Err(chronos_quorum::ntp::Rejected::NotOurs) => continue,
            // An answer that says not to use it (kiss-o'-death, unsynchronized).
            Err(e) => return Err(format!("{e}")),
        }
        let measurement = measure(t1, t4, &reply, drift_ppm).map_err(|e| e.to_string())?;
        return Ok(Exchange { measurement, at_boot_ns, reply_hex: hex::encode(&buf[..n]) });
    }
}
