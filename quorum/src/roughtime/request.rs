//! Roughtime requests: a nonce, padded to 1024 bytes so that a server's
//! answer is never larger than the question (no amplification).
//!
//! An IETF request is a `ROUGHTIM` packet whose message holds `VER` (the
//! versions offered, ascending), `SRV` (which long-term key the client
//! expects, if it says), `NONC`, `TYPE` 0 and `ZZZZ` padding; the server
//! answers in one of the offered versions or not at all. A Google request
//! is a bare message of `NONC` and `PAD\xff`. One request cannot offer
//! both: servers tell the two apart by the packet header.

use super::wire::{self, HEADER_LEN, Message, Tag, WireError};
use super::{PublicKey, Version};

/// Bytes of every request built here, IETF header included (as
/// roughenough and the drafts' other implementations send).
pub const REQUEST_LEN: usize = 1024;

/// At most this many versions in `VER` (draft-ietf-ntp-roughtime 5.1.1).
pub const MAX_VERSIONS: usize = 32;

/// A request: the versions it offers, its nonce, and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    versions: Vec<Version>,
    nonce: Vec<u8>,
    bytes: Vec<u8>,
}

/// Why a request cannot be built, or bytes are not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("no version offered")]
    NoVersion,
    #[error("Google's protocol cannot be offered beside an IETF version: their packets differ")]
    MixedVersions,
    #[error("a {version:?} nonce is {expected} bytes, not {actual}")]
    NonceLength { version: Version, expected: usize, actual: usize },
    #[error("not a Roughtime message: {0}")]
    Wire(#[from] WireError),
    #[error("no {0} tag")]
    Missing(Tag),
    #[error("VER is {0} bytes: not 1 to 32 version numbers")]
    BadVer(usize),
    #[error("VER offers no version this core speaks")]
    NoKnownVersion,
    #[error("TYPE is not the request type 0")]
    NotARequest,
}

impl Request {
    /// The request offering `versions` with `nonce` (32 bytes for the IETF
    /// versions, 64 for Google's). `server_key`, if given, is named in
    /// `SRV` (IETF only) so that a server holding several keys answers
    /// with that one.
    pub fn new(versions: &[Version], nonce: &[u8], server_key: Option<&PublicKey>) -> Result<Request, RequestError> {
        let mut versions = versions.to_vec();
        versions.sort_by_key(|v| v.number());
        versions.dedup();
        let first = *versions.first().ok_or(RequestError::NoVersion)?;
        if versions.len() > 1 && versions.contains(&Version::Google) {
            return Err(RequestError::MixedVersions);
        }
        if nonce.len() != first.nonce_len() {
            return Err(RequestError::NonceLength { version: first, expected: first.nonce_len(), actual: nonce.len() });
        }
        let bytes = if first.is_ietf() {
            let ver: Vec<u8> = versions.iter().filter_map(|v| v.number()).flat_map(u32::to_le_bytes).collect();
            let mut m =
                Message::new().with(Tag::VER, ver)?.with(Tag::NONC, nonce)?.with(Tag::TYPE, 0u32.to_le_bytes())?;
            if let Some(key) = server_key {
                m.insert(Tag::SRV, super::srv(key))?;
            }
            // The padding tag's header (8 bytes) counts too.
            let pad = (REQUEST_LEN - HEADER_LEN).saturating_sub(m.encoded_len() + 8);
            m.insert(Tag::ZZZZ, vec![0; pad])?;
            wire::frame(&m.encode())
        } else {
            let mut m = Message::new().with(Tag::NONC, nonce)?;
            let pad = REQUEST_LEN.saturating_sub(m.encoded_len() + 8);
            m.insert(Tag::PAD, vec![0; pad])?;
            m.encode()
        };
        Ok(Request { versions, nonce: nonce.to_vec(), bytes })
    }

    /// Reads a request's bytes (a malfeasance report carries them): the
    /// versions it offers that this core speaks, and its nonce.
    pub fn parse(bytes: &[u8]) -> Result<Request, RequestError> {
        let (versions, m) = if wire::is_framed(bytes) {
            let m = Message::decode(wire::unframe(bytes)?)?;
            let ver = m.get(Tag::VER).ok_or(RequestError::Missing(Tag::VER))?;
            if ver.is_empty() || ver.len() > 4 * MAX_VERSIONS {
                return Err(RequestError::BadVer(ver.len()));
            }
            let mut versions: Vec<Version> = ver
                .chunks_exact(4)
                .filter_map(|c| Version::from_number(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
            versions.sort_by_key(|v| v.number());
            versions.dedup();
            if versions.is_empty() {
                return Err(RequestError::NoKnownVersion);
            }
            if m.get(Tag::TYPE).ok_or(RequestError::Missing(Tag::TYPE))? != [0, 0, 0, 0] {
                return Err(RequestError::NotARequest);
            }
            (versions, m)
        } else {
            (vec![Version::Google], Message::decode(bytes)?)
        };
        let nonce = m.get(Tag::NONC).ok_or(RequestError::Missing(Tag::NONC))?;
        let v = versions[0];
        if nonce.len() != v.nonce_len() {
            return Err(RequestError::NonceLength { version: v, expected: v.nonce_len(), actual: nonce.len() });
        }
        Ok(Request { versions, nonce: nonce.to_vec(), bytes: bytes.to_vec() })
    }

    /// The versions offered (at least one), by ascending number.
    pub fn versions(&self) -> &[Version] {
        &self.versions
    }

    /// Whether it is an IETF packet (else Google's).
    pub fn is_ietf(&self) -> bool {
        self.versions.iter().any(|v| v.is_ietf())
    }

    /// The nonce.
    pub fn nonce(&self) -> &[u8] {
        &self.nonce
    }

    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// What the server puts in its Merkle tree for this request: the nonce
    /// in Google's protocol, the whole packet in the IETF's.
    pub fn leaf(&self) -> &[u8] {
        if self.is_ietf() { &self.bytes } else { &self.nonce }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_1024_bytes_and_parse_back() {
        let key = [7u8; 32];
        for (versions, nonce_len) in [
            (&[Version::Google][..], 64),
            (&[Version::IetfDraft][..], 32),
            (&[Version::IetfDraft, Version::Rfc][..], 32),
        ] {
            let r = Request::new(versions, &vec![9; nonce_len], Some(&key)).unwrap();
            assert_eq!(r.bytes().len(), REQUEST_LEN, "{versions:?}");
            assert_eq!(Request::parse(r.bytes()).unwrap(), r);
        }
        let both = Request::new(&[Version::IetfDraft, Version::Rfc], &[1; 32], None).unwrap();
        assert_eq!(both.versions(), &[Version::Rfc, Version::IetfDraft], "VER ascending: 1 before 0x8000000c");
        assert_eq!(Request::new(&[Version::Google, Version::Rfc], &[1; 32], None), Err(RequestError::MixedVersions));
        assert!(matches!(Request::new(&[Version::Rfc], &[1; 64], None), Err(RequestError::NonceLength { .. })));
        assert_eq!(Request::new(&[], &[1; 32], None), Err(RequestError::NoVersion));
    }
}
