//! Errors, grouped by who is at fault.
//!
//! * [`FormatError`]: bytes that are not a valid encoding (a note, checkpoint,
//!   proof file or key). Whoever produced them is at fault; never retried.
//! * [`VerifyError`]: well-formed data that does not verify — a signature, a
//!   proof, a chain link. This is what tampering looks like.
//! * [`KeyError`]: the configured hash key does not fit the log's algorithm.
//! * [`ChainError`] and [`RangeError`]: a caller asked for something the
//!   ledger's rules forbid (a gap in the chain, a proof for a leaf beyond the
//!   tree). These are bugs in the caller, or corrupt state it read.

use crate::hash::HashAlg;

/// Input that is not a valid encoding. `line` is 1-based; 0 when the problem
/// is not tied to a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The input is larger than the format allows.
    #[error("{what}: {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { what: &'static str, len: usize, max: usize },
    /// The input is not UTF-8.
    #[error("{what}: not valid UTF-8")]
    NotUtf8 { what: &'static str },
    /// A control character other than newline.
    #[error("{what}: control character U+{code:04X} at byte {offset}")]
    ControlCharacter { what: &'static str, code: u32, offset: usize },
    /// Anything else, described.
    #[error("{what}: line {line}: {reason}")]
    Malformed { what: &'static str, line: usize, reason: String },
    /// A proof file whose first line is the one of another hash algorithm
    /// than the one its checkpoint's `hash` line names.
    #[error(
        "proof file: line 1: {} is the first line of {header} proof files, but the checkpoint says `hash {checkpoint}`, \
         whose proof files begin with {}",
        crate::proof::header(*header),
        crate::proof::header(*checkpoint)
    )]
    ProofHeaderMismatch { header: HashAlg, checkpoint: HashAlg },
}

impl FormatError {
    pub(crate) fn malformed(what: &'static str, line: usize, reason: impl Into<String>) -> FormatError {
        FormatError::Malformed { what, line, reason: reason.into() }
    }
}

/// Well-formed data that fails verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The input could not even be parsed.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// No signature on the note is by a trusted key (name and key ID).
    #[error("no signature by a trusted key (expected key {expected})")]
    NoTrustedSignature { expected: String },
    /// A signature by a trusted key (name and key ID match) does not verify.
    #[error("signature by {key} does not verify")]
    BadSignature { key: String },
    /// The checkpoint's origin is not the one of the trusted key.
    #[error("checkpoint origin {found:?} does not match the log's origin {expected:?}")]
    OriginMismatch { expected: String, found: String },
    /// An inclusion proof does not lead to the checkpoint's root.
    #[error("inclusion proof for leaf {index} in tree of size {size} does not verify")]
    Inclusion { index: u64, size: u64 },
    /// A consistency proof does not link the two roots.
    #[error("consistency proof from size {old} to size {new} does not verify")]
    Consistency { old: u64, new: u64 },
    /// A checkpoint of the empty log whose root is not `H("")` or whose chain
    /// value is not the genesis value.
    #[error("checkpoint of the empty log has a root other than H(\"\") or a chain value other than the genesis value")]
    EmptyLog,
    /// The event bytes given do not hash to the proven leaf.
    #[error("the event's leaf hash {computed} differs from the proven leaf hash {proven}")]
    LeafMismatch { computed: String, proven: String },
    /// The proof carries no leaf hash and no event was given.
    #[error("nothing to prove: the proof carries no leaf hash and no event bytes were given")]
    NoLeaf,
    /// The proof's checkpoint uses a keyed hash but no key was given, or the reverse.
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A hash key that does not fit the algorithm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A keyed algorithm without a key.
    #[error("hash algorithm {0} is keyed: set CHRONOS_HMAC_KEY to the log's 32-byte key (64 hex digits)")]
    Missing(HashAlg),
    /// A key given for an unkeyed algorithm.
    #[error("hash algorithm {0} takes no key, but one was given (unset CHRONOS_HMAC_KEY)")]
    Unexpected(HashAlg),
    /// The key was refused.
    #[error("invalid hash key: {0}")]
    Invalid(&'static str),
}

/// A batch that does not extend the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// Batch sequence numbers are consecutive, starting at 1.
    #[error("batch seq {found} does not follow {expected_prev}")]
    SeqGap { expected_prev: u64, found: u64 },
    /// A batch's first leaf is the previous batch's end.
    #[error("batch seq {seq} starts at leaf {found}, expected {expected}")]
    LeafGap { seq: u64, expected: u64, found: u64 },
    /// Batches hold at least one leaf.
    #[error("batch seq {seq} is empty")]
    Empty { seq: u64 },
    /// Leaf indices would overflow.
    #[error("batch seq {seq} overflows the leaf index space")]
    Overflow { seq: u64 },
}

/// A proof asked for a leaf or size outside the tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// `index` is not below `size`.
    #[error("leaf index {index} is outside a tree of size {size}")]
    Leaf { index: u64, size: u64 },
    /// The old size is larger than the new one.
    #[error("cannot prove consistency from size {old} to the smaller size {new}")]
    Sizes { old: u64, new: u64 },
    /// The node source returned the wrong number of hashes.
    #[error("node source returned {got} hashes for {want} node ids")]
    NodeCount { want: usize, got: usize },
}
