//! Offline proofs of *when* an event was logged: checkable, like a proof
//! file, with nothing but the log's verifier key.
//!
//! A time proof holds the inclusion proof of the leaf in the first signed
//! checkpoint that covers it (`after`), and the last signed checkpoint
//! that does not (`before`) with a consistency proof from it to `after`.
//! The log signs each checkpoint with its trusted time (`time` line), so
//! the leaf was logged after `before` was signed and before `after` was:
//! between `before.time - before.uncertainty` and `after.time +
//! after.uncertainty`. Without `before` (the leaf is in the log's first
//! checkpoint) only the upper end is proven.
//!
//! Layout (spec/ledger.md §9.1):
//!
//! ```text
//! chronos/time-proof@v1
//! before <base64 of the earlier checkpoint's note>     (absent without one)
//! consistency <base64 hash>                            (zero or more)
//!
//! <the proof file of the leaf in the later checkpoint, §9>
//! ```

use crate::checkpoint::Checkpoint;
use crate::error::{FormatError, VerifyError};
use crate::hash::{Hash, HashKey, TreeHasher, decode_base64_canonical, encode_base64};
use crate::note::NoteVerifier;
use crate::proof::{ProofFile, VerifiedProof};
use crate::spec::{MAX_PROOF_BYTES, MAX_PROOF_HASHES};
use crate::tree::verify_consistency;

/// First line of a time proof.
pub const TIME_PROOF_HEADER: &str = "chronos/time-proof@v1";
const WHAT: &str = "time proof";

/// A parsed time proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeProof {
    /// The last signed checkpoint without the leaf, verbatim, and the
    /// consistency proof from it to the inclusion proof's checkpoint.
    pub before: Option<(String, Vec<Hash>)>,
    /// The leaf in the first signed checkpoint that covers it.
    pub inclusion: ProofFile,
}

/// What a verified time proof established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvenTime {
    pub inclusion: VerifiedProof,
    pub before: Option<Checkpoint>,
    /// The leaf was logged no earlier than this (Unix ns), if known.
    pub earliest_ns: Option<u64>,
    /// The leaf was logged no later than this (Unix ns).
    pub latest_ns: u64,
}

impl TimeProof {
    /// Whether `input` is a time proof (by its first line).
    pub fn is_time_proof(input: &[u8]) -> bool {
        input.starts_with(format!("{TIME_PROOF_HEADER}\n").as_bytes())
    }

    pub fn encode(&self) -> Result<String, FormatError> {
        let mut out = format!("{TIME_PROOF_HEADER}\n");
        if let Some((note, consistency)) = &self.before {
            out.push_str(&format!("before {}\n", encode_base64(note.as_bytes())));
            for h in consistency {
                out.push_str(&format!("consistency {}\n", h.to_base64()));
            }
        }
        out.push('\n');
        out.push_str(&self.inclusion.encode()?);
        Ok(out)
    }

