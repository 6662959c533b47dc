//! The canonical payload of a batch: everything needed to rebuild the
//! batch's rows of the `logs` table, kept in the logged `batches` table.
//!
//! Codec 1 (spec/ledger.md, section 10): zstd of the concatenation, in leaf
//! order, of one record per event:
//!
//! ```text
//! u32be len | u8 flags | [i64be claimed_time_ns if flags & 1] | len bytes of the event
//! ```
//! Decoding is strict: unknown codec or flags, a short record, trailing
//! bytes or a wrong event count are errors, never guesses.

/// Codec 1: zstd of length-prefixed events with their claimed times.
pub const CODEC_ZSTD_V1: i16 = 1;
const HAS_TIME: u8 = 1;
/// zstd level: these payloads are written once and read rarely. Level 1
/// costs about 15% less CPU than 3 for 4% more bytes on log lines
/// (BENCHMARKS.md, "bench"); decoders accept any level.
const LEVEL: i32 = 1;

std::thread_local! {
    /// One compression context per thread, reused: a fresh one per batch
    /// allocates and clears its tables every time.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> = const { std::cell::RefCell::new(None) };
}

/// One event as the vault keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    /// The event's exact bytes (leaf data).
    pub bytes: &'a [u8],
    /// The client's claimed time, ns since the epoch.
    pub claimed_time_ns: Option<i64>,
}

/// An event read back from a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub bytes: Vec<u8>,
    pub claimed_time_ns: Option<i64>,
}

/// A payload that cannot be decoded: the stored batch is damaged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("batch payload: {0}")]
pub struct PayloadError(pub String);

/// Encodes events (codec 1).
pub fn encode(events: &[EventRef<'_>]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(events.iter().map(|e| e.bytes.len() + 13).sum());
    for e in events {
        // Events are at most a few MiB (ingest's limit), far below u32::MAX.
        raw.extend_from_slice(&(e.bytes.len() as u32).to_be_bytes());
        match e.claimed_time_ns {
            Some(t) => {
                raw.push(HAS_TIME);
                raw.extend_from_slice(&t.to_be_bytes());
            }
            None => raw.push(0),
        }
        raw.extend_from_slice(e.bytes);
    }
    // Compressing an in-memory buffer only fails on allocation failure.
    let compressed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        let cx = match c.as_mut() {
            Some(cx) => cx,
            None => c.insert(zstd::bulk::Compressor::new(LEVEL)?),
        };
        cx.compress(&raw)
    });
    compressed.unwrap_or_else(|e| panic!("zstd compression of a batch payload failed: {e}"))
}

/// Decodes a payload that must hold exactly `count` events, inflating to at
/// most `max_decoded` bytes.
pub fn decode(codec: i16, payload: &[u8], count: u64, max_decoded: usize) -> Result<Vec<Event>, PayloadError> {
    if codec != CODEC_ZSTD_V1 {
        return Err(PayloadError(format!("unknown codec {codec}")));
    }
    let raw = zstd::bulk::decompress(payload, max_decoded).map_err(|e| PayloadError(format!("zstd: {e}")))?;
    let mut out = Vec::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], PayloadError> {
        let end = at.checked_add(n).filter(|&e| e <= raw.len()).ok_or_else(|| {
            PayloadError(format!("a record starting before byte {} is cut short (payload of {} bytes)", *at, raw.len()))
        })?;
        let s = &raw[*at..end];
        *at = end;
        Ok(s)
    };
    while at < raw.len() {
        let len = u32::from_be_bytes(take(&mut at, 4)?.try_into().map_err(|_| PayloadError("length".into()))?) as usize;
        let flags = take(&mut at, 1)?[0];
        let claimed_time_ns = match flags {
            0 => None,
            HAS_TIME => {
                Some(i64::from_be_bytes(take(&mut at, 8)?.try_into().map_err(|_| PayloadError("time".into()))?))
            }
            f => return Err(PayloadError(format!("event {}: unknown flags {f:#x}", out.len()))),
        };
        let bytes = take(&mut at, len)?.to_vec();
        out.push(Event { bytes, claimed_time_ns });
    }
    if out.len() as u64 != count {
        return Err(PayloadError(format!("holds {} events, the batch says {count}", out.len())));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let evs = [
            EventRef { bytes: b"{\"a\":1}", claimed_time_ns: Some(-5) },
            EventRef { bytes: b"", claimed_time_ns: None },
            EventRef { bytes: &[7u8; 70_000], claimed_time_ns: Some(i64::MAX) },
        ];
        let p = encode(&evs);
        let back = decode(CODEC_ZSTD_V1, &p, 3, 1 << 20).unwrap();
        let again: Vec<EventRef<'_>> =
            back.iter().map(|e| EventRef { bytes: &e.bytes, claimed_time_ns: e.claimed_time_ns }).collect();
        assert_eq!(again, evs);
    }

    #[test]
    fn damage_is_reported() {
        let p = encode(&[EventRef { bytes: b"{}", claimed_time_ns: None }]);
        assert!(decode(2, &p, 1, 1 << 20).unwrap_err().0.contains("unknown codec 2"));
        assert!(decode(CODEC_ZSTD_V1, &p, 2, 1 << 20).unwrap_err().0.contains("holds 1 events, the batch says 2"));
        assert!(decode(CODEC_ZSTD_V1, &p[..p.len() - 1], 1, 1 << 20).is_err());
        let short = zstd::bulk::compress(&[0, 0, 0, 9, 0, b'x'], 1).unwrap();
        assert!(decode(CODEC_ZSTD_V1, &short, 1, 1 << 20).unwrap_err().0.contains("cut short"));
        let flags = zstd::bulk::compress(&[0, 0, 0, 0, 4], 1).unwrap();
        assert!(decode(CODEC_ZSTD_V1, &flags, 1, 1 << 20).unwrap_err().0.contains("unknown flags"));
        let big = encode(&[EventRef { bytes: &[0; 4096], claimed_time_ns: None }]);
        assert!(decode(CODEC_ZSTD_V1, &big, 1, 100).is_err(), "inflating past the cap is refused");
    }
}
