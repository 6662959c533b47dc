//! Roughtime server without I/O: requests checked, a batch of them
//! answered under one signature through a Merkle tree of their leaves.
//!
//! A long-term key delegates an online key for a window of time (`DELE`,
//! signed once per version because each version has its own context
//! string and time unit); the online key signs each batch's `SREP`. Every
//! request of a batch gets the same `SREP` and signature, plus its own
//! `INDX` and `PATH` to the signed root.
//!
//! Trees: Google's protocol hashes whole SHA-512 nodes; RFC version 1
//! truncates every node to 32 bytes, as the RFC says; the draft version
//! 0x8000000c hashes whole nodes and truncates only the root, which is
//! what roughenough 1.3, the implementation that speaks it, builds and
//! checks (this crate's client accepts either for that version). Odd
//! levels are padded with a zero hash, as roughenough does.
//!
//! The served interval is widened, never narrowed, by the units of the
//! wire (seconds for the IETF versions): `MIDP` is rounded down and
//! `RADI` up so that `MIDP ± RADI` holds the interval given.

use ed25519_dalek::{Signer as _, SigningKey};

use super::request::{REQUEST_LEN, Request};
use super::wire::{self, Message, Tag};
use super::{PublicKey, Version};

/// Most requests answered under one signature (a path of at most 6 hashes).
pub const MAX_BATCH: usize = 64;

/// The server's keys and its delegation certificates.
#[derive(Debug)]
pub struct Identity {
    long_term: SigningKey,
    online: SigningKey,
    /// `CERT` per version, in [`Version::ALL`]'s order.
    certs: Vec<Vec<u8>>,
    srv: [u8; 32],
    min_ns: u64,
    max_ns: u64,
}

/// Why a packet gets no answer. Each is counted by the caller.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// Shorter than a request must be (1024 bytes): answering it would
    /// amplify traffic.
    #[error("{0} bytes, shorter than the 1024 a request must be")]
    Short(usize),
    #[error("not a request: {0}")]
    Malformed(String),
    /// `SRV` names another server's key.
    #[error("its SRV names another long-term key")]
    OtherServer,
}

impl Dropped {
    /// A short, stable name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Dropped::Short(_) => "short",
            Dropped::Malformed(_) => "malformed",
            Dropped::OtherServer => "other_server",
        }
    }
}

fn index(v: Version) -> usize {
    Version::ALL.iter().position(|x| *x == v).unwrap_or(0)
}

impl Identity {
    /// The identity of long-term key `long_term` (its seed) delegating
    /// online key `online` (its seed) for Unix times `[min_ns, max_ns]`.
    pub fn new(long_term: &[u8; 32], online: &[u8; 32], min_ns: u64, max_ns: u64) -> Identity {
        let long_term = SigningKey::from_bytes(long_term);
        let online = SigningKey::from_bytes(online);
        let pubk = online.verifying_key().to_bytes();
        let certs = Version::ALL
            .iter()
            .map(|v| {
                let unit = v.ns_per_unit();
                let (mint, maxt) = (min_ns.div_ceil(unit), max_ns / unit);
                // Three fixed-size fields: no insert can fail.
                let dele = Message::new()
                    .with(Tag::PUBK, pubk.to_vec())
                    .and_then(|m| m.with(Tag::MINT, mint.to_le_bytes().to_vec()))
                    .and_then(|m| m.with(Tag::MAXT, maxt.to_le_bytes().to_vec()))
                    .map(|m| m.encode())
                    .unwrap_or_default();
                let mut signed = v.delegation_context().to_vec();
                signed.extend_from_slice(&dele);
                let sig = long_term.sign(&signed).to_bytes();
                Message::new()
                    .with(Tag::DELE, dele)
                    .and_then(|m| m.with(Tag::SIG, sig.to_vec()))
                    .map(|m| m.encode())
                    .unwrap_or_default()
            })
            .collect();
        let srv = super::srv(&long_term.verifying_key().to_bytes());
        Identity { long_term, online, certs, srv, min_ns, max_ns }
    }

    /// The long-term public key clients pin.
    pub fn public_key(&self) -> PublicKey {
        self.long_term.verifying_key().to_bytes()
    }

    /// Whether the delegation covers `[earliest, latest]` (else a new
    /// online key must be delegated first).
    pub fn covers(&self, earliest_ns: u64, latest_ns: u64) -> bool {
        self.min_ns <= earliest_ns && latest_ns <= self.max_ns
    }
}

