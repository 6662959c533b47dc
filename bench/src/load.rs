//! The load generator: sends bodies to `POST /ingest` the way Vector's
//! `http` sink does (keep-alive HTTP/1.1 connections, one request in
//! flight per connection, a retried request resends the same body) and
//! records when each body was durably acknowledged.
//!
//! Two paces: **max** (closed loop: every connection sends its next body
//! as soon as the previous one is answered) and **rate** (open loop: bodies
//! are due at fixed intervals whether or not earlier ones were answered;
//! a body's latency counts from when it was due, so a stalled server is
//! not hidden by a client that politely waited: no coordinated omission).
//!
//! 503 answers and broken connections are retried with exponential
//! backoff (initial delay doubling up to 5 s, with jitter), like Vector's
//! retry policy. Any other answer is a failure of the run: the bench
//! never sends bad input, so a 4xx means Chronos refused a valid body.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::sync::{Mutex, mpsc};

use crate::events::{Body, Corpus, Framing, body};

/// What went wrong while driving the load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// Chronos answered something other than 200 or 503 to a valid body.
    #[error("POST /ingest answered {status}: {text}")]
    Refused { status: u16, text: String },
    /// A body was not acknowledged in time, retries included.
    #[error("a body of {events} events was not acknowledged within {secs} s (last error: {last})")]
    NotAcked { events: u32, secs: u64, last: String },
    /// The acknowledgement did not parse.
    #[error("unexpected answer to POST /ingest: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Where to send, and how.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// Bearer token, if ingest requires one.
    pub token: Option<String>,
}

/// The shape of the traffic.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Events per body.
    pub batch: usize,
    pub framing: Framing,
    pub gzip: bool,
    /// Concurrent connections.
    pub connections: usize,
    /// First retry delay.
    pub retry_initial: Duration,
}

/// How fast to send.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Closed loop: as fast as answers come.
    Max,
    /// Open loop: this many bodies per second.
    Rate(f64),
}

/// One body acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    /// When it was due (open loop) or first sent (closed loop).
    pub due: Instant,
    pub done: Instant,
    pub events: u32,
    pub event_bytes: u64,
    pub wire_bytes: u64,
    pub first_leaf: u64,
    /// Attempts answered 503 or failed before the 200.
    pub retries: u32,
    pub replay: bool,
}

/// Everything one phase sent and got back.
#[derive(Debug, Clone)]
pub struct Run {
    /// The measured window: from the end of the warm-up to the last due body.
    pub window: (Instant, Instant),
    pub acks: Vec<Ack>,
    pub status_503: u64,
    pub conn_errors: u64,
}

impl Run {
    /// Acknowledgements that arrived inside the window.
    pub fn in_window(&self) -> impl Iterator<Item = &Ack> {
        let (a, b) = self.window;
        self.acks.iter().filter(move |k| k.done >= a && k.done <= b)
    }

    pub fn window_secs(&self) -> f64 {
        (self.window.1 - self.window.0).as_secs_f64()
    }

    /// Events committed per second in the window.
    pub fn events_per_sec(&self) -> f64 {
        self.in_window().map(|a| f64::from(a.events)).sum::<f64>() / self.window_secs()
    }

    /// Event bytes committed per second in the window.
    pub fn bytes_per_sec(&self) -> f64 {
        self.in_window().map(|a| a.event_bytes as f64).sum::<f64>() / self.window_secs()
    }

    /// Ack latency percentile `p` (0–100) of the bodies acknowledged in the window.
    pub fn latency(&self, p: f64) -> Duration {
        let mut l: Vec<Duration> = self.in_window().map(|a| a.done - a.due).collect();
        percentile(&mut l, p)
    }

    /// Retries of the bodies acknowledged in the window.
    pub fn retries(&self) -> u64 {
        self.in_window().map(|a| u64::from(a.retries)).sum()
    }

    /// Bodies answered as replays (an earlier attempt was committed, but
    /// its answer did not arrive).
    pub fn replays(&self) -> usize {
        self.acks.iter().filter(|a| a.replay).count()
    }

    /// The leaf range acknowledged in the window.
    pub fn window_leaves(&self) -> Option<(u64, u64)> {
        let lo = self.in_window().map(|a| a.first_leaf).min()?;
        let hi = self.in_window().map(|a| a.first_leaf + u64::from(a.events)).max()?;
        Some((lo, hi))
    }
}

