//! Offline proof files: an inclusion proof and the signed checkpoint it
//! leads to, checkable with nothing but the log's verifier key (and, for
//! keyed logs, the hash key).
//!
//! Chronos writes the proven leaf hash as the `extra` data (32 bytes), so a
//! proof can be checked without the event; given the event's bytes, the
//! verifier also checks that they hash to that leaf.
//!
//! The file of a SHA-256 log is a c2sp.org/tlog-proof@v1 file byte for byte,
//! which other tlog-proof tools read. The files of other algorithms have the
//! same layout under a first line of Chronos's own that names the algorithm
//! ([`header`]), so that no C2SP verifier takes their hashes for SHA-256
//! ones. The algorithm has one source, the `hash` line of the signed
//! checkpoint inside the file: the first line is derived from it when a file
//! is written, and a file whose first line says otherwise is refused.

use crate::checkpoint::{Checkpoint, parse_decimal};
use crate::error::{FormatError, VerifyError};
use crate::hash::{Hash, HashAlg, HashKey, TreeHasher, decode_base64_canonical, encode_base64};
use crate::note::{Note, NoteVerifier};
use crate::spec::{MAX_PROOF_BYTES, MAX_PROOF_HASHES};
use crate::tree::verify_inclusion;

/// First line of the proof files of `sha256` logs: C2SP's own.
pub const C2SP_PROOF_HEADER: &str = "c2sp.org/tlog-proof@v1";
const WHAT: &str = "proof file";

/// The first line of the proof files of a log hashing with `alg`
/// (spec/ledger.md §9): [`C2SP_PROOF_HEADER`] for `sha256`, else
/// `chronos/tlog-proof-<algorithm name>@v1`.
pub fn header(alg: HashAlg) -> &'static str {
    match alg {
        HashAlg::Sha256 => C2SP_PROOF_HEADER,
        HashAlg::Blake3 => "chronos/tlog-proof-blake3@v1",
        HashAlg::Blake3Keyed => "chronos/tlog-proof-blake3-keyed@v1",
        HashAlg::HmacSha256 => "chronos/tlog-proof-hmac-sha256@v1",
    }
}

/// The algorithm whose proof files begin with `line`, if any.
fn header_alg(line: &str) -> Option<HashAlg> {
    HashAlg::ALL.into_iter().find(|&alg| header(alg) == line)
}

/// The algorithm the `hash` line of a signed checkpoint names, read before
/// the signature is checked. It only chooses or checks a file's first line:
/// [`ProofFile::verify`] hashes with what the verified checkpoint says.
fn checkpoint_alg(note: &str) -> Result<HashAlg, FormatError> {
    let note = Note::parse(note.as_bytes())?;
    Ok(Checkpoint::from_body(note.text_unverified())?.hash)
}

/// A parsed proof file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProofFile {
    /// Opaque extra data; Chronos puts the 32-byte leaf hash here. Untrusted.
    pub extra: Option<Vec<u8>>,
    /// Index of the proven leaf.
    pub index: u64,
    /// Inclusion proof, from the leaf's sibling to the root's child.
    pub path: Vec<Hash>,
    /// The signed checkpoint, verbatim.
    pub checkpoint: String,
}

/// What a successful verification established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedProof {
    /// The checkpoint the leaf is included in.
    pub checkpoint: Checkpoint,
    /// The proven leaf hash.
    pub leaf: Hash,
    /// The leaf's index.
    pub index: u64,
}

/// Splits off the first line (without its newline); the caller has checked
/// that a newline follows.
fn take_line<'a>(rest: &mut &'a str) -> &'a str {
    let (line, tail) = rest.split_once('\n').unwrap_or((rest, ""));
    *rest = tail;
    line
}

impl ProofFile {
    /// The file's bytes, under the first line of the algorithm that the
    /// checkpoint's `hash` line names. Fails if `checkpoint` is not a signed
    /// checkpoint (its signature is not checked here).
    pub fn encode(&self) -> Result<String, FormatError> {
        let mut out = format!("{}\n", header(checkpoint_alg(&self.checkpoint)?));
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", encode_base64(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.path {
            out.push_str(&h.to_base64());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        Ok(out)
    }

