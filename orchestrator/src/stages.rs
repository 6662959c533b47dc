//! The stages of the spine, in order: validate → timestamp → sequence →
//! chain → tree (timestamp before sequence, so that a batch refused for
//! want of a time quorum never took a seq). Each owns its slice of the sequencer's state. A stage
//! either lets the batch continue, answers it (a duplicate), or fails
//! fatally (a broken invariant: the process stops and restores from the
//! database on restart, so no half-applied state survives).
//!
//! Later stages (quorum time, control plane) implement [`Stage`] and slot
//! into [`crate::Spine::new`]'s list.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chronos_time::{Stamp, TimeReader};

use chronos_ledger::{BatchHeader, ChainHead, CompactRange, Hash, TimeNs, TimeSource, TreeHasher, TrustedTime};
use chronos_wire::{Duplicate, HashedRef, TileNode};

/// A batch on its way through the spine; stages fill in their fields.
#[derive(Debug)]
pub struct Candidate<'a> {
    pub input: HashedRef<'a>,
    /// Set by [`Sequence`].
    pub seq: u64,
    pub first_leaf: u64,
    /// Set by [`Timestamp`].
    pub time: Option<TrustedTime>,
    /// Set by [`Chain`].
    pub chain: Option<Hash>,
    /// Set by [`Tree`]: stored tree nodes above level 0 that this batch completed.
    pub nodes: Vec<TileNode>,
    /// Set by [`Tree`]: the global root after this batch.
    pub tree_root: Option<Hash>,
}

impl<'a> Candidate<'a> {
    pub fn new(input: HashedRef<'a>) -> Candidate<'a> {
        Candidate { input, seq: 0, first_leaf: 0, time: None, chain: None, nodes: Vec::new(), tree_root: None }
    }

    fn header(&self) -> Result<BatchHeader, StageError> {
        Ok(BatchHeader {
            seq: self.seq,
            first_leaf: self.first_leaf,
            leaf_count: self.input.len() as u64,
            root: Hash(self.input.root),
            time: self.time.clone().ok_or(StageError::OutOfOrder { stage: "chain", needs: "timestamp" })?,
        })
    }
}

/// What a stage decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// On to the next stage.
    Continue,
    /// Already sequenced: answer with the first answer, store nothing.
    Duplicate(Duplicate),
    /// Refused: nothing is stored; the client is answered 422 with the
    /// reason at once and an audit event is left.
    Reject(String),
    /// Not now: nothing is stored; the client is answered 503 with the
    /// reason and Retry-After (no time quorum under the refuse policy).
    Unavailable(String),
    /// Refused for a policy reason, not its syntax: kept in the
    /// quarantine (not the log), the client answered 422 with its id.
    Quarantine(String),
}

/// A broken invariant: stop the sequencer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StageError {
    #[error("stage {stage} ran before {needs}")]
    OutOfOrder { stage: &'static str, needs: &'static str },
    #[error("chain: {0}")]
    Chain(#[from] chronos_ledger::ChainError),
    #[error("leaf index overflow at seq {0}")]
    Overflow(u64),
    #[error("time source: {0}")]
    TimeSource(String),
}