    pub fn parse(input: &[u8]) -> Result<TimeProof, FormatError> {
        let max = 2 * MAX_PROOF_BYTES;
        if input.len() > max {
            return Err(FormatError::TooLarge { what: WHAT, len: input.len(), max });
        }
        let s = std::str::from_utf8(input).map_err(|_| FormatError::NotUtf8 { what: WHAT })?;
        let bad = |line: usize, reason: &str| FormatError::malformed(WHAT, line, reason.to_owned());
        let Some((head, inclusion)) = s.split_once("\n\n") else {
            return Err(bad(1, "no empty line before the inclusion proof"));
        };
        let mut lines = head.split('\n');
        if lines.next() != Some(TIME_PROOF_HEADER) {
            return Err(bad(1, &format!("first line must be {TIME_PROOF_HEADER}")));
        }
        let mut before: Option<(String, Vec<Hash>)> = None;
        for (i, line) in lines.enumerate() {
            let n = i + 2;
            if let Some(b64) = line.strip_prefix("before ") {
                if before.is_some() {
                    return Err(bad(n, "a second `before` line"));
                }
                let note = decode_base64_canonical(b64)
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| bad(n, "`before` is not canonical base64 of a UTF-8 note"))?;
                before = Some((note, Vec::new()));
            } else if let Some(b64) = line.strip_prefix("consistency ") {
                let Some((_, proof)) = before.as_mut() else {
                    return Err(bad(n, "a `consistency` line without `before`"));
                };
                if proof.len() == MAX_PROOF_HASHES {
                    return Err(bad(n, &format!("more than {MAX_PROOF_HASHES} consistency hashes")));
                }
                proof.push(Hash::from_base64(b64).ok_or_else(|| bad(n, "not canonical base64 of 32 bytes"))?);
            } else {
                return Err(bad(n, "expected `before` or `consistency`"));
            }
        }
        Ok(TimeProof { before, inclusion: ProofFile::parse(inclusion.as_bytes())? })
    }

    /// Verifies the inclusion proof (as [`ProofFile::verify`]), then that
    /// `before` is signed by the same key, does not hold the leaf, and is a
    /// prefix of the later checkpoint; returns the proven interval.
    pub fn verify(
        &self,
        verifier: &NoteVerifier,
        key: Option<&HashKey>,
        event: Option<&[u8]>,
    ) -> Result<ProvenTime, VerifyError> {
        let inclusion = self.inclusion.verify(verifier, key, event)?;
        let after = &inclusion.checkpoint;
        let latest_ns = after.time.time.0.saturating_add(after.time.uncertainty_ns);
        let Some((note, consistency)) = &self.before else {
            return Ok(ProvenTime { inclusion, before: None, earliest_ns: None, latest_ns });
        };
        let (before, _) = Checkpoint::open(note.as_bytes(), verifier)?;
        let malformed = |reason: String| VerifyError::Format(FormatError::malformed(WHAT, 2, reason));
        if before.size > inclusion.index {
            return Err(malformed(format!(
                "the earlier checkpoint (size {}) already holds leaf {}: it proves nothing about when it was logged",
                before.size, inclusion.index
            )));
        }
        if before.hash != after.hash {
            return Err(malformed("the two checkpoints name different hash algorithms".into()));
        }
        let hasher = TreeHasher::new(after.hash, key)?;
        verify_consistency(&hasher, before.size, after.size, &before.root, &after.root, consistency)?;
        let earliest_ns = before.time.time.0.saturating_sub(before.time.uncertainty_ns);
        if earliest_ns > latest_ns {
            return Err(malformed("the earlier checkpoint was signed after the later one".into()));
        }
        Ok(ProvenTime { inclusion, before: Some(before), earliest_ns: Some(earliest_ns), latest_ns })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_heads_are_refused_with_their_line() {
        let tail = "\n\nc2sp.org/tlog-proof@v1\nindex 0\n\nx\n";
        for (head, why) in [
            ("chronos/time-proof@v2", "first line"),
            ("chronos/time-proof@v1\nconsistency AAAA", "without `before`"),
            ("chronos/time-proof@v1\nbefore !!", "canonical base64"),
            ("chronos/time-proof@v1\nbefore YQ==\nbefore YQ==", "second `before`"),
            ("chronos/time-proof@v1\nafter YQ==", "expected `before`"),
        ] {
            let e = TimeProof::parse(format!("{head}{tail}").as_bytes()).unwrap_err().to_string();
            assert!(e.contains(why), "{head:?}: {e}");
        }
        assert!(TimeProof::parse(b"chronos/time-proof@v1\nbefore YQ==").is_err(), "no inclusion proof");
        assert!(TimeProof::is_time_proof(b"chronos/time-proof@v1\n\n"));
        assert!(!TimeProof::is_time_proof(b"c2sp.org/tlog-proof@v1\n"));
    }
}