/// The public key of the long-term key with seed `long_term` (what
/// clients pin), without building an identity.
pub fn long_term_public_key(long_term: &[u8; 32]) -> PublicKey {
    SigningKey::from_bytes(long_term).verifying_key().to_bytes()
}

/// Checks a request packet: long enough, well formed, offering a version
/// spoken here, and for this server if it names one.
pub fn check_request(packet: &[u8], id: &Identity) -> Result<Request, Dropped> {
    if packet.len() < REQUEST_LEN {
        return Err(Dropped::Short(packet.len()));
    }
    let req = Request::parse(packet).map_err(|e| Dropped::Malformed(e.to_string()))?;
    if wire::is_framed(packet) {
        let m = wire::unframe(packet)
            .ok()
            .and_then(|b| Message::decode(b).ok())
            .ok_or_else(|| Dropped::Malformed("framing".into()))?;
        if m.get(Tag::SRV).is_some_and(|s| s != id.srv) {
            return Err(Dropped::OtherServer);
        }
    }
    Ok(req)
}

/// The version a request is answered in: the newest it offers.
pub fn version_for(req: &Request) -> Version {
    if req.versions().contains(&Version::Rfc) {
        Version::Rfc
    } else if req.versions().contains(&Version::IetfDraft) {
        Version::IetfDraft
    } else {
        Version::Google
    }
}

/// Node width while hashing and the width of the root, per version (see the module docs).
fn tree_widths(v: Version) -> (usize, usize) {
    match v {
        Version::Google => (64, 64),
        Version::IetfDraft => (64, 32),
        Version::Rfc => (32, 32),
    }
}

/// A Merkle tree over the leaves, levels bottom-up.
fn tree(v: Version, leaves: &[&[u8]]) -> Vec<Vec<Vec<u8>>> {
    let (w, _) = tree_widths(v);
    let mut levels = vec![leaves.iter().map(|l| super::hash(w, &[&[0x00], l])).collect::<Vec<_>>()];
    while levels.last().map_or(0, Vec::len) > 1 {
        let below = levels.last_mut().expect("a level");
        if below.len() % 2 == 1 {
            below.push(vec![0; w]);
        }
        let up = below.chunks_exact(2).map(|p| super::hash(w, &[&[0x01], &p[0], &p[1]])).collect();
        levels.push(up);
    }
    levels
}

