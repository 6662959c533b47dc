//! The NTP client core against a real server nobody here wrote: chronyd
//! (Debian's `chrony`) serving its local clock on a loopback port. Its
//! reply passes the checks, and the interval from the exchange contains
//! this host's clock (the server's own time source).

use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chronos_quorum::ntp::{Packet, measure};

/// A chronyd serving NTP on 127.0.0.1:`port`, killed when dropped.
struct Chronyd(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Chronyd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chronyd(port: u16) -> Chronyd {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("chrony.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\npidfile {}\n",
            dir.path().join("chronyd.pid").display()
        ),
    )
    .unwrap();
    // -d: foreground; -x: never touch the system clock; -u root: keep the
    // test's user rather than dropping to _chrony (which cannot read the
    // temporary directory).
    let child = Command::new("/usr/sbin/chronyd")
        .args(["-d", "-x", "-u", "root", "-f"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chronyd (Debian package chrony; .ci/run installs it)");
    Chronyd(child, dir)
}

fn unix_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[test]
fn a_chronyd_reply_passes_the_checks_and_its_interval_holds_the_local_clock() {
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = chronyd(port);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut cookie = 0x0123_4567_89ab_cdefu64;
    // Until chronyd listens, requests go unanswered: send again.
    let (reply, t1, t4) = loop {
        assert!(server.0.try_wait().unwrap().is_none(), "chronyd exited");
        assert!(Instant::now() < deadline, "chronyd never answered on port {port}");
        cookie = cookie.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let t1 = unix_ns();
        sock.send_to(&Packet::request(cookie).encode(), ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 1024];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let t4 = unix_ns();
            break (Packet::decode(&buf[..n]).unwrap(), t1, t4);
        }
    };
    reply.check_reply(cookie).unwrap_or_else(|e| panic!("chronyd's reply refused: {e}: {reply:?}"));
    assert_eq!(reply.stratum, 8, "local stratum 8");
    // A reply to another request is not taken for ours.
    assert!(reply.check_reply(cookie ^ 1).is_err());
    let m = measure(t1, t4, &reply, 15).unwrap();
    // chronyd serves this host's clock: the offset is tiny and the interval
    // holds the local time at the receive instant.
    assert!(m.offset_ns.unsigned_abs() < 50_000_000, "{m:?}");
    assert!(m.interval.contains(t4), "{m:?} does not hold the local clock {t4}");
}
