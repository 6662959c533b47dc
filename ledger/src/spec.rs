//! Constants fixed by spec/ledger.md. Changing any of them changes every hash
//! of every log; they are versioned in their own bytes (`/v1`) instead.

/// Prefix of a batch-chain hash input: `0x02` then the ASCII tag.
pub const CHAIN_TAG: &[u8] = b"\x02chronos/chain/v1";
/// Prefix of the genesis chain value: `0x03` then the ASCII tag.
pub const GENESIS_TAG: &[u8] = b"\x03chronos/genesis/v1";
/// Input of the key fingerprint of keyed logs.
pub const KEY_CHECK_TAG: &[u8] = b"\x04chronos/key-check/v1";

/// Largest signed note (checkpoint with cosignatures) accepted by parsers.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// Largest number of signature lines accepted on one note (C2SP requires ≥ 16).
pub const MAX_NOTE_SIGNATURES: usize = 64;
/// Largest proof file accepted by parsers.
pub const MAX_PROOF_BYTES: usize = MAX_NOTE_BYTES + 8 * 1024;
/// Largest number of hashes in an inclusion proof (trees have < 2^64 leaves).
pub const MAX_PROOF_HASHES: usize = 64;
/// Longest origin / key name, in bytes.
pub const MAX_ORIGIN_BYTES: usize = 255;
/// Longest time source identifier, in bytes.
pub const MAX_TIME_SOURCE_BYTES: usize = 64;
