//! Verifying a server's answer to a request, and the correctness interval
//! it gives.
//!
//! A response holds `SREP` (the signed part: `ROOT`, `MIDP`, `RADI`, and
//! in IETF versions `VER`, `VERS`), `SIG` (the online key's signature
//! over `SREP`), `CERT` (`DELE` = the online key `PUBK` and its validity
//! `MINT`..`MAXT`, signed by the long-term key), and `INDX` and `PATH`,
//! the Merkle path from our request's leaf to `ROOT`. The server signs one
//! root for a whole batch of requests; the path proves ours was in it, so
//! the signed time came after our nonce existed.
//!
//! The checks, in order: the packet and its messages parse; an IETF
//! answer has `TYPE` 1, echoes our nonce and answers in a version we
//! offered (and that its `VERS` lists); the long-term key signed `DELE`;
//! the online key signed `SREP`; the path leads from our request to
//! `ROOT`; `MINT <= MIDP <= MAXT`; an IETF `RADI` is not zero.
//!
//! One leniency, for the drafts' version only: roughenough 1.3 builds its
//! trees from whole 64-byte SHA-512 nodes and truncates only the root, so
//! its answers to batches of more than one request carry 64-byte path
//! hashes. A path that fails the draft's tree is tried as such a tree. It
//! proves as much: either way our leaf hashes up to the root the server
//! signed, which only inclusion (or a broken SHA-512) can do.

use ed25519_dalek::{Signature, VerifyingKey};

use super::request::Request;
use super::wire::{self, Message, Tag, WireError};
use super::{PublicKey, Version};
use crate::Interval;

/// A Merkle path has at most this many steps (draft-ietf-ntp-roughtime 5.2.4).
pub const MAX_PATH_DEPTH: usize = 32;

/// A verified answer: what the server vouches for, and the signed bytes
/// that make it evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The version the server answered in.
    pub version: Version,
    /// `MIDP` in Unix nanoseconds.
    pub midpoint_ns: u64,
    /// `RADI` in nanoseconds.
    pub radius_ns: u64,
    /// `midpoint ± radius`: true time lay in it at some instant between
    /// the request's sending and the answer's arrival.
    pub interval: Interval,
    /// The online key and the span its delegation covers.
    pub delegation: Delegation,
    /// The signed bytes, as received.
    pub signed: Signed,
}

impl Verified {
    /// The correctness interval at the local instant the answer arrived,
    /// `round_trip_ns` after the request left: the server signed at some
    /// instant in between, so true time at arrival is up to the whole
    /// round trip later than the signed interval says (and, since time
    /// runs forward, no earlier).
    pub fn at_arrival(&self, round_trip_ns: u64) -> Interval {
        Interval { earliest: self.interval.earliest, latest: self.interval.latest.saturating_add(round_trip_ns) }
    }
}

/// The online key delegated by the long-term key, for `[min_ns, max_ns]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delegation {
    pub online_key: PublicKey,
    /// `MINT` in Unix nanoseconds (saturated).
    pub min_ns: u64,
    /// `MAXT` in Unix nanoseconds (saturated).
    pub max_ns: u64,
}

/// The two signed messages of an answer and their signatures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    /// `SREP`'s bytes, signed by the online key.
    pub srep: Vec<u8>,
    pub srep_signature: [u8; 64],
    /// `DELE`'s bytes, signed by the long-term key.
    pub dele: Vec<u8>,
    pub dele_signature: [u8; 64],
}

