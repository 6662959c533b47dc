//! The record types. Layouts (little-endian, offsets in bytes):
//!
//! * `INGEST` (ingest → hasher): head (slot u16, zero u16, count u32,
//!   request u64, key 32) · event table (count × 16: len u32, flags u8,
//!   3 zero, claimed time i64) · the events' bytes, concatenated.
//! * `HASHED` (hasher → orchestrator): head · root 32 · payload length u64
//!   · event table · leaf hashes (count × 32) · canonical payload · events.
//! * `SEQUENCED` (orchestrator → vault writer): seq u64 · first leaf u64 ·
//!   time ns u64 · uncertainty ns u64 · chain 32 · source length u8, 7 zero
//!   · source · node count u32, zero u32 · nodes (count × 48: level u8,
//!   7 zero, index u64, hash 32) · the `HASHED` record, verbatim.
//! * `DUPLICATE` (orchestrator → vault writer): a body already sequenced.
//! * `ACK` and `STATUS` (vault writer → ingest): answers and heartbeats.
//! * `REFUSED` (hasher or orchestrator → vault writer → ingest): a body
//!   refused after ingest accepted it, with the HTTP status and the
//!   reason its client gets at once: slot u16, status u16, reason length
//!   u16, zero u16, request u64 · the reason (UTF-8, at most 1 KiB).
//! * `QUARANTINED` (orchestrator → vault writer): a body refused for a
//!   policy reason, kept: slot u16, reason length u16, zero u32, request
//!   u64 · the reason (UTF-8, at most 256 bytes) · the `HASHED` record,
//!   verbatim (its events, claimed times, payload and key).

use crate::codec::{Reader, WireError, Writer};

/// Ring record tags.
pub mod tag {
    pub const INGEST: u32 = 1;
    pub const HASHED: u32 = 2;
    pub const SEQUENCED: u32 = 3;
    pub const DUPLICATE: u32 = 4;
    pub const ACK: u32 = 5;
    pub const STATUS: u32 = 6;
    pub const REFUSED: u32 = 7;
    pub const QUARANTINED: u32 = 8;
}

const HEAD_LEN: usize = 48;
const META_LEN: usize = 16;
const HASH_LEN: usize = 32;
const NODE_LEN: usize = 48;
const FLAG_TIME: u8 = 1;

/// Where the answer to a request goes: the ingest process's slot (its ack
/// ring) and its request number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reply {
    pub slot: u16,
    pub request: u64,
}

impl Reply {
    /// The slot of the orchestrator's own batches (control records): no
    /// ingest process waits for their answer.
    pub const CONTROL_SLOT: u16 = u16::MAX;
}

/// An event as ingest hands it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMeta<'a> {
    /// Exact bytes (the leaf data).
    pub bytes: &'a [u8],
    /// Claimed time from the event's `timestamp`, ns since the epoch.
    pub claimed_time_ns: Option<i64>,
}

fn check_tag(found: u32, want: u32, expected: &'static str) -> Result<(), WireError> {
    if found == want { Ok(()) } else { Err(WireError::Tag { expected, want, found }) }
}

struct Head {
    reply: Reply,
    count: usize,
    key: [u8; 32],
}

fn write_head(w: &mut Writer<'_>, reply: Reply, count: usize, key: &[u8; 32]) {
    w.u16(reply.slot);
    w.u16(0);
    w.u32(count as u32);
    w.u64(reply.request);
    w.put(key);
}

fn read_head(r: &mut Reader<'_>) -> Result<Head, WireError> {
    let slot = r.u16("slot")?;
    r.zero("reserved", 2)?;
    let at = r.offset();
    let count = r.u32("count")? as usize;
    if count == 0 {
        return Err(r.invalid_at("count", at, "a batch has at least one event".into()));
    }
    let request = r.u64("request")?;
    let key = r.array("key")?;
    Ok(Head { reply: Reply { slot, request }, count, key })
}

