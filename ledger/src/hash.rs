//! The log's hash function `H`: BLAKE3 or SHA-256, optionally keyed, with the
//! RFC 6962 domain separation between leaves (`0x00`) and interior nodes (`0x01`).
//!
//! The algorithm is chosen once, when a log is created, and recorded with it
//! (configuration, database, and every checkpoint's `hash` line). Everything
//! hashed in a log — leaves, nodes, the empty root, the batch chain — uses the
//! same `H`, so a verifier needs exactly one piece of configuration.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit as _, Mac as _};
use sha2::Digest as _;
use zeroize::Zeroizing;

use crate::error::{FormatError, KeyError};

/// Length in bytes of every hash in a Chronos log, whatever the algorithm.
pub const HASH_LEN: usize = 32;

/// Prefix of a leaf hash input: `H(0x00 ‖ data)` (RFC 6962 §2.1).
pub const LEAF_PREFIX: u8 = 0x00;
/// Prefix of an interior node hash input: `H(0x01 ‖ left ‖ right)`.
pub const NODE_PREFIX: u8 = 0x01;

/// A 32-byte hash value: leaf hash, node hash, root or chain value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; HASH_LEN]);

impl Hash {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// Lower-case hex, as used in the database tools and JSON output.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Standard base64 with padding (RFC 4648 §4), as used in notes and proofs.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Parses exactly 64 hex digits (either case).
    pub fn from_hex(s: &str) -> Option<Hash> {
        let mut out = [0u8; HASH_LEN];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Hash(out))
    }

    /// Parses canonical standard base64 of exactly 32 bytes: padding required,
    /// no whitespace, and no non-zero trailing bits (one encoding per value).
    pub fn from_base64(s: &str) -> Option<Hash> {
        let bytes = decode_base64_canonical(s)?;
        Some(Hash(bytes.try_into().ok()?))
    }

    /// Builds a hash from a slice that must be exactly 32 bytes long.
    pub fn from_slice(b: &[u8]) -> Option<Hash> {
        Some(Hash(b.try_into().ok()?))
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Decodes standard base64 and rejects every non-canonical spelling, so that a
/// value has exactly one textual form (signed text must not be malleable).
pub(crate) fn decode_base64_canonical(s: &str) -> Option<Vec<u8>> {
    let bytes = B64.decode(s).ok()?;
    (B64.encode(&bytes) == s).then_some(bytes)
}

/// Decodes standard base64 with padding, accepting non-zero trailing bits.
pub(crate) fn decode_base64_lenient(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    LENIENT.decode(s).ok()
}

pub(crate) fn encode_base64(b: &[u8]) -> String {
    B64.encode(b)
}

/// The hash algorithm of a log. The names are the ones written in
/// configuration, the database and checkpoints (`hash <name>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HashAlg {
    /// BLAKE3: several times faster than SHA-256 on processors without SHA
    /// extensions; its proof files are Chronos's own (spec/ledger.md §9),
    /// which C2SP tools do not read.
    Blake3,
    /// SHA-256, the default of `chronos init`: the tree, checkpoints and
    /// proofs are those of RFC 6962 and C2SP tlog, so standard tooling and
    /// witnesses verify them.
    Sha256,
    /// BLAKE3 in keyed mode with a 32-byte secret key. Verifiers need the key.
    Blake3Keyed,
    /// HMAC-SHA-256 with a 32-byte secret key. Verifiers need the key.
    HmacSha256,
}

impl HashAlg {
    /// Every algorithm, in the order of the specification.
    pub const ALL: [HashAlg; 4] = [HashAlg::Blake3, HashAlg::Sha256, HashAlg::Blake3Keyed, HashAlg::HmacSha256];