/// Answers requests that all get `version` (at most [`MAX_BATCH`]; more
/// are answered in further batches by the caller), with true time in
/// `[earliest_ns, latest_ns]`. One answer per request, in order; empty
/// if `requests` is.
pub fn answer_batch(
    id: &Identity,
    version: Version,
    requests: &[&Request],
    earliest_ns: u64,
    latest_ns: u64,
) -> Vec<Vec<u8>> {
    if requests.is_empty() {
        return Vec::new();
    }
    let unit = version.ns_per_unit();
    let mid_ns = earliest_ns / 2 + latest_ns / 2;
    let midp = mid_ns / unit;
    // MIDP ± RADI must hold [earliest, latest] in whole units.
    // MIDP (in ns) lies `lag` below the true midpoint.
    let lag = mid_ns - midp * unit;
    let below = (mid_ns - earliest_ns).saturating_sub(lag);
    let above = (latest_ns - mid_ns) + lag;
    let radi = u32::try_from(below.max(above).div_ceil(unit).max(1)).unwrap_or(u32::MAX);

    let leaves: Vec<&[u8]> = requests.iter().map(|r| r.leaf()).collect();
    let levels = tree(version, &leaves);
    let (_, root_len) = tree_widths(version);
    let mut root = levels.last().and_then(|l| l.first()).cloned().unwrap_or_default();
    root.truncate(root_len);

    let mut srep = Message::new();
    let put = |m: &mut Message, t: Tag, v: Vec<u8>| {
        // Fixed sizes far below the message limit: cannot fail.
        let _ = m.insert(t, v);
    };
    put(&mut srep, Tag::RADI, radi.to_le_bytes().to_vec());
    put(&mut srep, Tag::MIDP, midp.to_le_bytes().to_vec());
    put(&mut srep, Tag::ROOT, root);
    if let Some(n) = version.number() {
        put(&mut srep, Tag::VER, n.to_le_bytes().to_vec());
        let vers: Vec<u8> =
            [Version::Rfc, Version::IetfDraft].iter().filter_map(|v| v.number()).flat_map(u32::to_le_bytes).collect();
        put(&mut srep, Tag::VERS, vers);
    }
    let srep = srep.encode();
    let mut signed = version.response_context().to_vec();
    signed.extend_from_slice(&srep);
    let sig = id.online.sign(&signed).to_bytes().to_vec();
    let cert = id.certs[index(version)].clone();

    requests
        .iter()
        .enumerate()
        .map(|(i, req)| {
            let mut path = Vec::new();
            let mut at = i;
            for level in &levels[..levels.len() - 1] {
                path.extend_from_slice(&level[at ^ 1]);
                at /= 2;
            }
            let mut m = Message::new();
            put(&mut m, Tag::SIG, sig.clone());
            put(&mut m, Tag::NONC, req.nonce().to_vec());
            put(&mut m, Tag::PATH, path);
            put(&mut m, Tag::SREP, srep.clone());
            put(&mut m, Tag::CERT, cert.clone());
            put(&mut m, Tag::INDX, (i as u32).to_le_bytes().to_vec());
            if version.is_ietf() {
                put(&mut m, Tag::TYPE, 1u32.to_le_bytes().to_vec());
                wire::frame(&m.encode())
            } else {
                m.encode()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::response::verify;
    use super::*;

    const S: u64 = 1_000_000_000;

    fn identity() -> Identity {
        Identity::new(&[7; 32], &[9; 32], 1_700_000_000 * S, 1_900_000_000 * S)
    }

    #[test]
    fn every_answer_of_a_batch_verifies_and_holds_the_served_interval() {
        let id = identity();
        let key = id.public_key();
        for version in Version::ALL {
            for n in [1usize, 2, 3, 5, 8, 17, MAX_BATCH] {
                let reqs: Vec<Request> = (0..n)
                    .map(|i| Request::new(&[version], &vec![i as u8; version.nonce_len()], Some(&key)).unwrap())
                    .collect();
                let checked: Vec<Request> = reqs.iter().map(|r| check_request(r.bytes(), &id).unwrap()).collect();
                assert!(checked.iter().all(|r| version_for(r) == version));
                let refs: Vec<&Request> = checked.iter().collect();
                let (earliest, latest) = (1_800_000_000 * S + 300_000_000, 1_800_000_001 * S + 900_000_000);
                let answers = answer_batch(&id, version, &refs, earliest, latest);
                assert_eq!(answers.len(), n);
                for (req, a) in reqs.iter().zip(&answers) {
                    let v = verify(req, a, &key).unwrap_or_else(|e| panic!("{version:?} batch {n}: {e}"));
                    assert!(v.interval.earliest <= earliest && latest <= v.interval.latest, "{version:?}: {v:?}");
                    assert!(v.interval.width() <= latest - earliest + 2 * version.ns_per_unit(), "{version:?}: {v:?}");
                }
            }
        }
    }

    #[test]
    fn short_foreign_and_malformed_requests_are_dropped() {
        let id = identity();
        let other = Identity::new(&[8; 32], &[9; 32], 0, u64::MAX);
        let for_other = Request::new(&[Version::Rfc], &[1; 32], Some(&other.public_key())).unwrap();
        assert_eq!(check_request(for_other.bytes(), &id), Err(Dropped::OtherServer));
        assert_eq!(check_request(&for_other.bytes()[..1000], &id), Err(Dropped::Short(1000)));
        assert!(matches!(check_request(&[0u8; 1024], &id), Err(Dropped::Malformed(_))));
        let mine = Request::new(&[Version::IetfDraft, Version::Rfc], &[1; 32], Some(&id.public_key())).unwrap();
        assert_eq!(version_for(&check_request(mine.bytes(), &id).unwrap()), Version::Rfc, "the newest offered");
    }

    proptest::proptest! {
        #[test]
        fn any_packet_is_answered_or_dropped_never_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 1000..1100)) {
            let id = identity();
            if let Ok(r) = check_request(&bytes, &id) {
                let a = answer_batch(&id, version_for(&r), &[&r], 1_800_000_000 * S, 1_800_000_001 * S);
                proptest::prop_assert_eq!(a.len(), 1);
            }
        }
    }
}