fn write_table(w: &mut Writer<'_>, events: &[EventMeta<'_>]) {
    for e in events {
        w.u32(e.bytes.len() as u32);
        w.u8(if e.claimed_time_ns.is_some() { FLAG_TIME } else { 0 });
        w.zeros(3);
        w.i64(e.claimed_time_ns.unwrap_or(0));
    }
}

/// Checks an event table and returns the total event bytes it describes.
fn check_table(r: &Reader<'_>, table: &[u8], at: usize) -> Result<usize, WireError> {
    let mut total = 0usize;
    for (i, m) in table.chunks_exact(META_LEN).enumerate() {
        let len = u32::from_le_bytes([m[0], m[1], m[2], m[3]]) as usize;
        let bad = |reason: String| r.invalid_at("event table", at + i * META_LEN, reason);
        if len == 0 {
            return Err(bad(format!("event {i} is empty")));
        }
        if m[4] > FLAG_TIME || m[5..8] != [0, 0, 0] {
            return Err(bad(format!("event {i} has flags {:#x}", m[4])));
        }
        if m[4] == 0 && m[8..16] != [0u8; 8] {
            return Err(bad(format!("event {i} has a time but no time flag")));
        }
        total += len;
    }
    Ok(total)
}

/// The events of a record, borrowed.
#[derive(Debug, Clone, Copy)]
struct Events<'a> {
    table: &'a [u8],
    bytes: &'a [u8],
}

impl<'a> Events<'a> {
    fn iter(&self) -> impl Iterator<Item = EventMeta<'a>> + 'a {
        let bytes = self.bytes;
        let mut off = 0usize;
        self.table.chunks_exact(META_LEN).map(move |m| {
            let len = u32::from_le_bytes([m[0], m[1], m[2], m[3]]) as usize;
            let t = i64::from_le_bytes([m[8], m[9], m[10], m[11], m[12], m[13], m[14], m[15]]);
            // check_table proved the lengths sum to bytes.len().
            let e = &bytes[off..off + len];
            off += len;
            EventMeta { bytes: e, claimed_time_ns: (m[4] == FLAG_TIME).then_some(t) }
        })
    }
}

/// `INGEST`: a validated body, split into events.
#[derive(Debug)]
pub struct Ingest;

impl Ingest {
    /// Size of the record for these events.
    pub fn encoded_len(events: &[EventMeta<'_>]) -> usize {
        HEAD_LEN + events.len() * META_LEN + events.iter().map(|e| e.bytes.len()).sum::<usize>()
    }

    /// Writes the record into `buf`, which is exactly `encoded_len` bytes.
    pub fn encode(buf: &mut [u8], reply: Reply, key: &[u8; 32], events: &[EventMeta<'_>]) {
        let mut w = Writer::new(buf);
        write_head(&mut w, reply, events.len(), key);
        write_table(&mut w, events);
        for e in events {
            w.put(e.bytes);
        }
        w.done();
    }

    /// Reads a record.
    pub fn decode(tag: u32, buf: &[u8]) -> Result<IngestRef<'_>, WireError> {
        check_tag(tag, tag::INGEST, "INGEST")?;
        let mut r = Reader::new("INGEST", buf);
        let head = read_head(&mut r)?;
        let at = r.offset();
        let table = r.bytes("event table", head.count * META_LEN)?;
        let total = check_table(&r, table, at)?;
        let at = r.offset();
        let bytes = r.rest();
        if bytes.len() != total {
            return Err(r.invalid_at("events", at, format!("{} bytes, the table says {total}", bytes.len())));
        }
        Ok(IngestRef { reply: head.reply, key: head.key, events: Events { table, bytes } })
    }
}

/// A decoded `INGEST` record, borrowed from the ring.
#[derive(Debug, Clone, Copy)]
pub struct IngestRef<'a> {
    pub reply: Reply,
    /// The idempotency key: SHA-256 of the decoded body.
    pub key: [u8; 32],
    events: Events<'a>,
}