    /// The wire name (`blake3`, `sha256`, `blake3-keyed`, `hmac-sha256`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlg::Blake3 => "blake3",
            HashAlg::Sha256 => "sha256",
            HashAlg::Blake3Keyed => "blake3-keyed",
            HashAlg::HmacSha256 => "hmac-sha256",
        }
    }

    /// Parses a wire name; `None` for anything else (names are case-sensitive).
    pub fn from_name(s: &str) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|a| a.name() == s)
    }

    /// Whether this algorithm needs a secret key (`CHRONOS_HMAC_KEY`).
    pub fn is_keyed(self) -> bool {
        matches!(self, HashAlg::Blake3Keyed | HashAlg::HmacSha256)
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A 32-byte secret key for the keyed modes, wiped from memory on drop.
pub struct HashKey(Zeroizing<[u8; 32]>);

impl HashKey {
    /// Parses 64 hex digits (the form `openssl rand -hex 32` prints), with
    /// surrounding whitespace ignored. The error never echoes the key.
    pub fn from_hex(s: &str) -> Result<HashKey, FormatError> {
        let s = s.trim();
        let mut key = Zeroizing::new([0u8; 32]);
        if s.len() != 64 || hex::decode_to_slice(s, key.as_mut()).is_err() {
            return Err(FormatError::malformed(
                "hash key",
                0,
                format!("expected 64 hex digits (32 bytes), got {} characters", s.len()),
            ));
        }
        Ok(HashKey(key))
    }

    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> HashKey {
        HashKey(Zeroizing::new(bytes))
    }
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(<redacted>)")
    }
}

#[derive(Clone)]
enum Engine {
    Blake3,
    Sha256,
    Blake3Keyed(Zeroizing<[u8; 32]>),
    // The key schedule is computed once; each hash clones the prepared state.
    HmacSha256(hmac::Hmac<sha2::Sha256>),
}

/// The log's `H`, ready to hash leaves, nodes and chain records.
///
/// Cheap to clone; `Send + Sync`, so one instance can serve many threads.
#[derive(Clone)]
pub struct TreeHasher {
    alg: HashAlg,
    engine: Engine,
}