/// The `p`th percentile (nearest rank) of `v`, zero if empty.
pub fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// Produces unique bodies on a thread of their own (rendering and gzip
/// cost the load generator's CPU, as they cost Vector's), a bounded
/// distance ahead of the senders.
fn producer(corpus: Arc<Corpus>, shape: &Shape, first: u64, ahead: usize) -> mpsc::Receiver<Body> {
    let (tx, rx) = mpsc::channel(ahead.max(1));
    let (size, framing, gzip) = (shape.batch, shape.framing, shape.gzip);
    std::thread::Builder::new()
        .name("bench-bodies".into())
        .spawn(move || {
            let mut k = first;
            while tx.blocking_send(body(&corpus, k, size, framing, gzip)).is_ok() {
                k += 1;
            }
        })
        .expect("spawning the body thread");
    rx
}

/// A body to send: when it was due (open loop), or `None` (closed loop:
/// due when a connection takes it). The body itself is taken from the
/// producer only then, so a backlog of due bodies costs 16 bytes each, not
/// a rendered body each.
type Job = Option<Instant>;

/// Sends for `warmup + measure`, then waits until every body sent is
/// acknowledged. `first_body` numbers the bodies (keep it unique across
/// phases of one log, so no body repeats).
pub async fn drive(
    target: &Target,
    shape: &Shape,
    corpus: Arc<Corpus>,
    pace: Pace,
    warmup: Duration,
    measure: Duration,
    first_body: u64,
) -> Result<Run, LoadError> {
    let bodies = Arc::new(Mutex::new(producer(corpus, shape, first_body, 2 * shape.connections.min(256))));
    let (tx, rx) = match pace {
        Pace::Max => mpsc::channel::<Job>(1),
        // Open loop: due times queue here while every connection is busy.
        Pace::Rate(_) => mpsc::channel::<Job>(1 << 22),
    };
    let rx = Arc::new(Mutex::new(rx));
    let counters = Arc::new(Counters::default());
    let mut workers = Vec::new();
    for i in 0..shape.connections {
        let (target, shape, rx, counters) = (target.clone(), shape.clone(), rx.clone(), counters.clone());
        let bodies = bodies.clone();
        workers.push(tokio::spawn(async move { worker(i as u64, &target, &shape, &rx, &bodies, &counters).await }));
    }
    let start = Instant::now();
    let window = (start + warmup, start + warmup + measure);
    match pace {
        Pace::Max => {
            while Instant::now() < window.1 {
                if tx.send(None).await.is_err() {
                    break; // a worker failed: its error is collected below
                }
            }
        }
        Pace::Rate(per_sec) => {
            let step = Duration::from_secs_f64(1.0 / per_sec);
            let mut due = start;
            while due < window.1 {
                tokio::time::sleep_until(due.into()).await;
                if tx.send(Some(due)).await.is_err() {
                    break;
                }
                due += step;
            }
        }
    }
    drop(tx);
    let mut acks = Vec::new();
    for w in workers {
        acks.extend(w.await.map_err(|e| LoadError::Io(std::io::Error::other(e)))??);
    }
    Ok(Run {
        window,
        acks,
        status_503: counters.s503.load(std::sync::atomic::Ordering::Relaxed),
        conn_errors: counters.conn.load(std::sync::atomic::Ordering::Relaxed),
    })
}