impl<'a> IngestRef<'a> {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.table.len() / META_LEN
    }
    /// Never true for a decoded record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The events in order.
    pub fn events(&self) -> impl Iterator<Item = EventMeta<'a>> + 'a {
        self.events.iter()
    }
    /// Total event bytes.
    pub fn event_bytes(&self) -> usize {
        self.events.bytes.len()
    }
}

/// `HASHED`: an ingest record with its leaf hashes, root and canonical payload.
#[derive(Debug)]
pub struct Hashed;

impl Hashed {
    /// Size of the record.
    pub fn encoded_len(input: &IngestRef<'_>, payload_len: usize) -> usize {
        HEAD_LEN + HASH_LEN + 8 + input.len() * (META_LEN + HASH_LEN) + payload_len + input.event_bytes()
    }

    /// Writes the record: `input` plus `leaves` (one per event), `root`, `payload`.
    pub fn encode(buf: &mut [u8], input: &IngestRef<'_>, leaves: &[[u8; 32]], root: &[u8; 32], payload: &[u8]) {
        assert_eq!(leaves.len(), input.len(), "one leaf hash per event");
        let mut w = Writer::new(buf);
        write_head(&mut w, input.reply, input.len(), &input.key);
        w.put(root);
        w.u64(payload.len() as u64);
        w.put(input.events.table);
        for l in leaves {
            w.put(l);
        }
        w.put(payload);
        w.put(input.events.bytes);
        w.done();
    }

    /// Reads a record.
    pub fn decode(tag: u32, buf: &[u8]) -> Result<HashedRef<'_>, WireError> {
        check_tag(tag, tag::HASHED, "HASHED")?;
        let mut r = Reader::new("HASHED", buf);
        let head = read_head(&mut r)?;
        let root = r.array("root")?;
        let at = r.offset();
        let payload_len = usize::try_from(r.u64("payload length")?)
            .map_err(|_| r.invalid_at("payload length", at, "too large".into()))?;
        let at = r.offset();
        let table = r.bytes("event table", head.count * META_LEN)?;
        let total = check_table(&r, table, at)?;
        let leaves = r.bytes("leaf hashes", head.count * HASH_LEN)?;
        let payload = r.bytes("payload", payload_len)?;
        let at = r.offset();
        let bytes = r.rest();
        if bytes.len() != total {
            return Err(r.invalid_at("events", at, format!("{} bytes, the table says {total}", bytes.len())));
        }
        Ok(HashedRef {
            reply: head.reply,
            key: head.key,
            root,
            leaves,
            payload,
            events: Events { table, bytes },
            raw: buf,
        })
    }
}

/// A decoded `HASHED` record.
#[derive(Debug, Clone, Copy)]
pub struct HashedRef<'a> {
    pub reply: Reply,
    pub key: [u8; 32],
    /// Merkle root over the leaf hashes.
    pub root: [u8; 32],
    leaves: &'a [u8],
    /// The canonical payload (spec/ledger.md, "Batch payload").
    pub payload: &'a [u8],
    events: Events<'a>,
    raw: &'a [u8],
}

impl<'a> HashedRef<'a> {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.leaves.len() / HASH_LEN
    }
    /// Never true for a decoded record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The leaf hashes in order.
    pub fn leaves(&self) -> impl Iterator<Item = [u8; 32]> + 'a {
        self.leaves.chunks_exact(HASH_LEN).map(|c| {
            let mut h = [0u8; 32];
            h.copy_from_slice(c);
            h
        })
    }
    /// The events in order.
    pub fn events(&self) -> impl Iterator<Item = EventMeta<'a>> + 'a {
        self.events.iter()
    }
    /// The whole record as it was encoded.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

/// A tree node completed by a batch, on a tile level above 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileNode {
    pub level: u8,
    pub index: u64,
    pub hash: [u8; 32],
}

