//! Roughtime client without I/O: the request to send, the checks a signed
//! answer must pass, the correctness interval it gives, and the chaining
//! of a round's requests that turns a lying server's answer into a
//! malfeasance report anyone holding its public key can re-check.
//!
//! Three versions of the protocol are spoken, because servers in the field
//! speak all three:
//!
//! * [`Version::Google`], Google's original protocol (roughenough's
//!   "classic"): bare messages, a 64-byte nonce that is itself the Merkle
//!   leaf, full 64-byte SHA-512 tree hashes, times in microseconds;
//! * [`Version::IetfDraft`], number 0x8000000c, which drafts 12 to 19 of
//!   draft-ietf-ntp-roughtime test with (roughenough 1.3's `RfcDraft14`):
//!   `ROUGHTIM`-framed packets, a `VER` list to negotiate with, a 32-byte
//!   nonce, the whole request packet as the Merkle leaf, SHA-512 truncated
//!   to 32 bytes, times in seconds;
//! * [`Version::Rfc`], RFC 10049's version 1: as the drafts, but with
//!   `Roughtime` rather than `RoughTime` in its signature context strings.
//!
//! What a verified answer proves: the server's online key, delegated by its
//! long-term key for `[MINT, MAXT]`, signed that true time lay within
//! `MIDP ± RADI` at some instant after our request existed (its nonce is
//! a leaf under the signed Merkle root) and before the answer reached us.
//! Nothing here reads a clock or a socket: the caller sends the bytes,
//! keeps its own send and receive instants, and hands the answer back.

pub mod chain;
pub mod request;
pub mod response;
pub mod server;
pub mod wire;

pub use chain::{Contradiction, Link, MalfeasanceReport, Round, chain_nonce, check_chain, check_report};
pub use request::Request;
pub use response::{Verified, verify};
pub use wire::{Message, Tag};

use sha2::{Digest, Sha512};

/// An Ed25519 public key: a server's long-term identity or its online key.
pub type PublicKey = [u8; 32];

/// A version of the Roughtime protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// Google's original protocol, unframed and without version numbers.
    Google,
    /// The IETF drafts' experimental version 0x8000000c.
    IetfDraft,
    /// RFC 10049's version 1.
    Rfc,
}

impl Version {
    /// Every version, Google's first.
    pub const ALL: [Version; 3] = [Version::Google, Version::IetfDraft, Version::Rfc];

    /// Its number in `VER` and `VERS`; Google's protocol has none.
    pub const fn number(self) -> Option<u32> {
        match self {
            Version::Google => None,
            Version::IetfDraft => Some(0x8000_000c),
            Version::Rfc => Some(1),
        }
    }

    /// The version a `VER` number names, if this core speaks it.
    pub fn from_number(n: u32) -> Option<Version> {
        Version::ALL.into_iter().find(|v| v.number() == Some(n))
    }

    /// Whether its packets carry the `ROUGHTIM` header and `VER`.
    pub const fn is_ietf(self) -> bool {
        !matches!(self, Version::Google)
    }

    /// Length of a request nonce (and of a chaining `rand`).
    pub const fn nonce_len(self) -> usize {
        match self {
            Version::Google => 64,
            _ => 32,
        }
    }

    /// Length of a Merkle tree hash: SHA-512 whole, or truncated.
    pub const fn hash_len(self) -> usize {
        match self {
            Version::Google => 64,
            _ => 32,
        }
    }

    /// What the long-term key signs before `DELE`'s bytes.
    pub const fn delegation_context(self) -> &'static [u8] {
        match self {
            Version::Google => b"RoughTime v1 delegation signature--\x00",
            Version::IetfDraft => b"RoughTime v1 delegation signature\x00",
            Version::Rfc => b"Roughtime v1 delegation signature\x00",
        }
    }

    /// What the online key signs before `SREP`'s bytes.
    pub const fn response_context(self) -> &'static [u8] {
        match self {
            Version::Rfc => b"Roughtime v1 response signature\x00",
            _ => b"RoughTime v1 response signature\x00",
        }
    }

    /// Nanoseconds in the unit of `MIDP`, `RADI`, `MINT` and `MAXT`:
    /// microseconds in Google's protocol, seconds in the IETF's.
    pub const fn ns_per_unit(self) -> u64 {
        match self {
            Version::Google => 1_000,
            _ => 1_000_000_000,
        }
    }
}

/// SHA-512 of the concatenated `parts`, truncated to `len` bytes (at most 64).
pub fn hash(len: usize, parts: &[&[u8]]) -> Vec<u8> {
    let mut h = Sha512::new();
    for p in parts {
        h.update(p);
    }
    let mut out = h.finalize().to_vec();
    out.truncate(len);
    out
}

/// The Merkle leaf of `data` (Google: the nonce; IETF: the request packet).
pub fn leaf_hash(version: Version, data: &[u8]) -> Vec<u8> {
    hash(version.hash_len(), &[&[0x00], data])
}

/// The Merkle node over two children.
pub fn node_hash(version: Version, left: &[u8], right: &[u8]) -> Vec<u8> {
    hash(version.hash_len(), &[&[0x01], left, right])
}

/// The `SRV` value that names a long-term key in an IETF request:
/// SHA-512(0xff || key), truncated to 32 bytes.
pub fn srv(long_term_key: &PublicKey) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(&hash(32, &[&[0xff], long_term_key]));
    out
}
