//! A round across several servers, chained so that their order is proven,
//! and the malfeasance report a causality violation leaves.
//!
//! The first request of a round has a random nonce; each next one has
//! `H(previous response || rand)` with a fresh random `rand`
//! (draft-ietf-ntp-roughtime 8.2; Google's protocol has the same chain
//! with 64-byte blinds). A nonce cannot be computed before the previous
//! answer exists, and an answer signs a tree over its request, so each
//! server provably signed after the servers before it. If an earlier
//! server's interval begins after a later server's interval ends, one of
//! the two signed a time that is wrong, and the chain between them proves
//! it to anyone who holds their public keys: the malfeasance report, in
//! the draft's JSON format (8.4.1; base64 values).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::request::{Request, RequestError};
use super::response::{ResponseError, Verified, verify};
use super::{PublicKey, Version};
use crate::Interval;

/// The nonce for a request in `version` that follows the answer
/// `previous_response` (its whole packet, header included): SHA-512 of the
/// answer then `rand`, truncated to the version's nonce length. `rand`
/// should be that many fresh random bytes.
pub fn chain_nonce(version: Version, previous_response: &[u8], rand: &[u8]) -> Vec<u8> {
    super::hash(version.nonce_len(), &[previous_response, rand])
}

/// One exchange of a round, as the report format keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The blind that chained this request's nonce to the previous
    /// answer; none (or ignored) for the first link.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "b64_opt",
        deserialize_with = "un_b64_opt"
    )]
    pub rand: Option<Vec<u8>>,
    /// The long-term key the server was expected to sign with.
    #[serde(rename = "publicKey", serialize_with = "b64", deserialize_with = "un_b64_key")]
    pub public_key: PublicKey,
    /// The request packet as sent.
    #[serde(serialize_with = "b64", deserialize_with = "un_b64")]
    pub request: Vec<u8>,
    /// The answer packet as received.
    #[serde(serialize_with = "b64", deserialize_with = "un_b64")]
    pub response: Vec<u8>,
}

/// Proof that a sequence of answers arrived in that order, and that one of
/// its servers signed a wrong time (draft-ietf-ntp-roughtime 8.4).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MalfeasanceReport {
    pub responses: Vec<Link>,
}

impl MalfeasanceReport {
    /// The report as JSON (media type `application/roughtime-malfeasance+json`).
    pub fn to_json(&self) -> String {
        // Byte strings and a list of structs: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Reads a report from JSON; what it proves is for [`check_report`].
    pub fn from_json(text: &str) -> Result<MalfeasanceReport, ChainError> {
        serde_json::from_str(text).map_err(|e| ChainError::Syntax(e.to_string()))
    }
}

/// Two answers whose intervals contradict their proven order: `earlier`
/// was signed first, yet its interval begins after `later`'s ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contradiction {
    /// Indices into the checked links.
    pub earlier: usize,
    pub later: usize,
    pub earlier_interval: Interval,
    pub later_interval: Interval,
    pub earlier_key: PublicKey,
    pub later_key: PublicKey,
}

/// The verdict on a round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Round {
    /// Every answer verified and their times agree with their order.
    Consistent(Vec<Verified>),
    /// Every answer verified, but two contradict their order: one of the
    /// two servers lies, and `report` (the links from `earlier` to `later`,
    /// whose indices in it are 0 and `later - earlier`) proves it.
    Malfeasance { verified: Vec<Verified>, contradiction: Contradiction, report: MalfeasanceReport },
}

/// Why a chain or report does not prove what it should.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("link {index}: its request: {source}")]
    Request { index: usize, source: RequestError },
    #[error("link {index}: its response: {source}")]
    Response { index: usize, source: ResponseError },
    #[error("link {index} has no rand of {expected} bytes")]
    Rand { index: usize, expected: usize },
    #[error("link {index}: its nonce is not H(previous response || rand)")]
    Unchained { index: usize },
    #[error("link {index}: its public key is not one of the pinned keys")]
    Unpinned { index: usize },
    #[error("a report needs at least two responses; this one has {0}")]
    TooShort(usize),
    #[error("the times agree with the order of the answers: no malfeasance shown")]
    NoContradiction,
    #[error("not a malfeasance report: {0}")]
    Syntax(String),
}

