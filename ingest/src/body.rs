//! Request bodies: decompression with a size cap, then splitting into
//! events without re-serializing them.
//!
//! * `Content-Encoding`: identity, `gzip` (also several members), `deflate`
//!   (zlib-wrapped as HTTP specifies, or raw deflate as some clients send)
//!   and `zstd`. Inflating stops one byte past the decoded-size limit, so a
//!   small compressed body cannot make us allocate more than the limit.
//! * `Content-Type`: `application/json` is a JSON array of events;
//!   `application/x-ndjson` (and `application/jsonlines`) is one event per
//!   line, with or without a final newline. Without a content type, the
//!   first non-blank byte decides (`[` array, `{` NDJSON).
//! * An event is a JSON object. Its bytes are exactly those received:
//!   for an array, from the element's first byte to its last; for NDJSON,
//!   the line without its newline and surrounding blanks (space, tab, CR).
//! * A body is all or nothing: one bad event rejects it, and the error
//!   names the event's index (0-based) and the reason.

use std::borrow::Cow;
use std::cell::Cell;
use std::io::Read;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use sha2::{Digest as _, Sha256};

/// Size limits, validated once from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body as received (compressed or not), in bytes.
    pub max_body: usize,
    /// Largest body after decompression, in bytes.
    pub max_decoded: usize,
    /// Largest single event, in bytes.
    pub max_event: usize,
    /// Most events in one body.
    pub max_events: usize,
}

impl Default for Limits {
    /// Room for Vector's default batch (10 MB before compression) with
    /// margin. The rings between processes are sized from these limits
    /// (about 4 times `max_decoded` per ring), so raising them costs shared memory.
    fn default() -> Limits {
        Limits { max_body: 16 << 20, max_decoded: 16 << 20, max_event: 1 << 20, max_events: 1 << 17 }
    }
}

/// Why a body was refused. Nothing of a refused body is stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body, decoded body or an event is over its limit (413).
    #[error("{what} exceeds the limit of {limit} bytes")]
    TooLarge { what: &'static str, limit: usize },
    /// One event is over the event size limit (413).
    #[error("event {index} is {len} bytes, over the limit of {limit}")]
    EventTooLarge { index: usize, len: usize, limit: usize },
    /// More events than allowed (413).
    #[error("more than {limit} events in one body")]
    TooManyEvents { limit: usize },
    /// A `Content-Encoding` we do not speak (415).
    #[error("unsupported Content-Encoding {0:?} (use identity, gzip, deflate or zstd)")]
    UnsupportedEncoding(String),
    /// A `Content-Type` we do not speak (415).
    #[error("unsupported Content-Type {0:?} (use application/json or application/x-ndjson)")]
    UnsupportedType(String),
    /// The compressed data is damaged (400).
    #[error("cannot decompress the {encoding} body: {reason}")]
    Compression { encoding: &'static str, reason: String },
    /// An event is not acceptable (400).
    #[error("event {index}: {reason}")]
    Event { index: usize, reason: String },
    /// The body is not a JSON array of events / has bytes after it (400).
    #[error("body: {0}")]
    Malformed(String),
    /// No events at all (400).
    #[error("the body holds no events")]
    Empty,
}

impl BodyError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::TooLarge { .. } | BodyError::EventTooLarge { .. } | BodyError::TooManyEvents { .. } => 413,
            BodyError::UnsupportedEncoding(_) | BodyError::UnsupportedType(_) => 415,
            _ => 400,
        }
    }

    /// The index of the offending event, when one is to blame.
    pub fn event_index(&self) -> Option<usize> {
        match self {
            BodyError::Event { index, .. } | BodyError::EventTooLarge { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// A `Content-Encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
    Zstd,
}

impl Encoding {
    /// From the header value (case-insensitive; absent means identity).
    pub fn from_header(value: Option<&str>) -> Result<Encoding, BodyError> {
        let v = value.map(|v| v.trim().to_ascii_lowercase());
        match v.as_deref() {
            None | Some("") | Some("identity") => Ok(Encoding::Identity),
            Some("gzip") | Some("x-gzip") => Ok(Encoding::Gzip),
            Some("deflate") => Ok(Encoding::Deflate),
            Some("zstd") => Ok(Encoding::Zstd),
            Some(other) => Err(BodyError::UnsupportedEncoding(other.to_owned())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Zstd => "zstd",
        }
    }
}

/// How events are laid out in a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `[{...}, {...}]`
    JsonArray,
    /// `{...}\n{...}` (final newline optional)
    Ndjson,
}

impl Format {
    /// From the `Content-Type` header (parameters such as charset ignored);
    /// `None` when absent, to be sniffed from the body.
    pub fn from_content_type(value: Option<&str>) -> Result<Option<Format>, BodyError> {
        let Some(v) = value else { return Ok(None) };
        let mime = v.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Ok(Some(Format::JsonArray)),
            "application/x-ndjson" | "application/ndjson" | "application/jsonlines" | "application/x-jsonlines" => {
                Ok(Some(Format::Ndjson))
            }
            "" => Ok(None),
            _ => Err(BodyError::UnsupportedType(v.to_owned())),
        }
    }

    /// Guesses from the first non-blank byte.
    fn sniff(body: &[u8]) -> Format {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'[') => Format::JsonArray,
            _ => Format::Ndjson,
        }
    }
}