/// What the sequencer decided for a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequenced {
    pub seq: u64,
    pub first_leaf: u64,
    pub time_ns: u64,
    pub uncertainty_ns: u64,
    pub source: String,
    pub chain: [u8; 32],
    pub nodes: Vec<TileNode>,
}

impl Sequenced {
    /// Size of the record carrying `hashed_len` bytes of `HASHED` record.
    pub fn encoded_len(&self, hashed_len: usize) -> usize {
        32 + HASH_LEN + 8 + self.source.len() + 8 + self.nodes.len() * NODE_LEN + hashed_len
    }

    /// Writes the record: these decisions, then the `HASHED` record verbatim.
    pub fn encode(&self, buf: &mut [u8], hashed: &[u8]) {
        assert!((1..=64).contains(&self.source.len()), "time source is 1..=64 bytes");
        let mut w = Writer::new(buf);
        w.u64(self.seq);
        w.u64(self.first_leaf);
        w.u64(self.time_ns);
        w.u64(self.uncertainty_ns);
        w.put(&self.chain);
        w.u8(self.source.len() as u8);
        w.zeros(7);
        w.put(self.source.as_bytes());
        w.u32(self.nodes.len() as u32);
        w.u32(0);
        for n in &self.nodes {
            w.u8(n.level);
            w.zeros(7);
            w.u64(n.index);
            w.put(&n.hash);
        }
        w.put(hashed);
        w.done();
    }

    /// Reads a record.
    pub fn decode(tag: u32, buf: &[u8]) -> Result<SequencedRef<'_>, WireError> {
        check_tag(tag, tag::SEQUENCED, "SEQUENCED")?;
        let mut r = Reader::new("SEQUENCED", buf);
        let seq = r.u64("seq")?;
        let first_leaf = r.u64("first leaf")?;
        let time_ns = r.u64("time")?;
        let uncertainty_ns = r.u64("uncertainty")?;
        let chain = r.array("chain")?;
        let at = r.offset();
        let source_len = r.u8("source length")? as usize;
        r.zero("reserved", 7)?;
        let src = r.bytes("source", source_len)?;
        let source = std::str::from_utf8(src)
            .ok()
            .filter(|s| (1..=64).contains(&s.len()))
            .ok_or_else(|| r.invalid_at("source", at, "not 1..=64 bytes of UTF-8".into()))?
            .to_owned();
        let count = r.count("node count", NODE_LEN)?;
        r.zero("reserved", 4)?;
        let mut nodes = Vec::with_capacity(count);
        for _ in 0..count {
            let level = r.u8("node level")?;
            r.zero("reserved", 7)?;
            let index = r.u64("node index")?;
            let hash = r.array("node hash")?;
            nodes.push(TileNode { level, index, hash });
        }
        let hashed = r.rest();
        let hashed = Hashed::decode(tag::HASHED, hashed)?;
        Ok(SequencedRef {
            decided: Sequenced { seq, first_leaf, time_ns, uncertainty_ns, source, chain, nodes },
            hashed,
        })
    }
}

/// A decoded `SEQUENCED` record.
#[derive(Debug, Clone)]
pub struct SequencedRef<'a> {
    pub decided: Sequenced,
    pub hashed: HashedRef<'a>,
}

/// `DUPLICATE`: a body whose key was sequenced before as batch `seq`; the
/// vault writer answers `reply` with the first answer once that is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate {
    pub reply: Reply,
    pub seq: u64,
    pub first_leaf: u64,
    pub leaf_count: u64,
}

impl Duplicate {
    pub const LEN: usize = 40;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let mut w = Writer::new(&mut out);
        w.u16(self.reply.slot);
        w.zeros(6);
        w.u64(self.reply.request);
        w.u64(self.seq);
        w.u64(self.first_leaf);
        w.u64(self.leaf_count);
        w.done();
        out
    }

    pub fn decode(tag: u32, buf: &[u8]) -> Result<Duplicate, WireError> {
        check_tag(tag, tag::DUPLICATE, "DUPLICATE")?;
        let mut r = Reader::new("DUPLICATE", buf);
        let slot = r.u16("slot")?;
        r.zero("reserved", 6)?;
        let d = Duplicate {
            reply: Reply { slot, request: r.u64("request")? },
            seq: r.u64("seq")?,
            first_leaf: r.u64("first leaf")?,
            leaf_count: r.u64("leaf count")?,
        };
        r.finish()?;
        Ok(d)
    }
}

