//! A listening socket handed down from a supervisor to the processes it
//! starts (as systemd's socket activation does): the supervisor binds the
//! address once, without `SO_REUSEPORT`, and every ingest process of that
//! instance accepts on the same socket. Another program, or another
//! Chronos log, cannot bind the address at all, so the kernel never splits
//! one address's clients between two ledgers.

use std::collections::HashSet;
use std::net::TcpListener;
use std::os::fd::{FromRawFd as _, RawFd};
use std::sync::Mutex;

/// File descriptors already taken by this process.
static TAKEN: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

fn sockopt(fd: RawFd, opt: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given;
    // getsockopt on a descriptor that is not an open socket only fails.
    let rc =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut value).cast::<libc::c_void>(), &raw mut len) };
    if rc == 0 { Ok(value) } else { Err(std::io::Error::last_os_error()) }
}

/// Takes ownership of the inherited listening TCP socket `fd`, after
/// checking that it is one (open, a stream socket of IPv4 or IPv6, in the
/// listening state), and marks it close-on-exec. Each descriptor is taken
/// at most once per process.
pub fn listener(fd: RawFd) -> std::io::Result<TcpListener> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    if fd < 3 {
        return Err(invalid(format!("descriptor {fd} is a standard stream, not an inherited socket")));
    }
    let domain = sockopt(fd, libc::SO_DOMAIN)?;
    if domain != libc::AF_INET && domain != libc::AF_INET6 {
        return Err(invalid(format!("descriptor {fd} is not an IP socket")));
    }
    if sockopt(fd, libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(invalid(format!("descriptor {fd} is not a stream socket")));
    }
    if sockopt(fd, libc::SO_ACCEPTCONN)? != 1 {
        return Err(invalid(format!("descriptor {fd} is not listening")));
    }
    {
        let mut taken = TAKEN.lock().map_err(|_| invalid("a thread panicked while taking a socket".into()))?;
        if !taken.get_or_insert_with(HashSet::new).insert(fd) {
            return Err(invalid(format!("descriptor {fd} was taken already")));
        }
    }
    // SAFETY: plain fcntl on a descriptor checked above to be an open socket.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is an open listening TCP socket (checked above) that
    // this process inherited and that nothing else in it owns: TAKEN makes
    // sure this is the only owner created from it.
    Ok(unsafe { TcpListener::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;

    #[test]
    fn only_an_open_listening_socket_is_taken_and_only_once() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fd = l.as_raw_fd();
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert!(super::listener(file.as_raw_fd()).is_err(), "a file");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(super::listener(udp.as_raw_fd()).is_err(), "a datagram socket");
        assert!(super::listener(1).is_err(), "stdout");
        let taken = super::listener(fd).unwrap();
        assert_eq!(taken.local_addr().unwrap(), l.local_addr().unwrap());
        assert!(super::listener(fd).is_err(), "twice");
        std::mem::forget(l); // `taken` owns the descriptor now
    }
}