impl fmt::Debug for TreeHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TreeHasher").field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl TreeHasher {
    /// A hasher for `alg`. Keyed algorithms require `key`; unkeyed ones refuse
    /// one, so that a configured key is never silently ignored.
    pub fn new(alg: HashAlg, key: Option<&HashKey>) -> Result<TreeHasher, KeyError> {
        let engine = match (alg, key) {
            (HashAlg::Blake3, None) => Engine::Blake3,
            (HashAlg::Sha256, None) => Engine::Sha256,
            (HashAlg::Blake3Keyed, Some(k)) => Engine::Blake3Keyed(k.0.clone()),
            (HashAlg::HmacSha256, Some(k)) => {
                let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(k.0.as_ref())
                    .map_err(|_| KeyError::Invalid("HMAC rejected the key length"))?;
                Engine::HmacSha256(mac)
            }
            (alg, None) => return Err(KeyError::Missing(alg)),
            (alg, Some(_)) => return Err(KeyError::Unexpected(alg)),
        };
        Ok(TreeHasher { alg, engine })
    }

    /// An unkeyed hasher; panics if `alg` is keyed (for tests and tools that
    /// have already checked).
    pub fn unkeyed(alg: HashAlg) -> TreeHasher {
        match TreeHasher::new(alg, None) {
            Ok(h) => h,
            Err(e) => panic!("TreeHasher::unkeyed({alg}): {e}"),
        }
    }

    /// The algorithm.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// `H(part0 ‖ part1 ‖ …)`.
    pub fn digest(&self, parts: &[&[u8]]) -> Hash {
        match &self.engine {
            Engine::Blake3 => {
                let mut h = blake3::Hasher::new();
                parts.iter().for_each(|p| {
                    h.update(p);
                });
                Hash(*h.finalize().as_bytes())
            }
            Engine::Blake3Keyed(key) => {
                let mut h = blake3::Hasher::new_keyed(key);
                parts.iter().for_each(|p| {
                    h.update(p);
                });
                Hash(*h.finalize().as_bytes())
            }
            Engine::Sha256 => {
                let mut h = sha2::Sha256::new();
                parts.iter().for_each(|p| h.update(p));
                Hash(h.finalize().into())
            }
            Engine::HmacSha256(prepared) => {
                let mut m = prepared.clone();
                parts.iter().for_each(|p| m.update(p));
                Hash(m.finalize().into_bytes().into())
            }
        }
    }

    /// Leaf hash of one event's exact bytes: `H(0x00 ‖ data)`.
    pub fn leaf(&self, data: &[u8]) -> Hash {
        self.digest(&[&[LEAF_PREFIX], data])
    }

    /// Interior node: `H(0x01 ‖ left ‖ right)`.
    pub fn node(&self, left: &Hash, right: &Hash) -> Hash {
        self.digest(&[&[NODE_PREFIX], &left.0, &right.0])
    }

    /// Root of the empty tree: `H("")` (RFC 6962 MTH({})).
    pub fn empty_root(&self) -> Hash {
        self.digest(&[])
    }

    /// A short public fingerprint of the key of a keyed log (8 bytes of
    /// `H(0x04 ‖ "chronos/key-check/v1")`), stored with the log so that a wrong
    /// `CHRONOS_HMAC_KEY` is reported at start instead of producing a
    /// ledger nobody can verify. `None` for unkeyed logs.
    pub fn key_check(&self) -> Option<[u8; 8]> {
        if !self.alg.is_keyed() {
            return None;
        }
        let h = self.digest(&[crate::spec::KEY_CHECK_TAG]);
        let mut out = [0u8; 8];
        out.copy_from_slice(&h.0[..8]);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_rejects_non_canonical_forms() {
        let h = Hash([7u8; 32]);
        let s = h.to_base64();
        assert_eq!(Hash::from_base64(&s), Some(h));
        // Same bytes, different trailing bits in the last character.
        let mut t = s.clone().into_bytes();
        let last = t.len() - 2; // before the single '='
        // A canonical final character has its two padding bits clear; the
        // next character of the alphabet sets one of them.
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let pos = ALPHABET.iter().position(|&c| c == t[last]).unwrap();
        t[last] = ALPHABET[pos + 1];
        assert_eq!(Hash::from_base64(std::str::from_utf8(&t).unwrap()), None);
        assert_eq!(Hash::from_base64(s.trim_end_matches('=')), None);
        assert_eq!(Hash::from_base64(&format!(" {s}")), None);
        assert_eq!(Hash::from_base64(&encode_base64(&[1u8; 31])), None);
    }

    #[test]
    fn keyed_algorithms_need_a_key_and_unkeyed_refuse_one() {
        let key = HashKey::from_bytes([1; 32]);
        assert!(matches!(TreeHasher::new(HashAlg::Blake3Keyed, None), Err(KeyError::Missing(_))));
        assert!(matches!(TreeHasher::new(HashAlg::HmacSha256, None), Err(KeyError::Missing(_))));
        assert!(matches!(TreeHasher::new(HashAlg::Sha256, Some(&key)), Err(KeyError::Unexpected(_))));
        assert!(TreeHasher::new(HashAlg::HmacSha256, Some(&key)).is_ok());
    }

    #[test]
    fn key_check_depends_on_the_key() {
        let a = TreeHasher::new(HashAlg::Blake3Keyed, Some(&HashKey::from_bytes([1; 32]))).unwrap();
        let b = TreeHasher::new(HashAlg::Blake3Keyed, Some(&HashKey::from_bytes([2; 32]))).unwrap();
        assert_ne!(a.key_check(), b.key_check());
        assert_eq!(TreeHasher::unkeyed(HashAlg::Blake3).key_check(), None);
    }

    #[test]
    fn hash_key_parsing_does_not_echo_the_key() {
        let err = HashKey::from_hex("zz").unwrap_err().to_string();
        assert!(!err.contains("zz"), "{err}");
        assert!(HashKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(HashKey::from_hex(&"ab".repeat(31)).is_err());
    }

    #[test]
    fn alg_names_round_trip() {
        for alg in HashAlg::ALL {
            assert_eq!(HashAlg::from_name(alg.name()), Some(alg));
        }
        assert_eq!(HashAlg::from_name("SHA256"), None);
    }
}