/// `ACK`: request `request` of this ingest process is committed as batch `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub request: u64,
    pub seq: u64,
    pub first_leaf: u64,
    pub leaf_count: u64,
    /// The body had been stored before (a retry); this is the first answer.
    pub replay: bool,
}

impl Ack {
    pub const LEN: usize = 40;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let mut w = Writer::new(&mut out);
        w.u64(self.request);
        w.u64(self.seq);
        w.u64(self.first_leaf);
        w.u64(self.leaf_count);
        w.u8(u8::from(self.replay));
        w.zeros(7);
        w.done();
        out
    }

    pub fn decode(tag: u32, buf: &[u8]) -> Result<Ack, WireError> {
        check_tag(tag, tag::ACK, "ACK")?;
        let mut r = Reader::new("ACK", buf);
        let (request, seq, first_leaf, leaf_count) =
            (r.u64("request")?, r.u64("seq")?, r.u64("first leaf")?, r.u64("leaf count")?);
        let at = r.offset();
        let replay = match r.u8("replay")? {
            0 => false,
            1 => true,
            v => return Err(r.invalid_at("replay", at, format!("{v} is not 0 or 1"))),
        };
        r.zero("reserved", 7)?;
        r.finish()?;
        Ok(Ack { request, seq, first_leaf, leaf_count, replay })
    }
}

/// `REFUSED`: a body the pipeline will not store, answered at once with
/// an HTTP status (4xx: a retry cannot fix it) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reply: Reply,
    pub status: u16,
    pub reason: String,
}

impl Refused {
    /// Longest reason kept, bytes (longer ones are cut at a char boundary).
    pub const MAX_REASON: usize = 1024;
    const HEAD: usize = 16;

    /// A refusal, its reason cut to [`Self::MAX_REASON`].
    pub fn new(reply: Reply, status: u16, reason: &str) -> Refused {
        let mut end = reason.len().min(Self::MAX_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Refused { reply, status, reason: reason[..end].to_owned() }
    }

    pub fn encoded_len(&self) -> usize {
        Self::HEAD + self.reason.len()
    }

    pub fn encode(&self, buf: &mut [u8]) {
        let mut w = Writer::new(buf);
        w.u16(self.reply.slot);
        w.u16(self.status);
        w.u16(self.reason.len() as u16);
        w.u16(0);
        w.u64(self.reply.request);
        w.put(self.reason.as_bytes());
        w.done();
    }

    pub fn decode(tag: u32, buf: &[u8]) -> Result<Refused, WireError> {
        check_tag(tag, tag::REFUSED, "REFUSED")?;
        let mut r = Reader::new("REFUSED", buf);
        let slot = r.u16("slot")?;
        let at = r.offset();
        let status = r.u16("status")?;
        if !(400..600).contains(&status) {
            return Err(r.invalid_at("status", at, format!("{status} is not an HTTP error status")));
        }
        let at = r.offset();
        let len = usize::from(r.u16("reason length")?);
        if len > Self::MAX_REASON {
            return Err(r.invalid_at("reason length", at, format!("{len} is over {}", Self::MAX_REASON)));
        }
        r.zero("reserved", 2)?;
        let request = r.u64("request")?;
        let at = r.offset();
        let reason = std::str::from_utf8(r.bytes("reason", len)?)
            .map_err(|e| r.invalid_at("reason", at, format!("not UTF-8: {e}")))?
            .to_owned();
        r.finish()?;
        Ok(Refused { reply: Reply { slot, request }, status, reason })
    }
}

/// `QUARANTINED`: a body refused for a policy reason (not its syntax),
/// which the vault writer keeps in the `quarantine` table before its
/// client is answered; a signed event may release it into the log later.
#[derive(Debug, Clone, Copy)]
pub struct Quarantined<'a> {
    pub reason: &'a str,
    pub hashed: HashedRef<'a>,
}

