//! One Roughtime exchange over UDP: the request (its nonce chained to the
//! previous answer of the round, if any), and the first answer that
//! verifies against the pinned long-term key. Answers that do not verify
//! (spoofed, for another request) are dropped and the wait goes on until
//! the timeout.

use std::time::Duration;

use chronos_ipc::clock::boottime_ns;
use chronos_quorum::roughtime::{Link, PublicKey, Request, Verified, Version, chain_nonce, verify};

/// A verified exchange.
#[derive(Clone, Debug)]
pub(crate) struct Exchange {
    pub verified: Verified,
    /// `CLOCK_BOOTTIME` at the answer's arrival.
    pub at_boot_ns: u64,
    /// Unix time (local clock) at sending and at arrival.
    pub sent_unix_ns: u64,
    pub arrived_unix_ns: u64,
    /// The exchange as a chain link (request, answer, blind, key).
    pub link: Link,
}

fn unix_now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// Asks `address` for the time; `previous` is the round's last answer, to
/// chain this request's nonce to.
pub(crate) async fn exchange(
    address: &str,
    key: &PublicKey,
    versions: &[Version],
    previous: Option<&[u8]>,
    timeout: Duration,
) -> Result<Exchange, String> {
    tokio::time::timeout(timeout, exchange_inner(address, key, versions, previous))
        .await
        .map_err(|_| format!("no valid answer within {} ms", timeout.as_millis()))?
}

async fn exchange_inner(
    address: &str,
    key: &PublicKey,
    versions: &[Version],
    previous: Option<&[u8]>,
) -> Result<Exchange, String> {
    let first = *versions.iter().min_by_key(|v| v.number()).ok_or("no protocol version to offer")?;
    let mut rand = vec![0u8; first.nonce_len()];
    getrandom::fill(&mut rand).map_err(|e| format!("random nonce: {e}"))?;
    let (nonce, blind) = match previous {
        Some(prev) => (chain_nonce(first, prev, &rand), Some(rand)),
        None => (rand, None),
    };
    let request = Request::new(versions, &nonce, Some(key)).map_err(|e| e.to_string())?;
    let (sock, addr) = crate::ntp_client::udp_to(address).await?;
    let sent_unix_ns = unix_now_ns();
    sock.send_to(request.bytes(), addr).await.map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await.map_err(|e| format!("receiving from {addr}: {e}"))?;
        let (arrived_unix_ns, at_boot_ns) = (unix_now_ns(), boottime_ns());
        if from != addr {
            continue;
        }
        // Anything that does not verify may be spoofed: keep waiting.
        let Ok(verified) = verify(&request, &buf[..n], key) else { continue };
        let link =
            Link { rand: blind, public_key: *key, request: request.bytes().to_vec(), response: buf[..n].to_vec() };
        return Ok(Exchange { verified, at_boot_ns, sent_unix_ns, arrived_unix_ns, link });
    }
}
