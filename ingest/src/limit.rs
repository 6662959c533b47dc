//! A listener that holds at most `max` connections open at once.
//!
//! Each accepted connection keeps a permit until it closes; with every
//! permit taken, `accept` waits, so further clients wait in the kernel's
//! listen backlog (their connect completes, their request is read later)
//! instead of each costing the server a read buffer, a task and, under
//! overload, the reading of a body only to refuse it. A slot is freed
//! when its connection closes: the server closes connections that send no
//! request headers for 30 s (from the first byte they could send, so a
//! client that connects and stays silent cannot keep a slot) and bodies
//! that do not arrive within 30 s.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `listener`, accepting while fewer than `max` of its connections are open.
#[derive(Debug)]
pub struct Limited {
    listener: TcpListener,
    open: Arc<Semaphore>,
}

impl Limited {
    pub fn new(listener: TcpListener, max: usize) -> Limited {
        Limited { listener, open: Arc::new(Semaphore::new(max.max(1))) }
    }

    /// The next connection, once fewer than `max` are open.
    pub async fn accept(&mut self) -> Conn {
        // The semaphore is never closed, so acquiring only waits.
        let Ok(permit) = self.open.clone().acquire_owned().await else { unreachable!("the semaphore is never closed") };
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    return Conn { stream, _permit: permit };
                }
                // As axum's own TcpListener does: a failed accept (e.g. out
                // of file descriptors) is logged and retried after a pause.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted connection and its permit.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