/// Decompresses `body`, refusing to produce more than `limits.max_decoded`.
pub fn decode<'a>(encoding: Encoding, body: &'a [u8], limits: &Limits) -> Result<Cow<'a, [u8]>, BodyError> {
    if body.len() > limits.max_body {
        return Err(BodyError::TooLarge { what: "body", limit: limits.max_body });
    }
    let inflate = |mut r: Box<dyn Read + '_>| -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        // One byte past the limit tells "over" from "exactly at".
        (&mut r)
            .take(limits.max_decoded as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| BodyError::Compression { encoding: encoding.name(), reason: e.to_string() })?;
        if out.len() > limits.max_decoded {
            return Err(BodyError::TooLarge { what: "decoded body", limit: limits.max_decoded });
        }
        Ok(out)
    };
    match encoding {
        Encoding::Identity => {
            if body.len() > limits.max_decoded {
                return Err(BodyError::TooLarge { what: "decoded body", limit: limits.max_decoded });
            }
            Ok(Cow::Borrowed(body))
        }
        Encoding::Gzip => inflate(Box::new(flate2::read::MultiGzDecoder::new(body))).map(Cow::Owned),
        Encoding::Deflate => {
            // HTTP's deflate is zlib-wrapped; some clients send raw deflate.
            let zlib =
                body.len() >= 2 && ((u16::from(body[0]) << 8) | u16::from(body[1])) % 31 == 0 && body[0] & 0x0f == 8;
            if zlib {
                inflate(Box::new(flate2::read::ZlibDecoder::new(body))).map(Cow::Owned)
            } else {
                inflate(Box::new(flate2::read::DeflateDecoder::new(body))).map(Cow::Owned)
            }
        }
        Encoding::Zstd => {
            let d = zstd::stream::read::Decoder::new(body)
                .map_err(|e| BodyError::Compression { encoding: "zstd", reason: e.to_string() })?;
            inflate(Box::new(d)).map(Cow::Owned)
        }
    }
}

/// One event of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// The event's exact bytes: the ledger's leaf data.
    pub bytes: &'a [u8],
    /// Its `timestamp` field, when that is an RFC 3339 string: nanoseconds
    /// since the Unix epoch, as the client claims (never trusted).
    pub claimed_time_ns: Option<i64>,
}

/// Splits a decoded body into events (see the module docs).
pub fn split<'a>(format: Option<Format>, body: &'a [u8], limits: &Limits) -> Result<Vec<Event<'a>>, BodyError> {
    let events = match format.unwrap_or_else(|| Format::sniff(body)) {
        Format::JsonArray => split_array(body, limits)?
            .into_iter()
            .map(|bytes| Event { bytes, claimed_time_ns: claimed_time(bytes) })
            .collect(),
        Format::Ndjson => split_ndjson(body, limits)?,
    };
    if events.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(events)
}

fn check_event(index: usize, bytes: &[u8], limits: &Limits) -> Result<(), BodyError> {
    if bytes.len() > limits.max_event {
        return Err(BodyError::EventTooLarge { index, len: bytes.len(), limit: limits.max_event });
    }
    if bytes.first() != Some(&b'{') {
        return Err(BodyError::Event { index, reason: "not a JSON object".into() });
    }
    Ok(())
}

/// Collects the array's elements as raw JSON, counting them so that a
/// syntax error can be blamed on the element it occurred in.
struct Elements<'c> {
    parsed: &'c Cell<usize>,
    limits: Limits,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = Vec<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON array of events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some(raw) = seq.next_element::<&'de RawValue>()? {
            out.push(raw);
            self.parsed.set(out.len());
            if out.len() > self.limits.max_events {
                return Err(serde::de::Error::custom(TOO_MANY));
            }
        }
        Ok(out)
    }
}

const TOO_MANY: &str = "chronos: too many events";

fn split_array<'a>(body: &'a [u8], limits: &Limits) -> Result<Vec<&'a [u8]>, BodyError> {
    if !body_starts_array(body) {
        return Err(BodyError::Malformed("not a JSON array of events (expected '[')".into()));
    }
    let parsed = Cell::new(0);
    let mut de = serde_json::Deserializer::from_slice(body);
    let elements = de.deserialize_seq(Elements { parsed: &parsed, limits: *limits }).map_err(|e| {
        if e.to_string().starts_with(TOO_MANY) {
            BodyError::TooManyEvents { limit: limits.max_events }
        } else {
            // The elements before this one parsed; the error is in this one
            // (or in the separator after the last good one).
            BodyError::Event { index: parsed.get(), reason: json_reason(&e) }
        }
    })?;
    de.end().map_err(|e| BodyError::Malformed(format!("bytes after the array ({e})")))?;
    let mut out = Vec::with_capacity(elements.len());
    for (index, raw) in elements.into_iter().enumerate() {
        let bytes = raw.get().as_bytes();
        check_event(index, bytes, limits)?;
        out.push(bytes);
    }
    Ok(out)
}