impl Quarantined<'_> {
    /// Longest reason kept, bytes (the record must fit where its `HASHED`
    /// record's `SEQUENCED` would).
    pub const MAX_REASON: usize = 256;
    const HEAD: usize = 16;

    /// `reason` cut to [`Self::MAX_REASON`] at a char boundary.
    pub fn cut(reason: &str) -> &str {
        let mut end = reason.len().min(Self::MAX_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        &reason[..end]
    }

    pub fn encoded_len(reason: &str, hashed_raw: &[u8]) -> usize {
        Self::HEAD + Self::cut(reason).len() + hashed_raw.len()
    }

    /// Writes the record: `hashed_raw` is the whole `HASHED` record.
    pub fn encode(buf: &mut [u8], reply: Reply, reason: &str, hashed_raw: &[u8]) {
        let reason = Self::cut(reason);
        let mut w = Writer::new(buf);
        w.u16(reply.slot);
        w.u16(reason.len() as u16);
        w.u32(0);
        w.u64(reply.request);
        w.put(reason.as_bytes());
        w.put(hashed_raw);
        w.done();
    }

    pub fn decode(tag: u32, buf: &[u8]) -> Result<Quarantined<'_>, WireError> {
        check_tag(tag, tag::QUARANTINED, "QUARANTINED")?;
        let mut r = Reader::new("QUARANTINED", buf);
        let _slot = r.u16("slot")?;
        let at = r.offset();
        let len = usize::from(r.u16("reason length")?);
        if len > Self::MAX_REASON {
            return Err(r.invalid_at("reason length", at, format!("{len} is over {}", Self::MAX_REASON)));
        }
        r.zero("reserved", 4)?;
        let _request = r.u64("request")?;
        let at = r.offset();
        let reason = std::str::from_utf8(r.bytes("reason", len)?)
            .map_err(|e| r.invalid_at("reason", at, format!("not UTF-8: {e}")))?;
        let rest = r.offset();
        let hashed = Hashed::decode(tag::HASHED, &buf[rest..])?;
        Ok(Quarantined { reason, hashed })
    }
}

/// Where the answer to a record goes, read from the head that `INGEST`
/// and `HASHED` records share (slot, then request at offset 8), without
/// decoding the rest: so that a record that does not decode can still be
/// refused to its client instead of leaving it waiting.
pub fn peek_reply(buf: &[u8]) -> Option<Reply> {
    let slot = u16::from_le_bytes(buf.get(0..2)?.try_into().ok()?);
    let request = u64::from_le_bytes(buf.get(8..16)?.try_into().ok()?);
    Some(Reply { slot, request })
}

/// `STATUS`: the vault writer's heartbeat to each ingest process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// The last commit attempt reached PostgreSQL (and the logs table is whole).
    pub db_ok: bool,
    /// A live orchestrator feeds the vault writer.
    pub upstream_ok: bool,
    /// Highest committed batch seq.
    pub committed_seq: u64,
    /// When this was sent, ns since the Unix epoch.
    pub sent_at_ns: u64,
}

