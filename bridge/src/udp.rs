//! Datagrams in and out by the batch: `recvmmsg` takes what has queued on
//! the socket (waiting only for the first), `sendmmsg` sends the answers,
//! one system call each way per batch instead of one per packet.

use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};

/// Receive buffers for up to `N` datagrams of `LEN` bytes.
pub(crate) struct Batch<const N: usize, const LEN: usize> {
    bufs: Box<[[u8; LEN]; N]>,
    headers: MultiHeaders<SockaddrStorage>,
    out: MultiHeaders<SockaddrStorage>,
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

impl<const N: usize, const LEN: usize> Batch<N, LEN> {
    pub(crate) fn new() -> Self {
        Batch {
            bufs: Box::new([[0u8; LEN]; N]),
            headers: MultiHeaders::preallocate(N, None),
            out: MultiHeaders::preallocate(N, None),
        }
    }

    /// Waits for a datagram (up to the socket's read timeout), then takes
    /// every other one already queued, `N` at most: for each, its buffer
    /// index, length and sender (a datagram longer than `LEN` is cut to
    /// `LEN`; one without a sender address is skipped).
    pub(crate) fn recv(&mut self, sock: &UdpSocket) -> std::io::Result<Vec<(usize, usize, SocketAddr)>> {
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self.bufs.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
        let got = recvmmsg(sock.as_raw_fd(), &mut self.headers, slices.iter_mut(), MsgFlags::MSG_WAITFORONE, None)
            .map_err(std::io::Error::from)?;
        Ok(got.enumerate().filter_map(|(i, m)| Some((i, m.bytes.min(LEN), to_std(&m.address?)?))).collect())
    }

    /// The `i`th datagram's bytes (after [`Batch::recv`]).
    pub(crate) fn packet(&self, i: usize, len: usize) -> &[u8] {
        &self.bufs[i][..len]
    }

    /// Sends `answers` (at most `N`) in one system call; what the kernel
    /// did not take (a full send buffer) is sent one by one.
    pub(crate) fn send(&mut self, sock: &UdpSocket, answers: &[(&[u8], SocketAddr)]) {
        for chunk in answers.chunks(N) {
            let slices: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
            let addrs: Vec<Option<SockaddrStorage>> =
                chunk.iter().map(|(_, a)| Some(SockaddrStorage::from(*a))).collect();
            let sent = match sendmmsg(sock.as_raw_fd(), &mut self.out, slices.iter(), &addrs, [], MsgFlags::empty()) {
                Ok(r) => r.count(),
                Err(e) => {
                    tracing::debug!(error = %e, "sendmmsg failed; sending one by one");
                    0
                }
            };
            for (b, a) in &chunk[sent..] {
                if let Err(e) = sock.send_to(b, a) {
                    tracing::debug!(client = %a, error = %e, "answer not sent");
                }
            }
        }
    }
}
