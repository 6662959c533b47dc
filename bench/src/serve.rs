//! Load generators for servers that answer small requests: UDP
//! request/answer protocols (NTP, Roughtime) and HTTP GETs on kept-alive
//! connections (proofs). Each thread runs closed loops of `window`
//! requests: it sends them, then waits for their answers (100 ms at most),
//! so `window > 1` lets a server batch what arrives together. Latency is
//! measured from the send of a window to each of its answers.
//!
//! The same generator drives Chronos and its peers (chronyd, roughenough)
//! in one run, so their figures compare; the server's CPU time comes from
//! `/proc` ([`crate::procs`]), which gives answers per CPU-second, the
//! per-core rate, even when the generator shares the machine.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one load run saw.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub sent: u64,
    pub answered: u64,
    /// Answers that were not the expected kind (an error status, a kiss).
    pub refused: u64,
    pub elapsed: Duration,
    /// Every answer's latency, µs.
    pub latencies_us: Vec<u32>,
}

impl Served {
    pub fn per_sec(&self) -> f64 {
        self.answered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The `p`th percentile latency (0..=100), ms.
    pub fn latency_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
        f64::from(v[i.min(v.len() - 1)]) / 1e3
    }

    fn merge(&mut self, o: Served) {
        self.sent += o.sent;
        self.answered += o.answered;
        self.refused += o.refused;
        self.latencies_us.extend(o.latencies_us);
    }
}

/// The load threads' results, merged, and the run's length.
fn gather(handles: Vec<std::thread::JoinHandle<std::io::Result<Served>>>, started: Instant) -> std::io::Result<Served> {
    let mut all = Served::default();
    for h in handles {
        all.merge(h.join().map_err(|_| std::io::Error::other("a load thread panicked"))??);
    }
    all.elapsed = started.elapsed();
    Ok(all)
}

/// Requests for one thread: `make(thread, i)` for `i` in `0..pool`,
/// reused round robin (building a Roughtime request costs more than
/// sending it).
pub type MakeRequest = Arc<dyn Fn(usize, usize) -> Vec<u8> + Send + Sync>;
/// Whether an answer is a real one (not a kiss-o'-death, not empty).
pub type CheckAnswer = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// UDP load on `server` for `duration`.
pub fn udp(
    server: SocketAddr,
    threads: usize,
    window: usize,
    duration: Duration,
    make: MakeRequest,
    check: CheckAnswer,
) -> std::io::Result<Served> {
    let started = Instant::now();
    let handles: Vec<std::thread::JoinHandle<std::io::Result<Served>>> = (0..threads.max(1))
        .map(|t| {
            let (make, check) = (make.clone(), check.clone());
            std::thread::spawn(move || -> std::io::Result<Served> {
                let sock = UdpSocket::bind("127.0.0.1:0")?;
                sock.connect(server)?;
                sock.set_read_timeout(Some(Duration::from_millis(100)))?;
                let pool: Vec<Vec<u8>> = (0..64).map(|i| make(t, i)).collect();
                let mut out = Served::default();
                let mut buf = vec![0u8; 2048];
                let mut next = 0;
                while started.elapsed() < duration {
                    let t0 = Instant::now();
                    for _ in 0..window {
                        sock.send(&pool[next % pool.len()])?;
                        next += 1;
                    }
                    out.sent += window as u64;
                    for _ in 0..window {
                        match sock.recv(&mut buf) {
                            Ok(n) => {
                                out.latencies_us.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                                if check(&buf[..n]) {
                                    out.answered += 1;
                                } else {
                                    out.refused += 1;
                                }
                            }
                            Err(_) => break, // lost: counted as sent minus answered
                        }
                    }
                }
                Ok(out)
            })
        })
        .collect();
    gather(handles, started)
}

/// One HTTP/1.1 GET on a kept-alive connection: the status and body.
fn get(conn: &mut BufReader<TcpStream>, host: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    write!(conn.get_mut(), "GET {path} HTTP/1.1\r\nhost: {host}\r\n\r\n")?;
    let mut line = String::new();
    conn.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut len = 0usize;
    loop {
        line.clear();
        if conn.read_line(&mut line)? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed"));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    Ok((status, body))
}

/// HTTP GET load: each thread keeps one connection and asks `path(thread,
/// i)` for its `i`th request, one at a time; a 200 is an answer.
pub fn http_get(
    server: SocketAddr,
    threads: usize,
    duration: Duration,
    path: Arc<dyn Fn(usize, u64) -> String + Send + Sync>,
) -> std::io::Result<Served> {
    let started = Instant::now();
    let host = server.to_string();
    let handles: Vec<std::thread::JoinHandle<std::io::Result<Served>>> = (0..threads.max(1))
        .map(|t| {
            let (path, host) = (path.clone(), host.clone());
            std::thread::spawn(move || -> std::io::Result<Served> {
                let stream = TcpStream::connect(server)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                let mut conn = BufReader::new(stream);
                let mut out = Served::default();
                let mut i = 0u64;
                while started.elapsed() < duration {
                    let t0 = Instant::now();
                    let (status, _) = get(&mut conn, &host, &path(t, i))?;
                    i += 1;
                    out.sent += 1;
                    out.latencies_us.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                    if status == 200 {
                        out.answered += 1;
                    } else {
                        out.refused += 1;
                    }
                }
                Ok(out)
            })
        })
        .collect();
    gather(handles, started)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_server_is_answered_and_a_silent_one_counts_as_lost() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut b = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut b) {
                let _ = echo.send_to(&b[..n], from);
            }
        });
        let make: MakeRequest = Arc::new(|t, i| vec![t as u8, i as u8]);
        let ok: CheckAnswer = Arc::new(|a| a.len() == 2);
        let r = udp(addr, 2, 4, Duration::from_millis(200), make.clone(), ok).unwrap();
        assert!(r.answered > 0 && r.answered == r.latencies_us.len() as u64 && r.refused == 0, "{r:?}");
        assert!(r.latency_ms(99.0) >= r.latency_ms(50.0));
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let none: CheckAnswer = Arc::new(|_| true);
        let r = udp(silent.local_addr().unwrap(), 1, 1, Duration::from_millis(250), make, none).unwrap();
        assert_eq!(r.answered, 0);
        assert!(r.sent >= 2, "{r:?}");
    }
}
