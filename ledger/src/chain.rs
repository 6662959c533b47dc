//! Batches and the batch chain.
//!
//! Each batch of events gets a Merkle root over its leaves ([`crate::tree::root`]),
//! and batch records are chained: `chain(n) = H(CHAIN_TAG ‖ chain(n−1) ‖
//! record(n))`, with `chain(0)` the log's genesis value. The chain binds each
//! batch's position, size, root and trusted time to everything before it, so
//! deleting, inserting or reordering a batch, or rewriting its time, breaks
//! every later link.

use std::fmt;

use crate::error::{ChainError, FormatError};
use crate::hash::{Hash, TreeHasher};
use crate::spec::{CHAIN_TAG, GENESIS_TAG, MAX_ORIGIN_BYTES, MAX_TIME_SOURCE_BYTES};

/// Nanoseconds since the Unix epoch (UTC), as an unsigned 64-bit count
/// (good until the year 2554).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TimeNs(pub u64);

/// Identifies where a trusted time came from: printable ASCII without spaces,
/// 1 to 64 bytes (for example `local` for the host clock, or the name of a
/// quorum of time sources).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TimeSource(String);

impl TimeSource {
    /// Validates a source identifier.
    pub fn new(s: &str) -> Result<TimeSource, FormatError> {
        let ok = !s.is_empty() && s.len() <= MAX_TIME_SOURCE_BYTES && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
        if ok {
            Ok(TimeSource(s.to_owned()))
        } else {
            Err(FormatError::malformed(
                "time source",
                0,
                format!("{s:?} is not 1..={MAX_TIME_SOURCE_BYTES} printable ASCII characters without spaces"),
            ))
        }
    }

    /// The host's own clock, untrusted beyond the host.
    pub fn local() -> TimeSource {
        TimeSource("local".to_owned())
    }

    /// The identifier.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TimeSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A timestamp with its uncertainty and source: the true time is claimed to
/// lie within `time ± uncertainty_ns`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TrustedTime {
    /// Midpoint.
    pub time: TimeNs,
    /// Half-width of the interval, in nanoseconds.
    pub uncertainty_ns: u64,
    /// Who vouches for it.
    pub source: TimeSource,
}

/// Everything the chain commits to about one batch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BatchHeader {
    /// Batch sequence number: 1 for the first batch, then consecutive.
    pub seq: u64,
    /// Global index of the batch's first leaf.
    pub first_leaf: u64,
    /// Number of leaves (events); at least 1.
    pub leaf_count: u64,
    /// Merkle root over the batch's leaf hashes.
    pub root: Hash,
    /// Trusted time assigned when the batch was sequenced.
    pub time: TrustedTime,
}

impl BatchHeader {
    /// The canonical record bytes (spec/ledger.md, "Batch record"):
    /// `seq ‖ first_leaf ‖ leaf_count ‖ root ‖ time_ns ‖ uncertainty_ns ‖
    /// len(source) ‖ source`, integers as big-endian u64, the length as one byte.
    pub fn record_bytes(&self) -> Vec<u8> {
        let src = self.time.source.as_str().as_bytes();
        let mut out = Vec::with_capacity(8 * 5 + 32 + 1 + src.len());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.first_leaf.to_be_bytes());
        out.extend_from_slice(&self.leaf_count.to_be_bytes());
        out.extend_from_slice(&self.root.0);
        out.extend_from_slice(&self.time.time.0.to_be_bytes());
        out.extend_from_slice(&self.time.uncertainty_ns.to_be_bytes());
        // TimeSource guarantees 1..=64 bytes, so the length fits one byte.
        out.push(src.len() as u8);
        out.extend_from_slice(src);
        out
    }

    /// One past the batch's last leaf: the tree size once it is appended.
    pub fn end_leaf(&self) -> Option<u64> {
        self.first_leaf.checked_add(self.leaf_count)
    }
}

/// Checks a log origin (also the checkpoint key name): 1 to 255 bytes of
/// UTF-8 with no Unicode whitespace, no `+` and no control characters.
pub fn validate_origin(origin: &str) -> Result<(), FormatError> {
    let bad = origin.is_empty()
        || origin.len() > MAX_ORIGIN_BYTES
        || origin.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control());
    if bad {
        return Err(FormatError::malformed(
            "origin",
            0,
            format!("{origin:?} must be 1..={MAX_ORIGIN_BYTES} bytes with no spaces, '+' or control characters"),
        ));
    }
    Ok(())
}

/// `chain(0)`: `H(GENESIS_TAG ‖ u16be(len(origin)) ‖ origin)`. The origin
/// must pass [`validate_origin`] (at most 255 bytes).
pub fn genesis(hasher: &TreeHasher, origin: &str) -> Hash {
    debug_assert!(validate_origin(origin).is_ok(), "unvalidated origin {origin:?}");
    let len = u16::try_from(origin.len()).unwrap_or(u16::MAX).to_be_bytes();
    hasher.digest(&[GENESIS_TAG, &len, origin.as_bytes()])
}

