//! Checkpoints: C2SP tlog-checkpoint bodies with three Chronos extension
//! lines, signed as C2SP notes by the log's Ed25519 key.
//!
//! ```text
//! example.com/chronos/log1        origin (also the key name)
//! 4242                            tree size
//! <base64 root>                   root hash of the global tree
//! hash blake3                     the log's hash algorithm
//! chain 17 <base64 chain value>   batch seq and chain value at this size
//! time <ns> <uncertainty ns> <source>   trusted time of signing
//! ```

use crate::chain::{TimeNs, TimeSource, TrustedTime, validate_origin};
use crate::error::{FormatError, VerifyError};
use crate::hash::{Hash, HashAlg};
use crate::note::{Note, NoteSigner, NoteVerifier};

/// A checkpoint's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin.
    pub origin: String,
    /// Number of leaves in the global tree.
    pub size: u64,
    /// Root of the global tree at `size`.
    pub root: Hash,
    /// The log's hash algorithm.
    pub hash: HashAlg,
    /// Seq of the last batch in the tree (0 for the empty log).
    pub chain_seq: u64,
    /// Chain value of that batch (the genesis value for seq 0).
    pub chain_hash: Hash,
    /// When the checkpoint was signed.
    pub time: TrustedTime,
}

const WHAT: &str = "checkpoint";

/// Parses an ASCII decimal with no sign and no leading zeros ("0" itself is fine).
pub(crate) fn parse_decimal(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical { s.parse().ok() } else { None }
}

impl Checkpoint {
    /// The note text (six lines, each ending in a newline).
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\nhash {}\nchain {} {}\ntime {} {} {}\n",
            self.origin,
            self.size,
            self.root.to_base64(),
            self.hash.name(),
            self.chain_seq,
            self.chain_hash.to_base64(),
            self.time.time.0,
            self.time.uncertainty_ns,
            self.time.source
        )
    }

    /// Parses a checkpoint body. Strict: exactly these six lines, canonical
    /// numbers and base64, single spaces.
    pub fn from_body(text: &str) -> Result<Checkpoint, FormatError> {
        let bad = |line: usize, reason: &str| FormatError::malformed(WHAT, line, reason.to_owned());
        let body = text.strip_suffix('\n').ok_or_else(|| bad(0, "does not end with a newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        if lines.len() != 6 {
            return Err(bad(lines.len().min(6), &format!("expected 6 lines, found {}", lines.len())));
        }
        validate_origin(lines[0]).map_err(|_| bad(1, "origin is empty or has spaces, '+' or control characters"))?;
        let size = parse_decimal(lines[1]).ok_or_else(|| bad(2, "tree size is not a canonical decimal"))?;
        let root = Hash::from_base64(lines[2]).ok_or_else(|| bad(3, "root is not canonical base64 of 32 bytes"))?;
        let fields = |n: usize, key: &str, count: usize| -> Result<Vec<&str>, FormatError> {
            let f: Vec<&str> = lines[n - 1].split(' ').collect();
            if f.len() != count + 1 || f[0] != key {
                return Err(bad(n, &format!("expected `{key}` and {count} fields separated by single spaces")));
            }
            Ok(f[1..].to_vec())
        };
        let h = fields(4, "hash", 1)?;
        let hash = HashAlg::from_name(h[0]).ok_or_else(|| bad(4, &format!("unknown hash algorithm {:?}", h[0])))?;
        let c = fields(5, "chain", 2)?;
        let chain_seq = parse_decimal(c[0]).ok_or_else(|| bad(5, "chain seq is not a canonical decimal"))?;
        let chain_hash =
            Hash::from_base64(c[1]).ok_or_else(|| bad(5, "chain value is not canonical base64 of 32 bytes"))?;
        let t = fields(6, "time", 3)?;
        let time = TrustedTime {
            time: TimeNs(parse_decimal(t[0]).ok_or_else(|| bad(6, "time is not a canonical decimal"))?),
            uncertainty_ns: parse_decimal(t[1]).ok_or_else(|| bad(6, "uncertainty is not a canonical decimal"))?,
            source: TimeSource::new(t[2]).map_err(|_| bad(6, "time source is not 1..=64 printable characters"))?,
        };
        // Every batch holds at least one leaf: the empty log is seq 0, and
        // no chain can have more batches than leaves.
        if (size == 0) != (chain_seq == 0) || chain_seq > size {
            return Err(bad(5, &format!("chain seq {chain_seq} is impossible for tree size {size}")));
        }
        Ok(Checkpoint { origin: lines[0].to_owned(), size, root, hash, chain_seq, chain_hash, time })
    }

    /// For the empty log (size 0), checks what only the log's hasher can:
    /// the root is `H("")` and the chain value is the genesis value.
    pub fn check_empty(&self, hasher: &crate::hash::TreeHasher) -> Result<(), VerifyError> {
        if self.size == 0
            && (self.root != hasher.empty_root() || self.chain_hash != crate::chain::genesis(hasher, &self.origin))
        {
            return Err(VerifyError::EmptyLog);
        }
        Ok(())
    }

    /// Signs the checkpoint. The signer's key name must be the origin.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, FormatError> {
        if signer.name() != self.origin {
            return Err(FormatError::malformed(
                WHAT,
                1,
                format!("origin {:?} differs from the signing key's name {:?}", self.origin, signer.name()),
            ));
        }
        signer.sign(&self.body())
    }

    /// Verifies a signed checkpoint against the log's key and parses it. The
    /// origin must equal the key name: a Chronos log's key signs for one log.
    pub fn open(note: &[u8], verifier: &NoteVerifier) -> Result<(Checkpoint, Note), VerifyError> {
        let note = Note::parse(note)?;
        let text = note.verify(verifier)?;
        let cp = Checkpoint::from_body(text)?;
        if cp.origin != verifier.name() {
            return Err(VerifyError::OriginMismatch { expected: verifier.name().to_owned(), found: cp.origin });
        }
        Ok((cp, note))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_canonical() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("10"), Some(10));
        assert_eq!(parse_decimal("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "00", "01", "+1", "-1", " 1", "1 ", "1e3", "18446744073709551616", "١"] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }
}
