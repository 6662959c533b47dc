//! Realistic log events and the request bodies that carry them.
//!
//! Events look like what Vector sends from its `demo_logs` source through
//! the `http` sink with the JSON codec: an object with `host`, `message`,
//! `service`, `source_type` and `timestamp`, whose message is a syslog
//! (RFC 5424 or BSD), Apache access or Apache error line; and, as many
//! applications log, flat JSON objects with level, trace id and fields.
//! Each event is 150–400 bytes, the length drawn uniformly.
//!
//! Ingest remembers the SHA-256 of every body for its idempotency window,
//! so a body sent twice is answered from memory, not stored again. Every
//! body is therefore unique: its first event carries the body's number.

use std::io::Write as _;

use bytes::Bytes;

/// Shortest and longest event, bytes.
pub const EVENT_BYTES: (usize, usize) = (150, 400);

/// A small, fast, deterministic generator (SplitMix64): the same seed
/// gives the same corpus on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the bias is below 2^-40 for the n used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len() as u64) as usize]
    }
}

const HOSTS: &[&str] = &["web-1", "web-2", "api-eu-3", "db-primary", "cache-7", "edge-fra-2", "batch-11", "auth-1"];
const APPS: &[&str] = &["sshd", "nginx", "postgres", "kernel", "systemd", "cron", "dockerd", "haproxy"];
const WORDS: &[&str] = &[
    "connection",
    "accepted",
    "from",
    "user",
    "session",
    "opened",
    "closed",
    "timeout",
    "retrying",
    "request",
    "upstream",
    "backend",
    "failed",
    "healthy",
    "cache",
    "miss",
    "hit",
    "latency",
    "queue",
    "worker",
    "started",
    "stopped",
    "reload",
    "config",
    "token",
    "expired",
    "granted",
    "denied",
    "disk",
    "usage",
    "checkpoint",
    "vacuum",
];
const PATHS: &[&str] =
    &["/api/v1/orders", "/api/v1/users/me", "/login", "/static/app.js", "/healthz", "/cart/checkout", "/search?q=disk"];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH"];
const LEVELS: &[&str] = &["info", "info", "info", "warn", "error", "debug"];
const MONTHS: &[&str] = &["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// RFC 3339 UTC time with nanoseconds, from seconds since the epoch
/// (civil-from-days, proleptic Gregorian).
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let (y, m, d) = civil(secs / 86_400);
    let s = secs % 86_400;
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z", s / 3600, s / 60 % 60, s % 60, unix_ns % 1_000_000_000)
}

fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

fn ip(rng: &mut Rng) -> String {
    format!("10.{}.{}.{}", rng.below(256), rng.below(256), 1 + rng.below(254))
}

/// Appends words until `s` is `target` bytes long (or one word past it,
/// then cut back to `target`).
fn fill(s: &mut String, target: usize, rng: &mut Rng) {
    while s.len() < target {
        s.push(' ');
        s.push_str(rng.pick(WORDS));
    }
    s.truncate(target);
}

/// The text of a `demo_logs` message of the given format.
fn message(format: u64, t_ns: u64, host: &str, rng: &mut Rng) -> String {
    let secs = t_ns / 1_000_000_000;
    let (y, mo, d) = civil(secs / 86_400);
    let (hh, mm, ss) = (secs % 86_400 / 3600, secs / 60 % 60, secs % 60);
    let month = MONTHS[(mo - 1) as usize];
    match format {
        0 => format!(
            "<{}>1 {} {host} {} {} ID{} - {}",
            rng.below(192),
            rfc3339(t_ns),
            rng.pick(APPS),
            1000 + rng.below(60_000),
            rng.below(1000),
            rng.pick(WORDS)
        ),
        1 => format!(
            "<{}>{month} {d:>2} {hh:02}:{mm:02}:{ss:02} {host} {}[{}]: {}",
            rng.below(192),
            rng.pick(APPS),
            1000 + rng.below(60_000),
            rng.pick(WORDS)
        ),
        2 => format!(
            "{} - user{} [{d:02}/{month}/{y}:{hh:02}:{mm:02}:{ss:02} +0000] \"{} {} HTTP/1.1\" {} {}",
            ip(rng),
            rng.below(5000),
            rng.pick(METHODS),
            rng.pick(PATHS),
            [200, 200, 200, 201, 204, 301, 404, 500, 503][rng.below(9) as usize],
            rng.below(100_000)
        ),
        _ => format!(
            "[{} {month} {d:02} {hh:02}:{mm:02}:{ss:02} {y}] [core:{}] [pid {}:tid {}] [client {}:{}] {}",
            ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][((secs / 86_400 + 3) % 7) as usize],
            rng.pick(LEVELS),
            rng.below(60_000),
            rng.below(1 << 40),
            ip(rng),
            1024 + rng.below(60_000),
            rng.pick(WORDS)
        ),
    }
}