/// One stage of the spine.
pub trait Stage: Send {
    /// Short name for logs and metrics.
    fn name(&self) -> &'static str;
    /// Applies the stage to `c`.
    fn apply(&mut self, c: &mut Candidate<'_>) -> Result<Verdict, StageError>;
    /// Called on every stage once `c` passed them all and was handed on.
    fn passed(&mut self, _c: &Candidate<'_>) {}
}

/// Remembered answer for an idempotency key.
#[derive(Debug, Clone, Copy)]
struct Seen {
    seq: u64,
    first_leaf: u64,
    leaf_count: u64,
}

/// Refuses malformed batches and answers bodies seen within the window.
///
/// The guarantee: a body whose idempotency key (its client's identity and
/// its bytes, see ingest's `body::idempotency_key`) was sequenced less than
/// `window` ago, and is among the newest `limit` keys, gets the first
/// answer and is stored once; past that it is stored again (at least
/// once). Memory is bounded by `limit` keys (about 120 bytes each: the map
/// entry and the expiry queue entry).
#[derive(Debug)]
pub struct Validate {
    window: Duration,
    limit: usize,
    max_events: usize,
    seen: HashMap<[u8; 32], Seen>,
    order: VecDeque<(Instant, [u8; 32])>,
    metrics: crate::Metrics,
}

impl Validate {
    /// `recent`: keys already committed, with their age, oldest first.
    pub fn new(
        window: Duration,
        limit: usize,
        max_events: usize,
        recent: &[chronos_vault::store::RecentKey],
        metrics: crate::Metrics,
    ) -> Validate {
        let mut v =
            Validate { window, limit: limit.max(1), max_events, seen: HashMap::new(), order: VecDeque::new(), metrics };
        let now = Instant::now();
        for k in recent {
            let at = now.checked_sub(k.age).unwrap_or(now);
            v.remember(at, k.key, Seen { seq: k.seq, first_leaf: k.first_leaf, leaf_count: k.leaf_count });
        }
        v
    }

    fn remember(&mut self, at: Instant, key: [u8; 32], seen: Seen) {
        while self.order.len() >= self.limit {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
                self.metrics.keys_evicted.inc();
            }
        }
        self.seen.insert(key, seen);
        self.order.push_back((at, key));
        self.metrics.keys.set(self.seen.len() as i64);
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, key)) = self.order.front().copied() {
            if now.duration_since(at) < self.window {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
        self.metrics.keys.set(self.seen.len() as i64);
    }

    /// Keys remembered.
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

impl Stage for Validate {
    fn name(&self) -> &'static str {
        "validate"
    }

    fn apply(&mut self, c: &mut Candidate<'_>) -> Result<Verdict, StageError> {
        let now = Instant::now();
        self.expire(now);
        // The orchestrator's own batches may pass the limit by their few
        // control records (a released body of the most events).
        let own = c.input.reply.slot == chronos_wire::Reply::CONTROL_SLOT;
        if c.input.len() > self.max_events && !own {
            return Ok(Verdict::Reject(format!("{} events, over the limit of {}", c.input.len(), self.max_events)));
        }
        if let Some(s) = self.seen.get(&c.input.key) {
            return Ok(Verdict::Duplicate(Duplicate {
                reply: c.input.reply,
                seq: s.seq,
                first_leaf: s.first_leaf,
                leaf_count: s.leaf_count,
            }));
        }
        Ok(Verdict::Continue)
    }

    fn passed(&mut self, c: &Candidate<'_>) {
        let seen = Seen { seq: c.seq, first_leaf: c.first_leaf, leaf_count: c.input.len() as u64 };
        self.remember(Instant::now(), c.input.key, seen);
    }
}

/// Quarantines a batch one of whose events claims a time (its
/// `timestamp`) further from the batch's trusted time than the policy
/// allows. Runs after [`Timestamp`] (it needs the batch's time) and before
/// [`Sequence`] (a quarantined batch takes no seq). The orchestrator's own
/// batches (control records, released bodies) are not checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClaimedTime {
    /// Most a claimed time may be ahead of the batch's time.
    pub max_ahead: Option<Duration>,
    /// Most a claimed time may be behind it.
    pub max_behind: Option<Duration>,
}

impl Stage for ClaimedTime {
    fn name(&self) -> &'static str {
        "claimed-time"
    }

    fn apply(&mut self, c: &mut Candidate<'_>) -> Result<Verdict, StageError> {
        if c.input.reply.slot == chronos_wire::Reply::CONTROL_SLOT
            || (self.max_ahead.is_none() && self.max_behind.is_none())
        {
            return Ok(Verdict::Continue);
        }
        let time = c.time.as_ref().ok_or(StageError::OutOfOrder { stage: "claimed-time", needs: "timestamp" })?;
        // The batch's interval, widened by the allowance on each side.
        let earliest = i128::from(time.time.0) - i128::from(time.uncertainty_ns);
        let latest = i128::from(time.time.0) + i128::from(time.uncertainty_ns);
        for (i, e) in c.input.events().enumerate() {
            let Some(claimed) = e.claimed_time_ns.map(i128::from) else { continue };
            if let Some(ahead) = self.max_ahead
                && claimed > latest + ahead.as_nanos() as i128
            {
                let by = (claimed - latest) as f64 / 1e9;
                return Ok(Verdict::Quarantine(format!(
                    "event {i} claims a time {by:.0} s ahead of the log's trusted time (at most {} s allowed)",
                    ahead.as_secs()
                )));
            }
            if let Some(behind) = self.max_behind
                && claimed < earliest - behind.as_nanos() as i128
            {
                let by = (earliest - claimed) as f64 / 1e9;
                return Ok(Verdict::Quarantine(format!(
                    "event {i} claims a time {by:.0} s behind the log's trusted time (at most {} s allowed)",
                    behind.as_secs()
                )));
            }
        }
        Ok(Verdict::Continue)
    }
}

/// Assigns batch seq and global leaf indices.
#[derive(Debug)]
pub struct Sequence {
    next_seq: u64,
    next_leaf: u64,
}

impl Sequence {
    pub fn new(head: &ChainHead) -> Sequence {
        Sequence { next_seq: head.seq + 1, next_leaf: head.size }
    }
}