impl Status {
    pub const LEN: usize = 24;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        let mut w = Writer::new(&mut out);
        w.u8(u8::from(self.db_ok));
        w.u8(u8::from(self.upstream_ok));
        w.zeros(6);
        w.u64(self.committed_seq);
        w.u64(self.sent_at_ns);
        w.done();
        out
    }

    pub fn decode(tag: u32, buf: &[u8]) -> Result<Status, WireError> {
        check_tag(tag, tag::STATUS, "STATUS")?;
        let mut r = Reader::new("STATUS", buf);
        let flag = |r: &mut Reader<'_>, f: &'static str| -> Result<bool, WireError> {
            let at = r.offset();
            match r.u8(f)? {
                0 => Ok(false),
                1 => Ok(true),
                v => Err(r.invalid_at(f, at, format!("{v} is not 0 or 1"))),
            }
        };
        let db_ok = flag(&mut r, "db_ok")?;
        let upstream_ok = flag(&mut r, "upstream_ok")?;
        r.zero("reserved", 6)?;
        let s = Status { db_ok, upstream_ok, committed_seq: r.u64("committed seq")?, sent_at_ns: r.u64("sent at")? };
        r.finish()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_round_trips_and_refuses_bad_fields() {
        let r = Refused::new(Reply { slot: 2, request: 99 }, 422, "batch refused: é");
        let mut buf = vec![0u8; r.encoded_len()];
        r.encode(&mut buf);
        assert_eq!(Refused::decode(tag::REFUSED, &buf).unwrap(), r);
        assert_eq!(peek_reply(&buf), Some(Reply { slot: 2, request: 99 }));
        let long = Refused::new(Reply { slot: 0, request: 0 }, 400, &"é".repeat(1000));
        assert!(long.reason.len() <= Refused::MAX_REASON && long.reason.len() >= Refused::MAX_REASON - 1);
        let mut bad = buf.clone();
        bad[2] = 200; // status 200
        bad[3] = 0;
        assert!(matches!(Refused::decode(tag::REFUSED, &bad), Err(WireError::Invalid { field: "status", .. })));
        assert!(Refused::decode(tag::REFUSED, &buf[..buf.len() - 1]).is_err());
        assert!(matches!(Refused::decode(tag::ACK, &buf), Err(WireError::Tag { .. })));
    }

    fn events() -> Vec<EventMeta<'static>> {
        vec![
            EventMeta { bytes: b"{\"a\":1}", claimed_time_ns: Some(-5) },
            EventMeta { bytes: b"{}", claimed_time_ns: None },
            EventMeta { bytes: b"{\"message\":\"x\"}", claimed_time_ns: Some(1_700_000_000_000_000_000) },
        ]
    }

    fn ingest_bytes() -> Vec<u8> {
        let ev = events();
        let mut buf = vec![0u8; Ingest::encoded_len(&ev)];
        Ingest::encode(&mut buf, Reply { slot: 3, request: 77 }, &[9; 32], &ev);
        buf
    }

    #[test]
    fn ingest_round_trip() {
        let buf = ingest_bytes();
        let r = Ingest::decode(tag::INGEST, &buf).unwrap();
        assert_eq!(r.reply, Reply { slot: 3, request: 77 });
        assert_eq!(r.key, [9; 32]);
        assert_eq!(r.events().collect::<Vec<_>>(), events());
        assert!(matches!(Ingest::decode(tag::HASHED, &buf), Err(WireError::Tag { .. })));
    }

    fn sequenced_bytes() -> (Sequenced, Vec<u8>, Vec<u8>) {
        let ib = ingest_bytes();
        let input = Ingest::decode(tag::INGEST, &ib).unwrap();
        let leaves = [[1u8; 32], [2; 32], [3; 32]];
        let payload = b"zstd bytes".to_vec();
        let mut hb = vec![0u8; Hashed::encoded_len(&input, payload.len())];
        Hashed::encode(&mut hb, &input, &leaves, &[7; 32], &payload);
        let s = Sequenced {
            seq: 5,
            first_leaf: 100,
            time_ns: 1,
            uncertainty_ns: 2,
            source: "local".into(),
            chain: [4; 32],
            nodes: vec![TileNode { level: 8, index: 0, hash: [5; 32] }],
        };
        let mut sb = vec![0u8; s.encoded_len(hb.len())];
        s.encode(&mut sb, &hb);
        (s, hb, sb)
    }

    #[test]
    fn quarantined_round_trips_with_its_reason_cut_and_its_reply_peekable() {
        let (_, hb, _) = sequenced_bytes();
        let long = "é".repeat(200);
        let reply = Reply { slot: 3, request: 77 };
        let mut qb = vec![0u8; Quarantined::encoded_len(&long, &hb)];
        Quarantined::encode(&mut qb, reply, &long, &hb);
        let q = Quarantined::decode(tag::QUARANTINED, &qb).unwrap();
        assert_eq!(q.reason.len(), 256, "cut at a char boundary within 256 bytes");
        assert_eq!(q.hashed.raw(), &hb[..]);
        assert_eq!(peek_reply(&qb), Some(reply));
        assert!(Quarantined::decode(tag::REFUSED, &qb).is_err());
        assert!(Quarantined::decode(tag::QUARANTINED, &qb[..qb.len() - 1]).is_err());
    }

    #[test]
    fn hashed_and_sequenced_round_trip() {
        let (s, hb, sb) = sequenced_bytes();
        let h = Hashed::decode(tag::HASHED, &hb).unwrap();
        assert_eq!(h.leaves().collect::<Vec<_>>(), vec![[1u8; 32], [2; 32], [3; 32]]);
        assert_eq!(h.root, [7; 32]);
        assert_eq!(h.payload, b"zstd bytes");
        assert_eq!(h.events().collect::<Vec<_>>(), events());
        assert_eq!(h.raw(), &hb[..]);
        let d = Sequenced::decode(tag::SEQUENCED, &sb).unwrap();
        assert_eq!(d.decided, s);
        assert_eq!(d.hashed.raw(), &hb[..]);
    }

    #[test]
    fn small_records_round_trip() {
        let d = Duplicate { reply: Reply { slot: 1, request: u64::MAX }, seq: 2, first_leaf: 3, leaf_count: 4 };
        assert_eq!(Duplicate::decode(tag::DUPLICATE, &d.encode()).unwrap(), d);
        let a = Ack { request: 9, seq: 8, first_leaf: 7, leaf_count: 6, replay: true };
        assert_eq!(Ack::decode(tag::ACK, &a.encode()).unwrap(), a);
        let s = Status { db_ok: true, upstream_ok: false, committed_seq: 12, sent_at_ns: 13 };
        assert_eq!(Status::decode(tag::STATUS, &s.encode()).unwrap(), s);
        let mut bad = a.encode();
        bad[32] = 2;
        assert!(Ack::decode(tag::ACK, &bad).unwrap_err().to_string().contains("replay"));
    }

    #[test]
    fn damaged_records_are_refused_with_their_field() {
        let buf = ingest_bytes();
        // Truncation anywhere.
        for cut in 0..buf.len() {
            assert!(Ingest::decode(tag::INGEST, &buf[..cut]).is_err(), "cut at {cut}");
        }
        // Zero count.
        let mut b = buf.clone();
        b[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert!(Ingest::decode(tag::INGEST, &b).unwrap_err().to_string().contains("count"));
        // An event length that disagrees with the bytes.
        let mut b = buf.clone();
        b[48] += 1;
        assert!(Ingest::decode(tag::INGEST, &b).unwrap_err().to_string().contains("events"));
        // Bad flags.
        let mut b = buf.clone();
        b[48 + 4] = 9;
        assert!(Ingest::decode(tag::INGEST, &b).unwrap_err().to_string().contains("flags"));
        let (_, _, sb) = sequenced_bytes();
        for cut in 0..sb.len() {
            assert!(Sequenced::decode(tag::SEQUENCED, &sb[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let _ = Ingest::decode(tag::INGEST, &bytes);
            let _ = Hashed::decode(tag::HASHED, &bytes);
            let _ = Sequenced::decode(tag::SEQUENCED, &bytes);
            let _ = Duplicate::decode(tag::DUPLICATE, &bytes);
            let _ = Ack::decode(tag::ACK, &bytes);
            let _ = Status::decode(tag::STATUS, &bytes);
        }
    }
}