#[derive(Debug, Default)]
struct Counters {
    s503: std::sync::atomic::AtomicU64,
    conn: std::sync::atomic::AtomicU64,
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

fn first_seed(index: u64) -> u64 {
    0x6a09_e667_f3bc_c908 ^ index
}

/// Longest a body may take from its first attempt to its acknowledgement.
const GIVE_UP: Duration = Duration::from_secs(120);

async fn worker(
    index: u64,
    target: &Target,
    shape: &Shape,
    rx: &Mutex<mpsc::Receiver<Job>>,
    bodies: &Mutex<mpsc::Receiver<Body>>,
    n: &Counters,
) -> Result<Vec<Ack>, LoadError> {
    let mut acks = Vec::new();
    let mut conn: Option<Sender> = None;
    let mut jitter = crate::events::Rng::new(first_seed(index));
    loop {
        let job = rx.lock().await.recv().await;
        let Some(due) = job else { return Ok(acks) };
        let Some(body) = bodies.lock().await.recv().await else { return Ok(acks) };
        let due = due.unwrap_or_else(Instant::now);
        let mut retries = 0u32;
        let mut backoff = shape.retry_initial;
        let last = loop {
            let err = match send(&mut conn, target, shape, &body).await {
                Ok(Answer::Acked { first_leaf, replay }) => {
                    acks.push(Ack {
                        due,
                        done: Instant::now(),
                        events: body.events,
                        event_bytes: body.event_bytes,
                        wire_bytes: body.wire.len() as u64,
                        first_leaf,
                        retries,
                        replay,
                    });
                    break None;
                }
                Ok(Answer::Busy) => {
                    n.s503.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    "503".to_owned()
                }
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::Connection(e)) => {
                    n.conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    conn = None;
                    e
                }
            };
            if due.elapsed() > GIVE_UP {
                break Some(err);
            }
            retries += 1;
            // Full jitter: somewhere between half the backoff and all of it.
            let half = backoff / 2;
            let extra = Duration::from_nanos(jitter.below(half.as_nanos().max(1) as u64));
            tokio::time::sleep(half + extra).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        if let Some(last) = last {
            return Err(LoadError::NotAcked { events: body.events, secs: GIVE_UP.as_secs(), last });
        }
    }
}

enum Answer {
    Acked { first_leaf: u64, replay: bool },
    Busy,
}

enum Failure {
    Refused(LoadError),
    /// Worth a retry on a new connection.
    Connection(String),
}

async fn send(conn: &mut Option<Sender>, target: &Target, shape: &Shape, body: &Body) -> Result<Answer, Failure> {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        *conn = Some(connect(target.addr).await.map_err(|e| Failure::Connection(format!("connect: {e}")))?);
    }
    let c = conn.as_mut().expect("connected above");
    c.ready().await.map_err(|e| Failure::Connection(e.to_string()))?;
    let mut req = hyper::Request::post("/ingest")
        .header(hyper::header::HOST, target.addr.to_string())
        .header(hyper::header::CONTENT_TYPE, shape.framing.content_type());
    if body.gzip {
        req = req.header(hyper::header::CONTENT_ENCODING, "gzip");
    }
    if let Some(t) = &target.token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req =
        req.body(Full::new(body.wire.clone())).map_err(|e| Failure::Refused(LoadError::BadAnswer(e.to_string())))?;
    let resp = c.send_request(req).await.map_err(|e| Failure::Connection(e.to_string()))?;
    let status = resp.status().as_u16();
    let replay = resp.headers().get("chronos-replay").is_some_and(|v| v == "true");
    let text = resp.into_body().collect().await.map_err(|e| Failure::Connection(e.to_string()))?.to_bytes();
    match status {
        200 => {
            let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
                Failure::Refused(LoadError::BadAnswer(format!("{e}: {}", String::from_utf8_lossy(&text))))
            })?;
            let first_leaf = v["first_leaf"].as_u64();
            let count = v["leaf_count"].as_u64();
            match (first_leaf, count) {
                (Some(first_leaf), Some(c)) if c == u64::from(body.events) => Ok(Answer::Acked { first_leaf, replay }),
                _ => Err(Failure::Refused(LoadError::BadAnswer(String::from_utf8_lossy(&text).into_owned()))),
            }
        }
        503 => Ok(Answer::Busy),
        _ => Err(Failure::Refused(LoadError::Refused { status, text: String::from_utf8_lossy(&text).into_owned() })),
    }
}

/// Waits until `n` answers in a row from `GET /readyz` are 200: with
/// several ingest processes on one port, each learns readiness on its own
/// and the kernel spreads new connections over them.
pub async fn wait_ready(addr: SocketAddr, within: Duration, n: u32) -> Result<(), String> {
    let deadline = Instant::now() + within;
    let mut in_a_row = 0;
    let mut last = String::from("no answer");
    while in_a_row < n {
        if Instant::now() > deadline {
            return Err(format!("not ready within {within:?}: {last}"));
        }
        let ok = match connect(addr).await {
            Ok(mut c) => {
                let req = hyper::Request::get("/readyz")
                    .header(hyper::header::HOST, addr.to_string())
                    .body(Full::new(Bytes::new()))
                    .expect("a static request is valid");
                match c.send_request(req).await {
                    Ok(r) if r.status() == 200 => true,
                    Ok(r) => {
                        last = format!("/readyz answered {}", r.status());
                        false
                    }
                    Err(e) => {
                        last = e.to_string();
                        false
                    }
                }
            }
            Err(e) => {
                last = e.to_string();
                false
            }
        };
        if ok {
            in_a_row += 1;
        } else {
            in_a_row = 0;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&mut v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&mut v, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&mut [], 99.0), Duration::ZERO);
    }
}