impl Stage for Sequence {
    fn name(&self) -> &'static str {
        "sequence"
    }
    fn apply(&mut self, c: &mut Candidate<'_>) -> Result<Verdict, StageError> {
        c.seq = self.next_seq;
        c.first_leaf = self.next_leaf;
        self.next_leaf = self.next_leaf.checked_add(c.input.len() as u64).ok_or(StageError::Overflow(c.seq))?;
        self.next_seq += 1;
        Ok(Verdict::Continue)
    }
}

/// Stamps the batch with trusted time (`chronos_time::reader`): quorum
/// time when sources are configured, else the host clock with its
/// kernel's maximum error. Under the refuse policy without a quorum the
/// batch is answered 503 and gets no seq.
#[derive(Debug)]
pub struct Timestamp {
    clock: Arc<TimeReader>,
    last: u64,
}

impl Timestamp {
    /// `last`: the newest time already in the chain.
    pub fn new(clock: Arc<TimeReader>, last: u64) -> Timestamp {
        Timestamp { clock, last }
    }
}

/// Now, in ns since the epoch (the host clock: for ages, not for stamps).
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// The recorded form of `stamp`: its interval's midpoint, but never before
/// `last` (time in the chain never goes backwards), with the uncertainty
/// that keeps the whole interval covered. `last` is raised to it.
pub fn trusted(stamp: &Stamp, last: &mut u64) -> Result<TrustedTime, StageError> {
    let i = stamp.interval;
    let time = i.midpoint().max(*last);
    *last = time;
    let uncertainty_ns = (time - i.earliest).max(i.latest.saturating_sub(time));
    let source =
        TimeSource::new(&stamp.source).map_err(|e| StageError::TimeSource(format!("{}: {e}", stamp.source)))?;
    Ok(TrustedTime { time: TimeNs(time), uncertainty_ns, source })
}

impl Stage for Timestamp {
    fn name(&self) -> &'static str {
        "timestamp"
    }
    fn apply(&mut self, c: &mut Candidate<'_>) -> Result<Verdict, StageError> {
        if c.input.reply.slot == chronos_wire::Reply::CONTROL_SLOT {
            // The log's own control records are written whatever the
            // quorum, stamped with the time they can honestly claim
            // (`untrusted` without a quorum): losing the quorum is itself
            // one of the things they record.
            c.time = Some(trusted(&self.clock.stamp_always(), &mut self.last)?);
            return Ok(Verdict::Continue);
        }
        match self.clock.stamp() {
            Ok(stamp) => {
                c.time = Some(trusted(&stamp, &mut self.last)?);
                Ok(Verdict::Continue)
            }
            Err(no) => Ok(Verdict::Unavailable(no.to_string())),
        }
    }
}

/// Links the batch into the hash chain.
#[derive(Debug)]
pub struct Chain {
    hasher: TreeHasher,
    head: ChainHead,
}

impl Chain {
    pub fn new(hasher: TreeHasher, head: ChainHead) -> Chain {
        Chain { hasher, head }
    }
}

impl Stage for Chain {
    fn name(&self) -> &'static str {
        "chain"
    }
    fn apply(&mut self, c: &mut Candidate<'_>) -> Result<Verdict, StageError> {
        let header = c.header()?;
        self.head = self.head.next(&self.hasher, &header)?;
        c.chain = Some(self.head.hash);
        Ok(Verdict::Continue)
    }
}

/// Appends the leaves to the global tree's compact range, collecting the
/// nodes the vault stores as tiles.
#[derive(Debug)]
pub struct Tree {
    hasher: TreeHasher,
    range: CompactRange,
}

impl Tree {
    pub fn new(hasher: TreeHasher, range: CompactRange) -> Tree {
        Tree { hasher, range }
    }
}

impl Stage for Tree {
    fn name(&self) -> &'static str {
        "tree"
    }
    fn apply(&mut self, c: &mut Candidate<'_>) -> Result<Verdict, StageError> {
        if self.range.size() != c.first_leaf {
            return Err(StageError::OutOfOrder { stage: "tree", needs: "sequence of the previous batch" });
        }
        let nodes = &mut c.nodes;
        for leaf in c.input.leaves() {
            self.range.append(&self.hasher, Hash(leaf), |id, h| {
                // Level 0 travels as the record's leaf hashes already.
                if id.level > 0 && chronos_vault::tiles::is_stored(id) {
                    nodes.push(TileNode { level: id.level, index: id.index, hash: h.0 });
                }
            });
        }
        c.tree_root = Some(self.range.root(&self.hasher));
        Ok(Verdict::Continue)
    }
}