/// Verifies each link's answer against its key and each nonce after the
/// first against the answer before it.
fn verify_links(links: &[Link]) -> Result<Vec<Verified>, ChainError> {
    let mut verified = Vec::with_capacity(links.len());
    for (index, link) in links.iter().enumerate() {
        let request = Request::parse(&link.request).map_err(|source| ChainError::Request { index, source })?;
        if index > 0 {
            let version = request.versions()[0];
            let rand = link.rand.as_deref().filter(|r| r.len() == version.nonce_len());
            let rand = rand.ok_or(ChainError::Rand { index, expected: version.nonce_len() })?;
            if chain_nonce(version, &links[index - 1].response, rand) != request.nonce() {
                return Err(ChainError::Unchained { index });
            }
        }
        let v = verify(&request, &link.response, &link.public_key)
            .map_err(|source| ChainError::Response { index, source })?;
        verified.push(v);
    }
    Ok(verified)
}

/// The first answer (by later index) whose interval ends before some
/// earlier answer's interval begins, with that earlier answer: the one
/// beginning latest, which contradicts it most.
fn find_contradiction(links: &[Link], verified: &[Verified]) -> Option<Contradiction> {
    let mut latest_start: Option<usize> = None;
    for (j, v) in verified.iter().enumerate() {
        if let Some(i) = latest_start
            && verified[i].interval.earliest > v.interval.latest
        {
            return Some(Contradiction {
                earlier: i,
                later: j,
                earlier_interval: verified[i].interval,
                later_interval: v.interval,
                earlier_key: links[i].public_key,
                later_key: links[j].public_key,
            });
        }
        if latest_start.is_none_or(|i| v.interval.earliest > verified[i].interval.earliest) {
            latest_start = Some(j);
        }
    }
    None
}

/// Checks a round of links, in the order they were exchanged: every
/// answer must verify and every nonce after the first must chain. Then
/// the times: if one contradicts the order, the verdict carries the
/// report that proves it.
pub fn check_chain(links: &[Link]) -> Result<Round, ChainError> {
    let verified = verify_links(links)?;
    Ok(match find_contradiction(links, &verified) {
        None => Round::Consistent(verified),
        Some(contradiction) => {
            let report = MalfeasanceReport { responses: links[contradiction.earlier..=contradiction.later].to_vec() };
            Round::Malfeasance { verified, contradiction, report }
        }
    })
}

/// Re-checks a report as a third party: every server's key must be one
/// the checker trusts (`pinned_keys`), every answer verify, every nonce
/// chain, and two answers contradict their order.
pub fn check_report(report: &MalfeasanceReport, pinned_keys: &[PublicKey]) -> Result<Contradiction, ChainError> {
    let links = &report.responses;
    if links.len() < 2 {
        return Err(ChainError::TooShort(links.len()));
    }
    if let Some(index) = links.iter().position(|l| !pinned_keys.contains(&l.public_key)) {
        return Err(ChainError::Unpinned { index });
    }
    let verified = verify_links(links)?;
    find_contradiction(links, &verified).ok_or(ChainError::NoContradiction)
}

fn b64<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine as _;
    s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn b64_opt<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => b64(b, s),
        None => s.serialize_none(),
    }
}

fn un_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    use base64::Engine as _;
    let s = String::deserialize(d)?;
    base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)
}

fn un_b64_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
    use base64::Engine as _;
    let s: Option<String> = Option::deserialize(d)?;
    s.map(|s| base64::engine::general_purpose::STANDARD.decode(s).map_err(serde::de::Error::custom)).transpose()
}

fn un_b64_key<'de, D: Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
    let v = un_b64(d)?;
    v.try_into().map_err(|v: Vec<u8>| serde::de::Error::custom(format!("a {}-byte key, not 32", v.len())))
}