    /// Parses a proof file. The checkpoint is read only for the algorithm its
    /// `hash` line names, which must be the one of the first line; its
    /// signature is checked by [`ProofFile::verify`].
    pub fn parse(input: &[u8]) -> Result<ProofFile, FormatError> {
        if input.len() > MAX_PROOF_BYTES {
            return Err(FormatError::TooLarge { what: WHAT, len: input.len(), max: MAX_PROOF_BYTES });
        }
        let s = std::str::from_utf8(input).map_err(|_| FormatError::NotUtf8 { what: WHAT })?;
        let bad = |line: usize, reason: &str| FormatError::malformed(WHAT, line, reason.to_owned());
        let mut rest = s;
        let mut lineno = 0;
        let mut next_line = |rest: &mut &'_ str| -> Result<usize, FormatError> {
            lineno += 1;
            if rest.contains('\n') { Ok(lineno) } else { Err(bad(lineno, "unexpected end of file")) }
        };
        let n = next_line(&mut rest)?;
        let Some(declared) = header_alg(take_line(&mut rest)) else {
            return Err(bad(n, &format!("first line must be {C2SP_PROOF_HEADER} or chronos/tlog-proof-<hash>@v1")));
        };
        let mut n = next_line(&mut rest)?;
        let mut line = take_line(&mut rest);
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            extra = Some(decode_base64_canonical(b64).ok_or_else(|| bad(n, "extra data is not canonical base64"))?);
            n = next_line(&mut rest)?;
            line = take_line(&mut rest);
        }
        let index = line
            .strip_prefix("index ")
            .and_then(parse_decimal)
            .ok_or_else(|| bad(n, "expected `index` and a canonical decimal"))?;
        let mut path = Vec::new();
        loop {
            let n = next_line(&mut rest)?;
            line = take_line(&mut rest);
            if line.is_empty() {
                break;
            }
            if path.len() == MAX_PROOF_HASHES {
                return Err(bad(n, &format!("more than {MAX_PROOF_HASHES} proof hashes")));
            }
            path.push(Hash::from_base64(line).ok_or_else(|| bad(n, "proof hash is not canonical base64 of 32 bytes"))?);
        }
        if rest.is_empty() {
            return Err(bad(lineno + 1, "no checkpoint after the proof"));
        }
        let named = checkpoint_alg(rest)?;
        if named != declared {
            return Err(FormatError::ProofHeaderMismatch { header: declared, checkpoint: named });
        }
        Ok(ProofFile { extra, index, path, checkpoint: rest.to_owned() })
    }

    /// The leaf hash Chronos carries in `extra`, if any.
    pub fn leaf_hash(&self) -> Result<Option<Hash>, FormatError> {
        match &self.extra {
            None => Ok(None),
            Some(e) => Hash::from_slice(e)
                .map(Some)
                .ok_or_else(|| FormatError::malformed(WHAT, 2, "extra data is not a 32-byte leaf hash")),
        }
    }

    /// Verifies the proof offline: the checkpoint's signature by `verifier`,
    /// then the inclusion of the leaf (from `extra`, and/or from `event`'s
    /// bytes, which must agree) in the checkpoint's tree. `key` is the hash
    /// key of a keyed log.
    pub fn verify(
        &self,
        verifier: &NoteVerifier,
        key: Option<&HashKey>,
        event: Option<&[u8]>,
    ) -> Result<VerifiedProof, VerifyError> {
        let (checkpoint, _) = Checkpoint::open(self.checkpoint.as_bytes(), verifier)?;
        let hasher = TreeHasher::new(checkpoint.hash, key)?;
        // `extra` is opaque in C2SP: when the event is given, an `extra` that
        // is not a Chronos leaf hash is simply not used.
        let carried = match (self.leaf_hash(), event) {
            (Ok(h), _) => h,
            (Err(_), Some(_)) => None,
            (Err(e), None) => return Err(e.into()),
        };
        let leaf = match (carried, event) {
            (Some(proven), Some(ev)) => {
                let computed = hasher.leaf(ev);
                if computed != proven {
                    return Err(VerifyError::LeafMismatch { computed: computed.to_hex(), proven: proven.to_hex() });
                }
                proven
            }
            (Some(proven), None) => proven,
            (None, Some(ev)) => hasher.leaf(ev),
            (None, None) => return Err(VerifyError::NoLeaf),
        };
        verify_inclusion(&hasher, self.index, checkpoint.size, &leaf, &self.path, &checkpoint.root)?;
        Ok(VerifiedProof { checkpoint, leaf, index: self.index })
    }
}