/// One event of `target` bytes (within [`EVENT_BYTES`]), time `t_ns`.
/// `id`, if given, is written into a JSON application event as its
/// `request_id`, which makes the event (and a body holding it) unique.
pub fn event(rng: &mut Rng, t_ns: u64, target: usize, id: Option<u64>) -> Vec<u8> {
    let host = rng.pick(HOSTS);
    let json_app = id.is_some() || rng.below(5) < 2;
    let out = if json_app {
        let head = format!(
            r#"{{"timestamp":"{}","level":"{}","service":"{}","host":"{host}","request_id":"{:016x}","trace_id":"{:016x}","duration_ms":{},"msg":""#,
            rfc3339(t_ns),
            rng.pick(LEVELS),
            rng.pick(&["checkout", "payments", "search", "auth", "inventory"]),
            id.unwrap_or_else(|| rng.next_u64()),
            rng.next_u64(),
            rng.below(5000),
        );
        let mut msg = String::from("order processed");
        fill(&mut msg, target.saturating_sub(head.len() + 2).max(1), rng);
        format!("{head}{}\"}}", msg.trim())
    } else {
        let tail = format!(r#"","service":"vector","source_type":"demo_logs","timestamp":"{}"}}"#, rfc3339(t_ns));
        let head = format!(r#"{{"host":"{host}","message":""#);
        let mut msg = message(rng.below(4), t_ns, host, rng).replace('"', "\\\"");
        let room = target.saturating_sub(head.len() + tail.len());
        if msg.len() < room {
            fill(&mut msg, room, rng);
        }
        format!("{head}{}{tail}", msg.trim_end_matches('\\').trim())
    };
    out.into_bytes()
}

/// A pool of pre-rendered events that bodies are cut from.
#[derive(Debug, Clone)]
pub struct Corpus {
    events: Vec<Vec<u8>>,
    t0_ns: u64,
}

impl Corpus {
    /// `n` events starting at time `t0_ns`, 1 ms apart.
    pub fn new(n: usize, t0_ns: u64, seed: u64) -> Corpus {
        let mut rng = Rng::new(seed);
        let (lo, hi) = EVENT_BYTES;
        let events = (0..n as u64)
            .map(|i| {
                let target = lo + rng.below((hi - lo + 1) as u64) as usize;
                event(&mut rng, t0_ns + i * 1_000_000, target, None)
            })
            .collect();
        Corpus { events, t0_ns }
    }

    pub fn events(&self) -> &[Vec<u8>] {
        &self.events
    }

    /// The events of body number `k` of `size` events: a unique first
    /// event, then `size − 1` events of the pool from a rotating offset.
    pub fn body_events(&self, k: u64, size: usize) -> impl Iterator<Item = std::borrow::Cow<'_, [u8]>> {
        let mut rng = Rng::new(k ^ 0x5eed);
        let first = event(&mut rng, self.t0_ns + k * 1_000, 200, Some(k));
        let n = self.events.len();
        let start = (k as usize).wrapping_mul(size) % n;
        std::iter::once(std::borrow::Cow::Owned(first))
            .chain((1..size).map(move |j| std::borrow::Cow::Borrowed(self.events[(start + j) % n].as_slice())))
    }
}

/// How events are framed in a body, as Vector's http sink can send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON object per line (`framing.method = "newline_delimited"`).
    Ndjson,
    /// One JSON array (the JSON codec's default batch encoding).
    JsonArray,
}