/// Why an answer was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed {what}: {source}")]
    Malformed { what: &'static str, source: WireError },
    #[error("an IETF request answered without the ROUGHTIM header, or a Google one with it")]
    WrongFraming,
    #[error("{what} lacks its {tag} tag")]
    Missing { what: &'static str, tag: Tag },
    #[error("{tag} is {actual} bytes, not {expected}")]
    Length { tag: Tag, expected: usize, actual: usize },
    #[error("TYPE is not the response type 1")]
    NotAResponse,
    #[error("the answer echoes another nonce than ours")]
    WrongNonce,
    #[error("the answer's version {0:#010x} was not offered")]
    VersionNotOffered(u32),
    #[error("VERS does not list the answer's own version")]
    VersionNotListed,
    #[error("the long-term public key is not a valid Ed25519 key")]
    BadLongTermKey,
    #[error("PUBK is not a valid Ed25519 key")]
    BadOnlineKey,
    #[error("the long-term key's signature over DELE does not verify")]
    BadDelegationSignature,
    #[error("the online key's signature over SREP does not verify")]
    BadResponseSignature,
    #[error("PATH is {actual} bytes: not a whole number of {hash_len}-byte hashes, or more than 32")]
    BadPath { actual: usize, hash_len: usize },
    #[error("INDX {0} names a leaf deeper than PATH reaches")]
    IndexBeyondPath(u32),
    #[error("our request is not under the signed ROOT: wrong nonce, INDX or PATH")]
    NotInTree,
    #[error("MIDP {midp} lies outside the delegation's MINT {mint} to MAXT {maxt}")]
    OutsideDelegation { midp: u64, mint: u64, maxt: u64 },
    #[error("RADI is zero")]
    ZeroRadius,
}

fn decode(what: &'static str, b: &[u8]) -> Result<Message, ResponseError> {
    Message::decode(b).map_err(|source| ResponseError::Malformed { what, source })
}

fn field<'m>(m: &'m Message, what: &'static str, tag: Tag) -> Result<&'m [u8], ResponseError> {
    m.get(tag).ok_or(ResponseError::Missing { what, tag })
}

fn fixed<const N: usize>(m: &Message, what: &'static str, tag: Tag) -> Result<[u8; N], ResponseError> {
    let v = field(m, what, tag)?;
    v.try_into().map_err(|_| ResponseError::Length { tag, expected: N, actual: v.len() })
}

fn u32_field(m: &Message, what: &'static str, tag: Tag) -> Result<u32, ResponseError> {
    Ok(u32::from_le_bytes(fixed(m, what, tag)?))
}

fn u64_field(m: &Message, what: &'static str, tag: Tag) -> Result<u64, ResponseError> {
    Ok(u64::from_le_bytes(fixed(m, what, tag)?))
}

/// Checks `signature` by `key` over `context || message` (strictly: no
/// small-order keys, no non-canonical encodings, so that every checker of
/// a report reaches the same verdict).
fn signed_by(key: &VerifyingKey, context: &[u8], message: &[u8], signature: &[u8; 64]) -> bool {
    let mut data = Vec::with_capacity(context.len() + message.len());
    data.extend_from_slice(context);
    data.extend_from_slice(message);
    key.verify_strict(&data, &Signature::from_bytes(signature)).is_ok()
}

/// The root that `leaf` at `index` with sibling hashes `path` leads to
/// (draft-ietf-ntp-roughtime 5.3.1): at each step, bit 0 of the index
/// says whether the running hash is the left (0) or the right (1) child.
/// Bits of the index left over when the path ends make the path invalid.
pub fn merkle_root(version: Version, leaf: &[u8], index: u32, path: &[u8]) -> Result<Vec<u8>, ResponseError> {
    climb(leaf, index, path, version.hash_len(), version.hash_len())
}

/// The root of roughenough 1.3's draft trees: it hashes (and sends in
/// `PATH`) whole 64-byte SHA-512 nodes and truncates only the root to 32
/// bytes. The same as the draft's for a batch of one; for larger batches
/// the only way to check its answers.
fn wide_draft_root(leaf: &[u8], index: u32, path: &[u8]) -> Result<Vec<u8>, ResponseError> {
    climb(leaf, index, path, 64, 32)
}

/// Hashes up from `leaf` through `path`, every node truncated to
/// `node_len` bytes, the root to `root_len`.
fn climb(leaf: &[u8], index: u32, path: &[u8], node_len: usize, root_len: usize) -> Result<Vec<u8>, ResponseError> {
    if !path.len().is_multiple_of(node_len) || path.len() / node_len > MAX_PATH_DEPTH {
        return Err(ResponseError::BadPath { actual: path.len(), hash_len: node_len });
    }
    let mut h = super::hash(node_len, &[&[0x00], leaf]);
    let mut bits = index;
    for sibling in path.chunks_exact(node_len) {
        let (left, right) = if bits & 1 == 0 { (&h[..], sibling) } else { (sibling, &h[..]) };
        h = super::hash(node_len, &[&[0x01], left, right]);
        bits >>= 1;
    }
    if bits != 0 {
        return Err(ResponseError::IndexBeyondPath(index));
    }
    h.truncate(root_len);
    Ok(h)
}

/// Verifies `response`, the answer to `request`, against the server's
/// long-term key.
pub fn verify(request: &Request, response: &[u8], long_term_key: &PublicKey) -> Result<Verified, ResponseError> {
    let framed = wire::is_framed(response);
    if framed != request.is_ietf() {
        return Err(ResponseError::WrongFraming);
    }
    let body = if framed {
        wire::unframe(response).map_err(|source| ResponseError::Malformed { what: "packet", source })?
    } else {
        response
    };
    let msg = decode("response", body)?;
    let srep_bytes = field(&msg, "response", Tag::SREP)?;
    let srep = decode("SREP", srep_bytes)?;
    let version = if request.is_ietf() {
        if u32_field(&msg, "response", Tag::TYPE)? != 1 {
            return Err(ResponseError::NotAResponse);
        }
        let n = u32_field(&srep, "SREP", Tag::VER)?;
        let v = Version::from_number(n).filter(|v| request.versions().contains(v));
        let v = v.ok_or(ResponseError::VersionNotOffered(n))?;
        if let Some(vers) = srep.get(Tag::VERS)
            && !vers.chunks_exact(4).any(|c| c == n.to_le_bytes())
        {
            return Err(ResponseError::VersionNotListed);
        }
        v
    } else {
        Version::Google
    };
    // Google's servers need not echo the nonce; IETF ones must.
    match msg.get(Tag::NONC) {
        Some(n) if n != request.nonce() => return Err(ResponseError::WrongNonce),
        None if version.is_ietf() => return Err(ResponseError::Missing { what: "response", tag: Tag::NONC }),
        _ => {}
    }

    let cert = decode("CERT", field(&msg, "response", Tag::CERT)?)?;
    let dele_bytes = field(&cert, "CERT", Tag::DELE)?;
    let dele_signature: [u8; 64] = fixed(&cert, "CERT", Tag::SIG)?;
    let long_term = VerifyingKey::from_bytes(long_term_key).map_err(|_| ResponseError::BadLongTermKey)?;
    if !signed_by(&long_term, version.delegation_context(), dele_bytes, &dele_signature) {
        return Err(ResponseError::BadDelegationSignature);
    }
    let dele = decode("DELE", dele_bytes)?;
    let online_key: PublicKey = fixed(&dele, "DELE", Tag::PUBK)?;
    let (mint, maxt) = (u64_field(&dele, "DELE", Tag::MINT)?, u64_field(&dele, "DELE", Tag::MAXT)?);

    let srep_signature: [u8; 64] = fixed(&msg, "response", Tag::SIG)?;
    let online = VerifyingKey::from_bytes(&online_key).map_err(|_| ResponseError::BadOnlineKey)?;
    if !signed_by(&online, version.response_context(), srep_bytes, &srep_signature) {
        return Err(ResponseError::BadResponseSignature);
    }

    let root = field(&srep, "SREP", Tag::ROOT)?;
    if root.len() != version.hash_len() {
        return Err(ResponseError::Length { tag: Tag::ROOT, expected: version.hash_len(), actual: root.len() });
    }
    let index = u32_field(&msg, "response", Tag::INDX)?;
    let path = field(&msg, "response", Tag::PATH)?;
    if merkle_root(version, request.leaf(), index, path)? != root
        && (version != Version::IetfDraft || wide_draft_root(request.leaf(), index, path).ok().as_deref() != Some(root))
    {
        return Err(ResponseError::NotInTree);
    }

    let midp = u64_field(&srep, "SREP", Tag::MIDP)?;
    let radi = u32_field(&srep, "SREP", Tag::RADI)?;
    if midp < mint || midp > maxt {
        return Err(ResponseError::OutsideDelegation { midp, mint, maxt });
    }
    if radi == 0 && version.is_ietf() {
        return Err(ResponseError::ZeroRadius);
    }
    let unit = version.ns_per_unit();
    let (midpoint_ns, radius_ns) = (midp.saturating_mul(unit), u64::from(radi).saturating_mul(unit));
    Ok(Verified {
        version,
        midpoint_ns,
        radius_ns,
        interval: Interval::around(midpoint_ns, radius_ns),
        delegation: Delegation { online_key, min_ns: mint.saturating_mul(unit), max_ns: maxt.saturating_mul(unit) },
        signed: Signed { srep: srep_bytes.to_vec(), srep_signature, dele: dele_bytes.to_vec(), dele_signature },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roughenough_13_wide_draft_trees_are_read_as_well() {
        let v = Version::IetfDraft;
        let (a, b) = (b"request a".as_slice(), b"request b".as_slice());
        let full = |parts: &[&[u8]]| super::super::hash(64, parts);
        let (la, lb) = (full(&[&[0], a]), full(&[&[0], b]));
        let wide_root = full(&[&[1], &la, &lb])[..32].to_vec();
        assert_eq!(wide_draft_root(a, 0, &lb), Ok(wide_root.clone()));
        assert_eq!(wide_draft_root(b, 1, &la), Ok(wide_root.clone()));
        // The draft's own tree truncates every node: another root.
        let (ta, tb) = (super::super::leaf_hash(v, a), super::super::leaf_hash(v, b));
        assert_eq!(merkle_root(v, a, 0, &tb), Ok(super::super::node_hash(v, &ta, &tb)));
        assert_ne!(merkle_root(v, a, 0, &tb), Ok(wide_root));
        assert_eq!(merkle_root(v, a, 2, &tb), Err(ResponseError::IndexBeyondPath(2)));
    }
}