fn body_starts_array(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

fn split_ndjson<'a>(body: &'a [u8], limits: &Limits) -> Result<Vec<Event<'a>>, BodyError> {
    // Blank lines after the last event (an editor's or a tool's final
    // newlines) end the body; a blank line between events is an error.
    let body = body.trim_ascii_end();
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (index, line) in body.split(|&b| b == b'\n').enumerate() {
        if index >= limits.max_events {
            return Err(BodyError::TooManyEvents { limit: limits.max_events });
        }
        let bytes = line.trim_ascii();
        if bytes.is_empty() {
            return Err(BodyError::Event { index, reason: "empty event (blank line)".into() });
        }
        check_event(index, bytes, limits)?;
        // One pass validates the line as one JSON object and finds its
        // claimed time (validating, then parsing again for the time, was a
        // sixth of ingest's CPU).
        let claimed_time_ns = probe(bytes).map_err(|reason| BodyError::Event { index, reason })?;
        out.push(Event { bytes, claimed_time_ns });
    }
    Ok(out)
}

/// Validates `event` (which starts with `{`) as exactly one JSON object,
/// UTF-8 throughout, and returns its claimed time: the top-level
/// `timestamp` member if it is an RFC 3339 string and appears only once.
fn probe(event: &[u8]) -> Result<Option<i64>, String> {
    // serde_json checks UTF-8 only in strings it returns, not in those it
    // skips: the whole event is checked here first.
    std::str::from_utf8(event).map_err(|e| format!("not valid UTF-8 ({e})"))?;
    let mut de = serde_json::Deserializer::from_slice(event);
    match de.deserialize_map(Probe).and_then(|t| de.end().map(|()| t)) {
        Ok(t) => Ok(t),
        // The probe reads member names and the time as strings, which is
        // stricter than validation (a lone surrogate escape such as
        // "\ud800" is valid JSON but no string): what plain validation
        // accepts is accepted, without a claimed time.
        Err(_) => match serde_json::from_slice::<&RawValue>(event) {
            Ok(_) => Ok(None),
            Err(e) => Err(json_reason(&e)),
        },
    }
}

/// Visits an event's members, keeping the `timestamp` one.
struct Probe;

impl<'de> Visitor<'de> for Probe {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<i64>, A::Error> {
        // None: not seen; Some(t): seen once; a second one makes it ambiguous.
        let mut seen: Option<Option<i64>> = None;
        let mut twice = false;
        while let Some(IsTimestamp(is)) = map.next_key()? {
            if is && seen.is_none() {
                seen = Some(map.next_value::<TimeValue>()?.0);
            } else {
                twice |= is;
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(if twice { None } else { seen.flatten() })
    }
}

/// A member name: whether it is `timestamp`.
struct IsTimestamp(bool);

impl<'de> Deserialize<'de> for IsTimestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IsTimestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<IsTimestamp, E> {
                Ok(IsTimestamp(s == "timestamp"))
            }
        }
        d.deserialize_str(V)
    }
}

/// A member's value: its time if it is an RFC 3339 string, else nothing
/// (any other JSON value is skipped, fully checked).
struct TimeValue(Option<i64>);

impl<'de> Deserialize<'de> for TimeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TimeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<TimeValue, E> {
                Ok(TimeValue(rfc3339_ns(s)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<TimeValue, E> {
                Ok(TimeValue(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<TimeValue, E> {
                Ok(TimeValue(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<TimeValue, E> {
                Ok(TimeValue(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<TimeValue, E> {
                Ok(TimeValue(None))
            }
            fn visit_unit<E>(self) -> Result<TimeValue, E> {
                Ok(TimeValue(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TimeValue, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TimeValue(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TimeValue, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TimeValue(None))
            }
        }
        d.deserialize_any(V)
    }
}

fn rfc3339_ns(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// serde_json's message, with invalid UTF-8 called by its name.
fn json_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.contains("invalid unicode code point") { format!("not valid UTF-8 ({msg})") } else { msg }
}

/// The claimed time of an array element (see [`probe`]). The elements
/// are validated already; this parses them once more for the time.
fn claimed_time(event: &[u8]) -> Option<i64> {
    probe(event).ok().flatten()
}

/// The idempotency key of a request: SHA-256 over the client's identity
/// and the decoded body, each length-prefixed (so no two different pairs
/// give the same input). A client retrying the same batch sends the same
/// bytes with the same identity and gets the same key; two clients sending
/// the same bytes (two hosts shipping the same line) do not collide as
/// long as their identities differ. The identity is whatever ingest knows
/// of the client: which bearer token it presented and its `Chronos-Client`
/// header (see the server).
pub fn idempotency_key(client: &[u8], decoded: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"chronos idempotency key v2\0");
    h.update((client.len() as u64).to_be_bytes());
    h.update(client);
    h.update((decoded.len() as u64).to_be_bytes());
    h.update(decoded);
    h.finalize().into()
}
