//! Blocking nng push/pull sockets over the C API, used only to measure nng
//! at its best (no async runtime between the caller and nng) beside the
//! rings. Production code uses the async, typed layer in `control`.

use std::ffi::{CString, c_void};

use nng_sys as sys;

/// An nng call failed.
#[derive(Debug, thiserror::Error)]
#[error("nng {call}: error {code}")]
pub struct NngError {
    call: &'static str,
    code: i32,
}

fn check(call: &'static str, code: i32) -> Result<(), NngError> {
    if code == 0 { Ok(()) } else { Err(NngError { call, code }) }
}

fn url(u: &str) -> Result<CString, NngError> {
    CString::new(u).map_err(|_| NngError { call: "url", code: -1 })
}

/// A blocking socket; closed on drop.
pub struct SyncSocket {
    s: sys::nng_socket,
}

impl std::fmt::Debug for SyncSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SyncSocket")
    }
}

impl SyncSocket {
    fn open(push: bool) -> Result<SyncSocket, NngError> {
        let mut s = sys::nng_socket { _bindgen_opaque_blob: 0 };
        // SAFETY: the open functions write a socket id into `s`.
        let rc = unsafe { if push { sys::nng_push0_open(&mut s) } else { sys::nng_pull0_open(&mut s) } };
        check("open", rc)?;
        Ok(SyncSocket { s })
    }

    /// A push socket listening on `u`, queueing up to nng's maximum of 8192 messages.
    pub fn push_listen(u: &str) -> Result<SyncSocket, NngError> {
        let sock = SyncSocket::open(true)?;
        let u = url(u)?;
        // SAFETY: the option name is a NUL-terminated constant; `u` is a live
        // C string; a null listener pointer is allowed.
        unsafe {
            check("sendbuf", sys::nng_socket_set_int(sock.s, sys::NNG_OPT_SENDBUF.as_ptr().cast(), 8192))?;
            check("listen", sys::nng_listen(sock.s, u.as_ptr(), std::ptr::null_mut(), 0))?;
        }
        Ok(sock)
    }

    /// A pull socket listening on `u`.
    pub fn pull_listen(u: &str) -> Result<SyncSocket, NngError> {
        let sock = SyncSocket::open(false)?;
        let u = url(u)?;
        // SAFETY: as in `push_listen`.
        unsafe { check("listen", sys::nng_listen(sock.s, u.as_ptr(), std::ptr::null_mut(), 0))? };
        Ok(sock)
    }

    /// A push socket dialing `u` (retrying in the background until it connects).
    pub fn push_dial(u: &str) -> Result<SyncSocket, NngError> {
        let sock = SyncSocket::open(true)?;
        let u = url(u)?;
        // SAFETY: live C string; null dialer; NNG_FLAG_NONBLOCK = dial in the background.
        unsafe {
            check("dial", sys::nng_dial(sock.s, u.as_ptr(), std::ptr::null_mut(), sys::NNG_FLAG_NONBLOCK as i32))?
        };
        Ok(sock)
    }

    /// A pull socket dialing `u`, with a receive queue of 8192 messages.
    pub fn pull_dial(u: &str) -> Result<SyncSocket, NngError> {
        let sock = SyncSocket::open(false)?;
        let u = url(u)?;
        // SAFETY: as above.
        unsafe {
            check("recvbuf", sys::nng_socket_set_int(sock.s, sys::NNG_OPT_RECVBUF.as_ptr().cast(), 8192))?;
            check("dial", sys::nng_dial(sock.s, u.as_ptr(), std::ptr::null_mut(), sys::NNG_FLAG_NONBLOCK as i32))?;
        }
        Ok(sock)
    }

    /// Sends one message (nng copies it), blocking while the queue is full.
    pub fn send(&self, data: &[u8]) -> Result<(), NngError> {
        // SAFETY: without NNG_FLAG_ALLOC nng copies `len` bytes from the
        // pointer, which is live for the call; it does not write through it.
        check("send", unsafe { sys::nng_send(self.s, data.as_ptr().cast_mut().cast::<c_void>(), data.len(), 0) })
    }

    /// Receives one message and passes it to `f`.
    pub fn recv<R>(&self, f: impl FnOnce(&[u8]) -> R) -> Result<R, NngError> {
        let mut ptr: *mut c_void = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: with NNG_FLAG_ALLOC nng stores a buffer it allocated, and its
        // length, into `ptr`/`len`; we own it until nng_free below.
        check("recv", unsafe {
            sys::nng_recv(self.s, (&mut ptr as *mut *mut c_void).cast(), &mut len, sys::NNG_FLAG_ALLOC as i32)
        })?;
        if ptr.is_null() {
            // nng allocates nothing for an empty message.
            return Ok(f(&[]));
        }
        // SAFETY: `ptr` is non-null and points at `len` initialized bytes owned by us.
        let out = f(unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) });
        // SAFETY: frees the buffer nng allocated, with its size, once.
        unsafe { sys::nng_free(ptr, len) };
        Ok(out)
    }
}

impl Drop for SyncSocket {
    fn drop(&mut self) {
        // SAFETY: closes our socket id once.
        unsafe { sys::nng_close(self.s) };
    }
}