impl Framing {
    pub fn content_type(self) -> &'static str {
        match self {
            Framing::Ndjson => "application/x-ndjson",
            Framing::JsonArray => "application/json",
        }
    }
}

/// A request body ready to send.
#[derive(Debug, Clone)]
pub struct Body {
    /// The bytes on the wire (compressed if gzip).
    pub wire: Bytes,
    /// Events in it.
    pub events: u32,
    /// Bytes of the events themselves (what ingest stores).
    pub event_bytes: u64,
    pub gzip: bool,
}

/// Renders body `k`.
pub fn body(corpus: &Corpus, k: u64, size: usize, framing: Framing, gzip: bool) -> Body {
    let mut raw = Vec::with_capacity(size * 300 + 2);
    let mut event_bytes = 0u64;
    if framing == Framing::JsonArray {
        raw.push(b'[');
    }
    for (i, e) in corpus.body_events(k, size).enumerate() {
        if i > 0 && framing == Framing::JsonArray {
            raw.push(b',');
        }
        raw.extend_from_slice(&e);
        event_bytes += e.len() as u64;
        if framing == Framing::Ndjson {
            raw.push(b'\n');
        }
    }
    if framing == Framing::JsonArray {
        raw.push(b']');
    }
    let wire = if gzip {
        // Vector's gzip default level (6).
        let mut enc = flate2::write::GzEncoder::new(Vec::with_capacity(raw.len() / 4), flate2::Compression::default());
        enc.write_all(&raw).expect("writing to a Vec cannot fail");
        enc.finish().expect("writing to a Vec cannot fail")
    } else {
        raw
    };
    Body { wire: Bytes::from(wire), events: size as u32, event_bytes, gzip }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_json_of_the_promised_sizes() {
        let c = Corpus::new(5000, 1_795_000_000_000_000_000, 7);
        let mut shapes = std::collections::HashSet::new();
        for e in c.events() {
            let v: serde_json::Value = serde_json::from_slice(e).unwrap_or_else(|err| {
                panic!("{err}: {}", String::from_utf8_lossy(e));
            });
            assert!((EVENT_BYTES.0..=EVENT_BYTES.1).contains(&e.len()), "{} bytes: {}", e.len(), v);
            shapes.insert(v.get("message").is_some());
            assert!(v.get("timestamp").is_some_and(|t| t.as_str().is_some_and(|t| t.ends_with('Z'))));
        }
        assert_eq!(shapes.len(), 2, "both demo_logs envelopes and application JSON");
    }

    #[test]
    fn bodies_are_unique_and_parse_in_both_framings() {
        let c = Corpus::new(100, 1_795_000_000_000_000_000, 7);
        let a = body(&c, 1, 50, Framing::JsonArray, false);
        let b = body(&c, 2, 50, Framing::JsonArray, false);
        assert_ne!(a.wire, b.wire);
        let v: Vec<serde_json::Value> = serde_json::from_slice(&a.wire).unwrap();
        assert_eq!(v.len(), 50);
        let n = body(&c, 1, 50, Framing::Ndjson, false);
        assert_eq!(n.wire.split(|&b| b == b'\n').filter(|l| !l.is_empty()).count(), 50);
        assert_eq!(n.event_bytes, a.event_bytes);
        let z = body(&c, 1, 50, Framing::Ndjson, true);
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&z.wire[..]), &mut out).unwrap();
        assert_eq!(out, n.wire);
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(1_795_000_000_123_456_789), "2026-11-18T11:06:40.123456789Z");
    }
}