/// `chain(n) = H(CHAIN_TAG ‖ chain(n−1) ‖ record(n))`.
pub fn link(hasher: &TreeHasher, prev: &Hash, header: &BatchHeader) -> Hash {
    hasher.digest(&[CHAIN_TAG, &prev.0, &header.record_bytes()])
}

/// The head of a chain: the last batch's seq and chain value, and the number
/// of leaves so far. Seq 0 is the genesis state of an empty log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChainHead {
    /// Seq of the last batch; 0 before the first.
    pub seq: u64,
    /// `chain(seq)`.
    pub hash: Hash,
    /// Leaves in all batches so far (the tree size).
    pub size: u64,
}

impl ChainHead {
    /// The head of an empty log.
    pub fn genesis(hasher: &TreeHasher, origin: &str) -> ChainHead {
        ChainHead { seq: 0, hash: genesis(hasher, origin), size: 0 }
    }

    /// The head after `header`, which must be the next batch: seq + 1,
    /// starting at leaf `size`, with at least one leaf.
    pub fn next(&self, hasher: &TreeHasher, header: &BatchHeader) -> Result<ChainHead, ChainError> {
        if header.seq != self.seq.wrapping_add(1) || self.seq == u64::MAX {
            return Err(ChainError::SeqGap { expected_prev: self.seq, found: header.seq });
        }
        if header.first_leaf != self.size {
            return Err(ChainError::LeafGap { seq: header.seq, expected: self.size, found: header.first_leaf });
        }
        if header.leaf_count == 0 {
            return Err(ChainError::Empty { seq: header.seq });
        }
        let size = header.end_leaf().ok_or(ChainError::Overflow { seq: header.seq })?;
        Ok(ChainHead { seq: header.seq, hash: link(hasher, &self.hash, header), size })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlg;

    fn header(seq: u64, first_leaf: u64, leaf_count: u64) -> BatchHeader {
        BatchHeader {
            seq,
            first_leaf,
            leaf_count,
            root: Hash([seq as u8; 32]),
            time: TrustedTime {
                time: TimeNs(1_700_000_000_000_000_000),
                uncertainty_ns: 5,
                source: TimeSource::local(),
            },
        }
    }

    #[test]
    fn chain_rejects_gaps_and_empty_batches() {
        let h = TreeHasher::unkeyed(HashAlg::Blake3);
        let g = ChainHead::genesis(&h, "example.com/log");
        assert_eq!(g.next(&h, &header(2, 0, 1)), Err(ChainError::SeqGap { expected_prev: 0, found: 2 }));
        assert_eq!(g.next(&h, &header(1, 1, 1)), Err(ChainError::LeafGap { seq: 1, expected: 0, found: 1 }));
        assert_eq!(g.next(&h, &header(1, 0, 0)), Err(ChainError::Empty { seq: 1 }));
        let one = g.next(&h, &header(1, 0, 3)).unwrap();
        assert_eq!((one.seq, one.size), (1, 3));
        let two = one.next(&h, &header(2, 3, 2)).unwrap();
        assert_eq!((two.seq, two.size), (2, 5));
        assert_ne!(one.hash, two.hash);
        assert_eq!(one.next(&h, &header(2, 3, u64::MAX)), Err(ChainError::Overflow { seq: 2 }));
    }

    #[test]
    fn every_header_field_changes_the_link() {
        let h = TreeHasher::unkeyed(HashAlg::Sha256);
        let prev = genesis(&h, "o");
        let base = header(1, 0, 1);
        let mut variants = vec![];
        let mut v = base.clone();
        v.seq = 2;
        variants.push(v);
        let mut v = base.clone();
        v.first_leaf = 1;
        variants.push(v);
        let mut v = base.clone();
        v.leaf_count = 2;
        variants.push(v);
        let mut v = base.clone();
        v.root.0[31] ^= 1;
        variants.push(v);
        let mut v = base.clone();
        v.time.time.0 += 1;
        variants.push(v);
        let mut v = base.clone();
        v.time.uncertainty_ns += 1;
        variants.push(v);
        let mut v = base.clone();
        v.time.source = TimeSource::new("quorum").unwrap();
        variants.push(v);
        let l0 = link(&h, &prev, &base);
        for v in variants {
            assert_ne!(link(&h, &prev, &v), l0, "{v:?}");
        }
        assert_ne!(link(&h, &genesis(&h, "p"), &base), l0);
    }

    #[test]
    fn origin_and_time_source_validation() {
        assert!(validate_origin("example.com/log42").is_ok());
        for bad in ["", "a b", "a+b", "a\tb", "a\u{2003}b"] {
            assert!(validate_origin(bad).is_err(), "{bad:?}");
        }
        assert!(validate_origin(&"x".repeat(256)).is_err());
        assert!(TimeSource::new("quorum:3-of-5").is_ok());
        assert!(TimeSource::new("").is_err());
        assert!(TimeSource::new("a b").is_err());
        assert!(TimeSource::new(&"x".repeat(65)).is_err());
    }
}
